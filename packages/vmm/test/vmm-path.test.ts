/**
 * The VMM's paths (vmm-path.ts): what each costs the device and how its UNMAP
 * reaches VFIO. crosvm as it ran in 2021 passes the seccomp filter on the
 * eventfd read after the wake-up and on every VFIO ioctl, and hands VFIO an
 * UNMAP's whole range in one ioctl; without the jail the filter goes; QEMU's
 * notifier calls VFIO once per covered mapping.
 */

import {
  DEFAULT_PROFILE_PATH,
  loadProfile,
  VIRTIO_IOMMU_MAP_F_READ,
  VIRTIO_IOMMU_S_OK,
  VIRTIO_IOMMU_T_ATTACH,
  VIRTIO_IOMMU_T_MAP,
  VIRTIO_IOMMU_T_UNMAP,
  writeAttachRequest,
  writeMapRequest,
  writeUnmapRequest,
} from '@vmstack/shm';
import test from 'ava';
import { VMM_PATHS, type VmmPath, vmmPathCosts } from '../src/index.js';
import { viommuRig } from './helpers/viommu-rig.js';

const PAGE = 4096;
const DOMAIN = 1;
const EP = 0x100;
const HOST_NS = 2_000;
const profile = loadProfile(DEFAULT_PROFILE_PATH);

function rigOn(path: VmmPath) {
  const c = vmmPathCosts(profile, path);
  const { mem, request } = viommuRig({ endpointIds: [EP], hostNs: HOST_NS, costs: c.costs, vfioUnmap: c.vfioUnmap });
  request(VIRTIO_IOMMU_T_ATTACH, (g) => writeAttachRequest(mem, g, { domain: DOMAIN, endpoint: EP, flags: 0 }));
  const map = (virtStart: number) =>
    request(VIRTIO_IOMMU_T_MAP, (g) =>
      writeMapRequest(mem, g, { domain: DOMAIN, virtStart, virtEnd: virtStart + PAGE - 1, physStart: virtStart, flags: VIRTIO_IOMMU_MAP_F_READ }),
    );
  const unmap = (virtStart: number, sizeBytes: number) =>
    request(VIRTIO_IOMMU_T_UNMAP, (g) => writeUnmapRequest(mem, g, { domain: DOMAIN, virtStart, virtEnd: virtStart + sizeBytes - 1 }));
  return { costs: c, map, unmap };
}

test('crosvm-2021: the filter on the wake-up read and on each ioctl; no-sandbox and qemu-notifier pass none', (t) => {
  t.deepEqual([...VMM_PATHS], ['crosvm-2021', 'no-sandbox', 'qemu-notifier']);
  const jailed = vmmPathCosts(profile, 'crosvm-2021');
  t.is(jailed.kickWakeupNs, profile.hostThreadWakeupNs + profile.seccompFilterNs);
  t.is(jailed.costs.vfioIoctlSyscallNs, profile.vfioIoctlSyscallNs + profile.seccompFilterNs);
  t.is(jailed.costs.vmmViommuRequestNs, profile.vmmViommuRequestNs);
  for (const path of ['no-sandbox', 'qemu-notifier'] as const) {
    const c = vmmPathCosts(profile, path);
    t.is(c.kickWakeupNs, profile.hostThreadWakeupNs, `${path}: the wake-up alone`);
    t.is(c.costs.vfioIoctlSyscallNs, profile.vfioIoctlSyscallNs, `${path}: the ioctl alone`);
  }
  const s = rigOn('crosvm-2021');
  const m = s.map(0x10_0000);
  t.is(m.status, VIRTIO_IOMMU_S_OK);
  t.is(
    m.elapsedNs,
    profile.vmmViommuRequestNs + profile.vfioIoctlSyscallNs + profile.seccompFilterNs + HOST_NS,
    'a jailed MAP: request + filtered ioctl + host',
  );
});

test("an UNMAP covering three MAPs: one VFIO unmap of the whole range on crosvm's paths, three with QEMU's notifier", (t) => {
  const outcomes = new Map<VmmPath, { calls: unknown[]; elapsedNs: number }>();
  for (const path of VMM_PATHS) {
    const s = rigOn(path);
    for (const a of [0x40_0000, 0x40_1000, 0x40_3000]) t.is(s.map(a).status, VIRTIO_IOMMU_S_OK);
    const u = s.unmap(0x40_0000, 0x4000);
    t.is(u.status, VIRTIO_IOMMU_S_OK, `${path}: UNMAP ok`);
    outcomes.set(path, u);
  }
  t.deepEqual(outcomes.get('crosvm-2021')?.calls, [['unmap', { iova: 0x40_0000, sizeBytes: 0x4000 }]]);
  t.deepEqual(outcomes.get('no-sandbox')?.calls, [['unmap', { iova: 0x40_0000, sizeBytes: 0x4000 }]]);
  t.deepEqual(outcomes.get('qemu-notifier')?.calls, [
    ['unmap', { iova: 0x40_0000, sizeBytes: PAGE }],
    ['unmap', { iova: 0x40_1000, sizeBytes: PAGE }],
    ['unmap', { iova: 0x40_3000, sizeBytes: PAGE }],
  ]);
  const ioctlNs = profile.vfioIoctlSyscallNs;
  t.is(outcomes.get('no-sandbox')?.elapsedNs, profile.vmmViommuRequestNs + ioctlNs + HOST_NS);
  t.is(outcomes.get('qemu-notifier')?.elapsedNs, profile.vmmViommuRequestNs + 3 * (ioctlNs + HOST_NS));
});
