/**
 * `vmstack scale` on the command line: bad --vary and options that fight
 * over the varied dimension are refused before any run, exit 2, one line
 * naming the option, the value and what is allowed.
 */

import test from 'ava';
import { oneInputErrorLine, vmstack } from './helpers/cli.js';

const DIMS = ['jobs', 'iodepth', 'bs', 'vms', 'vcpus', 'devices', 'viommus'];

/** [args, what the one line must contain] */
const REFUSED: [string[], string[]][] = [
  [
    ['--vary', 'sideways=1,2'],
    ['--vary', '"sideways=1,2"', ...DIMS],
  ],
  [
    ['--vary', 'jobs='],
    ['--vary', '"jobs="', ...DIMS],
  ],
  [
    ['--vary', 'iodepth=1,x'],
    ['--vary', '"iodepth=1,x"', 'whole numbers', ...DIMS],
  ],
  [
    ['--vary', 'bs=4k,4q'],
    ['--vary', '"bs=4k,4q"', 'fio sizes', ...DIMS],
  ],
  [
    ['--vary', 'iodepth=1,5000'],
    ['--vary', '"iodepth=5000"', '4096', ...DIMS],
  ],
  [
    ['--vary', 'bs=4k,3k'],
    ['--vary', '"bs=3k"', '4096', ...DIMS],
  ],
  [
    ['--vary', 'jobs=1,2', '--numjobs', '2'],
    ['--vary', '"jobs=1,2"', '--numjobs'],
  ],
  [
    ['--vary', 'iodepth=1,2', '--iodepth', '4'],
    ['--vary', '"iodepth=1,2"', '--iodepth'],
  ],
  [
    ['--jobs', '1,2', '--vary', 'iodepth=1,2'],
    ['--jobs', '"1,2"', '--vary'],
  ],
  [
    ['--jobs', '1,0'],
    ['--jobs', '"1,0"', ...DIMS],
  ],
  [
    ['--strategy', 'strict'],
    ['--strategy', 'did you mean --strategies'],
  ],
  [
    ['--strategies', 'strict,sideways'],
    ['--strategies', '"sideways"', 'bounce'],
  ],
  [
    ['--rw', 'sideways'],
    ['--rw', '"sideways"'],
  ],
  [
    ['--quantum', '-1'],
    ['--quantum', '"-1"'],
  ],
  [
    ['--driver', 'v4'],
    ['--driver', '"v4"', 'v5.10'],
  ],
];

for (const [args, mentions] of REFUSED) {
  test(`scale ${args.join(' ')}: exit 2, one line`, async (t) => {
    const r = await vmstack(['scale', ...args], 15_000);
    const line = oneInputErrorLine(r);
    for (const m of mentions) t.true(line.includes(m), `"${line}" should mention ${m}`);
    t.is(r.stdout, '');
  });
}

test('scale --help lists --vary with its dimensions and the base run options', async (t) => {
  const r = await vmstack(['scale', '--help']);
  t.is(r.code, 0);
  t.regex(r.stdout, /--vary\s.*jobs \(fio numjobs\), iodepth, bs, vms, vcpus, devices, viommus/);
  for (const o of ['--rw', '--bs', '--iodepth', '--numjobs', '--size', '--quantum', '--profile', '--guest-ram', '--strategies', '--html'])
    t.regex(r.stdout, new RegExp(`${o}\\b`));
  t.notRegex(r.stdout, /^\s+--strategy\s/m, 'the series are --strategies');
  t.regex(r.stdout, /rw[^\n]*\(default: randread\)/);
});
