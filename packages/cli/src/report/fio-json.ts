/**
 * fio's `--output-format=json` and `json+`, from a vmstack run (FioRun).
 *
 * Layout, key order, integer/float typing and number formatting follow fio
 * 3.33's stat.c (`show_thread_status_json`, `add_ddir_status_json`,
 * `add_ddir_lat_json`) and json.c (`"key" : value`, 2-space indent, floats as
 * C `%f`). 3.33 is the last release whose per-job keys are exactly the set we
 * emit (3.36 added "job_start", later releases "latency_target_ns" and
 * "latency_window_us"), so "fio version" reads "fio-3.33 (vmstack <version>)":
 * a `fio-X.Y` prefix for parsers keyed on the layout, and never mistakable for
 * a real fio run.
 *
 * Where every value comes from (all times are model time):
 *
 * | key | source |
 * |---|---|
 * | timestamp, timestamp_ms, time | FioRun.timestampMs (time: ctime() format, local zone, as fio) |
 * | eta | 0 (the run is over) |
 * | elapsed | longest jobRuntimeNs of the run, ms rounded up to s (fio: (ms + 999) / 1000) |
 * | io_bytes, total_ios | DirectionResult.ioBytes / totalIos; io_kbytes = io_bytes >> 10 |
 * | runtime (ms) | runtimeNs → µs (truncated) → ms rounded up, as fio's update_runtime() |
 * | bw_bytes, bw, iops | fio's formulas on those integers: 1000·io_bytes/runtime (integer division), bw = bw_bytes/1024, iops = 1000.0·total_ios/runtime |
 * | short_ios, drop_ios | 0: the model never issues short or dropped I/Os |
 * | slat_ns, clat_ns, lat_ns | the job engine's exact io_stats (DirectionResult.fio: min, max, Welford mean and stddev, as fio), so lat's mean is slat's + clat's; percentiles and json+ bins from clat in fio's own buckets (plat_idx_to_val keys); without them, the hdr histograms (below) |
 * | bw_*, iops_* | the engine's samples every bwavgtime / iopsavgtime model ms (default 500; DirectionResult.fio.bw / .iops), else bwSamplesKiBps / iopsSamples (min, max truncated to integers; mean; sample stddev; count; bw_agg as fio); none: fio's no-sample values (all 0) |
 * | sync | no fsync is modelled: total_ios 0, lat_ns all 0 |
 * | job_runtime (ms) | jobRuntimeNs truncated to ms (fio's mtime_since) |
 * | usr_cpu, sys_cpu, ctx | JobResult.usrCpuPct / sysCpuPct / ctx (the times the job's thread slept waiting for a completion) |
 * | majf, minf | 0: the model has no page faults in the job's address space |
 * | iodepth_level | the engine's depth after each submission in fio's buckets (io_u_mark_depth), percent of issued I/Os (stat_calc_dist) |
 * | iodepth_submit, iodepth_complete | I/Os per submit call, completions per reap (io_u_mark_submit / _complete), percent of calls |
 * | latency_ns/us/ms | read+write clat histograms bucketed with fio's io_u_mark_latency() ranges, percent of read+write total_ios (nonzero buckets at least 0.01, as fio) |
 * | latency_depth / target / percentile / window | iodepth / 0 / 100.0 / 0: no latency_target is modelled |
 * | disk_util | per drive as the guest names it (nvme0n1): the jobs' I/Os, ticks and time in queue (ms), merges 0, util = ms with I/O in flight / run ms |
 * | vmstack | FioRun.vmstack verbatim (top-level, last): a VmstackReport, or `{ groups: [...] }` for several barrier groups |
 *
 * Latency statistics from the histograms (3 significant digits): N = count;
 * min / max = lowest / highest value of the lowest / highest non-empty bucket
 * (so they bound the true extremes); mean and stddev (sample, n-1, as fio)
 * over bucket midpoints; percentiles by fio's calc_clat_percentiles() rule —
 * the first bucket whose cumulative count reaches p/100·N (exact rational
 * comparison) — reported as that bucket's midpoint, over fio's default list.
 * As in fio with default options only clat_ns carries "percentile" (and, for
 * json+, "bins": bucket midpoint in ns → count), and only when N > 0. fio's
 * own bins are its log-linear plat buckets; ours are the finer hdr buckets.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type FioIoStat, ioStatDev, plat_idx_to_val, plat_val_to_idx } from '@vmstack/guest-kernel';
import type { DirectionResult, FioStatusRun, Histogram, HistogramBucket, JobResult } from './result.js';
import { histogramBuckets } from './result.js';

/** The fio release whose JSON layout we reproduce. */
export const FIO_LAYOUT_VERSION = 'fio-3.33';

/** fio's default `percentile_list`. */
export const FIO_DEFAULT_PERCENTILES: readonly number[] = [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99];

export interface FioJsonOptions {
  /** json+: add "bins" to clat_ns. */
  plus: boolean;
  /** Overrides the whole "fio version" string. */
  fioVersion?: string;
}

// ---------------------------------------------------------------- statistics

/** fio's io_stat summary of one histogram (ns). */
export interface FioLatStat {
  min: number;
  max: number;
  mean: number;
  stddev: number;
  N: number;
  buckets: HistogramBucket[];
}

export function fioLatStat(h: Histogram): FioLatStat {
  const buckets = histogramBuckets(h);
  let n = 0;
  let sum = 0;
  for (const b of buckets) {
    n += b.count;
    sum += b.valueNs * b.count;
  }
  if (n === 0) return { min: 0, max: 0, mean: 0, stddev: 0, N: 0, buckets };
  const mean = sum / n;
  let s = 0;
  for (const b of buckets) s += b.count * (b.valueNs - mean) ** 2;
  return {
    min: buckets[0].lowNs,
    max: buckets[buckets.length - 1].highNs,
    mean,
    stddev: n > 1 ? Math.sqrt(s / (n - 1)) : 0,
    N: n,
    buckets,
  };
}

/**
 * fio's calc_clat_percentiles(): for each p (ascending), the value of the first
 * bucket at which the running count reaches p/100·N. Empty when N is 0.
 */
export function fioPercentiles(buckets: readonly HistogramBucket[], percentiles: readonly number[] = FIO_DEFAULT_PERCENTILES): number[] {
  const list = [...percentiles].sort((a, b) => a - b);
  const n = buckets.reduce((acc, b) => acc + b.count, 0);
  const out: number[] = [];
  if (n === 0) return out;
  let sum = 0;
  let j = 0;
  for (const b of buckets) {
    sum += b.count;
    while (j < list.length && reachesPercentile(sum, list[j], n)) {
      out.push(b.valueNs);
      j++;
    }
    if (j === list.length) break;
  }
  return out;
}

/** sum ≥ p/100·n, exactly, for the binary value of p (fio computes it in long double). */
function reachesPercentile(sum: number, p: number, n: number): boolean {
  const { mantissa, exponent } = decomposeDouble(p);
  // p = mantissa · 2^exponent  ⇒  compare 100·sum·2^-exponent with mantissa·n
  let lhs = 100n * BigInt(sum);
  let rhs = mantissa * BigInt(n);
  if (exponent < 0) lhs <<= BigInt(-exponent);
  else rhs <<= BigInt(exponent);
  return lhs >= rhs;
}

function decomposeDouble(x: number): { mantissa: bigint; exponent: number } {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const bits = view.getBigUint64(0);
  const biased = Number((bits >> 52n) & 0x7ffn);
  const fraction = bits & ((1n << 52n) - 1n);
  if (biased === 0) return { mantissa: fraction, exponent: -1074 };
  return { mantissa: fraction | (1n << 52n), exponent: biased - 1075 };
}

/** Which latency of a direction: submission, completion, total. */
export type FioLatKind = 'slat' | 'clat' | 'lat';

/**
 * fio's io_stat summary of one latency of a direction. With the job engine's
 * own statistics (dir.fio) min, max, mean and stddev are exact, as fio's, and
 * the buckets are fio's histogram buckets (plat_idx_to_val values, clat only,
 * as fio keeps them by default); without, both come from the hdr histogram.
 */
export function fioDirLatStat(dir: DirectionResult, kind: FioLatKind): FioLatStat {
  const h = kind === 'slat' ? dir.slatNs : kind === 'clat' ? dir.clatNs : dir.latNs;
  const exact = dir.fio?.[kind];
  if (!exact) return fioLatStat(h);
  const buckets = kind === 'clat' && dir.fio ? platBuckets(dir.fio.clatPlat) : fioPlatBucketsOf(h);
  return { ...exactLatStat(exact), buckets };
}

function exactLatStat(is: FioIoStat): Omit<FioLatStat, 'buckets'> {
  if (is.samples === 0) return { min: 0, max: 0, mean: 0, stddev: 0, N: 0 };
  return { min: is.min, max: is.max, mean: is.mean, stddev: ioStatDev(is), N: is.samples };
}

/** fio's buckets ([index, count]) as report buckets: each reported at fio's value for it. */
export function platBuckets(plat: readonly (readonly [number, number])[]): HistogramBucket[] {
  return plat.map(([i, count]) => {
    const v = plat_idx_to_val(i);
    return { lowNs: v, highNs: v, valueNs: v, count };
  });
}

/** An hdr histogram rebucketed into fio's buckets (each hdr bucket by its midpoint). */
export function fioPlatBucketsOf(h: Histogram): HistogramBucket[] {
  const counts = new Map<number, number>();
  for (const b of histogramBuckets(h)) {
    const i = plat_val_to_idx(b.valueNs);
    counts.set(i, (counts.get(i) ?? 0) + b.count);
  }
  return platBuckets([...counts.entries()].sort((a, b) => a[0] - b[0]));
}

/** fio's stat for bw/iops samples: min, max (integers), mean, sample stddev, count. */
export interface FioSampleStat {
  min: number;
  max: number;
  mean: number;
  dev: number;
  samples: number;
}

/** The direction's bw (KiB/s) or IOPS samples: the job engine's, else the given sample list. */
export function fioDirSampleStat(dir: DirectionResult | undefined, kind: 'bw' | 'iops'): FioSampleStat | undefined {
  const is = dir?.fio?.[kind];
  if (is) {
    if (is.samples === 0) return undefined;
    return { min: Math.trunc(is.min), max: Math.trunc(is.max), mean: is.mean, dev: ioStatDev(is), samples: is.samples };
  }
  return fioSampleStat(kind === 'bw' ? dir?.bwSamplesKiBps : dir?.iopsSamples);
}

export function fioSampleStat(samples: readonly number[] | undefined): FioSampleStat | undefined {
  if (!samples || samples.length === 0) return undefined;
  const n = samples.length;
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  for (const v of samples) {
    min = Math.min(min, v);
    max = Math.max(max, v);
    sum += v;
  }
  const mean = sum / n;
  const s = samples.reduce((a, v) => a + (v - mean) ** 2, 0);
  return {
    min: Math.trunc(min),
    max: Math.trunc(max),
    mean,
    dev: n > 1 ? Math.sqrt(s / (n - 1)) : 0,
    samples: n,
  };
}

/** fio's per-direction runtime in ms: ns → µs truncated → ms rounded up (update_runtime()). */
export function fioRuntimeMs(runtimeNs: number): number {
  const us = Math.floor(runtimeNs / 1000);
  return Math.floor((us + 999) / 1000);
}

/** The computed top of one direction, with fio's integer arithmetic. */
export interface FioDirectionTotals {
  ioBytes: number;
  ioKbytes: number;
  runtimeMs: number;
  bwBytes: number;
  bwKiB: number;
  iops: number;
  totalIos: number;
}

export function fioDirectionTotals(dir: DirectionResult): FioDirectionTotals {
  const ioBytes = requireInteger('ioBytes', dir.ioBytes);
  const totalIos = requireInteger('totalIos', dir.totalIos);
  const runtimeMs = fioRuntimeMs(dir.runtimeNs);
  const bwBytes = runtimeMs ? mulDiv(ioBytes, 1000, runtimeMs) : 0;
  return {
    ioBytes,
    ioKbytes: Math.floor(ioBytes / 1024),
    runtimeMs,
    bwBytes,
    bwKiB: Math.floor(bwBytes / 1024),
    iops: runtimeMs ? (1000 * totalIos) / runtimeMs : 0,
    totalIos,
  };
}

/** fio's group_run_stats for one group: index 0 read, 1 write, 2 trim; bandwidths in B/s. */
export interface FioGroupStats {
  groupid: number;
  ioBytes: number[];
  minRunMs: number[];
  maxRunMs: number[];
  minBwBps: number[];
  maxBwBps: number[];
  /** Aggregate bandwidth: group bytes · 1000 / longest runtime. */
  aggBps: number[];
}

export function fioGroupStats(jobs: readonly JobResult[]): Map<number, FioGroupStats> {
  const groups = new Map<number, FioGroupStats>();
  for (const job of jobs) {
    const g = groups.get(job.groupid) ?? {
      groupid: job.groupid,
      ioBytes: [0, 0, 0],
      minRunMs: [0, 0, 0],
      maxRunMs: [0, 0, 0],
      minBwBps: [0, 0, 0],
      maxBwBps: [0, 0, 0],
      aggBps: [0, 0, 0],
    };
    groups.set(job.groupid, g);
    [job.read, job.write].forEach((dir, i) => {
      const t = fioDirectionTotals(dir);
      if (!t.runtimeMs) return;
      const first = g.maxRunMs[i] === 0;
      g.minRunMs[i] = first ? t.runtimeMs : Math.min(g.minRunMs[i], t.runtimeMs);
      g.maxRunMs[i] = Math.max(g.maxRunMs[i], t.runtimeMs);
      g.minBwBps[i] = first ? t.bwBytes : Math.min(g.minBwBps[i], t.bwBytes);
      g.maxBwBps[i] = Math.max(g.maxBwBps[i], t.bwBytes);
      g.ioBytes[i] += t.ioBytes;
    });
  }
  for (const g of groups.values()) {
    for (let i = 0; i < 3; i++) g.aggBps[i] = g.maxRunMs[i] ? mulDiv(g.ioBytes[i], 1000, g.maxRunMs[i]) : 0;
  }
  return groups;
}

/** fio's convert_agg_kbytes_percent(): the job's mean bw sample as percent of the group aggregate. */
export function fioBwAggPercent(group: FioGroupStats | undefined, ddir: number, meanKiBps: number): number {
  const mean = Math.trunc(meanKiBps); // fio passes the mean as an int
  if (!group || group.aggBps[ddir] <= 1024) return 100;
  return Math.min(100, (mean * 100) / (group.aggBps[ddir] / 1024));
}

/** fio's io_u_lat_n / _u / _m distributions of completion latency, percent of issued I/Os. */
export interface FioLatencyDistribution {
  ns: number[];
  us: number[];
  ms: number[];
}

export const FIO_LAT_NS_US_LABELS = ['2', '4', '10', '20', '50', '100', '250', '500', '750', '1000'];
export const FIO_LAT_MS_LABELS = [...FIO_LAT_NS_US_LABELS, '2000', '>=2000'];

export function fioLatencyDistribution(job: JobResult): FioLatencyDistribution {
  const counts = { ns: new Array<number>(10).fill(0), us: new Array<number>(10).fill(0), ms: new Array<number>(12).fill(0) };
  for (const dir of [job.read, job.write]) {
    for (const b of histogramBuckets(dir.clatNs)) {
      const v = b.valueNs;
      if (v < 1000) counts.ns[latIndex(v)] += b.count;
      else if (v < 1_000_000) counts.us[latIndex(Math.floor(v / 1000))] += b.count;
      else counts.ms[latIndex(Math.floor(v / 1_000_000))] += b.count;
    }
  }
  const total = job.read.totalIos + job.write.totalIos;
  const pct = (c: number) => {
    if (!total) return 0;
    const p = (c / total) * 100;
    return p < 0.01 && c ? 0.01 : p;
  };
  return { ns: counts.ns.map(pct), us: counts.us.map(pct), ms: counts.ms.map(pct) };
}

/** io_u_mark_lat_{nsec,usec,msec}: 0-1, 2-3, 4-9, 10-19, 20-49, 50-99, 100-249, 250-499, 500-749, 750-999, 1000-1999, 2000+. */
function latIndex(v: number): number {
  const upper = [2, 4, 10, 20, 50, 100, 250, 500, 750, 1000, 2000];
  const i = upper.findIndex((u) => v < u);
  return i === -1 ? 11 : i;
}

export const FIO_IODEPTH_LABELS = ['1', '2', '4', '8', '16', '32', '>=64'];

/** fio's stat_calc_dist(): counts as percent of `total`, a nonzero count at least 0.1%. */
export function fioCalcDist(map: readonly number[], total: number): number[] {
  if (!total) return map.map(() => 0);
  return map.map((c) => {
    const p = (c / total) * 100;
    return p < 0.1 && c ? 0.1 : p;
  });
}

/** iodepth_level, _submit, _complete in percent, from the job engine's counts (empty when not measured). */
export function fioDepthDistributions(job: JobResult): { level: number[]; submit: number[]; complete: number[] } {
  const f = job.fio;
  if (!f) return { level: [], submit: [], complete: [] };
  return {
    level: fioCalcDist(f.ioUMap, f.totalIoU),
    submit: fioCalcDist(f.ioUSubmit, f.totalSubmit),
    complete: fioCalcDist(f.ioUComplete, f.totalComplete),
  };
}
export const FIO_IODEPTH_SUBMIT_LABELS = ['0', '4', '8', '16', '32', '64', '>=64'];

/** One drive's /proc/diskstats counters over the run, as fio's disk_util reports them. */
export interface FioDiskUtil {
  name: string;
  ios: [number, number];
  merges: [number, number];
  ticks: [number, number];
  inQueue: number;
  /** busy ms / run ms, percent (at most 100) */
  util: number;
}

/**
 * fio's disk_util from the jobs' drives: per drive (as the guest names it)
 * the I/Os, ticks and time in queue summed over its jobs, merges 0 (the
 * model's block layer merges nothing), and util = the ms with I/O in flight
 * (the union of the jobs' busy ranges) over the run's ms. Empty when no job
 * carries the engine's counters.
 */
export function fioDiskUtil(jobs: readonly JobResult[]): FioDiskUtil[] {
  const runMs = Math.floor(jobs.reduce((m, j) => Math.max(m, j.jobRuntimeNs), 0) / 1e6);
  const byDisk = new Map<string, { d: FioDiskUtil; busy: [number, number][] }>();
  for (const job of jobs) {
    const disk = job.fio?.disk;
    if (!disk) continue;
    const name = job.disk ?? 'nvme0n1';
    const e = byDisk.get(name) ?? { d: { name, ios: [0, 0], merges: [0, 0], ticks: [0, 0], inQueue: 0, util: 0 }, busy: [] };
    byDisk.set(name, e);
    for (let i = 0; i < 2; i++) {
      e.d.ios[i] += disk.ios[i];
      e.d.ticks[i] += disk.ticksMs[i];
    }
    e.d.inQueue += disk.inQueueMs;
    e.busy.push(...disk.busyMs);
  }
  return [...byDisk.values()].map(({ d, busy }) => {
    busy.sort((a, b) => a[0] - b[0]);
    let busyMs = 0;
    let end = -1;
    for (const [a, b] of busy) {
      const from = Math.max(a, end);
      if (b > from) busyMs += b - from;
      end = Math.max(end, b);
    }
    return { ...d, util: runMs ? Math.min(100, (100 * Math.min(busyMs, runMs)) / runMs) : 0 };
  });
}

/** C ctime() without the newline, in the local time zone: "Wed Jul  8 09:14:19 2026". */
export function fioCtime(timestampMs: number): string {
  const d = new Date(timestampMs);
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const two = (n: number) => String(n).padStart(2, '0');
  return (
    `${days[d.getDay()]} ${months[d.getMonth()]} ${String(d.getDate()).padStart(2, ' ')} ` +
    `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())} ${d.getFullYear()}`
  );
}

/**
 * C printf("%.<digits>f"). toFixed already rounds the exact binary value, like
 * glibc, except on an exact tie, where glibc rounds to even and toFixed up.
 */
export function cFixed(x: number, digits: number): string {
  if (Number.isFinite(x) && Math.abs(x) < 1e21) {
    const { mantissa, exponent } = decomposeDouble(Math.abs(x));
    if (exponent < 0) {
      // 2·|x|·10^digits = num / den; an exact tie makes that an odd integer
      const num = mantissa * 10n ** BigInt(digits) * 2n;
      const den = 1n << BigInt(-exponent);
      if (num % den === 0n && (num / den) % 2n === 1n) {
        const below = (num / den - 1n) / 2n;
        const even = below % 2n === 0n ? below : below + 1n;
        const s = even.toString().padStart(digits + 1, '0');
        const body = digits ? `${s.slice(0, -digits)}.${s.slice(-digits)}` : s;
        return (x < 0 ? '-' : '') + body;
      }
    }
  }
  return x.toFixed(digits);
}

/** "vmstack-flavoured" version string: `fio-3.33 (vmstack 0.1.0)`. */
export function fioVersionString(): string {
  return `${FIO_LAYOUT_VERSION} (vmstack ${vmstackVersion()})`;
}

let cachedVersion: string | undefined;
function vmstackVersion(): string {
  if (cachedVersion) return cachedVersion;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === '@vmstack/cli' && pkg.version) return (cachedVersion = pkg.version);
    }
    const parent = dirname(dir);
    if (parent === dir) return (cachedVersion = 'unknown');
    dir = parent;
  }
}

function mulDiv(a: number, m: number, d: number): number {
  return Number((BigInt(a) * BigInt(m)) / BigInt(d));
}

function requireInteger(field: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`DirectionResult.${field} must be a non-negative integer, got ${v}`);
  return v;
}

// ---------------------------------------------------------------- JSON object

function latJson(dir: DirectionResult, kind: FioLatKind, plus: boolean): Record<string, unknown> {
  const percentiles = kind === 'clat';
  const s = fioDirLatStat(dir, kind);
  const out: Record<string, unknown> = { min: s.min, max: s.max, mean: s.mean, stddev: s.stddev, N: s.N };
  if (percentiles && s.N > 0) {
    const values = fioPercentiles(s.buckets);
    const pct: Record<string, number> = {};
    FIO_DEFAULT_PERCENTILES.forEach((p, i) => (pct[cFixed(p, 6)] = values[i]));
    out.percentile = pct;
    if (plus) {
      const bins: Record<string, number> = {};
      for (const b of s.buckets) bins[String(b.valueNs)] = b.count;
      out.bins = bins;
    }
  }
  return out;
}

function zeroLat(): Record<string, unknown> {
  return { min: 0, max: 0, mean: 0, stddev: 0, N: 0 };
}

function directionJson(dir: DirectionResult | undefined, group: FioGroupStats | undefined, ddir: number, plus: boolean) {
  const t = dir ? fioDirectionTotals(dir) : undefined;
  const bw = fioDirSampleStat(dir, 'bw');
  const iops = fioDirSampleStat(dir, 'iops');
  return {
    io_bytes: t?.ioBytes ?? 0,
    io_kbytes: t?.ioKbytes ?? 0,
    bw_bytes: t?.bwBytes ?? 0,
    bw: t?.bwKiB ?? 0,
    iops: t?.iops ?? 0,
    runtime: t?.runtimeMs ?? 0,
    total_ios: t?.totalIos ?? 0,
    short_ios: 0,
    drop_ios: 0,
    slat_ns: dir ? latJson(dir, 'slat', plus) : zeroLat(),
    clat_ns: dir ? latJson(dir, 'clat', plus) : zeroLat(),
    lat_ns: dir ? latJson(dir, 'lat', plus) : zeroLat(),
    bw_min: bw?.min ?? 0,
    bw_max: bw?.max ?? 0,
    bw_agg: bw ? fioBwAggPercent(group, ddir, bw.mean) : 0,
    bw_mean: bw?.mean ?? 0,
    bw_dev: bw?.dev ?? 0,
    bw_samples: bw?.samples ?? 0,
    iops_min: iops?.min ?? 0,
    iops_max: iops?.max ?? 0,
    iops_mean: iops?.mean ?? 0,
    iops_stddev: iops?.dev ?? 0,
    iops_samples: iops?.samples ?? 0,
  };
}

function labelled(labels: readonly string[], values: (label: string, i: number) => number): Record<string, number> {
  const out: Record<string, number> = {};
  labels.forEach((l, i) => (out[l] = values(l, i)));
  return out;
}

function jobJson(job: JobResult, group: FioGroupStats | undefined, elapsedS: number, plus: boolean) {
  const out: Record<string, unknown> = {
    jobname: job.jobname,
    groupid: job.groupid,
    error: job.error,
    eta: 0,
    elapsed: elapsedS,
  };
  if (Object.keys(job.jobOptions).length) out['job options'] = { ...job.jobOptions };
  out.read = directionJson(job.read, group, 0, plus);
  out.write = directionJson(job.write, group, 1, plus);
  out.trim = directionJson(undefined, group, 2, plus);
  out.sync = { total_ios: 0, lat_ns: zeroLat() };
  const lat = fioLatencyDistribution(job);
  const depth = fioDepthDistributions(job);
  Object.assign(out, {
    job_runtime: Math.floor(job.jobRuntimeNs / 1e6),
    usr_cpu: job.usrCpuPct,
    sys_cpu: job.sysCpuPct,
    ctx: job.ctx,
    majf: 0,
    minf: 0,
    iodepth_level: labelled(FIO_IODEPTH_LABELS, (l, i) => depth.level[i] ?? job.iodepthLevels?.[l] ?? 0),
    iodepth_submit: labelled(FIO_IODEPTH_SUBMIT_LABELS, (_, i) => depth.submit[i] ?? 0),
    iodepth_complete: labelled(FIO_IODEPTH_SUBMIT_LABELS, (_, i) => depth.complete[i] ?? 0),
    latency_ns: labelled(FIO_LAT_NS_US_LABELS, (_, i) => lat.ns[i]),
    latency_us: labelled(FIO_LAT_NS_US_LABELS, (_, i) => lat.us[i]),
    latency_ms: labelled(FIO_LAT_MS_LABELS, (_, i) => lat.ms[i]),
    latency_depth: job.iodepth,
    latency_target: 0,
    latency_percentile: 100,
    latency_window: 0,
  });
  return out;
}

/** The fio JSON (json+ with `plus`) document as a plain object, keys in fio's order. */
export function toFioJson(result: FioStatusRun, opts: FioJsonOptions): Record<string, unknown> {
  const groups = fioGroupStats(result.jobs);
  const longestNs = result.jobs.reduce((m, j) => Math.max(m, j.jobRuntimeNs), 0);
  const elapsedS = Math.floor((Math.floor(longestNs / 1e6) + 999) / 1000);
  const out: Record<string, unknown> = {
    'fio version': opts.fioVersion ?? fioVersionString(),
    timestamp: Math.floor(result.timestampMs / 1000),
    timestamp_ms: Math.floor(result.timestampMs),
    time: fioCtime(result.timestampMs),
  };
  if (Object.keys(result.globalOptions).length) out['global options'] = { ...result.globalOptions };
  out.jobs = result.jobs.map((j) => jobJson(j, groups.get(j.groupid), elapsedS, opts.plus));
  out.disk_util = fioDiskUtil(result.jobs).map((d) => ({
    name: d.name,
    read_ios: d.ios[0],
    write_ios: d.ios[1],
    read_merges: d.merges[0],
    write_merges: d.merges[1],
    read_ticks: d.ticks[0],
    write_ticks: d.ticks[1],
    in_queue: d.inQueue,
    util: d.util,
  }));
  if (result.vmstack !== undefined) out.vmstack = result.vmstack;
  return out;
}

// ---------------------------------------------------------------- printing

/** Keys fio writes with json_object_add_value_float (printed "%f"); everything else numeric is an integer. */
const FLOAT_KEYS = new Set([
  'iops',
  'bw_agg',
  'bw_mean',
  'bw_dev',
  'iops_mean',
  'iops_stddev',
  'cachehit',
  'mean',
  'stddev',
  'usr_cpu',
  'sys_cpu',
  'latency_percentile',
  'util',
  'aggr_util',
]);
/** Objects whose every value is a float. */
const FLOAT_OBJECTS = new Set(['iodepth_level', 'iodepth_submit', 'iodepth_complete', 'latency_ns', 'latency_us', 'latency_ms']);

/** fio's json.c printer: `"key" : value`, 2-space indent, floats as %f. "vmstack" is printed as plain JSON. */
export function formatFioJson(result: FioStatusRun, opts: FioJsonOptions): string {
  const doc = toFioJson(result, opts);
  const { vmstack, ...fio } = doc;
  // a status dump (--status-interval) has fio's keys only: the model's counters are the run's, at its end
  const plain = vmstack === undefined ? undefined : (JSON.parse(JSON.stringify(vmstack)) as unknown);
  const body = printObject(plain === undefined ? fio : { ...fio, vmstack: plain }, 0, '', true);
  return `${body}\n`;
}

function printValue(v: unknown, level: number, parentKey: string, key: string, fioTyped: boolean): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'boolean') return String(v);
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new RangeError(`fio JSON: ${parentKey}.${key} is ${v}`);
    if (fioTyped && (FLOAT_KEYS.has(key) || FLOAT_OBJECTS.has(parentKey))) return cFixed(v, 6);
    return String(v);
  }
  if (Array.isArray(v)) return printArray(v, level, key, fioTyped);
  return printObject(v as Record<string, unknown>, level, key, fioTyped && key !== 'vmstack');
}

function printObject(obj: Record<string, unknown>, level: number, name: string, fioTyped: boolean): string {
  const pad = '  '.repeat(level + 1);
  const entries = Object.entries(obj).filter(([, v]) => v !== undefined);
  const lines = entries.map(([k, v]) => `${pad}"${escapeKey(k)}" : ${printValue(v, level + 1, name, k, fioTyped && k !== 'vmstack')}`);
  return `{\n${lines.join(',\n')}\n${'  '.repeat(level)}}`;
}

function printArray(arr: unknown[], level: number, name: string, fioTyped: boolean): string {
  const pad = '  '.repeat(level + 1);
  const lines = arr.map((v) => `${pad}${printValue(v, level + 1, name, '', fioTyped)}`);
  return `[\n${lines.join(',\n')}\n${'  '.repeat(level)}]`;
}

function escapeKey(k: string): string {
  return JSON.stringify(k).slice(1, -1);
}
