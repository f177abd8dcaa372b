#!/usr/bin/env node
/**
 * vmstack command line. `vmstack run [job-file] [fio options…]` runs fio
 * jobs on the modelled stack with real workers and prints fio-style output.
 * Bad input prints one line and exits 2.
 */

import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { InputError, WorkerFailure } from '@vmstack/shm';

const FIO_KEYS = ['rw', 'bs', 'iodepth', 'numjobs', 'size', 'runtime', 'time_based', 'verify', 'do_verify', 'rwmixread', 'randseed', 'offset', 'name', 'direct', 'ioengine'] as const;

async function main(): Promise<void> {
  await yargs(hideBin(process.argv))
    .scriptName('vmstack')
    .command(
      'run [jobfile]',
      'run fio jobs on the modelled VM (guest vCPUs, VMM, host VFIO, NVMe device: each a worker thread)',
      (y) =>
        y
          .positional('jobfile', { type: 'string', describe: 'fio job file (ini syntax)' })
          .option('rw', { type: 'string' })
          .option('bs', { type: 'string' })
          .option('iodepth', { type: 'string' })
          .option('numjobs', { type: 'string' })
          .option('size', { type: 'string' })
          .option('runtime', { type: 'string' })
          .option('time_based', { type: 'boolean' })
          .option('verify', { type: 'string' })
          .option('do_verify', { type: 'string' })
          .option('rwmixread', { type: 'string' })
          .option('randseed', { type: 'string' })
          .option('offset', { type: 'string' })
          .option('name', { type: 'string' })
          .option('direct', { type: 'string' })
          .option('ioengine', { type: 'string' })
          .option('strategy', { choices: ['direct', 'strict', 'lazy'] as const, default: 'strict' as const })
          .option('clock', { choices: ['virtual', 'wall'] as const, default: 'virtual' as const })
          .option('profile', { type: 'string', describe: 'cost profile JSON (default: profiles/i5-10210U.json)' })
          .option('quantum', { type: 'number', default: 20_000, describe: 'model ns a vCPU may run ahead of the others' })
          .option('driver', { choices: ['v5.10', 'v6.x'] as const, default: 'v5.10' as const, describe: 'virtio-iommu driver generation' })
          .option('buffer_contiguity', { choices: ['none', 'huge'] as const, default: 'none' as const })
          .option('guest-ram', { type: 'string', default: '512m' })
          .option('output-format', { choices: ['normal', 'json', 'json+'] as const, default: 'normal' as const })
          .option('output', { type: 'string', describe: 'write the output to this file' })
          .strict(),
      async (argv) => {
        const { runCommand } = await import('./commands/run.js');
        const fio: Record<string, string | boolean> = {};
        for (const k of FIO_KEYS) {
          const val = (argv as Record<string, unknown>)[k];
          if (val !== undefined) fio[k] = val as string | boolean;
        }
        await runCommand({ jobfile: argv.jobfile, fio, strategy: argv.strategy, clock: argv.clock, profile: argv.profile, quantumNs: argv.quantum, driver: argv.driver, bufferContiguity: argv.buffer_contiguity, guestRam: argv['guest-ram'], outputFormat: argv['output-format'], output: argv.output });
      },
    )
    .demandCommand(1, 'name a command: run')
    .strict()
    .fail((msg, err) => {
      if (err) throw err;
      throw new InputError('command line', process.argv.slice(2).join(' '), msg);
    })
    .help()
    .parseAsync();
}

main().catch((e: unknown) => {
  if (e instanceof InputError) {
    process.stderr.write(`vmstack: ${e.message}\n`);
    process.exit(2);
  }
  if (e instanceof WorkerFailure) {
    process.stderr.write(`vmstack: ${e.message}\n`);
    process.exit(1);
  }
  process.stderr.write(`vmstack: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exit(1);
});
