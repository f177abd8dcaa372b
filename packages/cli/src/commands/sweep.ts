/** `vmstack sweep`: throughput against block size for each strategy. */

import { DMA_STRATEGIES, type DmaStrategy } from '@vmstack/guest-kernel';
import { InputError } from '@vmstack/shm';
import { parseRegionSizeBytes, parseSizeBytes } from '../fio/sizes.js';
import { checkEmitDir, emitJobs } from '../jobs/job-dir.js';
import { formatSweepHtml, formatSweepTable, planSweep, runSweep } from '../sweep/sweep.js';
import { checkOutputPath, emitOutput, writeComplete } from './output.js';

export interface SweepArgs {
  strategies?: string;
  bs?: string;
  size?: string;
  iodepth?: string;
  parallel?: string;
  profile?: string;
  outputFormat: 'normal' | 'json';
  output?: string;
  html?: string;
  /** write the runs as batch jobs to this directory instead of running them (jobs/job-dir.ts) */
  emitJobs?: string;
}

export async function sweepCommand(a: SweepArgs): Promise<void> {
  if (a.emitJobs !== undefined) checkEmitOptions(a);
  if (a.output !== undefined) checkOutputPath('--output', a.output, [a.profile]);
  if (a.html !== undefined) checkOutputPath('--html', a.html, [a.profile]);
  const strategies = (a.strategies ?? DMA_STRATEGIES.join(','))
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean)
    .map((x) => {
      if (!(DMA_STRATEGIES as readonly string[]).includes(x)) throw new InputError('--strategies', x, `a list of ${DMA_STRATEGIES.join(', ')}`);
      return x as DmaStrategy;
    });
  const blockSizes = (a.bs ?? '4k,16k,64k,128k')
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean)
    .map((label) => {
      const bytes = parseSizeBytes('--bs', label);
      if (bytes < 4096 || bytes % 4096 !== 0 || bytes > 512 * 1024)
        throw new InputError('--bs', label, 'block sizes of whole 4 KiB pages up to 512k, e.g. 4k,16k,64k,128k');
      return { label, bytes };
    });
  const iodepth = Number(a.iodepth ?? '64');
  if (!Number.isInteger(iodepth) || iodepth < 1 || iodepth > 1024) throw new InputError('--iodepth', a.iodepth, 'a whole number from 1 to 1024');
  const parallel = a.parallel === undefined ? 1 : Number(a.parallel);
  if (a.parallel !== undefined && !/^\d+$/.test(a.parallel.trim())) throw new InputError('--parallel', a.parallel, 'a whole number of threads from 1 to 16');
  const sizeBytes = a.size === undefined ? 16 * 1024 * 1024 : parseRegionSizeBytes('--size', a.size);
  const options = { profilePath: a.profile, strategies, blockSizes, sizeBytes, iodepth, parallel };
  if (a.emitJobs !== undefined) {
    const plan = planSweep(options);
    const tasks = plan.tasks.map((cell) => ({ kind: 'compare-cell' as const, cell }));
    process.stdout.write(
      emitJobs(a.emitJobs, {
        command: 'sweep',
        context: plan.context,
        tasks,
        profilePath: plan.profilePath,
        parallel: a.parallel === undefined ? tasks.length : parallel,
      }),
    );
    return;
  }
  const r = await runSweep(options);
  if (a.html) writeComplete(a.html, formatSweepHtml(r));
  const text = a.outputFormat === 'json' ? `${JSON.stringify(r, null, 2)}\n` : formatSweepTable(r);
  emitOutput(text, a.output);
}

/** `--emit-jobs DIR` writes the runs and nothing else: the report's options belong to `vmstack merge`. */
export function checkEmitOptions(a: { emitJobs?: string; output?: string; html?: string }): void {
  checkEmitDir(a.emitJobs!);
  for (const [field, value] of [
    ['--output', a.output],
    ['--html', a.html],
  ] as const)
    if (value !== undefined) throw new InputError(field, value, `no ${field} with --emit-jobs: give it to vmstack merge, which writes the report`);
}
