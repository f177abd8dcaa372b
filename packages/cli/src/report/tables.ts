/**
 * The model's own tables for `--output-format normal`, printed after fio's
 * human summary: what `RunResult.vmstack` holds, in the formats kernel people
 * read — never a JSON dump.
 *
 *   vmstack: strategy=… clock=… driver=… untrusted=… workers=…   one line: what ran
 *   lock_stat                                         /proc/lock_stat (formatLockStat of @vmstack/shm)
 *   lock classes                                      lock_stat per class, when some class has several instances
 *   profile                                           `perf report`-like, one row per modelled function
 *   counters                                          `name value` rows (virtio-iommu, vfio, iotlb, nvme, …)
 *   verify                                            blocks checked, corrupt, overwritten by another job, never written
 *   leaks                                             what was still mapped or pinned after the run
 *   model_speed                                       simulated I/Os per wall second, simulated time per wall time
 *
 * Profile columns (one row per function, sorted by self model time):
 *
 * | column   | meaning |
 * |----------|---------|
 * | Total µs | model µs spent in the function, all vCPUs, from entry to return (so it includes the profiled functions it calls: `iommu_dma_map_page` contains `viommu_map_pages`, which contains `viommu_sync_req`) |
 * | %run     | Total as a share of the run's vCPU model time (Σ job runtimes) |
 * | Calls    | calls, all vCPUs |
 * | ns/call  | Total / Calls |
 * | ns/GB    | Total per GB (1e9 bytes) the jobs moved |
 */
import { formatLockStat, type LockStat } from '@vmstack/shm';
import { hasSharedLockClass, LOCK_CLASS_COLUMNS, lockClassCells } from './lock-classes.js';
import type { RunResult } from './result.js';
import type { CpuReport, LockClassRow, LockStatRow, ModelSpeed, ProfileRow } from './vmstack-report.js';

type Align = 'left' | 'right';

/** Plain text table: a header row, a dashed rule, the rows; columns padded to their widest cell. */
export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[], align: readonly Align[], indent = '  '): string {
  const widths = headers.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (cells: readonly string[]): string =>
    indent +
    cells
      .map((cell, c) => (align[c] === 'left' ? cell.padEnd(widths[c]) : cell.padStart(widths[c])))
      .join('  ')
      .trimEnd();
  return `${[line(headers), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n')}\n`;
}

/** `name value` rows, names left-aligned, values right-aligned. */
export function formatNameValueRows(rows: readonly (readonly [string, string])[], indent = '  '): string {
  if (rows.length === 0) return '';
  const nameWidth = Math.max(...rows.map(([n]) => n.length));
  const valueWidth = Math.max(...rows.map(([, v]) => v.length));
  return `${rows.map(([n, v]) => `${indent}${n.padEnd(nameWidth)}  ${v.padStart(valueWidth)}`).join('\n')}\n`;
}

/**
 * Nested counters flattened to `a.b.c value` rows in insertion order; null
 * and undefined entries (a subsystem the run did not use) are left out.
 */
export function flattenCounters(value: unknown, prefix = ''): [string, string][] {
  if (value === null || value === undefined) return [];
  if (typeof value === 'object' && !Array.isArray(value)) {
    return Object.entries(value as Record<string, unknown>).flatMap(([k, v]) => flattenCounters(v, prefix ? `${prefix}.${k}` : k));
  }
  if (Array.isArray(value)) return value.flatMap((v, i) => flattenCounters(v, `${prefix}[${i}]`));
  return [[prefix, formatScalar(value)]];
}

function formatScalar(v: unknown): string {
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toFixed(2);
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  return String(v);
}

/**
 * The per-function profile, in the spirit of `perf report`.
 * @param runModelNs the run's vCPU model time (Σ job runtimes), the base of %run
 */
export function formatProfileTable(profile: Readonly<Record<string, ProfileRow>>, runModelNs: number): string {
  const entries = Object.entries(profile).sort(([an, a], [bn, b]) => b.self_ns - a.self_ns || (an < bn ? -1 : an > bn ? 1 : 0));
  let out = '# profile: model time per function (guest: all vCPUs; vmm; host), sorted by self time\n';
  out += "# Self excludes the profiled functions it calls (the VMM's excludes its VFIO calls); %run is Self / the vCPUs' model time\n";
  out += `# (${formatUs(runModelNs)} µs = Σ job runtimes)\n`;
  if (entries.length === 0) return `${out}  (no profiled calls)\n`;
  const rows = entries.map(([fn, e]) => [
    formatUs(e.self_ns),
    runModelNs > 0 ? `${((100 * e.self_ns) / runModelNs).toFixed(2)}%` : '-',
    formatUs(e.ns),
    String(e.calls),
    e.calls > 0 ? (e.ns / e.calls).toFixed(1) : '-',
    String(Math.round(e.ns_per_gb)),
    e.where,
    fn,
  ]);
  return (
    out +
    formatTable(['Self µs', '%run', 'Total µs', 'Calls', 'ns/call', 'ns/GB', 'Where', 'Function'], rows, [
      'right',
      'right',
      'right',
      'right',
      'right',
      'right',
      'left',
      'left',
    ])
  );
}

/** The per-class table: lock_stat's columns, one row per lock class, times in µs. */
export function formatLockClasses(classes: readonly LockClassRow[]): string {
  return (
    '# lock classes: lock_stat summed over the instances of each class (vm prefix and /qualifier dropped), times in µs\n' +
    formatTable(['class', ...LOCK_CLASS_COLUMNS], classes.map(lockClassCells), ['left', ...LOCK_CLASS_COLUMNS.map(() => 'right' as const)])
  );
}

/** The model_speed line: simulated I/Os per second of wall time spent in the job loop, and simulated time per wall time. */
export function formatModelSpeed(s: ModelSpeed): string {
  return (
    `model_speed: ${s.simulated_ios_per_wall_s} simulated I/Os per wall second, ${s.sim_time_per_wall_time} s simulated per wall second ` +
    `(${s.simulated_ios} I/Os, ${(s.simulated_ns / 1e6).toFixed(3)} ms of model time in ${s.job_loop_wall_ms} ms of job loop; ` +
    `whole run with worker start-up ${s.run_wall_ms} ms)\n`
  );
}

/** Every model table of one run (one barrier group): what `normal` output prints after fio's summary. */
export function formatVmstackTables(result: RunResult): string {
  const v = result.vmstack;
  const runModelNs = result.jobs.reduce((s, j) => s + j.jobRuntimeNs, 0);
  const verify: [string, string][] = [
    ['blocks checked', formatScalar(v.verify.blocks_checked)],
    ['corrupt', formatScalar(v.verify.corrupt)],
    ['overwritten by another job', formatScalar(v.verify.overwritten)],
    ['never written (no verify header)', formatScalar(v.verify.never_written)],
  ];
  return [
    `vmstack: strategy=${v.strategy} clock=${v.clock} driver=${v.driver_generation} untrusted=${formatScalar(v.untrusted)} workers=${v.workers.length}\n`,
    formatLockStat(v.lock_stat.map(lockStatOfRow)),
    ...(hasSharedLockClass(v.lock_classes) ? [formatLockClasses(v.lock_classes)] : []),
    formatProfileTable(v.profile, runModelNs),
    `counters\n${formatNameValueRows(flattenCounters(v.counters))}`,
    `verify\n${formatNameValueRows(verify)}`,
    `leaks (still mapped or pinned after the run)\n${formatNameValueRows(flattenCounters(v.leaks))}`,
    formatCpu(v.cpu),
    formatModelSpeed(v.model_speed),
  ].join('\n');
}

/** The CPU load line: each vCPU's busy share of its job, and all of them as a share of the host (top's view). */
export function formatCpu(c: CpuReport): string {
  return (
    `cpu: busy ${c.busy_pct.map((p) => `${p.toFixed(1)}%`).join(' ')} of each vCPU's job; ` +
    `${c.host_share_pct.toFixed(1)}% of the host's ${c.host_cpu_threads} hardware threads (as top or vmstat would show it)\n`
  );
}

/** The tables of a run of one or more barrier groups (one RunResult per group, in order). */
export function formatVmstackReport(groups: readonly RunResult[]): string {
  if (groups.length === 1) return formatVmstackTables(groups[0]);
  return groups.map((g, i) => `==== barrier group ${g.jobs[0]?.groupid ?? i} ====\n\n${formatVmstackTables(g)}`).join('\n');
}

function formatUs(ns: number): string {
  return (ns / 1000).toFixed(2);
}

/** A lock_stat row of the report as formatLockStat takes it. */
function lockStatOfRow(r: LockStatRow): LockStat {
  return {
    name: r.name,
    kind: r.kind,
    conBounces: r.con_bounces,
    contentions: r.contentions,
    waittimeMinNs: r.waittime_min_ns,
    waittimeMaxNs: r.waittime_max_ns,
    waittimeTotalNs: r.waittime_total_ns,
    waittimeAvgNs: r.waittime_avg_ns,
    acqBounces: r.acq_bounces,
    acquisitions: r.acquisitions,
    holdtimeMinNs: r.holdtime_min_ns,
    holdtimeMaxNs: r.holdtime_max_ns,
    holdtimeTotalNs: r.holdtime_total_ns,
    holdtimeAvgNs: r.holdtime_avg_ns,
    realContentions: r.real_contentions,
    ...(r.read_acquisitions === undefined
      ? {}
      : {
          readConBounces: r.read_con_bounces,
          readContentions: r.read_contentions,
          readWaittimeMinNs: r.read_waittime_min_ns,
          readWaittimeMaxNs: r.read_waittime_max_ns,
          readWaittimeTotalNs: r.read_waittime_total_ns,
          readWaittimeAvgNs: r.read_waittime_avg_ns,
          readAcqBounces: r.read_acq_bounces,
          readAcquisitions: r.read_acquisitions,
          readHoldtimeMinNs: r.read_holdtime_min_ns,
          readHoldtimeMaxNs: r.read_holdtime_max_ns,
          readHoldtimeTotalNs: r.read_holdtime_total_ns,
          readHoldtimeAvgNs: r.read_holdtime_avg_ns,
          readRealContentions: r.read_real_contentions,
        }),
  };
}
