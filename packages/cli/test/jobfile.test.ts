import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InputError } from '@vmstack/shm';
import test from 'ava';
import { expandEnv, type JobFile, parseJobFileText, readJobFile } from '../src/fio/jobfile.js';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'vmstack-jobfile-'));

/** Sections as [name, {key: value}] pairs, to compare whole files at a glance. */
const shape = (file: JobFile): [string, Record<string, string>][] =>
  file.sections.map((s) => [s.name, Object.fromEntries(s.options.map((o) => [o.key, o.value]))]);

test('a realistic job file: global + jobs, both comment styles, bare keys, inline comments, spaces around =', (t) => {
  const text = [
    '; -- start job file --',
    '# NVMe random read/write mix, two groups',
    '[global]',
    'ioengine=libaio',
    'direct=1',
    'bs = 4k',
    'size=1g',
    'group_reporting',
    'thread      ; every job a thread',
    '',
    '[randread]',
    'rw=randread',
    'iodepth=32   # deep queue',
    'numjobs=4',
    '',
    '[mixed]',
    '  stonewall',
    'rw=randrw',
    'rwmixread=70',
    'description="mixed; 70% reads"',
    '; -- end job file --',
  ].join('\n');
  const file = parseJobFileText(text, 'nvme.fio');
  t.is(file.path, 'nvme.fio');
  t.deepEqual(shape(file), [
    ['global', { ioengine: 'libaio', direct: '1', bs: '4k', size: '1g', group_reporting: '', thread: '' }],
    ['randread', { rw: 'randread', iodepth: '32', numjobs: '4' }],
    ['mixed', { stonewall: '', rw: 'randrw', rwmixread: '70', description: 'mixed; 70% reads' }],
  ]);
  t.is(file.sections[1].where, 'nvme.fio:11');
  t.is(file.sections[1].options[1].where, 'nvme.fio:13');
});

test('section order and names are kept as written: numeric, dotted and repeated names are not merged or reordered', (t) => {
  const file = parseJobFileText('[zeta]\nbs=4k\n[2]\n[1]\n[job.a]\nrw=write\n[global]\niodepth=2\n[zeta]\nbs=8k\n', 'order.fio');
  t.deepEqual(shape(file), [
    ['zeta', { bs: '4k' }],
    ['2', {}],
    ['1', {}],
    ['job.a', { rw: 'write' }],
    ['global', { iodepth: '2' }],
    ['zeta', { bs: '8k' }],
  ]);
});

test('values: "true"/"false" stay words, a bare key is empty, later duplicates come after earlier ones', (t) => {
  const file = parseJobFileText('[j]\ntime_based=true\nnorandommap\nverify=false\nbs=4k\nbs=8k\n', 'v.fio');
  t.deepEqual(
    file.sections[0].options.map((o) => [o.key, o.value]),
    [
      ['time_based', 'true'],
      ['norandommap', ''],
      ['verify', 'false'],
      ['bs', '4k'],
      ['bs', '8k'],
    ],
  );
});

test('CRLF line endings, a byte-order mark and a header with a trailing comment', (t) => {
  const file = parseJobFileText('\uFEFF[global]\r\nbs=4k\r\n[job1] ; the only job\r\nrw=read\r\n', 'dos.fio');
  t.deepEqual(shape(file), [
    ['global', { bs: '4k' }],
    ['job1', { rw: 'read' }],
  ]);
});

test('${VAR} in a value expands from the environment; unset variables become empty, as in fio', (t) => {
  const env = { SIZE: '64m', NUMJOBS: '4' };
  const file = parseJobFileText('[random-writers]\nrw=randwrite\nsize=${SIZE}\nnumjobs=${NUMJOBS}\ndescription=a${UNSET}b\n', 'env.fio', { env });
  t.deepEqual(shape(file), [['random-writers', { rw: 'randwrite', size: '64m', numjobs: '4', description: 'ab' }]]);
  t.is(expandEnv('${A}/${B}-${}', { A: 'x', B: 'y' }), 'x/y-');
});

test('include pulls options into the section it is in, relative to the including file, nested', (t) => {
  const dir = tmp();
  mkdirSync(join(dir, 'inc'));
  writeFileSync(join(dir, 'inc', 'glob-include.fio'), 'thread=1\ngroup_reporting=1\ninclude deeper.fio\n');
  writeFileSync(join(dir, 'inc', 'deeper.fio'), '; nested\nkb_base=1024\n');
  writeFileSync(join(dir, 'test-include.fio'), 'ioengine=libaio\niodepth=4\n');
  writeFileSync(
    join(dir, 'including.fio'),
    '[global]\nfilename=/dev/nvme0n1\ninclude inc/glob-include.fio\n\n[test]\nrw=randread\nbs=4k\ninclude test-include.fio\n',
  );
  const file = readJobFile(join(dir, 'including.fio'));
  t.deepEqual(shape(file), [
    ['global', { filename: '/dev/nvme0n1', thread: '1', group_reporting: '1', kb_base: '1024' }],
    ['test', { rw: 'randread', bs: '4k', ioengine: 'libaio', iodepth: '4' }],
  ]);
  t.is(file.sections[0].options[3].where, `${join(dir, 'inc', 'deeper.fio')}:2`);
});

test('an included file with a [section] is an error naming where', (t) => {
  const dir = tmp();
  writeFileSync(join(dir, 'bad-include.fio'), 'bs=4k\n[sneaky]\n');
  writeFileSync(join(dir, 'main.fio'), '[job]\ninclude bad-include.fio\n');
  const e = t.throws(() => readJobFile(join(dir, 'main.fio')), { instanceOf: InputError });
  t.is(e.field, `${join(dir, 'bad-include.fio')}:2`);
  t.regex(e.message, /\[sneaky\].*an included file may not contain \[sections\]/);
});

test('a missing include is an InputError naming the path it looked for', (t) => {
  const dir = tmp();
  writeFileSync(join(dir, 'main.fio'), '[job]\ninclude nowhere.fio\n');
  const e = t.throws(() => readJobFile(join(dir, 'main.fio')), { instanceOf: InputError });
  t.is(e.value, join(dir, 'nowhere.fio'));
  t.is(e.field, `${join(dir, 'main.fio')}:2 include`);
  t.regex(e.message, /ENOENT/);
});

test('a missing job file is an InputError (exit code 2) naming the path', (t) => {
  const path = join(tmp(), 'does-not-exist.fio');
  const e = t.throws(() => readJobFile(path), { instanceOf: InputError });
  t.is(e.exitCode, 2);
  t.is(e.field, 'job file');
  t.is(e.value, path);
  t.true(e.message.includes(path));
  t.regex(e.message, /a readable fio job file \(ENOENT\)/);
});

test('an option before any section is an error naming the line', (t) => {
  const e = t.throws(() => parseJobFileText('; header\nbs=4k\n[job]\n', 'early.fio'), { instanceOf: InputError });
  t.is(e.field, 'early.fio:2');
  t.is(e.value, 'bs=4k');
  t.regex(e.message, /options inside a section/);
});

test('an empty section name is an error', (t) => {
  const e = t.throws(() => parseJobFileText('[global]\n[ ]\nbs=4k\n', 'empty.fio'), { instanceOf: InputError });
  t.is(e.field, 'empty.fio:2');
  t.regex(e.message, /a section name/);
});

test('a line that is not key=value is an error', (t) => {
  const e = t.throws(() => parseJobFileText('[job]\n=4k\n', 'eq.fio'), { instanceOf: InputError });
  t.is(e.field, 'eq.fio:2');
  t.regex(e.message, /one option per line/);
});
