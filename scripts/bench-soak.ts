/**
 * Benchmark (not a test): what a process that runs the stack many times keeps.
 * Runs one small fio job N times in this process with worker reuse on (as
 * compare, sweep and scale do) and prints, after each run, the main thread's
 * heap, the process's RSS, the ArrayBuffer memory (SharedArrayBuffers
 * included: a guest RAM counts there until the last thread that maps it lets
 * it go), the process's threads and its active handles. With nothing retained
 * every column stays flat after the first runs.
 *
 *   npx -y pnpm@9.15.9 bench:soak [--runs 60] [--size 64k] [--guest-ram-mib 64] [--json]
 */

import { readdirSync } from 'node:fs';
import { jobsFromCommandLine, runStack } from '@vmstack/cli';
import { DEFAULT_PROFILE_PATH, loadProfile, releaseIdleWorkers, setWorkerReuse } from '@vmstack/shm';

const args = process.argv.slice(2);
const arg = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const runs = Number(arg('runs', '60'));
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
const samples: Sample[] = [sample(0, 0)];
const json = args.includes('--json');
if (!json) {
  console.log(`vmstack bench:soak — ${runs} runs of fio read 4k iodepth 16 size ${size}, guest RAM ${guestRamBytes / MiB} MiB, worker reuse on`);
  console.log('  run  heap MiB  RSS MiB  ArrayBuffers MiB  threads  handles  wall ms  CPU ms');
}
const print = (s: Sample) =>
  console.log(
    `${String(s.run).padStart(5)}  ${String(s.heapUsedMiB).padStart(8)}  ${String(s.rssMiB).padStart(7)}  ${String(s.arrayBuffersMiB).padStart(16)}  ${String(s.threads).padStart(7)}  ${String(s.handles).padStart(7)}  ${String(s.wallMs).padStart(7)}  ${String(s.cpuMs).padStart(6)}`,
  );
if (!json) print(samples[0]);
for (let r = 1; r <= runs; r++) {
  const parsed = jobsFromCommandLine({ rw: 'read', bs: '4k', iodepth: '16', size }, {});
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
if (json) console.log(JSON.stringify({ runs, size, guestRamBytes, samples, afterRelease: after }, null, 2));
else {
  console.log('after releaseIdleWorkers:');
  print(after);
}
