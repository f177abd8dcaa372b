/**
 * `vmstack compare` (the reference experiment: strict vs the pool, fio
 * sequential reads at iodepth 64) at a small size: serial and through
 * piscina give the same model ratios (the virtual clock does not care which
 * thread ran a topology), the pool wins at both block sizes, and the table
 * carries the published reference ratios.
 *
 * runCompare is not exported from @vmstack/cli's index, so it is loaded from
 * the package's compiled output next to the index.
 */

import test from 'ava';
import type * as CompareModule from '../packages/cli/src/compare/compare.js';
import { releaseIdleWorkers, setWorkerReuse } from '@vmstack/shm';

// the stack's workers stay between runs (no start-up per run); they exit before the process does
setWorkerReuse(true);
test.after.always(() => releaseIdleWorkers());

const MiB = 1024 * 1024;

async function compareModule(): Promise<typeof CompareModule> {
  return (await import(new URL('compare/compare.js', import.meta.resolve('@vmstack/cli')).href)) as typeof CompareModule;
}

test('runCompare at 4k and 16k: serial and 2 piscina threads give the same model ratios (within 1%), the pool beats strict, the table shows the reference ratios 2.8 and 4.7', async (t) => {
  const { runCompare, formatCompareTable } = await compareModule();
  const serial = await runCompare({ sizeBytes: 2 * MiB, blockSizes: ['4k', '16k'], parallel: 1 });
  const pooled = await runCompare({ sizeBytes: 2 * MiB, blockSizes: ['4k', '16k'], parallel: 2 });
  t.is(serial.parallel, 1);
  t.is(pooled.parallel, 2);
  t.deepEqual(
    serial.rows.map((r) => r.blockSize),
    ['4k', '16k'],
  );
  t.deepEqual(
    pooled.rows.map((r) => r.blockSize),
    ['4k', '16k'],
  );
  for (let i = 0; i < serial.rows.length; i++) {
    const a = serial.rows[i];
    const b = pooled.rows[i];
    t.log(`${a.blockSize}: model ratio serial ${a.modelRatio.toFixed(3)}, piscina ${b.modelRatio.toFixed(3)} (reference ${a.referenceRatio})`);
    t.true(Math.abs(a.modelRatio - b.modelRatio) <= 0.01 * a.modelRatio, `${a.blockSize}: ${a.modelRatio} vs ${b.modelRatio}`);
    for (const row of [a, b]) {
      t.true(row.modelRatio > 1, `${row.blockSize}: the pool is faster than strict (ratio ${row.modelRatio})`);
      t.is(row.modelRatio, row.poolMiBps / row.strictMiBps);
      t.is(row.strict.strategy, 'strict');
      t.is(row.pool.strategy, 'bounce');
      t.is(row.strict.ios, (2 * MiB) / row.blockSizeBytes);
      t.is(row.pool.ios, row.strict.ios);
      t.true(row.pool.viommuMaps < row.strict.viommuMaps, 'the pool sends fewer MAPs');
    }
  }
  t.deepEqual(
    serial.rows.map((r) => r.referenceRatio),
    [2.8, 4.7],
  );
  const table = formatCompareTable(serial);
  t.log(table);
  const lines = table.split('\n');
  const row4k = lines.find((l) => l.startsWith('4k '));
  const row16k = lines.find((l) => l.startsWith('16k '));
  t.truthy(row4k, 'a 4k row');
  t.truthy(row16k, 'a 16k row');
  t.regex(row4k!, /\s2\.8\s/, '4k row shows the reference ratio 2.8');
  t.regex(row16k!, /\s4\.7\s/, '16k row shows the reference ratio 4.7');
  t.true(row4k!.includes(serial.rows[0].modelRatio.toFixed(2)), '4k row shows the model ratio');
  t.regex(formatCompareTable(pooled), /2 piscina threads/);
});
