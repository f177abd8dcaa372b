/**
 * The IOTLB the NVMe device's DMAs go through: the host IOMMU's cache of
 * IOVA → HPA translations in front of the page walker (`IoPgtable.walk`,
 * read lock-free from the device worker). One entry caches one leaf of the
 * page table: a 4 KiB page, or a whole 2 MiB / 1 GiB superpage (as VT-d's
 * IOTLB holds large-page entries), so a superpage-mapped buffer needs one
 * entry where 4 KiB leaves need 512.
 *
 * Organisation: fully associative, `iotlbEntriesCount` entries, least
 * recently used replacement (an LruIndex: a hit makes the entry the most
 * recently used, a fill evicts the least). Only present translations are cached;
 * a walk that finds nothing is not remembered (VT-d does not cache
 * not-present entries outside caching mode).
 *
 * Costs: a hit is free (the translation overlaps the DMA); a miss charges
 * `iotlbMissWalkNs` on the device clock, whatever the walk finds.
 *
 * Faults (counted, returned as negative codes; the DMA must not happen):
 * - IOTLB_FAULT_NOT_PRESENT: no translation for the IOVA
 * - IOTLB_FAULT_WRITE: the device writes memory (a read command's data)
 *   through a translation without IOMMU_WRITE
 * - IOTLB_FAULT_READ: the device reads memory (a write command's data, a PRP
 *   list) through a translation without IOMMU_READ
 * A permission fault on a cached entry counts as a hit and a fault. With a
 * fault log (`faultLog`, fault-log.ts) each fault is also recorded there at
 * the clock's model time, as the hardware records it for the host's driver.
 *
 * Context entry (`context`): while the requester's context entry is cleared
 * every DMA faults as not present, whatever the cache holds.
 *
 * Invalidation: `invalidate(iova, sizeBytes)` drops every cached entry the
 * range touches (a superpage entry whole); sizeBytes 0 drops everything (the HostToDeviceIotlbInval
 * convention); until an invalidation arrives a stale entry keeps translating,
 * as in hardware.
 */

import { InputError, IOMMU_READ, IOMMU_WRITE, type ModelClock, PAGE_SIZE_BYTES } from '@vmstack/shm';
import type { IommuContextEntry } from './context-entry.js';
import { IOMMU_FAULT_REASON_NOT_PRESENT, IOMMU_FAULT_REASON_PERMISSION, type IommuFaultLog } from './fault-log.js';
import { LruIndex } from './lru-index.js';

const PAGE = PAGE_SIZE_BYTES;
const READ = IOMMU_READ;
const WRITE = IOMMU_WRITE;

export const IOTLB_FAULT_NOT_PRESENT = -1;
export const IOTLB_FAULT_WRITE = -2;
export const IOTLB_FAULT_READ = -3;
export type IotlbFault = typeof IOTLB_FAULT_NOT_PRESENT | typeof IOTLB_FAULT_WRITE | typeof IOTLB_FAULT_READ;

export function isIotlbFault(result: number): result is IotlbFault {
  return result < 0;
}

/** What the IOTLB needs of the page table: a walk (IoPgtable has this shape). */
export interface IoPageWalker {
  walk(iova: number): { readonly hpa: number; readonly prot: number; readonly levels: number; readonly leafLevel?: number } | null;
}

/** 4 KiB pages a leaf of each level maps, indexed by level (1: 4 KiB, 2: 2 MiB, 3: 1 GiB) */
const LEAF_PAGES = [0, 1, 512, 512 * 512];

export interface IotlbCosts {
  readonly iotlbMissWalkNs: number;
  readonly iotlbEntriesCount: number;
}

export interface IotlbStats {
  hits: number;
  misses: number;
  faults: number;
  invalidations: number;
  entries: number;
}

export class Iotlb {
  /**
   * key → hpa page frame of the leaf's start · 4 + prot, in LRU order (front
   * = least recent). key = iova page frame of the leaf's start · 4 + its
   * level (1, 2 or 3), so one Map holds every leaf size.
   */
  private readonly entries: LruIndex;
  /** cached entries of 2 MiB and 1 GiB leaves: while 0, a lookup tries the 4 KiB key only */
  private superEntries = 0;
  private readonly capacity: number;
  private readonly missNs: number;
  private hitCount = 0;
  private missCount = 0;
  private faultCount = 0;
  private invalidationCount = 0;
  /** where the hardware records each fault for the host (none: faults are only counted) */
  faultLog: IommuFaultLog | null = null;
  /** the requester's context entry (context-entry.ts): cleared, every DMA faults; none: always present */
  context: IommuContextEntry | null = null;

  constructor(
    private readonly walker: IoPageWalker,
    costs: IotlbCosts,
  ) {
    const n = costs.iotlbEntriesCount;
    if (!Number.isSafeInteger(n) || n < 1) throw new InputError('profile.iotlbEntriesCount', n, 'an integer count ≥ 1');
    const ns = costs.iotlbMissWalkNs;
    if (typeof ns !== 'number' || !Number.isFinite(ns) || ns < 0) throw new InputError('profile.iotlbMissWalkNs', ns, 'a finite number of ns ≥ 0');
    this.capacity = n;
    this.missNs = ns;
    this.entries = new LruIndex(n);
  }

  /**
   * Translate one DMA access at `iova`: `write` = the device writes memory.
   * Returns the HPA, or a fault code (negative).
   */
  translate(iova: number, write: boolean, clock: ModelClock): number {
    if (this.context !== null && !this.context.present) {
      // the requester's group left its container: no translation at all
      this.faultCount++;
      this.faultLog?.record(clock.nowNs(), iova, write, IOMMU_FAULT_REASON_NOT_PRESENT);
      return IOTLB_FAULT_NOT_PRESENT;
    }
    const pfn = Math.floor(iova / PAGE);
    let key = pfn * 4 + 1;
    let entry = this.entries.find(key);
    if (entry < 0 && this.superEntries > 0) {
      key = (pfn - (pfn % LEAF_PAGES[2])) * 4 + 2;
      entry = this.entries.find(key);
      if (entry < 0) {
        key = (pfn - (pfn % LEAF_PAGES[3])) * 4 + 3;
        entry = this.entries.find(key);
      }
    }
    let e: number;
    if (entry >= 0) {
      this.hitCount++;
      e = this.entries.valueAt(entry);
      this.entries.touch(entry);
    } else {
      this.missCount++;
      clock.charge(this.missNs);
      const w = this.walker.walk(pfn * PAGE);
      if (w === null) {
        this.faultCount++;
        this.faultLog?.record(clock.nowNs(), iova, write, IOMMU_FAULT_REASON_NOT_PRESENT);
        return IOTLB_FAULT_NOT_PRESENT;
      }
      const level = w.leafLevel ?? 1;
      const leafPages = LEAF_PAGES[level];
      const basePfn = pfn - (pfn % leafPages);
      key = basePfn * 4 + level;
      e = (Math.floor(w.hpa / PAGE) - (pfn - basePfn)) * 4 + (w.prot & (READ | WRITE));
      if (this.entries.size >= this.capacity) this.evict(this.entries.oldestKey());
      this.entries.insert(key, e);
      if (level > 1) this.superEntries++;
    }
    const prot = e % 4;
    if (write ? (prot & WRITE) === 0 : (prot & READ) === 0) {
      this.faultCount++;
      this.faultLog?.record(clock.nowNs(), iova, write, IOMMU_FAULT_REASON_PERMISSION);
      return write ? IOTLB_FAULT_WRITE : IOTLB_FAULT_READ;
    }
    return Math.floor(e / 4) * PAGE + (iova - ((key - (key % 4)) / 4) * PAGE);
  }

  private evict(key: number): void {
    this.entries.delete(key);
    if (key % 4 > 1) this.superEntries--;
  }

  /** Drop cached translations of every page [iova, iova + sizeBytes) touches; sizeBytes 0 = all. */
  invalidate(iova: number, sizeBytes: number): void {
    if (sizeBytes === 0) {
      this.invalidateAll();
      return;
    }
    if (!(sizeBytes > 0) || !(iova >= 0)) throw new RangeError(`Iotlb.invalidate: iova ${iova}, size ${sizeBytes} must be ≥ 0`);
    this.invalidationCount++;
    const first = Math.floor(iova / PAGE);
    const end = Math.ceil((iova + sizeBytes) / PAGE);
    if (this.superEntries > 0 || end - first > this.entries.size) {
      for (const key of this.entries.keyList()) {
        const base = (key - (key % 4)) / 4;
        if (base < end && base + LEAF_PAGES[key % 4] > first) this.evict(key);
      }
    } else {
      for (let pfn = first; pfn < end; pfn++) this.entries.delete(pfn * 4 + 1);
    }
  }

  invalidateAll(): void {
    this.invalidationCount++;
    this.entries.clear();
    this.superEntries = 0;
  }

  get hits(): number {
    return this.hitCount;
  }
  get misses(): number {
    return this.missCount;
  }
  get faults(): number {
    return this.faultCount;
  }
  get invalidations(): number {
    return this.invalidationCount;
  }

  /** Cached entries now (a superpage entry counts one). */
  get size(): number {
    return this.entries.size;
  }

  stats(): IotlbStats {
    return { hits: this.hitCount, misses: this.missCount, faults: this.faultCount, invalidations: this.invalidationCount, entries: this.entries.size };
  }
}
