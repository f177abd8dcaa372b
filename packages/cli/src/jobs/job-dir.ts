/**
 * A job directory: a compare, sweep or scale written out as one
 * self-contained batch job per run (`--emit-jobs DIR`), run anywhere by
 * `vmstack job DIR --index N`, and combined by `vmstack merge DIR` into the
 * report a local run gives.
 *
 * | file | what |
 * |------|------|
 * | manifest.json | the command, its report's context, and per run its task file, result file and the task's SHA-256 |
 * | profile.json | the cost profile, copied: every task names it relative to DIR |
 * | tasks/NNNN.json | run N: everything it needs (a compare/sweep cell, or a scale point's run arguments) |
 * | results/NNNN.json | run N's result, written by `vmstack job` (as `.partial`, renamed once complete) |
 * | commands.txt | one command per run, for GNU parallel (`parallel < commands.txt`) or any shell |
 * | slurm.sh | a Slurm array job (`sbatch slurm.sh`): SLURM_ARRAY_TASK_ID picks the run |
 * | k8s-job.yaml | a Kubernetes Indexed Job (`kubectl apply -f`): JOB_COMPLETION_INDEX picks the run |
 * | logs/ | the Slurm jobs' output |
 */

import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InputError } from '@vmstack/shm';
import { writeComplete } from '../commands/output.js';
import { assembleCompare, type CompareContext, type CompareResult } from '../compare/compare.js';
import type { CompareTaskResult } from '../compare/experiment.js';
import { assembleScale, type ScaleContext, type ScalePoint, type ScaleResult } from '../scale/scale.js';
import { assembleSweep, type SweepContext, type SweepResult } from '../sweep/sweep.js';
import { describeJobTask, JOB_COMMANDS, type JobCommand, type JobTask, type JobTaskResult, runJobTask } from './tasks.js';

export const MANIFEST_FILE = 'manifest.json';
export const PROFILE_FILE = 'profile.json';
const FORMAT = 'vmstack-jobs';
const FORMAT_VERSION = 1;

export type JobContext = CompareContext | SweepContext | ScaleContext;

export interface JobManifest {
  format: typeof FORMAT;
  version: typeof FORMAT_VERSION;
  command: JobCommand;
  /** the report's context (compare.ts, sweep.ts, scale.ts) */
  context: JobContext;
  runs: { task: string; result: string; sha256: string }[];
}

interface TaskFile {
  format: 'vmstack-job';
  command: JobCommand;
  index: number;
  task: JobTask;
}

interface ResultFile {
  format: 'vmstack-job-result';
  command: JobCommand;
  index: number;
  /** the task's SHA-256: a result belongs to the task it was run from */
  sha256: string;
  /** real ms the run took in its process */
  wallMs: number;
  result: JobTaskResult;
}

/** A command's runs, ready to emit. */
export interface JobSet {
  command: JobCommand;
  context: JobContext;
  tasks: JobTask[];
  /** the cost profile file the tasks name; copied into DIR */
  profilePath: string;
  /** runs at once on Kubernetes: the command's --parallel, or every run when it was not given */
  parallel: number;
}

const EMIT_ALLOWED = 'a new directory (in an existing one) or an empty directory';

/** `--emit-jobs DIR` names a directory emitJobs can fill: checked before anything else. */
export function checkEmitDir(dir: string): void {
  if (dir.trim() === '') throw new InputError('--emit-jobs', dir, EMIT_ALLOWED);
  const path = resolve(dir);
  if (existsSync(path)) {
    const st = statSync(path);
    if (!st.isDirectory()) throw new InputError('--emit-jobs', dir, `${EMIT_ALLOWED}; it is a file`);
    if (readdirSync(path).length > 0) throw new InputError('--emit-jobs', dir, `${EMIT_ALLOWED}; it is not empty`);
    return;
  }
  const parent = dirname(path);
  if (!existsSync(parent) || !statSync(parent).isDirectory()) throw new InputError('--emit-jobs', dir, `${EMIT_ALLOWED}; ${parent} does not exist`);
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');
const runName = (i: number) => String(i).padStart(4, '0');
/** a word for sh: quoted unless it is plainly safe */
const shellWord = (w: string) => (/^[\w./=:@%+-]+$/.test(w) ? w : `'${w.replaceAll("'", `'\\''`)}'`);

/** The CLI's entry, and the repository it belongs to (a batch job runs the same build). */
function cliPaths(): { main: string; root: string } {
  const main = fileURLToPath(new URL('../main.js', import.meta.url));
  return { main, root: resolve(dirname(main), '../../../..') };
}

/** Write `set` as a job directory; returns the lines to print. */
export function emitJobs(dir: string, set: JobSet): string {
  checkEmitDir(dir);
  const root = resolve(dir);
  for (const sub of ['', 'tasks', 'results', 'logs']) mkdirSync(join(root, sub), { recursive: true });
  copyFileSync(set.profilePath, join(root, PROFILE_FILE));
  const runs = set.tasks.map((task, index) => {
    const text = `${JSON.stringify({ format: 'vmstack-job', command: set.command, index, task: withProfile(task) } satisfies TaskFile, null, 2)}\n`;
    const file = `tasks/${runName(index)}.json`;
    writeFileSync(join(root, file), text);
    return { task: file, result: `results/${runName(index)}.json`, sha256: sha256(text) };
  });
  const manifest: JobManifest = { format: FORMAT, version: FORMAT_VERSION, command: set.command, context: set.context, runs };
  writeFileSync(join(root, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);

  const { main, root: repo } = cliPaths();
  const n = set.tasks.length;
  const jobLine = (index: string) => ['node', shellWord(main), 'job', shellWord(root), '--index', index].join(' ');
  writeFileSync(join(root, 'commands.txt'), set.tasks.map((_, i) => `${jobLine(String(i))}\n`).join(''));
  writeFileSync(
    join(root, 'slurm.sh'),
    [
      '#!/bin/bash',
      `#SBATCH --job-name=vmstack-${set.command}`,
      `#SBATCH --array=0-${n - 1}`,
      // a run's workers: vCPUs, the VMM, the host and the device each a thread
      '#SBATCH --cpus-per-task=4',
      `#SBATCH --output=${join(root, 'logs', '%A_%a.out')}`,
      `# ${n} runs of vmstack ${set.command}; each picks its run by SLURM_ARRAY_TASK_ID. Then: vmstack merge ${shellWord(root)}`,
      'set -euo pipefail',
      `exec \${VMSTACK:-node ${shellWord(main)}} job ${shellWord(root)}`,
      '',
    ].join('\n'),
    { mode: 0o755 },
  );
  writeFileSync(join(root, 'k8s-job.yaml'), kubernetesJob(set, n, repo, main, root));
  return [
    `vmstack ${set.command}: ${n} runs written to ${root}`,
    `  GNU parallel: parallel --jobs N < ${join(root, 'commands.txt')}   (or run each line with any shell)`,
    `  Slurm:        sbatch ${join(root, 'slurm.sh')}`,
    `  Kubernetes:   kubectl apply -f ${join(root, 'k8s-job.yaml')}   (hostPath volumes: edit for your cluster's storage)`,
    `  then:         vmstack merge ${root} [--output-format json] [--output FILE] [--html FILE]`,
    '',
  ].join('\n');
}

/** The task as written: its profile is DIR's copy (a `compare-stack` task carries its profile inside). */
function withProfile(task: JobTask): JobTask {
  if (task.kind === 'compare-stack') return task;
  return task.kind === 'compare-cell'
    ? { ...task, cell: { ...task.cell, profilePath: PROFILE_FILE } }
    : { ...task, args: { ...task.args, profile: PROFILE_FILE } };
}

/** An Indexed Job: one pod per run, JOB_COMPLETION_INDEX set by Kubernetes picks it; the build and DIR mounted from the node. */
function kubernetesJob(set: JobSet, n: number, repo: string, main: string, dir: string): string {
  const mainInPod = `/vmstack/${main.slice(repo.length + 1)}`;
  const name = `vmstack-${set.command}-${sha256(dir).slice(0, 8)}`;
  return [
    '# vmstack batch job: one pod per run; Kubernetes sets JOB_COMPLETION_INDEX, which picks the run.',
    '# The vmstack build (with its node_modules) and the job directory are hostPath volumes here:',
    '# on a cluster, point them at storage every node sees (a PersistentVolumeClaim), or bake the build into an image.',
    'apiVersion: batch/v1',
    'kind: Job',
    'metadata:',
    `  name: ${name}`,
    'spec:',
    '  completionMode: Indexed',
    `  completions: ${n}`,
    `  parallelism: ${Math.max(1, Math.min(n, set.parallel))}`,
    '  backoffLimit: 3',
    '  template:',
    '    spec:',
    '      restartPolicy: Never',
    '      containers:',
    '        - name: vmstack',
    '          image: node:20-bookworm-slim',
    `          command: ["node", ${JSON.stringify(mainInPod)}, "job", "/jobs"]`,
    '          resources:',
    '            requests:',
    '              cpu: "4"',
    '          volumeMounts:',
    '            - { name: vmstack, mountPath: /vmstack, readOnly: true }',
    '            - { name: jobs, mountPath: /jobs }',
    '      volumes:',
    `        - name: vmstack`,
    `          hostPath: { path: ${JSON.stringify(repo)}, type: Directory }`,
    `        - name: jobs`,
    `          hostPath: { path: ${JSON.stringify(dir)}, type: Directory }`,
    '',
  ].join('\n');
}

const NOT_A_JOB_DIR = 'a directory written by vmstack compare, sweep or scale --emit-jobs';

/** The manifest of job directory `dir`, checked; `field` names the argument in errors. */
export function readManifest(field: string, dir: string): JobManifest {
  const file = join(resolve(dir), MANIFEST_FILE);
  if (!existsSync(resolve(dir)) || !statSync(resolve(dir)).isDirectory()) throw new InputError(field, dir, `${NOT_A_JOB_DIR}; it is not a directory`);
  let m: JobManifest;
  try {
    m = JSON.parse(readFileSync(file, 'utf8')) as JobManifest;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new InputError(field, dir, `${NOT_A_JOB_DIR}; ${code === 'ENOENT' ? `it has no ${MANIFEST_FILE}` : `its ${MANIFEST_FILE} is not JSON`}`);
  }
  if (
    m?.format !== FORMAT ||
    m.version !== FORMAT_VERSION ||
    !(JOB_COMMANDS as readonly string[]).includes(m.command) ||
    !Array.isArray(m.runs) ||
    m.runs.length === 0
  )
    throw new InputError(field, dir, `${NOT_A_JOB_DIR}; its ${MANIFEST_FILE} is not a vmstack-jobs manifest of version ${FORMAT_VERSION}`);
  return m;
}

/**
 * The run's index: `--index`, else SLURM_ARRAY_TASK_ID (a Slurm array job),
 * else JOB_COMPLETION_INDEX (a Kubernetes Indexed Job).
 */
export function jobIndexOf(index: string | undefined, runs: number, env: NodeJS.ProcessEnv = process.env): number {
  // an empty variable is an unset one
  const slurm = env.SLURM_ARRAY_TASK_ID || undefined;
  const k8s = env.JOB_COMPLETION_INDEX || undefined;
  const [field, text] =
    index !== undefined
      ? ['--index', index]
      : slurm !== undefined
        ? ['SLURM_ARRAY_TASK_ID', slurm]
        : k8s !== undefined
          ? ['JOB_COMPLETION_INDEX', k8s]
          : ['--index', undefined];
  const allowed = `a run index from 0 to ${runs - 1}: --index N, or SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX set by the batch engine`;
  if (text === undefined || !/^\d+$/.test(text.trim())) throw new InputError(field, text, allowed);
  const i = Number(text);
  if (i >= runs) throw new InputError(field, text, allowed);
  return i;
}

/** `vmstack job DIR`: run one task of the directory and write its result; returns the line to print. */
export async function runJob(dir: string, index: string | undefined): Promise<string> {
  const m = readManifest('job directory', dir);
  const i = jobIndexOf(index, m.runs.length);
  const root = resolve(dir);
  const run = m.runs[i];
  let text: string;
  try {
    text = readFileSync(join(root, run.task), 'utf8');
  } catch (e) {
    throw new InputError('job directory', dir, `${NOT_A_JOB_DIR}; ${run.task} cannot be read (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  if (sha256(text) !== run.sha256) throw new InputError(run.task, dir, `the task the manifest lists (its SHA-256 differs: the file was changed)`);
  const task = (JSON.parse(text) as TaskFile).task;
  const started = performance.now();
  const result = await runJobTask(task, root);
  const out: ResultFile = { format: 'vmstack-job-result', command: m.command, index: i, sha256: run.sha256, wallMs: performance.now() - started, result };
  // results/ may not have travelled with a copied directory (an empty directory often does not)
  mkdirSync(dirname(join(root, run.result)), { recursive: true });
  writeComplete(join(root, run.result), `${JSON.stringify(out, null, 2)}\n`);
  return `vmstack job: run ${i} of ${m.runs.length} (${m.command} ${describeJobTask(task)}) → ${join(root, run.result)}\n`;
}

export type MergedReport =
  | { command: 'compare'; result: CompareResult }
  | { command: 'sweep'; result: SweepResult }
  | { command: 'scale'; result: ScaleResult };

/**
 * `vmstack merge DIR`: every run's result, checked against its task, made
 * into the command's report. Wall times are the runs' own, added up.
 */
export function mergeJobs(dir: string): MergedReport {
  const m = readManifest('merge', dir);
  const root = resolve(dir);
  const missing: string[] = [];
  const results: ResultFile[] = [];
  m.runs.forEach((run, i) => {
    const path = join(root, run.result);
    if (!existsSync(path)) {
      missing.push(`${run.result}${existsSync(`${path}.partial`) ? ' (only .partial: its run did not finish)' : ''}`);
      return;
    }
    let r: ResultFile;
    try {
      r = JSON.parse(readFileSync(path, 'utf8')) as ResultFile;
    } catch {
      throw new InputError('merge', dir, `a result file for each run; ${run.result} is not JSON (cut short?): run ${i} again`);
    }
    if (r?.format !== 'vmstack-job-result' || r.index !== i || r.sha256 !== run.sha256 || r.result === undefined)
      throw new InputError('merge', dir, `a result file for each run; ${run.result} is not the result of ${run.task}: run ${i} again`);
    results.push(r);
  });
  if (missing.length > 0) {
    const shown = missing.slice(0, 5).join(', ') + (missing.length > 5 ? `, and ${missing.length - 5} more` : '');
    throw new InputError('merge', dir, `a result for each of its ${m.runs.length} runs; ${missing.length} missing: ${shown}`);
  }
  const wallMs = results.reduce((s, r) => s + r.wallMs, 0);
  const values = results.map((r) => r.result);
  switch (m.command) {
    case 'compare':
      return { command: 'compare', result: assembleCompare(m.context as CompareContext, values as CompareTaskResult[], wallMs) };
    case 'sweep':
      return { command: 'sweep', result: assembleSweep(m.context as SweepContext, values as CompareTaskResult[], wallMs) };
    case 'scale':
      return { command: 'scale', result: assembleScale(m.context as ScaleContext, values as ScalePoint[]) };
  }
}
