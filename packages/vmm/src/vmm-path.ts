/**
 * How a guest's virtio-iommu request reaches VFIO in the VMM: the steps
 * between the guest's notify write and the VFIO ioctl, per VMM choice.
 *
 * `crosvm-2021` is crosvm as it ran virtio-iommu in 2021: the device is a
 * virtio-pci device whose queue notify address is a KVM ioeventfd, so the
 * guest's notify write exits to KVM only, and KVM signals the eventfd. The
 * device runs jailed (minijail, policy `iommu_device`) in its own process,
 * which keeps the VFIO container's file descriptor; its `virtio_iommu` worker
 * thread waits in `epoll_wait` on the queue's eventfd, reads the eventfd,
 * pops every available request and calls `VFIO_IOMMU_MAP_DMA` /
 * `VFIO_IOMMU_UNMAP_DMA` on the container itself (no IPC to another process),
 * then writes the used elements. An UNMAP is one `VFIO_IOMMU_UNMAP_DMA` over
 * the request's range, whatever number of earlier MAPs it covers (type1
 * removes each `vfio_dma` in the range, each with its own IOTLB flush). The
 * Linux driver's request queue has no
 * callback, so the device raises no interrupt: the guest polls the used ring.
 * Every syscall of the jailed thread passes the device's seccomp filter: the
 * eventfd read after the wake-up and each VFIO ioctl are on the request's path.
 *
 * `no-sandbox` is the same device thread without the jail (crosvm
 * `--disable-sandbox`): the device runs in the VMM's main process and its
 * syscalls pass no filter.
 *
 * `qemu-notifier` keeps the device thread and its wake-up, without a filter,
 * but an UNMAP fans out into one `VFIO_IOMMU_UNMAP_DMA` per mapping it covers,
 * as QEMU's IOMMU notifier calls VFIO once per mapping. QEMU's other
 * differences (its main loop and the big QEMU lock) are not modelled.
 *
 * Fault reports: QEMU's device has an event queue and reports a translation
 * fault in a buffer the driver posted there (virtio_iommu_report_fault);
 * crosvm's declares the queue and never serves it. `qemu-notifier` reads the
 * host's fault queue at VM teardown and reports each fault; `crosvm-2021`
 * and `no-sandbox` report none (the faults stay counted on the host). The
 * package README ("Fault reports") says what each VMM does and since when.
 */

import type { ViommuDeviceCosts } from './viommu-device.js';

export const VMM_PATHS = ['crosvm-2021', 'no-sandbox', 'qemu-notifier'] as const;
export type VmmPath = (typeof VMM_PATHS)[number];

/** The VMM of the reference experiment. */
export const DEFAULT_VMM_PATH: VmmPath = 'crosvm-2021';

/** The profile values the VMM's path is built from. */
export interface VmmPathProfile extends ViommuDeviceCosts {
  hostThreadWakeupNs: number;
  seccompFilterNs: number;
}

export interface VmmPathCosts {
  /** model ns from the guest's notify write until the device thread runs its first request */
  kickWakeupNs: number;
  /** the device's per-request costs on this path */
  costs: ViommuDeviceCosts;
  /** how an UNMAP request reaches VFIO on this path */
  vfioUnmap: 'per-mapping' | 'whole-range';
  /** the device reads the host's fault queue and reports each fault on its event queue */
  reportFaults: boolean;
}

/**
 * The device's costs on `path`: the wake-up of the device thread (plus, when
 * jailed, the filtered eventfd read that follows it) and every VFIO ioctl
 * (plus, when jailed, its filter pass).
 */
export function vmmPathCosts(p: VmmPathProfile, path: VmmPath): VmmPathCosts {
  const filterNs = path === 'crosvm-2021' ? p.seccompFilterNs : 0;
  return {
    kickWakeupNs: p.hostThreadWakeupNs + filterNs,
    costs: { vmmViommuRequestNs: p.vmmViommuRequestNs, vfioIoctlSyscallNs: p.vfioIoctlSyscallNs + filterNs },
    // crosvm's device passes each UNMAP's range to VFIO as it came; QEMU's notifier calls VFIO per mapping
    vfioUnmap: path === 'qemu-notifier' ? 'per-mapping' : 'whole-range',
    reportFaults: path === 'qemu-notifier',
  };
}
