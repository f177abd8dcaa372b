/**
 * Worker entry for `scripts/bench-transport.ts` (the transport benchmark):
 * measures the shm transport — raw atomics, `Ring`, `RpcClient`/`RpcServer`,
 * `Mutex` — between real worker threads started by `runWorkers`. Not part of
 * the package's public face (nothing in index.ts exports it).
 *
 * Every scenario runs a list of phases that every participating worker knows
 * in the same order; phases of different kinds are interleaved repetition by
 * repetition so that a result and its physical limit are measured side by
 * side (same moment, same machine noise). A worker returns one number per
 * phase (real ns for the whole phase, or 0 on the passive side) plus the
 * number of times its waits parked in `Atomics.wait`.
 *
 * Raw ping-pong words (`raw`, Int32 indices; separate 64-byte lines, as the
 * ring's head and tail are):
 * | index | field | writer |
 * |-------|-------|--------|
 * | 0     | ping (sequence number) | pinger |
 * | 16    | pong (sequence number) | ponger |
 * Both raw modes continue one sequence, so a waiter always knows the value
 * it is waiting to see change.
 *
 * Barrier words (`barrier`, Int32): 0 arrivals, 1 generation.
 *
 * Repetition gate (`RepGate.sab`, Int32 word 0): at the start of each
 * measured repetition k ≥ 1 the leader (pinger, producer) stores 2k + 1 to go
 * on or 2k to stop — it stops once `minReps` are done and `budgetMs` of real
 * time has passed — and the follower waits for that word. A busy machine thus
 * gets fewer repetitions, not a longer run.
 */

import { BroadcastChannel } from 'node:worker_threads';
import { ModelClock, type RunControl } from '../clock.js';
import { RunAborted } from '../event.js';
import { workerMain } from '../lifecycle.js';
import { LockTable, type LockTableHandle } from '../mutex.js';
import { Ring, type RingHandle } from '../ring.js';
import { type RpcChannelHandles, RpcClient, type RpcRequestView, RpcServer } from '../rpc.js';

export type PingPongPhase =
  | { readonly mode: 'raw-spin'; readonly roundTrips: number }
  | { readonly mode: 'raw-futex'; readonly roundTrips: number }
  | { readonly mode: 'ring'; readonly spinLoads: number; readonly roundTrips: number }
  | { readonly mode: 'rpc'; readonly roundTrips: number }
  | { readonly mode: 'broadcast'; readonly roundTrips: number };

/** Where the measured repetitions start in `phases`, and when to stop repeating. */
export interface RepGate {
  readonly sab: SharedArrayBuffer;
  /** phase index at which each measured repetition starts (the warm-up precedes the first) */
  readonly repStarts: readonly number[];
  readonly minReps: number;
  readonly budgetMs: number;
}

export interface PingPongInit {
  readonly kind: 'pingpong';
  readonly gate: RepGate;
  readonly side: 'ping' | 'pong';
  readonly raw: SharedArrayBuffer;
  /** ping → pong and pong → ping rings */
  readonly ab: RingHandle;
  readonly ba: RingHandle;
  readonly rpc: RpcChannelHandles;
  /** wait strategy of both RPC ends (RpcClient fixes it at construction) */
  readonly rpcSpinLoads: number;
  /** BroadcastChannel name shared by the two workers */
  readonly channel: string;
  readonly phases: readonly PingPongPhase[];
}

export interface StreamPhase {
  readonly spinLoads: number;
  /** records reserved per `publish` */
  readonly batch: number;
  readonly records: number;
}

export interface StreamInit {
  readonly kind: 'stream';
  readonly gate: RepGate;
  readonly side: 'producer' | 'consumer';
  readonly ring: RingHandle;
  readonly phases: readonly StreamPhase[];
}

export interface MutexSoloPhase {
  readonly mode: 'raw-cas' | 'mutex' | 'mutex-clock';
  readonly pairs: number;
}

export interface MutexSoloInit {
  readonly kind: 'mutex-solo';
  /** the lock measured is the table's first */
  readonly locks: LockTableHandle;
  /** one Int32 word for the raw CAS pair */
  readonly cas: SharedArrayBuffer;
  readonly phases: readonly MutexSoloPhase[];
}

export interface MutexContendInit {
  readonly kind: 'mutex-contend';
  /** the lock measured is the table's first */
  readonly locks: LockTableHandle;
  /** one Int32 word incremented non-atomically under the lock */
  readonly counter: SharedArrayBuffer;
  readonly barrier: SharedArrayBuffer;
  readonly parties: number;
  /** lock/unlock pairs per worker, one entry per phase */
  readonly phases: readonly number[];
}

export interface EchoInit {
  readonly kind: 'echo';
  readonly channel: string;
}

/**
 * A run that fails: `park` workers park until the abort; the `fail` worker
 * waits until they all have parked, stores the time it throws (ms since the
 * epoch, f64 word 1 of `words`; Int32 word 0 counts parked workers) and throws.
 */
export interface FailInit {
  readonly kind: 'fail';
  readonly side: 'park' | 'fail';
  readonly words: SharedArrayBuffer;
  readonly parkers: number;
}

export type TransportBenchInit = PingPongInit | StreamInit | MutexSoloInit | MutexContendInit | EchoInit | FailInit;

export interface TransportBenchResult {
  /** real ns per phase run (0 where this side does not time the phase); shorter than `phases` when the gate stopped early */
  readonly ns: number[];
  /** Atomics.wait parks per phase, counted by this side's EventCounts */
  readonly parks: number[];
  /** sequence or payload errors seen (must be 0) */
  readonly errors: number;
}

const PING = 0;
const PONG = 16;
const STOP = 'stop';

const nowNs = (): number => performance.now() * 1e6;

workerMain<TransportBenchInit, TransportBenchResult>((boot, control) => {
  const init = boot.init;
  switch (init.kind) {
    case 'pingpong':
      return pingPong(init, control);
    case 'stream':
      return stream(init, control);
    case 'mutex-solo':
      return mutexSolo(init, boot.index, control);
    case 'mutex-contend':
      return mutexContend(init, boot.index, control);
    case 'echo':
      return echo(init);
    case 'fail':
      return fail(init, boot.index, control);
  }
});

class Gate {
  private readonly word: Int32Array;
  private readonly t0 = performance.now();
  private rep = 0;
  private stopped = false;

  constructor(
    private readonly g: RepGate,
    private readonly leader: boolean,
    private readonly control: RunControl,
  ) {
    this.word = new Int32Array(g.sab);
  }

  /** Called before phase `k`; false once the leader has stopped the repetitions. */
  goOn(k: number): boolean {
    if (this.stopped) return false;
    if (!this.g.repStarts.includes(k)) return true;
    const rep = ++this.rep;
    if (rep === 1) return true;
    const w = this.word;
    if (this.leader) {
      const go = rep <= this.g.minReps || performance.now() - this.t0 < this.g.budgetMs;
      Atomics.store(w, 0, 2 * rep + (go ? 1 : 0));
      Atomics.notify(w, 0);
      this.stopped = !go;
      return go;
    }
    let v: number;
    while ((v = Atomics.load(w, 0)) < 2 * rep) {
      if (this.control.aborted()) throw new RunAborted('at a repetition gate');
      Atomics.wait(w, 0, v, 100);
    }
    this.stopped = (v & 1) === 0;
    return !this.stopped;
  }
}

// ---- ping-pong: latency ----------------------------------------------------

function pingPong(init: PingPongInit, control: RunControl): () => Promise<TransportBenchResult> {
  const raw = new Int32Array(init.raw);
  const ping = init.side === 'ping';
  // the pinger produces on ab and consumes ba; the ponger the reverse
  const ab = Ring.attach(init.ab);
  const ba = Ring.attach(init.ba);
  const client = ping ? new RpcClient(init.rpc, control, init.rpcSpinLoads) : undefined;
  const server = ping ? undefined : new RpcServer(init.rpc);
  const bc = new BroadcastChannel(init.channel);
  let echoed = 0;
  let echoTarget = 0;
  let echoDone: (() => void) | undefined;
  let onReply: ((v: number) => void) | undefined;
  // handler attached now, so nothing sent while this thread is busy is lost
  bc.onmessage = (ev: unknown) => {
    const v = (ev as { data: number }).data;
    if (ping) {
      onReply?.(v);
      return;
    }
    bc.postMessage(v);
    if (++echoed === echoTarget) echoDone?.();
  };
  let rawSeq = 0;
  let reqId = 0;
  let errors = 0;
  const rpcWrite = (dv: DataView, off: number): void => dv.setInt32(off, 1, true);
  const rpcHandler = { type: 2, timestampNs: 0, write: rpcWrite };
  const rpcRead = (dv: DataView, off: number): number => dv.getInt32(off, true);
  const handle = (_req: RpcRequestView) => rpcHandler;

  const parksOf = (): number =>
    ab.dataEvent.parks +
    ab.spaceEvent.parks +
    ba.dataEvent.parks +
    ba.spaceEvent.parks +
    (client ? client.reply.dataEvent.parks + client.request.spaceEvent.parks : 0) +
    (server ? server.request.dataEvent.parks + server.reply.spaceEvent.parks : 0);

  return async () => {
    const ns: number[] = [];
    const parks: number[] = [];
    try {
      const gate = new Gate(init.gate, ping, control);
      for (let k = 0; k < init.phases.length; k++) {
        if (!gate.goOn(k)) break;
        const phase = init.phases[k];
        const parks0 = parksOf();
        const n = phase.roundTrips;
        const t0 = nowNs();
        switch (phase.mode) {
          case 'raw-spin':
            if (ping) rawSpinPing(raw, rawSeq, n);
            else rawSpinPong(raw, rawSeq, n);
            rawSeq += n;
            break;
          case 'raw-futex':
            if (ping) rawFutexPing(raw, rawSeq, n, control);
            else rawFutexPong(raw, rawSeq, n, control);
            rawSeq += n;
            break;
          case 'ring':
            errors += ping ? ringPing(ab, ba, reqId, n, phase.spinLoads, control) : ringPong(ab, ba, n, phase.spinLoads, control);
            reqId = (reqId + n) | 0;
            break;
          case 'rpc':
            if (ping) {
              const c = client!;
              let sum = 0;
              for (let i = 0; i < n; i++) sum += c.call(1, 0, rpcWrite, rpcRead);
              if (sum !== n) errors++;
            } else {
              const s = server!;
              for (let served = 0; served < n; ) {
                s.request.waitForData(init.rpcSpinLoads, control);
                served += s.serveAvailable(handle, control, init.rpcSpinLoads);
              }
            }
            break;
          case 'broadcast':
            if (ping) {
              await new Promise<void>((resolve) => {
                let i = 0;
                onReply = (v) => {
                  if (v !== i) return;
                  if (++i === n) resolve();
                  else bc.postMessage(i);
                };
                bc.postMessage(0);
              });
              onReply = undefined;
            } else {
              echoTarget += n;
              if (echoed < echoTarget) await new Promise<void>((resolve) => (echoDone = resolve));
              echoDone = undefined;
            }
            break;
        }
        ns.push(ping ? nowNs() - t0 : 0);
        parks.push(parksOf() - parks0);
        if (control.aborted()) throw new RunAborted('transport benchmark');
      }
    } finally {
      bc.close();
    }
    if (
      client &&
      client.calls !==
        sumOf(
          init.phases
            .slice(0, ns.length)
            .filter((p) => p.mode === 'rpc')
            .map((p) => p.roundTrips),
        )
    )
      errors++;
    return { ns, parks, errors };
  };
}

function rawSpinPing(w: Int32Array, base: number, n: number): void {
  for (let i = 1; i <= n; i++) {
    const v = (base + i) | 0;
    Atomics.store(w, PING, v);
    while (Atomics.load(w, PONG) !== v);
  }
}

function rawSpinPong(w: Int32Array, base: number, n: number): void {
  for (let i = 1; i <= n; i++) {
    const v = (base + i) | 0;
    while (Atomics.load(w, PING) !== v);
    Atomics.store(w, PONG, v);
  }
}

function rawFutexPing(w: Int32Array, base: number, n: number, control: RunControl): void {
  for (let i = 1; i <= n; i++) {
    const v = (base + i) | 0;
    Atomics.store(w, PING, v);
    Atomics.notify(w, PING);
    while (Atomics.load(w, PONG) !== v) {
      Atomics.wait(w, PONG, (v - 1) | 0, 100);
      if (control.aborted()) throw new RunAborted('raw futex ping');
    }
  }
}

function rawFutexPong(w: Int32Array, base: number, n: number, control: RunControl): void {
  for (let i = 1; i <= n; i++) {
    const v = (base + i) | 0;
    while (Atomics.load(w, PING) !== v) {
      Atomics.wait(w, PING, (v - 1) | 0, 100);
      if (control.aborted()) throw new RunAborted('raw futex pong');
    }
    Atomics.store(w, PONG, v);
    Atomics.notify(w, PONG);
  }
}

/** Send one 64-byte record on `ab`, wait for its echo on `ba`; returns the errors seen. */
function ringPing(ab: Ring, ba: Ring, base: number, n: number, spinLoads: number, control: RunControl): number {
  let errors = 0;
  for (let i = 0; i < n; i++) {
    const id = (base + i) | 0;
    const off = ab.reserve(spinLoads, control);
    ab.writeHeader(off, 1, id, i);
    ab.publish();
    ba.waitForData(spinLoads, control);
    if (ba.requestIdAt(ba.offsetAt(0)) !== id) errors++;
    ba.release(1);
  }
  return errors;
}

function ringPong(ab: Ring, ba: Ring, n: number, spinLoads: number, control: RunControl): number {
  for (let i = 0; i < n; i++) {
    ab.waitForData(spinLoads, control);
    const roff = ab.offsetAt(0);
    const id = ab.requestIdAt(roff);
    const ts = ab.timestampAt(roff);
    ab.release(1);
    const off = ba.reserve(spinLoads, control);
    ba.writeHeader(off, 2, id, ts);
    ba.publish();
  }
  return 0;
}

// ---- streaming: throughput ---------------------------------------------------

function stream(init: StreamInit, control: RunControl): () => TransportBenchResult {
  const ring = Ring.attach(init.ring);
  const producer = init.side === 'producer';
  return () => {
    const ns: number[] = [];
    const parks: number[] = [];
    let errors = 0;
    let seq = 0;
    const gate = new Gate(init.gate, producer, control);
    for (let k = 0; k < init.phases.length; k++) {
      if (!gate.goOn(k)) break;
      const p = init.phases[k];
      const parks0 = ring.dataEvent.parks + ring.spaceEvent.parks;
      if (producer) {
        const t0 = nowNs();
        streamProduce(ring, seq, p, control);
        ns.push(nowNs() - t0);
      } else {
        errors += streamConsume(ring, seq, p, control);
        ns.push(0);
      }
      seq = (seq + p.records) | 0;
      parks.push(ring.dataEvent.parks + ring.spaceEvent.parks - parks0);
    }
    return { ns, parks, errors };
  };
}

/** Publish `records` records in batches, then wait until the consumer has released them all. */
function streamProduce(ring: Ring, base: number, p: StreamPhase, control: RunControl): void {
  const { records, batch, spinLoads } = p;
  for (let i = 0; i < records; ) {
    const end = Math.min(records, i + batch);
    for (; i < end; i++) {
      const off = ring.reserve(spinLoads, control);
      ring.writeHeader(off, 7, (base + i) | 0, i);
    }
    ring.publish();
  }
  const target = (base + records) | 0;
  for (;;) {
    const seq = ring.spaceEvent.prepare();
    if (ring.releasedCount() === target) return;
    if (control.aborted()) throw new RunAborted('waiting for the consumer');
    ring.spaceEvent.wait(seq, spinLoads);
  }
}

function streamConsume(ring: Ring, base: number, p: StreamPhase, control: RunControl): number {
  let errors = 0;
  let expected = base;
  for (let got = 0; got < p.records; ) {
    const n = ring.waitForData(p.spinLoads, control);
    for (let k = 0; k < n; k++) {
      if (ring.requestIdAt(ring.offsetAt(k)) !== expected) errors++;
      expected = (expected + 1) | 0;
    }
    ring.release(n);
    got += n;
  }
  return errors;
}

// ---- mutex -------------------------------------------------------------------

function mutexSolo(init: MutexSoloInit, index: number, control: RunControl): () => TransportBenchResult {
  const m = LockTable.attach(init.locks, index, control).get(init.locks.names[0]);
  const cas = new Int32Array(init.cas);
  const clock = new ModelClock('virtual');
  return () => {
    const ns: number[] = [];
    let errors = 0;
    for (const p of init.phases) {
      const t0 = nowNs();
      if (p.mode === 'raw-cas') errors += casPairs(cas, p.pairs);
      else if (p.mode === 'mutex') mutexPairs(m, p.pairs);
      else mutexClockPairs(m, clock, p.pairs);
      ns.push(nowNs() - t0);
    }
    return { ns, parks: init.phases.map(() => 0), errors };
  };
}

/** The physical limit of an uncontended lock: one CAS to take it, one store to drop it. */
function casPairs(w: Int32Array, n: number): number {
  let errors = 0;
  for (let i = 0; i < n; i++) {
    if (Atomics.compareExchange(w, 0, 0, 1) !== 0) errors++;
    Atomics.store(w, 0, 0);
  }
  return errors;
}

type BenchMutex = ReturnType<LockTable['get']>;

function mutexPairs(m: BenchMutex, n: number): void {
  for (let i = 0; i < n; i++) {
    m.lock();
    m.unlock();
  }
}

function mutexClockPairs(m: BenchMutex, clock: ModelClock, n: number): void {
  for (let i = 0; i < n; i++) {
    m.lock(clock);
    m.unlock(clock);
  }
}

function mutexContend(init: MutexContendInit, index: number, control: RunControl): () => TransportBenchResult {
  const m = LockTable.attach(init.locks, index, control).get(init.locks.names[0]);
  const counter = new Int32Array(init.counter);
  const barrier = new Int32Array(init.barrier);
  return () => {
    const ns: number[] = [];
    for (const pairs of init.phases) {
      barrierWait(barrier, init.parties, control);
      const t0 = nowNs();
      for (let i = 0; i < pairs; i++) {
        m.lock();
        counter[0] = counter[0] + 1; // not atomic: only the lock keeps the count exact
        m.unlock();
      }
      ns.push(nowNs() - t0);
    }
    return { ns, parks: init.phases.map(() => 0), errors: 0 };
  };
}

/** Sense-reversing barrier: the last arrival bumps the generation and wakes the rest. */
function barrierWait(w: Int32Array, parties: number, control: RunControl): void {
  const gen = Atomics.load(w, 1);
  if (Atomics.add(w, 0, 1) === parties - 1) {
    Atomics.store(w, 0, 0);
    Atomics.add(w, 1, 1);
    Atomics.notify(w, 1);
    return;
  }
  while (Atomics.load(w, 1) === gen) {
    if (control.aborted()) throw new RunAborted('at the benchmark barrier');
    Atomics.wait(w, 1, gen, 100);
  }
}

// ---- postMessage echo (main ↔ worker) ------------------------------------------

/** Echo every message on the channel until the main thread sends `stop`. */
function echo(init: EchoInit): () => Promise<TransportBenchResult> {
  const bc = new BroadcastChannel(init.channel);
  let echoed = 0;
  const stopped = new Promise<void>((resolve) => {
    bc.onmessage = (ev: unknown) => {
      const v = (ev as { data: unknown }).data;
      if (v === STOP) {
        bc.close();
        resolve();
        return;
      }
      bc.postMessage(v);
      echoed++;
    };
  });
  return async () => {
    await stopped;
    return { ns: [], parks: [echoed], errors: 0 };
  };
}

function sumOf(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

function fail(init: FailInit, index: number, control: RunControl): () => TransportBenchResult {
  const parked = new Int32Array(init.words, 0, 1);
  const thrownAtMs = new Float64Array(init.words, 8, 1);
  return () => {
    if (init.side === 'park') {
      const ev = control.event(index);
      for (let first = true; ; first = false) {
        const seq = ev.prepare();
        if (control.aborted()) throw new RunAborted('the run failed');
        if (first) {
          Atomics.add(parked, 0, 1);
          Atomics.notify(parked, 0);
        }
        ev.wait(seq, 0, 10_000);
      }
    }
    for (let n = Atomics.load(parked, 0); n < init.parkers; n = Atomics.load(parked, 0)) Atomics.wait(parked, 0, n);
    thrownAtMs[0] = performance.timeOrigin + performance.now();
    throw new Error('deliberate failure');
  };
}
