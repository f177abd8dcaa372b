/**
 * The `vmstack` key of the fio JSON output: what the model reports about one
 * run besides fio's own numbers. Every key is snake_case, as fio's are.
 *
 * | key               | what |
 * |-------------------|------|
 * | strategy … driver_generation | what ran |
 * | workers           | one row per worker thread: role, thread id, hand-off counts |
 * | counters          | per component: virtio-iommu, vfio, iotlb, nvme, dma-iommu, flush queue, bounce pool, swiotlb |
 * | lock_stat         | one row per lock, the /proc/lock_stat columns, with the lock's class |
 * | lock_classes      | one row per lock class: its instances' lock_stat rows combined |
 * | profile           | per modelled kernel function: calls, total and self model ns, ns per GB |
 * | verify            | blocks checked, corrupt, overwritten by another job, never written |
 * | leaks             | what was still allocated, mapped or pinned after shutdown |
 * | model_speed       | simulated I/Os per wall second |
 * | topology          | the topology the run was given (--vms, --topology FILE, …), keys snake_case; absent: the default one |
 *
 * A run of several barrier groups prints `{ "groups": [ … ] }`, one report per
 * group in order (`VmstackGroupsReport`).
 */

import type { DmaStrategy, ViommuDriverGeneration } from '@vmstack/guest-kernel';
import type { ClockMode, LockKind } from '@vmstack/shm';
import type { TopologyReport } from './topology-report.js';
import type { ViommuFaultsReport } from './viommu-faults.js';

/** How often a worker thread parked and woke others during the run: the cost of its hand-offs. */
export interface WorkerWaits {
  parks: number;
  spins_won: number;
  notifies_sent: number;
  /** wall ns the thread spent parked waiting for a peer */
  parked_ns: number;
  /** wall ns of the thread's run: run_ns - parked_ns is its busy time (spinning included) */
  run_ns: number;
}

/** One worker thread of the run. */
export interface WorkerReport {
  /** `guest-kernel/vcpu<n>`, `vmm`, `host-vfio` or `nvme-device` */
  role: string;
  thread_id: number;
  /** null: the component ran in the calling thread (transport `in-thread`) */
  waits: WorkerWaits | null;
}

/** The VMM's virtio-iommu device: requests served, queue kicks. */
export interface VirtioIommuCounters {
  attach: number;
  detach: number;
  map: number;
  unmap: number;
  probe: number;
  kicks: number;
  errors: number;
}

/** The host's vfio_iommu_type1 container. */
export interface VfioCounters {
  map_dma: number;
  unmap_dma: number;
  pinned_pages_peak: number;
}

/** The device's IOTLB. */
export interface IotlbCounters {
  hits: number;
  misses: number;
  faults: number;
  invalidations: number;
  entries: number;
}

/** The NVMe controller. */
export interface NvmeCounters {
  commands: number;
  faults: number;
  interrupts: number;
}

/** The guest's dma-iommu layer, summed over every vCPU. */
export interface DmaCounters {
  map_calls: number;
  unmap_calls: number;
  bounced_mappings: number;
  strict_mappings: number;
  per_segment_maps: number;
  swiotlb_bounces: number;
  /** maps the IOMMU refused for want of resources (virtio-iommu NOMEM): unwound, the request requeued (BLK_STS_RESOURCE) */
  map_no_mem: number;
}

/** The lazy strategy's flush queue. */
export interface LazyCounters {
  flushes: number;
  flushes_by_timer: number;
  flushes_by_full: number;
  entries_freed: number;
}

/** The bounce strategy's pool (shared by every vCPU). */
export interface BounceCounters {
  hits: number;
  misses: number;
  fallbacks: number;
  evictions: number;
  exhausted: number;
  oversize: number;
  bytes_copied_to_device: number;
  bytes_copied_from_device: number;
  slots_in_use_peak: number;
  slots_cached: number;
  memory_bytes_current: number;
  memory_bytes_peak: number;
  always_bounce_limit_bytes: number;
}

/** The swiotlb area of an untrusted device under strict or lazy, summed over every vCPU. */
export interface SwiotlbCounters {
  nslabs: number;
  used_slots: number;
  peak_used_slots: number;
  index: number;
  maps: number;
  unmaps: number;
  /** searches that found no room ("swiotlb buffer is full") or bad sizes */
  failures: number;
  /** slots looked at by searches */
  probes: number;
  bytes_bounced_to_device: number;
  bytes_bounced_from_device: number;
  bytes_bounced: number;
  bytes_zeroed: number;
  sync_errors: number;
  /** bytes of guest RAM the area holds, whatever is in use */
  area_bytes: number;
}

/** Per component; null: the run did not use it (its strategy has none). */
export interface VmstackCounters {
  virtio_iommu: VirtioIommuCounters;
  vfio: VfioCounters;
  iotlb: IotlbCounters;
  nvme: NvmeCounters;
  dma: DmaCounters;
  lazy: LazyCounters | null;
  bounce: BounceCounters | null;
  swiotlb: SwiotlbCounters | null;
  /** bytes the guest copied (bounce pool, swiotlb), by where the cache model found them (guest-kernel mm/llc.ts) */
  copies: CopyCounters;
}

/** Bytes copied at cache bandwidth (source and destination cached) and at DRAM bandwidth. */
export interface CopyCounters {
  cache_bytes: number;
  dram_bytes: number;
}

/** The columns of a /proc/lock_stat line: one lock's, or a lock class's added up. */
export interface LockStatColumns {
  con_bounces: number;
  contentions: number;
  waittime_min_ns: number;
  waittime_max_ns: number;
  waittime_total_ns: number;
  waittime_avg_ns: number;
  acq_bounces: number;
  acquisitions: number;
  holdtime_min_ns: number;
  holdtime_max_ns: number;
  holdtime_total_ns: number;
  holdtime_avg_ns: number;
  real_contentions: number;
}

/**
 * One lock's /proc/lock_stat row. With the virtual clock, contentions and the
 * wait times count waits in model time; `real_contentions` counts the times
 * the real threads found the lock taken.
 */
export interface LockStatRow extends LockStatColumns {
  /** the instance: `[<vm id>:]<class>[/<qualifier>...]`, e.g. `cpu_rcache->lock/3` */
  name: string;
  /** the name without the VM prefix and the `/…` qualifiers (lockClassOf), e.g. `cpu_rcache->lock` */
  class: string;
  kind: LockKind;
  /** an rwsem (kind `rwsem`) only: its read side, /proc/lock_stat's `<name>-R` line; the columns above are then its write side */
  read_con_bounces?: number;
  read_contentions?: number;
  read_waittime_min_ns?: number;
  read_waittime_max_ns?: number;
  read_waittime_total_ns?: number;
  read_waittime_avg_ns?: number;
  read_acq_bounces?: number;
  read_acquisitions?: number;
  read_holdtime_min_ns?: number;
  read_holdtime_max_ns?: number;
  read_holdtime_total_ns?: number;
  read_holdtime_avg_ns?: number;
  read_real_contentions?: number;
}

/**
 * One lock class: the lock_stat rows of its instances combined (lock-classes.ts).
 * Counts and totals are sums; minima and maxima are over the instances that
 * waited (wait) or were held (hold), 0 when none did; the averages are
 * wait total / contentions and hold total / acquisitions, as for one lock.
 */
export interface LockClassRow extends LockStatColumns {
  class: string;
  kind: LockKind;
  /** lock instances of the class in the run */
  instances: number;
}

/** Where a profiled function ran: a vCPU (all vCPUs summed), the VMM or the host kernel. */
export type ProfileWhere = 'guest' | 'vmm' | 'host';

/** One modelled kernel function in `profile`. */
export interface ProfileRow {
  calls: number;
  /** model ns in the function, callees included */
  ns: number;
  /** model ns in the function itself, profiled callees excluded */
  self_ns: number;
  /** ns per 1e9 bytes moved by the run's jobs */
  ns_per_gb: number;
  self_ns_per_gb: number;
  where: ProfileWhere;
}

/** Verified blocks of every job. */
export interface VerifyReport {
  blocks_checked: number;
  /** damaged, stale or misplaced blocks: a fault of the stack */
  corrupt: number;
  /** intact blocks another job of the group wrote over (their regions overlap) */
  overwritten: number;
  /** intact blocks no job of the run wrote: the drive's own data, without fio's verify header (fio: "bad magic header", err=84) */
  never_written: number;
}

/** What was still allocated, mapped or pinned after shutdown; all 0 in a clean run. */
export interface LeakReport {
  iovas: number;
  iova_mappings_in_vmm: number;
  pinned_pages: number;
  locked_vm_pages: number;
}

/**
 * CPU load two ways: each vCPU's (bare metal: each CPU's) busy share of its
 * job, as fio's sys= gives it, and all of them together as a share of the
 * host's hardware threads, as `top`'s summary line or `vmstat` would show it.
 */
export interface CpuReport {
  /** per vCPU (job order): model ns busy in the job */
  busy_ns: number[];
  /** per vCPU: busy share of its own job's runtime, % */
  busy_pct: number[];
  /** model ns of the longest job: the span the host share is taken over */
  span_ns: number;
  /** the host's hardware threads (profile hostCpuThreadsCount) */
  host_cpu_threads: number;
  /** every vCPU's busy time over (span × host threads), % */
  host_share_pct: number;
}

/** The model's own speed: simulated I/Os per second of wall time spent in the job loop. */
export interface ModelSpeed {
  simulated_ios: number;
  /** model ns the run simulated: its longest job's runtime */
  simulated_ns: number;
  run_wall_ms: number;
  job_loop_wall_ms: number;
  simulated_ios_per_wall_s: number;
  /** simulated_ns per wall ns of the job loop: above 1 the model runs faster than the time it simulates */
  sim_time_per_wall_time: number;
  /** only when asked for (StackOptions.timeComponents): each component's wall ns, with workers its threads' busy time */
  component_wall_ns?: ComponentWallNs;
  /** component_wall_ns per simulated I/O */
  component_wall_ns_per_io?: ComponentWallNs;
}

/** Wall ns per component of the stack (the model's own cost, not model time). */
export interface ComponentWallNs {
  guest: number;
  vmm: number;
  host: number;
  device: number;
}

/** The `vmstack` key of one run (one barrier group). */
export interface VmstackReport {
  strategy: DmaStrategy;
  untrusted: boolean;
  clock: ClockMode;
  transport: 'workers' | 'in-thread';
  driver_generation: ViommuDriverGeneration;
  workers: WorkerReport[];
  counters: VmstackCounters;
  lock_stat: LockStatRow[];
  /** one row per lock class, in the order the classes first appear in lock_stat */
  lock_classes: LockClassRow[];
  /** function name → its row */
  profile: Record<string, ProfileRow>;
  verify: VerifyReport;
  leaks: LeakReport;
  model_speed: ModelSpeed;
  cpu: CpuReport;
  /** the topology the run was given, keys snake_case; absent: the default topology (one VM, a vCPU per job, one drive) */
  topology?: TopologyReport;
  /** runs with a virtio-iommu: the drives' translation faults from the host IOMMU to the guest's driver (report/viommu-faults.ts) */
  virtio_iommu?: { faults: ViommuFaultsReport };
  /**
   * Runs of several VMs: each VM's own counters, verify and leaks (the
   * top-level ones are their sums; strategy, untrusted and driver_generation
   * there are the first VM's). Absent with one VM.
   */
  vms?: VmReport[];
}

/** One VM of a run of several. */
export interface VmReport {
  id: string;
  strategy: DmaStrategy;
  untrusted: boolean;
  driver_generation: ViommuDriverGeneration;
  /** indices, in the run's job list, of the jobs this VM ran */
  jobs: number[];
  counters: VmstackCounters;
  verify: VerifyReport;
  leaks: LeakReport;
}

/** The `vmstack` key of a run of several barrier groups: one report per group, in order. */
export interface VmstackGroupsReport {
  groups: VmstackReport[];
}

/** What the `vmstack` key of the JSON output holds. */
export type VmstackOutput = VmstackReport | VmstackGroupsReport;

/** The name spelled snake_case: every capital becomes `_` and its lower case (`selfNs` → `self_ns`). */
export type SnakeCase<S extends string> = S extends `${infer C}${infer Rest}` ? `${C extends Lowercase<C> ? C : `_${Lowercase<C>}`}${SnakeCase<Rest>}` : S;

/** `T` with every key spelled snake_case, values unchanged. */
export type SnakeKeys<T> = { [K in keyof T & string as SnakeCase<K>]: T[K] };

/** `o`'s keys spelled snake_case, in the same order, values unchanged. */
export function snakeKeys<T extends object>(o: T): SnakeKeys<T> {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), v])) as SnakeKeys<T>;
}
