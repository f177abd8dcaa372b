/**
 * The runs of a compare, sweep or scale as data: each a `JobTask` that one
 * process runs alone (`runJobTask`), in this thread, on a piscina thread, or
 * as an emitted batch job (`vmstack job`), with the same result: with the
 * virtual clock a run's numbers depend on its task only.
 */

import { isAbsolute, resolve } from 'node:path';
import type { DmaStrategy } from '@vmstack/guest-kernel';
import { type RunArgs, runOptionsOf } from '../commands/run.js';
import { type CompareCell, type CompareCellResult, compareCellResultOf } from '../compare/cells.js';
import { type CompareTask, type CompareTaskResult, runCompareTask } from '../compare/experiment.js';
import { type ScalePoint, scalePointOf } from '../scale/scale.js';
import { runStack } from '../stack/run-stack.js';

/** The commands whose runs can be emitted as batch jobs and merged. */
export const JOB_COMMANDS = ['compare', 'sweep', 'scale'] as const;
export type JobCommand = (typeof JOB_COMMANDS)[number];

/**
 * One run: a cell of compare or sweep on the default topology (`compare-cell`),
 * a cell of compare or sensitivity as the whole run's stack options, built by
 * run's own option checks (`compare-stack`: self-contained, its profile and
 * topology inside), or a point of scale (run's arguments with the point's
 * values set).
 */
export type JobTask =
  | { kind: 'compare-cell'; cell: CompareTask }
  | { kind: 'compare-stack'; cell: CompareCell }
  | { kind: 'scale-point'; strategy: DmaStrategy; value: string; x: number; args: RunArgs };

export type JobTaskResult = CompareTaskResult | CompareCellResult | ScalePoint;

/** Run one task. A relative profile path is taken from `baseDir` (an emitted job directory). */
export async function runJobTask(task: JobTask, baseDir?: string): Promise<JobTaskResult> {
  const at = (path: string) => (baseDir !== undefined && !isAbsolute(path) ? resolve(baseDir, path) : path);
  if (task.kind === 'compare-cell') return runCompareTask({ ...task.cell, profilePath: at(task.cell.profilePath) });
  if (task.kind === 'compare-stack') return compareCellResultOf(task.cell, await runStack(task.cell.stack));
  const args = task.args.profile === undefined ? task.args : { ...task.args, profile: at(task.args.profile) };
  // run's own checks, as scale applied them when it planned the point
  const run = runOptionsOf(args);
  return scalePointOf(task, await runStack(run.groups[0]));
}

/** What a task is, in a few words (the job command's line, errors). */
export function describeJobTask(task: JobTask): string {
  if (task.kind === 'compare-stack') return `${task.cell.strategy} bs=${task.cell.blockSizeBytes}`;
  return task.kind === 'compare-cell'
    ? `${task.cell.strategy} bs=${task.cell.label}`
    : `${task.strategy} ${task.args.fio.numjobs !== undefined ? `numjobs=${task.args.fio.numjobs} ` : ''}point ${task.value}`;
}
