import type { IoPgtableHandle } from '@vmstack/iommu-hw';
import type { CallTreeNode, ClockMode, LockTableHandle, RingHandle, RpcChannelHandles } from '@vmstack/shm';
import type { IommufdFaultStats } from './iommufd-fault.js';
import type { VfioContainerCosts, VfioContainerHandle, VfioContainerStats } from './vfio-iommu-type1.js';

export * from './host.js';
export * from './iommufd-fault.js';
export * from './vfio-iommu-type1.js';

/** The compiled worker entry of the host kernel. */
export const HOST_VFIO_WORKER = new URL('./worker.js', import.meta.url);

export interface HostWorkerInit {
  clockMode: ClockMode;
  dilation: number;
  epochMs: number;
  spinLoads: number;
  costs: VfioContainerCosts;
  /** the host-wide lock table: containers' `iommu->lock`, units' `qi->q_lock`, VMM processes' `mmap_lock` */
  locks: LockTableHandle;
  /** this container's `iommu->lock` in `locks` */
  containerLockName: string;
  /** in `locks`, the `qi->q_lock` of the host IOMMU unit translating for the container's device */
  qiLockName: string;
  /** in `locks`, the `mmap_lock` of the VMM process that owns the container */
  mmapLockName: string;
  /** the container (VfioContainer.allocate): every worker serving it attaches the same one */
  container: VfioContainerHandle;
  vmmRpc: RpcChannelHandles;
  pgtable: IoPgtableHandle;
  /** to each drive whose DMA the container translates: IOTLB invalidations */
  invalRings: RingHandle[];
  /** the VMM allocated a fault queue (iommufd-fault.ts): the host IOMMU's fault logs of the drives it reports */
  faultLogs?: SharedArrayBuffer[];
  /** the VFIO groups of the container's drives: endpoint id, the drive's context entry (iommu-hw IommuContextEntry), its index in invalRings */
  groups?: { endpointId: number; context: SharedArrayBuffer; invalRing: number }[];
}

export interface HostWorkerResult {
  stats: VfioContainerStats;
  profile: Record<string, { calls: number; ns: number; selfNs: number; bytes: number }>;
  /** the call tree of the profile (shm `Profiler.callTree`) */
  callTree: CallTreeNode[];
  clockNs: number;
  /** the fault queue's counts, when the VMM allocated one */
  faults?: IommufdFaultStats;
}
