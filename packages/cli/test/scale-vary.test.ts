import { InputError } from '@vmstack/shm';
import test from 'ava';
import { asVaryError, parseVary, runArgvWith, VARY_DIMS, varyOfArgs } from '../src/scale/vary.js';

const DIMS = Object.keys(VARY_DIMS);

test('--vary DIM=v1,v2: the dimension, the run option it sets, the values as written and as numbers', (t) => {
  t.like(parseVary('jobs=1,2,4'), { dim: 'jobs', option: 'numjobs', values: ['1', '2', '4'], xs: [1, 2, 4] });
  t.like(parseVary('iodepth=1, 16 ,64'), { dim: 'iodepth', option: 'iodepth', values: ['1', '16', '64'], xs: [1, 16, 64] });
  t.like(parseVary('bs=4k,128k,1m'), { dim: 'bs', option: 'bs', values: ['4k', '128k', '1m'], xs: [4096, 131072, 1048576] });
  for (const dim of ['vms', 'vcpus', 'devices', 'viommus'] as const) t.like(parseVary(`${dim}=1,2`), { dim, option: dim, values: ['1', '2'], xs: [1, 2] });
  t.like(parseVary('jobs=8'), { values: ['8'] });
});

/** The InputError `f` throws: field --vary, the value as written, and the dimensions listed. */
function varyError(t: import('ava').ExecutionContext, text: string, mention?: RegExp): void {
  const e = t.throws(() => parseVary(text), { instanceOf: InputError });
  if (!(e instanceof InputError)) return;
  t.is(e.field, '--vary', text);
  t.is(e.value, text);
  for (const d of DIMS) t.true(e.allowed.includes(d), `"${e.allowed}" names ${d}`);
  if (mention) t.regex(e.allowed, mention);
}

test('--vary refuses unknown dimensions, missing or empty values, bad numbers and sizes, repeats — naming --vary, the value and the dimensions', (t) => {
  varyError(t, 'numjobs=1,2');
  varyError(t, 'jbs=1,2', /did you mean jobs/);
  varyError(t, 'jobs');
  varyError(t, '=1,2');
  varyError(t, '');
  varyError(t, 'jobs=', /none empty/);
  varyError(t, 'jobs=1,,2', /none empty/);
  varyError(t, 'jobs=1,', /none empty/);
  varyError(t, 'jobs=0', /whole numbers ≥ 1/);
  varyError(t, 'iodepth=x', /whole numbers ≥ 1/);
  varyError(t, 'iodepth=1.5', /whole numbers ≥ 1/);
  varyError(t, 'vms=-1', /whole numbers ≥ 1/);
  varyError(t, 'bs=4q', /fio sizes/);
  varyError(t, 'bs=0', /> 0/);
  varyError(t, 'jobs=1,2,1', /each value once/);
  varyError(t, 'bs=4k,4096', /each value once/);
});

test('--jobs N,M is --vary jobs=N,M; neither is jobs=1,2,4; both is an error', (t) => {
  t.deepEqual(varyOfArgs(undefined, '1,2'), parseVary('jobs=1,2'));
  t.like(varyOfArgs(undefined, undefined), { dim: 'jobs', values: ['1', '2', '4'] });
  t.like(varyOfArgs('bs=4k,8k', undefined), { dim: 'bs' });
  const both = t.throws(() => varyOfArgs('bs=4k', '1,2'), { instanceOf: InputError });
  t.is(both?.field, '--jobs');
  const bad = t.throws(() => varyOfArgs(undefined, '1,x'), { instanceOf: InputError });
  t.is(bad?.field, '--jobs');
  t.is(bad?.value, '1,x');
});

const RUN_OPTIONS = {
  numjobs: {},
  iodepth: {},
  quantum: {
    coerce: (v: unknown) => {
      if (!/^\d+$/.test(String(v))) throw new InputError('--quantum', v, 'a whole number');
      return Number(v);
    },
  },
};

test("a point is run's command line with the override set as if written there, through the option's coerce", (t) => {
  const base = { iodepth: '8', quantum: 0 };
  t.deepEqual(runArgvWith(RUN_OPTIONS, base, { numjobs: '4' }), { iodepth: '8', quantum: 0, numjobs: '4' });
  t.deepEqual(runArgvWith(RUN_OPTIONS, base, { quantum: '500' }), { iodepth: '8', quantum: 500 });
  t.deepEqual(base, { iodepth: '8', quantum: 0 }, 'the base is not changed');
  t.throws(() => runArgvWith(RUN_OPTIONS, base, { quantum: 'x' }), { instanceOf: InputError, message: /--quantum/ });
});

test('a dimension whose option run does not take is refused by name, not ignored', (t) => {
  const vary = parseVary('vms=1,2');
  const e = t.throws(() => asVaryError(vary, '2', () => runArgvWith(RUN_OPTIONS, {}, { vms: '2' })), { instanceOf: InputError });
  t.is(e?.field, '--vary');
  t.is(e?.value, 'vms=2');
  t.regex(e?.allowed ?? '', /--vms/);
  t.regex(e?.allowed ?? '', /not an option of vmstack run/);
});

test("run's refusal of the varied option is told as an error of --vary; other errors pass through", (t) => {
  const vary = parseVary('jobs=1,40');
  const e = t.throws(
    () =>
      asVaryError(vary, '40', () => {
        throw new InputError('--numjobs', '40', 'at most 29 jobs running at once');
      }),
    { instanceOf: InputError },
  );
  t.is(e?.field, '--vary');
  t.is(e?.value, 'jobs=40');
  t.regex(e?.allowed ?? '', /at most 29 jobs/);
  const other = t.throws(
    () =>
      asVaryError(vary, '40', () => {
        throw new InputError('--guest-ram', '1m', 'at least 8m');
      }),
    { instanceOf: InputError },
  );
  t.is(other?.field, '--guest-ram');
  t.is(
    asVaryError(vary, '1', () => 7),
    7,
  );
});
