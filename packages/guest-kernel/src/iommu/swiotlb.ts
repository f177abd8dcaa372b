/**
 * swiotlb: the preallocated bounce area Linux uses for untrusted devices
 * behind an IOMMU (the baseline the pool is compared with). Models
 * kernel/dma/swiotlb.c as of 5.15 (`swiotlb_find_slots`, `swiotlb_release_slots`,
 * `swiotlb_bounce`, `swiotlb_tbl_map_single`, `swiotlb_tbl_unmap_single`,
 * `swiotlb_sync_single_for_cpu/device`); 5.10's `swiotlb_tbl_map_single` does
 * the same search with global arrays.
 *
 * The area: `sizeBytes` of guest RAM at `areaGpa` (default 64 MiB,
 * IO_TLB_DEFAULT_SIZE), reserved at boot, never returned. It is cut into
 * 2 KiB slots (IO_TLB_SHIFT 11) grouped in segments of 128 slots
 * (IO_TLB_SEGSIZE): an allocation never crosses a segment boundary, so the
 * largest mapping is 256 KiB. `list[i]` is the number of free slots from i to
 * the end of its segment (0 = taken); `index` is the hint where the next
 * search starts, wrapping at the end. The search strides by one slot, or by a
 * page (2 slots) for allocations of a page or more; with a device
 * min_align_mask (nvme-pci sets 4 KiB − 1) the stride and a slot-alignment
 * check follow 5.15 exactly. Cost: `swiotlbSlotSearchNs` per search (lock +
 * scan; the probes are counted in `probes`), `bouncePoolListOpNs` per release
 * (the lock + list update, the same shape as a pool list operation).
 *
 * Copies: real bytes between the caller's gpa and the slot, charged by where
 * the bytes are (`mm/llc.ts`), outside `io_tlb_mem->lock` as in the kernel (only the
 * slot search and release take it). Sub-range syncs use the per-slot
 * `orig_addr`, with the offset handling of the later fix "swiotlb: manipulate
 * orig_addr when tlb_addr has offset"; a sync the kernel would refuse
 * (dev_WARN_ONCE) copies nothing and counts in `syncErrors`.
 * `clearPadding` is the padding clean-up `iommu_dma_map_page` (5.15,
 * dma-iommu.c) does after `swiotlb_tbl_map_single` for an untrusted device.
 *
 * Differences from the kernel, on purpose: unmapping an address that is not
 * mapped throws (the kernel corrupts its lists); 5.15's search can loop
 * forever when a min_align_mask is set and no slot fits — the model stops
 * after one sweep of the area.
 *
 * SAB layout (n = slots = sizeBytes / 2048; `describeLayout(Swiotlb.layoutFor(n))`):
 * | field     | type    | contents | writer |
 * |-----------|---------|----------|--------|
 * | control   | i32[8]  | 0 index (search hint), 1 used slots, 2 peak used slots | io_tlb_mem->lock |
 * | counters  | i64[16] | `C_*` below (BigInt64 view, Atomics) | any |
 * | list      | i32[n]  | free slots from here to the segment end, 0 = in use | io_tlb_mem->lock |
 * | allocSize | i32[n]  | bytes of the allocation from this slot on (`alloc_size`) | io_tlb_mem->lock |
 * | origAddr  | f64[n]  | caller gpa bounced to this slot, -1 = INVALID_PHYS_ADDR | mapper (owns the slots) |
 */

import {
  asGpa,
  defineLayout,
  type Gpa,
  InputError,
  type Layout,
  type LockKind,
  LockTable,
  type LockTableHandle,
  type ModelClock,
  type Mutex,
  PAGE_SHIFT,
  PAGE_SIZE_BYTES,
  Region,
} from '@vmstack/shm';
import type { LastLevelCache } from '../mm/llc.js';
import { DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE, type DmaDirection } from './bounce-pool.js';

export const IO_TLB_SHIFT = 11;
export const IO_TLB_SIZE = 1 << IO_TLB_SHIFT;
export const IO_TLB_SEGSIZE = 128;
/** IO_TLB_DEFAULT_SIZE: 64 MiB */
export const IO_TLB_DEFAULT_SIZE_BYTES = 64 << 20;
/** the largest mapping: one segment (swiotlb_max_mapping_size) */
export const SWIOTLB_MAX_MAPPING_BYTES = IO_TLB_SEGSIZE * IO_TLB_SIZE;
export const SWIOTLB_LOCK = 'io_tlb_mem->lock';
/** What a failed `swiotlb_tbl_map_single` returns: Linux's `(phys_addr_t)DMA_MAPPING_ERROR`, never a valid address. */
export const DMA_MAPPING_ERROR = asGpa(-1);
const INVALID_PHYS_ADDR = -1;
const MAX_AREA_BYTES = 2 ** 31;

export interface SwiotlbOptions {
  /** guest-physical start of the area, 2 KiB aligned */
  readonly areaGpa: number;
  /** a multiple of 256 KiB (one segment) */
  readonly sizeBytes?: number;
  /** dma_get_min_align_mask(dev): 0, or e.g. 4095 for nvme-pci */
  readonly minAlignMask?: number;
  /** dma_get_seg_boundary(dev) + 1, a power of two (default 4 GiB) */
  readonly segBoundaryBytes?: number;
  /** appended to the lock name, for several guests in one lock table */
  readonly lockSuffix?: string;
}

export interface SwiotlbHandle {
  readonly sab: SharedArrayBuffer;
  readonly areaGpa: number;
  readonly nslabs: number;
  readonly minAlignMask: number;
  readonly segBoundaryBytes: number;
  readonly lockSuffix: string;
}

export interface SwiotlbCosts {
  readonly swiotlbSlotSearchNs: number;
  readonly bouncePoolListOpNs: number;
  readonly memcpyBytesPerNs: number;
  readonly memsetBytesPerNs: number;
}

export interface SwiotlbStats {
  readonly nslabs: number;
  readonly usedSlots: number;
  readonly peakUsedSlots: number;
  readonly index: number;
  readonly maps: number;
  readonly unmaps: number;
  /** searches that found no room ("swiotlb buffer is full") or bad sizes */
  readonly failures: number;
  /** slots looked at by searches */
  readonly probes: number;
  readonly bytesBouncedToDevice: number;
  readonly bytesBouncedFromDevice: number;
  readonly bytesBounced: number;
  readonly bytesZeroed: number;
  readonly syncErrors: number;
  /** bytes of guest RAM the area holds, whatever is in use */
  readonly areaBytes: number;
}

const K_INDEX = 0;
const K_USED = 1;
const K_PEAK = 2;
const C_MAPS = 0;
const C_UNMAPS = 1;
const C_FAILURES = 2;
const C_PROBES = 3;
const C_TO_DEVICE = 4;
const C_FROM_DEVICE = 5;
const C_ZEROED = 6;
const C_SYNC_ERRORS = 7;
const COUNTERS = 16;

function nrSlots(bytes: number): number {
  return Math.ceil(bytes / IO_TLB_SIZE);
}

/** `io_tlb_offset`: a slot's position in its segment (also right for -1) */
function ioTlbOffset(i: number): number {
  return i & (IO_TLB_SEGSIZE - 1);
}

/** addr & mask for addresses beyond 2^31 and masks below it */
function and31(addr: number, mask: number): number {
  return (addr % 0x80000000) & mask;
}

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

export class Swiotlb {
  private readonly control: Int32Array;
  private readonly counters: BigInt64Array;
  private readonly list: Int32Array;
  private readonly allocSize: Int32Array;
  private readonly origAddr: Float64Array;
  private readonly lock: Mutex;
  private readonly iotlbAlignMask: number;
  private readonly areaEnd: number;

  static layoutFor(nslabs: number): Layout {
    return defineLayout('io_tlb_mem', [
      { name: 'control', kind: 'i32', count: 8 },
      { name: 'counters', kind: 'f64', count: COUNTERS },
      { name: 'list', kind: 'i32', count: nslabs },
      { name: 'allocSize', kind: 'i32', count: nslabs },
      { name: 'origAddr', kind: 'f64', count: nslabs },
    ]);
  }

  static lockSpecs(h: Pick<SwiotlbHandle, 'lockSuffix'>): { name: string; kind: LockKind }[] {
    return [{ name: SWIOTLB_LOCK + h.lockSuffix, kind: 'spinlock' }];
  }

  /** `swiotlb_init`: the area's bookkeeping (the lead's side; the RAM itself is guest RAM). */
  static allocate(opts: SwiotlbOptions): SwiotlbHandle {
    const sizeBytes = opts.sizeBytes ?? IO_TLB_DEFAULT_SIZE_BYTES;
    if (!Number.isInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % SWIOTLB_MAX_MAPPING_BYTES !== 0 || sizeBytes > MAX_AREA_BYTES) {
      throw new InputError(
        'swiotlb.sizeBytes',
        sizeBytes,
        `a positive multiple of ${SWIOTLB_MAX_MAPPING_BYTES} (one 128-slot segment), at most ${MAX_AREA_BYTES}`,
      );
    }
    const minAlignMask = opts.minAlignMask ?? 0;
    if (!Number.isInteger(minAlignMask) || minAlignMask < 0 || minAlignMask >= 0x80000000 || !isPow2(minAlignMask + 1)) {
      throw new InputError('swiotlb.minAlignMask', minAlignMask, 'a mask of low bits (2^k − 1) below 2^31');
    }
    const segBoundaryBytes = opts.segBoundaryBytes ?? 2 ** 32;
    if (!isPow2(segBoundaryBytes) || segBoundaryBytes < IO_TLB_SIZE)
      throw new InputError('swiotlb.segBoundaryBytes', segBoundaryBytes, `a power of two ≥ ${IO_TLB_SIZE}`);
    if (!Number.isInteger(opts.areaGpa) || opts.areaGpa < 0 || opts.areaGpa % IO_TLB_SIZE !== 0)
      throw new RangeError(`swiotlb area gpa ${opts.areaGpa} must be a multiple of ${IO_TLB_SIZE}`);
    const nslabs = sizeBytes / IO_TLB_SIZE;
    const region = Region.allocate(Swiotlb.layoutFor(nslabs));
    const list = region.i32('list');
    for (let i = 0; i < nslabs; i++) list[i] = IO_TLB_SEGSIZE - ioTlbOffset(i);
    region.f64('origAddr').fill(INVALID_PHYS_ADDR);
    return { sab: region.sab, areaGpa: opts.areaGpa, nslabs, minAlignMask, segBoundaryBytes, lockSuffix: opts.lockSuffix ?? '' };
  }

  /** Join from a vCPU; `guestRam` is guest RAM (index = gpa) and must contain the area. */
  static attach(
    handle: SwiotlbHandle,
    cpu: number,
    lockTable: LockTable | LockTableHandle,
    guestRam: Uint8Array,
    costs: SwiotlbCosts,
    cache: LastLevelCache | null = null,
  ): Swiotlb {
    const table = lockTable instanceof LockTable ? lockTable : LockTable.attach(lockTable, cpu);
    return new Swiotlb(handle, table.get(SWIOTLB_LOCK + handle.lockSuffix), guestRam, costs, cache);
  }

  private constructor(
    readonly handle: SwiotlbHandle,
    lock: Mutex,
    private readonly mem: Uint8Array,
    private readonly costs: SwiotlbCosts,
    private readonly cache: LastLevelCache | null,
  ) {
    const r = Region.attach(Swiotlb.layoutFor(handle.nslabs), handle.sab);
    this.control = r.i32('control');
    this.counters = new BigInt64Array(handle.sab, r.offsetOf('counters'), COUNTERS);
    this.list = r.i32('list');
    this.allocSize = r.i32('allocSize');
    this.origAddr = r.f64('origAddr');
    this.lock = lock;
    this.iotlbAlignMask = handle.minAlignMask & ~(IO_TLB_SIZE - 1);
    this.areaEnd = handle.areaGpa + handle.nslabs * IO_TLB_SIZE;
    if (this.areaEnd > mem.length) throw new RangeError(`swiotlb area [${handle.areaGpa}, ${this.areaEnd}) is outside guest RAM (${mem.length} bytes)`);
  }

  /** `is_swiotlb_buffer` */
  is_swiotlb_buffer(addr: number): boolean {
    return addr >= this.handle.areaGpa && addr < this.areaEnd;
  }

  /**
   * `swiotlb_tbl_map_single`: find slots for `allocSizeBytes` (+ the
   * min_align_mask offset of `origGpa`), record the original address per slot
   * and bounce the caller's bytes in for TO_DEVICE / BIDIRECTIONAL.
   * @returns the bounce address (tlb_addr), or DMA_MAPPING_ERROR
   */
  swiotlb_tbl_map_single(
    origGpa: Gpa,
    mappingSizeBytes: number,
    allocSizeBytes: number,
    dir: DmaDirection,
    clock: ModelClock,
    attrs: { readonly skipCpuSync?: boolean } = {},
  ): Gpa {
    if (!Number.isInteger(mappingSizeBytes) || !Number.isInteger(allocSizeBytes) || mappingSizeBytes <= 0 || mappingSizeBytes > allocSizeBytes) {
      Atomics.add(this.counters, C_FAILURES, 1n); // dev_warn_once("Invalid sizes")
      return DMA_MAPPING_ERROR;
    }
    if (!Number.isInteger(origGpa) || origGpa < 0 || origGpa + mappingSizeBytes > this.mem.length)
      throw new RangeError(`original buffer [${origGpa}, +${mappingSizeBytes}) is outside guest RAM`);
    const offset = this.alignOffset(origGpa);
    const index = this.swiotlb_find_slots(origGpa, allocSizeBytes + offset, offset, clock);
    if (index < 0) {
      Atomics.add(this.counters, C_FAILURES, 1n);
      return DMA_MAPPING_ERROR;
    }
    const n = nrSlots(allocSizeBytes + offset);
    for (let i = 0; i < n; i++) this.origAddr[index + i] = origGpa + i * IO_TLB_SIZE;
    Atomics.add(this.counters, C_MAPS, 1n);
    const tlbAddr = asGpa(this.handle.areaGpa + index * IO_TLB_SIZE + offset);
    if (!attrs.skipCpuSync && (dir === DMA_TO_DEVICE || dir === DMA_BIDIRECTIONAL)) this.swiotlb_bounce(tlbAddr, mappingSizeBytes, DMA_TO_DEVICE, clock);
    return tlbAddr;
  }

  /** `swiotlb_tbl_unmap_single`: bounce out for FROM_DEVICE / BIDIRECTIONAL, then free the slots. */
  swiotlb_tbl_unmap_single(tlbAddr: Gpa, mappingSizeBytes: number, dir: DmaDirection, clock: ModelClock, attrs: { readonly skipCpuSync?: boolean } = {}): void {
    this.checkMapped(tlbAddr, 'swiotlb_tbl_unmap_single');
    if (!attrs.skipCpuSync && (dir === DMA_FROM_DEVICE || dir === DMA_BIDIRECTIONAL)) this.swiotlb_bounce(tlbAddr, mappingSizeBytes, DMA_FROM_DEVICE, clock);
    this.swiotlb_release_slots(tlbAddr, clock);
    Atomics.add(this.counters, C_UNMAPS, 1n);
  }

  /** `swiotlb_sync_single_for_cpu`: device → caller for FROM_DEVICE / BIDIRECTIONAL. Returns bytes copied. */
  swiotlb_sync_single_for_cpu(tlbAddr: Gpa, sizeBytes: number, dir: DmaDirection, clock: ModelClock): number {
    this.checkMapped(tlbAddr, 'swiotlb_sync_single_for_cpu');
    if (dir === DMA_FROM_DEVICE || dir === DMA_BIDIRECTIONAL) return this.swiotlb_bounce(tlbAddr, sizeBytes, DMA_FROM_DEVICE, clock);
    if (dir !== DMA_TO_DEVICE) throw new RangeError(`swiotlb_sync_single_for_cpu: bad direction ${String(dir)}`);
    return 0;
  }

  /** `swiotlb_sync_single_for_device`: caller → bounce buffer for TO_DEVICE / BIDIRECTIONAL. Returns bytes copied. */
  swiotlb_sync_single_for_device(tlbAddr: Gpa, sizeBytes: number, dir: DmaDirection, clock: ModelClock): number {
    this.checkMapped(tlbAddr, 'swiotlb_sync_single_for_device');
    if (dir === DMA_TO_DEVICE || dir === DMA_BIDIRECTIONAL) return this.swiotlb_bounce(tlbAddr, sizeBytes, DMA_TO_DEVICE, clock);
    if (dir !== DMA_FROM_DEVICE) throw new RangeError(`swiotlb_sync_single_for_device: bad direction ${String(dir)}`);
    return 0;
  }

  /**
   * The padding clean-up of `iommu_dma_map_page` (5.15) for an untrusted
   * device after `swiotlb_tbl_map_single(phys, size, aligned_size)`: zero
   * [size, aligned_size) when the data was bounced in, else the whole
   * aligned_size. Returns bytes zeroed.
   */
  clearPadding(
    tlbAddr: Gpa,
    sizeBytes: number,
    alignedSizeBytes: number,
    dir: DmaDirection,
    clock: ModelClock,
    attrs: { readonly skipCpuSync?: boolean } = {},
  ): number {
    let start: number = tlbAddr;
    let len = alignedSizeBytes;
    if (!attrs.skipCpuSync && (dir === DMA_TO_DEVICE || dir === DMA_BIDIRECTIONAL)) {
      start += sizeBytes;
      len -= sizeBytes;
    }
    if (len < 0 || start < this.handle.areaGpa || start + len > this.areaEnd) throw new RangeError(`padding [${start}, +${len}) is outside the swiotlb area`);
    this.mem.fill(0, start, start + len);
    this.cache?.cpu_touch(start, len);
    if (len > 0) {
      clock.charge(len / this.costs.memsetBytesPerNs);
      Atomics.add(this.counters, C_ZEROED, BigInt(len));
    }
    return len;
  }

  stats(): SwiotlbStats {
    const c = (i: number): number => Number(Atomics.load(this.counters, i));
    const to = c(C_TO_DEVICE);
    const from = c(C_FROM_DEVICE);
    return {
      nslabs: this.handle.nslabs,
      usedSlots: Atomics.load(this.control, K_USED),
      peakUsedSlots: Atomics.load(this.control, K_PEAK),
      index: Atomics.load(this.control, K_INDEX),
      maps: c(C_MAPS),
      unmaps: c(C_UNMAPS),
      failures: c(C_FAILURES),
      probes: c(C_PROBES),
      bytesBouncedToDevice: to,
      bytesBouncedFromDevice: from,
      bytesBounced: to + from,
      bytesZeroed: c(C_ZEROED),
      syncErrors: c(C_SYNC_ERRORS),
      areaBytes: this.handle.nslabs * IO_TLB_SIZE,
    };
  }

  /** Copy of the free-run list (tests and diagnostics; takes the lock). */
  listSnapshot(): Int32Array {
    this.lock.lock();
    try {
      return this.list.slice();
    } finally {
      this.lock.unlock();
    }
  }

  /** `swiotlb_align_offset`: the low bits of `addr` the device needs preserved */
  private alignOffset(addr: number): number {
    return (addr % IO_TLB_SIZE) & this.handle.minAlignMask;
  }

  private wrapIndex(index: number): number {
    return index >= this.handle.nslabs ? 0 : index;
  }

  /** `swiotlb_find_slots`: returns the first slot index, or -1. */
  private swiotlb_find_slots(origGpa: number, allocSizeBytes: number, offset: number, clock: ModelClock): number {
    const { areaGpa, nslabs, segBoundaryBytes } = this.handle;
    const tblDmaAddr = areaGpa % segBoundaryBytes; // phys_to_dma(mem->start) & boundary_mask
    const maxSlots = nrSlots(segBoundaryBytes);
    const tblSlots = nrSlots(tblDmaAddr);
    const alignMask = this.iotlbAlignMask;
    const nslots = nrSlots(allocSizeBytes);
    let stride = (alignMask >>> IO_TLB_SHIFT) + 1;
    if (allocSizeBytes >= PAGE_SIZE_BYTES) stride = Math.max(stride, stride << (PAGE_SHIFT - IO_TLB_SHIFT));
    const list = this.list;
    let probes = 0;
    let found = -1;
    this.lock.lock(clock);
    try {
      clock.charge(this.costs.swiotlbSlotSearchNs);
      const used = this.control[K_USED];
      if (nslots <= IO_TLB_SEGSIZE && nslots <= nslabs - used) {
        let index = this.wrapIndex(Math.ceil(this.control[K_INDEX] / stride) * stride);
        const wrap = index;
        do {
          probes++;
          if (origGpa !== 0 && and31(tblDmaAddr + index * IO_TLB_SIZE, alignMask) !== and31(origGpa, alignMask)) {
            index = this.wrapIndex(index + 1);
            continue;
          }
          // iommu_is_span_boundary(index, nslots, tblSlots, maxSlots)
          const spanOffset = (tblSlots + index) % maxSlots;
          if (spanOffset + nslots <= maxSlots && list[index] >= nslots) {
            found = index;
            break;
          }
          index = this.wrapIndex(index + stride);
        } while (index !== wrap && probes <= nslabs);
      }
      if (found >= 0) {
        for (let i = found; i < found + nslots; i++) {
          list[i] = 0;
          this.allocSize[i] = allocSizeBytes - (offset + (i - found) * IO_TLB_SIZE);
        }
        let count = 0;
        for (let i = found - 1; ioTlbOffset(i) !== IO_TLB_SEGSIZE - 1 && list[i]; i--) list[i] = ++count;
        this.control[K_INDEX] = found + nslots < nslabs ? found + nslots : 0;
        const nowUsed = used + nslots;
        Atomics.store(this.control, K_USED, nowUsed);
        if (nowUsed > this.control[K_PEAK]) Atomics.store(this.control, K_PEAK, nowUsed);
      }
    } finally {
      this.lock.unlock(clock);
    }
    Atomics.add(this.counters, C_PROBES, BigInt(probes));
    return found;
  }

  /** `swiotlb_release_slots`: free the allocation holding `tlbAddr`, merging free runs. */
  private swiotlb_release_slots(tlbAddr: number, clock: ModelClock): void {
    const offset = this.alignOffset(tlbAddr);
    const index = Math.floor((tlbAddr - offset - this.handle.areaGpa) / IO_TLB_SIZE);
    const list = this.list;
    this.lock.lock(clock);
    try {
      clock.charge(this.costs.bouncePoolListOpNs);
      const nslots = nrSlots(this.allocSize[index] + offset);
      let count = index + nslots < Math.ceil((index + 1) / IO_TLB_SEGSIZE) * IO_TLB_SEGSIZE ? list[index + nslots] : 0;
      for (let i = index + nslots - 1; i >= index; i--) {
        list[i] = ++count;
        this.origAddr[i] = INVALID_PHYS_ADDR;
        this.allocSize[i] = 0;
      }
      for (let i = index - 1; ioTlbOffset(i) !== IO_TLB_SEGSIZE - 1 && list[i]; i--) list[i] = ++count;
      Atomics.store(this.control, K_USED, this.control[K_USED] - nslots);
    } finally {
      this.lock.unlock(clock);
    }
  }

  /** `swiotlb_bounce`: copy between the bounce buffer at `tlbAddr` and the original. Returns bytes copied. */
  private swiotlb_bounce(tlbAddr: number, sizeBytes: number, dir: typeof DMA_TO_DEVICE | typeof DMA_FROM_DEVICE, clock: ModelClock): number {
    const index = Math.floor((tlbAddr - this.handle.areaGpa) / IO_TLB_SIZE);
    let orig = this.origAddr[index];
    let alloc = this.allocSize[index];
    if (orig === INVALID_PHYS_ADDR) return 0;
    let tlbOffset = tlbAddr % IO_TLB_SIZE;
    const origOffset = this.alignOffset(orig);
    if (tlbOffset < origOffset) return this.syncError();
    tlbOffset -= origOffset;
    if (tlbOffset > alloc) return this.syncError();
    orig += tlbOffset;
    alloc -= tlbOffset;
    let size = sizeBytes;
    if (size > alloc) {
      this.syncError(); // "Buffer overflow detected": the kernel clamps and goes on
      size = alloc;
    }
    if (size <= 0) return 0;
    if (orig + size > this.mem.length) throw new RangeError(`swiotlb_bounce: original [${orig}, +${size}) is outside guest RAM`);
    if (dir === DMA_TO_DEVICE) this.mem.copyWithin(tlbAddr, orig, orig + size);
    else this.mem.copyWithin(orig, tlbAddr, tlbAddr + size);
    // by where the bytes are (mm/llc.ts); without a cache model, at memcpyBytesPerNs
    if (this.cache) clock.charge(dir === DMA_TO_DEVICE ? this.cache.memcpyNs(tlbAddr, orig, size) : this.cache.memcpyNs(orig, tlbAddr, size));
    else clock.charge(size / this.costs.memcpyBytesPerNs);
    Atomics.add(this.counters, dir === DMA_TO_DEVICE ? C_TO_DEVICE : C_FROM_DEVICE, BigInt(size));
    return size;
  }

  private syncError(): number {
    Atomics.add(this.counters, C_SYNC_ERRORS, 1n);
    return 0;
  }

  private checkMapped(tlbAddr: number, op: string): void {
    if (!Number.isInteger(tlbAddr) || !this.is_swiotlb_buffer(tlbAddr)) throw new RangeError(`${op}: 0x${tlbAddr.toString(16)} is not in the swiotlb area`);
    const index = Math.floor((tlbAddr - this.handle.areaGpa) / IO_TLB_SIZE);
    if (this.origAddr[index] === INVALID_PHYS_ADDR) throw new RangeError(`${op}: 0x${tlbAddr.toString(16)} is not mapped`);
  }
}
