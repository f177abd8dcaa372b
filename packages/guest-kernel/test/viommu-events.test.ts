/**
 * The virtio-iommu driver's event queue (Linux viommu_fill_evtq,
 * viommu_event_handler, viommu_fault_handler): the probe posts one report
 * buffer per queue entry; the handler counts each well-formed report by
 * reason and flags, keeps the first few, ignores a buffer of the wrong
 * length or a report with a reserved byte set, and posts every buffer again.
 * The device side here is a bare VirtqueueDevice writing reports.
 */

import {
  attachGuestMemory,
  LockTable,
  ModelClock,
  Profiler,
  VIRTIO_IOMMU_F_MAP_UNMAP,
  VIRTIO_IOMMU_FAULT_BYTES,
  VIRTIO_IOMMU_FAULT_F_ADDRESS,
  VIRTIO_IOMMU_FAULT_F_READ,
  VIRTIO_IOMMU_FAULT_F_WRITE,
  VIRTIO_IOMMU_FAULT_R_DOMAIN,
  VIRTIO_IOMMU_FAULT_R_MAPPING,
  VirtqueueDevice,
  viommuFeature,
  virtqueueLayout,
  writeFault,
  writeViommuConfigPage,
} from '@vmstack/shm';
import test from 'ava';
import { VIOMMU_FAULT_REPORTS_KEPT, VIOMMU_REQUEST_LOCK, ViommuDriver } from '../src/virtio-iommu/viommu.js';

const CONFIG_GPA = 0x3040;
const EVQ_GPA = 0x4000;
const BUFS_GPA = 0x6000;
const ENTRIES = 4;

function rig() {
  const mem = attachGuestMemory(new SharedArrayBuffer(1 << 20));
  writeViommuConfigPage(mem, CONFIG_GPA, viommuFeature(VIRTIO_IOMMU_F_MAP_UNMAP), {
    pageSizeMask: 0xfffff000n,
    inputRange: { start: 0n, end: 2n ** 48n - 1n },
    domainRange: { start: 0, end: 100 },
    probeSize: 0,
    bypass: 0,
  });
  const clock = new ModelClock('virtual');
  const locks = LockTable.attach(LockTable.allocate([{ name: VIOMMU_REQUEST_LOCK, kind: 'spinlock' }]), 0);
  const evq = { layout: virtqueueLayout(ENTRIES, EVQ_GPA), buffersGpa: BUFS_GPA };
  const driver = new ViommuDriver(
    mem,
    virtqueueLayout(16, 0x1000),
    true,
    0x8000,
    0x3000,
    locks,
    { kick: (nowNs) => nowNs },
    clock,
    { viommuRequestPrepareNs: 0, vmExitKernelNs: 0 },
    'v5.10',
    new Profiler(clock),
    VIOMMU_REQUEST_LOCK,
    CONFIG_GPA,
    evq,
  );
  driver.viommu_probe();
  const device = new VirtqueueDevice(mem, evq.layout);
  /** the device reports one fault (or returns a buffer with `len` written) */
  const report = (f: Parameters<typeof writeFault>[2] | null, len = VIRTIO_IOMMU_FAULT_BYTES): boolean => {
    const c = device.popAvail();
    if (!c) return false;
    if (f) writeFault(mem, c.in[0].gpa, f);
    device.pushUsed(c.head, len);
    return true;
  };
  return { mem, clock, driver, device, report };
}

test('the probe posts one 24-byte buffer per event queue entry, charging nothing', (t) => {
  const { driver, device, clock } = rig();
  t.is(driver.faultStats.buffersPosted, ENTRIES);
  t.is(device.pending(), ENTRIES);
  const c = device.popAvail()!;
  t.deepEqual([c.out.length, c.in.length, c.in[0].lenBytes], [0, 1, VIRTIO_IOMMU_FAULT_BYTES]);
  t.is(clock.nowNs(), 0);
});

test('the handler counts reports by reason and flags, keeps the first, ignores malformed buffers, and posts every buffer again', (t) => {
  const { driver, device, report, mem } = rig();
  const R = VIRTIO_IOMMU_FAULT_F_READ | VIRTIO_IOMMU_FAULT_F_ADDRESS;
  t.true(report({ reason: VIRTIO_IOMMU_FAULT_R_MAPPING, flags: R, endpoint: 0x100, address: 0x5000 }));
  t.true(report({ reason: VIRTIO_IOMMU_FAULT_R_DOMAIN, flags: VIRTIO_IOMMU_FAULT_F_WRITE, endpoint: 0x100, address: 0x6000 }));
  t.true(report(null, 0), 'a buffer returned unwritten');
  // a report with a reserved byte set: the driver ignores it
  const c = device.popAvail()!;
  writeFault(mem, c.in[0].gpa, { reason: VIRTIO_IOMMU_FAULT_R_MAPPING, flags: R, endpoint: 0x100, address: 0x7000 });
  mem.u8[c.in[0].gpa + 1] = 1;
  device.pushUsed(c.head, VIRTIO_IOMMU_FAULT_BYTES);
  t.false(report({ reason: VIRTIO_IOMMU_FAULT_R_MAPPING, flags: R, endpoint: 0x100, address: 0 }), 'all four buffers are in use');
  t.is(driver.viommu_event_handler(), 2);
  const s = driver.faultStats;
  t.deepEqual(s.byReason, { unknown: 0, domain: 1, mapping: 1 });
  t.deepEqual(s.byFlags, { read: 1, write: 1, exec: 0, address: 1 });
  t.is(s.ignored, 2);
  t.deepEqual(s.first, [
    { reason: VIRTIO_IOMMU_FAULT_R_MAPPING, flags: R, endpoint: 0x100, address: 0x5000 },
    // without F_ADDRESS the address is not kept
    { reason: VIRTIO_IOMMU_FAULT_R_DOMAIN, flags: VIRTIO_IOMMU_FAULT_F_WRITE, endpoint: 0x100, address: 0 },
  ]);
  t.is(device.pending(), ENTRIES, 'every buffer posted again');
});

test(`the handler keeps the first ${VIOMMU_FAULT_REPORTS_KEPT} reports and counts them all`, (t) => {
  const { driver, report } = rig();
  for (let i = 0; i < 3 * ENTRIES; i++) {
    report({ reason: VIRTIO_IOMMU_FAULT_R_MAPPING, flags: VIRTIO_IOMMU_FAULT_F_ADDRESS, endpoint: 1, address: i * 0x1000 });
    if (i % ENTRIES === ENTRIES - 1) driver.viommu_event_handler();
  }
  t.is(driver.faultStats.faults, 3 * ENTRIES);
  t.deepEqual(
    driver.faultStats.first.map((f) => f.address),
    Array.from({ length: VIOMMU_FAULT_REPORTS_KEPT }, (_, i) => i * 0x1000),
  );
});
