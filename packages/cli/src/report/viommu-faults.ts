/**
 * `vmstack.virtio_iommu.faults` of the JSON report: the translation faults of
 * the drives behind a VM's virtio-iommus, from the host IOMMU's records
 * through the VMM's reports on the event queue to what the guest's driver
 * read there. Present for a run whose VMs have a virtio-iommu.
 */

import type { ViommuFaultStats } from '@vmstack/guest-kernel';
import type { IommuFaultLogStats } from '@vmstack/iommu-hw';
import {
  VIRTIO_IOMMU_FAULT_F_ADDRESS,
  VIRTIO_IOMMU_FAULT_F_EXEC,
  VIRTIO_IOMMU_FAULT_F_READ,
  VIRTIO_IOMMU_FAULT_F_WRITE,
  VIRTIO_IOMMU_FAULT_R_DOMAIN,
  VIRTIO_IOMMU_FAULT_R_MAPPING,
} from '@vmstack/shm';
import type { ViommuDeviceFaultCounters } from '@vmstack/vmm';

/** One report as the guest's driver read it. */
export interface ViommuFaultReportRow {
  reason: 'UNKNOWN' | 'DOMAIN' | 'MAPPING';
  flags: string[];
  endpoint: number;
  /** hex, or null when the report's flags say the address is not valid */
  address: string | null;
}

export interface ViommuFaultsReport {
  /** the VMM reads the host's fault queue and reports on the event queue (`run --vmm qemu-notifier`) */
  forwarded: boolean;
  /** the host IOMMU's records of the drives' faults */
  host: { faults: number; not_present: number; permission: number; overflowed: number; read_by_vmm: number };
  /** the VMM's device: reports written into event buffers, and dropped for want of one */
  reported: number;
  dropped: number;
  /** what the guest's virtio-iommu driver read on its event queues */
  guest: {
    buffers_posted: number;
    faults: number;
    by_reason: { unknown: number; domain: number; mapping: number };
    by_flags: { read: number; write: number; exec: number; address: number };
    ignored: number;
    first: ViommuFaultReportRow[];
  };
}

const FIRST_KEPT = 8;

export function viommuFaultsReport(
  forwarded: boolean,
  logs: readonly IommuFaultLogStats[],
  vmm: ViommuDeviceFaultCounters | undefined,
  guest: ViommuFaultStats | null | undefined,
): ViommuFaultsReport {
  const sum = (k: keyof IommuFaultLogStats) => logs.reduce((s, l) => s + l[k], 0);
  return {
    forwarded,
    host: { faults: sum('faults'), not_present: sum('notPresent'), permission: sum('permission'), overflowed: sum('overflowed'), read_by_vmm: sum('read') },
    reported: vmm?.reported ?? 0,
    dropped: vmm?.dropped ?? 0,
    guest: {
      buffers_posted: guest?.buffersPosted ?? 0,
      faults: guest?.faults ?? 0,
      by_reason: { ...(guest?.byReason ?? { unknown: 0, domain: 0, mapping: 0 }) },
      by_flags: { ...(guest?.byFlags ?? { read: 0, write: 0, exec: 0, address: 0 }) },
      ignored: guest?.ignored ?? 0,
      first: (guest?.first ?? []).slice(0, FIRST_KEPT).map((f) => ({
        reason: f.reason === VIRTIO_IOMMU_FAULT_R_DOMAIN ? 'DOMAIN' : f.reason === VIRTIO_IOMMU_FAULT_R_MAPPING ? 'MAPPING' : 'UNKNOWN',
        flags: faultFlagNames(f.flags),
        endpoint: f.endpoint,
        address: f.flags & VIRTIO_IOMMU_FAULT_F_ADDRESS ? `0x${f.address.toString(16)}` : null,
      })),
    },
  };
}

/** VIRTIO_IOMMU_FAULT_F_* set in `flags`, by name. */
export function faultFlagNames(flags: number): string[] {
  const names: string[] = [];
  if (flags & VIRTIO_IOMMU_FAULT_F_READ) names.push('READ');
  if (flags & VIRTIO_IOMMU_FAULT_F_WRITE) names.push('WRITE');
  if (flags & VIRTIO_IOMMU_FAULT_F_EXEC) names.push('EXEC');
  if (flags & VIRTIO_IOMMU_FAULT_F_ADDRESS) names.push('ADDRESS');
  return names;
}

/** Several VMs' reports as one: counts added up, the first reports in VM order. */
export function mergeViommuFaults(all: readonly ViommuFaultsReport[]): ViommuFaultsReport {
  const out = viommuFaultsReport(
    all.some((x) => x.forwarded),
    [],
    undefined,
    null,
  );
  for (const x of all) {
    for (const k of Object.keys(out.host) as (keyof ViommuFaultsReport['host'])[]) out.host[k] += x.host[k];
    out.reported += x.reported;
    out.dropped += x.dropped;
    out.guest.buffers_posted += x.guest.buffers_posted;
    out.guest.faults += x.guest.faults;
    out.guest.ignored += x.guest.ignored;
    for (const k of Object.keys(out.guest.by_reason) as (keyof ViommuFaultsReport['guest']['by_reason'])[]) out.guest.by_reason[k] += x.guest.by_reason[k];
    for (const k of Object.keys(out.guest.by_flags) as (keyof ViommuFaultsReport['guest']['by_flags'])[]) out.guest.by_flags[k] += x.guest.by_flags[k];
    out.guest.first.push(...x.guest.first.slice(0, FIRST_KEPT - out.guest.first.length));
  }
  return out;
}
