/**
 * DETACH of an endpoint from a domain that keeps other endpoints (virtio
 * spec, DETACH: after the request the endpoint cannot access the domain's
 * mappings; package README row 25). The drives behind one virtio-iommu share
 * one VFIO container, whose page table stays for the other endpoints; the
 * device takes the detached endpoint's group out of the container
 * (VFIO_GROUP_UNSET_CONTAINER), whose device's context entry the host clears
 * and whose IOTLB it flushes: a DMA of that endpoint faults, the other
 * endpoint's still translates; ATTACH puts the group back. One thread: the
 * device, a real container over a real page table, an IOTLB per endpoint.
 */

import { HostVfio } from '@vmstack/host-vfio';
import { IOMMU_FAULT_REASON_NOT_PRESENT, IommuContextEntry, IommuFaultLog, Iotlb } from '@vmstack/iommu-hw';
import {
  attachGuestMemory,
  DEFAULT_PROFILE_PATH,
  LockTable,
  loadProfile,
  ModelClock,
  readTail,
  requestSizeBytes,
  VIRTIO_IOMMU_MAP_F_READ,
  VIRTIO_IOMMU_MAP_F_WRITE,
  VIRTIO_IOMMU_S_OK,
  VIRTIO_IOMMU_T_ATTACH,
  VIRTIO_IOMMU_T_DETACH,
  VIRTIO_IOMMU_T_MAP,
  VirtqueueDriver,
  viommuGetWriteDescOffsetBytes,
  virtqueueLayout,
  writeAttachRequest,
  writeDetachRequest,
  writeMapRequest,
} from '@vmstack/shm';
import { VirtioIommuDevice } from '@vmstack/vmm';
import test from 'ava';
import { VMM_HOST_LOCK_SPECS, vfioContainerOver } from './helpers/vfio-host.js';

const profile = loadProfile(DEFAULT_PROFILE_PATH);
const PAGE = 4096;
const RAM_BYTES = 4 * 1024 * 1024;
const EP0 = 0x100;
const EP1 = 0x200;
const DOMAIN = 1;
const IOVA = 0x10_0000;

function rig() {
  const mem = attachGuestMemory(new SharedArrayBuffer(RAM_BYTES));
  const layout = virtqueueLayout(16, 0x1000);
  const driver = VirtqueueDriver.init(mem, layout);
  const locks = LockTable.attach(LockTable.allocate(VMM_HOST_LOCK_SPECS), 0);
  const { pgtable, container } = vfioContainerOver(locks, RAM_BYTES, 64, (iova, sizeBytes) => {
    for (const d of drives.values()) d.tlb.invalidate(iova, sizeBytes);
  });
  // each drive: its IOTLB over the container's page table, its context entry and fault log
  const drives = new Map(
    [EP0, EP1].map((ep) => {
      const tlb = new Iotlb(pgtable, profile);
      const context = new IommuContextEntry(IommuContextEntry.allocate());
      tlb.context = context;
      tlb.faultLog = new IommuFaultLog(IommuFaultLog.allocate(ep, 16));
      return [ep, { tlb, context }] as const;
    }),
  );
  const groups = new Map([...drives].map(([ep, d]) => [ep, { context: d.context, invalidateIotlb: () => d.tlb.invalidateAll() }] as const));
  const host = new HostVfio(container, new ModelClock('virtual'), null, groups);
  const clock = new ModelClock('virtual');
  const device = new VirtioIommuDevice(mem, layout, host, locks, clock, profile, { endpointIds: [EP0, EP1] });
  let kickNs = 0;
  const request = (type: number, write: (gpa: number) => void): number => {
    const gpa = 0x10000;
    write(gpa);
    const out = viommuGetWriteDescOffsetBytes(type);
    const inLen = requestSizeBytes(type) - out;
    driver.addBuf([{ gpa, lenBytes: out }], [{ gpa: gpa + out, lenBytes: inLen }], 1);
    driver.publish();
    kickNs += 1_000_000;
    device.virtio_iommu_handle_command(kickNs);
    driver.getBuf();
    return readTail(mem, gpa + out + inLen - 4);
  };
  const attach = (endpoint: number) => request(VIRTIO_IOMMU_T_ATTACH, (g) => writeAttachRequest(mem, g, { domain: DOMAIN, endpoint, flags: 0 }));
  const detach = (endpoint: number) => request(VIRTIO_IOMMU_T_DETACH, (g) => writeDetachRequest(mem, g, { domain: DOMAIN, endpoint }));
  const map = () =>
    request(VIRTIO_IOMMU_T_MAP, (g) =>
      writeMapRequest(mem, g, {
        domain: DOMAIN,
        virtStart: IOVA,
        virtEnd: IOVA + PAGE - 1,
        physStart: 0x20_0000,
        flags: VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_WRITE,
      }),
    );
  /** a DMA read of the mapped page by `ep`: the HPA, or a negative fault code */
  const dma = (ep: number) => drives.get(ep)!.tlb.translate(IOVA, false, new ModelClock('virtual'));
  return { attach, detach, map, dma, drives, pgtable };
}

test('DETACH from a domain that keeps another endpoint: the detached endpoint faults, the other still translates; ATTACH again restores it', (t) => {
  const s = rig();
  t.is(s.attach(EP0), VIRTIO_IOMMU_S_OK);
  t.is(s.attach(EP1), VIRTIO_IOMMU_S_OK);
  t.is(s.map(), VIRTIO_IOMMU_S_OK);
  t.is(s.dma(EP0), 0x20_0000, 'attached: EP0 translates (and caches the translation)');
  t.is(s.dma(EP1), 0x20_0000);
  t.is(s.detach(EP0), VIRTIO_IOMMU_S_OK);
  t.is(s.pgtable.mappedPages, 1, 'the mapping stays for EP1');
  t.true(s.dma(EP0) < 0, 'EP0 after DETACH: its DMA faults, cached translation or not');
  t.is(s.dma(EP1), 0x20_0000, 'EP1 keeps the domain');
  const f = s.drives.get(EP0)!.tlb.faultLog!.next();
  t.is(f?.reason, IOMMU_FAULT_REASON_NOT_PRESENT);
  t.is(f?.iova, IOVA);
  t.is(s.attach(EP0), VIRTIO_IOMMU_S_OK);
  t.is(s.dma(EP0), 0x20_0000, 'attached again: EP0 translates');
});

test('the last endpoint leaving takes the mappings along and leaves its group in the container (nothing left to reach)', (t) => {
  const s = rig();
  s.attach(EP0);
  s.map();
  t.is(s.detach(EP0), VIRTIO_IOMMU_S_OK);
  t.true(s.drives.get(EP0)!.context.present, 'no group moved');
  t.is(s.pgtable.mappedPages, 0);
  t.true(s.dma(EP0) < 0);
});
