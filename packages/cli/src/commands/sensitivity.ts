/**
 * `vmstack sensitivity`: each profile value × each factor, one at a time, and
 * which values move each ratio of the reference experiment most (text, JSON,
 * and a tornado chart per row with --html). The cells are compare's: `run`
 * with the model and topology options given (commands/compare.ts).
 */

import { DEFAULT_PROFILE_PATH, InputError } from '@vmstack/shm';
import { parseRegionSizeBytes } from '../fio/sizes.js';
import { formatSensitivityHtml, formatSensitivityTable, parseFactors, parseKeys, runSensitivity } from '../sensitivity/sensitivity.js';
import { type CompareArgs, compareCellStack } from './compare.js';
import { checkOutputPath, emitOutput, writeComplete } from './output.js';

export interface SensitivityArgs
  extends Pick<CompareArgs, 'profile' | 'size' | 'bs' | 'parallel' | 'given' | 'runArgsWith' | 'outputFormat' | 'output' | 'html'> {
  keys?: string;
  factors?: string;
  /** rows of the text output per block size (default 10) */
  top?: string;
}

export async function sensitivityCommand(a: SensitivityArgs): Promise<void> {
  if (a.profile === 'all') throw new InputError('--profile', a.profile, 'one profile file: sensitivity varies the values of one profile');
  const profilePath = a.profile ?? DEFAULT_PROFILE_PATH;
  if (a.output !== undefined) checkOutputPath('--output', a.output, [profilePath]);
  if (a.html !== undefined) checkOutputPath('--html', a.html, [profilePath]);
  const keys = a.keys === undefined ? undefined : parseKeys(a.keys);
  const factors = a.factors === undefined ? undefined : parseFactors(a.factors);
  const sizeBytes = a.size === undefined ? undefined : parseRegionSizeBytes('--size', a.size);
  if (a.parallel !== undefined && !/^\d+$/.test(a.parallel.trim())) throw new InputError('--parallel', a.parallel, 'a whole number of threads from 1 to 16');
  const parallel = a.parallel === undefined ? 1 : Number(a.parallel);
  if (a.top !== undefined && !/^\d+$/.test(a.top.trim())) throw new InputError('--top', a.top, 'a whole number of values to list per block size, e.g. 10');
  const top = a.top === undefined ? 10 : Number(a.top);
  const blockSizes = a.bs === undefined ? undefined : a.bs.split(',').map((s) => s.trim());
  const r = await runSensitivity({
    keys,
    factors,
    blockSizes,
    sizeBytes,
    parallel,
    stackFor: (strategy, row, size, iodepth) => compareCellStack(a, 'reference', profilePath, strategy, row, size, iodepth),
  });
  if (a.html) writeComplete(a.html, formatSensitivityHtml(r));
  emitOutput(a.outputFormat === 'json' ? `${JSON.stringify(r, null, 2)}\n` : formatSensitivityTable(r, top), a.output);
}
