/**
 * vmstack's fio statistics and formats against fio 3.33: the histogram
 * buckets, the io_stat arithmetic, the depth distributions and the bandwidth
 * samples of the job engine's collector, the terse v3 line, the log files,
 * group_reporting and the start-up and disk lines, checked against fio's
 * sources' rules and against real fio 3.33 output (test/fixtures/fio-3.33).
 */

import { readFileSync } from 'node:fs';
import { FIO_IO_U_PLAT_NR, type FioJobSpec, FioStatCollector, ioStatDev, plat_idx_to_val, plat_val_to_idx } from '@vmstack/guest-kernel';
import { InputError, xxh32 } from '@vmstack/shm';
import test from 'ava';
import { parseJobFileText } from '../src/fio/jobfile.js';
import { jobsFromCommandLine, jobsFromJobFile } from '../src/fio/options.js';
import { applyGroupReporting } from '../src/report/fio-group.js';
import { toFioJson } from '../src/report/fio-json.js';
import { fioLogFiles } from '../src/report/fio-logs.js';
import { formatFioNormal, formatFioNormalHeader } from '../src/report/fio-normal.js';
import { formatFioTerse } from '../src/report/fio-terse.js';
import { emptyDirection, type FioRun, type JobResult } from '../src/report/result.js';

const fixture = (name: string) => readFileSync(new URL(`../../test/fixtures/fio-3.33/${name}`, import.meta.url), 'utf8');

const MS = 1_000_000;

test("plat_val_to_idx / plat_idx_to_val are fio's: every bin key of a real json+ output is a bucket value, and values map into their bucket", (t) => {
  const real = JSON.parse(fixture('jsonplus-null-randread.json')) as { jobs: { read: { clat_ns: { bins: Record<string, number> } } }[] };
  const values = new Set<number>();
  for (let i = 0; i < FIO_IO_U_PLAT_NR; i++) values.add(plat_idx_to_val(i));
  const keys = Object.keys(real.jobs[0].read.clat_ns.bins).map(Number);
  t.true(keys.length > 50);
  for (const k of keys) t.true(values.has(k), `bin ${k}`);
  // below 128 ns every value is its own bucket; above, 64 buckets per power of two
  t.is(plat_val_to_idx(127), 127);
  t.is(plat_val_to_idx(141), 134);
  t.is(plat_idx_to_val(134), 141);
  t.is(plat_idx_to_val(plat_val_to_idx(1_000_000)), 1_003_520);
  for (const v of [128, 1000, 65_535, 65_536, 1e9, 2 ** 33]) {
    const i = plat_val_to_idx(v);
    t.true(Math.abs(plat_idx_to_val(i) - v) / v < 1 / 64, `value ${v}`);
  }
  // past fio's range (about 17 s) everything lands in the last bucket
  t.is(plat_val_to_idx(2 ** 40), FIO_IO_U_PLAT_NR - 1);
});

test('xxh32 matches the reference XXH32 (seed 0)', (t) => {
  const enc = (s: string) => new TextEncoder().encode(s);
  t.is(xxh32([enc('')]), 0x02cc5d05);
  t.is(xxh32([enc('abc')]), 0x32d153ff);
  t.is(xxh32([enc('Nobody inspects the spammish repetition')]), 0xe2293b2f);
  t.is(xxh32([enc('Nobody inspects'), enc(' the spammish repetition')]), 0xe2293b2f, 'parts joined');
});

/** A job's I/Os through the collector: each [submit ns, issue ns, complete ns, direction]. */
function collect(ios: [number, number, number, number][], opts: { bwAvgMs?: number; logs?: FioJobSpec['logs'] } = {}) {
  const c = new FioStatCollector(0, opts.bwAvgMs ?? 500, opts.bwAvgMs ?? 500, opts.logs, 4096);
  const events: [number, () => void][] = [];
  ios.forEach(([s, i, e, d], k) => {
    events.push([s, () => c.submitted(s)]);
    events.push([e, () => c.completed(e, d, 4096, k * 4096, s, i)]);
  });
  events.sort((a, b) => a[0] - b[0]);
  for (const [, f] of events) f();
  return c;
}

test('collector: exact io_stats, lat = slat + clat, depth and submit/complete counts, clat in fio buckets', (t) => {
  const c = collect([
    [0, 1000, 11_000, 0],
    [100, 1200, 21_200, 0],
    [200, 1500, 31_500, 1],
  ]);
  c.reaped(2);
  c.reaped(1);
  c.slept();
  const r = c.result(40_000);
  t.deepEqual([r.read.clat.min, r.read.clat.max, r.read.clat.samples], [10_000, 20_000, 2]);
  t.is(r.read.clat.mean, 15_000);
  t.is(ioStatDev(r.read.clat), Math.sqrt(((10_000 - 15_000) ** 2 + (20_000 - 15_000) ** 2) / 1));
  t.is(r.read.lat.mean, r.read.slat.mean + r.read.clat.mean);
  t.is(r.write.lat.mean, r.write.slat.mean + r.write.clat.mean);
  // depths after each submission: 1, 2, 3 → fio's buckets 1, 2-3, 2-3
  t.deepEqual(r.ioUMap, [1, 2, 0, 0, 0, 0, 0]);
  t.is(r.totalIoU, 3);
  t.deepEqual(r.ioUSubmit, [0, 3, 0, 0, 0, 0, 0]);
  t.deepEqual(r.ioUComplete, [0, 2, 0, 0, 0, 0, 0]);
  t.is(r.ctx, 1);
  t.deepEqual(
    r.read.clatPlat.map(([i]) => plat_idx_to_val(i)),
    [plat_idx_to_val(plat_val_to_idx(10_000)), plat_idx_to_val(plat_val_to_idx(20_000))],
  );
  t.deepEqual(r.disk.ios, [2, 1]);
  t.deepEqual(r.disk.busyMs, [[0, 1]]);
});

test('collector: bandwidth and IOPS samples every 500 model ms, per direction, as fio __add_samples', (t) => {
  // one 4 KiB read completing every 1 ms for 1.6 s: 1000 per second
  const ios: [number, number, number, number][] = [];
  for (let k = 0; k < 1600; k++) ios.push([k * MS, k * MS + 1000, (k + 1) * MS, 0]);
  const r = collect(ios).result(1600 * MS);
  t.is(r.read.bw.samples, 3);
  t.is(r.read.iops.samples, 3);
  t.is(Math.round(r.read.iops.mean), 1000);
  t.is(Math.round(r.read.bw.mean), Math.floor((1000 * 4096) / 1024));
  t.is(r.write.bw.samples, 0, 'no sample for a direction that moved nothing');
});

function job(name: string, groupid: number, extra: Partial<JobResult> = {}): JobResult {
  return {
    jobname: name,
    groupid,
    jobOptions: {},
    read: emptyDirection(),
    write: emptyDirection(),
    jobRuntimeNs: 0,
    usrCpuPct: 0,
    sysCpuPct: 0,
    ctx: 0,
    error: 0,
    iodepth: 8,
    ...extra,
  };
}

/** A read job of `ios` 4 KiB reads of `clatNs` each, through the collector, as the engine hands it over. */
function measuredJob(name: string, ios: number, clatNs: number, extra: Partial<JobResult> = {}): JobResult {
  const list: [number, number, number, number][] = [];
  for (let k = 0; k < ios; k++) list.push([k * 100_000, k * 100_000 + 2000, k * 100_000 + 2000 + clatNs, 0]);
  const endNs = ios * 100_000 + clatNs;
  const { read, write, ...rest } = collect(list).result(endNs);
  const r = emptyDirection();
  for (let k = 0; k < ios; k++) r.clatNs.recordValue(clatNs);
  return job(name, 0, {
    read: { ...r, ioBytes: ios * 4096, totalIos: ios, runtimeNs: endNs, fio: read },
    write: { ...emptyDirection(), fio: write },
    jobRuntimeNs: endNs,
    sysCpuPct: 40,
    ctx: rest.ctx,
    fio: rest,
    disk: 'nvme0n1',
    ...extra,
  });
}

test("terse v3: fio's field layout, field by field, as a real fio 3.33 line", (t) => {
  const real = fixture('terse-randread.txt').trim().split(';');
  const run = { timestampMs: 0, globalOptions: {}, jobs: [measuredJob('j1', 2000, 50_000)], vmstack: {} as FioRun['vmstack'] };
  const ours = formatFioTerse(run).trim().split(';');
  t.is(ours.length, real.length, 'as many fields as fio prints for one drive');
  t.is(ours[0], '3');
  t.regex(ours[1], /^fio-3\.33/);
  t.deepEqual(ours.slice(2, 5), ['j1', '0', '0']);
  // read: io KiB, bw KiB/s, iops, runtime, then slat/clat min;max;mean;stdev in µs
  t.is(ours[5], String((2000 * 4096) / 1024));
  t.deepEqual([ours[13], ours[14]], ['50', '50'], 'clat min and max, µs');
  // the percentile fields and the unused ones, as fio writes them
  for (let i = 0; i < 20; i++) {
    const re = i < 17 ? /^\d+\.\d{6}%=\d+$/ : /^0%=0$/;
    t.regex(real[17 + i], re, `fio's field ${17 + i}`);
    t.regex(ours[17 + i], re, `our field ${17 + i}`);
  }
  // the same shape in every field: a number, a float, a percent, or the drive's name
  const shape = (f: string) => (/^\d+$/.test(f) ? 'int' : /^\d+\.\d+%$/.test(f) ? 'pct' : /^\d+\.\d+$/.test(f) ? 'float' : /%=/.test(f) ? 'p' : 'name');
  ours.forEach((f, i) => {
    if (i > 1) t.is(shape(f), shape(real[i]), `field ${i}: ours ${f}, fio's ${real[i]}`);
  });
  t.is(ours[ours.length - 9], 'nvme0n1');
});

test("log files: fio's names and line formats, averaged and per I/O, as real fio 3.33 logs", (t) => {
  const spec = jobsFromCommandLine({
    name: 'nj',
    rw: 'randread',
    bs: '4k',
    size: '1m',
    iodepth: '4',
    direct: '1',
    randseed: '137',
    write_bw_log: 'nj',
    write_lat_log: 'nj',
    write_iops_log: 'nj',
    write_hist_log: 'nj',
    log_avg_msec: '500',
    log_hist_msec: '500',
  }).jobs[0];
  const ios: [number, number, number, number][] = [];
  for (let k = 0; k < 1600; k++) ios.push([k * MS, k * MS + 1000, k * MS + 50_000, 0]);
  const stat = collect(ios, { bwAvgMs: 500, logs: spec.logs }).result(1600 * MS);
  const files = new Map(fioLogFiles([{ spec, logs: stat.logs }]).map((f) => [f.path, f.text]));
  t.deepEqual([...files.keys()].sort(), ['nj_bw.1.log', 'nj_clat.1.log', 'nj_clat_hist.1.log', 'nj_iops.1.log', 'nj_lat.1.log', 'nj_slat.1.log']);
  const averaged = /^\d+, \d+, [01], 0, 0$/;
  for (const line of fixture('avg_bw.1.log').trim().split('\n')) t.regex(line, averaged, "fio's line");
  for (const name of ['nj_bw.1.log', 'nj_clat.1.log', 'nj_iops.1.log']) {
    const lines = files.get(name)!.trim().split('\n');
    t.true(lines.length >= 3, name);
    for (const line of lines) t.regex(line, averaged, `${name}: ${line}`);
  }
  t.is(files.get('nj_clat.1.log')!.split('\n')[0], '500, 49000, 0, 0, 0');
  // the histogram log: time, direction, block size, then one count per fio bucket
  const realHist = fixture('avg_clat_hist.1.log').trim().split('\n')[0].split(', ');
  const ourHist = files.get('nj_clat_hist.1.log')!.trim().split('\n')[0].split(', ');
  t.is(ourHist.length, realHist.length);
  t.is(ourHist.length, 3 + FIO_IO_U_PLAT_NR);
  t.is(ourHist[2], '4096');
  // per-I/O logs carry each I/O's block size
  const perIo = { ...spec.logs!, avgMsec: 0, hist: undefined };
  const one = collect(ios.slice(0, 3), { logs: perIo }).result(3 * MS);
  const perIoFiles = new Map(fioLogFiles([{ spec: { ...spec, logs: perIo }, logs: one.logs }]).map((f) => [f.path, f.text]));
  const perIoLine = /^\d+, \d+, [01], 4096, 0$/;
  for (const line of fixture('perio_bw.1.log').trim().split('\n')) t.regex(line, perIoLine, "fio's line");
  t.deepEqual(perIoFiles.get('nj_bw.1.log')!.trim().split('\n'), ['0, 83591, 0, 4096, 0', '1, 83591, 0, 4096, 0', '2, 83591, 0, 4096, 0']);
  t.deepEqual(perIoFiles.get('nj_iops.1.log')!.trim().split('\n')[0], '0, 1, 0, 4096, 0');
});

test('json: depth distributions, ctx, bw samples, exact latencies, bins in fio buckets and disk_util from the engine', (t) => {
  const j = measuredJob('j', 20_000, 70_000);
  const doc = toFioJson({ timestampMs: 0, globalOptions: {}, jobs: [j], vmstack: {} as FioRun['vmstack'] }, { plus: true });
  const out = (doc.jobs as Record<string, unknown>[])[0];
  const read = out.read as Record<string, Record<string, unknown> | number>;
  const clat = read.clat_ns as Record<string, unknown>;
  t.is(clat.min, 70_000);
  t.is(clat.mean, 70_000);
  t.deepEqual(Object.keys(clat.bins as object), [String(plat_idx_to_val(plat_val_to_idx(70_000)))]);
  t.is((read.lat_ns as Record<string, number>).mean, (read.slat_ns as Record<string, number>).mean + (clat.mean as number));
  t.true((read.bw_samples as number) > 0);
  t.true((read.iops_samples as number) > 0);
  t.is((out.iodepth_level as Record<string, number>)['1'], 100);
  t.is((out.iodepth_submit as Record<string, number>)['4'], 100);
  const disk = (doc.disk_util as Record<string, unknown>[])[0];
  t.like(disk, { name: 'nvme0n1', read_ios: 20_000, write_ios: 0, read_merges: 0 });
  t.true((disk.util as number) > 0 && (disk.util as number) <= 100);
  t.true((disk.read_ticks as number) > 0);
});

test('group_reporting joins a group into one job: jobs=N, bytes and I/Os summed, the longest runtime, the last job options', (t) => {
  const a = measuredJob('a', 100, 50_000, { jobOptions: { rw: 'read' } });
  const b = measuredJob('a', 300, 80_000, { jobOptions: { rw: 'read', bs: '4k' } });
  const c = { ...measuredJob('other', 10, 50_000), groupid: 1 };
  const run = applyGroupReporting({ timestampMs: 0, globalOptions: { group_reporting: '' }, jobs: [a, b, c], vmstack: {} as FioRun['vmstack'] });
  t.is(run.jobs.length, 2);
  const g = run.jobs[0];
  t.is(g.jobs, 2);
  t.is(g.read.totalIos, 400);
  t.is(g.read.ioBytes, 400 * 4096);
  t.is(g.read.fio?.clat.samples, 400);
  t.is(g.read.fio?.clat.mean, (100 * 50_000 + 300 * 80_000) / 400);
  t.deepEqual(g.jobOptions, { rw: 'read', bs: '4k' });
  t.regex(formatFioNormal(run), /^a: \(groupid=0, jobs=2\): err= 0: /m);
  const off = applyGroupReporting({ timestampMs: 0, globalOptions: {}, jobs: [a, b], vmstack: {} as FioRun['vmstack'] });
  t.is(off.jobs.length, 2, 'without group_reporting every job is its own');
});

test("normal output: fio's start-up lines (clones as '...'), the version, Starting N processes; Disk stats at the end", (t) => {
  const real = fixture('normal-randread.txt');
  const header = formatFioNormalHeader([{ name: 'j1', groupid: 0, rw: 'randread', blockSizeBytes: 4096, ioengine: 'libaio', iodepth: 8, jobIndex: 0 }]);
  const realLines = real.split('\n');
  const ourLines = header.split('\n');
  t.is(ourLines[0], realLines[0]);
  t.regex(ourLines[1], /^fio-3\.33/);
  t.is(ourLines[2], realLines[2]);
  t.is(ourLines[3], '');
  const clones = formatFioNormalHeader(
    [0, 1, 2].map((jobIndex) => ({ name: 'a', groupid: 0, rw: 'read', blockSizeBytes: 4096, ioengine: 'libaio', iodepth: 2, jobIndex })),
  );
  t.regex(clones, /^a: \(g=0\): rw=read, .*\n\.\.\.\nfio-3\.33.*\nStarting 3 processes\n\n$/);
  const body = formatFioNormal({ timestampMs: 0, jobs: [measuredJob('j1', 100, 50_000)] });
  t.regex(body, /\n\nDisk stats \(read\/write\):\n {2}nvme0n1: ios=100\/0, merge=0\/0, ticks=\d+\/0, in_queue=\d+, util=\d+\.\d\d%\n$/);
  t.regex(real, /\n\nDisk stats \(read\/write\):\n {2}vda: ios=\d+\/\d+, merge=\d+\/\d+, ticks=\d+\/\d+, in_queue=\d+, util=\d+\.\d\d%\n$/);
});

test("status line: fio's layout, model-time rates, the share done and a wall-time ETA, redrawn in place", async (t) => {
  const { FioStatusLine, etaToStr, runString } = await import('../src/report/fio-status.js');
  t.is(etaToStr(7), '00m:07s');
  t.is(etaToStr(3723), '01h:02m:03s');
  t.is(etaToStr(90_000), '01d:01h:00m:00s');
  t.is(runString(['R', 'R', 'w', '_']), 'R(2)w(1)_(1)');
  const spec = jobsFromCommandLine({ name: 'j', rw: 'randread', bs: '4k', size: '8m', iodepth: '8', direct: '1', randseed: '137' }).jobs[0];
  const s = new FioStatusLine([spec], 0);
  t.is(s.line([{ completedIos: 0, clockNs: 0 }], 500), 'Jobs: 1 (f=1): [r(1)][-.-%][eta --]\r');
  // 256 of 2048 I/Os (12.5%) in 1 ms of model time and 1 s of wall time: 256k IOPS, 1000 MiB/s, 7 s to go
  t.is(s.line([{ completedIos: 256, clockNs: 1_000_000 }], 1000), 'Jobs: 1 (f=1): [r(1)][12.5%][r=1000MiB/s][r=256k IOPS][eta 00m:07s]\r');
  const done = s.line([{ completedIos: 2048, clockNs: Number.MAX_VALUE }], 2000);
  t.true(done.startsWith('Jobs: 0 (f=0)'));
  t.is(done.length, 'Jobs: 1 (f=1): [r(1)][12.5%][r=1000MiB/s][r=256k IOPS][eta 00m:07s]\r'.length, 'padded over the longer line before');
});

test('progress bar of many runs: drawn in place on a terminal, nothing elsewhere', async (t) => {
  const { RunProgress } = await import('../src/report/progress.js');
  t.is(RunProgress.bar('compare', 4, 8, 20_000), 'compare [##########----------] 4/8 runs, eta 00m:20s');
  t.is(RunProgress.bar('scale', 0, 3, 0), 'scale [--------------------] 0/3 runs, eta --');
  const written: string[] = [];
  const tty = new RunProgress('sweep', 2, { isTTY: true, write: (s: string) => written.push(s) });
  await tty.track(Promise.resolve(1));
  tty.end();
  t.true(written[0].startsWith('\rsweep [--------------------] 0/2 runs'));
  t.true(written[1].startsWith('\rsweep [##########----------] 1/2 runs'));
  t.regex(written[2], /^\r +\r$/);
  const quiet: string[] = [];
  const pipe = new RunProgress('sweep', 2, { isTTY: false, write: (s: string) => quiet.push(s) });
  await pipe.track(Promise.resolve(1));
  pipe.end();
  t.deepEqual(quiet, []);
});

const parse = (text: string) => jobsFromJobFile(parseJobFileText(text, 'test.fio', { env: {} }));

test('job options: verify modes and verify_pattern, verify_fatal, verify_backlog; log options; [global] name keeps the section names', (t) => {
  const v = parse('[a]\nsize=1m\nverify=xxhash\nverify_pattern=0xdeadbeef"ab"7\nverify_fatal=1\nverify_backlog=16\n').jobs[0];
  t.like(v, { verify: 'xxhash', verifyFatal: true, verifyBacklog: 16 });
  t.deepEqual(v.verifyPattern, [0xde, 0xad, 0xbe, 0xef, 0x61, 0x62, 7]);
  t.is(parse('[a]\nsize=1m\nverify_pattern=0x5a\n').jobs[0].verify, 'pattern', 'a verify_pattern alone means verify=pattern, as in fio');
  for (const mode of ['sha1', 'sha256', 'meta', 'md5', 'crc32c'] as const) t.is(parse(`[a]\nsize=1m\nverify=${mode}\n`).jobs[0].verify, mode);
  const bad = t.throws(() => parse('[a]\nsize=1m\nverify=sha512\n'), { instanceOf: InputError });
  t.regex(bad.message, /^\[a\] verify: .*sha512 .* not modelled/);
  t.throws(() => parse('[a]\nsize=1m\nverify=pattern\n'), { instanceOf: InputError, message: /verify_pattern/ });
  t.throws(() => parse('[a]\nsize=1m\nverify_pattern=%o\n'), { instanceOf: InputError, message: /%o is not modelled/ });
  const logged = parse('[global]\nname=g\nsize=1m\nwrite_bw_log\nwrite_hist_log=h\nlog_avg_msec=100\nlog_hist_msec=50\nper_job_logs=0\n[s1]\n[s2]\nname=own\n');
  t.deepEqual(
    logged.jobs.map((j) => j.name),
    ['s1', 'own'],
  );
  t.deepEqual(logged.jobs[0].logs, { bw: 's1', hist: 'h', avgMsec: 100, histMsec: 50, histCoarseness: 0, offset: false, perJobLogs: false });
  t.is(logged.jobs[0].bwAvgMs, 100, "the bandwidth is sampled at the log's period");
  t.deepEqual(logged.ignoredOptions, []);
  t.throws(() => parse('[a]\nsize=1m\nwrite_hist_log\nlog_hist_coarseness=7\n'), { instanceOf: InputError, message: /from 0 to 6/ });
  t.true(parse('[a]\nsize=1m\nwrite_bw_log\nlog_avg_msec=10\nlog_max_value=1\n').jobs[0].logs?.maxValue);
  t.throws(() => parse('[a]\nsize=1m\nwrite_bw_log\nlog_unix_epoch=1\n'), { instanceOf: InputError, message: /model ms since the job started/ });
});
