/**
 * Benchmark (not a test): the model's own speed — simulated I/Os per second
 * of wall time — for fio 4 KiB sequential reads, iodepth 64, one job, with the
 * worker transport (each component its own thread) against the in-thread
 * transport (everything in this thread), measured side by side in one run.
 * Repeats each cell and reports the median; machines are shared and noisy.
 * Workers stay alive between runs of one process (runWorkers keeps idle
 * workers), so only the very first run pays worker start-up and a cold JIT:
 * its wall time is shown apart.
 *
 *   npx -y pnpm@9.15.9 bench:stack [--size 16m] [--reps 3] [--json]
 */

import { jobsFromCommandLine, runStack } from '@vmstack/cli';
import { DEFAULT_PROFILE_PATH, loadProfile, releaseIdleWorkers, setWorkerReuse } from '@vmstack/shm';

const args = process.argv.slice(2);
const arg = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const size = arg('size', '16m');
const reps = Number(arg('reps', '3'));
const profile = loadProfile(DEFAULT_PROFILE_PATH);
const strategies = ['direct', 'strict', 'lazy', 'bounce'] as const;
const transports = ['workers', 'in-thread'] as const;

interface Cell {
  strategy: string;
  transport: string;
  ios: number;
  loopIosPerWallS: number;
  runWallMs: number;
  firstRunWallMs: number;
  modelMiBps: number;
}

setWorkerReuse(true);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const cells: Cell[] = [];
for (const strategy of strategies) {
  for (const transport of transports) {
    const speed: number[] = [];
    const wall: number[] = [];
    let ios = 0;
    let mibps = 0;
    for (let r = 0; r < reps; r++) {
      const parsed = jobsFromCommandLine({ rw: 'read', bs: '4k', iodepth: '64', size }, {});
      const t0 = performance.now();
      const res = await runStack({
        jobs: parsed.jobs,
        jobOptions: parsed.jobOptions,
        globalOptions: {},
        strategy,
        clock: 'virtual',
        profile,
        quantumNs: 20_000,
        driverGeneration: 'v5.10',
        bufferContiguity: 'none',
        guestRamBytes: 256 * 1024 * 1024,
        spinLoads: 2000,
        dilation: 1,
        transport,
      });
      wall.push(performance.now() - t0);
      speed.push(res.vmstack.model_speed.simulated_ios_per_wall_s);
      ios = res.jobs[0].read.totalIos;
      mibps = res.jobs[0].read.ioBytes / 1048576 / (res.jobs[0].read.runtimeNs / 1e9);
    }
    cells.push({ strategy, transport, ios, loopIosPerWallS: median(speed), runWallMs: median(wall), firstRunWallMs: wall[0], modelMiBps: mibps });
  }
}

if (args.includes('--json')) {
  console.log(JSON.stringify({ size, reps, cells }, null, 2));
} else {
  console.log(`vmstack bench:stack — fio read 4k iodepth 64 numjobs 1 size ${size}, median of ${reps}`);
  console.log('strategy  transport  simulated I/Os  I/Os per wall s (job loop)  run wall ms  first run ms  workers ÷ in-thread  model MiB/s');
  for (const c of cells) {
    const peer = cells.find((x) => x.strategy === c.strategy && x.transport === 'in-thread')!;
    const ratio = c.transport === 'workers' ? (c.loopIosPerWallS / peer.loopIosPerWallS).toFixed(2) : '';
    console.log(
      `${c.strategy.padEnd(8)}  ${c.transport.padEnd(9)}  ${String(c.ios).padStart(14)}  ${String(c.loopIosPerWallS).padStart(26)}  ${String(Math.round(c.runWallMs)).padStart(11)}  ${String(Math.round(c.firstRunWallMs)).padStart(12)}  ${ratio.padStart(19)}  ${c.modelMiBps.toFixed(1).padStart(11)}`,
    );
  }
  const same = strategies.every((s) => {
    const [a, b] = transports.map((t) => cells.find((c) => c.strategy === s && c.transport === t)!.modelMiBps);
    return a === b;
  });
  console.log(same ? 'model results identical across transports: yes' : 'model results identical across transports: NO (bug)');
}
await releaseIdleWorkers();
