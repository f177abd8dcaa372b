/**
 * The guest's NVMe driver (Linux drivers/nvme/host/pci.c), one I/O queue
 * pair per vCPU: 64-byte SQEs written into the SQ in guest RAM, the SQ tail
 * doorbell (an MMIO write straight to the passed-through BAR: no VM exit),
 * PRP1/PRP2 and PRP lists, and completions found by the CQ phase bit.
 */

import {
  type AbortFlag,
  BLOCK_BYTES,
  encodeDoorbell,
  encodeRegWrite,
  type Gpa,
  type GuestMemory,
  type Iova,
  NVME_CMD_READ,
  NVME_CMD_WRITE,
  NVME_CQE_BYTES,
  NVME_CTRL_PAGE_SIZE_BYTES,
  NVME_SQE_BYTES,
  type NvmeCqe,
  type NvmeRwFields,
  nvmeSetupPrps,
  type Ring,
  readCqe,
  type SentLog,
  writeRwSqe,
} from '@vmstack/shm';

/**
 * The controller's BAR as the driver writes it: every MMIO write (a
 * doorbell, a controller register) is one record on the vCPU's doorbell
 * ring, logged with its model time so the device's bound sees it before it
 * is consumed.
 */
export interface NvmeBar {
  readonly doorbells: Ring;
  readonly log: SentLog;
  readonly spinLoads: number;
  readonly abort: AbortFlag;
  /**
   * Doorbells leave a parked device asleep (`Ring.publishQuiet`): set when this vCPU is the
   * run's only one and time is virtual (on the wall clock nothing else would wake the device
   * in time), so nothing but it waits on the device, and it wakes the device whenever it
   * needs the device's bound (its EOT passing the device's wait threshold, an interrupt wait).
   * The device takes the doorbells at that wake-up, with the completions it posts then: one
   * wake-up per batch instead of one per doorbell. Model time is not affected.
   */
  readonly lazyWake?: boolean;
}

/** writel(value, q_db): the SQ tail or CQ head doorbell (`which`) of queue `qid`. */
export function nvme_write_doorbell(bar: NvmeBar, nowNs: number, qid: number, which: number, value: number): void {
  const r = bar.doorbells;
  const seq = r.nextSeq();
  const off = r.reserve(bar.spinLoads, bar.abort);
  encodeDoorbell(r.dv, off, nowNs, qid, which, value);
  bar.log.record(seq, nowNs);
  if (bar.lazyWake) r.publishQuiet();
  else r.publish();
}

/** writel/lo_hi_writeq to a controller register (NVME_REG_AQA, _ASQ, _ACQ, _CC). */
export function nvme_write_reg(bar: NvmeBar, nowNs: number, reg: number, value: number): void {
  const r = bar.doorbells;
  const seq = r.nextSeq();
  const off = r.reserve(bar.spinLoads, bar.abort);
  encodeRegWrite(r.dv, off, nowNs, reg, value);
  bar.log.record(seq, nowNs);
  r.publish();
}

export interface NvmeQueuePair {
  qid: number;
  sqGpa: number;
  cqGpa: number;
  depth: number;
  sqTail: number;
  cqHead: number;
  cqPhase: number;
}

/** A command's PRP list page: where the driver writes it (guest RAM) and the address the device reads it at. */
export interface PrpListPage {
  readonly gpa: Gpa;
  readonly dmaAddr: Iova;
}

export function newQueuePair(qid: number, sqGpa: number, cqGpa: number, depth: number): NvmeQueuePair {
  return { qid, sqGpa, cqGpa, depth, sqTail: 0, cqHead: 0, cqPhase: 1 };
}

/** Write an admin or I/O SQE at the tail; returns the new tail for the doorbell. */
export function nvme_submit_cmd(q: NvmeQueuePair, write: (gpa: number) => void): number {
  write(q.sqGpa + q.sqTail * NVME_SQE_BYTES);
  q.sqTail = (q.sqTail + 1) % q.depth;
  return q.sqTail;
}

/**
 * nvme_setup_rw + nvme_pci_setup_prps: an I/O of `bytes` at `slba` whose
 * buffer pages have the device addresses `dmaPages`. `prpPage` is this
 * command's PRP list page ({gpa, dmaAddr}) for transfers over two pages.
 */
export function nvme_queue_rw(
  mem: GuestMemory,
  q: NvmeQueuePair,
  isRead: boolean,
  commandId: number,
  slba: number,
  bytes: number,
  dmaPages: readonly Iova[],
  prpPage: PrpListPage,
): number {
  let prp1: number;
  let prp2: number;
  if (
    bytes >= 1 &&
    bytes <= 2 * NVME_CTRL_PAGE_SIZE_BYTES &&
    dmaPages.length >= Math.ceil(bytes / NVME_CTRL_PAGE_SIZE_BYTES) &&
    pagesAligned(dmaPages, bytes)
  ) {
    // one or two pages: PRP1 (and PRP2) are the pages themselves, as nvmeSetupPrps gives them, with no list page
    prp1 = dmaPages[0];
    prp2 = bytes > NVME_CTRL_PAGE_SIZE_BYTES ? dmaPages[1] : 0;
  } else {
    let used = false;
    const prps = nvmeSetupPrps(mem, dmaPages, 0, bytes, () => {
      if (used) throw new Error('nvme: transfer needs more than one PRP list page');
      used = true;
      return prpPage;
    });
    prp1 = prps.prp1;
    prp2 = prps.prp2;
  }
  const f = rwScratch;
  f.opcode = isRead ? NVME_CMD_READ : NVME_CMD_WRITE;
  f.commandId = commandId;
  f.slba = slba;
  f.blockCount = bytes / BLOCK_BYTES;
  f.prp1 = prp1;
  f.prp2 = prp2;
  writeRwSqe(mem, q.sqGpa + q.sqTail * NVME_SQE_BYTES, f);
  q.sqTail = (q.sqTail + 1) % q.depth;
  return q.sqTail;
}

/** The read/write SQE's fields, one record for every command (written out at once, nothing keeps it). */
const rwScratch: NvmeRwFields = { opcode: NVME_CMD_READ, commandId: 0, nsid: 1, slba: 0, blockCount: 1, prp1: 0, prp2: 0 };

/** The first one or two page addresses of a transfer of `bytes` are 4 KiB-aligned safe integers (what nvmeSetupPrps checks). */
function pagesAligned(pages: readonly Iova[], bytes: number): boolean {
  for (let i = 0; i * NVME_CTRL_PAGE_SIZE_BYTES < bytes; i++) {
    const a = pages[i];
    if (!Number.isSafeInteger(a) || a < 0 || a % NVME_CTRL_PAGE_SIZE_BYTES !== 0) return false;
  }
  return true;
}

/** nvme_process_cq: take the next CQE if its phase says it is new (read into `out` when given). */
export function nvme_next_cqe(mem: GuestMemory, q: NvmeQueuePair, out?: NvmeCqe): NvmeCqe | null {
  const c = readCqe(mem, q.cqGpa + q.cqHead * NVME_CQE_BYTES, out);
  if (c.phase !== q.cqPhase) return null;
  q.cqHead++;
  if (q.cqHead === q.depth) {
    q.cqHead = 0;
    q.cqPhase ^= 1;
  }
  return c;
}
