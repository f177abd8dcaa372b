/**
 * Model clocks and the run's control block.
 *
 * Two clock modes (docs/ARCHITECTURE.md, "Time"):
 * - `virtual` (default): each worker keeps its own clock in integer model
 *   nanoseconds. Work charges its cost; a message carries its send time and
 *   the receiver's clock becomes max(own, send + link latency); a lock makes
 *   the acquirer's clock max(own, release). Results do not depend on how busy
 *   the machine is.
 * - `wall`: costs are burned by spinning (times a dilation factor) and time is
 *   read from the real clock; contention is whatever the machine produces.
 *
 * Conservative synchronisation (virtual mode). Every worker publishes in the
 * control block its earliest output time (EOT): a lower bound on the model
 * time of anything it may still send without first receiving something. A
 * worker handles an input or a timed event at t only when every worker that
 * can send to it has an EOT ≥ t (the sender's EOT is corrected for messages
 * the sender already sent and the receiver has not consumed yet, see
 * `effectiveEotNs`). A purely reactive worker publishes NEVER. vCPUs also obey
 * a quantum: a vCPU runs at model time t only while t ≤ (the smallest EOT of
 * the other vCPUs) + quantum. That bounds the error of lock grants made in
 * real-thread order to one quantum; quantum 0 orders them exactly.
 *
 * Control block layout (one per run):
 * | offset (bytes)          | size | field | writer |
 * |-------------------------|------|-------|--------|
 * | 0                       | 4    | abort flag (0 running, 1 aborting) | main thread / failing worker |
 * | 4                       | 4    | abort reason code                  | same |
 * | 64 + 64·w               | 8    | worker w's EventCount (seq, parked)| notifiers / w |
 * | 64 + 64·w + 8           | 4    | worker w waits for a peer (1 while parked in `parkThread`) | w |
 * | 64 + 64·w + 12          | 4    | worker w's progress count (bumped where its loop gets work done) | w |
 * | 64 + 64·MAX + 64·w + 16·f | 16 | worker w's time field f (0 eotNs, 1 clockNs, 2 waitForNs, 3 timerNs): seq i32 @+0, f64 @+8 | worker w |
 *
 * A time field is a tiny seqlock: the writer makes `seq` odd, stores the f64,
 * makes it even again; a reader retries until it sees the same even `seq`
 * before and after reading the value. Reading and publishing allocate nothing
 * (they run in every wait loop).
 */

import { type AbortFlag, EVENT_WORDS, EventCount } from './event.js';
import { allocateShared } from './shared-pool.js';

export type ClockMode = 'virtual' | 'wall';

/** Model time meaning "never" (a reactive worker's EOT). */
export const NEVER_NS = Number.MAX_SAFE_INTEGER;

/**
 * The quantum every command runs with unless told otherwise: 0, lock grants
 * (and the shared words vCPUs touch outside locks) in exact model-time order,
 * so a multi-job run repeats itself exactly. A larger quantum (`--quantum`)
 * lets vCPUs run that much model time apart: fewer hand-offs between the
 * threads, and lock grants within the window in real-thread order.
 */
export const DEFAULT_QUANTUM_NS = 0;

export const MAX_WORKERS = 64;
const EVENTS_BASE_I32 = 16; // byte 64
const EVENT_STRIDE_I32 = 16; // 64 bytes per worker event
const WAITING_I32 = 2; // after the event's two words
const PROGRESS_I32 = 3;
const TIMES_BASE_BYTES = 64 + 64 * MAX_WORKERS;
const TIME_SLOT_BYTES = 64; // per worker
const FIELD_BYTES = 16;
const EOT = 0;
const CLOCK = 1;
const WAIT_FOR = 2;
const TIMER = 3;

export interface ControlHandle {
  readonly sab: SharedArrayBuffer;
}

export class RunControl implements AbortFlag {
  readonly i32: Int32Array;
  private readonly timeSeq: Int32Array;
  private readonly timeVal: Float64Array;
  private readonly events: EventCount[] = [];

  static allocate(): ControlHandle {
    const sab = allocateShared(TIMES_BASE_BYTES + TIME_SLOT_BYTES * MAX_WORKERS);
    const times = new Float64Array(sab, TIMES_BASE_BYTES);
    const f = (w: number, field: number) => (w * TIME_SLOT_BYTES + field * FIELD_BYTES + 8) / 8;
    for (let w = 0; w < MAX_WORKERS; w++) {
      times[f(w, EOT)] = NEVER_NS;
      times[f(w, WAIT_FOR)] = NEVER_NS;
      times[f(w, TIMER)] = NEVER_NS;
    }
    return { sab };
  }

  static attach(handle: ControlHandle): RunControl {
    return new RunControl(handle);
  }

  private constructor(readonly handle: ControlHandle) {
    this.i32 = new Int32Array(handle.sab, 0, TIMES_BASE_BYTES / 4);
    this.timeSeq = new Int32Array(handle.sab, TIMES_BASE_BYTES);
    this.timeVal = new Float64Array(handle.sab, TIMES_BASE_BYTES);
    for (let w = 0; w < MAX_WORKERS; w++) this.events.push(new EventCount(this.i32, EVENTS_BASE_I32 + w * EVENT_STRIDE_I32));
  }

  /** Where worker w's EventCount lives, for rings that should wake it. */
  eventRef(w: number): { sab: SharedArrayBuffer; index: number } {
    checkWorker(w);
    return { sab: this.handle.sab, index: EVENTS_BASE_I32 + w * EVENT_STRIDE_I32 };
  }

  event(w: number): EventCount {
    checkWorker(w);
    return this.events[w];
  }

  /** Worker w got work done (handled a record, served a request): the watchdog sees the run move. */
  noteProgress(w: number): void {
    Atomics.add(this.i32, EVENTS_BASE_I32 + w * EVENT_STRIDE_I32 + PROGRESS_I32, 1);
  }

  progress(w: number): number {
    return Atomics.load(this.i32, EVENTS_BASE_I32 + w * EVENT_STRIDE_I32 + PROGRESS_I32);
  }

  /** Whether worker w is parked in one of vmstack's waits for a peer (see `parkThread`). */
  waiting(w: number): boolean {
    return Atomics.load(this.i32, EVENTS_BASE_I32 + w * EVENT_STRIDE_I32 + WAITING_I32) !== 0;
  }

  /** Where worker w marks its waits: pass to `setThreadWaitMarker` on its thread. */
  waitMarkerRef(w: number): { words: Int32Array; index: number } {
    checkWorker(w);
    return { words: this.i32, index: EVENTS_BASE_I32 + w * EVENT_STRIDE_I32 + WAITING_I32 };
  }

  aborted(): boolean {
    return Atomics.load(this.i32, 0) !== 0;
  }

  /** Set the abort flag and wake every worker. */
  abort(code = 1): void {
    Atomics.store(this.i32, 1, code);
    Atomics.store(this.i32, 0, 1);
    for (let w = 0; w < MAX_WORKERS; w++) {
      const idx = EVENTS_BASE_I32 + w * EVENT_STRIDE_I32;
      Atomics.add(this.i32, idx, 1);
      Atomics.notify(this.i32, idx);
    }
  }

  /**
   * One writer per field (the worker itself; the main thread before the
   * workers start). Writing the value the field holds changes nothing a
   * reader sees, and is skipped (the writer reads its own field).
   */
  private writeTime(w: number, field: number, ns: number): void {
    const base = w * TIME_SLOT_BYTES + field * FIELD_BYTES;
    if (this.timeVal[(base + 8) / 8] === ns) return;
    const seqIdx = base / 4;
    const s = Atomics.load(this.timeSeq, seqIdx);
    Atomics.store(this.timeSeq, seqIdx, s + 1);
    this.timeVal[(base + 8) / 8] = ns;
    Atomics.store(this.timeSeq, seqIdx, s + 2);
  }

  private readTime(w: number, field: number): number {
    const base = w * TIME_SLOT_BYTES + field * FIELD_BYTES;
    const seqIdx = base / 4;
    const valIdx = (base + 8) / 8;
    for (;;) {
      const s1 = Atomics.load(this.timeSeq, seqIdx);
      if ((s1 & 1) === 0) {
        const v = this.timeVal[valIdx];
        if (Atomics.load(this.timeSeq, seqIdx) === s1) return v;
      }
    }
  }

  publishEot(w: number, ns: number): void {
    this.writeTime(w, EOT, ns >= NEVER_NS ? NEVER_NS : Math.floor(ns));
  }

  eotNs(w: number): number {
    return this.readTime(w, EOT);
  }

  publishClock(w: number, ns: number): void {
    this.writeTime(w, CLOCK, ns >= NEVER_NS ? NEVER_NS : Math.floor(ns));
  }

  clockNs(w: number): number {
    return this.readTime(w, CLOCK);
  }

  /**
   * The model time of the next timer worker w runs while it waits idle (its
   * EOT NEVER): it acts again at that time at the latest, with no input. Peers
   * that estimate when an idle worker acts again read it (NEVER: no timer).
   */
  publishTimer(w: number, ns: number): void {
    this.writeTime(w, TIMER, ns >= NEVER_NS ? NEVER_NS : Math.floor(ns));
  }

  timerNs(w: number): number {
    return this.readTime(w, TIMER);
  }

  /**
   * Worker w is about to park until some peer's EOT reaches `ns`; peers that
   * raise their EOT past it notify w (see `raiseEot`).
   */
  setWaitFor(w: number, ns: number): void {
    this.writeTime(w, WAIT_FOR, ns >= NEVER_NS ? NEVER_NS : Math.ceil(ns));
  }

  waitForNs(w: number): number {
    return this.readTime(w, WAIT_FOR);
  }

  /**
   * Publish a new EOT for `w` and wake each watcher whose wait threshold it
   * reaches. Cheap when nobody waits: one atomic store and one load per watcher.
   */
  raiseEot(w: number, ns: number, watchers: readonly number[]): void {
    this.publishEot(w, ns);
    for (let i = 0; i < watchers.length; i++) {
      const p = watchers[i];
      if (ns >= this.waitForNs(p)) this.events[p].notify();
    }
  }
}

function checkWorker(w: number): void {
  if (!Number.isInteger(w) || w < 0 || w >= MAX_WORKERS) throw new RangeError(`worker index ${w} outside 0..${MAX_WORKERS - 1}`);
}

/**
 * A worker's own clock. Virtual: a plain integer counter of model ns.
 * Wall: real ns since the run's epoch, with costs burned by spinning.
 */
export class ModelClock {
  private virtualNs = 0;
  private readonly epochNs: number;

  constructor(
    readonly mode: ClockMode,
    /** wall mode: real ns burned per model ns (1 = real speed) */
    readonly dilation = 1,
    /** wall mode: performance.timeOrigin-relative epoch shared by the run (ms) */
    epochMs?: number,
  ) {
    this.epochNs = mode === 'wall' ? (epochMs ?? performance.timeOrigin + performance.now()) * 1e6 : 0;
  }

  nowNs(): number {
    if (this.mode === 'virtual') return this.virtualNs;
    return Math.floor((performance.timeOrigin + performance.now()) * 1e6 - this.epochNs);
  }

  /** Spend `costNs` of model time doing work. */
  charge(costNs: number): void {
    if (costNs <= 0) return;
    if (this.mode === 'virtual') {
      this.virtualNs += Math.ceil(costNs);
      return;
    }
    const until = performance.now() + (costNs * this.dilation) / 1e6;
    while (performance.now() < until) {
      /* burn: wall mode models work by using the CPU */
    }
  }

  /** Receive something stamped `ns`: never go back in time. */
  syncTo(ns: number): void {
    if (this.mode === 'virtual' && ns > this.virtualNs) this.virtualNs = Math.ceil(ns);
  }

  /** Set the clock (virtual mode only), e.g. when a parked vCPU is woken by an event in the future. */
  advanceTo(ns: number): void {
    this.syncTo(ns);
  }

  /**
   * A virtual clock reused as a scratch timeline: what `new ModelClock('virtual')`
   * then `advanceTo(ns)` gives, without allocating one per use.
   */
  restartAt(ns: number): void {
    if (this.mode !== 'virtual') throw new Error('ModelClock.restartAt: virtual clocks only');
    this.virtualNs = 0;
    this.syncTo(ns);
  }
}

export { EVENT_WORDS };
