/**
 * One guest vCPU running one fio job: submit up to iodepth I/Os, take NVMe
 * interrupts, complete, verify, resubmit. The job's ioengine decides how an
 * I/O reaches the block layer: libaio (one io_submit per I/O), psync and
 * pvsync (one pread/pwrite or preadv/pwritev per I/O, the thread blocked
 * until it completes, depth 1), io_uring (SQEs queued in the SQ ring, one
 * io_uring_enter per `iodepth_batch_submit` of them; fixedbufs: no pinning
 * per I/O). With direct=1 each fio I/O is one NVMe command on fio's own
 * buffer; with direct=0 the I/O is a copy to or from the page cache
 * (`mm/page-cache.ts`) inside the system call, and the NVMe commands are the
 * cache's readahead and writeback requests (command ids after the fio
 * slots'), sent and completed on the same queue. What each I/O is (direction, offset, length) and when the job
 * is done comes from `fio/io-pattern.ts`; rate, rate_iops and thinktime hold
 * the next submission back, ramp_time keeps early completions out of the
 * statistics.
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
  blockMagic16,
  blockSeed,
  DeviceToGuestInterrupt,
  type DmaUnmapLog,
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
  unwrittenBlockIntact,
  type VerifyAlgo,
  verifyBlock,
} from '@vmstack/shm';
import type { DmaIommu, DmaMapping } from './dma.js';
import { type FioIoSource, fioIoSource } from './fio/io-pattern.js';
import { type FioJobStat, FioStatCollector } from './fio-stat.js';
import { DMA_FROM_DEVICE, DMA_TO_DEVICE } from './iommu/bounce-pool.js';
import { IommuMapNoMemError } from './iommu/domain-ops.js';
import { type FioJobSpec, fioJobWrites, fioSyncEngine, fioWriteSeed, PAGE_CACHE_MAX_REQUESTS } from './job-spec.js';
import { LatencyHistogram } from './latency-histogram.js';
import type { PageAllocator, UserBuffer } from './mm/page-alloc.js';
import { PageCache, type PageCacheBlockIo, type PageCacheStats } from './mm/page-cache.js';
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
  /** vCPU 0 at teardown: return once every VMM thread has reported the host's faults, calling `drain` (the event handlers) when one asks */
  awaitFaultReports?(drain: () => void): void;
}

export interface VcpuCosts {
  fioSubmitNs: number;
  guestPinUserPagePerPageNs: number;
  nvmeQueueRqNs: number;
  nvmeSetupPrpPerPageNs: number;
  guestIrqDeliveryNs: number;
  nvmeIrqPerCqeNs: number;
  fioReapPerIoNs: number;
  fioSubmitUserNs: number;
  syscallEntryExitNs: number;
  memcpyBytesPerNs: number;
  pageCachePerPageNs: number;
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

/**
 * What fio's verify found. corrupt: not what this job (or the drive) put there; overwritten: intact, but written by
 * another job running at the same time; neverWritten: intact data no job of the run wrote, which fio refuses as it has
 * no verify header ("bad magic header", err=84). firstNeverWritten: the first such block (fio prints each failing I/O).
 */
export interface VerifyCounts {
  blocksChecked: number;
  corrupt: number;
  overwritten: number;
  neverWritten: number;
  firstNeverWritten?: NeverWrittenBlock;
}

/** A block fio's verify refused for its missing header: where (bytes in the drive), the I/O that read it, the 16 bits where fio looks for its magic. */
export interface NeverWrittenBlock {
  offsetBytes: number;
  ioOffsetBytes: number;
  ioLengthBytes: number;
  magic: number;
}

export interface VcpuJobResult {
  read: DirectionStats;
  write: DirectionStats;
  verify: VerifyCounts;
  errors: number;
  startNs: number;
  endNs: number;
  /** model ns the vCPU worked (submitting, handling interrupts, busy-polling the VMM), not idle */
  busyNs: number;
  /** real (wall) ms the job loop took: the model's own speed */
  loopWallMs: number;
  /** fio's statistics of the job, as fio keeps them */
  stat: FioJobStat;
  /** buffered jobs (direct=0): what the page cache did; null with O_DIRECT */
  pageCache: PageCacheStats | null;
  /** fio's --status-interval: the job's statistics at each multiple of the interval before it ended (absent: none asked for) */
  statusDumps?: VcpuJobSnapshot[];
}

/** At most this many status dumps per job (fio's --status-interval): the run's memory stays bounded whatever the interval. */
export const STATUS_DUMPS_MAX = 10_000;

/** The job's statistics so far at model time `atNs` (`endNs` is `atNs`): cumulative from the job's start, as fio's status dumps. */
export type VcpuJobSnapshot = Omit<VcpuJobResult, 'statusDumps'> & { atNs: number };

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

/** An NVMe command of the page cache (readahead or writeback), command id iodepth + its index. */
interface KernelRequest {
  prpPage: PrpListPage;
  mapping: DmaMapping | null;
  done: ((status: number) => void) | null;
}

class Dir {
  ioBytes = 0;
  ios = 0;
  firstSubmitNs = -1;
  lastCompleteNs = 0;
  readonly clat = new LatencyHistogram();
  readonly lat = new LatencyHistogram();
  readonly slat = new LatencyHistogram();
  out(): DirectionStats {
    return {
      ioBytes: this.ioBytes,
      ios: this.ios,
      firstSubmitNs: Math.max(0, this.firstSubmitNs),
      lastCompleteNs: this.lastCompleteNs,
      clat: this.clat.encode(),
      lat: this.lat.encode(),
      slat: this.slat.encode(),
    };
  }
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
  /** `vmstack attack`: where each I/O buffer's unmap is logged for the attacking device (an instrument: no model time) */
  unmapLog?: DmaUnmapLog | null;
  /** buffered jobs: the guest's page allocator (page-cache pages), the PRP list pages of the page cache's requests, and its page limit */
  pageCache?: { pages: PageAllocator; prpPages: PrpListPage[]; limitPages: number; endLba: number };
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
  private neverWritten = 0;
  private firstNeverWritten: NeverWrittenBlock | undefined;
  private errors = 0;
  private inflight = 0;
  /**
   * A request nvme_queue_rq answered BLK_STS_RESOURCE (its DMA map ran out of
   * IOMMU resources): blk-mq keeps it and dispatches it again once a request
   * in flight completes. -1: none.
   */
  private requeued = -1;
  /** the requeued request waits for a completion (blk-mq's SCHED_RESTART) */
  private resourceWait = false;
  private phase: 'main' | 'verify' = 'main';
  /** the verify phase reads the region back from its start, in chunks of the largest write size */
  private verifyPos = 0;
  private readonly pattern: FioIoSource;
  private readonly regionBlocks: number;
  private readonly verifyBlocks: number;
  private readonly deadlineNs: number;
  /** fio's ramp_time: I/O completing before this is not counted */
  private readonly rampEndNs: number;
  /** pacing (rate, rate_iops, thinktime): the next I/O waits until this model time; NEVER: not paced */
  private paceNs = NEVER_NS;
  private thinkUntilNs = 0;
  private thinkPending = false;
  private iosSinceThink = 0;
  private readonly issuedBytes = { read: 0, write: 0 };
  private readonly issuedIos = { read: 0, write: 0 };
  private readonly verifyAlgo: VerifyAlgo;
  /** fio's verify_pattern, the bytes written and checked (absent: the per-seed payload) */
  private readonly verifyPattern: Uint8Array | undefined;
  /** verify_backlog: completed writes not yet read back, and how many of them to read back now */
  private readonly backlog: number[] = [];
  private readonly backlogBlocks: number[] = [];
  private backlogVerifying = 0;
  /** verify_fatal: a verify failure ends the job */
  private stopped = false;
  private readonly startNs: number;
  /** the seed of this job's written blocks, and which blocks it wrote (for verify) */
  private readonly writeSeed: number;
  private readonly writtenLbas = new Set<number>();
  /** the job is over: the other vCPUs stop waiting for this one */
  private finished = false;
  private readonly stat: FioStatCollector;
  /** buffered I/O (direct=0): the page cache and its NVMe requests */
  private readonly pageCache: PageCache | null = null;
  private readonly kernelRequests: KernelRequest[] = [];
  private readonly freeKernelRequests: number[] = [];
  /** page-cache requests completed so far (a wait returns once one more has) */
  private kernelCompletions = 0;
  private writesSinceSync = 0;
  private idleNs = 0;
  /** fio's --status-interval: the model time of the next copy of the statistics (NEVER: none asked for) */
  private nextStatusNs = NEVER_NS;
  private readonly statusDumps: VcpuJobSnapshot[] = [];
  /** psync, pvsync: the I/O is one blocking system call, whose whole time fio counts as clat (no slat) */
  private readonly syncEngine: boolean;
  /** io_uring: slots whose SQEs are in the SQ ring, not yet submitted by io_uring_enter */
  private readonly sqQueued: number[] = [];
  private readonly uringBatch: number;

  constructor(
    private readonly env: VcpuEnv,
    private readonly job: FioJobSpec,
  ) {
    this.virtual = env.clock.mode === 'virtual';
    // one literal shape (no spread): the slots share one hidden class whose time fields hold doubles in place
    this.slots = env.slots.map((s) => ({
      buffer: s.buffer,
      prpPage: s.prpPage,
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
    this.pattern = fioIoSource(job, mulberry32Float((job.randseed + Math.imul(job.jobIndex, 0x9e3779b9)) >>> 0));
    this.regionBlocks = Math.floor(job.sizeBytes / BLOCK_BYTES);
    this.verifyBlocks = job.writeBs.maxBytes / BLOCK_BYTES;
    this.startNs = env.clock.nowNs();
    this.writeSeed = fioWriteSeed(job);
    // fio's runtime starts once ramp_time is over
    this.rampEndNs = this.startNs + job.rampTimeNs;
    this.deadlineNs = job.runtimeNs ? this.rampEndNs + job.runtimeNs : NEVER_NS;
    this.stat = new FioStatCollector(this.startNs, job.bwAvgMs, job.iopsAvgMs, job.logs, job.blockSizeBytes);
    this.verifyAlgo = job.verify === 'none' ? 'none' : job.verify;
    this.verifyPattern = job.verifyPattern && job.verifyPattern.length > 0 ? Uint8Array.from(job.verifyPattern) : undefined;
    this.peerWatchers = env.otherVcpus.map((v, i) => [env.peerDevices[i], env.self, ...env.otherVcpus.filter((u) => u !== v)]);
    this.peerDeviceEots = new Float64Array(env.otherVcpus.length);
    const random = job.rw === 'randread' || job.rw === 'randwrite' || job.rw === 'randrw';
    if (!job.direct) {
      const pc = env.pageCache;
      if (!pc) throw new Error('vcpu: a buffered job (direct=0) without its page cache');
      pc.prpPages.forEach((prpPage, r) => {
        this.kernelRequests.push({ prpPage, mapping: null, done: null });
        this.freeKernelRequests.push(PAGE_CACHE_MAX_REQUESTS - 1 - r);
      });
      const io: PageCacheBlockIo = { submit_bio: (isRead, lba, gpas, done) => this.submit_bio(isRead, lba, gpas, done), wait: () => this.blockIoWait() };
      this.pageCache = new PageCache(io, pc.pages, env.clock, env.costs, env.mem.u8, {
        limitPages: pc.limitPages,
        endLba: pc.endLba,
        fadvise: job.fadviseHint ? (random ? 'random' : 'sequential') : 'none',
        rng: mulberry32Float((job.randseed ^ 0x70a9e) + job.jobIndex),
      });
    }
    this.eotWatchers = [env.deviceWorker, ...env.otherVcpus];
    if (job.statusIntervalNs !== undefined && job.statusIntervalNs > 0) this.nextStatusNs = job.statusFirstNs ?? job.statusIntervalNs;
    this.syncEngine = fioSyncEngine(job.ioengine);
    this.uringBatch = job.ioengine === 'io_uring' ? (job.iodepthBatchSubmit ?? 1) : 0;
  }

  private verifyCounts(): VerifyCounts {
    return {
      blocksChecked: this.verified,
      corrupt: this.corrupt,
      overwritten: this.overwritten,
      neverWritten: this.neverWritten,
      ...(this.firstNeverWritten ? { firstNeverWritten: { ...this.firstNeverWritten } } : {}),
    };
  }

  /** fio's status dumps: a copy of the statistics at every interval boundary up to `nowNs` (the I/O completing at `nowNs` not in it). */
  private takeStatusDumps(nowNs: number): void {
    const interval = this.job.statusIntervalNs ?? 0;
    while (nowNs >= this.nextStatusNs && interval > 0) {
      if (this.statusDumps.length >= STATUS_DUMPS_MAX) {
        this.nextStatusNs = NEVER_NS;
        return;
      }
      const atNs = this.nextStatusNs;
      this.statusDumps.push({
        atNs,
        read: this.read.out(),
        write: this.write.out(),
        verify: this.verifyCounts(),
        errors: this.errors,
        startNs: this.startNs,
        endNs: Math.max(atNs, this.startNs),
        busyNs: Math.max(0, atNs - this.startNs - this.idleNs),
        loopWallMs: 0,
        stat: this.stat.snapshot(atNs),
        pageCache: this.pageCache ? { ...this.pageCache.stats } : null,
      });
      this.nextStatusNs += interval;
    }
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
  /** the PRP entries of a page-cache request, reused */
  private readonly kernelPages: Iova[] = [];

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
    // no command of ours is outstanding: the device has no interrupt to send us (a buffered job between
    // its page cache's requests acts many times without one, and need not wait for the device each time)
    if (this.inflight === 0 && this.freeKernelRequests.length === this.kernelRequests.length && this.env.irqs.available() === 0) return;
    if (this.virtual) {
      // our own EOT must be current, or the device may be waiting on us while we wait on it
      this.publish(now);
      // strictly past now: a device whose EOT is `now` may still raise an interrupt stamped `now`
      // A parked device wakes when the vCPUs pass the time it needs for its next completion; a vCPU that runs
      // past the device's lookahead before that (a buffered job copying while its readahead is in flight)
      // wakes it, so it publishes a bound from our new EOT
      if (this.deviceBound() <= now) this.env.control.event(this.env.deviceWorker).notify();
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
    this.stat.reaped(cqes);
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
    if (cid >= this.slots.length) {
      this.completeKernelRequest(cid - this.slots.length, status);
      return;
    }
    const s = this.slots[cid];
    const clock = this.env.clock;
    if (s.mapping) {
      this.env.dma.iommu_dma_unmap_sg(s.mapping);
      if (this.env.unmapLog) for (const seg of s.mapping.dmaSegments) this.env.unmapLog.append('unmap', seg.dmaAddr, seg.lenBytes, clock.nowNs());
    }
    s.mapping = null;
    this.finishIo(cid, status);
  }

  /** fio reaps an I/O: verify what a read brought, count it, free its slot. */
  private finishIo(cid: number, status: number): void {
    const s = this.slots[cid];
    const clock = this.env.clock;
    clock.charge(this.env.costs.fioReapPerIoNs);
    const now = clock.nowNs();
    if (now >= this.nextStatusNs) this.takeStatusDumps(now);
    if (status !== 0) this.errors++;
    // fio verifies reads of a read-only job as they complete; a job that writes checks its
    // blocks in the verify phase, once nothing is in flight (a read racing an in-flight
    // write to the same block has no defined result)
    const jobWrites = fioJobWrites(this.job);
    if (s.isRead && this.verifyAlgo !== 'none' && status === 0 && (!jobWrites || s.verifyPhase)) {
      // fio's verify: check every block of the buffer (a check of the tool, not charged as guest work)
      const u8 = this.env.mem.u8;
      for (let b = 0; b < s.blocks; b++) {
        const lba = s.lba + b;
        const written = this.writtenLbas.has(lba);
        // fio's verify phase checks the blocks the job wrote (its log of written I/Os), no others
        if (s.verifyPhase && !written) continue;
        this.verified++;
        // what should be there: what this job wrote, what an earlier barrier group wrote, or the drive's own data
        const prior = written ? this.writeSeed : this.env.priorSeeds.get(lba);
        const off = s.buffer.pageGpas[b];
        if (prior !== undefined && verifyBlock(u8, off, lba, this.verifyAlgo, prior, this.verifyPattern)) continue;
        if (this.job.verifyFatal) this.stopped = true;
        if (prior === undefined && unwrittenBlockIntact(u8, off, lba, this.env.nsPrefillSeed)) {
          // the drive's data, read intact: no verify header in it, so fio fails it ("bad magic header"), as it fails
          // data it never wrote; the stack did no harm
          this.neverWritten++;
          this.firstNeverWritten ??= {
            offsetBytes: lba * BLOCK_BYTES,
            ioOffsetBytes: s.lba * BLOCK_BYTES,
            ioLengthBytes: s.blocks * BLOCK_BYTES,
            magic: blockMagic16(u8, off),
          };
          continue;
        }
        // fio's "bad header rand_seed": an intact block another job of the group wrote over
        // ours (their regions overlap) is a verify failure, but not damage by the stack
        if (this.env.peerWriteSeeds.has(blockSeed(u8, off)) && verifyBlock(u8, off, lba, this.verifyAlgo, undefined, this.verifyPattern)) this.overwritten++;
        else this.corrupt++;
      }
    }
    if (!s.isRead && status === 0 && this.job.verifyBacklog && !s.verifyPhase) {
      // verify_backlog: every verifyBacklog written blocks are read back before more are written
      this.backlog.push(s.lba);
      this.backlogBlocks.push(s.blocks);
      if (this.backlogVerifying === 0 && this.backlog.length >= this.job.verifyBacklog) this.backlogVerifying = this.backlog.length;
    }
    const d = s.isRead ? this.read : this.write;
    // the count feeds the status line
    this.env.control.noteProgress(this.env.self);
    // fio counts the verify phase's reads in the read statistics, and nothing that completes during ramp_time
    if (s.verifyPhase || now >= this.rampEndNs) {
      if (d.firstSubmitNs < 0) d.firstSubmitNs = Math.max(s.submitNs, this.rampEndNs);
      this.stat.completed(now, s.isRead ? 0 : 1, s.blocks * BLOCK_BYTES, s.lba * BLOCK_BYTES, s.submitNs, s.issueNs, !this.syncEngine);
      d.ios++;
      d.ioBytes += s.blocks * BLOCK_BYTES;
      d.lastCompleteNs = now;
      d.clat.record(Math.max(1, now - s.issueNs));
      d.lat.record(Math.max(1, now - s.submitNs));
      if (!this.syncEngine) d.slat.record(Math.max(1, s.issueNs - s.submitNs));
    }
    this.inflight--;
    this.free.push(cid);
    this.resourceWait = false;
  }

  private canSubmit(): boolean {
    this.paceNs = NEVER_NS;
    if (this.stopped) return false;
    if (this.requeued >= 0) return !this.resourceWait;
    if (this.free.length === 0) return false;
    if (this.backlogVerifying > 0) return true;
    if (this.phase === 'verify') return !this.job.verifyBacklog && this.verifyPos < this.regionBlocks;
    const now = this.env.clock.nowNs();
    if (this.deadlineNs !== NEVER_NS && now >= this.deadlineNs) return false;
    const io = this.pattern.peek();
    if (io === null) return false;
    if (this.thinkPending) {
      // fio's handle_thinktime: wait for the I/O in flight, spin the busy part, sleep the rest
      if (this.inflight > 0) return false;
      this.thinkPending = false;
      this.env.clock.charge(this.job.thinktimeSpinNs);
      this.thinkUntilNs = this.env.clock.nowNs() + this.job.thinktimeNs - this.job.thinktimeSpinNs;
    }
    const t = Math.max(this.thinkUntilNs, this.rateNextNs(io.isRead));
    if (this.env.clock.nowNs() < t) {
      this.paceNs = Math.min(t, this.deadlineNs);
      return false;
    }
    return true;
  }

  /**
   * fio's rate and rate_iops: the earliest model time the next I/O of a
   * direction may go, so that what the direction issued since the start
   * keeps to its cap.
   */
  private rateNextNs(isRead: boolean): number {
    const dir = isRead ? 'read' : 'write';
    const rate = this.job.rate[dir];
    const iops = this.job.rateIops[dir];
    let t = 0;
    if (rate > 0) t = Math.max(t, this.startNs + Math.ceil((this.issuedBytes[dir] * 1e9) / rate));
    if (iops > 0) t = Math.max(t, this.startNs + Math.ceil((this.issuedIos[dir] * 1e9) / iops));
    return t;
  }

  /** Count an issued I/O for the rate caps and thinktime_blocks. */
  private noteIssued(isRead: boolean, bytes: number): void {
    const dir = isRead ? 'read' : 'write';
    this.issuedBytes[dir] += bytes;
    this.issuedIos[dir]++;
    if (this.job.thinktimeNs > 0 && ++this.iosSinceThink >= this.job.thinktimeBlocks) {
      this.iosSinceThink = 0;
      this.thinkPending = true;
    }
  }

  /** fio's rate_min and rate_iops_min: a direction below its minimum fails the job. */
  private rateMinMissed(): number {
    let missed = 0;
    for (const [dir, d] of [
      ['read', this.read],
      ['write', this.write],
    ] as const) {
      const seconds = (d.lastCompleteNs - Math.max(0, d.firstSubmitNs)) / 1e9;
      if (seconds <= 0) continue;
      const min = this.job.rateMin[dir];
      const minIops = this.job.rateIopsMin[dir];
      if ((min > 0 && d.ioBytes / seconds < min) || (minIops > 0 && d.ios / seconds < minIops)) missed++;
    }
    return missed;
  }

  private submitIo(): void {
    if (this.requeued >= 0) {
      const cid = this.requeued;
      this.requeued = -1;
      this.nvme_queue_rq(cid);
      return;
    }
    const clock = this.env.clock;
    const job = this.job;
    const cid = this.free.pop()!;
    const s = this.slots[cid];
    const fromBacklog = this.backlogVerifying > 0 ? this.backlog.shift() : undefined;
    const backlogBlocks = fromBacklog !== undefined ? this.backlogBlocks.shift()! : 0;
    if (fromBacklog !== undefined) this.backlogVerifying--;
    let isRead: boolean;
    let lba: number;
    if (fromBacklog !== undefined) {
      isRead = true;
      lba = fromBacklog;
      s.blocks = backlogBlocks;
    } else if (this.phase === 'verify') {
      isRead = true;
      lba = job.offsetBytes / BLOCK_BYTES + this.verifyPos;
      s.blocks = Math.min(this.verifyBlocks, this.regionBlocks - this.verifyPos);
      this.verifyPos += s.blocks;
    } else {
      const io = this.pattern.next()!;
      isRead = io.isRead;
      lba = io.lba;
      s.blocks = io.blocks;
    }
    s.isRead = isRead;
    s.lba = lba;
    s.verifyPhase = this.phase === 'verify' || fromBacklog !== undefined;
    s.submitNs = clock.nowNs();
    const d = isRead ? this.read : this.write;
    if (d.firstSubmitNs < 0 && !s.verifyPhase && s.submitNs >= this.rampEndNs) d.firstSubmitNs = s.submitNs;
    if (!s.verifyPhase) this.noteIssued(isRead, s.blocks * BLOCK_BYTES);
    if (!isRead) {
      // fio fills the buffer before io_submit (verify headers when verifying)
      for (let b = 0; b < s.blocks; b++) {
        fillBlock(this.env.mem.u8, s.buffer.pageGpas[b], lba + b, this.writeSeed, this.verifyAlgo, this.verifyPattern);
        this.writtenLbas.add(lba + b);
      }
    }
    if (this.pageCache) {
      this.submitBuffered(cid, s, this.pageCache);
      return;
    }
    if (this.uringBatch > 0) {
      this.io_uring_queue_sqe(cid);
      return;
    }
    // libaio's io_submit, or psync's pread (one system call per I/O either way)
    clock.charge(this.env.costs.fioSubmitNs + s.blocks * this.env.costs.guestPinUserPagePerPageNs);
    this.nvme_queue_rq(cid);
  }

  /**
   * io_uring: fio fills the I/O's SQE in the SQ ring (user space, no system
   * call); once `iodepth_batch_submit` are queued, io_uring_enter submits them.
   */
  private io_uring_queue_sqe(cid: number): void {
    this.env.clock.charge(this.env.costs.fioSubmitUserNs);
    this.sqQueued.push(cid);
    if (this.sqQueued.length >= this.uringBatch) this.io_uring_enter();
  }

  /**
   * io_uring_enter(to_submit): one system call, then per SQE the kernel's
   * submission (io_uring's request setup, the block layer's direct I/O and
   * blk-mq: fioSubmitNs less fio's user share and the one system call it
   * holds), the pinning of its pages unless the buffers are registered
   * (fixedbufs), and nvme_queue_rq. fio commits what is queued before it
   * waits for completions, too.
   */
  private io_uring_enter(): void {
    const costs = this.env.costs;
    const clock = this.env.clock;
    this.env.profiler.enter();
    clock.charge(costs.syscallEntryExitNs);
    // the two are parts of fioSubmitNs; a profile scaled key by key (vmstack sensitivity) may make them more than it
    const perSqeNs = Math.max(0, costs.fioSubmitNs - costs.fioSubmitUserNs - costs.syscallEntryExitNs);
    const pinPerPageNs = this.job.fixedBufs ? 0 : costs.guestPinUserPagePerPageNs;
    let n = 0;
    while (this.sqQueued.length > 0 && this.requeued < 0) {
      const cid = this.sqQueued.shift()!;
      clock.charge(perSqeNs + this.slots[cid].blocks * pinPerPageNs);
      this.nvme_queue_rq(cid);
      n++;
    }
    this.stat.submitCall(n);
    this.env.profiler.exit('io_uring_enter');
  }

  /** nvme_queue_rq: map the request's buffer for DMA, write its SQE and ring the doorbell. */
  private nvme_queue_rq(cid: number): void {
    const clock = this.env.clock;
    const s = this.slots[cid];
    const isRead = s.isRead;
    this.env.profiler.enter();
    // the device writes memory on a read, reads it on a write
    // an I/O shorter than the buffer (bsrange, bssplit, bs=r,w) maps only its own pages
    const segments = s.blocks === s.segments.length ? s.segments : s.segments.slice(0, s.blocks);
    const mapFromNs = clock.nowNs();
    try {
      s.mapping = this.env.dma.iommu_dma_map_sg(segments, isRead ? DMA_FROM_DEVICE : DMA_TO_DEVICE, undefined, s.mappingRecord);
      s.mappingRecord = s.mapping;
    } catch (e) {
      if (!(e instanceof IommuMapNoMemError)) throw e;
      this.env.profiler.exit('nvme_queue_rq');
      // BLK_STS_RESOURCE: the request waits for one in flight to complete and free its mappings
      if (this.inflight === 0) throw new Error(`${e.message}, with no I/O in flight to free mappings: one I/O needs more than the IOMMU can give`);
      this.requeued = cid;
      this.resourceWait = true;
      return;
    }
    // logged at the call's start: the IOVA may be mapped for the device from any moment of the call on
    if (this.env.unmapLog) for (const seg of s.mapping.dmaSegments) this.env.unmapLog.append('map', seg.dmaAddr, seg.lenBytes, mapFromNs);
    clock.charge(this.env.costs.nvmeQueueRqNs + s.blocks * this.env.costs.nvmeSetupPrpPerPageNs);
    const tail = nvme_queue_rw(this.env.mem, this.env.queue, isRead, cid, s.lba, s.blocks * BLOCK_BYTES, dmaPages(s.mapping, this.pages), s.prpPage);
    // a synchronous engine's I/O is the one system call: fio times it all as clat
    s.issueNs = this.syncEngine ? s.submitNs : clock.nowNs();
    this.inflight++;
    this.stat.submitted(s.submitNs, this.uringBatch === 0);
    this.ringDoorbell(DOORBELL_SQ_TAIL, tail);
    this.env.profiler.exit('nvme_queue_rq');
  }

  /** The earliest timer: the lazy flush queue's, the bounce pool's, the page cache flusher's. */
  private nextTimerNs(): number {
    const t = Math.min(this.env.dma.nextTimerNs(), this.paceNs);
    return this.pageCache ? Math.min(t, this.pageCache.nextTimerNs()) : t;
  }

  /** Run the timers that are due; true if one was. */
  private runTimers(): boolean {
    const now = this.env.clock.nowNs();
    let ran = false;
    if (this.env.dma.nextTimerNs() <= now) {
      this.env.dma.runTimers();
      ran = true;
    }
    if (this.pageCache && this.pageCache.nextTimerNs() <= now) {
      this.pageCache.runTimers();
      ran = true;
    }
    return ran;
  }

  /** Idle: nothing to do until the next interrupt or timer; the clock moves to it. */
  private idleWait(): void {
    const clock = this.env.clock;
    const idleFromNs = clock.nowNs();
    const timerNs = this.nextTimerNs();
    // the timer goes out before the idle EOT: a peer that sees us idle knows when we act on it
    this.env.control.publishTimer(this.env.self, timerNs);
    this.publish(NEVER_NS);
    this.stat.slept();
    const irqs = this.env.irqs;
    this.idleTimerNs = timerNs;
    this.env.platform.awaitInput(this.idleWakeFn, timerNs);
    if (irqs.available() > 0 && irqs.timestampAt(irqs.offsetAt(0)) <= timerNs) clock.advanceTo(irqs.timestampAt(irqs.offsetAt(0)));
    else clock.advanceTo(timerNs);
    this.idleNs += clock.nowNs() - idleFromNs;
    this.publish(clock.nowNs());
  }

  // ---- buffered I/O (direct=0) -------------------------------------------

  /**
   * A buffered fio I/O: the kernel copies between the user buffer and the
   * page cache inside the system call (readahead and writeback go to the
   * drive as the page cache's own requests), so the I/O is complete when
   * the call returns, as libaio's io_submit does for buffered files.
   */
  private submitBuffered(cid: number, s: Slot, pc: PageCache): void {
    const clock = this.env.clock;
    clock.charge(this.env.costs.fioSubmitNs);
    s.issueNs = this.syncEngine ? s.submitNs : clock.nowNs();
    this.inflight++;
    this.env.profiler.enter();
    let status = 0;
    if (s.isRead) {
      if (!pc.filemap_read(s.lba, s.blocks, s.buffer.pageGpas)) status = 1;
      this.env.profiler.exit('filemap_read', s.blocks * BLOCK_BYTES);
    } else {
      pc.generic_perform_write(s.lba, s.blocks, s.buffer.pageGpas);
      this.env.profiler.exit('generic_perform_write', s.blocks * BLOCK_BYTES);
      this.writesSinceSync++;
      const every = this.job.fsyncEveryIos || this.job.fdatasyncEveryIos;
      if (every > 0 && this.writesSinceSync >= every) {
        this.writesSinceSync = 0;
        if (!this.fsync(pc)) status = 1;
      }
    }
    this.finishIo(cid, status);
  }

  /** fsync/fdatasync of the drive: every dirty page written back and waited for (the drive's volatile cache is not modelled). */
  private fsync(pc: PageCache): boolean {
    this.env.profiler.enter();
    const ok = pc.vfs_fsync_range();
    this.env.profiler.exit('vfs_fsync_range');
    return ok;
  }

  /** The block layer's submission of a page-cache request: map the pages for DMA and queue one NVMe command. */
  private submit_bio(isRead: boolean, lba: number, pageGpas: readonly number[], done: (status: number) => void): boolean {
    const r = this.freeKernelRequests.pop();
    if (r === undefined) return false;
    const req = this.kernelRequests[r];
    const clock = this.env.clock;
    this.env.profiler.enter();
    const segments = pageGpas.map((gpa) => ({ gpa, lenBytes: PAGE_SIZE_BYTES }));
    req.mapping = this.env.dma.iommu_dma_map_sg(segments, isRead ? DMA_FROM_DEVICE : DMA_TO_DEVICE);
    req.done = done;
    clock.charge(this.env.costs.nvmeQueueRqNs + pageGpas.length * this.env.costs.nvmeSetupPrpPerPageNs);
    const cid = this.slots.length + r;
    const tail = nvme_queue_rw(
      this.env.mem,
      this.env.queue,
      isRead,
      cid,
      lba,
      pageGpas.length * BLOCK_BYTES,
      dmaPages(req.mapping, this.kernelPages),
      req.prpPage,
    );
    this.ringDoorbell(DOORBELL_SQ_TAIL, tail);
    this.env.profiler.exit('nvme_queue_rq');
    this.publish(clock.nowNs());
    return true;
  }

  private completeKernelRequest(r: number, status: number): void {
    const req = this.kernelRequests[r];
    if (req.mapping) this.env.dma.iommu_dma_unmap_sg(req.mapping);
    req.mapping = null;
    const done = req.done;
    req.done = null;
    this.freeKernelRequests.push(r);
    this.kernelCompletions++;
    if (status !== 0) this.errors++;
    done?.(status);
  }

  /** The page cache waits (for a page, a free request, writeback): until a request completes or a timer runs. */
  private blockIoWait(): void {
    const before = this.kernelCompletions;
    for (;;) {
      faultCheckpoint(this.env.clock.nowNs());
      this.takeInterrupts();
      const ranTimer = this.runTimers();
      if (this.kernelCompletions !== before || ranTimer) return;
      this.idleWait();
    }
  }

  /** fio before its verify phase, and end_fsync: sync the file, then (verify) drop its cache so the reads come from the drive. */
  private syncBeforeVerify(pc: PageCache): void {
    if (!this.fsync(pc)) this.errors++;
    pc.invalidate_mapping_pages();
  }

  run(): VcpuJobResult {
    const clock = this.env.clock;
    // the vCPU is busy except while it waits, idle, for an interrupt (busy-polling the VMM counts as busy)
    const wallStart = performance.now();
    this.publish(clock.nowNs());
    let endFsyncDone = false;
    for (;;) {
      faultCheckpoint(clock.nowNs());
      if (clock.nowNs() >= this.nextStatusNs) this.takeStatusDumps(clock.nowNs());
      this.takeInterrupts();
      this.runTimers();
      if (this.canSubmit()) {
        this.quantumGate(clock.nowNs());
        this.submitIo();
        this.publish(clock.nowNs());
        continue;
      }
      if (this.sqQueued.length > 0 && this.requeued < 0) {
        // io_uring: nothing more to queue now; fio submits what the SQ ring holds before it waits
        this.quantumGate(clock.nowNs());
        this.io_uring_enter();
        this.publish(clock.nowNs());
        continue;
      }
      if (this.inflight === 0 && this.paceNs === NEVER_NS) {
        if (this.phase === 'main' && this.pageCache && this.job.endFsync && !endFsyncDone && this.write.ios > 0) {
          // fio's end_fsync: part of the job's time (fio's write runtime ends after it)
          endFsyncDone = true;
          if (!this.fsync(this.pageCache)) this.errors++;
          this.write.lastCompleteNs = Math.max(this.write.lastCompleteNs, clock.nowNs());
          continue;
        }
        if (this.phase === 'main' && this.job.verify !== 'none' && this.job.doVerify && this.write.ios > 0 && !this.stopped) {
          this.phase = 'verify';
          if (this.pageCache) this.syncBeforeVerify(this.pageCache);
          // with verify_backlog the end of the job reads back what the backlog has not
          if (this.job.verifyBacklog) this.backlogVerifying = this.backlog.length;
          continue;
        }
        break;
      }
      // idle: nothing to submit until a completion; wait for the next interrupt (or the flush timer)
      this.idleWait();
    }
    // the status dumps due before the job's end (from its end on, its final statistics stand for it)
    if (clock.nowNs() > this.nextStatusNs) this.takeStatusDumps(clock.nowNs() - 1);
    const endNs = clock.nowNs();
    this.errors += this.rateMinMissed();
    const busyNs = endNs - this.startNs - this.idleNs;
    if (this.pageCache) {
      // after the job: the flusher writes what is still dirty back to the drive, and the cache is dropped
      if (!this.pageCache.vfs_fsync_range()) this.errors++;
      this.pageCache.release();
    }
    // flush what the lazy flush queue still holds (the job is over: not counted in it), with our
    // EOT still published, so its locks, too, are granted in model-time order
    this.env.dma.quiesce();
    this.finished = true;
    this.publish(NEVER_NS);
    return {
      read: this.read.out(),
      write: this.write.out(),
      verify: this.verifyCounts(),
      errors: this.errors,
      startNs: this.startNs,
      endNs,
      busyNs,
      loopWallMs: performance.now() - wallStart,
      stat: this.stat.result(endNs),
      pageCache: this.pageCache ? { ...this.pageCache.stats } : null,
      ...(this.job.statusIntervalNs ? { statusDumps: this.statusDumps } : {}),
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
