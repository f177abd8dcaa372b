import type { IoPgtableHandle, IotlbCosts } from '@vmstack/iommu-hw';
import type { ClockMode, RingHandle } from '@vmstack/shm';
import type { DeviceAttackPlan, DeviceAttackResult } from './attack.js';
import type { NvmeControllerCosts, NvmeCounters } from './controller.js';
import type { MediaCosts } from './media.js';

export * from './attack.js';
export * from './controller.js';
export * from './engine.js';
export { type MediaCosts, NvmeMedia } from './media.js';
export * from './namespace.js';

/** The compiled worker entry of the NVMe device. */
export const NVME_DEVICE_WORKER = new URL('./worker.js', import.meta.url);

export interface DeviceWorkerInit {
  clockMode: ClockMode;
  dilation: number;
  epochMs: number;
  spinLoads: number;
  /** the cost profile's device keys (controller, IOTLB, media) */
  costs: NvmeControllerCosts & IotlbCosts & MediaCosts;
  guestRam: SharedArrayBuffer;
  pgtable: IoPgtableHandle;
  doorbellRings: RingHandle[];
  irqRings: RingHandle[];
  /** from each host kernel context serving the drive's VFIO container: IOTLB invalidations */
  invalRings: RingHandle[];
  /** control-block index of each vCPU worker */
  vcpuWorkers: number[];
  /** which vCPU owns completion queue i */
  vcpuOfCq: number[];
  /** the drive's blocks: how many, the seed of the data no job wrote (shm fillUnwrittenBlock), an earlier group's written blocks */
  namespace: { sizeBlocks: number; seed: number; initialBlocks?: [number, Uint8Array][]; exportBlocks?: boolean };
  /** `vmstack attack`: the device also attacks (attack.ts) */
  attack?: DeviceAttackPlan;
  /** the host IOMMU's fault record of this requester (iommu-hw IommuFaultLog), read by the host kernel */
  faultLog?: SharedArrayBuffer;
  /** the host IOMMU's context entry of this requester (iommu-hw IommuContextEntry), which the host clears when its group leaves the container */
  context?: SharedArrayBuffer;
}

export interface DeviceWorkerResult {
  counters: NvmeCounters;
  iotlb: unknown;
  writtenBlocks: number;
  /** with namespace.exportBlocks: the written blocks, for the next barrier group */
  namespaceBlocks?: [number, Uint8Array][];
  clockNs: number;
  /** `vmstack attack`: what the device's own DMAs reached */
  attack?: DeviceAttackResult;
}
