/**
 * The guest's virtio-iommu driver and the VMM's device meeting through the
 * configuration page, in one thread: feature negotiation, the
 * configuration the driver reads, PROBE before ATTACH with the RESV_MEM
 * (MSI) region the driver returns for the IOVA allocator to reserve, and
 * what the driver makes of a buffer returned unwritten. The device is
 * real; VFIO is a real container over a real host page table.
 */

import { IovaDomain, Profiler, VIOMMU_DRIVER_FEATURES, VIOMMU_REQUEST_LOCK, VIOMMU_REQUEST_SLOT_BYTES, ViommuDriver } from '@vmstack/guest-kernel';
import { HostVfio } from '@vmstack/host-vfio';
import {
  attachGuestMemory,
  DEFAULT_PROFILE_PATH,
  LockTable,
  loadProfile,
  ModelClock,
  readDeviceStatus,
  readNegotiatedFeatures,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_IOMMU_F_MAP_UNMAP,
  VIRTIO_IOMMU_F_MMIO,
  VIRTIO_IOMMU_F_PROBE,
  VIRTIO_IOMMU_RESV_MEM_T_MSI,
  viommuFeature,
  virtqueueLayout,
} from '@vmstack/shm';
import { MSI_IOVA_BASE, MSI_IOVA_LENGTH, VIOMMU_DEVICE_FEATURES_DEFAULT, type ViommuDeviceConfig, VirtioIommuDevice } from '@vmstack/vmm';
import test from 'ava';
import { VMM_HOST_LOCK_SPECS, vfioContainerOver } from './helpers/vfio-host.js';

const profile = loadProfile(DEFAULT_PROFILE_PATH);
const PAGE = 4096;
const RAM_BYTES = 8 * 1024 * 1024;
const VQ_GPA = 0x1_0000;
const EP = 0x100;
const DOMAIN = 1;

function rig(device: Partial<ViommuDeviceConfig> = {}) {
  const mem = attachGuestMemory(new SharedArrayBuffer(RAM_BYTES));
  const layout = virtqueueLayout(128, VQ_GPA);
  const requestAreaGpa = Math.ceil((VQ_GPA + layout.totalBytes) / PAGE) * PAGE;
  const slotWordGpa = Math.ceil((requestAreaGpa + 64 * VIOMMU_REQUEST_SLOT_BYTES) / PAGE) * PAGE;
  const configGpa = slotWordGpa + 64;
  const iovaH = IovaDomain.allocate({ startPfn: 1, limitPfn: 2 ** 36 - 1, cpus: 1, maxAllocations: 1024 });
  const locks = LockTable.attach(
    LockTable.allocate([{ name: VIOMMU_REQUEST_LOCK, kind: 'spinlock' }, ...VMM_HOST_LOCK_SPECS, ...IovaDomain.lockSpecs(iovaH)]),
    0,
  );
  const iovad = IovaDomain.attach(iovaH, 0, locks, profile);
  const { container } = vfioContainerOver(locks, RAM_BYTES, 64);
  const vmmClock = new ModelClock('virtual');
  const clock = new ModelClock('virtual');
  let dev: VirtioIommuDevice | null = null;
  const driver = new ViommuDriver(
    mem,
    layout,
    true,
    requestAreaGpa,
    slotWordGpa,
    locks,
    {
      kick: (nowNs) => {
        dev!.virtio_iommu_handle_command(nowNs);
        return vmmClock.nowNs();
      },
    },
    clock,
    profile,
    'v5.10',
    new Profiler(clock),
    VIOMMU_REQUEST_LOCK,
    configGpa,
  );
  dev = new VirtioIommuDevice(mem, layout, new HostVfio(container, new ModelClock('virtual')), locks, vmmClock, profile, {
    endpointIds: [EP],
    configGpa,
    ...device,
  });
  return { mem, driver, device: dev, iovad, container, configGpa };
}

test('probe: the driver accepts what it knows of the offer, sets FEATURES_OK and DRIVER_OK, and reads the configuration', (t) => {
  const s = rig();
  t.is(readNegotiatedFeatures(s.mem, s.configGpa), null, 'nothing negotiated before the probe');
  const p = s.driver.viommu_probe();
  t.is(p.features, VIOMMU_DEVICE_FEATURES_DEFAULT & VIOMMU_DRIVER_FEATURES);
  t.is(readNegotiatedFeatures(s.mem, s.configGpa), p.features, 'the device reads back what the driver accepted');
  const status = readDeviceStatus(s.mem, s.configGpa);
  t.true((status & VIRTIO_CONFIG_S_FEATURES_OK) !== 0 && (status & VIRTIO_CONFIG_S_DRIVER_OK) !== 0);
  t.deepEqual(p.aperture, { start: 0n, end: 2n ** 48n - 1n }, 'input_range is the domain aperture');
  t.is(p.pageSizeMask & 0xfffn, 0n);
  t.is(p.pageSizeMask & 0x1000n, 0x1000n, '4 KiB granularity');
  t.is(p.probeSizeBytes, 512);
  t.is(p.mapFlags, 7, 'F_MMIO negotiated: READ | WRITE | MMIO');
  t.is(s.driver.viommu_probe(), p, 'probing twice changes nothing');
});

test('probe: a device without F_MAP_UNMAP is refused; without F_PROBE the driver sends no PROBE; without F_MMIO no MMIO flag', (t) => {
  const noMap = rig({ features: VIOMMU_DEVICE_FEATURES_DEFAULT & ~viommuFeature(VIRTIO_IOMMU_F_MAP_UNMAP) });
  t.throws(() => noMap.driver.viommu_probe(), { message: /VIRTIO_IOMMU_F_MAP_UNMAP/ });
  const noProbe = rig({ features: VIOMMU_DEVICE_FEATURES_DEFAULT & ~viommuFeature(VIRTIO_IOMMU_F_PROBE) & ~viommuFeature(VIRTIO_IOMMU_F_MMIO) });
  const p = noProbe.driver.viommu_probe();
  t.is(p.probeSizeBytes, 0);
  t.is(p.mapFlags, 3);
  t.deepEqual(noProbe.driver.viommu_probe_endpoint(EP), []);
  t.is(noProbe.device.counters.probe, 0, 'no PROBE reached the device');
});

test('PROBE before ATTACH: the MSI window comes back as RESV_MEM and the IOVA allocator then never hands it out', (t) => {
  const s = rig({ inputRange: { start: 0n, end: 2n ** 32n - 1n } });
  s.driver.viommu_probe();
  const regions = s.driver.viommu_probe_endpoint(EP);
  t.deepEqual(regions, [{ subtype: VIRTIO_IOMMU_RESV_MEM_T_MSI, start: MSI_IOVA_BASE, end: MSI_IOVA_BASE + MSI_IOVA_LENGTH - 1 }]);
  t.is(s.device.counters.attach, 0, 'the endpoint is probed before it is attached');
  for (const r of regions) t.true(s.iovad.reserve_iova(r.start / PAGE, Math.floor(r.end / PAGE)));
  s.driver.viommu_attach_dev(DOMAIN, EP);
  // allocate everything just below 4 GiB, top down, past the window: no IOVA falls inside it
  const limitPfn = 2 ** 20 - 1;
  const clock = new ModelClock('virtual');
  const got: number[] = [];
  for (let i = 0; i < 300; i++) got.push(s.iovad.alloc_iova_fast(16, limitPfn, clock));
  const msiFirst = MSI_IOVA_BASE / PAGE;
  const msiLast = (MSI_IOVA_BASE + MSI_IOVA_LENGTH) / PAGE - 1;
  const bad = got.filter((pfn) => !(pfn > 0 && (pfn + 15 < msiFirst || pfn > msiLast)));
  t.deepEqual(bad, [], `no allocation overlaps the MSI window [${msiFirst}, ${msiLast}]; got ${got.slice(0, 3)}…${got.slice(-3)}`);
  t.true(
    got.some((pfn) => pfn < msiFirst),
    'the allocator went past the window (the test reached it)',
  );
  // and the device refuses a MAP there all the same
  t.throws(() => s.driver.viommu_map_pages(DOMAIN, MSI_IOVA_BASE as never, 0x20_0000 as never, PAGE, true, true), { message: /VIRTIO_IOMMU_S_INVAL/ });
});

test('a domain outside domain_range is refused by the driver before any request', (t) => {
  const s = rig({ domainRange: { start: 1, end: 7 } });
  s.driver.viommu_probe();
  t.throws(() => s.driver.viommu_attach_dev(8, EP), { message: /domain_range/ });
  t.is(s.device.counters.attach, 0);
  s.driver.viommu_attach_dev(7, EP);
  t.is(s.device.counters.attach, 1);
});
