/**
 * The fallback tree of the bounce pool: the `fallback_buffers` rbtree under
 * `fallback_lock` of `drivers/iommu/io-buffer-manager.c` in David Stevens'
 * series "Add dynamic iommu backed bounce buffers" (v2, Aug 2021).
 *
 * Single-use bounce buffers for mappings that must bounce (untrusted devices)
 * when the slots cannot serve them: a full class, or a size above the largest
 * class. Memory comes from the page allocator per mapping and is freed at
 * unmap; the IOVA comes from the caller's normal IOVA allocator, so the tree
 * is keyed by IOVA range to find the buffer again at sync and unmap time.
 * Modelled as an array sorted by IOVA in the pool's SAB with binary search
 * (the same lookups as the rbtree), holding at most `fallbackCapacity`
 * entries. The bounce copies (`copy.ts`) serve fallback buffers too: pass
 * `{ gpa, sizeBytes: mapBytes, fresh: true }`.
 *
 * Costs: `iovaRbtreeOpNs` for each insert / lookup / erase (lock + kzalloc +
 * rb walk, the same shape as an IOVA rbtree operation); buffer memory as
 * `chargeExtraPagesHalf` describes.
 *
 * Its part of the pool's SAB region (F = fallbackCapacity; the entry count
 * is control word `K_FALLBACK_COUNT`):
 * | field    | type     | contents | writer |
 * |----------|----------|----------|--------|
 * | fallback | f64[F·5] | sorted by IOVA: iova, sizeBytes, gpa, order, prot | fallback_lock |
 */

import { type FieldSpec, type ModelClock, type Mutex, PAGE_SIZE_BYTES } from '@vmstack/shm';
import {
  addPeak,
  type BouncePoolCosts,
  C_FALLBACK_FAILURES,
  C_FALLBACK_IN_USE,
  C_FALLBACK_MEMORY,
  C_FALLBACKS,
  C_MEMORY,
  C_MEMORY_PEAK,
  chargeExtraPagesHalf,
  K_FALLBACK_COUNT,
  MAX_ORDER,
  orderFor,
  type PageAllocator,
} from './region.js';
import { cacheListOf } from './slots.js';

export const DEFAULT_FALLBACK_CAPACITY = 4096;
export const MAX_FALLBACK_CAPACITY = 1 << 16;
export const BOUNCE_POOL_FALLBACK_LOCK = 'bounce_pool->fallback_lock';

export interface FallbackBuffer {
  readonly iova: number;
  readonly sizeBytes: number;
  /** PAGE_ALIGN(sizeBytes): what the caller maps at `iova` (and what padding covers) */
  readonly mapBytes: number;
  readonly gpa: number;
  /** bytes actually held: the buddy block */
  readonly allocBytes: number;
  readonly perm: number;
}

// fallback entry fields
const FB_IOVA = 0;
const FB_SIZE = 1;
const FB_GPA = 2;
const FB_ORDER = 3;
const FB_PERM = 4;
const FB_FIELDS = 5;

/** The fallback tree's field of the pool's region (see the table above). */
export function fallbackFields(capacity: number): FieldSpec[] {
  return [{ name: 'fallback', kind: 'f64', count: capacity * FB_FIELDS }];
}

export class FallbackTree {
  /** @internal built by BouncePool */
  constructor(
    private readonly control: Int32Array,
    private readonly entries: Float64Array,
    private readonly counters: BigInt64Array,
    private readonly lock: Mutex,
    private readonly pages: PageAllocator,
    private readonly costs: BouncePoolCosts,
    readonly capacity: number,
  ) {}

  /** Entries in the tree now. */
  get size(): number {
    return Atomics.load(this.control, K_FALLBACK_COUNT);
  }

  /**
   * `io_buffer_manager_alloc_buffer`'s fallback: a buffer for the mapping at
   * [iova, iova + sizeBytes). Null if no memory or the tree is full. Throws
   * on an IOVA collision (the kernel's pr_crit: a bug in the caller).
   */
  insert(iova: number, sizeBytes: number, perm: number, clock: ModelClock): FallbackBuffer | null {
    cacheListOf(perm); // a prot with neither READ nor WRITE is a caller bug, as for a slot
    if (!Number.isInteger(iova) || iova < 0 || !Number.isInteger(sizeBytes) || sizeBytes <= 0)
      throw new RangeError(`fallback mapping [${iova}, +${sizeBytes}) is not valid`);
    const order = orderFor(sizeBytes);
    if (order > MAX_ORDER) {
      Atomics.add(this.counters, C_FALLBACK_FAILURES, 1n);
      return null;
    }
    const gpa = this.pages.alloc_pages(order, clock);
    if (gpa < 0) {
      Atomics.add(this.counters, C_FALLBACK_FAILURES, 1n);
      return null;
    }
    const pages = Math.ceil(sizeBytes / PAGE_SIZE_BYTES);
    chargeExtraPagesHalf(clock, this.costs, pages);
    const allocBytes = PAGE_SIZE_BYTES << order;
    const e = this.entries;
    let inserted = false;
    let collision = '';
    this.lock.lock(clock);
    try {
      clock.charge(this.costs.iovaRbtreeOpNs);
      const n = this.control[K_FALLBACK_COUNT];
      if (n < this.capacity) {
        const at = this.upperBound(iova, n);
        const before = at - 1;
        if (before >= 0 && e[before * FB_FIELDS + FB_IOVA] + e[before * FB_FIELDS + FB_SIZE] > iova)
          collision = `[${e[before * FB_FIELDS + FB_IOVA]}, +${e[before * FB_FIELDS + FB_SIZE]})`;
        else if (at < n && e[at * FB_FIELDS + FB_IOVA] < iova + sizeBytes) collision = `[${e[at * FB_FIELDS + FB_IOVA]}, +${e[at * FB_FIELDS + FB_SIZE]})`;
        else {
          e.copyWithin((at + 1) * FB_FIELDS, at * FB_FIELDS, n * FB_FIELDS);
          const b = at * FB_FIELDS;
          e[b + FB_IOVA] = iova;
          e[b + FB_SIZE] = sizeBytes;
          e[b + FB_GPA] = gpa;
          e[b + FB_ORDER] = order;
          e[b + FB_PERM] = perm;
          Atomics.store(this.control, K_FALLBACK_COUNT, n + 1);
          inserted = true;
        }
      }
    } finally {
      this.lock.unlock(clock);
    }
    if (!inserted) {
      this.pages.free_pages(gpa, order, clock);
      chargeExtraPagesHalf(clock, this.costs, pages);
      if (collision) throw new RangeError(`fallback IOVA collision: new [${iova}, +${sizeBytes}) overlaps ${collision}`);
      Atomics.add(this.counters, C_FALLBACK_FAILURES, 1n);
      return null;
    }
    Atomics.add(this.counters, C_FALLBACKS, 1n);
    Atomics.add(this.counters, C_FALLBACK_IN_USE, 1n);
    Atomics.add(this.counters, C_FALLBACK_MEMORY, BigInt(allocBytes));
    addPeak(this.counters, C_MEMORY, C_MEMORY_PEAK, BigInt(allocBytes));
    return { iova, sizeBytes, mapBytes: pages * PAGE_SIZE_BYTES, gpa, allocBytes, perm };
  }

  /** `find_fallback_node`: the buffer whose IOVA range holds `iova`, or null. */
  lookup(iova: number, clock: ModelClock): FallbackBuffer | null {
    this.lock.lock(clock);
    try {
      clock.charge(this.costs.iovaRbtreeOpNs);
      const i = this.find(iova);
      return i < 0 ? null : this.entryAt(i);
    } finally {
      this.lock.unlock(clock);
    }
  }

  /**
   * Erase the buffer holding `iova` and free its memory (unmap time: copy the
   * bytes out and send the IOMMU unmap first). Null if there is none.
   */
  remove(iova: number, clock: ModelClock): FallbackBuffer | null {
    let found: FallbackBuffer | null = null;
    this.lock.lock(clock);
    try {
      clock.charge(this.costs.iovaRbtreeOpNs);
      const i = this.find(iova);
      if (i >= 0) {
        found = this.entryAt(i);
        const n = this.control[K_FALLBACK_COUNT];
        this.entries.copyWithin(i * FB_FIELDS, (i + 1) * FB_FIELDS, n * FB_FIELDS);
        Atomics.store(this.control, K_FALLBACK_COUNT, n - 1);
      }
    } finally {
      this.lock.unlock(clock);
    }
    if (found) {
      this.pages.free_pages(found.gpa, orderFor(found.allocBytes), clock);
      chargeExtraPagesHalf(clock, this.costs, Math.ceil(found.sizeBytes / PAGE_SIZE_BYTES));
      Atomics.sub(this.counters, C_FALLBACK_IN_USE, 1n);
      Atomics.sub(this.counters, C_FALLBACK_MEMORY, BigInt(found.allocBytes));
      Atomics.sub(this.counters, C_MEMORY, BigInt(found.allocBytes));
    }
    return found;
  }

  /** Index of the first entry whose IOVA is above `iova` (among the first n). */
  private upperBound(iova: number, n: number): number {
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.entries[mid * FB_FIELDS + FB_IOVA] <= iova) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private find(iova: number): number {
    const i = this.upperBound(iova, this.control[K_FALLBACK_COUNT]) - 1;
    if (i < 0) return -1;
    const b = i * FB_FIELDS;
    return iova < this.entries[b + FB_IOVA] + this.entries[b + FB_SIZE] ? i : -1;
  }

  private entryAt(i: number): FallbackBuffer {
    const b = i * FB_FIELDS;
    const e = this.entries;
    const sizeBytes = e[b + FB_SIZE];
    return {
      iova: e[b + FB_IOVA],
      sizeBytes,
      mapBytes: Math.ceil(sizeBytes / PAGE_SIZE_BYTES) * PAGE_SIZE_BYTES,
      gpa: e[b + FB_GPA],
      allocBytes: PAGE_SIZE_BYTES << e[b + FB_ORDER],
      perm: e[b + FB_PERM],
    };
  }
}
