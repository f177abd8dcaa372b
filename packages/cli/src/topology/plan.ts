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
  MAX_GLOBAL_MAGS,
  type ViommuDriverGeneration,
} from '@vmstack/guest-kernel';
import { DEFAULT_DMA_ENTRY_LIMIT, HOST_VFIO_WORKER, IOMMU_LOCK, MMAP_LOCK, QI_Q_LOCK } from '@vmstack/host-vfio';
import { NVME_DEVICE_WORKER } from '@vmstack/nvme-device';
import { type CostProfile, InputError, type LockKind, MAX_WORKERS, NEVER_NS, PAGE_SHIFT, PAGE_SIZE_BYTES } from '@vmstack/shm';
import { VMM_WORKER } from '@vmstack/vmm';
import { type GuestLayout, type GuestLayoutRequest, NVME_QUEUE_ENTRIES, planGuestLayout } from '../stack/guest-layout.js';
import { type Platform, type Topology, type VmTopology, validateTopology } from './topology.js';

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

/** Worker indices by what runs there. */
export interface StackWorkers {
  /** vCPU v's worker, in vCPU order */
  vcpus: number[];
  vmm: number;
  host: number;
  device: number;
}

/** A single-producer/single-consumer ring between two workers; the consumer is woken on publish. */
export interface PlannedRing {
  name: string;
  capacityRecords: number;
  producer: number;
  consumer: number;
}

export interface StackRingPlan {
  /** per vCPU: vCPU → device (SQ tail doorbell writes) */
  doorbell: PlannedRing[];
  /** per vCPU: device → vCPU (MSI-X) */
  irq: PlannedRing[];
  /** per vCPU: vCPU → VMM (virtqueue notify) */
  kick: PlannedRing[];
  /** per vCPU: VMM → vCPU (used-buffer notification) */
  used: PlannedRing[];
  /** host → device (IOTLB invalidations) */
  inval: PlannedRing;
}

export interface StackPlanOptions {
  /** the run's jobs, in job-list order (as the topology's job indices count them) */
  jobs: readonly FioJobSpec[];
  profile: CostProfile;
  /** the pool's always_bounce_limit (undefined: the pool's default) */
  alwaysBounceLimitBytes?: number;
  /** the pool's slots per size class (undefined: the pool's default) */
  slotsPerClass?: number;
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
  device: {
    id: string;
    /** the physical controller passed through */
    controller: string;
    untrusted: boolean;
    domainId: number;
    endpointId: number;
    /** the last IOVA page frame the guest may allocate for the device */
    iovaLimitPfn: number;
    /** NVMe I/O queue entries */
    queueDepth: number;
    /** which vCPU owns completion queue i (0: the admin queue) */
    vcpuOfCq: number[];
  };
  /** the virtio-iommu: the endpoints of the devices behind it */
  viommu: { id: string; endpointIds: number[] };
  /** the VFIO container and the name of its `iommu->lock` in the host lock table */
  container: { id: string; lockName: string };
  /** the `mmap_lock` of the VM's VMM process in the host lock table */
  mmapLockName: string;
  /** the host IOMMU unit translating for the device, and its `qi->q_lock` in the host lock table */
  hostIommu: { id: string; qiLockName: string };
  index: StackWorkers;
  regions: {
    guestRamBytes: number;
    /** vCPUs whose end times the VM state holds */
    vmStateVcpus: number;
    guestLayout: GuestLayout;
    pageAlloc: { ramBytes: number; heapStartBytes: number };
    iovaDomain: { startPfn: number; limitPfn: number; cpus: number; maxAllocations: number; reservedPfns: [number, number][] };
    flushQueue: { cpus: number; entriesCount: number; timeoutNs: number } | null;
    bouncePool: { iovaBase: number; evictionPeriodNs: number; alwaysBounceLimitBytes?: number; slotsPerClass?: number } | null;
    swiotlb: { areaGpa: number; sizeBytes: number; minAlignMask: number } | null;
    pgtable: { tablePages: number };
  };
  rings: StackRingPlan;
  /** VMM → host VFIO calls */
  vfioRpc: { capacityRecords: number; server: number; client: number };
  vfio: { lockedVmLimitPages: number; dmaEntryLimit: number; identityMapBytes: number };
}

export interface StackPlan {
  platform: Platform;
  /** the VMs, in topology order */
  vms: VmPlan[];
  /** every worker, in worker-index order: VM by VM (vCPUs, vmm, host-vfio), then one nvme-device per controller */
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

/** What guest RAM must hold below the heap for these jobs, one per vCPU. */
export function guestLayoutRequest(jobs: readonly FioJobSpec[], o: { strategy: DmaStrategy; untrusted: boolean }): GuestLayoutRequest {
  return { ioQueues: jobs.length, prpPagesPerQueue: Math.max(...jobs.map((j) => j.iodepth)), swiotlb: needsSwiotlb(o) };
}

/** Refuse, in one line, a shape the workers cannot run yet. */
function onlyOne(field: string, n: number, what: string): void {
  if (n !== 1) throw new InputError(field, n, `exactly 1 ${what}: the workers run one ${what} for now`);
}

export function planStack(topology: Topology, o: StackPlanOptions): StackPlan {
  validateTopology(topology, o.jobs.length);
  if (topology.platform !== 'vm') throw new InputError('topology.platform', topology.platform, 'vm: bare metal is not modelled yet');
  topology.vms.forEach((vm, k) => {
    onlyOne(`topology.vms[${k}].viommus`, vm.viommus.length, 'virtio-iommu per VM');
    onlyOne(`topology.vms[${k}].devices`, vm.devices.length, 'passed-through device per VM');
    onlyOne(`topology.vms[${k}].containers`, vm.containers.length, 'VFIO container per VM');
  });
  const workerCount = topology.vms.reduce((s, vm) => s + vm.vcpus.length + NON_DEVICE_WORKERS_PER_VM + 1, 0);
  if (workerCount > MAX_WORKERS - 1)
    throw new InputError(
      'topology.vms',
      `${workerCount} workers`,
      `at most ${MAX_WORKERS - 1} workers in all (per VM one per vCPU, a vmm and a host-vfio worker, and one nvme-device worker per controller)`,
    );
  const several = topology.vms.length > 1;
  const unitOf = new Map(topology.hostIommus.flatMap((u) => u.controllers.map((c) => [c, u.id] as const)));
  const qualify = (cls: string, id: string, instances: number) => (instances > 1 ? `${cls}/${id}` : cls);
  const containers = topology.vms.flatMap((vm) => vm.containers.map((c) => c.id));
  const units = topology.hostIommus.map((u) => u.id);

  // worker indices: VM by VM its vCPUs, its vmm, its host-vfio; then the devices in VM order
  let next = 0;
  const indices = topology.vms.map((vm) => {
    const vcpus = vm.vcpus.map(() => next++);
    const vmm = next++;
    const host = next++;
    return { vcpus, vmm, host, device: -1 };
  });
  for (const ix of indices) ix.device = next++;

  const workers: PlannedWorker[] = [];
  const vms = topology.vms.map((vm, k): VmPlan => {
    const index = indices[k];
    const role = (r: string) => (several ? `${vm.id}/${r}` : r);
    workers.push(
      ...index.vcpus.map((_, v) => ({ role: role(`guest-kernel/vcpu${v}`), kind: 'vcpu' as const, entry: GUEST_VCPU_WORKER, startEotNs: 0 })),
      { role: role('vmm'), kind: 'vmm', entry: VMM_WORKER, startEotNs: NEVER_NS },
      { role: role('host-vfio'), kind: 'host', entry: HOST_VFIO_WORKER, startEotNs: NEVER_NS },
    );
    return planVm(vm, k, index, o, {
      lockScope: several ? `${vm.id}:` : '',
      containerLock: qualify(IOMMU_LOCK, vm.containers[0].id, containers.length),
      unit: unitOf.get(vm.devices[0].controller)!,
      qiLock: (unit: string) => qualify(QI_Q_LOCK, unit, units.length),
      mmapLock: qualify(MMAP_LOCK, vm.id, topology.vms.length),
    });
  });
  for (const v of vms)
    workers.push({ role: several ? `nvme-device/${v.device.controller}` : 'nvme-device', kind: 'device', entry: NVME_DEVICE_WORKER, startEotNs: 0 });
  return {
    platform: topology.platform,
    vms,
    workers,
    hostLocks: [
      ...containers.map((c) => ({ name: qualify(IOMMU_LOCK, c, containers.length), kind: 'mutex' as const })),
      ...units.map((u) => ({ name: qualify(QI_Q_LOCK, u, units.length), kind: 'spinlock' as const })),
      ...topology.vms.map((vm) => ({ name: qualify(MMAP_LOCK, vm.id, topology.vms.length), kind: 'rwsem' as const })),
    ],
  };
}

function planVm(
  vm: VmTopology,
  k: number,
  index: StackWorkers,
  o: StackPlanOptions,
  names: { lockScope: string; containerLock: string; unit: string; qiLock: (unit: string) => string; mmapLock: string },
): VmPlan {
  const at = `topology.vms[${k}]`;
  const dev = vm.devices[0];
  const vcpus = vm.vcpus.length;
  const jobOfVcpu = vm.vcpus.map((c) => {
    const on = vm.jobs.filter((p) => p.vcpu === c.id);
    if (on.length !== 1)
      throw new InputError(
        `${at}.vcpus[${c.id}]`,
        on.map((p) => p.job),
        'exactly 1 job on each vCPU: a vCPU worker runs one fio job for now',
      );
    return on[0].job;
  });
  const jobs = jobOfVcpu.map((j) => o.jobs[j]);
  const p = o.profile;
  const strategy = vm.strategy;
  const untrusted = dev.untrusted;

  const guestLayout = planGuestLayout(guestLayoutRequest(jobs, { strategy, untrusted }));
  const { heapStartBytes } = guestLayout;
  if (heapStartBytes >= vm.ramBytes)
    throw new InputError(
      '--guest-ram',
      vm.ramBytes,
      `more than ${heapStartBytes} bytes: queues, rings${guestLayout.swiotlbGpa !== null ? ' and the 64 MiB swiotlb area' : ''} take that much before any I/O buffer`,
    );

  // rbtree nodes: what the rcaches can hold (size classes × (2 magazines per CPU + the depot) × magazine size)
  // plus every I/O in flight (an untrusted device maps each page on its own), plus spare room
  const inFlight = jobs.reduce((s, j) => s + j.iodepth * (untrusted ? j.blockSizeBytes / PAGE_SIZE_BYTES : 1), 0);
  const maxAllocations = IOVA_RANGE_CACHE_MAX_SIZE * (2 * vcpus + MAX_GLOBAL_MAGS) * IOVA_MAG_SIZE + inFlight + IOVA_SPARE_ALLOCATIONS;
  // the coherent region is IOVA = GPA: keep the IOVA allocator away from it, and from the pool's range
  const reservedPfns: [number, number][] = [[1, Math.ceil(heapStartBytes / PAGE_SIZE_BYTES)]];
  const bouncePool =
    strategy === 'bounce'
      ? {
          iovaBase: BOUNCE_POOL_IOVA_BASE,
          evictionPeriodNs: p.bounceEvictionPeriodNs,
          alwaysBounceLimitBytes: o.alwaysBounceLimitBytes,
          slotsPerClass: o.slotsPerClass,
        }
      : null;
  if (bouncePool)
    reservedPfns.push([
      BOUNCE_POOL_IOVA_BASE / PAGE_SIZE_BYTES,
      (BOUNCE_POOL_IOVA_BASE + BouncePool.iovaSpanBytes({ slotsPerClass: o.slotsPerClass })) / PAGE_SIZE_BYTES - 1,
    ]);

  const ring = (name: string, capacityRecords: number, producer: number, consumer: number): PlannedRing => ({
    name: names.lockScope ? `${vm.id}:${name}` : name,
    capacityRecords,
    producer,
    consumer,
  });
  const rings: StackRingPlan = {
    doorbell: index.vcpus.map((w, v) => ring(`doorbell${v}`, DOORBELL_RING_RECORDS, w, index.device)),
    irq: index.vcpus.map((w, v) => ring(`irq${v}`, IRQ_RING_RECORDS, index.device, w)),
    kick: index.vcpus.map((w, v) => ring(`kick${v}`, KICK_RING_RECORDS, w, index.vmm)),
    used: index.vcpus.map((w, v) => ring(`used${v}`, USED_RING_RECORDS, index.vmm, w)),
    inval: ring('inval', INVAL_RING_RECORDS, index.host, index.device),
  };

  return {
    id: vm.id,
    lockScope: names.lockScope,
    ramBytes: vm.ramBytes,
    strategy,
    driverGeneration: vm.driverGeneration,
    jobOfVcpu,
    device: {
      id: dev.id,
      controller: dev.controller,
      untrusted,
      domainId: dev.domainId,
      endpointId: dev.endpointId,
      iovaLimitPfn: VIOMMU_IOVA_LIMIT_PFN,
      queueDepth: NVME_QUEUE_ENTRIES,
      // the admin queue's completions go to vCPU 0; I/O queue v+1 is vCPU v's
      vcpuOfCq: [0, ...index.vcpus.map((_, v) => v)],
    },
    viommu: { id: vm.viommus[0].id, endpointIds: vm.devices.filter((d) => d.viommu === vm.viommus[0].id).map((d) => d.endpointId) },
    container: { id: vm.containers[0].id, lockName: names.containerLock },
    mmapLockName: names.mmapLock,
    hostIommu: { id: names.unit, qiLockName: names.qiLock(names.unit) },
    index,
    regions: {
      guestRamBytes: vm.ramBytes,
      vmStateVcpus: vcpus,
      guestLayout,
      pageAlloc: { ramBytes: vm.ramBytes, heapStartBytes },
      iovaDomain: { startPfn: IOVA_START_PFN, limitPfn: VIOMMU_IOVA_LIMIT_PFN, cpus: vcpus, maxAllocations, reservedPfns },
      flushQueue: strategy === 'lazy' ? { cpus: vcpus, entriesCount: p.lazyFlushQueueEntriesCount, timeoutNs: p.lazyFlushTimeoutNs } : null,
      bouncePool,
      swiotlb:
        guestLayout.swiotlbGpa !== null ? { areaGpa: guestLayout.swiotlbGpa, sizeBytes: IO_TLB_DEFAULT_SIZE_BYTES, minAlignMask: NVME_MIN_ALIGN_MASK } : null,
      pgtable: { tablePages: HOST_PGTABLE_POOL_PAGES },
    },
    rings,
    vfioRpc: { capacityRecords: VFIO_RPC_RECORDS, server: index.host, client: index.vmm },
    vfio: {
      lockedVmLimitPages: vm.ramBytes / PAGE_SIZE_BYTES,
      dmaEntryLimit: DEFAULT_DMA_ENTRY_LIMIT,
      identityMapBytes: strategy === 'direct' ? vm.ramBytes : 0,
    },
  };
}

/** Every ring of the plan, in a fixed order: doorbells, interrupts, kicks, used notifications, invalidations. */
export function planRings(rings: StackRingPlan): PlannedRing[] {
  return [...rings.doorbell, ...rings.irq, ...rings.kick, ...rings.used, rings.inval];
}
