/**
 * Topologies from the command line: the common shapes from a few counts
 * (`--vms`, `--vcpus`, `--devices`, `--viommus`, `--container`, `--platform`,
 * `--iommu-units`), or any shape from a JSON file (`--topology FILE`).
 *
 * Shapes from flags:
 * - every VM runs the whole fio job list, as the same fio inside every VM:
 *   the run's job list is the per-VM lists one after another (job i of VM v
 *   is job v × jobs + i), and each VM's jobs do I/O to that VM's drives;
 * - a VM has `--vcpus` vCPUs (default: one per job); job i of a VM runs on
 *   vCPU i mod vcpus;
 * - a VM has `--devices` passed-through NVMe drives, each its own physical
 *   controller; device k is PCI 0(k+1):00.0 (endpoint (k+1) << 8) in guest
 *   domain k+1 (each device its own domain), and the guest names it
 *   /dev/nvme<k>n1. A job does I/O to the drive its fio `filename` names, else
 *   job i to device i mod devices;
 * - device k sits behind virtio-iommu k mod `--viommus`; `--container shared`
 *   puts all of a VM's devices in one VFIO container, `per-device` one each;
 * - controller c (counted over all VMs) is behind host IOMMU unit c mod
 *   `--iommu-units` (default 1: every controller behind one unit).
 * Ids count over the whole topology: vm<v>, viommu<n>, container<n>,
 * nvme<n>, nvme-ctrl<n>, dmar<n>. With no flag, the result is exactly
 * `defaultTopology`.
 */

import { readFileSync, statSync } from 'node:fs';
import { type FioJobSpec, nvmeFilenameDevice } from '@vmstack/guest-kernel';
import { InputError, MAX_WORKERS } from '@vmstack/shm';
import {
  DEFAULT_DOMAIN_ID,
  DEFAULT_ENDPOINT_ID,
  type DefaultTopologyOptions,
  type HostDeviceTopology,
  type HostIommuTopology,
  type JobPlacement,
  type NvmeControllerTopology,
  type PassthroughDeviceTopology,
  PLATFORMS,
  type Platform,
  type Topology,
  type VmTopology,
  validateTopology,
} from './topology.js';

export type ContainerMode = 'shared' | 'per-device';
export const CONTAINER_MODES: readonly ContainerMode[] = ['shared', 'per-device'];

/** The shape flags, as written (strings from the command line, or numbers). */
export interface TopologyFlags {
  vms?: string | number;
  vcpus?: string | number;
  devices?: string | number;
  viommus?: string | number;
  container?: string;
  platform?: string;
  iommuUnits?: string | number;
}

/** What `--topology FILE` or the shape flags ask for. */
export interface TopologyArgs extends TopologyFlags {
  /** --topology FILE */
  file?: string;
  /**
   * Other options given beside --topology FILE, by name as written
   * (`--strategy` → `bounce`): the file carries strategy, driver, guest RAM
   * and untrusted itself, so these conflict with it.
   */
  besideFile?: Record<string, string | boolean>;
}

/** A topology and the run's job list it places (the fio jobs once per VM for shapes from flags). */
export interface BuiltTopology {
  topology: Topology;
  jobs: FioJobSpec[];
}

/** The flags' names on the command line. */
export const TOPOLOGY_FLAG_NAMES: Readonly<Record<keyof TopologyFlags, string>> = {
  vms: '--vms',
  vcpus: '--vcpus',
  devices: '--devices',
  viommus: '--viommus',
  container: '--container',
  platform: '--platform',
  iommuUnits: '--iommu-units',
};

/** The guest's first device: PCI 01:00.0. Device k is on bus k+1. */
export function endpointIdOfDevice(k: number): number {
  return (k + 1) * DEFAULT_ENDPOINT_ID;
}

/** Each device in its own guest domain, allocated in device order from DEFAULT_DOMAIN_ID. */
export function domainIdOfDevice(k: number): number {
  return DEFAULT_DOMAIN_ID + k;
}

/** A count flag: a whole number from 1 to the worker slots (every unit of every count takes at least one worker or serves one). */
function count(flag: keyof TopologyFlags, value: string | number | undefined, dflt: number, what: string): number {
  if (value === undefined) return dflt;
  const text = String(value).trim();
  const n = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < 1 || n > MAX_WORKERS)
    throw new InputError(TOPOLOGY_FLAG_NAMES[flag], value, `a whole number of ${what} from 1 to ${MAX_WORKERS} (the worker slots of a run)`);
  return n;
}

function oneOf<T extends string>(flag: keyof TopologyFlags, value: string | undefined, choices: readonly T[], dflt: T): T {
  if (value === undefined) return dflt;
  if ((choices as readonly string[]).includes(value)) return value as T;
  throw new InputError(TOPOLOGY_FLAG_NAMES[flag], value, `one of ${choices.join(', ')}`);
}

/**
 * The topology the shape flags describe for these fio jobs (one VM's job
 * list), and the run's job list: the fio jobs once per VM. `o` gives what
 * every VM shares: strategy, driver generation, guest RAM, untrusted.
 */
export function topologyFromFlags(jobs: readonly FioJobSpec[], flags: TopologyFlags & DefaultTopologyOptions): BuiltTopology {
  const platform = oneOf<Platform>('platform', flags.platform, PLATFORMS, 'vm');
  const bareMetal = platform === 'bare-metal';
  if (bareMetal) {
    for (const k of ['viommus', 'container'] as const)
      if (flags[k] !== undefined)
        throw new InputError(TOPOLOGY_FLAG_NAMES[k], flags[k], 'only with --platform vm: on bare metal there is no VMM, no virtio-iommu and no VFIO container');
  }
  const vmCount = count('vms', flags.vms, 1, 'VMs');
  if (bareMetal && vmCount !== 1) throw new InputError('--vms', flags.vms, '1 with --platform bare-metal: the host OS is the only one running jobs');
  const vcpuCount = count('vcpus', flags.vcpus, jobs.length, 'vCPUs per VM');
  const deviceCount = count('devices', flags.devices, 1, 'devices per VM');
  const viommuCount = bareMetal ? 0 : count('viommus', flags.viommus, 1, 'virtio-iommus per VM');
  if (viommuCount > deviceCount)
    throw new InputError('--viommus', flags.viommus, `at most --devices (${deviceCount}): every virtio-iommu has a device behind it`);
  const containerMode = oneOf<ContainerMode>('container', flags.container, CONTAINER_MODES, 'shared');
  const controllerCount = vmCount * deviceCount;
  const unitCount = count('iommuUnits', flags.iommuUnits, 1, 'host IOMMU units');
  if (unitCount > controllerCount)
    throw new InputError(
      '--iommu-units',
      flags.iommuUnits,
      `at most the number of NVMe controllers (${controllerCount}: ${vmCount} VM${vmCount === 1 ? '' : 's'} × ${deviceCount} device${deviceCount === 1 ? '' : 's'}): every unit serves a controller`,
    );
  checkWorkerBudget(flags, { vmCount, vcpuCount, viommuCount, deviceCount });

  // the drive of job i of a VM: the one its filename names, else device i mod devices
  const deviceOfJob = jobs.map((j, i) => {
    if (j.filename === undefined) return i % deviceCount;
    const k = nvmeFilenameDevice(j.filename);
    if (k === null || k >= deviceCount)
      throw new InputError(
        `[${j.name}] filename`,
        j.filename,
        `a drive of the VM: /dev/nvme0n1${deviceCount > 1 ? ` … /dev/nvme${deviceCount - 1}n1` : ''} (${deviceCount} device${deviceCount === 1 ? '' : 's'} per VM; --devices gives more)`,
      );
    return k;
  });

  const controllers: NvmeControllerTopology[] = Array.from({ length: controllerCount }, (_, n) => ({ id: `nvme-ctrl${n}` }));
  const hostIommus: HostIommuTopology[] = Array.from({ length: unitCount }, (_, u) => ({
    id: `dmar${u}`,
    controllers: controllers.filter((_, c) => c % unitCount === u).map((c) => c.id),
  }));
  // VM v's device k is controller v × devices + k; ids count over the whole topology
  const deviceId = (v: number, k: number) => `nvme${v * deviceCount + k}`;
  const guest = (v: number, id: string) => ({
    id,
    ramBytes: flags.guestRamBytes,
    strategy: flags.strategy,
    driverGeneration: flags.driverGeneration,
    vcpus: Array.from({ length: vcpuCount }, (_, c) => ({ id: c })),
    jobs: jobs.map(
      (_, i): JobPlacement => ({
        job: v * jobs.length + i,
        vcpu: i % vcpuCount,
        // one device: every job's, the default; more: each job names its own
        ...(deviceCount > 1 ? { device: deviceId(v, deviceOfJob[i]) } : {}),
      }),
    ),
  });
  const untrusted = flags.untrusted ?? false;
  const containersPerVm = containerMode === 'shared' ? 1 : deviceCount;
  const topology: Topology = bareMetal
    ? {
        platform: 'bare-metal',
        vms: [
          {
            ...guest(0, 'host'),
            viommus: [],
            containers: [],
            devices: Array.from({ length: deviceCount }, (_, k): HostDeviceTopology => ({ id: deviceId(0, k), controller: `nvme-ctrl${k}`, untrusted })),
          },
        ],
        hostIommus,
        controllers,
      }
    : {
        platform: 'vm',
        vms: Array.from({ length: vmCount }, (_, v): VmTopology => {
          const viommuId = (k: number) => `viommu${v * viommuCount + (k % viommuCount)}`;
          const containerId = (k: number) => `container${v * containersPerVm + (containerMode === 'shared' ? 0 : k)}`;
          return {
            ...guest(v, `vm${v}`),
            viommus: Array.from({ length: viommuCount }, (_, k) => ({ id: viommuId(k) })),
            containers: Array.from({ length: containersPerVm }, (_, k) => ({ id: containerId(k) })),
            devices: Array.from(
              { length: deviceCount },
              (_, k): PassthroughDeviceTopology => ({
                id: deviceId(v, k),
                controller: `nvme-ctrl${v * deviceCount + k}`,
                viommu: viommuId(k),
                endpointId: endpointIdOfDevice(k),
                domainId: domainIdOfDevice(k),
                container: containerId(k),
                untrusted,
              }),
            ),
          };
        }),
        hostIommus,
        controllers,
      };
  const runJobs = Array.from({ length: vmCount }, () => jobs.map((j) => ({ ...j }))).flat();
  validateTopology(topology, runJobs.length);
  return { topology, jobs: runJobs };
}

/** The shape's workers (topologyWorkers' rule, counted) fit the run's worker slots; else name the flag that adds the most. */
function checkWorkerBudget(flags: TopologyFlags, n: { vmCount: number; vcpuCount: number; viommuCount: number; deviceCount: number }): void {
  const perVm = { vcpus: n.vcpuCount, viommus: 2 * n.viommuCount, devices: n.deviceCount };
  const total = n.vmCount * (perVm.vcpus + perVm.viommus + perVm.devices);
  if (total <= MAX_WORKERS) return;
  const largest = (Object.keys(perVm) as (keyof typeof perVm)[]).reduce((a, b) => (perVm[b] > perVm[a] ? b : a));
  const flag: keyof TopologyFlags = n.vmCount > 1 ? 'vms' : largest;
  const value = flags[flag] ?? (flag === 'vcpus' ? `${n.vcpuCount} (one per job)` : undefined);
  const sum =
    `${n.vmCount} VM${n.vmCount === 1 ? '' : 's'} × (${n.vcpuCount} vCPU${n.vcpuCount === 1 ? '' : 's'}` +
    (n.viommuCount > 0 ? ` + 2 × ${n.viommuCount} virtio-iommu${n.viommuCount === 1 ? '' : 's'}` : '') +
    ` + ${n.deviceCount} device${n.deviceCount === 1 ? '' : 's'}) = ${total}`;
  throw new InputError(
    TOPOLOGY_FLAG_NAMES[flag],
    value,
    `a shape of at most ${MAX_WORKERS} workers (one per vCPU, a vmm and a host-vfio per virtio-iommu, one per device): ${sum}`,
  );
}

/** Largest topology file read: far more than any topology within the worker slots needs. */
const MAX_TOPOLOGY_FILE_BYTES = 16 * 1024 * 1024;

/** The text of a regular file: a FIFO would block the read, a directory or device is no topology file. */
function readTopologyText(path: string): string {
  const allowed = (why: string) => new InputError('--topology', path, `a readable JSON topology file (${why})`);
  let size: number;
  try {
    const st = statSync(path);
    if (!st.isFile())
      throw allowed(
        `it is ${st.isFIFO() ? 'a FIFO' : st.isDirectory() ? 'a directory' : st.isCharacterDevice() || st.isBlockDevice() ? 'a device' : 'not a regular file'}`,
      );
    size = st.size;
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw allowed((e as NodeJS.ErrnoException).code ?? String(e));
  }
  if (size > MAX_TOPOLOGY_FILE_BYTES) throw allowed(`at most ${MAX_TOPOLOGY_FILE_BYTES} bytes; it has ${size}`);
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw allowed((e as NodeJS.ErrnoException).code ?? String(e));
  }
}

/**
 * The offset in `text` where JSON.parse failed, from its message; V8 gives no
 * position for an unexpected token, so then: the shortest prefix of `text`
 * that fails on something inside it (not at its end) ends just after it.
 */
function jsonErrorOffset(text: string, message: string): number {
  const at = /position (\d+)/.exec(message);
  if (at) return Number(at[1]);
  if (/end of JSON input/.test(message)) return text.length;
  const failsInside = (length: number): boolean => {
    try {
      JSON.parse(text.slice(0, length));
      return false;
    } catch (e) {
      const m = (e as Error).message;
      const p = /position (\d+)/.exec(m);
      return !/end of JSON input/.test(m) && (p === null || Number(p[1]) < length);
    }
  };
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (failsInside(mid)) hi = mid;
    else lo = mid + 1;
  }
  return Math.max(0, lo - 1);
}

/** Where in `text` a JSON.parse error happened: line and column (1-based) and the message. */
function jsonErrorPlace(text: string, message: string): string {
  const at = jsonErrorOffset(text, message);
  const before = text.slice(0, at);
  const line = before.split('\n').length;
  const column = at - before.lastIndexOf('\n');
  return `line ${line}, column ${column}: ${message.replace(/\s+/g, ' ')}`;
}

/** The JSON value of a topology file; an unreadable file or bad JSON names the file (and where the JSON breaks). */
export function readTopologyFile(path: string): unknown {
  const text = readTopologyText(path);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new InputError('--topology', path, `a JSON topology file; it is not valid JSON at ${jsonErrorPlace(text, (e as Error).message)}`);
  }
}

/**
 * A topology from a file, for these fio jobs. The file places jobs by index;
 * when it places a whole multiple of the fio job list (k VMs each running all
 * of it, as `--vms k` writes it), the run's job list is the fio list k times.
 */
export function topologyFromFile(path: string, jobs: readonly FioJobSpec[]): BuiltTopology {
  const raw = readTopologyFile(path);
  const placed = placedJobCount(raw);
  const copies = placed > jobs.length && placed % jobs.length === 0 ? placed / jobs.length : 1;
  const runJobs = Array.from({ length: copies }, () => jobs.map((j) => ({ ...j }))).flat();
  validateTopology(raw, runJobs.length);
  return { topology: raw, jobs: runJobs };
}

/** How many job placements a raw topology has (0 if its shape is not even a list of VMs with job lists). */
function placedJobCount(raw: unknown): number {
  const vms = (raw as { vms?: unknown } | null)?.vms;
  if (!Array.isArray(vms)) return 0;
  return vms.reduce((s: number, vm) => s + (Array.isArray((vm as { jobs?: unknown } | null)?.jobs) ? (vm as { jobs: unknown[] }).jobs.length : 0), 0);
}

/**
 * The topology `args` ask for: from --topology FILE (nothing else of the
 * shape may be given with it), or from the flags, whose defaults are the
 * default topology. `o` is what the command line says of every VM.
 */
export function resolveTopology(args: TopologyArgs, jobs: readonly FioJobSpec[], o: DefaultTopologyOptions): BuiltTopology {
  if (args.file === undefined) return topologyFromFlags(jobs, { ...args, ...o });
  for (const k of Object.keys(TOPOLOGY_FLAG_NAMES) as (keyof TopologyFlags)[]) if (args[k] !== undefined) throw conflict(TOPOLOGY_FLAG_NAMES[k], args[k]);
  for (const [name, value] of Object.entries(args.besideFile ?? {})) throw conflict(name, value);
  return topologyFromFile(args.file, jobs);
}

function conflict(flag: string, value: unknown): InputError {
  return new InputError(
    flag,
    value === true ? '' : value,
    'not together with --topology FILE: the file describes the whole topology (VMs, strategy, driver, RAM, devices)',
  );
}

/** The jobs of a run that share a drive, drive by drive (jobs of different drives never touch each other's blocks). */
export function jobsByDevice(b: BuiltTopology): FioJobSpec[][] {
  const byDevice = new Map<string, FioJobSpec[]>();
  for (const vm of b.topology.vms) {
    for (const p of vm.jobs) {
      const device = p.device ?? vm.devices[0]?.id ?? vm.id;
      byDevice.set(device, [...(byDevice.get(device) ?? []), b.jobs[p.job]]);
    }
  }
  return [...byDevice.values()];
}
