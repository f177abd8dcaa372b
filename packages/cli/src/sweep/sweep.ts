/**
 * `vmstack sweep`: throughput against block size for each strategy — the
 * reference workload (fio sequential read, iodepth 64, one job) on every
 * strategy the model has, one topology per cell, serially or through piscina.
 * The pool runs with always_bounce_limit raised to cover the block size, as
 * in `compare`.
 */

import type { DmaStrategy } from '@vmstack/guest-kernel';
import { type CostProfile, DEFAULT_PROFILE_PATH, InputError, loadProfile } from '@vmstack/shm';
import type { CompareTask, CompareTaskResult } from '../compare/experiment.js';
import { runCompareTasks } from '../jobs/local.js';
import { htmlPage, htmlTable, lineChartSvg } from '../report/html.js';
import { RunProgress } from '../report/progress.js';

export interface SweepOptions {
  profilePath?: string;
  strategies: DmaStrategy[];
  blockSizes: { label: string; bytes: number }[];
  sizeBytes: number;
  iodepth: number;
  parallel: number;
}

export interface SweepResult {
  profile: string;
  workload: string;
  cells: CompareTaskResult[];
  blockSizes: { label: string; bytes: number }[];
  wallMs: number;
}

/** What a sweep's report needs beside its runs' results (JSON: it travels in an --emit-jobs manifest). */
export interface SweepContext {
  profile: string;
  blockSizes: { label: string; bytes: number }[];
  sizeBytes: number;
  iodepth: number;
  parallel: number;
}

/** A sweep checked and split into its runs (one per strategy and block size), nothing started. */
export interface SweepPlan {
  context: SweepContext;
  tasks: CompareTask[];
  profile: CostProfile;
  profilePath: string;
}

export function planSweep(o: SweepOptions): SweepPlan {
  const profilePath = o.profilePath ?? DEFAULT_PROFILE_PATH;
  const profile = loadProfile(profilePath);
  if (!Number.isInteger(o.parallel) || o.parallel < 1 || o.parallel > 16)
    throw new InputError('--parallel', o.parallel, 'a whole number of threads from 1 to 16');
  for (const b of o.blockSizes)
    if (o.sizeBytes < b.bytes * o.iodepth)
      throw new InputError('--size', o.sizeBytes, `at least iodepth × bs = ${b.bytes * o.iodepth} bytes, so the queue fills`);
  const tasks: CompareTask[] = o.strategies.flatMap((strategy) =>
    o.blockSizes.map((b) => ({ strategy, blockSizeBytes: b.bytes, label: b.label, sizeBytes: o.sizeBytes, iodepth: o.iodepth, profilePath })),
  );
  return {
    context: { profile: profile.name, blockSizes: o.blockSizes, sizeBytes: o.sizeBytes, iodepth: o.iodepth, parallel: o.parallel },
    tasks,
    profile,
    profilePath,
  };
}

export async function runSweep(o: SweepOptions): Promise<SweepResult> {
  const plan = planSweep(o);
  const started = performance.now();
  const cells = await runCompareTasks(plan.tasks, plan.profile, plan.context.parallel, new RunProgress('sweep', plan.tasks.length));
  return assembleSweep(plan.context, cells, performance.now() - started);
}

/** The sweep's report from its runs' results, in task order (a local run, or `vmstack merge`). */
export function assembleSweep(c: SweepContext, cells: readonly CompareTaskResult[], wallMs: number): SweepResult {
  return {
    profile: c.profile,
    workload: `fio --rw=read --direct=1 --ioengine=libaio --iodepth=${c.iodepth} --numjobs=1 --size=${c.sizeBytes}, NVMe via VFIO behind virtio-iommu (driver v5.10)`,
    cells: [...cells],
    blockSizes: c.blockSizes,
    wallMs,
  };
}

export function formatSweepTable(r: SweepResult): string {
  const strategies = [...new Set(r.cells.map((c) => c.strategy))];
  const head = ['block size', ...strategies.map((s) => `${s} MiB/s`)];
  const rows = r.blockSizes.map((b) => [
    b.label,
    ...strategies.map((s) => r.cells.find((c) => c.strategy === s && c.blockSizeBytes === b.bytes)!.mibPerS.toFixed(1)),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((x) => x[i].length)));
  const line = (cells: string[]) => cells.map((x, i) => (i === 0 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join('  ');
  return [
    `vmstack sweep — profile ${r.profile}`,
    r.workload,
    '',
    line(head),
    line(widths.map((w) => '-'.repeat(w))),
    ...rows.map(line),
    '',
    `whole run ${(r.wallMs / 1000).toFixed(1)} s`,
    '',
  ].join('\n');
}

export function formatSweepHtml(r: SweepResult): string {
  const strategies = [...new Set(r.cells.map((c) => c.strategy))];
  const series = strategies.map((s) => ({
    name: s,
    points: r.cells.filter((c) => c.strategy === s).map((c) => ({ x: c.blockSizeBytes / 1024, y: c.mibPerS })),
  }));
  const table = htmlTable(
    ['block size', ...strategies.map((s) => `${s} MiB/s`)],
    r.blockSizes.map((b) => [b.label, ...strategies.map((s) => r.cells.find((c) => c.strategy === s && c.blockSizeBytes === b.bytes)!.mibPerS.toFixed(1))]),
  );
  return htmlPage(`vmstack sweep — profile ${r.profile}`, [
    {
      heading: 'Throughput against block size',
      body: `<p class="meta">${r.workload}</p>\n${lineChartSvg('throughput per strategy', 'block size (KiB)', 'MiB/s', series)}`,
    },
    { heading: 'Table', body: table },
  ]);
}
