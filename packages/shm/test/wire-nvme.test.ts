import type { ExecutionContext } from 'ava';
import test from 'ava';
import { mulberry32Float } from '../src/prng.js';
import type { NvmeCqe, NvmeDmaSegment, NvmePrpListPage, NvmeSqe } from '../src/wire/nvme.js';
import {
  cqePhase,
  NVME_ADMIN_CREATE_CQ,
  NVME_ADMIN_CREATE_SQ,
  NVME_ADMIN_DELETE_CQ,
  NVME_ADMIN_DELETE_SQ,
  NVME_ADMIN_IDENTIFY,
  NVME_CMD_FLUSH,
  NVME_CMD_READ,
  NVME_CMD_WRITE,
  NVME_SC_ACCESS_DENIED,
  NVME_SC_DATA_XFER_ERROR,
  NVME_SC_DMA_FAULT,
  NVME_SC_DNR,
  NVME_SC_INVALID_FIELD,
  NVME_SC_INVALID_OPCODE,
  NVME_SC_LBA_RANGE,
  NVME_SC_PRP_INVALID_OFFSET,
  NVME_SC_SUCCESS,
  NVME_SCT_MEDIA,
  NvmePrpError,
  nvmeSetupPrps,
  nvmeStatusCode,
  nvmeStatusName,
  nvmeStatusType,
  nvmeWalkPrps,
  readCqe,
  readSqe,
  sqeRwFields,
  writeCqe,
  writeRwSqe,
  writeSqe,
} from '../src/wire/nvme.js';
import type { GuestMemory } from '../src/wire/virtqueue.js';
import { attachGuestMemory } from '../src/wire/virtqueue.js';

const mulberry32 = mulberry32Float;

const PAGE = 4096;
const KiB = 1024;
const MiB = 1024 * KiB;

function canaryRam(rand: () => number, bytes: number): { mem: GuestMemory; before: Uint8Array } {
  const mem = attachGuestMemory(new SharedArrayBuffer(bytes));
  for (let i = 0; i < bytes; i++) mem.u8[i] = Math.floor(rand() * 256);
  return { mem, before: mem.u8.slice() };
}

/** Every byte outside the given [from, to) ranges is unchanged. */
function assertOnlyTouched(t: ExecutionContext, mem: GuestMemory, before: Uint8Array, ranges: [number, number][]): void {
  for (let i = 0; i < mem.sizeBytes; i++) {
    if (ranges.some(([a, b]) => i >= a && i < b)) continue;
    if (mem.u8[i] !== before[i]) {
      t.fail(`byte at ${i} changed outside ${JSON.stringify(ranges)}`);
      return;
    }
  }
  t.pass();
}

const u32 = (r: () => number): number => Math.floor(r() * 2 ** 32);
const u16 = (r: () => number): number => Math.floor(r() * 2 ** 16);
const le64 = (mem: GuestMemory, gpa: number): number => Number(mem.dv.getBigUint64(gpa, true));

test('opcodes and status codes have the spec values', (t) => {
  t.deepEqual([NVME_ADMIN_DELETE_SQ, NVME_ADMIN_CREATE_SQ, NVME_ADMIN_DELETE_CQ, NVME_ADMIN_CREATE_CQ, NVME_ADMIN_IDENTIFY], [0, 1, 4, 5, 6]);
  t.deepEqual([NVME_CMD_FLUSH, NVME_CMD_WRITE, NVME_CMD_READ], [0, 1, 2]);
  t.deepEqual([NVME_SC_SUCCESS, NVME_SC_INVALID_OPCODE, NVME_SC_INVALID_FIELD, NVME_SC_DATA_XFER_ERROR, NVME_SC_LBA_RANGE], [0, 1, 2, 4, 0x80]);
  t.is(nvmeStatusType(NVME_SC_ACCESS_DENIED), NVME_SCT_MEDIA);
  t.is(nvmeStatusCode(NVME_SC_ACCESS_DENIED), 0x86);
  t.is(NVME_SC_DMA_FAULT, NVME_SC_DATA_XFER_ERROR | NVME_SC_DNR);
  t.is(nvmeStatusName(NVME_SC_DMA_FAULT), 'DATA_XFER_ERROR (SCT 0 SC 0x04) DNR');
  t.is(nvmeStatusName(NVME_SC_ACCESS_DENIED), 'ACCESS_DENIED (SCT 2 SC 0x86)');
  t.is(nvmeStatusName(0x1ff), 'UNKNOWN (SCT 1 SC 0xff)');
});

test('SQE: 64 bytes at the spec offsets, round trip, no overrun (seeded)', (t) => {
  const rand = mulberry32(99);
  const RAM = 16 * KiB;
  for (let iter = 0; iter < 200; iter++) {
    const { mem, before } = canaryRam(rand, RAM);
    const gpa = 64 * Math.floor(rand() * (RAM / 64));
    const sqe: NvmeSqe = {
      opcode: Math.floor(rand() * 256),
      flags: Math.floor(rand() * 256),
      commandId: u16(rand),
      nsid: u32(rand),
      cdw2: u32(rand),
      cdw3: u32(rand),
      mptr: Math.floor(rand() * 2 ** 48),
      prp1: Math.floor(rand() * 2 ** 46) * 4,
      prp2: Math.floor(rand() * 2 ** 36) * PAGE,
      cdw10: u32(rand),
      cdw11: u32(rand),
      cdw12: u32(rand),
      cdw13: u32(rand),
      cdw14: u32(rand),
      cdw15: u32(rand),
    };
    writeSqe(mem, gpa, sqe);
    const dv = mem.dv;
    t.deepEqual(
      [mem.u8[gpa], mem.u8[gpa + 1], dv.getUint16(gpa + 2, true), dv.getUint32(gpa + 4, true), dv.getUint32(gpa + 8, true), dv.getUint32(gpa + 12, true)],
      [sqe.opcode, sqe.flags, sqe.commandId, sqe.nsid, sqe.cdw2, sqe.cdw3],
    );
    t.deepEqual([le64(mem, gpa + 16), le64(mem, gpa + 24), le64(mem, gpa + 32)], [sqe.mptr, sqe.prp1, sqe.prp2]);
    t.deepEqual(
      [40, 44, 48, 52, 56, 60].map((o) => dv.getUint32(gpa + o, true)),
      [sqe.cdw10, sqe.cdw11, sqe.cdw12, sqe.cdw13, sqe.cdw14, sqe.cdw15],
    );
    t.deepEqual(readSqe(mem, gpa), sqe);
    const out = readSqe(mem, 0);
    t.is(readSqe(mem, gpa, out), out, 'read into the record given');
    t.deepEqual(out, sqe);
    assertOnlyTouched(t, mem, before, [[gpa, gpa + 64]]);
  }
});

test('SQE: unspecified fields are written as zero; out-of-range values are refused', (t) => {
  const mem = attachGuestMemory(new SharedArrayBuffer(4096));
  mem.u8.fill(0xa5);
  writeSqe(mem, 64, { opcode: NVME_CMD_FLUSH, commandId: 7, nsid: 1 });
  t.deepEqual(readSqe(mem, 64), {
    opcode: 0,
    flags: 0,
    commandId: 7,
    nsid: 1,
    cdw2: 0,
    cdw3: 0,
    mptr: 0,
    prp1: 0,
    prp2: 0,
    cdw10: 0,
    cdw11: 0,
    cdw12: 0,
    cdw13: 0,
    cdw14: 0,
    cdw15: 0,
  });
  t.throws(() => writeSqe(mem, 0, { opcode: 256, commandId: 0 }), { instanceOf: RangeError });
  t.throws(() => writeSqe(mem, 0, { opcode: 1, commandId: 65536 }), { instanceOf: RangeError });
  t.throws(() => writeSqe(mem, 0, { opcode: 1, commandId: 1, prp1: 2 ** 53 }), { instanceOf: RangeError });
});

test('read/write SQE: SLBA in CDW10–11, 0-based NLB in CDW12 bits 15:0, FUA bit 30', (t) => {
  const mem = attachGuestMemory(new SharedArrayBuffer(4096));
  writeRwSqe(mem, 0, { opcode: NVME_CMD_READ, commandId: 0x1234, nsid: 1, slba: 0x1_2345_6789, blockCount: 8, prp1: 0x7000_0000_1200, prp2: 0x7000_0000_2000 });
  const dv = mem.dv;
  t.is(mem.u8[0], NVME_CMD_READ);
  t.is(dv.getUint16(2, true), 0x1234);
  t.is(dv.getUint32(40, true), 0x2345_6789);
  t.is(dv.getUint32(44, true), 1);
  t.is(dv.getUint32(48, true), 7);
  t.is(le64(mem, 24), 0x7000_0000_1200);
  t.deepEqual(sqeRwFields(readSqe(mem, 0)), { slba: 0x1_2345_6789, blockCount: 8, fua: false });
  writeRwSqe(mem, 64, { opcode: NVME_CMD_WRITE, commandId: 1, nsid: 1, slba: 0, blockCount: 65536, prp1: 0, prp2: 0, fua: true });
  t.is(dv.getUint32(64 + 48, true), 0x4000_ffff);
  t.deepEqual(sqeRwFields(readSqe(mem, 64)), { slba: 0, blockCount: 65536, fua: true });
  t.throws(() => writeRwSqe(mem, 0, { opcode: NVME_CMD_READ, commandId: 1, nsid: 1, slba: 0, blockCount: 0, prp1: 0, prp2: 0 }), { instanceOf: RangeError });
  t.throws(() => writeRwSqe(mem, 0, { opcode: NVME_CMD_READ, commandId: 1, nsid: 1, slba: 0, blockCount: 65537, prp1: 0, prp2: 0 }), {
    instanceOf: RangeError,
  });
});

test('read/write SQE: the same 64 bytes writeSqe writes for those fields, every other byte zeroed', (t) => {
  const a = attachGuestMemory(new SharedArrayBuffer(4096));
  const b = attachGuestMemory(new SharedArrayBuffer(4096));
  a.u8.fill(0xa5);
  b.u8.fill(0x5a);
  const f = { opcode: NVME_CMD_WRITE, commandId: 77, nsid: 3, slba: 2 ** 40 + 5, blockCount: 300, prp1: 0x1000, prp2: 0x9000, fua: true } as const;
  writeRwSqe(a, 128, f);
  writeSqe(b, 128, {
    opcode: f.opcode,
    commandId: f.commandId,
    nsid: f.nsid,
    prp1: f.prp1,
    prp2: f.prp2,
    cdw10: f.slba >>> 0,
    cdw11: Math.floor(f.slba / 2 ** 32),
    cdw12: (f.blockCount - 1) | (1 << 30),
  });
  t.deepEqual([...a.u8.subarray(128, 192)], [...b.u8.subarray(128, 192)]);
  t.is(a.u8[127], 0xa5);
  t.is(a.u8[192], 0xa5);
});

test('CQE: 16 bytes at the spec offsets; status word = status field << 1 | phase; no overrun (seeded)', (t) => {
  const rand = mulberry32(4242);
  const RAM = 8 * KiB;
  for (let iter = 0; iter < 200; iter++) {
    const { mem, before } = canaryRam(rand, RAM);
    const gpa = 16 * Math.floor(rand() * (RAM / 16));
    const c: NvmeCqe = {
      dw0: u32(rand),
      dw1: u32(rand),
      sqHead: u16(rand),
      sqId: u16(rand),
      commandId: u16(rand),
      status: Math.floor(rand() * 0x8000),
      phase: rand() < 0.5 ? 0 : 1,
    };
    writeCqe(mem, gpa, c);
    const dv = mem.dv;
    t.deepEqual(
      [
        dv.getUint32(gpa, true),
        dv.getUint32(gpa + 4, true),
        dv.getUint16(gpa + 8, true),
        dv.getUint16(gpa + 10, true),
        dv.getUint16(gpa + 12, true),
        dv.getUint16(gpa + 14, true),
      ],
      [c.dw0, c.dw1, c.sqHead, c.sqId, c.commandId, (c.status << 1) | c.phase],
    );
    t.deepEqual(readCqe(mem, gpa), c);
    const out = { dw0: 1, dw1: 1, sqHead: 1, sqId: 1, commandId: 1, status: 1, phase: 0 };
    t.is(readCqe(mem, gpa, out), out, 'read into the record given');
    t.deepEqual(out, c);
    t.is(cqePhase(mem, gpa), c.phase);
    assertOnlyTouched(t, mem, before, [[gpa, gpa + 16]]);
  }
});

test('CQE status bits: P bit 0, SC bits 8:1, SCT bits 11:9, DNR bit 15', (t) => {
  const mem = attachGuestMemory(new SharedArrayBuffer(4096));
  const base = { dw0: 0, dw1: 0, sqHead: 3, sqId: 1, commandId: 9 };
  writeCqe(mem, 0, { ...base, status: NVME_SC_DMA_FAULT, phase: 1 });
  t.is(mem.dv.getUint16(14, true), 0b1000_0000_0000_1001); // DNR | SC 0x04 << 1 | P
  writeCqe(mem, 16, { ...base, status: NVME_SC_LBA_RANGE, phase: 0 });
  t.is(mem.dv.getUint16(16 + 14, true), 0x80 << 1);
  writeCqe(mem, 32, { ...base, status: NVME_SC_ACCESS_DENIED, phase: 1 });
  const w = mem.dv.getUint16(32 + 14, true);
  t.deepEqual([w & 1, (w >> 1) & 0xff, (w >> 9) & 7, w >> 15], [1, 0x86, 2, 0]);
  t.throws(() => writeCqe(mem, 8, { ...base, status: 0, phase: 0 }), { instanceOf: RangeError });
  t.throws(() => writeCqe(mem, 0, { ...base, status: 0x8000, phase: 0 }), { instanceOf: RangeError });
  t.throws(() => writeCqe(mem, 0, { ...base, status: 0, phase: 2 }), { instanceOf: RangeError });
});

// ---------------------------------------------------------------- PRPs

const IOVA_LIST_BASE = 0x7f00_0000_0000; // list pages: dma = IOVA_LIST_BASE + gpa (< 2^48)

interface PrpRig {
  mem: GuestMemory;
  before: Uint8Array;
  alloc: () => NvmePrpListPage;
  readListEntry: (dma: number) => number;
  reads: number;
}

function prpRig(rand: () => number, ramBytes = 64 * KiB): PrpRig {
  const { mem, before } = canaryRam(rand, ramBytes);
  let next = PAGE; // page 0 unused
  const allocated = new Set<number>();
  const rig: PrpRig = {
    mem,
    before,
    alloc: () => {
      const gpa = next;
      next += PAGE;
      allocated.add(gpa);
      return { gpa, dmaAddr: IOVA_LIST_BASE + gpa };
    },
    readListEntry: (dma: number) => {
      const gpa = dma - IOVA_LIST_BASE;
      if (!allocated.has(gpa - (gpa % PAGE))) throw new Error(`IOMMU fault at ${dma.toString(16)}`);
      rig.reads++;
      return le64(mem, gpa);
    },
    reads: 0,
  };
  return rig;
}

function randomPages(rand: () => number, n: number): number[] {
  const seen = new Set<number>();
  const pages: number[] = [];
  while (pages.length < n) {
    const p = Math.floor(rand() * 2 ** 35) * PAGE;
    if (!seen.has(p)) {
      seen.add(p);
      pages.push(p);
    }
  }
  return pages;
}

function expectedSegments(pages: number[], off: number, len: number): NvmeDmaSegment[] {
  const segs: NvmeDmaSegment[] = [{ dmaAddr: pages[0] + off, lenBytes: Math.min(len, PAGE - off) }];
  let rem = len - segs[0].lenBytes;
  for (let k = 1; rem > 0; k++) {
    const n = Math.min(rem, PAGE);
    segs.push({ dmaAddr: pages[k], lenBytes: n });
    rem -= n;
  }
  return segs;
}

const sizes: [string, number][] = [
  ['4 KiB', 4 * KiB],
  ['8 KiB', 8 * KiB],
  ['16 KiB', 16 * KiB],
  ['128 KiB', 128 * KiB],
  ['2 MiB', 2 * MiB],
  ['2 MiB + 8 KiB', 2 * MiB + 8 * KiB],
  ['4 MiB', 4 * MiB],
];

for (const [label, len] of sizes) {
  for (const off of [0, 512, 4092]) {
    test(`PRP setup + walk: ${label} at first-page offset ${off}`, (t) => {
      const rand = mulberry32(len ^ (off * 7919));
      const rig = prpRig(rand, 64 * KiB);
      const pageCount = Math.ceil((off + len) / PAGE);
      const pages = randomPages(rand, pageCount);
      const r = nvmeSetupPrps(rig.mem, pages, off, len, rig.alloc);
      t.is(r.prp1, pages[0] + off);
      const entries = pageCount - 1;
      const expectedListPages = pageCount <= 2 ? 0 : entries <= 512 ? 1 : 1 + Math.ceil((entries - 512) / 511);
      t.is(r.listPages.length, expectedListPages);
      if (pageCount === 1) t.is(r.prp2, 0);
      else if (pageCount === 2) t.is(r.prp2, pages[1]);
      else t.is(r.prp2, r.listPages[0].dmaAddr);

      // raw list contents: data entries in order, last slot of a full page chains to the next page
      const flat: number[] = [];
      const touched: [number, number][] = [];
      let left = entries;
      r.listPages.forEach((p, i) => {
        const lastPage = i === r.listPages.length - 1;
        const dataSlots = lastPage ? left : 511;
        for (let s = 0; s < dataSlots; s++) flat.push(le64(rig.mem, p.gpa + 8 * s));
        if (!lastPage) t.is(le64(rig.mem, p.gpa + 8 * 511), r.listPages[i + 1].dmaAddr, 'chain pointer');
        touched.push([p.gpa, p.gpa + 8 * (lastPage ? dataSlots : 512)]);
        left -= dataSlots;
      });
      if (pageCount > 2) t.deepEqual(flat, pages.slice(1, pageCount));
      assertOnlyTouched(t, rig.mem, rig.before, touched);

      const segs = nvmeWalkPrps(r.prp1, r.prp2, len, rig.readListEntry);
      t.deepEqual(segs, expectedSegments(pages, off, len));
      t.is(
        segs.reduce((s, x) => s + x.lenBytes, 0),
        len,
      );
      t.is(rig.reads, pageCount <= 2 ? 0 : entries + expectedListPages - 1, 'one list read per data entry and per chain pointer');
    });
  }
}

test('PRP: exactly 512 list entries fit one page with no chain (the last slot is data)', (t) => {
  const rand = mulberry32(512);
  const rig = prpRig(rand);
  const len = 2 * MiB;
  const pages = randomPages(rand, 513);
  const r = nvmeSetupPrps(rig.mem, pages, 512, len, rig.alloc);
  t.is(r.listPages.length, 1);
  t.is(le64(rig.mem, r.listPages[0].gpa + 8 * 511), pages[512]);
  t.deepEqual(nvmeWalkPrps(r.prp1, r.prp2, len, rig.readListEntry), expectedSegments(pages, 512, len));
});

test('PRP setup validates its inputs', (t) => {
  const rand = mulberry32(1);
  const rig = prpRig(rand);
  const pages = randomPages(rand, 4);
  t.throws(() => nvmeSetupPrps(rig.mem, pages, 2, 4096, rig.alloc), { instanceOf: RangeError }, 'offset not dword aligned');
  t.throws(() => nvmeSetupPrps(rig.mem, pages, 4096, 4096, rig.alloc), { instanceOf: RangeError });
  t.throws(() => nvmeSetupPrps(rig.mem, pages, 0, 0, rig.alloc), { instanceOf: RangeError });
  t.throws(() => nvmeSetupPrps(rig.mem, pages, 0, 5 * PAGE, rig.alloc), { instanceOf: RangeError }, 'too few pages');
  t.throws(() => nvmeSetupPrps(rig.mem, [pages[0], pages[1] + 8], 0, 2 * PAGE, rig.alloc), { instanceOf: RangeError }, 'unaligned page');
  t.throws(() => nvmeSetupPrps(rig.mem, pages, 0, 4 * PAGE, () => ({ gpa: 100, dmaAddr: IOVA_LIST_BASE })), { instanceOf: RangeError }, 'unaligned list page');
  // bigint page addresses are accepted
  const big = nvmeSetupPrps(rig.mem, pages.map(BigInt), 8, 2 * PAGE - 8, rig.alloc);
  t.deepEqual(big, { prp1: pages[0] + 8, prp2: pages[1], listPages: [] });
});

test('PRP walk: a list pointer with a qword-aligned offset, chaining at the end of its page', (t) => {
  const mem = attachGuestMemory(new SharedArrayBuffer(4 * PAGE));
  const listA = PAGE + PAGE - 16; // two slots left in the page
  const listB = 2 * PAGE;
  const data = [0x10_0000, 0x20_0000, 0x30_0000, 0x40_0000];
  mem.dv.setBigUint64(listA, BigInt(data[1]), true);
  mem.dv.setBigUint64(listA + 8, BigInt(listB), true); // last slot, more than a page left → chain
  mem.dv.setBigUint64(listB, BigInt(data[2]), true);
  mem.dv.setBigUint64(listB + 8, BigInt(data[3]), true);
  const read = (dma: number): bigint => mem.dv.getBigUint64(dma, true);
  t.deepEqual(
    nvmeWalkPrps(data[0], listA, 4 * PAGE, read),
    data.map((dmaAddr) => ({ dmaAddr, lenBytes: PAGE })),
  );
});

test('PRP walk enforces the offset rules with PRP_INVALID_OFFSET | DNR', (t) => {
  const rand = mulberry32(31337);
  const statusOf = (f: () => unknown): number | undefined => t.throws(f, { instanceOf: NvmePrpError })?.status;
  const bad = NVME_SC_PRP_INVALID_OFFSET | NVME_SC_DNR;
  const pages = randomPages(rand, 8);
  const never = (): number => {
    throw new Error('list must not be read');
  };
  t.is(
    statusOf(() => nvmeWalkPrps(pages[0] + 2, 0, 512, never)),
    bad,
    'PRP1 not dword aligned',
  );
  t.is(
    statusOf(() => nvmeWalkPrps(pages[0], pages[1] + 4, 2 * PAGE, never)),
    bad,
    'PRP2 data pointer with an offset',
  );
  t.is(
    statusOf(() => nvmeWalkPrps(pages[0], IOVA_LIST_BASE + PAGE + 4, 3 * PAGE, never)),
    bad,
    'list pointer not qword aligned',
  );

  const rig = prpRig(rand);
  let r = nvmeSetupPrps(rig.mem, pages, 0, 6 * PAGE, rig.alloc);
  rig.mem.dv.setBigUint64(r.listPages[0].gpa + 8 * 2, BigInt(pages[3] + 0x200), true);
  t.is(
    statusOf(() => nvmeWalkPrps(r.prp1, r.prp2, 6 * PAGE, rig.readListEntry)),
    bad,
    'list entry with an offset',
  );

  const many = randomPages(rand, 600);
  r = nvmeSetupPrps(rig.mem, many, 0, 600 * PAGE, rig.alloc);
  rig.mem.dv.setBigUint64(r.listPages[0].gpa + 8 * 511, BigInt(r.listPages[1].dmaAddr + 8), true);
  t.is(
    statusOf(() => nvmeWalkPrps(r.prp1, r.prp2, 600 * PAGE, rig.readListEntry)),
    bad,
    'chain pointer with an offset',
  );

  // 1-page transfers ignore PRP2 entirely
  t.deepEqual(nvmeWalkPrps(pages[0] + 4, 0xdead, PAGE - 4, never), [{ dmaAddr: pages[0] + 4, lenBytes: PAGE - 4 }]);
});

test('PRP walk: a list that chains to itself still ends (length bounds the walk); list read faults propagate', (t) => {
  const mem = attachGuestMemory(new SharedArrayBuffer(2 * PAGE));
  const list = PAGE;
  for (let s = 0; s < 511; s++) mem.dv.setBigUint64(list + 8 * s, BigInt((s + 1) * PAGE), true);
  mem.dv.setBigUint64(list + 8 * 511, BigInt(list), true); // chain back to itself
  const read = (dma: number): bigint => mem.dv.getBigUint64(dma, true);
  const len = 3000 * PAGE;
  const segs = nvmeWalkPrps(0, list, len, read);
  t.is(segs.length, 3000);
  t.is(
    segs.reduce((s, x) => s + x.lenBytes, 0),
    len,
  );
  t.throws(
    () =>
      nvmeWalkPrps(0, 0x5000, 3 * PAGE, () => {
        throw new Error('IOMMU fault');
      }),
    { message: 'IOMMU fault' },
  );
});
