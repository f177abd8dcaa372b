/**
 * Benchmark (not a test): what a process that runs the stack many times keeps.
 * Runs one small fio job N times in this process with worker reuse on (as
 * compare, sweep and scale do) and prints, after each run, the main thread's
 * heap, the process's RSS, the ArrayBuffer memory (SharedArrayBuffers
 * included: a guest RAM counts there until the last thread that maps it lets
 * it go), the process's threads and its active handles. With nothing retained
 * every column stays flat after the first runs. The last lines sum up the runs
 * after warm-up: CPU time per run (every thread of the process) and the range
 * of each memory column, and how much shared memory the runs took from the
 * shared-buffer pool and how much they allocated anew.
 *
 *   npx -y pnpm@9.15.9 bench:soak [--runs 60] [--size 64k] [--guest-ram-mib 64] [--no-pool] [--json]
 *
 * `--no-pool`: every run allocates fresh shared buffers (the shared-buffer pool
 * off), for comparison: nothing forces a collection, so idle workers and this
 * thread keep earlier runs' regions mapped.
 */

import { readdirSync } from 'node:fs';
import { jobsFromCommandLine, runStack } from '@vmstack/cli';
import { DEFAULT_PROFILE_PATH, loadProfile, releaseIdleWorkers, setSharedBufferReuse, setWorkerReuse, sharedPoolStats } from '@vmstack/shm';

const args = process.argv.slice(2);
const arg = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const runs = Number(arg('runs', '60'));
const warmUpRuns = Math.min(runs - 1, Number(arg('warm-up', '5')));
const size = arg('size', '64k');
const guestRamBytes = Number(arg('guest-ram-mib', '64')) * 1024 * 1024;
const profile = loadProfile(DEFAULT_PROFILE_PATH);

/** threads of this process (Linux); -1 elsewhere */
function threadCount(): number {
  try {
    return readdirSync('/proc/self/task').length;
  } catch {
    return -1;
  }
}

interface Sample {
  run: number;
  heapUsedMiB: number;
  rssMiB: number;
  arrayBuffersMiB: number;
  threads: number;
  handles: number;
  wallMs: number;
  /** CPU time of every thread of the process during the run (less sensitive than wall time to a busy machine) */
  cpuMs: number;
}

const MiB = 1024 * 1024;
const sample = (run: number, wallMs: number, cpuMs = 0): Sample => {
  const m = process.memoryUsage();
  return {
    run,
    heapUsedMiB: Math.round(m.heapUsed / MiB),
    rssMiB: Math.round(m.rss / MiB),
    arrayBuffersMiB: Math.round(m.arrayBuffers / MiB),
    threads: threadCount(),
    handles: process.getActiveResourcesInfo().length,
    wallMs: Math.round(wallMs),
    cpuMs: Math.round(cpuMs),
  };
};

setWorkerReuse(true);
const noPool = args.includes('--no-pool');
if (noPool) setSharedBufferReuse(false);
const samples: Sample[] = [sample(0, 0)];
const json = args.includes('--json');
if (!json) {
  console.log(
    `vmstack bench:soak — ${runs} runs of fio read 4k iodepth 16 size ${size}, guest RAM ${guestRamBytes / MiB} MiB, worker reuse on, shared-buffer pool ${noPool ? 'off' : 'on'}`,
  );
  console.log('  run  heap MiB  RSS MiB  ArrayBuffers MiB  threads  handles  wall ms  CPU ms');
}
const print = (s: Sample) =>
  console.log(
    `${String(s.run).padStart(5)}  ${String(s.heapUsedMiB).padStart(8)}  ${String(s.rssMiB).padStart(7)}  ${String(s.arrayBuffersMiB).padStart(16)}  ${String(s.threads).padStart(7)}  ${String(s.handles).padStart(7)}  ${String(s.wallMs).padStart(7)}  ${String(s.cpuMs).padStart(6)}`,
  );
if (!json) print(samples[0]);
for (let r = 1; r <= runs; r++) {
  const parsed = jobsFromCommandLine({ rw: 'read', bs: '4k', iodepth: '16', size, direct: '1' }, {});
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  await runStack({
    jobs: parsed.jobs,
    jobOptions: parsed.jobOptions,
    globalOptions: {},
    strategy: 'strict',
    clock: 'virtual',
    profile,
    quantumNs: 0,
    driverGeneration: 'v5.10',
    bufferContiguity: 'none',
    guestRamBytes,
    spinLoads: 2000,
    dilation: 1,
  });
  const cpu = process.cpuUsage(cpu0);
  const s = sample(r, performance.now() - t0, (cpu.user + cpu.system) / 1000);
  samples.push(s);
  if (!json) print(s);
}
await releaseIdleWorkers();
const after = sample(runs + 1, 0);
const warm = samples.slice(warmUpRuns + 1);
const range = (k: keyof Sample) => {
  const v = warm.map((s) => s[k]);
  return { min: Math.min(...v), max: Math.max(...v), first: v[0], last: v[v.length - 1] };
};
const cpu = warm.map((s) => s.cpuMs).sort((a, b) => a - b);
const summary = {
  afterWarmUpRuns: warmUpRuns,
  cpuMsPerRun: { mean: Math.round(cpu.reduce((a, b) => a + b, 0) / cpu.length), median: cpu[cpu.length >> 1] },
  wallMsPerRun: { mean: Math.round(warm.reduce((a, s) => a + s.wallMs, 0) / warm.length) },
  heapUsedMiB: range('heapUsedMiB'),
  rssMiB: range('rssMiB'),
  arrayBuffersMiB: range('arrayBuffersMiB'),
  threads: range('threads'),
  handles: range('handles'),
  sharedPool: { ...sharedPoolStats },
};
if (json) console.log(JSON.stringify({ runs, size, guestRamBytes, samples, afterRelease: after, summary }, null, 2));
else {
  console.log('after releaseIdleWorkers:');
  print(after);
  const r = (x: { min: number; max: number; first: number; last: number }) => `${x.first} → ${x.last} (min ${x.min}, max ${x.max})`;
  console.log(
    `runs ${warmUpRuns + 1}-${runs}: CPU ms per run mean ${summary.cpuMsPerRun.mean}, median ${summary.cpuMsPerRun.median}; wall ms mean ${summary.wallMsPerRun.mean}`,
  );
  console.log(`  heap MiB ${r(summary.heapUsedMiB)}; RSS MiB ${r(summary.rssMiB)}; ArrayBuffers MiB ${r(summary.arrayBuffersMiB)}`);
  console.log(`  threads ${r(summary.threads)}; handles ${r(summary.handles)}`);
  const MiBs = (b: number) => (b / MiB).toFixed(0);
  console.log(
    `  shared memory: ${MiBs(sharedPoolStats.freshBytes)} MiB allocated, ${MiBs(sharedPoolStats.reusedBytes)} MiB reused from the pool (zeroing ${sharedPoolStats.zeroingMs.toFixed(0)} ms in all), ${MiBs(sharedPoolStats.droppedBytes)} MiB dropped`,
  );
}
