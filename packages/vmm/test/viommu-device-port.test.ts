/**
 * The VMM's virtio-iommu backend against a fake VFIO container: the port
 * (VfioContainerPort, from shm) records every ioctl and answers with the
 * errno the test chooses, a fixed time later. The requests go through a real
 * split virtqueue in guest RAM. Checks what the device asks of VFIO for each
 * request, how it turns VFIO errors into virtio-iommu statuses, and that it
 * waits for the host's answer. (With a real container and host page table:
 * test/viommu-vfio.test.ts at the repository root.)
 */

import {
  DEFAULT_PROFILE_PATH,
  loadProfile,
  VIRTIO_IOMMU_MAP_F_MMIO,
  VIRTIO_IOMMU_MAP_F_READ,
  VIRTIO_IOMMU_MAP_F_WRITE,
  VIRTIO_IOMMU_S_DEVERR,
  VIRTIO_IOMMU_S_FAULT,
  VIRTIO_IOMMU_S_INVAL,
  VIRTIO_IOMMU_S_NOMEM,
  VIRTIO_IOMMU_S_OK,
  VIRTIO_IOMMU_T_ATTACH,
  VIRTIO_IOMMU_T_DETACH,
  VIRTIO_IOMMU_T_MAP,
  VIRTIO_IOMMU_T_UNMAP,
  writeAttachRequest,
  writeDetachRequest,
  writeMapRequest,
  writeUnmapRequest,
} from '@vmstack/shm';
import test from 'ava';
import { viommuRig } from './helpers/viommu-rig.js';

const PAGE = 4096;
const DOMAIN = 1;
const EP = 0x100;
const HOST_NS = 5_000;

const profile = loadProfile(DEFAULT_PROFILE_PATH);

function rig() {
  const { mem, device, vfio, request } = viommuRig({ endpointIds: [EP], hostNs: HOST_NS });
  const attach = () => request(VIRTIO_IOMMU_T_ATTACH, (g) => writeAttachRequest(mem, g, { domain: DOMAIN, endpoint: EP, flags: 0 }));
  const map = (virtStart: number, sizeBytes: number, physStart: number, flags: number) =>
    request(VIRTIO_IOMMU_T_MAP, (g) => writeMapRequest(mem, g, { domain: DOMAIN, virtStart, virtEnd: virtStart + sizeBytes - 1, physStart, flags }));
  const unmap = (virtStart: number, sizeBytes: number) =>
    request(VIRTIO_IOMMU_T_UNMAP, (g) => writeUnmapRequest(mem, g, { domain: DOMAIN, virtStart, virtEnd: virtStart + sizeBytes - 1 }));
  const detach = () => request(VIRTIO_IOMMU_T_DETACH, (g) => writeDetachRequest(mem, g, { domain: DOMAIN, endpoint: EP }));
  return { device, vfio, attach, map, unmap, detach };
}

test('MAP asks VFIO for exactly the mapping (virt_end inclusive, flags as permissions) and waits for the host', (t) => {
  const s = rig();
  t.deepEqual(s.attach().calls, [], 'ATTACH reaches no VFIO ioctl');
  const m = s.map(0x10_0000, 3 * PAGE, 0x20_0000, VIRTIO_IOMMU_MAP_F_WRITE);
  t.is(m.status, VIRTIO_IOMMU_S_OK);
  t.deepEqual(m.calls, [['map', { iova: 0x10_0000, vaddr: 0x20_0000, sizeBytes: 3 * PAGE, read: false, write: true }]]);
  t.is(m.elapsedNs, profile.vmmViommuRequestNs + profile.vfioIoctlSyscallNs + HOST_NS, "request + ioctl + the host's time");
  t.deepEqual(s.map(0xfe00_0000, PAGE, 0xfe00_0000, VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_MMIO).calls, [], 'MMIO: no ioctl');
});

test('UNMAP and DETACH: one UNMAP_DMA per VFIO mapping covered, none for MMIO', (t) => {
  const s = rig();
  s.attach();
  s.map(0x40_0000, PAGE, 0x10_0000, VIRTIO_IOMMU_MAP_F_READ);
  s.map(0x40_2000, 2 * PAGE, 0x20_0000, VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_WRITE);
  s.map(0x50_0000, PAGE, 0x30_0000, VIRTIO_IOMMU_MAP_F_READ);
  s.map(0xfe00_0000, PAGE, 0xfe00_0000, VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_MMIO);
  const u = s.unmap(0x40_0000, 0x1_0000);
  t.is(u.status, VIRTIO_IOMMU_S_OK);
  t.deepEqual(u.calls, [
    ['unmap', { iova: 0x40_0000, sizeBytes: PAGE }],
    ['unmap', { iova: 0x40_2000, sizeBytes: 2 * PAGE }],
  ]);
  const d = s.detach();
  t.is(d.status, VIRTIO_IOMMU_S_OK);
  t.deepEqual(d.calls, [['unmap', { iova: 0x50_0000, sizeBytes: PAGE }]], 'the last endpoint takes the VFIO mapping with it, not the MMIO one');
  t.is(s.device.mappingCount(), 0);
});

test('VFIO errors become virtio-iommu statuses, and a failed MAP is not recorded', (t) => {
  const s = rig();
  s.attach();
  for (const [errno, status] of [
    [-12, VIRTIO_IOMMU_S_NOMEM],
    [-17, VIRTIO_IOMMU_S_INVAL],
    [-22, VIRTIO_IOMMU_S_INVAL],
    [-14, VIRTIO_IOMMU_S_FAULT],
    [-28, VIRTIO_IOMMU_S_NOMEM],
    [-5, VIRTIO_IOMMU_S_DEVERR],
  ] as const) {
    s.vfio.mapErrno = errno;
    t.is(s.map(0x10_0000, PAGE, 0x10_0000, VIRTIO_IOMMU_MAP_F_READ).status, status, `errno ${errno}`);
  }
  t.is(s.device.mappingCount(), 0);
  t.is(s.device.counters.vfioMapDma, 6);
  t.is(s.device.counters.vfioNoResources, 2, '-ENOMEM and -ENOSPC');
});
