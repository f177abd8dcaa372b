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
import { type HostWorkerInit, type HostWorkerResult, VfioContainer, type VfioContainerHandle } from '@vmstack/host-vfio';
import { IoPgtable, type IoPgtableHandle } from '@vmstack/iommu-hw';
import { type DeviceWorkerInit, type DeviceWorkerResult, NvmeMedia } from '@vmstack/nvme-device';
import {
  allocateRpcChannel,
  type ClockMode,
  type ControlHandle,
  type CostProfile,
  InputError,
  LockTable,
  type LockTableHandle,
  MAX_WORKERS,
  NEVER_NS,
  Ring,
  type RingHandle,
  type RpcChannelHandles,
  RUN_STATE_BYTES,
  RunControl,
  type RunOutcome,
  runWorkers,
  vmStateBytes,
  type WorkerSpec,
} from '@vmstack/shm';
import { VIOMMU_DEVICE_MUTEX, type VmmWorkerInit, type VmmWorkerResult } from '@vmstack/vmm';
import { assembleRunResult, mergeVmResults } from '../report/assemble.js';
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

/** The shared memory of one VM, allocated from its plan. */
interface VmRegions {
  guestRam: SharedArrayBuffer;
  vmState: SharedArrayBuffer;
  pageAlloc: PageAllocatorHandle;
  iovaDomain: IovaDomainHandle;
  flushQueue: FlushQueueHandle | null;
  bouncePool: BouncePoolHandle | null;
  swiotlb: SwiotlbHandle | null;
  /** the VM's locks: the guest's and its VMM's */
  locks: LockTableHandle;
  /** the host IOMMU page tables of the VM's container */
  pgtable: IoPgtableHandle;
  /** the VM's VFIO container, shared by every host worker serving it */
  container: VfioContainerHandle;
  rings: { doorbell: RingHandle[]; irq: RingHandle[]; kick: RingHandle[]; used: RingHandle[]; inval: RingHandle };
  vfioRpc: RpcChannelHandles;
}

/** The shared memory of a run. */
interface StackRegions {
  control: ControlHandle;
  /** the host-wide locks: containers' iommu->lock, units' qi->q_lock, VMM processes' mmap_lock */
  hostLocks: LockTableHandle;
  /** the run's state across VMs (shm/src/vm-state.ts) */
  runState: SharedArrayBuffer;
  vms: VmRegions[];
  /** every ring, named, in the plan's order (for stall reports) */
  ringList: { name: string; handle: RingHandle }[];
}

/** What one VM runs: its jobs in vCPU order, its strategy, driver and device. */
interface VmRunOptions {
  jobs: FioJobSpec[];
  strategy: DmaStrategy;
  driverGeneration: ViommuDriverGeneration;
  untrusted: boolean;
}

/** Allocate the regions the plan describes, set up the IOVA reservations and publish every worker's starting EOT. */
function allocateStackRegions(plan: StackPlan, p: CostProfile): StackRegions {
  const control = RunControl.allocate();
  const ctl = RunControl.attach(control);
  const ringList: { name: string; handle: RingHandle }[] = [];
  const vms = plan.vms.map((vm): VmRegions => {
    const r = vm.regions;
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
    const container = VfioContainer.allocate({
      guestRamBytes: r.guestRamBytes,
      lockedVmLimitPages: vm.vfio.lockedVmLimitPages,
      dmaEntryLimit: vm.vfio.dmaEntryLimit,
    });
    // every ring wakes its consumer's worker event
    const planned = planRings(vm.rings);
    const handles = new Map(planned.map((r) => [r, Ring.allocate({ capacityRecords: r.capacityRecords }, ctl.eventRef(r.consumer))]));
    for (const r of planned) ringList.push({ name: r.name, handle: handles.get(r)! });
    const ring = (r: PlannedRing) => handles.get(r)!;
    const rings = {
      doorbell: vm.rings.doorbell.map(ring),
      irq: vm.rings.irq.map(ring),
      kick: vm.rings.kick.map(ring),
      used: vm.rings.used.map(ring),
      inval: ring(vm.rings.inval),
    };
    const vfioRpc = allocateRpcChannel(vm.vfioRpc.capacityRecords, ctl.eventRef(vm.vfioRpc.server), ctl.eventRef(vm.vfioRpc.client));
    return { guestRam, vmState, pageAlloc, iovaDomain, flushQueue, bouncePool, swiotlb, locks, pgtable, container, rings, vfioRpc };
  });
  plan.workers.forEach((w, i) => ctl.publishEot(i, w.startEotNs));
  return { control, hostLocks: LockTable.allocate(plan.hostLocks), runState: new SharedArrayBuffer(RUN_STATE_BYTES), vms, ringList };
}

/** What each VM runs, from the plan and the run's options. */
function vmRunOptions(plan: StackPlan, o: StackOptions): VmRunOptions[] {
  return plan.vms.map((vm) => ({
    jobs: vm.jobOfVcpu.map((j) => o.jobs[j]),
    strategy: vm.strategy,
    driverGeneration: vm.driverGeneration,
    untrusted: vm.device.untrusted,
  }));
}

/** Each worker's role, entry and init, in the plan's worker order. */
function buildWorkerSpecs(plan: StackPlan, regions: StackRegions, vmOptions: readonly VmRunOptions[], o: StackOptions): WorkerSpec[] {
  const p = o.profile;
  const epochMs = performance.timeOrigin + performance.now();
  const common = { clockMode: o.clock, dilation: o.dilation, epochMs, spinLoads: o.spinLoads };
  const carried = o.carry?.namespaceBlocks ?? [];
  // verify expects, where an earlier group wrote, the seed its writer put in the block header
  const priorSeeds: [number, number][] = carried.map(([lba, data]) => [lba, new DataView(data.buffer, data.byteOffset).getUint32(16, true)]);
  // the device's shortest doorbell → interrupt time (its lookahead); the same minimum the device uses
  const deviceMinResponseNs = p.nvmeDoorbellLatencyNs + p.nvmeSqeFetchNs + new NvmeMedia(p).minServiceNs() + p.nvmeCqePostNs + p.msiLatencyNs;
  // every vCPU of the run: the quantum gate of each waits for all the others, across VMs
  const allVcpus = plan.vms.flatMap((vm, k) =>
    vm.index.vcpus.map((worker, v) => ({ worker, deviceWorker: vm.index.device, irqRing: regions.vms[k].rings.irq[v] })),
  );
  const vmOfWorker = new Map<number, number>();
  plan.vms.forEach((vm, k) => {
    for (const w of [...vm.index.vcpus, vm.index.vmm, vm.index.host, vm.index.device]) vmOfWorker.set(w, k);
  });

  const inits = plan.workers.map((w, i): unknown => {
    const k = vmOfWorker.get(i)!;
    const vm = plan.vms[k];
    const vo = vmOptions[k];
    const idx = vm.index;
    const { guestRam, vmState, locks, pageAlloc, iovaDomain, flushQueue, bouncePool, swiotlb, pgtable, rings } = regions.vms[k];
    const { vqLayout, viommuRequestAreaGpa, viommuSlotWordGpa, coherentGpa, coherentBytes, adminSqGpa, adminCqGpa, identifyGpa, queues } =
      vm.regions.guestLayout;
    switch (w.kind) {
      case 'vcpu': {
        const v = idx.vcpus.indexOf(i);
        const init: VcpuWorkerInit = {
          ...common,
          vcpu: v,
          quantumNs: o.quantumNs,
          strategy: vo.strategy,
          driverGeneration: vo.driverGeneration,
          costs: p,
          job: vo.jobs[v],
          bufferContiguity: o.bufferContiguity,
          guestRam,
          locks,
          pageAlloc,
          iovaDomain,
          untrusted: vo.untrusted,
          alwaysBounceLimitSchedule: o.alwaysBounceLimitSchedule,
          flushQueue,
          bouncePool,
          swiotlb,
          iovaLimitPfn: vm.device.iovaLimitPfn,
          domainId: vm.device.domainId,
          endpointId: vm.device.endpointId,
          vqLayout,
          viommuRequestAreaGpa,
          viommuSlotWordGpa,
          vmState,
          runState: { sab: regions.runState, vm: k, vcpus: allVcpus.length },
          adminSqGpa,
          adminCqGpa,
          identifyGpa,
          coherentGpa,
          coherentBytes,
          queueDepth: vm.device.queueDepth,
          queues,
          nsPrefillSeed: NS_PREFILL_SEED,
          priorSeeds,
          // only this VM's jobs share the drive: another VM has a drive of its own
          peerWriteSeeds: vo.jobs.filter((other, u) => u !== v && fioJobWrites(other)).map(fioWriteSeed),
          doorbellRing: rings.doorbell[v],
          irqRing: rings.irq[v],
          gatePeers: allVcpus.filter((x) => x.worker !== i),
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
          rpcSpinLoads: o.vmmSpinLoads ?? vmmRpcSpinLoads(allVcpus.length, o.spinLoads),
          costs: p,
          kickWakeupNs: p.hostThreadWakeupNs,
          locks,
          guestRam,
          vqLayout,
          viommuEndpointIds: vm.viommu.endpointIds,
          kickRings: rings.kick,
          usedRings: rings.used,
          hostRpc: regions.vms[k].vfioRpc,
          identityMapBytes: vm.vfio.identityMapBytes,
          vmState,
          deviceWorker: idx.device,
        };
        return init;
      }
      case 'host': {
        const init: HostWorkerInit = {
          ...common,
          costs: p,
          locks: regions.hostLocks,
          containerLockName: vm.container.lockName,
          qiLockName: vm.hostIommu.qiLockName,
          mmapLockName: vm.mmapLockName,
          container: regions.vms[k].container,
          vmmRpc: regions.vms[k].vfioRpc,
          pgtable,
          invalRing: rings.inval,
        };
        return init;
      }
      case 'device': {
        const verifyAlgo = vo.jobs.find((j) => j.verify !== 'none')?.verify ?? 'none';
        const init: DeviceWorkerInit = {
          ...common,
          costs: p,
          guestRam,
          pgtable,
          doorbellRings: rings.doorbell,
          irqRings: rings.irq,
          invalRing: rings.inval,
          vcpuWorkers: idx.vcpus,
          vcpuOfCq: vm.device.vcpuOfCq,
          namespace: {
            sizeBlocks: Math.max(...vo.jobs.map((j) => (j.offsetBytes + j.sizeBytes) / NVME_LBA_SIZE_BYTES), ...carried.map(([lba]) => lba + 1)) + 1024,
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
async function runStackWorkers(plan: StackPlan, regions: StackRegions, specs: WorkerSpec[], o: StackOptions): Promise<RunOutcome<unknown>> {
  const { control } = regions;
  const ctl = RunControl.attach(control);
  return (
    o.transport === 'in-thread'
      ? Promise.resolve().then(() => runInThread(specs, control, plan.vms[0].index))
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
  if (plan.vms.length > 1 && (opts.carry || opts.exportNamespace))
    throw new InputError('stonewall', `${plan.vms.length} VMs`, 'one VM: barrier groups (stonewall, wait_for_previous) run with one VM for now');
  if (plan.vms.length > 1 && opts.transport === 'in-thread')
    throw new InputError('--transport', 'in-thread', `one VM only; this topology has ${plan.vms.length}: use --transport workers`);
  const vmOptions = vmRunOptions(plan, opts);
  const regions = allocateStackRegions(plan, opts.profile);
  const specs = buildWorkerSpecs(plan, regions, vmOptions, opts);
  const startedMs = Date.now();
  const wallStart = performance.now();
  const out = await runStackWorkers(plan, regions, specs, opts);
  const wallMs = performance.now() - wallStart;
  const hostLockStats = LockTable.attach(regions.hostLocks, MAIN_THREAD_CPU).stats();
  const results = plan.vms.map((vm, k) => {
    const vo = vmOptions[k];
    const { vmm, host, device } = vm.index;
    const vmLocks = LockTable.attach(regions.vms[k].locks, MAIN_THREAD_CPU)
      .stats()
      .map((l) => ({ ...l, name: vm.lockScope + l.name }));
    return assembleRunResult({
      jobs: vo.jobs,
      jobOptions: opts.jobOptions,
      globalOptions: opts.globalOptions,
      strategy: vo.strategy,
      untrusted: vo.untrusted,
      clock: opts.clock,
      transport: opts.transport ?? 'workers',
      driverGeneration: vo.driverGeneration,
      workers: out.workers,
      workerResults: out.results,
      vcpus: vm.index.vcpus.map((w) => out.results[w] as VcpuWorkerResult),
      vmm: out.results[vmm] as VmmWorkerResult,
      host: out.results[host] as HostWorkerResult,
      device: out.results[device] as DeviceWorkerResult,
      // the host-wide locks once, after the VMs' own
      lockStats: k === plan.vms.length - 1 ? [...vmLocks, ...hostLockStats] : vmLocks,
      flushQueue: regions.vms[k].flushQueue ? FlushQueue.stats(regions.vms[k].flushQueue!) : null,
      iovaPagesAllocated: IovaDomain.stats(regions.vms[k].iovaDomain).allocatedPages,
      startedMs,
      wallMs,
    });
  });
  return mergeVmResults(
    results,
    plan.vms.map((vm) => ({ id: vm.id, jobs: vm.jobOfVcpu })),
  );
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
