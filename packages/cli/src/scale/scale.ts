/**
 * `vmstack scale`: one run dimension varied (`--vary`, scale/vary.ts), per
 * strategy. Each point is one run; from it scale reports the aggregate
 * throughput and IOPS, the completion-latency percentiles of all its jobs
 * together, and what the locks cost per lock class (report/lock-classes.ts):
 *
 * - the big and host-wide classes (`SCALE_LOCK_CLASSES`: viommu->request_lock,
 *   the VMM's viommu_dev->mutex, the container's iommu->lock, the IOMMU
 *   unit's qi->q_lock, the host's mmap_lock) whenever the run acquired them;
 * - any other class (the guest's allocators, pools and queues) that waited.
 *
 * A class the run did not have, or did not acquire, is absent from the point.
 */

import type { DmaStrategy } from '@vmstack/guest-kernel';
import type { RunArgs } from '../commands/run.js';
import { fioPercentiles } from '../report/fio-json.js';
import { chartGrid, escapeHtml, htmlPage, htmlTable, type LineSeries, lineChartSvg } from '../report/html.js';
import { lockClassesHtml } from '../report/lock-classes.js';
import { RunProgress } from '../report/progress.js';
import { createLatencyHistogram, histogramBuckets, type JobResult, mergeHistograms, type RunResult } from '../report/result.js';
import type { LockClassRow } from '../report/vmstack-report.js';
import { runStack, type StackOptions } from '../stack/run-stack.js';
import type { Vary, VaryDim } from './vary.js';

/** The big and host-wide lock classes: reported at every point that acquired them. */
export const SCALE_LOCK_CLASSES = ['viommu->request_lock', 'viommu_dev->mutex', 'iommu->lock', 'qi->q_lock', 'mmap_lock'] as const;

/** The clat percentiles scale reports. */
export const SCALE_CLAT_PERCENTILES = [50, 99, 99.9] as const;

/** One point to run: the strategy, the varied value, and what runOptionsOf made of run's arguments with them set. */
export interface ScalePointPlan {
  strategy: DmaStrategy;
  /** the varied dimension's value as written */
  value: string;
  /** the value on the charts' x axis (bs in bytes) */
  x: number;
  args: RunArgs;
  stack: StackOptions;
}

/** What one lock class cost at one point. */
export interface ScaleLockClass {
  class: string;
  acquisitions: number;
  contentions: number;
  /** model ns every instance of the class waited, all together */
  waittimeTotalNs: number;
}

export interface ScalePoint {
  strategy: DmaStrategy;
  value: string;
  x: number;
  /** bytes of every job / the longest job's runtime */
  aggregateMibPerS: number;
  iops: number;
  /** completion latency of every I/O of every job, reads and writes together (fio's clat percentiles) */
  clatP50Ns: number;
  clatP99Ns: number;
  clatP999Ns: number;
  /** the classes scale reports (see the header), big classes first */
  locks: ScaleLockClass[];
  /** every lock class of the run, as the run's report has them */
  lockClasses: LockClassRow[];
  simulatedIosPerWallS: number;
}

export interface ScaleResult {
  profile: string;
  /** the base run, in words */
  workload: string;
  dim: VaryDim;
  /** the run option the dimension sets */
  option: string;
  values: string[];
  strategies: DmaStrategy[];
  /** strategy by strategy, each in the order of `values` */
  points: ScalePoint[];
}

/** What a scale's report needs beside its points (JSON: it travels in an --emit-jobs manifest): the result without `points`. */
export type ScaleContext = Omit<ScaleResult, 'points'>;

export function scaleContextOf(vary: Vary, plans: readonly ScalePointPlan[]): ScaleContext {
  const first = plans[0];
  return {
    profile: first.stack.profile.name,
    workload: describeWorkload(vary, first),
    dim: vary.dim,
    option: vary.option,
    values: vary.values,
    strategies: [...new Set(plans.map((p) => p.strategy))],
  };
}

/** The scale's report from its points, in plan order (a local run, or `vmstack merge`). */
export function assembleScale(c: ScaleContext, points: readonly ScalePoint[]): ScaleResult {
  return { ...c, points: [...points] };
}

export async function runScale(vary: Vary, plans: readonly ScalePointPlan[]): Promise<ScaleResult> {
  const points: ScalePoint[] = [];
  const progress = new RunProgress('scale', plans.length);
  try {
    for (const p of plans) points.push(scalePointOf(p, await progress.track(runStack(p.stack))));
  } finally {
    progress.end();
  }
  return assembleScale(scaleContextOf(vary, plans), points);
}

/** The base run: its fio options as given (the varied one left out), its clock and quantum. */
function describeWorkload(vary: Vary, p: ScalePointPlan): string {
  const fio = Object.entries(p.args.fio)
    .filter(([k]) => k !== vary.option)
    .map(([k, v]) => (v === true ? `--${k}` : `--${k}=${v}`));
  return `fio ${fio.join(' ')} per job, one vCPU per job; clock ${p.args.clock}, quantum ${p.args.quantumNs} ns; varied: ${vary.dim} (run --${vary.option}) = ${vary.values.join(', ')}`;
}

/** One point's numbers from its run. */
export function scalePointOf(p: Pick<ScalePointPlan, 'strategy' | 'value' | 'x'>, r: RunResult): ScalePoint {
  const bytes = r.jobs.reduce((s, j) => s + j.read.ioBytes + j.write.ioBytes, 0);
  const ios = r.jobs.reduce((s, j) => s + j.read.totalIos + j.write.totalIos, 0);
  const spanNs = Math.max(0, ...r.jobs.map((j) => Math.max(j.read.runtimeNs, j.write.runtimeNs)));
  const [p50, p99, p999] = clatPercentilesNs(r.jobs, SCALE_CLAT_PERCENTILES);
  return {
    strategy: p.strategy,
    value: p.value,
    x: p.x,
    aggregateMibPerS: spanNs > 0 ? bytes / 1048576 / (spanNs / 1e9) : 0,
    iops: spanNs > 0 ? ios / (spanNs / 1e9) : 0,
    clatP50Ns: p50,
    clatP99Ns: p99,
    clatP999Ns: p999,
    locks: scaleLockClasses(r.vmstack.lock_classes),
    lockClasses: r.vmstack.lock_classes,
    simulatedIosPerWallS: r.vmstack.model_speed.simulated_ios_per_wall_s,
  };
}

/**
 * fio's clat percentiles of every I/O of `jobs`, reads and writes together:
 * the jobs' histograms merged, then fio's rule (fioPercentiles). 0 for a run
 * with no I/O.
 */
export function clatPercentilesNs(jobs: readonly JobResult[], percentiles: readonly number[]): number[] {
  const all = mergeHistograms(createLatencyHistogram(), ...jobs.flatMap((j) => [j.read.clatNs, j.write.clatNs]));
  const values = fioPercentiles(histogramBuckets(all), percentiles);
  return percentiles.map((_, i) => values[i] ?? 0);
}

/** The classes a point reports: big and host-wide ones acquired, in SCALE_LOCK_CLASSES order, then any other that waited. */
export function scaleLockClasses(classes: readonly LockClassRow[]): ScaleLockClass[] {
  const big = SCALE_LOCK_CLASSES as readonly string[];
  const row = (c: LockClassRow): ScaleLockClass => ({
    class: c.class,
    acquisitions: c.acquisitions,
    contentions: c.contentions,
    waittimeTotalNs: c.waittime_total_ns,
  });
  const bigRows = big.flatMap((name) => classes.filter((c) => c.class === name && c.acquisitions > 0).map(row));
  const waited = classes.filter((c) => !big.includes(c.class) && c.waittime_total_ns > 0).map(row);
  return [...bigRows, ...waited];
}

/** Every class some point reports, big classes first, then in the order they first appear. */
function reportedClasses(r: ScaleResult): string[] {
  const seen = new Set(r.points.flatMap((p) => p.locks.map((l) => l.class)));
  const big = SCALE_LOCK_CLASSES.filter((c) => seen.has(c));
  return [...big, ...[...seen].filter((c) => !(big as string[]).includes(c))];
}

const us = (ns: number, digits = 1) => (ns / 1000).toFixed(digits);

function textTable(head: readonly string[], rows: readonly (readonly string[])[], leftColumns: number): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((x) => x[i].length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((x, i) => (i < leftColumns ? x.padEnd(widths[i]) : x.padStart(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)];
}

/** The columns of the per-point throughput and latency table, in text and HTML. */
function pointHeader(r: ScaleResult): string[] {
  return ['strategy', r.dim, 'MiB/s', 'IOPS', 'clat p50 µs', 'p99 µs', 'p99.9 µs'];
}

/** One point's row of that table. */
function pointCells(p: ScaleResult['points'][number]): string[] {
  return [p.strategy, p.value, p.aggregateMibPerS.toFixed(1), String(Math.round(p.iops)), us(p.clatP50Ns, 2), us(p.clatP99Ns, 2), us(p.clatP999Ns, 2)];
}

/** `normal` output: throughput and latency per point, then lock classes per point. */
export function formatScaleTable(r: ScaleResult): string {
  const perf = textTable(pointHeader(r), r.points.map(pointCells), 2);
  const locks = textTable(
    ['strategy', r.dim, 'lock class', 'acquisitions', 'contentions', 'wait µs'],
    r.points.flatMap((p) => p.locks.map((l) => [p.strategy, p.value, l.class, String(l.acquisitions), String(l.contentions), us(l.waittimeTotalNs)])),
    3,
  );
  return [
    `vmstack scale — profile ${r.profile}`,
    r.workload,
    '',
    ...perf,
    '',
    `lock classes: ${SCALE_LOCK_CLASSES.join(', ')} when acquired; any other class that waited (wait: total model time, all instances)`,
    ...(locks.length > 2 ? locks : ['(no lock class acquired or waited)']),
    '',
  ].join('\n');
}

/** The JSON report: every point, snake_case keys, times in ns. */
export interface ScaleReportJson {
  profile: string;
  workload: string;
  vary: { dim: VaryDim; option: string; values: string[] };
  strategies: DmaStrategy[];
  points: {
    strategy: DmaStrategy;
    value: string;
    x: number;
    aggregate_mib_per_s: number;
    iops: number;
    clat_p50_ns: number;
    clat_p99_ns: number;
    clat_p99_9_ns: number;
    lock_classes: { class: string; acquisitions: number; contentions: number; waittime_total_ns: number }[];
    simulated_ios_per_wall_s: number;
  }[];
}

export function scaleReportJson(r: ScaleResult): ScaleReportJson {
  return {
    profile: r.profile,
    workload: r.workload,
    vary: { dim: r.dim, option: r.option, values: r.values },
    strategies: r.strategies,
    points: r.points.map((p) => ({
      strategy: p.strategy,
      value: p.value,
      x: p.x,
      aggregate_mib_per_s: p.aggregateMibPerS,
      iops: p.iops,
      clat_p50_ns: p.clatP50Ns,
      clat_p99_ns: p.clatP99Ns,
      clat_p99_9_ns: p.clatP999Ns,
      lock_classes: p.locks.map((l) => ({ class: l.class, acquisitions: l.acquisitions, contentions: l.contentions, waittime_total_ns: l.waittimeTotalNs })),
      simulated_ios_per_wall_s: p.simulatedIosPerWallS,
    })),
  };
}

export function formatScaleJson(r: ScaleResult): string {
  return `${JSON.stringify(scaleReportJson(r), null, 2)}\n`;
}

/** The x axis of a dimension: its name, and each value's label as written. */
function xAxis(r: ScaleResult): { label: string; tick: (x: number) => string } {
  const label = {
    jobs: 'fio jobs (one vCPU each)',
    iodepth: 'iodepth per job',
    bs: 'block size',
    vms: 'VMs',
    vcpus: 'vCPUs',
    devices: 'devices',
    viommus: 'virtio-iommus',
  }[r.dim];
  const byX = new Map(r.points.map((p) => [p.x, p.value]));
  return { label, tick: (x) => byX.get(x) ?? String(x) };
}

export function formatScaleHtml(r: ScaleResult): string {
  const axis = xAxis(r);
  const chart = (title: string, yLabel: string, series: LineSeries[], widthPx?: number) =>
    lineChartSvg(title, axis.label, yLabel, series, { xSpacing: 'even', xTickLabel: axis.tick, widthPx });
  // one series per strategy, in the same order (and so the same colour) on every chart
  const perStrategy = (f: (p: ScalePoint) => number): LineSeries[] =>
    r.strategies.map((s) => ({ name: s, points: r.points.filter((p) => p.strategy === s).map((p) => ({ x: p.x, y: f(p) })) }));
  const classes = reportedClasses(r);
  // a class absent at a point did not wait there: the run had no such lock, did not take it, or took it without waiting
  const waitUs = (p: ScalePoint, c: string) => (p.locks.find((l) => l.class === c)?.waittimeTotalNs ?? 0) / 1000;
  const waiting = classes.filter((c) => r.points.some((p) => waitUs(p, c) > 0));
  const quiet = classes.filter((c) => !waiting.includes(c));
  const lockCharts = waiting.map((c) =>
    chart(
      `${c}: total wait`,
      'µs of model time',
      perStrategy((p) => waitUs(p, c)),
      440,
    ),
  );
  return htmlPage(`vmstack scale — profile ${r.profile}`, [
    {
      heading: `Throughput with ${r.dim}`,
      body: `<p class="meta">${escapeHtml(r.workload)}</p>\n${chart(
        'aggregate throughput',
        'MiB/s',
        perStrategy((p) => p.aggregateMibPerS),
      )}`,
    },
    {
      heading: `Completion latency with ${r.dim}`,
      body: `${chart(
        'clat p99, all jobs',
        'µs of model time',
        perStrategy((p) => p.clatP99Ns / 1000),
      )}`,
    },
    {
      heading: `Lock wait per class with ${r.dim}`,
      body: [
        `<p class="meta">Total model time every instance of the class waited, per strategy. ${
          quiet.length > 0 ? `Acquired without waiting at every point: ${escapeHtml(quiet.join(', '))}.` : ''
        }</p>`,
        lockCharts.length > 0 ? chartGrid(lockCharts) : '<p>No lock class waited at any point.</p>',
      ].join('\n'),
    },
    {
      heading: 'Points',
      body: htmlTable(pointHeader(r), r.points.map(pointCells)),
    },
    {
      heading: 'Lock classes',
      body: htmlTable(
        ['strategy', r.dim, 'lock class', 'acquisitions', 'contentions', 'wait µs'],
        r.points.flatMap((p) => p.locks.map((l) => [p.strategy, p.value, l.class, String(l.acquisitions), String(l.contentions), us(l.waittimeTotalNs)])),
        [2],
      ),
    },
    {
      heading: 'Every lock class of every run',
      body: r.points
        .map((p) => `<details><summary>${escapeHtml(`${p.strategy}, ${r.dim} ${p.value}`)}</summary>\n${lockClassesHtml(p.lockClasses)}\n</details>`)
        .join('\n'),
    },
  ]);
}
