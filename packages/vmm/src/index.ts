import type { CallTreeNode, ClockMode, LockTableHandle, RingHandle, RpcChannelHandles, VirtqueueLayout } from '@vmstack/shm';
import type { ViommuDeviceCosts, ViommuDeviceCounters, ViommuDeviceFaultCounters } from './viommu-device.js';

export * from './viommu-device.js';
export * from './vmm.js';
export * from './vmm-path.js';

/** The compiled worker entry of the VMM. */
export const VMM_WORKER = new URL('./worker.js', import.meta.url);

export interface VmmWorkerInit {
  clockMode: ClockMode;
  dilation: number;
  epochMs: number;
  spinLoads: number;
  /** loads spun waiting for a VFIO reply before parking */
  rpcSpinLoads: number;
  costs: ViommuDeviceCosts;
  /** model ns from the guest's notify write until the device thread runs (ioeventfd wake-up) */
  kickWakeupNs: number;
  /** how an UNMAP reaches VFIO (vmm-path.ts); default per-mapping */
  vfioUnmap?: 'per-mapping' | 'whole-range';
  locks: LockTableHandle;
  /** the device's `viommu_dev->mutex` in `locks` */
  deviceMutexName: string;
  guestRam: SharedArrayBuffer;
  vqLayout: VirtqueueLayout;
  /** the device's configuration page in guest RAM (features and struct virtio_iommu_config) */
  viommuConfigGpa: number;
  /** the endpoint ids of the devices behind the virtio-iommu (the only endpoints ATTACH, DETACH and PROBE accept) */
  viommuEndpointIds: number[];
  kickRings: RingHandle[];
  usedRings: RingHandle[];
  hostRpc: RpcChannelHandles;
  /** without a vIOMMU the VMM maps all guest RAM through VFIO at start (IOVA = GPA) */
  identityMapBytes: number;
  /** Int32[4] shared with the vCPUs: [0] set when the VM may start */
  vmState: SharedArrayBuffer;
  /** the event virtqueue in guest RAM (the driver posts fault-report buffers there); none: faults are never reported */
  eventQueue?: VirtqueueLayout | null;
  /** the VMM path reports the host's faults on the event queue (vmm-path.ts) */
  reportFaults?: boolean;
  /** the workers of the drives behind this virtio-iommu: the VM is torn down only once they have reported (clock NEVER), as in one thread */
  deviceWorkers: number[];
}

export interface VmmWorkerResult {
  counters: ViommuDeviceCounters;
  /** fault reports: records read from the host, reported, dropped */
  faults?: ViommuDeviceFaultCounters;
  profile: Record<string, { calls: number; ns: number; selfNs: number; bytes: number }>;
  /** the call tree of the profile (shm `Profiler.callTree`) */
  callTree: CallTreeNode[];
  mappingsLeft: number;
  clockNs: number;
}
