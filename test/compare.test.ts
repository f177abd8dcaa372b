/**
 * `vmstack compare` (the reference experiment: strict vs the pool, fio
 * sequential reads at iodepth 64) at a small size, through the CLI:
 *
 * - every figure of the printed table comes from that row's two runs: the
 *   strict and pool MiB/s are io bytes over model runtime of the runs the
 *   JSON output reports, the model ratio is pool / strict, the error is
 *   (model / reference − 1)·100, and the verdict follows the tolerance;
 * - the runs are the experiment they claim to be: `vmstack run` with the
 *   same fio job and strategy reports the same I/O count, bytes, fio runtime
 *   and virtio-iommu MAP count;
 * - through piscina the per-run model results are the same as serial (the
 *   virtual clock does not care which thread ran a topology).
 *
 * runCompare is not exported from @vmstack/cli's index, so it is loaded from
 * the package's compiled output next to the index.
 */

import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { releaseIdleWorkers, setWorkerReuse } from '@vmstack/shm';
import test from 'ava';
import type * as CompareModule from '../packages/cli/src/compare/compare.js';
import type { CompareResult } from '../packages/cli/src/compare/compare.js';
import type { CompareTaskResult } from '../packages/cli/src/compare/experiment.js';

// the stack's workers stay between runs (no start-up per run); they exit before the process does
setWorkerReuse(true);
test.after.always(() => releaseIdleWorkers());

const execFileAsync = promisify(execFile);
const cli = fileURLToPath(new URL('../../packages/cli/dist/src/main.js', import.meta.url));
const MiB = 1024 * 1024;
const SIZE = '2m';
const BLOCK_SIZES = ['4k', '16k'];
/** the published ratios of the reference experiment at 4k and 16k */
const PUBLISHED_RATIOS: Record<string, number> = { '4k': 2.8, '16k': 4.7 };

async function vmstack(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync(process.execPath, [cli, ...args], { timeout: 120_000, maxBuffer: 64 * MiB });
  return stdout;
}

async function compareModule(): Promise<typeof CompareModule> {
  return (await import(new URL('compare/compare.js', import.meta.resolve('@vmstack/cli')).href)) as typeof CompareModule;
}

/** The table's data rows as column-name → cell, columns split on runs of two or more spaces. */
function parseTable(text: string): Record<string, string>[] {
  const lines = text.split('\n');
  const rule = lines.findIndex((l) => /^-+(\s+-+)+$/.test(l));
  if (rule < 1) throw new Error(`no table in:\n${text}`);
  const head = lines[rule - 1].split(/\s{2,}/);
  const rows: Record<string, string>[] = [];
  for (const l of lines.slice(rule + 1)) {
    if (l.trim() === '') break;
    const cells = l.split(/\s{2,}/);
    rows.push(Object.fromEntries(cells.map((c, i) => [head[i] ?? 'verdict', c])));
  }
  return rows;
}

/** MiB/s of one run from what it moved and how long it took in model time. */
function mibPerS(run: CompareTaskResult): number {
  return run.ioBytes / MiB / (run.runtimeNs / 1e9);
}

/** Half a unit in the last printed digit. */
function halfUlp(printed: string): number {
  const decimals = printed.split('.')[1]?.length ?? 0;
  return 0.5 * 10 ** -decimals;
}

test("compare: every printed ratio, error and MiB/s is computed from the row's two runs, and those runs are what `vmstack run` reports for the same job", async (t) => {
  const common = ['compare', '--size', SIZE, '--bs', BLOCK_SIZES.join(',')];
  const [table, json] = await Promise.all([vmstack(common), vmstack([...common, '--output-format', 'json'])]);
  t.log(table);
  const result = JSON.parse(json) as CompareResult;
  const printed = parseTable(table);
  t.deepEqual(
    printed.map((r) => r['block size']),
    BLOCK_SIZES,
  );
  t.deepEqual(
    result.rows.map((r) => r.blockSize),
    BLOCK_SIZES,
  );

  for (let i = 0; i < printed.length; i++) {
    const cells = printed[i];
    const row = result.rows[i];
    const bs = cells['block size'];
    t.is(row.strict.strategy, 'strict', `${bs}: the strict column's run`);
    t.is(row.pool.strategy, 'bounce', `${bs}: the pool column's run`);
    for (const run of [row.strict, row.pool]) {
      t.is(run.blockSizeBytes, row.blockSizeBytes);
      t.is(run.ioBytes, 2 * MiB, `${bs} ${run.strategy}: the run read the whole region`);
      t.is(run.ios, (2 * MiB) / row.blockSizeBytes);
    }

    // the MiB/s columns are the runs' bytes over their model runtime
    const strict = Number(cells['strict MiB/s']);
    const pool = Number(cells['pool MiB/s']);
    t.is(cells['strict MiB/s'], mibPerS(row.strict).toFixed(1), `${bs}: strict MiB/s is the strict run's`);
    t.is(cells['pool MiB/s'], mibPerS(row.pool).toFixed(1), `${bs}: pool MiB/s is the pool run's`);

    // the ratio is pool / strict: exactly from the runs, and within the rounding of the printed figures
    const ratio = Number(cells['model ratio']);
    const runRatio = mibPerS(row.pool) / mibPerS(row.strict);
    t.true(Math.abs(ratio - runRatio) <= halfUlp(cells['model ratio']) + 1e-9, `${bs}: printed ratio ${ratio} vs runs' ${runRatio}`);
    const hu = halfUlp(cells['strict MiB/s']);
    const lowest = (pool - hu) / (strict + hu);
    const highest = (pool + hu) / (strict - hu);
    const ru = halfUlp(cells['model ratio']);
    t.true(ratio + ru >= lowest && ratio - ru <= highest, `${bs}: printed ratio ${ratio} is printed pool / strict ${pool} / ${strict}`);

    // the reference column is the published ratio; the error is (model / reference − 1)·100
    const reference = Number(cells['reference ratio']);
    t.is(reference, PUBLISHED_RATIOS[bs], `${bs}: the published ratio`);
    const errorPct = Number(cells['error %']);
    const runErrorPct = (runRatio / reference - 1) * 100;
    t.true(Math.abs(errorPct - runErrorPct) <= halfUlp(cells['error %']) + 1e-9, `${bs}: printed error ${errorPct}% vs runs' ${runErrorPct}%`);
    const printedErrorPct = (ratio / reference - 1) * 100;
    t.true(
      Math.abs(errorPct - printedErrorPct) <= halfUlp(cells['error %']) + (100 * ru) / reference,
      `${bs}: printed error ${errorPct}% is (printed ratio / reference − 1)·100 = ${printedErrorPct}%`,
    );
    t.is(cells.verdict, Math.abs(runErrorPct) <= 15 ? 'within ±15%' : 'MISS (±15%)', `${bs}: verdict`);
  }

  // each run of the table is the experiment it claims: `vmstack run` with the same fio job and strategy reports the same run
  for (const row of result.rows) {
    for (const run of [row.strict, row.pool]) {
      const bounceArgs = run.strategy === 'bounce' ? ['--always-bounce-limit', row.blockSize] : [];
      const args = [
        'run',
        '--rw',
        'read',
        '--direct',
        '1',
        '--ioengine',
        'libaio',
        '--iodepth',
        '64',
        '--bs',
        row.blockSize,
        '--size',
        SIZE,
        '--strategy',
        run.strategy,
        '--guest-ram',
        '256m',
        ...bounceArgs,
        '--output-format',
        'json',
      ];
      const fio = JSON.parse(await vmstack(args)) as {
        jobs: { read: { io_bytes: number; total_ios: number; runtime: number; bw_bytes: number } }[];
        vmstack: { counters: { virtio_iommu: { map: number; unmap: number }; bounce: { hits: number } | null } };
      };
      const read = fio.jobs[0].read;
      const what = `${row.blockSize} ${run.strategy}`;
      t.is(read.io_bytes, run.ioBytes, `${what}: io_bytes`);
      t.is(read.total_ios, run.ios, `${what}: total_ios`);
      // fio's runtime: model ns truncated to µs, then rounded up to ms
      t.is(read.runtime, Math.ceil(Math.floor(run.runtimeNs / 1000) / 1000), `${what}: fio runtime (ms) of a ${run.runtimeNs} ns run`);
      t.is(fio.vmstack.counters.virtio_iommu.map, run.viommuMaps, `${what}: virtio-iommu MAPs`);
      t.is(fio.vmstack.counters.virtio_iommu.unmap, run.viommuUnmaps, `${what}: virtio-iommu UNMAPs`);
      t.is(fio.vmstack.counters.bounce?.hits ?? 0, run.bounceHits, `${what}: pool hits`);
    }
    t.true(row.pool.viommuMaps < row.strict.viommuMaps, `${row.blockSize}: the pool sends fewer MAPs`);
  }
});

test('compare through 2 piscina threads: the same runs as serial, and the table says so', async (t) => {
  const { runCompare, formatCompareTable } = await compareModule();
  const serial = await runCompare({ sizeBytes: 2 * MiB, blockSizes: BLOCK_SIZES, parallel: 1 });
  const pooled = await runCompare({ sizeBytes: 2 * MiB, blockSizes: BLOCK_SIZES, parallel: 2 });
  t.is(serial.parallel, 1);
  t.is(pooled.parallel, 2);
  // the model's results of every run, without the wall-clock speed fields
  const model = (c: CompareResult) => c.rows.flatMap((r) => [r.strict, r.pool]).map(({ simulatedIosPerWallS: _s, jobLoopWallMs: _j, ...m }) => m);
  t.deepEqual(model(pooled), model(serial));
  t.regex(formatCompareTable(serial), /, serial\n/);
  t.regex(formatCompareTable(pooled), /, 2 piscina threads\n/);
});
