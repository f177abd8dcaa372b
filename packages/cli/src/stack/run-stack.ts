/**
 * Run a topology on real workers: plan it (topology/plan.ts), allocate the
 * shared regions the plan describes, build each worker's init, run the
 * guest's vCPUs, the VMM, the host kernel and the device, each in its own
 * worker thread talking through SharedArrayBuffer rings (or all in this
 * thread), and assemble a fio-style RunResult.
 */

import { availableParallelism } from 'node:os';
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
  type ViommuDriverGeneration,
} from '@vmstack/guest-kernel';
import { type HostWorkerInit, type HostWorkerResult, VfioContainer, type VfioContainerHandle } from '@vmstack/host-vfio';
import { type IommuProt, IoPgtable, type IoPgtableHandle } from '@vmstack/iommu-hw';
import { type DeviceWorkerInit, type DeviceWorkerResult, NvmeMedia } from '@vmstack/nvme-device';
import {
  allocateRpcChannel,
  type ClockMode,
  type ControlHandle,
  type CostProfile,
  defaultWatchdogMs,
  type FaultSpec,
  InputError,
  IOMMU_READ,
  IOMMU_WRITE,
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
import type { VmmWorkerInit, VmmWorkerResult } from '@vmstack/vmm';
import { checkFaultRoles } from '../faults.js';
import { assembleRunResult, mergeVmResults, sumDeep } from '../report/assemble.js';
import type { RunCarry, RunResult } from '../report/result.js';
import type { ComponentWallNs } from '../report/vmstack-report.js';
import { type PlannedRing, planRings, planStack, type StackPlan, type VmPlan } from '../topology/plan.js';
import { defaultTopology, type Topology } from '../topology/topology.js';
import { type InThreadWorkers, runInThread } from './in-thread.js';

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
  /** fail once no worker has made progress for this long, real ms (shm watchdog.ts); 0: no watchdog; default: defaultWatchdogMs */
  watchdogMs?: number;
  /** faults to inject into the workers (shm fault.ts) */
  faults?: readonly FaultSpec[];
  /**
   * Report each component's wall time (`model_speed.component_wall_ns`): with workers each
   * thread's busy time (run less parked), in one thread timers around each component's calls.
   */
  timeComponents?: boolean;
}

/**
 * A VM's host side as one result: the profiles of its host contexts added up,
 * and each container's stats once (the contexts serving a container read the
 * same shared state).
 */
function hostResult(vm: VmPlan, results: readonly unknown[], reg: VmRegions, hostLocks: LockTableHandle, p: CostProfile): HostWorkerResult {
  const all = vm.viommus.map((x) => results[x.host] as HostWorkerResult);
  // read after every context is done: the state they share, as it was left
  const perContainer = vm.containers.map((c, ci) =>
    VfioContainer.attach(reg.containers[ci], {
      pgtable: IoPgtable.attach(reg.pgtables[ci]),
      lockTable: LockTable.attach(hostLocks, MAIN_THREAD_CPU),
      lockName: c.lockName,
      qiLockName: c.hostIommu.qiLockName,
      mmapLockName: vm.mmapLockName,
      costs: p,
      invalidateIotlb: () => {},
    }).stats(),
  );
  return { ...sumDeep(all), stats: sumDeep(perContainer) };
}

/** What a bare-metal run reports for the VMM and VFIO it does not have: nothing happened there. */
const NO_VMM: VmmWorkerResult = {
  counters: { attach: 0, detach: 0, map: 0, unmap: 0, probe: 0, errors: 0, vfioMapDma: 0, vfioUnmapDma: 0, kicks: 0 },
  profile: {},
  mappingsLeft: 0,
  clockNs: 0,
};
const NO_VFIO: HostWorkerResult = {
  stats: { mapDmaCalls: 0, unmapDmaCalls: 0, pinnedPages: 0, pinnedPagesPeak: 0, lockedVmPages: 0, dmaCount: 0, iotlbInvalidations: 0 },
  profile: {},
  clockNs: 0,
};

/** the drive's pre-filled blocks look written by a verify job with this seed */
const NS_PREFILL_SEED = 0x89;
/** the lock-table slot of this (the main) thread: the last worker slot */
const MAIN_THREAD_CPU = MAX_WORKERS - 1;

/** The shared memory of one drive's IOMMU domain. */
interface DomainRegions {
  iovaDomain: IovaDomainHandle;
  flushQueue: FlushQueueHandle | null;
  bouncePool: BouncePoolHandle | null;
}

/** The shared memory of one VM, allocated from its plan. */
interface VmRegions {
  guestRam: SharedArrayBuffer;
  vmState: SharedArrayBuffer;
  pageAlloc: PageAllocatorHandle;
  swiotlb: SwiotlbHandle | null;
  /** per drive, in plan order */
  domains: DomainRegions[];
  /** the VM's locks: the guest's and its VMM's */
  locks: LockTableHandle;
  /** per container, in plan order: its state (shared by the host contexts serving it) and the page tables of its host domain */
  containers: VfioContainerHandle[];
  pgtables: IoPgtableHandle[];
  /** bare metal, per drive: the page tables of its VT-d domain */
  domainPgtables: (IoPgtableHandle | null)[];
  /** per virtio-iommu: its VMM thread → host context VFIO channel */
  vfioRpcs: RpcChannelHandles[];
  /** every ring of the VM */
  ring: (r: PlannedRing) => RingHandle;
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

/** What one VM runs: its jobs in vCPU order, its strategy and driver. */
interface VmRunOptions {
  jobs: FioJobSpec[];
  strategy: DmaStrategy;
  driverGeneration: ViommuDriverGeneration;
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
    const swiotlb = r.swiotlb ? Swiotlb.allocate(r.swiotlb) : null;
    const domains = vm.devices.map((d): DomainRegions => {
      const { reservedPfns: _, ...iovaOptions } = d.iovaDomain;
      return {
        iovaDomain: IovaDomain.allocate(iovaOptions),
        flushQueue: d.flushQueue ? FlushQueue.allocate(d.flushQueue) : null,
        bouncePool: d.bouncePool ? BouncePool.allocate(d.bouncePool) : null,
      };
    });
    const locks = LockTable.allocate([
      ...vm.viommus.map((v) => ({ name: v.requestLockName, kind: 'spinlock' as const })),
      ...vm.viommus.map((v) => ({ name: v.mutexName, kind: 'mutex' as const })),
      ...PageAllocator.lockSpecs(pageAlloc),
      ...domains.flatMap((d) => [
        ...IovaDomain.lockSpecs(d.iovaDomain),
        ...(d.flushQueue ? FlushQueue.lockSpecs(d.flushQueue) : []),
        ...(d.bouncePool ? BouncePool.lockSpecs(d.bouncePool) : []),
      ]),
      ...(swiotlb ? Swiotlb.lockSpecs(swiotlb) : []),
    ]);
    vm.devices.forEach((d, i) => {
      const iovad = IovaDomain.attach(domains[i].iovaDomain, 0, LockTable.attach(locks, MAIN_THREAD_CPU), p);
      for (const [lo, hi] of d.iovaDomain.reservedPfns) iovad.reserve_iova(lo, hi);
    });
    // every ring wakes its consumer's worker event
    const planned = planRings(vm);
    const handles = new Map(planned.map((r) => [r, Ring.allocate({ capacityRecords: r.capacityRecords }, ctl.eventRef(r.consumer))]));
    for (const r of planned) ringList.push({ name: r.name, handle: handles.get(r)! });
    return {
      guestRam,
      vmState,
      pageAlloc,
      swiotlb,
      domains,
      locks,
      containers: vm.containers.map(() =>
        VfioContainer.allocate({ guestRamBytes: r.guestRamBytes, lockedVmLimitPages: vm.vfio.lockedVmLimitPages, dmaEntryLimit: vm.vfio.dmaEntryLimit }),
      ),
      pgtables: vm.containers.map((c) => IoPgtable.allocate(c.pgtable)),
      domainPgtables: vm.devices.map((d) => {
        if (!d.vtd) return null;
        const h = IoPgtable.allocate(d.vtd.pgtable);
        // iommu=pt (the direct strategy): host memory one to one, set up at boot
        if (d.vtd.identityMapBytes > 0) IoPgtable.attach(h).map(0, 0, d.vtd.identityMapBytes, (IOMMU_READ | IOMMU_WRITE) as IommuProt);
        return h;
      }),
      vfioRpcs: vm.viommus.map((v) => allocateRpcChannel(v.vfioRpc.capacityRecords, ctl.eventRef(v.vfioRpc.server), ctl.eventRef(v.vfioRpc.client))),
      ring: (r) => handles.get(r)!,
    };
  });
  plan.workers.forEach((w, i) => ctl.publishEot(i, w.startEotNs));
  return { control, hostLocks: LockTable.allocate(plan.hostLocks), runState: new SharedArrayBuffer(RUN_STATE_BYTES), vms, ringList };
}

/** What each VM runs, from the plan and the run's options. */
function vmRunOptions(plan: StackPlan, o: StackOptions): VmRunOptions[] {
  return plan.vms.map((vm) => ({ jobs: vm.jobOfVcpu.map((j) => o.jobs[j]), strategy: vm.strategy, driverGeneration: vm.driverGeneration }));
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
  // every vCPU of the run, with its job's drive: the quantum gate of each waits for all the others, across VMs
  const allVcpus = plan.vms.flatMap((vm, k) =>
    vm.vcpuWorkers.map((worker, v) => {
      const d = vm.devices[vm.deviceOfVcpu[v]];
      return { worker, deviceWorker: d.worker, irqRing: regions.vms[k].ring(d.irq[d.vcpus.indexOf(v)]) };
    }),
  );
  const inits: unknown[] = [];
  plan.vms.forEach((vm, k) => {
    const vo = vmOptions[k];
    const reg = regions.vms[k];
    const { guestRam, vmState, locks, pageAlloc, swiotlb } = reg;
    vm.vcpuWorkers.forEach((w, v) => {
      // vCPU 0 talks to every drive and virtio-iommu (it brings them up); the others to their job's
      const devices = vm.devices.map((d, i) => ({ d, i })).filter(({ d }) => d.vcpus.includes(v));
      const viommus = vm.viommus.map((x, i) => ({ x, i })).filter(({ x }) => x.vcpus.includes(v));
      const viommuSlot = new Map(viommus.map(({ i }, slot) => [i, slot]));
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
        hostLocks: vm.bareMetal ? regions.hostLocks : null,
        pageAlloc,
        alwaysBounceLimitSchedule: o.alwaysBounceLimitSchedule,
        swiotlb,
        viommus: viommus.map(({ x }) => ({
          requestLockName: x.requestLockName,
          vqLayout: x.layout.vqLayout,
          viommuRequestAreaGpa: x.layout.viommuRequestAreaGpa,
          viommuSlotWordGpa: x.layout.viommuSlotWordGpa,
          kickRing: reg.ring(x.kick[x.vcpus.indexOf(v)]),
          usedRing: reg.ring(x.used[x.vcpus.indexOf(v)]),
        })),
        devices: devices.map(({ d, i }) => ({
          viommu: d.viommu < 0 ? -1 : viommuSlot.get(d.viommu)!,
          intelIommu: d.vtd ? { pgtable: reg.domainPgtables[i]!, invalRing: reg.ring(d.inval[0]), qiLockName: d.vtd.qiLockName, domainId: d.domainId } : null,
          untrusted: d.untrusted,
          domainId: d.domainId,
          endpointId: d.endpointId,
          iovaDomain: reg.domains[i].iovaDomain,
          iovaLimitPfn: d.iovaDomain.limitPfn,
          flushQueue: reg.domains[i].flushQueue,
          bouncePool: reg.domains[i].bouncePool,
          coherentGpa: d.layout.coherentGpa,
          coherentBytes: d.layout.coherentBytes,
          adminSqGpa: d.layout.adminSqGpa,
          adminCqGpa: d.layout.adminCqGpa,
          identifyGpa: d.layout.identifyGpa,
          queueDepth: d.queueDepth,
          queues: d.layout.queues,
          ownQueue: d.ioVcpus.indexOf(v),
          doorbellRing: reg.ring(d.doorbell[d.vcpus.indexOf(v)]),
          irqRing: reg.ring(d.irq[d.vcpus.indexOf(v)]),
          deviceWorker: d.worker,
        })),
        jobDevice: devices.findIndex(({ i }) => i === vm.deviceOfVcpu[v]),
        vmState,
        vmmThreads: vm.viommus.length,
        runState: { sab: regions.runState, vm: k, vcpus: allVcpus.length },
        nsPrefillSeed: NS_PREFILL_SEED,
        priorSeeds,
        // only the jobs on the same drive can write over this job's blocks
        peerWriteSeeds: vo.jobs.filter((other, u) => u !== v && vm.deviceOfVcpu[u] === vm.deviceOfVcpu[v] && fioJobWrites(other)).map(fioWriteSeed),
        gatePeers: allVcpus.filter((x) => x.worker !== w),
        vcpuWorkers: vm.vcpuWorkers,
        deviceMinResponseNs,
      };
      inits[w] = init;
    });
    vm.viommus.forEach((x, vi) => {
      const container = vm.containers[x.container];
      const vmm: VmmWorkerInit = {
        ...common,
        rpcSpinLoads: o.vmmSpinLoads ?? vmmRpcSpinLoads(allVcpus.length, o.spinLoads),
        costs: p,
        kickWakeupNs: p.hostThreadWakeupNs,
        locks,
        deviceMutexName: x.mutexName,
        guestRam,
        vqLayout: x.layout.vqLayout,
        viommuEndpointIds: x.endpointIds,
        kickRings: x.kick.map(reg.ring),
        usedRings: x.used.map(reg.ring),
        hostRpc: reg.vfioRpcs[vi],
        identityMapBytes: container.identityMapBytes,
        vmState,
        deviceWorkers: x.devices.map((i) => vm.devices[i].worker),
      };
      inits[x.vmm] = vmm;
      const host: HostWorkerInit = {
        ...common,
        costs: p,
        locks: regions.hostLocks,
        containerLockName: container.lockName,
        qiLockName: container.hostIommu.qiLockName,
        vmmRpc: reg.vfioRpcs[vi],
        pgtable: reg.pgtables[x.container],
        // this host context's invalidation ring to each drive of the container
        invalRings: container.devices.map((i) => reg.ring(vm.devices[i].inval.find((r) => r.producer === x.host)!)),
        mmapLockName: vm.mmapLockName,
        container: reg.containers[x.container],
      };
      inits[x.host] = host;
    });
    vm.devices.forEach((d) => {
      const jobs = d.ioVcpus.map((v) => vo.jobs[v]);
      const verifyAlgo = jobs.find((j) => j.verify !== 'none')?.verify ?? 'none';
      const init: DeviceWorkerInit = {
        ...common,
        costs: p,
        guestRam,
        pgtable: d.vtd ? reg.domainPgtables[vm.devices.indexOf(d)]! : reg.pgtables[d.container],
        doorbellRings: d.doorbell.map(reg.ring),
        irqRings: d.irq.map(reg.ring),
        invalRings: d.inval.map(reg.ring),
        vcpuWorkers: d.vcpus.map((v) => vm.vcpuWorkers[v]),
        vcpuOfCq: d.vcpuOfCq,
        namespace: {
          sizeBlocks: Math.max(0, ...jobs.map((j) => (j.offsetBytes + j.sizeBytes) / NVME_LBA_SIZE_BYTES), ...carried.map(([lba]) => lba + 1)) + 1024,
          seed: NS_PREFILL_SEED,
          algo: verifyAlgo,
          initialBlocks: o.carry?.namespaceBlocks,
          exportBlocks: o.exportNamespace,
        },
      };
      inits[d.worker] = init;
    });
  });
  return plan.workers.map((w, i) => ({ role: w.role, entry: w.entry, init: inits[i] }));
}

/**
 * Run the specs on the chosen transport. A run that does not finish says
 * where every worker stood: model clocks, EOTs and what sat in each ring.
 */
async function runStackWorkers(
  plan: StackPlan,
  regions: StackRegions,
  specs: WorkerSpec[],
  o: StackOptions,
): Promise<RunOutcome<unknown> & { componentWallNs?: ComponentWallNs }> {
  const { control } = regions;
  const ctl = RunControl.attach(control);
  return (
    o.transport === 'in-thread'
      ? Promise.resolve().then(() => runInThread(specs, control, inThreadWorkers(plan), o.timeComponents))
      : runWorkers<unknown>(specs, control, {
          timeoutMs: o.timeoutMs ?? 30 * 60_000,
          watchdogMs: o.watchdogMs ?? defaultWatchdogMs(specs.length, availableParallelism()),
          faults: o.faults,
          // a thread parked on a lock wakes now rather than at its next timeout
          onAbort: () => {
            LockTable.wakeAll(regions.hostLocks);
            for (const vm of regions.vms) LockTable.wakeAll(vm.locks);
          },
        })
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
  checkFaultRoles(
    opts.faults,
    plan.workers.map((w) => w.role),
  );
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
    const reg = regions.vms[k];
    const vmLocks = LockTable.attach(reg.locks, MAIN_THREAD_CPU)
      .stats()
      .map((l) => ({ ...l, name: vm.lockScope + l.name }));
    const fqs = reg.domains.flatMap((d) => (d.flushQueue ? [FlushQueue.stats(d.flushQueue)] : []));
    return assembleRunResult({
      jobs: vo.jobs,
      jobOptions: opts.jobOptions,
      globalOptions: opts.globalOptions,
      strategy: vo.strategy,
      untrusted: vm.devices.some((d) => d.untrusted),
      clock: opts.clock,
      transport: opts.transport ?? 'workers',
      driverGeneration: vo.driverGeneration,
      workers: out.workers,
      workerResults: out.results,
      vcpus: vm.vcpuWorkers.map((w) => out.results[w] as VcpuWorkerResult),
      // a VM's VMM threads, host contexts and drives, each kind added up; bare metal has neither VMM nor VFIO
      vmm: vm.viommus.length > 0 ? sumDeep(vm.viommus.map((x) => out.results[x.vmm] as VmmWorkerResult)) : NO_VMM,
      host: vm.viommus.length > 0 ? hostResult(vm, out.results, reg, regions.hostLocks, opts.profile) : NO_VFIO,
      device: sumDeep(vm.devices.map((d) => out.results[d.worker] as DeviceWorkerResult)),
      // the host-wide locks once, after the VMs' own
      lockStats: k === plan.vms.length - 1 ? [...vmLocks, ...hostLockStats] : vmLocks,
      flushQueue: fqs.length > 0 ? sumDeep(fqs) : null,
      iovaPagesAllocated: reg.domains.reduce((s, d) => s + IovaDomain.stats(d.iovaDomain).allocatedPages, 0),
      startedMs,
      wallMs,
      hostCpuThreads: opts.profile.hostCpuThreadsCount,
      topology: opts.topology,
      componentWallNs: opts.timeComponents ? (out.componentWallNs ?? workerBusyNs(vm, out.results)) : undefined,
    });
  });
  return mergeVmResults(
    results,
    plan.vms.map((vm) => ({ id: vm.id, jobs: vm.jobOfVcpu })),
  );
}

/** Each kind of a VM's workers: their threads' busy wall ns (run less parked, spinning included). */
function workerBusyNs(vm: VmPlan, results: readonly unknown[]): ComponentWallNs {
  const busy = (w: number) => {
    const waits = (results[w] as { waits?: { parkedNs: number; runNs: number } }).waits;
    return waits ? waits.runNs - waits.parkedNs : 0;
  };
  const sum = (ws: number[]) => ws.reduce((s, w) => s + busy(w), 0);
  return {
    guest: sum(vm.vcpuWorkers),
    vmm: sum(vm.viommus.map((x) => x.vmm)),
    host: sum(vm.viommus.map((x) => x.host)),
    device: sum(vm.devices.map((d) => d.worker)),
  };
}

/** The workers of a one-VM, one-virtio-iommu, one-drive plan, for the in-thread transport; anything else is refused in one line. */
function inThreadWorkers(plan: StackPlan): InThreadWorkers {
  const vm = plan.vms[0];
  if (plan.vms.length !== 1 || vm.viommus.length !== 1 || vm.devices.length !== 1)
    throw new InputError('--transport', 'in-thread', 'one VM with one virtio-iommu and one drive: use --transport workers for this topology');
  return { vcpus: vm.vcpuWorkers, vmm: vm.viommus[0].vmm, host: vm.viommus[0].host, device: vm.devices[0].worker };
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
