import type { ClockMode, CostProfile, LockTableHandle, RingHandle, VirtqueueLayout } from '@vmstack/shm';
import type { DmaCounters, DmaStrategy } from './dma.js';
import type { BouncePoolHandle, BouncePoolStats } from './iommu/bounce-pool.js';
import type { FlushQueueHandle, FlushQueueStats } from './iommu/flush-queue.js';
import type { IovaDomainHandle, IovaStats } from './iommu/iova.js';
import type { SwiotlbHandle, SwiotlbStats } from './iommu/swiotlb.js';
import type { FioJobSpec } from './job-spec.js';
import type { PageAllocatorHandle, UserBufferContiguity } from './mm/page-alloc.js';
import type { ProfileEntry } from './profile.js';
import type { VcpuJobResult } from './vcpu.js';
import type { ViommuCounters, ViommuDriverGeneration } from './virtio-iommu/viommu.js';

export * from './dma.js';
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
export * from './mm/page-alloc.js';
export * from './profile.js';
export type { GuestPlatform } from './vcpu.js';
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
  untrusted: boolean;
  /** changes of the pool's always_bounce_limit at model times (vCPU 0 applies them, as a sysfs write) */
  alwaysBounceLimitSchedule?: { atNs: number; bytes: number }[];
  flushQueue: FlushQueueHandle | null;
  bouncePool: BouncePoolHandle | null;
  swiotlb: SwiotlbHandle | null;
  job: FioJobSpec;
  bufferContiguity: UserBufferContiguity;
  guestRam: SharedArrayBuffer;
  locks: LockTableHandle;
  pageAlloc: PageAllocatorHandle;
  iovaDomain: IovaDomainHandle;
  iovaLimitPfn: number;
  domainId: number;
  endpointId: number;
  vqLayout: VirtqueueLayout;
  viommuRequestAreaGpa: number;
  viommuSlotWordGpa: number;
  /** the VM's run state (layout: shm/src/vm-state.ts) */
  vmState: SharedArrayBuffer;
  /** the run's state across VMs (layout: shm/src/vm-state.ts), this VM's index in the run and the run's vCPU count */
  runState: { sab: SharedArrayBuffer; vm: number; vcpus: number };
  adminSqGpa: number;
  adminCqGpa: number;
  identifyGpa: number;
  coherentGpa: number;
  coherentBytes: number;
  queueDepth: number;
  queues: { sqGpa: number; cqGpa: number; prpPoolGpa: number }[];
  /** the seed of the drive's pre-filled blocks (what verify expects where nobody wrote) */
  nsPrefillSeed: number;
  /** blocks an earlier barrier group wrote, with the seed their writer used: what verify expects there */
  priorSeeds: [number, number][];
  /** the write seeds (fioWriteSeed) of the other jobs running at the same time that write */
  peerWriteSeeds: number[];
  doorbellRing: RingHandle;
  irqRing: RingHandle;
  /**
   * Every other vCPU of the run, of this VM and of the others: the quantum
   * gate orders this vCPU's actions after theirs in model time. For each,
   * its worker, its device's worker and its interrupt ring (read-only).
   */
  gatePeers: { worker: number; deviceWorker: number; irqRing: RingHandle }[];
  kickRing: RingHandle;
  usedRing: RingHandle;
  deviceWorker: number;
  /** this VM's vCPUs' workers, in vCPU order */
  vcpuWorkers: number[];
  deviceMinResponseNs: number;
}

export interface VcpuWorkerResult {
  job: VcpuJobResult;
  profile: Record<string, ProfileEntry>;
  viommu: ViommuCounters | null;
  iovaStats: IovaStats | null;
  dma: DmaCounters;
  flushQueue: FlushQueueStats | null;
  bouncePool: BouncePoolStats | null;
  swiotlb: SwiotlbStats | null;
  clockNs: number;
}
