/** `vmstack scale`: throughput and lock costs as jobs are added. */

import { DMA_STRATEGIES, type DmaStrategy } from '@vmstack/guest-kernel';
import { DEFAULT_QUANTUM_NS, InputError } from '@vmstack/shm';
import { formatScaleHtml, formatScaleTable, runScale } from '../scale/scale.js';
import { checkOutputPath, emitOutput, writeComplete } from './output.js';

export interface ScaleArgs {
  jobs?: string;
  strategies?: string;
  rw?: string;
  bs?: string;
  iodepth?: string;
  size?: string;
  quantum?: string;
  profile?: string;
  outputFormat: 'normal' | 'json';
  output?: string;
  html?: string;
}

function list(field: string, text: string): string[] {
  const xs = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (xs.length === 0) throw new InputError(field, text, 'a comma-separated list');
  return xs;
}

export async function scaleCommand(a: ScaleArgs): Promise<void> {
  if (a.output !== undefined) checkOutputPath('--output', a.output, [a.profile]);
  if (a.html !== undefined) checkOutputPath('--html', a.html, [a.profile]);
  const jobs = list('--jobs', a.jobs ?? '1,2,4').map((x) => {
    if (!/^\d+$/.test(x)) throw new InputError('--jobs', x, 'whole numbers of jobs from 1 to 32, e.g. 1,2,4');
    return Number(x);
  });
  const strategies = list('--strategies', a.strategies ?? 'strict,lazy,bounce').map((x) => {
    if (!(DMA_STRATEGIES as readonly string[]).includes(x)) throw new InputError('--strategies', x, `a list of ${DMA_STRATEGIES.join(', ')}`);
    return x as DmaStrategy;
  });
  const iodepth = Number(a.iodepth ?? '8');
  if (!Number.isInteger(iodepth) || iodepth < 1 || iodepth > 1024) throw new InputError('--iodepth', a.iodepth, 'a whole number from 1 to 1024');
  const quantumNs = a.quantum === undefined ? DEFAULT_QUANTUM_NS : Number(a.quantum);
  if (!Number.isSafeInteger(quantumNs) || quantumNs < 0) throw new InputError('--quantum', a.quantum, 'a whole number of model ns ≥ 0');
  const r = await runScale({ profilePath: a.profile, jobs, strategies, rw: a.rw ?? 'randread', bs: a.bs ?? '4k', iodepth, size: a.size ?? '4m', quantumNs });
  if (a.html) writeComplete(a.html, formatScaleHtml(r));
  const text = a.outputFormat === 'json' ? `${JSON.stringify(r, null, 2)}\n` : formatScaleTable(r);
  emitOutput(text, a.output);
}
