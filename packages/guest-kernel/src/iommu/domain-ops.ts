/**
 * What dma-iommu (`dma.ts`) calls on an IOMMU driver: Linux `struct
 * iommu_domain_ops` (include/linux/iommu.h), reduced to the operations the
 * DMA API uses on a paging domain, and `struct iommu_iotlb_gather`, the
 * range an unmap leaves for the IOTLB sync to invalidate.
 *
 * Two drivers implement it:
 * - `ViommuDriver` (`virtio-iommu/viommu.ts`): in a VM, every operation is a
 *   virtio-iommu request to the VMM (`viommu_domain_ops`); it ignores the
 *   gather, as the kernel's does (its UNMAPs are queued requests).
 * - `IntelIommuDriver` (`iommu/intel-iommu.ts`): on bare metal, the kernel
 *   writes the VT-d page tables itself and invalidates the IOTLB through the
 *   unit's invalidation queue (`intel_iommu_ops.default_domain_ops`).
 *
 * The calls dma-iommu makes, in the reference period's order:
 * - map: `map_pages` once per physically contiguous run, then
 *   `iotlb_sync_map` once for the whole IOVA range (`iommu_map_sg`);
 * - strict unmap (`__iommu_dma_unmap`): `unmap_pages` into a fresh gather,
 *   then `iotlb_sync` with it, then the IOVA is freed;
 * - lazy unmap: `unmap_pages` into a gather marked `queued`, no sync; the
 *   flush queue later calls `flush_iotlb_all` (`iommu_dma_flush_iotlb_all`)
 *   before it frees the IOVAs.
 */

import type { Gpa, Iova } from '@vmstack/shm';

/**
 * A map the IOMMU driver could not make for want of resources (the driver's
 * -ENOMEM: virtio-iommu's VIRTIO_IOMMU_S_NOMEM). dma-iommu unwinds the
 * mapping and passes it on; the NVMe driver answers BLK_STS_RESOURCE and the
 * request is dispatched again once another completes.
 */
export class IommuMapNoMemError extends Error {
  readonly errno = -12;
  constructor(message: string) {
    super(message);
    this.name = 'IommuMapNoMemError';
  }
}

/**
 * struct iommu_iotlb_gather: the IOVA range unmapped since the last sync.
 * The kernel keeps `end` inclusive; here `endIova` is one past the last
 * byte. Empty: `startIova` = MAX_SAFE_INTEGER, `endIova` = 0.
 */
export interface IommuIotlbGather {
  startIova: number;
  endIova: number;
  /** bytes per unmap call gathered so far (`pgsize`); 0 when empty */
  pgsizeBytes: number;
  /** the flush queue will invalidate (lazy mode): the driver need not track the range */
  queued: boolean;
}

/** iommu_iotlb_gather_init: an empty gather (`queued` as given). */
export function iommu_iotlb_gather_init(gather: IommuIotlbGather, queued = false): IommuIotlbGather {
  gather.startIova = Number.MAX_SAFE_INTEGER;
  gather.endIova = 0;
  gather.pgsizeBytes = 0;
  gather.queued = queued;
  return gather;
}

/** A new empty gather. */
export function newIotlbGather(queued = false): IommuIotlbGather {
  return iommu_iotlb_gather_init({ startIova: 0, endIova: 0, pgsizeBytes: 0, queued });
}

/** iommu_iotlb_gather_is_disjoint: [iova, iova + sizeBytes) neither overlaps nor touches the gathered range. */
export function iommu_iotlb_gather_is_disjoint(gather: IommuIotlbGather, iova: number, sizeBytes: number): boolean {
  return gather.endIova !== 0 && (iova + sizeBytes < gather.startIova || iova > gather.endIova);
}

/** iommu_iotlb_gather_add_range: widen the gathered range to cover [iova, iova + sizeBytes). */
export function iommu_iotlb_gather_add_range(gather: IommuIotlbGather, iova: number, sizeBytes: number): void {
  if (iova < gather.startIova) gather.startIova = iova;
  if (iova + sizeBytes > gather.endIova) gather.endIova = iova + sizeBytes;
}

/**
 * iommu_iotlb_sync, the core's wrapper: the driver invalidates what the
 * gather holds, then the gather starts empty again.
 */
export function iommu_iotlb_sync(ops: IommuDomainOps, domain: number, gather: IommuIotlbGather): void {
  ops.iotlb_sync(domain, gather);
  iommu_iotlb_gather_init(gather, gather.queued);
}

/**
 * struct iommu_domain_ops as dma-iommu uses it. `domain` is the domain id
 * the driver knows the domain by (virtio-iommu's domain, VT-d's domain id).
 * Each method charges its own cost to the caller's clock.
 */
export interface IommuDomainOps {
  /** Map [iova, iova + sizeBytes) to the physically contiguous [paddr, paddr + sizeBytes). */
  map_pages(domain: number, iova: Iova, paddr: Gpa, sizeBytes: number, read: boolean, write: boolean): void;
  /** After the map calls of one mapping: make them visible to the device (a no-op for a driver that needs nothing). */
  iotlb_sync_map(domain: number, iova: Iova, sizeBytes: number): void;
  /** Unmap [iova, iova + sizeBytes), gathering what the next `iotlb_sync` must invalidate. */
  unmap_pages(domain: number, iova: Iova, sizeBytes: number, gather: IommuIotlbGather): void;
  /** Invalidate what `gather` holds (call it through `iommu_iotlb_sync`, which empties the gather). */
  iotlb_sync(domain: number, gather: IommuIotlbGather): void;
  /** Invalidate every translation of the domain (the lazy flush queue's flush). */
  flush_iotlb_all(domain: number): void;
}
