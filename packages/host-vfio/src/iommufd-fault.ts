/**
 * The host kernel's path for the translation faults of the devices a VFIO
 * user owns: the IOMMU driver's fault handler reads the hardware's records
 * (iommu-hw IommuFaultLog: VT-d's fault recording registers, AMD-Vi's event
 * log) and hands each to `iommu_report_device_fault`, which queues it on the
 * fault object the VMM allocated (iommufd IOMMU_FAULT_QUEUE_ALLOC); the VMM
 * read()s the object's fd, one `struct iommu_hwpt_pgfault` per record
 * (`iommufd_fault_fops_read`).
 *
 * Linux delivers only recoverable I/O page faults (PRI page requests) on
 * that queue; a device without PRI, as the NVMe drive here, has its faults
 * logged by the driver (dmar_fault) and not delivered. The model routes the
 * drive's faults through a queue of that shape to give a VMM something to
 * forward: its records carry dev_id, perm and addr as the struct does, plus
 * the hardware's fault reason and the fault's model time. Costs: none are
 * charged (no sourced figure for the path).
 */

import { IOMMU_FAULT_REASON_NOT_PRESENT, IommuFaultLog } from '@vmstack/iommu-hw';
import { type HostIommuFault, IOMMU_PGFAULT_PERM_READ, IOMMU_PGFAULT_PERM_WRITE, IOMMU_WRITE } from '@vmstack/shm';

export interface IommufdFaultStats {
  /** faults the hardware saw, kept or not */
  faults: number;
  /** faults without a translation */
  notPresent: number;
  /** faults on a translation without the access's permission */
  permission: number;
  /** faults the hardware could not record (its log was full) */
  overflowed: number;
  /** records queued by iommu_report_device_fault */
  queued: number;
  /** records the VMM has read */
  read: number;
}

export class IommufdFaultQueue {
  private readonly logs: IommuFaultLog[];
  private readonly queue: HostIommuFault[] = [];
  private head = 0;
  private queued = 0;

  /** Over the hardware fault logs (IommuFaultLog.allocate) of the devices this VFIO user owns. */
  constructor(logs: readonly SharedArrayBuffer[]) {
    this.logs = logs.map((l) => new IommuFaultLog(l));
  }

  /**
   * The driver's fault handler: every record the hardware holds goes to
   * iommu_report_device_fault, in the order the faults happened across
   * devices, and onto the queue.
   */
  iommu_report_device_fault(): void {
    const fresh: HostIommuFault[] = [];
    for (const log of this.logs) {
      for (let r = log.next(); r; r = log.next()) {
        fresh.push({
          devId: r.sourceId,
          perm: r.access === IOMMU_WRITE ? IOMMU_PGFAULT_PERM_WRITE : IOMMU_PGFAULT_PERM_READ,
          addr: r.iova,
          reason: r.reason,
          timeNs: r.timeNs,
        });
      }
    }
    fresh.sort((a, b) => a.timeNs - b.timeNs || a.devId - b.devId);
    for (const f of fresh) this.queue.push(f);
    this.queued += fresh.length;
  }

  /** read() on the fault fd: the oldest queued record, or null when none is left. */
  iommufd_fault_fops_read(): HostIommuFault | null {
    if (this.head === this.queue.length) this.iommu_report_device_fault();
    if (this.head === this.queue.length) return null;
    return this.queue[this.head++];
  }

  stats(): IommufdFaultStats {
    const s = { faults: 0, notPresent: 0, permission: 0, overflowed: 0, queued: this.queued, read: this.head };
    for (const log of this.logs) {
      const l = log.stats();
      s.faults += l.faults;
      s.notPresent += l.notPresent;
      s.permission += l.permission;
      s.overflowed += l.overflowed;
    }
    return s;
  }
}

export { IOMMU_FAULT_REASON_NOT_PRESENT };
