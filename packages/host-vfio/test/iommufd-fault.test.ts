/**
 * The host's fault path for a VFIO user (iommufd-fault.ts): the driver's
 * handler moves the hardware's records (one IommuFaultLog per device) to the
 * fault queue in the order the faults happened, and read() on the queue's fd
 * returns one struct iommu_hwpt_pgfault-shaped record each, null when empty;
 * through the host's RPC the same records reach the VMM (VmmToHostFaultRead).
 */

import { IOMMU_FAULT_REASON_NOT_PRESENT, IOMMU_FAULT_REASON_PERMISSION, IommuFaultLog } from '@vmstack/iommu-hw';
import { decodeFaultReadReply, IOMMU_PGFAULT_PERM_READ, IOMMU_PGFAULT_PERM_WRITE, ModelClock, type RpcRequestView, VmmToHostFaultRead } from '@vmstack/shm';
import test from 'ava';
import { HostVfio } from '../src/host.js';
import { IommufdFaultQueue } from '../src/iommufd-fault.js';
import type { VfioContainer } from '../src/vfio-iommu-type1.js';

const EP0 = 0x100;
const EP1 = 0x200;

function logs() {
  const a = IommuFaultLog.allocate(EP0, 4);
  const b = IommuFaultLog.allocate(EP1, 4);
  return { a, b, wa: new IommuFaultLog(a), wb: new IommuFaultLog(b) };
}

test('iommu_report_device_fault queues the records of every device in time order; read() returns one per call, then null', (t) => {
  const { a, b, wa, wb } = logs();
  wa.record(300, 0x3000, false, IOMMU_FAULT_REASON_NOT_PRESENT);
  wb.record(100, 0x1000, true, IOMMU_FAULT_REASON_PERMISSION);
  wa.record(200, 0x2000, true, IOMMU_FAULT_REASON_NOT_PRESENT);
  const q = new IommufdFaultQueue([a, b]);
  t.deepEqual(q.iommufd_fault_fops_read(), { devId: EP1, perm: IOMMU_PGFAULT_PERM_WRITE, addr: 0x1000, reason: IOMMU_FAULT_REASON_PERMISSION, timeNs: 100 });
  t.deepEqual(q.iommufd_fault_fops_read(), { devId: EP0, perm: IOMMU_PGFAULT_PERM_WRITE, addr: 0x2000, reason: IOMMU_FAULT_REASON_NOT_PRESENT, timeNs: 200 });
  t.deepEqual(q.iommufd_fault_fops_read(), { devId: EP0, perm: IOMMU_PGFAULT_PERM_READ, addr: 0x3000, reason: IOMMU_FAULT_REASON_NOT_PRESENT, timeNs: 300 });
  t.is(q.iommufd_fault_fops_read(), null);
  // a fault after the queue ran dry is read at the next read()
  wb.record(400, 0x4000, false, IOMMU_FAULT_REASON_NOT_PRESENT);
  t.is(q.iommufd_fault_fops_read()?.addr, 0x4000);
  t.deepEqual(q.stats(), { faults: 4, notPresent: 3, permission: 1, overflowed: 0, queued: 4, read: 4 });
});

test('faults the hardware could not record are counted on the host (overflowed), never queued', (t) => {
  const { a, wa } = logs();
  for (let i = 0; i < 6; i++) wa.record(i, i * 0x1000, false, IOMMU_FAULT_REASON_NOT_PRESENT);
  const q = new IommufdFaultQueue([a]);
  let n = 0;
  while (q.iommufd_fault_fops_read()) n++;
  t.is(n, 4);
  t.deepEqual(q.stats(), { faults: 6, notPresent: 6, permission: 0, overflowed: 2, queued: 4, read: 4 });
});

test('VmmToHostFaultRead through HostVfio.serve: the reply carries the record; without a fault queue the answer is none', (t) => {
  const { a, wa } = logs();
  wa.record(50, 0x8000, true, IOMMU_FAULT_REASON_PERMISSION);
  const container = {} as VfioContainer;
  const host = new HostVfio(container, new ModelClock('virtual'), new IommufdFaultQueue([a]));
  const dv = new DataView(new ArrayBuffer(64));
  const req = { type: VmmToHostFaultRead, timestampNs: 1000, dv, payloadOffset: 16 } as unknown as RpcRequestView;
  const reply = host.serve(req);
  reply.write(dv, 16);
  t.deepEqual(decodeFaultReadReply(dv, 16), { devId: EP0, perm: IOMMU_PGFAULT_PERM_WRITE, addr: 0x8000, reason: IOMMU_FAULT_REASON_PERMISSION, timeNs: 50 });
  t.is(reply.timestampNs, 1000);
  host.serve(req).write(dv, 16);
  t.is(decodeFaultReadReply(dv, 16), null, 'the queue is empty');
  const bare = new HostVfio(container, new ModelClock('virtual'));
  bare.serve(req).write(dv, 16);
  t.is(decodeFaultReadReply(dv, 16), null, 'no fault queue allocated');
});
