/**
 * Wire a topology (one VM, numjobs vCPUs, one passed-through NVMe drive
 * behind virtio-iommu) and run it on real workers: the guest's vCPUs, the
 * VMM, the host kernel and the device, each in its own worker thread,
 * talking through SharedArrayBuffer rings. Returns a fio-style RunResult.
 */

import { InputError, RunControl, LockTable, Ring, allocateRpcChannel, runWorkers, type CostProfile, type ClockMode, type WorkerSpec, NEVER_NS, vmStateBytes } from '@vmstack/shm';
import { GUEST_VCPU_WORKER, fioJobWrites, fioWriteSeed, PageAllocator, IovaDomain, FlushQueue, BouncePool, Swiotlb, IO_TLB_DEFAULT_SIZE_BYTES, VIOMMU_REQUEST_LOCK, type DmaStrategy, type FioJobSpec, type VcpuWorkerInit, type VcpuWorkerResult, type ViommuDriverGeneration, type UserBufferContiguity } from '@vmstack/guest-kernel';
import { VMM_WORKER, VIOMMU_DEVICE_MUTEX, type VmmWorkerInit, type VmmWorkerResult } from '@vmstack/vmm';
import { HOST_VFIO_WORKER, IOMMU_LOCK, type HostWorkerInit, type HostWorkerResult } from '@vmstack/host-vfio';
import { IoPgtable } from '@vmstack/iommu-hw';
import { NVME_DEVICE_WORKER, NvmeMedia, type DeviceWorkerInit, type DeviceWorkerResult } from '@vmstack/nvme-device';
import { runInThread } from './in-thread.js';
import { planGuestLayout, NVME_QUEUE_ENTRIES } from './guest-layout.js';
import type { RunCarry, RunResult } from '../report/result.js';
import { assembleRunResult } from '../report/assemble.js';

export interface StackOptions {
  jobs: FioJobSpec[];
  jobOptions: Record<string, Record<string, string>>;
  globalOptions: Record<string, string>;
  strategy: DmaStrategy;
  clock: ClockMode;
  profile: CostProfile;
  quantumNs: number;
  driverGeneration: ViommuDriverGeneration;
  bufferContiguity: UserBufferContiguity;
  guestRamBytes: number;
  /** loads a waiting thread spins before it parks (vCPUs, host, device) */
  spinLoads: number;
  /** the VMM's spin budget waiting for a VFIO reply: the host runs on the other core meanwhile (default: spinLoads) */
  vmmSpinLoads?: number;
  dilation: number;
  /** the device is untrusted (external-facing): bouncing is mandatory */
  untrusted?: boolean;
  /** bounce strategy: bounce trusted streaming mappings up to this size */
  alwaysBounceLimitBytes?: number;
  /** bounce strategy: change always_bounce_limit at these model times during the run */
  alwaysBounceLimitSchedule?: { atNs: number; bytes: number }[];
  /** bounce strategy: slots per size class */
  slotsPerClass?: number;
  /** `workers` (default): each component in its own worker thread; `in-thread`: all in this thread (one job only) */
  transport?: 'workers' | 'in-thread';
  /** the drive as an earlier barrier group left it (its written blocks) */
  carry?: RunCarry;
  /** return the drive's written blocks in `result.carry`, for a later barrier group */
  exportNamespace?: boolean;
  /** reject (with each worker's state) if the run takes longer than this, real ms */
  timeoutMs?: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;
/** the drive's pre-filled blocks look written by a verify job with this seed */
const NS_PREFILL_SEED = 0x89;

export async function runStack(opts: StackOptions): Promise<RunResult> {
  const o = { ...opts, untrusted: opts.untrusted ?? false, alwaysBounceLimitBytes: opts.alwaysBounceLimitBytes ?? 4096, slotsPerClass: opts.slotsPerClass ?? 1024 };
  const p = o.profile;
  const vcpus = o.jobs.length;
  const control = RunControl.allocate();
  const ctl = RunControl.attach(control);
  const guestRam = new SharedArrayBuffer(o.guestRamBytes);
  const vmState = new SharedArrayBuffer(vmStateBytes(o.jobs.length));
  const layout = planGuestLayout(o.jobs, o);
  const { vqLayout, viommuRequestAreaGpa, viommuSlotWordGpa, coherentGpa, coherentBytes, adminSqGpa, adminCqGpa, identifyGpa, queues, swiotlbGpa, heapStartBytes } = layout;
  const useSwiotlb = swiotlbGpa !== null;
  if (heapStartBytes >= o.guestRamBytes) throw new InputError('--guest-ram', o.guestRamBytes, `more than ${heapStartBytes} bytes: queues, rings${useSwiotlb ? ' and the 64 MiB swiotlb area' : ''} take that much before any I/O buffer`);
  const pageAlloc = PageAllocator.allocate({ ramBytes: o.guestRamBytes, heapStartBytes });
  // rbtree nodes: what the rcaches can hold (6 size classes × (2 magazines per CPU + a 32-magazine depot) × 128)
  // plus every I/O in flight, plus room for reserved ranges and per-segment maps
  const inFlight = o.jobs.reduce((s, j) => s + j.iodepth * (o.untrusted ? j.blockSizeBytes / 4096 : 1), 0);
  const iovaDomain = IovaDomain.allocate({ startPfn: 1, limitPfn: 2 ** 36 - 1, cpus: vcpus, maxAllocations: 6 * (2 * vcpus + 32) * 128 + inFlight + 4096 });
  const flushQueue = o.strategy === 'lazy' ? FlushQueue.allocate({ cpus: vcpus, entriesCount: p.lazyFlushQueueEntriesCount, timeoutNs: p.lazyFlushTimeoutNs }) : null;
  // the pool's IOVA range is reserved up front, at 4 GiB, and carved into slots
  const poolIovaBase = 4 * 1024 * MiB;
  const bouncePool = o.strategy === 'bounce' ? BouncePool.allocate({ iovaBase: poolIovaBase, evictionPeriodNs: p.bounceEvictionPeriodNs, alwaysBounceLimitBytes: o.alwaysBounceLimitBytes, slotsPerClass: o.slotsPerClass }) : null;
  const swiotlb = swiotlbGpa !== null ? Swiotlb.allocate({ areaGpa: swiotlbGpa, sizeBytes: IO_TLB_DEFAULT_SIZE_BYTES, minAlignMask: 4095 }) : null;
  const locks = LockTable.allocate([
    { name: VIOMMU_REQUEST_LOCK, kind: 'spinlock' },
    { name: VIOMMU_DEVICE_MUTEX, kind: 'mutex' },
    { name: IOMMU_LOCK, kind: 'mutex' },
    ...PageAllocator.lockSpecs(pageAlloc),
    ...IovaDomain.lockSpecs(iovaDomain),
    ...(flushQueue ? FlushQueue.lockSpecs(flushQueue) : []),
    ...(bouncePool ? BouncePool.lockSpecs(bouncePool) : []),
    ...(swiotlb ? Swiotlb.lockSpecs(swiotlb) : []),
  ]);
  // the coherent region is IOVA = GPA: keep the IOVA allocator away from it
  {
    const iovad = IovaDomain.attach(iovaDomain, 0, LockTable.attach(locks, 63), p);
    iovad.reserve_iova(1, Math.ceil(heapStartBytes / 4096));
    if (bouncePool) iovad.reserve_iova(poolIovaBase / 4096, (poolIovaBase + BouncePool.iovaSpanBytes({ slotsPerClass: o.slotsPerClass })) / 4096 - 1);
  }
  const pgtable = IoPgtable.allocate({ tablePages: 16384 });
  // worker indexes: 0..vcpus-1 vCPUs, then vmm, host, device
  const vmmW = vcpus;
  const hostW = vcpus + 1;
  const devW = vcpus + 2;
  const vcpuWorkers = o.jobs.map((_, i) => i);
  const doorbellRings = o.jobs.map(() => Ring.allocate({ capacityRecords: 4096 }, ctl.eventRef(devW)));
  const irqRings = o.jobs.map((_, i) => Ring.allocate({ capacityRecords: 4096 }, ctl.eventRef(i)));
  const kickRings = o.jobs.map(() => Ring.allocate({ capacityRecords: 64 }, ctl.eventRef(vmmW)));
  const usedRings = o.jobs.map((_, i) => Ring.allocate({ capacityRecords: 64 }, ctl.eventRef(i)));
  const hostRpc = allocateRpcChannel(64, ctl.eventRef(hostW), ctl.eventRef(vmmW));
  const invalRing = Ring.allocate({ capacityRecords: 4096 }, ctl.eventRef(devW));
  const epochMs = performance.timeOrigin + performance.now();
  const common = { clockMode: o.clock, dilation: o.dilation, epochMs, spinLoads: o.spinLoads };
  const carried = o.carry?.namespaceBlocks ?? [];
  const nsSizeBlocks = Math.max(...o.jobs.map((j) => (j.offsetBytes + j.sizeBytes) / 4096), ...carried.map(([lba]) => lba + 1)) + 1024;
  // verify expects, where an earlier group wrote, the seed its writer put in the block header
  const priorSeeds: [number, number][] = carried.map(([lba, data]) => [lba, new DataView(data.buffer, data.byteOffset).getUint32(16, true)]);
  // the device's shortest doorbell → interrupt time (its lookahead); the same minimum the device uses
  const deviceMinResponseNs = p.nvmeDoorbellLatencyNs + p.nvmeSqeFetchNs + new NvmeMedia(p).minServiceNs() + p.nvmeCqePostNs + p.msiLatencyNs;
  for (const w of [...vcpuWorkers, devW]) ctl.publishEot(w, 0);
  ctl.publishEot(vmmW, NEVER_NS);
  ctl.publishEot(hostW, NEVER_NS);

  const specs: WorkerSpec[] = [];
  o.jobs.forEach((job, v) => {
    const init: VcpuWorkerInit = {
      ...common,
      vcpu: v,
      quantumNs: o.quantumNs,
      strategy: o.strategy,
      driverGeneration: o.driverGeneration,
      costs: p,
      job,
      bufferContiguity: o.bufferContiguity,
      guestRam,
      locks,
      pageAlloc,
      iovaDomain,
      untrusted: o.untrusted,
      alwaysBounceLimitSchedule: o.alwaysBounceLimitSchedule,
      flushQueue,
      bouncePool,
      swiotlb,
      iovaLimitPfn: 2 ** 36 - 1,
      domainId: 1,
      endpointId: 0x100,
      vqLayout,
      viommuRequestAreaGpa,
      viommuSlotWordGpa,
      vmState,
      adminSqGpa,
      adminCqGpa,
      identifyGpa,
      coherentGpa,
      coherentBytes,
      queueDepth: NVME_QUEUE_ENTRIES,
      queues,
      nsPrefillSeed: NS_PREFILL_SEED,
      priorSeeds,
      peerWriteSeeds: o.jobs.filter((other, u) => u !== v && fioJobWrites(other)).map(fioWriteSeed),
      doorbellRing: doorbellRings[v],
      irqRing: irqRings[v],
      allIrqRings: irqRings,
      kickRing: kickRings[v],
      usedRing: usedRings[v],
      deviceWorker: devW,
      vcpuWorkers,
      deviceMinResponseNs,
    };
    specs.push({ role: `guest-kernel/vcpu${v}`, entry: GUEST_VCPU_WORKER, init });
  });
  const vmmInit: VmmWorkerInit = { ...common, rpcSpinLoads: o.vmmSpinLoads ?? vmmRpcSpinLoads(o.jobs.length, o.spinLoads), costs: p, kickWakeupNs: p.hostThreadWakeupNs, locks, guestRam, vqLayout, kickRings, usedRings, hostRpc, identityMapBytes: o.strategy === 'direct' ? o.guestRamBytes : 0, vmState, deviceWorker: devW };
  specs.push({ role: 'vmm', entry: VMM_WORKER, init: vmmInit });
  const hostInit: HostWorkerInit = { ...common, costs: p, locks, vmmRpc: hostRpc, pgtable, invalRing, lockedVmLimitPages: o.guestRamBytes / 4096, dmaEntryLimit: 65535 };
  specs.push({ role: 'host-vfio', entry: HOST_VFIO_WORKER, init: hostInit });
  const verifyAlgo = o.jobs.find((j) => j.verify !== 'none')?.verify ?? 'none';
  const devInit: DeviceWorkerInit = { ...common, costs: p, guestRam, pgtable, doorbellRings, irqRings, invalRing, vcpuWorkers, vcpuOfCq: [0, ...o.jobs.map((_, i) => i)], namespace: { sizeBlocks: nsSizeBlocks, seed: NS_PREFILL_SEED, algo: verifyAlgo, initialBlocks: o.carry?.namespaceBlocks, exportBlocks: o.exportNamespace } };
  specs.push({ role: 'nvme-device', entry: NVME_DEVICE_WORKER, init: devInit });

  const startedMs = Date.now();
  const wallStart = performance.now();
  const out = await (o.transport === 'in-thread' ? Promise.resolve().then(() => runInThread(specs, control)) : runWorkers<unknown>(specs, control, { timeoutMs: o.timeoutMs ?? 30 * 60_000 })).catch((e: unknown) => {
    // say where every worker stood: model clocks, EOTs and what sat in each ring
    if (e instanceof Error && /did not finish/.test(e.message)) {
      const ns = (x: number) => (x >= NEVER_NS ? 'never' : String(x));
      const state = specs.map((sp, w) => `${sp.role}: clock ${ns(ctl.clockNs(w))} eot ${ns(ctl.eotNs(w))} waitFor ${ns(ctl.waitForNs(w))}`);
      const rings = [
        ...doorbellRings.map((h, v) => `doorbell${v} ${Ring.attach(h).inFlight()}`),
        ...irqRings.map((h, v) => `irq${v} ${Ring.attach(h).inFlight()}`),
        ...kickRings.map((h, v) => `kick${v} ${Ring.attach(h).inFlight()}`),
        ...usedRings.map((h, v) => `used${v} ${Ring.attach(h).inFlight()}`),
        `inval ${Ring.attach(invalRing).inFlight()}`,
      ];
      e.message += `\n  ${state.join('\n  ')}\n  rings in flight: ${rings.join(', ')}`;
    }
    throw e;
  });
  const wallMs = performance.now() - wallStart;
  return assembleRunResult({
    jobs: o.jobs,
    jobOptions: o.jobOptions,
    globalOptions: o.globalOptions,
    strategy: o.strategy,
    untrusted: o.untrusted,
    clock: o.clock,
    transport: o.transport ?? 'workers',
    driverGeneration: o.driverGeneration,
    workers: out.workers,
    workerResults: out.results,
    vcpus: out.results.slice(0, vcpus) as VcpuWorkerResult[],
    vmm: out.results[vmmW] as VmmWorkerResult,
    host: out.results[hostW] as HostWorkerResult,
    device: out.results[devW] as DeviceWorkerResult,
    lockStats: LockTable.attach(locks, 63).stats(),
    flushQueue: flushQueue ? FlushQueue.stats(flushQueue) : null,
    iovaPagesAllocated: IovaDomain.stats(iovaDomain).allocatedPages,
    startedMs,
    wallMs,
  });
}

/**
 * How long the VMM spins for a VFIO reply before it parks. With one vCPU the
 * host has a core of its own meanwhile (the vCPU is parked on the used ring,
 * the device waits for it), so the VMM spins through the host's ~20-40 µs
 * and saves a futex wake-up per request: +12-18% strict I/Os per wall second
 * here (A/B of warm runs, 4k reads, iodepth 64). The cap, 10^6 loads, is
 * ~5 ms. With several vCPUs other threads want the cores: no gain was
 * measured, so the VMM parks as soon as the others do.
 */
export function vmmRpcSpinLoads(vcpus: number, spinLoads: number): number {
  return vcpus === 1 ? Math.max(spinLoads, 1_000_000) : spinLoads;
}
