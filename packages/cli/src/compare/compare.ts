/**
 * `vmstack compare`: the reference experiment both ways, as a table.
 * Runs serially, or in parallel through piscina (one topology per task);
 * with the virtual clock both give the same table.
 */

import { DEFAULT_PROFILE_PATH, InputError, loadProfile } from '@vmstack/shm';
import { Piscina } from 'piscina';
import { barChartSvg, htmlPage, htmlTable } from '../report/html.js';
import { RunProgress } from '../report/progress.js';
import { type CompareTask, type CompareTaskResult, RATIO_TOLERANCE, REFERENCE_ROWS, runCompareTask } from './experiment.js';

export interface CompareOptions {
  profilePath?: string;
  /** bytes read per run (per block size); default 32 MiB */
  sizeBytes?: number;
  iodepth?: number;
  /** 1 = serial in this thread; more = a piscina pool of that many threads */
  parallel?: number;
  /** subset of block sizes, e.g. ['4k', '128k'] */
  blockSizes?: string[];
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
  strict: CompareTaskResult;
  pool: CompareTaskResult;
}

export interface CompareResult {
  profile: string;
  experiment: string;
  tolerancePct: number;
  rows: CompareTableRow[];
  wallMs: number;
  parallel: number;
}

export async function runCompare(o: CompareOptions = {}): Promise<CompareResult> {
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
  const started = performance.now();
  let results: CompareTaskResult[];
  const progress = new RunProgress('compare', tasks.length);
  if (parallel === 1) {
    results = [];
    for (const t of tasks) results.push(await progress.track(runCompareTask(t, profile)));
  } else {
    const pool = new Piscina({ filename: new URL('./sweep-worker.js', import.meta.url).href, maxThreads: parallel, minThreads: 1 });
    try {
      results = await Promise.all(tasks.map((t) => progress.track(pool.run(t) as Promise<CompareTaskResult>)));
    } finally {
      progress.end();
      await pool.destroy();
    }
  }
  progress.end();
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
    profile: profile.name,
    experiment: `fio --rw=read --direct=1 --ioengine=libaio --iodepth=${iodepth} --numjobs=1 --size=${sizeBytes}, NVMe via VFIO behind virtio-iommu (driver v5.10), strict vs bounce-buffer pool`,
    tolerancePct: RATIO_TOLERANCE * 100,
    rows: table,
    wallMs: performance.now() - started,
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
  return htmlPage(`vmstack compare — profile ${c.profile}`, [
    { heading: 'Throughput', body: `<p class="meta">${c.experiment}</p>\n${chart}` },
    {
      heading: 'Table',
      body: `${table}<p class="meta">Target: each model ratio within ±${c.tolerancePct}% of the reference. One cost profile serves every row; only always_bounce_limit is raised to cover the block size.</p>`,
    },
  ]);
}
