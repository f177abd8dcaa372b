/**
 * Shared set-up of the bounce-pool tests: one pool over a test page
 * allocator, guest RAM to copy through, a virtual clock, and the cost values
 * the expected times are worked out from.
 */
import { IOMMU_READ, IOMMU_WRITE, LockTable, ModelClock } from '@vmstack/shm';
import { BouncePool, type BouncePoolOptions, IOMMU_CACHE } from '../../src/iommu/bounce-pool.js';
import { TestPages } from './bounce-page-allocator.js';

/** Costs the expected model times below are computed from by hand. */
export const COSTS = { bouncePoolListOpNs: 20, memcpyBytesPerNs: 12, memsetBytesPerNs: 8, guestPageAllocNs: 100, iovaRbtreeOpNs: 250 };
export const RO = IOMMU_READ | IOMMU_CACHE;
export const WO = IOMMU_WRITE | IOMMU_CACHE;
export const RW = IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE;
/** 4 GiB: aligned to every class size */
export const IOVA_BASE = 2 ** 32;
export const HEAP_GPA = 1 << 20;

export function setup(opts: Partial<BouncePoolOptions> = {}, heapPages = 2048, cpu = 0) {
  const handle = BouncePool.allocate({ iovaBase: IOVA_BASE, ...opts });
  const locks = LockTable.allocate(BouncePool.lockSpecs(handle));
  const pages = new TestPages(TestPages.allocate(HEAP_GPA, heapPages));
  const pool = BouncePool.attach(handle, cpu, LockTable.attach(locks, cpu), pages, COSTS);
  const ram = new Uint8Array(new SharedArrayBuffer(HEAP_GPA + heapPages * 4096));
  return { handle, locks, pages, pool, ram, clock: new ModelClock('virtual') };
}
