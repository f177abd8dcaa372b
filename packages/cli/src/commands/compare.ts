/** `vmstack compare`: the reference experiment, printed as a table or as JSON. */

import { InputError } from '@vmstack/shm';
import { formatCompareHtml, formatCompareTable, planCompare, runCompare } from '../compare/compare.js';
import { parseRegionSizeBytes } from '../fio/sizes.js';
import { emitJobs } from '../jobs/job-dir.js';
import { checkOutputPath, emitOutput, writeComplete } from './output.js';
import { checkEmitOptions } from './sweep.js';

export interface CompareArgs {
  profile?: string;
  size?: string;
  bs?: string;
  parallel?: string;
  outputFormat: 'normal' | 'json';
  output?: string;
  html?: string;
  /** write the runs as batch jobs to this directory instead of running them (jobs/job-dir.ts) */
  emitJobs?: string;
}

export async function compareCommand(a: CompareArgs): Promise<void> {
  if (a.emitJobs !== undefined) checkEmitOptions(a);
  if (a.output !== undefined) checkOutputPath('--output', a.output, [a.profile]);
  if (a.html !== undefined) checkOutputPath('--html', a.html, [a.profile]);
  const sizeBytes = a.size === undefined ? undefined : parseRegionSizeBytes('--size', a.size);
  const parallel = a.parallel === undefined ? 1 : Number(a.parallel);
  if (a.parallel !== undefined && !/^\d+$/.test(a.parallel.trim())) throw new InputError('--parallel', a.parallel, 'a whole number of threads from 1 to 16');
  const blockSizes = a.bs === undefined ? undefined : a.bs.split(',').map((s) => s.trim());
  const options = { profilePath: a.profile, sizeBytes, parallel, blockSizes };
  if (a.emitJobs !== undefined) {
    const plan = planCompare(options);
    const tasks = plan.tasks.map((cell) => ({ kind: 'compare-cell' as const, cell }));
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
  const result = await runCompare(options);
  const text = a.outputFormat === 'json' ? `${JSON.stringify(result, null, 2)}\n` : formatCompareTable(result);
  if (a.html) writeComplete(a.html, formatCompareHtml(result));
  emitOutput(text, a.output);
}
