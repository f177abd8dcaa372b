/**
 * The virtio-iommu device requirements (virtio spec, "Device Types / IOMMU
 * Device", the devicenormative sections of the OASIS virtio-spec source
 * virtio-iommu.tex), checked request type by request type: one table per
 * type, each row citing the requirement it checks, the request built byte
 * by byte from the spec's layout, the status (or used length) it must get,
 * the VFIO ioctls it may make and the mappings held afterwards. Requests
 * go through a real split virtqueue in guest RAM against a fake VFIO
 * container that records every ioctl.
 */

import {
  readProbeProperties,
  readViommuConfig,
  VIRTIO_IOMMU_ATTACH_F_BYPASS,
  VIRTIO_IOMMU_F_BYPASS_CONFIG,
  VIRTIO_IOMMU_F_DOMAIN_RANGE,
  VIRTIO_IOMMU_F_INPUT_RANGE,
  VIRTIO_IOMMU_F_MAP_UNMAP,
  VIRTIO_IOMMU_F_MMIO,
  VIRTIO_IOMMU_F_PROBE,
  VIRTIO_IOMMU_MAP_F_MMIO,
  VIRTIO_IOMMU_MAP_F_READ,
  VIRTIO_IOMMU_MAP_F_WRITE,
  VIRTIO_IOMMU_PROBE_FIXED_BYTES,
  VIRTIO_IOMMU_S_DEVERR,
  VIRTIO_IOMMU_S_FAULT,
  VIRTIO_IOMMU_S_INVAL,
  VIRTIO_IOMMU_S_NOENT,
  VIRTIO_IOMMU_S_NOMEM,
  VIRTIO_IOMMU_S_OK,
  VIRTIO_IOMMU_S_RANGE,
  VIRTIO_IOMMU_S_UNSUPP,
  VIRTIO_IOMMU_T_ATTACH,
  VIRTIO_IOMMU_T_DETACH,
  VIRTIO_IOMMU_T_MAP,
  VIRTIO_IOMMU_T_PROBE,
  VIRTIO_IOMMU_T_UNMAP,
  viommuFeature,
  writeAttachRequest,
  writeDetachRequest,
  writeMapRequest,
  writeProbeRequest,
  writeUnmapRequest,
} from '@vmstack/shm';
import test from 'ava';
import { MSI_IOVA_BASE, VIOMMU_DEVICE_FEATURES_DEFAULT } from '../src/index.js';
import { CONFIG_GPA, type ViommuRigOptions, viommuRig } from './helpers/viommu-rig.js';

/** the fake host answers each ioctl this much later */
const HOST_NS = 1_000;
const DOMAIN = 1;
/** the configured endpoints: PCI 01:00.0 and 02:00.0 */
const EP = 0x100;
const EP2 = 0x200;
/** no device behind the virtio-iommu has this requester id */
const NO_EP = 0x300;
const RW = VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_WRITE;
const PAGE = 4096;
const ALL = VIOMMU_DEVICE_FEATURES_DEFAULT;
const without = (bit: number) => ALL & ~viommuFeature(bit);

function rig(o: Partial<ViommuRigOptions> = {}) {
  const r = viommuRig({ endpointIds: [EP, EP2], hostNs: HOST_NS, ...o });
  const { mem } = r;
  const send = (type: number, write: (gpa: number) => void) => r.request(type, write);
  const ops = {
    attach: (endpoint: number, domain = DOMAIN, flags = 0, reserved = 0) =>
      send(VIRTIO_IOMMU_T_ATTACH, (g) => {
        writeAttachRequest(mem, g, { domain, endpoint, flags });
        mem.u8[g + 16] = reserved;
      }),
    detach: (endpoint: number, domain = DOMAIN, reserved = 0) =>
      send(VIRTIO_IOMMU_T_DETACH, (g) => {
        writeDetachRequest(mem, g, { domain, endpoint });
        mem.u8[g + 12] = reserved;
      }),
    map: (virtStart: number, virtEnd: number, physStart: number, flags = RW, domain = DOMAIN) =>
      send(VIRTIO_IOMMU_T_MAP, (g) => writeMapRequest(mem, g, { domain, virtStart, virtEnd, physStart, flags })),
    /** a MAP with exact u64 fields (any value up to 2^64 - 1) */
    map64: (virtStart: bigint, virtEnd: bigint, physStart: bigint, flags = RW, domain = DOMAIN) =>
      send(VIRTIO_IOMMU_T_MAP, (g) => {
        writeMapRequest(mem, g, { domain, virtStart: 0, virtEnd: 0, physStart: 0, flags });
        mem.dv.setBigUint64(g + 8, virtStart, true);
        mem.dv.setBigUint64(g + 16, virtEnd, true);
        mem.dv.setBigUint64(g + 24, physStart, true);
      }),
    unmap: (virtStart: number, virtEnd: number, domain = DOMAIN, reserved = 0) =>
      send(VIRTIO_IOMMU_T_UNMAP, (g) => {
        writeUnmapRequest(mem, g, { domain, virtStart, virtEnd });
        mem.u8[g + 24] = reserved;
      }),
    unmap64: (virtStart: bigint, virtEnd: bigint, domain = DOMAIN) =>
      send(VIRTIO_IOMMU_T_UNMAP, (g) => {
        writeUnmapRequest(mem, g, { domain, virtStart: 0, virtEnd: 0 });
        mem.dv.setBigUint64(g + 8, virtStart, true);
        mem.dv.setBigUint64(g + 16, virtEnd, true);
      }),
    probe: (endpoint: number, reservedByte = 0) =>
      send(VIRTIO_IOMMU_T_PROBE, (g) => {
        writeProbeRequest(mem, g, { endpoint }, o.probeSizeBytes);
        mem.u8[g + 8] = reservedByte;
      }),
    raw: (type: number) => send(type, (g) => mem.u8.fill(0, g, g + 12).fill(type, g, g + 1)),
  };
  return { ...r, ...ops };
}

type Rig = ReturnType<typeof rig>;

interface Row {
  /** the requirement, quoted from the spec's device requirements (or its text where it states a device behaviour) */
  spec: string;
  /** the rig's options (offered / negotiated features, probe size ...) */
  opts?: Partial<ViommuRigOptions>;
  /** requests that bring the device to the state the checked request meets */
  setup?: (s: Rig) => void;
  request: (s: Rig) => { status: number; usedBytes: number };
  /** the status; null: the buffer must come back unwritten (used length 0) */
  status: number | null;
  /** VFIO ioctls the checked request makes */
  vfioCalls: number;
  /** mappings held afterwards */
  mappings: number;
}

function runTable(kind: string, rows: [string, Row][]): void {
  for (const [name, row] of rows) {
    test(`${kind}: ${name} → ${row.status === null ? 'used length 0' : `status ${row.status}`}`, (t) => {
      const s = rig(row.opts);
      row.setup?.(s);
      const before = s.vfio.calls.length;
      const r = row.request(s);
      if (row.status === null) t.is(r.usedBytes, 0, row.spec);
      else {
        t.is(r.status, row.status, row.spec);
        t.true(r.usedBytes >= 4, 'the tail was written');
      }
      t.is(s.vfio.calls.length - before, row.vfioCalls, `VFIO ioctls (${row.spec})`);
      t.is(s.device.mappingCount(), row.mappings, `mappings held (${row.spec})`);
    });
  }
}

const attached = (s: Rig) => {
  s.attach(EP);
};
const mapped = (s: Rig) => {
  s.attach(EP);
  s.map(0x10_0000, 0x10_3fff, 0x2_0000);
};

// ---- ATTACH ---------------------------------------------------------------

const ATTACH_RESERVED =
  'ATTACH: "If the reserved field of an ATTACH request is not zero, the device MUST reject the request and set status to VIRTIO_IOMMU_S_INVAL."';
const ATTACH_FLAGS = 'ATTACH: "If the device does not recognize a flags bit, it MUST reject the request and set status to VIRTIO_IOMMU_S_INVAL."';
const ATTACH_NOENT =
  'ATTACH: "If the endpoint identified by endpoint doesn\'t exist, the device MUST reject the request and set status to VIRTIO_IOMMU_S_NOENT."';
const ATTACH_SHARE =
  'ATTACH: "If another endpoint is already attached to the domain identified by domain, then the device MAY attach the endpoint identified by endpoint to the domain."';
const ATTACH_BYPASS_MISMATCH =
  'ATTACH: "If the domain already exists and the VIRTIO_IOMMU_ATTACH_F_BYPASS flag is not consistent with that domain, the device SHOULD reject the request and set status to VIRTIO_IOMMU_S_INVAL."';
const ATTACH_MOVE =
  'ATTACH: "If the endpoint identified by endpoint is already attached to another domain, then the device SHOULD first detach it from that domain and attach it to the one identified by domain."';
const ATTACH_BYPASS =
  'ATTACH: "the driver can set the VIRTIO_IOMMU_ATTACH_F_BYPASS flag to create a bypass domain. Endpoints attached to this domain are in bypass mode."';
const DOMAIN_RANGE = 'domain_range: "If the VIRTIO_IOMMU_F_DOMAIN_RANGE feature is negotiated, domain_range describes the values supported in a domain field."';

runTable('ATTACH', [
  ['a configured endpoint', { spec: ATTACH_NOENT, request: (s) => s.attach(EP), status: VIRTIO_IOMMU_S_OK, vfioCalls: 0, mappings: 0 }],
  ['an endpoint the device does not have', { spec: ATTACH_NOENT, request: (s) => s.attach(NO_EP), status: VIRTIO_IOMMU_S_NOENT, vfioCalls: 0, mappings: 0 }],
  [
    'a missing endpoint creates no domain (a MAP then finds none)',
    {
      spec: ATTACH_NOENT,
      setup: (s) => s.attach(NO_EP),
      request: (s) => s.map(0x10_0000, 0x10_0fff, 0x2_0000),
      status: VIRTIO_IOMMU_S_NOENT,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
  ['a reserved byte set', { spec: ATTACH_RESERVED, request: (s) => s.attach(EP, DOMAIN, 0, 1), status: VIRTIO_IOMMU_S_INVAL, vfioCalls: 0, mappings: 0 }],
  ['an unknown flag (bit 1)', { spec: ATTACH_FLAGS, request: (s) => s.attach(EP, DOMAIN, 2), status: VIRTIO_IOMMU_S_INVAL, vfioCalls: 0, mappings: 0 }],
  [
    'the bypass flag without F_BYPASS_CONFIG negotiated',
    {
      spec: ATTACH_FLAGS,
      opts: { driverFeatures: without(VIRTIO_IOMMU_F_BYPASS_CONFIG) },
      request: (s) => s.attach(EP, DOMAIN, VIRTIO_IOMMU_ATTACH_F_BYPASS),
      status: VIRTIO_IOMMU_S_INVAL,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
  [
    'a bypass domain maps guest RAM one to one through VFIO',
    { spec: ATTACH_BYPASS, request: (s) => s.attach(EP, 5, VIRTIO_IOMMU_ATTACH_F_BYPASS), status: VIRTIO_IOMMU_S_OK, vfioCalls: 1, mappings: 0 },
  ],
  [
    'a second endpoint joins a domain',
    { spec: ATTACH_SHARE, setup: mapped, request: (s) => s.attach(EP2), status: VIRTIO_IOMMU_S_OK, vfioCalls: 0, mappings: 1 },
  ],
  [
    'the bypass flag on a translated domain',
    {
      spec: ATTACH_BYPASS_MISMATCH,
      setup: attached,
      request: (s) => s.attach(EP2, DOMAIN, VIRTIO_IOMMU_ATTACH_F_BYPASS),
      status: VIRTIO_IOMMU_S_INVAL,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
  [
    'no bypass flag on a bypass domain',
    {
      spec: ATTACH_BYPASS_MISMATCH,
      setup: (s) => s.attach(EP, 5, VIRTIO_IOMMU_ATTACH_F_BYPASS),
      request: (s) => s.attach(EP2, 5),
      status: VIRTIO_IOMMU_S_INVAL,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
  [
    'an endpoint moves: detached from its domain (the last one: its mappings unmapped), then attached',
    { spec: ATTACH_MOVE, setup: mapped, request: (s) => s.attach(EP, 2), status: VIRTIO_IOMMU_S_OK, vfioCalls: 1, mappings: 0 },
  ],
  [
    'a domain outside domain_range',
    {
      spec: DOMAIN_RANGE,
      opts: { driverFeatures: ALL, domainRange: { start: 1, end: 15 } },
      request: (s) => s.attach(EP, 16),
      status: VIRTIO_IOMMU_S_RANGE,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
  [
    'a domain outside domain_range when F_DOMAIN_RANGE is not negotiated',
    {
      spec: 'domain_range: "If the feature is not negotiated, any domain value is valid."',
      opts: { driverFeatures: without(VIRTIO_IOMMU_F_DOMAIN_RANGE), domainRange: { start: 1, end: 15 } },
      request: (s) => s.attach(EP, 16),
      status: VIRTIO_IOMMU_S_OK,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
]);

// ---- DETACH ---------------------------------------------------------------

const DETACH_NOENT =
  'DETACH: "If the endpoint identified by endpoint doesn\'t exist, then the device MUST reject the request and set status to VIRTIO_IOMMU_S_NOENT."';
const DETACH_INVAL =
  'DETACH: "If the domain identified by domain doesn\'t exist, or if the endpoint identified by endpoint isn\'t attached to this domain, then the device MAY set the request status to VIRTIO_IOMMU_S_INVAL."';
const DETACH_RESERVED = 'DETACH: "The device MUST ignore reserved."';
const DETACH_ACCESS = 'DETACH: "The device MUST ensure that after being detached from a domain, the endpoint cannot access any mapping from that domain."';

runTable('DETACH', [
  ['an attached endpoint', { spec: DETACH_ACCESS, setup: mapped, request: (s) => s.detach(EP), status: VIRTIO_IOMMU_S_OK, vfioCalls: 1, mappings: 0 }],
  [
    'one of two endpoints: the domain and its mappings stay for the other',
    {
      spec: DETACH_ACCESS,
      setup: (s) => {
        mapped(s);
        s.attach(EP2);
      },
      request: (s) => s.detach(EP2),
      status: VIRTIO_IOMMU_S_OK,
      vfioCalls: 0,
      mappings: 1,
    },
  ],
  [
    'an endpoint the device does not have',
    { spec: DETACH_NOENT, setup: mapped, request: (s) => s.detach(NO_EP), status: VIRTIO_IOMMU_S_NOENT, vfioCalls: 0, mappings: 1 },
  ],
  [
    'an endpoint attached nowhere',
    { spec: DETACH_INVAL, setup: attached, request: (s) => s.detach(EP2), status: VIRTIO_IOMMU_S_INVAL, vfioCalls: 0, mappings: 0 },
  ],
  [
    'from a domain the endpoint is not attached to',
    {
      spec: DETACH_INVAL,
      setup: (s) => {
        mapped(s);
        s.attach(EP2, 2);
      },
      request: (s) => s.detach(EP2, DOMAIN),
      status: VIRTIO_IOMMU_S_INVAL,
      vfioCalls: 0,
      mappings: 1,
    },
  ],
  [
    'from a domain that does not exist',
    { spec: DETACH_INVAL, setup: attached, request: (s) => s.detach(EP, 7), status: VIRTIO_IOMMU_S_INVAL, vfioCalls: 0, mappings: 0 },
  ],
  [
    'a reserved byte set: ignored',
    { spec: DETACH_RESERVED, setup: mapped, request: (s) => s.detach(EP, DOMAIN, 0xff), status: VIRTIO_IOMMU_S_OK, vfioCalls: 1, mappings: 0 },
  ],
  [
    'the last endpoint of a bypass domain: its one-to-one map goes',
    {
      spec: DETACH_ACCESS,
      setup: (s) => s.attach(EP, 5, VIRTIO_IOMMU_ATTACH_F_BYPASS),
      request: (s) => s.detach(EP, 5),
      status: VIRTIO_IOMMU_S_OK,
      vfioCalls: 1,
      mappings: 0,
    },
  ],
]);

// ---- MAP ------------------------------------------------------------------

const MAP_RANGE =
  'MAP: "If virt_start, phys_start or (virt_end + 1) is not aligned on the page granularity, the device SHOULD reject the request and set status to VIRTIO_IOMMU_S_RANGE."';
const MAP_EXISTS = 'MAP: "If a mapping already exists in the requested range, the device SHOULD reject the request and set status to VIRTIO_IOMMU_S_INVAL."';
const MAP_FLAGS = 'MAP: "If the device doesn\'t recognize a flags bit, it MUST reject the request and set status to VIRTIO_IOMMU_S_INVAL."';
const MAP_NOENT = 'MAP: "If domain does not exist, the device SHOULD reject the request and set status to VIRTIO_IOMMU_S_NOENT."';
const MAP_BYPASS = 'MAP: "If the domain is a bypass domain, the device SHOULD reject the request and set status to VIRTIO_IOMMU_S_INVAL."';
const MAP_INPUT = 'input_range: "Any mapping request to virtual addresses outside of this range fails." (RANGE: out-of-range parameters)';
const MAP_RESV = 'RESV_MEM: "The device SHOULD reject a MAP request that overlaps a RESV_MEM region." (INVAL, as for an existing mapping)';
const MAP_UNMAP_FEATURE = 'MAP: "This request is only available when VIRTIO_IOMMU_F_MAP_UNMAP has been negotiated." (UNSUPP: unsupported request)';
const MAP_MMIO = 'MAP: "The VIRTIO_IOMMU_MAP_F_MMIO flag ... is only available when the VIRTIO_IOMMU_F_MMIO feature has been negotiated."';
const MAP_ORDER = 'MAP: "virt_end MUST be strictly greater than virt_start." (a driver requirement; the device answers INVAL)';
const MASK_64K = ~0xffffn & 0xffff_ffff_ffff_ffffn;

runTable('MAP', [
  [
    'page-aligned',
    { spec: MAP_RANGE, setup: attached, request: (s) => s.map(0x10_0000, 0x10_2fff, 0x2_0000), status: VIRTIO_IOMMU_S_OK, vfioCalls: 1, mappings: 1 },
  ],
  [
    'virt_start off the page',
    { spec: MAP_RANGE, setup: attached, request: (s) => s.map(0x10_0800, 0x10_17ff, 0x2_0000), status: VIRTIO_IOMMU_S_RANGE, vfioCalls: 0, mappings: 0 },
  ],
  [
    'phys_start off the page',
    { spec: MAP_RANGE, setup: attached, request: (s) => s.map(0x10_0000, 0x10_0fff, 0x2_0200), status: VIRTIO_IOMMU_S_RANGE, vfioCalls: 0, mappings: 0 },
  ],
  [
    'virt_end + 1 off the page',
    { spec: MAP_RANGE, setup: attached, request: (s) => s.map(0x10_0000, 0x10_0ffe, 0x2_0000), status: VIRTIO_IOMMU_S_RANGE, vfioCalls: 0, mappings: 0 },
  ],
  [
    'a sub-page MMIO range',
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
    '4 KiB-aligned with a 64 KiB granularity',
    {
      spec: MAP_RANGE,
      opts: { pageSizeMask: MASK_64K },
      setup: attached,
      request: (s) => s.map(0x10_1000, 0x10_1fff, 0x2_0000),
      status: VIRTIO_IOMMU_S_RANGE,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
  [
    '64 KiB-aligned with a 64 KiB granularity',
    {
      spec: MAP_RANGE,
      opts: { pageSizeMask: MASK_64K },
      setup: attached,
      request: (s) => s.map(0x11_0000, 0x11_ffff, 0x2_0000),
      status: VIRTIO_IOMMU_S_OK,
      vfioCalls: 1,
      mappings: 1,
    },
  ],
  [
    'virt_end below virt_start',
    { spec: MAP_ORDER, setup: attached, request: (s) => s.map(0x10_1000, 0x10_0fff, 0x2_0000), status: VIRTIO_IOMMU_S_INVAL, vfioCalls: 0, mappings: 0 },
  ],
  [
    'overlapping a mapping',
    { spec: MAP_EXISTS, setup: mapped, request: (s) => s.map(0x10_3000, 0x10_4fff, 0x3_0000), status: VIRTIO_IOMMU_S_INVAL, vfioCalls: 0, mappings: 1 },
  ],
  [
    'next to a mapping',
    { spec: MAP_EXISTS, setup: mapped, request: (s) => s.map(0x10_4000, 0x10_4fff, 0x3_0000), status: VIRTIO_IOMMU_S_OK, vfioCalls: 1, mappings: 2 },
  ],
  [
    'an unknown flag (bit 3)',
    {
      spec: MAP_FLAGS,
      setup: attached,
      request: (s) => s.map(0x10_0000, 0x10_0fff, 0x2_0000, RW | 8),
      status: VIRTIO_IOMMU_S_INVAL,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
  [
    'MMIO with F_MMIO: recorded, not passed to VFIO',
    {
      spec: MAP_MMIO,
      opts: { driverFeatures: ALL },
      setup: attached,
      request: (s) => s.map(0xfe00_0000, 0xfe00_0fff, 0xfe00_0000, VIRTIO_IOMMU_MAP_F_WRITE | VIRTIO_IOMMU_MAP_F_MMIO),
      status: VIRTIO_IOMMU_S_OK,
      vfioCalls: 0,
      mappings: 1,
    },
  ],
  [
    'MMIO without F_MMIO negotiated: an unknown flag',
    {
      spec: MAP_FLAGS,
      opts: { driverFeatures: without(VIRTIO_IOMMU_F_MMIO) },
      setup: attached,
      request: (s) => s.map(0xfe00_0000, 0xfe00_0fff, 0xfe00_0000, VIRTIO_IOMMU_MAP_F_WRITE | VIRTIO_IOMMU_MAP_F_MMIO),
      status: VIRTIO_IOMMU_S_INVAL,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
  [
    'in a domain that does not exist',
    { spec: MAP_NOENT, setup: attached, request: (s) => s.map(0x10_0000, 0x10_0fff, 0x2_0000, RW, 9), status: VIRTIO_IOMMU_S_NOENT, vfioCalls: 0, mappings: 0 },
  ],
  [
    'in a bypass domain',
    {
      spec: MAP_BYPASS,
      setup: (s) => s.attach(EP, 5, VIRTIO_IOMMU_ATTACH_F_BYPASS),
      request: (s) => s.map(0x10_0000, 0x10_0fff, 0x2_0000, RW, 5),
      status: VIRTIO_IOMMU_S_INVAL,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
  [
    'past input_range (2^48)',
    { spec: MAP_INPUT, setup: attached, request: (s) => s.map(2 ** 48, 2 ** 48 + 0xfff, 0x2_0000), status: VIRTIO_IOMMU_S_RANGE, vfioCalls: 0, mappings: 0 },
  ],
  [
    'at 2^63, exact 64-bit fields (above 2^53)',
    {
      spec: MAP_INPUT,
      setup: attached,
      request: (s) => s.map64(2n ** 63n, 2n ** 63n + 0xfffn, 0x2_0000n),
      status: VIRTIO_IOMMU_S_RANGE,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
  [
    'virt_end = 2^64 - 1, virt_start one below (no rounding makes it look ordered)',
    {
      spec: MAP_ORDER,
      setup: attached,
      request: (s) => s.map64(2n ** 64n - 1n, 2n ** 64n - 2n, 0x2_0000n),
      status: VIRTIO_IOMMU_S_INVAL,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
  [
    'phys_start past guest RAM above 2^53 (aligned, in input_range)',
    {
      spec: 'status FAULT: "Bad address"',
      setup: attached,
      request: (s) => s.map64(0x10_0000n, 0x10_0fffn, 2n ** 60n),
      status: VIRTIO_IOMMU_S_FAULT,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
  [
    'over the MSI window the PROBE reports',
    {
      spec: MAP_RESV,
      setup: attached,
      request: (s) => s.map(MSI_IOVA_BASE - PAGE, MSI_IOVA_BASE + PAGE - 1, 0x2_0000),
      status: VIRTIO_IOMMU_S_INVAL,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
  [
    'without F_MAP_UNMAP negotiated',
    {
      spec: MAP_UNMAP_FEATURE,
      opts: { driverFeatures: without(VIRTIO_IOMMU_F_MAP_UNMAP) },
      setup: attached,
      request: (s) => s.map(0x10_0000, 0x10_0fff, 0x2_0000),
      status: VIRTIO_IOMMU_S_UNSUPP,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
  [
    'VFIO out of mappings (-ENOSPC)',
    {
      spec: 'status NOMEM: "Insufficient resources"',
      setup: (s) => {
        s.attach(EP);
        s.vfio.mapErrno = -28;
      },
      request: (s) => s.map(0x10_0000, 0x10_0fff, 0x2_0000),
      status: VIRTIO_IOMMU_S_NOMEM,
      vfioCalls: 1,
      mappings: 0,
    },
  ],
]);

// ---- UNMAP ----------------------------------------------------------------

const UNMAP_SPLIT =
  'UNMAP: "If a mapping affected by the range is not covered in its entirety by the range (the UNMAP request would split the mapping), then the device SHOULD set the request status to VIRTIO_IOMMU_S_RANGE, and SHOULD NOT remove any mapping."';
const UNMAP_PARTIAL =
  'UNMAP: "If part of the range or the full range is not covered by an existing mapping, then the device SHOULD remove all mappings affected by the range and set the request status to VIRTIO_IOMMU_S_OK."';
const UNMAP_NOENT = 'UNMAP: "If domain does not exist, the device SHOULD set the request status to VIRTIO_IOMMU_S_NOENT."';
const UNMAP_BYPASS = 'UNMAP: "If the domain is a bypass domain, the device SHOULD reject the request and set status to VIRTIO_IOMMU_S_INVAL."';
const UNMAP_RESERVED =
  'UNMAP: "If the reserved field of an UNMAP request is not zero, the device MAY set the request status to VIRTIO_IOMMU_S_INVAL, in which case the device MAY perform the UNMAP operation." (the model ignores it)';
const two = (s: Rig) => {
  s.attach(EP);
  s.map(0x10_0000, 0x10_3fff, 0x2_0000); // a
  s.map(0x10_4000, 0x10_7fff, 0x3_0000); // b
};

runTable('UNMAP', [
  [
    '(1) nothing mapped',
    { spec: UNMAP_PARTIAL, setup: attached, request: (s) => s.unmap(0x10_0000, 0x10_4fff), status: VIRTIO_IOMMU_S_OK, vfioCalls: 0, mappings: 0 },
  ],
  [
    '(2) exactly one mapping',
    { spec: UNMAP_PARTIAL, setup: two, request: (s) => s.unmap(0x10_0000, 0x10_3fff), status: VIRTIO_IOMMU_S_OK, vfioCalls: 1, mappings: 1 },
  ],
  [
    '(3) two mappings',
    { spec: UNMAP_PARTIAL, setup: two, request: (s) => s.unmap(0x10_0000, 0x10_7fff), status: VIRTIO_IOMMU_S_OK, vfioCalls: 2, mappings: 0 },
  ],
  [
    '(4) half of a mapping',
    { spec: UNMAP_SPLIT, setup: two, request: (s) => s.unmap(0x10_0000, 0x10_1fff), status: VIRTIO_IOMMU_S_RANGE, vfioCalls: 0, mappings: 2 },
  ],
  [
    'starting inside a mapping',
    { spec: UNMAP_SPLIT, setup: two, request: (s) => s.unmap(0x10_2000, 0x10_7fff), status: VIRTIO_IOMMU_S_RANGE, vfioCalls: 0, mappings: 2 },
  ],
  [
    '(6) spilling past a mapping',
    { spec: UNMAP_PARTIAL, setup: two, request: (s) => s.unmap(0x10_4000, 0x10_ffff), status: VIRTIO_IOMMU_S_OK, vfioCalls: 1, mappings: 1 },
  ],
  [
    'the whole 64-bit space (virt_end = 2^64 - 1)',
    { spec: UNMAP_PARTIAL, setup: two, request: (s) => s.unmap64(0n, 2n ** 64n - 1n), status: VIRTIO_IOMMU_S_OK, vfioCalls: 2, mappings: 0 },
  ],
  [
    'virt_end below virt_start, both above 2^53',
    {
      spec: 'UNMAP: an inverted range is invalid parameters (INVAL)',
      setup: two,
      request: (s) => s.unmap64(2n ** 60n + 2n, 2n ** 60n + 1n),
      status: VIRTIO_IOMMU_S_INVAL,
      vfioCalls: 0,
      mappings: 2,
    },
  ],
  [
    'in a domain that does not exist',
    { spec: UNMAP_NOENT, setup: two, request: (s) => s.unmap(0x10_0000, 0x10_3fff, 9), status: VIRTIO_IOMMU_S_NOENT, vfioCalls: 0, mappings: 2 },
  ],
  [
    'in a bypass domain',
    {
      spec: UNMAP_BYPASS,
      setup: (s) => s.attach(EP, 5, VIRTIO_IOMMU_ATTACH_F_BYPASS),
      request: (s) => s.unmap(0x10_0000, 0x10_3fff, 5),
      status: VIRTIO_IOMMU_S_INVAL,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
  [
    'a reserved byte set',
    { spec: UNMAP_RESERVED, setup: two, request: (s) => s.unmap(0x10_0000, 0x10_3fff, DOMAIN, 1), status: VIRTIO_IOMMU_S_OK, vfioCalls: 1, mappings: 1 },
  ],
  [
    'without F_MAP_UNMAP negotiated',
    {
      spec: 'UNMAP: "This request is only available when VIRTIO_IOMMU_F_MAP_UNMAP has been negotiated." (UNSUPP)',
      opts: { driverFeatures: without(VIRTIO_IOMMU_F_MAP_UNMAP) },
      setup: attached,
      request: (s) => s.unmap(0x10_0000, 0x10_3fff),
      status: VIRTIO_IOMMU_S_UNSUPP,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
  [
    'VFIO fails the unmap',
    {
      spec: 'status DEVERR: "Internal device error"',
      setup: (s) => {
        two(s);
        s.vfio.unmapErrno = -22;
      },
      request: (s) => s.unmap(0x10_0000, 0x10_3fff),
      status: VIRTIO_IOMMU_S_DEVERR,
      vfioCalls: 1,
      mappings: 1,
    },
  ],
]);

// ---- PROBE ----------------------------------------------------------------

const PROBE_NOENT =
  'PROBE: "If the endpoint identified by endpoint doesn\'t exist, then the device SHOULD reject the request and set status to VIRTIO_IOMMU_S_NOENT."';
const PROBE_RESERVED = 'PROBE: "The device MUST ignore field reserved of a PROBE request."';
const PROBE_NOT_OFFERED =
  'PROBE: "If the device does not offer the VIRTIO_IOMMU_F_PROBE feature, and if the driver sends a VIRTIO_IOMMU_T_PROBE request, then the device SHOULD NOT write the buffer and SHOULD set the used length to zero."';
const PROBE_TOO_SMALL =
  'PROBE: "If the properties list is smaller than probe_size, the device SHOULD NOT write any property. It SHOULD reject the request and set status to VIRTIO_IOMMU_S_INVAL."';

runTable('PROBE', [
  ['a configured endpoint', { spec: PROBE_NOENT, request: (s) => s.probe(EP), status: VIRTIO_IOMMU_S_OK, vfioCalls: 0, mappings: 0 }],
  ['an endpoint the device does not have', { spec: PROBE_NOENT, request: (s) => s.probe(NO_EP), status: VIRTIO_IOMMU_S_NOENT, vfioCalls: 0, mappings: 0 }],
  ['a reserved byte set', { spec: PROBE_RESERVED, request: (s) => s.probe(EP, 0x5a), status: VIRTIO_IOMMU_S_OK, vfioCalls: 0, mappings: 0 }],
  [
    'F_PROBE not offered',
    { spec: PROBE_NOT_OFFERED, opts: { features: without(VIRTIO_IOMMU_F_PROBE) }, request: (s) => s.probe(EP), status: null, vfioCalls: 0, mappings: 0 },
  ],
  [
    'probe_size too small for the RESV_MEM property',
    { spec: PROBE_TOO_SMALL, opts: { probeSizeBytes: 16 }, request: (s) => s.probe(EP), status: VIRTIO_IOMMU_S_INVAL, vfioCalls: 0, mappings: 0 },
  ],
]);

// ---- requests of no known type, the properties, the configuration ------

runTable('request type', [
  [
    'an unknown type (0x42)',
    {
      spec: 'operations: "If a request type is not recognized, the device SHOULD NOT write the buffer and SHOULD set the used length to zero."',
      request: (s) => s.raw(0x42),
      status: null,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
  [
    'type 0',
    {
      spec: 'operations: "If a request type is not recognized, the device SHOULD NOT write the buffer ..."',
      request: (s) => s.raw(0),
      status: null,
      vfioCalls: 0,
      mappings: 0,
    },
  ],
]);

test('PROBE properties: one RESV_MEM (MSI) property, length without its header, reserved zero, the rest of probe_size zero-filled', (t) => {
  const s = rig();
  const gpa = 0x10000 + VIRTIO_IOMMU_PROBE_FIXED_BYTES;
  s.mem.u8.fill(0xee, gpa, gpa + 512);
  t.is(s.probe(EP).status, VIRTIO_IOMMU_S_OK);
  t.deepEqual(readProbeProperties(s.mem, gpa, 512), [{ kind: 'resv-mem', subtype: 1, start: MSI_IOVA_BASE, end: MSI_IOVA_BASE + 0xf_ffff }]);
  t.is(s.mem.dv.getUint16(gpa + 2, true), 20, '"The device MUST write the size of a property without the struct virtio_iommu_probe_property header"');
  t.deepEqual([...s.mem.u8.subarray(gpa + 5, gpa + 8)], [0, 0, 0], 'reserved bytes of the property are zero');
  t.true(
    s.mem.u8.subarray(gpa + 24, gpa + 512).every((b) => b === 0),
    '"If the device doesn\'t fill all probe_size bytes with properties, it SHOULD fill the remaining bytes of properties with zeroes."',
  );
});

test('the tail: the device zeroes its reserved bytes ("SHOULD set field reserved of struct virtio_iommu_req_tail to zero")', (t) => {
  const s = rig();
  const tail = 0x10000 + 20;
  s.mem.u8.fill(0xcc, tail, tail + 4);
  t.is(s.attach(EP).status, VIRTIO_IOMMU_S_OK);
  t.deepEqual([...s.mem.u8.subarray(tail, tail + 4)], [0, 0, 0, 0]);
});

test('configuration: page_size_mask has a bit set, bypass is 0 or 1; the features offered are MAP_UNMAP and BYPASS_CONFIG but not BYPASS', (t) => {
  const s = rig({ driverFeatures: ALL });
  const cfg = readViommuConfig(s.mem, CONFIG_GPA);
  t.not(cfg.pageSizeMask, 0n, '"The device MUST set at least one bit in page_size_mask"');
  t.true(cfg.bypass === 0 || cfg.bypass === 1, '"The device MUST NOT present a value different than 0 or 1 in bypass."');
  t.deepEqual(cfg.inputRange, { start: 0n, end: 2n ** 48n - 1n });
  t.is(cfg.probeSize, 512);
  t.true((ALL & viommuFeature(VIRTIO_IOMMU_F_MAP_UNMAP)) !== 0, '"The device SHOULD offer feature bit VIRTIO_IOMMU_F_MAP_UNMAP."');
  t.is(ALL & viommuFeature(3), 0, '"New devices SHOULD NOT offer VIRTIO_IOMMU_F_BYPASS."');
  t.true((ALL & viommuFeature(VIRTIO_IOMMU_F_INPUT_RANGE)) !== 0);
  t.throws(() => rig({ pageSizeMask: 0n }), { message: /page_size_mask/ });
});
