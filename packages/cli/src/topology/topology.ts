/**
 * What a run models, as plain data (JSON-serialisable, no classes): the
 * platform, the VMs with their vCPUs, fio jobs, virtio-iommus, passed-through
 * devices and VFIO containers, the host's IOMMU units and the physical NVMe
 * controllers. The planner (plan.ts) turns a Topology into workers, shared
 * regions and their wiring; validateTopology checks one before that.
 *
 * Ids of VMs, viommus, devices, containers, IOMMU units and controllers are
 * strings, unique among their kind across the whole topology; references
 * name them. vCPU ids are the guest's CPU numbers, 0..n-1 in each VM. Jobs
 * are referenced by their index in the run's job list (fio's order, with
 * numjobs expanded), since job names repeat.
 */

import { DMA_STRATEGIES, type DmaStrategy, type FioJobSpec, type ViommuDriverGeneration } from '@vmstack/guest-kernel';
import { InputError, inputExcerpt, PAGE_SIZE_BYTES } from '@vmstack/shm';

/**
 * Where the kernel that runs the jobs runs: in VMs (a VMM serves their
 * virtio-iommus and opens VFIO containers for the passed-through devices), or
 * on bare metal, where the host's own kernel drives the devices through its
 * DMA API and the host IOMMU, with no VMM in between.
 */
export type Platform = 'vm' | 'bare-metal';
export const PLATFORMS: readonly Platform[] = ['vm', 'bare-metal'];

export const VIOMMU_DRIVER_GENERATIONS: readonly ViommuDriverGeneration[] = ['v5.10', 'v6.x'];

/** What a run models; `platform` tells the two shapes apart. */
export type Topology = VmPlatformTopology | BareMetalTopology;

/** VMs on a host: every device is passed through to a VM behind one of its virtio-iommus. */
export interface VmPlatformTopology {
  platform: 'vm';
  vms: VmTopology[];
  /** the host's IOMMU units (VT-d DMAR units), each translating for some controllers */
  hostIommus: HostIommuTopology[];
  /** the physical NVMe controllers */
  controllers: NvmeControllerTopology[];
}

/**
 * The host alone: its one entry in `vms` stands for the host OS (its vCPUs are
 * the host's CPUs), with no virtio-iommus, no VFIO containers, and devices
 * its own NVMe driver uses directly.
 */
export interface BareMetalTopology {
  platform: 'bare-metal';
  vms: HostOsTopology[];
  hostIommus: HostIommuTopology[];
  controllers: NvmeControllerTopology[];
}

/** One kernel instance running jobs: a VM's guest, or the host OS on bare metal. */
export type OsTopology = VmTopology | HostOsTopology;

/** Any device of a topology: passed through to a VM, or the host's own. */
export type DeviceTopology = PassthroughDeviceTopology | HostDeviceTopology;

export interface VmTopology {
  id: string;
  /** guest RAM, bytes */
  ramBytes: number;
  /** the guest's DMA API strategy (dma-iommu or direct) */
  strategy: DmaStrategy;
  /** the guest's virtio-iommu driver generation */
  driverGeneration: ViommuDriverGeneration;
  /** the guest's CPUs; ids 0..n-1 in order */
  vcpus: VcpuTopology[];
  /** which fio job runs on which vCPU */
  jobs: JobPlacement[];
  /** the virtio-iommu devices the VMM exposes */
  viommus: ViommuTopology[];
  /** the VFIO containers the VMM opens */
  containers: VfioContainerTopology[];
  /** the devices passed through to this VM */
  devices: PassthroughDeviceTopology[];
}

export interface VcpuTopology {
  id: number;
}

export interface JobPlacement {
  /** index in the run's job list */
  job: number;
  /** id of the vCPU of this VM the job runs on */
  vcpu: number;
  /** id of the device of this VM the job does I/O to; absent: the VM's first device */
  device?: string;
}

export interface ViommuTopology {
  id: string;
}

export interface VfioContainerTopology {
  id: string;
}

export interface PassthroughDeviceTopology {
  id: string;
  /** the physical controller passed through */
  controller: string;
  /** the virtio-iommu the device sits behind */
  viommu: string;
  /** the virtio-iommu endpoint id (the PCI requester id, bus << 8 | devfn) */
  endpointId: number;
  /** the virtio-iommu domain the guest attaches the endpoint to */
  domainId: number;
  /** the VFIO container whose IOMMU domain maps for the device */
  container: string;
  /** external-facing (pci_dev->untrusted): the guest bounces sub-page DMA */
  untrusted: boolean;
}

/** The host OS on bare metal: a VM's fields without the VMM's parts. */
export interface HostOsTopology extends Omit<VmTopology, 'viommus' | 'containers' | 'devices'> {
  /** none: there is no VMM */
  viommus: [];
  containers: [];
  /** the NVMe controllers the host's own driver uses */
  devices: HostDeviceTopology[];
}

/** A device the host's own NVMe driver uses: no virtio-iommu endpoint, domain or VFIO container. */
export interface HostDeviceTopology {
  id: string;
  controller: string;
  untrusted: boolean;
  viommu?: undefined;
  endpointId?: undefined;
  domainId?: undefined;
  container?: undefined;
}

export interface HostIommuTopology {
  id: string;
  /** ids of the controllers this unit translates for */
  controllers: string[];
}

export interface NvmeControllerTopology {
  id: string;
}

/** The virtio-iommu domain the guest's driver allocates first: one device, one domain. */
export const DEFAULT_DOMAIN_ID = 1;
/** The passed-through drive's endpoint: PCI 01:00.0. */
export const DEFAULT_ENDPOINT_ID = 0x100;

export interface DefaultTopologyOptions {
  strategy: DmaStrategy;
  driverGeneration: ViommuDriverGeneration;
  guestRamBytes: number;
  untrusted?: boolean;
}

/**
 * The shape every run has had: one VM with one vCPU per job (job i on vCPU i),
 * one virtio-iommu, one NVMe drive passed through behind it in one VFIO
 * container, one host IOMMU unit serving the one physical controller.
 */
export function defaultTopology(jobs: readonly FioJobSpec[], o: DefaultTopologyOptions): VmPlatformTopology {
  return {
    platform: 'vm',
    vms: [
      {
        id: 'vm0',
        ramBytes: o.guestRamBytes,
        strategy: o.strategy,
        driverGeneration: o.driverGeneration,
        vcpus: jobs.map((_, i) => ({ id: i })),
        jobs: jobs.map((_, i) => ({ job: i, vcpu: i })),
        viommus: [{ id: 'viommu0' }],
        containers: [{ id: 'container0' }],
        devices: [
          {
            id: 'nvme0',
            controller: 'nvme-ctrl0',
            viommu: 'viommu0',
            endpointId: DEFAULT_ENDPOINT_ID,
            domainId: DEFAULT_DOMAIN_ID,
            container: 'container0',
            untrusted: o.untrusted ?? false,
          },
        ],
      },
    ],
    hostIommus: [{ id: 'dmar0', controllers: ['nvme-ctrl0'] }],
    controllers: [{ id: 'nvme-ctrl0' }],
  };
}

const U32_MAX = 2 ** 32 - 1;

/** The VMM's fields of a device: required on the vm platform, absent on bare metal. */
const VMM_DEVICE_FIELDS = ['viommu', 'container', 'endpointId', 'domainId'] as const;

/**
 * Check a topology (possibly read from a file) against itself and the run's
 * job count: the shape of every field, ids unique, references resolving,
 * every job on exactly one existing vCPU and, if it names one, a device of
 * its VM, every controller behind exactly one host IOMMU unit and used by at
 * most one device; on bare metal one host OS, with no virtio-iommus, VFIO
 * containers, endpoints or domains. Throws an InputError naming the field (a
 * path such as `topology.vms[0].devices[0].viommu`), the value and what is
 * allowed.
 */
export function validateTopology(t: unknown, jobCount: number): asserts t is Topology {
  const top = record(t, 'topology');
  if (!(PLATFORMS as readonly unknown[]).includes(top.platform)) throw new InputError('topology.platform', top.platform, `one of ${PLATFORMS.join(', ')}`);
  const bareMetal = top.platform === 'bare-metal';
  const controllers = list(top.controllers, 'topology.controllers', 1);
  const controllerIds = new Set<string>();
  controllers.forEach((c, i) => uniqueId(record(c, `topology.controllers[${i}]`).id, `topology.controllers[${i}].id`, controllerIds, 'controllers'));
  const hostIommus = list(top.hostIommus, 'topology.hostIommus', 1);
  const unitIds = new Set<string>();
  const servedBy = new Map<string, string>();
  hostIommus.forEach((u, i) => {
    const at = `topology.hostIommus[${i}]`;
    const unit = record(u, at);
    const id = uniqueId(unit.id, `${at}.id`, unitIds, 'host IOMMU units');
    list(unit.controllers, `${at}.controllers`, 1).forEach((c, k) => {
      reference(c, `${at}.controllers[${k}]`, controllerIds, 'controllers');
      const other = servedBy.get(c as string);
      if (other !== undefined) throw new InputError(`${at}.controllers[${k}]`, c, `a controller no other unit serves; ${shown(other)} serves it already`);
      servedBy.set(c as string, id);
    });
  });
  for (const c of controllerIds)
    if (!servedBy.has(c)) throw new InputError('topology.hostIommus', c, `a unit serving every controller; none serves ${shown(c)}`);

  const vms = list(top.vms, 'topology.vms', 1);
  if (bareMetal && vms.length !== 1)
    throw new InputError('topology.vms', vms, 'exactly 1 entry on bare-metal: it stands for the host OS (its vcpus are the host CPUs)');
  const vmIds = new Set<string>();
  const viommuIds = new Set<string>();
  const containerIds = new Set<string>();
  const deviceIds = new Set<string>();
  const passedThrough = new Map<string, string>();
  const placed = new Map<number, string>();
  vms.forEach((v, i) => {
    const at = `topology.vms[${i}]`;
    const vm = record(v, at);
    uniqueId(vm.id, `${at}.id`, vmIds, 'VMs');
    if (!Number.isInteger(vm.ramBytes) || (vm.ramBytes as number) <= 0 || (vm.ramBytes as number) % PAGE_SIZE_BYTES !== 0)
      throw new InputError(`${at}.ramBytes`, vm.ramBytes, `a whole number of ${PAGE_SIZE_BYTES}-byte pages > 0`);
    if (!(DMA_STRATEGIES as readonly unknown[]).includes(vm.strategy))
      throw new InputError(`${at}.strategy`, vm.strategy, `one of ${DMA_STRATEGIES.join(', ')}`);
    if (!(VIOMMU_DRIVER_GENERATIONS as readonly unknown[]).includes(vm.driverGeneration))
      throw new InputError(`${at}.driverGeneration`, vm.driverGeneration, `one of ${VIOMMU_DRIVER_GENERATIONS.join(', ')}`);
    const vcpus = list(vm.vcpus, `${at}.vcpus`, 1);
    vcpus.forEach((c, k) => {
      const id = record(c, `${at}.vcpus[${k}]`).id;
      if (id !== k) throw new InputError(`${at}.vcpus[${k}].id`, id, `${k}: vCPU ids are the guest's CPU numbers, 0..${vcpus.length - 1} in order`);
    });
    const jobDevices: [field: string, device: unknown][] = [];
    list(vm.jobs, `${at}.jobs`, 0).forEach((p, k) => {
      const pl = record(p, `${at}.jobs[${k}]`);
      if (!Number.isInteger(pl.job) || (pl.job as number) < 0 || (pl.job as number) >= jobCount)
        throw new InputError(`${at}.jobs[${k}].job`, pl.job, `a job index from 0 to ${jobCount - 1} (the run has ${jobCount} job${jobCount === 1 ? '' : 's'})`);
      const other = placed.get(pl.job as number);
      if (other !== undefined) throw new InputError(`${at}.jobs[${k}].job`, pl.job, `a job not placed yet; it runs at ${other} already`);
      if (!Number.isInteger(pl.vcpu) || (pl.vcpu as number) < 0 || (pl.vcpu as number) >= vcpus.length)
        throw new InputError(`${at}.jobs[${k}].vcpu`, pl.vcpu, `a vCPU of ${shown(vm.id)}: 0..${vcpus.length - 1}`);
      placed.set(pl.job as number, `${shown(vm.id)} vCPU ${pl.vcpu as number}`);
      if (pl.device !== undefined) jobDevices.push([`${at}.jobs[${k}].device`, pl.device]);
    });
    const viommus = new Set<string>();
    list(vm.viommus, `${at}.viommus`, 0).forEach((x, k) => {
      if (bareMetal) throw new InputError(`${at}.viommus`, vm.viommus, '[] on bare-metal: there is no VMM, so no virtio-iommu');
      const id = uniqueId(record(x, `${at}.viommus[${k}]`).id, `${at}.viommus[${k}].id`, viommuIds, 'viommus');
      viommus.add(id);
    });
    const containers = new Set<string>();
    list(vm.containers, `${at}.containers`, 0).forEach((x, k) => {
      if (bareMetal) throw new InputError(`${at}.containers`, vm.containers, '[] on bare-metal: there is no VMM, so no VFIO container');
      const id = uniqueId(record(x, `${at}.containers[${k}]`).id, `${at}.containers[${k}].id`, containerIds, 'VFIO containers');
      containers.add(id);
    });
    const devices = new Set<string>();
    const endpoints = new Map<string, Set<number>>();
    list(vm.devices, `${at}.devices`, 0).forEach((x, k) => {
      const dat = `${at}.devices[${k}]`;
      const d = record(x, dat);
      const id = uniqueId(d.id, `${dat}.id`, deviceIds, 'devices');
      devices.add(id);
      reference(d.controller, `${dat}.controller`, controllerIds, 'controllers');
      const other = passedThrough.get(d.controller as string);
      if (other !== undefined) throw new InputError(`${dat}.controller`, d.controller, `a controller no other device uses; device ${shown(other)} has it`);
      passedThrough.set(d.controller as string, id);
      if (typeof d.untrusted !== 'boolean') throw new InputError(`${dat}.untrusted`, d.untrusted, 'true or false');
      if (bareMetal) {
        for (const f of VMM_DEVICE_FIELDS)
          if (d[f] !== undefined) throw new InputError(`${dat}.${f}`, d[f], `no ${f} on bare-metal: the host's own NVMe driver uses the device, with no VMM`);
        return;
      }
      reference(d.viommu, `${dat}.viommu`, viommus, `viommus of ${shown(vm.id)}`);
      reference(d.container, `${dat}.container`, containers, `VFIO containers of ${shown(vm.id)}`);
      if (!Number.isInteger(d.endpointId) || (d.endpointId as number) < 0 || (d.endpointId as number) > U32_MAX)
        throw new InputError(`${dat}.endpointId`, d.endpointId, 'an integer from 0 to 2^32-1 (a 32-bit virtio-iommu endpoint id)');
      const taken = endpoints.get(d.viommu as string) ?? new Set<number>();
      if (taken.has(d.endpointId as number))
        throw new InputError(`${dat}.endpointId`, d.endpointId, `an endpoint id no other device behind ${shown(d.viommu)} has`);
      taken.add(d.endpointId as number);
      endpoints.set(d.viommu as string, taken);
      if (!Number.isInteger(d.domainId) || (d.domainId as number) < 1 || (d.domainId as number) > U32_MAX)
        throw new InputError(`${dat}.domainId`, d.domainId, 'an integer from 1 to 2^32-1 (a 32-bit virtio-iommu domain id)');
    });
    for (const [field, device] of jobDevices) reference(device, field, devices, `devices of ${shown(vm.id)}`);
    if ((vm.jobs as unknown[]).length > 0 && devices.size === 0)
      throw new InputError(`${at}.devices`, [], `at least 1 device: the jobs of ${shown(vm.id)} do I/O to one`);
  });
  for (let j = 0; j < jobCount; j++) if (!placed.has(j)) throw new InputError('topology.vms[].jobs', j, `every job on a vCPU; job ${j} is on none`);
}

function record(x: unknown, field: string): Record<string, unknown> {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new InputError(field, x, 'an object');
  return x as Record<string, unknown>;
}

function list(x: unknown, field: string, min: number): unknown[] {
  if (!Array.isArray(x) || x.length < min) throw new InputError(field, x, min > 0 ? `a list of at least ${min}` : 'a list');
  return x;
}

function uniqueId(id: unknown, field: string, seen: Set<string>, kind: string): string {
  if (typeof id !== 'string' || id === '') throw new InputError(field, id, 'a non-empty string');
  if (seen.has(id)) throw new InputError(field, id, `an id no other of the topology's ${kind} has`);
  seen.add(id);
  return id;
}

function reference(id: unknown, field: string, ids: ReadonlySet<string>, kind: string): void {
  if (typeof id !== 'string' || !ids.has(id)) throw new InputError(field, id, `one of the ${kind}: ${shownList([...ids])}`);
}

/** An id from the file as a message shows it: an excerpt, control characters escaped. */
function shown(id: unknown): string {
  return inputExcerpt(String(id));
}

const MAX_IDS_LISTED = 8;

/** Ids a message lists: the first few, each an excerpt, and how many there are. */
function shownList(ids: readonly string[]): string {
  if (ids.length === 0) return '(none)';
  const first = ids.slice(0, MAX_IDS_LISTED).map(shown).join(', ');
  return ids.length > MAX_IDS_LISTED ? `${first}, … (${ids.length} in all)` : first;
}
