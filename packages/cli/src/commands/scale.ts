/**
 * `vmstack scale`: vary one run dimension, per strategy. Every point is the
 * `run` command's arguments with the varied option (and the strategy) set,
 * built by run's own argv → arguments step (main.ts) and checked by its
 * arguments → run options step (`runOptionsOf`), so scale takes every option
 * run takes and refuses what run refuses. Every point is checked before the
 * first one runs.
 */

import { DMA_STRATEGIES, type DmaStrategy } from '@vmstack/guest-kernel';
import { InputError } from '@vmstack/shm';
import { emitJobs } from '../jobs/job-dir.js';
import { formatScaleHtml, formatScaleJson, formatScaleTable, runScale, type ScalePointPlan, scaleContextOf } from '../scale/scale.js';
import { asVaryError, VARY_ALLOWED, varyOfArgs } from '../scale/vary.js';
import { checkOutputPath, emitOutput, writeComplete } from './output.js';
import { type RunArgs, runOptionsOf } from './run.js';
import { checkEmitOptions } from './sweep.js';

export interface ScaleArgs {
  /** `DIM=v1,v2,...` as written */
  vary?: string;
  /** `1,2,4`: the same as `--vary jobs=1,2,4` */
  jobs?: string;
  strategies?: string;
  /** the base run's options given on scale's command line: run option name → its parsed value */
  given: Readonly<Record<string, unknown>>;
  /** scale's defaults for fio options not given (run option name → value as written) */
  fioDefaults: Readonly<Record<string, string>>;
  /** run's arguments for the given options with these set as if written on run's command line */
  runArgsWith: (overrides: Record<string, string>) => RunArgs;
  outputFormat: 'normal' | 'json';
  output?: string;
  html?: string;
  /** write the points as batch jobs to this directory instead of running them (jobs/job-dir.ts) */
  emitJobs?: string;
}

function list(field: string, text: string, allowed: string): string[] {
  const xs = text.split(',').map((s) => s.trim());
  if (xs.some((x) => x === '')) throw new InputError(field, text, allowed);
  return xs;
}

export async function scaleCommand(a: ScaleArgs): Promise<void> {
  const profile = a.given.profile as string | undefined;
  if (a.emitJobs !== undefined) checkEmitOptions(a);
  if (a.output !== undefined) checkOutputPath('--output', a.output, [profile]);
  if (a.html !== undefined) checkOutputPath('--html', a.html, [profile]);
  const vary = varyOfArgs(a.vary, a.jobs);
  if (Object.hasOwn(a.given, vary.option))
    throw new InputError(
      '--vary',
      vary.text,
      `--${vary.option} is given too: a point's ${vary.dim} comes from --vary; drop --${vary.option} or vary another dimension (${VARY_ALLOWED})`,
    );
  const strategiesAllowed = `a comma-separated list of ${DMA_STRATEGIES.join(', ')}`;
  const strategies = list('--strategies', a.strategies ?? 'strict,lazy,bounce', strategiesAllowed).map((x) => {
    if (!(DMA_STRATEGIES as readonly string[]).includes(x)) throw new InputError('--strategies', x, strategiesAllowed);
    return x as DmaStrategy;
  });
  if (new Set(strategies).size !== strategies.length) throw new InputError('--strategies', a.strategies, `${strategiesAllowed}, each once`);

  const defaults = Object.fromEntries(Object.entries(a.fioDefaults).filter(([k]) => !Object.hasOwn(a.given, k)));
  const plans: ScalePointPlan[] = [];
  // the cost profile every point loads (one --profile for all)
  let profilePath = '';
  const warnings = new Set<string>();
  for (const strategy of strategies) {
    for (const [i, value] of vary.values.entries()) {
      const args = asVaryError(vary, value, () => a.runArgsWith({ ...defaults, strategy, [vary.option]: value }));
      const run = asVaryError(vary, value, () => runOptionsOf(args));
      // without a job file, the command line is one job section: one barrier group
      if (run.groups.length !== 1) throw new Error(`scale point ${vary.dim}=${value}: ${run.groups.length} barrier groups, expected 1`);
      for (const w of run.warnings) warnings.add(w);
      plans.push({ strategy, value, x: vary.xs[i], args, stack: run.groups[0] });
      profilePath = run.profilePath;
    }
  }
  for (const w of warnings) process.stderr.write(`vmstack: ${w}\n`);

  if (a.emitJobs !== undefined) {
    const tasks = plans.map((p) => ({ kind: 'scale-point' as const, strategy: p.strategy, value: p.value, x: p.x, args: p.args }));
    const context = scaleContextOf(vary, plans);
    process.stdout.write(emitJobs(a.emitJobs, { command: 'scale', context, tasks, profilePath, parallel: tasks.length }));
    return;
  }
  const r = await runScale(vary, plans);
  if (a.html) writeComplete(a.html, formatScaleHtml(r));
  emitOutput(a.outputFormat === 'json' ? formatScaleJson(r) : formatScaleTable(r), a.output);
}
