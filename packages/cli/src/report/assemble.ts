/**
 * A run's RunResult from what its workers returned: per job the fio numbers
 * (`toJobResult`), and the `vmstack` report — counters of every component,
 * lock_stat (each row with its lock class) and the per-class rows, the
 * per-function profile summed over the vCPUs, the VMM and the host, verify
 * totals, leaks after shutdown and the model's own speed.
 */

import {
  type BouncePoolStats,
  type DmaStrategy,
  type FioJobSpec,
  type FlushQueueStats,
  nvmeFilenameDevice,
  type VcpuWorkerResult,
  type ViommuDriverGeneration,
} from '@vmstack/guest-kernel';
import type { HostWorkerResult } from '@vmstack/host-vfio';
import type { DeviceWorkerResult } from '@vmstack/nvme-device';
import type { ClockMode, LockStat, WorkerInfo } from '@vmstack/shm';
import type { VmmWorkerResult } from '@vmstack/vmm';
import type { Topology } from '../topology/topology.js';
import { systemCpuSharePct } from './cpu-share.js';
import type { CallTreeRoot } from './flamegraph.js';
import { lockClassRows, withLockClass } from './lock-classes.js';
import { decodeHistogram, type FioStatusDump, type JobResult, type RunResult } from './result.js';
import { topologyReport } from './topology-report.js';
import { mergeViommuFaults, type ViommuFaultsReport } from './viommu-faults.js';
import {
  type BounceCounters,
  type ComponentWallNs,
  type CpuReport,
  type IotlbCounters,
  type ModelSpeed,
  type ProfileRow,
  type ProfileWhere,
  snakeKeys,
  type VmstackReport,
  type WorkerWaits,
} from './vmstack-report.js';

/** errnos fio reports in a job's err= */
const EIO = 5;
const EILSEQ = 84;

/** What ran and what every worker returned. */
export interface StackRunOutcome {
  /** one per vCPU, in vCPU order */
  jobs: readonly FioJobSpec[];
  /** job name → the job's own options as written in the job file */
  jobOptions: Readonly<Record<string, Record<string, string>>>;
  globalOptions: Record<string, string>;
  strategy: DmaStrategy;
  untrusted: boolean;
  clock: ClockMode;
  transport: 'workers' | 'in-thread';
  driverGeneration: ViommuDriverGeneration;
  /** every worker, in worker order */
  workers: readonly WorkerInfo[];
  /** every worker's result, in worker order (each carries its hand-off counts, `waits`, when it ran in a worker) */
  workerResults: readonly unknown[];
  /** the vCPUs' results, in vCPU order */
  vcpus: readonly VcpuWorkerResult[];
  vmm: VmmWorkerResult;
  host: HostWorkerResult;
  device: DeviceWorkerResult;
  lockStats: readonly LockStat[];
  /** the lazy strategy's flush queue, read after the run; null: no flush queue */
  flushQueue: FlushQueueStats | null;
  /** IOVA pages still allocated after shutdown */
  iovaPagesAllocated: number;
  /** wall-clock ms since the epoch when the run started */
  startedMs: number;
  /** wall ms of the whole run, worker start-up included */
  wallMs: number;
  /** the host's hardware threads (profile hostCpuThreadsCount), for the CPU load as a share of the host */
  hostCpuThreads: number;
  /** the topology the run was given; absent: the default one */
  topology?: Topology;
  /** each component's wall ns in the run, when asked for (StackOptions.timeComponents) */
  componentWallNs?: ComponentWallNs;
  /** a VM with a virtio-iommu: its drives' faults, host to guest */
  viommuFaults?: ViommuFaultsReport;
}

/** The RunResult of a finished run; `carry` holds the drive's written blocks when the device exported them. */
export function assembleRunResult(r: StackRunOutcome): RunResult {
  const { vcpus: vres, vmm, host, device: dev } = r;
  const jobs: JobResult[] = vres.map((x, i) => toJobResult(r.jobs[i], r.jobOptions[r.jobs[i].name] ?? {}, x));
  const loopMs = Math.max(...vres.map((x) => x.job.loopWallMs));
  const simulatedIos = jobs.reduce((s, j) => s + j.read.totalIos + j.write.totalIos, 0);
  const lockStat = r.lockStats.map((l) => withLockClass(snakeKeys(l)));
  const vmstack: VmstackReport = {
    strategy: r.strategy,
    untrusted: r.untrusted,
    clock: r.clock,
    transport: r.transport,
    driver_generation: r.driverGeneration,
    workers: r.workers.map((w, i) => ({ role: w.role, thread_id: w.threadId, waits: workerWaits(r.workerResults[i]) })),
    counters: {
      virtio_iommu: {
        attach: vmm.counters.attach,
        detach: vmm.counters.detach,
        map: vmm.counters.map,
        unmap: vmm.counters.unmap,
        probe: vmm.counters.probe,
        kicks: vmm.counters.kicks,
        errors: vmm.counters.errors,
      },
      vfio: { map_dma: host.stats.mapDmaCalls, unmap_dma: host.stats.unmapDmaCalls, pinned_pages_peak: host.stats.pinnedPagesPeak },
      // the device's result type leaves its IOTLB stats untyped; they are the Iotlb's stats()
      iotlb: dev.iotlb as IotlbCounters,
      nvme: { commands: dev.counters.commands, faults: dev.counters.faults, interrupts: dev.counters.interrupts },
      dma: snakeKeys(sumCounters(vres.map((x) => x.dma))),
      lazy: r.flushQueue ? snakeKeys(r.flushQueue) : null,
      bounce: vres[0].bouncePool ? bounceCounters(vres[0].bouncePool) : null,
      swiotlb: vres.some((x) => x.swiotlb) ? snakeKeys(sumCounters(vres.flatMap((x) => (x.swiotlb ? [x.swiotlb] : [])))) : null,
      copies: {
        cache_bytes: vres.reduce((s, x) => s + x.copies.cachedBytes, 0),
        dram_bytes: vres.reduce((s, x) => s + x.copies.dramBytes, 0),
      },
    },
    lock_stat: lockStat,
    lock_classes: lockClassRows(lockStat),
    profile: profileRows(
      [...vres.map((x) => ['guest', x.profile] as const), ['vmm', vmm.profile] as const, ['host', host.profile] as const],
      jobs.reduce((s, j) => s + j.read.ioBytes + j.write.ioBytes, 0),
    ),
    verify: {
      blocks_checked: vres.reduce((s, x) => s + x.job.verify.blocksChecked, 0),
      corrupt: vres.reduce((s, x) => s + x.job.verify.corrupt, 0),
      overwritten: vres.reduce((s, x) => s + x.job.verify.overwritten, 0),
      never_written: vres.reduce((s, x) => s + x.job.verify.neverWritten, 0),
    },
    leaks: {
      iovas: r.iovaPagesAllocated,
      iova_mappings_in_vmm: vmm.mappingsLeft,
      pinned_pages: host.stats.pinnedPages,
      locked_vm_pages: host.stats.lockedVmPages,
    },
    model_speed: modelSpeed(simulatedIos, Math.max(0, ...jobs.map((j) => j.jobRuntimeNs)), loopMs, r.wallMs, r.componentWallNs),
    cpu: cpuReport(
      vres.map((x) => x.job.busyNs),
      vres.map((x) => x.job.endNs - x.job.startNs),
      r.hostCpuThreads,
    ),
    ...(r.topology ? { topology: topologyReport(r.topology) } : {}),
    ...(r.viommuFaults ? { virtio_iommu: { faults: r.viommuFaults } } : {}),
  };
  const statusDumps = statusDumpsOf(r, jobs);
  return {
    carry: dev.namespaceBlocks ? { namespaceBlocks: dev.namespaceBlocks } : undefined,
    callTrees: callTreeRoots(vres, vmm, host),
    ...(statusDumps ? { statusDumps } : {}),
    endNs: Math.max(0, ...vres.map((x) => x.job.endNs)),
    timestampMs: r.startedMs,
    globalOptions: r.globalOptions,
    jobs,
    vmstack,
  };
}

/**
 * fio's status dumps (--status-interval) from the copies each vCPU kept: at every boundary one of them
 * reached before its job ended, each job's copy there, or its final numbers when it had ended by then.
 */
function statusDumpsOf(r: StackRunOutcome, finals: readonly JobResult[]): FioStatusDump[] | undefined {
  const vres = r.vcpus;
  if (!vres.some((x) => x.job.statusDumps)) return undefined;
  const times = [...new Set(vres.flatMap((x) => (x.job.statusDumps ?? []).map((d) => d.atNs)))].sort((a, b) => a - b);
  return times.map((atNs) => ({
    atNs,
    jobs: vres.map((x, i) => {
      const snap = x.job.statusDumps?.find((d) => d.atNs === atNs);
      return snap ? toJobResult(r.jobs[i], r.jobOptions[r.jobs[i].name] ?? {}, { ...x, job: snap }) : finals[i];
    }),
  }));
}

/** One job's fio numbers from its vCPU's result. */
export function toJobResult(job: FioJobSpec, jobOptions: Record<string, string>, r: VcpuWorkerResult): JobResult {
  const dir = (d: VcpuWorkerResult['job']['read']) => ({
    ioBytes: d.ioBytes,
    totalIos: d.ios,
    runtimeNs: d.ios > 0 ? d.lastCompleteNs - d.firstSubmitNs : 0,
    slatNs: decodeHistogram(d.slat),
    clatNs: decodeHistogram(d.clat),
    latNs: decodeHistogram(d.lat),
  });
  const { read: fioRead, write: fioWrite, ...fio } = r.job.stat;
  const runtimeNs = r.job.endNs - r.job.startNs;
  return {
    jobname: job.name,
    // fio's groupid is the reporting group (stonewall and new_group start one)
    groupid: job.reportGroupId,
    jobOptions,
    rw: job.rw,
    blockSizeBytes: job.blockSizeBytes,
    read: { ...dir(r.job.read), fio: fioRead },
    write: { ...dir(r.job.write), fio: fioWrite },
    jobRuntimeNs: runtimeNs,
    usrCpuPct: 0,
    // the profile does not split fio's user-space share out of fioSubmitNs / fioReapPerIoNs:
    // every busy model ns of the vCPU is reported as sys, none as usr
    sysCpuPct: runtimeNs > 0 ? (100 * r.job.busyNs) / runtimeNs : 0,
    ctx: fio.ctx,
    // an errno, as fio's err=: EIO for failed commands, EILSEQ for verify failures
    error: r.job.errors > 0 ? EIO : r.job.verify.corrupt + r.job.verify.overwritten + r.job.verify.neverWritten > 0 ? EILSEQ : 0,
    iodepth: job.iodepth,
    verify: r.job.verify,
    fio,
    disk: `nvme${job.filename === undefined ? 0 : (nvmeFilenameDevice(job.filename) ?? 0)}n1`,
  };
}

/**
 * The flame graph's roots: each vCPU's call tree, and the VMM's. The host's
 * VFIO work runs in the VMM thread's ioctl and is already drawn under the
 * VMM's handlers; the host is a root of its own only when no VMM called it.
 */
function callTreeRoots(vres: readonly VcpuWorkerResult[], vmm: VmmWorkerResult, host: HostWorkerResult): CallTreeRoot[] {
  const roots: CallTreeRoot[] = vres.map((x, i) => ({ name: `guest/vcpu${i}`, where: 'guest', tree: x.callTree }));
  if (vmm.callTree.length > 0) roots.push({ name: 'vmm', where: 'vmm', tree: vmm.callTree });
  else if (host.callTree.length > 0) roots.push({ name: 'host', where: 'host', tree: host.callTree });
  return roots;
}

/** A component's profile as its worker returns it: function → calls, total and self model ns. */
type WorkerProfile = Readonly<Record<string, { calls: number; ns: number; selfNs: number }>>;

/**
 * Per function, summed over every source (each vCPU, the VMM, the host):
 * calls, total and self model ns, and both per GB the jobs moved. A function
 * is reported where it first appears.
 */
export function profileRows(sources: readonly (readonly [ProfileWhere, WorkerProfile])[], totalBytes: number): Record<string, ProfileRow> {
  const profile: Record<string, ProfileRow> = {};
  for (const [where, p] of sources) {
    for (const [fn, e] of Object.entries(p)) {
      const x = (profile[fn] ??= { calls: 0, ns: 0, self_ns: 0, ns_per_gb: 0, self_ns_per_gb: 0, where });
      x.calls += e.calls;
      x.ns += e.ns;
      x.self_ns += e.selfNs;
    }
  }
  for (const x of Object.values(profile)) {
    x.ns_per_gb = totalBytes > 0 ? (x.ns / totalBytes) * 1e9 : 0;
    x.self_ns_per_gb = totalBytes > 0 ? (x.self_ns / totalBytes) * 1e9 : 0;
  }
  return profile;
}

/** Every row's counters added up, key by key, in the first row's key order. */
function sumCounters<T extends { readonly [K in keyof T]: number }>(rows: readonly T[]): T {
  const out: Record<string, number> = {};
  for (const row of rows) for (const [k, v] of Object.entries(row)) if (typeof v === 'number') out[k] = (out[k] ?? 0) + v;
  return out as T;
}

/**
 * The pool is shared: its counters live in shared memory. vCPU 0 reads them
 * last, after every other vCPU finished and after it tore the pool down.
 */
function bounceCounters(s: BouncePoolStats): BounceCounters {
  return {
    hits: s.hits,
    misses: s.misses,
    fallbacks: s.fallbacks,
    evictions: s.evictions,
    exhausted: s.exhausted,
    oversize: s.oversize,
    bytes_copied_to_device: s.bytesCopiedToDevice,
    bytes_copied_from_device: s.bytesCopiedFromDevice,
    slots_in_use_peak: s.slotsInUsePeak,
    slots_cached: s.slotsCached,
    memory_bytes_current: s.memoryBytesCurrent,
    memory_bytes_peak: s.memoryBytesPeak,
    always_bounce_limit_bytes: s.alwaysBounceLimitBytes,
  };
}

/**
 * The model's own speed: simulated I/Os per wall second of the job loop, and simulated time
 * per wall time (above 1: the model runs faster than the time it simulates).
 */
function modelSpeed(simulatedIos: number, simulatedNs: number, loopMs: number, runWallMs: number, componentWallNs?: ComponentWallNs): ModelSpeed {
  const loopWallMs = Math.max(loopMs, 1e-3);
  const perIo = (ns: number) => Math.round(ns / Math.max(simulatedIos, 1));
  return {
    ...(componentWallNs
      ? {
          component_wall_ns: componentWallNs,
          component_wall_ns_per_io: {
            guest: perIo(componentWallNs.guest),
            vmm: perIo(componentWallNs.vmm),
            host: perIo(componentWallNs.host),
            device: perIo(componentWallNs.device),
          },
        }
      : {}),
    simulated_ios: simulatedIos,
    simulated_ns: simulatedNs,
    run_wall_ms: Math.round(runWallMs),
    job_loop_wall_ms: Math.round(loopMs),
    simulated_ios_per_wall_s: Math.round(simulatedIos / (loopWallMs / 1000)),
    sim_time_per_wall_time: Number((simulatedNs / (loopWallMs * 1e6)).toPrecision(4)),
  };
}

/** A worker's hand-off counts, which the worker lifecycle adds to its result; null when it ran in this thread. */
function workerWaits(result: unknown): WorkerWaits | null {
  const waits = (result as { waits?: { parks: number; spinsWon: number; notifiesSent: number; parkedNs: number; runNs: number } } | null)?.waits;
  return waits ? snakeKeys(waits) : null;
}

/**
 * One RunResult from the per-VM results of a run (each assembled by
 * assembleRunResult from its VM's workers): the jobs back in the run's job
 * order, and with several VMs a report whose counters, verify, leaks and
 * profile are summed over the VMs, whose lock_stat lists every VM's rows
 * (each VM's names carry its prefix) and whose `vms` keeps each VM's own.
 * `vms[k].jobs` are the run-wide job indices VM k ran, in its vCPU order.
 */
export function mergeVmResults(results: readonly RunResult[], vms: readonly { id: string; jobs: readonly number[] }[]): RunResult {
  const jobs: JobResult[] = [];
  vms.forEach((vm, k) => {
    vm.jobs.forEach((j, v) => {
      jobs[j] = results[k].jobs[v];
    });
  });
  if (results.length === 1) return { ...results[0], jobs };
  const reports = results.map((r) => r.vmstack);
  const first = reports[0];
  const totalBytes = jobs.reduce((s, j) => s + j.read.ioBytes + j.write.ioBytes, 0);
  const profile: Record<string, ProfileRow> = {};
  for (const r of reports)
    for (const [fn, row] of Object.entries(r.profile)) {
      const x = (profile[fn] ??= { ...row, calls: 0, ns: 0, self_ns: 0 });
      x.calls += row.calls;
      x.ns += row.ns;
      x.self_ns += row.self_ns;
    }
  for (const x of Object.values(profile)) {
    x.ns_per_gb = totalBytes > 0 ? (x.ns / totalBytes) * 1e9 : 0;
    x.self_ns_per_gb = totalBytes > 0 ? (x.self_ns / totalBytes) * 1e9 : 0;
  }
  const simulatedIos = reports.reduce((s, r) => s + r.model_speed.simulated_ios, 0);
  const loopMs = Math.max(...reports.map((r) => r.model_speed.job_loop_wall_ms));
  const lockStat = reports.flatMap((r) => r.lock_stat);
  // each VM's vCPUs in job order: the CPU report over the whole run
  const busyNs: number[] = [];
  const runNs: number[] = [];
  vms.forEach((vm, k) => {
    vm.jobs.forEach((j, v) => {
      busyNs[j] = reports[k].cpu.busy_ns[v];
      runNs[j] = jobs[j].jobRuntimeNs;
    });
  });
  const vmstack: VmstackReport = {
    ...first,
    counters: sumDeep(reports.map((r) => r.counters)),
    lock_stat: lockStat,
    lock_classes: lockClassRows(lockStat),
    profile,
    verify: sumDeep(reports.map((r) => r.verify)),
    leaks: sumDeep(reports.map((r) => r.leaks)),
    model_speed: modelSpeed(
      simulatedIos,
      Math.max(...reports.map((r) => r.model_speed.simulated_ns)),
      loopMs,
      first.model_speed.run_wall_ms,
      first.model_speed.component_wall_ns && sumDeep(reports.map((r) => r.model_speed.component_wall_ns as ComponentWallNs)),
    ),
    cpu: cpuReport(busyNs, runNs, first.cpu.host_cpu_threads),
    ...(reports.some((r) => r.virtio_iommu)
      ? { virtio_iommu: { faults: mergeViommuFaults(reports.flatMap((r) => (r.virtio_iommu ? [r.virtio_iommu.faults] : []))) } }
      : {}),
    vms: reports.map((r, k) => ({
      id: vms[k].id,
      strategy: r.strategy,
      untrusted: r.untrusted,
      driver_generation: r.driver_generation,
      jobs: [...vms[k].jobs],
      counters: r.counters,
      verify: r.verify,
      leaks: r.leaks,
    })),
  };
  // each VM's roots, named after the VM
  const callTrees = results.flatMap((r, k) => (r.callTrees ?? []).map((root) => ({ ...root, name: `${vms[k].id}/${root.name}` })));
  return { timestampMs: results[0].timestampMs, globalOptions: results[0].globalOptions, jobs, vmstack, callTrees };
}

/** The CPU report from each vCPU's busy and job time (model ns), in job order. */
function cpuReport(busyNs: readonly number[], jobNs: readonly number[], hostCpuThreads: number): CpuReport {
  const spanNs = Math.max(0, ...jobNs);
  return {
    busy_ns: [...busyNs],
    busy_pct: busyNs.map((b, i) => (jobNs[i] > 0 ? (100 * b) / jobNs[i] : 0)),
    span_ns: spanNs,
    host_cpu_threads: hostCpuThreads,
    host_share_pct: spanNs > 0 ? systemCpuSharePct(busyNs, spanNs, hostCpuThreads) : 0,
  };
}

/** Objects of the same shape added up: numbers summed, nested objects summed key by key, null where every row has null; one row is itself. */
export function sumDeep<T>(rows: readonly T[]): T {
  const add = (a: unknown, b: unknown): unknown => {
    if (a === null || a === undefined) return b;
    if (b === null || b === undefined) return a;
    if (typeof a === 'number' && typeof b === 'number') return a + b;
    if (typeof a === 'object' && typeof b === 'object') {
      const out: Record<string, unknown> = { ...(a as Record<string, unknown>) };
      for (const [k, v] of Object.entries(b as Record<string, unknown>)) out[k] = add(out[k], v);
      return out;
    }
    return a;
  };
  return rows.reduce((acc: unknown, r) => add(acc, r), null) as T;
}
