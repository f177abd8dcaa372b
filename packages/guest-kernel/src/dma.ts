/**
 * dma-iommu (Linux drivers/iommu/dma-iommu.c) for the strategies the model
 * compares: `direct` (no IOMMU: the device sees guest physical addresses),
 * `strict` (map per I/O; unmap + IOTLB invalidation per I/O) and `lazy`
 * (unmap per I/O, invalidation and IOVA freeing deferred to a per-CPU flush
 * queue: 256 entries or 10 ms).
 *
 * A user buffer is a list of 4 KiB guest pages. `iommu_dma_map_sg` reserves
 * one IOVA range for the whole list and calls the IOMMU driver's map once per
 * physically contiguous run; unmap is one call for the whole IOVA range
 * followed by an IOTLB sync.
 */

import type { ModelClock } from '@vmstack/shm';
import type { IovaDomain } from './iommu/iova.js';
import type { ViommuDriver, Profiler } from './virtio-iommu/viommu.js';

export type DmaStrategy = 'direct' | 'strict' | 'lazy';
export const PAGE_BYTES = 4096;

export interface DmaCosts {
  iommuDmaMapCallNs: number;
  iommuDmaSgPerSegmentNs: number;
  flushQueueAddNs: number;
  lazyFlushTimeoutNs: number;
  lazyFlushQueueEntriesCount: number;
}

/** One mapped I/O buffer: what the device is given and what unmap needs. */
export interface DmaMapping {
  /** the device address of each 4 KiB page, in order */
  dmaPages: number[];
  iovaPfn: number;
  pages: number;
}

export class DmaIommu {
  private fq: { pfn: number; pages: number }[] = [];
  private fqDeadlineNs = Number.MAX_SAFE_INTEGER;
  flushes = 0;

  constructor(
    readonly strategy: DmaStrategy,
    private readonly domain: number,
    private readonly iovad: IovaDomain | null,
    private readonly viommu: ViommuDriver | null,
    private readonly clock: ModelClock,
    private readonly costs: DmaCosts,
    private readonly profiler: Profiler,
    private readonly limitPfn: number,
  ) {}

  /** iommu_dma_map_sg (or the direct path): map the buffer's pages for one I/O. */
  iommu_dma_map_sg(pageGpas: readonly number[], read: boolean, write: boolean): DmaMapping {
    const start = this.clock.nowNs();
    if (this.strategy === 'direct') {
      return { dmaPages: pageGpas.slice(), iovaPfn: 0, pages: pageGpas.length };
    }
    const n = pageGpas.length;
    this.clock.charge(this.costs.iommuDmaMapCallNs + n * this.costs.iommuDmaSgPerSegmentNs);
    const pfn = this.iovad!.alloc_iova_fast(n, this.limitPfn, this.clock);
    if (pfn === 0) throw new Error('dma-iommu: IOVA space exhausted');
    const iova = pfn * PAGE_BYTES;
    // one IOMMU map call per physically contiguous run
    let runStart = 0;
    for (let i = 1; i <= n; i++) {
      if (i === n || pageGpas[i] !== pageGpas[i - 1] + PAGE_BYTES) {
        this.viommu!.viommu_map_pages(this.domain, iova + runStart * PAGE_BYTES, pageGpas[runStart], (i - runStart) * PAGE_BYTES, read, write);
        runStart = i;
      }
    }
    this.viommu!.viommu_iotlb_sync_map();
    const dmaPages = new Array<number>(n);
    for (let i = 0; i < n; i++) dmaPages[i] = iova + i * PAGE_BYTES;
    this.profiler.add(n === 1 ? 'iommu_dma_map_page' : 'iommu_dma_map_sg', this.clock.nowNs() - start, n * PAGE_BYTES);
    return { dmaPages, iovaPfn: pfn, pages: n };
  }

  /** iommu_dma_unmap_sg: one unmap for the whole range, then strict sync or the flush queue. */
  iommu_dma_unmap_sg(m: DmaMapping): void {
    if (this.strategy === 'direct') return;
    const start = this.clock.nowNs();
    this.clock.charge(this.costs.iommuDmaMapCallNs);
    this.viommu!.viommu_unmap_pages(this.domain, m.iovaPfn * PAGE_BYTES, m.pages * PAGE_BYTES);
    if (this.strategy === 'strict') {
      this.viommu!.viommu_iotlb_sync();
      this.iovad!.free_iova_fast(m.iovaPfn, m.pages, this.clock);
    } else {
      // queue_iova: the IOVA may be reused only after the next IOTLB flush
      this.clock.charge(this.costs.flushQueueAddNs);
      if (this.fq.length === 0) this.fqDeadlineNs = this.clock.nowNs() + this.costs.lazyFlushTimeoutNs;
      this.fq.push({ pfn: m.iovaPfn, pages: m.pages });
      if (this.fq.length >= this.costs.lazyFlushQueueEntriesCount) this.fq_flush();
    }
    this.profiler.add(m.pages === 1 ? 'iommu_dma_unmap_page' : 'iommu_dma_unmap_sg', this.clock.nowNs() - start, m.pages * PAGE_BYTES);
  }

  /** The flush-queue timer, if it is due at or before `nowNs`. */
  nextTimerNs(): number {
    return this.fq.length > 0 ? this.fqDeadlineNs : Number.MAX_SAFE_INTEGER;
  }

  fq_flush(): void {
    if (this.fq.length === 0) return;
    this.flushes++;
    this.viommu!.viommu_iotlb_sync();
    for (const e of this.fq) this.iovad!.free_iova_fast(e.pfn, e.pages, this.clock);
    this.fq = [];
    this.fqDeadlineNs = Number.MAX_SAFE_INTEGER;
  }
}
