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
 *   per page: -ENOMEM) → `vfio_lock_acct` (one mmap-lock + locked_vm update per
 *   chunk) → `vfio_iommu_map` (host page tables; a full table pool: -ENOMEM).
 *   A failure unwinds through `vfio_remove_dma`, so nothing stays pinned,
 *   accounted or mapped.
 * - `vfio_dma_do_unmap`: alignment and size checks (-EINVAL), iova + size - 1
 *   wrapping past 2^64 - 1 (-EOVERFLOW), the v2 rule that an unmap may not
 *   bisect a `vfio_dma` (-EINVAL), then every `vfio_dma` in the range is
 *   removed; unmapping nothing succeeds with 0 bytes. VFIO_DMA_UNMAP_FLAG_ALL
 *   (iova and size must be 0, else -EINVAL) removes every `vfio_dma`. Either
 *   way the answer is the bytes unmapped.
 * - `vfio_unmap_unpin`: finds physically contiguous chunks through the page
 *   table (`iommu_iova_to_phys`), clears them with `unmap_unpin_fast` into an
 *   IOTLB gather, and every `VFIO_IOMMU_TLB_SYNC_MAX` (512) chunks, and at the
 *   end of each `vfio_dma`, `vfio_sync_unpin` flushes the IOTLB once (the
 *   `invalidateIotlb` callback + `hostIotlbFlushNs`) and only then unpins.
 *   (`unmap_unpin_slow` serves only a failed fast unmap, which cannot happen
 *   here: the page table has a single writer and no allocation in the path.)
 *
 * Model specifics:
 * - Arguments are JS numbers: an integer from 0 to 2^64 - 1 is a u64 (above
 *   2^53 only the doubles that are integers are expressible); wrap-around is
 *   checked exactly with BigInt. User addresses end at TASK_SIZE (2^47, x86-64
 *   4-level paging): pinning beyond it is -EFAULT.
 * - The VMM maps guest RAM at the identity: vaddr = gpa = HPA (the byte offset
 *   in the guest-RAM SharedArrayBuffer). `guestRamBytes`, when given, bounds
 *   what can be pinned: a vaddr beyond it fails `pin_user_pages_remote`
 *   (-EFAULT), as an unmapped user address does.
 * - Identity means a `vfio_dma` is always one contiguous chunk, so the 512-chunk
 *   gather limit matters only with `fineGrainedSuperPages` (AMD-Vi's
 *   `domain->fgsp`: chunks of one page), which the option reproduces.
 * - `locked_vm` counts pages per `vfio_dma`, as type1 does: the same page mapped
 *   at two IOVAs is pinned twice (page refcount 2, one distinct pinned page)
 *   and accounted twice. `lockedVmLimitPages` is RLIMIT_MEMLOCK >> PAGE_SHIFT
 *   for a VMM without CAP_IPC_LOCK; Infinity models an unlimited rlimit.
 * - The `vfio_dma` tree is a host-local sorted array (only the host worker
 *   touches it); `iommu->lock` is the shared Mutex, held across pin + map and
 *   across unmap + invalidate + unpin, so its lock_stat shows the ioctls'
 *   real serialisation.
 *
 * Costs (model ns, charged on the caller's clock while holding the lock):
 * | key | charged |
 * |-----|---------|
 * | vfioDmaDoMapBaseNs      | once per MAP_DMA that gets the lock |
 * | vfioPinPagePerPageNs    | per page pin attempt |
 * | vfioLockedVmAccountNs   | per `vfio_lock_acct` with a non-zero delta |
 * | hostIommuMapPerPageNs   | per page written to the host page table |
 * | vfioDmaDoUnmapBaseNs    | once per UNMAP_DMA that gets the lock |
 * | hostIommuUnmapPerPageNs | per page cleared from the host page table |
 * | hostIotlbFlushNs        | per IOTLB sync (one gather batch) |
 * | vfioUnpinPagePerPageNs  | per page unpinned |
 */

import { IOVA_LIMIT, type IommuProt, type IoPgtable, IoPgtableError } from '@vmstack/iommu-hw';
import { InputError, IOMMU_READ, IOMMU_WRITE, type LockTable, type ModelClock, type Mutex, PAGE_SIZE_BYTES } from '@vmstack/shm';

/** Name of the container's lock in the run's LockTable. */
export const IOMMU_LOCK = 'iommu->lock';
/**
 * Name of a host IOMMU unit's queued-invalidation lock (`qi->q_lock` of
 * drivers/iommu/intel/dmar.c), shared by every domain on that unit.
 */
export const QI_Q_LOCK = 'qi->q_lock';
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

export interface VfioContainerOptions {
  readonly pgtable: IoPgtable;
  readonly lockTable: LockTable;
  readonly costs: VfioContainerCosts;
  /** RLIMIT_MEMLOCK in pages; Infinity = unlimited */
  readonly lockedVmLimitPages: number;
  /** most `vfio_dma` entries at once (default 65535) */
  readonly dmaEntryLimit?: number;
  readonly invalidateIotlb: InvalidateIotlb;
  /** lock name in `lockTable` (default `iommu->lock`; one per container when a run has several VMs) */
  readonly lockName?: string;
  /** the name in `lockTable` of the `qi->q_lock` of the host IOMMU unit translating for the container's device (default `qi->q_lock`) */
  readonly qiLockName?: string;
  /** bytes of pinnable user memory at vaddr 0 (the guest RAM); default: no bound */
  readonly guestRamBytes?: number;
  /** AMD-Vi fine-grained superpages (`domain->fgsp`): unmap page by page (default false, VT-d) */
  readonly fineGrainedSuperPages?: boolean;
}

export interface VfioDmaMapArgs {
  readonly iova: number;
  readonly vaddr: number;
  readonly sizeBytes: number;
  /** VFIO_DMA_MAP_FLAG_READ: the device may read this memory */
  readonly read: boolean;
  /** VFIO_DMA_MAP_FLAG_WRITE: the device may write this memory */
  readonly write: boolean;
}

export interface VfioDmaUnmapArgs {
  readonly iova: number;
  readonly sizeBytes: number;
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

/** struct vfio_dma */
interface VfioDma {
  readonly iova: number;
  readonly vaddr: number;
  /** grows as chunks are pinned and mapped */
  sizeBytes: number;
  readonly prot: IommuProt;
}

/** struct iommu_iotlb_gather + the vfio_regions list of unmap_unpin_fast */
interface Gather {
  startIova: number;
  endIova: number;
  regions: { iova: number; hpa: number; sizeBytes: number }[];
}

const neg = (errno: number): VfioErrno => -errno as VfioErrno;

export class VfioContainer {
  private readonly pgtable: IoPgtable;
  private readonly costs: VfioContainerCosts;
  private readonly lock: Mutex;
  private readonly qiLock: Mutex;
  private readonly invalidateIotlb: InvalidateIotlb;
  private readonly lockedVmLimitPages: number;
  private readonly guestRamBytes: number;
  private readonly fgsp: boolean;
  /** iommu->dma_list, sorted by iova, non-overlapping */
  private readonly dmaList: VfioDma[] = [];
  /** host pfn → pin count (the page refcount pins hold) */
  private readonly pins = new Map<number, number>();
  private dmaAvail: number;
  private lockedVm = 0;

  private mapCalls = 0;
  private unmapCalls = 0;
  private pinnedPeak = 0;
  private invalidations = 0;

  constructor(opts: VfioContainerOptions) {
    for (const key of COST_KEYS) {
      const v = opts.costs?.[key];
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new InputError(`profile.${key}`, v, 'a finite number of ns ≥ 0');
    }
    const limit = opts.lockedVmLimitPages;
    if (!(limit === Infinity || (Number.isSafeInteger(limit) && limit >= 0))) {
      throw new InputError('lockedVmLimitPages', limit, 'an integer number of pages ≥ 0 (RLIMIT_MEMLOCK / 4 KiB), or Infinity for unlimited');
    }
    const entries = opts.dmaEntryLimit ?? DEFAULT_DMA_ENTRY_LIMIT;
    if (!Number.isSafeInteger(entries) || entries < 0 || entries > 0xffffffff) {
      throw new InputError('dmaEntryLimit', entries, 'an integer from 0 to 4294967295 (vfio_iommu_type1 dma_entry_limit; default 65535)');
    }
    const ram = opts.guestRamBytes ?? Infinity;
    if (!(ram === Infinity || (Number.isSafeInteger(ram) && ram > 0 && ram % PAGE === 0))) {
      throw new InputError('guestRamBytes', ram, 'a positive multiple of 4096 bytes');
    }
    if (typeof opts.invalidateIotlb !== 'function') throw new TypeError('VfioContainer: invalidateIotlb must be a function');
    this.pgtable = opts.pgtable;
    this.costs = { ...opts.costs };
    this.lock = opts.lockTable.get(opts.lockName ?? IOMMU_LOCK);
    this.qiLock = opts.lockTable.get(opts.qiLockName ?? QI_Q_LOCK);
    this.invalidateIotlb = opts.invalidateIotlb;
    this.lockedVmLimitPages = limit;
    this.dmaAvail = entries;
    this.guestRamBytes = ram;
    this.fgsp = opts.fineGrainedSuperPages ?? false;
  }

  // ---- statistics ----------------------------------------------------------

  get mapDmaCalls(): number {
    return this.mapCalls;
  }
  get unmapDmaCalls(): number {
    return this.unmapCalls;
  }
  /** distinct host pages with at least one pin */
  get pinnedPages(): number {
    return this.pins.size;
  }
  get pinnedPagesPeak(): number {
    return this.pinnedPeak;
  }
  /** mm->locked_vm contributed by this container, pages */
  get lockedVmPages(): number {
    return this.lockedVm;
  }
  get dmaCount(): number {
    return this.dmaList.length;
  }
  get iotlbInvalidations(): number {
    return this.invalidations;
  }

  stats(): VfioContainerStats {
    return {
      mapDmaCalls: this.mapCalls,
      unmapDmaCalls: this.unmapCalls,
      pinnedPages: this.pinnedPages,
      pinnedPagesPeak: this.pinnedPeak,
      lockedVmPages: this.lockedVm,
      dmaCount: this.dmaList.length,
      iotlbInvalidations: this.invalidations,
    };
  }

  // ---- VFIO_IOMMU_MAP_DMA ---------------------------------------------------

  vfio_dma_do_map(map: VfioDmaMapArgs, clock: ModelClock): { errno: VfioErrno } {
    this.mapCalls++;
    const { iova, vaddr, sizeBytes: size } = map;
    // "Verify that none of our __u64 fields overflow": here, a number that is not an integer from 0 to 2^64 - 1
    if (!isU64(iova) || !isU64(vaddr) || !isU64(size)) return { errno: neg(EINVAL) };
    if (!size) return { errno: neg(EINVAL) };
    // check_add_overflow(iova, size - 1) and (vaddr, size - 1), before the lock
    if (wraps(iova, size) || wraps(vaddr, size)) return { errno: neg(EOVERFLOW) };
    const prot = ((map.write === true ? IOMMU_WRITE : 0) | (map.read === true ? IOMMU_READ : 0)) as IommuProt | 0;

    this.lock.lock(clock);
    try {
      clock.charge(this.costs.vfioDmaDoMapBaseNs);
      if (!prot || !size || ((size % PAGE) | (iova % PAGE) | (vaddr % PAGE)) !== 0) return { errno: neg(EINVAL) };
      if (this.vfio_find_dma(iova, size)) return { errno: neg(EEXIST) };
      if (!this.dmaAvail) return { errno: neg(ENOSPC) };
      // vfio_iommu_iova_dma_valid: inside the domain aperture
      if (iova + size > IOVA_LIMIT) return { errno: neg(EINVAL) };

      this.dmaAvail--;
      const dma: VfioDma = { iova, vaddr, sizeBytes: 0, prot };
      this.vfio_link_dma(dma); // inserted zero-sized, grows as chunks are mapped
      return { errno: this.vfio_pin_map_dma(dma, size, clock) };
    } finally {
      this.lock.unlock(clock);
    }
  }

  // ---- VFIO_IOMMU_UNMAP_DMA -------------------------------------------------

  vfio_dma_do_unmap(unmap: VfioDmaUnmapArgs, clock: ModelClock): { errno: VfioErrno; unmappedBytes: number } {
    this.unmapCalls++;
    const { iova, sizeBytes: size } = unmap;
    const all = unmap.all === true;
    if (!isU64(iova) || !isU64(size)) return { errno: neg(EINVAL), unmappedBytes: 0 };
    let unmapped = 0;

    this.lock.lock(clock);
    try {
      clock.charge(this.costs.vfioDmaDoUnmapBaseNs);
      if (iova % PAGE !== 0) return { errno: neg(EINVAL), unmappedBytes: 0 };
      if (all) {
        if (iova || size) return { errno: neg(EINVAL), unmappedBytes: 0 };
        for (let first = this.dmaList[0]; first; first = this.dmaList[0]) {
          unmapped += first.sizeBytes;
          this.vfio_remove_dma(first, clock);
        }
        return { errno: 0, unmappedBytes: unmapped };
      }
      if (!size || size % PAGE !== 0) return { errno: neg(EINVAL), unmappedBytes: 0 };
      if (wraps(iova, size)) return { errno: neg(EOVERFLOW), unmappedBytes: 0 };
      // v2: an unmap must not bisect a mapping
      let dma = this.vfio_find_dma(iova, 1);
      if (dma && dma.iova !== iova) return { errno: neg(EINVAL), unmappedBytes: 0 };
      dma = this.vfio_find_dma(iova + size - 1, 0);
      if (dma && dma.iova + dma.sizeBytes !== iova + size) return { errno: neg(EINVAL), unmappedBytes: 0 };

      while ((dma = this.vfio_find_dma(iova, size))) {
        unmapped += dma.sizeBytes;
        this.vfio_remove_dma(dma, clock);
      }
      return { errno: 0, unmappedBytes: unmapped };
    } finally {
      this.lock.unlock(clock);
    }
  }

  // ---- the vfio_dma tree ----------------------------------------------------

  /** Some vfio_dma overlapping [start, start + size) (size 0: one containing `start`, not starting at it), with the kernel's comparisons. */
  private vfio_find_dma(start: number, size: number): VfioDma | null {
    const list = this.dmaList;
    // last dma with iova < start + size
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid].iova < start + size) lo = mid + 1;
      else hi = mid;
    }
    if (lo === 0) return null;
    const dma = list[lo - 1];
    return start < dma.iova + dma.sizeBytes ? dma : null;
  }

  private vfio_link_dma(dma: VfioDma): void {
    const list = this.dmaList;
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid].iova < dma.iova) lo = mid + 1;
      else hi = mid;
    }
    list.splice(lo, 0, dma);
  }

  private vfio_unlink_dma(dma: VfioDma): void {
    const list = this.dmaList;
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid].iova < dma.iova) lo = mid + 1;
      else hi = mid;
    }
    if (list[lo] !== dma) throw new Error(`vfio_unlink_dma: no vfio_dma at iova 0x${dma.iova.toString(16)}`);
    list.splice(lo, 1);
  }

  private vfio_remove_dma(dma: VfioDma, clock: ModelClock): void {
    this.vfio_unmap_unpin(dma, true, clock);
    this.vfio_unlink_dma(dma);
    this.dmaAvail++;
  }

  // ---- pin + map ------------------------------------------------------------

  private vfio_pin_map_dma(dma: VfioDma, mapSize: number, clock: ModelClock): VfioErrno {
    let size = mapSize;
    let ret: VfioErrno = 0;
    while (size) {
      const pinned = this.vfio_pin_pages_remote(dma, dma.vaddr + dma.sizeBytes, size / PAGE, clock);
      if (pinned.errno) {
        ret = pinned.errno;
        break;
      }
      ret = this.vfio_iommu_map(dma.iova + dma.sizeBytes, pinned.hpa, pinned.npage, dma.prot, clock);
      if (ret) {
        this.vfio_unpin_pages_remote(pinned.hpa, pinned.npage, true, clock);
        break;
      }
      size -= pinned.npage * PAGE;
      dma.sizeBytes += pinned.npage * PAGE;
    }
    if (ret) this.vfio_remove_dma(dma, clock);
    return ret;
  }

  /**
   * Pin the physically contiguous run of pages starting at `vaddr` (at most
   * `npage`), accounting them against RLIMIT_MEMLOCK page by page.
   */
  private vfio_pin_pages_remote(_dma: VfioDma, vaddr: number, npage: number, clock: ModelClock): { errno: VfioErrno; hpa: number; npage: number } {
    const hpa = this.vaddr_get_pfn(vaddr, clock);
    if (hpa < 0) return { errno: neg(EFAULT), hpa: 0, npage: 0 };
    let pinned = 1;
    let lockAcct = 0;
    if (this.lockedVm + 1 > this.lockedVmLimitPages) {
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
      if (this.lockedVm + lockAcct + 1 > this.lockedVmLimitPages) {
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

  /** mmap_write_lock + __account_locked_vm. */
  private vfio_lock_acct(npage: number, clock: ModelClock): VfioErrno {
    if (!npage) return 0;
    clock.charge(this.costs.vfioLockedVmAccountNs);
    if (npage > 0 && this.lockedVm + npage > this.lockedVmLimitPages) return neg(ENOMEM);
    this.lockedVm += npage;
    if (this.lockedVm < 0) throw new Error(`vfio_lock_acct: locked_vm went negative (${this.lockedVm})`);
    return 0;
  }

  /** pin_user_pages_remote of one page: its HPA (identity), or -1 (EFAULT) outside guest RAM. */
  private vaddr_get_pfn(vaddr: number, clock: ModelClock): number {
    clock.charge(this.costs.vfioPinPagePerPageNs);
    if (vaddr + PAGE > this.guestRamBytes || vaddr >= TASK_SIZE) return -1;
    const hpa = vaddr;
    const pfn = hpa / PAGE;
    const n = (this.pins.get(pfn) ?? 0) + 1;
    this.pins.set(pfn, n);
    if (this.pins.size > this.pinnedPeak) this.pinnedPeak = this.pins.size;
    return hpa;
  }

  /** unpin_user_pages_dirty_lock of one page. */
  private put_pfn(hpa: number, clock: ModelClock): void {
    clock.charge(this.costs.vfioUnpinPagePerPageNs);
    const pfn = hpa / PAGE;
    const n = this.pins.get(pfn);
    if (n === undefined) throw new Error(`put_pfn: page 0x${hpa.toString(16)} is not pinned`);
    if (n === 1) this.pins.delete(pfn);
    else this.pins.set(pfn, n - 1);
  }

  private vfio_iommu_map(iova: number, hpa: number, npage: number, prot: IommuProt, clock: ModelClock): VfioErrno {
    try {
      this.pgtable.map(iova, hpa, npage * PAGE, prot);
    } catch (e) {
      if (e instanceof IoPgtableError) return neg(e.errno);
      throw e;
    }
    clock.charge(this.costs.hostIommuMapPerPageNs * npage);
    return 0;
  }

  // ---- unmap + invalidate + unpin --------------------------------------------

  private vfio_unmap_unpin(dma: VfioDma, doAccounting: boolean, clock: ModelClock): number {
    if (!dma.sizeBytes) return 0;
    const end = dma.iova + dma.sizeBytes;
    const gather: Gather = { startIova: Infinity, endIova: 0, regions: [] };
    let unlocked = 0;
    let iova = dma.iova;
    while (iova < end) {
      const phys = this.pgtable.walk(iova); // iommu_iova_to_phys
      if (!phys) {
        iova += PAGE; // WARN_ON(!phys)
        continue;
      }
      // the largest physically contiguous chunk, to need fewer unmaps
      let len = PAGE;
      while (!this.fgsp && iova + len < end) {
        const next = this.pgtable.walk(iova + len);
        if (!next || next.hpa !== phys.hpa + len) break;
        len += PAGE;
      }
      unlocked += this.unmap_unpin_fast(dma, iova, len, phys.hpa, gather, clock);
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
  private unmap_unpin_fast(dma: VfioDma, iova: number, len: number, hpa: number, gather: Gather, clock: ModelClock): number {
    const unmapped = this.pgtable.unmap(iova, len);
    if (unmapped !== len)
      throw new Error(`unmap_unpin_fast: cleared ${unmapped} of ${len} bytes at iova 0x${iova.toString(16)} of the vfio_dma at 0x${dma.iova.toString(16)}`);
    clock.charge(this.costs.hostIommuUnmapPerPageNs * (unmapped / PAGE));
    gather.regions.push({ iova, hpa, sizeBytes: unmapped });
    if (iova < gather.startIova) gather.startIova = iova;
    if (iova + unmapped > gather.endIova) gather.endIova = iova + unmapped;
    return gather.regions.length >= VFIO_IOMMU_TLB_SYNC_MAX ? this.vfio_sync_unpin(gather, clock) : 0;
  }

  /** iommu_iotlb_sync (one IOTLB invalidation), then unpin what the gather unmapped. Returns pages unpinned. */
  private vfio_sync_unpin(gather: Gather, clock: ModelClock): number {
    this.qi_submit_sync(gather.startIova, gather.endIova - gather.startIova, clock);
    this.invalidations++;
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

function isU64(x: unknown): x is number {
  return typeof x === 'number' && Number.isInteger(x) && x >= 0 && x < 2 ** 64;
}

/** check_add_overflow(start, size - 1): the last byte lies past 2^64 - 1 (size > 0). */
function wraps(start: number, size: number): boolean {
  return BigInt(start) + BigInt(size) > U64_END;
}
