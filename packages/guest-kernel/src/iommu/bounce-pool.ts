/**
 * The dynamic IOMMU bounce-buffer pool of one IOMMU domain (strategy `bounce`).
 *
 * Models David Stevens' series "Add dynamic iommu backed bounce buffers" (v2,
 * Aug 2021), which splits the pool into a buffer manager
 * (`io-buffer-manager.c`: slots and fallback tree) and the bounce code
 * (`io-bounce-buffers.c`). The model keeps that split and gives the buffer
 * manager's fallback tree a file of its own:
 * - `bounce-pool/slots.ts`: the buffer manager's slots: size classes, slot
 *   states, per-class locks, the per-prot caches, eviction;
 * - `bounce-pool/copy.ts`: the bounce copies and padding rules
 *   (`io-bounce-buffers.c`);
 * - `bounce-pool/fallback.ts`: the buffer manager's fallback tree of
 *   single-use buffers for untrusted devices;
 * - `bounce-pool/region.ts`: the control words and counters they share;
 * - `bounce-pool/dma-direction.ts`: DMA directions and `dma_info_to_prot`.
 * This file composes them into `BouncePool`, one vCPU's handle on the pool,
 * and holds the decision whether a mapping bounces at all (`use_bounce_buffer`
 * + `force_bounce` of `io-bounce-buffers.c`):
 * - Trusted devices bounce a mapping of at most `always_bounce_limit` bytes
 *   (a 0644 module parameter, read on every mapping) when
 *   CONFIG_IOMMU_BOUNCE_BUFFERS is on (`optimization`); if the pool cannot
 *   serve it, the mapping takes the normal path.
 * - Untrusted devices must bounce: if the pool cannot serve the mapping, a
 *   buffer of the fallback tree does. The series forces this only for
 *   mappings whose offset or size is not IOVA-granule aligned, as swiotlb
 *   does; `bounceDecision` takes `granuleAligned` for that case, and without
 *   it an untrusted mapping always bounces, so the device never reaches the
 *   caller's own pages.
 * - DMA_ATTR_PERSISTENT_STREAMING: the mapping is served from the pool
 *   whatever its size against always_bounce_limit, and its slot stays cached
 *   and mapped through eviction passes (teardown still evicts it): a buffer
 *   that is mapped again and again finds its slot mapped and costs no IOMMU
 *   map after the first. The 2021 series made the flag skip the optional
 *   bounce buffers instead (patch 8/9).
 *
 * Costs (charged to the caller's clock) are listed in each part; together:
 * `bouncePoolListOpNs`, `memcpyBytesPerNs`, `memsetBytesPerNs`,
 * `guestPageAllocNs` and `iovaRbtreeOpNs` of the cost profile.
 *
 * SAB layout (`BouncePool.layoutFor(opts)`; each part's file has its rows,
 * `describeLayout` prints exact offsets): control, counters (region.ts),
 * classHeader, slotGpa, slotState, slotNext, slotPerm, slotPersistent
 * (slots.ts), fallback (fallback.ts).
 */

import { defineLayout, InputError, type Layout, type LockKind, LockTable, type LockTableHandle, type ModelClock, PAGE_SIZE_BYTES, Region } from '@vmstack/shm';
import type { LastLevelCache } from '../mm/llc.js';
import { BounceCopies, type DmaSegment } from './bounce-pool/copy.js';
import type { DmaDirection } from './bounce-pool/dma-direction.js';
import { BOUNCE_POOL_FALLBACK_LOCK, DEFAULT_FALLBACK_CAPACITY, FallbackTree, fallbackFields, MAX_FALLBACK_CAPACITY } from './bounce-pool/fallback.js';
import {
  type BouncePoolCosts,
  C_ALLOC_FAILURES,
  C_BYTES_FROM_DEVICE,
  C_BYTES_TO_DEVICE,
  C_BYTES_ZEROED,
  C_EVICTION_PASSES,
  C_EVICTIONS,
  C_EXHAUSTED,
  C_FALLBACK_FAILURES,
  C_FALLBACK_IN_USE,
  C_FALLBACK_MEMORY,
  C_FALLBACKS,
  C_HITS,
  C_MEMORY,
  C_MEMORY_PEAK,
  C_MISSES,
  C_OVERSIZE,
  C_SEARCH_STEPS,
  C_SLOTS_IN_USE,
  C_SLOTS_IN_USE_PEAK,
  C_STEALS,
  COUNTERS,
  K_LIMIT,
  MAX_ORDER,
  orderFor,
  type PageAllocator,
  sharedFields,
} from './bounce-pool/region.js';
import {
  bouncePoolClassLockName,
  DEFAULT_EVICTION_PERIOD_NS,
  DEFAULT_MAX_CLASS_BYTES,
  DEFAULT_MIN_CLASS_BYTES,
  DEFAULT_SLOTS_PER_CLASS,
  IoBufferManager,
  io_buffer_manager_init,
  MAX_CLASSES,
  MAX_SLOTS_PER_CLASS,
  slotFields,
  slotsIovaSpanBytes,
} from './bounce-pool/slots.js';

export { copySegments, type DmaSegment, dmaSyncCopies } from './bounce-pool/copy.js';
export {
  DMA_BIDIRECTIONAL,
  DMA_FROM_DEVICE,
  DMA_TO_DEVICE,
  type DmaDirection,
  dma_info_to_prot,
  IOMMU_CACHE,
  IOMMU_MMIO,
  IOMMU_NOEXEC,
} from './bounce-pool/dma-direction.js';
export { BOUNCE_POOL_FALLBACK_LOCK, DEFAULT_FALLBACK_CAPACITY, type FallbackBuffer, FallbackTree } from './bounce-pool/fallback.js';
export type { BouncePoolCosts, PageAllocator } from './bounce-pool/region.js';
export {
  BOUNCE_POOL_CLASS_LOCK_PREFIX,
  type BounceSlot,
  bouncePoolClassLockName,
  DEFAULT_EVICTION_PERIOD_NS,
  DEFAULT_MAX_CLASS_BYTES,
  DEFAULT_MIN_CLASS_BYTES,
  DEFAULT_SLOTS_PER_CLASS,
  type EvictedSlot,
  type SlotRef,
  SlotState,
  type SlotStateValue,
} from './bounce-pool/slots.js';

/** `always_bounce_limit` module parameter default: PAGE_SIZE */
export const DEFAULT_ALWAYS_BOUNCE_LIMIT_BYTES = 4096;

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

export type BounceDecision = 'none' | 'optional' | 'required';

export interface BounceDecisionOptions {
  /** offset and size are multiples of the IOVA granule (series: untrusted + aligned is not forced) */
  readonly granuleAligned?: boolean;
  /** DMA_ATTR_PERSISTENT_STREAMING: served from the pool, kept mapped */
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

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

function log2Int(n: number): number {
  return Math.round(Math.log2(n));
}

function checkInt(field: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new InputError(field, v, `an integer from ${min} to ${max}`);
  return v;
}

/** One vCPU's handle on the pool: the slots (inherited), the bounce copies and the fallback tree. */
export class BouncePool extends IoBufferManager {
  readonly fallback: FallbackTree;
  private readonly copies: BounceCopies;

  /** The byte layout for these options. */
  static layoutFor(opts: Pick<BouncePoolHandle, 'numClasses' | 'slotsPerClass' | 'fallbackCapacity'>): Layout {
    return defineLayout('bounce_pool', [...sharedFields(), ...slotFields(opts.numClasses, opts.slotsPerClass), ...fallbackFields(opts.fallbackCapacity)]);
  }

  /** Validate options and fill in the defaults (throws InputError). */
  static config(opts: BouncePoolOptions): Omit<BouncePoolHandle, 'sab'> & { alwaysBounceLimitBytes: number } {
    const minClassBytes = opts.minClassBytes ?? DEFAULT_MIN_CLASS_BYTES;
    const maxClassBytes = opts.maxClassBytes ?? DEFAULT_MAX_CLASS_BYTES;
    if (!isPow2(minClassBytes) || minClassBytes < PAGE_SIZE_BYTES) throw new InputError('bounce.minClassBytes', minClassBytes, 'a power of two ≥ 4096');
    if (!isPow2(maxClassBytes) || maxClassBytes < minClassBytes)
      throw new InputError('bounce.maxClassBytes', maxClassBytes, `a power of two ≥ minClassBytes (${minClassBytes})`);
    const numClasses = log2Int(maxClassBytes / minClassBytes) + 1;
    if (numClasses > MAX_CLASSES || orderFor(maxClassBytes) > MAX_ORDER)
      throw new InputError('bounce.maxClassBytes', maxClassBytes, `at most ${PAGE_SIZE_BYTES << MAX_ORDER} bytes and ${MAX_CLASSES} classes`);
    const slotsPerClass = checkInt('bounce.slotsPerClass', opts.slotsPerClass ?? DEFAULT_SLOTS_PER_CLASS, 1, MAX_SLOTS_PER_CLASS);
    const evictionPeriodNs = checkInt('bounce.evictionPeriodNs', opts.evictionPeriodNs ?? DEFAULT_EVICTION_PERIOD_NS, 1, Number.MAX_SAFE_INTEGER);
    const alwaysBounceLimitBytes = checkInt('bounce.alwaysBounceLimitBytes', opts.alwaysBounceLimitBytes ?? DEFAULT_ALWAYS_BOUNCE_LIMIT_BYTES, 0, 0x7fffffff);
    const fallbackCapacity = checkInt('bounce.fallbackCapacity', opts.fallbackCapacity ?? DEFAULT_FALLBACK_CAPACITY, 1, MAX_FALLBACK_CAPACITY);
    const iovaBase = opts.iovaBase;
    const span = slotsIovaSpanBytes(minClassBytes, numClasses, slotsPerClass);
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
    return slotsIovaSpanBytes(c.minClassBytes, c.numClasses, c.slotsPerClass);
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
    io_buffer_manager_init(region, countersOf(region), cfg.numClasses);
    return { sab: region.sab, ...cfg };
  }

  /** Join the pool from a vCPU. `lockTable` must hold `BouncePool.lockSpecs(handle)`. */
  static attach(
    handle: BouncePoolHandle,
    cpu: number,
    lockTable: LockTable | LockTableHandle,
    pageAllocator: PageAllocator,
    costs: BouncePoolCosts,
    cache: LastLevelCache | null = null,
  ): BouncePool {
    const table = lockTable instanceof LockTable ? lockTable : LockTable.attach(lockTable, cpu);
    const region = Region.attach(BouncePool.layoutFor(handle), handle.sab);
    return new BouncePool(handle, cpu, region, table, pageAllocator, costs, cache);
  }

  private constructor(
    readonly handle: BouncePoolHandle,
    readonly cpu: number,
    region: Region,
    lockTable: LockTable,
    pages: PageAllocator,
    costs: BouncePoolCosts,
    cache: LastLevelCache | null,
  ) {
    const counters = countersOf(region);
    super(handle, region, counters, lockTable, pages, costs);
    this.copies = new BounceCopies(counters, costs, cache);
    this.fallback = new FallbackTree(
      this.control,
      region.f64('fallback'),
      counters,
      lockTable.get(BOUNCE_POOL_FALLBACK_LOCK + handle.lockSuffix),
      pages,
      costs,
      handle.fallbackCapacity,
    );
  }

  /** Current `always_bounce_limit` (a 0644 module parameter: read on every mapping). */
  alwaysBounceLimitBytes(): number {
    return Atomics.load(this.control, K_LIMIT);
  }

  /**
   * Write the knob (sysfs `/sys/module/.../parameters/always_bounce_limit`).
   * With a clock, the write waits first in the lock table's gate: the other
   * vCPUs' mappings see it in model-time order.
   */
  setAlwaysBounceLimit(bytes: number, clock?: ModelClock): void {
    this.lockTable.gate(clock);
    Atomics.store(this.control, K_LIMIT, checkInt('always_bounce_limit', bytes, 0, 0x7fffffff));
  }

  /**
   * `use_bounce_buffer` + `force_bounce` of io-bounce-buffers.c: 'required'
   * (untrusted or persistent: fall back to the fallback tree if the pool
   * cannot serve), 'optional' (trusted, ≤ always_bounce_limit: the normal
   * path if the pool cannot serve) or 'none'.
   */
  bounceDecision(sizeBytes: number, trusted: boolean, opts: BounceDecisionOptions = {}): BounceDecision {
    if (opts.persistent) return 'required';
    const force = !trusted && !opts.granuleAligned;
    if (force) return 'required';
    if (this.handle.optimization && sizeBytes <= this.alwaysBounceLimitBytes()) return 'optional';
    return 'none';
  }

  shouldBounce(sizeBytes: number, trusted: boolean, opts: BounceDecisionOptions = {}): boolean {
    return this.bounceDecision(sizeBytes, trusted, opts) !== 'none';
  }

  /** Copy the caller's bytes into the slot (map time, TO_DEVICE / BIDIRECTIONAL). */
  bounceToDevice(mem: Uint8Array, slotGpa: number, segments: readonly DmaSegment[], clock: ModelClock, slotOffsetBytes = 0): number {
    return this.copies.bounceToDevice(mem, slotGpa, segments, clock, slotOffsetBytes);
  }

  /** Copy the slot's bytes back to the caller (unmap time, FROM_DEVICE / BIDIRECTIONAL). */
  bounceFromDevice(mem: Uint8Array, slotGpa: number, segments: readonly DmaSegment[], clock: ModelClock, slotOffsetBytes = 0): number {
    return this.copies.bounceFromDevice(mem, slotGpa, segments, clock, slotOffsetBytes);
  }

  /** `io_bounce_buffers_sync_single`/`_sync_sg`: see `BounceCopies.syncRange`. */
  syncRange(
    mem: Uint8Array,
    slotGpa: number,
    segments: readonly DmaSegment[],
    offsetBytes: number,
    lenBytes: number,
    dir: DmaDirection,
    forCpu: boolean,
    clock: ModelClock,
    slotOffsetBytes = 0,
  ): number {
    return this.copies.syncRange(mem, slotGpa, segments, offsetBytes, lenBytes, dir, forCpu, clock, slotOffsetBytes);
  }

  /** `io_bounce_buffers_clear_padding`: see `BounceCopies.clearPadding`. */
  clearPadding(mem: Uint8Array, bufGpa: number, sizeBytes: number, dataStartBytes: number, dataEndBytes: number, clock: ModelClock): number {
    return this.copies.clearPadding(mem, bufGpa, sizeBytes, dataStartBytes, dataEndBytes, clock);
  }

  /** The copy work of `io_bounce_buffers_map_page`/`_map_sg`: see `BounceCopies.bounceOnMap` (the result object is reused by the next call). */
  bounceOnMap(
    mem: Uint8Array,
    buf: { readonly gpa: number; readonly sizeBytes: number; readonly fresh: boolean },
    segments: readonly DmaSegment[],
    dir: DmaDirection,
    opts: { readonly untrusted: boolean; readonly slotOffsetBytes?: number; readonly skipCpuSync?: boolean },
    clock: ModelClock,
  ): { readonly copiedBytes: number; readonly zeroedBytes: number } {
    return this.copies.bounceOnMap(mem, buf, segments, dir, opts, clock);
  }

  /** The copy work of `io_bounce_buffers_unmap_page`/`_unmap_sg`: bytes out for FROM_DEVICE and BIDIRECTIONAL. */
  bounceOnUnmap(
    mem: Uint8Array,
    bufGpa: number,
    segments: readonly DmaSegment[],
    dir: DmaDirection,
    opts: { readonly slotOffsetBytes?: number; readonly skipCpuSync?: boolean },
    clock: ModelClock,
  ): number {
    return this.copies.bounceOnUnmap(mem, bufGpa, segments, dir, opts, clock);
  }

  stats(): BouncePoolStats {
    const c = (i: number): number => Number(Atomics.load(this.counters, i));
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
      slotsCached: this.slotsCached(),
      memoryBytesCurrent: c(C_MEMORY),
      memoryBytesPeak: c(C_MEMORY_PEAK),
      fallbackMemoryBytesCurrent: c(C_FALLBACK_MEMORY),
      nextEvictionNs: this.nextEvictionNs(),
      alwaysBounceLimitBytes: this.alwaysBounceLimitBytes(),
    };
  }
}

/** The i64 view of the region's counters (an f64 field, for BigInt64 Atomics). */
function countersOf(region: Region): BigInt64Array {
  return new BigInt64Array(region.sab, region.offsetOf('counters'), COUNTERS);
}
