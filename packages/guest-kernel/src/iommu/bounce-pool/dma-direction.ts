/**
 * DMA directions and the IOMMU prot a streaming mapping gets from them.
 *
 * `enum dma_data_direction` (include/linux/dma-direction.h), the IOMMU prot
 * bits the shared constants do not carry (include/linux/iommu.h; IOMMU_READ,
 * IOMMU_WRITE and IOMMU_PRIV come from @vmstack/shm), and `dma_info_to_prot`
 * of drivers/iommu/dma-iommu.c, which turns a direction into the READ/WRITE
 * bits of the mapping: the device reads a buffer going to it and writes one
 * coming from it.
 */

import { IOMMU_PRIV, IOMMU_READ, IOMMU_WRITE } from '@vmstack/shm';

export const IOMMU_CACHE = 1 << 2;
export const IOMMU_NOEXEC = 1 << 3;
export const IOMMU_MMIO = 1 << 4;

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
