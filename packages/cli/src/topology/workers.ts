/**
 * Which worker threads a topology needs, one rule for the planner, the
 * `vmstack topology` tree and the worker budget of the command-line builder:
 *
 * - per VM, one `guest-kernel` worker per vCPU (role `<vm>/vcpu<n>`);
 * - per virtio-iommu, one `vmm` worker (role `<vm>/vmm/<viommu>`): a VMM may
 *   run a device thread per virtio-iommu;
 * - per vmm worker, one `host-vfio` worker (role `<vm>/host-vfio/<viommu>`):
 *   the host kernel context that VMM thread enters through its VFIO ioctls;
 * - per physical controller, one `nvme-device` worker (role `nvme-device/<controller>`).
 *
 * On bare metal there is no VMM: the host OS's CPUs (role `host/cpu<n>`) and
 * the devices only. Order: VM by VM (its vCPUs, its vmm workers, their
 * host-vfio workers), then the devices in controller order.
 */

import type { Topology } from './topology.js';

export type TopologyWorkerKind = 'vcpu' | 'vmm' | 'host' | 'device';

export interface TopologyWorker {
  role: string;
  kind: TopologyWorkerKind;
  /** the VM (on bare metal, the host OS entry) the worker belongs to; absent for device workers */
  vm?: string;
  /** what the worker runs: `vcpu<n>` (`cpu<n>` on bare metal), a virtio-iommu id, or a controller id */
  of: string;
}

/** The worker threads of `t`, in worker order. */
export function topologyWorkers(t: Topology): TopologyWorker[] {
  const out: TopologyWorker[] = [];
  if (t.platform === 'bare-metal') {
    for (const os of t.vms) for (const c of os.vcpus) out.push({ role: `host/cpu${c.id}`, kind: 'vcpu', vm: os.id, of: `cpu${c.id}` });
  } else {
    for (const vm of t.vms) {
      for (const c of vm.vcpus) out.push({ role: `${vm.id}/vcpu${c.id}`, kind: 'vcpu', vm: vm.id, of: `vcpu${c.id}` });
      for (const v of vm.viommus) out.push({ role: `${vm.id}/vmm/${v.id}`, kind: 'vmm', vm: vm.id, of: v.id });
      for (const v of vm.viommus) out.push({ role: `${vm.id}/host-vfio/${v.id}`, kind: 'host', vm: vm.id, of: v.id });
    }
  }
  for (const c of t.controllers) out.push({ role: `nvme-device/${c.id}`, kind: 'device', of: c.id });
  return out;
}
