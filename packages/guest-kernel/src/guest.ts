/**
 * One guest vCPU: vCPU 0 also brings the guest up — enables the NVMe
 * controller, identifies it, creates every vCPU's I/O queue pair, and (with an
 * IOMMU) attaches the device's endpoint to its domain, probes it and maps the
 * coherent memory (queues, PRP list pages) once — and shuts it down.
 */

import {
  mulberry32Float,
  ModelClock,
  LockTable,
  Ring,
  SentLog,
  attachGuestMemory,
  writeSqe,
  encodeGuestToDeviceDone,
  NVME_ADMIN_IDENTIFY,
  NVME_ADMIN_CREATE_CQ,
  NVME_ADMIN_CREATE_SQ,
  NVME_ADMIN_DELETE_SQ,
  NVME_ADMIN_DELETE_CQ,
  NVME_CTRL_PAGE_SIZE_BYTES,
  NVME_REG_AQA,
  NVME_REG_ASQ,
  NVME_REG_ACQ,
  NVME_REG_CC,
  DOORBELL_SQ_TAIL,
  VM_VMM_READY,
  VM_QUEUES_READY,
  VM_QUEUES_READY_NS,
  VM_VCPUS_DONE,
  VM_BUFFER_TURN,
  VM_FREE_TURN,
  vmEndTimes,
  asGpa,
  asIova,
  NEVER_NS,
  type RunControl,
} from '@vmstack/shm';
import { PageAllocator } from './mm/page-alloc.js';
import { IovaDomain } from './iommu/iova.js';
import { ViommuDriver } from './virtio-iommu/viommu.js';
import { Profiler } from './profile.js';
import { DmaIommu } from './dma.js';
import { FlushQueue } from './iommu/flush-queue.js';
import { BouncePool } from './iommu/bounce-pool.js';
import { Swiotlb } from './iommu/swiotlb.js';
import { Vcpu, type GuestPlatform } from './vcpu.js';
import { newQueuePair, nvme_submit_cmd, nvme_next_cqe, nvme_write_doorbell, nvme_write_reg, type NvmeBar } from './nvme/nvme-pci.js';
import type { VcpuWorkerInit, VcpuWorkerResult } from './index.js';

/**
 * Bring the guest up (vCPU 0), run this vCPU's fio job, shut down (vCPU 0).
 * `platform` says how to wait and how to reach the VMM: parked on shared
 * memory in a worker, or by stepping the other components in one thread.
 */
export function runGuestVcpu(init: VcpuWorkerInit, self: number, control: RunControl, platform: GuestPlatform): () => VcpuWorkerResult {
  const v = init.vcpu;
  const clock = new ModelClock(init.clockMode, init.dilation, init.epochMs);
  const mem = attachGuestMemory(init.guestRam);
  // every guest lock waits for the quantum first, so lock grants follow model time
  let lockGate: (nowNs: number) => void = () => {};
  let lockBlocked: () => void = () => {};
  const locks = LockTable.attach(
    init.locks,
    self,
    control,
    init.spinLoads,
    (t) => lockGate(t),
    () => lockBlocked(),
  );
  const doorbells = Ring.attach(init.doorbellRing);
  const bar: NvmeBar = { doorbells, log: new SentLog(doorbells), spinLoads: init.spinLoads, abort: control };
  const irqs = Ring.attach(init.irqRing);
  const profiler = new Profiler(clock);
  const pages = PageAllocator.attach(init.pageAlloc, v, locks, init.costs);
  const iommu = init.strategy !== 'direct';
  const iovad = iommu ? IovaDomain.attach(init.iovaDomain, v, locks, init.costs) : null;
  const viommu = iommu
    ? new ViommuDriver(mem, init.vqLayout, v === 0, init.viommuRequestAreaGpa, init.viommuSlotWordGpa, locks, platform, clock, init.costs, init.driverGeneration, profiler)
    : null;
  const fq = init.strategy === 'lazy' && iovad && viommu ? FlushQueue.attach(init.flushQueue!, v, locks, iovad, init.costs, () => viommu.viommu_iotlb_sync()) : null;
  const pool = init.strategy === 'bounce' ? BouncePool.attach(init.bouncePool!, v, locks, pages, init.costs) : null;
  const swiotlb = init.untrusted && init.swiotlb ? Swiotlb.attach(init.swiotlb, v, locks, mem.u8, init.costs) : null;
  const dma = new DmaIommu(init.strategy, { domain: init.domainId, iovad, viommu, fq, pool, swiotlb, mem: mem.u8, cpu: v, limitPfn: init.iovaLimitPfn, untrusted: init.untrusted }, clock, init.costs, profiler);
  if (v === 0 && init.alwaysBounceLimitSchedule) dma.scheduleAlwaysBounceLimit(init.alwaysBounceLimitSchedule);
  const queue = newQueuePair(v + 1, init.queues[v].sqGpa, init.queues[v].cqGpa, init.queueDepth);
  const vmState = new Int32Array(init.vmState);
  const waitFlag = (index: number) => {
    while (Atomics.load(vmState, index) === 0) {
      if (control.aborted()) throw new Error('aborted');
      Atomics.wait(vmState, index, 0, 50);
    }
  };

  /** wait until the turn counter at `index` reaches `turn` */
  const waitTurn = (index: number, turn: number) => {
    for (let now = Atomics.load(vmState, index); now !== turn; now = Atomics.load(vmState, index)) {
      if (control.aborted()) throw new Error('aborted');
      Atomics.wait(vmState, index, now, 50);
    }
  };

  const sendReg = (reg: number, value: number) => nvme_write_reg(bar, clock.nowNs(), reg, value);

  /** Submit one admin command and wait (polling) for its completion. */
  const adminQ = newQueuePair(0, init.adminSqGpa, init.adminCqGpa, 32);
  let adminCid = 0;
  const admin = (write: (gpa: number, cid: number) => void) => {
    const cid = adminCid++;
    const tail = nvme_submit_cmd(adminQ, (gpa) => write(gpa, cid));
    nvme_write_doorbell(bar, clock.nowNs(), 0, DOORBELL_SQ_TAIL, tail);
    control.publishEot(self, NEVER_NS);
    platform.awaitInput(() => irqs.available() > 0);
    const n = irqs.available();
    clock.syncTo(irqs.timestampAt(irqs.offsetAt(0)));
    control.publishEot(self, clock.nowNs());
    irqs.release(n);
    const c = nvme_next_cqe(mem, adminQ);
    if (!c || c.status !== 0) throw new Error(`nvme admin command ${cid} failed with status ${c?.status}`);
  };

  return () => {
    control.publishEot(self, 0);
    // the VMM starts the vCPUs once guest RAM is set up (mapped through VFIO without a vIOMMU)
    waitFlag(VM_VMM_READY);
    if (v === 0) {
      if (viommu) {
        viommu.viommu_attach_dev(init.domainId, init.endpointId);
        viommu.viommu_probe_endpoint(init.endpointId);
        // coherent memory (queues, identify page, PRP list pages): mapped once, IOVA = GPA
        viommu.viommu_map_pages(init.domainId, asIova(init.coherentGpa), asGpa(init.coherentGpa), init.coherentBytes, true, true);
        viommu.viommu_iotlb_sync_map();
      }
      sendReg(NVME_REG_AQA, (31 << 16) | 31);
      sendReg(NVME_REG_ASQ, init.adminSqGpa);
      sendReg(NVME_REG_ACQ, init.adminCqGpa);
      sendReg(NVME_REG_CC, 1);
      admin((gpa, cid) => writeSqe(mem, gpa, { opcode: NVME_ADMIN_IDENTIFY, commandId: cid, prp1: init.identifyGpa, cdw10: 1 }));
      admin((gpa, cid) => writeSqe(mem, gpa, { opcode: NVME_ADMIN_IDENTIFY, commandId: cid, nsid: 1, prp1: init.identifyGpa, cdw10: 0 }));
      for (let q = 0; q < init.queues.length; q++) {
        admin((gpa, cid) => writeSqe(mem, gpa, { opcode: NVME_ADMIN_CREATE_CQ, commandId: cid, prp1: init.queues[q].cqGpa, cdw10: ((init.queueDepth - 1) << 16) | (q + 1), cdw11: (q << 16) | 3 }));
        admin((gpa, cid) => writeSqe(mem, gpa, { opcode: NVME_ADMIN_CREATE_SQ, commandId: cid, prp1: init.queues[q].sqGpa, cdw10: ((init.queueDepth - 1) << 16) | (q + 1), cdw11: ((q + 1) << 16) | 1 }));
      }
      Atomics.store(vmState, VM_QUEUES_READY_NS, clock.nowNs());
      Atomics.store(vmState, VM_QUEUES_READY, 1);
      Atomics.notify(vmState, VM_QUEUES_READY);
    } else {
      control.publishEot(self, NEVER_NS);
      waitFlag(VM_QUEUES_READY);
      clock.syncTo(Atomics.load(vmState, VM_QUEUES_READY_NS));
    }
    // fio allocates its I/O buffers (user memory: scattered pages unless huge pages)
    const rng = mulberry32Float((init.job.randseed + 7 * (v + 1)) >>> 0);
    // one vCPU after another, in order: which pages a job gets must not depend on thread scheduling
    waitTurn(VM_BUFFER_TURN, v);
    const slots = [];
    for (let i = 0; i < init.job.iodepth; i++) {
      // a PRP list page is coherent memory: the device reads it at IOVA = GPA
      const prpGpa = init.queues[v].prpPoolGpa + i * NVME_CTRL_PAGE_SIZE_BYTES;
      slots.push({ buffer: pages.allocUserBuffer(init.job.blockSizeBytes, init.bufferContiguity, rng), prpPage: { gpa: asGpa(prpGpa), dmaAddr: asIova(prpGpa) } });
    }
    // Start barrier: publish our clock as our EOT before passing the turn, and start
    // only once every vCPU has. A vCPU still waiting for its turn publishes NEVER, so a
    // peer that started without waiting would take it for idle and run ahead of it:
    // lock grants at the start would then follow thread scheduling, not model time.
    control.publishClock(self, clock.nowNs());
    control.publishEot(self, clock.nowNs());
    Atomics.store(vmState, VM_BUFFER_TURN, v + 1);
    Atomics.notify(vmState, VM_BUFFER_TURN);
    waitTurn(VM_BUFFER_TURN, init.vcpuWorkers.length);
    const vcpu = new Vcpu(
      {
        mem,
        clock,
        control,
        self: self,
        deviceWorker: init.deviceWorker,
        otherVcpus: init.vcpuWorkers.filter((w) => w !== self),
        peerIrqs: init.allIrqRings.filter((_, u) => init.vcpuWorkers[u] !== self).map((h) => Ring.attach(h)),
        quantumNs: init.quantumNs,
        spinLoads: init.spinLoads,
        bar,
        irqs,
        deviceMinResponseNs: init.deviceMinResponseNs,
        queue,
        dma,
        costs: init.costs,
        profiler,
        platform,
        slots,
        nsPrefillSeed: init.nsPrefillSeed,
        priorSeeds: new Map(init.priorSeeds),
        peerWriteSeeds: new Set(init.peerWriteSeeds),
        locks,
      },
      init.job,
    );
    lockGate = (t) => vcpu.quantumGate(t);
    lockBlocked = () => vcpu.wakePeers();
    const result = vcpu.run();
    lockGate = () => {};
    lockBlocked = () => {};
    vmEndTimes(init.vmState)[v] = clock.nowNs(); // published by the counter below
    Atomics.add(vmState, VM_VCPUS_DONE, 1);
    Atomics.notify(vmState, VM_VCPUS_DONE);
    if (v === 0) {
      // shutdown, once every vCPU is done: the pool releases its cached slots, the
      // driver deletes its queues and frees its coherent memory, the endpoint detaches
      control.publishEot(self, NEVER_NS);
      while (Atomics.load(vmState, VM_VCPUS_DONE) < init.vcpuWorkers.length) {
        if (control.aborted()) throw new Error('aborted');
        Atomics.wait(vmState, VM_VCPUS_DONE, Atomics.load(vmState, VM_VCPUS_DONE), 50);
      }
      const endNs = vmEndTimes(init.vmState);
      for (let u = 0; u < init.vcpuWorkers.length; u++) clock.syncTo(endNs[u]);
      dma.evict(true);
      for (let q = 0; q < init.queues.length; q++) {
        admin((gpa, cid) => writeSqe(mem, gpa, { opcode: NVME_ADMIN_DELETE_SQ, commandId: cid, cdw10: q + 1 }));
        admin((gpa, cid) => writeSqe(mem, gpa, { opcode: NVME_ADMIN_DELETE_CQ, commandId: cid, cdw10: q + 1 }));
      }
      if (viommu) {
        viommu.viommu_unmap_pages(init.domainId, asIova(init.coherentGpa), init.coherentBytes);
        viommu.viommu_iotlb_sync();
        viommu.viommu_detach_dev(init.domainId, init.endpointId);
      }
    }
    // fio frees its buffers: one vCPU after another, vCPU 0 (after the shutdown) first
    waitTurn(VM_FREE_TURN, v);
    for (const s of slots) pages.freeUserBuffer(s.buffer);
    Atomics.store(vmState, VM_FREE_TURN, v + 1);
    Atomics.notify(vmState, VM_FREE_TURN);
    // tell the device and the VMM we are done
    encodeGuestToDeviceDone(doorbells.dv, doorbells.reserve(init.spinLoads, control), clock.nowNs());
    doorbells.publish();
    platform.done(clock.nowNs());
    control.publishEot(self, NEVER_NS);
    return {
      job: result,
      profile: profiler.toJSON(),
      viommu: viommu ? { ...viommu.counters } : null,
      iovaStats: iovad ? iovad.stats() : null,
      dma: { ...dma.counters },
      flushQueue: fq ? fq.stats() : null,
      bouncePool: pool ? pool.stats() : null,
      swiotlb: swiotlb ? swiotlb.stats() : null,
      clockNs: clock.nowNs(),
    };
  };
}
