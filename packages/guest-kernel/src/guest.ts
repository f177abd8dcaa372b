/**
 * One guest vCPU: vCPU 0 also brings the guest up — (with an IOMMU) attaches
 * the device's endpoint to its domain, probes it and maps the coherent memory
 * (queues, identify page, PRP list pages) once, enables the NVMe controller,
 * identifies it and creates every vCPU's I/O queue pair — and shuts it down.
 *
 * The steps of a run, in order (runGuestVcpu):
 * 1. wait for the VMM (guest RAM set up);
 * 2. vCPU 0: viommu_attach_coherent, nvme_pci_configure_admin_queue,
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
  Ring,
  RUN_SHUTDOWN_TURN,
  RUN_VCPUS_DONE,
  type RunControl,
  SentLog,
  VM_BUFFER_TURN,
  VM_FREE_TURN,
  VM_QUEUES_READY,
  VM_QUEUES_READY_NS,
  VM_VCPUS_DONE,
  VM_VMM_READY,
  vmEndTimes,
  writeSqe,
} from '@vmstack/shm';
import { DmaIommu } from './dma.js';
import type { VcpuWorkerInit, VcpuWorkerResult } from './index.js';
import { BouncePool } from './iommu/bounce-pool.js';
import { FlushQueue } from './iommu/flush-queue.js';
import { IovaDomain } from './iommu/iova.js';
import { Swiotlb } from './iommu/swiotlb.js';
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
import { ViommuDriver } from './virtio-iommu/viommu.js';

/** The namespace the drive exposes. */
const NSID = 1;

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
  readonly doorbells: Ring;
  readonly bar: NvmeBar;
  readonly irqs: Ring;
  readonly profiler: Profiler;
  readonly pages: PageAllocator;
  readonly iovad: IovaDomain | null;
  readonly viommu: ViommuDriver | null;
  readonly fq: FlushQueue | null;
  readonly pool: BouncePool | null;
  readonly swiotlb: Swiotlb | null;
  readonly dma: DmaIommu;
  readonly vmState: Int32Array;
  readonly runState: Int32Array;
  readonly adminQ: NvmeQueuePair;
  adminCid: number;
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
    waitFlag(g, VM_VMM_READY);
    if (g.v === 0) {
      if (g.viommu) viommu_attach_coherent(g, g.viommu);
      nvme_pci_configure_admin_queue(g);
      nvme_enable_ctrl(g);
      nvme_identify(g);
      nvme_create_io_queues(g);
      publishQueuesReady(g);
    } else {
      waitQueuesReady(g);
    }
    const slots = fio_alloc_buffers(g);
    startBarrier(g);
    const result = runJob(g, slots);
    if (g.v === 0) {
      // shutdown, once every vCPU is done: the pool releases its cached slots, the
      // driver deletes its queues and frees its coherent memory, the endpoint detaches
      waitAllJobsDone(g);
      nvme_dev_disable(g);
      if (g.viommu) viommu_detach_coherent(g, g.viommu);
      passShutdownTurn(g);
    }
    fio_free_buffers(g, slots);
    sayDone(g);
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
  const doorbells = Ring.attach(init.doorbellRing);
  const bar: NvmeBar = { doorbells, log: new SentLog(doorbells), spinLoads: init.spinLoads, abort: control };
  const irqs = Ring.attach(init.irqRing);
  const profiler = new Profiler(clock);
  const pages = PageAllocator.attach(init.pageAlloc, v, locks, init.costs);
  const iommu = init.strategy !== 'direct';
  const iovad = iommu ? IovaDomain.attach(init.iovaDomain, v, locks, init.costs) : null;
  const viommu = iommu
    ? new ViommuDriver(
        mem,
        init.vqLayout,
        v === 0,
        init.viommuRequestAreaGpa,
        init.viommuSlotWordGpa,
        locks,
        platform,
        clock,
        init.costs,
        init.driverGeneration,
        profiler,
      )
    : null;
  const fq =
    init.strategy === 'lazy' && iovad && viommu ? FlushQueue.attach(init.flushQueue!, v, locks, iovad, init.costs, () => viommu.viommu_iotlb_sync()) : null;
  const pool = init.strategy === 'bounce' ? BouncePool.attach(init.bouncePool!, v, locks, pages, init.costs) : null;
  const swiotlb = init.untrusted && init.swiotlb ? Swiotlb.attach(init.swiotlb, v, locks, mem.u8, init.costs) : null;
  const dma = new DmaIommu(
    init.strategy,
    { domain: init.domainId, iovad, iommu: viommu, fq, pool, swiotlb, mem: mem.u8, cpu: v, limitPfn: init.iovaLimitPfn, untrusted: init.untrusted },
    clock,
    init.costs,
    profiler,
  );
  if (v === 0 && init.alwaysBounceLimitSchedule) dma.scheduleAlwaysBounceLimit(init.alwaysBounceLimitSchedule);
  return {
    init,
    v,
    self,
    control,
    platform,
    clock,
    mem,
    locks,
    doorbells,
    bar,
    irqs,
    profiler,
    pages,
    iovad,
    viommu,
    fq,
    pool,
    swiotlb,
    dma,
    vmState: new Int32Array(init.vmState),
    runState: new Int32Array(init.runState.sab),
    adminQ: newQueuePair(0, init.adminSqGpa, init.adminCqGpa, NVME_AQ_DEPTH),
    adminCid: 0,
    lockHooks,
  };
}

// ---- the VM's run state ------------------------------------------------

function waitFlag(g: Guest, index: number): void {
  while (Atomics.load(g.vmState, index) === 0) {
    if (g.control.aborted()) throw new Error('aborted');
    Atomics.wait(g.vmState, index, 0, 50);
  }
}

/** Wait until the turn counter at `index` reaches `turn`. */
function waitTurn(g: Guest, index: number, turn: number): void {
  for (let now = Atomics.load(g.vmState, index); now !== turn; now = Atomics.load(g.vmState, index)) {
    if (g.control.aborted()) throw new Error('aborted');
    Atomics.wait(g.vmState, index, now, 50);
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

/** Attach the device's endpoint to its domain, probe it, and map the coherent memory once (IOVA = GPA). */
function viommu_attach_coherent(g: Guest, viommu: ViommuDriver): void {
  const { init } = g;
  viommu.viommu_attach_dev(init.domainId, init.endpointId);
  viommu.viommu_probe_endpoint(init.endpointId);
  viommu.viommu_map_pages(init.domainId, asIova(init.coherentGpa), asGpa(init.coherentGpa), init.coherentBytes, true, true);
  viommu.viommu_iotlb_sync_map();
}

/** Unmap the coherent memory and detach the endpoint. */
function viommu_detach_coherent(g: Guest, viommu: ViommuDriver): void {
  const { init } = g;
  viommu.viommu_unmap_pages(init.domainId, asIova(init.coherentGpa), init.coherentBytes);
  viommu.viommu_iotlb_sync();
  viommu.viommu_detach_dev(init.domainId, init.endpointId);
}

// ---- vCPU 0: the NVMe controller --------------------------------------

/** Admin queue sizes and addresses into AQA, ASQ, ACQ. */
function nvme_pci_configure_admin_queue(g: Guest): void {
  nvme_write_reg(g.bar, g.clock.nowNs(), NVME_REG_AQA, nvmeAqa(NVME_AQ_DEPTH, NVME_AQ_DEPTH));
  nvme_write_reg(g.bar, g.clock.nowNs(), NVME_REG_ASQ, g.init.adminSqGpa);
  nvme_write_reg(g.bar, g.clock.nowNs(), NVME_REG_ACQ, g.init.adminCqGpa);
}

/** CC.EN = 1: the controller creates its admin queues from AQA/ASQ/ACQ. */
function nvme_enable_ctrl(g: Guest): void {
  nvme_write_reg(g.bar, g.clock.nowNs(), NVME_REG_CC, NVME_CC_ENABLE);
}

/** Identify the controller, then the namespace, into the identify page. */
function nvme_identify(g: Guest): void {
  const { init, mem } = g;
  nvme_submit_sync_cmd(g, (gpa, cid) => writeSqe(mem, gpa, { opcode: NVME_ADMIN_IDENTIFY, commandId: cid, prp1: init.identifyGpa, cdw10: NVME_ID_CNS_CTRL }));
  nvme_submit_sync_cmd(g, (gpa, cid) =>
    writeSqe(mem, gpa, { opcode: NVME_ADMIN_IDENTIFY, commandId: cid, nsid: NSID, prp1: init.identifyGpa, cdw10: NVME_ID_CNS_NS }),
  );
}

/** One I/O queue pair per vCPU: queue q + 1, its CQ raising interrupt vector q. */
function nvme_create_io_queues(g: Guest): void {
  const { init, mem } = g;
  for (let q = 0; q < init.queues.length; q++) {
    const qid = q + 1;
    const cdw10 = nvmeCreateQueueCdw10(qid, init.queueDepth);
    nvme_submit_sync_cmd(g, (gpa, cid) =>
      writeSqe(mem, gpa, {
        opcode: NVME_ADMIN_CREATE_CQ,
        commandId: cid,
        prp1: init.queues[q].cqGpa,
        cdw10,
        cdw11: (q << 16) | NVME_CQ_IRQ_ENABLED | NVME_QUEUE_PHYS_CONTIG,
      }),
    );
    nvme_submit_sync_cmd(g, (gpa, cid) =>
      writeSqe(mem, gpa, { opcode: NVME_ADMIN_CREATE_SQ, commandId: cid, prp1: init.queues[q].sqGpa, cdw10, cdw11: (qid << 16) | NVME_QUEUE_PHYS_CONTIG }),
    );
  }
}

/** Teardown: the pool releases every cached slot, then each I/O queue pair is deleted. */
function nvme_dev_disable(g: Guest): void {
  const { init, mem } = g;
  g.dma.evict(true);
  for (let q = 0; q < init.queues.length; q++) {
    const qid = q + 1;
    nvme_submit_sync_cmd(g, (gpa, cid) => writeSqe(mem, gpa, { opcode: NVME_ADMIN_DELETE_SQ, commandId: cid, cdw10: qid }));
    nvme_submit_sync_cmd(g, (gpa, cid) => writeSqe(mem, gpa, { opcode: NVME_ADMIN_DELETE_CQ, commandId: cid, cdw10: qid }));
  }
}

/** Submit one admin command and wait (idle until its interrupt) for its completion. */
function nvme_submit_sync_cmd(g: Guest, write: (gpa: number, cid: number) => void): void {
  const { clock, control, irqs } = g;
  const cid = g.adminCid++;
  const tail = nvme_submit_cmd(g.adminQ, (gpa) => write(gpa, cid));
  nvme_write_doorbell(g.bar, clock.nowNs(), 0, DOORBELL_SQ_TAIL, tail);
  control.publishEot(g.self, NEVER_NS);
  g.platform.awaitInput(() => irqs.available() > 0);
  const n = irqs.available();
  clock.syncTo(irqs.timestampAt(irqs.offsetAt(0)));
  control.publishEot(g.self, clock.nowNs());
  irqs.release(n);
  const c = nvme_next_cqe(g.mem, g.adminQ);
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
  for (let i = 0; i < init.job.iodepth; i++) {
    // a PRP list page is coherent memory: the device reads it at IOVA = GPA
    const prpGpa = init.queues[v].prpPoolGpa + i * NVME_CTRL_PAGE_SIZE_BYTES;
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
      deviceWorker: init.deviceWorker,
      otherVcpus: init.gatePeers.map((p) => p.worker),
      peerDevices: init.gatePeers.map((p) => p.deviceWorker),
      peerIrqs: init.gatePeers.map((p) => Ring.attach(p.irqRing)),
      quantumNs: init.quantumNs,
      spinLoads: init.spinLoads,
      bar: g.bar,
      irqs: g.irqs,
      deviceMinResponseNs: init.deviceMinResponseNs,
      queue: newQueuePair(g.v + 1, init.queues[g.v].sqGpa, init.queues[g.v].cqGpa, init.queueDepth),
      dma: g.dma,
      costs: init.costs,
      profiler: g.profiler,
      platform: g.platform,
      slots,
      nsPrefillSeed: init.nsPrefillSeed,
      priorSeeds: new Map(init.priorSeeds),
      peerWriteSeeds: new Set(init.peerWriteSeeds),
      locks: g.locks,
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
      Atomics.wait(runState, index, x, 50);
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
  const { doorbells, clock } = g;
  encodeGuestToDeviceDone(doorbells.dv, doorbells.reserve(g.init.spinLoads, g.control), clock.nowNs());
  doorbells.publish();
  g.platform.done(clock.nowNs());
  g.control.publishEot(g.self, NEVER_NS);
}

function collectResult(g: Guest, job: VcpuJobResult): VcpuWorkerResult {
  return {
    job,
    profile: g.profiler.toJSON(),
    viommu: g.viommu ? { ...g.viommu.counters } : null,
    iovaStats: g.iovad ? g.iovad.stats() : null,
    dma: { ...g.dma.counters },
    flushQueue: g.fq ? g.fq.stats() : null,
    bouncePool: g.pool ? g.pool.stats() : null,
    swiotlb: g.swiotlb ? g.swiotlb.stats() : null,
    clockNs: g.clock.nowNs(),
  };
}
