/**
 * `vmstack job DIR` runs one run of a job directory (jobs/job-dir.ts);
 * `vmstack merge DIR` combines their results into the report the command
 * gives when it runs locally: the same table, JSON and HTML.
 */

import { formatCompareHtml, formatCompareTable } from '../compare/compare.js';
import { mergeJobs, runJob } from '../jobs/job-dir.js';
import { formatScaleHtml, formatScaleJson, formatScaleTable } from '../scale/scale.js';
import { formatSweepHtml, formatSweepTable } from '../sweep/sweep.js';
import { checkOutputPath, emitOutput, writeComplete } from './output.js';

export interface JobArgs {
  dir: string;
  /** as written; undefined: SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX */
  index?: string;
}

export async function jobCommand(a: JobArgs): Promise<void> {
  process.stdout.write(await runJob(a.dir, a.index));
}

export interface MergeArgs {
  dir: string;
  outputFormat: 'normal' | 'json';
  output?: string;
  html?: string;
}

export async function mergeCommand(a: MergeArgs): Promise<void> {
  if (a.output !== undefined) checkOutputPath('--output', a.output);
  if (a.html !== undefined) checkOutputPath('--html', a.html);
  const merged = mergeJobs(a.dir);
  const json = a.outputFormat === 'json';
  let text: string;
  let html: string;
  switch (merged.command) {
    case 'compare':
      text = json ? `${JSON.stringify(merged.result, null, 2)}\n` : formatCompareTable(merged.result);
      html = formatCompareHtml(merged.result);
      break;
    case 'sweep':
      text = json ? `${JSON.stringify(merged.result, null, 2)}\n` : formatSweepTable(merged.result);
      html = formatSweepHtml(merged.result);
      break;
    case 'scale':
      text = json ? formatScaleJson(merged.result) : formatScaleTable(merged.result);
      html = formatScaleHtml(merged.result);
      break;
  }
  if (a.html) writeComplete(a.html, html);
  emitOutput(text, a.output);
}
