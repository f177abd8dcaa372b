/**
 * Constants every component agrees on, defined once.
 *
 * - The page size: the guest's PAGE_SIZE, the host IOMMU's smallest page
 *   (VT-d second-level 4 KiB) and the NVMe controller's memory page size
 *   (CC.MPS = 0) are all 4 KiB in the modelled machine.
 * - The IOMMU permission bits, as Linux's include/linux/iommu.h has them:
 *   IOMMU_READ (1 << 0), IOMMU_WRITE (1 << 1), IOMMU_PRIV (1 << 5).
 */

export const PAGE_SHIFT = 12;
export const PAGE_SIZE_BYTES = 1 << PAGE_SHIFT;

export const IOMMU_READ = 1 << 0;
export const IOMMU_WRITE = 1 << 1;
export const IOMMU_PRIV = 1 << 5;

/**
 * Address spaces, kept apart by the type checker at no run-time cost:
 * a guest-physical address (what the guest's page allocator hands out) is
 * not an IOVA (what the device puts on the bus behind an IOMMU), and neither
 * is a host-physical address. Convert only where the model translates.
 */
export type Gpa = number & { readonly __addressSpace: 'gpa' };
export type Iova = number & { readonly __addressSpace: 'iova' };
export type Hpa = number & { readonly __addressSpace: 'hpa' };
export const asGpa = (n: number): Gpa => n as Gpa;
export const asIova = (n: number): Iova => n as Iova;
export const asHpa = (n: number): Hpa => n as Hpa;
