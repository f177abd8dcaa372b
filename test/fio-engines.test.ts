/**
 * fio's I/O engines through the CLI, as a fio user runs them: psync and
 * pvsync (one blocking system call per I/O, depth capped at 1 with fio's
 * note, no slat), io_uring (SQEs batched per io_uring_enter by
 * iodepth_batch_submit, fixedbufs without per-I/O pinning), the refusals of
 * what the model does not run, and verify on every engine and strategy.
 */

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { type CliRun, vmstackRun } from './helpers/cli.js';

const vmstack = vmstackRun;

function jobFile(lines: string[]): string {
  const path = join(mkdtempSync(join(tmpdir(), 'vmstack-fio-engines-')), 'job.fio');
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}

type Obj = Record<string, unknown>;

/** One job's JSON (the first) of a run with --output-format json. */
function firstJob(r: CliRun): Obj {
  return (JSON.parse(r.stdout).jobs as Obj[])[0];
}

const randread = (engine: string, ...extra: string[]): string[] => [
  '[r]',
  `ioengine=${engine}`,
  'rw=randread',
  'bs=4k',
  'iodepth=32',
  'direct=1',
  'size=1m',
  ...extra,
];

test('psync: the depth is capped at 1 with fio’s note, the header and job options keep iodepth=32, no slat: lat is clat', async (t) => {
  const path = jobFile(randread('psync'));
  const r = await vmstack([path, '--output-format', 'json']);
  t.is(r.code, 0, r.stderr);
  t.true(r.stderr.includes('note: both iodepth >= 1 and synchronous I/O engine are selected, queue depth will be capped at 1'), r.stderr);
  const job = firstJob(r);
  t.like(job['job options'], { ioengine: 'psync', iodepth: '32' });
  t.like(job.iodepth_level, { '1': 100, '2': 0, '4': 0, '8': 0, '16': 0, '32': 0 });
  t.like(job.iodepth_submit, { '4': 100 });
  t.is(job.latency_depth, 32);
  const read = job.read as Obj;
  t.is(read.total_ios, 256);
  t.is((read.slat_ns as Obj).N, 0, 'fio keeps no slat for a synchronous engine');
  t.is((read.lat_ns as Obj).mean, (read.clat_ns as Obj).mean);
  const normal = await vmstack([path, '--output-format', 'normal']);
  t.is(normal.code, 0, normal.stderr);
  t.regex(normal.stdout, /^r: \(g=0\): rw=randread, bs=\(R\) 4096B-4096B, \(W\) 4096B-4096B, \(T\) 4096B-4096B, ioengine=psync, iodepth=32\n/);
  t.notRegex(normal.stdout, /\n {4}slat /);
});

test('pvsync runs as psync does (preadv: the same path with an iovec)', async (t) => {
  const [p, v] = await Promise.all([
    vmstack([jobFile(randread('psync')), '--output-format', 'json']),
    vmstack([jobFile(randread('pvsync')), '--output-format', 'json']),
  ]);
  t.is(p.code, 0, p.stderr);
  t.is(v.code, 0, v.stderr);
  t.like(firstJob(v)['job options'], { ioengine: 'pvsync' });
  t.deepEqual((firstJob(v).read as Obj).clat_ns, (firstJob(p).read as Obj).clat_ns);
});

test('io_uring: batched submission makes fewer submit calls than I/Os and costs the vCPU less; batch 1 is libaio’s path; fixedbufs skips the pin', async (t) => {
  const runs = await Promise.all(
    [randread('libaio'), randread('io_uring'), randread('io_uring', 'iodepth_batch_submit=8'), randread('io_uring', 'iodepth_batch_submit=8', 'fixedbufs')].map(
      (lines) => vmstack([jobFile(lines), '--strategy', 'strict', '--output-format', 'json']),
    ),
  );
  for (const r of runs) t.is(r.code, 0, r.stderr);
  const [libaio, uring1, uring8, fixed8] = runs.map(firstJob);
  t.like(uring8['job options'], { ioengine: 'io_uring', iodepth_batch_submit: '8' });
  t.like(uring1.iodepth_submit, { '4': 100 }, 'one SQE per io_uring_enter');
  // every io_uring_enter submitted 5 to 8 SQEs: at most a fifth as many calls as I/Os
  t.like(uring8.iodepth_submit, { '0': 0, '4': 0, '8': 100 });
  const iops = (j: Obj): number => (j.read as Obj).iops as number;
  t.is(iops(uring1), iops(libaio), 'one SQE per io_uring_enter costs what one io_submit does');
  t.true(iops(uring8) > iops(uring1), `${iops(uring8)} > ${iops(uring1)}: one system call per 8 I/Os (strict mapping keeps the vCPU the bottleneck)`);
  // the SQEs wait in the ring for their batch: fio's slat of io_uring counts that wait
  const slatMean = (j: Obj): number => ((j.read as Obj).slat_ns as Obj).mean as number;
  t.true(slatMean(uring8) > slatMean(uring1));
  // registered buffers are not pinned per I/O: each SQE of a batch reaches the device sooner
  t.true(slatMean(fixed8) < slatMean(uring8), `${slatMean(fixed8)} < ${slatMean(uring8)}`);
  t.true(iops(fixed8) >= iops(uring8));
});

test('what the model does not run is refused with exit 2 and one line naming the option and why', async (t) => {
  const cases: [string[], RegExp][] = [
    [randread('io_uring', 'hipri'), /^vmstack: \[r\] hipri: .*NVMe poll queue/],
    [randread('io_uring', 'sqthread_poll=1'), /^vmstack: \[r\] sqthread_poll: .*a CPU of its own/],
    [randread('io_uring', 'registerfiles'), /^vmstack: \[r\] registerfiles: .*no published measurement/],
    [randread('io_uring', 'force_async=4'), /^vmstack: \[r\] force_async: .*io-wq/],
    [[...randread('io_uring'), 'direct=0'], /^vmstack: \[r\] ioengine: "io_uring" is not allowed; ioengine=io_uring with direct=1 only/],
    [randread('libaio', 'fixedbufs'), /^vmstack: \[r\] fixedbufs: .*an option of ioengine=io_uring/],
    [randread('sync'), /^vmstack: \[r\] ioengine: "sync" is not allowed; libaio, psync, pvsync or io_uring/],
  ];
  const runs = await Promise.all(cases.map(([lines]) => vmstack([jobFile(lines)])));
  runs.forEach((r, i) => {
    t.is(r.code, 2, r.stderr);
    t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
    t.regex(r.stderr, cases[i][1]);
    t.is(r.stdout, '');
  });
});

test('verify passes on every engine and strategy (psync buffered too)', async (t) => {
  const path = jobFile([
    '[global]',
    'size=256k',
    'bs=16k',
    'iodepth=4',
    'verify=crc32c',
    'direct=1',
    '[psync]',
    'ioengine=psync',
    'rw=randwrite',
    '[pvsync]',
    'stonewall',
    'ioengine=pvsync',
    'rw=write',
    '[uring]',
    'stonewall',
    'ioengine=io_uring',
    'iodepth_batch_submit=4',
    'fixedbufs',
    'rw=randwrite',
    '[psync-buffered]',
    'stonewall',
    'ioengine=psync',
    'direct=0',
    'rw=randwrite',
  ]);
  const strategies = ['direct', 'strict', 'lazy', 'bounce'];
  const runs = await Promise.all(strategies.map((s) => vmstack([path, '--strategy', s, '--minimal'])));
  runs.forEach((r, i) => {
    t.is(r.code, 0, `${strategies[i]}: ${r.stderr}`);
    const lines = r.stdout.trim().split('\n');
    t.deepEqual(
      lines.map((l) => [l.split(';')[2], l.split(';')[4], l.split(';')[5]]),
      ['psync', 'pvsync', 'uring', 'psync-buffered'].map((name) => [name, '0', '256']),
      `${strategies[i]}: every job err=0, its 256 KiB read back`,
    );
  });
});
