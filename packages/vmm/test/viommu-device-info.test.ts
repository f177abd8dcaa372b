/**
 * The device's configuration from the host's VFIO_IOMMU_GET_INFO
 * (`vfio_apply_iommu_info`, at start-up, as QEMU's vfio_get_iommu_info and
 * virtio_iommu_set_page_size_mask): one table, each row a host answer, the
 * configuration the driver then reads and what a MAP of one 4 KiB page gets.
 */

import {
  readViommuConfig,
  VIRTIO_IOMMU_F_MAP_UNMAP,
  VIRTIO_IOMMU_MAP_F_READ,
  VIRTIO_IOMMU_S_OK,
  VIRTIO_IOMMU_S_RANGE,
  VIRTIO_IOMMU_T_ATTACH,
  VIRTIO_IOMMU_T_MAP,
  viommuFeature,
  writeAttachRequest,
  writeDriverFeatures,
  writeMapRequest,
} from '@vmstack/shm';
import test from 'ava';
import { VIOMMU_INPUT_RANGE_DEFAULT, VIOMMU_PAGE_SIZE_MASK_DEFAULT } from '../src/index.js';
import { CONFIG_GPA, viommuRig } from './helpers/viommu-rig.js';

const EP = 0x100;
const K4 = 0x1000n;
const M2 = 0x20_0000n;
const G1 = 0x4000_0000n;

interface Row {
  host: string;
  iovaPgsizes: bigint;
  iovaRanges: { start: number; end: number } | null;
  pageSizeMask: bigint;
  inputRange: { start: bigint; end: bigint };
  /** the status of a MAP of [0x10_0000, +4 KiB) */
  map4k: number;
}

const ROWS: Row[] = [
  {
    host: 'the default host (4 KiB, 2 MiB, 1 GiB pages; 48-bit aperture minus the MSI window): 4 KiB granule and the 48-bit range, as before',
    iovaPgsizes: K4 | M2 | G1,
    iovaRanges: { start: 0, end: 2 ** 48 - 1 },
    pageSizeMask: K4 | M2 | G1,
    inputRange: VIOMMU_INPUT_RANGE_DEFAULT,
    map4k: VIRTIO_IOMMU_S_OK,
  },
  {
    host: 'a host mapping 2 MiB pages only: the granule becomes 2 MiB, a 4 KiB MAP is off it (RANGE)',
    iovaPgsizes: M2 | G1,
    iovaRanges: null,
    pageSizeMask: M2 | G1,
    inputRange: VIOMMU_INPUT_RANGE_DEFAULT,
    map4k: VIRTIO_IOMMU_S_RANGE,
  },
  {
    host: 'a host whose IOVA ranges start at 1 GiB: input_range starts there, a MAP below it is outside (RANGE)',
    iovaPgsizes: K4,
    iovaRanges: { start: 2 ** 30, end: 2 ** 39 - 1 },
    pageSizeMask: K4,
    inputRange: { start: 2n ** 30n, end: 2n ** 39n - 1n },
    map4k: VIRTIO_IOMMU_S_RANGE,
  },
  {
    host: 'no answer (iova_pgsizes 0, no IOVA_RANGE capability): the defaults stay',
    iovaPgsizes: 0n,
    iovaRanges: null,
    pageSizeMask: VIOMMU_PAGE_SIZE_MASK_DEFAULT,
    inputRange: VIOMMU_INPUT_RANGE_DEFAULT,
    map4k: VIRTIO_IOMMU_S_OK,
  },
];

for (const row of ROWS) {
  test(`GET_INFO: ${row.host}`, (t) => {
    const r = viommuRig({ endpointIds: [EP], hostNs: 100, driverFeatures: viommuFeature(VIRTIO_IOMMU_F_MAP_UNMAP) });
    r.device.vfio_apply_iommu_info({ iovaPgsizes: row.iovaPgsizes, iovaRanges: row.iovaRanges });
    // the driver negotiates after the VMM has set the device up
    writeDriverFeatures(r.mem, CONFIG_GPA, viommuFeature(VIRTIO_IOMMU_F_MAP_UNMAP));
    t.is(r.device.config().pageSizeMask, row.pageSizeMask);
    t.deepEqual(r.device.config().inputRange, row.inputRange);
    const cfg = readViommuConfig(r.mem, CONFIG_GPA);
    t.is(cfg.pageSizeMask, row.pageSizeMask, 'the configuration page says the same');
    t.deepEqual(cfg.inputRange, row.inputRange);
    t.is(r.request(VIRTIO_IOMMU_T_ATTACH, (g) => writeAttachRequest(r.mem, g, { domain: 1, endpoint: EP, flags: 0 })).status, VIRTIO_IOMMU_S_OK);
    const map = r.request(VIRTIO_IOMMU_T_MAP, (g) =>
      writeMapRequest(r.mem, g, { domain: 1, virtStart: 0x10_0000, virtEnd: 0x10_0fff, physStart: 0x10_0000, flags: VIRTIO_IOMMU_MAP_F_READ }),
    );
    t.is(map.status, row.map4k);
  });
}

test('GET_INFO: a host with no page size in common with page_size_mask is refused (QEMU refuses the device)', (t) => {
  const r = viommuRig({ endpointIds: [EP], hostNs: 100, pageSizeMask: K4 });
  t.throws(() => r.device.vfio_apply_iommu_info({ iovaPgsizes: M2, iovaRanges: null }), { message: /no page size of the host/ });
});
