/**
 * The NVMe controller: doorbells, SQE fetch, PRP walk, DMA through the host
 * IOMMU (IOTLB + page walk; a fault is counted, reported in the CQE status,
 * and moves no data), the media model, CQEs with the phase bit, and one
 * interrupt per posted completion.
 *
 * Every address the device uses — queues, PRP lists, data — is an IOVA
 * translated by the IOMMU, as for a passed-through device behind an IOMMU.
 * Completion times are fixed when a command is fetched (media.ts never
 * reorders earlier commands); the worker posts them in time order once no
 * vCPU can still send a doorbell that would complete earlier.
 */

import {
  BLOCK_BYTES,
  type DeviceFaultMode,
  DOORBELL_SQ_TAIL,
  type GuestMemory,
  ModelClock,
  NVME_ADMIN_CREATE_CQ,
  NVME_ADMIN_CREATE_SQ,
  NVME_ADMIN_DELETE_CQ,
  NVME_ADMIN_DELETE_SQ,
  NVME_ADMIN_IDENTIFY,
  NVME_CMD_FLUSH,
  NVME_CMD_READ,
  NVME_CMD_WRITE,
  NVME_CQE_BYTES,
  NVME_CTRL_PAGE_SIZE_BYTES,
  NVME_REG_ACQ,
  NVME_REG_AQA,
  NVME_REG_ASQ,
  NVME_REG_CC,
  NVME_SC_DMA_FAULT,
  NVME_SC_INVALID_FIELD,
  NVME_SC_INVALID_OPCODE,
  NVME_SC_LBA_RANGE,
  NVME_SC_QID_INVALID,
  NVME_SC_SUCCESS,
  NVME_SQE_BYTES,
  type NvmeCqe,
  NvmePrpError,
  type NvmeSqe,
  nvmeWalkPrps,
  readSqe,
  sqeRwFields,
  writeCqe,
} from '@vmstack/shm';
import { heapPop, heapPush } from './heap.js';
import type { NvmeNamespace } from './namespace.js';

/** What the controller needs from the IOMMU (iommu-hw's Iotlb fits). */
export interface DeviceIommu {
  /** host physical address (= offset in guest RAM) or a negative fault code */
  translate(iova: number, write: boolean, clock: ModelClock): number;
}

/** What the controller needs from the media model (media.ts). */
export interface DeviceMedia {
  /** opcode: NVME_CMD_READ or NVME_CMD_WRITE */
  schedule(opcode: number, bytes: number, arrivalNs: number): number;
  minServiceNs(): number;
}

export interface NvmeControllerCosts {
  nvmeDoorbellLatencyNs: number;
  nvmeSqeFetchNs: number;
  nvmeCqePostNs: number;
  msiLatencyNs: number;
  nvmeControllerCommandNs: number;
}

interface SubmissionQueue {
  qid: number;
  baseIova: number;
  sizeEntries: number;
  head: number;
  cqid: number;
}

interface CompletionQueue {
  qid: number;
  baseIova: number;
  sizeEntries: number;
  tail: number;
  phase: number;
  vector: number;
  /** host addresses of the queue's pages, translated once when the queue is created (the controller keeps them in its queue context) */
  pageHpas: number[];
}

/**
 * A command between fetch and completion. Records are reused (a free list):
 * nothing is allocated per command once the queue depth has been reached.
 */
interface PendingCompletion {
  completionNs: number;
  seq: number;
  sqid: number;
  cqid: number;
  commandId: number;
  sqHead: number;
  status: number;
  /** reads: data to move into guest memory at completion (readBytes of readData, to readHpas) */
  isRead: boolean;
  readBytes: number;
  /** the blocks as the namespace held them when the command was fetched; kept with the record for its next read */
  readData: Uint8Array;
  readHpas: number[];
  readFirstOffset: number;
}

function newPendingCompletion(): PendingCompletion {
  return {
    completionNs: 0,
    seq: 0,
    sqid: 0,
    cqid: 0,
    commandId: 0,
    sqHead: 0,
    status: 0,
    isRead: false,
    readBytes: 0,
    readData: new Uint8Array(0),
    readHpas: [],
    readFirstOffset: 0,
  };
}

export interface NvmeCounters {
  commands: number;
  reads: number;
  writes: number;
  faults: number;
  adminCommands: number;
  bytesRead: number;
  bytesWritten: number;
  interrupts: number;
}

const PAGE = NVME_CTRL_PAGE_SIZE_BYTES;
/** `dma-outside-prps` moves a page to or from its PRP address with this bit flipped: 512 GiB away, where nothing is mapped */
const WILD_ADDRESS_BIT = 2 ** 39;

/** Told of each I/O command's data buffer as the controller fetches it (`vmstack attack`). */
export type BufferObserver = (iovaPages: readonly number[], hpas: readonly number[], isRead: boolean, t: ModelClock) => void;

export class NvmeController {
  private readonly sqs = new Map<number, SubmissionQueue>();
  private readonly cqs = new Map<number, CompletionQueue>();
  private readonly heap: PendingCompletion[] = [];
  /** posted completions' records, for the next commands */
  private readonly freeCompletions: PendingCompletion[] = [];
  /** the SQE being handled (commands are handled one at a time, nothing keeps it) */
  private readonly sqeScratch: NvmeSqe = {
    opcode: 0,
    flags: 0,
    commandId: 0,
    nsid: 0,
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
  };
  /** the CQE being posted */
  private readonly cqeScratch: NvmeCqe = { dw0: 0, dw1: 0, sqHead: 0, sqId: 0, commandId: 0, status: 0, phase: 0 };
  /** the pages of the command being fetched */
  private readonly hpasScratch: number[] = [];
  private seq = 0;
  private fetchFreeNs = 0;
  private regs = { aqa: 0, asq: 0, acq: 0 };
  private scratch = new Uint8Array(2 * 1024 * 1024 + PAGE);
  /** the IOVA of each page of the buffer `translateBuffer` translated last */
  private readonly iovaPages: number[] = [];
  /** an injected misbehaviour (shm fault.ts), done once, on the first command it applies to fetched at or after `atNs` */
  misbehaviour: { mode: DeviceFaultMode; atNs: number } | null = null;
  /** `vmstack attack`: the attacker watching the buffers the device is given */
  observer: BufferObserver | null = null;
  /** the fetch engine's and the completion poster's timelines, reused (no clock per doorbell or completion) */
  private readonly fetchClock = new ModelClock('virtual');
  private readonly postClock = new ModelClock('virtual');
  readonly counters: NvmeCounters = { commands: 0, reads: 0, writes: 0, faults: 0, adminCommands: 0, bytesRead: 0, bytesWritten: 0, interrupts: 0 };

  constructor(
    private readonly mem: GuestMemory,
    private readonly iommu: DeviceIommu,
    private readonly media: DeviceMedia,
    private readonly ns: NvmeNamespace,
    readonly clock: ModelClock,
    private readonly costs: NvmeControllerCosts,
  ) {}

  /**
   * Completion time of a command that never reaches the media (admin, flush,
   * errors): the controller's own time, but never less than the shortest media
   * command — the conservative clock's lookahead rests on that minimum.
   */
  private quickDoneNs(arrivalNs: number): number {
    return arrivalNs + Math.max(this.costs.nvmeControllerCommandNs, this.media.minServiceNs());
  }

  /** Smallest doorbell → interrupt time: the lookahead of the conservative clock. */
  minResponseNs(): number {
    return this.costs.nvmeDoorbellLatencyNs + this.costs.nvmeSqeFetchNs + this.media.minServiceNs() + this.costs.msiLatencyNs;
  }

  registerWrite(reg: number, value: number, tsNs: number): void {
    this.clock.syncTo(tsNs);
    if (reg === NVME_REG_AQA) this.regs.aqa = value;
    else if (reg === NVME_REG_ASQ) this.regs.asq = value;
    else if (reg === NVME_REG_ACQ) this.regs.acq = value;
    else if (reg === NVME_REG_CC && (value & 1) === 1) {
      const sqSize = (this.regs.aqa & 0xfff) + 1;
      const cqSize = ((this.regs.aqa >>> 16) & 0xfff) + 1;
      this.cqs.set(0, {
        qid: 0,
        baseIova: this.regs.acq,
        sizeEntries: cqSize,
        tail: 0,
        phase: 1,
        vector: 0,
        pageHpas: this.translateQueue(this.regs.acq, cqSize * NVME_CQE_BYTES, this.clock),
      });
      this.sqs.set(0, { qid: 0, baseIova: this.regs.asq, sizeEntries: sqSize, head: 0, cqid: 0 });
    }
  }

  /** The guest wrote a doorbell (SQ tail or CQ head) at model time `tsNs`. */
  onDoorbell(qid: number, which: number, value: number, tsNs: number): void {
    if (which !== DOORBELL_SQ_TAIL) return; // CQ head: the guest consumed entries; queues here never fill (iodepth < queue size)
    const sq = this.sqs.get(qid);
    if (!sq) throw new Error(`nvme: doorbell for submission queue ${qid}, which does not exist`);
    // the controller's fetch engine has its own timeline: the doorbell's arrival, then one fetch after another
    const t = this.fetchClock;
    t.restartAt(Math.max(tsNs + this.costs.nvmeDoorbellLatencyNs, this.fetchFreeNs));
    this.clock.syncTo(t.nowNs());
    while (sq.head !== value) {
      t.charge(this.costs.nvmeSqeFetchNs);
      const hpa = this.iommu.translate(sq.baseIova + sq.head * NVME_SQE_BYTES, false, t);
      sq.head = (sq.head + 1) % sq.sizeEntries;
      if (hpa < 0) {
        // the SQ itself is not mapped: nothing sensible to complete; count it
        this.counters.faults++;
        continue;
      }
      const sqe = readSqe(this.mem, hpa, this.sqeScratch);
      this.counters.commands++;
      if (qid === 0) this.adminCommand(sq, sqe, t);
      else this.ioCommand(sq, sqe, t);
    }
    this.fetchFreeNs = t.nowNs();
  }

  private push(e: PendingCompletion): void {
    e.seq = this.seq++;
    heapPush(this.heap, e, before);
  }

  private pop(): PendingCompletion {
    return heapPop(this.heap, before);
  }

  /** Queue the completion of a command; a read fills in its data on the returned record. */
  private complete(sq: SubmissionQueue, commandId: number, status: number, completionNs: number): PendingCompletion {
    const p = this.freeCompletions.pop() ?? newPendingCompletion();
    p.completionNs = completionNs;
    p.sqid = sq.qid;
    p.cqid = sq.cqid;
    p.commandId = commandId;
    p.sqHead = sq.head;
    p.status = status;
    p.isRead = false;
    p.readBytes = 0;
    p.readFirstOffset = 0;
    this.push(p);
    return p;
  }

  private adminCommand(sq: SubmissionQueue, sqe: ReturnType<typeof readSqe>, t: ModelClock): void {
    this.counters.adminCommands++;
    const doneNs = this.quickDoneNs(t.nowNs());
    const qid = sqe.cdw10 & 0xffff;
    const size = ((sqe.cdw10 >>> 16) & 0xffff) + 1;
    let status = NVME_SC_SUCCESS;
    switch (sqe.opcode) {
      case NVME_ADMIN_CREATE_CQ:
        if (qid === 0 || this.cqs.has(qid)) status = NVME_SC_QID_INVALID;
        else {
          const pageHpas = this.translateQueue(sqe.prp1, size * NVME_CQE_BYTES, t);
          if (pageHpas.some((h) => h < 0)) {
            status = NVME_SC_DMA_FAULT;
            this.counters.faults++;
          } else {
            this.cqs.set(qid, { qid, baseIova: sqe.prp1, sizeEntries: size, tail: 0, phase: 1, vector: (sqe.cdw11 >>> 16) & 0xffff, pageHpas });
          }
        }
        break;
      case NVME_ADMIN_CREATE_SQ: {
        const cqid = (sqe.cdw11 >>> 16) & 0xffff;
        if (qid === 0 || this.sqs.has(qid) || !this.cqs.has(cqid)) status = NVME_SC_QID_INVALID;
        else this.sqs.set(qid, { qid, baseIova: sqe.prp1, sizeEntries: size, head: 0, cqid });
        break;
      }
      case NVME_ADMIN_DELETE_SQ:
        if (!this.sqs.delete(qid)) status = NVME_SC_QID_INVALID;
        break;
      case NVME_ADMIN_DELETE_CQ:
        if (!this.cqs.delete(qid)) status = NVME_SC_QID_INVALID;
        break;
      case NVME_ADMIN_IDENTIFY: {
        const hpa = this.iommu.translate(sqe.prp1, true, t);
        if (hpa < 0) {
          status = NVME_SC_DMA_FAULT;
          this.counters.faults++;
          break;
        }
        const cns = sqe.cdw10 & 0xff;
        this.mem.u8.fill(0, hpa, hpa + PAGE);
        const dv = this.mem.dv;
        if (cns === 1) {
          // identify controller: PCI vendor id, serial, model, number of namespaces
          dv.setUint16(hpa, 0x144d, true);
          writeAscii(this.mem.u8, hpa + 4, 'VMSTACK0001         ');
          writeAscii(this.mem.u8, hpa + 24, 'vmstack model NVMe                      ');
          dv.setUint32(hpa + 516, 1, true);
        } else if (cns === 0) {
          // identify namespace: size, capacity, utilisation; one LBA format of 4 KiB
          dv.setFloat64(hpa, 0, true);
          dv.setUint32(hpa, this.ns.sizeBlocks, true);
          dv.setUint32(hpa + 8, this.ns.sizeBlocks, true);
          dv.setUint32(hpa + 16, this.ns.sizeBlocks, true);
          this.mem.u8[hpa + 128 + 2] = 12; // LBADS = 2^12
        } else {
          status = NVME_SC_INVALID_FIELD;
        }
        break;
      }
      default:
        status = NVME_SC_INVALID_OPCODE;
    }
    this.complete(sq, sqe.commandId, status, doneNs);
  }

  /** The pages of a queue in guest memory, translated for writing (-1 where unmapped). */
  private translateQueue(baseIova: number, bytes: number, t: ModelClock): number[] {
    const first = baseIova - (baseIova % PAGE);
    const pages: number[] = [];
    for (let a = first; a < baseIova + bytes; a += PAGE) pages.push(this.iommu.translate(a, true, t));
    return pages;
  }

  /** the clock `readPrpEntry` charges its translations to (the command being fetched) */
  private prpClock: ModelClock = this.fetchClock;
  /** The device reads one PRP list entry: the list page's IOVA translated, then the entry's 64 bits. */
  private readonly readPrpEntry = (dmaAddr: number): number => {
    const hpa = this.iommu.translate(dmaAddr, false, this.prpClock);
    if (hpa < 0) throw new NvmePrpError(NVME_SC_DMA_FAULT, `PRP list at IOVA ${dmaAddr} not mapped`);
    return Number(this.mem.dv.getBigUint64(hpa, true));
  };

  /**
   * Translate every page of the PRP-described buffer into `hpas[0…)`; returns how many, or -1 on
   * a fault. The array is overwritten, never shrunk (entries past the count are stale; readers
   * stop once they have moved the command's bytes).
   */
  private translateBuffer(prp1: number, prp2: number, lengthBytes: number, write: boolean, t: ModelClock, hpas: number[]): number {
    // the IOVA of each page, kept only for an attacker or an injected misbehaviour
    const track = this.observer !== null || this.misbehaviour !== null;
    if (track) this.iovaPages.length = 0;
    const end = (prp1 % PAGE) + lengthBytes;
    if (prp1 % 4 === 0 && (end <= PAGE || (end <= 2 * PAGE && prp2 % PAGE === 0))) {
      // one or two pages, well formed: PRP1 (and PRP2) point at the data, no list to walk (nvmeWalkPrps' segments, unallocated)
      let hpa = this.iommu.translate(prp1, write, t);
      if (hpa < 0) return -1;
      hpas[0] = hpa;
      if (track) this.iovaPages.push(prp1);
      if (end <= PAGE) return 1;
      hpa = this.iommu.translate(prp2, write, t);
      if (hpa < 0) return -1;
      hpas[1] = hpa;
      if (track) this.iovaPages.push(prp2);
      return 2;
    }
    let segs: ReturnType<typeof nvmeWalkPrps>;
    this.prpClock = t;
    try {
      segs = nvmeWalkPrps(prp1, prp2, lengthBytes, this.readPrpEntry);
    } catch (e) {
      if (e instanceof NvmePrpError) return -1;
      throw e;
    }
    let n = 0;
    for (const s of segs) {
      for (let a = s.dmaAddr; a < s.dmaAddr + s.lenBytes; a = (Math.floor(a / PAGE) + 1) * PAGE) {
        const hpa = this.iommu.translate(a, write, t);
        if (hpa < 0) return -1;
        hpas[n++] = hpa;
        if (track) this.iovaPages.push(a);
      }
    }
    return n;
  }

  private ioCommand(sq: SubmissionQueue, sqe: ReturnType<typeof readSqe>, t: ModelClock): void {
    const arrivalNs = t.nowNs();
    if (sqe.opcode === NVME_CMD_FLUSH) {
      this.complete(sq, sqe.commandId, NVME_SC_SUCCESS, this.quickDoneNs(arrivalNs)); // a volatile write cache is off: nothing to flush
      return;
    }
    if (sqe.opcode !== NVME_CMD_READ && sqe.opcode !== NVME_CMD_WRITE) {
      this.complete(sq, sqe.commandId, NVME_SC_INVALID_OPCODE, this.quickDoneNs(arrivalNs));
      return;
    }
    const { slba, blockCount } = sqeRwFields(sqe);
    if (slba + blockCount > this.ns.sizeBlocks) {
      this.complete(sq, sqe.commandId, NVME_SC_LBA_RANGE, this.quickDoneNs(arrivalNs));
      return;
    }
    const bytes = blockCount * BLOCK_BYTES;
    const isRead = sqe.opcode === NVME_CMD_READ;
    // a read writes guest memory (needs IOMMU write permission), a write reads it
    const hpas = this.hpasScratch;
    const pages = this.translateBuffer(sqe.prp1, sqe.prp2, bytes, isRead, t, hpas);
    const doneNs = this.media.schedule(isRead ? NVME_CMD_READ : NVME_CMD_WRITE, bytes, t.nowNs());
    if (pages < 0) {
      this.counters.faults++;
      this.complete(sq, sqe.commandId, NVME_SC_DMA_FAULT, doneNs);
      return;
    }
    if (this.observer) this.observer(this.iovaPages, hpas.slice(0, pages), isRead, t);
    const misbehaviour = this.misbehaviourDue(isRead, t.nowNs());
    if (misbehaviour === 'dma-outside-prps') {
      // the last page goes to or from an address no PRP gave: the IOMMU must refuse it
      const last = this.iovaPages[this.iovaPages.length - 1];
      const wild = Math.floor(last / WILD_ADDRESS_BIT) % 2 === 1 ? last - WILD_ADDRESS_BIT : last + WILD_ADDRESS_BIT;
      const hpa = this.iommu.translate(wild, isRead, t);
      if (hpa < 0) {
        this.counters.faults++;
        this.complete(sq, sqe.commandId, NVME_SC_DMA_FAULT, doneNs);
        return;
      }
      hpas[pages - 1] = hpa;
    }
    const firstOffset = sqe.prp1 % PAGE;
    if (isRead) {
      this.counters.reads++;
      this.counters.bytesRead += bytes;
      const p = this.complete(sq, sqe.commandId, NVME_SC_SUCCESS, doneNs);
      p.isRead = true;
      p.readBytes = bytes;
      p.readFirstOffset = firstOffset;
      for (let i = 0; i < pages; i++) p.readHpas[i] = hpas[i];
      if (p.readData.length < bytes) p.readData = new Uint8Array(bytes);
      // the media read happens in fetch order: a write fetched later does not change what this
      // read returns, whatever order the threads post completions in (deterministic contents)
      for (let b = 0; b < blockCount; b++) this.ns.readBlock(slba + b, p.readData, b * BLOCK_BYTES);
    } else {
      this.counters.writes++;
      this.counters.bytesWritten += bytes;
      if (misbehaviour !== 'drop-write') {
        this.gather(hpas, firstOffset, bytes);
        // corrupt-write: one byte of each block flipped on its way to the media
        if (misbehaviour === 'corrupt-write') for (let b = 0; b < blockCount; b++) this.scratch[b * BLOCK_BYTES + BLOCK_BYTES / 2] ^= 0xff;
        for (let b = 0; b < blockCount; b++) this.ns.writeBlock(slba + b, this.scratch, b * BLOCK_BYTES);
      }
      this.complete(sq, sqe.commandId, NVME_SC_SUCCESS, doneNs);
    }
  }

  /** The injected misbehaviour this command carries, if its time has come and it applies (writes only but `dma-outside-prps`); once. */
  private misbehaviourDue(isRead: boolean, nowNs: number): DeviceFaultMode | null {
    const m = this.misbehaviour;
    if (m === null || nowNs < m.atNs || (isRead && m.mode !== 'dma-outside-prps')) return null;
    this.misbehaviour = null;
    return m.mode;
  }

  private gather(hpas: number[], firstOffset: number, bytes: number): void {
    let pos = 0;
    for (let i = 0; i < hpas.length && pos < bytes; i++) {
      const start = i === 0 ? hpas[0] : hpas[i];
      const inPage = i === 0 ? PAGE - firstOffset : PAGE;
      const n = Math.min(inPage, bytes - pos);
      this.scratch.set(this.mem.u8.subarray(start, start + n), pos);
      pos += n;
    }
  }

  private scatter(hpas: number[], firstOffset: number, data: Uint8Array, bytes: number): void {
    let pos = 0;
    for (let i = 0; i < hpas.length && pos < bytes; i++) {
      const inPage = i === 0 ? PAGE - firstOffset : PAGE;
      const n = Math.min(inPage, bytes - pos);
      // the whole buffer in one piece (a page-aligned one-page read): no view to make
      this.mem.u8.set(n === data.length ? data : data.subarray(pos, pos + n), hpas[i]);
      pos += n;
    }
  }

  nextCompletionNs(): number {
    return this.heap.length > 0 ? this.heap[0].completionNs : Number.MAX_SAFE_INTEGER;
  }

  pendingCommands(): number {
    return this.heap.length;
  }

  /**
   * Post every completion due at or before `horizonNs`, in time order: move
   * read data into guest memory, write the CQE (phase bit last), raise the
   * queue's interrupt. `raise(cqid, vector, tsNs)` delivers it.
   */
  postCompletionsUpTo(horizonNs: number, raise: (cqid: number, vector: number, tsNs: number) => void): number {
    let n = 0;
    while (this.heap.length > 0 && this.heap[0].completionNs <= horizonNs) {
      const p = this.pop();
      const t = this.postClock;
      t.restartAt(p.completionNs);
      this.clock.syncTo(p.completionNs);
      if (p.isRead) this.scatter(p.readHpas, p.readFirstOffset, p.readData, p.readBytes);
      const cq = this.cqs.get(p.cqid);
      if (!cq) throw new Error(`nvme: completion for missing queue ${p.cqid}`);
      t.charge(this.costs.nvmeCqePostNs);
      const offset = (cq.baseIova % PAGE) + cq.tail * NVME_CQE_BYTES;
      const pageHpa = cq.pageHpas[Math.floor(offset / PAGE)];
      const hpa = pageHpa < 0 ? -1 : pageHpa + (offset % PAGE);
      if (hpa < 0) {
        this.counters.faults++;
      } else {
        const cqe = this.cqeScratch;
        cqe.sqHead = p.sqHead;
        cqe.sqId = p.sqid;
        cqe.commandId = p.commandId;
        cqe.status = p.status;
        cqe.phase = cq.phase;
        writeCqe(this.mem, hpa, cqe);
      }
      cq.tail++;
      if (cq.tail === cq.sizeEntries) {
        cq.tail = 0;
        cq.phase ^= 1;
      }
      this.counters.interrupts++;
      raise(cq.qid, cq.vector, t.nowNs() + this.costs.msiLatencyNs);
      this.freeCompletions.push(p);
      n++;
    }
    return n;
  }
}

function before(a: PendingCompletion, b: PendingCompletion): boolean {
  return a.completionNs < b.completionNs || (a.completionNs === b.completionNs && a.seq < b.seq);
}

function writeAscii(u8: Uint8Array, off: number, s: string): void {
  for (let i = 0; i < s.length; i++) u8[off + i] = s.charCodeAt(i);
}
