/**
 * `vmstack compare`: the reference experiment both ways, as a table.
 * Runs serially, or in parallel through piscina (one topology per task);
 * with the virtual clock both give the same table.
 */

import type { DmaStrategy } from '@vmstack/guest-kernel';
import { type CostProfile, DEFAULT_PROFILE_PATH, InputError, loadProfile } from '@vmstack/shm';
import { runCompareTasks } from '../jobs/local.js';
import { barChartSvg, htmlPage, htmlTable } from '../report/html.js';
import { RunProgress } from '../report/progress.js';
import type { StackOptions } from '../stack/run-stack.js';
import { type CompareCell, type CompareCellResult, runCompareCells } from './cells.js';
import { type CompareRow, type CompareTask, type CompareTaskResult, RATIO_TOLERANCE, REFERENCE_ROWS } from './experiment.js';

export interface CompareOptions {
  profilePath?: string;
  /** bytes read per run (per block size); default 32 MiB */
  sizeBytes?: number;
  iodepth?: number;
  /** 1 = serial in this thread; more = a piscina pool of that many threads */
  parallel?: number;
  /** subset of block sizes, e.g. ['4k', '128k'] */
  blockSizes?: string[];
  /**
   * A cell's run as `vmstack run` builds it from compare's command line (the
   * model and topology options given, the cell's fio job and strategy); the
   * cells then carry the CPU, IOMMU and copy figures too. Without it, the
   * cells are the default topology with the profile at `profilePath`.
   */
  stackFor?: (strategy: DmaStrategy, row: CompareRow, sizeBytes: number, iodepth: number) => StackOptions;
  /** what the model options given change from the reference setup, for the experiment line */
  modelOptionsText?: string;
}

export interface CompareTableRow {
  blockSize: string;
  blockSizeBytes: number;
  strictMiBps: number;
  poolMiBps: number;
  modelRatio: number;
  referenceRatio: number;
  errorPct: number;
  withinTolerance: boolean;
  strict: CompareTaskResult | CompareCellResult;
  pool: CompareTaskResult | CompareCellResult;
}

export interface CompareResult {
  profile: string;
  experiment: string;
  tolerancePct: number;
  rows: CompareTableRow[];
  wallMs: number;
  parallel: number;
}

/** What a comparison's report needs beside its runs' results (JSON: it travels in an --emit-jobs manifest). */
export interface CompareContext {
  profile: string;
  sizeBytes: number;
  iodepth: number;
  parallel: number;
  /** the rows' block sizes, as REFERENCE_ROWS labels them */
  labels: string[];
  /** the virtio-iommu driver generation, or bare metal (the experiment line) */
  driver: string;
  bareMetal: boolean;
  modelOptionsText?: string;
}

/**
 * A comparison checked and split into its runs (strict and bounce per row),
 * nothing started: `cells` (each a whole run's stack options) when
 * `stackFor` was given, else `tasks` (the default topology).
 */
export interface ComparePlan {
  context: CompareContext;
  tasks: CompareTask[];
  cells: CompareCell[] | null;
  profile: CostProfile;
  profilePath: string;
}

export function planCompare(o: CompareOptions = {}): ComparePlan {
  const profilePath = o.profilePath ?? DEFAULT_PROFILE_PATH;
  const profile = loadProfile(profilePath); // validate before starting anything
  const sizeBytes = o.sizeBytes ?? 32 * 1024 * 1024;
  const iodepth = o.iodepth ?? 64;
  const parallel = o.parallel ?? 1;
  if (!Number.isInteger(parallel) || parallel < 1 || parallel > 16) throw new InputError('--parallel', parallel, 'a whole number of threads from 1 to 16');
  const labels = REFERENCE_ROWS.map((r) => r.label);
  for (const b of o.blockSizes ?? []) if (!labels.includes(b)) throw new InputError('--bs', b, `one of the reference block sizes: ${labels.join(', ')}`);
  const rows = REFERENCE_ROWS.filter((r) => !o.blockSizes || o.blockSizes.includes(r.label));
  for (const r of rows)
    if (sizeBytes < r.blockSizeBytes * iodepth)
      throw new InputError('--size', sizeBytes, `at least iodepth × bs = ${r.blockSizeBytes * iodepth} bytes, so the queue fills`);
  const tasks: CompareTask[] = rows.flatMap((r) =>
    (['strict', 'bounce'] as const).map((strategy) => ({ strategy, blockSizeBytes: r.blockSizeBytes, label: r.label, sizeBytes, iodepth, profilePath })),
  );
  const stackFor = o.stackFor;
  const cells = stackFor
    ? tasks.map((t) => ({
        strategy: t.strategy,
        blockSizeBytes: t.blockSizeBytes,
        stack: stackFor(t.strategy, rows.find((r) => r.label === t.label)!, sizeBytes, iodepth),
      }))
    : null;
  const first = cells?.[0]?.stack;
  const context: CompareContext = {
    profile: first?.profile.name ?? profile.name,
    sizeBytes,
    iodepth,
    parallel,
    labels: rows.map((r) => r.label),
    driver: first?.driverGeneration ?? 'v5.10',
    bareMetal: first?.topology?.platform === 'bare-metal',
    ...(o.modelOptionsText ? { modelOptionsText: o.modelOptionsText } : {}),
  };
  return { context, tasks, cells, profile, profilePath };
}

export async function runCompare(o: CompareOptions = {}): Promise<CompareResult> {
  const plan = planCompare(o);
  const started = performance.now();
  const results = plan.cells
    ? await runCompareCells(plan.cells, plan.context.parallel, new RunProgress('compare', plan.cells.length))
    : await runCompareTasks(plan.tasks, plan.profile, plan.context.parallel, new RunProgress('compare', plan.tasks.length));
  return assembleCompare(plan.context, results, performance.now() - started);
}

/** The comparison's report from its runs' results, in task order (a local run, or `vmstack merge`). */
export function assembleCompare(c: CompareContext, results: readonly (CompareTaskResult | CompareCellResult)[], wallMs: number): CompareResult {
  const { sizeBytes, iodepth, parallel } = c;
  const rows = REFERENCE_ROWS.filter((r) => c.labels.includes(r.label));
  const table: CompareTableRow[] = rows.map((r) => {
    const strict = results.find((x) => x.blockSizeBytes === r.blockSizeBytes && x.strategy === 'strict')!;
    const pool = results.find((x) => x.blockSizeBytes === r.blockSizeBytes && x.strategy === 'bounce')!;
    const modelRatio = pool.mibPerS / strict.mibPerS;
    const errorPct = (100 * (modelRatio - r.referenceRatio)) / r.referenceRatio;
    return {
      blockSize: r.label,
      blockSizeBytes: r.blockSizeBytes,
      strictMiBps: strict.mibPerS,
      poolMiBps: pool.mibPerS,
      modelRatio,
      referenceRatio: r.referenceRatio,
      errorPct,
      withinTolerance: Math.abs(errorPct) <= RATIO_TOLERANCE * 100,
      strict,
      pool,
    };
  });
  return {
    profile: c.profile,
    experiment:
      `fio --rw=read --direct=1 --ioengine=libaio --iodepth=${iodepth} --numjobs=1 --size=${sizeBytes}, ` +
      `${c.bareMetal ? 'NVMe on bare metal (the host kernel drives VT-d)' : `NVMe via VFIO behind virtio-iommu (driver ${c.driver})`}, strict vs bounce-buffer pool` +
      (c.modelOptionsText ? `; ${c.modelOptionsText}` : ''),
    tolerancePct: RATIO_TOLERANCE * 100,
    rows: table,
    wallMs,
    parallel,
  };
}

export function formatCompareTable(c: CompareResult): string {
  const head = ['block size', 'strict MiB/s', 'pool MiB/s', 'model ratio', 'reference ratio', 'error %', ''];
  const body = c.rows.map((r) => [
    r.blockSize,
    r.strictMiBps.toFixed(1),
    r.poolMiBps.toFixed(1),
    r.modelRatio.toFixed(2),
    r.referenceRatio.toFixed(1),
    (r.errorPct >= 0 ? '+' : '') + r.errorPct.toFixed(1),
    r.withinTolerance ? `within ±${c.tolerancePct}%` : `MISS (±${c.tolerancePct}%)`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) =>
    cells
      .map((x, i) => (i === 0 || i === cells.length - 1 ? x.padEnd(widths[i]) : x.padStart(widths[i])))
      .join('  ')
      .trimEnd();
  const speed = c.rows.flatMap((r) => [r.strict, r.pool]);
  const ios = speed.reduce((s, x) => s + x.ios, 0);
  const loopMs = speed.reduce((s, x) => s + x.jobLoopWallMs, 0);
  return [
    `vmstack compare — profile ${c.profile}`,
    c.experiment,
    '',
    line(head),
    line(widths.map((w) => '-'.repeat(w))),
    ...body.map(line),
    '',
    `model speed: ${ios} simulated I/Os in ${(loopMs / 1000).toFixed(1)} s of job loops (${Math.round(ios / (loopMs / 1000))} I/Os per wall second); whole run ${(c.wallMs / 1000).toFixed(1)} s, ${c.parallel === 1 ? 'serial' : `${c.parallel} piscina threads`}`,
    '',
  ].join('\n');
}

/** The comparison as an offline HTML page with an SVG chart. */
export function formatCompareHtml(c: CompareResult): string {
  return htmlPage(`vmstack compare — profile ${c.profile}`, compareHtmlSections(c));
}

/** One page with each profile's chart and table (`compare --profile all`). */
export function formatCompareHtmlAll(cs: readonly CompareResult[]): string {
  return htmlPage(
    `vmstack compare — ${cs.length} profiles`,
    cs.flatMap((c) => compareHtmlSections(c).map((s) => ({ ...s, heading: `${s.heading} — profile ${c.profile}` }))),
  );
}

/** The chart and the table of one comparison. */
export function compareHtmlSections(c: CompareResult): { heading: string; body: string }[] {
  const chart = barChartSvg(
    'fio seq read, iodepth 64, one job: strict vs the bounce-buffer pool',
    'MiB/s',
    c.rows.map((r) => ({
      label: r.blockSize,
      bars: [
        { series: 'strict', value: r.strictMiBps },
        { series: 'pool', value: r.poolMiBps },
      ],
      note: `${r.modelRatio.toFixed(2)}× (ref ${r.referenceRatio}×)`,
    })),
  );
  const table = htmlTable(
    ['block size', 'strict MiB/s', 'pool MiB/s', 'model ratio', 'reference ratio', 'error %', 'MAPs strict', 'MAPs pool', 'pool hits'],
    c.rows.map((r) => [
      r.blockSize,
      r.strictMiBps.toFixed(1),
      r.poolMiBps.toFixed(1),
      r.modelRatio.toFixed(2),
      r.referenceRatio.toFixed(1),
      (r.errorPct >= 0 ? '+' : '') + r.errorPct.toFixed(1),
      String(r.strict.viommuMaps),
      String(r.pool.viommuMaps),
      String(r.pool.bounceHits),
    ]),
  );
  return [
    { heading: 'Throughput', body: `<p class="meta">${c.experiment}</p>\n${chart}` },
    {
      heading: 'Table',
      body: `${table}<p class="meta">Target: each model ratio within ±${c.tolerancePct}% of the reference. One cost profile serves every row; only always_bounce_limit is raised to cover the block size.</p>`,
    },
  ];
}
