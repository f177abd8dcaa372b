/**
 * Whole stack, several jobs at once: with the default quantum (0) a run
 * repeats itself exactly. Every vCPU takes the guest's locks, and touches the
 * words it shares with the others outside locks (the lazy flush queue's
 * counters and timer, the bounce pool's eviction timer), in model-time order,
 * so two runs give the same fio numbers and the same lock_stat counters, and
 * the same as an explicit `--quantum 0`. A short flush-queue timeout and
 * eviction period make both timers fire within these small runs.
 */

import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { DmaStrategy } from '@vmstack/guest-kernel';
import { releaseIdleWorkers, setWorkerReuse } from '@vmstack/shm';
import test from 'ava';
import { profile, runFio, type StackRun } from './helpers/stack.js';

// the stack's workers stay between runs (no start-up per run); they exit before the process does
setWorkerReuse(true);
test.after.always(() => releaseIdleWorkers());

const execFileAsync = promisify(execFile);
const cli = fileURLToPath(new URL('../../packages/cli/dist/src/main.js', import.meta.url));

/** the flush-queue timer after 100 µs (not 10 ms), an eviction pass every 1 ms (not 5 s) */
const shortTimers = { ...profile, lazyFlushTimeoutNs: 100_000, bounceEvictionPeriodNs: 1_000_000 };

/** `jobs` clones reading and writing their own 128 KiB, 4 I/Os in flight each */
function jobs(n: number): Record<string, string> {
  return { rw: 'randrw', bs: '4k', iodepth: '4', size: '128k', numjobs: String(n), offset_increment: '128k', verify: 'crc32c' };
}

/** What must repeat: the fio numbers of every job, every lock's model-time counters, the stack's counters. */
function numbers(r: StackRun) {
  const dir = (d: StackRun['result']['jobs'][number]['read']) => ({
    ioBytes: d.ioBytes,
    ios: d.totalIos,
    runtimeNs: d.runtimeNs,
    clatMeanNs: d.clatNs.mean,
    clatMaxNs: d.clatNs.maxValue,
    latMeanNs: d.latNs.mean,
    slatMeanNs: d.slatNs.mean,
  });
  return {
    jobs: r.result.jobs.map((j) => ({ read: dir(j.read), write: dir(j.write), runtimeNs: j.jobRuntimeNs, verify: j.verify })),
    // real_contentions, the threads' own fights over a lock, are not model time
    locks: r.result.vmstack.lock_stat.map((l) => ({
      name: l.name,
      contentions: l.contentions,
      conBounces: l.con_bounces,
      waittimeTotalNs: l.waittime_total_ns,
      waittimeMaxNs: l.waittime_max_ns,
      acquisitions: l.acquisitions,
      acqBounces: l.acq_bounces,
      holdtimeTotalNs: l.holdtime_total_ns,
    })),
    counters: r.counters,
  };
}

const STRATEGIES: DmaStrategy[] = ['direct', 'strict', 'lazy', 'bounce'];

for (const strategy of STRATEGIES) {
  for (const n of [2, 4]) {
    test(`${strategy}, ${n} jobs: two runs with the default quantum give the same fio numbers and lock_stat counters, and the same as quantum 0`, async (t) => {
      const first = await runFio(strategy, jobs(n), { profile: shortTimers });
      const second = await runFio(strategy, jobs(n), { profile: shortTimers });
      const exact = await runFio(strategy, jobs(n), { profile: shortTimers, quantumNs: 0 });
      t.deepEqual(numbers(second), numbers(first), 'run 2 against run 1');
      t.deepEqual(numbers(exact), numbers(first), 'quantum 0 against the default');
      t.is(first.ios, n * 64, 'every job did its 32 I/Os and read its region back (verify reads count, as in fio)');
      // fio's verify phase checks the blocks each job wrote (4k writes: one block each)
      const written = first.result.jobs.reduce((s, j) => s + j.write.totalIos, 0);
      t.deepEqual(first.verify, { blocks_checked: written, corrupt: 0, overwritten: 0, never_written: 0 });
      // the order matters: the jobs waited for each other on some lock, and the timers fired
      if (strategy !== 'direct') t.true(first.result.vmstack.lock_stat.some((l) => l.contentions > 0 && l.name !== 'zone->lock'));
      if (strategy === 'lazy') t.true(first.counters.lazy!.flushes_by_timer > 0, 'flush-queue timer flushes');
      if (strategy === 'bounce') t.true(first.counters.bounce!.evictions > 0, 'eviction passes evicted slots');
    });
  }
}

/** `vmstack run` with these arguments: the fio numbers of its JSON output and its lock_stat model counters. */
async function cliNumbers(args: string[]) {
  const { stdout } = await execFileAsync(process.execPath, [cli, 'run', ...args, '--output-format', 'json'], { timeout: 120_000 });
  const out = JSON.parse(stdout) as {
    jobs: { read: { bw_bytes: number; iops: number; clat_ns: { mean: number } } }[];
    vmstack: { lock_stat: { name: string; contentions: number; waittime_total_ns: number }[] };
  };
  return {
    jobs: out.jobs.map((j) => [j.read.bw_bytes, j.read.iops, j.read.clat_ns.mean]),
    locks: out.vmstack.lock_stat.map((l) => [l.name, l.contentions, l.waittime_total_ns]),
  };
}

test('vmstack run without --quantum is exact: 4 strict jobs give the numbers of --quantum 0', async (t) => {
  const args = ['--rw', 'randread', '--bs', '4k', '--iodepth', '8', '--size', '256k', '--numjobs', '4', '--strategy', 'strict'];
  const byDefault = await cliNumbers(args);
  const exact = await cliNumbers([...args, '--quantum', '0']);
  t.deepEqual(byDefault, exact);
  t.true(byDefault.locks.some(([name, contentions]) => name === 'viommu->request_lock' && Number(contentions) > 0));
});
