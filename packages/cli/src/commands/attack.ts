/** `vmstack attack`: the exposure table: what the device, as an attacker, reaches under each strategy (attack/attack.ts). */

import { DMA_STRATEGIES, type DmaStrategy, type UserBufferContiguity, type ViommuDriverGeneration } from '@vmstack/guest-kernel';
import { DEFAULT_QUANTUM_NS, InputError } from '@vmstack/shm';
import type { VmmPath } from '@vmstack/vmm';
import { type AttackConfig, formatAttackHtml, formatAttackTable, runAttack } from '../attack/attack.js';
import { checkOutputPath, emitOutput, writeComplete } from './output.js';
import { parseGuestRam, type RunArgs } from './run.js';

export interface AttackArgs {
  strategies?: string;
  trust?: string;
  /** fio options as written: rw, bs, iodepth, size, verify */
  fio: Record<string, string>;
  driver: ViommuDriverGeneration;
  /** the VMM's path (run --vmm): qemu-notifier reports the device's faults to the guest */
  vmm?: VmmPath;
  /** vm (default) or bare-metal: the guest behind virtio-iommu, or the host's own dma-iommu driving VT-d */
  platform?: string;
  profile?: string;
  guestRam?: string;
  delays?: string;
  sampleEvery?: string;
  secretPages?: string;
  scanPages?: string;
  neighbourBytes?: string;
  outputFormat: 'normal' | 'json';
  output?: string;
  html?: string;
}

/** The workload each row runs unless told otherwise: reads and writes, so every kind of access has buffers to try. */
export const ATTACK_FIO_DEFAULTS: Record<string, string> = { rw: 'randrw', bs: '4k', iodepth: '8', size: '2m', verify: 'crc32c', direct: '1' };
export const ATTACK_DEFAULT_DELAYS = '0ns,100ns,300ns,1us,3us,10us,30us,100us,300us,1ms,3ms,10ms';
const NS_PER_UNIT: Record<string, number> = { ns: 1, us: 1e3, ms: 1e6, s: 1e9 };

/** `--delays 0ns,1us,10ms`: model times after an unmap, ascending, each a whole number with ns, us, ms or s. */
export function parseDelays(text: string): number[] {
  const out = text.split(',').map((part) => {
    const m = /^\s*(\d+)(ns|us|ms|s)\s*$/.exec(part);
    const ns = m ? Number(m[1]) * NS_PER_UNIT[m[2]] : Number.NaN;
    if (!Number.isSafeInteger(ns))
      throw new InputError('--delays', text, 'a list of model times after the unmap, each a whole number with ns, us, ms or s, e.g. 0ns,1us,10ms');
    return ns;
  });
  for (let i = 1; i < out.length; i++)
    if (out[i] <= out[i - 1]) throw new InputError('--delays', text, 'times in ascending order, each once, e.g. 0ns,1us,10ms');
  return out;
}

function parseCount(field: string, text: string | undefined, dflt: number, min: number, max: number): number {
  if (text === undefined) return dflt;
  const n = Number(text.trim());
  if (!/^\d+$/.test(text.trim()) || n < min || n > max) throw new InputError(field, text, `a whole number from ${min} to ${max}`);
  return n;
}

function parseList<T extends string>(field: string, text: string, allowed: readonly T[]): T[] {
  const items = text.split(',').map((x) => x.trim());
  for (const x of items) if (!(allowed as readonly string[]).includes(x)) throw new InputError(field, x, `a list of ${allowed.join(', ')}`);
  return [...new Set(items)] as T[];
}

export async function attackCommand(a: AttackArgs): Promise<void> {
  if (a.output !== undefined) checkOutputPath('--output', a.output, [a.profile]);
  if (a.html !== undefined) checkOutputPath('--html', a.html, [a.profile]);
  const strategies = parseList<DmaStrategy>('--strategies', a.strategies ?? DMA_STRATEGIES.join(','), DMA_STRATEGIES);
  const trust = parseList('--trust', a.trust ?? 'trusted,untrusted', ['trusted', 'untrusted'] as const);
  const configs: AttackConfig[] = strategies.flatMap((strategy) => trust.map((t) => ({ strategy, untrusted: t === 'untrusted' })));
  const guestRam = a.guestRam ?? '128m';
  const guestRamBytes = parseGuestRam(guestRam);
  const runArgs: RunArgs = {
    fio: { ...ATTACK_FIO_DEFAULTS, ...a.fio },
    strategy: 'strict',
    clock: 'virtual',
    profile: a.profile,
    quantumNs: DEFAULT_QUANTUM_NS,
    driver: a.driver,
    ...(a.vmm === undefined ? {} : { vmm: a.vmm }),
    bufferContiguity: 'none' satisfies UserBufferContiguity,
    guestRam,
    untrusted: false,
    outputFormat: 'normal',
    ...(a.platform === undefined ? {} : { topology: { platform: a.platform } }),
  };
  const delaysNs = parseDelays(a.delays ?? ATTACK_DEFAULT_DELAYS);
  const guestPages = guestRamBytes / 4096;
  const attack = {
    delaysNs,
    sampleEvery: parseCount('--sample-every', a.sampleEvery, 4, 1, 1_000_000),
    secretPages: parseCount('--secret-pages', a.secretPages, 64, 0, guestPages),
    scanPages: parseCount('--scan-pages', a.scanPages, guestPages, 0, 1 << 24),
    scanAfterCommands: 16,
    neighbourBytes: parseCount('--neighbour-bytes', a.neighbourBytes, 64, 0, 4096),
  };
  // every row's options are checked before the first runs
  const { runOptionsOf } = await import('./run.js');
  for (const c of configs) runOptionsOf({ ...runArgs, strategy: c.strategy, untrusted: c.untrusted });
  const report = await runAttack({ configs, runArgs, attack });
  if (a.html !== undefined) writeComplete(a.html, formatAttackHtml(report));
  emitOutput(a.outputFormat === 'json' ? `${JSON.stringify(report, null, 2)}\n` : formatAttackTable(report), a.output);
}
