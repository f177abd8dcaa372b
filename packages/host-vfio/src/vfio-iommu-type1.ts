/**
 * vfio_iommu_type1 (Linux drivers/vfio/vfio_iommu_type1.c, v2 semantics as
 * QEMU and crosvm use it): one container per VM, the VMM's
 * VFIO_IOMMU_MAP_DMA / VFIO_IOMMU_UNMAP_DMA ioctls.
 *
 * What is modelled, function by function (names as in the kernel):
 * - `vfio_dma_do_map`: argument checks (-EINVAL: values that are not u64,
 *   size 0; then, before the lock, -EOVERFLOW: iova + size - 1 or
 *   vaddr + size - 1 wraps past 2^64 - 1; under the lock, -EINVAL: no
 *   READ/WRITE, iova/vaddr/size not page-aligned, a range outside the domain
 *   aperture), overlap with an existing `vfio_dma` (-EEXIST), the
 *   `dma_entry_limit` (-ENOSPC), then `vfio_pin_map_dma` under `iommu->lock`.
 * - `vfio_pin_map_dma` → `vfio_pin_pages_remote` (pin one physically
 *   contiguous chunk, page by page, checking `locked_vm + 1 > RLIMIT_MEMLOCK`
 *   per page: -ENOMEM) → `vfio_lock_acct` (one `locked_vm` update per
 *   chunk) → `vfio_iommu_map` (host page tables; a full table pool: -ENOMEM).
 *   A failure unwinds through `vfio_remove_dma`, so nothing stays pinned,
 *   accounted or mapped.
 * - The VMM process's `mmap_lock` (an rwsem in the host lock table, one per
 *   VMM process): `vaddr_get_pfn` takes it for read around
 *   `pin_user_pages_remote` of its one page (`mmap_read_lock`, as Linux 5.8 to
 *   5.11 do; 5.12 and later pin a batch per `vaddr_get_pfns` call under one
 *   read hold), and `vfio_lock_acct` takes it for write around
 *   `__account_locked_vm` (`mmap_write_lock_killable`). Both run under
 *   `iommu->lock`, so the container's own ioctls never meet on it; what it
 *   shows is how often and how long the container holds the process's
 *   `mmap_lock`, which page faults and mmap() of the VMM's other threads wait for.
 * - `vfio_dma_do_unmap`: alignment and size checks (-EINVAL), iova + size - 1
 *   wrapping past 2^64 - 1 (-EOVERFLOW), the v2 rule that an unmap may not
 *   bisect a `vfio_dma` (-EINVAL), then every `vfio_dma` in the range is
 *   removed; unmapping nothing succeeds with 0 bytes. VFIO_DMA_UNMAP_FLAG_ALL
 *   (iova and size must be 0, else -EINVAL) removes every `vfio_dma`. Either
 *   way the answer is the bytes unmapped.
 * - `vfio_iommu_type1_get_info` (VFIO_IOMMU_GET_INFO): flags, iova_pgsizes and
 *   the capability chain (migration, DMA mappings still available, the IOVA
 *   ranges: the aperture minus the MSI window) on the user's buffer, with
 *   the argsz handshake.
 * - `vfio_iommu_iova_dma_valid`: a map must lie inside one IOVA range
 *   (-EINVAL in the MSI window or past the 48-bit aperture).
 * - `vfio_unmap_unpin`: finds physically contiguous chunks through the page
 *   table (`iommu_iova_to_phys`), clears them with `unmap_unpin_fast` into an
 *   IOTLB gather, and every `VFIO_IOMMU_TLB_SYNC_MAX` (512) chunks, and at the
 *   end of each `vfio_dma`, `vfio_sync_unpin` flushes the IOTLB once (the
 *   `invalidateIotlb` callback + `hostIotlbFlushNs`) and only then unpins.
 *   (`unmap_unpin_slow` serves only a failed fast unmap, which cannot happen
 *   here: the page table is written only under `iommu->lock`, and the path
 *   allocates nothing.)
 *
 * Model specifics:
 * - __u64 arguments are numbers or bigints (`U64Arg`): a bigint gives any
 *   u64 exactly; the checks before the lock (u64 range, zero size,
 *   wrap-around) and alignment are exact either way, and what passes them is
 *   page-aligned and inside the 48-bit aperture, so exact as a number. User
 *   addresses end at TASK_SIZE (2^47, x86-64 4-level paging): pinning beyond
 *   it is -EFAULT.
 * - Superpages: guest RAM is backed by host pages of `hostPageSizeBytes`
 *   (4 KiB by default); the identity layout makes every pinned run
 *   contiguous, so the backing page size is what says how far a run really
 *   is, and `vfio_iommu_map` lets the host page table use leaves up to it.
 * - The VMM maps guest RAM at the identity: vaddr = gpa = HPA (the byte offset
 *   in the guest-RAM SharedArrayBuffer). `guestRamBytes` bounds what can be
 *   pinned: a vaddr beyond it fails `pin_user_pages_remote` (-EFAULT), as an
 *   unmapped user address does.
 * - Identity means a `vfio_dma` is always one contiguous chunk, so the 512-chunk
 *   gather limit matters only with `fineGrainedSuperPages` (AMD-Vi's
 *   `domain->fgsp`: chunks of one page), which the option reproduces.
 * - `locked_vm` counts pages per `vfio_dma`, as type1 does: the same page mapped
 *   at two IOVAs is pinned twice (page refcount 2, one distinct pinned page)
 *   and accounted twice. `lockedVmLimitPages` is RLIMIT_MEMLOCK >> PAGE_SHIFT
 *   for a VMM without CAP_IPC_LOCK; Infinity models an unlimited rlimit.
 * - The container lives in shared memory (`VfioContainer.allocate`, then
 *   `VfioContainer.attach` in each thread that serves it: the kernel contexts
 *   of several VMM threads issuing ioctls on one container fd). Everything
 *   the kernel keeps in `struct vfio_iommu` and below is in one
 *   SharedArrayBuffer: the `vfio_dma` set ordered by iova (a sorted array of
 *   fixed capacity in place of the rbtree), each guest page's pin count (the
 *   page refcount the pins hold), `locked_vm`, `dma_avail`, and the
 *   statistics. Every access to that state is made holding `iommu->lock`
 *   (a shared Mutex), held as the kernel holds it: across pin + map and
 *   across unmap + invalidate + unpin, so its lock_stat shows the ioctls'
 *   real serialisation and threads attached to one container contend on it
 *   for real. The map and unmap call counters, which count calls refused
 *   before the lock too, are atomic counters.
 *
 * Layout (`vfio_iommu`, 8-byte aligned fields; C = dma capacity, P = guest RAM pages):
 * | field    | type      | holds |
 * |----------|-----------|-------|
 * | calls    | i32[2]    | MAP_DMA, UNMAP_DMA calls (atomic adds, unsigned) |
 * | state    | f64[8]    | vfio_dma count, dma_avail, locked_vm, pinned pages, their peak, IOTLB invalidations |
 * | dmaIova  | f64[C]    | vfio_dma.iova, ascending |
 * | dmaVaddr | f64[C]    | vfio_dma.vaddr |
 * | dmaSize  | f64[C]    | vfio_dma.size (grows as chunks are mapped) |
 * | dmaProt  | i32[C]    | vfio_dma.prot |
 * | pins     | i32[P]    | pins held on each guest page |
 *
 * Costs (model ns, charged on the caller's clock while holding the lock):
 * | key | charged |
 * |-----|---------|
 * | vfioDmaDoMapBaseNs      | once per MAP_DMA that gets the lock |
 * | vfioPinPagePerPageNs    | per page pin attempt |
 * | vfioLockedVmAccountNs   | per `vfio_lock_acct` with a non-zero delta |
 * | hostIommuMapPerPageNs   | per leaf entry written to the host page table (a 4 KiB page or a 2 MiB / 1 GiB superpage) |
 * | vfioDmaDoUnmapBaseNs    | once per UNMAP_DMA that gets the lock |
 * | hostIommuUnmapPerPageNs | per leaf entry cleared from the host page table |
 * | hostIotlbFlushNs        | per IOTLB sync (one gather batch) |
 * | vfioUnpinPagePerPageNs  | per page unpinned |
 */

import { HPA_LIMIT, IOVA_LIMIT, type IommuProt, type IoPgtable, IoPgtableError, SUPERPAGE_1G_BYTES, SUPERPAGE_2M_BYTES } from '@vmstack/iommu-hw';
import {
  defineLayout,
  InputError,
  IOMMU_READ,
  IOMMU_WRITE,
  type Layout,
  type LockTable,
  type ModelClock,
  type Mutex,
  PAGE_SIZE_BYTES,
  Region,
  type RwSemaphore,
} from '@vmstack/shm';

/** Name of the container's lock in the run's LockTable. */
export const IOMMU_LOCK = 'iommu->lock';
/**
 * Name of a host IOMMU unit's queued-invalidation lock (`qi->q_lock` of
 * drivers/iommu/intel/dmar.c), shared by every domain on that unit.
 */
export const QI_Q_LOCK = 'qi->q_lock';
/** Name of the VMM process's `mmap_lock` (an rwsem) in the host lock table. */
export const MMAP_LOCK = 'mmap_lock';
/** Chunks gathered per IOTLB sync in `vfio_unmap_unpin`. */
export const VFIO_IOMMU_TLB_SYNC_MAX = 512;
/** The `dma_entry_limit` module parameter's default (U16_MAX). */
export const DEFAULT_DMA_ENTRY_LIMIT = 65535;

export const EFAULT = 14;
export const EEXIST = 17;
export const EINVAL = 22;
export const ENOMEM = 12;
export const ENOSPC = 28;
export const EOVERFLOW = 75;
/** The x86 MSI window (IOMMU_RESV_MSI of the host's VT-d): no IOVA there can be mapped. */
export const X86_MSI_IOVA_BASE = 0xfee0_0000;
export const X86_MSI_IOVA_LAST = 0xfeef_ffff;
/** iommu->iova_list: the 48-bit aperture minus the MSI window, as VFIO_IOMMU_GET_INFO reports it. */
export const VFIO_IOVA_RANGES: readonly { readonly start: number; readonly end: number }[] = [
  { start: 0, end: X86_MSI_IOVA_BASE - 1 },
  { start: X86_MSI_IOVA_LAST + 1, end: IOVA_LIMIT - 1 },
];
/** iommu->pgsize_bitmap: the leaf sizes the host page table has (4 KiB, 2 MiB, 1 GiB). */
export const VFIO_IOMMU_PGSIZES = BigInt(PAGE_SIZE_BYTES) | BigInt(SUPERPAGE_2M_BYTES) | BigInt(SUPERPAGE_1G_BYTES);

/** struct vfio_iommu_type1_info (include/uapi/linux/vfio.h) and its capability chain. */
export const VFIO_IOMMU_INFO_PGSIZES = 1 << 0;
export const VFIO_IOMMU_INFO_CAPS = 1 << 1;
export const VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE = 1;
export const VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION = 2;
export const VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL = 3;
/** sizeof(struct vfio_iommu_type1_info): argsz u32, flags u32, iova_pgsizes u64, cap_offset u32, pad u32 */
export const VFIO_IOMMU_TYPE1_INFO_BYTES = 24;
/** offsetofend(struct vfio_iommu_type1_info, iova_pgsizes): the least argsz GET_INFO accepts */
const VFIO_IOMMU_TYPE1_INFO_MINSZ = 16;
/** DIRTY_BITMAP_SIZE_MAX of vfio_iommu_type1.c: the bitmap of INT_MAX pages, in bytes */
const DIRTY_BITMAP_SIZE_MAX = 2 ** 28;

/** What the ioctls return: 0 or a negative errno. */
export type VfioErrno = 0 | -22 | -17 | -12 | -28 | -14 | -75;

/** One past the largest u64: dma_addr_t and unsigned long on a 64-bit host. */
const U64_END = 1n << 64n;
/** x86-64 TASK_SIZE with 4-level paging: no user address is at or above it. */
const TASK_SIZE = 2 ** 47 - PAGE_SIZE_BYTES;

const PAGE = PAGE_SIZE_BYTES;

export interface VfioContainerCosts {
  readonly vfioDmaDoMapBaseNs: number;
  readonly vfioPinPagePerPageNs: number;
  readonly vfioLockedVmAccountNs: number;
  readonly hostIommuMapPerPageNs: number;
  readonly vfioDmaDoUnmapBaseNs: number;
  readonly hostIommuUnmapPerPageNs: number;
  readonly hostIotlbFlushNs: number;
  readonly vfioUnpinPagePerPageNs: number;
}

const COST_KEYS: readonly (keyof VfioContainerCosts)[] = [
  'vfioDmaDoMapBaseNs',
  'vfioPinPagePerPageNs',
  'vfioLockedVmAccountNs',
  'hostIommuMapPerPageNs',
  'vfioDmaDoUnmapBaseNs',
  'hostIommuUnmapPerPageNs',
  'hostIotlbFlushNs',
  'vfioUnpinPagePerPageNs',
];

/** Tell the device to drop cached translations of [iova, iova + sizeBytes), at `clock`'s time. */
export type InvalidateIotlb = (iova: number, sizeBytes: number, clock: ModelClock) => void;

export interface VfioContainerAllocateOptions {
  /** bytes of pinnable user memory at vaddr 0 (the guest RAM): a positive multiple of 4096 */
  readonly guestRamBytes: number;
  /** RLIMIT_MEMLOCK in pages; Infinity = unlimited */
  readonly lockedVmLimitPages: number;
  /** most `vfio_dma` entries at once (default 65535) */
  readonly dmaEntryLimit?: number;
  /**
   * room for `vfio_dma` entries in the shared set (default: dmaEntryLimit, at
   * most 65535); a map that would need more, with `dma_avail` not yet 0,
   * fails with a RangeError (a model limit, not an errno)
   */
  readonly maxDmaEntries?: number;
  /** AMD-Vi fine-grained superpages (`domain->fgsp`): unmap page by page (default false, VT-d) */
  readonly fineGrainedSuperPages?: boolean;
  /**
   * the host pages backing guest RAM: 4096 (anonymous memory, the default),
   * 2 MiB or 1 GiB (hugetlbfs). A pinned run is physically contiguous within
   * one backing page, so the host IOMMU maps with leaves up to this size.
   */
  readonly hostPageSizeBytes?: number;
}

/** A container in shared memory: plain data, sent to each worker that serves it. */
export interface VfioContainerHandle {
  readonly sab: SharedArrayBuffer;
  readonly guestRamBytes: number;
  readonly lockedVmLimitPages: number;
  readonly dmaEntryLimit: number;
  readonly maxDmaEntries: number;
  readonly fineGrainedSuperPages: boolean;
  readonly hostPageSizeBytes: number;
}

export interface VfioContainerAttachOptions {
  readonly pgtable: IoPgtable;
  readonly lockTable: LockTable;
  readonly costs: VfioContainerCosts;
  readonly invalidateIotlb: InvalidateIotlb;
  /** lock name in `lockTable` (default `iommu->lock`; one per container when a run has several VMs) */
  readonly lockName?: string;
  /** the name in `lockTable` of the `qi->q_lock` of the host IOMMU unit translating for the container's device (default `qi->q_lock`) */
  readonly qiLockName?: string;
  /** the name in `lockTable` of the VMM process's `mmap_lock`, an rwsem (default `mmap_lock`; one per VMM process) */
  readonly mmapLockName?: string;
}

/**
 * A __u64 ioctl field: a number (exact below 2^53, and for every multiple of
 * 4096 below 2^65) or a bigint (any u64, exactly).
 */
export type U64Arg = number | bigint;

export interface VfioDmaMapArgs {
  readonly iova: U64Arg;
  readonly vaddr: U64Arg;
  readonly sizeBytes: U64Arg;
  /** VFIO_DMA_MAP_FLAG_READ: the device may read this memory */
  readonly read: boolean;
  /** VFIO_DMA_MAP_FLAG_WRITE: the device may write this memory */
  readonly write: boolean;
}

export interface VfioDmaUnmapArgs {
  readonly iova: U64Arg;
  readonly sizeBytes: U64Arg;
  /** VFIO_DMA_UNMAP_FLAG_ALL: unmap every vfio_dma (iova and sizeBytes must be 0) */
  readonly all?: boolean;
}

export interface VfioContainerStats {
  mapDmaCalls: number;
  unmapDmaCalls: number;
  pinnedPages: number;
  pinnedPagesPeak: number;
  lockedVmPages: number;
  dmaCount: number;
  iotlbInvalidations: number;
}

/** struct iommu_iotlb_gather + the vfio_regions list of unmap_unpin_fast (on the caller's stack, as in the kernel) */
interface Gather {
  startIova: number;
  endIova: number;
  regions: { iova: number; hpa: number; sizeBytes: number }[];
}

const neg = (errno: number): VfioErrno => -errno as VfioErrno;

// `calls` words
const C_MAP = 0;
const C_UNMAP = 1;
// `state` slots
const S_DMA_COUNT = 0;
const S_DMA_AVAIL = 1;
const S_LOCKED_VM = 2;
const S_PINNED = 3;
const S_PINNED_PEAK = 4;
const S_INVALIDATIONS = 5;

function containerLayout(maxDmaEntries: number, guestRamPages: number): Layout {
  return defineLayout('vfio_iommu', [
    { name: 'calls', kind: 'i32', count: 2 },
    { name: 'state', kind: 'f64', count: 8 },
    { name: 'dmaIova', kind: 'f64', count: maxDmaEntries },
    { name: 'dmaVaddr', kind: 'f64', count: maxDmaEntries },
    { name: 'dmaSize', kind: 'f64', count: maxDmaEntries },
    { name: 'dmaProt', kind: 'i32', count: maxDmaEntries },
    { name: 'pins', kind: 'i32', count: guestRamPages },
  ]);
}

export class VfioContainer {
  /** Create the container's shared state (VFIO_SET_IOMMU on a new container: an empty `vfio_iommu`). */
  static allocate(opts: VfioContainerAllocateOptions): VfioContainerHandle {
    const limit = opts.lockedVmLimitPages;
    if (!(limit === Infinity || (Number.isSafeInteger(limit) && limit >= 0))) {
      throw new InputError('lockedVmLimitPages', limit, 'an integer number of pages ≥ 0 (RLIMIT_MEMLOCK / 4 KiB), or Infinity for unlimited');
    }
    const entries = opts.dmaEntryLimit ?? DEFAULT_DMA_ENTRY_LIMIT;
    if (!Number.isSafeInteger(entries) || entries < 0 || entries > 0xffffffff) {
      throw new InputError('dmaEntryLimit', entries, 'an integer from 0 to 4294967295 (vfio_iommu_type1 dma_entry_limit; default 65535)');
    }
    const capacity = opts.maxDmaEntries ?? Math.min(entries, DEFAULT_DMA_ENTRY_LIMIT);
    if (!Number.isSafeInteger(capacity) || capacity < 0 || capacity > 1 << 24) {
      throw new InputError('maxDmaEntries', capacity, 'an integer from 0 to 16777216 (room for vfio_dma entries in the shared set)');
    }
    const ram = opts.guestRamBytes;
    if (!(Number.isSafeInteger(ram) && ram > 0 && ram % PAGE === 0 && ram <= HPA_LIMIT)) {
      throw new InputError('guestRamBytes', ram, `a positive multiple of 4096 bytes, at most ${HPA_LIMIT}`);
    }
    const hostPage = opts.hostPageSizeBytes ?? PAGE;
    if (hostPage !== PAGE && hostPage !== SUPERPAGE_2M_BYTES && hostPage !== SUPERPAGE_1G_BYTES) {
      throw new InputError('hostPageSizeBytes', hostPage, '4096, 2097152 (2 MiB) or 1073741824 (1 GiB): the host pages backing guest RAM');
    }
    const region = Region.allocate(containerLayout(capacity, ram / PAGE));
    region.f64('state')[S_DMA_AVAIL] = entries;
    return {
      sab: region.sab,
      guestRamBytes: ram,
      lockedVmLimitPages: limit,
      dmaEntryLimit: entries,
      maxDmaEntries: capacity,
      fineGrainedSuperPages: opts.fineGrainedSuperPages ?? false,
      hostPageSizeBytes: hostPage,
    };
  }

  /** Serve the container from this thread: its locks from `lockTable`, the host page tables through `pgtable`. */
  static attach(handle: VfioContainerHandle, opts: VfioContainerAttachOptions): VfioContainer {
    for (const key of COST_KEYS) {
      const v = opts.costs?.[key];
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new InputError(`profile.${key}`, v, 'a finite number of ns ≥ 0');
    }
    if (typeof opts.invalidateIotlb !== 'function') throw new TypeError('VfioContainer: invalidateIotlb must be a function');
    return new VfioContainer(handle, opts);
  }

  private readonly pgtable: IoPgtable;
  private readonly costs: VfioContainerCosts;
  private readonly lock: Mutex;
  private readonly qiLock: Mutex;
  private readonly mmapLock: RwSemaphore;
  private readonly invalidateIotlb: InvalidateIotlb;
  private readonly lockedVmLimitPages: number;
  private readonly guestRamBytes: number;
  private readonly fgsp: boolean;
  private readonly capacity: number;
  private readonly calls: Int32Array;
  private readonly state: Float64Array;
  /** iommu->dma_list: entries 0 … count-1, ascending iova, non-overlapping */
  private readonly dmaIova: Float64Array;
  private readonly dmaVaddr: Float64Array;
  private readonly dmaSize: Float64Array;
  private readonly dmaProt: Int32Array;
  /** guest page frame → pins held on it (the page refcount pins hold) */
  private readonly pins: Int32Array;

  private constructor(
    readonly handle: VfioContainerHandle,
    opts: VfioContainerAttachOptions,
  ) {
    const region = Region.attach(containerLayout(handle.maxDmaEntries, handle.guestRamBytes / PAGE), handle.sab);
    this.calls = region.i32('calls');
    this.state = region.f64('state');
    this.dmaIova = region.f64('dmaIova');
    this.dmaVaddr = region.f64('dmaVaddr');
    this.dmaSize = region.f64('dmaSize');
    this.dmaProt = region.i32('dmaProt');
    this.pins = region.i32('pins');
    this.pgtable = opts.pgtable;
    this.costs = { ...opts.costs };
    this.lock = opts.lockTable.get(opts.lockName ?? IOMMU_LOCK);
    this.qiLock = opts.lockTable.get(opts.qiLockName ?? QI_Q_LOCK);
    this.mmapLock = opts.lockTable.rwsem(opts.mmapLockName ?? MMAP_LOCK);
    this.invalidateIotlb = opts.invalidateIotlb;
    this.lockedVmLimitPages = handle.lockedVmLimitPages;
    this.guestRamBytes = handle.guestRamBytes;
    this.fgsp = handle.fineGrainedSuperPages;
    this.capacity = handle.maxDmaEntries;
  }

  // ---- statistics: a snapshot read without iommu->lock (exact once no thread is in an ioctl) ----

  get mapDmaCalls(): number {
    return Atomics.load(this.calls, C_MAP) >>> 0;
  }
  get unmapDmaCalls(): number {
    return Atomics.load(this.calls, C_UNMAP) >>> 0;
  }
  /** distinct host pages with at least one pin */
  get pinnedPages(): number {
    return this.state[S_PINNED];
  }
  get pinnedPagesPeak(): number {
    return this.state[S_PINNED_PEAK];
  }
  /** mm->locked_vm contributed by this container, pages */
  get lockedVmPages(): number {
    return this.state[S_LOCKED_VM];
  }
  get dmaCount(): number {
    return this.state[S_DMA_COUNT];
  }
  get iotlbInvalidations(): number {
    return this.state[S_INVALIDATIONS];
  }

  stats(): VfioContainerStats {
    return {
      mapDmaCalls: this.mapDmaCalls,
      unmapDmaCalls: this.unmapDmaCalls,
      pinnedPages: this.pinnedPages,
      pinnedPagesPeak: this.pinnedPagesPeak,
      lockedVmPages: this.lockedVmPages,
      dmaCount: this.dmaCount,
      iotlbInvalidations: this.iotlbInvalidations,
    };
  }

  /** The vfio_dma entries in iova order, read under `iommu->lock` (for checks). */
  dmaList(clock?: ModelClock): { iova: number; vaddr: number; sizeBytes: number; prot: number }[] {
    this.lock.lock(clock);
    try {
      return Array.from({ length: this.state[S_DMA_COUNT] }, (_, i) => ({
        iova: this.dmaIova[i],
        vaddr: this.dmaVaddr[i],
        sizeBytes: this.dmaSize[i],
        prot: this.dmaProt[i],
      }));
    } finally {
      this.lock.unlock(clock);
    }
  }

  /** Pins held on the guest page at `vaddr`, read under `iommu->lock` (for checks). */
  pinCount(vaddr: number): number {
    this.lock.lock();
    try {
      return this.pins[Math.floor(vaddr / PAGE)] ?? 0;
    } finally {
      this.lock.unlock();
    }
  }

  // ---- VFIO_IOMMU_MAP_DMA ---------------------------------------------------

  vfio_dma_do_map(map: VfioDmaMapArgs, clock: ModelClock): { errno: VfioErrno } {
    Atomics.add(this.calls, C_MAP, 1);
    // "Verify that none of our __u64 fields overflow": here, a value that is not an integer from 0 to 2^64 - 1
    if (!isU64(map.iova) || !isU64(map.vaddr) || !isU64(map.sizeBytes)) return { errno: neg(EINVAL) };
    if (!isPositive(map.sizeBytes)) return { errno: neg(EINVAL) };
    // check_add_overflow(iova, size - 1) and (vaddr, size - 1), before the lock
    if (wraps(map.iova, map.sizeBytes) || wraps(map.vaddr, map.sizeBytes)) return { errno: neg(EOVERFLOW) };
    const prot = ((map.write === true ? IOMMU_WRITE : 0) | (map.read === true ? IOMMU_READ : 0)) as IommuProt | 0;

    this.lock.lock(clock);
    try {
      clock.charge(this.costs.vfioDmaDoMapBaseNs);
      if (!prot || !pageAligned(map.sizeBytes) || !pageAligned(map.iova) || !pageAligned(map.vaddr)) return { errno: neg(EINVAL) };
      // page-aligned values below 2^65 are exact as numbers; the aperture check below keeps iova + size under 2^48
      const iova = Number(map.iova);
      const vaddr = Number(map.vaddr);
      const size = Number(map.sizeBytes);
      if (this.vfio_find_dma(iova, size) >= 0) return { errno: neg(EEXIST) };
      if (!this.state[S_DMA_AVAIL]) return { errno: neg(ENOSPC) };
      if (!vfio_iommu_iova_dma_valid(iova, iova + size - 1)) return { errno: neg(EINVAL) };

      this.state[S_DMA_AVAIL]--;
      const dma = this.vfio_link_dma(iova, vaddr, prot); // inserted zero-sized, grows as chunks are mapped
      return { errno: this.vfio_pin_map_dma(dma, size, clock) };
    } finally {
      this.lock.unlock(clock);
    }
  }

  // ---- VFIO_IOMMU_GET_INFO --------------------------------------------------

  /**
   * vfio_iommu_type1_get_info on the user's buffer `arg` (struct
   * vfio_iommu_type1_info, `argsz` in its first word, then room for the
   * capability chain). argsz below 16: -EINVAL; a buffer shorter than argsz:
   * -EFAULT. Under `iommu->lock` it builds the capabilities the kernel does,
   * in its order (migration, DMA available, IOVA ranges; each 8-byte aligned,
   * `next` = the byte offset of the next one from the start of `arg`, 0 at
   * the end). If argsz cannot hold them the chain is left out and argsz is
   * raised to what it needs (the caller asks again); cap_offset is 0 then.
   * Writes at most min(argsz, 24) bytes of the struct, as copy_to_user does.
   */
  vfio_iommu_type1_get_info(arg: DataView, clock?: ModelClock): { errno: VfioErrno } {
    if (arg.byteLength < VFIO_IOMMU_TYPE1_INFO_MINSZ) return { errno: neg(EFAULT) };
    const argsz = arg.getUint32(0, true);
    if (argsz < VFIO_IOMMU_TYPE1_INFO_MINSZ) return { errno: neg(EINVAL) };
    if (argsz > arg.byteLength) return { errno: neg(EFAULT) };
    const minsz = Math.min(argsz, VFIO_IOMMU_TYPE1_INFO_BYTES);
    const info = new DataView(new ArrayBuffer(VFIO_IOMMU_TYPE1_INFO_BYTES));
    info.setUint32(0, argsz, true);
    let dmaAvail: number;
    this.lock.lock(clock);
    try {
      dmaAvail = this.state[S_DMA_AVAIL];
    } finally {
      this.lock.unlock(clock);
    }
    const caps = buildInfoCaps(dmaAvail);
    const flags = VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS;
    info.setBigUint64(8, VFIO_IOMMU_PGSIZES, true);
    if (argsz < VFIO_IOMMU_TYPE1_INFO_BYTES + caps.byteLength) {
      info.setUint32(0, VFIO_IOMMU_TYPE1_INFO_BYTES + caps.byteLength, true);
    } else {
      new Uint8Array(arg.buffer, arg.byteOffset + VFIO_IOMMU_TYPE1_INFO_BYTES, caps.byteLength).set(new Uint8Array(caps.buffer));
      info.setUint32(16, VFIO_IOMMU_TYPE1_INFO_BYTES, true);
    }
    info.setUint32(4, flags, true);
    new Uint8Array(arg.buffer, arg.byteOffset, minsz).set(new Uint8Array(info.buffer, 0, minsz));
    return { errno: 0 };
  }

  // ---- VFIO_IOMMU_UNMAP_DMA -------------------------------------------------

  vfio_dma_do_unmap(unmap: VfioDmaUnmapArgs, clock: ModelClock): { errno: VfioErrno; unmappedBytes: number } {
    Atomics.add(this.calls, C_UNMAP, 1);
    const all = unmap.all === true;
    if (!isU64(unmap.iova) || !isU64(unmap.sizeBytes)) return { errno: neg(EINVAL), unmappedBytes: 0 };
    let unmapped = 0;

    this.lock.lock(clock);
    try {
      clock.charge(this.costs.vfioDmaDoUnmapBaseNs);
      if (!pageAligned(unmap.iova)) return { errno: neg(EINVAL), unmappedBytes: 0 };
      if (all) {
        if (isPositive(unmap.iova) || isPositive(unmap.sizeBytes)) return { errno: neg(EINVAL), unmappedBytes: 0 };
        while (this.state[S_DMA_COUNT] > 0) {
          unmapped += this.dmaSize[0];
          this.vfio_remove_dma(0, clock);
        }
        return { errno: 0, unmappedBytes: unmapped };
      }
      if (!isPositive(unmap.sizeBytes) || !pageAligned(unmap.sizeBytes)) return { errno: neg(EINVAL), unmappedBytes: 0 };
      if (wraps(unmap.iova, unmap.sizeBytes)) return { errno: neg(EOVERFLOW), unmappedBytes: 0 };
      // page-aligned values below 2^65 are exact as numbers (the vfio_dma set holds only IOVAs below 2^48)
      const iova = Number(unmap.iova);
      const size = Number(unmap.sizeBytes);
      // v2: an unmap must not bisect a mapping
      let dma = this.vfio_find_dma(iova, 1);
      if (dma >= 0 && this.dmaIova[dma] !== iova) return { errno: neg(EINVAL), unmappedBytes: 0 };
      dma = this.vfio_find_dma(iova + size - 1, 0);
      if (dma >= 0 && this.dmaIova[dma] + this.dmaSize[dma] !== iova + size) return { errno: neg(EINVAL), unmappedBytes: 0 };

      while ((dma = this.vfio_find_dma(iova, size)) >= 0) {
        unmapped += this.dmaSize[dma];
        this.vfio_remove_dma(dma, clock);
      }
      return { errno: 0, unmappedBytes: unmapped };
    } finally {
      this.lock.unlock(clock);
    }
  }

  // ---- the vfio_dma set (a vfio_dma is its index in the set, valid until the next link or unlink) ----

  /** The first entry whose iova is not below `iova`, or the count. */
  private lowerBound(iova: number): number {
    let lo = 0;
    let hi = this.state[S_DMA_COUNT];
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.dmaIova[mid] < iova) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Some vfio_dma overlapping [start, start + size) (size 0: one containing `start`, not starting at it), with the kernel's comparisons; -1: none. */
  private vfio_find_dma(start: number, size: number): number {
    // the last dma with iova < start + size
    const i = this.lowerBound(start + size) - 1;
    if (i < 0) return -1;
    return start < this.dmaIova[i] + this.dmaSize[i] ? i : -1;
  }

  /** Insert a zero-sized vfio_dma at `iova`; returns it. */
  private vfio_link_dma(iova: number, vaddr: number, prot: IommuProt): number {
    const n = this.state[S_DMA_COUNT];
    if (n >= this.capacity)
      throw new RangeError(
        `vfio_link_dma: the shared vfio_dma set is full (${this.capacity} entries; maxDmaEntries below dma_entry_limit ${this.handle.dmaEntryLimit})`,
      );
    const at = this.lowerBound(iova);
    this.dmaIova.copyWithin(at + 1, at, n);
    this.dmaVaddr.copyWithin(at + 1, at, n);
    this.dmaSize.copyWithin(at + 1, at, n);
    this.dmaProt.copyWithin(at + 1, at, n);
    this.dmaIova[at] = iova;
    this.dmaVaddr[at] = vaddr;
    this.dmaSize[at] = 0;
    this.dmaProt[at] = prot;
    this.state[S_DMA_COUNT] = n + 1;
    return at;
  }

  private vfio_unlink_dma(dma: number): void {
    const n = this.state[S_DMA_COUNT];
    if (!(dma >= 0 && dma < n) || this.lowerBound(this.dmaIova[dma]) !== dma) throw new Error(`vfio_unlink_dma: no vfio_dma number ${dma} of ${n}`);
    this.dmaIova.copyWithin(dma, dma + 1, n);
    this.dmaVaddr.copyWithin(dma, dma + 1, n);
    this.dmaSize.copyWithin(dma, dma + 1, n);
    this.dmaProt.copyWithin(dma, dma + 1, n);
    this.state[S_DMA_COUNT] = n - 1;
  }

  private vfio_remove_dma(dma: number, clock: ModelClock): void {
    this.vfio_unmap_unpin(dma, true, clock);
    this.vfio_unlink_dma(dma);
    this.state[S_DMA_AVAIL]++;
  }

  // ---- pin + map ------------------------------------------------------------

  private vfio_pin_map_dma(dma: number, mapSize: number, clock: ModelClock): VfioErrno {
    let size = mapSize;
    let ret: VfioErrno = 0;
    while (size) {
      const pinned = this.vfio_pin_pages_remote(this.dmaVaddr[dma] + this.dmaSize[dma], size / PAGE, clock);
      if (pinned.errno) {
        ret = pinned.errno;
        break;
      }
      ret = this.vfio_iommu_map(this.dmaIova[dma] + this.dmaSize[dma], pinned.hpa, pinned.npage, this.dmaProt[dma] as IommuProt, clock);
      if (ret) {
        this.vfio_unpin_pages_remote(pinned.hpa, pinned.npage, true, clock);
        break;
      }
      size -= pinned.npage * PAGE;
      this.dmaSize[dma] += pinned.npage * PAGE;
    }
    if (ret) this.vfio_remove_dma(dma, clock);
    return ret;
  }

  /**
   * Pin the physically contiguous run of pages starting at `vaddr` (at most
   * `npage`), accounting them against RLIMIT_MEMLOCK page by page.
   */
  private vfio_pin_pages_remote(vaddr: number, npage: number, clock: ModelClock): { errno: VfioErrno; hpa: number; npage: number } {
    const hpa = this.vaddr_get_pfn(vaddr, clock);
    if (hpa < 0) return { errno: neg(EFAULT), hpa: 0, npage: 0 };
    let pinned = 1;
    let lockAcct = 0;
    if (this.state[S_LOCKED_VM] + 1 > this.lockedVmLimitPages) {
      this.put_pfn(hpa, clock);
      return { errno: neg(ENOMEM), hpa: 0, npage: 0 }; // "RLIMIT_MEMLOCK exceeded"
    }
    lockAcct++;
    let ret: VfioErrno = 0;
    for (; pinned < npage; pinned++) {
      const next = this.vaddr_get_pfn(vaddr + pinned * PAGE, clock);
      if (next < 0) break; // the chunk ends; the next call reports the fault
      if (next !== hpa + pinned * PAGE) {
        this.put_pfn(next, clock);
        break;
      }
      if (this.state[S_LOCKED_VM] + lockAcct + 1 > this.lockedVmLimitPages) {
        this.put_pfn(next, clock);
        ret = neg(ENOMEM);
        break;
      }
      lockAcct++;
    }
    if (!ret) ret = this.vfio_lock_acct(lockAcct, clock);
    if (ret) {
      for (let i = 0; i < pinned; i++) this.put_pfn(hpa + i * PAGE, clock);
      return { errno: ret, hpa: 0, npage: 0 };
    }
    return { errno: 0, hpa, npage: pinned };
  }

  private vfio_unpin_pages_remote(hpa: number, npage: number, doAccounting: boolean, clock: ModelClock): number {
    let unlocked = 0;
    for (let i = 0; i < npage; i++) {
      this.put_pfn(hpa + i * PAGE, clock);
      unlocked++;
    }
    if (doAccounting) this.vfio_lock_acct(-unlocked, clock);
    return unlocked;
  }

  /** mmap_write_lock_killable(mm) + __account_locked_vm + mmap_write_unlock(mm). */
  private vfio_lock_acct(npage: number, clock: ModelClock): VfioErrno {
    if (!npage) return 0;
    this.mmapLock.down_write(clock);
    try {
      clock.charge(this.costs.vfioLockedVmAccountNs);
      const lockedVm = this.state[S_LOCKED_VM];
      if (npage > 0 && lockedVm + npage > this.lockedVmLimitPages) return neg(ENOMEM);
      if (lockedVm + npage < 0) throw new Error(`vfio_lock_acct: locked_vm would go negative (${lockedVm} + ${npage})`);
      this.state[S_LOCKED_VM] = lockedVm + npage;
      return 0;
    } finally {
      this.mmapLock.up_write(clock);
    }
  }

  /**
   * pin_user_pages_remote of one page under mmap_read_lock(mm): its HPA
   * (identity), or -1 (EFAULT) outside guest RAM.
   */
  private vaddr_get_pfn(vaddr: number, clock: ModelClock): number {
    this.mmapLock.down_read(clock);
    try {
      clock.charge(this.costs.vfioPinPagePerPageNs);
      if (vaddr + PAGE > this.guestRamBytes || vaddr >= TASK_SIZE) return -1;
      const hpa = vaddr;
      const pfn = hpa / PAGE;
      if (this.pins[pfn]++ === 0) {
        const pinned = ++this.state[S_PINNED];
        if (pinned > this.state[S_PINNED_PEAK]) this.state[S_PINNED_PEAK] = pinned;
      }
      return hpa;
    } finally {
      this.mmapLock.up_read(clock);
    }
  }

  /** unpin_user_pages_dirty_lock of one page. */
  private put_pfn(hpa: number, clock: ModelClock): void {
    clock.charge(this.costs.vfioUnpinPagePerPageNs);
    const pfn = hpa / PAGE;
    const n = this.pins[pfn];
    if (!n) throw new Error(`put_pfn: page 0x${hpa.toString(16)} is not pinned`);
    this.pins[pfn] = n - 1;
    if (n === 1) this.state[S_PINNED]--;
  }

  /**
   * iommu_map of one pinned, physically contiguous chunk: the IOMMU driver
   * picks the largest leaf that the IOVA, the HPA and the length allow, up to
   * the host page backing the chunk (`hostPageSizeBytes`). Charged per leaf
   * entry written.
   */
  private vfio_iommu_map(iova: number, hpa: number, npage: number, prot: IommuProt, clock: ModelClock): VfioErrno {
    let leaves: number;
    try {
      leaves = this.pgtable.map(iova, hpa, npage * PAGE, prot, this.handle.hostPageSizeBytes ?? PAGE, clock.nowNs());
    } catch (e) {
      if (e instanceof IoPgtableError) return neg(e.errno);
      throw e;
    }
    clock.charge(this.costs.hostIommuMapPerPageNs * leaves);
    return 0;
  }

  // ---- unmap + invalidate + unpin --------------------------------------------

  private vfio_unmap_unpin(dma: number, doAccounting: boolean, clock: ModelClock): number {
    if (!this.dmaSize[dma]) return 0;
    const start = this.dmaIova[dma];
    const end = start + this.dmaSize[dma];
    const gather: Gather = { startIova: Infinity, endIova: 0, regions: [] };
    let unlocked = 0;
    let iova = start;
    while (iova < end) {
      const phys = this.pgtable.walk(iova); // iommu_iova_to_phys
      if (!phys) {
        iova += PAGE; // WARN_ON(!phys)
        continue;
      }
      // the largest physically contiguous chunk, to need fewer unmaps (a walk answers for its whole leaf)
      let len = phys.pageSizeBytes - (iova % phys.pageSizeBytes);
      while (!this.fgsp && iova + len < end) {
        const next = this.pgtable.walk(iova + len);
        if (!next || next.hpa !== phys.hpa + len) break;
        len += next.pageSizeBytes;
      }
      unlocked += this.unmap_unpin_fast(start, iova, len, phys.hpa, gather, clock);
      iova += len;
    }
    if (gather.regions.length) unlocked += this.vfio_sync_unpin(gather, clock);
    if (doAccounting) {
      this.vfio_lock_acct(-unlocked, clock);
      return 0;
    }
    return unlocked;
  }

  /** iommu_unmap_fast into the gather; sync when it holds VFIO_IOMMU_TLB_SYNC_MAX regions. Returns pages unpinned. */
  private unmap_unpin_fast(dmaIova: number, iova: number, len: number, hpa: number, gather: Gather, clock: ModelClock): number {
    const r = this.pgtable.unmapEntries(iova, len, clock.nowNs());
    const unmapped = r.sizeBytes;
    if (unmapped !== len)
      throw new Error(`unmap_unpin_fast: cleared ${unmapped} of ${len} bytes at iova 0x${iova.toString(16)} of the vfio_dma at 0x${dmaIova.toString(16)}`);
    clock.charge(this.costs.hostIommuUnmapPerPageNs * r.leafEntries);
    gather.regions.push({ iova, hpa, sizeBytes: unmapped });
    if (iova < gather.startIova) gather.startIova = iova;
    if (iova + unmapped > gather.endIova) gather.endIova = iova + unmapped;
    return gather.regions.length >= VFIO_IOMMU_TLB_SYNC_MAX ? this.vfio_sync_unpin(gather, clock) : 0;
  }

  /** iommu_iotlb_sync (one IOTLB invalidation), then unpin what the gather unmapped. Returns pages unpinned. */
  private vfio_sync_unpin(gather: Gather, clock: ModelClock): number {
    this.qi_submit_sync(gather.startIova, gather.endIova - gather.startIova, clock);
    this.state[S_INVALIDATIONS]++;
    let unlocked = 0;
    for (const r of gather.regions) unlocked += this.vfio_unpin_pages_remote(r.hpa, r.sizeBytes / PAGE, false, clock);
    gather.regions = [];
    gather.startIova = Infinity;
    gather.endIova = 0;
    return unlocked;
  }

  /**
   * The IOTLB invalidation of iommu_iotlb_sync on VT-d: qi_submit_sync
   * queues the invalidation and a wait descriptor on the unit's invalidation
   * queue under `qi->q_lock`, writes the tail register and polls until the
   * hardware has written the wait descriptor's status. The kernel drops the
   * lock for a cpu_relax() between polls, but the hardware completes wait
   * descriptors in queue order, so a second submitter that queues behind us
   * still waits for ours: the lock is held here across the whole submit and
   * wait, and its lock_stat wait is the time other domains on the same unit
   * spend queued behind this one. Cost: hostIotlbFlushNs for the whole call.
   */
  private qi_submit_sync(iova: number, sizeBytes: number, clock: ModelClock): void {
    this.qiLock.lock(clock);
    try {
      this.invalidateIotlb(iova, sizeBytes, clock);
      clock.charge(this.costs.hostIotlbFlushNs);
    } finally {
      this.qiLock.unlock(clock);
    }
  }
}

function isU64(x: unknown): x is U64Arg {
  if (typeof x === 'bigint') return x >= 0n && x < U64_END;
  return typeof x === 'number' && Number.isInteger(x) && x >= 0 && x < 2 ** 64;
}

function isPositive(x: U64Arg): boolean {
  return typeof x === 'bigint' ? x > 0n : x > 0;
}

function pageAligned(x: U64Arg): boolean {
  return typeof x === 'bigint' ? x % BigInt(PAGE) === 0n : x % PAGE === 0;
}

/** check_add_overflow(start, size - 1): the last byte lies past 2^64 - 1 (size > 0). */
function wraps(start: U64Arg, size: U64Arg): boolean {
  return BigInt(start) + BigInt(size) > U64_END;
}

/**
 * vfio_iommu_iova_dma_valid: [start, end] lies within one range of
 * `iommu->iova_list` (the domain aperture minus the host's reserved regions:
 * the x86 MSI window), the ranges GET_INFO reports.
 */
function vfio_iommu_iova_dma_valid(start: number, end: number): boolean {
  return VFIO_IOVA_RANGES.some((r) => start >= r.start && end <= r.end);
}

/**
 * The capability chain of VFIO_IOMMU_GET_INFO as the kernel lays it out
 * after the 24-byte struct (offsets below are from the start of the struct):
 * | offset | bytes | capability |
 * |--------|-------|------------|
 * | 24 | 32 | MIGRATION (id 2, version 1): flags u32 0, pgsize_bitmap u64 (smallest page), max_dirty_bitmap_size u64 |
 * | 56 | 12 (+4 pad) | DMA_AVAIL (id 3, version 1): avail u32 |
 * | 72 | 16 + 16·n | IOVA_RANGE (id 1, version 1): nr_iovas u32, reserved u32, then n × {start u64, end u64} |
 * Each begins with struct vfio_info_cap_header {id u16, version u16, next u32}.
 */
function buildInfoCaps(dmaAvail: number): DataView {
  const base = VFIO_IOMMU_TYPE1_INFO_BYTES;
  const migration = 32;
  const avail = 16;
  const iova = 16 + 16 * VFIO_IOVA_RANGES.length;
  const dv = new DataView(new ArrayBuffer(migration + avail + iova));
  const header = (at: number, id: number, next: number) => {
    dv.setUint16(at, id, true);
    dv.setUint16(at + 2, 1, true);
    dv.setUint32(at + 4, next, true);
  };
  header(0, VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, base + migration);
  dv.setUint32(8, 0, true);
  dv.setBigUint64(16, BigInt(PAGE_SIZE_BYTES), true);
  dv.setBigUint64(24, BigInt(DIRTY_BITMAP_SIZE_MAX), true);
  header(migration, VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, base + migration + avail);
  dv.setUint32(migration + 8, dmaAvail, true);
  const at = migration + avail;
  header(at, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 0);
  dv.setUint32(at + 8, VFIO_IOVA_RANGES.length, true);
  VFIO_IOVA_RANGES.forEach((r, i) => {
    dv.setBigUint64(at + 16 + 16 * i, BigInt(r.start), true);
    dv.setBigUint64(at + 24 + 16 * i, BigInt(r.end), true);
  });
  return dv;
}

/** What VFIO_IOMMU_GET_INFO answered, decoded from the user's buffer (the VMM's reading of it). */
export interface VfioIommuType1Info {
  argsz: number;
  flags: number;
  iovaPgsizes: bigint;
  capOffset: number;
  iovaRanges: { start: bigint; end: bigint }[] | null;
  dmaAvail: number | null;
  migration: { pgsizeBitmap: bigint; maxDirtyBitmapSizeBytes: bigint } | null;
}

/** Walk the capability chain as QEMU's vfio_get_iommu_info_cap does. */
export function decodeVfioIommuType1Info(arg: DataView): VfioIommuType1Info {
  const out: VfioIommuType1Info = {
    argsz: arg.getUint32(0, true),
    flags: arg.getUint32(4, true),
    iovaPgsizes: arg.getBigUint64(8, true),
    capOffset: arg.byteLength >= 20 ? arg.getUint32(16, true) : 0,
    iovaRanges: null,
    dmaAvail: null,
    migration: null,
  };
  if (!(out.flags & VFIO_IOMMU_INFO_CAPS)) return out;
  for (let at = out.capOffset, hops = 0; at !== 0 && hops < 16; hops++) {
    const id = arg.getUint16(at, true);
    if (id === VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
      const n = arg.getUint32(at + 8, true);
      out.iovaRanges = Array.from({ length: n }, (_, i) => ({
        start: arg.getBigUint64(at + 16 + 16 * i, true),
        end: arg.getBigUint64(at + 24 + 16 * i, true),
      }));
    } else if (id === VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL) {
      out.dmaAvail = arg.getUint32(at + 8, true);
    } else if (id === VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION) {
      out.migration = { pgsizeBitmap: arg.getBigUint64(at + 16, true), maxDirtyBitmapSizeBytes: arg.getBigUint64(at + 24, true) };
    }
    at = arg.getUint32(at + 4, true);
  }
  return out;
}
