import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import test from 'ava';
import { InputError } from '../src/errors.js';
import { type CostKey, DEFAULT_PROFILE_PATH, loadProfile, PROFILE_KEYS, validateProfile } from '../src/profile.js';

/** A fresh, mutable copy of the shipped profile's JSON. */
function shippedRaw(): { name: unknown; description: unknown; values: Record<string, any>; [k: string]: unknown } {
  return JSON.parse(readFileSync(DEFAULT_PROFILE_PATH, 'utf8'));
}

/** Validates `raw`, expecting an InputError whose message names `fieldPart`. */
function expectInputError(raw: unknown, fieldPart: string): InputError {
  try {
    validateProfile(raw, '/tmp/test-profile.json');
  } catch (e) {
    if (!(e instanceof InputError)) throw e;
    if (!e.message.includes(fieldPart)) {
      throw new Error(`message does not name ${fieldPart}: ${e.message}`);
    }
    return e;
  }
  throw new Error(`no InputError for ${fieldPart}`);
}

test('the shipped profile validates and carries every key with a source', (t) => {
  const p = loadProfile(DEFAULT_PROFILE_PATH);
  t.is(p.name, 'i5-10210U');
  t.true(p.description.length > 0);
  for (const spec of PROFILE_KEYS) {
    t.is(typeof p[spec.key], 'number', spec.key);
    t.true(p.sources[spec.key].length > 10, `${spec.key} has a source`);
  }
  t.true(Object.isFrozen(p));
  t.true(Object.isFrozen(p.sources));
});

test('shipped values trace to the README table, row for row', (t) => {
  const p = loadProfile(DEFAULT_PROFILE_PATH);
  const readme = readFileSync(join(dirname(DEFAULT_PROFILE_PATH), 'README.md'), 'utf8');
  const rows = new Map<string, number>();
  for (const m of readme.matchAll(/^\| `([A-Za-z]+)`(?: \(added\))? \| ([0-9.]+) \| (ns|bytes\/ns|count|bytes) \|/gm)) {
    rows.set(m[1], Number(m[2]));
  }
  t.is(rows.size, PROFILE_KEYS.length);
  for (const spec of PROFILE_KEYS) {
    t.is(rows.get(spec.key), p[spec.key], `README row for ${spec.key}`);
  }
});

test('key names carry their unit and bounds are sane', (t) => {
  const seen = new Set<string>();
  for (const spec of PROFILE_KEYS) {
    t.false(seen.has(spec.key), `duplicate ${spec.key}`);
    seen.add(spec.key);
    const suffix = { ns: /Ns$/, 'bytes/ns': /BytesPerNs$/, count: /Count$/, bytes: /Bytes$/ }[spec.unit];
    t.regex(spec.key, suffix);
    if (spec.unit === 'ns') t.notRegex(spec.key, /BytesPerNs$/);
    t.true(spec.min < spec.max, spec.key);
    t.true(spec.min >= 0, spec.key);
    if (spec.unit === 'bytes/ns' || spec.unit === 'count') t.true(spec.min > 0, `${spec.key} must not be 0 (divisor or count)`);
  }
});

test('DEFAULT_PROFILE_PATH is the absolute path of profiles/i5-10210U.json', (t) => {
  t.true(isAbsolute(DEFAULT_PROFILE_PATH));
  t.regex(DEFAULT_PROFILE_PATH, /[/\\]profiles[/\\]i5-10210U\.json$/);
  t.notRegex(DEFAULT_PROFILE_PATH, /[/\\]packages[/\\]/);
});

test('a missing key names the key', (t) => {
  const raw = shippedRaw();
  delete raw.values.hostIotlbFlushNs;
  const e = expectInputError(raw, 'profile.hostIotlbFlushNs');
  t.is(e.field, 'profile.hostIotlbFlushNs');
  t.regex(e.message, /required/);
  t.is(e.exitCode, 2);
});

test('a non-number value names the key and the allowed range', (t) => {
  const raw = shippedRaw();
  raw.values.vmExitKernelNs.value = '600';
  const e = expectInputError(raw, 'profile.vmExitKernelNs');
  t.regex(e.message, /"600"/);
  t.regex(e.message, /integer number of ns in \[0, 100000\]/);
  for (const bad of [null, true, Number.NaN, Number.POSITIVE_INFINITY]) {
    const r = shippedRaw();
    r.values.vmExitKernelNs.value = bad;
    expectInputError(r, 'profile.vmExitKernelNs.value');
  }
  t.pass();
});

test('an out-of-range value is rejected at both ends', (t) => {
  const low = shippedRaw();
  low.values.fioSubmitNs.value = -1;
  t.regex(expectInputError(low, 'profile.fioSubmitNs').message, /-1 is not allowed/);

  const high = shippedRaw();
  high.values.memcpyBytesPerNs.value = 12_000; // MB/s typed where bytes/ns is meant
  t.regex(expectInputError(high, 'profile.memcpyBytesPerNs').message, /bytes\/ns \(= GB\/s\) in \[0\.1, 200\]/);

  const zeroRate = shippedRaw();
  zeroRate.values.pcieLinkBytesPerNs.value = 0;
  expectInputError(zeroRate, 'profile.pcieLinkBytesPerNs');

  const zeroCost = shippedRaw();
  zeroCost.values.hostIotlbFlushNs.value = 0; // ablation: allowed
  t.is(validateProfile(zeroCost, 'x').hostIotlbFlushNs, 0);
});

test('ns and count values must be integers; rates may be fractional', (t) => {
  const ns = shippedRaw();
  ns.values.nvmeSqeFetchNs.value = 560.5;
  expectInputError(ns, 'profile.nvmeSqeFetchNs');
  const count = shippedRaw();
  count.values.iotlbEntriesCount.value = 63.5;
  t.regex(expectInputError(count, 'profile.iotlbEntriesCount').message, /integer count/);
  const rate = shippedRaw();
  rate.values.memsetBytesPerNs.value = 12.75;
  t.is(validateProfile(rate, 'x').memsetBytesPerNs, 12.75);
  const bytes = shippedRaw();
  bytes.values.llcBytes.value = 6291456.5;
  t.regex(expectInputError(bytes, 'profile.llcBytes').message, /integer number of bytes/);
});

test('the DDIO share is part of the last-level cache: more than llcBytes is refused', (t) => {
  const raw = shippedRaw();
  raw.values.ddioLlcBytes.value = raw.values.llcBytes.value + 4096;
  t.regex(expectInputError(raw, 'profile.ddioLlcBytes.value').message, /at most llcBytes/);
  raw.values.ddioLlcBytes.value = raw.values.llcBytes.value;
  t.is(validateProfile(raw, 'x').ddioLlcBytes, raw.values.llcBytes.value);
});

test('an unknown key is rejected, with the closest known key suggested', (t) => {
  const raw = shippedRaw();
  raw.values.vmExitKernalNs = { value: 600, source: 'typo' };
  const e = expectInputError(raw, 'profile.vmExitKernalNs');
  t.regex(e.message, /did you mean "vmExitKernelNs"/);

  const far = shippedRaw();
  far.values.somethingElse = { value: 1, source: 'x' };
  t.regex(expectInputError(far, 'profile.somethingElse').message, /not a known cost key/);
});

test('an entry without source text is rejected', (t) => {
  for (const source of [undefined, '', '   ', 42]) {
    const raw = shippedRaw();
    if (source === undefined) delete raw.values.iovaRcacheHitNs.source;
    else raw.values.iovaRcacheHitNs.source = source;
    const e = expectInputError(raw, 'profile.iovaRcacheHitNs.source');
    t.regex(e.message, /non-empty text/);
  }
});

test('a malformed entry is rejected', (t) => {
  const bare = shippedRaw();
  bare.values.msiLatencyNs = 280; // a number instead of {value, source}
  t.regex(expectInputError(bare, 'profile.msiLatencyNs').message, /"source"/);
  const extra = shippedRaw();
  extra.values.msiLatencyNs.vaule = 3;
  expectInputError(extra, 'profile.msiLatencyNs.vaule');
});

test('a malformed top level is rejected', (t) => {
  expectInputError(null, 'profile');
  expectInputError([], 'profile');
  expectInputError('i5-10210U', 'profile');

  const noValues = shippedRaw();
  delete (noValues as Record<string, unknown>).values;
  expectInputError(noValues, 'profile.values');

  const arrayValues = shippedRaw();
  (arrayValues as Record<string, unknown>).values = [];
  expectInputError(arrayValues, 'profile.values');

  const noName = shippedRaw();
  noName.name = '';
  expectInputError(noName, 'profile.name');

  const badDescription = shippedRaw();
  badDescription.description = 7;
  expectInputError(badDescription, 'profile.description');

  const extraTop = shippedRaw();
  extraTop.comment = 'hi';
  const e = expectInputError(extraTop, 'profile.comment');
  t.regex(e.message, /\/tmp\/test-profile\.json/, 'the origin is quoted');
});

test('loadProfile: missing file and bad JSON name the path and the problem', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmstack-profile-'));
  const missing = join(dir, 'nope.json');
  const e1 = t.throws(() => loadProfile(missing), { instanceOf: InputError });
  t.true(e1.message.includes(missing));
  t.regex(e1.message, /no such file/);

  const bad = join(dir, 'bad.json');
  writeFileSync(bad, '{ "name": "x", ');
  const e2 = t.throws(() => loadProfile(bad), { instanceOf: InputError });
  t.true(e2.message.includes(bad));
  t.regex(e2.message, /valid JSON/);

  t.throws(() => loadProfile(dir), { instanceOf: InputError, message: /directory/ });

  const ok = join(dir, 'ok.json');
  const raw = shippedRaw();
  raw.name = 'variant';
  raw.values.hostIotlbFlushNs.value = 2000;
  writeFileSync(ok, JSON.stringify(raw));
  const p = loadProfile(ok);
  t.is(p.name, 'variant');
  t.is(p.hostIotlbFlushNs, 2000);

  const wrong = join(dir, 'wrong.json');
  raw.values.nvmeChannelsCount.value = 0;
  writeFileSync(wrong, JSON.stringify(raw));
  const e3 = t.throws(() => loadProfile(wrong), { instanceOf: InputError });
  t.true(e3.message.includes('profile.nvmeChannelsCount'));
  t.true(e3.message.includes(wrong));
});

test('every PROFILE_KEYS entry is a key of the flattened profile type', (t) => {
  const p = loadProfile(DEFAULT_PROFILE_PATH);
  const keys: CostKey[] = PROFILE_KEYS.map((s) => s.key);
  t.deepEqual(new Set(Object.keys(p.sources)), new Set(keys));
});
