/**
 * Where things live in guest RAM — one function, used to build a run and to
 * check before it starts that guest RAM is large enough.
 *
 * | from | what |
 * |------|------|
 * | 0 | 64 KiB reserved |
 * | 64 KiB | the virtio-iommu request virtqueue (128 entries), then 64 request slots |
 * | next 4 KiB | the driver's shared slot word |
 * | coherent start | admin SQ (4 KiB), admin CQ (4 KiB), identify page (4 KiB) |
 * | then, per vCPU | I/O SQ (1024 × 64 B), I/O CQ (1024 × 16 B), one PRP list page per I/O slot |
 * | 2 MiB aligned | the swiotlb area (64 MiB), only for untrusted devices with strict or lazy |
 * | 2 MiB aligned | the page allocator's heap: fio's buffers, bounce buffers |
 * The coherent region (queues, identify, PRP pages) is mapped once, IOVA = GPA.
 */

import { type FioJobSpec, IO_TLB_DEFAULT_SIZE_BYTES, type UserBufferContiguity, VIOMMU_REQUEST_SLOT_BYTES } from '@vmstack/guest-kernel';
import { type VirtqueueLayout, virtqueueLayout } from '@vmstack/shm';

const KiB = 1024;
const MiB = 1024 * KiB;
export const NVME_QUEUE_ENTRIES = 1024;
const VIOMMU_QUEUE_ENTRIES = 128;
const VIOMMU_REQUEST_SLOTS = 64;

export interface GuestLayout {
  vqLayout: VirtqueueLayout;
  viommuRequestAreaGpa: number;
  viommuSlotWordGpa: number;
  coherentGpa: number;
  coherentBytes: number;
  adminSqGpa: number;
  adminCqGpa: number;
  identifyGpa: number;
  queues: { sqGpa: number; cqGpa: number; prpPoolGpa: number }[];
  swiotlbGpa: number | null;
  heapStartBytes: number;
}

/** What the planner (topology/plan.ts) decides the guest needs below its heap. */
export interface GuestLayoutRequest {
  /** NVMe I/O queue pairs: one per vCPU */
  ioQueues: number;
  /** PRP list pages per I/O queue: one per I/O slot, the deepest job's iodepth */
  prpPagesPerQueue: number;
  /** the swiotlb area is preallocated at boot (untrusted devices without the pool) */
  swiotlb: boolean;
}

export function align(v: number, a: number): number {
  return Math.ceil(v / a) * a;
}

export function planGuestLayout(req: GuestLayoutRequest): GuestLayout {
  let cursor = 64 * KiB;
  const vqLayout = virtqueueLayout(VIOMMU_QUEUE_ENTRIES, cursor);
  cursor = align(cursor + vqLayout.totalBytes, 4 * KiB);
  const viommuRequestAreaGpa = cursor;
  cursor = align(cursor + VIOMMU_REQUEST_SLOTS * VIOMMU_REQUEST_SLOT_BYTES, 4 * KiB);
  const viommuSlotWordGpa = cursor;
  cursor += 4 * KiB;
  const coherentGpa = cursor;
  const adminSqGpa = cursor;
  const adminCqGpa = cursor + 4 * KiB;
  const identifyGpa = cursor + 8 * KiB;
  cursor += 12 * KiB;
  const queues = Array.from({ length: req.ioQueues }, () => {
    const q = { sqGpa: cursor, cqGpa: cursor + NVME_QUEUE_ENTRIES * 64, prpPoolGpa: cursor + NVME_QUEUE_ENTRIES * 80 };
    cursor = align(q.prpPoolGpa + req.prpPagesPerQueue * 4 * KiB, 4 * KiB);
    return q;
  });
  const coherentBytes = align(cursor - coherentGpa, 4 * KiB);
  let swiotlbGpa: number | null = null;
  if (req.swiotlb) {
    swiotlbGpa = align(cursor, 2 * MiB);
    cursor = swiotlbGpa + IO_TLB_DEFAULT_SIZE_BYTES;
  }
  return {
    vqLayout,
    viommuRequestAreaGpa,
    viommuSlotWordGpa,
    coherentGpa,
    coherentBytes,
    adminSqGpa,
    adminCqGpa,
    identifyGpa,
    queues,
    swiotlbGpa,
    heapStartBytes: align(cursor, 2 * MiB),
  };
}

/** Guest RAM the jobs' fio buffers take from the heap (iodepth × bs each, in 4 KiB or 2 MiB pages). */
export function fioBufferBytes(jobs: readonly FioJobSpec[], contiguity: UserBufferContiguity): number {
  const unit = contiguity === 'huge' ? 2 * MiB : 4 * KiB;
  return jobs.reduce((s, j) => s + j.iodepth * align(j.blockSizeBytes, unit), 0);
}
