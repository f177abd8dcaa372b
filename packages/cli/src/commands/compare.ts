/** `vmstack compare`: the reference experiment, printed as a table or as JSON. */

import { writeFileSync, renameSync, rmSync } from 'node:fs';
import { InputError } from '@vmstack/shm';
import { parseSizeBytes } from '../fio/sizes.js';
import { runCompare, formatCompareTable } from '../compare/compare.js';

export interface CompareArgs {
  profile?: string;
  size?: string;
  bs?: string;
  parallel?: string;
  outputFormat: 'normal' | 'json';
  output?: string;
}

export async function compareCommand(a: CompareArgs): Promise<void> {
  const sizeBytes = a.size === undefined ? undefined : parseSizeBytes('--size', a.size);
  const parallel = a.parallel === undefined ? 1 : Number(a.parallel);
  if (a.parallel !== undefined && !/^\d+$/.test(a.parallel.trim())) throw new InputError('--parallel', a.parallel, 'a whole number of threads from 1 to 16');
  const blockSizes = a.bs === undefined ? undefined : a.bs.split(',').map((s) => s.trim());
  if (a.output) rmSync(a.output, { force: true });
  const result = await runCompare({ profilePath: a.profile, sizeBytes, parallel, blockSizes });
  const text = a.outputFormat === 'json' ? JSON.stringify(result, null, 2) + '\n' : formatCompareTable(result);
  if (a.output) {
    writeFileSync(a.output + '.partial', text);
    renameSync(a.output + '.partial', a.output);
  } else {
    process.stdout.write(text);
  }
}
