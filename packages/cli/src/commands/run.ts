/** `vmstack run`: parse jobs, run them on the stack, print fio output. */

import { writeFileSync, renameSync } from 'node:fs';
import { loadProfile, DEFAULT_PROFILE_PATH, formatLockStat, InputError, type ClockMode, type LockStat } from '@vmstack/shm';
import type { DmaStrategy, ViommuDriverGeneration, UserBufferContiguity } from '@vmstack/guest-kernel';
import { jobsFromCommandLine, jobsFromFile } from '../fio/options.js';
import { parseSizeBytes } from '../fio/sizes.js';
import { runStack } from '../stack/run-stack.js';
import { formatFioJson } from '../report/fio-json.js';
import { formatFioNormal } from '../report/fio-normal.js';

export interface RunArgs {
  jobfile?: string;
  fio: Record<string, string | boolean>;
  strategy: DmaStrategy;
  clock: ClockMode;
  profile?: string;
  quantumNs: number;
  driver: ViommuDriverGeneration;
  bufferContiguity: UserBufferContiguity;
  guestRam: string;
  outputFormat: 'normal' | 'json' | 'json+';
  output?: string;
}

export async function runCommand(a: RunArgs): Promise<void> {
  const defaults = { rw: 'read', bs: '4k', iodepth: '1', size: '64m' };
  const parsed = a.jobfile ? jobsFromFile(a.jobfile, a.fio, { defaults }) : jobsFromCommandLine(a.fio, defaults);
  if (parsed.ignoredOptions.length > 0) process.stderr.write(`vmstack: ignoring options that do not change the model: ${parsed.ignoredOptions.join(', ')}\n`);
  const profile = loadProfile(a.profile ?? DEFAULT_PROFILE_PATH);
  if (!Number.isFinite(a.quantumNs) || a.quantumNs < 0) throw new InputError('--quantum', a.quantumNs, 'a number of model ns ≥ 0');
  const guestRamBytes = parseSizeBytes('--guest-ram', a.guestRam);
  const groups = [...new Set(parsed.jobs.map((j) => j.groupId))].sort((x, y) => x - y);
  const results = [];
  for (const g of groups) {
    results.push(
      await runStack({
        jobs: parsed.jobs.filter((j) => j.groupId === g),
        jobOptions: parsed.jobOptions,
        globalOptions: parsed.globalOptions,
        strategy: a.strategy,
        clock: a.clock,
        profile,
        quantumNs: a.quantumNs,
        driverGeneration: a.driver,
        bufferContiguity: a.bufferContiguity,
        guestRamBytes,
        spinLoads: 2000,
        dilation: 1,
      }),
    );
  }
  const result = { ...results[0], jobs: results.flatMap((r) => r.jobs), vmstack: results.length === 1 ? results[0].vmstack : { groups: results.map((r) => r.vmstack) } };
  let text: string;
  if (a.outputFormat === 'normal') {
    text = formatFioNormal(result) + '\n' + formatLockStat(results.flatMap((r) => r.vmstack.lock_stat as LockStat[])) + '\n' + JSON.stringify({ counters: results.map((r) => r.vmstack.counters), verify: results.map((r) => r.vmstack.verify), model_speed: results.map((r) => r.vmstack.model_speed) }, null, 2) + '\n';
  } else {
    text = formatFioJson(result, { plus: a.outputFormat === 'json+' }) + '\n';
  }
  if (a.output) {
    // write beside, then rename: a crashed run never leaves a file that looks complete
    writeFileSync(a.output + '.partial', text);
    renameSync(a.output + '.partial', a.output);
  } else {
    process.stdout.write(text);
  }
}
