/** `vmstack compare`: the reference experiment, printed as a table or as JSON. */

import { InputError } from '@vmstack/shm';
import { formatCompareHtml, formatCompareTable, runCompare } from '../compare/compare.js';
import { parseRegionSizeBytes } from '../fio/sizes.js';
import { checkOutputPath, emitOutput, writeComplete } from './output.js';

export interface CompareArgs {
  profile?: string;
  size?: string;
  bs?: string;
  parallel?: string;
  outputFormat: 'normal' | 'json';
  output?: string;
  html?: string;
}

export async function compareCommand(a: CompareArgs): Promise<void> {
  if (a.output !== undefined) checkOutputPath('--output', a.output, [a.profile]);
  if (a.html !== undefined) checkOutputPath('--html', a.html, [a.profile]);
  const sizeBytes = a.size === undefined ? undefined : parseRegionSizeBytes('--size', a.size);
  const parallel = a.parallel === undefined ? 1 : Number(a.parallel);
  if (a.parallel !== undefined && !/^\d+$/.test(a.parallel.trim())) throw new InputError('--parallel', a.parallel, 'a whole number of threads from 1 to 16');
  const blockSizes = a.bs === undefined ? undefined : a.bs.split(',').map((s) => s.trim());
  const result = await runCompare({ profilePath: a.profile, sizeBytes, parallel, blockSizes });
  const text = a.outputFormat === 'json' ? `${JSON.stringify(result, null, 2)}\n` : formatCompareTable(result);
  if (a.html) writeComplete(a.html, formatCompareHtml(result));
  emitOutput(text, a.output);
}
