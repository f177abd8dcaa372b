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
import { IommuContextEntry, IommuFaultLog, type IommuProt, IoPgtable, type IoPgtableHandle, PgtableJournal, SUPERPAGE_2M_BYTES } from '@vmstack/iommu-hw';
import {
  type DeviceAttackPlan,
  type DeviceAttackResult,
  type DeviceWorkerInit,
  type DeviceWorkerResult,
  NvmeMedia,
  plantAttackSecret,
} from '@vmstack/nvme-device';
import {
  allocateRpcChannel,
  allocateShared,
  type ClockMode,
  type ControlHandle,
  type CostProfile,
  captureSharedBuffers,
  DmaUnmapLog,
  defaultWatchdogMs,
  type FaultSpec,
  InputError,
  IOMMU_READ,
  IOMMU_WRITE,
  LockTable,
  type LockTableHandle,
  MAX_WORKERS,
  mergeCallTrees,
  NEVER_NS,
  Ring,
  type RingHandle,
  type RpcChannelHandles,
  RUN_STATE_BYTES,
  RunControl,
  type RunOutcome,
  releaseSharedBuffers,
  runWorkers,
  vmStateBytes,
  type WorkerSpec,
} from '@vmstack/shm';
import { DEFAULT_VMM_PATH, type VmmPath, type VmmWorkerInit, type VmmWorkerResult, vmmPathCosts } from '@vmstack/vmm';
import { checkFaultRoles } from '../faults.js';
import { assembleRunResult, mergeVmResults, sumDeep } from '../report/assemble.js';
import type { RunCarry, RunResult } from '../report/result.js';
import { type ViommuFaultsReport, viommuFaultsReport } from '../report/viommu-faults.js';
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
  /** how the VMM's virtio-iommu device reaches VFIO (@vmstack/vmm vmm-path.ts); default crosvm-2021 */
  vmm?: VmmPath;
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
  /** vfio_iommu_type1's dma_entry_limit module parameter (default 65535) */
  vfioDmaEntryLimit?: number;
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
  /** `vmstack attack`: every drive also attacks (nvme-device attack.ts) */
  attack?: StackAttackOptions;
  /** called every `statusIntervalMs` real ms while the workers run, with each job's completed I/Os and model clock (fio's status line) */
  onStatus?: (jobs: readonly JobStatus[]) => void;
  statusIntervalMs?: number;
  /**
   * Report each component's wall time (`model_speed.component_wall_ns`): with workers each
   * thread's busy time (run less parked), in one thread timers around each component's calls.
   */
  timeComponents?: boolean;
}

/** What the attacking devices do (nvme-device DeviceAttackPlan), and the secret planted in each VM's RAM. */
export interface StackAttackOptions {
  delaysNs: number[];
  sampleEvery: number;
  /** pages of planted secret bytes per VM: taken from the guest's page allocator before the run and held through it, never given to a device */
  secretPages: number;
  /** IOVA pages [0, scanPages) tried once; default: every page of guest RAM */
  scanPages?: number;
  scanAfterCommands: number;
  neighbourBytes: number;
}

/** One job while it runs: I/Os it completed (verify reads included) and its vCPU's model clock (NEVER_NS once it is done). */
export interface JobStatus {
  completedIos: number;
  clockNs: number;
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
  return { ...sumDeep(all), callTree: mergeCallTrees(all.map((x) => x.callTree)), stats: sumDeep(perContainer) };
}

/** A VM's VMM side as one result: its virtio-iommus' counters and profiles added up. */
function vmmResult(all: readonly VmmWorkerResult[]): VmmWorkerResult {
  return { ...sumDeep(all), callTree: mergeCallTrees(all.map((x) => x.callTree)) };
}

/** The VMM worker's costs on its path: the profile with the device's per-request costs, the kick's wake-up, and how an UNMAP reaches VFIO. */
function vmmInitCosts(p: CostProfile, path: VmmPath): Pick<VmmWorkerInit, 'costs' | 'kickWakeupNs' | 'vfioUnmap' | 'reportFaults'> {
  const { kickWakeupNs, costs, vfioUnmap, reportFaults } = vmmPathCosts(p, path);
  return { costs: { ...p, ...costs }, kickWakeupNs, vfioUnmap, reportFaults };
}

/** What a bare-metal run reports for the VMM and VFIO it does not have: nothing happened there. */
const NO_VMM: VmmWorkerResult = {
  counters: { attach: 0, detach: 0, map: 0, unmap: 0, probe: 0, errors: 0, vfioMapDma: 0, vfioUnmapDma: 0, kicks: 0, vfioNoResources: 0 },
  profile: {},
  callTree: [],
  mappingsLeft: 0,
  clockNs: 0,
};
const NO_VFIO: HostWorkerResult = {
  stats: { mapDmaCalls: 0, unmapDmaCalls: 0, pinnedPages: 0, pinnedPagesPeak: 0, lockedVmPages: 0, dmaCount: 0, iotlbInvalidations: 0 },
  profile: {},
  callTree: [],
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
  /** `vmstack attack`: per vCPU, its DMA map log; the host pages of the planted secret */
  attack: { logs: SharedArrayBuffer[]; secretPfns: number[] } | null;
  /** per drive behind a virtio-iommu: the host IOMMU's record of its faults (iommu-hw IommuFaultLog); null on bare metal */
  faultLogs: (SharedArrayBuffer | null)[];
  /** per drive behind a virtio-iommu: its context entry in the host IOMMU (iommu-hw IommuContextEntry); null on bare metal */
  contexts: (SharedArrayBuffer | null)[];
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
function allocateStackRegions(plan: StackPlan, p: CostProfile, attack?: StackAttackOptions & { logEntries: number }): StackRegions {
  const control = RunControl.allocate();
  const ctl = RunControl.attach(control);
  const ringList: { name: string; handle: RingHandle }[] = [];
  const vms = plan.vms.map((vm): VmRegions => {
    const r = vm.regions;
    const guestRam = allocateShared(r.guestRamBytes);
    const vmState = allocateShared(vmStateBytes(r.vmStateVcpus));
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
    const attackRegions = attack ? allocateAttackRegions(vm, guestRam, pageAlloc, locks, attack) : null;
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
        VfioContainer.allocate({
          guestRamBytes: r.guestRamBytes,
          lockedVmLimitPages: vm.vfio.lockedVmLimitPages,
          dmaEntryLimit: vm.vfio.dmaEntryLimit,
          hostPageSizeBytes: vm.vfio.hostPageSizeBytes,
        }),
      ),
      pgtables: vm.containers.map((c) => {
        const h = withJournal(IoPgtable.allocate(c.pgtable), attack);
        // the VMM maps all guest RAM before the VM runs; the host charges the pinning on its own clock, which
        // the vCPUs do not wait for, so its journal entries come later in model time: the mapping is there from 0
        if (h.journal && c.identityMapBytes > 0) new PgtableJournal(h.journal).record(0, c.identityMapBytes, 0, IOMMU_READ | IOMMU_WRITE, 0);
        return h;
      }),
      domainPgtables: vm.devices.map((d) => {
        if (!d.vtd) return null;
        const h = withJournal(IoPgtable.allocate(d.vtd.pgtable), attack);
        // iommu=pt (the direct strategy): host memory one to one, set up at boot
        if (d.vtd.identityMapBytes > 0) IoPgtable.attach(h).map(0, 0, d.vtd.identityMapBytes, (IOMMU_READ | IOMMU_WRITE) as IommuProt);
        return h;
      }),
      vfioRpcs: vm.viommus.map((v) => allocateRpcChannel(v.vfioRpc.capacityRecords, ctl.eventRef(v.vfioRpc.server), ctl.eventRef(v.vfioRpc.client))),
      ring: (r) => handles.get(r)!,
      attack: attackRegions,
      faultLogs: vm.devices.map((d) => (d.vtd ? null : IommuFaultLog.allocate(d.endpointId, undefined, allocateShared))),
      contexts: vm.devices.map((d) => (d.vtd ? null : IommuContextEntry.allocate(allocateShared))),
    };
  });
  plan.workers.forEach((w, i) => ctl.publishEot(i, w.startEotNs));
  return { control, hostLocks: LockTable.allocate(plan.hostLocks), runState: allocateShared(RUN_STATE_BYTES), vms, ringList };
}

/**
 * `vmstack attack`: a DMA map log per vCPU, sized for every map and unmap its job
 * can make, and the secret: pages taken from the guest's page allocator (so the
 * guest never hands them out) and filled with the secret bytes.
 */
function allocateAttackRegions(
  vm: VmPlan,
  guestRam: SharedArrayBuffer,
  pageAlloc: PageAllocatorHandle,
  locks: LockTableHandle,
  attack: StackAttackOptions & { logEntries: number },
): { logs: SharedArrayBuffer[]; secretPfns: number[] } {
  const logs = vm.jobOfVcpu.map(() => DmaUnmapLog.allocate(attack.logEntries));
  const zone = PageAllocator.attach(pageAlloc, MAIN_THREAD_CPU, LockTable.attach(locks, MAIN_THREAD_CPU), { guestPageAllocNs: 0 });
  const u8 = new Uint8Array(guestRam);
  const secretPfns: number[] = [];
  for (let i = 0; i < attack.secretPages; i++) {
    const gpa = zone.alloc_pages(0);
    if (gpa < 0) throw new InputError('attack secret pages', attack.secretPages, `at most the guest's free pages (${i} here)`);
    plantAttackSecret(u8, gpa, 4096);
    secretPfns.push(gpa / 4096);
  }
  return { logs, secretPfns };
}

/** Attacking: the page table keeps a journal of its changes in model time, for the device's walks at earlier times. */
function withJournal(h: IoPgtableHandle, attack: { logEntries: number } | undefined): IoPgtableHandle {
  return attack ? { ...h, journal: PgtableJournal.allocate(attack.logEntries) } : h;
}

/**
 * Entries of each vCPU's DMA map log and of each page-table journal: a map and an unmap per
 * page of every I/O of every job (verify passes included), and room for set-up and teardown;
 * at most ATTACK_LOG_MAX (a time-based job has no bound): what does not fit is counted.
 */
function attackLogEntries(jobs: readonly FioJobSpec[]): number {
  const perJob = (j: FioJobSpec) => 2 * Math.ceil(j.sizeBytes / j.blockSizeBytes) * (j.verify === 'none' ? 1 : 2) * (j.blockSizeBytes / 4096 + 1);
  const n = jobs.reduce((s, j) => s + (j.timeBased ? ATTACK_LOG_MAX : perJob(j)), 4096);
  return Math.min(n, ATTACK_LOG_MAX);
}

const ATTACK_LOG_MAX = 1 << 20;

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
          viommuConfigGpa: x.layout.viommuConfigGpa,
          eventQueue: x.layout.eventQueue,
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
        ...(reg.attack ? { dmaUnmapLog: reg.attack.logs[v] } : {}),
      };
      inits[w] = init;
    });
    vm.viommus.forEach((x, vi) => {
      const container = vm.containers[x.container];
      const vmm: VmmWorkerInit = {
        ...common,
        rpcSpinLoads: o.vmmSpinLoads ?? vmmRpcSpinLoads(allVcpus.length, o.spinLoads),
        ...vmmInitCosts(p, o.vmm ?? DEFAULT_VMM_PATH),
        locks,
        deviceMutexName: x.mutexName,
        guestRam,
        vqLayout: x.layout.vqLayout,
        viommuConfigGpa: x.layout.viommuConfigGpa,
        viommuEndpointIds: x.endpointIds,
        kickRings: x.kick.map(reg.ring),
        usedRings: x.used.map(reg.ring),
        hostRpc: reg.vfioRpcs[vi],
        identityMapBytes: container.identityMapBytes,
        vmState,
        deviceWorkers: x.devices.map((i) => vm.devices[i].worker),
        eventQueue: x.layout.eventQueue?.layout ?? null,
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
        // a VMM that reports faults allocated a fault queue for the drives behind its virtio-iommu
        ...(vmm.reportFaults ? { faultLogs: x.devices.flatMap((i) => reg.faultLogs[i] ?? []) } : {}),
        groups: container.devices.flatMap((i, j) => {
          const context = reg.contexts[i];
          return context ? [{ endpointId: vm.devices[i].endpointId, context, invalRing: j }] : [];
        }),
      };
      inits[x.host] = host;
    });
    vm.devices.forEach((d) => {
      const jobs = d.ioVcpus.map((v) => vo.jobs[v]);
      const init: DeviceWorkerInit = {
        ...common,
        costs: p,
        guestRam,
        pgtable: d.vtd ? reg.domainPgtables[vm.devices.indexOf(d)]! : reg.pgtables[d.container],
        doorbellRings: d.doorbell.map(reg.ring),
        irqRings: d.irq.map(reg.ring),
        invalRings: d.inval.map(reg.ring),
        ...(reg.faultLogs[vm.devices.indexOf(d)] ? { faultLog: reg.faultLogs[vm.devices.indexOf(d)]! } : {}),
        ...(reg.contexts[vm.devices.indexOf(d)] ? { context: reg.contexts[vm.devices.indexOf(d)]! } : {}),
        vcpuWorkers: d.vcpus.map((v) => vm.vcpuWorkers[v]),
        vcpuOfCq: d.vcpuOfCq,
        namespace: {
          sizeBlocks: Math.max(0, ...jobs.map((j) => (j.offsetBytes + j.sizeBytes) / NVME_LBA_SIZE_BYTES), ...carried.map(([lba]) => lba + 1)) + 1024,
          seed: NS_PREFILL_SEED,
          initialBlocks: o.carry?.namespaceBlocks,
          exportBlocks: o.exportNamespace,
        },
        ...(o.attack && reg.attack ? { attack: deviceAttackPlan(o.attack, reg.attack, d.ioVcpus, vm.regions.guestRamBytes, d.layout) } : {}),
      };
      inits[d.worker] = init;
    });
  });
  return plan.workers.map((w, i) => ({ role: w.role, entry: w.entry, init: inits[i] }));
}

/** The attack plan of one drive: the logs of the vCPUs doing I/O to it. */
function deviceAttackPlan(
  o: StackAttackOptions,
  r: { logs: SharedArrayBuffer[]; secretPfns: number[] },
  ioVcpus: readonly number[],
  guestRamBytes: number,
  layout: { coherentGpa: number; coherentBytes: number },
): DeviceAttackPlan {
  const coherentPfns: number[] = [];
  for (let a = layout.coherentGpa; a < layout.coherentGpa + layout.coherentBytes; a += 4096) coherentPfns.push(Math.floor(a / 4096));
  return {
    unmapLogs: ioVcpus.map((v) => r.logs[v]),
    delaysNs: o.delaysNs,
    sampleEvery: o.sampleEvery,
    secretPfns: r.secretPfns,
    coherentPfns,
    scanPages: o.scanPages ?? guestRamBytes / 4096,
    scanAfterCommands: o.scanAfterCommands,
    neighbourBytes: o.neighbourBytes,
  };
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
  // the jobs' progress as their vCPUs publish it: completions counted (noteProgress) and the model clock
  const onStatus = o.onStatus;
  const vcpuWorkers = plan.vms.flatMap((vm) => vm.vcpuWorkers);
  const status = onStatus
    ? setInterval(() => onStatus(vcpuWorkers.map((w) => ({ completedIos: ctl.progress(w), clockNs: ctl.clockNs(w) }))), o.statusIntervalMs ?? 1000)
    : undefined;
  return (
    o.transport === 'in-thread'
      ? Promise.resolve().then(() => runInThread(specs, control, inThreadWorkers(plan), o.timeComponents, o.faults))
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
  )
    .catch((e: unknown) => {
      if (e instanceof Error && /did not finish/.test(e.message)) {
        const ns = (x: number) => (x >= NEVER_NS ? 'never' : String(x));
        const state = specs.map((sp, w) => `${sp.role}: clock ${ns(ctl.clockNs(w))} eot ${ns(ctl.eotNs(w))} waitFor ${ns(ctl.waitForNs(w))}`);
        const rings = regions.ringList.map((r) => `${r.name} ${Ring.attach(r.handle).inFlight()}`);
        e.message += `\n  ${state.join('\n  ')}\n  rings in flight: ${rings.join(', ')}`;
      }
      throw e;
    })
    .finally(() => clearInterval(status));
}

export async function runStack(opts: StackOptions): Promise<RunResult> {
  const plan = planStack(opts.topology ?? defaultTopology(opts.jobs, opts), {
    jobs: opts.jobs,
    profile: opts.profile,
    alwaysBounceLimitBytes: opts.alwaysBounceLimitBytes,
    slotsPerClass: opts.slotsPerClass,
    // huge-page guests run on hugetlbfs-backed RAM: the host IOMMU may map it with 2 MiB leaves
    hostPageSizeBytes: opts.bufferContiguity === 'huge' ? SUPERPAGE_2M_BYTES : undefined,
    dmaEntryLimit: opts.vfioDmaEntryLimit,
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
  if (opts.attack && opts.transport === 'in-thread') throw new InputError('--transport', 'in-thread', 'workers: an attack runs the device in its own worker');
  // with worker reuse on, the regions are an earlier run's of the same sizes, zeroed (shm shared-pool.ts)
  const { value: regions, buffers } = captureSharedBuffers(() =>
    allocateStackRegions(plan, opts.profile, opts.attack ? { ...opts.attack, logEntries: attackLogEntries(opts.jobs) } : undefined),
  );
  try {
    return await runAllocatedStack(plan, regions, vmOptions, opts);
  } finally {
    // every worker has finished or been terminated; nothing below keeps a view of the regions
    releaseSharedBuffers(buffers);
  }
}

async function runAllocatedStack(plan: StackPlan, regions: StackRegions, vmOptions: VmRunOptions[], opts: StackOptions): Promise<RunResult> {
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
      vmm: vm.viommus.length > 0 ? vmmResult(vm.viommus.map((x) => out.results[x.vmm] as VmmWorkerResult)) : NO_VMM,
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
      viommuFaults: vm.viommus.length > 0 ? vmViommuFaults(vm, reg, out.results, opts.vmm ?? DEFAULT_VMM_PATH) : undefined,
    });
  });
  const merged = mergeVmResults(
    results,
    plan.vms.map((vm) => ({ id: vm.id, jobs: vm.jobOfVcpu })),
  );
  if (opts.attack) {
    const attacks = plan.vms.flatMap((vm) => vm.devices.map((d) => (out.results[d.worker] as DeviceWorkerResult).attack!));
    merged.attack = attacks.length === 1 ? attacks[0] : mergeAttackResults(attacks);
  }
  return merged;
}

/** A VM's drives' faults: the host IOMMU's records (read here, after the run), its VMM threads' reports, what vCPU 0's driver read. */
function vmViommuFaults(vm: VmPlan, reg: VmRegions, results: readonly unknown[], path: VmmPath): ViommuFaultsReport {
  const logs = reg.faultLogs.flatMap((l) => (l ? [new IommuFaultLog(l).stats()] : []));
  const vmms = vm.viommus.flatMap((x) => (results[x.vmm] as VmmWorkerResult).faults ?? []);
  const vcpu0 = results[vm.vcpuWorkers[0]] as VcpuWorkerResult;
  return viommuFaultsReport(
    vmmPathCosts({ hostThreadWakeupNs: 0, seccompFilterNs: 0, vmmViommuRequestNs: 0, vfioIoctlSyscallNs: 0 }, path).reportFaults,
    logs,
    vmms.length > 0 ? sumDeep(vmms) : undefined,
    vcpu0.viommuFaults,
  );
}

/** Several drives' attack results as one: counts added up, windows side by side. */
function mergeAttackResults(all: DeviceAttackResult[]): DeviceAttackResult {
  const sum = sumDeep(all.map((a) => ({ kinds: a.kinds, unmapsProbed: a.unmapsProbed, remapped: a.remapped, droppedLogEntries: a.droppedLogEntries })));
  return { ...sum, staleWindowsNs: all.flatMap((a) => a.staleWindowsNs), delaysNs: all[0].delaysNs };
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
