/**
 * The device requirements of the virtio-iommu spec (virtio 1.2, 5.13.6) that
 * the backend checks before a request takes effect or reaches VFIO: one row
 * per requirement, its wording paraphrased from the spec's device-requirements
 * text (check the spec before quoting it elsewhere), with the request, the status it must answer, and
 * what VFIO and the mapping tree must (not) see. The requests go through a
 * real split virtqueue in guest RAM against a fake VFIO container that records
 * every ioctl.
 */

import {
  VIRTIO_IOMMU_MAP_F_MMIO,
  VIRTIO_IOMMU_MAP_F_READ,
  VIRTIO_IOMMU_MAP_F_WRITE,
  VIRTIO_IOMMU_S_INVAL,
  VIRTIO_IOMMU_S_NOENT,
  VIRTIO_IOMMU_S_OK,
  VIRTIO_IOMMU_S_RANGE,
  VIRTIO_IOMMU_T_ATTACH,
  VIRTIO_IOMMU_T_DETACH,
  VIRTIO_IOMMU_T_MAP,
  VIRTIO_IOMMU_T_PROBE,
  writeAttachRequest,
  writeDetachRequest,
  writeMapRequest,
  writeProbeRequest,
} from '@vmstack/shm';
import test from 'ava';
import { viommuRig } from './helpers/viommu-rig.js';

/** the fake host answers each ioctl this much later */
const HOST_NS = 1_000;
const DOMAIN = 1;
/** the configured endpoints: PCI 01:00.0 and 02:00.0 */
const EP = 0x100;
const EP2 = 0x200;
/** no device behind the virtio-iommu has this requester id */
const NO_EP = 0x300;
const RW = VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_WRITE;

function rig(pageSizeMask?: bigint) {
  const { mem, device, vfio, request: send } = viommuRig({ endpointIds: [EP, EP2], pageSizeMask, hostNs: HOST_NS });
  const request = (type: number, write: (gpa: number) => void) => send(type, write).status;
  const ops = {
    attach: (endpoint: number, domain = DOMAIN) => request(VIRTIO_IOMMU_T_ATTACH, (g) => writeAttachRequest(mem, g, { domain, endpoint, flags: 0 })),
    detach: (endpoint: number, domain = DOMAIN) => request(VIRTIO_IOMMU_T_DETACH, (g) => writeDetachRequest(mem, g, { domain, endpoint })),
    /** a DETACH with a reserved byte set */
    detachReserved: (endpoint: number, domain = DOMAIN) =>
      request(VIRTIO_IOMMU_T_DETACH, (g) => {
        writeDetachRequest(mem, g, { domain, endpoint });
        mem.u8[g + 12] = 1;
      }),
    probe: (endpoint: number) => request(VIRTIO_IOMMU_T_PROBE, (g) => writeProbeRequest(mem, g, { endpoint })),
    map: (virtStart: number, virtEnd: number, physStart: number, flags = RW, domain = DOMAIN) =>
      request(VIRTIO_IOMMU_T_MAP, (g) => writeMapRequest(mem, g, { domain, virtStart, virtEnd, physStart, flags })),
  };
  return { device, vfio, ...ops };
}

type Rig = ReturnType<typeof rig>;

interface Row {
  /** the spec's device requirement this row checks */
  spec: string;
  /** requests that bring the device to the state the checked request meets */
  setup?: (s: Rig) => void;
  request: (s: Rig) => number;
  status: number;
  /** VFIO ioctls the checked request makes */
  vfioCalls: number;
  /** mappings held afterwards */
  mappings: number;
  pageSizeMask?: bigint;
}

const MAP_RANGE =
  'MAP: "If virt_start, phys_start or (virt_end + 1) is not aligned on the page granularity, the device SHOULD set the request status to VIRTIO_IOMMU_S_RANGE and SHOULD NOT create the mapping."';
const ATTACH_NOENT =
  'ATTACH: "If the endpoint identified by endpoint doesn\'t exist, the device MUST reject the request and set status to VIRTIO_IOMMU_S_NOENT."';
const DETACH_NOENT =
  'DETACH: "If the endpoint identified by endpoint doesn\'t exist, then the device MUST reject the request and set status to VIRTIO_IOMMU_S_NOENT."';
const DETACH_INVAL =
  'DETACH: "If the domain identified by domain doesn\'t exist, or if the endpoint identified by endpoint isn\'t attached to this domain, then the device MAY set the request status to VIRTIO_IOMMU_S_INVAL."';
const DETACH_RESERVED =
  'DETACH: "If the reserved field of a DETACH request is not zero, the device MUST reject the request and set status to VIRTIO_IOMMU_S_INVAL."';
const PROBE_NOENT =
  'PROBE: "If the endpoint identified by endpoint doesn\'t exist, then the device MUST reject the request and set status to VIRTIO_IOMMU_S_NOENT."';

const attached = (s: Rig) => {
  s.attach(EP);
};

const rows: [string, Row][] = [
  [
    'MAP, virt_start off the page',
    { spec: MAP_RANGE, setup: attached, request: (s) => s.map(0x10_0800, 0x10_17ff, 0x20_0000), status: VIRTIO_IOMMU_S_RANGE, vfioCalls: 0, mappings: 0 },
  ],
  [
    'MAP, phys_start off the page',
    { spec: MAP_RANGE, setup: attached, request: (s) => s.map(0x10_0000, 0x10_0fff, 0x20_0200), status: VIRTIO_IOMMU_S_RANGE, vfioCalls: 0, mappings: 0 },
  ],
  [
    'MAP, virt_end + 1 off the page',
    { spec: MAP_RANGE, setup: attached, request: (s) => s.map(0x10_0000, 0x10_0ffe, 0x20_0000), status: VIRTIO_IOMMU_S_RANGE, vfioCalls: 0, mappings: 0 },
  ],
  [
    'MAP, one byte',
    { spec: MAP_RANGE, setup: attached, request: (s) => s.map(0x10_0000, 0x10_0000, 0x20_0000), status: VIRTIO_IOMMU_S_RANGE, vfioCalls: 0, mappings: 0 },
  ],
  [
    'MAP, sub-page MMIO',
    {
      spec: MAP_RANGE,
      setup: attached,
      request: (s) => s.map(0xfe00_0000, 0xfe00_00ff, 0xfe00_0000, VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_MMIO),
      status: VIRTIO_IOMMU_S_RANGE,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
  [
    'MAP, page-aligned',
    { spec: MAP_RANGE, setup: attached, request: (s) => s.map(0x10_0000, 0x10_2fff, 0x20_0000), status: VIRTIO_IOMMU_S_OK, vfioCalls: 1, mappings: 1 },
  ],
  [
    'MAP, 4 KiB-aligned with a 64 KiB granularity',
    {
      spec: MAP_RANGE,
      pageSizeMask: ~0xffffn & 0xffff_ffff_ffff_ffffn,
      setup: attached,
      request: (s) => s.map(0x10_1000, 0x10_1fff, 0x20_0000),
      status: VIRTIO_IOMMU_S_RANGE,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
  [
    'MAP, 64 KiB-aligned with a 64 KiB granularity',
    {
      spec: MAP_RANGE,
      pageSizeMask: ~0xffffn & 0xffff_ffff_ffff_ffffn,
      setup: attached,
      request: (s) => s.map(0x11_0000, 0x11_ffff, 0x20_0000),
      status: VIRTIO_IOMMU_S_OK,
      vfioCalls: 1,
      mappings: 1,
    },
  ],
  [
    'ATTACH of an endpoint the device does not have',
    { spec: ATTACH_NOENT, request: (s) => s.attach(NO_EP), status: VIRTIO_IOMMU_S_NOENT, vfioCalls: 0, mappings: 0 },
  ],
  [
    'ATTACH of a missing endpoint creates no domain',
    {
      spec: ATTACH_NOENT,
      request: (s) => {
        s.attach(NO_EP);
        return s.map(0x10_0000, 0x10_0fff, 0x20_0000);
      },
      status: VIRTIO_IOMMU_S_NOENT,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
  ['ATTACH of a configured endpoint', { spec: ATTACH_NOENT, request: (s) => s.attach(EP2), status: VIRTIO_IOMMU_S_OK, vfioCalls: 0, mappings: 0 }],
  [
    'DETACH of an endpoint the device does not have',
    { spec: DETACH_NOENT, setup: attached, request: (s) => s.detach(NO_EP), status: VIRTIO_IOMMU_S_NOENT, vfioCalls: 0, mappings: 0 },
  ],
  [
    'DETACH of a missing endpoint from a live domain leaves its mappings',
    {
      spec: DETACH_NOENT,
      setup: (s) => {
        s.attach(EP);
        s.map(0x10_0000, 0x10_0fff, 0x20_0000);
      },
      request: (s) => s.detach(NO_EP),
      status: VIRTIO_IOMMU_S_NOENT,
      vfioCalls: 0,
      mappings: 1,
    },
  ],
  [
    'DETACH of an endpoint attached nowhere',
    { spec: DETACH_INVAL, setup: attached, request: (s) => s.detach(EP2), status: VIRTIO_IOMMU_S_INVAL, vfioCalls: 0, mappings: 0 },
  ],
  [
    'DETACH from a domain the endpoint is not attached to',
    {
      spec: DETACH_INVAL,
      setup: (s) => {
        s.attach(EP);
        s.attach(EP2, 2);
        s.map(0x10_0000, 0x10_0fff, 0x20_0000);
      },
      request: (s) => s.detach(EP2, DOMAIN),
      status: VIRTIO_IOMMU_S_INVAL,
      vfioCalls: 0,
      mappings: 1,
    },
  ],
  [
    'DETACH from a domain that does not exist',
    { spec: DETACH_INVAL, setup: attached, request: (s) => s.detach(EP, 7), status: VIRTIO_IOMMU_S_INVAL, vfioCalls: 0, mappings: 0 },
  ],
  [
    'DETACH with a reserved byte set',
    {
      spec: DETACH_RESERVED,
      setup: (s) => {
        s.attach(EP);
        s.map(0x10_0000, 0x10_0fff, 0x20_0000);
      },
      request: (s) => s.detachReserved(EP),
      status: VIRTIO_IOMMU_S_INVAL,
      vfioCalls: 0,
      mappings: 1,
    },
  ],
  [
    'PROBE of an endpoint the device does not have',
    { spec: PROBE_NOENT, request: (s) => s.probe(NO_EP), status: VIRTIO_IOMMU_S_NOENT, vfioCalls: 0, mappings: 0 },
  ],
  ['PROBE of a configured endpoint', { spec: PROBE_NOENT, request: (s) => s.probe(EP), status: VIRTIO_IOMMU_S_OK, vfioCalls: 0, mappings: 0 }],
];

for (const [name, row] of rows) {
  test(`${name} → status ${row.status}`, (t) => {
    const s = rig(row.pageSizeMask);
    row.setup?.(s);
    const before = s.vfio.calls.length;
    t.is(row.request(s), row.status, row.spec);
    t.is(s.vfio.calls.length - before, row.vfioCalls, `VFIO ioctls (${row.spec})`);
    t.is(s.device.mappingCount(), row.mappings, `mappings held (${row.spec})`);
  });
}
