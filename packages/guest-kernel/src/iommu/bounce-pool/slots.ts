/**
 * The slot manager of the bounce pool: `drivers/iommu/io-buffer-manager.c` of
 * David Stevens' series "Add dynamic iommu backed bounce buffers" (v2, Aug
 * 2021), without its fallback tree (`fallback.ts`).
 *
 * - Power-of-2 size classes (default 4 KiB … 512 KiB), `slotsPerClass` slots
 *   each (default 1024). One IOVA range, reserved by the caller in the IOVA
 *   allocator, is carved largest class first, so slot ↔ IOVA is arithmetic
 *   (`io_buffer_slot_to_iova`, `__io_buffer_manager_find_slot`), no lock.
 *   With the defaults the range is 1024 × 255 pages (1024 × (128 + 64 + … +
 *   1) pages, just under 1 GiB). Its base must be aligned to the largest
 *   class, which the size-aligned IOVA allocation gives.
 * - Slot life: untouched → empty → in use → cached (still mapped) → old →
 *   evicting (unmap pending) → empty. The per-class spinlock guards list
 *   operations only; page allocation and copies run outside it.
 * - Cached slots sit on LIFO lists by the READ/WRITE bits of their IOMMU prot
 *   (RO = DMA_TO_DEVICE, WO = DMA_FROM_DEVICE, RW = BIDIRECTIONAL); a hit needs
 *   an exact prot match, so a prot with other bits (IOMMU_PRIV, or a mix of
 *   IOMMU_CACHE and non-cache users) walks its R/W list linearly.
 * - A miss takes an empty slot (then an untouched one) and allocates its
 *   memory now: memory exists only for in-use and cached slots. The caller
 *   maps a miss with the IOMMU (`needsMap`).
 * - When a class has no empty slot, cached slots of another prot are not
 *   reused (the class counts as full: trusted mappings take the normal path,
 *   untrusted ones the fallback tree). With `reuseOtherPermissionSlots` the
 *   head of the first non-empty cache list (RO, WO, RW order) is taken
 *   instead and `needsUnmapFirst` carries the old prot: the caller unmaps the
 *   slot and maps it again with the new prot.
 * - Memory: one physically contiguous block of the class size from the buddy
 *   allocator, charged as `chargeExtraPagesHalf` describes.
 * - Eviction in two steps, in the kernel's order: `evictionPass` takes old
 *   slots out of the cache; the caller sends the IOMMU unmap for each, then
 *   `finishEviction` frees the memory and returns the slot to the empty list,
 *   so a slot never goes back to empty while still mapped. After a failed
 *   unmap the caller does not call `finishEviction`: the slot stays out of
 *   use, as the kernel leaks it.
 * - Only cached slots age; an in-use slot is never evicted. A slot acquired
 *   with DMA_ATTR_PERSISTENT_STREAMING stays cached and mapped through
 *   eviction passes: its owner maps it again and again, and keeping the IOVA
 *   mapped is what makes that cheap. Teardown evicts it like any other.
 * - Eviction timer: armed (now + period) when a slot is released while none
 *   is pending, re-armed after a pass that aged something, as the kernel
 *   queues its delayed work. `nextEvictionNs()` is NEVER_NS when nothing is
 *   cached. Its word is shared by the vCPUs outside the class locks: arming,
 *   the timer check (`evictionDue`) and a pass's start and end wait first in
 *   the lock table's gate (`LockTable.gate`) at the current model time, so
 *   they happen in model-time order across vCPUs (exactly at quantum 0).
 *
 * Costs: `bouncePoolListOpNs` per class-lock list operation and per extra
 * element walked by a linear search or an eviction pass.
 *
 * Its part of the pool's SAB region (C = classes, S = C × slotsPerClass;
 * global slot index g = cls · slotsPerClass + i, class 0 the smallest):
 * | field          | type     | contents | writer |
 * |----------------|----------|----------|--------|
 * | classHeader    | i32[C·8] | per class: 0–2 cache heads RO/WO/RW, 3 empty head, 4 next untouched index, 5 in use, 6 cached | class lock |
 * | slotGpa        | f64[S]   | slot memory gpa, -1 = none | slot owner / class lock |
 * | slotState      | i32[S]   | `SlotState` | class lock |
 * | slotNext       | i32[S]   | list link (global slot index), -1 = end | class lock |
 * | slotPerm       | i32[S]   | IOMMU prot of the slot's mapping | class lock |
 * | slotPersistent | i32[S]   | 1: DMA_ATTR_PERSISTENT_STREAMING mapping, skipped by eviction passes | class lock |
 */

import { type FieldSpec, IOMMU_READ, IOMMU_WRITE, type LockTable, type ModelClock, type Mutex, NEVER_NS, PAGE_SIZE_BYTES, type Region } from '@vmstack/shm';
import {
  addCount,
  addPeak,
  addSmallPeak,
  type BouncePoolCosts,
  C_ALLOC_FAILURES,
  C_EVICTION_PASSES,
  C_EVICTIONS,
  C_EXHAUSTED,
  C_HITS,
  C_MEMORY,
  C_MEMORY_PEAK,
  C_MISSES,
  C_NEXT_EVICTION_NS,
  C_OVERSIZE,
  C_SEARCH_STEPS,
  C_SLOTS_IN_USE,
  C_SLOTS_IN_USE_PEAK,
  C_STEALS,
  chargeExtraPagesHalf,
  counterWords,
  K_REARM,
  orderFor,
  type PageAllocator,
} from './region.js';

export const SlotState = { UNTOUCHED: 0, EMPTY: 1, IN_USE: 2, CACHED: 3, OLD: 4, EVICTING: 5 } as const;
export type SlotStateValue = (typeof SlotState)[keyof typeof SlotState];
const STATE_NAMES = ['untouched', 'empty', 'in use', 'cached', 'old', 'evicting'];

export const DEFAULT_MIN_CLASS_BYTES = 4096;
export const DEFAULT_MAX_CLASS_BYTES = 512 * 1024;
export const DEFAULT_SLOTS_PER_CLASS = 1024;
/** EVICT_PERIOD_MSEC 5000 */
export const DEFAULT_EVICTION_PERIOD_NS = 5_000_000_000;
export const MAX_SLOTS_PER_CLASS = 1 << 16;
export const MAX_CLASSES = 20;

export const BOUNCE_POOL_CLASS_LOCK_PREFIX = 'bounce_pool->class_lock/';
export function bouncePoolClassLockName(classBytes: number, lockSuffix = ''): string {
  return `${BOUNCE_POOL_CLASS_LOCK_PREFIX}${classBytes}${lockSuffix}`;
}

/** The slot manager's share of the pool's options (a BouncePoolHandle fits). */
export interface IoBufferManagerConfig {
  readonly iovaBase: number;
  readonly minClassBytes: number;
  readonly numClasses: number;
  readonly slotsPerClass: number;
  readonly evictionPeriodNs: number;
  readonly reuseOtherPermissionSlots: boolean;
  readonly lockSuffix: string;
}

export interface SlotRef {
  readonly cls: number;
  readonly slot: number;
}

/** What `acquire` hands out (the slot's record: valid until the slot is acquired again). */
export interface BounceSlot extends SlotRef {
  readonly classBytes: number;
  readonly iova: number;
  readonly gpa: number;
  /** the prot this mapping needs (and the slot now carries) */
  readonly perm: number;
  /** the caller must IOMMU-map [iova, iova + classBytes) → gpa with `perm` */
  readonly needsMap: boolean;
  /** the memory was allocated by this acquire (padding rules apply) */
  readonly fresh: boolean;
  /** a cached slot of another prot was taken: unmap it (old prot) before mapping */
  readonly needsUnmapFirst: boolean;
  /** prot of the mapping to remove when `needsUnmapFirst` */
  readonly oldPerm: number;
}

export interface EvictedSlot extends SlotRef {
  readonly iova: number;
  readonly sizeBytes: number;
  readonly perm: number;
  readonly gpa: number;
}

// class header words
const H_CACHE = 0; // 0, 1, 2: RO, WO, RW
const H_EMPTY = 3;
const H_UNTOUCHED = 4;
const H_IN_USE = 5;
const H_CACHED = 6;
const HEADER_WORDS = 8;
const CACHE_LISTS = 3;

const NEVER_BIG = BigInt(NEVER_NS);
/** value of the next-eviction counter while a pass runs */
const EVICTION_RUNNING = -1n;

/**
 * The IOVA bytes of all slots: each class holds `slotsPerClass` slots and
 * class c is 2^c × the smallest, so the classes sum to (2^C − 1) × smallest.
 */
export function slotsIovaSpanBytes(minClassBytes: number, numClasses: number, slotsPerClass: number): number {
  return slotsPerClass * minClassBytes * (2 ** numClasses - 1);
}

/** The slot manager's fields of the pool's region (see the table above). */
export function slotFields(numClasses: number, slotsPerClass: number): FieldSpec[] {
  const s = numClasses * slotsPerClass;
  return [
    { name: 'classHeader', kind: 'i32', count: numClasses * HEADER_WORDS },
    { name: 'slotGpa', kind: 'f64', count: s },
    { name: 'slotState', kind: 'i32', count: s },
    { name: 'slotNext', kind: 'i32', count: s },
    { name: 'slotPerm', kind: 'i32', count: s },
    { name: 'slotPersistent', kind: 'i32', count: s },
  ];
}

/** Initial contents of the slot manager's fields in a new (zeroed) region: every list empty, no slot memory. */
export function io_buffer_manager_init(region: Region, counters: BigInt64Array, numClasses: number): void {
  const h = region.i32('classHeader');
  for (let c = 0; c < numClasses; c++) {
    for (let l = 0; l < CACHE_LISTS; l++) h[c * HEADER_WORDS + H_CACHE + l] = -1;
    h[c * HEADER_WORDS + H_EMPTY] = -1;
  }
  region.f64('slotGpa').fill(-1);
  region.i32('slotNext').fill(-1);
  counters[C_NEXT_EVICTION_NS] = NEVER_BIG;
}

/** `io_buffer_pool_get_cache`: the cache list for a prot's READ/WRITE bits. */
export function cacheListOf(perm: number): number {
  const rw = perm & (IOMMU_READ | IOMMU_WRITE);
  if (rw === IOMMU_READ) return 0;
  if (rw === IOMMU_WRITE) return 1;
  if (rw === 0) throw new RangeError(`IOMMU prot 0x${perm.toString(16)} has neither IOMMU_READ nor IOMMU_WRITE`);
  return 2;
}

/** One vCPU's view of the slots (`struct io_buffer_manager` without the fallback tree). */
export class IoBufferManager {
  private readonly header: Int32Array;
  private readonly slotGpa: Float64Array;
  private readonly slotState: Int32Array;
  private readonly slotNext: Int32Array;
  private readonly slotPerm: Int32Array;
  private readonly slotPersistent: Int32Array;
  protected readonly control: Int32Array;
  /** the counters as 32-bit words (region.ts counterWords) */
  private readonly words: Int32Array;
  private readonly locks: Mutex[];
  private readonly iovaEnd: number;
  private readonly classIovaBase: number[];

  protected constructor(
    private readonly slotConfig: IoBufferManagerConfig,
    region: Region,
    protected readonly counters: BigInt64Array,
    protected readonly lockTable: LockTable,
    private readonly pages: PageAllocator,
    private readonly slotCosts: BouncePoolCosts,
  ) {
    this.control = region.i32('control');
    this.words = counterWords(counters);
    this.header = region.i32('classHeader');
    this.slotGpa = region.f64('slotGpa');
    this.slotState = region.i32('slotState');
    this.slotNext = region.i32('slotNext');
    this.slotPerm = region.i32('slotPerm');
    this.slotPersistent = region.i32('slotPersistent');
    this.locks = [];
    for (let c = 0; c < slotConfig.numClasses; c++) this.locks.push(lockTable.get(bouncePoolClassLockName(this.classBytes(c), slotConfig.lockSuffix)));
    this.classIovaBase = [];
    let base = slotConfig.iovaBase;
    for (let c = slotConfig.numClasses - 1; c >= 0; c--) {
      this.classIovaBase[c] = base;
      base += slotConfig.slotsPerClass * this.classBytes(c);
    }
    this.iovaEnd = base;
  }

  get numClasses(): number {
    return this.slotConfig.numClasses;
  }

  get slotsPerClass(): number {
    return this.slotConfig.slotsPerClass;
  }

  classBytes(cls: number): number {
    return this.slotConfig.minClassBytes * 2 ** cls;
  }

  /** IOVA range [iovaBase, iovaEnd) the pool owns. */
  get iovaRange(): { iovaBase: number; iovaEnd: number } {
    return { iovaBase: this.slotConfig.iovaBase, iovaEnd: this.iovaEnd };
  }

  /** Smallest class holding `sizeBytes` (the series: roundup_pow_of_two(PAGE_ALIGN(size))), or -1 if too large. */
  classFor(sizeBytes: number): number {
    if (!Number.isInteger(sizeBytes) || sizeBytes <= 0) throw new RangeError(`mapping size ${sizeBytes} must be a positive integer`);
    const units = Math.ceil(sizeBytes / this.slotConfig.minClassBytes);
    const cls = units <= 1 ? 0 : 32 - Math.clz32(units - 1);
    return cls < this.slotConfig.numClasses ? cls : -1;
  }

  /** `io_buffer_slot_to_iova` */
  slotToIova(cls: number, slot: number): number {
    this.checkRef(cls, slot);
    return this.classIovaBase[cls] + slot * this.classBytes(cls);
  }

  /**
   * `__io_buffer_manager_find_slot`: the slot holding `iova` (any byte of it),
   * by arithmetic from the end of the range, or null outside the pool.
   */
  iovaToSlot(iova: number): (SlotRef & { offsetBytes: number }) | null {
    if (!(iova >= this.slotConfig.iovaBase && iova < this.iovaEnd)) return null;
    const units = Math.ceil((this.iovaEnd - iova) / this.slotConfig.minClassBytes);
    const cls = 31 - Math.clz32(Math.ceil(units / this.slotConfig.slotsPerClass));
    const bytes = this.classBytes(cls);
    const rel = iova - this.classIovaBase[cls];
    const slot = Math.floor(rel / bytes);
    return { cls, slot, offsetBytes: rel - slot * bytes };
  }

  /**
   * `io_buffer_manager_alloc_slot`: a slot of the smallest class ≥ size for a
   * mapping with IOMMU prot `perm`, or null (class full, oversize, no memory).
   * `persistent` (DMA_ATTR_PERSISTENT_STREAMING): once released, the slot
   * stays cached and mapped through eviction passes.
   */
  acquire(sizeBytes: number, perm: number, clock: ModelClock, attrs: { readonly persistent?: boolean } = {}): BounceSlot | null {
    const list = cacheListOf(perm);
    const cls = this.classFor(sizeBytes);
    if (cls < 0) {
      Atomics.add(this.counters, C_OVERSIZE, 1n);
      return null;
    }
    const n = this.slotConfig.slotsPerClass;
    const h = cls * HEADER_WORDS;
    const hdr = this.header;
    const next = this.slotNext;
    const lock = this.locks[cls];
    let g = -1;
    let kind: 'hit' | 'empty' | 'steal' = 'hit';
    let oldPerm = 0;
    lock.lock(clock);
    try {
      clock.charge(this.slotCosts.bouncePoolListOpNs);
      let prev = -1;
      let steps = 0;
      for (let cur = hdr[h + H_CACHE + list]; cur !== -1; prev = cur, cur = next[cur]) {
        if (this.slotPerm[cur] === perm) {
          if (prev === -1) hdr[h + H_CACHE + list] = next[cur];
          else next[prev] = next[cur];
          g = cur;
          break;
        }
        steps++;
      }
      if (steps > 0) {
        clock.charge(steps * this.slotCosts.bouncePoolListOpNs);
        Atomics.add(this.counters, C_SEARCH_STEPS, BigInt(steps));
      }
      if (g >= 0) {
        hdr[h + H_CACHED]--;
      } else if (hdr[h + H_EMPTY] !== -1) {
        kind = 'empty';
        g = hdr[h + H_EMPTY];
        hdr[h + H_EMPTY] = next[g];
      } else if (hdr[h + H_UNTOUCHED] < n) {
        kind = 'empty';
        g = cls * n + hdr[h + H_UNTOUCHED]++;
      } else if (this.slotConfig.reuseOtherPermissionSlots) {
        for (let l = 0; l < CACHE_LISTS && g < 0; l++) {
          const head = hdr[h + H_CACHE + l];
          if (head !== -1) {
            g = head;
            hdr[h + H_CACHE + l] = next[head];
          }
        }
        if (g >= 0) {
          kind = 'steal';
          oldPerm = this.slotPerm[g];
          hdr[h + H_CACHED]--;
        }
      }
      if (g < 0) {
        Atomics.add(this.counters, C_EXHAUSTED, 1n);
        return null;
      }
      next[g] = -1;
      this.slotState[g] = SlotState.IN_USE;
      this.slotPerm[g] = perm;
      this.slotPersistent[g] = attrs.persistent ? 1 : 0;
      hdr[h + H_IN_USE]++;
    } finally {
      lock.unlock(clock);
    }
    const classBytes = this.classBytes(cls);
    let fresh = false;
    if (this.slotGpa[g] < 0) {
      // io_buffer_manager_alloc_pages, outside the class lock
      const order = orderFor(classBytes);
      const gpa = this.pages.alloc_pages(order, clock);
      if (gpa < 0) {
        this.pushEmpty(cls, g, clock);
        Atomics.add(this.counters, C_ALLOC_FAILURES, 1n);
        return null;
      }
      chargeExtraPagesHalf(clock, this.slotCosts, classBytes / PAGE_SIZE_BYTES);
      this.slotGpa[g] = gpa;
      fresh = true;
      addPeak(this.counters, C_MEMORY, C_MEMORY_PEAK, BigInt(classBytes));
    }
    addCount(this.words, kind === 'hit' ? C_HITS : C_MISSES, 1);
    if (kind === 'steal') Atomics.add(this.counters, C_STEALS, 1n);
    addSmallPeak(this.words, C_SLOTS_IN_USE, C_SLOTS_IN_USE_PEAK, 1);
    const slot = g - cls * n;
    const iova = this.classIovaBase[cls] + slot * classBytes;
    let r = this.slotRecords[g];
    if (r === undefined) {
      r = { cls, slot, classBytes, iova, gpa: 0, perm: 0, needsMap: false, fresh: false, needsUnmapFirst: false, oldPerm: 0 };
      this.slotRecords[g] = r;
    }
    r.gpa = this.slotGpa[g];
    r.perm = perm;
    r.needsMap = kind !== 'hit';
    r.fresh = fresh;
    r.needsUnmapFirst = kind === 'steal';
    r.oldPerm = oldPerm;
    return r;
  }

  /** what `acquire` hands out for each slot: one record per slot, overwritten when the slot is acquired again */
  private readonly slotRecords: { -readonly [K in keyof BounceSlot]: BounceSlot[K] }[] = [];

  /**
   * `io_buffer_manager_release_buffer(inited = true)`: the mapping is done (its
   * bytes copied out); the slot goes to the head of its prot's cache, still
   * mapped.
   */
  release(ref: SlotRef, clock: ModelClock): void {
    const g = this.globalOf(ref);
    const h = ref.cls * HEADER_WORDS;
    const lock = this.locks[ref.cls];
    lock.lock(clock);
    try {
      clock.charge(this.slotCosts.bouncePoolListOpNs);
      this.expectState(g, SlotState.IN_USE, 'release');
      const list = cacheListOf(this.slotPerm[g]);
      this.slotNext[g] = this.header[h + H_CACHE + list];
      this.header[h + H_CACHE + list] = g;
      this.slotState[g] = SlotState.CACHED;
      this.header[h + H_IN_USE]--;
      this.header[h + H_CACHED]++;
    } finally {
      lock.unlock(clock);
    }
    addSmallPeak(this.words, C_SLOTS_IN_USE, -1, -1);
    this.armEviction(clock);
  }

  /**
   * `io_buffer_manager_release_buffer(inited = false)`: the caller could not
   * map the slot (or copy into it); its memory is freed and it goes back to
   * the empty list. Also for a stolen slot whose remap failed.
   */
  abortAcquire(ref: SlotRef, clock: ModelClock): void {
    const g = this.globalOf(ref);
    if (this.slotState[g] !== SlotState.IN_USE) throw new Error(`abortAcquire: slot ${ref.cls}/${ref.slot} is ${STATE_NAMES[this.slotState[g]]}, not in use`);
    this.freeSlotMemory(ref.cls, g, clock);
    this.pushEmpty(ref.cls, g, clock);
    addSmallPeak(this.words, C_SLOTS_IN_USE, -1, -1);
  }

  /**
   * `__io_buffer_manager_evict`: one pass over every class and cache list.
   * Cached slots become old; slots that were already old (idle for a whole
   * period) leave the cache and are returned: send the IOMMU unmap for each,
   * then call `finishEviction`. `teardown` evicts every cached slot
   * (`io_buffer_manager_destroy`). Another pass already running: returns [].
   */
  evictionPass(nowNs: number, clock: ModelClock, teardown = false): EvictedSlot[] {
    this.lockTable.gate(clock);
    if (Atomics.exchange(this.counters, C_NEXT_EVICTION_NS, EVICTION_RUNNING) === EVICTION_RUNNING) return [];
    const out: EvictedSlot[] = [];
    let requeue = false;
    const next = this.slotNext;
    const state = this.slotState;
    for (let cls = 0; cls < this.slotConfig.numClasses; cls++) {
      const h = cls * HEADER_WORDS;
      const lock = this.locks[cls];
      lock.lock(clock);
      try {
        clock.charge(this.slotCosts.bouncePoolListOpNs);
        let walked = 0;
        for (let l = 0; l < CACHE_LISTS; l++) {
          let prev = -1;
          let cur = this.header[h + H_CACHE + l];
          if (!teardown) {
            while (cur !== -1 && state[cur] !== SlotState.OLD) {
              state[cur] = SlotState.OLD;
              requeue = true;
              walked++;
              prev = cur;
              cur = next[cur];
            }
          }
          if (prev === -1) this.header[h + H_CACHE + l] = -1;
          else next[prev] = -1;
          // persistent slots stay (mapped, in the cache) unless the pool is torn down
          const keep: number[] = [];
          for (let nxt = -1; cur !== -1; cur = nxt) {
            nxt = next[cur];
            walked++;
            if (!teardown && this.slotPersistent[cur] === 1) {
              keep.push(cur);
              continue;
            }
            state[cur] = SlotState.EVICTING;
            this.header[h + H_CACHED]--;
            const slot = cur - cls * this.slotConfig.slotsPerClass;
            out.push({
              cls,
              slot,
              iova: this.classIovaBase[cls] + slot * this.classBytes(cls),
              sizeBytes: this.classBytes(cls),
              perm: this.slotPerm[cur],
              gpa: this.slotGpa[cur],
            });
          }
          let tail = prev;
          for (const k of keep) {
            if (tail === -1) this.header[h + H_CACHE + l] = k;
            else next[tail] = k;
            next[k] = -1;
            tail = k;
          }
        }
        if (walked > 0) clock.charge(walked * this.slotCosts.bouncePoolListOpNs);
      } finally {
        lock.unlock(clock);
      }
    }
    for (const e of out) this.slotNext[this.globalOf(e)] = -1;
    this.lockTable.gate(clock);
    Atomics.add(this.counters, C_EVICTION_PASSES, 1n);
    Atomics.add(this.counters, C_EVICTIONS, BigInt(out.length));
    const again = BigInt(Math.floor(nowNs + this.slotConfig.evictionPeriodNs));
    Atomics.store(this.counters, C_NEXT_EVICTION_NS, requeue && !teardown ? again : NEVER_BIG);
    if (Atomics.exchange(this.control, K_REARM, 0) === 1) Atomics.compareExchange(this.counters, C_NEXT_EVICTION_NS, NEVER_BIG, again);
    return out;
  }

  /** After the IOMMU unmap of an evicted slot: free its memory, make it empty. */
  finishEviction(e: SlotRef, clock: ModelClock): void {
    const g = this.globalOf(e);
    if (this.slotState[g] !== SlotState.EVICTING) throw new Error(`finishEviction: slot ${e.cls}/${e.slot} is ${STATE_NAMES[this.slotState[g]]}, not evicting`);
    this.freeSlotMemory(e.cls, g, clock);
    this.pushEmpty(e.cls, g, clock);
  }

  /**
   * The timer check of a vCPU: is the eviction pass due at the clock's model
   * time? Asked in the lock table's gate, as the pass's timer word is shared.
   */
  evictionDue(clock: ModelClock): boolean {
    this.lockTable.gate(clock);
    return this.nextEvictionNs() <= clock.nowNs();
  }

  /** Model time of the next eviction pass, NEVER_NS if none is pending. */
  nextEvictionNs(): number {
    const v = Atomics.load(this.counters, C_NEXT_EVICTION_NS);
    return v === EVICTION_RUNNING ? NEVER_NS : Number(v);
  }

  /** State of one slot (diagnostics and tests). */
  slotInfo(cls: number, slot: number): { state: SlotStateValue; stateName: string; perm: number; gpa: number } {
    this.checkRef(cls, slot);
    const g = cls * this.slotConfig.slotsPerClass + slot;
    const state = this.slotState[g] as SlotStateValue;
    return { state, stateName: STATE_NAMES[state], perm: this.slotPerm[g], gpa: this.slotGpa[g] };
  }

  /** Per-class list lengths (takes each class lock; diagnostics and tests). */
  classCounts(cls: number): { inUse: number; cached: number; untouched: number; empty: number } {
    const h = cls * HEADER_WORDS;
    const lock = this.locks[cls];
    lock.lock();
    try {
      let empty = 0;
      for (let g = this.header[h + H_EMPTY]; g !== -1; g = this.slotNext[g]) empty++;
      return {
        inUse: this.header[h + H_IN_USE],
        cached: this.header[h + H_CACHED],
        untouched: this.slotConfig.slotsPerClass - this.header[h + H_UNTOUCHED],
        empty,
      };
    } finally {
      lock.unlock();
    }
  }

  /** Cached slots over all classes (read without the class locks). */
  protected slotsCached(): number {
    let cached = 0;
    for (let cls = 0; cls < this.slotConfig.numClasses; cls++) cached += Atomics.load(this.header, cls * HEADER_WORDS + H_CACHED);
    return cached;
  }

  private armEviction(clock: ModelClock): void {
    const c = this.counters;
    // a pass pending at a later time stays pending until then (only a timer check at or after
    // that time claims it): nothing to arm, and nothing to wait for in the gate
    const pending = Atomics.load(c, C_NEXT_EVICTION_NS);
    if (pending !== NEVER_BIG && pending !== EVICTION_RUNNING && pending > BigInt(clock.nowNs())) return;
    this.lockTable.gate(clock);
    const at = BigInt(Math.floor(clock.nowNs() + this.slotConfig.evictionPeriodNs));
    const v = Atomics.load(c, C_NEXT_EVICTION_NS);
    if (v === NEVER_BIG) {
      Atomics.compareExchange(c, C_NEXT_EVICTION_NS, NEVER_BIG, at);
    } else if (v === EVICTION_RUNNING) {
      // the running pass may already have passed this class: ask it to re-arm,
      // then re-check in case it finished in between (both sides seq-cst)
      Atomics.store(this.control, K_REARM, 1);
      Atomics.compareExchange(c, C_NEXT_EVICTION_NS, NEVER_BIG, at);
    }
  }

  private freeSlotMemory(cls: number, g: number, clock: ModelClock): void {
    const gpa = this.slotGpa[g];
    if (gpa < 0) return;
    const bytes = this.classBytes(cls);
    this.slotGpa[g] = -1;
    this.pages.free_pages(gpa, orderFor(bytes), clock);
    chargeExtraPagesHalf(clock, this.slotCosts, bytes / PAGE_SIZE_BYTES);
    Atomics.sub(this.counters, C_MEMORY, BigInt(bytes));
  }

  private pushEmpty(cls: number, g: number, clock: ModelClock): void {
    const h = cls * HEADER_WORDS;
    const lock = this.locks[cls];
    lock.lock(clock);
    try {
      clock.charge(this.slotCosts.bouncePoolListOpNs);
      if (this.slotState[g] === SlotState.IN_USE) this.header[h + H_IN_USE]--;
      this.slotState[g] = SlotState.EMPTY;
      this.slotNext[g] = this.header[h + H_EMPTY];
      this.header[h + H_EMPTY] = g;
    } finally {
      lock.unlock(clock);
    }
  }

  private expectState(g: number, want: SlotStateValue, op: string): void {
    const s = this.slotState[g];
    if (s !== want) {
      const cls = Math.floor(g / this.slotConfig.slotsPerClass);
      throw new Error(`${op}: slot ${cls}/${g - cls * this.slotConfig.slotsPerClass} is ${STATE_NAMES[s]}, not ${STATE_NAMES[want]}`);
    }
  }

  private checkRef(cls: number, slot: number): void {
    if (
      !Number.isInteger(cls) ||
      cls < 0 ||
      cls >= this.slotConfig.numClasses ||
      !Number.isInteger(slot) ||
      slot < 0 ||
      slot >= this.slotConfig.slotsPerClass
    ) {
      throw new RangeError(`slot ${cls}/${slot} outside ${this.slotConfig.numClasses} classes × ${this.slotConfig.slotsPerClass} slots`);
    }
  }

  private globalOf(ref: SlotRef): number {
    this.checkRef(ref.cls, ref.slot);
    return ref.cls * this.slotConfig.slotsPerClass + ref.slot;
  }
}
