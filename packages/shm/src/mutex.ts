/**
 * The one lock implementation, with Linux lock_stat accounting.
 *
 * Each lock is a 128-byte record in a lock table (a SharedArrayBuffer shared
 * by every worker). Acquisition: a compare-and-swap fast path, a brief spin,
 * then parking in `Atomics.wait` (Drepper's three-state futex mutex: 0 free,
 * 1 locked, 2 locked with sleepers). A `spinlock` is the same lock; its kind
 * only tells the reader that the holder runs with preemption (and, for
 * `viommu->request_lock`, interrupts) off and that waiters spin in model time.
 *
 * Model time. In the `virtual` clock mode every acquisition carries the
 * acquirer's model clock: the lock remembers the model time of its last
 * release, and the acquirer's clock becomes max(own, release). The wait so
 * added is the lock_stat wait time, and a contention is a wait in model time
 * (what the threads found, real contention, is `realContentions`). Hold
 * times are model time between acquire and release. In the `wall` mode times
 * are real nanoseconds and contention is real contention.
 *
 * After the lock records, one word per CPU (worker) says which lock that CPU
 * is blocked on (index + 1, 0 = none), so a gate can tell that a peer cannot
 * act before the caller releases a lock the peer waits for
 * (`LockTable.blockedOnLockHeldBy`).
 *
 * Record layout (Int32 words / Float64 slots, 128 bytes):
 * | byte | field | writer |
 * |------|-------|--------|
 * | 0    | state (0 free, 1 locked, 2 locked + sleepers) | any (atomics) |
 * | 4    | owner cpu + 1 (0 = none)  | holder |
 * | 8    | last owner cpu + 1        | holder |
 * | 12   | kind (0 mutex, 1 spinlock)| allocate |
 * | 16   | lastReleaseNs (f64)       | holder |
 * | 24   | acquireNs (f64)           | holder |
 * | 32   | conBounces                | holder |
 * | 40   | contentions               | holder |
 * | 48   | waittimeMinNs             | holder |
 * | 56   | waittimeMaxNs             | holder |
 * | 64   | waittimeTotalNs           | holder |
 * | 72   | acqBounces                | holder |
 * | 80   | acquisitions              | holder |
 * | 88   | holdtimeMinNs             | holder |
 * | 96   | holdtimeMaxNs             | holder |
 * | 104  | holdtimeTotalNs           | holder |
 * | 112  | realContentions (CAS lost)| holder |
 * Every statistic is written only while holding the lock, so the release
 * (a sequentially consistent store) publishes it.
 */

import { MAX_WORKERS } from './clock.js';
import { type AbortFlag, DEFAULT_SPIN_LOADS, RunAborted } from './event.js';

export const LOCK_RECORD_BYTES = 128;
const W = LOCK_RECORD_BYTES / 4; // i32 words per record
const F = LOCK_RECORD_BYTES / 8; // f64 slots per record
const STATE = 0;
const OWNER = 1;
const LAST_OWNER = 2;
const KIND = 3;
const F_LAST_RELEASE = 2;
const F_ACQUIRE = 3;
const F_CON_BOUNCES = 4;
const F_CONTENTIONS = 5;
const F_WAIT_MIN = 6;
const F_WAIT_MAX = 7;
const F_WAIT_TOTAL = 8;
const F_ACQ_BOUNCES = 9;
const F_ACQUISITIONS = 10;
const F_HOLD_MIN = 11;
const F_HOLD_MAX = 12;
const F_HOLD_TOTAL = 13;
const F_REAL_CONTENTIONS = 14;

export type LockKind = 'mutex' | 'spinlock';

/** The clock a lock user brings: model time in virtual mode, real time in wall mode. */
export interface LockClock {
  readonly mode: 'virtual' | 'wall';
  /** current time, ns */
  nowNs(): number;
  /** virtual mode: move the clock forward to `ns` if it is behind */
  syncTo(ns: number): void;
}

/** Waits until the caller may take a lock at this model time (see LockTable.attach). */
export type LockGate = (nowNs: number) => void;
/** Called when the caller is about to block on a lock another CPU holds (see LockTable.attach). */
export type LockBlocked = () => void;

export interface LockStat {
  name: string;
  kind: LockKind;
  conBounces: number;
  contentions: number;
  waittimeMinNs: number;
  waittimeMaxNs: number;
  waittimeTotalNs: number;
  waittimeAvgNs: number;
  acqBounces: number;
  acquisitions: number;
  holdtimeMinNs: number;
  holdtimeMaxNs: number;
  holdtimeTotalNs: number;
  holdtimeAvgNs: number;
  realContentions: number;
}

export interface LockTableHandle {
  readonly sab: SharedArrayBuffer;
  readonly names: readonly string[];
  readonly kinds: readonly LockKind[];
}

export class LockTable {
  private readonly byName = new Map<string, Mutex>();

  static allocate(locks: readonly { name: string; kind: LockKind }[]): LockTableHandle {
    const names = locks.map((l) => l.name);
    if (new Set(names).size !== names.length) throw new RangeError(`duplicate lock names in ${names.join(', ')}`);
    const sab = new SharedArrayBuffer(Math.max(1, locks.length) * LOCK_RECORD_BYTES + MAX_WORKERS * 4);
    const i32 = new Int32Array(sab);
    const f64 = new Float64Array(sab);
    locks.forEach((l, i) => {
      i32[i * W + KIND] = l.kind === 'spinlock' ? 1 : 0;
      f64[i * F + F_WAIT_MIN] = Infinity;
      f64[i * F + F_HOLD_MIN] = Infinity;
    });
    return { sab, names, kinds: locks.map((l) => l.kind) };
  }

  /**
   * `gate`, when given, is called with the acquirer's model time before every
   * acquisition that carries a clock: a vCPU uses it to wait until no other
   * vCPU can still reach the lock earlier in model time (the quantum), so that
   * real threads are granted locks in model-time order. `blocked`, when given,
   * is called before the caller parks on a lock another CPU holds: the holder
   * may be waiting in its gate for this CPU, and must look again
   * (`blockedOnLockHeldBy`).
   */
  static attach(handle: LockTableHandle, cpu: number, abort?: AbortFlag, spinLoads = DEFAULT_SPIN_LOADS, gate?: LockGate, blocked?: LockBlocked): LockTable {
    return new LockTable(handle, cpu, abort, spinLoads, gate, blocked);
  }

  private constructor(
    readonly handle: LockTableHandle,
    cpu: number,
    abort: AbortFlag | undefined,
    spinLoads: number,
    gate: LockGate | undefined,
    blocked: LockBlocked | undefined,
  ) {
    const i32 = new Int32Array(handle.sab);
    const f64 = new Float64Array(handle.sab);
    this.i32 = i32;
    this.gateHook = gate;
    this.waitingBase = Math.max(1, handle.names.length) * W;
    handle.names.forEach((name, i) =>
      this.byName.set(name, new Mutex(name, handle.kinds[i], i32, f64, i, cpu, abort, spinLoads, gate, blocked, this.waitingBase)),
    );
  }

  private readonly i32: Int32Array;
  private readonly waitingBase: number;
  private readonly gateHook: LockGate | undefined;

  /**
   * Wait at the clock's model time in the gate every acquisition passes
   * (`attach`), without taking a lock: for state the CPUs share outside any
   * lock (atomic counters, timer words). Called right before such a read or
   * write, it orders it among the other CPUs' as the gate orders lock grants
   * (exactly at quantum 0). No gate or no clock: returns at once.
   */
  gate(clock?: LockClock): void {
    if (clock && this.gateHook) this.gateHook(clock.nowNs());
  }

  /**
   * True when CPU `cpu` is blocked on a lock that CPU `holder` holds. Called by
   * the holder about itself, the answer cannot go stale before the holder
   * releases that lock: the blocked CPU acts again only after the release, at
   * a model time at or after the holder's.
   */
  blockedOnLockHeldBy(cpu: number, holder: number): boolean {
    const w = Atomics.load(this.i32, this.waitingBase + cpu);
    return w !== 0 && Atomics.load(this.i32, (w - 1) * W + OWNER) === holder + 1;
  }

  get(name: string): Mutex {
    const m = this.byName.get(name);
    if (!m) throw new RangeError(`no lock named ${name} (have: ${[...this.byName.keys()].join(', ')})`);
    return m;
  }

  stats(): LockStat[] {
    return [...this.byName.values()].map((m) => m.stat());
  }

  /** Wake every thread parked on any lock (used when a run is torn down). */
  static wakeAll(handle: LockTableHandle): void {
    const i32 = new Int32Array(handle.sab);
    for (let i = 0; i < handle.names.length; i++) Atomics.notify(i32, i * W + STATE);
  }
}

export class Mutex {
  private readonly s: number; // state word index
  private readonly fb: number; // f64 base index

  constructor(
    readonly name: string,
    readonly kind: LockKind,
    private readonly i32: Int32Array,
    private readonly f64: Float64Array,
    index: number,
    /** the acquiring CPU (worker) id, for bounce accounting */
    readonly cpu: number,
    private readonly abort: AbortFlag | undefined,
    private readonly spinLoads: number,
    private readonly gate?: LockGate,
    private readonly blocked?: LockBlocked,
    /** i32 index of the per-CPU "blocked on lock" words */
    private readonly waitingBase = -1,
  ) {
    this.s = index * W;
    this.fb = index * F;
    this.index = index;
  }

  private readonly index: number;

  /** Acquire; with a clock, account model (or wall) wait and hold times. */
  lock(clock?: LockClock): void {
    if (clock && this.gate) this.gate(clock.nowNs());
    const i32 = this.i32;
    const s = this.s + STATE;
    const arrivalNs = clock ? clock.nowNs() : 0;
    let realContended = false;
    let c = Atomics.compareExchange(i32, s, 0, 1);
    if (c !== 0) {
      realContended = true;
      let got = false;
      for (let i = 0; i < this.spinLoads; i++) {
        if (Atomics.load(i32, s) === 0 && Atomics.compareExchange(i32, s, 0, 1) === 0) {
          got = true;
          break;
        }
      }
      if (!got) {
        // say which lock we block on before parking, and tell the holder (it may be in its gate, waiting for us)
        if (this.waitingBase >= 0) Atomics.store(i32, this.waitingBase + this.cpu, this.index + 1);
        this.blocked?.();
        try {
          if (c !== 2) c = Atomics.exchange(i32, s, 2);
          while (c !== 0) {
            if (this.abort?.aborted()) throw new RunAborted(`while waiting for lock ${this.name}`);
            Atomics.wait(i32, s, 2, 100);
            c = Atomics.exchange(i32, s, 2);
          }
        } finally {
          if (this.waitingBase >= 0) Atomics.store(i32, this.waitingBase + this.cpu, 0);
        }
      }
    }
    this.accountAcquire(clock, arrivalNs, realContended);
  }

  /** Try once; no waiting. */
  tryLock(clock?: LockClock): boolean {
    if (Atomics.compareExchange(this.i32, this.s + STATE, 0, 1) !== 0) return false;
    this.accountAcquire(clock, clock ? clock.nowNs() : 0, false);
    return true;
  }

  private accountAcquire(clock: LockClock | undefined, arrivalNs: number, realContended: boolean): void {
    const f = this.f64;
    const b = this.fb;
    const i32 = this.i32;
    let waitNs = 0;
    if (clock) {
      if (clock.mode === 'virtual') {
        const releaseNs = f[b + F_LAST_RELEASE];
        if (releaseNs > arrivalNs) {
          waitNs = releaseNs - arrivalNs;
          clock.syncTo(releaseNs);
        }
      } else {
        waitNs = realContended ? clock.nowNs() - arrivalNs : 0;
      }
      f[b + F_ACQUIRE] = clock.nowNs();
    }
    const me = this.cpu + 1;
    const last = i32[this.s + LAST_OWNER];
    const bounced = last !== 0 && last !== me;
    // with a virtual clock, a contention is a wait in model time (which does not depend
    // on how the threads were scheduled); the threads' own fights are realContentions
    const contended = clock?.mode === 'virtual' ? waitNs > 0 : realContended || waitNs > 0;
    if (contended) {
      f[b + F_CONTENTIONS]++;
      if (bounced) f[b + F_CON_BOUNCES]++;
      if (waitNs < f[b + F_WAIT_MIN]) f[b + F_WAIT_MIN] = waitNs;
      if (waitNs > f[b + F_WAIT_MAX]) f[b + F_WAIT_MAX] = waitNs;
      f[b + F_WAIT_TOTAL] += waitNs;
    }
    if (realContended) f[b + F_REAL_CONTENTIONS]++;
    f[b + F_ACQUISITIONS]++;
    if (bounced) f[b + F_ACQ_BOUNCES]++;
    i32[this.s + OWNER] = me;
    i32[this.s + LAST_OWNER] = me;
  }

  unlock(clock?: LockClock): void {
    const f = this.f64;
    const b = this.fb;
    if (clock) {
      const now = clock.nowNs();
      const hold = now - f[b + F_ACQUIRE];
      if (hold < f[b + F_HOLD_MIN]) f[b + F_HOLD_MIN] = hold;
      if (hold > f[b + F_HOLD_MAX]) f[b + F_HOLD_MAX] = hold;
      f[b + F_HOLD_TOTAL] += hold;
      if (now > f[b + F_LAST_RELEASE]) f[b + F_LAST_RELEASE] = now;
    }
    this.i32[this.s + OWNER] = 0;
    const s = this.s + STATE;
    if (Atomics.sub(this.i32, s, 1) !== 1) {
      Atomics.store(this.i32, s, 0);
      Atomics.notify(this.i32, s, 1);
    }
  }

  /** True while some thread holds it (a hint: racy by nature). */
  isLocked(): boolean {
    return Atomics.load(this.i32, this.s + STATE) !== 0;
  }

  stat(): LockStat {
    const f = this.f64;
    const b = this.fb;
    const contentions = f[b + F_CONTENTIONS];
    const acquisitions = f[b + F_ACQUISITIONS];
    const waitTotal = f[b + F_WAIT_TOTAL];
    const holdTotal = f[b + F_HOLD_TOTAL];
    return {
      name: this.name,
      kind: this.kind,
      conBounces: f[b + F_CON_BOUNCES],
      contentions,
      waittimeMinNs: contentions > 0 ? f[b + F_WAIT_MIN] : 0,
      waittimeMaxNs: f[b + F_WAIT_MAX],
      waittimeTotalNs: waitTotal,
      waittimeAvgNs: contentions > 0 ? waitTotal / contentions : 0,
      acqBounces: f[b + F_ACQ_BOUNCES],
      acquisitions,
      holdtimeMinNs: acquisitions > 0 && Number.isFinite(f[b + F_HOLD_MIN]) ? f[b + F_HOLD_MIN] : 0,
      holdtimeMaxNs: f[b + F_HOLD_MAX],
      holdtimeTotalNs: holdTotal,
      holdtimeAvgNs: acquisitions > 0 ? holdTotal / acquisitions : 0,
      realContentions: f[b + F_REAL_CONTENTIONS],
    };
  }
}

/**
 * Format rows as /proc/lock_stat (version 0.4). Times are printed in
 * microseconds with two decimals, as the kernel prints them.
 */
export function formatLockStat(stats: readonly LockStat[]): string {
  const us = (ns: number): string => (ns / 1000).toFixed(2);
  const cols = [
    'con-bounces',
    'contentions',
    'waittime-min',
    'waittime-max',
    'waittime-total',
    'waittime-avg',
    'acq-bounces',
    'acquisitions',
    'holdtime-min',
    'holdtime-max',
    'holdtime-total',
    'holdtime-avg',
  ];
  const rule = '-'.repeat(40 + cols.length * 15);
  const lines = ['lock_stat version 0.4', rule, `${'class name'.padStart(40)}${cols.map((c) => c.padStart(15)).join('')}`, rule];
  for (const s of stats) {
    const vals = [
      String(s.conBounces),
      String(s.contentions),
      us(s.waittimeMinNs),
      us(s.waittimeMaxNs),
      us(s.waittimeTotalNs),
      us(s.waittimeAvgNs),
      String(s.acqBounces),
      String(s.acquisitions),
      us(s.holdtimeMinNs),
      us(s.holdtimeMaxNs),
      us(s.holdtimeTotalNs),
      us(s.holdtimeAvgNs),
    ];
    lines.push('');
    lines.push(`${(`${s.name}:`).padStart(40)}${vals.map((v) => v.padStart(15)).join('')}`);
  }
  lines.push('');
  return lines.join('\n');
}

export { DEFAULT_SPIN_LOADS };
