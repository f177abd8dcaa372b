/**
 * The VMM of one run: the virtio-iommu device over guest RAM, calling VFIO
 * through whatever port it is given (the host worker's rings, or the host
 * object itself in one thread), and the VM's start and stop: without a vIOMMU
 * all of guest RAM is mapped through VFIO before the vCPUs start, and unmapped
 * at teardown.
 */

import {
  attachGuestMemory,
  LockTable,
  ModelClock,
  parkThread,
  type RunControl,
  type VfioContainerPort,
  VM_FAULTS_DRAIN,
  VM_FAULTS_REPORTED,
  VM_VMM_READY,
} from '@vmstack/shm';
import type { VmmWorkerInit, VmmWorkerResult } from './index.js';
import { VirtioIommuDevice } from './viommu-device.js';

export function createVmm(init: VmmWorkerInit, self: number, control: RunControl, vfio: VfioContainerPort) {
  const clock = new ModelClock(init.clockMode, init.dilation, init.epochMs);
  const locks = LockTable.attach(init.locks, self, control, init.spinLoads);
  const device = new VirtioIommuDevice(attachGuestMemory(init.guestRam), init.vqLayout, vfio, locks, clock, init.costs, {
    endpointIds: init.viommuEndpointIds,
    configGpa: init.viommuConfigGpa,
    mutexName: init.deviceMutexName,
    vfioUnmap: init.vfioUnmap ?? 'per-mapping',
    eventQueue: init.eventQueue ?? null,
    reportFaults: init.reportFaults ?? false,
  });
  const vmState = new Int32Array(init.vmState);
  /** The event queue is full: vCPU 0 (in its own thread) reads it and posts the buffers again; wait until it has. */
  const askVcpu0ToDrain = (): void => {
    Atomics.store(vmState, VM_FAULTS_DRAIN, 1);
    Atomics.notify(vmState, VM_FAULTS_DRAIN);
    while (Atomics.load(vmState, VM_FAULTS_DRAIN) === 1) {
      if (control.aborted()) throw new Error('aborted');
      parkThread(vmState, VM_FAULTS_DRAIN, 1, 50);
    }
  };
  return {
    device,
    clock,
    /** read the container's IOMMU info into the device's configuration, map guest RAM if there is no vIOMMU, then let the vCPUs run */
    startVm(): void {
      // the container's IOMMU info, as QEMU reads it when it connects the container (no cost: before the guest runs)
      if (vfio.getInfo) {
        const info = vfio.getInfo(clock.nowNs());
        if (info.errno === 0) device.vfio_apply_iommu_info(info);
      }
      if (init.identityMapBytes > 0) {
        const r = vfio.mapDma({ iova: 0, vaddr: 0, sizeBytes: init.identityMapBytes, read: true, write: true }, clock.nowNs());
        if (r.errno !== 0) throw new Error(`vmm: mapping guest RAM through VFIO failed (errno ${r.errno})`);
        clock.syncTo(r.doneNs);
      }
      // one count per VMM thread (a VM may have a virtio-iommu thread each): the vCPUs wait for all
      Atomics.add(vmState, VM_VMM_READY, 1);
      Atomics.notify(vmState, VM_VMM_READY);
    },
    /**
     * At teardown, once the drives have made their last DMA: report the host's
     * faults on the event queue, then tell vCPU 0, which reads the queue.
     */
    reportFaults(drain?: () => void): void {
      device.reportHostFaults(drain ?? askVcpu0ToDrain);
      Atomics.add(vmState, VM_FAULTS_REPORTED, 1);
      Atomics.notify(vmState, VM_FAULTS_REPORTED);
      Atomics.notify(vmState, VM_FAULTS_DRAIN);
    },
    /** VM teardown: guest RAM leaves the container */
    stopVm(): void {
      if (init.identityMapBytes > 0) {
        const r = vfio.unmapDma({ iova: 0, sizeBytes: init.identityMapBytes }, clock.nowNs());
        if (r.errno !== 0) throw new Error(`vmm: unmapping guest RAM from VFIO failed (errno ${r.errno})`);
      }
    },
    result(): VmmWorkerResult {
      return {
        counters: { ...device.counters },
        faults: { ...device.faultCounters },
        profile: device.profile,
        callTree: device.profiler.callTree(),
        mappingsLeft: device.mappingCount(),
        clockNs: clock.nowNs(),
      };
    },
  };
}
