/**
 * One guest vCPU: vCPU 0 also brings the guest up — for each passed-through
 * drive, (with an IOMMU) attaches its endpoint to its domain, probes it and
 * maps its coherent memory (queues, identify page, PRP list pages) once,
 * enables the NVMe controller, identifies it and creates the I/O queue pair of
 * every vCPU whose job uses it — and shuts it down. Each vCPU runs one fio
 * job on one drive, through that drive's IOMMU domain and virtio-iommu.
 *
 * The steps of a run, in order (runGuestVcpu):
 * 1. wait for the VMM (guest RAM set up);
 * 2. vCPU 0, drive by drive: viommu_attach_coherent, nvme_pci_configure_admin_queue,
 *    nvme_enable_ctrl, nvme_identify, nvme_create_io_queues; the others wait
 *    for the queues;
 * 3. fio_alloc_buffers, one vCPU after another;
 * 4. the start barrier, then the job (Vcpu.run);
 * 5. vCPU 0, once every vCPU is done: nvme_dev_disable (pool eviction, queue
 *    deletion) and viommu_detach_coherent;
 * 6. fio_free_buffers, one vCPU after another; tell the device and the VMM.
 */

import {
  asGpa,
  asIova,
  attachGuestMemory,
  DmaUnmapLog,
  DOORBELL_SQ_TAIL,
  encodeGuestToDeviceDone,
  type GuestMemory,
  LockTable,
  ModelClock,
  mulberry32Float,
  NEVER_NS,
  NVME_ADMIN_CREATE_CQ,
  NVME_ADMIN_CREATE_SQ,
  NVME_ADMIN_DELETE_CQ,
  NVME_ADMIN_DELETE_SQ,
  NVME_ADMIN_IDENTIFY,
  NVME_AQ_DEPTH,
  NVME_CC_ENABLE,
  NVME_CQ_IRQ_ENABLED,
  NVME_CTRL_PAGE_SIZE_BYTES,
  NVME_ID_CNS_CTRL,
  NVME_ID_CNS_NS,
  NVME_QUEUE_PHYS_CONTIG,
  NVME_REG_ACQ,
  NVME_REG_AQA,
  NVME_REG_ASQ,
  NVME_REG_CC,
  nvmeAqa,
  nvmeCreateQueueCdw10,
  PAGE_SIZE_BYTES,
  parkThread,
  Ring,
  RUN_SHUTDOWN_TURN,
  RUN_VCPUS_DONE,
  type RunControl,
  SentLog,
  VM_BUFFER_TURN,
  VM_FAULTS_DRAIN,
  VM_FAULTS_REPORTED,
  VM_FREE_TURN,
  VM_QUEUES_READY,
  VM_QUEUES_READY_NS,
  VM_VCPUS_DONE,
  VM_VMM_READY,
  vmEndTimes,
  writeSqe,
} from '@vmstack/shm';
import { DmaIommu } from './dma.js';
import type { VcpuDeviceInit, VcpuWorkerInit, VcpuWorkerResult } from './index.js';
import { BouncePool } from './iommu/bounce-pool.js';
import { iommu_iotlb_sync, newIotlbGather } from './iommu/domain-ops.js';
import { FlushQueue } from './iommu/flush-queue.js';
import { bareMetalDmaCosts, IntelIommuDriver } from './iommu/intel-iommu.js';
import { IovaDomain } from './iommu/iova.js';
import { Swiotlb } from './iommu/swiotlb.js';
import { fioEngineIodepth, PAGE_CACHE_MAX_REQUESTS } from './job-spec.js';
import { LastLevelCache } from './mm/llc.js';
import { PageAllocator, type UserBuffer } from './mm/page-alloc.js';
import {
  type NvmeBar,
  type NvmeQueuePair,
  newQueuePair,
  nvme_next_cqe,
  nvme_submit_cmd,
  nvme_write_doorbell,
  nvme_write_reg,
  type PrpListPage,
} from './nvme/nvme-pci.js';
import { Profiler } from './profile.js';
import { type GuestPlatform, Vcpu, type VcpuJobResult } from './vcpu.js';
import { emptyViommuFaultStats, VIOMMU_FAULT_REPORTS_KEPT, ViommuDriver, type ViommuFaultStats } from './virtio-iommu/viommu.js';

/** The namespace the drive exposes. */
const NSID = 1;

/** One passed-through drive as this vCPU drives it: its BAR, its admin queue, its IOMMU domain and DMA API. */
interface GuestDevice {
  readonly init: VcpuDeviceInit;
  /** bare metal: the VT-d driver of the drive's domain */
  readonly vtd: IntelIommuDriver | null;
  readonly doorbells: Ring;
  readonly bar: NvmeBar;
  readonly irqs: Ring;
  readonly iovad: IovaDomain | null;
  readonly viommu: ViommuDriver | null;
  readonly fq: FlushQueue | null;
  readonly pool: BouncePool | null;
  readonly dma: DmaIommu;
  readonly adminQ: NvmeQueuePair;
  adminCid: number;
}

/** Everything one vCPU's guest code works with, attached once per run. */
interface Guest {
  readonly init: VcpuWorkerInit;
  readonly v: number;
  readonly self: number;
  readonly control: RunControl;
  readonly platform: GuestPlatform;
  readonly clock: ModelClock;
  readonly mem: GuestMemory;
  readonly locks: LockTable;
  readonly profiler: Profiler;
  readonly pages: PageAllocator;
  /** the last-level cache as this vCPU's copies see it: every copy is charged through it (mm/llc.ts) */
  readonly cache: LastLevelCache;
  /** the virtio-iommu drivers, in init.viommus order (none with the direct strategy) */
  readonly viommus: ViommuDriver[];
  /** the drives, in init.devices order */
  readonly devices: GuestDevice[];
  /** the drive the job does I/O to */
  readonly job: GuestDevice;
  readonly swiotlb: Swiotlb | null;
  readonly vmState: Int32Array;
  readonly runState: Int32Array;
  /** every guest lock waits for the quantum first, so lock grants follow model time (set while the job runs) */
  readonly lockHooks: { gate: (nowNs: number) => void; blocked: () => void };
}

interface FioSlot {
  buffer: UserBuffer;
  prpPage: PrpListPage;
}

/**
 * Bring the guest up (vCPU 0), run this vCPU's fio job, shut down (vCPU 0).
 * `platform` says how to wait and how to reach the VMM: parked on shared
 * memory in a worker, or by stepping the other components in one thread.
 */
export function runGuestVcpu(init: VcpuWorkerInit, self: number, control: RunControl, platform: GuestPlatform): () => VcpuWorkerResult {
  const g = attachGuest(init, self, control, platform);
  return () => {
    control.publishEot(self, 0);
    // the VMM starts the vCPUs once guest RAM is set up (mapped through VFIO without a vIOMMU)
    waitCount(g, VM_VMM_READY, init.vmmThreads);
    if (g.v === 0) {
      for (const d of g.devices) {
        if (d.viommu) viommu_attach_coherent(d, d.viommu);
        if (d.vtd && d.iovad) intel_iommu_map_coherent(d, d.vtd);
        nvme_pci_configure_admin_queue(g, d);
        nvme_enable_ctrl(g, d);
        nvme_identify(g, d);
        nvme_create_io_queues(g, d);
      }
      publishQueuesReady(g);
    } else {
      waitQueuesReady(g);
    }
    const slots = fio_alloc_buffers(g);
    startBarrier(g);
    const result = runJob(g, slots);
    if (g.v === 0) {
      // shutdown, once every vCPU is done: the pools release their cached slots, the
      // driver deletes its queues and frees its coherent memory, the endpoints detach
      waitAllJobsDone(g);
      for (const d of g.devices) {
        nvme_dev_disable(g, d);
        if (d.viommu) viommu_detach_coherent(d, d.viommu);
        if (d.vtd && d.iovad) intel_iommu_unmap_coherent(d, d.vtd);
      }
      passShutdownTurn(g);
    }
    fio_free_buffers(g, slots);
    sayDone(g);
    if (g.v === 0) viommu_read_fault_reports(g);
    return collectResult(g, result);
  };
}

function attachGuest(init: VcpuWorkerInit, self: number, control: RunControl, platform: GuestPlatform): Guest {
  const v = init.vcpu;
  const clock = new ModelClock(init.clockMode, init.dilation, init.epochMs);
  const mem = attachGuestMemory(init.guestRam);
  const lockHooks = { gate: (_nowNs: number): void => {}, blocked: (): void => {} };
  const locks = LockTable.attach(
    init.locks,
    self,
    control,
    init.spinLoads,
    (t) => lockHooks.gate(t),
    () => lockHooks.blocked(),
  );
  // bare metal: the IOMMU units' qi->q_lock, granted in model-time order like the guest's locks
  const hostLocks = init.hostLocks
    ? LockTable.attach(
        init.hostLocks,
        self,
        control,
        init.spinLoads,
        (t) => lockHooks.gate(t),
        () => lockHooks.blocked(),
      )
    : null;
  const profiler = new Profiler(clock);
  const pages = PageAllocator.attach(init.pageAlloc, v, locks, init.costs);
  const cache = new LastLevelCache(init.costs);
  const iommu = init.strategy !== 'direct';
  const viommus = iommu
    ? init.viommus.map(
        (vi, i) =>
          new ViommuDriver(
            mem,
            vi.vqLayout,
            v === 0,
            vi.viommuRequestAreaGpa,
            vi.viommuSlotWordGpa,
            locks,
            { kick: (nowNs) => platform.kick(nowNs, i) },
            clock,
            init.costs,
            init.driverGeneration,
            profiler,
            vi.requestLockName,
            vi.viommuConfigGpa,
            vi.eventQueue ?? null,
          ),
      )
    : [];
  const swiotlb = init.swiotlb && init.devices.some((d) => d.untrusted) ? Swiotlb.attach(init.swiotlb, v, locks, mem.u8, init.costs, cache) : null;
  const devices = init.devices.map((d): GuestDevice => {
    const doorbells = Ring.attach(d.doorbellRing);
    const bar: NvmeBar = {
      doorbells,
      log: new SentLog(doorbells),
      spinLoads: init.spinLoads,
      abort: control,
      lazyWake: init.gatePeers.length === 0 && init.clockMode === 'virtual',
    };
    const iovad = iommu ? IovaDomain.attach(d.iovaDomain, v, locks, init.costs) : null;
    const viommu = iommu && d.viommu >= 0 ? viommus[d.viommu] : null;
    const vtd =
      d.intelIommu && hostLocks
        ? IntelIommuDriver.attach(d.intelIommu, { lockTable: hostLocks, clock, costs: init.costs, profiler, spinLoads: init.spinLoads, abort: control })
        : null;
    const ops = viommu ?? (iommu ? vtd : null);
    const flushIotlbAll = viommu ? () => viommu.viommu_iotlb_sync() : () => vtd?.flush_iotlb_all(d.domainId);
    const fq = init.strategy === 'lazy' && iovad && ops ? FlushQueue.attach(d.flushQueue!, v, locks, iovad, init.costs, flushIotlbAll) : null;
    const pool = init.strategy === 'bounce' ? BouncePool.attach(d.bouncePool!, v, locks, pages, init.costs, cache) : null;
    const dma = new DmaIommu(
      init.strategy,
      {
        domain: d.domainId,
        iovad,
        iommu: ops,
        fq,
        pool,
        swiotlb: d.untrusted ? swiotlb : null,
        mem: mem.u8,
        cpu: v,
        limitPfn: d.iovaLimitPfn,
        untrusted: d.untrusted,
        cache,
      },
      clock,
      // bare metal: dma-iommu calls the VT-d driver directly, without the virtio-iommu driver's own mapping tree
      vtd ? { ...init.costs, ...bareMetalDmaCosts(init.costs) } : init.costs,
      profiler,
    );
    return {
      init: d,
      vtd,
      doorbells,
      bar,
      irqs: Ring.attach(d.irqRing),
      iovad,
      viommu,
      fq,
      pool,
      dma,
      adminQ: newQueuePair(0, d.adminSqGpa, d.adminCqGpa, NVME_AQ_DEPTH),
      adminCid: 0,
    };
  });
  const job = devices[init.jobDevice];
  if (v === 0 && init.alwaysBounceLimitSchedule) job.dma.scheduleAlwaysBounceLimit(init.alwaysBounceLimitSchedule);
  return {
    init,
    v,
    self,
    control,
    platform,
    clock,
    mem,
    locks,
    profiler,
    pages,
    cache,
    viommus,
    devices,
    job,
    swiotlb,
    vmState: new Int32Array(init.vmState),
    runState: new Int32Array(init.runState.sab),
    lockHooks,
  };
}

// ---- the VM's run state ------------------------------------------------

function waitFlag(g: Guest, index: number): void {
  waitCount(g, index, 1);
}

function waitCount(g: Guest, index: number, count: number): void {
  for (let x = Atomics.load(g.vmState, index); x < count; x = Atomics.load(g.vmState, index)) {
    if (g.control.aborted()) throw new Error('aborted');
    parkThread(g.vmState, index, x, 50);
  }
}

/** Wait until the turn counter at `index` reaches `turn`. */
function waitTurn(g: Guest, index: number, turn: number): void {
  for (let now = Atomics.load(g.vmState, index); now !== turn; now = Atomics.load(g.vmState, index)) {
    if (g.control.aborted()) throw new Error('aborted');
    parkThread(g.vmState, index, now, 50);
  }
}

/** Pass the turn counter at `index` to the next vCPU. */
function passTurn(g: Guest, index: number): void {
  Atomics.store(g.vmState, index, g.v + 1);
  Atomics.notify(g.vmState, index);
}

function publishQueuesReady(g: Guest): void {
  Atomics.store(g.vmState, VM_QUEUES_READY_NS, g.clock.nowNs());
  Atomics.store(g.vmState, VM_QUEUES_READY, 1);
  Atomics.notify(g.vmState, VM_QUEUES_READY);
}

function waitQueuesReady(g: Guest): void {
  g.control.publishEot(g.self, NEVER_NS);
  waitFlag(g, VM_QUEUES_READY);
  g.clock.syncTo(Atomics.load(g.vmState, VM_QUEUES_READY_NS));
}

// ---- vCPU 0: the IOMMU domain of the device ---------------------------

/**
 * Probe the virtio-iommu (once), PROBE the drive's endpoint and keep its
 * reserved regions (the MSI window) out of the IOVA domain
 * (iova_reserve_iommu_regions, at domain set-up: not charged), attach the
 * endpoint to its domain, and map the drive's coherent memory once (IOVA = GPA).
 */
function viommu_attach_coherent(d: GuestDevice, viommu: ViommuDriver): void {
  const { init } = d;
  const probed = viommu.viommu_probe();
  // iommu_dma_init_domain: the allocator's limit lies within the domain aperture (input_range)
  const lastIova = BigInt(init.iovaLimitPfn) * BigInt(PAGE_SIZE_BYTES) + BigInt(PAGE_SIZE_BYTES - 1);
  if (lastIova > probed.aperture.end)
    throw new Error(`virtio-iommu: IOVA limit 0x${lastIova.toString(16)} is past the device's input_range end 0x${probed.aperture.end.toString(16)}`);
  for (const r of viommu.viommu_probe_endpoint(init.endpointId)) {
    d.iovad?.reserve_iova(Math.floor(r.start / PAGE_SIZE_BYTES), Math.floor(r.end / PAGE_SIZE_BYTES));
  }
  viommu.viommu_attach_dev(init.domainId, init.endpointId);
  viommu.viommu_map_pages(init.domainId, asIova(init.coherentGpa), asGpa(init.coherentGpa), init.coherentBytes, true, true);
  viommu.viommu_iotlb_sync_map();
}

/** Bare metal: map the drive's coherent memory into its VT-d domain once (IOVA = GPA); no endpoint to attach. */
function intel_iommu_map_coherent(d: GuestDevice, vtd: IntelIommuDriver): void {
  const { init } = d;
  vtd.map_pages(init.domainId, asIova(init.coherentGpa), asGpa(init.coherentGpa), init.coherentBytes, true, true);
  vtd.iotlb_sync_map(init.domainId, asIova(init.coherentGpa), init.coherentBytes);
}

/** Bare metal: unmap the drive's coherent memory and invalidate it. */
function intel_iommu_unmap_coherent(d: GuestDevice, vtd: IntelIommuDriver): void {
  const { init } = d;
  const gather = newIotlbGather();
  vtd.unmap_pages(init.domainId, asIova(init.coherentGpa), init.coherentBytes, gather);
  iommu_iotlb_sync(vtd, init.domainId, gather);
}

/** Unmap the drive's coherent memory and detach its endpoint. */
function viommu_detach_coherent(d: GuestDevice, viommu: ViommuDriver): void {
  const { init } = d;
  viommu.viommu_unmap_pages(init.domainId, asIova(init.coherentGpa), init.coherentBytes);
  viommu.viommu_iotlb_sync();
  viommu.viommu_detach_dev(init.domainId, init.endpointId);
}

// ---- vCPU 0: the NVMe controller --------------------------------------

/** Admin queue sizes and addresses into AQA, ASQ, ACQ. */
function nvme_pci_configure_admin_queue(g: Guest, d: GuestDevice): void {
  nvme_write_reg(d.bar, g.clock.nowNs(), NVME_REG_AQA, nvmeAqa(NVME_AQ_DEPTH, NVME_AQ_DEPTH));
  nvme_write_reg(d.bar, g.clock.nowNs(), NVME_REG_ASQ, d.init.adminSqGpa);
  nvme_write_reg(d.bar, g.clock.nowNs(), NVME_REG_ACQ, d.init.adminCqGpa);
}

/** CC.EN = 1: the controller creates its admin queues from AQA/ASQ/ACQ. */
function nvme_enable_ctrl(g: Guest, d: GuestDevice): void {
  nvme_write_reg(d.bar, g.clock.nowNs(), NVME_REG_CC, NVME_CC_ENABLE);
}

/** Identify the controller, then the namespace, into the identify page. */
function nvme_identify(g: Guest, d: GuestDevice): void {
  const { mem } = g;
  const { init } = d;
  nvme_submit_sync_cmd(g, d, (gpa, cid) =>
    writeSqe(mem, gpa, { opcode: NVME_ADMIN_IDENTIFY, commandId: cid, prp1: init.identifyGpa, cdw10: NVME_ID_CNS_CTRL }),
  );
  nvme_submit_sync_cmd(g, d, (gpa, cid) =>
    writeSqe(mem, gpa, { opcode: NVME_ADMIN_IDENTIFY, commandId: cid, nsid: NSID, prp1: init.identifyGpa, cdw10: NVME_ID_CNS_NS }),
  );
}

/** One I/O queue pair per vCPU using the drive: queue q + 1, its CQ raising interrupt vector q. */
function nvme_create_io_queues(g: Guest, d: GuestDevice): void {
  const { mem } = g;
  const { init } = d;
  for (let q = 0; q < init.queues.length; q++) {
    const qid = q + 1;
    const cdw10 = nvmeCreateQueueCdw10(qid, init.queueDepth);
    nvme_submit_sync_cmd(g, d, (gpa, cid) =>
      writeSqe(mem, gpa, {
        opcode: NVME_ADMIN_CREATE_CQ,
        commandId: cid,
        prp1: init.queues[q].cqGpa,
        cdw10,
        cdw11: (q << 16) | NVME_CQ_IRQ_ENABLED | NVME_QUEUE_PHYS_CONTIG,
      }),
    );
    nvme_submit_sync_cmd(g, d, (gpa, cid) =>
      writeSqe(mem, gpa, { opcode: NVME_ADMIN_CREATE_SQ, commandId: cid, prp1: init.queues[q].sqGpa, cdw10, cdw11: (qid << 16) | NVME_QUEUE_PHYS_CONTIG }),
    );
  }
}

/** Teardown: the drive's pool releases every cached slot, then each I/O queue pair is deleted. */
function nvme_dev_disable(g: Guest, d: GuestDevice): void {
  const { mem } = g;
  const { init } = d;
  d.dma.evict(true);
  for (let q = 0; q < init.queues.length; q++) {
    const qid = q + 1;
    nvme_submit_sync_cmd(g, d, (gpa, cid) => writeSqe(mem, gpa, { opcode: NVME_ADMIN_DELETE_SQ, commandId: cid, cdw10: qid }));
    nvme_submit_sync_cmd(g, d, (gpa, cid) => writeSqe(mem, gpa, { opcode: NVME_ADMIN_DELETE_CQ, commandId: cid, cdw10: qid }));
  }
}

/** Submit one admin command and wait (idle until its interrupt) for its completion. */
function nvme_submit_sync_cmd(g: Guest, d: GuestDevice, write: (gpa: number, cid: number) => void): void {
  const { clock, control } = g;
  const { irqs } = d;
  const cid = d.adminCid++;
  const tail = nvme_submit_cmd(d.adminQ, (gpa) => write(gpa, cid));
  nvme_write_doorbell(d.bar, clock.nowNs(), 0, DOORBELL_SQ_TAIL, tail);
  // idle until the completion: wake the drive, which may be waiting for this vCPU's EOT
  control.raiseEot(g.self, NEVER_NS, [d.init.deviceWorker]);
  g.platform.awaitInput(() => irqs.available() > 0);
  const n = irqs.available();
  clock.syncTo(irqs.timestampAt(irqs.offsetAt(0)));
  control.publishEot(g.self, clock.nowNs());
  irqs.release(n);
  const c = nvme_next_cqe(g.mem, d.adminQ);
  if (c?.status !== 0) throw new Error(`nvme admin command ${cid} failed with status ${c?.status}`);
}

// ---- every vCPU: the fio job -------------------------------------------

/**
 * fio allocates its I/O buffers (user memory: scattered pages unless huge
 * pages), one vCPU after another, in order: which pages a job gets must not
 * depend on thread scheduling.
 */
function fio_alloc_buffers(g: Guest): FioSlot[] {
  const { init, v } = g;
  const rng = mulberry32Float((init.job.randseed + 7 * (v + 1)) >>> 0);
  waitTurn(g, VM_BUFFER_TURN, v);
  const slots: FioSlot[] = [];
  // a synchronous engine (psync, pvsync) keeps one I/O in flight, as fio caps its depth: one buffer
  for (let i = 0; i < fioEngineIodepth(init.job); i++) {
    // a PRP list page is coherent memory: the device reads it at IOVA = GPA
    const prpGpa = ownQueue(g).prpPoolGpa + i * NVME_CTRL_PAGE_SIZE_BYTES;
    slots.push({
      buffer: g.pages.allocUserBuffer(init.job.blockSizeBytes, init.bufferContiguity, rng),
      prpPage: { gpa: asGpa(prpGpa), dmaAddr: asIova(prpGpa) },
    });
  }
  return slots;
}

/**
 * Start barrier: publish our clock as our EOT before passing the turn, and
 * start only once every vCPU has. A vCPU still waiting for its turn publishes
 * NEVER, so a peer that started without waiting would take it for idle and
 * run ahead of it: lock grants at the start would then follow thread
 * scheduling, not model time.
 */
function startBarrier(g: Guest): void {
  g.control.publishClock(g.self, g.clock.nowNs());
  g.control.publishEot(g.self, g.clock.nowNs());
  passTurn(g, VM_BUFFER_TURN);
  waitTurn(g, VM_BUFFER_TURN, g.init.vcpuWorkers.length);
}

/** Run the job on this vCPU; record when it ended and count it done. */
function runJob(g: Guest, slots: FioSlot[]): VcpuJobResult {
  const { init, self } = g;
  const vcpu = new Vcpu(
    {
      mem: g.mem,
      clock: g.clock,
      control: g.control,
      self,
      deviceWorker: g.job.init.deviceWorker,
      otherVcpus: init.gatePeers.map((p) => p.worker),
      peerDevices: init.gatePeers.map((p) => p.deviceWorker),
      peerIrqs: init.gatePeers.map((p) => Ring.attach(p.irqRing)),
      quantumNs: init.quantumNs,
      spinLoads: init.spinLoads,
      bar: g.job.bar,
      irqs: g.job.irqs,
      deviceMinResponseNs: init.deviceMinResponseNs,
      queue: newQueuePair(g.job.init.ownQueue + 1, ownQueue(g).sqGpa, ownQueue(g).cqGpa, g.job.init.queueDepth),
      dma: g.job.dma,
      costs: init.costs,
      profiler: g.profiler,
      platform: g.platform,
      slots,
      nsPrefillSeed: init.nsPrefillSeed,
      priorSeeds: new Map(init.priorSeeds),
      peerWriteSeeds: new Set(init.peerWriteSeeds),
      locks: g.locks,
      unmapLog: init.dmaUnmapLog ? new DmaUnmapLog(init.dmaUnmapLog) : null,
      ...(init.job.direct ? {} : { pageCache: pageCacheEnv(g) }),
    },
    init.job,
  );
  g.lockHooks.gate = (t) => vcpu.quantumGate(t);
  g.lockHooks.blocked = () => vcpu.wakePeers();
  const result = vcpu.run();
  g.lockHooks.gate = () => {};
  g.lockHooks.blocked = () => {};
  vmEndTimes(init.vmState)[g.v] = g.clock.nowNs(); // published by the counter below
  Atomics.add(g.vmState, VM_VCPUS_DONE, 1);
  Atomics.notify(g.vmState, VM_VCPUS_DONE);
  Atomics.add(g.runState, RUN_VCPUS_DONE, 1);
  Atomics.notify(g.runState, RUN_VCPUS_DONE);
  return result;
}

/**
 * A buffered job's page cache: the PRP list pages of its requests (after the
 * fio slots' in the queue's pool) and the pages it may hold, half the guest's
 * RAM shared by the VM's vCPUs (a fixed share, so runs repeat whatever the
 * order the vCPUs start in).
 */
function pageCacheEnv(g: Guest): { pages: PageAllocator; prpPages: PrpListPage[]; limitPages: number; endLba: number } {
  const { job } = g.init;
  const prpPages: PrpListPage[] = [];
  for (let r = 0; r < PAGE_CACHE_MAX_REQUESTS; r++) {
    const gpa = ownQueue(g).prpPoolGpa + (job.iodepth + r) * NVME_CTRL_PAGE_SIZE_BYTES;
    prpPages.push({ gpa: asGpa(gpa), dmaAddr: asIova(gpa) });
  }
  const limitPages = Math.floor(g.pages.totalBytes() / PAGE_SIZE_BYTES / 2 / g.init.vcpuWorkers.length);
  return { pages: g.pages, prpPages, limitPages, endLba: (job.offsetBytes + job.sizeBytes) / PAGE_SIZE_BYTES };
}

/**
 * vCPU 0 waits (idle) for every vCPU's job to end — of the whole run, since
 * shutdown takes host locks other VMs share — and for its VM's turn to shut
 * down, and moves its clock past its own VM's vCPUs.
 */
function waitAllJobsDone(g: Guest): void {
  const { control, runState } = g;
  const vcpus = g.init.vcpuWorkers.length;
  control.publishEot(g.self, NEVER_NS);
  const waitFor = (index: number, done: (x: number) => boolean) => {
    for (let x = Atomics.load(runState, index); !done(x); x = Atomics.load(runState, index)) {
      if (control.aborted()) throw new Error('aborted');
      parkThread(runState, index, x, 50);
    }
  };
  waitFor(RUN_VCPUS_DONE, (n) => n >= g.init.runState.vcpus);
  waitFor(RUN_SHUTDOWN_TURN, (turn) => turn === g.init.runState.vm);
  const endNs = vmEndTimes(g.init.vmState);
  for (let u = 0; u < vcpus; u++) g.clock.syncTo(endNs[u]);
}

/** The next VM may shut down. */
function passShutdownTurn(g: Guest): void {
  Atomics.add(g.runState, RUN_SHUTDOWN_TURN, 1);
  Atomics.notify(g.runState, RUN_SHUTDOWN_TURN);
}

/** fio frees its buffers: one vCPU after another, vCPU 0 (after the shutdown) first. */
function fio_free_buffers(g: Guest, slots: FioSlot[]): void {
  waitTurn(g, VM_FREE_TURN, g.v);
  for (const s of slots) g.pages.freeUserBuffer(s.buffer);
  passTurn(g, VM_FREE_TURN);
}

/** Tell the device and the VMM this vCPU will send them nothing more. */
function sayDone(g: Guest): void {
  const { clock } = g;
  for (const { doorbells } of g.devices) {
    encodeGuestToDeviceDone(doorbells.dv, doorbells.reserve(g.init.spinLoads, g.control), clock.nowNs());
    doorbells.publish();
  }
  g.platform.done(clock.nowNs());
  g.control.publishEot(g.self, NEVER_NS);
}

/**
 * vCPU 0, its VM torn down: while the VMM threads report the host's faults
 * on their event queues, each virtio-iommu driver's event handler reads them
 * whenever a VMM thread finds no buffer left (the event queue's interrupt,
 * taken after the run), and once more when every thread is done.
 */
function viommu_read_fault_reports(g: Guest): void {
  if (g.init.vmmThreads === 0) return;
  const drain = () => {
    for (const x of g.viommus) x.viommu_event_handler();
  };
  if (g.platform.awaitFaultReports) g.platform.awaitFaultReports(drain);
  else {
    // until every VMM thread is done, read the event queues whenever one of them finds no buffer left
    const { vmState, control } = g;
    for (;;) {
      if (Atomics.load(vmState, VM_FAULTS_DRAIN) === 1) {
        drain();
        Atomics.store(vmState, VM_FAULTS_DRAIN, 0);
        Atomics.notify(vmState, VM_FAULTS_DRAIN);
        continue;
      }
      if (Atomics.load(vmState, VM_FAULTS_REPORTED) >= g.init.vmmThreads) break;
      if (control.aborted()) throw new Error('aborted');
      parkThread(vmState, VM_FAULTS_DRAIN, 0, 50);
    }
  }
  drain();
}

/**
 * What this vCPU saw: its job, its profile, and counters summed over the
 * virtio-iommus and drives it drove (vCPU 0: all of the VM's). The pools'
 * counters live in shared memory: vCPU 0 reads them after the shutdown.
 */
function collectResult(g: Guest, job: VcpuJobResult): VcpuWorkerResult {
  const pools = g.devices.flatMap((d) => (d.pool ? [d.pool.stats()] : []));
  return {
    job,
    profile: g.profiler.toJSON(),
    callTree: g.profiler.callTree(),
    copies: { ...g.cache.copied },
    viommu: g.viommus.length > 0 ? sumCounters(g.viommus.map((x) => x.counters)) : null,
    ...(g.v === 0 && g.viommus.length > 0 ? { viommuFaults: sumFaultStats(g.viommus.map((x) => x.faultStats)) } : {}),
    iovaStats: g.job.iovad ? g.job.iovad.stats() : null,
    dma: sumCounters(g.devices.map((d) => d.dma.counters)),
    flushQueue: g.job.fq ? g.job.fq.stats() : null,
    bouncePool: pools.length > 0 ? sumCounters(pools) : null,
    swiotlb: g.swiotlb ? g.swiotlb.stats() : null,
    clockNs: g.clock.nowNs(),
  };
}

/** The drivers' fault statistics as one: counts added up, the first reports in driver order. */
function sumFaultStats(all: readonly ViommuFaultStats[]): ViommuFaultStats {
  const s = emptyViommuFaultStats();
  for (const x of all) {
    s.buffersPosted += x.buffersPosted;
    s.faults += x.faults;
    s.ignored += x.ignored;
    for (const k of ['unknown', 'domain', 'mapping'] as const) s.byReason[k] += x.byReason[k];
    for (const k of ['read', 'write', 'exec', 'address'] as const) s.byFlags[k] += x.byFlags[k];
    s.first.push(...x.first.slice(0, VIOMMU_FAULT_REPORTS_KEPT - s.first.length));
  }
  return s;
}

/** Counter records of one shape added up, key by key (a copy, also for one record). */
function sumCounters<T extends object>(rows: readonly T[]): T {
  const out: Record<string, unknown> = {};
  for (const row of rows) for (const [k, x] of Object.entries(row)) out[k] = typeof x === 'number' ? ((out[k] as number | undefined) ?? 0) + x : (out[k] ?? x);
  return out as T;
}

/** This vCPU's I/O queue pair on its job's drive. */
function ownQueue(g: Guest): { sqGpa: number; cqGpa: number; prpPoolGpa: number } {
  return g.job.init.queues[g.job.init.ownQueue];
}
