/**
 * NVMe submission/completion queue entries and PRP lists (NVM Express base
 * specification 1.4: §4.2 SQE, §4.6 CQE, §4.3 PRP; Linux
 * include/linux/nvme.h, drivers/nvme/host/pci.c nvme_pci_setup_prps; QEMU
 * hw/nvme nvme_map_prp for the device-side walk). Little-endian throughout.
 * The controller memory page size (CC.MPS) is 4 KiB, as Linux's
 * NVME_CTRL_PAGE_SIZE.
 *
 * Submission queue entry (64 B)
 * | offset | size | field |
 * |---|---|---|
 * | 0  | 1 | CDW0.OPC opcode |
 * | 1  | 1 | CDW0 flags: FUSE bits 1:0, PSDT bits 7:6 (0 = PRPs) |
 * | 2  | 2 | CDW0.CID command identifier |
 * | 4  | 4 | NSID |
 * | 8  | 8 | CDW2–3 |
 * | 16 | 8 | MPTR metadata pointer |
 * | 24 | 8 | DPTR.PRP1 |
 * | 32 | 8 | DPTR.PRP2 |
 * | 40 | 4 | CDW10 — read/write: SLBA bits 31:0 |
 * | 44 | 4 | CDW11 — read/write: SLBA bits 63:32 |
 * | 48 | 4 | CDW12 — read/write: NLB bits 15:0 (0-based), FUA bit 30, LR bit 31 |
 * | 52 | 4 | CDW13 |
 * | 56 | 4 | CDW14 |
 * | 60 | 4 | CDW15 |
 *
 * Completion queue entry (16 B)
 * | offset | size | field |
 * |---|---|---|
 * | 0  | 4 | DW0 command specific |
 * | 4  | 4 | DW1 command specific |
 * | 8  | 2 | SQHD submission queue head |
 * | 10 | 2 | SQID |
 * | 12 | 2 | CID |
 * | 14 | 2 | bit 0 phase tag P; bits 15:1 status field: SC 8:1, SCT 11:9, CRD 13:12, M 14, DNR 15 |
 *
 * A "status field" here is the CQE's bits 15:1 shifted down (Linux's
 * `le16_to_cpu(cqe->status) >> 1`): SC bits 7:0, SCT 10:8, CRD 12:11,
 * M bit 13, DNR bit 14 — so NVME_SC_* values match Linux's.
 *
 * The device writes DW0–CID with plain stores and the status/phase word
 * last with Atomics.store; the host's first read of a CQE is an
 * Atomics.load of that word (nvme_cqe_pending), so a CQE whose phase it sees
 * is complete.
 *
 * PRP list page (4 KiB, 512 u64 entries): each entry a page-aligned DMA
 * address; when more entries are needed than fit, the last entry (offset
 * 4088) points to the next list page instead.
 */

import { PAGE_SIZE_BYTES } from '../constants.js';
import type { GuestMemory } from './virtqueue.js';
import { readU64, writeU64 } from './virtqueue.js';

export const NVME_SQE_BYTES = 64;
export const NVME_CQE_BYTES = 16;
/** The controller memory page size (CC.MPS = 0): the machine's page size. */
export const NVME_CTRL_PAGE_SIZE_BYTES = PAGE_SIZE_BYTES;
export const NVME_PRP_ENTRY_BYTES = 8;
export const NVME_PRP_ENTRIES_PER_PAGE = NVME_CTRL_PAGE_SIZE_BYTES / NVME_PRP_ENTRY_BYTES;

// admin opcodes
export const NVME_ADMIN_DELETE_SQ = 0x00;
export const NVME_ADMIN_CREATE_SQ = 0x01;
export const NVME_ADMIN_DELETE_CQ = 0x04;
export const NVME_ADMIN_CREATE_CQ = 0x05;
export const NVME_ADMIN_IDENTIFY = 0x06;
// controller bring-up (Linux include/linux/nvme.h, drivers/nvme/host/pci.c)
/** Entries in the admin submission and completion queues. */
export const NVME_AQ_DEPTH = 32;
/** CC.EN: the controller processes commands. */
export const NVME_CC_ENABLE = 1 << 0;
/** Identify CDW10.CNS: the namespace's data structure, the controller's. */
export const NVME_ID_CNS_NS = 0x00;
export const NVME_ID_CNS_CTRL = 0x01;
/** Create I/O queue CDW11 flags: the queue is physically contiguous (PC); the CQ raises interrupts (IEN). */
export const NVME_QUEUE_PHYS_CONTIG = 1 << 0;
export const NVME_CQ_IRQ_ENABLED = 1 << 1;

/** AQA: the admin queue sizes, 0-based, ACQS in bits 27:16 and ASQS in bits 11:0. */
export function nvmeAqa(sqEntries: number, cqEntries: number): number {
  return ((cqEntries - 1) << 16) | (sqEntries - 1);
}

/** Create I/O SQ/CQ CDW10: QSIZE (0-based) in bits 31:16, QID in bits 15:0. */
export function nvmeCreateQueueCdw10(qid: number, entries: number): number {
  return ((entries - 1) << 16) | qid;
}

// NVM command set opcodes
export const NVME_CMD_FLUSH = 0x00;
export const NVME_CMD_WRITE = 0x01;
export const NVME_CMD_READ = 0x02;

/** CDW0 flags byte: PSDT (bits 7:6) = 0 selects PRPs; FUSE bits 1:0 = 0, a normal command */
export const NVME_CMD_PSDT_PRP = 0x00;
export const NVME_RW_FUA = 1 << 30;

export const NVME_SCT_GENERIC = 0;
export const NVME_SCT_COMMAND_SPECIFIC = 1;
export const NVME_SCT_MEDIA = 2;

// status field values: (SCT << 8) | SC, plus the M and DNR bits
export const NVME_SC_SUCCESS = 0x000;
export const NVME_SC_INVALID_OPCODE = 0x001;
export const NVME_SC_INVALID_FIELD = 0x002;
export const NVME_SC_DATA_XFER_ERROR = 0x004;
export const NVME_SC_INVALID_NS = 0x00b;
export const NVME_SC_PRP_INVALID_OFFSET = 0x013;
export const NVME_SC_LBA_RANGE = 0x080;
export const NVME_SC_CQ_INVALID = 0x100;
export const NVME_SC_QID_INVALID = 0x101;
export const NVME_SC_QUEUE_SIZE = 0x102;
export const NVME_SC_ACCESS_DENIED = 0x286;
export const NVME_SC_MORE = 0x2000;
export const NVME_SC_DNR = 0x4000;

/**
 * What the device posts when a DMA it issues faults in the IOMMU: generic
 * Data Transfer Error (SCT 0, SC 0x04) with Do Not Retry. The spec defines
 * 0x04 as "transferring the data or metadata associated with a command had
 * an error" — exactly a PCIe read or write that the IOMMU blocked — and QEMU's
 * NVMe model answers a failed DMA with it. Media "Access Denied" (SCT 2,
 * SC 0x86) means the host lacks access rights to the *media* (TCG/security
 * send-receive, namespace write protection) and Linux maps it to a medium
 * error, which would blame the disk for a host mapping bug. DNR because a
 * retry hits the same missing mapping; Linux then fails the request with
 * BLK_STS_IOERR at once instead of retrying nvme_max_retries times.
 */
export const NVME_SC_DMA_FAULT = NVME_SC_DATA_XFER_ERROR | NVME_SC_DNR;

const SC_NAMES: Readonly<Record<number, string>> = {
  [NVME_SC_SUCCESS]: 'SUCCESS',
  [NVME_SC_INVALID_OPCODE]: 'INVALID_OPCODE',
  [NVME_SC_INVALID_FIELD]: 'INVALID_FIELD',
  [NVME_SC_DATA_XFER_ERROR]: 'DATA_XFER_ERROR',
  [NVME_SC_INVALID_NS]: 'INVALID_NS',
  [NVME_SC_PRP_INVALID_OFFSET]: 'PRP_INVALID_OFFSET',
  [NVME_SC_LBA_RANGE]: 'LBA_RANGE',
  [NVME_SC_CQ_INVALID]: 'CQ_INVALID',
  [NVME_SC_QID_INVALID]: 'QID_INVALID',
  [NVME_SC_QUEUE_SIZE]: 'QUEUE_SIZE',
  [NVME_SC_ACCESS_DENIED]: 'ACCESS_DENIED',
};

/** SCT of a status field. */
export function nvmeStatusType(statusField: number): number {
  return (statusField >> 8) & 0x7;
}

/** SC of a status field. */
export function nvmeStatusCode(statusField: number): number {
  return statusField & 0xff;
}

/** e.g. `DATA_XFER_ERROR (SCT 0 SC 0x04) DNR`. */
export function nvmeStatusName(statusField: number): string {
  const key = statusField & 0x7ff;
  const sc = nvmeStatusCode(statusField);
  const name = SC_NAMES[key] ?? 'UNKNOWN';
  let s = `${name} (SCT ${nvmeStatusType(statusField)} SC 0x${sc.toString(16).padStart(2, '0')})`;
  if (statusField & NVME_SC_MORE) s += ' MORE';
  if (statusField & NVME_SC_DNR) s += ' DNR';
  return s;
}

// ---------------------------------------------------------------- SQE

export interface NvmeSqe {
  opcode: number;
  /** FUSE bits 1:0, PSDT bits 7:6 */
  flags: number;
  commandId: number;
  nsid: number;
  cdw2: number;
  cdw3: number;
  mptr: number;
  prp1: number;
  prp2: number;
  cdw10: number;
  cdw11: number;
  cdw12: number;
  cdw13: number;
  cdw14: number;
  cdw15: number;
}

/** An SQE to write: opcode and command id are required, the rest default to 0. */
export type NvmeSqeFields = Pick<NvmeSqe, 'opcode' | 'commandId'> & Partial<NvmeSqe>;

function checkUint(value: number, bits: 8 | 16 | 32, field: string): number {
  // (value >>> 0) === value: an integer in [0, 2^32); then the width's bound
  if (value >>> 0 !== value || value > (bits === 32 ? 0xffff_ffff : bits === 16 ? 0xffff : 0xff))
    throw new RangeError(`nvme ${field}: ${value} is not a u${bits}`);
  return value;
}

/** Write all 64 bytes of an SQE at `gpa`. */
export function writeSqe(mem: GuestMemory, gpa: number, f: NvmeSqeFields): void {
  const dv = mem.dv;
  mem.u8[gpa] = checkUint(f.opcode, 8, 'opcode');
  mem.u8[gpa + 1] = checkUint(f.flags ?? 0, 8, 'flags');
  dv.setUint16(gpa + 2, checkUint(f.commandId, 16, 'commandId'), true);
  dv.setUint32(gpa + 4, checkUint(f.nsid ?? 0, 32, 'nsid'), true);
  dv.setUint32(gpa + 8, checkUint(f.cdw2 ?? 0, 32, 'cdw2'), true);
  dv.setUint32(gpa + 12, checkUint(f.cdw3 ?? 0, 32, 'cdw3'), true);
  writeU64(dv, gpa + 16, f.mptr ?? 0, 'nvme mptr');
  writeU64(dv, gpa + 24, f.prp1 ?? 0, 'nvme prp1');
  writeU64(dv, gpa + 32, f.prp2 ?? 0, 'nvme prp2');
  dv.setUint32(gpa + 40, checkUint(f.cdw10 ?? 0, 32, 'cdw10'), true);
  dv.setUint32(gpa + 44, checkUint(f.cdw11 ?? 0, 32, 'cdw11'), true);
  dv.setUint32(gpa + 48, checkUint(f.cdw12 ?? 0, 32, 'cdw12'), true);
  dv.setUint32(gpa + 52, checkUint(f.cdw13 ?? 0, 32, 'cdw13'), true);
  dv.setUint32(gpa + 56, checkUint(f.cdw14 ?? 0, 32, 'cdw14'), true);
  dv.setUint32(gpa + 60, checkUint(f.cdw15 ?? 0, 32, 'cdw15'), true);
}

/** Read the SQE at `gpa` (the device's fetch); into `out` when given (a fetch loop reuses one record). */
export function readSqe(mem: GuestMemory, gpa: number, out?: NvmeSqe): NvmeSqe {
  const dv = mem.dv;
  if (out) {
    out.opcode = mem.u8[gpa];
    out.flags = mem.u8[gpa + 1];
    out.commandId = dv.getUint16(gpa + 2, true);
    out.nsid = dv.getUint32(gpa + 4, true);
    out.cdw2 = dv.getUint32(gpa + 8, true);
    out.cdw3 = dv.getUint32(gpa + 12, true);
    out.mptr = readU64(dv, gpa + 16);
    out.prp1 = readU64(dv, gpa + 24);
    out.prp2 = readU64(dv, gpa + 32);
    out.cdw10 = dv.getUint32(gpa + 40, true);
    out.cdw11 = dv.getUint32(gpa + 44, true);
    out.cdw12 = dv.getUint32(gpa + 48, true);
    out.cdw13 = dv.getUint32(gpa + 52, true);
    out.cdw14 = dv.getUint32(gpa + 56, true);
    out.cdw15 = dv.getUint32(gpa + 60, true);
    return out;
  }
  return {
    opcode: mem.u8[gpa],
    flags: mem.u8[gpa + 1],
    commandId: dv.getUint16(gpa + 2, true),
    nsid: dv.getUint32(gpa + 4, true),
    cdw2: dv.getUint32(gpa + 8, true),
    cdw3: dv.getUint32(gpa + 12, true),
    mptr: readU64(dv, gpa + 16),
    prp1: readU64(dv, gpa + 24),
    prp2: readU64(dv, gpa + 32),
    cdw10: dv.getUint32(gpa + 40, true),
    cdw11: dv.getUint32(gpa + 44, true),
    cdw12: dv.getUint32(gpa + 48, true),
    cdw13: dv.getUint32(gpa + 52, true),
    cdw14: dv.getUint32(gpa + 56, true),
    cdw15: dv.getUint32(gpa + 60, true),
  };
}

export interface NvmeRwFields {
  opcode: typeof NVME_CMD_READ | typeof NVME_CMD_WRITE;
  commandId: number;
  nsid: number;
  /** starting LBA */
  slba: number;
  /** logical blocks, 1..65536 (written 0-based as NLB) */
  blockCount: number;
  prp1: number;
  prp2: number;
  /** force unit access */
  fua?: boolean;
}

/** Linux nvme_setup_rw + the DPTR from nvmeSetupPrps: a complete read/write SQE. */
export function writeRwSqe(mem: GuestMemory, gpa: number, f: NvmeRwFields): void {
  if (!Number.isSafeInteger(f.slba) || f.slba < 0) throw new RangeError(`nvme slba: ${f.slba} is not an integer in [0, 2^53)`);
  if (!Number.isInteger(f.blockCount) || f.blockCount < 1 || f.blockCount > 0x10000)
    throw new RangeError(`nvme blockCount: ${f.blockCount} is not in [1, 65536]`);
  // writeSqe's bytes for these fields (every other field 0), written directly: one per I/O, no object
  const dv = mem.dv;
  mem.u8[gpa] = checkUint(f.opcode, 8, 'opcode');
  mem.u8[gpa + 1] = 0;
  dv.setUint16(gpa + 2, checkUint(f.commandId, 16, 'commandId'), true);
  dv.setUint32(gpa + 4, checkUint(f.nsid, 32, 'nsid'), true);
  dv.setUint32(gpa + 8, 0, true);
  dv.setUint32(gpa + 12, 0, true);
  writeU64(dv, gpa + 16, 0, 'nvme mptr');
  writeU64(dv, gpa + 24, f.prp1, 'nvme prp1');
  writeU64(dv, gpa + 32, f.prp2, 'nvme prp2');
  dv.setUint32(gpa + 40, f.slba >>> 0, true);
  dv.setUint32(gpa + 44, Math.floor(f.slba / 0x1_0000_0000), true);
  dv.setUint32(gpa + 48, ((f.blockCount - 1) | (f.fua ? NVME_RW_FUA : 0)) >>> 0, true);
  dv.setUint32(gpa + 52, 0, true);
  dv.setUint32(gpa + 56, 0, true);
  dv.setUint32(gpa + 60, 0, true);
}

/** SLBA and 1-based block count of a read/write SQE (slba exact below 2^53, see readU64). */
export function sqeRwFields(sqe: NvmeSqe): { slba: number; blockCount: number; fua: boolean } {
  return { slba: sqe.cdw11 * 0x1_0000_0000 + sqe.cdw10, blockCount: (sqe.cdw12 & 0xffff) + 1, fua: (sqe.cdw12 & NVME_RW_FUA) !== 0 };
}

// ---------------------------------------------------------------- CQE

export interface NvmeCqe {
  dw0: number;
  dw1: number;
  sqHead: number;
  sqId: number;
  commandId: number;
  /** status field (bits 15:1 of the last word, shifted down) */
  status: number;
  /** phase tag, 0 or 1 */
  phase: number;
}

function checkCqeGpa(gpa: number): void {
  if (gpa % NVME_CQE_BYTES !== 0) throw new RangeError(`nvme CQE at GPA ${gpa} is not 16-byte aligned`);
}

/** Device side: write a CQE, the status/phase word last (Atomics.store). */
export function writeCqe(mem: GuestMemory, gpa: number, c: NvmeCqe): void {
  checkCqeGpa(gpa);
  const dv = mem.dv;
  if (c.phase !== 0 && c.phase !== 1) throw new RangeError(`nvme CQE phase ${c.phase} is not 0 or 1`);
  if (!Number.isInteger(c.status) || c.status < 0 || c.status > 0x7fff) throw new RangeError(`nvme status field ${c.status} is not 15 bits`);
  dv.setUint32(gpa, checkUint(c.dw0, 32, 'dw0'), true);
  dv.setUint32(gpa + 4, checkUint(c.dw1, 32, 'dw1'), true);
  dv.setUint16(gpa + 8, checkUint(c.sqHead, 16, 'sqHead'), true);
  dv.setUint16(gpa + 10, checkUint(c.sqId, 16, 'sqId'), true);
  dv.setUint16(gpa + 12, checkUint(c.commandId, 16, 'commandId'), true);
  Atomics.store(mem.u16, (gpa + 14) >>> 1, (c.status << 1) | c.phase);
}

/** Host side: the phase tag of the CQE at `gpa` (Atomics.load). */
export function cqePhase(mem: GuestMemory, gpa: number): number {
  checkCqeGpa(gpa);
  return Atomics.load(mem.u16, (gpa + 14) >>> 1) & 1;
}

/** Host side: read a CQE, status/phase word first (Atomics.load), then the rest; into `out` when given. */
export function readCqe(mem: GuestMemory, gpa: number, out?: NvmeCqe): NvmeCqe {
  checkCqeGpa(gpa);
  const word = Atomics.load(mem.u16, (gpa + 14) >>> 1);
  const dv = mem.dv;
  if (out) {
    out.dw0 = dv.getUint32(gpa, true);
    out.dw1 = dv.getUint32(gpa + 4, true);
    out.sqHead = dv.getUint16(gpa + 8, true);
    out.sqId = dv.getUint16(gpa + 10, true);
    out.commandId = dv.getUint16(gpa + 12, true);
    out.status = word >>> 1;
    out.phase = word & 1;
    return out;
  }
  return {
    dw0: dv.getUint32(gpa, true),
    dw1: dv.getUint32(gpa + 4, true),
    sqHead: dv.getUint16(gpa + 8, true),
    sqId: dv.getUint16(gpa + 10, true),
    commandId: dv.getUint16(gpa + 12, true),
    status: word >>> 1,
    phase: word & 1,
  };
}

// ---------------------------------------------------------------- PRPs

export interface NvmePrpListPage {
  /** where the host writes the list */
  gpa: number;
  /** what the device is given (an IOVA, translated by the IOMMU) */
  dmaAddr: number;
}

export interface NvmePrps {
  prp1: number;
  prp2: number;
  /** list pages used, in chain order (to free after completion, as nvme_free_prps) */
  listPages: NvmePrpListPage[];
}

/** A DMA address range the device must access (one PRP entry's worth). */
export interface NvmeDmaSegment {
  dmaAddr: number;
  lenBytes: number;
}

/** A PRP rule broken; `status` is the status field the command completes with. */
export class NvmePrpError extends Error {
  constructor(
    readonly status: number,
    detail: string,
  ) {
    super(`nvme PRP: ${detail} → ${nvmeStatusName(status)}`);
    this.name = 'NvmePrpError';
  }
}

const PAGE = NVME_CTRL_PAGE_SIZE_BYTES;

function toAddress(v: bigint | number, what: string): number {
  const n = typeof v === 'bigint' ? Number(v) : v;
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${what}: ${String(v)} is not an address in [0, 2^53)`);
  return n;
}

/**
 * Host side, after Linux nvme_pci_setup_prps. `pages` are the 4 KiB-aligned
 * DMA addresses (IOVAs) of the buffer's pages in order; the data starts
 * `firstOffsetBytes` (dword aligned) into the first one and runs
 * `lengthBytes`. PRP1 = first page + offset; if the data ends within the
 * second page PRP2 = that page; otherwise PRP2 = a PRP list, filled page by
 * page from `allocPrpListPage` — a full page holds 512 entries, and when a
 * 513th is needed the last entry moves to the new page and is replaced by
 * the new page's DMA address. PRP2 is 0 for a one-page transfer. Extra
 * entries in `pages` are ignored.
 */
export function nvmeSetupPrps(
  mem: GuestMemory,
  pages: readonly (bigint | number)[],
  firstOffsetBytes: number,
  lengthBytes: number,
  allocPrpListPage: () => NvmePrpListPage,
): NvmePrps {
  if (!Number.isSafeInteger(lengthBytes) || lengthBytes < 1) throw new RangeError(`nvme PRP length ${lengthBytes} is not a positive integer`);
  if (!Number.isInteger(firstOffsetBytes) || firstOffsetBytes < 0 || firstOffsetBytes >= PAGE || firstOffsetBytes % 4 !== 0) {
    throw new RangeError(`nvme PRP first offset ${firstOffsetBytes} is not a dword-aligned offset within a 4 KiB page`);
  }
  const pageCount = Math.ceil((firstOffsetBytes + lengthBytes) / PAGE);
  if (pages.length < pageCount)
    throw new RangeError(`nvme PRP: ${lengthBytes} bytes at offset ${firstOffsetBytes} span ${pageCount} pages, ${pages.length} given`);
  const page = (i: number): number => {
    const a = toAddress(pages[i], `nvme PRP page ${i}`);
    if (a % PAGE !== 0) throw new RangeError(`nvme PRP page ${i} address ${a} is not 4 KiB aligned`);
    return a;
  };
  const prp1 = page(0) + firstOffsetBytes;
  if (pageCount === 1) return { prp1, prp2: 0, listPages: [] };
  if (pageCount === 2) return { prp1, prp2: page(1), listPages: [] };

  const listPages: NvmePrpListPage[] = [];
  const newListPage = (): NvmePrpListPage => {
    const p = allocPrpListPage();
    const gpa = toAddress(p.gpa, 'nvme PRP list page gpa');
    const dmaAddr = toAddress(p.dmaAddr, 'nvme PRP list page dmaAddr');
    if (gpa % PAGE !== 0 || dmaAddr % PAGE !== 0) throw new RangeError(`nvme PRP list page (gpa ${gpa}, dma ${dmaAddr}) is not 4 KiB aligned`);
    if (gpa + PAGE > mem.sizeBytes) throw new RangeError(`nvme PRP list page at GPA ${gpa} lies outside guest RAM`);
    listPages.push({ gpa, dmaAddr });
    return { gpa, dmaAddr };
  };
  const dv = mem.dv;
  let list = newListPage();
  let i = 0;
  for (let k = 1; k < pageCount; k++) {
    if (i === NVME_PRP_ENTRIES_PER_PAGE) {
      const old = list;
      list = newListPage();
      const lastSlot = old.gpa + PAGE - NVME_PRP_ENTRY_BYTES;
      writeU64(dv, list.gpa, readU64(dv, lastSlot));
      writeU64(dv, lastSlot, list.dmaAddr);
      i = 1;
    }
    writeU64(dv, list.gpa + NVME_PRP_ENTRY_BYTES * i++, page(k));
  }
  return { prp1, prp2: listPages[0].dmaAddr, listPages };
}

/**
 * Device side, after QEMU nvme_map_prp: the DMA segments a command's PRPs
 * describe, one per PRP entry. `readListEntry(dmaAddr)` fetches a u64 of a
 * PRP list (a DMA read the device issues; it may throw a translation
 * fault, which propagates). Checks: PRP1 dword aligned; PRP2 page aligned
 * when it is a data pointer, qword aligned when it is a list pointer (which
 * may start mid-page); every list entry and chain pointer page aligned.
 * A broken rule throws NvmePrpError with PRP_INVALID_OFFSET | DNR. A chain
 * pointer is only taken while more than a page remains and always leads to
 * a page-aligned list whose next 511 slots are data entries, so the walk
 * ends whatever the lists contain (cycles included).
 */
export function nvmeWalkPrps(prp1: number, prp2: number, lengthBytes: number, readListEntry: (dmaAddr: number) => bigint | number): NvmeDmaSegment[] {
  if (!Number.isSafeInteger(lengthBytes) || lengthBytes < 1) throw new RangeError(`nvme PRP length ${lengthBytes} is not a positive integer`);
  const bad = (detail: string): NvmePrpError => new NvmePrpError(NVME_SC_PRP_INVALID_OFFSET | NVME_SC_DNR, detail);
  if (prp1 % 4 !== 0) throw bad(`PRP1 ${prp1} is not dword aligned`);
  const first = Math.min(lengthBytes, PAGE - (prp1 % PAGE));
  const segments: NvmeDmaSegment[] = [{ dmaAddr: prp1, lenBytes: first }];
  let remaining = lengthBytes - first;
  if (remaining === 0) return segments;
  if (remaining <= PAGE) {
    if (prp2 % PAGE !== 0) throw bad(`PRP2 ${prp2} (second data page) is not page aligned`);
    segments.push({ dmaAddr: prp2, lenBytes: remaining });
    return segments;
  }
  if (prp2 % NVME_PRP_ENTRY_BYTES !== 0) throw bad(`PRP2 ${prp2} (PRP list pointer) is not qword aligned`);
  let slot = prp2;
  while (remaining > 0) {
    const entry = Number(readListEntry(slot));
    const lastSlotOfPage = slot % PAGE === PAGE - NVME_PRP_ENTRY_BYTES;
    if (lastSlotOfPage && remaining > PAGE) {
      if (entry % PAGE !== 0) throw bad(`PRP list chain pointer ${entry} at ${slot} is not page aligned`);
      slot = entry;
      continue;
    }
    if (entry % PAGE !== 0) throw bad(`PRP list entry ${entry} at ${slot} is not page aligned`);
    const n = Math.min(remaining, PAGE);
    segments.push({ dmaAddr: entry, lenBytes: n });
    remaining -= n;
    slot += NVME_PRP_ENTRY_BYTES;
  }
  return segments;
}
