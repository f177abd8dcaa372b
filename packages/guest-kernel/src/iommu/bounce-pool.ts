/**
 * The dynamic IOMMU bounce-buffer pool of one IOMMU domain (strategy `bounce`).
 *
 * Models David Stevens' series "Add dynamic iommu backed bounce buffers" (v2,
 * Aug 2021): `drivers/iommu/io-buffer-manager.c` (slots, caches, eviction,
 * fallback tree) and the copy/padding rules of `io-bounce-buffers.c`. Function
 * comments name the C function each method stands for.
 *
 * Shape (as in the series):
 * - Power-of-2 size classes (default 4 KiB … 512 KiB), `slotsPerClass` slots
 *   each (default 1024). One IOVA range, reserved by the caller in the IOVA
 *   allocator, is carved largest class first, so slot ↔ IOVA is arithmetic
 *   (`io_buffer_slot_to_iova`, `__io_buffer_manager_find_slot`), no lock.
 *   With the defaults the range is 1024 × 255 pages ("slightly under 1GB").
 *   Its base must be aligned to the largest class (the series relies on the
 *   size-aligned IOVA allocation for that).
 * - Slot life: untouched → empty → in use → cached (still mapped) → old →
 *   evicting (unmap pending) → empty. The per-class spinlock guards list
 *   operations only; page allocation and copies run outside it.
 * - Cached slots sit on LIFO lists by the READ/WRITE bits of their IOMMU prot
 *   (RO = DMA_TO_DEVICE, WO = DMA_FROM_DEVICE, RW = BIDIRECTIONAL); a hit needs
 *   an exact prot match, so a prot with other bits (IOMMU_PRIV, or a mix of
 *   IOMMU_CACHE and non-cache users) walks its R/W list linearly.
 * - A miss takes an empty slot (then an untouched one) and allocates its
 *   memory now: memory exists only for in-use and cached slots, and for
 *   fallback buffers. The caller maps a miss with the IOMMU (`needsMap`).
 *
 * Choices where the brief and the series differ, or the series is silent:
 * - Cached slots of another permission when the class has no empty slot: the
 *   series does NOT reuse them (the class counts as full; trusted mappings take
 *   the normal path, untrusted ones the fallback tree) — that is the default.
 *   `reuseOtherPermissionSlots: true` instead takes the head of the first
 *   non-empty cache list (RO, WO, RW order) and returns `needsUnmapFirst` with
 *   the old prot: the caller unmaps it and maps it again with the new prot.
 * - DMA_ATTR_PERSISTENT_STREAMING: the model follows DESIGN.md — such a mapping
 *   is served from the pool whatever its size against always_bounce_limit,
 *   and its slot stays mapped for reuse: eviction passes skip it (teardown
 *   does not). The 2021 series (patch 8/9) instead made the flag SKIP the
 *   optional bounce buffers (long-lived mappings whose owner manages
 *   coherency without dma_sync_*; i915 sets it). (Any in-use slot is never
 *   evicted: only cached slots age.)
 * - Mandatory bouncing for untrusted devices: the series forces it only for
 *   mappings that are not IOVA-granule aligned (`iova_offset(offset | size)`),
 *   as swiotlb did; DESIGN.md says "always". `bounceDecision` takes
 *   `granuleAligned`: omitted (or false), an untrusted mapping is always bounced.
 * - Padding: zeroed only for untrusted devices and only when the slot's memory
 *   is fresh (`new_buffer`: the series maps — and clears — only new buffers).
 *   A cached slot stays mapped in this domain, so every byte in it is data the
 *   device already could read or wrote itself; clearing it again would hide
 *   nothing. Fresh memory is not zeroed by the page allocator (patch 5/9 drops
 *   __GFP_ZERO), so the head [0, offset) and tail [offset + size, class) are
 *   cleared, or the whole slot under DMA_ATTR_SKIP_CPU_SYNC. Note the series
 *   leaves the data range of a fresh DMA_FROM_DEVICE slot unwritten (no copy,
 *   no clear): the device can read stale guest memory there. Modelled as is.
 * - Memory: one physically contiguous block of the class size from the buddy
 *   allocator (the series takes 2^k order-0 pages). Cost follows the series:
 *   `guestPageAllocNs` per 4 KiB page (alloc + free pair). The page allocator
 *   charges one pair per call itself, the pool charges the other (pages − 1)
 *   halves at alloc and at free.
 * - Eviction in two steps, as the kernel orders it: `evictionPass` takes old
 *   slots out of the cache; the caller sends the IOMMU unmap for each, then
 *   `finishEviction` frees the memory and returns the slot to the empty list
 *   (a slot never goes back to empty while still mapped). A failed unmap: do
 *   not call `finishEviction` (the series leaks the slot too).
 * - Eviction timer: armed (now + period) when a slot is released while none is
 *   pending, re-armed after a pass that aged something, as the series queues
 *   its delayed work. `nextEvictionNs()` is NEVER_NS when nothing is cached.
 *
 * Costs (charged to the caller's clock): `bouncePoolListOpNs` per class-lock
 * list operation and per extra element walked by a linear search or an
 * eviction pass; `memcpyBytesPerNs` for bounce copies; `memsetBytesPerNs` for
 * padding; `guestPageAllocNs` as above; `iovaRbtreeOpNs` for each fallback-tree
 * insert / lookup / erase (lock + kzalloc + rb walk, the same shape as an IOVA
 * rbtree operation).
 *
 * SAB layout (`BouncePool.layoutFor(opts)`; C = classes, S = C × slotsPerClass,
 * F = fallbackCapacity; `describeLayout` prints exact offsets):
 * | field       | type          | contents | writer |
 * |-------------|---------------|----------|--------|
 * | control     | i32[8]        | 0 always_bounce_limit bytes, 1 eviction re-arm request, 2 fallback entries | any (atomics); 2 under fallback_lock |
 * | counters    | i64[24]       | `C_*` below (BigInt64 view, Atomics) | any |
 * | classHeader | i32[C·8]      | per class: 0–2 cache heads RO/WO/RW, 3 empty head, 4 next untouched index, 5 in use, 6 cached | class lock |
 * | slotGpa     | f64[S]        | slot memory gpa, -1 = none | slot owner / class lock |
 * | slotState   | i32[S]        | `SlotState` | class lock |
 * | slotNext    | i32[S]        | list link (global slot index), -1 = end | class lock |
 * | slotPerm    | i32[S]        | IOMMU prot of the slot's mapping | class lock |
 * | fallback    | f64[F·5]      | sorted by IOVA: iova, sizeBytes, gpa, order, prot | fallback_lock |
 * Global slot index g = cls · slotsPerClass + i; class 0 is the smallest.
 */

import { defineLayout, Region, InputError, LockTable, NEVER_NS, type Layout, type LockKind, type LockTableHandle, type Mutex, type ModelClock } from '@vmstack/shm';

export const PAGE_SIZE_BYTES = 4096;

/** IOMMU prot bits (include/linux/iommu.h). */
export const IOMMU_READ = 1 << 0;
export const IOMMU_WRITE = 1 << 1;
export const IOMMU_CACHE = 1 << 2;
export const IOMMU_NOEXEC = 1 << 3;
export const IOMMU_MMIO = 1 << 4;
export const IOMMU_PRIV = 1 << 5;

/** enum dma_data_direction (include/linux/dma-direction.h). */
export const DMA_BIDIRECTIONAL = 0;
export const DMA_TO_DEVICE = 1;
export const DMA_FROM_DEVICE = 2;
export type DmaDirection = typeof DMA_BIDIRECTIONAL | typeof DMA_TO_DEVICE | typeof DMA_FROM_DEVICE;

/** `dma_info_to_prot` (drivers/iommu/dma-iommu.c). */
export function dma_info_to_prot(dir: DmaDirection, coherent: boolean, privileged = false): number {
  let prot = coherent ? IOMMU_CACHE : 0;
  if (privileged) prot |= IOMMU_PRIV;
  if (dir === DMA_BIDIRECTIONAL) return prot | IOMMU_READ | IOMMU_WRITE;
  if (dir === DMA_TO_DEVICE) return prot | IOMMU_READ;
  if (dir === DMA_FROM_DEVICE) return prot | IOMMU_WRITE;
  throw new RangeError(`dma direction ${String(dir)} is not 0 (bidirectional), 1 (to device) or 2 (from device)`);
}

/** Linux `should_sync_buffer`/`io_buffer_needs_sync`: does this sync copy bytes? */
export function dmaSyncCopies(dir: DmaDirection, forCpu: boolean): boolean {
  return dir === DMA_BIDIRECTIONAL || (dir === DMA_FROM_DEVICE && forCpu) || (dir === DMA_TO_DEVICE && !forCpu);
}

/** The guest's page allocator as the pool uses it (`mm/page-alloc.ts` fits). */
export interface PageAllocator {
  /** 2^order contiguous, size-aligned 4 KiB pages; returns the gpa or -1 */
  alloc_pages(order: number, clock: ModelClock): number;
  free_pages(gpa: number, order: number, clock: ModelClock): void;
}

/** Profile values the pool charges (a CostProfile fits). */
export interface BouncePoolCosts {
  readonly bouncePoolListOpNs: number;
  readonly memcpyBytesPerNs: number;
  readonly memsetBytesPerNs: number;
  readonly guestPageAllocNs: number;
  readonly iovaRbtreeOpNs: number;
}

/** One piece of the caller's buffer, in guest RAM. */
export interface DmaSegment {
  readonly gpa: number;
  readonly lenBytes: number;
}

export const SlotState = { UNTOUCHED: 0, EMPTY: 1, IN_USE: 2, CACHED: 3, OLD: 4, EVICTING: 5 } as const;
export type SlotStateValue = (typeof SlotState)[keyof typeof SlotState];
const STATE_NAMES = ['untouched', 'empty', 'in use', 'cached', 'old', 'evicting'];

export const DEFAULT_MIN_CLASS_BYTES = 4096;
export const DEFAULT_MAX_CLASS_BYTES = 512 * 1024;
export const DEFAULT_SLOTS_PER_CLASS = 1024;
/** EVICT_PERIOD_MSEC 5000 */
export const DEFAULT_EVICTION_PERIOD_NS = 5_000_000_000;
/** `always_bounce_limit` module parameter default: PAGE_SIZE */
export const DEFAULT_ALWAYS_BOUNCE_LIMIT_BYTES = 4096;
export const DEFAULT_FALLBACK_CAPACITY = 4096;
const MAX_SLOTS_PER_CLASS = 1 << 16;
const MAX_CLASSES = 20;
const MAX_FALLBACK_CAPACITY = 1 << 16;
const MAX_ORDER = 10; // mm/page-alloc.ts: orders 0..10

export const BOUNCE_POOL_CLASS_LOCK_PREFIX = 'bounce_pool->class_lock/';
export const BOUNCE_POOL_FALLBACK_LOCK = 'bounce_pool->fallback_lock';
export function bouncePoolClassLockName(classBytes: number, lockSuffix = ''): string {
  return `${BOUNCE_POOL_CLASS_LOCK_PREFIX}${classBytes}${lockSuffix}`;
}

export interface BouncePoolOptions {
  /** first IOVA of the pool's range (reserved by the caller), aligned to `maxClassBytes` */
  readonly iovaBase: number;
  readonly minClassBytes?: number;
  readonly maxClassBytes?: number;
  readonly slotsPerClass?: number;
  readonly evictionPeriodNs?: number;
  readonly alwaysBounceLimitBytes?: number;
  /** CONFIG_IOMMU_BOUNCE_BUFFERS: optional bouncing of small mappings (false: pool serves forced bounces only) */
  readonly optimization?: boolean;
  /** reuse cached slots of another prot when the class has no empty slot (not in the series) */
  readonly reuseOtherPermissionSlots?: boolean;
  /** entries of the fallback tree */
  readonly fallbackCapacity?: number;
  /** appended to lock names, for several domains or guests in one lock table */
  readonly lockSuffix?: string;
}

/** Structured-cloneable: pass it to every vCPU worker. */
export interface BouncePoolHandle {
  readonly sab: SharedArrayBuffer;
  readonly iovaBase: number;
  readonly minClassBytes: number;
  readonly numClasses: number;
  readonly slotsPerClass: number;
  readonly evictionPeriodNs: number;
  readonly optimization: boolean;
  readonly reuseOtherPermissionSlots: boolean;
  readonly fallbackCapacity: number;
  readonly lockSuffix: string;
}

export interface SlotRef {
  readonly cls: number;
  readonly slot: number;
}

/** What `acquire` hands out. */
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

export type BounceDecision = 'none' | 'optional' | 'required';

export interface BounceDecisionOptions {
  /** offset and size are multiples of the IOVA granule (series: untrusted + aligned is not forced) */
  readonly granuleAligned?: boolean;
  /** DMA_ATTR_PERSISTENT_STREAMING: served from the pool, kept mapped (DESIGN.md) */
  readonly persistent?: boolean;
}

export interface BouncePoolStats {
  readonly hits: number;
  readonly misses: number;
  /** misses served by a cached slot of another prot (option) */
  readonly permissionSteals: number;
  /** acquires refused: every slot of the class in use (or cached with another prot) */
  readonly exhausted: number;
  /** acquires refused: larger than the largest class */
  readonly oversize: number;
  /** acquires refused: the page allocator had no block */
  readonly allocFailures: number;
  /** elements walked past by linear cache searches */
  readonly searchSteps: number;
  readonly evictionPasses: number;
  readonly evictions: number;
  readonly fallbacks: number;
  readonly fallbackFailures: number;
  readonly fallbacksInUse: number;
  readonly bytesCopiedToDevice: number;
  readonly bytesCopiedFromDevice: number;
  readonly bytesZeroed: number;
  readonly slotsInUse: number;
  readonly slotsInUsePeak: number;
  readonly slotsCached: number;
  /** slot memory + fallback memory */
  readonly memoryBytesCurrent: number;
  readonly memoryBytesPeak: number;
  readonly fallbackMemoryBytesCurrent: number;
  readonly nextEvictionNs: number;
  readonly alwaysBounceLimitBytes: number;
}

// control words
const K_LIMIT = 0;
const K_REARM = 1;
const K_FALLBACK_COUNT = 2;
const CONTROL_WORDS = 8;
// counters (i64)
const C_HITS = 0;
const C_MISSES = 1;
const C_STEALS = 2;
const C_EXHAUSTED = 3;
const C_OVERSIZE = 4;
const C_ALLOC_FAILURES = 5;
const C_SEARCH_STEPS = 6;
const C_EVICTION_PASSES = 7;
const C_EVICTIONS = 8;
const C_FALLBACKS = 9;
const C_FALLBACK_FAILURES = 10;
const C_FALLBACK_IN_USE = 11;
const C_BYTES_TO_DEVICE = 12;
const C_BYTES_FROM_DEVICE = 13;
const C_BYTES_ZEROED = 14;
const C_SLOTS_IN_USE = 15;
const C_SLOTS_IN_USE_PEAK = 16;
const C_MEMORY = 17;
const C_MEMORY_PEAK = 18;
const C_FALLBACK_MEMORY = 19;
const C_NEXT_EVICTION_NS = 20;
const COUNTERS = 24;
// class header words
const H_CACHE = 0; // 0, 1, 2: RO, WO, RW
const H_EMPTY = 3;
const H_UNTOUCHED = 4;
const H_IN_USE = 5;
const H_CACHED = 6;
const HEADER_WORDS = 8;
const CACHE_LISTS = 3;
// fallback entry fields
const FB_IOVA = 0;
const FB_SIZE = 1;
const FB_GPA = 2;
const FB_ORDER = 3;
const FB_PERM = 4;
const FB_FIELDS = 5;

const NEVER_BIG = BigInt(NEVER_NS);
const EVICTION_RUNNING = -1n;

/** `io_buffer_pool_get_cache`: the cache list for a prot's READ/WRITE bits. */
function cacheListOf(perm: number): number {
  const rw = perm & (IOMMU_READ | IOMMU_WRITE);
  if (rw === IOMMU_READ) return 0;
  if (rw === IOMMU_WRITE) return 1;
  if (rw === 0) throw new RangeError(`IOMMU prot 0x${perm.toString(16)} has neither IOMMU_READ nor IOMMU_WRITE`);
  return 2;
}

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

function log2Int(n: number): number {
  return Math.round(Math.log2(n));
}

/** smallest order whose block holds `bytes` */
function orderFor(bytes: number): number {
  const pages = Math.ceil(bytes / PAGE_SIZE_BYTES);
  return pages <= 1 ? 0 : 32 - Math.clz32(pages - 1);
}

function addPeak(a: BigInt64Array, cur: number, peak: number, delta: bigint): void {
  const now = Atomics.add(a, cur, delta) + delta;
  let p = Atomics.load(a, peak);
  while (now > p) {
    const seen = Atomics.compareExchange(a, peak, p, now);
    if (seen === p) return;
    p = seen;
  }
}

function checkInt(field: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new InputError(field, v, `an integer from ${min} to ${max}`);
  return v;
}

function checkSegments(mem: Uint8Array, segments: readonly DmaSegment[]): number {
  let total = 0;
  for (const s of segments) {
    if (!Number.isInteger(s.gpa) || !Number.isInteger(s.lenBytes) || s.gpa < 0 || s.lenBytes < 0 || s.gpa + s.lenBytes > mem.length) {
      throw new RangeError(`segment {gpa ${s.gpa}, lenBytes ${s.lenBytes}} is not inside guest RAM (${mem.length} bytes)`);
    }
    total += s.lenBytes;
  }
  return total;
}

/**
 * Copy the sub-range [offsetBytes, offsetBytes + lenBytes) of a mapping whose
 * bytes are `segments` back to back, and sit in the bounce buffer from
 * `bufGpa`. Returns the bytes copied.
 */
export function copySegments(mem: Uint8Array, bufGpa: number, segments: readonly DmaSegment[], toBuffer: boolean, offsetBytes: number, lenBytes: number): number {
  const total = checkSegments(mem, segments);
  if (!Number.isInteger(offsetBytes) || !Number.isInteger(lenBytes) || offsetBytes < 0 || lenBytes < 0 || offsetBytes + lenBytes > total) {
    throw new RangeError(`range [${offsetBytes}, +${lenBytes}) is outside the mapping's ${total} bytes`);
  }
  if (bufGpa < 0 || bufGpa + total > mem.length) throw new RangeError(`bounce buffer at gpa ${bufGpa} + ${total} bytes is outside guest RAM`);
  const end = offsetBytes + lenBytes;
  let pos = 0;
  let copied = 0;
  for (const s of segments) {
    const lo = Math.max(offsetBytes, pos);
    const hi = Math.min(end, pos + s.lenBytes);
    if (hi > lo) {
      const caller = s.gpa + (lo - pos);
      const buf = bufGpa + lo;
      if (toBuffer) mem.copyWithin(buf, caller, caller + (hi - lo));
      else mem.copyWithin(caller, buf, buf + (hi - lo));
      copied += hi - lo;
    }
    pos += s.lenBytes;
    if (pos >= end) break;
  }
  return copied;
}

export class BouncePool {
  readonly fallback: FallbackTree;
  private readonly control: Int32Array;
  private readonly counters: BigInt64Array;
  private readonly header: Int32Array;
  private readonly slotGpa: Float64Array;
  private readonly slotState: Int32Array;
  private readonly slotNext: Int32Array;
  private readonly slotPerm: Int32Array;
  /** 1: the slot holds a DMA_ATTR_PERSISTENT_STREAMING mapping — kept mapped, never evicted (but at teardown) */
  private readonly slotPersistent: Int32Array;
  private readonly locks: Mutex[];
  private readonly iovaEnd: number;
  private readonly classIovaBase: number[];

  /** The byte layout for these options. */
  static layoutFor(opts: Pick<BouncePoolHandle, 'numClasses' | 'slotsPerClass' | 'fallbackCapacity'>): Layout {
    const s = opts.numClasses * opts.slotsPerClass;
    return defineLayout('bounce_pool', [
      { name: 'control', kind: 'i32', count: CONTROL_WORDS },
      { name: 'counters', kind: 'f64', count: COUNTERS },
      { name: 'classHeader', kind: 'i32', count: opts.numClasses * HEADER_WORDS },
      { name: 'slotGpa', kind: 'f64', count: s },
      { name: 'slotState', kind: 'i32', count: s },
      { name: 'slotNext', kind: 'i32', count: s },
      { name: 'slotPerm', kind: 'i32', count: s },
      { name: 'slotPersistent', kind: 'i32', count: s },
      { name: 'fallback', kind: 'f64', count: opts.fallbackCapacity * FB_FIELDS },
    ]);
  }

  /** Validate options and fill in the defaults (throws InputError). */
  static config(opts: BouncePoolOptions): Omit<BouncePoolHandle, 'sab'> & { alwaysBounceLimitBytes: number } {
    const minClassBytes = opts.minClassBytes ?? DEFAULT_MIN_CLASS_BYTES;
    const maxClassBytes = opts.maxClassBytes ?? DEFAULT_MAX_CLASS_BYTES;
    if (!isPow2(minClassBytes) || minClassBytes < PAGE_SIZE_BYTES) throw new InputError('bounce.minClassBytes', minClassBytes, 'a power of two ≥ 4096');
    if (!isPow2(maxClassBytes) || maxClassBytes < minClassBytes) throw new InputError('bounce.maxClassBytes', maxClassBytes, `a power of two ≥ minClassBytes (${minClassBytes})`);
    const numClasses = log2Int(maxClassBytes / minClassBytes) + 1;
    if (numClasses > MAX_CLASSES || orderFor(maxClassBytes) > MAX_ORDER) throw new InputError('bounce.maxClassBytes', maxClassBytes, `at most ${PAGE_SIZE_BYTES << MAX_ORDER} bytes and ${MAX_CLASSES} classes`);
    const slotsPerClass = checkInt('bounce.slotsPerClass', opts.slotsPerClass ?? DEFAULT_SLOTS_PER_CLASS, 1, MAX_SLOTS_PER_CLASS);
    const evictionPeriodNs = checkInt('bounce.evictionPeriodNs', opts.evictionPeriodNs ?? DEFAULT_EVICTION_PERIOD_NS, 1, Number.MAX_SAFE_INTEGER);
    const alwaysBounceLimitBytes = checkInt('bounce.alwaysBounceLimitBytes', opts.alwaysBounceLimitBytes ?? DEFAULT_ALWAYS_BOUNCE_LIMIT_BYTES, 0, 0x7fffffff);
    const fallbackCapacity = checkInt('bounce.fallbackCapacity', opts.fallbackCapacity ?? DEFAULT_FALLBACK_CAPACITY, 1, MAX_FALLBACK_CAPACITY);
    const iovaBase = opts.iovaBase;
    const span = slotsPerClass * minClassBytes * (2 ** numClasses - 1);
    if (!Number.isInteger(iovaBase) || iovaBase < 0 || iovaBase % maxClassBytes !== 0 || iovaBase + span > Number.MAX_SAFE_INTEGER) {
      throw new RangeError(`bounce pool IOVA base ${iovaBase} must be a non-negative multiple of ${maxClassBytes} with room for ${span} bytes`);
    }
    return {
      iovaBase,
      minClassBytes,
      numClasses,
      slotsPerClass,
      evictionPeriodNs,
      optimization: opts.optimization ?? true,
      reuseOtherPermissionSlots: opts.reuseOtherPermissionSlots ?? false,
      fallbackCapacity,
      lockSuffix: opts.lockSuffix ?? '',
      alwaysBounceLimitBytes,
    };
  }

  /** Bytes of IOVA space the pool needs for these options (reserve it size-aligned). */
  static iovaSpanBytes(opts: Omit<BouncePoolOptions, 'iovaBase'>): number {
    const c = BouncePool.config({ ...opts, iovaBase: 0 });
    return c.slotsPerClass * c.minClassBytes * (2 ** c.numClasses - 1);
  }

  /** The locks to put in the run's LockTable. */
  static lockSpecs(h: Pick<BouncePoolHandle, 'minClassBytes' | 'numClasses' | 'lockSuffix'>): { name: string; kind: LockKind }[] {
    const specs: { name: string; kind: LockKind }[] = [];
    for (let c = 0; c < h.numClasses; c++) specs.push({ name: bouncePoolClassLockName(h.minClassBytes << c, h.lockSuffix), kind: 'spinlock' });
    specs.push({ name: BOUNCE_POOL_FALLBACK_LOCK + h.lockSuffix, kind: 'spinlock' });
    return specs;
  }

  /** Create the pool's shared state (the lead's side). */
  static allocate(opts: BouncePoolOptions): BouncePoolHandle {
    const { alwaysBounceLimitBytes, ...cfg } = BouncePool.config(opts);
    const region = Region.allocate(BouncePool.layoutFor(cfg));
    region.i32('control')[K_LIMIT] = alwaysBounceLimitBytes;
    const h = region.i32('classHeader');
    for (let c = 0; c < cfg.numClasses; c++) {
      for (let l = 0; l < CACHE_LISTS; l++) h[c * HEADER_WORDS + H_CACHE + l] = -1;
      h[c * HEADER_WORDS + H_EMPTY] = -1;
    }
    region.f64('slotGpa').fill(-1);
    region.i32('slotNext').fill(-1);
    new BigInt64Array(region.sab, region.offsetOf('counters'), COUNTERS)[C_NEXT_EVICTION_NS] = NEVER_BIG;
    return { sab: region.sab, ...cfg };
  }

  /** Join the pool from a vCPU. `lockTable` must hold `BouncePool.lockSpecs(handle)`. */
  static attach(handle: BouncePoolHandle, cpu: number, lockTable: LockTable | LockTableHandle, pageAllocator: PageAllocator, costs: BouncePoolCosts): BouncePool {
    const table = lockTable instanceof LockTable ? lockTable : LockTable.attach(lockTable, cpu);
    return new BouncePool(handle, cpu, table, pageAllocator, costs);
  }

  private constructor(
    readonly handle: BouncePoolHandle,
    readonly cpu: number,
    lockTable: LockTable,
    private readonly pages: PageAllocator,
    private readonly costs: BouncePoolCosts,
  ) {
    const r = Region.attach(BouncePool.layoutFor(handle), handle.sab);
    this.control = r.i32('control');
    this.counters = new BigInt64Array(handle.sab, r.offsetOf('counters'), COUNTERS);
    this.header = r.i32('classHeader');
    this.slotGpa = r.f64('slotGpa');
    this.slotState = r.i32('slotState');
    this.slotNext = r.i32('slotNext');
    this.slotPerm = r.i32('slotPerm');
    this.slotPersistent = r.i32('slotPersistent');
    this.locks = [];
    for (let c = 0; c < handle.numClasses; c++) this.locks.push(lockTable.get(bouncePoolClassLockName(this.classBytes(c), handle.lockSuffix)));
    this.classIovaBase = [];
    let base = handle.iovaBase;
    for (let c = handle.numClasses - 1; c >= 0; c--) {
      this.classIovaBase[c] = base;
      base += handle.slotsPerClass * this.classBytes(c);
    }
    this.iovaEnd = base;
    this.fallback = new FallbackTree(r.i32('control'), r.f64('fallback'), this.counters, lockTable.get(BOUNCE_POOL_FALLBACK_LOCK + handle.lockSuffix), pages, costs, handle.fallbackCapacity);
  }

  get numClasses(): number {
    return this.handle.numClasses;
  }

  get slotsPerClass(): number {
    return this.handle.slotsPerClass;
  }

  classBytes(cls: number): number {
    return this.handle.minClassBytes * 2 ** cls;
  }

  /** IOVA range [iovaBase, iovaEnd) the pool owns. */
  get iovaRange(): { iovaBase: number; iovaEnd: number } {
    return { iovaBase: this.handle.iovaBase, iovaEnd: this.iovaEnd };
  }

  /** Smallest class holding `sizeBytes` (the series: roundup_pow_of_two(PAGE_ALIGN(size))), or -1 if too large. */
  classFor(sizeBytes: number): number {
    if (!Number.isInteger(sizeBytes) || sizeBytes <= 0) throw new RangeError(`mapping size ${sizeBytes} must be a positive integer`);
    const units = Math.ceil(sizeBytes / this.handle.minClassBytes);
    const cls = units <= 1 ? 0 : 32 - Math.clz32(units - 1);
    return cls < this.handle.numClasses ? cls : -1;
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
    if (!(iova >= this.handle.iovaBase && iova < this.iovaEnd)) return null;
    const units = Math.ceil((this.iovaEnd - iova) / this.handle.minClassBytes);
    const cls = 31 - Math.clz32(Math.ceil(units / this.handle.slotsPerClass));
    const bytes = this.classBytes(cls);
    const rel = iova - this.classIovaBase[cls];
    const slot = Math.floor(rel / bytes);
    return { cls, slot, offsetBytes: rel - slot * bytes };
  }

  /** Current `always_bounce_limit` (a 0644 module parameter: read on every mapping). */
  alwaysBounceLimitBytes(): number {
    return Atomics.load(this.control, K_LIMIT);
  }

  /** Write the knob (sysfs `/sys/module/.../parameters/always_bounce_limit`). */
  setAlwaysBounceLimit(bytes: number): void {
    Atomics.store(this.control, K_LIMIT, checkInt('always_bounce_limit', bytes, 0, 0x7fffffff));
  }

  /**
   * `use_bounce_buffer` + `force_bounce` of io-bounce-buffers.c: 'required'
   * (untrusted: fall back to the fallback tree if the pool cannot serve),
   * 'optional' (trusted, ≤ always_bounce_limit: the normal path if the pool
   * cannot serve) or 'none'.
   */
  bounceDecision(sizeBytes: number, trusted: boolean, opts: BounceDecisionOptions = {}): BounceDecision {
    // DESIGN.md: a DMA_ATTR_PERSISTENT_STREAMING mapping is served from the pool (whatever
    // its size against always_bounce_limit) and stays mapped; the 2021 series instead
    // exempted such mappings from bouncing (patch 8/9)
    if (opts.persistent) return 'required';
    const force = !trusted && !opts.granuleAligned;
    if (force) return 'required';
    if (this.handle.optimization && sizeBytes <= this.alwaysBounceLimitBytes()) return 'optional';
    return 'none';
  }

  shouldBounce(sizeBytes: number, trusted: boolean, opts: BounceDecisionOptions = {}): boolean {
    return this.bounceDecision(sizeBytes, trusted, opts) !== 'none';
  }

  /**
   * `io_buffer_manager_alloc_slot`: a slot of the smallest class ≥ size for a
   * mapping with IOMMU prot `perm`, or null (class full, oversize, no memory).
   */
  acquire(sizeBytes: number, perm: number, clock: ModelClock, attrs: { readonly persistent?: boolean } = {}): BounceSlot | null {
    const list = cacheListOf(perm);
    const cls = this.classFor(sizeBytes);
    if (cls < 0) {
      Atomics.add(this.counters, C_OVERSIZE, 1n);
      return null;
    }
    const n = this.handle.slotsPerClass;
    const h = cls * HEADER_WORDS;
    const hdr = this.header;
    const next = this.slotNext;
    const lock = this.locks[cls];
    let g = -1;
    let kind: 'hit' | 'empty' | 'steal' = 'hit';
    let oldPerm = 0;
    lock.lock(clock);
    try {
      clock.charge(this.costs.bouncePoolListOpNs);
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
        clock.charge(steps * this.costs.bouncePoolListOpNs);
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
      } else if (this.handle.reuseOtherPermissionSlots) {
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
      // DMA_ATTR_PERSISTENT_STREAMING (DESIGN.md): the mapping stays in the pool's IOVA for reuse
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
      clock.charge(((classBytes / PAGE_SIZE_BYTES - 1) * this.costs.guestPageAllocNs) / 2);
      this.slotGpa[g] = gpa;
      fresh = true;
      addPeak(this.counters, C_MEMORY, C_MEMORY_PEAK, BigInt(classBytes));
    }
    Atomics.add(this.counters, kind === 'hit' ? C_HITS : C_MISSES, 1n);
    if (kind === 'steal') Atomics.add(this.counters, C_STEALS, 1n);
    addPeak(this.counters, C_SLOTS_IN_USE, C_SLOTS_IN_USE_PEAK, 1n);
    const slot = g - cls * n;
    return {
      cls,
      slot,
      classBytes,
      iova: this.classIovaBase[cls] + slot * classBytes,
      gpa: this.slotGpa[g],
      perm,
      needsMap: kind !== 'hit',
      fresh,
      needsUnmapFirst: kind === 'steal',
      oldPerm,
    };
  }

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
      clock.charge(this.costs.bouncePoolListOpNs);
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
    Atomics.sub(this.counters, C_SLOTS_IN_USE, 1n);
    this.armEviction(clock.nowNs());
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
    Atomics.sub(this.counters, C_SLOTS_IN_USE, 1n);
  }

  /**
   * `__io_buffer_manager_evict`: one pass over every class and cache list.
   * Cached slots become old; slots that were already old (idle for a whole
   * period) leave the cache and are returned: send the IOMMU unmap for each,
   * then call `finishEviction`. `teardown` evicts every cached slot
   * (`io_buffer_manager_destroy`). Another pass already running: returns [].
   */
  evictionPass(nowNs: number, clock: ModelClock, teardown = false): EvictedSlot[] {
    if (Atomics.exchange(this.counters, C_NEXT_EVICTION_NS, EVICTION_RUNNING) === EVICTION_RUNNING) return [];
    const out: EvictedSlot[] = [];
    let requeue = false;
    const next = this.slotNext;
    const state = this.slotState;
    for (let cls = 0; cls < this.handle.numClasses; cls++) {
      const h = cls * HEADER_WORDS;
      const lock = this.locks[cls];
      lock.lock(clock);
      try {
        clock.charge(this.costs.bouncePoolListOpNs);
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
            const slot = cur - cls * this.handle.slotsPerClass;
            out.push({ cls, slot, iova: this.classIovaBase[cls] + slot * this.classBytes(cls), sizeBytes: this.classBytes(cls), perm: this.slotPerm[cur], gpa: this.slotGpa[cur] });
          }
          let tail = prev;
          for (const k of keep) {
            if (tail === -1) this.header[h + H_CACHE + l] = k;
            else next[tail] = k;
            next[k] = -1;
            tail = k;
          }
        }
        if (walked > 0) clock.charge(walked * this.costs.bouncePoolListOpNs);
      } finally {
        lock.unlock(clock);
      }
    }
    for (const e of out) this.slotNext[this.globalOf(e)] = -1;
    Atomics.add(this.counters, C_EVICTION_PASSES, 1n);
    Atomics.add(this.counters, C_EVICTIONS, BigInt(out.length));
    const again = BigInt(Math.floor(nowNs + this.handle.evictionPeriodNs));
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

  /** Model time of the next eviction pass, NEVER_NS if none is pending. */
  nextEvictionNs(): number {
    const v = Atomics.load(this.counters, C_NEXT_EVICTION_NS);
    return v === EVICTION_RUNNING ? NEVER_NS : Number(v);
  }

  /** Copy the caller's bytes into the slot (map time, TO_DEVICE / BIDIRECTIONAL). */
  bounceToDevice(mem: Uint8Array, slotGpa: number, segments: readonly DmaSegment[], clock: ModelClock, slotOffsetBytes = 0): number {
    const total = checkSegments(mem, segments);
    return this.copy(mem, slotGpa + slotOffsetBytes, segments, true, 0, total, clock);
  }

  /** Copy the slot's bytes back to the caller (unmap time, FROM_DEVICE / BIDIRECTIONAL). */
  bounceFromDevice(mem: Uint8Array, slotGpa: number, segments: readonly DmaSegment[], clock: ModelClock, slotOffsetBytes = 0): number {
    const total = checkSegments(mem, segments);
    return this.copy(mem, slotGpa + slotOffsetBytes, segments, false, 0, total, clock);
  }

  /**
   * `io_bounce_buffers_sync_single`/`_sync_sg` (dma_sync_*_for_cpu/device):
   * copy only [offsetBytes, offsetBytes + lenBytes) of the mapping, and only
   * if the direction calls for it (`dmaSyncCopies`). Returns bytes copied.
   */
  syncRange(mem: Uint8Array, slotGpa: number, segments: readonly DmaSegment[], offsetBytes: number, lenBytes: number, dir: DmaDirection, forCpu: boolean, clock: ModelClock, slotOffsetBytes = 0): number {
    if (!dmaSyncCopies(dir, forCpu)) return 0;
    return this.copy(mem, slotGpa + slotOffsetBytes, segments, !forCpu, offsetBytes, lenBytes, clock);
  }

  /**
   * `io_bounce_buffers_clear_padding`: zero [0, dataStartBytes) and
   * [dataEndBytes, sizeBytes) of the buffer. Returns bytes zeroed.
   */
  clearPadding(mem: Uint8Array, bufGpa: number, sizeBytes: number, dataStartBytes: number, dataEndBytes: number, clock: ModelClock): number {
    if (!(0 <= dataStartBytes && dataStartBytes <= dataEndBytes && dataEndBytes <= sizeBytes) || bufGpa < 0 || bufGpa + sizeBytes > mem.length) {
      throw new RangeError(`padding [0, ${dataStartBytes}) + [${dataEndBytes}, ${sizeBytes}) of gpa ${bufGpa} is not a valid range`);
    }
    mem.fill(0, bufGpa, bufGpa + dataStartBytes);
    mem.fill(0, bufGpa + dataEndBytes, bufGpa + sizeBytes);
    const zeroed = dataStartBytes + (sizeBytes - dataEndBytes);
    if (zeroed > 0) {
      clock.charge(zeroed / this.costs.memsetBytesPerNs);
      Atomics.add(this.counters, C_BYTES_ZEROED, BigInt(zeroed));
    }
    return zeroed;
  }

  /**
   * The copy work of `io_bounce_buffers_map_page`/`_map_sg` for a buffer from
   * `acquire` (or the fallback tree): the caller's bytes go in for TO_DEVICE
   * and BIDIRECTIONAL (unless DMA_ATTR_SKIP_CPU_SYNC); for an untrusted device
   * a fresh buffer has its padding cleared — all of it when the sync was
   * skipped. The mapping's data sits at `slotOffsetBytes` (map_page: the
   * offset in the page; the device address is iova + slotOffsetBytes).
   */
  bounceOnMap(
    mem: Uint8Array,
    buf: { readonly gpa: number; readonly sizeBytes: number; readonly fresh: boolean },
    segments: readonly DmaSegment[],
    dir: DmaDirection,
    opts: { readonly untrusted: boolean; readonly slotOffsetBytes?: number; readonly skipCpuSync?: boolean },
    clock: ModelClock,
  ): { copiedBytes: number; zeroedBytes: number } {
    const offset = opts.slotOffsetBytes ?? 0;
    const total = checkSegments(mem, segments);
    if (offset + total > buf.sizeBytes) throw new RangeError(`mapping of ${total} bytes at offset ${offset} does not fit a ${buf.sizeBytes}-byte bounce buffer`);
    let copiedBytes = 0;
    if (!opts.skipCpuSync && dmaSyncCopies(dir, false)) copiedBytes = this.copy(mem, buf.gpa + offset, segments, true, 0, total, clock);
    let zeroedBytes = 0;
    if (opts.untrusted && buf.fresh && (offset > 0 || offset + total < buf.sizeBytes || opts.skipCpuSync)) {
      zeroedBytes = opts.skipCpuSync ? this.clearPadding(mem, buf.gpa, buf.sizeBytes, 0, 0, clock) : this.clearPadding(mem, buf.gpa, buf.sizeBytes, offset, offset + total, clock);
    }
    return { copiedBytes, zeroedBytes };
  }

  /** The copy work of `io_bounce_buffers_unmap_page`/`_unmap_sg`: bytes out for FROM_DEVICE and BIDIRECTIONAL. */
  bounceOnUnmap(mem: Uint8Array, bufGpa: number, segments: readonly DmaSegment[], dir: DmaDirection, opts: { readonly slotOffsetBytes?: number; readonly skipCpuSync?: boolean }, clock: ModelClock): number {
    if (opts.skipCpuSync || !dmaSyncCopies(dir, true)) return 0;
    return this.bounceFromDevice(mem, bufGpa, segments, clock, opts.slotOffsetBytes ?? 0);
  }

  /** State of one slot (diagnostics and tests). */
  slotInfo(cls: number, slot: number): { state: SlotStateValue; stateName: string; perm: number; gpa: number } {
    this.checkRef(cls, slot);
    const g = cls * this.handle.slotsPerClass + slot;
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
      return { inUse: this.header[h + H_IN_USE], cached: this.header[h + H_CACHED], untouched: this.handle.slotsPerClass - this.header[h + H_UNTOUCHED], empty };
    } finally {
      lock.unlock();
    }
  }

  stats(): BouncePoolStats {
    const c = (i: number): number => Number(Atomics.load(this.counters, i));
    let cached = 0;
    for (let cls = 0; cls < this.handle.numClasses; cls++) cached += Atomics.load(this.header, cls * HEADER_WORDS + H_CACHED);
    return {
      hits: c(C_HITS),
      misses: c(C_MISSES),
      permissionSteals: c(C_STEALS),
      exhausted: c(C_EXHAUSTED),
      oversize: c(C_OVERSIZE),
      allocFailures: c(C_ALLOC_FAILURES),
      searchSteps: c(C_SEARCH_STEPS),
      evictionPasses: c(C_EVICTION_PASSES),
      evictions: c(C_EVICTIONS),
      fallbacks: c(C_FALLBACKS),
      fallbackFailures: c(C_FALLBACK_FAILURES),
      fallbacksInUse: c(C_FALLBACK_IN_USE),
      bytesCopiedToDevice: c(C_BYTES_TO_DEVICE),
      bytesCopiedFromDevice: c(C_BYTES_FROM_DEVICE),
      bytesZeroed: c(C_BYTES_ZEROED),
      slotsInUse: c(C_SLOTS_IN_USE),
      slotsInUsePeak: c(C_SLOTS_IN_USE_PEAK),
      slotsCached: cached,
      memoryBytesCurrent: c(C_MEMORY),
      memoryBytesPeak: c(C_MEMORY_PEAK),
      fallbackMemoryBytesCurrent: c(C_FALLBACK_MEMORY),
      nextEvictionNs: this.nextEvictionNs(),
      alwaysBounceLimitBytes: this.alwaysBounceLimitBytes(),
    };
  }

  /** @internal shared by the fallback tree */
  copy(mem: Uint8Array, bufGpa: number, segments: readonly DmaSegment[], toBuffer: boolean, offsetBytes: number, lenBytes: number, clock: ModelClock): number {
    const n = copySegments(mem, bufGpa, segments, toBuffer, offsetBytes, lenBytes);
    if (n > 0) {
      clock.charge(n / this.costs.memcpyBytesPerNs);
      Atomics.add(this.counters, toBuffer ? C_BYTES_TO_DEVICE : C_BYTES_FROM_DEVICE, BigInt(n));
    }
    return n;
  }

  private armEviction(nowNs: number): void {
    const c = this.counters;
    const at = BigInt(Math.floor(nowNs + this.handle.evictionPeriodNs));
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
    clock.charge(((bytes / PAGE_SIZE_BYTES - 1) * this.costs.guestPageAllocNs) / 2);
    Atomics.sub(this.counters, C_MEMORY, BigInt(bytes));
  }

  private pushEmpty(cls: number, g: number, clock: ModelClock): void {
    const h = cls * HEADER_WORDS;
    const lock = this.locks[cls];
    lock.lock(clock);
    try {
      clock.charge(this.costs.bouncePoolListOpNs);
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
      const cls = Math.floor(g / this.handle.slotsPerClass);
      throw new Error(`${op}: slot ${cls}/${g - cls * this.handle.slotsPerClass} is ${STATE_NAMES[s]}, not ${STATE_NAMES[want]}`);
    }
  }

  private checkRef(cls: number, slot: number): void {
    if (!Number.isInteger(cls) || cls < 0 || cls >= this.handle.numClasses || !Number.isInteger(slot) || slot < 0 || slot >= this.handle.slotsPerClass) {
      throw new RangeError(`slot ${cls}/${slot} outside ${this.handle.numClasses} classes × ${this.handle.slotsPerClass} slots`);
    }
  }

  private globalOf(ref: SlotRef): number {
    this.checkRef(ref.cls, ref.slot);
    return ref.cls * this.handle.slotsPerClass + ref.slot;
  }
}

/**
 * The fallback tree of the series (`fallback_buffers` rbtree under
 * `fallback_lock`): single-use bounce buffers for mappings that must bounce
 * (untrusted devices) when the pool cannot serve them — a full class, or a
 * size above the largest class. Memory comes from the page allocator per
 * mapping and is freed at unmap; the IOVA comes from the normal allocator
 * (the caller's). Modelled as a sorted array in the pool's SAB with binary
 * search (same lookups as the rbtree; capacity `fallbackCapacity`). The
 * pool's copy helpers (`bounceOnMap`, `bounceOnUnmap`, `syncRange`) serve
 * fallback buffers too: pass `{ gpa, sizeBytes: mapBytes, fresh: true }`.
 */
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
    cacheListOf(perm);
    if (!Number.isInteger(iova) || iova < 0 || !Number.isInteger(sizeBytes) || sizeBytes <= 0) throw new RangeError(`fallback mapping [${iova}, +${sizeBytes}) is not valid`);
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
    clock.charge(((pages - 1) * this.costs.guestPageAllocNs) / 2);
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
        if (before >= 0 && e[before * FB_FIELDS + FB_IOVA] + e[before * FB_FIELDS + FB_SIZE] > iova) collision = `[${e[before * FB_FIELDS + FB_IOVA]}, +${e[before * FB_FIELDS + FB_SIZE]})`;
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
      clock.charge(((pages - 1) * this.costs.guestPageAllocNs) / 2);
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
      clock.charge(((Math.ceil(found.sizeBytes / PAGE_SIZE_BYTES) - 1) * this.costs.guestPageAllocNs) / 2);
      Atomics.sub(this.counters, C_FALLBACK_IN_USE, 1n);
      Atomics.sub(this.counters, C_FALLBACK_MEMORY, BigInt(found.allocBytes));
      Atomics.sub(this.counters, C_MEMORY, BigInt(found.allocBytes));
    }
    return found;
  }

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
    return { iova: e[b + FB_IOVA], sizeBytes, mapBytes: Math.ceil(sizeBytes / PAGE_SIZE_BYTES) * PAGE_SIZE_BYTES, gpa: e[b + FB_GPA], allocBytes: PAGE_SIZE_BYTES << e[b + FB_ORDER], perm: e[b + FB_PERM] };
  }
}
