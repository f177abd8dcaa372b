import { readFileSync } from 'node:fs';
import test from 'ava';
import { FIO_3_33_ENGINE_OPTIONS, FIO_3_33_OPTIONS } from '../src/fio/fio-3.33-options.js';
import { FIO_OPTION_TABLE, jobsFromCommandLine } from '../src/fio/options.js';
import { FIO_HANDLED_NOTES, FIO_IGNORED_NOTES, fioOptionStatus, formatFioOptionsDoc } from '../src/fio/options-doc.js';

const docPath = new URL('../../../../docs/fio-options.md', import.meta.url);

test('docs/fio-options.md is what the option table says (regenerate: npx tsc -b && node scripts/gen-fio-options-doc.mjs)', (t) => {
  t.is(readFileSync(docPath, 'utf8'), formatFioOptionsDoc());
});

test('every option fio 3.33 lists is in the option table: none is refused as unknown', (t) => {
  const all = [...FIO_3_33_OPTIONS, ...Object.values(FIO_3_33_ENGINE_OPTIONS).flat()];
  t.true(all.length > 200);
  t.deepEqual(
    all.filter((n) => fioOptionStatus(n).why.includes('not in the option table')),
    [],
  );
});

test('the notes speak of options of their kind: an ignored note of an ignored option, a works note of a handled one', (t) => {
  for (const n of Object.keys(FIO_IGNORED_NOTES)) t.is(FIO_OPTION_TABLE[n]?.kind, 'ignored', n);
  for (const n of Object.keys(FIO_HANDLED_NOTES)) t.is(FIO_OPTION_TABLE[n]?.kind, 'handled', n);
});

test('the doc says what the parser does: a refused option is refused, an ignored one is accepted (samples of each kind)', (t) => {
  const refused = ['trim_percentage', 'zonesize', 'read_iolog', 'hipri', 'sqthread_poll'];
  for (const n of refused) {
    t.is(fioOptionStatus(n).status, 'refused');
    t.throws(() => jobsFromCommandLine({ size: '1m', [n]: '7' }), undefined, n);
  }
  for (const n of ['cpus_allowed', 'nice', 'randrepeat', 'percentile_list']) {
    t.is(fioOptionStatus(n).status, 'ignored');
    t.true(jobsFromCommandLine({ size: '1m', [n]: '1' }).ignoredOptions.includes(n), n);
  }
  t.is(fioOptionStatus('iodepth').status, 'works');
});
