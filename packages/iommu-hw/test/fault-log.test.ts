/**
 * The host IOMMU's fault record (fault-log.ts): the IOTLB records each
 * faulting DMA with its model time, IOVA, access and reason; the host reads
 * the records in order; a full log keeps nothing more but still counts.
 */

import { IOMMU_READ, IOMMU_WRITE, ModelClock } from '@vmstack/shm';
import test from 'ava';
import { IOMMU_FAULT_REASON_NOT_PRESENT, IOMMU_FAULT_REASON_PERMISSION, IommuFaultLog } from '../src/fault-log.js';
import { type IoPageWalker, Iotlb } from '../src/iotlb.js';

const PAGE = 4096;
const EP = 0x100;

const walker: IoPageWalker = {
  // one read-only page at IOVA 0x10000
  walk: (iova) => (Math.floor(iova / PAGE) === 0x10 ? { hpa: 0x7000 + (iova % PAGE), prot: IOMMU_READ, levels: 4 } : null),
};

test('the IOTLB records a not-present and a permission fault with the model time, IOVA, access and requester; a translation records nothing', (t) => {
  const log = new IommuFaultLog(IommuFaultLog.allocate(EP, 8));
  const tlb = new Iotlb(walker, { iotlbMissWalkNs: 100, iotlbEntriesCount: 4 });
  tlb.faultLog = log;
  const clock = new ModelClock('virtual');
  clock.syncTo(5000);
  t.is(tlb.translate(0x10008, false, clock), 0x7008);
  t.true(tlb.translate(0x20000, false, clock) < 0);
  t.true(tlb.translate(0x10010, true, clock) < 0);
  t.deepEqual(log.next(), { timeNs: 5200, sourceId: EP, iova: 0x20000, access: IOMMU_READ, reason: IOMMU_FAULT_REASON_NOT_PRESENT });
  t.deepEqual(log.next(), { timeNs: 5200, sourceId: EP, iova: 0x10010, access: IOMMU_WRITE, reason: IOMMU_FAULT_REASON_PERMISSION });
  t.is(log.next(), null);
  t.deepEqual(log.stats(), { faults: 2, notPresent: 1, permission: 1, overflowed: 0, read: 2 });
  t.is(tlb.faults, 2, 'the IOTLB counts the same faults');
});

test('a full log keeps no more records but counts every fault; reading frees slots for later ones', (t) => {
  const log = new IommuFaultLog(IommuFaultLog.allocate(EP, 2));
  for (let i = 0; i < 5; i++) log.record(i, i * PAGE, false, IOMMU_FAULT_REASON_NOT_PRESENT);
  t.deepEqual(log.stats(), { faults: 5, notPresent: 5, permission: 0, overflowed: 3, read: 0 });
  t.is(log.next()?.iova, 0);
  log.record(9, 9 * PAGE, true, IOMMU_FAULT_REASON_PERMISSION);
  t.deepEqual([log.next()?.iova, log.next()?.iova, log.next()], [PAGE, 9 * PAGE, null]);
  t.deepEqual(log.stats(), { faults: 6, notPresent: 5, permission: 1, overflowed: 3, read: 3 });
});

test('another thread attaching the same log reads what the writer recorded', (t) => {
  const sab = IommuFaultLog.allocate(0x200, 4);
  new IommuFaultLog(sab).record(7, 0x3000, true, IOMMU_FAULT_REASON_NOT_PRESENT);
  const reader = new IommuFaultLog(sab);
  t.is(reader.sourceId, 0x200);
  t.deepEqual(reader.next(), { timeNs: 7, sourceId: 0x200, iova: 0x3000, access: IOMMU_WRITE, reason: IOMMU_FAULT_REASON_NOT_PRESENT });
  t.throws(() => new IommuFaultLog(new SharedArrayBuffer(64)), { instanceOf: RangeError });
});
