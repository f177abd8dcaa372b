/**
 * `vmstack compare`: an experiment both ways, printed as a table or as JSON.
 *
 * `--experiment reference` (the default): strict mapping vs the pool in a VM,
 * at the reference block sizes, against the published ratios.
 * `--experiment untrusted`: the internal drive made to appear untrusted, no
 * VM, swiotlb vs the pool (compare/untrusted.ts).
 *
 * Every cell is `vmstack run` with compare's model and topology options and
 * the cell's fio job and strategy set (`runArgsWith`, as `scale` builds its
 * points), checked by run's own checks before the first cell runs.
 * `--profile all` runs the experiment once per profile in profiles/.
 */

import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { DmaStrategy } from '@vmstack/guest-kernel';
import { DEFAULT_PROFILE_PATH, InputError } from '@vmstack/shm';
import { type CompareResult, formatCompareHtml, formatCompareHtmlAll, formatCompareTable, planCompare, runCompare } from '../compare/compare.js';
import { formatUntrustedHtml, formatUntrustedTable, runUntrusted, type UntrustedResult } from '../compare/untrusted.js';
import { parseRegionSizeBytes } from '../fio/sizes.js';
import { emitJobs } from '../jobs/job-dir.js';
import type { JobTask } from '../jobs/tasks.js';
import type { StackOptions } from '../stack/run-stack.js';
import { checkOutputPath, emitOutput, writeComplete } from './output.js';
import { type RunArgs, runOptionsOf } from './run.js';
import { checkEmitOptions } from './sweep.js';

export const EXPERIMENTS = ['reference', 'untrusted'] as const;
export type Experiment = (typeof EXPERIMENTS)[number];

export interface CompareArgs {
  experiment?: string;
  /** a profile file, or `all`: every profile in profiles/ */
  profile?: string;
  size?: string;
  bs?: string;
  parallel?: string;
  /** the model and topology options given on compare's command line: run option name → its parsed value */
  given?: Readonly<Record<string, unknown>>;
  /** run's arguments for `base` with these options set as if written on run's command line */
  runArgsWith?: (base: Readonly<Record<string, unknown>>, overrides: Record<string, string>) => RunArgs;
  outputFormat: 'normal' | 'json';
  output?: string;
  html?: string;
  /** write the runs as batch jobs to this directory instead of running them (jobs/job-dir.ts) */
  emitJobs?: string;
}

/** The profiles `--profile all` runs: every .json in the default profile's folder, the default first. */
export function allProfilePaths(): string[] {
  const dir = dirname(DEFAULT_PROFILE_PATH);
  const others = readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => join(dir, f))
    .filter((p) => p !== DEFAULT_PROFILE_PATH)
    .sort();
  return [DEFAULT_PROFILE_PATH, ...others];
}

/** What each experiment sets unless the command line says otherwise (run option name → parsed value). */
const EXPERIMENT_BASE: Record<Experiment, Record<string, unknown>> = {
  reference: { 'guest-ram': '256m' },
  untrusted: { 'guest-ram': '256m', platform: 'bare-metal', untrusted: true },
};

/**
 * The stack of one cell: `run` with the given options, the experiment's
 * defaults, and the cell's fio job, strategy and profile. The pool's options
 * (`--slots-per-class`) go to the pool's cells only; the pool's cells raise
 * always_bounce_limit to cover the block size, as the published runs did.
 */
export function compareCellStack(
  a: Pick<CompareArgs, 'given' | 'runArgsWith'>,
  experiment: Experiment,
  profilePath: string,
  strategy: DmaStrategy,
  bs: { label: string; blockSizeBytes: number },
  sizeBytes: number,
  iodepth: number,
): StackOptions {
  if (!a.runArgsWith) throw new Error('compare: no run-argument builder');
  const base: Record<string, unknown> = { ...EXPERIMENT_BASE[experiment], ...(a.given ?? {}) };
  if (strategy !== 'bounce') delete base['slots-per-class'];
  const overrides: Record<string, string> = {
    name: `${strategy}-${bs.label}`,
    rw: 'read',
    bs: String(bs.blockSizeBytes),
    iodepth: String(iodepth),
    size: String(sizeBytes),
    direct: '1',
    ioengine: 'libaio',
    strategy,
    profile: profilePath,
    ...(strategy === 'bounce' ? { 'always-bounce-limit': String(Math.max(4096, bs.blockSizeBytes)) } : {}),
  };
  const run = runOptionsOf(a.runArgsWith(base, overrides));
  if (run.groups.length !== 1) throw new Error(`compare cell ${strategy} ${bs.label}: ${run.groups.length} barrier groups, expected 1`);
  return run.groups[0];
}

/** The model options given, as a line for the experiment's description. */
function modelOptionsText(given: Readonly<Record<string, unknown>> | undefined): string | undefined {
  const parts = Object.entries(given ?? {}).map(([k, v]) => (v === true ? `--${k}` : `--${k} ${String(v)}`));
  return parts.length === 0 ? undefined : `options: ${parts.join(' ')}`;
}

export async function compareCommand(a: CompareArgs): Promise<void> {
  const experiment = (a.experiment ?? 'reference') as Experiment;
  if (!(EXPERIMENTS as readonly string[]).includes(experiment)) throw new InputError('--experiment', a.experiment, `one of ${EXPERIMENTS.join(', ')}`);
  const profiles = a.profile === 'all' ? allProfilePaths() : [a.profile ?? DEFAULT_PROFILE_PATH];
  if (a.emitJobs !== undefined) {
    checkEmitOptions(a);
    if (experiment !== 'reference') throw new InputError('--emit-jobs', a.emitJobs, 'the reference experiment only (no --experiment untrusted)');
    if (profiles.length !== 1) throw new InputError('--emit-jobs', a.emitJobs, 'one profile file (no --profile all): emit one directory per profile');
  }
  if (a.output !== undefined) checkOutputPath('--output', a.output, profiles);
  if (a.html !== undefined) checkOutputPath('--html', a.html, profiles);
  const sizeBytes = a.size === undefined ? undefined : parseRegionSizeBytes('--size', a.size);
  const parallel = a.parallel === undefined ? 1 : Number(a.parallel);
  if (a.parallel !== undefined && !/^\d+$/.test(a.parallel.trim())) throw new InputError('--parallel', a.parallel, 'a whole number of threads from 1 to 16');
  const blockSizes = a.bs === undefined ? undefined : a.bs.split(',').map((s) => s.trim());
  const text = modelOptionsText(a.given);
  const stackFor = (profilePath: string) =>
    a.runArgsWith
      ? (strategy: DmaStrategy, bs: { label: string; blockSizeBytes: number }, size: number, iodepth: number) =>
          compareCellStack(a, experiment, profilePath, strategy, bs, size, iodepth)
      : undefined;

  if (experiment === 'untrusted') {
    const results: UntrustedResult[] = [];
    for (const profilePath of profiles) {
      const s = stackFor(profilePath);
      if (!s) throw new Error('compare --experiment untrusted: no run-argument builder');
      results.push(await runUntrusted({ sizeBytes, blockSizes, parallel, stackFor: s, modelOptionsText: text }));
    }
    if (a.html) writeComplete(a.html, formatUntrustedHtml(results));
    const json = results.length === 1 ? results[0] : { profiles: results };
    emitOutput(a.outputFormat === 'json' ? `${JSON.stringify(json, null, 2)}\n` : results.map(formatUntrustedTable).join('\n'), a.output);
    return;
  }
  if (a.emitJobs !== undefined) {
    const plan = planCompare({ profilePath: profiles[0], sizeBytes, parallel, blockSizes, stackFor: stackFor(profiles[0]), modelOptionsText: text });
    const tasks: JobTask[] = plan.cells
      ? plan.cells.map((cell) => ({ kind: 'compare-stack', cell }))
      : plan.tasks.map((cell) => ({ kind: 'compare-cell', cell }));
    process.stdout.write(
      emitJobs(a.emitJobs, {
        command: 'compare',
        context: plan.context,
        tasks,
        profilePath: plan.profilePath,
        parallel: a.parallel === undefined ? tasks.length : parallel,
      }),
    );
    return;
  }
  const results: CompareResult[] = [];
  for (const profilePath of profiles) {
    const s = stackFor(profilePath);
    results.push(await runCompare({ profilePath, sizeBytes, parallel, blockSizes, stackFor: s, modelOptionsText: text }));
  }
  if (a.html) writeComplete(a.html, results.length === 1 ? formatCompareHtml(results[0]) : formatCompareHtmlAll(results));
  const json = results.length === 1 ? results[0] : { profiles: results };
  emitOutput(a.outputFormat === 'json' ? `${JSON.stringify(json, null, 2)}\n` : results.map(formatCompareTable).join('\n'), a.output);
}
