/**
 * struct virtio_iommu_fault (the event queue's fault report) as the spec
 * lays it out, and the driver-side rules for reading it: a report with a
 * reserved byte set is ignored, reserved1 and undefined flags are ignored,
 * an unknown reason reads as UNKNOWN. The device zeroes what it must.
 */

import test from 'ava';
import {
  readFault,
  VIRTIO_IOMMU_FAULT_BYTES,
  VIRTIO_IOMMU_FAULT_F_ADDRESS,
  VIRTIO_IOMMU_FAULT_F_WRITE,
  VIRTIO_IOMMU_FAULT_R_MAPPING,
  VIRTIO_IOMMU_FAULT_R_UNKNOWN,
  writeFault,
} from '../src/wire/virtio-iommu.js';
import { attachGuestMemory } from '../src/wire/virtqueue.js';

test('a fault report round-trips at the spec offsets; reserved fields and undefined flags are written as zero', (t) => {
  const mem = attachGuestMemory(new SharedArrayBuffer(256));
  mem.u8.fill(0xff, 0, 64);
  const flags = VIRTIO_IOMMU_FAULT_F_WRITE | VIRTIO_IOMMU_FAULT_F_ADDRESS;
  writeFault(mem, 8, { reason: VIRTIO_IOMMU_FAULT_R_MAPPING, flags: flags | 0x8000, endpoint: 0x100, address: 0x1234_5000 });
  t.is(VIRTIO_IOMMU_FAULT_BYTES, 24);
  t.is(mem.u8[8], 2, 'reason at 0');
  t.deepEqual([...mem.u8.subarray(9, 12)], [0, 0, 0], 'reserved[3]');
  t.is(mem.dv.getUint32(12, true), flags, 'flags at 4, undefined bit cleared');
  t.is(mem.dv.getUint32(16, true), 0x100, 'endpoint at 8');
  t.is(mem.dv.getUint32(20, true), 0, 'reserved1 at 12');
  t.is(Number(mem.dv.getBigUint64(24, true)), 0x1234_5000, 'address at 16');
  t.is(mem.u8[32], 0xff, 'nothing written past the report');
  t.deepEqual(readFault(mem, 8), { reason: VIRTIO_IOMMU_FAULT_R_MAPPING, flags, endpoint: 0x100, address: 0x1234_5000 });
});

test('driver side: a reserved byte set → ignored (null); reserved1 and undefined flags ignored; an unknown reason is UNKNOWN', (t) => {
  const mem = attachGuestMemory(new SharedArrayBuffer(64));
  writeFault(mem, 0, { reason: VIRTIO_IOMMU_FAULT_R_MAPPING, flags: 0, endpoint: 7, address: 0 });
  mem.u8[2] = 1;
  t.is(readFault(mem, 0), null);
  mem.u8[2] = 0;
  mem.dv.setUint32(12, 0xdead, true);
  mem.dv.setUint32(4, 0x8000 | VIRTIO_IOMMU_FAULT_F_WRITE, true);
  mem.u8[0] = 9;
  t.deepEqual(readFault(mem, 0), { reason: VIRTIO_IOMMU_FAULT_R_UNKNOWN, flags: VIRTIO_IOMMU_FAULT_F_WRITE, endpoint: 7, address: 0 });
});
