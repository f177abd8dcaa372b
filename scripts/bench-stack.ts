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
 *   npx -y pnpm@9.15.9 bench:stack [--size 16m] [--reps 3] [--chain-ms 600] [--json]
 */

import { Worker } from 'node:worker_threads';
import { type ComponentWallNs, jobsFromCommandLine, runStack } from '@vmstack/cli';
import { DEFAULT_PROFILE_PATH, loadProfile, releaseIdleWorkers, setWorkerReuse } from '@vmstack/shm';

const args = process.argv.slice(2);
const arg = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const size = arg('size', '16m');
const reps = Number(arg('reps', '3'));
const chainMs = Number(arg('chain-ms', '600'));
const SPIN_LOADS = 2000;
const profile = loadProfile(DEFAULT_PROFILE_PATH);
const strategies = ['direct', 'strict', 'lazy', 'bounce'] as const;
const transports = ['workers', 'in-thread'] as const;

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

async function runOnce(strategy: (typeof strategies)[number], transport: (typeof transports)[number], timeComponents: boolean) {
  const parsed = jobsFromCommandLine({ rw: 'read', bs: '4k', iodepth: '64', size, direct: '1' }, {});
  return runStack({
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
for (const strategy of strategies) {
  for (const transport of transports) {
    const speed: number[] = [];
    const wall: number[] = [];
    let res: Awaited<ReturnType<typeof runOnce>> | undefined;
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      res = await runOnce(strategy, transport, false);
      wall.push(performance.now() - t0);
      speed.push(res.vmstack.model_speed.simulated_ios_per_wall_s);
    }
    const timed = await runOnce(strategy, transport, true);
    const read = res!.jobs[0].read;
    cells.push({
      strategy,
      transport,
      ios: read.totalIos,
      loopIosPerWallS: median(speed),
      runWallMs: median(wall),
      firstRunWallMs: wall[0],
      modelMiBps: read.ioBytes / 1048576 / (read.runtimeNs / 1e9),
      simPerWall: res!.vmstack.model_speed.sim_time_per_wall_time * (median(speed) / res!.vmstack.model_speed.simulated_ios_per_wall_s),
      kicksPerIo: res!.vmstack.counters.virtio_iommu.kicks / read.totalIos,
      componentNsPerIo: timed.vmstack.model_speed.component_wall_ns_per_io!,
      peakRssMiB: peakRssMiB(),
    });
  }
}

/** chain round trips per I/O → the I/O rate the chain allows; null without round trips */
const chainLimit = (c: Cell) => (c.kicksPerIo >= 0.5 ? chainBest / c.kicksPerIo : null);

if (args.includes('--json')) {
  console.log(JSON.stringify({ size, reps, chain, chainBestRoundTripsPerS: chainBest, cells, peakRssMiB: peakRssMiB() }, null, 2));
} else {
  console.log(`vmstack bench:stack — fio read 4k direct=1 iodepth 64 numjobs 1 size ${size}, median of ${reps}; node ${process.version}`);
  console.log('chain limit: guest → vmm → host → vmm → guest on three threads, plain Atomics, round trips per wall s');
  for (const c of chain) console.log(`  ${c.label.padEnd(34)} ${String(c.roundTripsPerS).padStart(8)}`);
  console.log(`  ${'best'.padEnd(34)} ${String(chainBest).padStart(8)}`);
  console.log('');
  console.log(
    'strategy  transport  sim I/Os  I/Os per wall s  run ms  first ms  w÷in-thread  kicks/IO  chain I/Os/s  ÷chain  model MiB/s  sim÷wall' +
      '   guest  vmm  host  device (wall ns per I/O)  peak RSS MiB',
  );
  for (const c of cells) {
    const peer = cells.find((x) => x.strategy === c.strategy && x.transport === 'in-thread')!;
    const ratio = c.transport === 'workers' ? (c.loopIosPerWallS / peer.loopIosPerWallS).toFixed(2) : '';
    const limit = chainLimit(c);
    const toChain = c.transport === 'workers' && limit ? (c.loopIosPerWallS / limit).toFixed(2) : '';
    const p = c.componentNsPerIo;
    console.log(
      `${c.strategy.padEnd(8)}  ${c.transport.padEnd(9)}  ${String(c.ios).padStart(8)}  ${String(c.loopIosPerWallS).padStart(15)}  ` +
        `${String(Math.round(c.runWallMs)).padStart(6)}  ${String(Math.round(c.firstRunWallMs)).padStart(8)}  ${ratio.padStart(11)}  ` +
        `${c.kicksPerIo.toFixed(2).padStart(8)}  ${(limit ? String(Math.round(limit)) : '-').padStart(12)}  ${toChain.padStart(6)}  ` +
        `${c.modelMiBps.toFixed(1).padStart(11)}  ${c.simPerWall.toFixed(3).padStart(8)}  ` +
        `${String(p.guest).padStart(6)} ${String(p.vmm).padStart(4)} ${String(p.host).padStart(5)} ${String(p.device).padStart(7)}  ${''.padStart(24)}` +
        `${String(c.peakRssMiB).padStart(12)}`,
    );
  }
  const same = strategies.every((s) => {
    const [a, b] = transports.map((t) => cells.find((c) => c.strategy === s && c.transport === t)!.modelMiBps);
    return a === b;
  });
  console.log(same ? 'model results identical across transports: yes' : 'model results identical across transports: NO (bug)');
  console.log(`peak RSS of the process: ${peakRssMiB()} MiB`);
}
await releaseIdleWorkers();
