import test from 'ava';
import { lockClassRows, withLockClass } from '../src/report/lock-classes.js';
import { emptyDirection, type JobResult, type RunResult } from '../src/report/result.js';
import type { LockStatRow } from '../src/report/vmstack-report.js';
import { clatPercentilesNs, formatScaleHtml, formatScaleJson, formatScaleTable, type ScaleResult, scaleLockClasses, scalePointOf } from '../src/scale/scale.js';
import { hist } from './helpers/histograms.js';
import { lockRow, sampleVmstackReport } from './helpers/vmstack-report.js';

function job(read: Partial<JobResult['read']>, write: Partial<JobResult['write']> = {}): JobResult {
  return {
    jobname: 'j',
    groupid: 0,
    jobOptions: {},
    read: { ...emptyDirection(), ...read },
    write: { ...emptyDirection(), ...write },
    jobRuntimeNs: 1e6,
    usrCpuPct: 0,
    sysCpuPct: 0,
    ctx: 0,
    error: 0,
    iodepth: 1,
  };
}

/** A lock_stat row with `acquisitions` and, when `waitNs` > 0, one contention that waited that long. */
function lock(name: string, acquisitions: number, waitNs: number): LockStatRow {
  const r = lockRow(name, Math.max(1, acquisitions), 100);
  return withLockClass({
    ...r,
    acquisitions,
    contentions: waitNs > 0 ? 1 : 0,
    waittime_min_ns: waitNs,
    waittime_max_ns: waitNs,
    waittime_total_ns: waitNs,
    waittime_avg_ns: waitNs,
  });
}

test('clat percentiles are those of every I/O of every job, reads and writes together', (t) => {
  // 90 reads at 1 µs in one job, 10 writes at 100 µs in another: p50 1 µs, p99 100 µs
  const jobs = [job({ clatNs: hist([1000, 90]) }), job({}, { clatNs: hist([100_000, 10]) })];
  const [p50, p90, p99] = clatPercentilesNs(jobs, [50, 90, 99]);
  t.true(Math.abs(p50 - 1000) <= 1, `p50 ${p50}`);
  t.true(Math.abs(p90 - 1000) <= 1, `p90 ${p90}`);
  t.true(Math.abs(p99 - 100_000) <= 100, `p99 ${p99}`);
  // each job's own p99 would say otherwise: the merge is what counts
  t.true(Math.abs(clatPercentilesNs([jobs[0]], [99])[0] - 1000) <= 1);
  t.deepEqual(clatPercentilesNs([job({})], [50, 99]), [0, 0], 'no I/O: 0');
});

test('a point reports the big and host-wide classes it acquired, then any other class that waited', (t) => {
  const classes = lockClassRows([
    lock('rcache->lock', 50, 0),
    lock('vm0:viommu->request_lock', 10, 500),
    lock('vm1:viommu->request_lock', 12, 700),
    lock('iommu->lock/container0', 0, 0),
    lock('mmap_lock', 3, 0),
    lock('cpu_rcache->lock/0', 20, 40),
    lock('cpu_rcache->lock/1', 20, 60),
    lock('viommu_dev->mutex', 22, 0),
  ]);
  t.deepEqual(scaleLockClasses(classes), [
    { class: 'viommu->request_lock', acquisitions: 22, contentions: 2, waittimeTotalNs: 1200 },
    { class: 'viommu_dev->mutex', acquisitions: 22, contentions: 0, waittimeTotalNs: 0 },
    // iommu->lock: never acquired; qi->q_lock: not in the run — both absent
    { class: 'mmap_lock', acquisitions: 3, contentions: 0, waittimeTotalNs: 0 },
    // rcache->lock did not wait: absent
    { class: 'cpu_rcache->lock', acquisitions: 40, contentions: 2, waittimeTotalNs: 100 },
  ]);
});

function run(jobs: JobResult[], locks: LockStatRow[]): RunResult {
  const vmstack = sampleVmstackReport();
  vmstack.lock_stat = locks;
  vmstack.lock_classes = lockClassRows(locks);
  return { timestampMs: 0, globalOptions: {}, jobs, vmstack };
}

test('a point: bytes of every job over the longest runtime, IOPS likewise', (t) => {
  const r = run(
    [
      job({ ioBytes: 4 * 1048576, totalIos: 1024, runtimeNs: 1e9, clatNs: hist([2000, 1024]) }),
      job({}, { ioBytes: 2 * 1048576, totalIos: 512, runtimeNs: 2e9 }),
    ],
    [lock('viommu->request_lock', 5, 0)],
  );
  const p = scalePointOf({ strategy: 'strict', value: '2', x: 2 }, r);
  t.is(p.aggregateMibPerS, 3);
  t.is(p.iops, 768);
  t.true(Math.abs(p.clatP50Ns - 2000) <= 1);
  t.deepEqual(p.locks, [{ class: 'viommu->request_lock', acquisitions: 5, contentions: 0, waittimeTotalNs: 0 }]);
});

function result(): ScaleResult {
  const point = (strategy: 'strict' | 'bounce', value: string, x: number, waitNs: number) => ({
    ...scalePointOf(
      { strategy, value, x },
      run(
        [job({ ioBytes: 1048576 * x, totalIos: 256 * x, runtimeNs: 1e9, clatNs: hist([50_000, 100], [400_000, 1]) })],
        [lock('viommu->request_lock', 10 * x, waitNs), lock('iommu->lock', 10, 0), lock('rcache->lock', 4, strategy === 'strict' ? 30 : 0)],
      ),
    ),
  });
  return {
    profile: 'test-profile',
    workload: 'fio --rw=randread per job',
    dim: 'bs',
    option: 'bs',
    values: ['4k', '64k'],
    strategies: ['strict', 'bounce'],
    points: [point('strict', '4k', 4096, 9000), point('strict', '64k', 65536, 3000), point('bounce', '4k', 4096, 0), point('bounce', '64k', 65536, 2000)],
  };
}

test('the text report: throughput and clat per point, then one row per reported class per point', (t) => {
  const out = formatScaleTable(result());
  t.regex(out, /^strategy\s+bs\s+MiB\/s\s+IOPS\s+clat p50 µs\s+p99 µs\s+p99\.9 µs$/m);
  t.regex(out, /^strict\s+4k\s+4096\.0\s+1048576\s+50\.0\d\s+50\.0\d\s+4\d\d\.\d\d$/m);
  t.regex(out, /^strict\s+4k\s+viommu->request_lock\s+40960\s+1\s+9\.0$/m);
  t.regex(out, /^strict\s+64k\s+rcache->lock\s+4\s+1\s+0\.0$/m);
  t.regex(out, /^bounce\s+4k\s+iommu->lock\s+10\s+0\s+0\.0$/m);
  t.notRegex(out, /^bounce\s+\S+\s+rcache->lock/m, 'a guest class that did not wait is absent');
});

test('the JSON report: snake_case keys, every point, classes with ns', (t) => {
  const j = JSON.parse(formatScaleJson(result())) as Record<string, unknown> & { points: Record<string, unknown>[] };
  t.deepEqual(Object.keys(j), ['profile', 'workload', 'vary', 'strategies', 'points']);
  t.deepEqual(j.vary, { dim: 'bs', option: 'bs', values: ['4k', '64k'] });
  t.is(j.points.length, 4);
  t.deepEqual(Object.keys(j.points[0]), [
    'strategy',
    'value',
    'x',
    'aggregate_mib_per_s',
    'iops',
    'clat_p50_ns',
    'clat_p99_ns',
    'clat_p99_9_ns',
    'lock_classes',
    'simulated_ios_per_wall_s',
  ]);
  t.deepEqual((j.points[0].lock_classes as unknown[])[0], { class: 'viommu->request_lock', acquisitions: 40960, contentions: 1, waittime_total_ns: 9000 });
  const keys = JSON.stringify(j).match(/"[^"]+":/g) ?? [];
  for (const k of keys) t.notRegex(k, /[A-Z]/, `${k} is snake_case`);
});

test('the HTML report: throughput, p99 and one wait chart per class that waited, series per strategy; offline', (t) => {
  const page = formatScaleHtml(result());
  t.regex(page, /aggregate throughput/);
  t.regex(page, /clat p99, all jobs/);
  t.regex(page, /viommu-&gt;request_lock: total wait/);
  t.regex(page, /rcache-&gt;lock: total wait/);
  t.notRegex(page, /iommu-&gt;lock: total wait/, 'no chart for a class that never waited');
  t.regex(page, /Acquired without waiting at every point: iommu-&gt;lock/);
  // x ticks as written, evenly spaced
  t.regex(page, />4k<\/text>/);
  t.regex(page, />64k<\/text>/);
  t.is((page.match(/<svg/g) ?? []).length, 4);
  t.is((page.match(/<details>/g) ?? []).length, 4, 'every run has its lock-class table');
  t.notRegex(page, /<script|https?:\/\/(?!www\.w3\.org)/);
});
