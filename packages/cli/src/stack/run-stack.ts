/**
 * Run a topology on real workers: plan it (topology/plan.ts), allocate the
 * shared regions the plan describes, build each worker's init, run the
 * guest's vCPUs, the VMM, the host kernel and the device, each in its own
 * worker thread talking through SharedArrayBuffer rings (or all in this
 * thread), and assemble a fio-style RunResult.
 */

import {
  BouncePool,
  type BouncePoolHandle,
  type DmaStrategy,
  type FioJobSpec,
  FlushQueue,
  type FlushQueueHandle,
  fioJobWrites,
  fioWriteSeed,
  IovaDomain,
  type IovaDomainHandle,
  NVME_LBA_SIZE_BYTES,
  PageAllocator,
  type PageAllocatorHandle,
  Swiotlb,
  type SwiotlbHandle,
  type UserBufferContiguity,
  type VcpuWorkerInit,
  type VcpuWorkerResult,
  VIOMMU_REQUEST_LOCK,
  type ViommuDriverGeneration,
} from '@vmstack/guest-kernel';
import { type HostWorkerInit, type HostWorkerResult, IOMMU_LOCK } from '@vmstack/host-vfio';
import { IoPgtable, type IoPgtableHandle } from '@vmstack/iommu-hw';
import { type DeviceWorkerInit, type DeviceWorkerResult, NvmeMedia } from '@vmstack/nvme-device';
import {
  allocateRpcChannel,
  type ClockMode,
  type ControlHandle,
  type CostProfile,
  LockTable,
  type LockTableHandle,
  MAX_WORKERS,
  NEVER_NS,
  Ring,
  type RingHandle,
  type RpcChannelHandles,
  RunControl,
  type RunOutcome,
  runWorkers,
  vmStateBytes,
  type WorkerSpec,
} from '@vmstack/shm';
import { VIOMMU_DEVICE_MUTEX, type VmmWorkerInit, type VmmWorkerResult } from '@vmstack/vmm';
import { assembleRunResult } from '../report/assemble.js';
import type { RunCarry, RunResult } from '../report/result.js';
import { type PlannedRing, planRings, planStack, type StackPlan } from '../topology/plan.js';
import { defaultTopology, type Topology } from '../topology/topology.js';
import { runInThread } from './in-thread.js';

export interface StackOptions {
  jobs: FioJobSpec[];
  jobOptions: Record<string, Record<string, string>>;
  globalOptions: Record<string, string>;
  /**
   * What runs: VMs, vCPUs, devices, IOMMUs (topology/topology.ts). Default:
   * defaultTopology(jobs, this), built from strategy, driverGeneration,
   * guestRamBytes and untrusted; a given topology carries its own of those.
   */
  topology?: Topology;
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
  /** bounce strategy: bounce trusted streaming mappings up to this size (default: the pool's) */
  alwaysBounceLimitBytes?: number;
  /** bounce strategy: change always_bounce_limit at these model times during the run */
  alwaysBounceLimitSchedule?: { atNs: number; bytes: number }[];
  /** bounce strategy: slots per size class (default: the pool's) */
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

/** the drive's pre-filled blocks look written by a verify job with this seed */
const NS_PREFILL_SEED = 0x89;
/** the lock-table slot of this (the main) thread: the last worker slot */
const MAIN_THREAD_CPU = MAX_WORKERS - 1;

/** The shared memory of a run, allocated from its plan. */
interface StackRegions {
  control: ControlHandle;
  guestRam: SharedArrayBuffer;
  vmState: SharedArrayBuffer;
  pageAlloc: PageAllocatorHandle;
  iovaDomain: IovaDomainHandle;
  flushQueue: FlushQueueHandle | null;
  bouncePool: BouncePoolHandle | null;
  swiotlb: SwiotlbHandle | null;
  locks: LockTableHandle;
  pgtable: IoPgtableHandle;
  rings: { doorbell: RingHandle[]; irq: RingHandle[]; kick: RingHandle[]; used: RingHandle[]; inval: RingHandle };
  /** the same rings, named, in the plan's ring order (for stall reports) */
  ringList: { name: string; handle: RingHandle }[];
  vfioRpc: RpcChannelHandles;
}

type RunOptions = StackOptions & { untrusted: boolean };

/** Allocate the regions the plan describes, set up the IOVA reservations and publish every worker's starting EOT. */
function allocateStackRegions(plan: StackPlan, p: CostProfile): StackRegions {
  const r = plan.regions;
  const control = RunControl.allocate();
  const ctl = RunControl.attach(control);
  const guestRam = new SharedArrayBuffer(r.guestRamBytes);
  const vmState = new SharedArrayBuffer(vmStateBytes(r.vmStateVcpus));
  const pageAlloc = PageAllocator.allocate(r.pageAlloc);
  const { reservedPfns, ...iovaOptions } = r.iovaDomain;
  const iovaDomain = IovaDomain.allocate(iovaOptions);
  const flushQueue = r.flushQueue ? FlushQueue.allocate(r.flushQueue) : null;
  const bouncePool = r.bouncePool ? BouncePool.allocate(r.bouncePool) : null;
  const swiotlb = r.swiotlb ? Swiotlb.allocate(r.swiotlb) : null;
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
  {
    const iovad = IovaDomain.attach(iovaDomain, 0, LockTable.attach(locks, MAIN_THREAD_CPU), p);
    for (const [lo, hi] of reservedPfns) iovad.reserve_iova(lo, hi);
  }
  const pgtable = IoPgtable.allocate(r.pgtable);
  // every ring wakes its consumer's worker event
  const ringList = planRings(plan.rings).map((r) => ({
    name: r.name,
    handle: Ring.allocate({ capacityRecords: r.capacityRecords }, ctl.eventRef(r.consumer)),
  }));
  const handle = new Map(planRings(plan.rings).map((r, k) => [r, ringList[k].handle]));
  const ring = (r: PlannedRing) => handle.get(r)!;
  const rings = {
    doorbell: plan.rings.doorbell.map(ring),
    irq: plan.rings.irq.map(ring),
    kick: plan.rings.kick.map(ring),
    used: plan.rings.used.map(ring),
    inval: ring(plan.rings.inval),
  };
  const vfioRpc = allocateRpcChannel(plan.vfioRpc.capacityRecords, ctl.eventRef(plan.vfioRpc.server), ctl.eventRef(plan.vfioRpc.client));
  plan.workers.forEach((w, i) => ctl.publishEot(i, w.startEotNs));
  return { control, guestRam, vmState, pageAlloc, iovaDomain, flushQueue, bouncePool, swiotlb, locks, pgtable, rings, ringList, vfioRpc };
}

/** Each worker's role, entry and init, in the plan's worker order. */
function buildWorkerSpecs(plan: StackPlan, regions: StackRegions, o: RunOptions): WorkerSpec[] {
  const p = o.profile;
  const { guestRam, vmState, locks, pageAlloc, iovaDomain, flushQueue, bouncePool, swiotlb, pgtable, rings } = regions;
  const { vqLayout, viommuRequestAreaGpa, viommuSlotWordGpa, coherentGpa, coherentBytes, adminSqGpa, adminCqGpa, identifyGpa, queues } =
    plan.regions.guestLayout;
  const idx = plan.index;
  const epochMs = performance.timeOrigin + performance.now();
  const common = { clockMode: o.clock, dilation: o.dilation, epochMs, spinLoads: o.spinLoads };
  const carried = o.carry?.namespaceBlocks ?? [];
  const nsSizeBlocks = Math.max(...o.jobs.map((j) => (j.offsetBytes + j.sizeBytes) / NVME_LBA_SIZE_BYTES), ...carried.map(([lba]) => lba + 1)) + 1024;
  // verify expects, where an earlier group wrote, the seed its writer put in the block header
  const priorSeeds: [number, number][] = carried.map(([lba, data]) => [lba, new DataView(data.buffer, data.byteOffset).getUint32(16, true)]);
  // the device's shortest doorbell → interrupt time (its lookahead); the same minimum the device uses
  const deviceMinResponseNs = p.nvmeDoorbellLatencyNs + p.nvmeSqeFetchNs + new NvmeMedia(p).minServiceNs() + p.nvmeCqePostNs + p.msiLatencyNs;
  const verifyAlgo = o.jobs.find((j) => j.verify !== 'none')?.verify ?? 'none';

  const inits = plan.workers.map((w, i): unknown => {
    switch (w.kind) {
      case 'vcpu': {
        const v = idx.vcpus.indexOf(i);
        const init: VcpuWorkerInit = {
          ...common,
          vcpu: v,
          quantumNs: o.quantumNs,
          strategy: o.strategy,
          driverGeneration: o.driverGeneration,
          costs: p,
          job: o.jobs[v],
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
          iovaLimitPfn: plan.device.iovaLimitPfn,
          domainId: plan.device.domainId,
          endpointId: plan.device.endpointId,
          vqLayout,
          viommuRequestAreaGpa,
          viommuSlotWordGpa,
          vmState,
          adminSqGpa,
          adminCqGpa,
          identifyGpa,
          coherentGpa,
          coherentBytes,
          queueDepth: plan.device.queueDepth,
          queues,
          nsPrefillSeed: NS_PREFILL_SEED,
          priorSeeds,
          peerWriteSeeds: o.jobs.filter((other, u) => u !== v && fioJobWrites(other)).map(fioWriteSeed),
          doorbellRing: rings.doorbell[v],
          irqRing: rings.irq[v],
          allIrqRings: rings.irq,
          kickRing: rings.kick[v],
          usedRing: rings.used[v],
          deviceWorker: idx.device,
          vcpuWorkers: idx.vcpus,
          deviceMinResponseNs,
        };
        return init;
      }
      case 'vmm': {
        const init: VmmWorkerInit = {
          ...common,
          rpcSpinLoads: o.vmmSpinLoads ?? vmmRpcSpinLoads(idx.vcpus.length, o.spinLoads),
          costs: p,
          kickWakeupNs: p.hostThreadWakeupNs,
          locks,
          guestRam,
          vqLayout,
          viommuEndpointIds: plan.viommu.endpointIds,
          kickRings: rings.kick,
          usedRings: rings.used,
          hostRpc: regions.vfioRpc,
          identityMapBytes: plan.vfio.identityMapBytes,
          vmState,
          deviceWorker: idx.device,
        };
        return init;
      }
      case 'host': {
        const init: HostWorkerInit = {
          ...common,
          costs: p,
          locks,
          vmmRpc: regions.vfioRpc,
          pgtable,
          invalRing: rings.inval,
          lockedVmLimitPages: plan.vfio.lockedVmLimitPages,
          dmaEntryLimit: plan.vfio.dmaEntryLimit,
        };
        return init;
      }
      case 'device': {
        const init: DeviceWorkerInit = {
          ...common,
          costs: p,
          guestRam,
          pgtable,
          doorbellRings: rings.doorbell,
          irqRings: rings.irq,
          invalRing: rings.inval,
          vcpuWorkers: idx.vcpus,
          vcpuOfCq: plan.device.vcpuOfCq,
          namespace: {
            sizeBlocks: nsSizeBlocks,
            seed: NS_PREFILL_SEED,
            algo: verifyAlgo,
            initialBlocks: o.carry?.namespaceBlocks,
            exportBlocks: o.exportNamespace,
          },
        };
        return init;
      }
    }
  });
  return plan.workers.map((w, i) => ({ role: w.role, entry: w.entry, init: inits[i] }));
}

/**
 * Run the specs on the chosen transport. A run that does not finish says
 * where every worker stood: model clocks, EOTs and what sat in each ring.
 */
async function runStackWorkers(plan: StackPlan, regions: StackRegions, specs: WorkerSpec[], o: RunOptions): Promise<RunOutcome<unknown>> {
  const { control } = regions;
  const ctl = RunControl.attach(control);
  return (
    o.transport === 'in-thread'
      ? Promise.resolve().then(() => runInThread(specs, control, plan.index))
      : runWorkers<unknown>(specs, control, { timeoutMs: o.timeoutMs ?? 30 * 60_000 })
  ).catch((e: unknown) => {
    if (e instanceof Error && /did not finish/.test(e.message)) {
      const ns = (x: number) => (x >= NEVER_NS ? 'never' : String(x));
      const state = specs.map((sp, w) => `${sp.role}: clock ${ns(ctl.clockNs(w))} eot ${ns(ctl.eotNs(w))} waitFor ${ns(ctl.waitForNs(w))}`);
      const rings = regions.ringList.map((r) => `${r.name} ${Ring.attach(r.handle).inFlight()}`);
      e.message += `\n  ${state.join('\n  ')}\n  rings in flight: ${rings.join(', ')}`;
    }
    throw e;
  });
}

export async function runStack(opts: StackOptions): Promise<RunResult> {
  const plan = planStack(opts.topology ?? defaultTopology(opts.jobs, opts), {
    jobs: opts.jobs,
    profile: opts.profile,
    alwaysBounceLimitBytes: opts.alwaysBounceLimitBytes,
    slotsPerClass: opts.slotsPerClass,
  });
  // from here on, what the planned VM runs: its jobs in vCPU order, its strategy, driver and device
  const o: RunOptions = {
    ...opts,
    jobs: plan.vm.jobOfVcpu.map((j) => opts.jobs[j]),
    strategy: plan.vm.strategy,
    driverGeneration: plan.vm.driverGeneration,
    untrusted: plan.device.untrusted,
  };
  const regions = allocateStackRegions(plan, o.profile);
  const specs = buildWorkerSpecs(plan, regions, o);
  const { vmm: vmmW, host: hostW, device: devW } = plan.index;
  const { locks, iovaDomain, flushQueue } = regions;
  const startedMs = Date.now();
  const wallStart = performance.now();
  const out = await runStackWorkers(plan, regions, specs, o);
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
    vcpus: plan.index.vcpus.map((w) => out.results[w] as VcpuWorkerResult),
    vmm: out.results[vmmW] as VmmWorkerResult,
    host: out.results[hostW] as HostWorkerResult,
    device: out.results[devW] as DeviceWorkerResult,
    lockStats: LockTable.attach(locks, MAIN_THREAD_CPU).stats(),
    flushQueue: flushQueue ? FlushQueue.stats(flushQueue) : null,
    iovaPagesAllocated: IovaDomain.stats(iovaDomain).allocatedPages,
    startedMs,
    wallMs,
    topology: opts.topology,
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
