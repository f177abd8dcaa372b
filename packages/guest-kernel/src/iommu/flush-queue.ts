/**
 * dma-iommu's lazy (non-strict) IOTLB flush queue: Linux `iova_fq` of
 * drivers/iommu/iova.c v5.10–v5.15 (`queue_iova`, `fq_ring_free`,
 * `iova_domain_flush`, `fq_flush_timeout`; moved to dma-iommu.c as
 * `iommu_dma_fq` in v5.17).
 *
 * An unmapped IOVA is not freed at once: it is queued on the unmapping CPU's
 * ring with the current `fq_flush_start_cnt`. The IOVA goes back to the
 * allocator (`free_iova_fast`) only after a whole IOTLB flush that started
 * after it was queued has finished (`entry.counter < fq_flush_finish_cnt`),
 * so the device can never use a stale translation of a reused IOVA.
 * A flush happens when a CPU's ring is full (IOVA_FQ_SIZE = 256 slots, one
 * kept empty: the 256th queue_iova flushes) or when the domain's timer fires,
 * IOVA_FQ_TIMEOUT = 10 ms of model time after the first queue_iova that
 * found it idle; the timer flush then walks every CPU's ring under that
 * ring's `fq->lock/<cpu>`.
 *
 * The timer is a per-CPU kernel timer: it belongs to the vCPU that armed it,
 * which sees it in `nextDeadlineNs()` and services it with
 * `fq_flush_timeout(nowNs, clock)` from its timer check.
 *
 * The flush counters and the timer word are shared by the CPUs outside the
 * ring locks: each read or write of them waits first in the lock table's
 * gate (`LockTable.gate`) at the current model time, so that across vCPUs
 * they change in model-time order (exactly at quantum 0), as the locks do.
 *
 * The IOTLB flush is the caller's `flushIotlbAll(clock)` (the lead sends a
 * virtio-iommu request). Cost: `flushQueueAddNs` per queue_iova; the flush
 * charges what its callback charges; freeing charges what `free_iova_fast`
 * charges.
 *
 * Layout `iova_fq` (C = cpus, E = entries per ring):
 * | field        | type          | contents | writer |
 * |--------------|---------------|----------|--------|
 * | ctl          | i32[16+16·C]  | 0 fq_flush_start_cnt, 1 fq_flush_finish_cnt, 2 fq_timer_on, 3 timer owner cpu (-1 none); ring c at 16+16c: 0 head, 1 tail | 0–1 atomics by flushers; 2–3 atomics; head/tail under fq->lock/c |
 * | timer        | f64[8]        | 0 timer deadline (model ns) | the arming CPU, before publishing the owner |
 * | entryPfn     | f64[C·E]      | queued IOVA pfn, ring c at c·E | fq->lock/c |
 * | entryPages   | f64[C·E]      | its size in pages | fq->lock/c |
 * | entryCounter | f64[C·E]      | fq_flush_start_cnt when queued | fq->lock/c |
 * | stats        | f64[8·C]      | per acting CPU at 8c: 0 flushes, 1 flushesByTimer, 2 flushesByFull, 3 entriesFreed | CPU c only |
 */

import { defineLayout, InputError, type LockKind, type LockTable, type ModelClock, type Mutex, NEVER_NS, Region } from '@vmstack/shm';
import { checkIovaSizePages, type IovaDomain } from './iova.js';

/** Where flushed IOVAs go: the vCPU's `IovaDomain` (an interface so a test can watch the frees). */
export type IovaFreer = Pick<IovaDomain, 'free_iova_fast'>;

/** IOVA_FQ_SIZE */
export const IOVA_FQ_SIZE = 256;
/** IOVA_FQ_TIMEOUT (10 ms) in ns */
export const IOVA_FQ_TIMEOUT_NS = 10_000_000;
export const FQ_LOCK_PREFIX = 'fq->lock/';
export function fqLockName(cpu: number, suffix = ''): string {
  return `${FQ_LOCK_PREFIX}${cpu}${suffix}`;
}

const START_CNT = 0;
const FINISH_CNT = 1;
const TIMER_ON = 2;
const TIMER_OWNER = 3;
const RING_BASE = 16;
const RING_STRIDE = 16;
const HEAD = 0;
const TAIL = 1;
const T_DEADLINE = 0;
const STAT_STRIDE = 8;
const ST_FLUSHES = 0;
const ST_BY_TIMER = 1;
const ST_BY_FULL = 2;
const ST_FREED = 3;

export interface FlushQueueOptions {
  readonly cpus: number;
  /** slots per CPU ring (profile `lazyFlushQueueEntriesCount`), default IOVA_FQ_SIZE */
  readonly entriesCount?: number;
  /** timer period (profile `lazyFlushTimeoutNs`), default IOVA_FQ_TIMEOUT_NS */
  readonly timeoutNs?: number;
  /** appended to every lock name, for several domains in one lock table */
  readonly lockSuffix?: string;
}

export interface FlushQueueHandle {
  readonly sab: SharedArrayBuffer;
  readonly cpus: number;
  readonly entriesCount: number;
  readonly timeoutNs: number;
  readonly lockSuffix: string;
}

export interface FlushQueueCosts {
  readonly flushQueueAddNs: number;
}

export interface FlushQueueStats {
  /** iova_domain_flush calls (IOTLB flushes) */
  readonly flushes: number;
  readonly flushesByTimer: number;
  readonly flushesByFull: number;
  /** queued IOVAs given back to the allocator */
  readonly entriesFreed: number;
}

/** The IOTLB invalidation of the whole domain; charges its own cost to `clock`. */
export type FlushIotlbAll = (clock: ModelClock) => void;

function fqLayout(cpus: number, entries: number) {
  return defineLayout('iova_fq', [
    { name: 'ctl', kind: 'i32', count: RING_BASE + RING_STRIDE * cpus },
    { name: 'timer', kind: 'f64', count: 8 },
    { name: 'entryPfn', kind: 'f64', count: cpus * entries },
    { name: 'entryPages', kind: 'f64', count: cpus * entries },
    { name: 'entryCounter', kind: 'f64', count: cpus * entries },
    { name: 'stats', kind: 'f64', count: STAT_STRIDE * cpus },
  ]);
}

export class FlushQueue {
  private readonly ctl: Int32Array;
  private readonly timer: Float64Array;
  private readonly pfns: Float64Array;
  private readonly pages: Float64Array;
  private readonly counters: Float64Array;
  private readonly st: Float64Array;
  private readonly locks: Mutex[];
  private readonly size: number;
  readonly cpus: number;
  readonly timeoutNs: number;

  static lockSpecs(handle: FlushQueueHandle): { name: string; kind: LockKind }[] {
    return Array.from({ length: handle.cpus }, (_, c) => ({ name: fqLockName(c, handle.lockSuffix), kind: 'spinlock' as const }));
  }

  /** `init_iova_flush_queue`. */
  static allocate(opts: FlushQueueOptions): FlushQueueHandle {
    const { cpus } = opts;
    const entriesCount = opts.entriesCount ?? IOVA_FQ_SIZE;
    const timeoutNs = opts.timeoutNs ?? IOVA_FQ_TIMEOUT_NS;
    if (!Number.isInteger(cpus) || cpus < 1 || cpus > 1024) throw new InputError('flushQueue.cpus', cpus, 'an integer in [1, 1024]');
    if (!Number.isInteger(entriesCount) || entriesCount < 2 || entriesCount > 1 << 20)
      throw new InputError('flushQueue.entriesCount', entriesCount, 'an integer in [2, 1048576]');
    if (!Number.isSafeInteger(timeoutNs) || timeoutNs < 1) throw new InputError('flushQueue.timeoutNs', timeoutNs, 'a positive integer number of ns');
    const region = Region.allocate(fqLayout(cpus, entriesCount));
    region.i32('ctl')[TIMER_OWNER] = -1;
    return { sab: region.sab, cpus, entriesCount, timeoutNs, lockSuffix: opts.lockSuffix ?? '' };
  }

  /**
   * Join as vCPU `cpu`. Queued IOVAs are freed through `iovad` (this vCPU's
   * attachment of the domain). `lockTable` must hold `FlushQueue.lockSpecs(handle)`.
   */
  static attach(
    handle: FlushQueueHandle,
    cpu: number,
    lockTable: LockTable,
    iovad: IovaFreer,
    costs: FlushQueueCosts,
    flushIotlbAll: FlushIotlbAll,
  ): FlushQueue {
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= handle.cpus) throw new RangeError(`flush queue: cpu ${cpu} outside 0..${handle.cpus - 1}`);
    return new FlushQueue(handle, cpu, lockTable, iovad, costs, flushIotlbAll);
  }

  /** Statistics from any thread without attaching. */
  static stats(handle: FlushQueueHandle): FlushQueueStats {
    return sumStats(Region.attach(fqLayout(handle.cpus, handle.entriesCount), handle.sab).f64('stats'), handle.cpus);
  }

  private constructor(
    readonly handle: FlushQueueHandle,
    readonly cpu: number,
    private readonly lockTable: LockTable,
    private readonly iovad: IovaFreer,
    private readonly costs: FlushQueueCosts,
    private readonly flushIotlbAll: FlushIotlbAll,
  ) {
    const r = Region.attach(fqLayout(handle.cpus, handle.entriesCount), handle.sab);
    this.ctl = r.i32('ctl');
    this.timer = r.f64('timer');
    this.pfns = r.f64('entryPfn');
    this.pages = r.f64('entryPages');
    this.counters = r.f64('entryCounter');
    this.st = r.f64('stats');
    this.size = handle.entriesCount;
    this.cpus = handle.cpus;
    this.timeoutNs = handle.timeoutNs;
    this.locks = Array.from({ length: handle.cpus }, (_, c) => lockTable.get(fqLockName(c, handle.lockSuffix)));
  }

  /**
   * Defer the free of an unmapped IOVA range until an IOTLB flush covers it.
   * `cpu` is the unmapping CPU's ring (normally this vCPU's own). A full ring
   * flushes the IOTLB right here, under the ring's lock.
   */
  queue_iova(cpu: number, pfn: number, pages: number, clock: ModelClock): void {
    this.checkCpu(cpu);
    checkIovaSizePages(pages);
    const lock = this.locks[cpu];
    lock.lock(clock);
    try {
      clock.charge(this.costs.flushQueueAddNs);
      // First remove all entries that were already flushed out by another CPU.
      this.fq_ring_free(cpu, clock);
      if (this.fq_full(cpu)) {
        this.iova_domain_flush(clock, ST_BY_FULL);
        this.fq_ring_free(cpu, clock);
      }
      const r = RING_BASE + RING_STRIDE * cpu;
      const tail = this.ctl[r + TAIL];
      const e = cpu * this.size + tail;
      this.pfns[e] = pfn;
      this.pages[e] = pages;
      this.lockTable.gate(clock);
      this.counters[e] = Atomics.load(this.ctl, START_CNT);
      Atomics.store(this.ctl, r + TAIL, (tail + 1) % this.size);
    } finally {
      lock.unlock(clock);
    }
    // mod_timer(jiffies + IOVA_FQ_TIMEOUT) unless the timer is already on
    this.lockTable.gate(clock);
    if (Atomics.load(this.ctl, TIMER_ON) === 0 && Atomics.exchange(this.ctl, TIMER_ON, 1) === 0) {
      this.timer[T_DEADLINE] = clock.nowNs() + this.timeoutNs;
      Atomics.store(this.ctl, TIMER_OWNER, this.cpu);
    }
  }

  /**
   * This vCPU's timer check: if it owns the armed timer and `nowNs` has
   * reached the deadline, flush the IOTLB and free every flushed entry of
   * every CPU's ring. Returns whether it flushed.
   */
  fq_flush_timeout(nowNs: number, clock: ModelClock): boolean {
    if (Atomics.load(this.ctl, TIMER_OWNER) !== this.cpu) return false;
    if (nowNs < this.timer[T_DEADLINE]) return false;
    if (Atomics.compareExchange(this.ctl, TIMER_OWNER, this.cpu, -1) !== this.cpu) return false;
    this.lockTable.gate(clock);
    Atomics.store(this.ctl, TIMER_ON, 0);
    this.iova_domain_flush(clock, ST_BY_TIMER);
    this.fq_ring_free_all(clock);
    return true;
  }

  /**
   * Drain: flush the IOTLB and free every queued entry of every ring (not a
   * kernel function; for the end of a run, so IOVA counts settle). Counted
   * in `flushes` only.
   */
  fq_flush_all(clock: ModelClock): void {
    this.iova_domain_flush(clock, -1);
    this.fq_ring_free_all(clock);
  }

  /** Every CPU's ring, each under its lock: free what the flush just completed. */
  private fq_ring_free_all(clock: ModelClock): void {
    for (let c = 0; c < this.cpus; c++) {
      const lock = this.locks[c];
      lock.lock(clock);
      try {
        this.fq_ring_free(c, clock);
      } finally {
        lock.unlock(clock);
      }
    }
  }

  /** Model time of this vCPU's pending flush-queue timer, or NEVER_NS. */
  nextDeadlineNs(): number {
    return Atomics.load(this.ctl, TIMER_OWNER) === this.cpu ? this.timer[T_DEADLINE] : NEVER_NS;
  }

  /** Entries queued on `cpu`'s ring and not yet freed. */
  pending(cpu: number): number {
    this.checkCpu(cpu);
    const r = RING_BASE + RING_STRIDE * cpu;
    return (Atomics.load(this.ctl, r + TAIL) - Atomics.load(this.ctl, r + HEAD) + this.size) % this.size;
  }

  stats(): FlushQueueStats {
    return sumStats(this.st, this.cpus);
  }

  // --- internals; the ring's lock is held ---

  private fq_full(cpu: number): boolean {
    const r = RING_BASE + RING_STRIDE * cpu;
    return (this.ctl[r + TAIL] + 1) % this.size === this.ctl[r + HEAD];
  }

  /** Free the ring's entries whose flush has completed, oldest first. */
  private fq_ring_free(cpu: number, clock: ModelClock): void {
    this.lockTable.gate(clock);
    const counter = Atomics.load(this.ctl, FINISH_CNT);
    const r = RING_BASE + RING_STRIDE * cpu;
    const tail = this.ctl[r + TAIL];
    let head = this.ctl[r + HEAD];
    let freed = 0;
    while (head !== tail) {
      const e = cpu * this.size + head;
      if (this.counters[e] >= counter) break;
      this.iovad.free_iova_fast(this.pfns[e], this.pages[e], clock);
      head = (head + 1) % this.size;
      Atomics.store(this.ctl, r + HEAD, head);
      freed++;
    }
    this.st[this.cpu * STAT_STRIDE + ST_FREED] += freed;
  }

  /** `iova_domain_flush`; `reason` is the stats slot to count it in (-1: none). */
  private iova_domain_flush(clock: ModelClock, reason: number): void {
    this.lockTable.gate(clock);
    Atomics.add(this.ctl, START_CNT, 1);
    this.flushIotlbAll(clock);
    this.lockTable.gate(clock);
    Atomics.add(this.ctl, FINISH_CNT, 1);
    const s = this.cpu * STAT_STRIDE;
    this.st[s + ST_FLUSHES]++;
    if (reason >= 0) this.st[s + reason]++;
  }

  private checkCpu(cpu: number): void {
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= this.cpus) throw new RangeError(`flush queue: cpu ${cpu} outside 0..${this.cpus - 1}`);
  }
}

function sumStats(st: Float64Array, cpus: number): FlushQueueStats {
  const sum = (f: number): number => {
    let s = 0;
    for (let c = 0; c < cpus; c++) s += st[c * STAT_STRIDE + f];
    return s;
  };
  return { flushes: sum(ST_FLUSHES), flushesByTimer: sum(ST_BY_TIMER), flushesByFull: sum(ST_BY_FULL), entriesFreed: sum(ST_FREED) };
}
