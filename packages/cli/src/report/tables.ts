/**
 * The model's own tables for `--output-format normal`, printed after fio's
 * human summary: what `RunResult.vmstack` holds, in the formats kernel people
 * read — never a JSON dump.
 *
 *   vmstack: strategy=… clock=… driver=… workers=…   one line: what ran
 *   lock_stat                                         /proc/lock_stat (formatLockStat of @vmstack/shm)
 *   profile                                           `perf report`-like, one row per modelled function
 *   counters                                          `name value` rows (virtio-iommu, vfio, iotlb, nvme, …)
 *   verify                                            blocks checked, corrupt, overwritten by another job
 *   leaks                                             what was still mapped or pinned after the run
 *   model speed                                       simulated I/Os per second of wall time
 *
 * Profile columns (one row per function, sorted by total model time):
 *
 * | column   | meaning |
 * |----------|---------|
 * | Total µs | model µs spent in the function, all vCPUs, from entry to return (so it includes the profiled functions it calls: `iommu_dma_map_page` contains `viommu_map_pages`, which contains `viommu_sync_req`) |
 * | %run     | Total as a share of the run's vCPU model time (Σ job runtimes) |
 * | Calls    | calls, all vCPUs |
 * | ns/call  | Total / Calls |
 * | ns/GB    | Total per GB (1e9 bytes) the jobs moved |
 *
 * Every section reads its part of `vmstack` defensively and is left out when
 * that part is absent, so a run that reports less still prints what it has.
 */
import { formatLockStat, type LockStat } from '@vmstack/shm';
import type { RunResult } from './result.js';

/** One row of `vmstack.profile` as run-stack fills it. */
export interface ProfileEntry {
  calls: number;
  /** model ns in the function, callees included, all vCPUs */
  ns: number;
  /** model ns in the function itself, profiled callees excluded */
  selfNs?: number;
  /** ns per 1e9 bytes moved by the run's jobs */
  nsPerGB: number;
  /** guest, vmm or host */
  where?: string;
}

/** `vmstack.model_speed`. */
export interface ModelSpeed {
  simulated_ios: number;
  run_wall_ms: number;
  job_loop_wall_ms: number;
  simulated_ios_per_wall_s: number;
}

type Align = 'left' | 'right';

/** Plain text table: a header row, a dashed rule, the rows; columns padded to their widest cell. */
export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[], align: readonly Align[], indent = '  '): string {
  const widths = headers.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (cells: readonly string[]): string =>
    indent + cells.map((cell, c) => (align[c] === 'left' ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ').trimEnd();
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n') + '\n';
}

/** `name value` rows, names left-aligned, values right-aligned. */
export function formatNameValueRows(rows: readonly (readonly [string, string])[], indent = '  '): string {
  if (rows.length === 0) return '';
  const nameWidth = Math.max(...rows.map(([n]) => n.length));
  const valueWidth = Math.max(...rows.map(([, v]) => v.length));
  return rows.map(([n, v]) => `${indent}${n.padEnd(nameWidth)}  ${v.padStart(valueWidth)}`).join('\n') + '\n';
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
export function formatProfileTable(profile: Readonly<Record<string, ProfileEntry>>, runModelNs: number): string {
  const self = (e: ProfileEntry) => e.selfNs ?? e.ns;
  const entries = Object.entries(profile).sort(([an, a], [bn, b]) => self(b) - self(a) || (an < bn ? -1 : an > bn ? 1 : 0));
  let out = '# profile: model time per function (guest: all vCPUs; vmm; host), sorted by self time\n';
  out += "# Self excludes the profiled functions it calls (the VMM's excludes its VFIO calls); %run is Self / the vCPUs' model time\n";
  out += `# (${formatUs(runModelNs)} µs = Σ job runtimes)\n`;
  if (entries.length === 0) return out + '  (no profiled calls)\n';
  const rows = entries.map(([fn, e]) => [
    formatUs(self(e)),
    runModelNs > 0 ? `${((100 * self(e)) / runModelNs).toFixed(2)}%` : '-',
    formatUs(e.ns),
    String(e.calls),
    e.calls > 0 ? (e.ns / e.calls).toFixed(1) : '-',
    String(Math.round(e.nsPerGB)),
    e.where ?? '-',
    fn,
  ]);
  return out + formatTable(['Self µs', '%run', 'Total µs', 'Calls', 'ns/call', 'ns/GB', 'Where', 'Function'], rows, ['right', 'right', 'right', 'right', 'right', 'right', 'left', 'left']);
}

/** The model speed line: simulated I/Os per second of wall time spent in the job loop. */
export function formatModelSpeed(s: ModelSpeed): string {
  return (
    `model speed: ${s.simulated_ios_per_wall_s} simulated I/Os per wall second ` +
    `(${s.simulated_ios} I/Os in ${s.job_loop_wall_ms} ms of job loop; whole run with worker start-up ${s.run_wall_ms} ms)\n`
  );
}

/** Every model table of one run (one barrier group): what `normal` output prints after fio's summary. */
export function formatVmstackTables(result: RunResult): string {
  const v = result.vmstack;
  const sections: string[] = [];

  const what = ['strategy', 'clock', 'driver_generation', 'untrusted']
    .filter((k) => v[k] !== undefined && v[k] !== null)
    .map((k) => `${k === 'driver_generation' ? 'driver' : k}=${formatScalar(v[k])}`);
  if (Array.isArray(v.workers)) what.push(`workers=${v.workers.length}`);
  if (what.length > 0) sections.push(`vmstack: ${what.join(' ')}\n`);

  if (Array.isArray(v.lock_stat)) sections.push(formatLockStat(v.lock_stat as LockStat[]));

  if (isRecord(v.profile)) {
    const runModelNs = result.jobs.reduce((s, j) => s + j.jobRuntimeNs, 0);
    sections.push(formatProfileTable(v.profile as Record<string, ProfileEntry>, runModelNs));
  }

  if (isRecord(v.counters)) sections.push('counters\n' + formatNameValueRows(flattenCounters(v.counters)));

  if (isRecord(v.verify)) {
    const rows: [string, string][] = [];
    if (v.verify.blocks_checked !== undefined) rows.push(['blocks checked', formatScalar(v.verify.blocks_checked)]);
    if (v.verify.corrupt !== undefined) rows.push(['corrupt', formatScalar(v.verify.corrupt)]);
    if (v.verify.overwritten !== undefined) rows.push(['overwritten by another job', formatScalar(v.verify.overwritten)]);
    sections.push('verify\n' + formatNameValueRows(rows));
  }

  if (isRecord(v.leaks)) sections.push('leaks (still mapped or pinned after the run)\n' + formatNameValueRows(flattenCounters(v.leaks)));

  if (isRecord(v.model_speed)) sections.push(formatModelSpeed(v.model_speed as unknown as ModelSpeed));

  return sections.join('\n');
}

/** The tables of a run of one or more barrier groups (one RunResult per group, in order). */
export function formatVmstackReport(groups: readonly RunResult[]): string {
  if (groups.length === 1) return formatVmstackTables(groups[0]);
  return groups.map((g, i) => `==== barrier group ${g.jobs[0]?.groupid ?? i} ====\n\n${formatVmstackTables(g)}`).join('\n');
}

function formatUs(ns: number): string {
  return (ns / 1000).toFixed(2);
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}
