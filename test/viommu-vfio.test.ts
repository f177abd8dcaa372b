/**
 * The VMM's virtio-iommu backend in one thread: a real split virtqueue in
 * guest RAM (the driver side written with the shm wire helpers), a real
 * vfio_iommu_type1 container over a real host page table as the VFIO port
 * (HostVfio: direct calls), model clocks in virtual mode and the default
 * cost profile. Each request is queued, the device handles the kick, and
 * the test reads the tail, the used ring, the page table and the counters.
 */

import { HostVfio, IOMMU_LOCK } from '@vmstack/host-vfio';
import {
  attachGuestMemory,
  DEFAULT_PROFILE_PATH,
  IOMMU_READ,
  IOMMU_WRITE,
  LockTable,
  loadProfile,
  ModelClock,
  readProbeProperties,
  readTail,
  requestSizeBytes,
  statusName,
  VIRTIO_IOMMU_MAP_F_MMIO,
  VIRTIO_IOMMU_MAP_F_READ,
  VIRTIO_IOMMU_MAP_F_WRITE,
  VIRTIO_IOMMU_PROBE_SIZE_BYTES_DEFAULT,
  VIRTIO_IOMMU_RESV_MEM_T_MSI,
  VIRTIO_IOMMU_S_INVAL,
  VIRTIO_IOMMU_S_NOENT,
  VIRTIO_IOMMU_S_OK,
  VIRTIO_IOMMU_S_RANGE,
  VIRTIO_IOMMU_T_ATTACH,
  VIRTIO_IOMMU_T_DETACH,
  VIRTIO_IOMMU_T_MAP,
  VIRTIO_IOMMU_T_PROBE,
  VIRTIO_IOMMU_T_UNMAP,
  VirtqueueDriver,
  viommuGetWriteDescOffsetBytes,
  virtqueueLayout,
  writeAttachRequest,
  writeDetachRequest,
  writeMapRequest,
  writeProbeRequest,
  writeUnmapRequest,
} from '@vmstack/shm';
import { MSI_IOVA_BASE, MSI_IOVA_LENGTH, VIOMMU_DEVICE_MUTEX, VirtioIommuDevice } from '@vmstack/vmm';
import test from 'ava';
import { VMM_HOST_LOCK_SPECS, vfioContainerOver } from './helpers/vfio-host.js';

const profile = loadProfile(DEFAULT_PROFILE_PATH);
const PAGE = 4096;
const RAM_BYTES = 4 * 1024 * 1024;
const VQ_GPA = 0x1000;
const REQ_GPA = 0x10000;
const DOMAIN = 1;
const EP = 0x100;
/** one request slot per queued request; requests here are sent one at a time */
const SLOT_BYTES = 1024;

function rig() {
  const mem = attachGuestMemory(new SharedArrayBuffer(RAM_BYTES));
  const layout = virtqueueLayout(16, VQ_GPA);
  const driver = VirtqueueDriver.init(mem, layout);
  const locks = LockTable.attach(LockTable.allocate(VMM_HOST_LOCK_SPECS), 0);
  const invalidations: { iova: number; sizeBytes: number }[] = [];
  const { pgtable, container } = vfioContainerOver(locks, RAM_BYTES, 64, (iova, sizeBytes) => invalidations.push({ iova, sizeBytes }));
  const hostClock = new ModelClock('virtual');
  const clock = new ModelClock('virtual');
  const device = new VirtioIommuDevice(mem, layout, new HostVfio(container, hostClock), locks, clock, profile, { endpointIds: [EP, 0x200] });
  let kickNs = 0;

  /** Queue one request (out part, in part), kick at a fresh model time, take the used element back. */
  function submit(write: (gpa: number) => void, outLen: number, inLen: number) {
    const gpa = REQ_GPA;
    mem.u8.fill(0xee, gpa, gpa + SLOT_BYTES); // the device must write the tail itself
    write(gpa);
    if (!driver.addBuf([{ gpa, lenBytes: outLen }], [{ gpa: gpa + outLen, lenBytes: inLen }], 7)) throw new Error('queue full');
    driver.publish();
    kickNs += 1_000_000; // well after everything before: no lock waits
    const vfioBefore = { map: container.mapDmaCalls, unmap: container.unmapDmaCalls };
    const handled = device.virtio_iommu_handle_command(kickNs);
    const used = driver.getBuf();
    if (!used) throw new Error('the device returned nothing');
    return {
      handled,
      token: used.token,
      usedLenBytes: used.lenBytes,
      status: readTail(mem, gpa + outLen + inLen - 4),
      gpa,
      elapsedNs: clock.nowNs() - kickNs,
      vfioMaps: container.mapDmaCalls - vfioBefore.map,
      vfioUnmaps: container.unmapDmaCalls - vfioBefore.unmap,
    };
  }
  function request(type: number, write: (gpa: number) => void) {
    const out = viommuGetWriteDescOffsetBytes(type);
    return submit(write, out, requestSizeBytes(type) - out);
  }
  const attach = (endpoint = EP, domain = DOMAIN) => request(VIRTIO_IOMMU_T_ATTACH, (g) => writeAttachRequest(mem, g, { domain, endpoint, flags: 0 }));
  const detach = (endpoint = EP, domain = DOMAIN) => request(VIRTIO_IOMMU_T_DETACH, (g) => writeDetachRequest(mem, g, { domain, endpoint }));
  const map = (virtStart: number, sizeBytes: number, physStart: number, flags: number, domain = DOMAIN) =>
    request(VIRTIO_IOMMU_T_MAP, (g) => writeMapRequest(mem, g, { domain, virtStart, virtEnd: virtStart + sizeBytes - 1, physStart, flags }));
  const unmap = (virtStart: number, sizeBytes: number, domain = DOMAIN) =>
    request(VIRTIO_IOMMU_T_UNMAP, (g) => writeUnmapRequest(mem, g, { domain, virtStart, virtEnd: virtStart + sizeBytes - 1 }));
  return { mem, device, container, pgtable, locks, clock, hostClock, invalidations, submit, request, attach, detach, map, unmap };
}

const st = (r: { status: number }) => statusName(r.status);
const OK = statusName(VIRTIO_IOMMU_S_OK);

test('ATTACH puts the endpoint in a domain; PROBE answers with the MSI doorbell as a reserved region; PROBE of an unknown endpoint: NOENT', (t) => {
  const s = rig();
  const a = s.attach();
  t.is(a.handled, 1);
  t.is(a.token, 7, 'the used element returns our chain');
  t.is(st(a), OK);
  t.is(a.usedLenBytes, 4, 'ATTACH writes only the tail');
  const p = s.request(VIRTIO_IOMMU_T_PROBE, (g) => writeProbeRequest(s.mem, g, { endpoint: EP }));
  t.is(st(p), OK);
  t.is(p.usedLenBytes, VIRTIO_IOMMU_PROBE_SIZE_BYTES_DEFAULT + 4, 'PROBE writes the properties and the tail');
  t.deepEqual(readProbeProperties(s.mem, p.gpa + 72, VIRTIO_IOMMU_PROBE_SIZE_BYTES_DEFAULT), [
    { kind: 'resv-mem', subtype: VIRTIO_IOMMU_RESV_MEM_T_MSI, start: MSI_IOVA_BASE, end: MSI_IOVA_BASE + MSI_IOVA_LENGTH - 1 },
  ]);
  t.is(MSI_IOVA_BASE, 0xfee0_0000);
  t.is(MSI_IOVA_BASE + MSI_IOVA_LENGTH - 1, 0xfeef_ffff);
  t.is(st(s.request(VIRTIO_IOMMU_T_PROBE, (g) => writeProbeRequest(s.mem, g, { endpoint: 0x999 }))), statusName(VIRTIO_IOMMU_S_NOENT));
  // an ATTACH with a reserved byte set must fail
  const bad = s.request(VIRTIO_IOMMU_T_ATTACH, (g) => {
    writeAttachRequest(s.mem, g, { domain: 2, endpoint: 0x200, flags: 0 });
    s.mem.u8[g + 16] = 1;
  });
  t.is(st(bad), statusName(VIRTIO_IOMMU_S_INVAL));
  t.deepEqual({ attach: s.device.counters.attach, probe: s.device.counters.probe }, { attach: 2, probe: 2 });
});

test('MAP: virt_end is inclusive; one VFIO map; the host page table walks to the right HPA with the right permission; model time = the profile costs', (t) => {
  const s = rig();
  s.attach();
  const iova = 0x10_0000;
  const phys = 0x20_0000;
  const m = s.map(iova, 3 * PAGE, phys, VIRTIO_IOMMU_MAP_F_READ);
  t.is(st(m), OK);
  t.is(m.vfioMaps, 1);
  t.is(s.device.counters.vfioMapDma, 1);
  for (let p = 0; p < 3; p++) {
    const w = s.pgtable.walk(iova + p * PAGE + 0x123);
    t.deepEqual(w && { hpa: w.hpa, prot: w.prot }, { hpa: phys + p * PAGE + 0x123, prot: IOMMU_READ }, `page ${p}`);
  }
  t.is(s.pgtable.walk(iova + 3 * PAGE), null, 'virt_end = start + 3 pages - 1: exactly 3 pages mapped');
  t.is(s.pgtable.walk(iova - 1), null);
  t.is(s.pgtable.mappedPages, 3);
  t.is(s.container.pinnedPages, 3);
  t.is(s.container.lockedVmPages, 3);
  const p = profile;
  const expectNs =
    p.vmmViommuRequestNs + p.vfioIoctlSyscallNs + p.vfioDmaDoMapBaseNs + 3 * p.vfioPinPagePerPageNs + p.vfioLockedVmAccountNs + 3 * p.hostIommuMapPerPageNs;
  t.is(m.elapsedNs, expectNs, 'VMM request + ioctl + vfio_dma_do_map (pin, account, map 3 pages)');
  t.is(s.hostClock.nowNs(), s.clock.nowNs(), 'the VMM waited for the host');
  // other permissions
  t.is(st(s.map(0x20_0000, PAGE, 0x30_0000, VIRTIO_IOMMU_MAP_F_WRITE)), OK);
  t.is(s.pgtable.walk(0x20_0000)?.prot as number, IOMMU_WRITE, 'WRITE only: the device may write, not read');
  t.is(st(s.map(0x21_0000, PAGE, 0x31_0000, VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_WRITE)), OK);
  t.is(s.pgtable.walk(0x21_0000)?.prot as number, IOMMU_READ | IOMMU_WRITE);
  t.is(s.device.mappingCount(), 3);
});

test('UNMAP covering three earlier MAPs: three VFIO unmaps, each invalidating the IOTLB; model time = the profile costs', (t) => {
  const s = rig();
  s.attach();
  const maps: [number, number][] = [
    [0x40_0000, 1],
    [0x40_2000, 2],
    [0x41_0000, 1],
  ];
  for (const [iova, pages] of maps) t.is(st(s.map(iova, pages * PAGE, 0x10_0000 + (iova - 0x40_0000), VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_WRITE)), OK);
  t.is(s.container.dmaCount, 3);
  const u = s.unmap(0x40_0000, 0x2_0000);
  t.is(st(u), OK);
  t.is(u.vfioUnmaps, 3, 'one VFIO_IOMMU_UNMAP_DMA per covered mapping');
  t.is(s.device.counters.vfioUnmapDma, 3);
  t.deepEqual(
    s.invalidations.map((x) => [x.iova, x.sizeBytes]),
    maps.map(([iova, pages]) => [iova, pages * PAGE]),
  );
  for (const [iova, pages] of maps) for (let p = 0; p < pages; p++) t.is(s.pgtable.walk(iova + p * PAGE), null);
  t.deepEqual([s.container.dmaCount, s.container.pinnedPages, s.container.lockedVmPages, s.pgtable.mappedPages, s.device.mappingCount()], [0, 0, 0, 0, 0]);
  const p = profile;
  const perMapping = (pages: number) =>
    p.vfioIoctlSyscallNs +
    p.vfioDmaDoUnmapBaseNs +
    pages * p.hostIommuUnmapPerPageNs +
    p.hostIotlbFlushNs +
    pages * p.vfioUnpinPagePerPageNs +
    p.vfioLockedVmAccountNs;
  t.is(u.elapsedNs, p.vmmViommuRequestNs + maps.reduce((sum, [, pages]) => sum + perMapping(pages), 0));
  // unmapping a range where nothing is mapped succeeds and calls nobody
  const none = s.unmap(0x80_0000, 0x10_0000);
  t.is(st(none), OK);
  t.is(none.vfioUnmaps, 0);
});

test('UNMAP that would split a mapping: RANGE, and nothing is unmapped', (t) => {
  const s = rig();
  s.attach();
  const iova = 0x50_0000;
  t.is(st(s.map(iova, 4 * PAGE, 0x10_0000, VIRTIO_IOMMU_MAP_F_READ)), OK);
  const RANGE = statusName(VIRTIO_IOMMU_S_RANGE);
  for (const [start, size, what] of [
    [iova + PAGE, PAGE, 'the middle'],
    [iova, 2 * PAGE, 'the head'],
    [iova + 2 * PAGE, 4 * PAGE, 'the tail and beyond'],
    [iova - PAGE, 2 * PAGE, 'before it and into it'],
  ] as const) {
    const u = s.unmap(start, size);
    t.is(st(u), RANGE, what);
    t.is(u.vfioUnmaps, 0, `${what}: no VFIO call`);
  }
  t.is(s.pgtable.mappedPages, 4, 'the mapping is whole');
  t.is(s.device.mappingCount(), 1);
  t.is(st(s.unmap(iova, 4 * PAGE)), OK, 'the exact range unmaps');
  t.is(s.pgtable.mappedPages, 0);
});

test('MAP to an unknown domain: NOENT; overlapping MAP: INVAL; bad flags: INVAL; none reaches VFIO', (t) => {
  const s = rig();
  s.attach();
  t.is(st(s.map(0x60_0000, 4 * PAGE, 0x10_0000, VIRTIO_IOMMU_MAP_F_READ)), OK);
  const before = { vfio: s.container.mapDmaCalls, pages: s.pgtable.mappedPages };
  const INVAL = statusName(VIRTIO_IOMMU_S_INVAL);
  const cases: [string, ReturnType<typeof s.map>, string][] = [
    ['unknown domain', s.map(0x70_0000, PAGE, 0x10_0000, VIRTIO_IOMMU_MAP_F_READ, 42), statusName(VIRTIO_IOMMU_S_NOENT)],
    ['inside an existing mapping', s.map(0x60_1000, PAGE, 0x20_0000, VIRTIO_IOMMU_MAP_F_READ), INVAL],
    ['overlapping its head', s.map(0x5f_f000, 2 * PAGE, 0x20_0000, VIRTIO_IOMMU_MAP_F_READ), INVAL],
    ['overlapping its last byte', s.map(0x60_3000, 2 * PAGE, 0x20_0000, VIRTIO_IOMMU_MAP_F_READ), INVAL],
    ['covering it', s.map(0x5f_0000, 0x10_0000, 0x20_0000, VIRTIO_IOMMU_MAP_F_READ), INVAL],
    ['unknown flag bit 3', s.map(0x70_0000, PAGE, 0x10_0000, VIRTIO_IOMMU_MAP_F_READ | 8), INVAL],
  ];
  for (const [what, r, want] of cases) {
    t.is(st(r), want, what);
    t.is(r.vfioMaps, 0, `${what}: no VFIO call`);
  }
  t.is(s.container.mapDmaCalls, before.vfio);
  t.is(s.pgtable.mappedPages, before.pages);
  t.is(s.pgtable.walk(0x60_1000)?.hpa, 0x10_1000, 'the existing mapping is untouched');
  t.is(s.pgtable.walk(0x70_0000), null);
  t.is(s.device.mappingCount(), 1);
});

test('an unknown request type: the buffer comes back unwritten, used length 0', (t) => {
  const s = rig();
  const r = s.submit(
    (g) => {
      s.mem.u8.fill(0, g, g + 8);
      s.mem.u8[g] = 9;
    },
    8,
    4,
  );
  t.is(r.handled, 1);
  t.is(r.usedLenBytes, 0);
  t.deepEqual([...s.mem.u8.subarray(r.gpa + 8, r.gpa + 12)], [0xee, 0xee, 0xee, 0xee], 'the tail is not written');
});

test('DETACH of the last endpoint takes the domain and all its mappings with it (one VFIO unmap each); before that, nothing moves', (t) => {
  const s = rig();
  s.attach(EP);
  s.attach(0x200);
  t.is(st(s.map(0x10_0000, 2 * PAGE, 0x10_0000, VIRTIO_IOMMU_MAP_F_READ)), OK);
  t.is(st(s.map(0x20_0000, 3 * PAGE, 0x30_0000, VIRTIO_IOMMU_MAP_F_WRITE)), OK);
  const first = s.detach(EP);
  t.is(st(first), OK);
  t.is(first.vfioUnmaps, 0, 'another endpoint still uses the domain');
  t.is(s.pgtable.mappedPages, 5);
  const last = s.detach(0x200);
  t.is(st(last), OK);
  t.is(last.vfioUnmaps, 2);
  t.deepEqual([s.container.dmaCount, s.container.pinnedPages, s.container.lockedVmPages, s.pgtable.mappedPages, s.device.mappingCount()], [0, 0, 0, 0, 0]);
  t.is(st(s.map(0x10_0000, PAGE, 0x10_0000, VIRTIO_IOMMU_MAP_F_READ)), statusName(VIRTIO_IOMMU_S_NOENT), 'the domain is gone');
  t.is(st(s.detach(0x200)), statusName(VIRTIO_IOMMU_S_INVAL), 'detaching twice');
});

test('MMIO mappings never reach VFIO: not at MAP, not at UNMAP', (t) => {
  const s = rig();
  s.attach();
  const m = s.map(0xfe00_0000, PAGE, 0xfe00_0000, VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_WRITE | VIRTIO_IOMMU_MAP_F_MMIO);
  t.is(st(m), OK);
  t.is(m.vfioMaps, 0);
  t.is(s.pgtable.walk(0xfe00_0000), null);
  t.is(s.device.mappingCount(), 1, 'the device still tracks it (it overlaps-checks later MAPs)');
  t.is(st(s.map(0xfe00_0000, PAGE, 0x10_0000, VIRTIO_IOMMU_MAP_F_READ)), statusName(VIRTIO_IOMMU_S_INVAL));
  const u = s.unmap(0xfe00_0000, PAGE);
  t.is(st(u), OK);
  t.is(u.vfioUnmaps, 0);
  t.is(s.device.mappingCount(), 0);
});

// Regression (packages/vmm/src/viommu-device.ts, virtio_iommu_detach): the last
// endpoint's DETACH used to call vfioUnmap for EVERY mapping of the domain, MMIO
// ones included, which were never mapped through VFIO (virtio_iommu_unmap
// skips them correctly). The extra VFIO_IOMMU_UNMAP_DMA unmaps nothing
// today (errno 0, 0 bytes) but inflates vfio.unmap_dma, and in a container
// shared by several domains it would unmap another domain's pages at that
// IOVA. Fixed: DETACH skips MMIO mappings as UNMAP does.
test('DETACH does not send VFIO_IOMMU_UNMAP_DMA for an MMIO mapping', (t) => {
  const s = rig();
  s.attach();
  t.is(st(s.map(0xfe00_0000, PAGE, 0xfe00_0000, VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_MMIO)), OK);
  const d = s.detach();
  t.is(st(d), OK);
  t.is(d.vfioUnmaps, 0);
});

test('the device mutex is taken once per decoded request, and model time only moves forward', (t) => {
  const s = rig();
  const a = s.attach();
  t.is(a.elapsedNs, profile.vmmViommuRequestNs, 'ATTACH: the VMM request cost alone');
  s.map(0x10_0000, PAGE, 0x10_0000, VIRTIO_IOMMU_MAP_F_READ);
  s.unmap(0x10_0000, PAGE);
  s.submit((g) => (s.mem.u8[g] = 9), 8, 4); // rejected before the mutex
  const mutex = s.locks.get(VIOMMU_DEVICE_MUTEX).stat();
  t.is(mutex.acquisitions, 3);
  t.is(mutex.contentions, 0);
  t.is(s.locks.get(IOMMU_LOCK).stat().acquisitions, 2, 'iommu->lock: one map, one unmap');
  t.is(s.device.counters.kicks, 4);
});
