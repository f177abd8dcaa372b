/**
 * Bad input the model cannot run, refused at once with exit 2 and one line
 * naming the field: sizes beyond the modelled drive, the pool's
 * always_bounce_limit (one rule for --always-bounce-limit and
 * --always-bounce-limit-at), negative times, job files that are not regular
 * files, and values too long to echo whole.
 */

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { oneInputErrorLine, REPO, vmstack } from './helpers/cli.js';

const tmp = mkdtempSync(join(tmpdir(), 'vmstack-bad-input-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(tmp, name);
  writeFileSync(path, text);
  return path;
}

const fifo = join(tmp, 'jobs.fifo');
execFileSync('mkfifo', [fifo]);
const oneTbJob = file('one-tb.fio', '[j]\nrw=write\nsize=1t\n');
file('loop.inc', 'include loop.inc\ninclude loop.inc\ninclude loop.inc\n');
const includeLoopJob = file('include-loop.fio', '[j]\nsize=64k\ninclude loop.inc\n');
const oneTbReadJob = file('one-tb-read.fio', '[j]\nrw=randread\nsize=1t\n');
const offsetJob = file('offset.fio', '[j]\nsize=64k\noffset=17t\n');
const incrementJob = file('increment.fio', '[j]\nsize=64k\nnumjobs=4\noffset_increment=200g\n');
// one GiB more than this host's RAM: within the drive (on hosts below 476 GiB), beyond the RAM a written block is kept in
const beyondRamSize = `${Math.floor(totalmem() / 2 ** 30) + 1}g`;
const writeJobBeyondRam = file('write-beyond-ram.fio', `[j]\nrw=write\nsize=${beyondRamSize}\n`);
const longValueJob = file('long-value.fio', `[j]\nsize=64k\nrw=${'x'.repeat(200_000)}\n`);
const profile = JSON.parse(readFileSync(join(REPO, 'profiles', 'i5-10210U.json'), 'utf8')) as { values: Record<string, unknown> };
const longArrayProfile = file('long-array.json', JSON.stringify({ ...profile, values: { ...profile.values, fioSubmitNs: new Array(200_000).fill(123456) } }));

/** [title, args, what the one line must contain] */
const BAD_INPUTS: [string, string[], string[]][] = [
  ['--size 1p: beyond the drive', ['run', '--size', '1p'], ['--size', '"1p"', "drive's capacity"]],
  ['size=1t of reads: beyond the drive', ['run', oneTbReadJob], ['[j] size', '"1t"', "drive's capacity"]],
  ['size=1t of writes: beyond the drive', ['run', oneTbJob], ['[j] size', '"1t"', "drive's capacity"]],
  [`size=${beyondRamSize} of writes: beyond host RAM`, ['run', writeJobBeyondRam], ['[j] size', `"${beyondRamSize}"`, "host's RAM"]],
  ['--offset past the drive', ['run', '--size', '64k', '--offset', '17t'], ['--offset', '"17t"', "drive's capacity"]],
  ['offset=17t in a job file', ['run', offsetJob], ['[j] offset', '"17t"', "drive's capacity"]],
  ['offset_increment past the drive', ['run', incrementJob], ['[j] offset_increment', '"200g"', "drive's capacity"]],
  ['--size past the drive from an offset', ['run', '--size', '400g', '--offset', '400g'], ['--size', '"400g"', 'offset included']],
  ['compare --size 1p', ['compare', '--size', '1p'], ['--size', '"1p"', "drive's capacity"]],
  ['sweep --size 1p', ['sweep', '--size', '1p'], ['--size', '"1p"', "drive's capacity"]],
  ['scale --size 1p', ['scale', '--size', '1p'], ['--size', '"1p"', "drive's capacity"]],
  ['--always-bounce-limit 4g', ['run', '--strategy', 'bounce', '--always-bounce-limit', '4g'], ['--always-bounce-limit', '"4g"', '2147483647']],
  [
    '--always-bounce-limit-at 5ms=4g',
    ['run', '--strategy', 'bounce', '--always-bounce-limit-at', '5ms=4g'],
    ['--always-bounce-limit-at', '"4g"', '2147483647'],
  ],
  [
    '--always-bounce-limit-at -5ms=64k',
    ['run', '--strategy', 'bounce', '--always-bounce-limit-at', '-5ms=64k'],
    ['--always-bounce-limit-at', '"-5ms"', 'whole number'],
  ],
  ['--always-bounce-limit-at 5xs=64k', ['run', '--strategy', 'bounce', '--always-bounce-limit-at', '5xs=64k'], ['--always-bounce-limit-at', '"5xs"']],
  ['--always-bounce-limit-at 5ms', ['run', '--strategy', 'bounce', '--always-bounce-limit-at', '5ms'], ['--always-bounce-limit-at', 'TIME=SIZE']],
  ['a FIFO as the job file', ['run', fifo], ['job file', fifo, 'FIFO']],
  ['a directory as the job file', ['run', tmp], ['job file', tmp, 'directory']],
  ['a device as the job file', ['run', '/dev/zero'], ['job file', '/dev/zero', 'device']],
  ['a FIFO as the profile', ['run', '--profile', fifo], ['profile', fifo, 'FIFO']],
  ['a device as the profile', ['run', '--profile', '/dev/zero'], ['profile', '/dev/zero', 'device']],
  ['an included file that includes itself', ['run', includeLoopJob], ['loop.inc:1 include', '"loop.inc"', 'include cycle']],
  ['a 200 KB job-file value', ['run', longValueJob], ['[j] rw', '…']],
  ['a profile array of 200 000 numbers', ['run', '--profile', longArrayProfile], ['profile.fioSubmitNs', '…']],
];

for (const [title, args, mentions] of BAD_INPUTS) {
  test(`bad input, one line and exit 2: ${title}`, async (t) => {
    const r = await vmstack(args, 15_000);
    const line = oneInputErrorLine(r);
    for (const m of mentions) t.true(line.includes(m), `"${line}" should mention ${m}`);
    t.true(line.length < 400, `an excerpt, not the whole value: ${line.length} characters`);
    t.is(r.stdout, '');
  });
}

test('--always-bounce-limit and --always-bounce-limit-at take the same sizes', async (t) => {
  const { parseAlwaysBounceLimit, parseLimitSchedule } = await import('../src/commands/run.js');
  for (const size of ['0', '3k', '4k', '5k', '128k', '1g']) {
    t.is(parseLimitSchedule(`5ms=${size}`)[0].bytes, parseAlwaysBounceLimit('--always-bounce-limit', size), size);
  }
  for (const size of ['2g', '4g', '1x']) {
    t.throws(() => parseAlwaysBounceLimit('--always-bounce-limit', size));
    t.throws(() => parseLimitSchedule(`5ms=${size}`));
  }
});
