/**
 * The planner: a Topology and the run's jobs in, everything a run wires up
 * out, as data — which workers run (in worker-index order), the shared
 * regions to allocate and their sizes, which ring connects which workers, the
 * ids the guest uses for its device and the EOT each worker starts with.
 * runStack allocates what the plan describes and builds the workers' init
 * from it; worker indices, domain and endpoint ids, IOVA limits and ring
 * capacities come from here only.
 *
 * The workers run several VMs on one host, each with one virtio-iommu, one
 * passed-through NVMe drive (a controller of its own) in one VFIO container
 * and one fio job per vCPU; the host's IOMMU units are shared as the
 * topology says. A valid topology of another shape is refused with an
 * InputError naming the field.
 */

import {
  BouncePool,
  type DmaStrategy,
  type FioJobSpec,
  GUEST_VCPU_WORKER,
  IO_TLB_DEFAULT_SIZE_BYTES,
  IOVA_MAG_SIZE,
  IOVA_RANGE_CACHE_MAX_SIZE,
  jobNvmeCommandSlots,
  MAX_GLOBAL_MAGS,
  PAGE_CACHE_MAX_REQUEST_PAGES,
  PAGE_CACHE_MAX_REQUESTS,
  VIOMMU_REQUEST_LOCK,
  type ViommuDriverGeneration,
} from '@vmstack/guest-kernel';
import { DEFAULT_DMA_ENTRY_LIMIT, HOST_VFIO_WORKER, IOMMU_LOCK, MMAP_LOCK, QI_Q_LOCK } from '@vmstack/host-vfio';
import { NVME_DEVICE_WORKER } from '@vmstack/nvme-device';
import { type CostProfile, InputError, type LockKind, MAX_WORKERS, NEVER_NS, PAGE_SHIFT, PAGE_SIZE_BYTES } from '@vmstack/shm';
import { VIOMMU_DEVICE_MUTEX, VMM_WORKER } from '@vmstack/vmm';
import { type DeviceLayout, type GuestLayout, type GuestLayoutRequest, NVME_QUEUE_ENTRIES, planGuestLayout, type ViommuLayout } from '../stack/guest-layout.js';
import { type OsTopology, type Platform, type Topology, type VmTopology, validateTopology } from './topology.js';
import { topologyWorkers } from './workers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** The virtio-iommu's input range: 48-bit IOVAs (VT-d 4-level second-level tables), as a last page frame. */
const VIOMMU_INPUT_RANGE_BITS = 48;
const VIOMMU_IOVA_LIMIT_PFN = 2 ** (VIOMMU_INPUT_RANGE_BITS - PAGE_SHIFT) - 1;
/** The IOVA allocator starts at PFN 1: IOVA 0 is never handed out. */
const IOVA_START_PFN = 1;
/** rbtree nodes beyond the rcaches and the I/Os in flight: reserved ranges and per-segment maps */
const IOVA_SPARE_ALLOCATIONS = 4096;
/** The pool's IOVA range is reserved up front, at 4 GiB, and carved into slots. */
const BOUNCE_POOL_IOVA_BASE = 4 * 1024 * MiB;
/** The host IOMMU's page-table pool (tables of 4 KiB, root included). */
const HOST_PGTABLE_POOL_PAGES = 16384;
/** Ring capacities, in records: NVMe doorbells and interrupts, virtio-iommu kicks and used notifications, IOTLB invalidations, VFIO calls. */
const DOORBELL_RING_RECORDS = 4096;
const IRQ_RING_RECORDS = 4096;
const KICK_RING_RECORDS = 64;
const USED_RING_RECORDS = 64;
const INVAL_RING_RECORDS = 4096;
const VFIO_RPC_RECORDS = 64;
/** The NVMe driver's dma_set_min_align_mask(NVME_CTRL_PAGE_SIZE - 1): swiotlb keeps the offset within a page. */
const NVME_MIN_ALIGN_MASK = PAGE_SIZE_BYTES - 1;
/** Worker slots of a VM besides its vCPUs: the VMM and the host kernel context of its ioctls. */
const NON_DEVICE_WORKERS_PER_VM = 2;
/** Worker slots of a one-VM run besides the vCPUs: the VMM, the host kernel and the device. */
export const NON_VCPU_WORKERS = NON_DEVICE_WORKERS_PER_VM + 1;

export type WorkerKind = 'vcpu' | 'vmm' | 'host' | 'device';

export interface PlannedWorker {
  role: string;
  kind: WorkerKind;
  entry: URL;
  /** the start value of the worker's earliest output time: 0 for those that start on their own, NEVER for servers that only answer */
  startEotNs: number;
}

/** A single-producer/single-consumer ring between two workers; the consumer is woken on publish. */
export interface PlannedRing {
  name: string;
  capacityRecords: number;
  producer: number;
  consumer: number;
}

export interface StackPlanOptions {
  /** the run's jobs, in job-list order (as the topology's job indices count them) */
  jobs: readonly FioJobSpec[];
  profile: CostProfile;
  /** the pool's always_bounce_limit (undefined: the pool's default) */
  alwaysBounceLimitBytes?: number;
  /** the pool's slots per size class (undefined: the pool's default) */
  slotsPerClass?: number;
  /** the host pages backing each VM's RAM (VfioContainer hostPageSizeBytes; default 4096) */
  hostPageSizeBytes?: number;
  /** vfio_iommu_type1's dma_entry_limit (default 65535) */
  dmaEntryLimit?: number;
}

/** A virtio-iommu of a VM: its VMM thread, the host kernel context of that thread, its request queue and rings. */
export interface ViommuPlan {
  id: string;
  /** the endpoints of the drives behind it (the only endpoints ATTACH, DETACH and PROBE accept) */
  endpointIds: number[];
  /** its `viommu->request_lock` and `viommu_dev->mutex` in the VM's lock table */
  requestLockName: string;
  mutexName: string;
  /** worker of its VMM thread, and of that thread's host kernel context */
  vmm: number;
  host: number;
  /** index in VmPlan.containers of the VFIO container its drives' DMA is mapped in */
  container: number;
  /** indices in VmPlan.devices of the drives behind it */
  devices: number[];
  layout: ViommuLayout;
  /** the vCPUs that send it requests (vCPU 0, which brings every drive up, and those whose job's drive is behind it), in vCPU order */
  vcpus: number[];
  /** per entry of `vcpus`: vCPU → VMM (virtqueue notify), VMM → vCPU (used-buffer notification) */
  kick: PlannedRing[];
  used: PlannedRing[];
  /** VMM thread → host kernel context: VFIO calls */
  vfioRpc: { capacityRecords: number; server: number; client: number };
}

/** A passed-through drive of a VM: its controller's worker, domain, coherent memory and rings. */
export interface DevicePlan {
  id: string;
  /** the physical controller passed through */
  controller: string;
  /** its device worker */
  worker: number;
  /** indices in VmPlan.viommus and VmPlan.containers */
  viommu: number;
  container: number;
  untrusted: boolean;
  domainId: number;
  endpointId: number;
  /** NVMe I/O queue entries */
  queueDepth: number;
  /** the vCPUs with rings to the drive (vCPU 0 first, which brings it up; then those whose job uses it), in vCPU order */
  vcpus: number[];
  /** the vCPUs whose job uses the drive, in vCPU order: I/O queue q + 1 is ioVcpus[q]'s */
  ioVcpus: number[];
  /** which entry of `vcpus` owns completion queue i (0: the admin queue) */
  vcpuOfCq: number[];
  layout: DeviceLayout;
  /** the drive's IOMMU domain: its IOVA allocator (the window it allocates from), flush queue and pool */
  iovaDomain: { startPfn: number; limitPfn: number; cpus: number; maxAllocations: number; reservedPfns: [number, number][]; lockSuffix: string };
  flushQueue: { cpus: number; entriesCount: number; timeoutNs: number; lockSuffix: string } | null;
  bouncePool: { iovaBase: number; evictionPeriodNs: number; alwaysBounceLimitBytes?: number; slotsPerClass?: number; lockSuffix: string } | null;
  /** per entry of `vcpus`: vCPU → device (doorbells), device → vCPU (MSI-X) */
  doorbell: PlannedRing[];
  irq: PlannedRing[];
  /** IOTLB invalidations to the device: from each host kernel context serving the container (VM), or from the CPUs under the unit's qi->q_lock (bare metal) */
  inval: PlannedRing[];
  /** bare metal: the drive's VT-d domain, which the kernel's dma-iommu drives itself; null in a VM */
  vtd: { pgtable: { tablePages: number }; qiLockName: string; identityMapBytes: number } | null;
}

/** A VFIO container of a VM's VMM process. */
export interface ContainerPlan {
  id: string;
  /** its `iommu->lock` in the host lock table */
  lockName: string;
  /** the host kernel contexts (workers) serving its ioctls: one per virtio-iommu whose drives it maps for */
  hosts: number[];
  /** indices in VmPlan.devices of the drives it maps for */
  devices: number[];
  /** the host IOMMU unit translating for its drives, and that unit's `qi->q_lock` in the host lock table */
  hostIommu: { id: string; qiLockName: string };
  pgtable: { tablePages: number };
  /** without a vIOMMU the VMM maps all guest RAM into it at start (IOVA = GPA) */
  identityMapBytes: number;
}

/** One VM's part of the plan: its workers, regions, rings and ids. */
export interface VmPlan {
  id: string;
  /**
   * Prefix of the VM's lock names in the report (`vm1:`), empty when the run
   * has one VM. Each VM has a lock table of its own (guest and VMM locks),
   * so the names inside it are the kernel's.
   */
  lockScope: string;
  ramBytes: number;
  strategy: DmaStrategy;
  driverGeneration: ViommuDriverGeneration;
  /** the run-wide job index each vCPU runs, in vCPU order */
  jobOfVcpu: number[];
  /** bare metal: the host OS itself (no VMM, no virtio-iommu, no VFIO) */
  bareMetal: boolean;
  /** index in `devices` of the drive each vCPU's job uses, in vCPU order */
  deviceOfVcpu: number[];
  /** vCPU v's worker, in vCPU order */
  vcpuWorkers: number[];
  viommus: ViommuPlan[];
  devices: DevicePlan[];
  containers: ContainerPlan[];
  /** the VMM process's `mmap_lock` in the host lock table */
  mmapLockName: string;
  regions: {
    guestRamBytes: number;
    /** vCPUs whose end times the VM state holds */
    vmStateVcpus: number;
    guestLayout: GuestLayout;
    pageAlloc: { ramBytes: number; heapStartBytes: number };
    swiotlb: { areaGpa: number; sizeBytes: number; minAlignMask: number } | null;
  };
  vfio: { lockedVmLimitPages: number; dmaEntryLimit: number; hostPageSizeBytes: number };
}

export interface StackPlan {
  platform: Platform;
  /** the VMs, in topology order */
  vms: VmPlan[];
  /** every worker, in worker-index order (topology/workers.ts): VM by VM its vCPUs, VMM threads and their host kernel contexts; then a device per controller */
  workers: PlannedWorker[];
  /**
   * The host-wide lock table: each VFIO container's `iommu->lock`, each
   * host IOMMU unit's `qi->q_lock` and each VMM process's `mmap_lock` (one
   * per VM). An instance name carries `/<id>` only when the run has several
   * instances of its class.
   */
  hostLocks: { name: string; kind: LockKind }[];
}

/** Whether the guest preallocates the swiotlb area: untrusted devices mapped by dma-iommu without the pool. */
export function needsSwiotlb(o: { strategy: DmaStrategy; untrusted: boolean }): boolean {
  return o.untrusted && o.strategy !== 'bounce' && o.strategy !== 'direct';
}

/** What guest RAM must hold below the heap for these jobs in the default shape: one virtio-iommu, one drive, one job per vCPU. */
export function guestLayoutRequest(jobs: readonly FioJobSpec[], o: { strategy: DmaStrategy; untrusted: boolean }): GuestLayoutRequest {
  return { viommus: 1, devices: [{ ioQueues: jobs.length, prpPagesPerQueue: Math.max(...jobs.map((j) => jobNvmeCommandSlots(j))) }], swiotlb: needsSwiotlb(o) };
}

/** IOVA windows of the domains sharing one container: 2^44 bytes each, as page frames (16 fit in the 48-bit input range). */
const SHARED_CONTAINER_WINDOW_PFNS = 2 ** (44 - PAGE_SHIFT);
const MAX_CONTAINER_DOMAINS = 2 ** (VIOMMU_INPUT_RANGE_BITS - 44);

export function planStack(topology: Topology, o: StackPlanOptions): StackPlan {
  validateTopology(topology, o.jobs.length);
  const planned = topologyWorkers(topology);
  if (planned.length > MAX_WORKERS - 1)
    throw new InputError(
      'topology.vms',
      `${planned.length} workers`,
      `at most ${MAX_WORKERS - 1} workers in all (per VM one per vCPU, one VMM thread and one host kernel context per virtio-iommu; one per controller)`,
    );
  const workerOf = new Map(planned.map((w, i) => [`${w.kind}:${w.vm ?? ''}:${w.of}`, i]));
  const worker = (kind: WorkerKind, vm: string | undefined, of: string) => workerOf.get(`${kind}:${vm ?? ''}:${of}`)!;
  const several = topology.vms.length > 1;
  const unitOf = new Map(topology.hostIommus.flatMap((u) => u.controllers.map((c) => [c, u.id] as const)));
  const qualify = (cls: string, id: string, instances: number) => (instances > 1 ? `${cls}/${id}` : cls);
  const containerCount = (topology.vms as OsTopology[]).reduce((s, vm) => s + vm.containers.length, 0);
  const units = topology.hostIommus.map((u) => u.id);
  const vms = (topology.vms as OsTopology[]).map((vm, k) =>
    planVm(vm, topology.platform === 'bare-metal', k, o, {
      lockScope: several ? `${vm.id}:` : '',
      ringScope: several ? `${vm.id}:` : '',
      containerLock: (c: string) => qualify(IOMMU_LOCK, c, containerCount),
      unitOf: (controller: string) => unitOf.get(controller)!,
      qiLock: (unit: string) => qualify(QI_Q_LOCK, unit, units.length),
      mmapLock: qualify(MMAP_LOCK, vm.id, topology.vms.length),
      worker,
    }),
  );
  const entries: Record<WorkerKind, URL> = { vcpu: GUEST_VCPU_WORKER, vmm: VMM_WORKER, host: HOST_VFIO_WORKER, device: NVME_DEVICE_WORKER };
  return {
    platform: topology.platform,
    vms,
    workers: planned.map((w) => ({
      role: w.role,
      kind: w.kind,
      entry: entries[w.kind],
      // the vCPUs and the devices start on their own; the VMM threads and host contexts only answer
      startEotNs: w.kind === 'vmm' || w.kind === 'host' ? NEVER_NS : 0,
    })),
    hostLocks: [
      ...(topology.vms as OsTopology[]).flatMap((vm) =>
        vm.containers.map((c) => ({ name: qualify(IOMMU_LOCK, c.id, containerCount), kind: 'mutex' as const })),
      ),
      ...units.map((u) => ({ name: qualify(QI_Q_LOCK, u, units.length), kind: 'spinlock' as const })),
      // a VMM process per VM, each with its address space's mmap_lock (bare metal has no VMM)
      ...(topology.platform === 'vm' ? topology.vms.map((vm) => ({ name: qualify(MMAP_LOCK, vm.id, topology.vms.length), kind: 'rwsem' as const })) : []),
    ],
  };
}

interface VmNames {
  lockScope: string;
  ringScope: string;
  containerLock: (container: string) => string;
  unitOf: (controller: string) => string;
  qiLock: (unit: string) => string;
  /** the VMM process's `mmap_lock` in the host lock table */
  mmapLock: string;
  worker: (kind: WorkerKind, vm: string | undefined, of: string) => number;
}

/**
 * One VM's plan — or, on bare metal, the host OS's: its CPUs run the jobs,
 * and each drive's domain is a VT-d domain the kernel maps itself (no
 * virtio-iommu, no VMM thread, no VFIO container).
 */
function planVm(os: OsTopology, bareMetal: boolean, k: number, o: StackPlanOptions, names: VmNames): VmPlan {
  const at = `topology.vms[${k}]`;
  const p = o.profile;
  const strategy = os.strategy;
  // a drive of the host OS is in a domain of its own; its "endpoint" is its PCI requester id, as the builder numbers them
  const vm: VmTopology = bareMetal
    ? {
        ...os,
        viommus: [],
        containers: [],
        devices: os.devices.map((d, i) => ({ ...d, viommu: '', container: '', endpointId: (i + 1) << 8, domainId: i + 1 })),
      }
    : (os as VmTopology);
  const vcpuWorkers = vm.vcpus.map((c) => names.worker('vcpu', vm.id, bareMetal ? `cpu${c.id}` : `vcpu${c.id}`));
  const vcpus = vm.vcpus.length;
  if (vm.devices.length === 0) throw new InputError(`${at}.devices`, [], 'at least 1 passed-through drive: the jobs do I/O to one');
  const deviceIndex = new Map(vm.devices.map((d, i) => [d.id, i]));
  const viommuIndex = new Map(vm.viommus.map((v, i) => [v.id, i]));
  const containerIndex = new Map(vm.containers.map((c, i) => [c.id, i]));
  const placements = vm.vcpus.map((c) => {
    const on = vm.jobs.filter((pl) => pl.vcpu === c.id);
    if (on.length !== 1)
      throw new InputError(
        `${at}.vcpus[${c.id}]`,
        on.map((pl) => pl.job),
        'exactly 1 job on each vCPU: a vCPU worker runs one fio job for now',
      );
    return on[0];
  });
  const jobOfVcpu = placements.map((pl) => pl.job);
  const deviceOfVcpu = placements.map((pl) => (pl.device === undefined ? 0 : deviceIndex.get(pl.device)!));

  // each virtio-iommu's drives in one container: its VMM thread's host context serves that container
  const containerOfViommu = new Map<number, number>();
  // a container several virtio-iommus' drives share is served by each of their VMM threads' host contexts (shared memory, one iommu->lock)
  const viommusOfContainer = new Map<number, number[]>();
  vm.devices.forEach((d, i) => {
    if (bareMetal) return;
    const vi = viommuIndex.get(d.viommu)!;
    const ci = containerIndex.get(d.container)!;
    if ((containerOfViommu.get(vi) ?? ci) !== ci)
      throw new InputError(
        `${at}.devices[${i}].container`,
        d.container,
        `${vm.containers[containerOfViommu.get(vi)!].id}: the drives behind one virtio-iommu share its VFIO container for now`,
      );
    containerOfViommu.set(vi, ci);
    viommusOfContainer.set(ci, [...new Set([...(viommusOfContainer.get(ci) ?? []), vi])]);
  });
  vm.viommus.forEach((v, i) => {
    if (!containerOfViommu.has(i)) throw new InputError(`${at}.viommus[${i}]`, v.id, 'a virtio-iommu with at least 1 drive behind it');
  });
  const unitOfContainer = new Map<number, string>();
  vm.devices.forEach((d, i) => {
    if (bareMetal) return;
    const ci = containerIndex.get(d.container)!;
    const unit = names.unitOf(d.controller);
    if ((unitOfContainer.get(ci) ?? unit) !== unit)
      throw new InputError(
        `${at}.devices[${i}].controller`,
        d.controller,
        `a controller behind ${unitOfContainer.get(ci)}, as the other drives of ${d.container}: a container's host domain is on one IOMMU unit for now`,
      );
    unitOfContainer.set(ci, unit);
  });

  // vCPU 0 brings every drive up: it has rings to each; the others to their job's drive only
  const vcpusOfDevice = vm.devices.map((_, i) => vm.vcpus.map((_c, v) => v).filter((v) => v === 0 || deviceOfVcpu[v] === i));
  const ioVcpusOfDevice = vm.devices.map((_, i) => vm.vcpus.map((_c, v) => v).filter((v) => deviceOfVcpu[v] === i));
  const devicesOfViommu = vm.viommus.map((_, vi) => vm.devices.map((_d, i) => i).filter((i) => viommuIndex.get(vm.devices[i].viommu) === vi));
  const vcpusOfViommu = devicesOfViommu.map((ds) => vm.vcpus.map((_c, v) => v).filter((v) => v === 0 || ds.includes(deviceOfVcpu[v])));
  const jobsOn = (i: number) => ioVcpusOfDevice[i].map((v) => o.jobs[jobOfVcpu[v]]);
  const untrustedAny = vm.devices.some((d) => d.untrusted);

  const guestLayout = planGuestLayout({
    viommus: vm.viommus.length,
    devices: vm.devices.map((_, i) => ({
      ioQueues: ioVcpusOfDevice[i].length,
      prpPagesPerQueue: Math.max(0, ...jobsOn(i).map((j) => jobNvmeCommandSlots(j))),
    })),
    swiotlb: needsSwiotlb({ strategy, untrusted: untrustedAny }),
  });
  const { heapStartBytes } = guestLayout;
  if (heapStartBytes >= vm.ramBytes)
    throw new InputError(
      '--guest-ram',
      vm.ramBytes,
      `more than ${heapStartBytes} bytes: queues, rings${guestLayout.swiotlbGpa !== null ? ' and the 64 MiB swiotlb area' : ''} take that much before any I/O buffer`,
    );

  const ring = (name: string, capacityRecords: number, producer: number, consumer: number): PlannedRing => ({
    name: names.ringScope + name,
    capacityRecords,
    producer,
    consumer,
  });
  const devSuffix = (i: number) => (vm.devices.length > 1 ? `/${vm.devices[i].id}` : '');
  const viommuSuffix = (i: number) => (vm.viommus.length > 1 ? `/${vm.viommus[i].id}` : '');

  const viommus = vm.viommus.map((v, vi): ViommuPlan => {
    const vmm = names.worker('vmm', vm.id, v.id);
    const host = names.worker('host', vm.id, v.id);
    return {
      id: v.id,
      endpointIds: devicesOfViommu[vi].map((i) => vm.devices[i].endpointId),
      requestLockName: VIOMMU_REQUEST_LOCK + viommuSuffix(vi),
      mutexName: VIOMMU_DEVICE_MUTEX + viommuSuffix(vi),
      vmm,
      host,
      container: containerOfViommu.get(vi)!,
      devices: devicesOfViommu[vi],
      layout: guestLayout.viommus[vi],
      vcpus: vcpusOfViommu[vi],
      kick: vcpusOfViommu[vi].map((c) => ring(`kick${c}${viommuSuffix(vi)}`, KICK_RING_RECORDS, vcpuWorkers[c], vmm)),
      used: vcpusOfViommu[vi].map((c) => ring(`used${c}${viommuSuffix(vi)}`, USED_RING_RECORDS, vmm, vcpuWorkers[c])),
      vfioRpc: { capacityRecords: VFIO_RPC_RECORDS, server: host, client: vmm },
    };
  });

  const containerDevices = vm.containers.map((_, ci) => vm.devices.map((_d, i) => i).filter((i) => containerIndex.get(vm.devices[i].container) === ci));
  const devices = vm.devices.map((d, i): DevicePlan => {
    const worker = names.worker('device', undefined, d.controller);
    const ci = bareMetal ? -1 : containerIndex.get(d.container)!;
    const vi = bareMetal ? -1 : viommuIndex.get(d.viommu)!;
    const jobs = jobsOn(i);
    // a container shared by several domains has one IOVA space: each domain allocates from a window of its own
    const sharers = bareMetal ? [i] : containerDevices[ci];
    if (sharers.length > MAX_CONTAINER_DOMAINS)
      throw new InputError(
        `${at}.devices[${i}].container`,
        d.container,
        `a container at most ${MAX_CONTAINER_DOMAINS} drives share: each domain in it allocates from a 2^44-byte window of the 48-bit IOVA space`,
      );
    const w = sharers.length > 1 ? sharers.indexOf(i) : 0;
    const windowStartPfn = w * SHARED_CONTAINER_WINDOW_PFNS;
    const limitPfn = sharers.length > 1 ? (w + 1) * SHARED_CONTAINER_WINDOW_PFNS - 1 : VIOMMU_IOVA_LIMIT_PFN;
    const untrusted = d.untrusted;
    // rbtree nodes: what the rcaches can hold (size classes × (2 magazines per CPU + the depot) × magazine size)
    // plus every I/O in flight (an untrusted device maps each page on its own), plus spare room
    // (a buffered job also maps its page cache's requests, up to 127 scattered pages each)
    const inFlight = jobs.reduce(
      (s, j) =>
        s +
        j.iodepth * (untrusted ? j.blockSizeBytes / PAGE_SIZE_BYTES : 1) +
        (j.direct ? 0 : PAGE_CACHE_MAX_REQUESTS * (untrusted ? PAGE_CACHE_MAX_REQUEST_PAGES : 1)),
      0,
    );
    const maxAllocations = IOVA_RANGE_CACHE_MAX_SIZE * (2 * vcpus + MAX_GLOBAL_MAGS) * IOVA_MAG_SIZE + inFlight + IOVA_SPARE_ALLOCATIONS;
    // the coherent regions are IOVA = GPA: the first window keeps its allocator away from them; the pool's range is reserved too
    const reservedPfns: [number, number][] = w === 0 ? [[IOVA_START_PFN, Math.ceil(heapStartBytes / PAGE_SIZE_BYTES)]] : [];
    const poolBase = windowStartPfn * PAGE_SIZE_BYTES + BOUNCE_POOL_IOVA_BASE;
    const bouncePool =
      strategy === 'bounce'
        ? {
            iovaBase: poolBase,
            evictionPeriodNs: p.bounceEvictionPeriodNs,
            alwaysBounceLimitBytes: o.alwaysBounceLimitBytes,
            slotsPerClass: o.slotsPerClass,
            lockSuffix: devSuffix(i),
          }
        : null;
    if (bouncePool)
      reservedPfns.push([poolBase / PAGE_SIZE_BYTES, (poolBase + BouncePool.iovaSpanBytes({ slotsPerClass: o.slotsPerClass })) / PAGE_SIZE_BYTES - 1]);
    const dv = vcpusOfDevice[i];
    return {
      id: d.id,
      controller: d.controller,
      worker,
      viommu: vi,
      container: ci,
      untrusted,
      domainId: d.domainId,
      endpointId: d.endpointId,
      queueDepth: NVME_QUEUE_ENTRIES,
      vcpus: dv,
      ioVcpus: ioVcpusOfDevice[i],
      // the admin queue's completions go to vCPU 0; I/O queue q + 1 is ioVcpus[q]'s
      vcpuOfCq: [0, ...ioVcpusOfDevice[i].map((v) => dv.indexOf(v))],
      layout: guestLayout.devices[i],
      iovaDomain: {
        startPfn: Math.max(IOVA_START_PFN, windowStartPfn),
        limitPfn,
        cpus: vcpus,
        maxAllocations,
        reservedPfns,
        lockSuffix: devSuffix(i),
      },
      flushQueue:
        strategy === 'lazy' ? { cpus: vcpus, entriesCount: p.lazyFlushQueueEntriesCount, timeoutNs: p.lazyFlushTimeoutNs, lockSuffix: devSuffix(i) } : null,
      bouncePool,
      doorbell: dv.map((c) => ring(`doorbell${c}${devSuffix(i)}`, DOORBELL_RING_RECORDS, vcpuWorkers[c], worker)),
      irq: dv.map((c) => ring(`irq${c}${devSuffix(i)}`, IRQ_RING_RECORDS, worker, vcpuWorkers[c])),
      // bare metal: every CPU using the drive writes the unit's queue under qi->q_lock (vCPU 0 stands for them here);
      // in a VM, each host context serving the drive's container invalidates on a ring of its own
      inval: bareMetal
        ? [ring(`inval${devSuffix(i)}`, INVAL_RING_RECORDS, vcpuWorkers[0], worker)]
        : (viommusOfContainer.get(ci) ?? []).map((hv, _n, all) =>
            ring(`inval${devSuffix(i)}${all.length > 1 ? `/${vm.viommus[hv].id}` : ''}`, INVAL_RING_RECORDS, viommus[hv].host, worker),
          ),
      vtd: bareMetal
        ? {
            pgtable: { tablePages: HOST_PGTABLE_POOL_PAGES },
            qiLockName: names.qiLock(names.unitOf(d.controller)),
            // iommu=pt: without dma-iommu translation the drive sees host memory one to one
            identityMapBytes: strategy === 'direct' ? vm.ramBytes : 0,
          }
        : null,
    };
  });

  const containers = vm.containers.map((c, ci): ContainerPlan => {
    const unit = unitOfContainer.get(ci) ?? names.unitOf(vm.devices[0].controller);
    return {
      id: c.id,
      lockName: names.containerLock(c.id),
      hosts: (viommusOfContainer.get(ci) ?? []).map((vi) => viommus[vi].host),
      devices: containerDevices[ci],
      hostIommu: { id: unit, qiLockName: names.qiLock(unit) },
      pgtable: { tablePages: HOST_PGTABLE_POOL_PAGES },
      identityMapBytes: strategy === 'direct' ? vm.ramBytes : 0,
    };
  });

  return {
    id: vm.id,
    bareMetal,
    lockScope: names.lockScope,
    ramBytes: vm.ramBytes,
    strategy,
    driverGeneration: vm.driverGeneration,
    jobOfVcpu,
    deviceOfVcpu,
    vcpuWorkers,
    viommus,
    devices,
    containers,
    mmapLockName: names.mmapLock,
    regions: {
      guestRamBytes: vm.ramBytes,
      vmStateVcpus: vcpus,
      guestLayout,
      pageAlloc: { ramBytes: vm.ramBytes, heapStartBytes },
      swiotlb:
        guestLayout.swiotlbGpa !== null ? { areaGpa: guestLayout.swiotlbGpa, sizeBytes: IO_TLB_DEFAULT_SIZE_BYTES, minAlignMask: NVME_MIN_ALIGN_MASK } : null,
    },
    vfio: {
      lockedVmLimitPages: vm.ramBytes / PAGE_SIZE_BYTES,
      dmaEntryLimit: o.dmaEntryLimit ?? DEFAULT_DMA_ENTRY_LIMIT,
      hostPageSizeBytes: o.hostPageSizeBytes ?? PAGE_SIZE_BYTES,
    },
  };
}

/** Every ring of a VM, in a fixed order: per drive its doorbells, interrupts and invalidations; per virtio-iommu its kicks and used notifications. */
export function planRings(vm: VmPlan): PlannedRing[] {
  return [...vm.devices.flatMap((d) => [...d.doorbell, ...d.irq]), ...vm.viommus.flatMap((v) => [...v.kick, ...v.used]), ...vm.devices.flatMap((d) => d.inval)];
}
