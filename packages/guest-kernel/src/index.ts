import type { ClockMode, CostProfile, LockTableHandle, RingHandle, VirtqueueLayout } from '@vmstack/shm';
import type { DmaCounters, DmaStrategy } from './dma.js';
import type { BouncePoolHandle, BouncePoolStats } from './iommu/bounce-pool.js';
import type { FlushQueueHandle, FlushQueueStats } from './iommu/flush-queue.js';
import type { IntelIommuInit } from './iommu/intel-iommu.js';
import type { IovaDomainHandle, IovaStats } from './iommu/iova.js';
import type { SwiotlbHandle, SwiotlbStats } from './iommu/swiotlb.js';
import type { FioJobSpec } from './job-spec.js';
import type { PageAllocatorHandle, UserBufferContiguity } from './mm/page-alloc.js';
import type { CallTreeNode, ProfileEntry } from './profile.js';
import type { VcpuJobResult } from './vcpu.js';
import type { ViommuCounters, ViommuDriverGeneration, ViommuEventQueue, ViommuFaultStats } from './virtio-iommu/viommu.js';

export * from './dma.js';
export * from './fio-stat.js';
export { runGuestVcpu } from './guest.js';
export {
  BouncePool,
  type BouncePoolHandle,
  type BouncePoolOptions,
  type BouncePoolStats,
  DMA_BIDIRECTIONAL,
  DMA_FROM_DEVICE,
  DMA_TO_DEVICE,
  type DmaDirection,
  type DmaSegment,
  dma_info_to_prot,
  FallbackTree,
  SlotState,
} from './iommu/bounce-pool.js';
export * from './iommu/domain-ops.js';
export * from './iommu/flush-queue.js';
export * from './iommu/intel-iommu.js';
export * from './iommu/iova.js';
export * from './iommu/swiotlb.js';
export * from './job-spec.js';
export * from './mm/llc.js';
export * from './mm/page-alloc.js';
export * from './profile.js';
export type { GuestPlatform, NeverWrittenBlock, VcpuJobSnapshot, VerifyCounts } from './vcpu.js';
export { STATUS_DUMPS_MAX } from './vcpu.js';
export * from './virtio-iommu/viommu.js';

/** The compiled worker entry of a guest vCPU. */
export const GUEST_VCPU_WORKER = new URL('./worker.js', import.meta.url);

export interface VcpuWorkerInit {
  vcpu: number;
  clockMode: ClockMode;
  dilation: number;
  epochMs: number;
  spinLoads: number;
  quantumNs: number;
  strategy: DmaStrategy;
  driverGeneration: ViommuDriverGeneration;
  costs: CostProfile;
  /** changes of the pool's always_bounce_limit at model times (vCPU 0 applies them, as a sysfs write) */
  alwaysBounceLimitSchedule?: { atNs: number; bytes: number }[];
  /** the VM's swiotlb area (one per VM), when an untrusted device needs it */
  swiotlb: SwiotlbHandle | null;
  job: FioJobSpec;
  bufferContiguity: UserBufferContiguity;
  guestRam: SharedArrayBuffer;
  locks: LockTableHandle;
  /** bare metal: the host lock table holding the IOMMU units' `qi->q_lock` (the kernel drives VT-d itself); null in a VM */
  hostLocks: LockTableHandle | null;
  pageAlloc: PageAllocatorHandle;
  /** the virtio-iommus this vCPU sends requests to: vCPU 0 (which brings every drive up) all of the VM's, the others their job's drive's */
  viommus: VcpuViommuInit[];
  /** the drives this vCPU talks to: vCPU 0 all of the VM's, the others their job's */
  devices: VcpuDeviceInit[];
  /** index in `devices` of the drive the job does I/O to */
  jobDevice: number;
  /** the VM's run state (layout: shm/src/vm-state.ts) */
  vmState: SharedArrayBuffer;
  /** the VM's VMM threads (one per virtio-iommu): the vCPUs start once each has set guest RAM up */
  vmmThreads: number;
  /** the run's state across VMs (layout: shm/src/vm-state.ts), this VM's index in the run and the run's vCPU count */
  runState: { sab: SharedArrayBuffer; vm: number; vcpus: number };
  /** the seed of the drive's pre-filled blocks (what verify expects where nobody wrote) */
  nsPrefillSeed: number;
  /** blocks an earlier barrier group wrote, with the seed their writer used: what verify expects there */
  priorSeeds: [number, number][];
  /** the write seeds (fioWriteSeed) of the other jobs running at the same time that write */
  peerWriteSeeds: number[];
  /**
   * Every other vCPU of the run, of this VM and of the others: the quantum
   * gate orders this vCPU's actions after theirs in model time. For each,
   * its worker, its job's drive's worker and its interrupt ring from that drive (read-only).
   */
  gatePeers: { worker: number; deviceWorker: number; irqRing: RingHandle }[];
  /** this VM's vCPUs' workers, in vCPU order */
  vcpuWorkers: number[];
  deviceMinResponseNs: number;
  /** `vmstack attack`: this vCPU's DMA unmap log (shm wire/dma-trace.ts), read by the attacking device */
  dmaUnmapLog?: SharedArrayBuffer;
}

/** One virtio-iommu as a vCPU drives it: its request queue in guest RAM, its lock, the rings to its VMM thread. */
export interface VcpuViommuInit {
  /** the `viommu->request_lock` of this virtio-iommu in the VM's lock table */
  requestLockName: string;
  vqLayout: VirtqueueLayout;
  viommuRequestAreaGpa: number;
  viommuSlotWordGpa: number;
  /** the device's configuration page: the driver negotiates features and reads struct virtio_iommu_config there */
  viommuConfigGpa: number;
  /** the event queue: vCPU 0 posts fault-report buffers there at probe and reads them at teardown; absent: none */
  eventQueue?: ViommuEventQueue | null;
  kickRing: RingHandle;
  usedRing: RingHandle;
}

/** One passed-through NVMe drive as a vCPU drives it. */
export interface VcpuDeviceInit {
  /** index in VcpuWorkerInit.viommus of the virtio-iommu the drive sits behind; -1 on bare metal */
  viommu: number;
  /** bare metal: the drive's VT-d domain (its page table, its unit's invalidation queue and lock); null in a VM */
  intelIommu: IntelIommuInit | null;
  untrusted: boolean;
  domainId: number;
  endpointId: number;
  /** the drive's IOMMU domain: its IOVA allocator, lazy flush queue and bounce-buffer pool */
  iovaDomain: IovaDomainHandle;
  iovaLimitPfn: number;
  flushQueue: FlushQueueHandle | null;
  bouncePool: BouncePoolHandle | null;
  coherentGpa: number;
  coherentBytes: number;
  adminSqGpa: number;
  adminCqGpa: number;
  identifyGpa: number;
  queueDepth: number;
  /** the drive's I/O queue pairs, one per vCPU using it, in vCPU order (queue i has qid i + 1) */
  queues: { sqGpa: number; cqGpa: number; prpPoolGpa: number }[];
  /** index in `queues` of this vCPU's queue pair, -1: none (vCPU 0 bringing up a drive it does no I/O to) */
  ownQueue: number;
  doorbellRing: RingHandle;
  irqRing: RingHandle;
  deviceWorker: number;
}

export interface VcpuWorkerResult {
  job: VcpuJobResult;
  profile: Record<string, ProfileEntry>;
  /** the call tree of the profile (shm `Profiler.callTree`) */
  callTree: CallTreeNode[];
  /** bytes this vCPU copied, by where the cache model found them (mm/llc.ts) */
  copies: { cachedBytes: number; dramBytes: number };
  viommu: ViommuCounters | null;
  /** vCPU 0: the fault reports its virtio-iommu drivers read from their event queues (none without a virtio-iommu) */
  viommuFaults?: ViommuFaultStats | null;
  iovaStats: IovaStats | null;
  dma: DmaCounters;
  flushQueue: FlushQueueStats | null;
  bouncePool: BouncePoolStats | null;
  swiotlb: SwiotlbStats | null;
  clockNs: number;
}
