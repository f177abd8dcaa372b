/**
 * Fault reporting on the event queue (virtio spec, "Device Types / IOMMU
 * Device / Device operations / Fault reporting", device requirements, and
 * QEMU's virtio_iommu_report_fault): one table, each row citing the
 * requirement it checks (the README's wording, row by row). The host's fault queue is a fake (FakeVfio.faults) read by the
 * device at teardown (`reportHostFaults`); the driver's event buffers are
 * posted through a real split virtqueue in guest RAM. These are rows 52 and
 * 53 of the package README's conformance table, and the reason, flag and
 * drop rules the README's "Fault reports" section states.
 */

import {
  type HostIommuFault,
  IOMMU_PGFAULT_PERM_READ,
  IOMMU_PGFAULT_PERM_WRITE,
  readFault,
  VIRTIO_IOMMU_FAULT_BYTES,
  VIRTIO_IOMMU_FAULT_F_ADDRESS,
  VIRTIO_IOMMU_FAULT_F_READ,
  VIRTIO_IOMMU_FAULT_F_WRITE,
  VIRTIO_IOMMU_FAULT_R_DOMAIN,
  VIRTIO_IOMMU_FAULT_R_MAPPING,
  VIRTIO_IOMMU_FAULT_R_UNKNOWN,
  VIRTIO_IOMMU_S_OK,
  VIRTIO_IOMMU_T_ATTACH,
  VIRTIO_IOMMU_T_DETACH,
  writeAttachRequest,
  writeDetachRequest,
} from '@vmstack/shm';
import test from 'ava';
import { viommuRig } from './helpers/viommu-rig.js';

const EP = 0x100;
const NO_EP = 0x300;
const BUF_GPA = 0x30000;
/** the rig kicks once per model ms: ATTACH is handled at 1 ms, DETACH (when sent) at 2 ms */
const ATTACHED_NS = 1_500_000;
const BEFORE_ATTACH_NS = 500_000;
const AFTER_DETACH_NS = 5_000_000;

const hostFault = (o: Partial<HostIommuFault>): HostIommuFault => ({
  devId: EP,
  perm: IOMMU_PGFAULT_PERM_READ,
  addr: 0x5000,
  reason: 1,
  timeNs: ATTACHED_NS,
  ...o,
});

interface Setup {
  /** event buffers the driver posts, each of this many bytes (default: one report each) */
  buffers?: number[];
  /** the VMM path reports (default true) */
  reportFaults?: boolean;
  /** send a DETACH after the ATTACH */
  detach?: boolean;
}

function setup(s: Setup) {
  const r = viommuRig({ endpointIds: [EP], hostNs: 1000, eventQueueEntries: 8, reportFaults: s.reportFaults ?? true });
  const { mem } = r;
  const attach = r.request(VIRTIO_IOMMU_T_ATTACH, (g) => writeAttachRequest(mem, g, { domain: 1, endpoint: EP, flags: 0 }));
  if (attach.status !== VIRTIO_IOMMU_S_OK) throw new Error('attach failed');
  if (s.detach) r.request(VIRTIO_IOMMU_T_DETACH, (g) => writeDetachRequest(mem, g, { domain: 1, endpoint: EP }));
  const sizes = s.buffers ?? [VIRTIO_IOMMU_FAULT_BYTES];
  let gpa = BUF_GPA;
  const bufs = sizes.map((len, i) => {
    mem.u8.fill(0xff, gpa, gpa + len + 8);
    r.events!.addBuf([], [{ gpa, lenBytes: len }], i);
    const b = { gpa, len };
    gpa += 64;
    return b;
  });
  r.events!.publish();
  /** the used event buffers, as viommu_event_handler takes them */
  const used = () => {
    const out: { token: number; lenBytes: number }[] = [];
    for (let u = r.events!.getBuf(); u; u = r.events!.getBuf()) out.push(u);
    return out;
  };
  return { ...r, bufs, used };
}

interface Row {
  requirement: string;
  setup?: Setup;
  faults: Partial<HostIommuFault>[];
  /** the reports the driver finds, in order (reason, flags, endpoint, address) */
  reports: { reason: number; flags: number; endpoint: number; address: number }[];
  dropped: number;
  /** extra checks on the guest memory or the device */
  check?: (t: import('ava').ExecutionContext, s: ReturnType<typeof setup>) => void;
}

const R = VIRTIO_IOMMU_FAULT_F_READ | VIRTIO_IOMMU_FAULT_F_ADDRESS;
const W = VIRTIO_IOMMU_FAULT_F_WRITE | VIRTIO_IOMMU_FAULT_F_ADDRESS;

const ROWS: Row[] = [
  {
    requirement: 'row 52 (SHOULD): the device zeroes reserved and reserved1 of the report (buffer pre-filled with 0xff)',
    faults: [{}],
    reports: [{ reason: VIRTIO_IOMMU_FAULT_R_MAPPING, flags: R, endpoint: EP, address: 0x5000 }],
    dropped: 0,
    check: (t, s) => {
      const g = s.bufs[0].gpa;
      t.deepEqual([...s.mem.u8.subarray(g + 1, g + 4)], [0, 0, 0], 'reserved[3]');
      t.is(s.mem.dv.getUint32(g + 12, true), 0, 'reserved1');
      t.is(s.mem.u8[g + VIRTIO_IOMMU_FAULT_BYTES], 0xff, 'nothing written past the report');
    },
  },
  {
    requirement: 'row 52 (SHOULD): undefined flags are zero: only READ/WRITE and ADDRESS are set',
    faults: [{ perm: IOMMU_PGFAULT_PERM_WRITE | 0x80 }],
    reports: [{ reason: VIRTIO_IOMMU_FAULT_R_MAPPING, flags: W, endpoint: EP, address: 0x5000 }],
    dropped: 0,
    check: (t, s) => t.is(s.mem.dv.getUint32(s.bufs[0].gpa + 4, true) & ~W, 0),
  },
  {
    requirement: 'row 52 (SHOULD): the endpoint is a valid endpoint id: the requester the host recorded',
    faults: [{ devId: EP, addr: 0x7000 }],
    reports: [{ reason: VIRTIO_IOMMU_FAULT_R_MAPPING, flags: R, endpoint: EP, address: 0x7000 }],
    dropped: 0,
  },
  {
    requirement: 'reason MAPPING: the endpoint was attached at the fault (no mapping, or no permission: the access in flags, as QEMU)',
    faults: [{ reason: 1 }, { reason: 2, perm: IOMMU_PGFAULT_PERM_WRITE, addr: 0x9000 }],
    setup: { buffers: [VIRTIO_IOMMU_FAULT_BYTES, VIRTIO_IOMMU_FAULT_BYTES] },
    reports: [
      { reason: VIRTIO_IOMMU_FAULT_R_MAPPING, flags: R, endpoint: EP, address: 0x5000 },
      { reason: VIRTIO_IOMMU_FAULT_R_MAPPING, flags: W, endpoint: EP, address: 0x9000 },
    ],
    dropped: 0,
  },
  {
    requirement: 'reason DOMAIN: the endpoint was attached to no domain at the fault (before the ATTACH, after the DETACH), as QEMU reports it',
    faults: [{ timeNs: BEFORE_ATTACH_NS }, { timeNs: AFTER_DETACH_NS }],
    setup: { detach: true, buffers: [VIRTIO_IOMMU_FAULT_BYTES, VIRTIO_IOMMU_FAULT_BYTES] },
    reports: [
      { reason: VIRTIO_IOMMU_FAULT_R_DOMAIN, flags: R, endpoint: EP, address: 0x5000 },
      { reason: VIRTIO_IOMMU_FAULT_R_DOMAIN, flags: R, endpoint: EP, address: 0x5000 },
    ],
    dropped: 0,
  },
  {
    requirement: 'reason UNKNOWN: a requester the device does not know (QEMU: "sid is not known")',
    faults: [{ devId: NO_EP }],
    reports: [{ reason: VIRTIO_IOMMU_FAULT_R_UNKNOWN, flags: R, endpoint: NO_EP, address: 0x5000 }],
    dropped: 0,
  },
  {
    requirement: 'no buffer posted: the report is dropped and counted (QEMU: "no buffer available in event queue to report event")',
    faults: [{}, { addr: 0x6000 }, { addr: 0x7000 }],
    reports: [{ reason: VIRTIO_IOMMU_FAULT_R_MAPPING, flags: R, endpoint: EP, address: 0x5000 }],
    dropped: 2,
  },
  {
    requirement: 'row 53 (SHOULD NOT): a report is never split over several buffers: a buffer too small comes back unwritten (used length 0)',
    faults: [{}],
    setup: { buffers: [16] },
    reports: [],
    dropped: 1,
    check: (t, s) => t.is(s.mem.u8[s.bufs[0].gpa], 0xff, 'not written'),
  },
  {
    requirement: 'row 53 (MAY): the address may be omitted: this device always gives it, with VIRTIO_IOMMU_FAULT_F_ADDRESS',
    faults: [{ addr: 0xfee0_0000 }],
    reports: [{ reason: VIRTIO_IOMMU_FAULT_R_MAPPING, flags: R, endpoint: EP, address: 0xfee0_0000 }],
    dropped: 0,
  },
  {
    requirement: 'a VMM path that does not report (crosvm): the host queue is not read, nothing reaches the event queue',
    faults: [{}],
    setup: { reportFaults: false },
    reports: [],
    dropped: 0,
    check: (t, s) => {
      t.is(s.vfio.faultReads, 0);
      t.is(s.vfio.faults.length, 1, 'the fault stays on the host');
    },
  },
];

for (const row of ROWS) {
  test(`fault reporting: ${row.requirement}`, (t) => {
    const s = setup(row.setup ?? {});
    for (const f of row.faults) s.vfio.faults.push(hostFault(f));
    const n = s.device.reportHostFaults();
    t.is(n, (row.setup?.reportFaults ?? true) ? row.faults.length : 0, 'records read from the host');
    const used = s.used();
    const reports = used.filter((u) => u.lenBytes > 0).map((u) => readFault(s.mem, s.bufs[u.token].gpa)!);
    t.deepEqual(reports, row.reports);
    for (const u of used) t.true(u.lenBytes === 0 || u.lenBytes === VIRTIO_IOMMU_FAULT_BYTES, 'a whole report or nothing');
    t.is(s.device.faultCounters.reported, row.reports.length);
    t.is(s.device.faultCounters.dropped, row.dropped);
    row.check?.(t, s);
  });
}

test('every buffer used: the driver reads its reports and posts the buffers again (drain), and no report is dropped; a drain that posts none drops the rest', (t) => {
  const s = setup({});
  for (let i = 0; i < 3; i++) s.vfio.faults.push(hostFault({ addr: 0x1000 * (i + 1) }));
  const seen: number[] = [];
  let drains = 0;
  s.device.reportHostFaults(() => {
    drains++;
    for (const u of s.used()) {
      seen.push(readFault(s.mem, s.bufs[u.token].gpa)!.address);
      s.events!.addBuf([], [{ gpa: s.bufs[u.token].gpa, lenBytes: VIRTIO_IOMMU_FAULT_BYTES }], u.token);
    }
    s.events!.publish();
  });
  for (const u of s.used()) seen.push(readFault(s.mem, s.bufs[u.token].gpa)!.address);
  t.deepEqual(seen, [0x1000, 0x2000, 0x3000], 'every report, in order');
  t.is(drains, 2, 'one buffer: a drain before each later report');
  t.deepEqual(s.device.faultCounters, { read: 3, reported: 3, dropped: 0 });

  const stingy = setup({});
  for (let i = 0; i < 3; i++) stingy.vfio.faults.push(hostFault({ addr: 0x1000 * (i + 1) }));
  stingy.device.reportHostFaults(() => stingy.used());
  t.deepEqual(stingy.device.faultCounters, { read: 3, reported: 1, dropped: 2 });
});
