/**
 * `--emit-jobs DIR` and `vmstack merge DIR`, through the CLI: the runs of a
 * sweep, a scale and a compare are written as batch jobs, run here the way
 * each batch engine would run them (each line of the GNU parallel list with
 * sh, the Slurm script with SLURM_ARRAY_TASK_ID set, the Kubernetes pod's
 * command with JOB_COMPLETION_INDEX set), and merged: the merged JSON equals
 * the local run's but for wall times, and the HTML report is the same page.
 * The local sweep and compare run on piscina threads (--parallel 2), whose
 * stack workers are reused from task to task. Missing, partial or foreign
 * results and bad directories are refused with exit 2 and one line.
 */

import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import test from 'ava';

const run = promisify(execFile);
const cli = fileURLToPath(new URL('../../packages/cli/dist/src/main.js', import.meta.url));
const MiB = 1024 * 1024;

async function vmstack(args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  const { stdout } = await run(process.execPath, [cli, ...args], { timeout: 120_000, maxBuffer: 64 * MiB, env: { ...process.env, ...env } });
  return stdout;
}

async function sh(command: string, env: NodeJS.ProcessEnv = {}): Promise<string> {
  const { stdout } = await run('sh', ['-c', command], { timeout: 120_000, env: { ...process.env, ...env } });
  return stdout;
}

/** exit code and stderr of a command that must fail */
async function failing(args: string[]): Promise<{ code: number; stderr: string }> {
  try {
    await run(process.execPath, [cli, ...args], { timeout: 120_000 });
  } catch (e) {
    const err = e as { code: number; stderr: string };
    return { code: err.code, stderr: err.stderr };
  }
  throw new Error(`vmstack ${args.join(' ')} succeeded`);
}

/** the value without the fields that measure real time (they differ run to run) */
function withoutWallTimes(x: unknown): unknown {
  if (Array.isArray(x)) return x.map(withoutWallTimes);
  if (x === null || typeof x !== 'object') return x;
  return Object.fromEntries(
    Object.entries(x)
      .filter(([k]) => !/wall/i.test(k))
      .map(([k, v]) => [k, withoutWallTimes(v)]),
  );
}

/** The emitted directory run as the batch engines would: lines of commands.txt with sh, the rest through slurm.sh and the pod's command. */
async function runAsBatchEngines(dir: string, runs: number): Promise<void> {
  const lines = readFileSync(join(dir, 'commands.txt'), 'utf8').trim().split('\n');
  if (lines.length !== runs) throw new Error(`commands.txt has ${lines.length} lines, expected ${runs}`);
  for (let i = 0; i < runs; i++) {
    if (i % 3 === 0) await sh(lines[i]);
    else if (i % 3 === 1) await sh(`bash ${join(dir, 'slurm.sh')}`, { SLURM_ARRAY_TASK_ID: String(i) });
    else await vmstack(['job', dir], { JOB_COMPLETION_INDEX: String(i) });
  }
}

test.serial('sweep: emitted runs, run by the batch engines, merge into the local report', async (t) => {
  const tmp = mkdtempSync(join(tmpdir(), 'vmstack-emit-'));
  const dir = join(tmp, 'jobs');
  const sweep = ['sweep', '--strategies', 'strict,bounce', '--bs', '4k,16k', '--iodepth', '4', '--size', '256k'];
  const said = await vmstack([...sweep, '--parallel', '2', '--emit-jobs', dir]);
  t.regex(said, /4 runs written to/);
  t.regex(readFileSync(join(dir, 'slurm.sh'), 'utf8'), /#SBATCH --array=0-3\n/);
  const k8s = readFileSync(join(dir, 'k8s-job.yaml'), 'utf8');
  t.regex(k8s, /completionMode: Indexed\n\s+completions: 4\n\s+parallelism: 2\n/);
  // before any run: merge names what is missing
  const none = await failing(['merge', dir]);
  t.is(none.code, 2);
  t.is(none.stderr.trim().split('\n').length, 1);
  t.regex(none.stderr, /4 missing: results\/0000\.json, results\/0001\.json/);

  await runAsBatchEngines(dir, 4);
  const mergedJson = JSON.parse(await vmstack(['merge', dir, '--output-format', 'json', '--html', join(tmp, 'merged.html')]));
  const localJson = JSON.parse(await vmstack([...sweep, '--parallel', '2', '--output-format', 'json', '--html', join(tmp, 'local.html')]));
  t.is(mergedJson.cells.length, 4);
  t.deepEqual(withoutWallTimes(mergedJson), withoutWallTimes(localJson));
  t.is(readFileSync(join(tmp, 'merged.html'), 'utf8'), readFileSync(join(tmp, 'local.html'), 'utf8'));
  // the table: the local run's cells, as the sweep prints them
  const table = await vmstack(['merge', dir]);
  for (const c of localJson.cells as { mibPerS: number }[]) t.true(table.includes(c.mibPerS.toFixed(1)), `${c.mibPerS.toFixed(1)} in\n${table}`);

  // a result cut short, one run again, one of another task: each named
  const result1 = join(dir, 'results', '0001.json');
  renameSync(result1, `${result1}.partial`);
  const partial = await failing(['merge', dir]);
  t.is(partial.code, 2);
  t.regex(partial.stderr, /1 missing: results\/0001\.json \(only \.partial: its run did not finish\)/);
  renameSync(`${result1}.partial`, result1);
  writeFileSync(join(dir, 'results', '0002.json'), readFileSync(join(dir, 'results', '0003.json')));
  const foreign = await failing(['merge', dir]);
  t.is(foreign.code, 2);
  t.regex(foreign.stderr, /results\/0002\.json is not the result of tasks\/0002\.json: run 2 again/);
  writeFileSync(join(dir, 'results', '0002.json'), '{"format": "vmstack-job-res');
  t.regex((await failing(['merge', dir])).stderr, /results\/0002\.json is not JSON/);
});

test.serial('scale: emitted points merge into the local report', async (t) => {
  const tmp = mkdtempSync(join(tmpdir(), 'vmstack-emit-'));
  const dir = join(tmp, 'jobs');
  const scale = ['scale', '--vary', 'iodepth=1,4', '--strategies', 'strict,bounce', '--size', '256k'];
  await vmstack([...scale, '--emit-jobs', dir]);
  // no --parallel: Kubernetes may run every point at once
  t.regex(readFileSync(join(dir, 'k8s-job.yaml'), 'utf8'), /completions: 4\n\s+parallelism: 4\n/);
  // a copy of the directory without its (empty) results directory still runs
  rmSync(join(dir, 'results'), { recursive: true });
  await runAsBatchEngines(dir, 4);
  const merged = JSON.parse(await vmstack(['merge', dir, '--output-format', 'json']));
  const local = JSON.parse(await vmstack([...scale, '--output-format', 'json']));
  t.is(merged.points.length, 4);
  t.deepEqual(withoutWallTimes(merged), withoutWallTimes(local));
  t.is(await vmstack(['merge', dir]), await vmstack(scale));
});

test.serial('compare: emitted runs merge into the local report', async (t) => {
  const tmp = mkdtempSync(join(tmpdir(), 'vmstack-emit-'));
  const dir = join(tmp, 'jobs');
  const compare = ['compare', '--bs', '4k', '--size', '256k'];
  await vmstack([...compare, '--emit-jobs', dir]);
  await runAsBatchEngines(dir, 2);
  const merged = JSON.parse(await vmstack(['merge', dir, '--output-format', 'json']));
  const local = JSON.parse(await vmstack([...compare, '--parallel', '2', '--output-format', 'json']));
  t.is(merged.rows.length, 1);
  // parallel is the emitting command's (1), the local run's is 2: everything else is the same
  t.deepEqual(withoutWallTimes({ ...merged, parallel: 2 }), withoutWallTimes(local));
});

test.serial('bad directories, indexes and options: exit 2, one line naming what is wrong', async (t) => {
  const tmp = mkdtempSync(join(tmpdir(), 'vmstack-emit-'));
  const cases: [string[], RegExp][] = [
    [
      ['merge', join(tmp, 'nowhere')],
      /merge: ".*nowhere" is not allowed; a directory written by vmstack compare, sweep or scale --emit-jobs; it is not a directory/,
    ],
    [['merge', tmp], /it has no manifest\.json/],
    [['job', tmp, '--index', '0'], /job directory: .* it has no manifest\.json/],
    [['sweep', '--emit-jobs', join(tmp, 'a', 'b')], /--emit-jobs: .* a new directory .*; .*\/a does not exist/],
    [['sweep', '--emit-jobs', tmp, '--html', join(tmp, 'x.html')], /--emit-jobs: .* it is not empty|--html: .* give it to vmstack merge/],
    [['sweep', '--emit-jobs', join(tmp, 'new'), '--html', join(tmp, 'x.html')], /--html: .* no --html with --emit-jobs: give it to vmstack merge/],
  ];
  writeFileSync(join(tmp, 'not-empty'), '');
  for (const [args, message] of cases) {
    const r = await failing(args);
    t.is(r.code, 2, args.join(' '));
    t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
    t.regex(r.stderr, message);
  }
  const dir = join(tmp, 'jobs');
  await vmstack(['compare', '--bs', '4k', '--size', '256k', '--emit-jobs', dir]);
  for (const [args, env, message] of [
    [['job', dir, '--index', '2'], {}, /--index: "2" is not allowed; a run index from 0 to 1/],
    [['job', dir], { SLURM_ARRAY_TASK_ID: 'x' }, /SLURM_ARRAY_TASK_ID: "x" is not allowed/],
    [['job', dir], { JOB_COMPLETION_INDEX: '7' }, /JOB_COMPLETION_INDEX: "7" is not allowed/],
    [['job', dir], {}, /--index: .*a run index from 0 to 1/],
  ] as const) {
    const r = await run(process.execPath, [cli, ...args], { env: { ...process.env, SLURM_ARRAY_TASK_ID: '', JOB_COMPLETION_INDEX: '', ...env } }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    t.is(r.code, 2, args.join(' '));
    t.regex(r.stderr, message);
  }
  // a task changed after emitting is not run
  const task = join(dir, 'tasks', '0000.json');
  writeFileSync(task, readFileSync(task, 'utf8').replace('4096', '8192'));
  const changed = await failing(['job', dir, '--index', '0']);
  t.is(changed.code, 2);
  t.regex(changed.stderr, /tasks\/0000\.json: .* the file was changed/);
});
