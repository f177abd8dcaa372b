/**
 * One guest vCPU running one fio job (libaio, direct=1): submit up to
 * iodepth I/Os, take NVMe interrupts, complete, verify, resubmit.
 *
 * Clock rules (virtual mode): before each action at model time `now` the
 * vCPU takes every interrupt stamped ≤ now, which needs the device's bound
 * (its published EOT, corrected for doorbells it has not consumed yet) to be
 * ≥ now; it runs at most `quantumNs` ahead of the other vCPUs; it publishes
 * its clock as its EOT, and NEVER while idle waiting for an interrupt (the
 * device corrects for interrupts it sent and we have not consumed). A
 * virtio-iommu request is a busy-poll with interrupts off: interrupts that
 * arrive meanwhile are taken after it, late, as on a real vCPU. All vCPUs
 * start together (each publishes its EOT before any starts), and a vCPU that
 * holds a lock and waits in its gate does not wait for peers blocked on that
 * lock: it raises their EOT to its own clock, as they cannot act before it
 * releases the lock.
 */

import {
  asIova,
  BLOCK_BYTES,
  blockSeed,
  DeviceToGuestInterrupt,
  DOORBELL_CQ_HEAD,
  DOORBELL_SQ_TAIL,
  faultCheckpoint,
  fillBlock,
  type GuestMemory,
  type Iova,
  interruptCqeCount,
  type LockTable,
  type ModelClock,
  mulberry32Float,
  NEVER_NS,
  type NvmeCqe,
  PAGE_SIZE_BYTES,
  type Ring,
  type RunControl,
  type VerifyAlgo,
  verifyBlock,
} from '@vmstack/shm';
import { build, encodeIntoCompressedBase64, type Histogram } from 'hdr-histogram-js';
import type { DmaIommu, DmaMapping } from './dma.js';
import { DMA_FROM_DEVICE, DMA_TO_DEVICE } from './iommu/bounce-pool.js';
import { type FioJobSpec, fioJobWrites, fioWriteSeed } from './job-spec.js';
import type { UserBuffer } from './mm/page-alloc.js';
import { type NvmeBar, type NvmeQueuePair, nvme_next_cqe, nvme_queue_rw, nvme_write_doorbell, type PrpListPage } from './nvme/nvme-pci.js';
import type { Profiler } from './profile.js';

/**
 * How a vCPU waits and reaches the VMM. In a worker it parks on shared memory
 * (the other components run on their own threads); in one thread it steps the
 * other components until the condition holds. Both run the same vCPU code.
 */
export interface GuestPlatform {
  /** notify virtio-iommu `viommu` (index in the vCPU's init.viommus) at `nowNs`; returns the model time its answers are visible */
  kick(nowNs: number, viommu: number): number;
  /** return once `bound()` ≥ tNs (our own EOT is already published) */
  awaitBound(tNs: number, bound: () => number): void;
  /** return once `ready()`; `thresholdNs` is the peer EOT that may make it ready */
  awaitInput(ready: () => boolean, thresholdNs?: number): void;
  /** this vCPU will send the VMM (every virtio-iommu it used) nothing more */
  done(nowNs: number): void;
}

export interface VcpuCosts {
  fioSubmitNs: number;
  guestPinUserPagePerPageNs: number;
  nvmeQueueRqNs: number;
  nvmeSetupPrpPerPageNs: number;
  guestIrqDeliveryNs: number;
  nvmeIrqPerCqeNs: number;
  fioReapPerIoNs: number;
}

export interface DirectionStats {
  ioBytes: number;
  ios: number;
  firstSubmitNs: number;
  lastCompleteNs: number;
  clat: string;
  lat: string;
  slat: string;
}

export interface VcpuJobResult {
  read: DirectionStats;
  write: DirectionStats;
  /** corrupt: not what this job (or the drive) put there; overwritten: intact, but written by another job running at the same time */
  verify: { blocksChecked: number; corrupt: number; overwritten: number };
  errors: number;
  startNs: number;
  endNs: number;
  /** model ns the vCPU worked (submitting, handling interrupts, busy-polling the VMM), not idle */
  busyNs: number;
  /** real (wall) ms the job loop took: the model's own speed */
  loopWallMs: number;
}

interface Slot {
  buffer: UserBuffer;
  /** the buffer as a scatter list of its 4 KiB pages (what the block layer hands the driver) */
  segments: { gpa: number; lenBytes: number }[];
  prpPage: PrpListPage;
  mapping: DmaMapping | null;
  /** the slot's mapping object, used again for each of its I/Os (dma-iommu overwrites it) */
  mappingRecord: DmaMapping | undefined;
  isRead: boolean;
  lba: number;
  blocks: number;
  submitNs: number;
  issueNs: number;
  verifyPhase: boolean;
}

class Dir {
  ioBytes = 0;
  ios = 0;
  firstSubmitNs = -1;
  lastCompleteNs = 0;
  clat: Histogram = hist();
  lat: Histogram = hist();
  slat: Histogram = hist();
  out(): DirectionStats {
    return {
      ioBytes: this.ioBytes,
      ios: this.ios,
      firstSubmitNs: Math.max(0, this.firstSubmitNs),
      lastCompleteNs: this.lastCompleteNs,
      clat: enc(this.clat),
      lat: enc(this.lat),
      slat: enc(this.slat),
    };
  }
}

function hist(): Histogram {
  return build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 3_600_000_000_000,
    numberOfSignificantValueDigits: 3,
    autoResize: true,
    useWebAssembly: false,
  });
}

function enc(h: Histogram): string {
  return encodeIntoCompressedBase64(h as never);
}

export interface VcpuEnv {
  mem: GuestMemory;
  clock: ModelClock;
  control: RunControl;
  self: number;
  deviceWorker: number;
  /** every other vCPU of the run (this VM's and other VMs'): the quantum gate waits for them */
  otherVcpus: number[];
  /** the device worker of each of `otherVcpus` (its VM's device), in the same order */
  peerDevices: number[];
  /** the other vCPUs' interrupt rings, in `otherVcpus` order (read-only: when will an idle peer wake?) */
  peerIrqs: Ring[];
  quantumNs: number;
  spinLoads: number;
  /** the NVMe controller's BAR: doorbell writes go out on the doorbell ring */
  bar: NvmeBar;
  irqs: Ring;
  /** smallest doorbell → interrupt time of the device (lookahead) */
  deviceMinResponseNs: number;
  queue: NvmeQueuePair;
  dma: DmaIommu;
  costs: VcpuCosts;
  profiler: Profiler;
  platform: GuestPlatform;
  slots: { buffer: UserBuffer; prpPage: PrpListPage }[];
  /** the seed the drive's pre-filled blocks carry */
  nsPrefillSeed: number;
  /** lba → seed of blocks an earlier barrier group wrote */
  priorSeeds: ReadonlyMap<number, number>;
  /** the write seeds of the other jobs running at the same time (blocks they may write over ours) */
  peerWriteSeeds: ReadonlySet<number>;
  /** the guest's locks (lock CPU ids are worker indices): which peer is blocked on a lock we hold */
  locks: LockTable;
}

export class Vcpu {
  private readonly virtual: boolean;
  private readonly slots: Slot[];
  private readonly free: number[] = [];
  private readonly read = new Dir();
  private readonly write = new Dir();
  private verified = 0;
  private corrupt = 0;
  private overwritten = 0;
  private errors = 0;
  private issued = 0;
  private inflight = 0;
  private phase: 'main' | 'verify' = 'main';
  private verifyIssued = 0;
  private readonly rng: () => number;
  private readonly totalIos: number;
  private readonly regionBlocks: number;
  private readonly bsBlocks: number;
  private readonly deadlineNs: number;
  private readonly verifyAlgo: VerifyAlgo;
  private readonly startNs: number;
  /** the seed of this job's written blocks, and which blocks it wrote (for verify) */
  private readonly writeSeed: number;
  private readonly writtenLbas = new Set<number>();
  /** the job is over: the other vCPUs stop waiting for this one */
  private finished = false;

  constructor(
    private readonly env: VcpuEnv,
    private readonly job: FioJobSpec,
  ) {
    this.virtual = env.clock.mode === 'virtual';
    this.slots = env.slots.map((s) => ({
      ...s,
      segments: s.buffer.pageGpas.map((gpa) => ({ gpa, lenBytes: PAGE_SIZE_BYTES })),
      mapping: null,
      mappingRecord: undefined,
      isRead: true,
      lba: 0,
      blocks: 0,
      submitNs: 0,
      issueNs: 0,
      verifyPhase: false,
    }));
    for (let i = this.slots.length - 1; i >= 0; i--) this.free.push(i);
    this.rng = mulberry32Float((job.randseed + Math.imul(job.jobIndex, 0x9e3779b9)) >>> 0);
    this.bsBlocks = job.blockSizeBytes / BLOCK_BYTES;
    this.regionBlocks = Math.floor(job.sizeBytes / BLOCK_BYTES);
    this.totalIos = Math.floor(job.sizeBytes / job.blockSizeBytes);
    this.startNs = env.clock.nowNs();
    this.writeSeed = fioWriteSeed(job);
    this.deadlineNs = job.runtimeNs ? this.startNs + job.runtimeNs : NEVER_NS;
    this.verifyAlgo = job.verify === 'none' ? 'none' : job.verify;
    this.peerWatchers = env.otherVcpus.map((v, i) => [env.peerDevices[i], env.self, ...env.otherVcpus.filter((u) => u !== v)]);
    this.peerDeviceEots = new Float64Array(env.otherVcpus.length);
    this.eotWatchers = [env.deviceWorker, ...env.otherVcpus];
  }

  private publish(ns: number): void {
    this.env.control.publishClock(this.env.self, this.finished ? NEVER_NS : Math.min(ns, this.env.clock.nowNs()));
    this.env.control.raiseEot(this.env.self, ns, this.eotWatchers);
  }

  private deviceBound(): number {
    const d = this.env.control.eotNs(this.env.deviceWorker);
    const u = this.env.bar.log.earliestUnconsumedNs();
    return u === NEVER_NS ? d : Math.min(d, u + this.env.deviceMinResponseNs);
  }

  /**
   * The latest model time this vCPU may act at: the other vCPUs' EOTs plus the
   * quantum. Equal times go in vCPU order: a lower-numbered vCPU must be
   * strictly past t before a higher-numbered one acts at t.
   */
  private quantumBound(): number {
    let m = NEVER_NS;
    const control = this.env.control;
    // read the devices' EOTs before the peers' interrupt rings: an interrupt sent
    // after this read is stamped at or after it, one sent before is in a ring
    const deviceEots = this.peerDeviceEots;
    for (let i = 0; i < deviceEots.length; i++) deviceEots[i] = control.eotNs(this.env.peerDevices[i]);
    for (let i = 0; i < this.env.otherVcpus.length; i++) {
      const v = this.env.otherVcpus[i];
      if (this.env.locks.blockedOnLockHeldBy(v, this.env.self)) {
        // A peer blocked on a lock we hold acts again only once we release it, at or after
        // our time: it cannot take a lock before us (waiting for it here would deadlock), and
        // its EOT may be raised to our clock. Its own EOT is older; raised, it stops holding
        // back a third vCPU that waits for it while we wait for that third one.
        const nowNs = this.env.clock.nowNs();
        if (control.eotNs(v) < nowNs) control.raiseEot(v, nowNs, this.peerWatchers[i]);
        continue;
      }
      const pendingIrqNs = this.env.peerIrqs[i].oldestPendingTimestamp(NEVER_NS);
      let e = control.eotNs(v);
      if (e === NEVER_NS) {
        // idle, waiting for an interrupt or its own timer: it acts again at max(its clock, the
        // earlier of the two); finished: never
        const clock = control.clockNs(v);
        if (clock === NEVER_NS) continue;
        e = Math.max(clock, Math.min(deviceEots[i], pendingIrqNs, control.timerNs(v)));
        if (e === NEVER_NS) continue;
      }
      m = Math.min(m, v < this.env.self ? e - 1 : e);
    }
    return m === NEVER_NS ? NEVER_NS : m + this.env.quantumNs;
  }

  // the conditions the vCPU waits on, made once (a wait per I/O would otherwise make a closure each)
  private readonly quantumBoundFn = (): number => this.quantumBound();
  private readonly deviceBoundFn = (): number => this.deviceBound();
  /** idle: the timer it waits for besides an interrupt */
  private idleTimerNs = NEVER_NS;
  /** idle: an interrupt arrived, or the device's bound passed the timer */
  private readonly idleWakeFn = (): boolean =>
    this.env.irqs.available() > 0 || (this.idleTimerNs !== NEVER_NS && this.virtual && this.deviceBound() > this.idleTimerNs);

  /** who watches our EOT: the device and the other vCPUs */
  private readonly eotWatchers: number[];

  /** scratch: the CQE being handled, and the device addresses of the I/O being queued */
  private readonly cqe: NvmeCqe = { dw0: 0, dw1: 0, sqHead: 0, sqId: 0, commandId: 0, status: 0, phase: 0 };
  private readonly pages: Iova[] = [];

  /** for each other vCPU: who watches its EOT (its device and the vCPUs but it) */
  private readonly peerWatchers: number[][];
  /** scratch: each other vCPU's device's EOT, read once per bound */
  private readonly peerDeviceEots: Float64Array;

  /** Wake the other vCPUs' gates: we are about to block on a lock one of them may hold. */
  wakePeers(): void {
    for (const w of this.env.otherVcpus) this.env.control.event(w).notify();
  }

  /** Wait until this vCPU may act at `t` (the quantum); our own EOT goes out first. */
  quantumGate(t: number): void {
    if (!this.virtual || this.env.otherVcpus.length === 0) return;
    this.publish(t);
    this.env.platform.awaitBound(t, this.quantumBoundFn);
  }

  /** Take every interrupt stamped ≤ now (waits until the device can send none earlier). */
  private takeInterrupts(): void {
    const now = this.env.clock.nowNs();
    if (this.virtual) {
      // our own EOT must be current, or the device may be waiting on us while we wait on it
      this.publish(now);
      // strictly past now: a device whose EOT is `now` may still raise an interrupt stamped `now`
      this.env.platform.awaitBound(now + 1, this.deviceBoundFn);
    }
    const irqs = this.env.irqs;
    let n = 0;
    let cqes = 0;
    const avail = irqs.available();
    while (n < avail) {
      const off = irqs.offsetAt(n);
      if (this.virtual && irqs.timestampAt(off) > this.env.clock.nowNs()) break;
      if (irqs.typeAt(off) !== DeviceToGuestInterrupt) throw new Error(`vcpu: unexpected record 0x${irqs.typeAt(off).toString(16)}`);
      cqes += interruptCqeCount(irqs.dv, off);
      n++;
    }
    if (n === 0) return;
    // one handler run (nvme_irq) takes every CQE these interrupts made visible
    this.env.profiler.enter();
    this.env.clock.charge(this.env.costs.guestIrqDeliveryNs);
    this.publish(this.env.clock.nowNs());
    irqs.release(n);
    for (let i = 0; i < cqes; i++) {
      const c = nvme_next_cqe(this.env.mem, this.env.queue, this.cqe);
      if (!c) throw new Error('nvme: interrupt without a new completion entry');
      this.env.clock.charge(this.env.costs.nvmeIrqPerCqeNs);
      this.completeIo(c.commandId, c.status);
    }
    this.ringDoorbell(DOORBELL_CQ_HEAD, this.env.queue.cqHead);
    this.env.profiler.exit('nvme_irq');
  }

  private ringDoorbell(which: number, value: number): void {
    nvme_write_doorbell(this.env.bar, this.env.clock.nowNs(), this.env.queue.qid, which, value);
  }

  private completeIo(cid: number, status: number): void {
    const s = this.slots[cid];
    const clock = this.env.clock;
    if (s.mapping) this.env.dma.iommu_dma_unmap_sg(s.mapping);
    s.mapping = null;
    clock.charge(this.env.costs.fioReapPerIoNs);
    const now = clock.nowNs();
    if (status !== 0) this.errors++;
    // fio verifies reads of a read-only job as they complete; a job that writes checks its
    // blocks in the verify phase, once nothing is in flight (a read racing an in-flight
    // write to the same block has no defined result)
    const jobWrites = fioJobWrites(this.job);
    if (s.isRead && this.verifyAlgo !== 'none' && status === 0 && (!jobWrites || s.verifyPhase)) {
      // fio's verify: check every block of the buffer (a check of the tool, not charged as guest work)
      const u8 = this.env.mem.u8;
      for (let b = 0; b < s.blocks; b++) {
        this.verified++;
        const lba = s.lba + b;
        // what should be there: what this job wrote, or what the drive held before
        const seed = this.writtenLbas.has(lba) ? this.writeSeed : (this.env.priorSeeds.get(lba) ?? this.env.nsPrefillSeed);
        const off = s.buffer.pageGpas[b];
        if (verifyBlock(u8, off, lba, this.verifyAlgo, seed)) continue;
        // fio's "bad header rand_seed": an intact block another job of the group wrote over
        // ours (their regions overlap) is a verify failure, but not damage by the stack
        if (this.env.peerWriteSeeds.has(blockSeed(u8, off)) && verifyBlock(u8, off, lba, this.verifyAlgo)) this.overwritten++;
        else this.corrupt++;
      }
    }
    const d = s.isRead ? this.read : this.write;
    if (!s.verifyPhase) {
      d.ios++;
      d.ioBytes += s.blocks * BLOCK_BYTES;
      d.lastCompleteNs = now;
      d.clat.recordValue(Math.max(1, now - s.issueNs));
      d.lat.recordValue(Math.max(1, now - s.submitNs));
      d.slat.recordValue(Math.max(1, s.issueNs - s.submitNs));
    }
    this.inflight--;
    this.free.push(cid);
  }

  private canSubmit(): boolean {
    if (this.free.length === 0) return false;
    if (this.phase === 'verify') return this.verifyIssued < this.regionBlocks / this.bsBlocks;
    if (this.deadlineNs !== NEVER_NS) return this.env.clock.nowNs() < this.deadlineNs && (this.job.timeBased || this.issued < this.totalIos);
    return this.issued < this.totalIos;
  }

  private submitIo(): void {
    const clock = this.env.clock;
    const job = this.job;
    const cid = this.free.pop()!;
    const s = this.slots[cid];
    const rw = job.rw;
    let isRead: boolean;
    if (this.phase === 'verify') isRead = true;
    else if (rw === 'read' || rw === 'randread') isRead = true;
    else if (rw === 'write' || rw === 'randwrite') isRead = false;
    else isRead = this.rng() * 100 < job.rwmixreadPct;
    const random = rw === 'randread' || rw === 'randwrite' || rw === 'randrw';
    const ioIndex = this.phase === 'verify' ? this.verifyIssued++ : this.issued++;
    const ioCount = Math.max(1, Math.floor(this.regionBlocks / this.bsBlocks));
    const k = random && this.phase !== 'verify' ? Math.floor(this.rng() * ioCount) : ioIndex % ioCount;
    const lba = job.offsetBytes / BLOCK_BYTES + k * this.bsBlocks;
    s.isRead = isRead;
    s.lba = lba;
    s.blocks = this.bsBlocks;
    s.verifyPhase = this.phase === 'verify';
    s.submitNs = clock.nowNs();
    const d = isRead ? this.read : this.write;
    if (d.firstSubmitNs < 0 && !s.verifyPhase) d.firstSubmitNs = s.submitNs;
    if (!isRead) {
      // fio fills the buffer before io_submit (verify headers when verifying)
      for (let b = 0; b < s.blocks; b++) {
        fillBlock(this.env.mem.u8, s.buffer.pageGpas[b], lba + b, this.writeSeed, this.verifyAlgo);
        this.writtenLbas.add(lba + b);
      }
    }
    clock.charge(this.env.costs.fioSubmitNs + s.blocks * this.env.costs.guestPinUserPagePerPageNs);
    this.env.profiler.enter();
    // the device writes memory on a read, reads it on a write
    s.mapping = this.env.dma.iommu_dma_map_sg(s.segments, isRead ? DMA_FROM_DEVICE : DMA_TO_DEVICE, undefined, s.mappingRecord);
    s.mappingRecord = s.mapping;
    clock.charge(this.env.costs.nvmeQueueRqNs + s.blocks * this.env.costs.nvmeSetupPrpPerPageNs);
    const tail = nvme_queue_rw(this.env.mem, this.env.queue, isRead, cid, lba, s.blocks * BLOCK_BYTES, dmaPages(s.mapping, this.pages), s.prpPage);
    s.issueNs = clock.nowNs();
    this.inflight++;
    this.ringDoorbell(DOORBELL_SQ_TAIL, tail);
    this.env.profiler.exit('nvme_queue_rq');
  }

  run(): VcpuJobResult {
    const clock = this.env.clock;
    // the vCPU is busy except while it waits, idle, for an interrupt (busy-polling the VMM counts as busy)
    let idleNs = 0;
    const wallStart = performance.now();
    this.publish(clock.nowNs());
    for (;;) {
      faultCheckpoint(clock.nowNs());
      this.takeInterrupts();
      if (this.env.dma.nextTimerNs() <= clock.nowNs()) this.env.dma.runTimers();
      if (this.canSubmit()) {
        this.quantumGate(clock.nowNs());
        this.submitIo();
        this.publish(clock.nowNs());
        continue;
      }
      if (this.inflight === 0) {
        if (this.phase === 'main' && this.job.verify !== 'none' && this.job.doVerify && this.write.ios > 0) {
          this.phase = 'verify';
          continue;
        }
        break;
      }
      // idle: nothing to submit until a completion; wait for the next interrupt (or the flush timer)
      const idleFromNs = clock.nowNs();
      const timerNs = this.env.dma.nextTimerNs();
      // the timer goes out before the idle EOT: a peer that sees us idle knows when we act on it
      this.env.control.publishTimer(this.env.self, timerNs);
      this.publish(NEVER_NS);
      const irqs = this.env.irqs;
      this.idleTimerNs = timerNs;
      this.env.platform.awaitInput(this.idleWakeFn, timerNs);
      if (irqs.available() > 0 && irqs.timestampAt(irqs.offsetAt(0)) <= timerNs) clock.advanceTo(irqs.timestampAt(irqs.offsetAt(0)));
      else clock.advanceTo(timerNs);
      idleNs += clock.nowNs() - idleFromNs;
      this.publish(clock.nowNs());
    }
    const endNs = clock.nowNs();
    // flush what the lazy flush queue still holds (the job is over: not counted in it), with our
    // EOT still published, so its locks, too, are granted in model-time order
    this.env.dma.quiesce();
    this.finished = true;
    this.publish(NEVER_NS);
    return {
      read: this.read.out(),
      write: this.write.out(),
      verify: { blocksChecked: this.verified, corrupt: this.corrupt, overwritten: this.overwritten },
      errors: this.errors,
      startNs: this.startNs,
      endNs,
      busyNs: endNs - this.startNs - idleNs,
      loopWallMs: performance.now() - wallStart,
    };
  }
}

/** The device address of every 4 KiB page a mapping covers, in order (PRP entries), into `pages` (one array reused per vCPU). */
function dmaPages(m: DmaMapping, pages: Iova[]): Iova[] {
  let n = 0;
  for (const seg of m.dmaSegments) {
    const first = seg.dmaAddr - (seg.dmaAddr % PAGE_SIZE_BYTES);
    for (let a = first; a < seg.dmaAddr + seg.lenBytes; a += PAGE_SIZE_BYTES) pages[n++] = asIova(a);
  }
  if (pages.length !== n) pages.length = n;
  return pages;
}
