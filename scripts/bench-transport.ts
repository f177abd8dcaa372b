/**
 * Transport benchmark (a benchmark, not a test): what the shm transport costs
 * next to the physical limits of the machine it runs on.
 *
 *   1. physical limits: raw spin ping-pong (Atomics.load spin / Atomics.store)
 *      and raw futex ping-pong (Atomics.wait / Atomics.notify) between workers;
 *   2. `Ring` (64-byte records) in three wait modes — spin, park,
 *      spin-then-park — one-way latency (half a ping-pong round trip over two
 *      rings) and streaming throughput (10^6 records, batches of 16 and 1);
 *   3. postMessage round trips (main ↔ worker, worker ↔ worker) for comparison;
 *   4. `RpcClient.call` round trip (spin-then-park);
 *   5. `Mutex` acquire+release: uncontended vs a raw CAS pair, and contended
 *      by 2 and 4 workers;
 *   6. a worker failure: from the moment a worker throws (its peers parked)
 *      to the moment `runWorkers` rejects, every other worker stopped;
 *   7. every result as a ratio to its matching limit, with PASS/MISS against
 *      the targets (ring spin round trip ≤ 2× raw spin ping-pong; uncontended
 *      Mutex ≤ 2× raw CAS pair). The exit code never depends on them.
 *
 * Workers are started by `runWorkers` (the CLI's code path) from the compiled
 * `transport-bench-worker.js`. Each measurement is repeated; a result and its
 * limit are measured in the same repetition, one right after the other, and a
 * ratio is the median of the per-repetition ratios — on a shared, noisy
 * machine that is steadier than a ratio of two medians. The first repetition
 * (smaller) is a warm-up and is dropped.
 *
 * postMessage goes through a BroadcastChannel: `runWorkers` takes no transfer
 * list, so a MessageChannel port cannot be handed to its workers; on Node 20
 * the two cost about the same (both are MessagePort underneath).
 *
 * Usage: tsx scripts/bench-transport.ts [--json]
 */

import os from 'node:os';
import { BroadcastChannel } from 'node:worker_threads';
import { allocateRpcChannel, DEFAULT_SPIN_LOADS, InputError, LockTable, Ring, RunControl, runWorkers, WorkerFailure, type WorkerSpec } from '@vmstack/shm';
import type {
  MutexSoloPhase,
  PingPongPhase,
  StreamPhase,
  TransportBenchInit,
  TransportBenchResult,
} from '../packages/shm/dist/src/internal/transport-bench-worker.js';

const ENTRY = new URL('../packages/shm/dist/src/internal/transport-bench-worker.js', import.meta.url);

/** spin mode: so many loads that a wait never parks */
const SPIN_FOREVER = 1e12;
const PARK_AT_ONCE = 0;
const RING_CAPACITY = 256;
const RECORD_BYTES = 64;
const TARGET_RATIO = 2;

/** Repetitions: at most `max`, at least `min`, more only while within `budgetMs` (the leader worker decides). */
const LATENCY_REPS = { max: 25, min: 5, budgetMs: 8_000 };
const STREAM_REPS = { max: 7, min: 2, budgetMs: 10_000 };
const STREAM_RECORDS = 1_000_000;
const MUTEX_REPS = 11;
const MUTEX_PAIRS = 1_000_000;
const CONTEND_REPS = 5;
const CONTEND_TOTAL = 400_000;
const MAIN_PM_REPS = 7;
const MAIN_PM_ROUND_TRIPS = 1000;
const RUN_TIMEOUT_MS = 120_000;
const FAILURE_REPS = 7;
const FAILURE_PARKERS = 2;

const WAIT_MODES = [
  { key: 'spin', label: `spin (spinLoads ${SPIN_FOREVER.toExponential(0)})`, spinLoads: SPIN_FOREVER },
  { key: 'park', label: 'park (spinLoads 0)', spinLoads: PARK_AT_ONCE },
  { key: 'spinThenPark', label: `spin-then-park (${DEFAULT_SPIN_LOADS})`, spinLoads: DEFAULT_SPIN_LOADS },
] as const;
type WaitKey = (typeof WAIT_MODES)[number]['key'];

// ---- statistics ----------------------------------------------------------------

interface Stat {
  median: number;
  min: number;
  max: number;
  samples: number[];
}

function stat(samples: number[]): Stat {
  const s = [...samples].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  return { median, min: s[0], max: s[s.length - 1], samples };
}

/** Per-repetition ratios a[i]/b[i] (measured side by side), summarised. */
function ratio(a: number[], b: number[]): Stat {
  return stat(a.map((x, i) => x / b[i]));
}

// ---- running workers ---------------------------------------------------------------

async function run(specs: { role: string; init: TransportBenchInit }[]): Promise<TransportBenchResult[]> {
  const control = RunControl.allocate();
  const ws: WorkerSpec[] = specs.map((s) => ({ role: s.role, entry: ENTRY, init: s.init }));
  const out = await runWorkers<TransportBenchResult>(ws, control, { timeoutMs: RUN_TIMEOUT_MS });
  for (const [i, r] of out.results.entries()) if (r.errors !== 0) throw new Error(`${specs[i].role}: ${r.errors} sequence errors`);
  return out.results;
}

let channelSerial = 0;
const channelName = (what: string): string => `vmstack-bench-${what}-${process.pid}-${channelSerial++}`;

/**
 * The phase list for a warm-up repetition and up to `reps.max` measured ones,
 * the gate the workers use to stop early, and `done(phasesRun)`: for each
 * measured repetition that ran to its end, the phase index of its phase k.
 */
function repeat<P>(reps: { max: number; min: number; budgetMs: number }, phasesOfRep: (warmup: boolean) => P[]) {
  const phases: P[] = [...phasesOfRep(true)];
  const index: number[][] = [];
  for (let r = 0; r < reps.max; r++) {
    const ps = phasesOfRep(false);
    index.push(ps.map((_, k) => phases.length + k));
    phases.push(...ps);
  }
  const gate = { sab: new SharedArrayBuffer(64), repStarts: index.map((ix) => ix[0]), minReps: reps.min, budgetMs: reps.budgetMs };
  /** the repetitions that ran to the end */
  const done = (phasesRun: number): number[][] => index.filter((ix) => ix.every((i) => i < phasesRun));
  return { phases, gate, done };
}

// ---- 1–4: latency (ping-pong between two workers, all modes side by side) ----------------

type LatencyKey = 'rawSpin' | 'rawFutex' | `ring_${WaitKey}` | 'rpc' | 'broadcast';

async function measureLatency() {
  const plan: { key: LatencyKey; phase: PingPongPhase }[] = [
    { key: 'rawSpin', phase: { mode: 'raw-spin', roundTrips: 10_000 } },
    { key: 'ring_spin', phase: { mode: 'ring', spinLoads: SPIN_FOREVER, roundTrips: 10_000 } },
    { key: 'ring_spinThenPark', phase: { mode: 'ring', spinLoads: DEFAULT_SPIN_LOADS, roundTrips: 10_000 } },
    { key: 'rpc', phase: { mode: 'rpc', roundTrips: 10_000 } },
    { key: 'rawFutex', phase: { mode: 'raw-futex', roundTrips: 500 } },
    { key: 'ring_park', phase: { mode: 'ring', spinLoads: PARK_AT_ONCE, roundTrips: 500 } },
    { key: 'broadcast', phase: { mode: 'broadcast', roundTrips: 300 } },
  ];
  // the warm-up repetition runs every phase at twice the size, to get the hot loops optimised
  const scaled = (p: PingPongPhase, warmup: boolean): PingPongPhase => (warmup ? { ...p, roundTrips: p.roundTrips * 2 } : p);
  const { phases, gate, done } = repeat(LATENCY_REPS, (warmup) => plan.map((p) => scaled(p.phase, warmup)));
  const raw = new SharedArrayBuffer(64 * 2);
  const ab = Ring.allocate({ capacityRecords: RING_CAPACITY, recordBytes: RECORD_BYTES });
  const ba = Ring.allocate({ capacityRecords: RING_CAPACITY, recordBytes: RECORD_BYTES });
  const rpc = allocateRpcChannel(RING_CAPACITY);
  const channel = channelName('pingpong');
  const common = { kind: 'pingpong', gate, raw, ab, ba, rpc, rpcSpinLoads: DEFAULT_SPIN_LOADS, channel, phases } as const;
  const [pinger, ponger] = await run([
    { role: 'bench/ping', init: { ...common, side: 'ping' } },
    { role: 'bench/pong', init: { ...common, side: 'pong' } },
  ]);
  const index = done(pinger.ns.length);
  const rtNs = {} as Record<LatencyKey, number[]>;
  const parksPerRt = {} as Record<LatencyKey, number[]>;
  plan.forEach((p, k) => {
    rtNs[p.key] = index.map((ix) => pinger.ns[ix[k]] / p.phase.roundTrips);
    parksPerRt[p.key] = index.map((ix) => (pinger.parks[ix[k]] + ponger.parks[ix[k]]) / p.phase.roundTrips);
  });
  return { rtNs, parksPerRt, reps: index.length };
}

// ---- 2: streaming throughput ----------------------------------------------------------------

async function measureStream() {
  const plan: { mode: WaitKey; batch: number; phase: StreamPhase }[] = [];
  for (const m of WAIT_MODES) for (const batch of [16, 1]) plan.push({ mode: m.key, batch, phase: { spinLoads: m.spinLoads, batch, records: STREAM_RECORDS } });
  const { phases, gate, done } = repeat(STREAM_REPS, (warmup) => plan.map((p) => (warmup ? { ...p.phase, records: p.phase.records / 10 } : p.phase)));
  const ring = Ring.allocate({ capacityRecords: RING_CAPACITY, recordBytes: RECORD_BYTES });
  const [producer, consumer] = await run([
    { role: 'bench/producer', init: { kind: 'stream', side: 'producer', gate, ring, phases } },
    { role: 'bench/consumer', init: { kind: 'stream', side: 'consumer', gate, ring, phases } },
  ]);
  const index = done(producer.ns.length);
  return plan.map((p, k) => ({
    reps: index.length,
    mode: p.mode,
    batch: p.batch,
    recordsPerS: stat(index.map((ix) => (STREAM_RECORDS / producer.ns[ix[k]]) * 1e9)),
    parksPerRecord: stat(index.map((ix) => (producer.parks[ix[k]] + consumer.parks[ix[k]]) / STREAM_RECORDS)),
  }));
}

// ---- 3: postMessage main ↔ worker ------------------------------------------------------------

async function measureMainPostMessage(): Promise<number[]> {
  const channel = channelName('main');
  const bc = new BroadcastChannel(channel);
  let onReply: (v: number) => void = () => {};
  bc.onmessage = (ev: unknown) => onReply((ev as { data: number }).data);
  const pingPong = (n: number): Promise<number> =>
    new Promise((resolve) => {
      let i = 0;
      const t0 = performance.now();
      onReply = (v) => {
        if (v !== i) return;
        if (++i === n) resolve(((performance.now() - t0) * 1e6) / n);
        else bc.postMessage(i);
      };
      bc.postMessage(0);
    });
  const control = RunControl.allocate();
  let ready!: () => void;
  const isReady = new Promise<void>((r) => (ready = r));
  const done = runWorkers<TransportBenchResult>([{ role: 'bench/echo', entry: ENTRY, init: { kind: 'echo', channel } satisfies TransportBenchInit }], control, {
    timeoutMs: RUN_TIMEOUT_MS,
    onReady: () => ready(),
  });
  const samples: number[] = [];
  try {
    await Promise.race([isReady, done]);
    await pingPong(MAIN_PM_ROUND_TRIPS / 4);
    for (let r = 0; r < MAIN_PM_REPS; r++) samples.push(await pingPong(MAIN_PM_ROUND_TRIPS));
  } finally {
    bc.postMessage('stop');
    bc.close();
  }
  await done;
  return samples;
}

// ---- 5: mutex ---------------------------------------------------------------------------------

/** ms from a worker's throw to the run's rejection (peers parked), per repetition; the first is a warm-up. */
async function measureFailure(): Promise<number[]> {
  const ms: number[] = [];
  for (let r = 0; r <= FAILURE_REPS; r++) {
    const words = new SharedArrayBuffer(16);
    const specs: WorkerSpec[] = [
      ...Array.from({ length: FAILURE_PARKERS }, (_, i) => ({
        role: `park${i}`,
        entry: ENTRY,
        init: { kind: 'fail', side: 'park', words, parkers: FAILURE_PARKERS } satisfies TransportBenchInit,
      })),
      { role: 'fail', entry: ENTRY, init: { kind: 'fail', side: 'fail', words, parkers: FAILURE_PARKERS } satisfies TransportBenchInit },
    ];
    let rejectedAtMs = 0;
    try {
      await runWorkers(specs, RunControl.allocate(), { timeoutMs: RUN_TIMEOUT_MS });
    } catch (e) {
      rejectedAtMs = performance.timeOrigin + performance.now();
      if (!(e instanceof WorkerFailure) || e.role !== 'fail') throw e;
    }
    if (rejectedAtMs === 0) throw new Error('the failing run did not fail');
    if (r > 0) ms.push(rejectedAtMs - new Float64Array(words, 8, 1)[0]);
  }
  return ms;
}

async function measureMutexSolo() {
  const modes: MutexSoloPhase['mode'][] = ['raw-cas', 'mutex', 'mutex-clock'];
  const phases = [...modes, ...Array.from({ length: MUTEX_REPS }, () => modes).flat()].map((mode, i) => ({
    mode,
    pairs: i < modes.length ? MUTEX_PAIRS / 4 : MUTEX_PAIRS,
  }));
  const index = Array.from({ length: MUTEX_REPS }, (_, r) => modes.map((_m, k) => (r + 1) * modes.length + k));
  const locks = LockTable.allocate([{ name: 'bench_lock', kind: 'mutex' }]);
  const [w] = await run([{ role: 'bench/mutex', init: { kind: 'mutex-solo', locks, cas: new SharedArrayBuffer(64), phases } }]);
  const per = (k: number): number[] => index.map((ix) => w.ns[ix[k]] / MUTEX_PAIRS);
  const st = LockTable.attach(locks, 99).get('bench_lock').stat();
  return { rawCas: per(0), mutex: per(1), mutexClock: per(2), contentions: st.contentions };
}

async function measureMutexContended(parties: number) {
  const perWorker = CONTEND_TOTAL / parties;
  const phases = [perWorker / 4, ...Array.from({ length: CONTEND_REPS }, () => perWorker)];
  const locks = LockTable.allocate([{ name: 'bench_lock', kind: 'mutex' }]);
  const counter = new SharedArrayBuffer(64);
  const barrier = new SharedArrayBuffer(64);
  const results = await run(
    Array.from({ length: parties }, (_, i) => ({
      role: `bench/contender${i}`,
      init: { kind: 'mutex-contend', locks, counter, barrier, parties, phases } as const,
    })),
  );
  const expected = parties * phases.reduce((a, b) => a + b, 0);
  const count = new Int32Array(counter)[0];
  if (count !== expected) throw new Error(`contended mutex: counter ${count}, expected ${expected} — the lock did not exclude`);
  const wallNs = phases.slice(1).map((_, r) => Math.max(...results.map((w) => w.ns[r + 1])));
  const st = LockTable.attach(locks, 99).get('bench_lock').stat();
  return {
    parties,
    nsPerAcquisition: stat(wallNs.map((ns) => ns / CONTEND_TOTAL)),
    acquisitionsPerS: stat(wallNs.map((ns) => (CONTEND_TOTAL / ns) * 1e9)),
    /** lock_stat contentions / acquisitions (no clock: a contention is a lost first CAS), warm-up included */
    contendedFraction: st.contentions / st.acquisitions,
  };
}

// ---- report -------------------------------------------------------------------------------------

function fmtNs(ns: number): string {
  if (ns < 1000) return `${ns.toFixed(ns < 100 ? 1 : 0)} ns`;
  if (ns < 1e6) return `${(ns / 1000).toFixed(ns < 1e4 ? 2 : 1)} µs`;
  return `${(ns / 1e6).toFixed(2)} ms`;
}
const fmtStat = (s: Stat, f: (x: number) => string = fmtNs): string => `${f(s.median)} [${f(s.min)}–${f(s.max)}]`;
const fmtX = (x: number): string => `${x.toFixed(2)}×`;
const fmtRate = (perS: number): string => (perS >= 1e6 ? `${(perS / 1e6).toFixed(2)} M/s` : `${(perS / 1e3).toFixed(1)} k/s`);
const verdict = (r: number): string => (r <= TARGET_RATIO ? 'PASS' : 'MISS');

function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string =>
    '  ' +
    r
      .map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i])))
      .join('   ')
      .trimEnd();
  return [line(head), line(w.map((n) => '-'.repeat(n))), ...rows.map(line)].join('\n');
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  for (const a of args) if (a !== '--json') throw new InputError('argument', a, 'the only option is --json');
  const asJson = args.includes('--json');
  const t0 = performance.now();
  const loadBefore = os.loadavg()[0];
  const latency = await measureLatency();
  const streamRes = await measureStream();
  const mainPm = stat(await measureMainPostMessage());
  const solo = await measureMutexSolo();
  const contended = [await measureMutexContended(2), await measureMutexContended(4)];
  const failureMs = stat(await measureFailure());
  const elapsedS = (performance.now() - t0) / 1000;
  const loadAfter = os.loadavg()[0];
  const cpus = os.availableParallelism();

  const L = latency.rtNs;
  const rt = (k: LatencyKey): Stat => stat(L[k]);
  const half = (s: Stat): Stat => ({ median: s.median / 2, min: s.min / 2, max: s.max / 2, samples: s.samples.map((x) => x / 2) });
  const ringRatio = { spin: ratio(L.ring_spin, L.rawSpin), park: ratio(L.ring_park, L.rawFutex), spinThenPark: ratio(L.ring_spinThenPark, L.rawSpin) };
  const ringLimit = { spin: 'raw spin', park: 'raw futex', spinThenPark: 'raw spin' } as const;
  const mutexRatio = ratio(solo.mutex, solo.rawCas);
  const mutexClockRatio = ratio(solo.mutexClock, solo.rawCas);
  const rpcRatio = ratio(L.rpc, L.rawSpin);
  const bcVsRing = ratio(L.broadcast, L.ring_spinThenPark);

  const result = {
    node: process.version,
    cpus,
    platform: `${process.platform} ${process.arch}`,
    elapsedS,
    /** 1-minute load average before and after the run ('after' includes the benchmark's own workers) */
    loadAverage: { before: loadBefore, after: loadAfter },
    config: {
      ringCapacityRecords: RING_CAPACITY,
      recordBytes: RECORD_BYTES,
      spinForeverLoads: SPIN_FOREVER,
      defaultSpinLoads: DEFAULT_SPIN_LOADS,
      latencyReps: LATENCY_REPS,
      latencyRepsDone: latency.reps,
      streamReps: STREAM_REPS,
      streamRepsDone: streamRes[0].reps,
      streamRecords: STREAM_RECORDS,
      mutexReps: MUTEX_REPS,
      mutexPairs: MUTEX_PAIRS,
      contendReps: CONTEND_REPS,
      contendTotalAcquisitions: CONTEND_TOTAL,
    },
    limits: { rawSpinRoundTripNs: rt('rawSpin'), rawFutexRoundTripNs: rt('rawFutex') },
    ring: Object.fromEntries(
      WAIT_MODES.map((m) => [
        m.key,
        {
          spinLoads: m.spinLoads,
          oneWayNs: half(rt(`ring_${m.key}`)),
          roundTripNs: rt(`ring_${m.key}`),
          parksPerRoundTrip: stat(latency.parksPerRt[`ring_${m.key}`]),
          ratioToLimit: { limit: ringLimit[m.key], ...ringRatio[m.key] },
          streamRecordsPerS: Object.fromEntries(streamRes.filter((s) => s.mode === m.key).map((s) => [`batch${s.batch}`, s.recordsPerS])),
          streamParksPerRecord: Object.fromEntries(streamRes.filter((s) => s.mode === m.key).map((s) => [`batch${s.batch}`, s.parksPerRecord])),
        },
      ]),
    ),
    postMessage: {
      via: 'BroadcastChannel',
      mainWorkerRoundTripNs: mainPm,
      workerWorkerRoundTripNs: rt('broadcast'),
      workerWorkerRatioToRingSpinThenPark: bcVsRing,
    },
    rpc: { roundTripNs: rt('rpc'), parksPerRoundTrip: stat(latency.parksPerRt.rpc), ratioToRawSpin: rpcRatio },
    mutex: {
      rawCasPairNs: stat(solo.rawCas),
      uncontendedPairNs: stat(solo.mutex),
      uncontendedWithVirtualClockPairNs: stat(solo.mutexClock),
      ratioToRawCas: mutexRatio,
      withClockRatioToRawCas: mutexClockRatio,
      uncontendedContentions: solo.contentions,
      contended,
    },
    workerFailure: { parkedPeers: FAILURE_PARKERS, throwToRejectMs: failureMs },
    targets: {
      ringSpinRoundTripVsRawSpin: { target: TARGET_RATIO, ratio: ringRatio.spin.median, pass: ringRatio.spin.median <= TARGET_RATIO },
      uncontendedMutexVsRawCasPair: { target: TARGET_RATIO, ratio: mutexRatio.median, pass: mutexRatio.median <= TARGET_RATIO },
    },
  };

  if (asJson) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return;
  }
  const out: string[] = [];
  out.push(
    `vmstack transport benchmark — node ${result.node}, ${cpus} CPUs, ${result.platform}, ${elapsedS.toFixed(1)} s, load average ${loadBefore.toFixed(2)} → ${loadAfter.toFixed(2)}`,
  );
  out.push('medians of the repetitions after a warm-up, [min–max]; a ratio is the median of per-repetition ratios to a limit measured in the same repetition');
  // the load after includes this benchmark's own spinning workers; only the load before says who else was running
  if (loadBefore >= 0.75 * cpus)
    out.push(
      `WARNING: the machine was busy (load ${loadBefore.toFixed(2)} on ${cpus} CPUs): spinning workers lose their cores, so spin results are inflated and noisy`,
    );
  out.push('');
  out.push(`1. Physical limits (ping-pong between two workers, ${latency.reps} reps)`);
  out.push(
    table(
      ['', 'round trip', 'one-way'],
      [
        ['raw spin (Atomics.load spin / Atomics.store)', fmtStat(rt('rawSpin')), fmtNs(rt('rawSpin').median / 2)],
        ['raw futex (Atomics.wait / Atomics.notify)', fmtStat(rt('rawFutex')), fmtNs(rt('rawFutex').median / 2)],
      ],
    ),
  );
  out.push('');
  out.push(`2. Ring, ${RECORD_BYTES}-byte records, capacity ${RING_CAPACITY}: latency (ping-pong over two rings)`);
  out.push(
    table(
      ['wait mode', 'one-way', 'round trip', 'parks/RT', 'ratio to limit', 'target'],
      WAIT_MODES.map((m) => {
        const r = ringRatio[m.key];
        return [
          m.label,
          fmtNs(rt(`ring_${m.key}`).median / 2),
          fmtStat(rt(`ring_${m.key}`)),
          stat(latency.parksPerRt[`ring_${m.key}`]).median.toFixed(2),
          `${fmtX(r.median)} ${ringLimit[m.key]}`,
          m.key === 'spin' ? `≤ ${TARGET_RATIO}× ${verdict(r.median)}` : '',
        ];
      }),
    ),
  );
  out.push('');
  out.push(`   streaming ${STREAM_RECORDS.toExponential(0)} records, producer → consumer (${streamRes[0].reps} reps)`);
  out.push(
    table(
      ['wait mode', 'batch 16', 'ns/record', 'parks/rec', 'batch 1', 'ns/record', 'parks/rec'],
      WAIT_MODES.map((m) => {
        const b16 = streamRes.find((s) => s.mode === m.key && s.batch === 16)!;
        const b1 = streamRes.find((s) => s.mode === m.key && s.batch === 1)!;
        return [
          m.label,
          fmtStat(b16.recordsPerS, fmtRate),
          (1e9 / b16.recordsPerS.median).toFixed(1),
          b16.parksPerRecord.median.toFixed(3),
          fmtStat(b1.recordsPerS, fmtRate),
          (1e9 / b1.recordsPerS.median).toFixed(1),
          b1.parksPerRecord.median.toFixed(3),
        ];
      }),
    ),
  );
  out.push('');
  out.push('3. postMessage (BroadcastChannel; structured clone of a number)');
  out.push(
    table(
      ['', 'round trip', 'ratio'],
      [
        [
          `main ↔ worker (${MAIN_PM_REPS} reps)`,
          fmtStat(mainPm),
          `${fmtX(mainPm.median / rt('ring_spinThenPark').median)} ring spin-then-park (separate runs)`,
        ],
        ['worker ↔ worker', fmtStat(rt('broadcast')), `${fmtX(bcVsRing.median)} ring spin-then-park`],
      ],
    ),
  );
  out.push('');
  out.push('4. RPC');
  out.push(
    table(
      ['', 'round trip', 'parks/RT', 'ratio to limit'],
      [
        [
          `RpcClient.call (spin-then-park, ${DEFAULT_SPIN_LOADS})`,
          fmtStat(rt('rpc')),
          stat(latency.parksPerRt.rpc).median.toFixed(2),
          `${fmtX(rpcRatio.median)} raw spin`,
        ],
      ],
    ),
  );
  out.push('');
  out.push(`5. Mutex, uncontended: one worker, ${MUTEX_PAIRS.toExponential(0)} acquire+release pairs (${MUTEX_REPS} reps)`);
  out.push(
    table(
      ['', 'per pair', 'ratio to raw CAS pair', 'target'],
      [
        ['raw CAS pair (compareExchange + store)', fmtStat(stat(solo.rawCas)), '1.00×', ''],
        ['Mutex lock() + unlock()', fmtStat(stat(solo.mutex)), fmtX(mutexRatio.median), `≤ ${TARGET_RATIO}× ${verdict(mutexRatio.median)}`],
        ['Mutex lock(clock) + unlock(clock), virtual', fmtStat(stat(solo.mutexClock)), fmtX(mutexClockRatio.median), ''],
      ],
    ),
  );
  out.push('');
  out.push(`   contended: ${CONTEND_TOTAL.toExponential(0)} acquisitions in all, split evenly over the workers (${CONTEND_REPS} reps)`);
  out.push(
    table(
      ['', 'per acquisition', 'throughput', 'contended', 'vs uncontended'],
      contended.map((c) => [
        `${c.parties} workers`,
        fmtStat(c.nsPerAcquisition),
        fmtRate(c.acquisitionsPerS.median),
        `${(c.contendedFraction * 100).toFixed(1)} %`,
        fmtX(c.nsPerAcquisition.median / stat(solo.mutex).median),
      ]),
    ),
  );
  out.push('');
  out.push(`6. Worker failure: one worker throws while ${FAILURE_PARKERS} others are parked (${FAILURE_REPS} reps)`);
  out.push(table(['', 'median [min–max]'], [['throw → runWorkers rejects, every worker stopped', fmtStat(failureMs, (x) => `${x.toFixed(2)} ms`)]]));
  out.push('');
  out.push('7. Targets');
  out.push(
    table(
      ['', 'ratio', 'target', ''],
      [
        ['ring round trip, spin / raw spin ping-pong', fmtX(ringRatio.spin.median), `≤ ${TARGET_RATIO}×`, verdict(ringRatio.spin.median)],
        ['uncontended Mutex / raw CAS pair', fmtX(mutexRatio.median), `≤ ${TARGET_RATIO}×`, verdict(mutexRatio.median)],
      ],
    ),
  );
  process.stdout.write(`${out.join('\n')}\n`);
}

main().catch((e: unknown) => {
  if (e instanceof InputError) {
    process.stderr.write(`bench-transport: ${e.message}\n`);
    process.exitCode = e.exitCode;
    return;
  }
  process.stderr.write(`bench-transport: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exitCode = 1;
});
