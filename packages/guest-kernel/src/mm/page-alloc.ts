/**
 * The guest's physical page allocator: a binary buddy allocator over guest
 * RAM, after Linux `mm/page_alloc.c` (`__rmqueue_smallest` + `expand` to
 * allocate, `__free_one_page` to free and coalesce). One zone covers
 * [heapStartBytes, ramBytes) in 4 KiB frames; blocks of order 0..MAX_ORDER
 * (4 KiB … 4 MiB) are naturally aligned in guest-physical address space, so an
 * order-7 block is a 512 KiB physically contiguous, 512 KiB aligned bounce
 * buffer. The per-CPU page lists (pcp) of Linux are not modelled: every
 * allocation takes `zone->lock`.
 *
 * All vCPUs share the zone: its state lives in one SharedArrayBuffer
 * (`PageAllocator.allocate` creates it, `PageAllocator.attach` joins it) and is
 * changed only under the `zone->lock` spinlock from the run's LockTable.
 * Guest RAM itself is not touched: the allocator deals in guest-physical
 * addresses (gpa).
 *
 * Cost: the profile's `guestPageAllocNs` is the price of one alloc + free
 * pair; half is charged by `alloc_pages`, half by `free_pages`, whatever the
 * order (the buddy walk is a few list operations per order).
 *
 * Zone layout (n = frames in the zone, O = MAX_ORDER + 1; frame index
 * i = pfn - basePfn):
 * | field      | type      | contents | writer |
 * |------------|-----------|----------|--------|
 * | ctl        | i32[16]   | 0 basePfn, 1 endPfn (exclusive), 2 freePages | allocate; 2 under zone->lock |
 * | freeHead   | i32[O]    | first frame index of each order's free list, -1 = empty | zone->lock |
 * | nrFree     | i32[O]    | blocks on each order's free list (`free_area[o].nr_free`) | zone->lock |
 * | stats      | f64[8]    | 0 allocCalls, 1 freeCalls, 2 allocFailures, 3 peakUsedPages | zone->lock |
 * | next       | i32[n]    | free-list link of a free block's head frame, -1 = end | zone->lock |
 * | prev       | i32[n]    | free-list back link, -1 = list head | zone->lock |
 * | freeOrder  | u8[n]     | order of the free block headed here (`PageBuddy` + `buddy_order`), 255 = none | zone->lock |
 * | allocOrder | u8[n]     | order of the allocated block headed here, 255 = none (catches double and mis-sized frees) | zone->lock |
 *
 * User buffers (`allocUserBuffer`): fio's I/O buffer as the guest sees it.
 * 'none' takes order-0 pages and shuffles them with the caller's seeded PRNG
 * so that no page is followed by its physical neighbour, as a process's pages
 * are after some uptime; 'huge' backs the buffer with 2 MiB aligned order-9
 * blocks (transparent huge pages).
 */

import { defineLayout, InputError, type LockKind, type LockTable, type ModelClock, type Mutex, mulberry32Float, PAGE_SIZE_BYTES, Region } from '@vmstack/shm';

/** Highest supported order (Linux 5.x: MAX_ORDER 11, orders 0..10). */
export const MAX_ORDER = 10;
/** Order of a 2 MiB huge page. */
export const HUGE_PAGE_ORDER = 9;
export const HUGE_PAGE_SIZE_BYTES = PAGE_SIZE_BYTES << HUGE_PAGE_ORDER;
export const PAGE_ALLOC_ZONE_LOCK = 'zone->lock';

const NONE = 255;
const C_BASE_PFN = 0;
const C_END_PFN = 1;
const C_FREE_PAGES = 2;
const S_ALLOC_CALLS = 0;
const S_FREE_CALLS = 1;
const S_ALLOC_FAILURES = 2;
const S_PEAK_USED_PAGES = 3;

export interface PageAllocatorOptions {
  /** size of guest RAM, a multiple of 4 KiB */
  readonly ramBytes: number;
  /** first byte the allocator may hand out (below it: kernel image, rings, …), a multiple of 4 KiB */
  readonly heapStartBytes: number;
  /** appended to the lock name, for several guests in one lock table */
  readonly lockSuffix?: string;
}

export interface PageAllocatorHandle {
  readonly sab: SharedArrayBuffer;
  readonly frames: number;
  readonly lockSuffix: string;
}

export interface PageAllocCosts {
  readonly guestPageAllocNs: number;
}

export interface PageAllocStats {
  readonly totalBytes: number;
  readonly freeBytes: number;
  readonly usedBytes: number;
  readonly peakUsedBytes: number;
  readonly allocCalls: number;
  readonly freeCalls: number;
  readonly allocFailures: number;
  /** free blocks per order, `/proc/buddyinfo` style */
  readonly nrFree: readonly number[];
}

export type UserBufferContiguity = 'none' | 'huge';

/** A user buffer's guest-physical backing. */
export interface UserBuffer {
  readonly sizeBytes: number;
  readonly contiguity: UserBufferContiguity;
  /** gpa of each 4 KiB page of the buffer, in virtual-address order */
  readonly pageGpas: readonly number[];
  /** the allocator blocks backing it, for `freeUserBuffer` */
  readonly blocks: readonly { readonly gpa: number; readonly order: number }[];
}

function zoneLayout(frames: number) {
  return defineLayout('zone', [
    { name: 'ctl', kind: 'i32', count: 16 },
    { name: 'freeHead', kind: 'i32', count: MAX_ORDER + 1 },
    { name: 'nrFree', kind: 'i32', count: MAX_ORDER + 1 },
    { name: 'stats', kind: 'f64', count: 8 },
    { name: 'next', kind: 'i32', count: frames },
    { name: 'prev', kind: 'i32', count: frames },
    { name: 'freeOrder', kind: 'u8', count: frames },
    { name: 'allocOrder', kind: 'u8', count: frames },
  ]);
}

/** mulberry32 (shm/prng.ts) as floats in [0, 1): what `allocUserBuffer` shuffles pages with. */
export const mulberry32 = mulberry32Float;

export class PageAllocator {
  private readonly ctl: Int32Array;
  private readonly freeHead: Int32Array;
  private readonly nrFree: Int32Array;
  private readonly stats: Float64Array;
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  private readonly freeOrder: Uint8Array;
  private readonly allocOrder: Uint8Array;
  private readonly basePfn: number;
  private readonly endPfn: number;
  private readonly lock: Mutex | undefined;

  /** Lock specs for the run's LockTable. */
  static lockSpecs(handle: PageAllocatorHandle): { name: string; kind: LockKind }[] {
    return [{ name: PAGE_ALLOC_ZONE_LOCK + handle.lockSuffix, kind: 'spinlock' }];
  }

  static allocate(opts: PageAllocatorOptions): PageAllocatorHandle {
    const { ramBytes, heapStartBytes } = opts;
    if (!Number.isSafeInteger(ramBytes) || ramBytes <= 0 || ramBytes % PAGE_SIZE_BYTES !== 0) {
      throw new InputError('ramBytes', ramBytes, 'a positive multiple of 4096 bytes');
    }
    if (!Number.isSafeInteger(heapStartBytes) || heapStartBytes < 0 || heapStartBytes >= ramBytes || heapStartBytes % PAGE_SIZE_BYTES !== 0) {
      throw new InputError('heapStartBytes', heapStartBytes, `a multiple of 4096 bytes below ramBytes (${ramBytes})`);
    }
    const basePfn = heapStartBytes / PAGE_SIZE_BYTES;
    const endPfn = ramBytes / PAGE_SIZE_BYTES;
    if (endPfn > 0x7fffffff) throw new InputError('ramBytes', ramBytes, 'at most 8 TiB');
    const frames = endPfn - basePfn;
    const region = Region.allocate(zoneLayout(frames));
    const handle: PageAllocatorHandle = { sab: region.sab, frames, lockSuffix: opts.lockSuffix ?? '' };
    const ctl = region.i32('ctl');
    ctl[C_BASE_PFN] = basePfn;
    ctl[C_END_PFN] = endPfn;
    region.i32('freeHead').fill(-1);
    region.u8('freeOrder').fill(NONE);
    region.u8('allocOrder').fill(NONE);
    // memblock_free_all: hand the range to the buddy allocator in the largest aligned blocks
    const pa = new PageAllocator(handle, undefined);
    for (let pfn = basePfn; pfn < endPfn; ) {
      let order = MAX_ORDER;
      while (order > 0 && (pfn % (1 << order) !== 0 || pfn + (1 << order) > endPfn)) order--;
      pa.addToFreeList(pfn, order);
      pfn += 1 << order;
    }
    Atomics.store(ctl, C_FREE_PAGES, frames);
    return handle;
  }

  /** Join the zone from a vCPU (or any thread). `lockTable` must hold `PageAllocator.lockSpecs(handle)`. */
  static attach(handle: PageAllocatorHandle, cpu: number, lockTable: LockTable, costs: PageAllocCosts): PageAllocator {
    return new PageAllocator(handle, lockTable.get(PAGE_ALLOC_ZONE_LOCK + handle.lockSuffix), costs, cpu);
  }

  private constructor(
    readonly handle: PageAllocatorHandle,
    lock: Mutex | undefined,
    private readonly costs: PageAllocCosts = { guestPageAllocNs: 0 },
    readonly cpu = -1,
  ) {
    const r = Region.attach(zoneLayout(handle.frames), handle.sab);
    this.ctl = r.i32('ctl');
    this.freeHead = r.i32('freeHead');
    this.nrFree = r.i32('nrFree');
    this.stats = r.f64('stats');
    this.next = r.i32('next');
    this.prev = r.i32('prev');
    this.freeOrder = r.u8('freeOrder');
    this.allocOrder = r.u8('allocOrder');
    this.basePfn = this.ctl[C_BASE_PFN];
    this.endPfn = this.ctl[C_END_PFN];
    this.lock = lock;
  }

  /**
   * Allocate 2^order contiguous frames aligned to their size.
   * @returns the block's gpa, or -1 (ENOMEM)
   */
  alloc_pages(order: number, clock?: ModelClock): number {
    checkOrder(order);
    const lock = this.lock!;
    lock.lock(clock);
    try {
      clock?.charge(this.costs.guestPageAllocNs / 2);
      this.stats[S_ALLOC_CALLS]++;
      const pfn = this.rmqueueSmallest(order);
      if (pfn < 0) {
        this.stats[S_ALLOC_FAILURES]++;
        return -1;
      }
      this.allocOrder[pfn - this.basePfn] = order;
      const free = this.ctl[C_FREE_PAGES] - (1 << order);
      Atomics.store(this.ctl, C_FREE_PAGES, free);
      const used = this.endPfn - this.basePfn - free;
      if (used > this.stats[S_PEAK_USED_PAGES]) this.stats[S_PEAK_USED_PAGES] = used;
      return pfn * PAGE_SIZE_BYTES;
    } finally {
      lock.unlock(clock);
    }
  }

  /** Free a block returned by `alloc_pages(order)`; coalesces with free buddies. */
  free_pages(gpa: number, order: number, clock?: ModelClock): void {
    checkOrder(order);
    const pfn = gpa / PAGE_SIZE_BYTES;
    if (!Number.isInteger(pfn) || pfn < this.basePfn || pfn >= this.endPfn) throw new RangeError(`free_pages: gpa ${gpa} is not a page of the zone`);
    const lock = this.lock!;
    lock.lock(clock);
    try {
      const i = pfn - this.basePfn;
      const had = this.allocOrder[i];
      if (had !== order) {
        throw new RangeError(
          had === NONE
            ? `free_pages: gpa 0x${gpa.toString(16)} is not allocated (double free?)`
            : `free_pages: gpa 0x${gpa.toString(16)} was allocated with order ${had}, freed with order ${order}`,
        );
      }
      clock?.charge(this.costs.guestPageAllocNs / 2);
      this.stats[S_FREE_CALLS]++;
      this.allocOrder[i] = NONE;
      this.freeOneBlock(pfn, order);
      Atomics.store(this.ctl, C_FREE_PAGES, this.ctl[C_FREE_PAGES] + (1 << order));
    } finally {
      lock.unlock(clock);
    }
  }

  freeBytes(): number {
    return Atomics.load(this.ctl, C_FREE_PAGES) * PAGE_SIZE_BYTES;
  }

  usedBytes(): number {
    return this.totalBytes() - this.freeBytes();
  }

  totalBytes(): number {
    return (this.endPfn - this.basePfn) * PAGE_SIZE_BYTES;
  }

  /** Counters (racy snapshot unless the caller knows the zone is quiet). */
  statistics(): PageAllocStats {
    return {
      totalBytes: this.totalBytes(),
      freeBytes: this.freeBytes(),
      usedBytes: this.usedBytes(),
      peakUsedBytes: this.stats[S_PEAK_USED_PAGES] * PAGE_SIZE_BYTES,
      allocCalls: this.stats[S_ALLOC_CALLS],
      freeCalls: this.stats[S_FREE_CALLS],
      allocFailures: this.stats[S_ALLOC_FAILURES],
      nrFree: Array.from(this.nrFree),
    };
  }

  /**
   * Back a user buffer of `sizeBytes` with guest pages.
   * 'none': order-0 pages in a shuffled order where no page is followed by
   * its physical successor; 'huge': 2 MiB aligned order-9 blocks.
   * @param rng floats in [0, 1), e.g. `mulberry32(seed)`: the same seed gives the same page order
   * @throws InputError when guest RAM cannot hold the buffer
   */
  allocUserBuffer(sizeBytes: number, contiguity: UserBufferContiguity, rng: () => number, clock?: ModelClock): UserBuffer {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) throw new InputError('userBuffer.sizeBytes', sizeBytes, 'a positive integer number of bytes');
    if (contiguity !== 'none' && contiguity !== 'huge') throw new InputError('userBuffer.contiguity', contiguity, "'none' or 'huge'");
    const pages = Math.ceil(sizeBytes / PAGE_SIZE_BYTES);
    const order = contiguity === 'huge' ? HUGE_PAGE_ORDER : 0;
    const blockCount = Math.ceil(pages / (1 << order));
    const blocks: { gpa: number; order: number }[] = [];
    for (let b = 0; b < blockCount; b++) {
      const gpa = this.alloc_pages(order, clock);
      if (gpa < 0) {
        for (const blk of blocks) this.free_pages(blk.gpa, blk.order, clock);
        throw new InputError(
          'userBuffer.sizeBytes',
          sizeBytes,
          `at most the free guest RAM (${this.freeBytes()} bytes free, ${contiguity === 'huge' ? 'in 2 MiB aligned blocks' : 'in 4 KiB pages'}); raise the guest's RAM or lower the job's buffer`,
        );
      }
      blocks.push({ gpa, order });
    }
    const pageGpas: number[] = [];
    if (contiguity === 'huge') {
      for (const blk of blocks) for (let p = 0; p < 1 << order && pageGpas.length < pages; p++) pageGpas.push(blk.gpa + p * PAGE_SIZE_BYTES);
    } else {
      for (const blk of blocks) pageGpas.push(blk.gpa);
      scatter(pageGpas, rng);
    }
    return { sizeBytes, contiguity, pageGpas, blocks };
  }

  freeUserBuffer(buf: UserBuffer, clock?: ModelClock): void {
    for (const blk of buf.blocks) this.free_pages(blk.gpa, blk.order, clock);
  }

  // --- buddy internals (callers hold zone->lock, or are `allocate`) ---

  /** `__rmqueue_smallest` + `expand`: take the smallest free block ≥ order and split it. */
  private rmqueueSmallest(order: number): number {
    for (let o = order; o <= MAX_ORDER; o++) {
      const head = this.freeHead[o];
      if (head < 0) continue;
      const pfn = head + this.basePfn;
      this.removeFromFreeList(pfn, o);
      // expand: give back the upper halves
      for (let size = o; size > order; ) {
        size--;
        this.addToFreeList(pfn + (1 << size), size);
      }
      return pfn;
    }
    return -1;
  }

  /** `__free_one_page`: merge with the buddy while it is free and of the same order. */
  private freeOneBlock(pfn: number, order: number): void {
    while (order < MAX_ORDER) {
      const buddy = pfn ^ (1 << order);
      if (buddy < this.basePfn || buddy + (1 << order) > this.endPfn) break;
      if (this.freeOrder[buddy - this.basePfn] !== order) break;
      this.removeFromFreeList(buddy, order);
      pfn = Math.min(pfn, buddy);
      order++;
    }
    this.addToFreeList(pfn, order);
  }

  private addToFreeList(pfn: number, order: number): void {
    const i = pfn - this.basePfn;
    const head = this.freeHead[order];
    this.next[i] = head;
    this.prev[i] = -1;
    if (head >= 0) this.prev[head] = i;
    this.freeHead[order] = i;
    this.freeOrder[i] = order;
    this.nrFree[order]++;
  }

  private removeFromFreeList(pfn: number, order: number): void {
    const i = pfn - this.basePfn;
    const n = this.next[i];
    const p = this.prev[i];
    if (p >= 0) this.next[p] = n;
    else this.freeHead[order] = n;
    if (n >= 0) this.prev[n] = p;
    this.freeOrder[i] = NONE;
    this.nrFree[order]--;
  }
}

function checkOrder(order: number): void {
  if (!Number.isInteger(order) || order < 0 || order > MAX_ORDER) throw new RangeError(`page order ${order} outside 0..${MAX_ORDER}`);
}

/**
 * Fisher–Yates shuffle, then break every remaining "page followed by its
 * physical successor" pair by swapping with a random page; deterministic for
 * a given PRNG state.
 */
function scatter(gpas: number[], rng: () => number): void {
  const n = gpas.length;
  const pick = (k: number): number => Math.min(k - 1, Math.floor(rng() * k));
  for (let i = n - 1; i > 0; i--) {
    const j = pick(i + 1);
    [gpas[i], gpas[j]] = [gpas[j], gpas[i]];
  }
  const contiguousAt = (i: number): boolean => gpas[i + 1] === gpas[i] + PAGE_SIZE_BYTES;
  for (let pass = 0; pass < 64; pass++) {
    let bad = 0;
    for (let i = 0; i + 1 < n; i++) {
      if (!contiguousAt(i)) continue;
      bad++;
      const j = pick(n);
      [gpas[i + 1], gpas[j]] = [gpas[j], gpas[i + 1]];
    }
    if (bad === 0) return;
  }
  // practically unreachable: a descending order never has a physical successor next
  gpas.sort((a, b) => b - a);
}
