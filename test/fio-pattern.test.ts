/**
 * Whole stack on real workers: fio options that change the I/O pattern and
 * its pacing run as fio runs them, and what the report says follows:
 * rate_iops and rate set the throughput, thinktime stretches the job,
 * ramp_time keeps early I/O out of the results, loops and number_ios set
 * the count, bs=r,w and bssplit the sizes.
 */

import { releaseIdleWorkers, setWorkerReuse } from '@vmstack/shm';
import test from 'ava';
import { KiB, runFio } from './helpers/stack.js';

setWorkerReuse(true);
test.after.always(() => releaseIdleWorkers());

const MS = 1_000_000;

test('rate_iops and rate cap the throughput: runtime = I/Os / rate', async (t) => {
  const r = await runFio('lazy', [
    { rw: 'randread', bs: '4k', size: String(200 * KiB), rate_iops: '2000' },
    { rw: 'read', bs: '4k', size: String(200 * KiB), offset: String(200 * KiB), rate: '4m' },
  ]);
  const [iops, bw] = r.result.jobs;
  t.is(iops.read.totalIos, 50);
  // 50 I/Os at 2000 IOPS: the 50th goes out at 49 × 0.5 ms
  t.true(iops.read.runtimeNs >= 24.5 * MS && iops.read.runtimeNs < 25.5 * MS, `${iops.read.runtimeNs} ns`);
  // 200 KiB at 4 MiB/s: 48.8 ms
  t.true(bw.read.runtimeNs >= 47 * MS && bw.read.runtimeNs < 50 * MS, `${bw.read.runtimeNs} ns`);
  t.is(iops.error + bw.error, 0);
});

test('rate_min a job cannot reach is a job error, as fio fails it', async (t) => {
  const r = await runFio('direct', { rw: 'randread', bs: '4k', size: String(64 * KiB), rate_iops: '1000', rate_iops_min: '5000' });
  t.not(r.result.jobs[0].error, 0);
});

test('thinktime: the job waits thinktime after every thinktime_blocks I/Os', async (t) => {
  const plain = await runFio('direct', { rw: 'randread', bs: '4k', size: String(160 * KiB) });
  const think = await runFio('direct', { rw: 'randread', bs: '4k', size: String(160 * KiB), thinktime: '1000', thinktime_blocks: '8' });
  t.is(think.result.jobs[0].read.totalIos, 40);
  const added = think.result.jobs[0].read.runtimeNs - plain.result.jobs[0].read.runtimeNs;
  // five thinks of 1 ms (after I/O 8, 16, 24, 32 and 40; the last one delays nothing counted)
  t.true(added >= 4 * MS && added <= 5 * MS, `${added} ns added`);
});

test('ramp_time: I/O before it is not counted, runtime runs after it', async (t) => {
  const r = await runFio('direct', { rw: 'randread', bs: '4k', iodepth: '4', size: String(4096 * KiB), ramp_time: '2ms', runtime: '3ms', time_based: '1' });
  const [job] = r.result.jobs;
  t.true(job.read.runtimeNs >= 3 * MS && job.read.runtimeNs < 3.2 * MS, `${job.read.runtimeNs} ns`);
  const plain = await runFio('direct', { rw: 'randread', bs: '4k', iodepth: '4', size: String(4096 * KiB), runtime: '3ms', time_based: '1' });
  t.true(Math.abs(job.read.totalIos - plain.result.jobs[0].read.totalIos) < 10, 'as many counted I/Os as a 3 ms job');
});

test('loops, number_ios, bs=r,w and bssplit set the count and the sizes', async (t) => {
  const r = await runFio('strict', [
    { rw: 'read', bs: '4k', size: String(64 * KiB), loops: '3' },
    { rw: 'randread', bs: '4k', size: String(64 * KiB), offset: String(64 * KiB), number_ios: '5' },
    { rw: 'rw', bs: '4k,16k', size: String(256 * KiB), offset: String(128 * KiB) },
    { rw: 'randread', bssplit: '4k/50:32k/50', size: String(1024 * KiB), offset: String(384 * KiB) },
  ]);
  const [loops, n, rw, split] = r.result.jobs;
  t.is(loops.read.totalIos, 48);
  t.is(n.read.totalIos, 5);
  t.is(rw.read.ioBytes / rw.read.totalIos, 4096);
  t.is(rw.write.ioBytes / rw.write.totalIos, 16384);
  // one pass over the region: it ends when the next I/O of its direction no longer fits (fio's io_u_fits)
  t.true(rw.read.ioBytes + rw.write.ioBytes > 240 * KiB && rw.read.ioBytes + rw.write.ioBytes <= 256 * KiB);
  t.is(split.read.ioBytes, 1024 * KiB, 'the random map covers the region once with mixed sizes');
  const mean = split.read.ioBytes / split.read.totalIos;
  t.true(mean > 8 * KiB && mean < 24 * KiB, `mean ${mean} bytes`);
});
