/**
 * Benchmark (not a test): the model's own speed — simulated I/Os per second
 * of wall time — for fio 4 KiB sequential reads, iodepth 64, one job, with the
 * worker transport (each component its own thread) against the in-thread
 * transport (everything in this thread), measured side by side in one run.
 * Repeats each cell and reports the median; machines are shared and noisy.
 * Workers stay alive between runs of one process (runWorkers keeps idle
 * workers), so only the very first run pays worker start-up and a cold JIT.
 * Each cell first runs `--warmup` unmeasured runs (their wall time is shown,
 * as "first ms"): V8 optimizes the hot paths over the first thousands of I/Os
 * and a cold cell measures mostly the compiler. The default size (32 MiB,
 * 8192 I/Os) with one warm-up run measures the steady state, within about
 * three minutes for the whole bench on two cores.
 *
 * Next to it, in the same run, the physical limit of the worker transport: the
 * synchronous chain guest → vmm → host → vmm → guest on three threads with
 * plain Atomics (one round trip is four hand-offs), with every thread parking
 * at once, spinning then parking, and mixed (the guest and host park, the VMM
 * spins through the host's work). A strict I/O costs the guest two such round
 * trips (map, unmap: `kicks` per I/O, measured), so strict on workers is
 * printed as a share of chain round trips per second ÷ kicks per I/O.
 *
 * Per component (guest, vmm, host, device): wall ns per simulated I/O, from one
 * extra run per cell with `timeComponents` (workers: each thread's busy time,
 * run less parked, spinning included; in-thread: timers around each
 * component's calls). Peak RSS is the process's (workers are threads of it).
 *
 * Several jobs: `--numjobs` (default 4) jobs of `--jobs-size` each (default
 * 8m) for strict and bounce on workers (one vCPU worker per job; the in-thread
 * transport runs one vCPU), at `--quantum 0`, the exact default of `vmstack run`:
 * their aggregate I/Os per wall s and its ratio to the one-job row (above 1:
 * the jobs use the cores the one job leaves idle).
 *
 *   npx -y pnpm@9.15.9 bench:stack [--size 32m] [--reps 3] [--warmup 1] [--chain-ms 600] [--numjobs 4] [--jobs-size 8m]
 *                                  [--strategies direct,strict,lazy,bounce] [--transports workers,in-thread] [--json]
 */

import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { type ComponentWallNs, jobsFromCommandLine, runStack } from '@vmstack/cli';
import { DEFAULT_PROFILE_PATH, loadProfile, releaseIdleWorkers, setWorkerReuse } from '@vmstack/shm';

const args = process.argv.slice(2);
const arg = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const size = arg('size', '32m');
const reps = Number(arg('reps', '3'));
const warmup = Number(arg('warmup', '1'));
const chainMs = Number(arg('chain-ms', '600'));
const numjobs = Number(arg('numjobs', '4'));
const jobsSize = arg('jobs-size', '8m');
const SPIN_LOADS = 2000;
const profile = loadProfile(DEFAULT_PROFILE_PATH);
type Strategy = 'direct' | 'strict' | 'lazy' | 'bounce';
type Transport = 'workers' | 'in-thread';
const strategies = arg('strategies', 'direct,strict,lazy,bounce').split(',') as Strategy[];
const transports = arg('transports', 'workers,in-thread').split(',') as Transport[];
/** the several-jobs rows: these strategies on workers */
const jobsStrategies = (['strict', 'bounce'] as const).filter((s) => strategies.includes(s) && transports.includes('workers') && numjobs > 1);

// ---- the chain limit -------------------------------------------------------------

/**
 * One thread of the chain. Words: 0 stop, 1 guest→vmm, 2 vmm→host, 3 host→vmm,
 * 4 vmm→guest, 5 round trips done. A hand-off bumps a word and notifies it; a
 * wait spins `spin` loads on the word, then parks on it.
 */
const CHAIN_WORKER = `
const { workerData: { sab, role, spin, ms } } = require('node:worker_threads');
const w = new Int32Array(sab);
function wait(i, seen) {
  for (let k = 0; k < spin; k++) if (Atomics.load(w, i) !== seen) return;
  while (Atomics.load(w, i) === seen) Atomics.wait(w, i, seen, 50);
}
function send(i) { Atomics.add(w, i, 1); Atomics.notify(w, i); }
if (role === 'guest') {
  const end = performance.now() + ms;
  let n = 0;
  while (performance.now() < end) {
    const seen = Atomics.load(w, 4);
    send(1);
    wait(4, seen);
    n++;
  }
  Atomics.store(w, 5, n);
  Atomics.store(w, 0, 1);
  send(1); send(2); send(3);
} else if (role === 'vmm') {
  let req = 0;
  for (;;) {
    wait(1, req); req = Atomics.load(w, 1);
    if (Atomics.load(w, 0)) break;
    const seen = Atomics.load(w, 3);
    send(2);
    wait(3, seen);
    if (Atomics.load(w, 0)) break;
    send(4);
  }
} else {
  let req = 0;
  for (;;) {
    wait(2, req); req = Atomics.load(w, 2);
    if (Atomics.load(w, 0)) break;
    send(3);
  }
}
`;

const CHAIN_MODES = [
  { key: 'park', label: 'park', spin: { guest: 0, vmm: 0, host: 0 } },
  { key: 'spin-then-park', label: `spin-then-park (${SPIN_LOADS})`, spin: { guest: SPIN_LOADS, vmm: SPIN_LOADS, host: SPIN_LOADS } },
  { key: 'mixed', label: 'guest park, vmm spin, host park', spin: { guest: 0, vmm: 1e9, host: 0 } },
] as const;

/** Round trips per second of the chain in one mode: three threads for `ms` of wall time. */
async function chainRoundTripsPerS(spin: { guest: number; vmm: number; host: number }, ms: number): Promise<number> {
  const sab = new SharedArrayBuffer(64);
  const roles = ['vmm', 'host', 'guest'] as const;
  const workers = roles.map((role) => new Worker(CHAIN_WORKER, { eval: true, workerData: { sab, role, spin: spin[role], ms } }));
  await Promise.all(workers.map((w) => new Promise((resolve, reject) => w.on('exit', resolve).on('error', reject))));
  return Math.round(Atomics.load(new Int32Array(sab), 5) / (ms / 1000));
}

async function measureChain(): Promise<{ key: string; label: string; roundTripsPerS: number }[]> {
  await chainRoundTripsPerS(CHAIN_MODES[0].spin, 100); // warm-up
  const out = [];
  for (const m of CHAIN_MODES) {
    const xs: number[] = [];
    for (let r = 0; r < 3; r++) xs.push(await chainRoundTripsPerS(m.spin, chainMs / 3));
    out.push({ key: m.key, label: m.label, roundTripsPerS: median(xs) });
  }
  return out;
}

// ---- the stack -------------------------------------------------------------------

interface Cell {
  strategy: string;
  transport: string;
  numjobs: number;
  ios: number;
  loopIosPerWallS: number;
  runWallMs: number;
  firstRunWallMs: number;
  modelMiBps: number;
  simPerWall: number;
  /** virtio-iommu kicks per I/O: the guest's synchronous round trips to the VMM */
  kicksPerIo: number;
  /** wall ns per simulated I/O per component (the timed run) */
  componentNsPerIo: ComponentWallNs;
  /** the process's peak RSS after this cell, MiB */
  peakRssMiB: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const peakRssMiB = () => Math.round(process.resourceUsage().maxRSS / 1024);

async function runOnce(strategy: Strategy, transport: Transport, timeComponents: boolean, jobs = 1) {
  const parsed = jobsFromCommandLine({ rw: 'read', bs: '4k', iodepth: '64', size: jobs > 1 ? jobsSize : size, direct: '1', numjobs: String(jobs) }, {});
  return runStack({
    jobs: parsed.jobs,
    jobOptions: parsed.jobOptions,
    globalOptions: {},
    strategy,
    clock: 'virtual',
    profile,
    // one job: no peer vCPU to be ahead of; several: exact lock order, as `vmstack run` by default
    quantumNs: jobs > 1 ? 0 : 20_000,
    driverGeneration: 'v5.10',
    bufferContiguity: 'none',
    guestRamBytes: 256 * 1024 * 1024,
    spinLoads: SPIN_LOADS,
    dilation: 1,
    transport,
    timeComponents,
  });
}

setWorkerReuse(true);
const chain = await measureChain();
const chainBest = Math.max(...chain.map((c) => c.roundTripsPerS));
const cells: Cell[] = [];
const totalIos = (res: Awaited<ReturnType<typeof runOnce>>) => res.jobs.reduce((n, j) => n + j.read.totalIos, 0);
async function measureCell(strategy: Strategy, transport: Transport, jobs: number): Promise<void> {
  const speed: number[] = [];
  const wall: number[] = [];
  let firstRunWallMs = 0;
  let res: Awaited<ReturnType<typeof runOnce>> | undefined;
  for (let r = 0; r < warmup + reps; r++) {
    const t0 = performance.now();
    res = await runOnce(strategy, transport, false, jobs);
    const ms = performance.now() - t0;
    if (r === 0) firstRunWallMs = ms;
    if (r < warmup) continue;
    wall.push(ms);
    speed.push(res.vmstack.model_speed.simulated_ios_per_wall_s);
  }
  // the timed run of one job: each thread's busy time; several jobs show scaling only
  const timed = jobs === 1 ? await runOnce(strategy, transport, true) : undefined;
  const ios = totalIos(res!);
  cells.push({
    strategy,
    transport,
    numjobs: jobs,
    ios,
    loopIosPerWallS: median(speed),
    runWallMs: median(wall),
    firstRunWallMs,
    modelMiBps: res!.jobs.reduce((x, j) => x + j.read.ioBytes / 1048576 / (j.read.runtimeNs / 1e9), 0),
    simPerWall: res!.vmstack.model_speed.sim_time_per_wall_time * (median(speed) / res!.vmstack.model_speed.simulated_ios_per_wall_s),
    kicksPerIo: res!.vmstack.counters.virtio_iommu.kicks / ios,
    componentNsPerIo: timed?.vmstack.model_speed.component_wall_ns_per_io ?? { guest: 0, vmm: 0, host: 0, device: 0 },
    peakRssMiB: peakRssMiB(),
  });
}
for (const strategy of strategies) for (const transport of transports) await measureCell(strategy, transport, 1);
for (const strategy of jobsStrategies) await measureCell(strategy, 'workers', numjobs);

/** chain round trips per I/O → the I/O rate the chain allows; null without round trips */
const chainLimit = (c: Cell) => (c.kicksPerIo >= 0.5 ? chainBest / c.kicksPerIo : null);

const oneJob = cells.filter((c) => c.numjobs === 1);
const severalJobs = cells.filter((c) => c.numjobs > 1);
/** a several-jobs row's aggregate rate ÷ its strategy's one-job workers rate */
const scaling = (c: Cell) => {
  const one = oneJob.find((x) => x.strategy === c.strategy && x.transport === 'workers');
  return one ? c.loopIosPerWallS / one.loopIosPerWallS : null;
};

if (args.includes('--json')) {
  console.log(
    JSON.stringify(
      {
        size,
        reps,
        warmup,
        jobsSize,
        numjobs,
        chain,
        chainBestRoundTripsPerS: chainBest,
        cells: cells.map((c) => ({
          ...c,
          chainIosPerS: chainLimit(c),
          toChain: c.transport === 'workers' && chainLimit(c) ? c.loopIosPerWallS / chainLimit(c)! : null,
          scaling: c.numjobs > 1 ? scaling(c) : null,
        })),
        peakRssMiB: peakRssMiB(),
      },
      null,
      2,
    ),
  );
} else {
  console.log(
    `vmstack bench:stack — fio read 4k direct=1 iodepth 64 numjobs 1 size ${size}, ${warmup} warm-up run(s) then median of ${reps}; ` +
      `node ${process.version}, ${availableParallelism()} cores`,
  );
  console.log('chain limit: guest → vmm → host → vmm → guest on three threads, plain Atomics, round trips per wall s');
  for (const c of chain) console.log(`  ${c.label.padEnd(34)} ${String(c.roundTripsPerS).padStart(8)}`);
  console.log(`  ${'best'.padEnd(34)} ${String(chainBest).padStart(8)}`);
  console.log('');
  console.log(
    'strategy  transport  sim I/Os  I/Os per wall s  run ms  first ms  w÷in-thread  kicks/IO  chain I/Os/s  ÷chain  model MiB/s  sim÷wall' +
      '   guest    vmm   host  device (wall ns per I/O)  peak RSS MiB',
  );
  for (const c of oneJob) {
    const peer = oneJob.find((x) => x.strategy === c.strategy && x.transport === 'in-thread');
    const ratio = c.transport === 'workers' && peer ? (c.loopIosPerWallS / peer.loopIosPerWallS).toFixed(2) : '';
    const limit = chainLimit(c);
    const toChain = c.transport === 'workers' && limit ? (c.loopIosPerWallS / limit).toFixed(2) : '';
    const p = c.componentNsPerIo;
    console.log(
      `${c.strategy.padEnd(8)}  ${c.transport.padEnd(9)}  ${String(c.ios).padStart(8)}  ${String(c.loopIosPerWallS).padStart(15)}  ` +
        `${String(Math.round(c.runWallMs)).padStart(6)}  ${String(Math.round(c.firstRunWallMs)).padStart(8)}  ${ratio.padStart(11)}  ` +
        `${c.kicksPerIo.toFixed(2).padStart(8)}  ${(limit ? String(Math.round(limit)) : '-').padStart(12)}  ${toChain.padStart(6)}  ` +
        `${c.modelMiBps.toFixed(1).padStart(11)}  ${c.simPerWall.toFixed(3).padStart(8)}  ` +
        `${String(p.guest).padStart(6)} ${String(p.vmm).padStart(6)} ${String(p.host).padStart(6)} ${String(p.device).padStart(7)}  ${''.padStart(24)}` +
        `${String(c.peakRssMiB).padStart(12)}`,
    );
  }
  if (severalJobs.length > 0) {
    console.log('');
    console.log(`several jobs on workers: numjobs ${numjobs}, size ${jobsSize} each, quantum 0 (exact); aggregate over the jobs`);
    console.log('strategy  jobs  sim I/Os  I/Os per wall s  run ms  first ms  ÷ one job  model MiB/s  peak RSS MiB');
    for (const c of severalJobs) {
      const x = scaling(c);
      console.log(
        `${c.strategy.padEnd(8)}  ${String(c.numjobs).padStart(4)}  ${String(c.ios).padStart(8)}  ${String(c.loopIosPerWallS).padStart(15)}  ` +
          `${String(Math.round(c.runWallMs)).padStart(6)}  ${String(Math.round(c.firstRunWallMs)).padStart(8)}  ${(x === null ? '' : x.toFixed(2)).padStart(9)}  ` +
          `${c.modelMiBps.toFixed(1).padStart(11)}  ${String(c.peakRssMiB).padStart(12)}`,
      );
    }
  }
  console.log('');
  const same = strategies.every((s) => {
    const both = oneJob.filter((c) => c.strategy === s);
    return both.every((c) => c.modelMiBps === both[0].modelMiBps);
  });
  console.log(same ? 'model results identical across transports: yes' : 'model results identical across transports: NO (bug)');
  console.log(`peak RSS of the process: ${peakRssMiB()} MiB`);
}
await releaseIdleWorkers();
