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
 * | 12   | kind (0 mutex, 1 spinlock, 2 rwsem) | allocate |
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
 *
 * A lock of kind `rwsem` (`RwSemaphore`, at the end of this file) uses its
 * record for the write side and has a second record, for the read side, in
 * an area after the per-CPU words.
 */

import { MAX_WORKERS } from './clock.js';
import { type AbortFlag, DEFAULT_SPIN_LOADS, parkThread, RunAborted } from './event.js';
import { allocateShared } from './shared-pool.js';

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

export type LockKind = 'mutex' | 'spinlock' | 'rwsem';

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
  /**
   * `rwsem` only: the read side, /proc/lock_stat's `<name>-R` line (the
   * fields above are then the write side, its `<name>` or `<name>-W` line).
   */
  readConBounces?: number;
  readContentions?: number;
  readWaittimeMinNs?: number;
  readWaittimeMaxNs?: number;
  readWaittimeTotalNs?: number;
  readWaittimeAvgNs?: number;
  readAcqBounces?: number;
  readAcquisitions?: number;
  readHoldtimeMinNs?: number;
  readHoldtimeMaxNs?: number;
  readHoldtimeTotalNs?: number;
  readHoldtimeAvgNs?: number;
  readRealContentions?: number;
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
    const rwsems = locks.filter((l) => l.kind === 'rwsem').length;
    const sab = allocateShared(rwsemAreaBytes(locks.length) + rwsems * LOCK_RECORD_BYTES);
    const i32 = new Int32Array(sab);
    const f64 = new Float64Array(sab);
    locks.forEach((l, i) => {
      i32[i * W + KIND] = l.kind === 'spinlock' ? 1 : l.kind === 'rwsem' ? 2 : 0;
      f64[i * F + F_WAIT_MIN] = Infinity;
      f64[i * F + F_HOLD_MIN] = Infinity;
    });
    for (let j = 0; j < rwsems; j++) {
      const rf = (rwsemAreaBytes(locks.length) + j * LOCK_RECORD_BYTES) / 8;
      f64[rf + F_WAIT_MIN] = Infinity;
      f64[rf + F_HOLD_MIN] = Infinity;
    }
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
    let rwsems = 0;
    handle.names.forEach((name, i) => {
      if (handle.kinds[i] === 'rwsem') {
        const readRecord = rwsemAreaBytes(handle.names.length) / LOCK_RECORD_BYTES + rwsems++;
        this.rwsems.set(name, new RwSemaphore(name, i32, f64, i, readRecord, cpu, abort, spinLoads, gate, blocked, this.waitingBase));
      } else {
        this.byName.set(name, new Mutex(name, handle.kinds[i], i32, f64, i, cpu, abort, spinLoads, gate, blocked, this.waitingBase));
      }
    });
  }

  private readonly rwsems = new Map<string, RwSemaphore>();

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
    if (!m) {
      if (this.rwsems.has(name)) throw new RangeError(`lock ${name} is an rwsem: take it with rwsem(), not get()`);
      throw new RangeError(`no lock named ${name} (have: ${this.handle.names.join(', ')})`);
    }
    return m;
  }

  /** The reader-writer semaphore `name` (a lock of kind `rwsem`). */
  rwsem(name: string): RwSemaphore {
    const r = this.rwsems.get(name);
    if (!r) throw new RangeError(`no rwsem named ${name} (have: ${[...this.rwsems.keys()].join(', ') || 'none'})`);
    return r;
  }

  /** One row per lock, in the table's order. */
  stats(): LockStat[] {
    return this.handle.names.map((n) => (this.byName.get(n) ?? this.rwsems.get(n)!).stat());
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
            parkThread(i32, s, 2, 100);
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
    return { name: this.name, kind: this.kind, ...sideStat(this.f64, this.fb) };
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
  const row = (label: string, vals: readonly string[]): void => {
    lines.push('');
    lines.push(`${`${label}:`.padStart(40)}${vals.map((v) => v.padStart(15)).join('')}`);
  };
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
    const reads = s.readAcquisitions ?? 0;
    // an rwsem, as lockdep's seq_stats prints one: the write line (`-W` when there were reads too), then the `-R` line
    if (s.acquisitions > 0 || reads === 0) row(reads > 0 ? `${s.name}-W` : s.name, vals);
    if (reads > 0)
      row(`${s.name}-R`, [
        String(s.readConBounces ?? 0),
        String(s.readContentions ?? 0),
        us(s.readWaittimeMinNs ?? 0),
        us(s.readWaittimeMaxNs ?? 0),
        us(s.readWaittimeTotalNs ?? 0),
        us(s.readWaittimeAvgNs ?? 0),
        String(s.readAcqBounces ?? 0),
        String(reads),
        us(s.readHoldtimeMinNs ?? 0),
        us(s.readHoldtimeMaxNs ?? 0),
        us(s.readHoldtimeTotalNs ?? 0),
        us(s.readHoldtimeAvgNs ?? 0),
      ]);
  }
  lines.push('');
  return lines.join('\n');
}

export { DEFAULT_SPIN_LOADS };

// ---- rw_semaphore -------------------------------------------------------------

/**
 * Where the rwsems' read-side records start: after the lock records and the
 * per-CPU "blocked on lock" words, on a record boundary.
 */
function rwsemAreaBytes(locks: number): number {
  return Math.ceil((Math.max(1, locks) * LOCK_RECORD_BYTES + MAX_WORKERS * 4) / LOCK_RECORD_BYTES) * LOCK_RECORD_BYTES;
}

/** State word of an rwsem: the write holder's bit; below it, the number of read holders. */
const RW_WRITER = 1 << 30;
// read-side record: i32 words
const R_SLEEPERS = 0;
const R_WRITERS_WAITING = 1;
const R_STATS_LOCK = 2;
// read-side record: f64 slots (the statistics use the Mutex record's slots F_CON_BOUNCES … F_REAL_CONTENTIONS)
const FR_LAST_RELEASE = 2;

/**
 * A reader-writer semaphore (Linux `struct rw_semaphore`, e.g. `mm->mmap_lock`)
 * in a LockTable, with lock_stat accounting per side as lockdep keeps it.
 *
 * Real threads. The record's state word holds RW_WRITER while a writer holds
 * the semaphore, else the number of readers. A reader enters while there is
 * no writer and no writer waiting (so a stream of readers cannot starve a
 * writer); a writer enters when the word is 0. Waiters spin, then park on the
 * state word; every release wakes all sleepers, which look again. Taking it
 * for read twice in one thread while a writer waits deadlocks, as it does in
 * the kernel.
 *
 * Model time (virtual clock). Read holders share: a reader waits only for
 * the last write release, max(own clock, last up_write). A writer excludes
 * everyone: it waits for the last release of either side,
 * max(own clock, last up_write, last up_read). A contention is a wait in
 * model time; `realContentions` counts the times a thread found the
 * semaphore unavailable. With the wall clock, times are real and a
 * contention is a real one.
 *
 * Records (128 bytes each): the lock's own record is the write side, laid
 * out as the Mutex's (state, owner = the write holder, last owner of either
 * side, kind 2, last write release, write acquire time, write statistics).
 * The read-side record, in the table's rwsem area:
 * | byte | field | writer |
 * |------|-------|--------|
 * | 0    | sleepers: threads parked on the state word | waiters (atomics) |
 * | 4    | writers waiting                            | waiting writers (atomics) |
 * | 8    | spin word guarding the read statistics (readers update them concurrently) | readers |
 * | 16   | lastReadReleaseNs (f64): the latest up_read in model time | readers |
 * | 32…112 | read statistics, at the write side's offsets | readers |
 * A reader's own acquire time stays in its thread (several readers hold at once).
 * `LockTable.blockedOnLockHeldBy` knows the write holder only.
 */
export class RwSemaphore {
  readonly kind = 'rwsem' as const;
  private readonly s: number; // state word index
  private readonly fb: number; // f64 base of the write side
  private readonly r: number; // i32 base of the read side
  private readonly rb: number; // f64 base of the read side
  /** model times at which this thread took it for read, innermost last */
  private readonly readAcquireNs: number[] = [];

  constructor(
    readonly name: string,
    private readonly i32: Int32Array,
    private readonly f64: Float64Array,
    private readonly index: number,
    /** index of the read-side record, counted in records from the start of the table */
    readRecord: number,
    /** the acquiring CPU (worker) id, for bounce accounting */
    readonly cpu: number,
    private readonly abort: AbortFlag | undefined,
    private readonly spinLoads: number,
    private readonly gate?: LockGate,
    private readonly blocked?: LockBlocked,
    private readonly waitingBase = -1,
  ) {
    this.s = index * W;
    this.fb = index * F;
    this.r = readRecord * W;
    this.rb = readRecord * F;
  }

  /** Take it for read (down_read; `mmap_read_lock`). */
  down_read(clock?: LockClock): void {
    this.acquire(false, clock);
  }

  /** Release a read hold (up_read; `mmap_read_unlock`). */
  up_read(clock?: LockClock): void {
    const acquiredNs = this.readAcquireNs.pop();
    if (acquiredNs === undefined) throw new Error(`up_read of ${this.name}: this thread holds it for read 0 times`);
    this.statsLock();
    try {
      if (clock) {
        const now = clock.nowNs();
        this.hold(this.rb, now - acquiredNs);
        if (now > this.f64[this.rb + FR_LAST_RELEASE]) this.f64[this.rb + FR_LAST_RELEASE] = now;
      }
    } finally {
      this.statsUnlock();
    }
    Atomics.sub(this.i32, this.s + STATE, 1);
    this.wake();
  }

  /** Take it for write (down_write; `mmap_write_lock`, `mmap_write_lock_killable`: a run that aborts throws RunAborted). */
  down_write(clock?: LockClock): void {
    this.acquire(true, clock);
  }

  /** Release the write hold (up_write; `mmap_write_unlock`). */
  up_write(clock?: LockClock): void {
    const f = this.f64;
    if (clock) {
      const now = clock.nowNs();
      this.hold(this.fb, now - f[this.fb + F_ACQUIRE]);
      if (now > f[this.fb + F_LAST_RELEASE]) f[this.fb + F_LAST_RELEASE] = now;
    }
    this.i32[this.s + OWNER] = 0;
    Atomics.store(this.i32, this.s + STATE, 0);
    this.wake();
  }

  /** Try once for read (down_read_trylock); no waiting. */
  down_read_trylock(clock?: LockClock): boolean {
    if (!this.tryTake(false)) return false;
    this.accountAcquire(false, clock, clock ? clock.nowNs() : 0, false);
    return true;
  }

  /** Try once for write (down_write_trylock); no waiting. */
  down_write_trylock(clock?: LockClock): boolean {
    if (!this.tryTake(true)) return false;
    this.accountAcquire(true, clock, clock ? clock.nowNs() : 0, false);
    return true;
  }

  /** Readers holding it now, or -1 while a writer does (a hint: racy by nature). */
  holders(): number {
    const c = Atomics.load(this.i32, this.s + STATE);
    return c & RW_WRITER ? -1 : c;
  }

  private canTake(c: number, write: boolean): boolean {
    if (write) return c === 0;
    return (c & RW_WRITER) === 0 && Atomics.load(this.i32, this.r + R_WRITERS_WAITING) === 0;
  }

  /** Take it if it can be taken now; a reader that loses a race to another reader tries again. */
  private tryTake(write: boolean): boolean {
    const i32 = this.i32;
    const s = this.s + STATE;
    let c = Atomics.load(i32, s);
    while (this.canTake(c, write)) {
      const seen = Atomics.compareExchange(i32, s, c, write ? RW_WRITER : c + 1);
      if (seen === c) return true;
      c = seen;
    }
    return false;
  }

  private acquire(write: boolean, clock: LockClock | undefined): void {
    if (clock && this.gate) this.gate(clock.nowNs());
    const i32 = this.i32;
    const arrivalNs = clock ? clock.nowNs() : 0;
    let realContended = false;
    if (!this.tryTake(write)) {
      realContended = true;
      let got = false;
      for (let i = 0; i < this.spinLoads && !got; i++) got = this.tryTake(write);
      if (!got) {
        if (this.waitingBase >= 0) Atomics.store(i32, this.waitingBase + this.cpu, this.index + 1);
        this.blocked?.();
        if (write) Atomics.add(i32, this.r + R_WRITERS_WAITING, 1);
        // counted before the state is read again, so a release after that read sees a sleeper and wakes it
        Atomics.add(i32, this.r + R_SLEEPERS, 1);
        let taken = false;
        try {
          while (!taken) {
            const c = Atomics.load(i32, this.s + STATE);
            if (this.canTake(c, write)) {
              taken = Atomics.compareExchange(i32, this.s + STATE, c, write ? RW_WRITER : c + 1) === c;
              continue;
            }
            if (this.abort?.aborted()) throw new RunAborted(`while waiting for rwsem ${this.name}`);
            parkThread(i32, this.s + STATE, c, 100);
          }
        } finally {
          Atomics.sub(i32, this.r + R_SLEEPERS, 1);
          if (write) Atomics.sub(i32, this.r + R_WRITERS_WAITING, 1);
          if (this.waitingBase >= 0) Atomics.store(i32, this.waitingBase + this.cpu, 0);
          // a writer that gives up waiting lets the readers that stood back for it look again
          if (write && !taken) this.wake();
        }
      }
    }
    this.accountAcquire(write, clock, arrivalNs, realContended);
  }

  private wake(): void {
    if (Atomics.load(this.i32, this.r + R_SLEEPERS) > 0) Atomics.notify(this.i32, this.s + STATE);
  }

  private accountAcquire(write: boolean, clock: LockClock | undefined, arrivalNs: number, realContended: boolean): void {
    const f = this.f64;
    let waitNs = 0;
    let nowNs = 0;
    if (clock) {
      if (clock.mode === 'virtual') {
        // a reader conflicts with writers only; a writer with both sides (stable now: nobody else holds it)
        const releaseNs = write ? Math.max(f[this.fb + F_LAST_RELEASE], f[this.rb + FR_LAST_RELEASE]) : f[this.fb + F_LAST_RELEASE];
        if (releaseNs > arrivalNs) {
          waitNs = releaseNs - arrivalNs;
          clock.syncTo(releaseNs);
        }
      } else {
        waitNs = realContended ? clock.nowNs() - arrivalNs : 0;
      }
      nowNs = clock.nowNs();
    }
    const contended = clock?.mode === 'virtual' ? waitNs > 0 : realContended || waitNs > 0;
    if (write) {
      f[this.fb + F_ACQUIRE] = nowNs;
      this.countAcquire(this.fb, contended, waitNs, realContended);
      this.i32[this.s + OWNER] = this.cpu + 1;
      return;
    }
    this.readAcquireNs.push(nowNs);
    this.statsLock();
    try {
      this.countAcquire(this.rb, contended, waitNs, realContended);
    } finally {
      this.statsUnlock();
    }
  }

  /** One acquisition on the side whose statistics start at f64 slot `b`; lockdep's bounces compare with the last CPU of either side. */
  private countAcquire(b: number, contended: boolean, waitNs: number, realContended: boolean): void {
    const f = this.f64;
    const me = this.cpu + 1;
    const last = this.i32[this.s + LAST_OWNER];
    const bounced = last !== 0 && last !== me;
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
    this.i32[this.s + LAST_OWNER] = me;
  }

  private hold(b: number, holdNs: number): void {
    const f = this.f64;
    if (holdNs < f[b + F_HOLD_MIN]) f[b + F_HOLD_MIN] = holdNs;
    if (holdNs > f[b + F_HOLD_MAX]) f[b + F_HOLD_MAX] = holdNs;
    f[b + F_HOLD_TOTAL] += holdNs;
  }

  /** Readers update their side's statistics (and the last owner) one at a time; a few stores are held. */
  private statsLock(): void {
    while (Atomics.compareExchange(this.i32, this.r + R_STATS_LOCK, 0, 1) !== 0) {
      /* spin */
    }
  }

  private statsUnlock(): void {
    Atomics.store(this.i32, this.r + R_STATS_LOCK, 0);
  }

  stat(): LockStat {
    const w = sideStat(this.f64, this.fb);
    const r = sideStat(this.f64, this.rb);
    return {
      name: this.name,
      kind: 'rwsem',
      ...w,
      readConBounces: r.conBounces,
      readContentions: r.contentions,
      readWaittimeMinNs: r.waittimeMinNs,
      readWaittimeMaxNs: r.waittimeMaxNs,
      readWaittimeTotalNs: r.waittimeTotalNs,
      readWaittimeAvgNs: r.waittimeAvgNs,
      readAcqBounces: r.acqBounces,
      readAcquisitions: r.acquisitions,
      readHoldtimeMinNs: r.holdtimeMinNs,
      readHoldtimeMaxNs: r.holdtimeMaxNs,
      readHoldtimeTotalNs: r.holdtimeTotalNs,
      readHoldtimeAvgNs: r.holdtimeAvgNs,
      readRealContentions: r.realContentions,
    };
  }
}

/** The lock_stat columns of one side whose statistics start at f64 slot `b`. */
function sideStat(f: Float64Array, b: number): Omit<LockStat, 'name' | 'kind'> {
  const contentions = f[b + F_CONTENTIONS];
  const acquisitions = f[b + F_ACQUISITIONS];
  const waitTotal = f[b + F_WAIT_TOTAL];
  const holdTotal = f[b + F_HOLD_TOTAL];
  return {
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
