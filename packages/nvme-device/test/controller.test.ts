/**
 * The NVMe controller in one thread, behind a real IOTLB over a real host
 * page table (iommu-hw's IoPgtable), with the media model and a namespace
 * whose unwritten blocks hold self-checking patterns. Every address the
 * device is given is an IOVA (guest RAM is mapped at IOVA_BASE + gpa), so
 * each queue access, PRP list read and data transfer goes through the
 * IOMMU. Commands go in through SQEs and doorbells; completions come out as
 * CQEs with phase bits, posted by `postCompletionsUpTo`.
 *
 * The fault tests are the point: a DMA whose IOVA is not mapped (any more),
 * or that would write through a read-only mapping, completes with the
 * DMA-fault status and does not change one byte of guest RAM.
 */

import { type IommuProt, IoPgtable, Iotlb } from '@vmstack/iommu-hw';
import {
  attachGuestMemory,
  DEFAULT_PROFILE_PATH,
  DOORBELL_SQ_TAIL,
  encodeDoorbell,
  encodeIotlbInval,
  fillBlock,
  IOMMU_READ,
  IOMMU_WRITE,
  loadProfile,
  ModelClock,
  NEVER_NS,
  NVME_ADMIN_CREATE_CQ,
  NVME_ADMIN_CREATE_SQ,
  NVME_ADMIN_IDENTIFY,
  NVME_CMD_READ,
  NVME_CMD_WRITE,
  NVME_CQE_BYTES,
  NVME_REG_ACQ,
  NVME_REG_AQA,
  NVME_REG_ASQ,
  NVME_REG_CC,
  NVME_SC_DMA_FAULT,
  NVME_SC_LBA_RANGE,
  NVME_SC_SUCCESS,
  NVME_SQE_BYTES,
  type NvmeCqe,
  nvmeSetupPrps,
  nvmeStatusName,
  Ring,
  RunControl,
  readCqe,
  unwrittenBlockIntact,
  verifyBlock,
  writeRwSqe,
  writeSqe,
} from '@vmstack/shm';
import test from 'ava';
import { DeviceEngine, NvmeController, NvmeMedia, NvmeNamespace } from '../src/index.js';

const profile = loadProfile(DEFAULT_PROFILE_PATH);
const PAGE = 4096;
const RAM_BYTES = 4 * 1024 * 1024;
/** guest RAM is visible to the device at IOVA_BASE + gpa (never at the gpa itself) */
const IOVA_BASE = 0x40_0000_0000;
const ASQ = 0x1000;
const ACQ = 0x2000;
const SQ = 0x3000;
const CQ = 0x4000;
const SQ_DEPTH = 8;
const CQ_DEPTH = 4;
const PRP_LIST = 0x8000;
const DATA = 0x10_0000;
const NS_BLOCKS = 4096;
const SEED = 0x89;
const RW = (IOMMU_READ | IOMMU_WRITE) as IommuProt;

const iova = (gpa: number) => IOVA_BASE + gpa;

function rig() {
  const mem = attachGuestMemory(new SharedArrayBuffer(RAM_BYTES));
  const pgtable = IoPgtable.attach(IoPgtable.allocate({ tablePages: 128 }));
  const iotlb = new Iotlb(pgtable, profile);
  const ns = new NvmeNamespace(NS_BLOCKS, SEED);
  const clock = new ModelClock('virtual');
  const ctrl = new NvmeController(mem, iotlb, new NvmeMedia(profile), ns, clock, profile);
  const irqs: { cqid: number; vector: number; tsNs: number }[] = [];
  let nowNs = 0;
  let asqTail = 0;
  let acqHead = 0;
  let sqTail = 0;
  let cid = 0;
  /** map guest pages [gpa, gpa + bytes) for the device */
  const map = (gpa: number, bytes: number, prot: IommuProt = RW) => pgtable.map(iova(gpa), gpa, bytes, prot);
  for (const q of [ASQ, ACQ, SQ, CQ, PRP_LIST]) map(q, PAGE);
  const post = () => ctrl.postCompletionsUpTo(Number.MAX_SAFE_INTEGER, (cqid, vector, tsNs) => irqs.push({ cqid, vector, tsNs }));
  const later = () => (nowNs = Math.max(nowNs, ctrl.clock.nowNs()) + 10_000);

  /** one admin command, completed; returns its CQE */
  function admin(fields: Omit<Parameters<typeof writeSqe>[2], 'commandId'>): NvmeCqe {
    const commandId = cid++;
    writeSqe(mem, ASQ + asqTail * NVME_SQE_BYTES, { ...fields, commandId });
    asqTail = (asqTail + 1) % 32;
    ctrl.onDoorbell(0, DOORBELL_SQ_TAIL, asqTail, later());
    t_assert(post() === 1, 'one admin completion');
    const c = readCqe(mem, ACQ + acqHead++ * NVME_CQE_BYTES);
    t_assert(c.commandId === commandId, 'admin CQE for our command');
    return c;
  }

  function enable(): void {
    ctrl.registerWrite(NVME_REG_AQA, (31 << 16) | 31, later());
    ctrl.registerWrite(NVME_REG_ASQ, iova(ASQ), later());
    ctrl.registerWrite(NVME_REG_ACQ, iova(ACQ), later());
    ctrl.registerWrite(NVME_REG_CC, 1, later());
    const cq = admin({ opcode: NVME_ADMIN_CREATE_CQ, prp1: iova(CQ), cdw10: ((CQ_DEPTH - 1) << 16) | 1, cdw11: (0 << 16) | 3 });
    const sq = admin({ opcode: NVME_ADMIN_CREATE_SQ, prp1: iova(SQ), cdw10: ((SQ_DEPTH - 1) << 16) | 1, cdw11: (1 << 16) | 1 });
    t_assert(cq.status === NVME_SC_SUCCESS && sq.status === NVME_SC_SUCCESS, 'queues created');
  }

  /** queue I/O commands (SQEs only); returns their command ids and SQ slots */
  function queueRw(cmds: { opcode: typeof NVME_CMD_READ | typeof NVME_CMD_WRITE; slba: number; blockCount: number; prp1: number; prp2?: number }[]): number[] {
    return cmds.map((c) => {
      const commandId = cid++;
      writeRwSqe(mem, SQ + sqTail * NVME_SQE_BYTES, {
        opcode: c.opcode,
        commandId,
        nsid: 1,
        slba: c.slba,
        blockCount: c.blockCount,
        prp1: c.prp1,
        prp2: c.prp2 ?? 0,
      });
      sqTail = (sqTail + 1) % SQ_DEPTH;
      return commandId;
    });
  }
  /** ring the I/O SQ doorbell and post every completion */
  function ring(): number {
    ctrl.onDoorbell(1, DOORBELL_SQ_TAIL, sqTail, later());
    return post();
  }
  return { mem, pgtable, iotlb, ns, ctrl, irqs, map, admin, enable, queueRw, ring, sqTail: () => sqTail };
}

/** invariant checks inside the rig (a failure there is a broken test setup) */
function t_assert(ok: boolean, what: string): void {
  if (!ok) throw new Error(`controller test setup: ${what}`);
}

const cqe = (mem: ReturnType<typeof rig>['mem'], slot: number) => readCqe(mem, CQ + slot * NVME_CQE_BYTES);

test('enable, IDENTIFY, create an I/O queue pair: admin CQEs carry SUCCESS and phase 1, one interrupt each', (t) => {
  const s = rig();
  s.enable();
  t.is(s.irqs.length, 2);
  t.deepEqual(
    s.irqs.map((i) => i.cqid),
    [0, 0],
  );
  const idPage = 0x9000;
  s.map(idPage, PAGE);
  const id = s.admin({ opcode: NVME_ADMIN_IDENTIFY, nsid: 1, prp1: iova(idPage), cdw10: 0 });
  t.is(id.status, NVME_SC_SUCCESS);
  t.is(id.phase, 1);
  t.is(s.mem.dv.getUint32(idPage, true), NS_BLOCKS, 'identify namespace: NSZE');
  t.is(s.mem.u8[idPage + 130], 12, 'LBA format: 4 KiB');
  t.is(s.ctrl.counters.adminCommands, 3);
  t.true(
    s.irqs.every((i, k) => k === 0 || i.tsNs >= s.irqs[k - 1].tsNs),
    'interrupts in time order',
  );
});

test('READ of one block: the data is the namespace block (verified), the CQE says SUCCESS with phase 1, SQ id and head', (t) => {
  const s = rig();
  s.enable();
  const buf = DATA;
  s.map(buf, PAGE);
  const [id] = s.queueRw([{ opcode: NVME_CMD_READ, slba: 7, blockCount: 1, prp1: iova(buf) }]);
  t.is(s.ring(), 1);
  const c = cqe(s.mem, 0);
  t.deepEqual({ ...c, dw0: 0, dw1: 0 }, { dw0: 0, dw1: 0, sqHead: 1, sqId: 1, commandId: id, status: NVME_SC_SUCCESS, phase: 1 });
  t.true(unwrittenBlockIntact(s.mem.u8, buf, 7, SEED), 'block 7 landed in the buffer');
  t.false(unwrittenBlockIntact(s.mem.u8, buf, 8, SEED), 'and it is block 7, not another');
  t.is(s.irqs.at(-1)!.cqid, 1);
  t.is(s.ctrl.counters.reads, 1);
  t.is(s.ctrl.counters.faults, 0);
});

test('WRITE then READ back: the namespace keeps the written bytes; a block past the namespace: LBA_RANGE', (t) => {
  const s = rig();
  s.enable();
  const src = DATA;
  const dst = DATA + 0x10000;
  s.map(src, PAGE, IOMMU_READ as IommuProt); // to-device buffer: the device only reads it
  s.map(dst, PAGE);
  fillBlock(s.mem.u8, src, 100, 0x1234, 'md5');
  s.queueRw([{ opcode: NVME_CMD_WRITE, slba: 100, blockCount: 1, prp1: iova(src) }]);
  t.is(s.ring(), 1);
  t.is(cqe(s.mem, 0).status, NVME_SC_SUCCESS);
  t.is(s.ns.writtenBlocks(), 1);
  s.queueRw([{ opcode: NVME_CMD_READ, slba: 100, blockCount: 1, prp1: iova(dst) }]);
  t.is(s.ring(), 1);
  t.is(cqe(s.mem, 1).status, NVME_SC_SUCCESS);
  t.true(Buffer.from(s.mem.u8.subarray(dst, dst + PAGE)).equals(Buffer.from(s.mem.u8.subarray(src, src + PAGE))), 'read back byte for byte');
  t.true(verifyBlock(s.mem.u8, dst, 100, 'md5'));
  s.queueRw([{ opcode: NVME_CMD_READ, slba: NS_BLOCKS - 1, blockCount: 2, prp1: iova(dst) }]);
  t.is(s.ring(), 1);
  t.is(nvmeStatusName(cqe(s.mem, 2).status), nvmeStatusName(NVME_SC_LBA_RANGE));
});

test('a 128 KiB READ through a PRP list into 32 scattered pages: every page holds its block', (t) => {
  const s = rig();
  s.enable();
  // 32 pages, not in physical order, mapped at consecutive IOVAs (as dma-iommu does)
  const gpas = Array.from({ length: 32 }, (_, i) => DATA + ((i * 13) % 32) * 2 * PAGE);
  const base = iova(0x100_0000);
  gpas.forEach((g, i) => s.pgtable.map(base + i * PAGE, g, PAGE, RW));
  const prps = nvmeSetupPrps(
    s.mem,
    gpas.map((_, i) => base + i * PAGE),
    0,
    32 * PAGE,
    () => ({ gpa: PRP_LIST, dmaAddr: iova(PRP_LIST) }),
  );
  t.is(prps.prp2, iova(PRP_LIST), 'PRP2 points at the list');
  s.queueRw([{ opcode: NVME_CMD_READ, slba: 200, blockCount: 32, prp1: prps.prp1, prp2: prps.prp2 }]);
  t.is(s.ring(), 1);
  t.is(cqe(s.mem, 0).status, NVME_SC_SUCCESS);
  t.deepEqual(
    gpas.map((g, i) => unwrittenBlockIntact(s.mem.u8, g, 200 + i, SEED)),
    gpas.map(() => true),
  );
  t.is(s.ctrl.counters.bytesRead, 32 * PAGE);
});

test('the CQ wraps: after 4 entries the phase bit flips to 0 for the new ones', (t) => {
  const s = rig();
  s.enable();
  s.map(DATA, PAGE);
  const ids: number[] = [];
  for (let k = 0; k < 6; k++) {
    ids.push(...s.queueRw([{ opcode: NVME_CMD_READ, slba: k, blockCount: 1, prp1: iova(DATA) }]));
    t.is(s.ring(), 1);
  }
  const slots = [0, 1, 2, 3].map((i) => cqe(s.mem, i));
  t.deepEqual(
    slots.map((c) => [c.commandId, c.phase]),
    [
      [ids[4], 0],
      [ids[5], 0],
      [ids[2], 1],
      [ids[3], 1],
    ],
  );
  t.deepEqual(
    slots.map((c) => c.sqHead),
    [5, 6, 3, 4],
    'SQ head reported after each fetch',
  );
});

/** Guest RAM must not change at all, except the CQE slot(s) given. */
function assertRamUnchanged(t: import('ava').ExecutionContext, before: Uint8Array, after: Uint8Array, cqeSlots: number[]): void {
  const skip = cqeSlots.map((i) => [CQ + i * NVME_CQE_BYTES, CQ + (i + 1) * NVME_CQE_BYTES]);
  let firstDiff = -1;
  let diffs = 0;
  for (let a = 0; a < before.length; a++) {
    if (before[a] === after[a] || skip.some(([lo, hi]) => a >= lo && a < hi)) continue;
    if (firstDiff < 0) firstDiff = a;
    diffs++;
  }
  t.is(diffs, 0, diffs ? `${diffs} bytes of guest RAM changed, first at gpa 0x${firstDiff.toString(16)}` : 'guest RAM untouched');
}

test('a READ whose buffer IOVA was unmapped (page table + IOTLB invalidation) completes with a DMA fault and does not change one byte of guest RAM', (t) => {
  const s = rig();
  s.enable();
  const buf = DATA;
  s.map(buf, PAGE);
  s.queueRw([{ opcode: NVME_CMD_READ, slba: 1, blockCount: 1, prp1: iova(buf) }]);
  t.is(s.ring(), 1);
  t.is(cqe(s.mem, 0).status, NVME_SC_SUCCESS, 'the mapping worked (and the IOTLB now caches it)');
  // the guest unmaps: the host clears the page table and invalidates the IOTLB
  t.is(s.pgtable.unmap(iova(buf), PAGE), PAGE);
  s.iotlb.invalidate(iova(buf), PAGE);
  s.mem.u8.fill(0x5a, buf, buf + PAGE); // whatever the page holds now must stay
  s.queueRw([{ opcode: NVME_CMD_READ, slba: 2, blockCount: 1, prp1: iova(buf) }]);
  const before = s.mem.u8.slice();
  const faultsBefore = s.ctrl.counters.faults;
  t.is(s.ring(), 1, 'the command still completes');
  const c = cqe(s.mem, 1);
  t.is(nvmeStatusName(c.status), nvmeStatusName(NVME_SC_DMA_FAULT));
  t.is(c.phase, 1);
  t.is(s.ctrl.counters.faults, faultsBefore + 1);
  t.true(s.iotlb.faults >= 1);
  assertRamUnchanged(t, before, s.mem.u8, [1]);
});

test('a two-page READ whose SECOND page is unmapped moves nothing into the first; a PRP list at an unmapped IOVA faults too', (t) => {
  const s = rig();
  s.enable();
  const p1 = DATA;
  const p2 = DATA + 0x8000;
  s.map(p1, PAGE); // p2 never mapped
  s.queueRw([{ opcode: NVME_CMD_READ, slba: 10, blockCount: 2, prp1: iova(p1), prp2: iova(p2) }]);
  const list = 0xa000; // not mapped
  s.queueRw([{ opcode: NVME_CMD_READ, slba: 20, blockCount: 3, prp1: iova(p1), prp2: iova(list) }]);
  const before = s.mem.u8.slice();
  t.is(s.ring(), 2);
  t.is(nvmeStatusName(cqe(s.mem, 0).status), nvmeStatusName(NVME_SC_DMA_FAULT));
  t.is(nvmeStatusName(cqe(s.mem, 1).status), nvmeStatusName(NVME_SC_DMA_FAULT));
  t.is(s.ctrl.counters.faults, 2);
  assertRamUnchanged(t, before, s.mem.u8, [0, 1]);
});

test('device write into a to-device (read-only) slot faults: a READ into an IOMMU_READ-only mapping; a WRITE from it works', (t) => {
  const s = rig();
  s.enable();
  const ro = DATA;
  s.map(ro, PAGE, IOMMU_READ as IommuProt);
  fillBlock(s.mem.u8, ro, 300, 0x77, 'crc32c');
  s.queueRw([{ opcode: NVME_CMD_READ, slba: 3, blockCount: 1, prp1: iova(ro) }]);
  const before = s.mem.u8.slice();
  t.is(s.ring(), 1);
  t.is(nvmeStatusName(cqe(s.mem, 0).status), nvmeStatusName(NVME_SC_DMA_FAULT));
  t.is(s.ctrl.counters.faults, 1);
  assertRamUnchanged(t, before, s.mem.u8, [0]);
  s.queueRw([{ opcode: NVME_CMD_WRITE, slba: 300, blockCount: 1, prp1: iova(ro) }]);
  t.is(s.ring(), 1);
  t.is(cqe(s.mem, 1).status, NVME_SC_SUCCESS, 'the device may read it');
  t.is(s.ns.writtenBlocks(), 1);
  t.is(s.ctrl.counters.faults, 1);
});

test('without the IOTLB invalidation a stale translation still works (the window invalidation closes)', (t) => {
  const s = rig();
  s.enable();
  const buf = DATA;
  s.map(buf, PAGE);
  s.queueRw([{ opcode: NVME_CMD_READ, slba: 1, blockCount: 1, prp1: iova(buf) }]);
  s.ring();
  s.pgtable.unmap(iova(buf), PAGE); // no invalidation
  s.mem.u8.fill(0, buf, buf + PAGE);
  s.queueRw([{ opcode: NVME_CMD_READ, slba: 2, blockCount: 1, prp1: iova(buf) }]);
  s.ring();
  t.is(cqe(s.mem, 1).status, NVME_SC_SUCCESS);
  t.true(unwrittenBlockIntact(s.mem.u8, buf, 2, SEED), 'the cached entry still translated');
  s.iotlb.invalidate(iova(buf), PAGE);
  s.queueRw([{ opcode: NVME_CMD_READ, slba: 3, blockCount: 1, prp1: iova(buf) }]);
  s.ring();
  t.is(cqe(s.mem, 2).status, NVME_SC_DMA_FAULT);
});

// DeviceEngine.step (packages/nvme-device/src/engine.ts) drains the host's
// IOTLB-invalidation ring again before each doorbell it handles. The host
// publishes an invalidation before it replies, so everything a doorbell
// depends on is in the ring by then. Without that drain, a doorbell read
// during the loop is handled with a stale IOTLB entry: the guest unmapped an
// IOVA, mapped it again to another page and rang the doorbell, and the device
// writes the old page. This test makes that interleaving deterministic by
// publishing, from inside the first doorbell's handling, what the host and the
// guest would publish meanwhile.
test("engine: an IOTLB invalidation the host published before a doorbell is applied before that doorbell's DMA", (t) => {
  const mem = attachGuestMemory(new SharedArrayBuffer(RAM_BYTES));
  const pgHandle = IoPgtable.allocate({ tablePages: 64 });
  const pgtable = IoPgtable.attach(pgHandle);
  const control = RunControl.attach(RunControl.allocate());
  const dbH = Ring.allocate({ capacityRecords: 64 });
  const invalH = Ring.allocate({ capacityRecords: 64 });
  const irqH = Ring.allocate({ capacityRecords: 64 });
  const irq = Ring.attach(irqH);
  const engine = new DeviceEngine(
    {
      clockMode: 'virtual',
      dilation: 1,
      epochMs: 0,
      spinLoads: 100,
      costs: profile,
      guestRam: mem.u8.buffer as SharedArrayBuffer,
      pgtable: pgHandle,
      doorbellRings: [dbH],
      irqRings: [irqH],
      invalRings: [invalH],
      vcpuWorkers: [0],
      vcpuOfCq: [0, 0],
      namespace: { sizeBlocks: NS_BLOCKS, seed: SEED },
    },
    1,
    control,
  );
  control.publishEot(0, NEVER_NS); // the vCPU is idle: the device may post everything
  const ctrl = engine.ctrl;
  for (const q of [ASQ, ACQ, SQ, CQ]) pgtable.map(iova(q), q, PAGE, RW);
  // bring-up straight through the controller
  ctrl.registerWrite(NVME_REG_AQA, (31 << 16) | 31, 0);
  ctrl.registerWrite(NVME_REG_ASQ, iova(ASQ), 0);
  ctrl.registerWrite(NVME_REG_ACQ, iova(ACQ), 0);
  ctrl.registerWrite(NVME_REG_CC, 1, 0);
  writeSqe(mem, ASQ, { opcode: NVME_ADMIN_CREATE_CQ, commandId: 0, prp1: iova(CQ), cdw10: ((CQ_DEPTH - 1) << 16) | 1, cdw11: 3 });
  writeSqe(mem, ASQ + NVME_SQE_BYTES, { opcode: NVME_ADMIN_CREATE_SQ, commandId: 1, prp1: iova(SQ), cdw10: ((SQ_DEPTH - 1) << 16) | 1, cdw11: (1 << 16) | 1 });
  ctrl.onDoorbell(0, DOORBELL_SQ_TAIL, 2, 0);
  ctrl.postCompletionsUpTo(Number.MAX_SAFE_INTEGER, () => {});
  const db = Ring.attach(dbH);
  const inval = Ring.attach(invalH);
  let tail = 0;
  let ts = 1_000_000;
  const submitRead = (slba: number, bufIova: number) => {
    writeRwSqe(mem, SQ + tail * NVME_SQE_BYTES, { opcode: NVME_CMD_READ, commandId: 10 + tail, nsid: 1, slba, blockCount: 1, prp1: bufIova, prp2: 0 });
    tail++;
    encodeDoorbell(db.dv, db.reserve(100, control), (ts += 10_000), 1, DOORBELL_SQ_TAIL, tail);
    db.publish();
  };
  const X = iova(0x100_0000); // the IOVA that is reused
  const oldPage = DATA;
  const newPage = DATA + 0x1_0000;
  const other = DATA + 0x2_0000;
  pgtable.map(X, oldPage, PAGE, RW);
  pgtable.map(iova(other), other, PAGE, RW);
  // 1. a read through X completes: the IOTLB now caches X → oldPage
  submitRead(1, X);
  engine.step();
  irq.release(irq.available());
  t.true(unwrittenBlockIntact(mem.u8, oldPage, 1, SEED));
  // 2. another read is rung; while the device handles it, the guest unmaps X
  //    (host: page table cleared, invalidation queued), maps X → newPage and rings a read into X
  submitRead(2, iova(other));
  const onDoorbell = ctrl.onDoorbell.bind(ctrl);
  let injected = false;
  ctrl.onDoorbell = (qid, which, value, tsNs) => {
    onDoorbell(qid, which, value, tsNs);
    if (injected) return;
    injected = true;
    pgtable.unmap(X, PAGE);
    encodeIotlbInval(inval.dv, inval.reserve(100, control), tsNs + 1000, X, PAGE);
    inval.publish();
    pgtable.map(X, newPage, PAGE, RW);
    submitRead(3, X);
  };
  const oldBytes = mem.u8.slice(oldPage, oldPage + PAGE);
  for (let i = 0; i < 4; i++) {
    engine.step();
    irq.release(irq.available()); // the vCPU takes its interrupts
  }
  t.true(injected);
  const third = readCqe(mem, CQ + 2 * NVME_CQE_BYTES);
  t.deepEqual([third.commandId, third.phase, third.status], [12, 1, NVME_SC_SUCCESS], 'the third read completed');
  t.true(Buffer.from(mem.u8.subarray(oldPage, oldPage + PAGE)).equals(Buffer.from(oldBytes)), 'the old page, no longer mapped at X, was not written');
  t.true(unwrittenBlockIntact(mem.u8, newPage, 3, SEED), 'block 3 landed in the page X maps now');
});
