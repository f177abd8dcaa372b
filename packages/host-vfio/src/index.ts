import type { IoPgtableHandle } from '@vmstack/iommu-hw';
import type { ClockMode, LockTableHandle, RingHandle, RpcChannelHandles } from '@vmstack/shm';
import type { VfioContainerCosts, VfioContainerStats } from './vfio-iommu-type1.js';

export * from './host.js';
export * from './vfio-iommu-type1.js';

/** The compiled worker entry of the host kernel. */
export const HOST_VFIO_WORKER = new URL('./worker.js', import.meta.url);

export interface HostWorkerInit {
  clockMode: ClockMode;
  dilation: number;
  epochMs: number;
  spinLoads: number;
  costs: VfioContainerCosts;
  /** the host-wide lock table: containers' `iommu->lock`, units' `qi->q_lock` */
  locks: LockTableHandle;
  /** this container's `iommu->lock` in `locks` */
  containerLockName: string;
  /** in `locks`, the `qi->q_lock` of the host IOMMU unit translating for the container's device */
  qiLockName: string;
  vmmRpc: RpcChannelHandles;
  pgtable: IoPgtableHandle;
  /** to each drive whose DMA the container translates: IOTLB invalidations */
  invalRings: RingHandle[];
  lockedVmLimitPages: number;
  dmaEntryLimit: number;
}

export interface HostWorkerResult {
  stats: VfioContainerStats;
  profile: Record<string, { calls: number; ns: number; selfNs: number; bytes: number }>;
  clockNs: number;
}
