import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import test from 'ava';

const exec = promisify(execFile);
const cli = fileURLToPath(new URL('../../packages/cli/dist/src/main.js', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'vmstack-scale-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

interface ScaleJson {
  vary: { dim: string; option: string; values: string[] };
  strategies: string[];
  points: {
    strategy: string;
    value: string;
    aggregate_mib_per_s: number;
    iops: number;
    clat_p50_ns: number;
    clat_p99_ns: number;
    clat_p99_9_ns: number;
    lock_classes: { class: string; acquisitions: number; contentions: number; waittime_total_ns: number }[];
    simulated_ios_per_wall_s?: number;
  }[];
}

async function vmstackJson<T>(args: string[]): Promise<T> {
  const { stdout } = await exec(process.execPath, [cli, ...args, '--output-format', 'json'], { timeout: 120_000, maxBuffer: 64 * 1024 * 1024 });
  return JSON.parse(stdout) as T;
}

/** Small runs in exact lock order: the numbers repeat from run to run. */
const BASE = ['--size', '128k', '--quantum', '0'];

test('scale --vary iodepth: every strategy at every value, with clat percentiles and lock classes; an offline HTML report', async (t) => {
  const html = join(tmp, 'scale.html');
  const r = await vmstackJson<ScaleJson>(['scale', '--vary', 'iodepth=1,4', '--numjobs', '2', '--strategies', 'strict,bounce', ...BASE, '--html', html]);
  t.deepEqual(r.vary, { dim: 'iodepth', option: 'iodepth', values: ['1', '4'] });
  t.deepEqual(
    r.points.map((p) => [p.strategy, p.value]),
    [
      ['strict', '1'],
      ['strict', '4'],
      ['bounce', '1'],
      ['bounce', '4'],
    ],
  );
  for (const p of r.points) {
    t.true(p.aggregate_mib_per_s > 0 && p.iops > 0);
    t.true(p.clat_p50_ns > 0 && p.clat_p50_ns <= p.clat_p99_ns && p.clat_p99_ns <= p.clat_p99_9_ns, JSON.stringify(p));
    const requestLock = p.lock_classes.find((l) => l.class === 'viommu->request_lock');
    t.true((requestLock?.acquisitions ?? 0) > 0, 'every run maps through virtio-iommu');
    for (const l of p.lock_classes) t.false(l.class.includes('/'), `${l.class} is a class, not an instance`);
  }
  const at = (s: string, v: string) => r.points.find((p) => p.strategy === s && p.value === v)!;
  t.true(at('strict', '4').aggregate_mib_per_s > at('strict', '1').aggregate_mib_per_s, 'deeper queues move more');
  t.true(at('bounce', '1').aggregate_mib_per_s > at('strict', '1').aggregate_mib_per_s, 'the pool beats strict at 4k');
  const page = readFileSync(html, 'utf8');
  t.regex(page, /aggregate throughput/);
  t.regex(page, /clat p99, all jobs/);
  t.regex(page, /<svg[^>]*role="img"/);
  t.notRegex(page, /<script|https?:\/\/(?!www\.w3\.org)/, 'offline: no script, nothing fetched');
});

test('a scale point is the run command with the varied option set: the same lock classes as that run', async (t) => {
  const s = await vmstackJson<ScaleJson>(['scale', '--jobs', '1,2', '--strategies', 'lazy', '--rw', 'randread', '--bs', '4k', '--iodepth', '4', ...BASE]);
  const run = await vmstackJson<{
    jobs: { read: { io_bytes: number } }[];
    vmstack: { lock_classes: { class: string; acquisitions: number; contentions: number; waittime_total_ns: number; instances: number }[] };
  }>(['run', '--numjobs', '2', '--strategy', 'lazy', '--rw', 'randread', '--bs', '4k', '--iodepth', '4', '--direct', '1', ...BASE]);
  const point = s.points.find((p) => p.value === '2')!;
  for (const l of point.lock_classes) {
    const c = run.vmstack.lock_classes.find((x) => x.class === l.class);
    t.truthy(c, l.class);
    t.deepEqual([l.acquisitions, l.contentions, l.waittime_total_ns], [c?.acquisitions, c?.contentions, c?.waittime_total_ns], l.class);
  }
  t.is(run.vmstack.lock_classes.find((c) => c.class === 'cpu_rcache->lock')?.instances, 2, 'one instance per vCPU, one class');
  // --jobs is --vary jobs
  const v = await vmstackJson<ScaleJson>(['scale', '--vary', 'jobs=1,2', '--strategies', 'lazy', '--rw', 'randread', '--bs', '4k', '--iodepth', '4', ...BASE]);
  const strip = (r: ScaleJson) => r.points.map(({ simulated_ios_per_wall_s: _, ...p }) => p);
  t.deepEqual(strip(v), strip(s));
});

test('scale --vary bs: block sizes as written on the x axis', async (t) => {
  const r = await vmstackJson<ScaleJson>(['scale', '--vary', 'bs=4k,16k', '--strategies', 'strict', ...BASE]);
  t.deepEqual(
    r.points.map((p) => p.value),
    ['4k', '16k'],
  );
  t.true(r.points[1].aggregate_mib_per_s > r.points[0].aggregate_mib_per_s, 'bigger blocks move more');
});
