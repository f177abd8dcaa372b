/**
 * Where things live in guest RAM — one function, used to build a run and to
 * check before it starts that guest RAM is large enough.
 *
 * | from | what |
 * |------|------|
 * | 0 | 64 KiB reserved: from 4 KiB, 2 KiB per virtio-iommu (the first 30), its event queue (32 entries) and its 32 fault-report buffers |
 * | 64 KiB, per virtio-iommu | its request virtqueue (128 entries), 64 request slots, then 4 KiB: the driver's shared slot word, at +64 the device's configuration page |
 * | then, per drive (its coherent region) | admin SQ (4 KiB), admin CQ (4 KiB), identify page (4 KiB); per vCPU using the drive: I/O SQ (1024 × 64 B), I/O CQ (1024 × 16 B), one PRP list page per I/O slot |
 * | 2 MiB aligned | the swiotlb area (64 MiB), only for untrusted devices with strict or lazy |
 * | 2 MiB aligned | the page allocator's heap: fio's buffers, bounce buffers |
 * A drive's coherent region (queues, identify, PRP pages) is mapped once into its domain, IOVA = GPA.
 */

import {
  type FioJobSpec,
  IO_TLB_DEFAULT_SIZE_BYTES,
  type UserBufferContiguity,
  VIOMMU_REQUEST_SLOT_BYTES,
  type ViommuEventQueue,
  viommuEventQueueBytes,
} from '@vmstack/guest-kernel';
import { type VirtqueueLayout, virtqueueLayout } from '@vmstack/shm';

const KiB = 1024;
const MiB = 1024 * KiB;
export const NVME_QUEUE_ENTRIES = 1024;
const VIOMMU_QUEUE_ENTRIES = 128;
const VIOMMU_REQUEST_SLOTS = 64;
/**
 * Event queue entries: QEMU's and crosvm's devices offer 256, which with their
 * buffers would not fit the reserved space below the request queues; the driver
 * posts as many buffers as the queue has entries either way.
 */
const VIOMMU_EVENT_QUEUE_ENTRIES = 32;
const VIOMMU_EVENT_QUEUE_SLOT_BYTES = 2 * KiB;
const VIOMMU_EVENT_QUEUES_MAX = (64 * KiB - 4 * KiB) / VIOMMU_EVENT_QUEUE_SLOT_BYTES;

/** One virtio-iommu's request queue in guest RAM. */
export interface ViommuLayout {
  vqLayout: VirtqueueLayout;
  viommuRequestAreaGpa: number;
  viommuSlotWordGpa: number;
  /** the device's configuration page (features, struct virtio_iommu_config), 64 bytes into the slot word's page */
  viommuConfigGpa: number;
  /** the event queue and its report buffers, in the reserved low 64 KiB; null past the 30th virtio-iommu */
  eventQueue: ViommuEventQueue | null;
}

/** One NVMe drive's coherent memory (mapped once, IOVA = GPA): admin queues, identify page, its I/O queues and PRP list pages. */
export interface DeviceLayout {
  coherentGpa: number;
  coherentBytes: number;
  adminSqGpa: number;
  adminCqGpa: number;
  identifyGpa: number;
  /** one I/O queue pair per vCPU whose job uses the drive, in vCPU order */
  queues: { sqGpa: number; cqGpa: number; prpPoolGpa: number }[];
}

export interface GuestLayout {
  viommus: ViommuLayout[];
  devices: DeviceLayout[];
  swiotlbGpa: number | null;
  heapStartBytes: number;
}

/** What the planner (topology/plan.ts) decides the guest needs below its heap. */
export interface GuestLayoutRequest {
  /** virtio-iommus (a request queue each) */
  viommus: number;
  /** per drive: its NVMe I/O queue pairs (one per vCPU using it) and PRP list pages per queue (one per I/O slot, the deepest job's iodepth) */
  devices: { ioQueues: number; prpPagesPerQueue: number }[];
  /** the swiotlb area is preallocated at boot (untrusted devices without the pool) */
  swiotlb: boolean;
}

/** The event queue of virtio-iommu `i`: a 2 KiB slot of the reserved low memory, the virtqueue then its buffers. */
function eventQueueAt(i: number): ViommuEventQueue | null {
  if (i >= VIOMMU_EVENT_QUEUES_MAX) return null;
  const gpa = 4 * KiB + i * VIOMMU_EVENT_QUEUE_SLOT_BYTES;
  const layout = virtqueueLayout(VIOMMU_EVENT_QUEUE_ENTRIES, gpa);
  const q = { layout, buffersGpa: gpa + align(layout.totalBytes, 8) };
  if (viommuEventQueueBytes(layout) > VIOMMU_EVENT_QUEUE_SLOT_BYTES) throw new Error('guest layout: the virtio-iommu event queue does not fit its slot');
  return q;
}

export function align(v: number, a: number): number {
  return Math.ceil(v / a) * a;
}

export function planGuestLayout(req: GuestLayoutRequest): GuestLayout {
  let cursor = 64 * KiB;
  const viommus = Array.from({ length: req.viommus }, (_, i): ViommuLayout => {
    const vqLayout = virtqueueLayout(VIOMMU_QUEUE_ENTRIES, cursor);
    cursor = align(cursor + vqLayout.totalBytes, 4 * KiB);
    const viommuRequestAreaGpa = cursor;
    cursor = align(cursor + VIOMMU_REQUEST_SLOTS * VIOMMU_REQUEST_SLOT_BYTES, 4 * KiB);
    const viommuSlotWordGpa = cursor;
    cursor += 4 * KiB;
    return { vqLayout, viommuRequestAreaGpa, viommuSlotWordGpa, viommuConfigGpa: viommuSlotWordGpa + 64, eventQueue: eventQueueAt(i) };
  });
  const devices = req.devices.map((d): DeviceLayout => {
    const coherentGpa = cursor;
    const adminSqGpa = cursor;
    const adminCqGpa = cursor + 4 * KiB;
    const identifyGpa = cursor + 8 * KiB;
    cursor += 12 * KiB;
    const queues = Array.from({ length: d.ioQueues }, () => {
      const q = { sqGpa: cursor, cqGpa: cursor + NVME_QUEUE_ENTRIES * 64, prpPoolGpa: cursor + NVME_QUEUE_ENTRIES * 80 };
      cursor = align(q.prpPoolGpa + d.prpPagesPerQueue * 4 * KiB, 4 * KiB);
      return q;
    });
    return { coherentGpa, coherentBytes: align(cursor - coherentGpa, 4 * KiB), adminSqGpa, adminCqGpa, identifyGpa, queues };
  });
  let swiotlbGpa: number | null = null;
  if (req.swiotlb) {
    swiotlbGpa = align(cursor, 2 * MiB);
    cursor = swiotlbGpa + IO_TLB_DEFAULT_SIZE_BYTES;
  }
  return { viommus, devices, swiotlbGpa, heapStartBytes: align(cursor, 2 * MiB) };
}

/** Guest RAM the jobs' fio buffers take from the heap (iodepth × bs each, in 4 KiB or 2 MiB pages). */
export function fioBufferBytes(jobs: readonly FioJobSpec[], contiguity: UserBufferContiguity): number {
  const unit = contiguity === 'huge' ? 2 * MiB : 4 * KiB;
  return jobs.reduce((s, j) => s + j.iodepth * align(j.blockSizeBytes, unit), 0);
}
