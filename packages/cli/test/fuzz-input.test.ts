/**
 * Property tests (fast-check) of every reader of user input: the fio job
 * file and its options, fio sizes, counts and times, the cost profile and the
 * topology file. For any input — random text, mutated valid files, huge
 * numbers, unicode, NUL, deeply nested JSON — a reader returns or throws an
 * InputError whose message is one line and echoes no more of the input than
 * the excerpt InputError cuts values to. Inputs are bounded in size, so each
 * run is bounded too; an input that made a reader loop would stall the test.
 *
 * VMSTACK_FUZZ_RUNS sets the runs per property (default 100).
 */

import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closestName, editDistance, INPUT_ERROR_VALUE_CHARS, InputError, loadProfile } from '@vmstack/shm';
import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import { parseJobFileText } from '../src/fio/jobfile.js';
import { FIO_OPTION_TABLE, jobsFromCommandLine, jobsFromFile, jobsFromJobFile } from '../src/fio/options.js';
import { parseCount, parseSizeBytes, parseTimeNs } from '../src/fio/sizes.js';
import { topologyFromFile, topologyFromFlags } from '../src/topology/build.js';
import { validateTopology } from '../src/topology/topology.js';
import { REPO } from './helpers/cli.js';

const RUNS = Number(process.env.VMSTACK_FUZZ_RUNS ?? 100);
const params = { numRuns: RUNS, includeErrorInReport: true };

const tmp = mkdtempSync(join(tmpdir(), 'vmstack-fuzz-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));
mkdirSync(join(tmp, 'dir'));
execFileSync('mkfifo', [join(tmp, 'fifo')]);
writeFileSync(join(tmp, 'opts.inc'), 'bs=4k\niodepth=4\n');
writeFileSync(join(tmp, 'self.fio'), '[j]\nsize=64k\ninclude self.fio\n');

/**
 * The input passed, or failed with a one-line InputError that quotes no run of
 * the input longer than an excerpt. Anything else is rethrown with the input.
 */
function expectOkOrInputError(input: string, run: () => unknown): void {
  try {
    run();
  } catch (e) {
    const shown = JSON.stringify(input.length > 300 ? `${input.slice(0, 300)}…` : input);
    if (!(e instanceof InputError)) throw new Error(`not an InputError for input ${shown}: ${(e as Error)?.stack ?? String(e)}`);
    if (/[\n\r]/.test(e.message)) throw new Error(`a message of several lines for input ${shown}: ${JSON.stringify(e.message)}`);
    const echoed = longestEcho(e.message, input);
    if (echoed !== undefined) throw new Error(`the message echoes ${echoed.length}+ characters of input ${shown}: ${JSON.stringify(e.message)}`);
  }
}

/**
 * A run of `input` longer than an excerpt that `message` contains, if any: the
 * excerpt itself, plus the few characters around it (`: "`) that may match the input too.
 */
function longestEcho(message: string, input: string): string | undefined {
  const n = INPUT_ERROR_VALUE_CHARS + 4;
  if (input.length < n) return undefined;
  for (let i = 0; i + n <= message.length; i++) {
    const window = message.slice(i, i + n);
    if (input.includes(window)) return window;
  }
  return undefined;
}

// ---- arbitraries -----------------------------------------------------------

/** Any text: ASCII, any code point (NUL, lone surrogates, BOM), or a long run of one character. */
const anyText = fc.oneof(
  fc.string({ unit: 'binary-ascii', maxLength: 200 }),
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.string({ unit: fc.constantFrom('\0', '\uFEFF', '\u2028', '\r', '\n', '=', ';', '#', '[', ']', '$', '{', '}', '"', "'", '\\'), maxLength: 40 }),
  fc.tuple(fc.constantFrom('Q', 'é', '\0', '9', '𝕏'), fc.integer({ min: 61, max: 5000 })).map(([c, n]) => c.repeat(n)),
);

const SUFFIXES = ['', 'k', 'K', 'kb', 'kib', 'KiB', 'm', 'MiB', 'g', 'gb', 't', 'p', 'pib', 'b', 'ki', 'x', 'us', 'ms', 's', 'sec', 'm', 'h', 'd', '%'];

/** Numbers as people write them, and as they should not: huge, negative, decimal, hex, suffixed. */
const numberText = fc.oneof(
  fc
    .tuple(fc.oneof(fc.nat(), fc.bigInt({ min: 0n, max: 10n ** 40n }).map(String), fc.stringMatching(/^\d{1,400}$/)), fc.constantFrom(...SUFFIXES))
    .map(([n, s]) => `${n}${s}`),
  fc.double().map(String),
  fc.integer().map((n) => `0x${Math.abs(n).toString(16)}`),
  fc.tuple(fc.constantFrom('-', ' ', '+', '0x', ''), fc.nat(), fc.constantFrom(...SUFFIXES), fc.constantFrom('', ' ', '\0', 'x')).map((p) => p.join('')),
);

const optionNames = [...Object.keys(FIO_OPTION_TABLE), 'readwrite', 'blocksize', 'include'];
const RW = ['read', 'write', 'randread', 'randwrite', 'rw', 'randrw', 'readwrite', 'trim'];

const optionValue = fc.oneof(
  numberText,
  fc.constantFrom(...RW, 'libaio', 'crc32c', 'md5', '1000', '1024', '/dev/nvme0n1', '/dev/nvme9n1', '${V}', ''),
  anyText,
);

/** One job-file line: a section, an option, a comment, an include, or anything. */
const jobLine = fc.oneof(
  { weight: 2, arbitrary: fc.oneof(fc.constantFrom('global', 'j', 'k'), anyText).map((n) => `[${n}]`) },
  {
    weight: 6,
    arbitrary: fc
      .tuple(fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...optionNames) }, anyText), fc.boolean(), optionValue)
      .map(([k, eq, v]) => (eq ? `${k}=${v}` : k)),
  },
  { weight: 1, arbitrary: fc.constantFrom('; comment', '# comment', '', '   ') },
  { weight: 1, arbitrary: fc.constantFrom('opts.inc', 'missing.inc', 'dir', 'fifo', 'self.fio', 'job.fio', '/dev/zero').map((f) => `include ${f}`) },
  { weight: 1, arbitrary: anyText },
);

const VALID_JOB_FILES = [
  '[global]\nrw=randread\nbs=4k\niodepth=8\n\n[a]\nsize=1m\n[b]\nsize=2m\noffset=4m\nstonewall\n',
  '[j]\nrw=write\nsize=64k\nverify=crc32c\nnumjobs=2\noffset_increment=1m\n',
  '; comment\n[global]\nkb_base=1000\n[x]\nsize=4MiB\nbs=4KiB\nruntime=10ms\ntime_based\n',
];

/** Text edits: insert, delete, duplicate or replace a span. */
function mutate(text: fc.Arbitrary<string>): fc.Arbitrary<string> {
  const edit = fc.tuple(fc.nat(), fc.nat({ max: 40 }), fc.constantFrom('insert', 'delete', 'duplicate', 'replace'), anyText);
  return fc.tuple(text, fc.array(edit, { maxLength: 4 })).map(([t, edits]) =>
    edits.reduce((s, [at, len, kind, what]) => {
      const i = s.length === 0 ? 0 : at % s.length;
      if (kind === 'insert') return s.slice(0, i) + what + s.slice(i);
      if (kind === 'delete') return s.slice(0, i) + s.slice(i + len);
      if (kind === 'duplicate') return s.slice(0, i + len) + s.slice(i, i + len) + s.slice(i + len);
      return s.slice(0, i) + what + s.slice(i + len);
    }, t),
  );
}

const jobFileText = fc.oneof(
  fc.array(jobLine, { maxLength: 30 }).map((lines) => lines.join('\n')),
  fc.tuple(fc.constantFrom('[j]\n', '[global]\n[j]\n'), fc.array(jobLine, { maxLength: 20 })).map(([head, lines]) => head + lines.join('\n')),
  mutate(fc.constantFrom(...VALID_JOB_FILES)),
  anyText,
);

// ---- fio job files and options ----------------------------------------------

test('a fio job file, as text: parses, or an InputError', (t) => {
  fc.assert(
    fc.property(jobFileText, (text) => {
      expectOkOrInputError(text, () => jobsFromJobFile(parseJobFileText(text, join(tmp, 'job.fio'), { env: { V: '4k' } })));
    }),
    params,
  );
  t.pass();
});

test('a fio job file, read from disk with command-line overrides: parses, or an InputError', (t) => {
  const path = join(tmp, 'job.fio');
  const overrides = fc.dictionary(fc.constantFrom('bs', 'size', 'iodepth', 'rw', 'offset', 'numjobs', 'runtime'), optionValue, { maxKeys: 3 });
  fc.assert(
    fc.property(jobFileText, overrides, (text, over) => {
      writeFileSync(path, text);
      expectOkOrInputError(`${text}\n${Object.values(over).join('\n')}`, () => jobsFromFile(path, over, { env: {} }));
    }),
    params,
  );
  t.pass();
});

test('fio options from the command line: parse, or an InputError', (t) => {
  const key = fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...optionNames) }, anyText);
  const value = fc.oneof(optionValue, fc.boolean(), fc.double(), fc.integer());
  fc.assert(
    fc.property(fc.dictionary(key, value, { maxKeys: 6 }), (opts) => {
      const input = Object.entries(opts).flat().map(String).join('\n');
      expectOkOrInputError(input, () => jobsFromCommandLine({ size: '64k', ...opts }));
    }),
    params,
  );
  t.pass();
});

test('fio sizes, counts and times: a number, or an InputError', (t) => {
  fc.assert(
    fc.property(fc.oneof(numberText, anyText), fc.constantFrom(1024, 1000) as fc.Arbitrary<1024 | 1000>, (text, kbBase) => {
      for (const parse of [
        () => parseSizeBytes('--size', text, kbBase),
        () => parseCount('--iodepth', text, 'a whole number'),
        () => parseTimeNs('--runtime', text),
      ]) {
        expectOkOrInputError(text, () => {
          const n = parse();
          if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${JSON.stringify(text)} read as ${n}`);
        });
      }
    }),
    params,
  );
  t.pass();
});

// ---- JSON files: the profile and the topology --------------------------------

/** JSON edits of a valid value: replace, delete or add a member anywhere, with any JSON value. */
function mutateJson(valid: unknown): fc.Arbitrary<unknown> {
  const anyJson = fc.oneof(fc.jsonValue({ maxDepth: 3 }), anyText, numberText.map(Number), fc.constant(null));
  const edit = fc.tuple(
    fc.array(fc.nat(), { minLength: 1, maxLength: 5 }),
    fc.constantFrom('replace', 'delete', 'add'),
    fc.oneof(anyText, fc.constant('values')),
    anyJson,
  );
  return fc.array(edit, { maxLength: 4 }).map((edits) => {
    const root = structuredClone(valid);
    for (const [path, kind, key, value] of edits) {
      let node: unknown = root;
      for (const step of path.slice(0, -1)) {
        if (typeof node !== 'object' || node === null) break;
        const keys = Object.keys(node);
        if (keys.length === 0) break;
        const next = (node as Record<string, unknown>)[keys[step % keys.length]];
        if (typeof next !== 'object' || next === null) break;
        node = next;
      }
      if (typeof node !== 'object' || node === null) continue;
      const obj = node as Record<string, unknown>;
      const keys = Object.keys(obj);
      const target = keys.length > 0 ? keys[path[path.length - 1] % keys.length] : key;
      if (kind === 'replace') obj[target] = value;
      else if (kind === 'delete') delete obj[target];
      else if (Array.isArray(obj)) obj.push(value);
      else obj[key] = value;
    }
    return root;
  });
}

/** Arrays or objects nested thousands deep. */
const deepJson = fc.tuple(fc.integer({ min: 1, max: 20_000 }), fc.constantFrom('[', '{"a":', '{"vms":', '{"values":')).map(([depth, open]) => {
  const close = open === '[' ? ']' : '}';
  return `${open.repeat(depth)}0${close.repeat(depth)}`;
});

/** A JSON file's text: a mutated valid value (serialized, maybe then mangled as text), any JSON, deep nesting, or any text. */
function jsonFileText(valid: unknown): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: mutateJson(valid).map((v) => JSON.stringify(v, null, 1)) },
    { weight: 2, arbitrary: mutate(fc.constant(JSON.stringify(valid, null, 1))) },
    { weight: 1, arbitrary: fc.json({ maxDepth: 4 }) },
    { weight: 1, arbitrary: deepJson },
    { weight: 1, arbitrary: anyText },
  );
}

test('a cost profile file: loads, or an InputError', (t) => {
  const valid = JSON.parse(readFileSync(join(REPO, 'profiles', 'i5-10210U.json'), 'utf8')) as unknown;
  const path = join(tmp, 'profile.json');
  fc.assert(
    fc.property(jsonFileText(valid), (text) => {
      writeFileSync(path, text);
      expectOkOrInputError(text, () => loadProfile(path));
    }),
    params,
  );
  t.pass();
});

test('a topology file: builds, or an InputError', (t) => {
  const jobs = jobsFromCommandLine({ rw: 'randread', size: '1m', numjobs: '2' }).jobs;
  const valid = topologyFromFlags(jobs, { strategy: 'strict', driverGeneration: 'v5.10', guestRamBytes: 64 * 2 ** 20, vms: 2, devices: 2 }).topology;
  const path = join(tmp, 'topology.json');
  fc.assert(
    fc.property(jsonFileText(valid), (text) => {
      writeFileSync(path, text);
      expectOkOrInputError(text, () => topologyFromFile(path, jobs));
    }),
    params,
  );
  t.pass();
});

test('a topology value: valid, or an InputError', (t) => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.anything({ maxDepth: 4 }),
        deepJson.map((text) => JSON.parse(text) as unknown),
      ),
      fc.nat({ max: 8 }),
      (raw, jobCount) => {
        let text: string;
        try {
          text = JSON.stringify(raw) ?? '';
        } catch {
          text = '';
        }
        expectOkOrInputError(text, () => validateTopology(raw, jobCount));
      },
    ),
    params,
  );
  t.pass();
});

// ---- inputs the properties found, and holes next to them -------------------------

/** Runs `fn`, which must throw an InputError; returns its message. */
function inputErrorMessage(t: ExecutionContext, fn: () => unknown): string {
  const e = t.throws(fn, { instanceOf: InputError });
  t.false(/[\n\r]/.test(e.message), `one line: ${JSON.stringify(e.message)}`);
  t.is(longestEcho(e.message, 'Q'.repeat(5000)), undefined, e.message);
  return e.message;
}

const jobText = (text: string) => () => jobsFromJobFile(parseJobFileText(text, join(tmp, 'job.fio'), { env: {} }));

test('regression "[j]\\n[]\\r]": a line ini reads as a section (it splits at a lone CR) is one bad option line', (t) => {
  t.regex(inputErrorMessage(t, jobText('[j]\n[]\r]')), /job\.fio:2: .* one option per line/);
});

test('regression: a 5000-character option key or section name is cut to an excerpt in the field', (t) => {
  const key = 'Q'.repeat(5000);
  t.regex(inputErrorMessage(t, jobText(`[j]\nsize=64k\n${key}=1\n`)), /^\[j\] Q{60}…: "1" is not allowed; not a fio option$/);
  t.regex(inputErrorMessage(t, jobText(`[${key}]\nbs=4k\n`)), /^\[Q{60}…\] size: \(missing\)/);
  t.regex(
    inputErrorMessage(t, () => jobsFromCommandLine({ size: '64k', [key]: 0 })),
    /^--Q{60}…: "0"/,
  );
});

test('regression: a command-line key "\\n" and a profile key "\\r" give one-line messages', (t) => {
  t.regex(
    inputErrorMessage(t, () => jobsFromCommandLine({ size: '64k', '\n': false })),
    /^--\\u000a: "0" is not allowed; not a fio option/,
  );
  const profile = JSON.parse(readFileSync(join(REPO, 'profiles', 'i5-10210U.json'), 'utf8')) as Record<string, unknown>;
  const path = join(tmp, 'profile-cr.json');
  writeFileSync(path, JSON.stringify({ ...profile, '\r': 0 }));
  t.regex(
    inputErrorMessage(t, () => loadProfile(path)),
    /^profile\.\\u000d: 0 is not allowed; not a top-level field/,
  );
  writeFileSync(path, JSON.stringify({ ...profile, values: { ...(profile.values as object), ['Q'.repeat(5000)]: 1 } }));
  t.regex(
    inputErrorMessage(t, () => loadProfile(path)),
    /^profile\.Q{60}…: 1 is not allowed; not a known cost key/,
  );
});

test('regression: a value nested 100 000 deep, which JSON.stringify and String cannot write, is an InputError', (t) => {
  const deep = JSON.parse(`{"vms":${'['.repeat(100_000)}${']'.repeat(100_000)}}`) as unknown;
  t.regex(
    inputErrorMessage(t, () =>
      validateTopology({ platform: 'vm', controllers: [{ id: 'c' }], hostIommus: [{ id: 'u', controllers: ['c'] }], ...(deep as object) }, 1),
    ),
    /^topology\.vms\[0\]: \(a list nested too deep to show\) is not allowed; an object$/,
  );
  t.regex(
    inputErrorMessage(t, () => validateTopology(JSON.parse(`${'['.repeat(100_000)}${']'.repeat(100_000)}`), 1)),
    /^topology: \(a list nested too deep to show\)/,
  );
});

test('regression: topology ids a message lists are excerpts, at most 8 of them', (t) => {
  const long = 'Q'.repeat(5000);
  const controllers = Array.from({ length: 20 }, (_, i) => ({ id: `${long}${i}` }));
  const message = inputErrorMessage(t, () =>
    validateTopology({ platform: 'vm', controllers, hostIommus: [{ id: 'u', controllers: ['missing'] }], vms: [] }, 0),
  );
  t.regex(message, /^topology\.hostIommus\[0\]\.controllers\[0\]: "missing" is not allowed; one of the controllers: (Q{60}…, ){8}… \(20 in all\)$/);
});

test('regression: an included file that includes itself is an InputError, not 3^16 reads', (t) => {
  writeFileSync(join(tmp, 'loop.inc'), 'include loop.inc\ninclude loop.inc\ninclude loop.inc\n');
  t.regex(inputErrorMessage(t, jobText('[j]\nsize=64k\ninclude loop.inc\n')), /loop\.inc:1 include: "loop\.inc" is not allowed; a file not already being read/);
  writeFileSync(join(tmp, 'a.inc'), 'include b.inc\n');
  writeFileSync(join(tmp, 'b.inc'), 'bs=4k\ninclude a.inc\n');
  t.regex(inputErrorMessage(t, jobText('[j]\nsize=64k\ninclude a.inc\n')), /b\.inc:2 include: "a\.inc" is not allowed; a file not already being read/);
  // the same file twice, one after the other, is no cycle
  t.is(jobText('[j]\nsize=64k\ninclude opts.inc\ninclude opts.inc\n')().jobs[0].iodepth, 4);
});

test('regression: a FIFO or a device as the profile is refused without reading it', (t) => {
  t.regex(
    inputErrorMessage(t, () => loadProfile(join(tmp, 'fifo'))),
    /^profile: ".*fifo" is not allowed; a readable JSON profile file \(a FIFO\)$/,
  );
  t.regex(
    inputErrorMessage(t, () => loadProfile('/dev/zero')),
    /^profile: "\/dev\/zero" is not allowed; a readable JSON profile file \(a device/,
  );
});

test('closestName measures no candidate whose length differs by more than the distance allowed', (t) => {
  let measured = 0;
  const count = (a: string, b: string) => {
    measured++;
    return editDistance(a, b);
  };
  t.is(closestName('Q'.repeat(200_000), ['bs', 'size', 'iodepth'], 50_000, count), undefined);
  t.is(measured, 0);
  t.is(closestName('sise', ['bs', 'size', 'iodepth'], 1, count), 'size');
  t.is(measured, 1, 'only "size" is within 1 of the length of "sise"');
});
