/**
 * The guest's IOVA allocator: Linux `drivers/iommu/iova.c` as of v5.11–v5.15,
 * in shared memory so that every vCPU worker allocates from one domain.
 *
 * What is modelled, function by function:
 * - `alloc_iova_fast`: try the per-CPU range cache (`iova_rcache_get`); on a
 *   miss allocate from the rbtree (`alloc_iova`, always size-aligned as
 *   dma-iommu asks); if that fails and `flushRcache` is set, return every
 *   CPU's cached IOVAs and the depot to the tree (`free_cpu_cached_iovas`,
 *   `free_global_cached_iovas`) and retry once; else return 0.
 * - `free_iova_fast`: put the pfn in the rcache (`iova_rcache_insert`), else
 *   `free_iova` (rbtree erase).
 * - `__alloc_and_insert_iova_range`: a top-down walk (`rb_prev`) from the
 *   cached node below `limit_pfn`, size-aligned to roundup_pow_of_two(size),
 *   with `cached_node`/`cached32_node`, `max32_alloc_size` (fail fast for a
 *   32-bit allocation known not to fit) and the v5.11 retry from the top
 *   above the cached node (`retry_pfn`).
 * - The rbtree is a real red-black tree (CLRS, index-linked nodes in the SAB,
 *   node 0 = nil, node 1 = the anchor at IOVA_ANCHOR), so the walk, the cached
 *   nodes and `rb_next` on delete behave as the kernel's.
 * - Range caches: 6 size classes (1, 2, 4, … 32 pages: `order_base_2(size)` <
 *   IOVA_RANGE_CACHE_MAX_SIZE), per CPU a `loaded` and a `prev` magazine of
 *   IOVA_MAG_SIZE = 128 pfns, per class a depot of MAX_GLOBAL_MAGS = 32 full
 *   magazines. A full depot makes the inserting CPU free its loaded
 *   magazine's 128 pfns back to the rbtree.
 *
 * Deviations from the kernel, all deliberate:
 * - Magazines are a fixed pool per class (2·cpus + 32) instead of kmalloc'd;
 *   "free the loaded magazine and allocate a new one" is "return its pfns to
 *   the tree and reuse it". Pool operations happen under `rcache->lock`.
 * - One `rcache->lock` serves the six depots (the kernel has one per class;
 *   lock_stat reports them as one lock class anyway) and one
 *   `cpu_rcache->lock/<cpu>` per CPU serves that CPU's six magazine pairs
 *   (kernel: one per class). The per-CPU lock is kept because
 *   `alloc_iova_fast`'s flush-and-retry empties other CPUs' magazines.
 * - rbtree nodes come from a fixed pool of `maxAllocations`; an empty pool
 *   fails the allocation as a failed GFP_ATOMIC `alloc_iova_mem` would.
 * - `free_iova` of a pfn that is not allocated throws (the kernel ignores it).
 * - A cacheable size (< 64 pages) that is not a power of two is refused:
 *   dma-iommu (`iommu_dma_alloc_iova`) rounds those up before calling, and a
 *   non-rounded size would later be served from the wrong size class.
 *
 * Costs (model clock): an rcache lookup or insert charges `iovaRcacheHitNs`;
 * one that finds both magazines empty (lookup) or full (insert) visits the
 * depot under `rcache->lock` and charges it once more; every rbtree
 * operation — one allocation, one free, one reservation — charges
 * `iovaRbtreeOpNs` flat, under `iova_rbtree_lock` (the profile value already
 * averages the ~log2(n) levels of search and rebalance), so returning a full
 * magazine to the tree costs 128 × `iovaRbtreeOpNs`.
 *
 * pfns are in 4 KiB granules and are stored as f64 (exact to 2^53), so 48-bit
 * and wider address spaces work. `limitPfn` arguments are inclusive, as
 * `alloc_iova_fast`'s.
 *
 * Tree region `iova_domain` (N = maxAllocations + 2 nodes; C = cpus):
 * | field  | type       | contents | writer |
 * |--------|------------|----------|--------|
 * | ctl    | i32[16]    | 0 root, 1 cached_node, 2 cached32_node, 3 nodes in tree (anchor excluded), 4 free-node list head, 5 free nodes | iova_rbtree_lock |
 * | dom    | f64[8]     | 0 start_pfn, 1 domain limit pfn (inclusive), 2 dma_32bit_pfn, 3 max32_alloc_size | allocate; 3 under iova_rbtree_lock |
 * | left   | i32[N]     | left child (free nodes: next free node) | iova_rbtree_lock |
 * | right  | i32[N]     | right child | iova_rbtree_lock |
 * | parent | i32[N]     | parent | iova_rbtree_lock |
 * | color  | i32[N]     | 0 black, 1 red | iova_rbtree_lock |
 * | pfnLo  | f64[N]     | first pfn of the range | iova_rbtree_lock |
 * | pfnHi  | f64[N]     | last pfn of the range | iova_rbtree_lock |
 * | stats  | f64[8·C]   | per acting CPU c at 8c: 0 rcacheHits, 1 rcacheMisses, 2 rbtreeAllocs, 3 rbtreeFrees, 4 allocatedPages (net, may be negative per CPU), 5 allocFailures, 6 rcacheFlushes | CPU c only |
 *
 * Rcache region `iova_rcache` (K = 6 classes, M = 2·C + 32 magazines per
 * class, magazine ids g = k·M + m are global):
 * | field     | type          | contents | writer |
 * |-----------|---------------|----------|--------|
 * | depotSize | i32[K]        | full magazines in class k's depot | rcache->lock |
 * | freeCount | i32[K]        | spare magazines of class k | rcache->lock |
 * | depot     | i32[K·32]     | magazine ids, depot of class k at 32k | rcache->lock |
 * | freeStack | i32[K·M]      | spare magazine ids of class k at k·M | rcache->lock |
 * | loaded    | i32[C·K]      | CPU c's loaded magazine for class k at c·K + k | cpu_rcache->lock/c |
 * | prev      | i32[C·K]      | CPU c's previous magazine, same indexing | cpu_rcache->lock/c |
 * | magSize   | i32[K·M]      | pfns held by magazine g | holder of the lock that owns g |
 * | magPfns   | f64[K·M·128]  | pfns of magazine g at 128g | same |
 */

import { defineLayout, InputError, type LockKind, type LockTable, type ModelClock, type Mutex, PAGE_SHIFT, PAGE_SIZE_BYTES, Region } from '@vmstack/shm';

/** The IOVA domain's granule: the IOMMU page size. */
export const IOVA_GRANULE_BYTES = PAGE_SIZE_BYTES;
/** log2 of the largest cached range + 1: sizes 1..32 pages are cached */
export const IOVA_RANGE_CACHE_MAX_SIZE = 6;
export const IOVA_MAG_SIZE = 128;
export const MAX_GLOBAL_MAGS = 32;
/** The anchor node's pfn: above any usable address. */
export const IOVA_ANCHOR = Number.MAX_SAFE_INTEGER;
/** 1 << (32 - iova_shift): the first pfn above a 32-bit DMA mask */
export const DMA_32BIT_PFN = 2 ** (32 - PAGE_SHIFT);

export const IOVA_RBTREE_LOCK = 'iovad->iova_rbtree_lock';
export const IOVA_RCACHE_DEPOT_LOCK = 'rcache->lock';
export const IOVA_CPU_RCACHE_LOCK_PREFIX = 'cpu_rcache->lock/';
export function iovaCpuRcacheLockName(cpu: number, suffix = ''): string {
  return `${IOVA_CPU_RCACHE_LOCK_PREFIX}${cpu}${suffix}`;
}

const NIL = 0;
const ANCHOR = 1;
const BLACK = 0;
const RED = 1;
const C_ROOT = 0;
const C_CACHED = 1;
const C_CACHED32 = 2;
const C_NODES = 3;
const C_FREE_HEAD = 4;
const C_FREE_COUNT = 5;
const D_START_PFN = 0;
const D_LIMIT_PFN = 1;
const D_DMA32_PFN = 2;
const D_MAX32_ALLOC = 3;
const STAT_STRIDE = 8;
const ST_HITS = 0;
const ST_MISSES = 1;
const ST_RB_ALLOCS = 2;
const ST_RB_FREES = 3;
const ST_ALLOCATED = 4;
const ST_FAILURES = 5;
const ST_FLUSHES = 6;
const K = IOVA_RANGE_CACHE_MAX_SIZE;

export interface IovaDomainOptions {
  /** lowest usable pfn, ≥ 1 (pfn 0 means failure) */
  readonly startPfn: number;
  /** highest usable pfn (inclusive): the domain's aperture / DMA limit, e.g. 2^36 - 1 for 48 bits */
  readonly limitPfn: number;
  /** vCPUs that will attach (ids 0..cpus-1) */
  readonly cpus: number;
  /** rbtree nodes: allocated + rcache-held + reserved ranges at any one time */
  readonly maxAllocations: number;
  /** appended to every lock name, for several domains in one lock table */
  readonly lockSuffix?: string;
}

export interface IovaDomainHandle {
  readonly treeSab: SharedArrayBuffer;
  readonly rcacheSab: SharedArrayBuffer;
  readonly cpus: number;
  readonly nodes: number;
  readonly lockSuffix: string;
}

export interface IovaCosts {
  readonly iovaRcacheHitNs: number;
  readonly iovaRbtreeOpNs: number;
}

export interface IovaStats {
  /** allocations served by a per-CPU magazine or the depot */
  readonly rcacheHits: number;
  /** allocations that went to the rbtree (uncacheable sizes included) */
  readonly rcacheMisses: number;
  readonly rbtreeAllocs: number;
  /** ranges erased from the rbtree (free_iova, magazine spills and flushes) */
  readonly rbtreeFrees: number;
  /** pages handed out by alloc_iova_fast and not yet given to free_iova_fast */
  readonly allocatedPages: number;
  /** alloc_iova_fast calls that returned 0 */
  readonly allocFailures: number;
  /** flush-all-rcaches-and-retry events */
  readonly rcacheFlushes: number;
  /** ranges in the rbtree: allocated, cached in magazines and reserved */
  readonly rbtreeNodes: number;
}

function treeLayout(nodes: number, cpus: number) {
  return defineLayout('iova_domain', [
    { name: 'ctl', kind: 'i32', count: 16 },
    { name: 'dom', kind: 'f64', count: 8 },
    { name: 'left', kind: 'i32', count: nodes },
    { name: 'right', kind: 'i32', count: nodes },
    { name: 'parent', kind: 'i32', count: nodes },
    { name: 'color', kind: 'i32', count: nodes },
    { name: 'pfnLo', kind: 'f64', count: nodes },
    { name: 'pfnHi', kind: 'f64', count: nodes },
    { name: 'stats', kind: 'f64', count: STAT_STRIDE * cpus },
  ]);
}

function magsPerClass(cpus: number): number {
  return 2 * cpus + MAX_GLOBAL_MAGS;
}

function rcacheLayout(cpus: number) {
  const m = magsPerClass(cpus);
  return defineLayout('iova_rcache', [
    { name: 'depotSize', kind: 'i32', count: K },
    { name: 'freeCount', kind: 'i32', count: K },
    { name: 'depot', kind: 'i32', count: K * MAX_GLOBAL_MAGS },
    { name: 'freeStack', kind: 'i32', count: K * m },
    { name: 'loaded', kind: 'i32', count: cpus * K },
    { name: 'prev', kind: 'i32', count: cpus * K },
    { name: 'magSize', kind: 'i32', count: K * m },
    { name: 'magPfns', kind: 'f64', count: K * m * IOVA_MAG_SIZE },
  ]);
}

/** `order_base_2(n)`: ceil(log2(n)) for n ≥ 1. */
export function orderBase2(n: number): number {
  return n <= 1 ? 0 : Math.ceil(Math.log2(n) - 1e-12);
}

/** `fls_long(size - 1)` as a power of two: the alignment of a size-aligned range. */
function sizeAlignment(size: number): number {
  return 2 ** orderBase2(size);
}

export class IovaDomain {
  // tree
  private readonly ctl: Int32Array;
  private readonly dom: Float64Array;
  private readonly left: Int32Array;
  private readonly right: Int32Array;
  private readonly parent: Int32Array;
  private readonly color: Int32Array;
  private readonly lo: Float64Array;
  private readonly hi: Float64Array;
  private readonly st: Float64Array;
  // rcache
  private readonly depotSize: Int32Array;
  private readonly freeCount: Int32Array;
  private readonly depot: Int32Array;
  private readonly freeStack: Int32Array;
  private readonly loaded: Int32Array;
  private readonly prevMag: Int32Array;
  private readonly magSize: Int32Array;
  private readonly magPfns: Float64Array;
  private readonly mags: number;

  readonly startPfn: number;
  /** the domain's highest usable pfn (inclusive) */
  readonly limitPfn: number;
  readonly cpus: number;
  private readonly myStats: number;
  private readonly rbtreeLock: Mutex;
  private readonly depotLock: Mutex;
  private readonly cpuLocks: Mutex[];

  static lockSpecs(handle: IovaDomainHandle): { name: string; kind: LockKind }[] {
    const s = handle.lockSuffix;
    const specs: { name: string; kind: LockKind }[] = [
      { name: IOVA_RBTREE_LOCK + s, kind: 'spinlock' },
      { name: IOVA_RCACHE_DEPOT_LOCK + s, kind: 'spinlock' },
    ];
    for (let c = 0; c < handle.cpus; c++) specs.push({ name: iovaCpuRcacheLockName(c, s), kind: 'spinlock' });
    return specs;
  }

  /** `init_iova_domain` + `init_iova_rcaches`. */
  static allocate(opts: IovaDomainOptions): IovaDomainHandle {
    const { startPfn, limitPfn, cpus, maxAllocations } = opts;
    if (!Number.isSafeInteger(startPfn) || startPfn < 1) throw new InputError('iova.startPfn', startPfn, 'an integer ≥ 1 (pfn 0 is the failure value)');
    if (!Number.isSafeInteger(limitPfn) || limitPfn < startPfn || limitPfn >= 2 ** 52)
      throw new InputError('iova.limitPfn', limitPfn, `an integer pfn in [startPfn (${startPfn}), 2^52)`);
    if (!Number.isInteger(cpus) || cpus < 1 || cpus > 1024) throw new InputError('iova.cpus', cpus, 'an integer in [1, 1024]');
    if (!Number.isInteger(maxAllocations) || maxAllocations < 1 || maxAllocations > 1 << 24)
      throw new InputError('iova.maxAllocations', maxAllocations, 'an integer in [1, 16777216]');
    const nodes = maxAllocations + 2;
    const tree = Region.allocate(treeLayout(nodes, cpus));
    const rc = Region.allocate(rcacheLayout(cpus));
    const handle: IovaDomainHandle = { treeSab: tree.sab, rcacheSab: rc.sab, cpus, nodes, lockSuffix: opts.lockSuffix ?? '' };

    const dom = tree.f64('dom');
    dom[D_START_PFN] = startPfn;
    dom[D_LIMIT_PFN] = limitPfn;
    dom[D_DMA32_PFN] = DMA_32BIT_PFN;
    dom[D_MAX32_ALLOC] = DMA_32BIT_PFN;
    const ctl = tree.i32('ctl');
    const lo = tree.f64('pfnLo');
    const hi = tree.f64('pfnHi');
    // the anchor is the root; nodes 2..N-1 form the free list through `left`
    lo[ANCHOR] = hi[ANCHOR] = IOVA_ANCHOR;
    ctl[C_ROOT] = ANCHOR;
    ctl[C_CACHED] = ANCHOR;
    ctl[C_CACHED32] = ANCHOR;
    const left = tree.i32('left');
    for (let n = 2; n < nodes; n++) left[n] = n + 1 < nodes ? n + 1 : NIL;
    ctl[C_FREE_HEAD] = nodes > 2 ? 2 : NIL;
    ctl[C_FREE_COUNT] = nodes - 2;

    const m = magsPerClass(cpus);
    const loaded = rc.i32('loaded');
    const prev = rc.i32('prev');
    const freeStack = rc.i32('freeStack');
    const freeCount = rc.i32('freeCount');
    for (let k = 0; k < K; k++) {
      for (let c = 0; c < cpus; c++) {
        loaded[c * K + k] = k * m + 2 * c;
        prev[c * K + k] = k * m + 2 * c + 1;
      }
      for (let j = 0; j < MAX_GLOBAL_MAGS; j++) freeStack[k * m + j] = k * m + 2 * cpus + j;
      freeCount[k] = MAX_GLOBAL_MAGS;
    }
    return handle;
  }

  /** Join the domain as vCPU `cpu`; `lockTable` must hold `IovaDomain.lockSpecs(handle)`. */
  static attach(handle: IovaDomainHandle, cpu: number, lockTable: LockTable, costs: IovaCosts): IovaDomain {
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= handle.cpus) throw new RangeError(`iova: cpu ${cpu} outside 0..${handle.cpus - 1}`);
    return new IovaDomain(handle, cpu, lockTable, costs);
  }

  /** Statistics from any thread, without attaching (racy snapshot while vCPUs run). */
  static stats(handle: IovaDomainHandle): IovaStats {
    const tree = Region.attach(treeLayout(handle.nodes, handle.cpus), handle.treeSab);
    return sumStats(tree.f64('stats'), handle.cpus, Atomics.load(tree.i32('ctl'), C_NODES));
  }

  private constructor(
    readonly handle: IovaDomainHandle,
    readonly cpu: number,
    lockTable: LockTable,
    private readonly costs: IovaCosts,
  ) {
    const tree = Region.attach(treeLayout(handle.nodes, handle.cpus), handle.treeSab);
    this.ctl = tree.i32('ctl');
    this.dom = tree.f64('dom');
    this.left = tree.i32('left');
    this.right = tree.i32('right');
    this.parent = tree.i32('parent');
    this.color = tree.i32('color');
    this.lo = tree.f64('pfnLo');
    this.hi = tree.f64('pfnHi');
    this.st = tree.f64('stats');
    const rc = Region.attach(rcacheLayout(handle.cpus), handle.rcacheSab);
    this.depotSize = rc.i32('depotSize');
    this.freeCount = rc.i32('freeCount');
    this.depot = rc.i32('depot');
    this.freeStack = rc.i32('freeStack');
    this.loaded = rc.i32('loaded');
    this.prevMag = rc.i32('prev');
    this.magSize = rc.i32('magSize');
    this.magPfns = rc.f64('magPfns');
    this.mags = magsPerClass(handle.cpus);
    this.startPfn = this.dom[D_START_PFN];
    this.limitPfn = this.dom[D_LIMIT_PFN];
    this.cpus = handle.cpus;
    this.myStats = cpu * STAT_STRIDE;
    const s = handle.lockSuffix;
    this.rbtreeLock = lockTable.get(IOVA_RBTREE_LOCK + s);
    this.depotLock = lockTable.get(IOVA_RCACHE_DEPOT_LOCK + s);
    this.cpuLocks = [];
    for (let c = 0; c < handle.cpus; c++) this.cpuLocks.push(lockTable.get(iovaCpuRcacheLockName(c, s)));
  }

  // ------------------------------------------------------------------ API

  /**
   * Allocate `sizePages` contiguous IOVA pages at or below `limitPfn`
   * (inclusive), size-aligned. Cacheable sizes (< 64 pages) must be powers of
   * two (dma-iommu rounds them).
   * @param flushRcache on rbtree failure, flush all rcaches and retry once (dma-iommu passes false only for its first, 32-bit SAC attempt)
   * @returns the first pfn, or 0 when the space is exhausted
   */
  alloc_iova_fast(sizePages: number, limitPfn: number, clock: ModelClock, flushRcache = true): number {
    checkIovaSizePages(sizePages);
    const limit = Math.min(limitPfn, this.limitPfn);
    const st = this.st;
    const me = this.myStats;
    const pfn = this.iova_rcache_get(sizePages, limit + 1, clock);
    if (pfn !== 0) {
      st[me + ST_HITS]++;
      st[me + ST_ALLOCATED] += sizePages;
      return pfn;
    }
    st[me + ST_MISSES]++;
    for (;;) {
      const got = this.alloc_iova(sizePages, limit, clock);
      if (got !== 0) {
        st[me + ST_ALLOCATED] += sizePages;
        return got;
      }
      if (!flushRcache) {
        st[me + ST_FAILURES]++;
        return 0;
      }
      // Try replenishing IOVAs by flushing rcache.
      flushRcache = false;
      st[me + ST_FLUSHES]++;
      for (let c = 0; c < this.cpus; c++) this.free_cpu_cached_iovas(c, clock);
      this.free_global_cached_iovas(clock);
    }
  }

  /** Free a range from `alloc_iova_fast`: into this CPU's rcache, else back to the rbtree. */
  free_iova_fast(pfn: number, sizePages: number, clock: ModelClock): void {
    checkIovaSizePages(sizePages);
    this.st[this.myStats + ST_ALLOCATED] -= sizePages;
    if (this.iova_rcache_insert(pfn, sizePages, clock)) return;
    this.free_iova(pfn, clock);
  }

  /**
   * `reserve_iova`: keep [loPfn, hiPfn] out of allocation (merged with
   * overlapping ranges, as the kernel does). Returns false if no rbtree node
   * was available.
   */
  reserve_iova(loPfn: number, hiPfn: number, clock?: ModelClock): boolean {
    if (!Number.isSafeInteger(loPfn) || !Number.isSafeInteger(hiPfn) || loPfn < 0 || hiPfn < loPfn || hiPfn >= IOVA_ANCHOR) {
      throw new RangeError(`reserve_iova: bad range [${loPfn}, ${hiPfn}]`);
    }
    const lock = this.rbtreeLock;
    lock.lock(clock);
    try {
      clock?.charge(this.costs.iovaRbtreeOpNs);
      let overlap = false;
      for (let n = this.rbFirst(); n !== NIL; n = this.rbNext(n)) {
        if (loPfn <= this.hi[n] && hiPfn >= this.lo[n]) {
          // __adjust_overlap_range
          if (loPfn < this.lo[n]) this.lo[n] = loPfn;
          if (hiPfn > this.hi[n]) loPfn = this.hi[n] + 1;
          if (loPfn >= this.lo[n] && hiPfn <= this.hi[n]) return true;
          overlap = true;
        } else if (overlap) break;
      }
      const node = this.allocNode();
      if (node === NIL) return false;
      this.lo[node] = loPfn;
      this.hi[node] = hiPfn;
      this.rbInsert(node);
      return true;
    } finally {
      lock.unlock(clock);
    }
  }

  /** Return every IOVA cached in `cpu`'s magazines to the rbtree (`free_cpu_cached_iovas`). */
  free_cpu_cached_iovas(cpu: number, clock?: ModelClock): void {
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= this.cpus) throw new RangeError(`free_cpu_cached_iovas: cpu ${cpu} outside 0..${this.cpus - 1}`);
    const lock = this.cpuLocks[cpu];
    for (let k = 0; k < K; k++) {
      lock.lock(clock);
      try {
        this.iova_magazine_free_pfns(this.loaded[cpu * K + k], clock);
        this.iova_magazine_free_pfns(this.prevMag[cpu * K + k], clock);
      } finally {
        lock.unlock(clock);
      }
    }
  }

  /** Return every IOVA held in the depots to the rbtree (`free_global_cached_iovas`). */
  free_global_cached_iovas(clock?: ModelClock): void {
    const lock = this.depotLock;
    for (let k = 0; k < K; k++) {
      lock.lock(clock);
      try {
        const n = this.depotSize[k];
        for (let j = 0; j < n; j++) {
          const mag = this.depot[k * MAX_GLOBAL_MAGS + j];
          this.iova_magazine_free_pfns(mag, clock);
          this.freeStack[k * this.mags + this.freeCount[k]++] = mag;
        }
        this.depotSize[k] = 0;
      } finally {
        lock.unlock(clock);
      }
    }
  }

  /** Summed statistics of all CPUs (racy snapshot while vCPUs run). */
  stats(): IovaStats {
    return sumStats(this.st, this.cpus, Atomics.load(this.ctl, C_NODES));
  }

  /** Magazine fill of `cpu` for size class `sizeClass` (log2 pages) and the depot; for tests and debugging. */
  rcacheState(cpu: number, sizeClass: number): { loaded: number; prev: number; depotMagazines: number; depotPfns: number } {
    this.cpuLocks[cpu].lock();
    this.depotLock.lock();
    try {
      let depotPfns = 0;
      for (let j = 0; j < this.depotSize[sizeClass]; j++) depotPfns += this.magSize[this.depot[sizeClass * MAX_GLOBAL_MAGS + j]];
      return {
        loaded: this.magSize[this.loaded[cpu * K + sizeClass]],
        prev: this.magSize[this.prevMag[cpu * K + sizeClass]],
        depotMagazines: this.depotSize[sizeClass],
        depotPfns,
      };
    } finally {
      this.depotLock.unlock();
      this.cpuLocks[cpu].unlock();
    }
  }

  /** Every range in the rbtree in address order (anchor excluded); for tests and debugging. */
  ranges(): { loPfn: number; hiPfn: number }[] {
    const lock = this.rbtreeLock;
    lock.lock();
    try {
      const out: { loPfn: number; hiPfn: number }[] = [];
      for (let n = this.rbFirst(); n !== NIL; n = this.rbNext(n)) if (n !== ANCHOR) out.push({ loPfn: this.lo[n], hiPfn: this.hi[n] });
      return out;
    } finally {
      lock.unlock();
    }
  }

  /** Check the red-black and ordering invariants (tests): returns a description of the first violation, or null. */
  checkTree(): string | null {
    const lock = this.rbtreeLock;
    lock.lock();
    try {
      const root = this.ctl[C_ROOT];
      if (this.color[root] !== BLACK) return 'root is red';
      let count = 0;
      let prevHi = -1;
      for (let n = this.rbFirst(); n !== NIL; n = this.rbNext(n)) {
        if (this.lo[n] <= prevHi) return `node ${n} [${this.lo[n]}, ${this.hi[n]}] overlaps its predecessor ending at ${prevHi}`;
        prevHi = this.hi[n];
        count++;
      }
      if (count !== this.ctl[C_NODES] + 1) return `in-order walk found ${count} nodes, counter says ${this.ctl[C_NODES] + 1}`;
      const blackHeight = (n: number): number => {
        if (n === NIL) return 1;
        if (this.color[n] === RED && (this.color[this.left[n]] === RED || this.color[this.right[n]] === RED)) return -1;
        if (this.left[n] !== NIL && this.parent[this.left[n]] !== n) return -1;
        if (this.right[n] !== NIL && this.parent[this.right[n]] !== n) return -1;
        const l = blackHeight(this.left[n]);
        const r = blackHeight(this.right[n]);
        if (l < 0 || r < 0 || l !== r) return -1;
        return l + (this.color[n] === BLACK ? 1 : 0);
      };
      return blackHeight(root) < 0 ? 'red-black property or parent link violated' : null;
    } finally {
      lock.unlock();
    }
  }

  // ------------------------------------------------------------ rbtree path

  /** `alloc_iova(iovad, size, limit_pfn, true)`: returns pfn_lo or 0. */
  private alloc_iova(size: number, limitPfn: number, clock: ModelClock): number {
    const lock = this.rbtreeLock;
    lock.lock(clock);
    try {
      clock.charge(this.costs.iovaRbtreeOpNs);
      const node = this.allocNode();
      if (node === NIL) return 0; // alloc_iova_mem failed
      if (!this.__alloc_and_insert_iova_range(size, limitPfn + 1, node)) {
        this.releaseNode(node);
        return 0;
      }
      this.st[this.myStats + ST_RB_ALLOCS]++;
      return this.lo[node];
    } finally {
      lock.unlock(clock);
    }
  }

  /** The kernel's top-down, size-aligned search; `limitPfn` exclusive. Caller holds the rbtree lock. */
  private __alloc_and_insert_iova_range(size: number, limitPfn: number, node: number): boolean {
    const lo = this.lo;
    const hi = this.hi;
    const dom = this.dom;
    const startPfn = dom[D_START_PFN];
    const dma32 = dom[D_DMA32_PFN];
    const align = sizeAlignment(size);
    let highPfn = limitPfn;
    let lowPfn = startPfn;
    if (limitPfn <= dma32 && size >= dom[D_MAX32_ALLOC]) return false; // iova32_full

    let curr = limitPfn <= dma32 ? this.ctl[C_CACHED32] : this.ctl[C_CACHED];
    const retryPfn = hi[curr] + 1;
    let newPfn: number;
    for (;;) {
      do {
        highPfn = Math.min(highPfn, lo[curr]);
        newPfn = Math.floor((highPfn - size) / align) * align;
        curr = this.rbPrev(curr);
      } while (curr !== NIL && newPfn <= hi[curr] && newPfn >= lowPfn);
      if (highPfn < size || newPfn < lowPfn) {
        if (lowPfn === startPfn && retryPfn < limitPfn) {
          highPfn = limitPfn;
          lowPfn = retryPfn;
          curr = ANCHOR;
          continue;
        }
        dom[D_MAX32_ALLOC] = size;
        return false;
      }
      break;
    }
    // the kernel starts the insertion descent at the last node visited; from the root it reaches the same slot
    lo[node] = newPfn;
    hi[node] = newPfn + size - 1;
    this.rbInsert(node);
    // __cached_rbnode_insert_update
    if (hi[node] < dma32) this.ctl[C_CACHED32] = node;
    else this.ctl[C_CACHED] = node;
    return true;
  }

  /** `free_iova`: find the range starting at `pfn` and erase it. */
  private free_iova(pfn: number, clock?: ModelClock): void {
    const lock = this.rbtreeLock;
    lock.lock(clock);
    try {
      clock?.charge(this.costs.iovaRbtreeOpNs);
      const node = this.private_find_iova(pfn);
      if (node === NIL || node === ANCHOR) throw new Error(`free_iova: pfn ${pfn} is not an allocated IOVA`);
      this.private_free_iova(node);
    } finally {
      lock.unlock(clock);
    }
  }

  private private_find_iova(pfn: number): number {
    let n = this.ctl[C_ROOT];
    while (n !== NIL) {
      if (pfn < this.lo[n]) n = this.left[n];
      else if (pfn > this.hi[n]) n = this.right[n];
      else return n;
    }
    return NIL;
  }

  private private_free_iova(node: number): void {
    // __cached_rbnode_delete_update
    const dma32 = this.dom[D_DMA32_PFN];
    const c32 = this.ctl[C_CACHED32];
    if (node === c32 || (this.hi[node] < dma32 && this.lo[node] >= this.lo[c32])) {
      this.ctl[C_CACHED32] = this.rbNext(node);
      this.dom[D_MAX32_ALLOC] = dma32;
    }
    const c = this.ctl[C_CACHED];
    if (this.lo[node] >= this.lo[c]) this.ctl[C_CACHED] = this.rbNext(node);
    this.rbErase(node);
    this.releaseNode(node);
    this.st[this.myStats + ST_RB_FREES]++;
  }

  // ----------------------------------------------------------- rcache path

  /** `iova_rcache_get`; `limitPfn` exclusive. Returns 0 on a miss. */
  private iova_rcache_get(size: number, limitPfn: number, clock: ModelClock): number {
    const k = orderBase2(size);
    if (k >= K) return 0;
    return this.__iova_rcache_get(k, limitPfn - size, clock);
  }

  private __iova_rcache_get(k: number, limitPfn: number, clock: ModelClock): number {
    const lock = this.cpuLocks[this.cpu];
    const slot = this.cpu * K + k;
    lock.lock(clock);
    try {
      clock.charge(this.costs.iovaRcacheHitNs);
      let hasPfn = false;
      if (this.magSize[this.loaded[slot]] > 0) {
        hasPfn = true;
      } else if (this.magSize[this.prevMag[slot]] > 0) {
        const t = this.loaded[slot];
        this.loaded[slot] = this.prevMag[slot];
        this.prevMag[slot] = t;
        hasPfn = true;
      } else {
        const depotLock = this.depotLock;
        depotLock.lock(clock);
        try {
          clock.charge(this.costs.iovaRcacheHitNs);
          if (this.depotSize[k] > 0) {
            // iova_magazine_free(loaded): the empty magazine goes back to the pool
            this.freeStack[k * this.mags + this.freeCount[k]++] = this.loaded[slot];
            this.loaded[slot] = this.depot[k * MAX_GLOBAL_MAGS + --this.depotSize[k]];
            hasPfn = true;
          }
        } finally {
          depotLock.unlock(clock);
        }
      }
      return hasPfn ? this.iova_magazine_pop(this.loaded[slot], limitPfn) : 0;
    } finally {
      lock.unlock(clock);
    }
  }

  /** `iova_rcache_insert`: false if the size is not cacheable. */
  private iova_rcache_insert(pfn: number, size: number, clock: ModelClock): boolean {
    const k = orderBase2(size);
    if (k >= K) return false;
    const lock = this.cpuLocks[this.cpu];
    const slot = this.cpu * K + k;
    let toFree: number[] | null = null;
    lock.lock(clock);
    try {
      clock.charge(this.costs.iovaRcacheHitNs);
      if (this.magSize[this.loaded[slot]] < IOVA_MAG_SIZE) {
        // room in loaded
      } else if (this.magSize[this.prevMag[slot]] < IOVA_MAG_SIZE) {
        const t = this.loaded[slot];
        this.loaded[slot] = this.prevMag[slot];
        this.prevMag[slot] = t;
      } else {
        const depotLock = this.depotLock;
        depotLock.lock(clock);
        try {
          clock.charge(this.costs.iovaRcacheHitNs);
          if (this.depotSize[k] < MAX_GLOBAL_MAGS) {
            this.depot[k * MAX_GLOBAL_MAGS + this.depotSize[k]++] = this.loaded[slot];
            this.loaded[slot] = this.freeStack[k * this.mags + --this.freeCount[k]];
          } else {
            // depot full: the loaded magazine's pfns go back to the tree (after dropping our lock)
            const mag = this.loaded[slot];
            const n = this.magSize[mag];
            toFree = Array.from(this.magPfns.subarray(mag * IOVA_MAG_SIZE, mag * IOVA_MAG_SIZE + n));
            this.magSize[mag] = 0;
          }
        } finally {
          depotLock.unlock(clock);
        }
      }
      const mag = this.loaded[slot];
      this.magPfns[mag * IOVA_MAG_SIZE + this.magSize[mag]++] = pfn;
    } finally {
      lock.unlock(clock);
    }
    if (toFree) this.freePfnsToTree(toFree, clock);
    return true;
  }

  /** `iova_magazine_pop`: the newest pfn ≤ limitPfn (swap-removed), or 0. */
  private iova_magazine_pop(mag: number, limitPfn: number): number {
    const base = mag * IOVA_MAG_SIZE;
    const size = this.magSize[mag];
    let i = size - 1;
    for (; this.magPfns[base + i] > limitPfn; i--) if (i === 0) return 0;
    const pfn = this.magPfns[base + i];
    this.magPfns[base + i] = this.magPfns[base + size - 1];
    this.magSize[mag] = size - 1;
    return pfn;
  }

  /** `iova_magazine_free_pfns`: caller holds the lock that owns `mag`. */
  private iova_magazine_free_pfns(mag: number, clock?: ModelClock): void {
    const n = this.magSize[mag];
    if (n === 0) return;
    const pfns = Array.from(this.magPfns.subarray(mag * IOVA_MAG_SIZE, mag * IOVA_MAG_SIZE + n));
    this.freePfnsToTree(pfns, clock);
    this.magSize[mag] = 0;
  }

  private freePfnsToTree(pfns: readonly number[], clock?: ModelClock): void {
    const lock = this.rbtreeLock;
    lock.lock(clock);
    try {
      for (const pfn of pfns) {
        clock?.charge(this.costs.iovaRbtreeOpNs);
        const node = this.private_find_iova(pfn);
        if (node === NIL || node === ANCHOR) throw new Error(`iova_magazine_free_pfns: cached pfn ${pfn} is not in the rbtree`);
        this.private_free_iova(node);
      }
    } finally {
      lock.unlock(clock);
    }
  }

  // --------------------------------------------------- red-black tree (CLRS)

  private allocNode(): number {
    const n = this.ctl[C_FREE_HEAD];
    if (n === NIL) return NIL;
    this.ctl[C_FREE_HEAD] = this.left[n];
    this.ctl[C_FREE_COUNT]--;
    return n;
  }

  private releaseNode(n: number): void {
    this.left[n] = this.ctl[C_FREE_HEAD];
    this.right[n] = NIL;
    this.parent[n] = NIL;
    this.ctl[C_FREE_HEAD] = n;
    this.ctl[C_FREE_COUNT]++;
  }

  private rbFirst(): number {
    let n = this.ctl[C_ROOT];
    if (n === NIL) return NIL;
    while (this.left[n] !== NIL) n = this.left[n];
    return n;
  }

  private rbNext(x: number): number {
    if (this.right[x] !== NIL) {
      x = this.right[x];
      while (this.left[x] !== NIL) x = this.left[x];
      return x;
    }
    let y = this.parent[x];
    while (y !== NIL && x === this.right[y]) {
      x = y;
      y = this.parent[y];
    }
    return y;
  }

  private rbPrev(x: number): number {
    if (this.left[x] !== NIL) {
      x = this.left[x];
      while (this.right[x] !== NIL) x = this.right[x];
      return x;
    }
    let y = this.parent[x];
    while (y !== NIL && x === this.left[y]) {
      x = y;
      y = this.parent[y];
    }
    return y;
  }

  private rotateLeft(x: number): void {
    const { left, right, parent, ctl } = this;
    const y = right[x];
    right[x] = left[y];
    if (left[y] !== NIL) parent[left[y]] = x;
    parent[y] = parent[x];
    if (parent[x] === NIL) ctl[C_ROOT] = y;
    else if (x === left[parent[x]]) left[parent[x]] = y;
    else right[parent[x]] = y;
    left[y] = x;
    parent[x] = y;
  }

  private rotateRight(x: number): void {
    const { left, right, parent, ctl } = this;
    const y = left[x];
    left[x] = right[y];
    if (right[y] !== NIL) parent[right[y]] = x;
    parent[y] = parent[x];
    if (parent[x] === NIL) ctl[C_ROOT] = y;
    else if (x === right[parent[x]]) right[parent[x]] = y;
    else left[parent[x]] = y;
    right[y] = x;
    parent[x] = y;
  }

  /** `iova_insert_rbtree` + `rb_insert_color`, keyed by pfn_lo. */
  private rbInsert(z: number): void {
    const { left, right, parent, color, lo, ctl } = this;
    let y = NIL;
    let x = ctl[C_ROOT];
    const key = lo[z];
    while (x !== NIL) {
      y = x;
      if (key < lo[x]) x = left[x];
      else if (key > lo[x]) x = right[x];
      else throw new Error(`iova_insert_rbtree: pfn ${key} already in the tree`);
    }
    parent[z] = y;
    if (y === NIL) ctl[C_ROOT] = z;
    else if (key < lo[y]) left[y] = z;
    else right[y] = z;
    left[z] = NIL;
    right[z] = NIL;
    color[z] = RED;
    while (color[parent[z]] === RED) {
      const p = parent[z];
      const g = parent[p];
      if (p === left[g]) {
        const u = right[g];
        if (color[u] === RED) {
          color[p] = BLACK;
          color[u] = BLACK;
          color[g] = RED;
          z = g;
        } else {
          if (z === right[p]) {
            z = p;
            this.rotateLeft(z);
          }
          color[parent[z]] = BLACK;
          color[parent[parent[z]]] = RED;
          this.rotateRight(parent[parent[z]]);
        }
      } else {
        const u = left[g];
        if (color[u] === RED) {
          color[p] = BLACK;
          color[u] = BLACK;
          color[g] = RED;
          z = g;
        } else {
          if (z === left[p]) {
            z = p;
            this.rotateRight(z);
          }
          color[parent[z]] = BLACK;
          color[parent[parent[z]]] = RED;
          this.rotateLeft(parent[parent[z]]);
        }
      }
    }
    color[ctl[C_ROOT]] = BLACK;
    ctl[C_NODES]++;
  }

  private transplant(u: number, v: number): void {
    const { left, right, parent, ctl } = this;
    if (parent[u] === NIL) ctl[C_ROOT] = v;
    else if (u === left[parent[u]]) left[parent[u]] = v;
    else right[parent[u]] = v;
    parent[v] = parent[u];
  }

  /** `rb_erase`: nodes keep their index (y is moved, not copied), so cached node indexes stay valid. */
  private rbErase(z: number): void {
    const { left, right, parent, color } = this;
    let y = z;
    let yColor = color[y];
    let x: number;
    if (left[z] === NIL) {
      x = right[z];
      this.transplant(z, right[z]);
    } else if (right[z] === NIL) {
      x = left[z];
      this.transplant(z, left[z]);
    } else {
      y = right[z];
      while (left[y] !== NIL) y = left[y];
      yColor = color[y];
      x = right[y];
      if (parent[y] === z) parent[x] = y;
      else {
        this.transplant(y, right[y]);
        right[y] = right[z];
        parent[right[y]] = y;
      }
      this.transplant(z, y);
      left[y] = left[z];
      parent[left[y]] = y;
      color[y] = color[z];
    }
    if (yColor === BLACK) this.eraseFixup(x);
    parent[NIL] = NIL;
    color[NIL] = BLACK;
    this.ctl[C_NODES]--;
  }

  private eraseFixup(x: number): void {
    const { left, right, parent, color, ctl } = this;
    while (x !== ctl[C_ROOT] && color[x] === BLACK) {
      if (x === left[parent[x]]) {
        let w = right[parent[x]];
        if (color[w] === RED) {
          color[w] = BLACK;
          color[parent[x]] = RED;
          this.rotateLeft(parent[x]);
          w = right[parent[x]];
        }
        if (color[left[w]] === BLACK && color[right[w]] === BLACK) {
          color[w] = RED;
          x = parent[x];
        } else {
          if (color[right[w]] === BLACK) {
            color[left[w]] = BLACK;
            color[w] = RED;
            this.rotateRight(w);
            w = right[parent[x]];
          }
          color[w] = color[parent[x]];
          color[parent[x]] = BLACK;
          color[right[w]] = BLACK;
          this.rotateLeft(parent[x]);
          x = ctl[C_ROOT];
        }
      } else {
        let w = left[parent[x]];
        if (color[w] === RED) {
          color[w] = BLACK;
          color[parent[x]] = RED;
          this.rotateRight(parent[x]);
          w = left[parent[x]];
        }
        if (color[right[w]] === BLACK && color[left[w]] === BLACK) {
          color[w] = RED;
          x = parent[x];
        } else {
          if (color[left[w]] === BLACK) {
            color[right[w]] = BLACK;
            color[w] = RED;
            this.rotateLeft(w);
            w = left[parent[x]];
          }
          color[w] = color[parent[x]];
          color[parent[x]] = BLACK;
          color[left[w]] = BLACK;
          this.rotateRight(parent[x]);
          x = ctl[C_ROOT];
        }
      }
    }
    color[x] = BLACK;
  }
}

/**
 * The IOVA length dma-iommu asks for (`iommu_dma_alloc_iova`): sizes below
 * 32 pages are rounded up to a power of two so that a freed range always
 * goes back to the rcache class it came from.
 */
export function iommu_dma_iova_len(pages: number): number {
  return pages < 1 << (IOVA_RANGE_CACHE_MAX_SIZE - 1) ? 2 ** orderBase2(pages) : pages;
}

/** Throws RangeError unless `sizePages` is a size `alloc_iova_fast` / `free_iova_fast` accept. */
export function checkIovaSizePages(sizePages: number): void {
  if (!Number.isSafeInteger(sizePages) || sizePages < 1) throw new RangeError(`iova: size ${sizePages} pages is not a positive integer`);
  if (orderBase2(sizePages) < K && (sizePages & (sizePages - 1)) !== 0) {
    throw new RangeError(`iova: size ${sizePages} pages is cacheable but not a power of two; round it up first as iommu_dma_alloc_iova does`);
  }
}

function sumStats(st: Float64Array, cpus: number, nodes: number): IovaStats {
  const sum = (field: number): number => {
    let s = 0;
    for (let c = 0; c < cpus; c++) s += st[c * STAT_STRIDE + field];
    return s;
  };
  return {
    rcacheHits: sum(ST_HITS),
    rcacheMisses: sum(ST_MISSES),
    rbtreeAllocs: sum(ST_RB_ALLOCS),
    rbtreeFrees: sum(ST_RB_FREES),
    allocatedPages: sum(ST_ALLOCATED),
    allocFailures: sum(ST_FAILURES),
    rcacheFlushes: sum(ST_FLUSHES),
    rbtreeNodes: nodes,
  };
}
