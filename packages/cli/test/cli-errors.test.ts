/**
 * The vmstack CLI as users script it: `node packages/cli/dist/src/main.js`
 * spawned for each bad input must exit 2 with exactly one stderr line that
 * names the field and the value — no stack frames, no hang, no output file.
 * A crashed worker exits 1 naming the worker and leaves an older output file as it was; one
 * small run writes fio JSON through --output.
 */

import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import test from 'ava';

// compiled test: packages/cli/dist/test/cli-errors.test.js
const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));
const REPO = fileURLToPath(new URL('../../../../', import.meta.url));
const DEFAULT_PROFILE = join(REPO, 'profiles', 'i5-10210U.json');
const tmp = mkdtempSync(join(tmpdir(), 'vmstack-cli-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** At most this many CLI processes at once: the machine has few cores and the one real run needs them. */
const MAX_PROCESSES = 4;
let running = 0;
const waiting: (() => void)[] = [];

async function vmstack(args: readonly string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 30_000, nodeFlags: readonly string[] = []): Promise<Outcome> {
  if (running >= MAX_PROCESSES) await new Promise<void>((go) => waiting.push(go));
  running++;
  try {
    return await spawnMain(args, env, timeoutMs, nodeFlags);
  } finally {
    running--;
    waiting.shift()?.();
  }
}

function spawnMain(args: readonly string[], env: NodeJS.ProcessEnv, timeoutMs: number, nodeFlags: readonly string[]): Promise<Outcome> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [...nodeFlags, MAIN, ...args],
      { cwd: REPO, env: { ...process.env, ...env }, timeout: timeoutMs, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

function file(name: string, text: string): string {
  const path = join(tmp, name);
  writeFileSync(path, text);
  return path;
}

const profile = JSON.parse(readFileSync(DEFAULT_PROFILE, 'utf8')) as { values: Record<string, { value: number }> };
const badJsonProfile = file('bad-json.json', '{ "name": "x", ');
const missingKeyProfile = file(
  'missing-key.json',
  JSON.stringify({ ...profile, values: Object.fromEntries(Object.entries(profile.values).filter(([k]) => k !== 'vmExitKernelNs')) }),
);
const outOfRangeProfile = file(
  'out-of-range.json',
  JSON.stringify({ ...profile, values: { ...profile.values, memcpyBytesPerNs: { ...profile.values.memcpyBytesPerNs, value: 1e6 } } }),
);
const direct0Job = file('direct0.fio', '[global]\nsize=64k\n\n[j]\nrw=read\ndirect=0\n');

/** [title, args, what the one line must contain (field, value, allowed…)] */
const BAD_INPUTS: [string, string[], string[]][] = [
  ['--bs 3000', ['run', '--bs', '3000'], ['--bs', '"3000"', 'multiple of 4096']],
  ['--iodepth 0', ['run', '--iodepth', '0'], ['--iodepth', '"0"', 'from 1 to 4096']],
  ['--rw sideways', ['run', '--rw', 'sideways'], ['--rw', '"sideways"', 'randread']],
  ['unknown option', ['run', '--foo', '1'], ['--foo', '"1"', 'not an option of vmstack run']],
  ['misspelt option', ['run', '--iodpeth', '4'], ['--iodpeth', '"4"', 'did you mean --iodepth?']],
  ['fio option only in job files', ['run', '--ramp_time', '5'], ['--ramp_time', '"5"', 'job file']],
  ['missing job file', ['run', join(tmp, 'no-such.fio')], ['job file', 'no-such.fio', 'ENOENT']],
  ['two job files', ['run', direct0Job, 'second.fio'], ['job file', '"second.fio"', 'one job file per run']],
  ['profile: bad JSON', ['run', '--profile', badJsonProfile], ['profile', 'bad-json.json', 'valid JSON']],
  ['profile: missing key', ['run', '--profile', missingKeyProfile], ['profile.vmExitKernelNs', '(missing)', 'required']],
  ['profile: value out of range', ['run', '--profile', outOfRangeProfile], ['profile.memcpyBytesPerNs.value', '1000000', '[0.1, 200]']],
  ['--strategy bogus', ['run', '--strategy', 'bogus'], ['--strategy', '"bogus"', 'one of direct, strict, lazy, bounce']],
  ['--strategy without a value', ['run', '--strategy'], ['--strategy', '""', 'one of direct, strict, lazy']],
  ['--clock bogus', ['run', '--clock', 'bogus'], ['--clock', '"bogus"', 'one of virtual, wall']],
  ['--output-format xml', ['run', '--output-format', 'xml'], ['--output-format', '"xml"', 'one of normal, json, json+']],
  ['--quantum -1', ['run', '--quantum', '-1'], ['--quantum', '"-1"', 'ns ≥ 0']],
  ['--guest-ram 1x', ['run', '--guest-ram', '1x'], ['--guest-ram', '"1x"', 'suffix']],
  ['--numjobs 0', ['run', '--numjobs', '0'], ['--numjobs', '"0"', 'from 1']],
  ['more jobs at once than worker slots', ['run', '--numjobs', '62', '--size', '64k'], ['--numjobs', '"62"', 'at most 61 jobs']],
  [
    'buffers do not fit in guest RAM',
    ['run', '--guest-ram', '8m', '--bs', '2m', '--iodepth', '8'],
    ['--guest-ram', '"8m"', 'at least 18m', '16m of fio I/O buffers'],
  ],
  ['a job without a size, as fio', ['run', '--rw', 'read'], ['[vmstack] size', 'vmstack: you need to specify size=']],
  ['bounce option without the pool', ['run', '--slots-per-class', '8'], ['--slots-per-class', '"8"', '--strategy bounce']],
  ['output directory missing', ['run', '--size', '64k', '--output', join(tmp, 'no-dir', 'r.json')], ['--output', 'r.json', 'ENOENT']],
  ['unknown command', ['frobnicate'], ['command', '"frobnicate"', 'run']],
  ['no command', [], ['command', '(missing)', 'run']],
];

for (const [title, args, mentions] of BAD_INPUTS) {
  test(`bad input, one line and exit 2: ${title}`, async (t) => {
    const r = await vmstack(args);
    t.is(r.code, 2, r.stderr);
    t.is(r.stdout, '');
    t.true(r.stderr.endsWith('\n'));
    const lines = r.stderr.slice(0, -1).split('\n');
    t.is(lines.length, 1, r.stderr);
    t.notRegex(r.stderr, /^\s+at /m);
    t.regex(lines[0], /^vmstack: /);
    for (const m of mentions) t.true(lines[0].includes(m), `"${lines[0]}" should mention ${m}`);
  });
}

test('bad input leaves an existing --output file as it was and writes no .partial', async (t) => {
  const out = file('kept.json', 'previous result');
  const r = await vmstack(['run', '--bs', '3000', '--output', out]);
  t.is(r.code, 2);
  t.is(readFileSync(out, 'utf8'), 'previous result');
  t.false(existsSync(`${out}.partial`));
});

test('a crashed worker: exit 1, one line naming the worker, an older output file left as it was', async (t) => {
  const out = file('crash.json', 'stale result of an earlier run');
  // every worker throws while loading: the run fails as it would on a worker crash
  const r = await vmstack(['run', '--size', '64k', '--output', out], {
    VMSTACK_WORKER_NODE_FLAGS: "--import=data:text/javascript,throw%20new%20Error('boom')",
  });
  t.is(r.code, 1, r.stderr);
  const lines = r.stderr.trimEnd().split('\n');
  t.is(lines.length, 1, r.stderr);
  t.regex(lines[0], /^vmstack: worker (vm0\/vcpu0|vm0\/vmm\/viommu0|vm0\/host-vfio\/viommu0|nvme-device\/nvme-ctrl0) \(thread -?\d+\) failed: .*boom/);
  t.is(readFileSync(out, 'utf8'), 'stale result of an earlier run', 'a failed run replaces nothing');
  t.false(existsSync(`${out}.partial`));
});

test('an interrupted run (SIGINT) exits 130 and leaves no output file, not even a .partial', async (t) => {
  const out = join(tmp, 'interrupted.json');
  // every worker says so on stderr as it starts: the interrupt comes once the run is under way
  const started = file('worker-started.mjs', "process.stderr.write('worker started\\n');\n");
  // a run of tens of seconds
  const child = spawn(process.execPath, [MAIN, 'run', '--strategy', 'strict', '--size', '256m', '--output', out], {
    cwd: REPO,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, VMSTACK_WORKER_NODE_FLAGS: `--import=${started}` },
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    if (!stderr.includes('worker started') && (stderr + chunk).includes('worker started')) child.kill('SIGINT');
    stderr += chunk;
  });
  const code = await new Promise<number | null>((resolve) => {
    child.on('exit', (c, signal) => resolve(c ?? (signal === 'SIGINT' ? 130 : null)));
  });
  t.regex(stderr, /worker started/, 'interrupted after a worker had started');
  t.is(code, 130, stderr);
  t.false(existsSync(out));
  t.false(existsSync(`${out}.partial`));
});

/** A module-resolution hook that refuses the stack's modules: a command that loads them fails. */
const noStackHooks = file(
  'no-stack-hooks.mjs',
  `const STACK = /\\/packages\\/(guest-kernel|vmm|host-vfio|nvme-device)\\/dist\\/|\\/packages\\/cli\\/dist\\/src\\/(commands|stack|compare|scale|report)\\//;
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  if (STACK.test(r.url)) throw new Error('the stack was loaded: ' + r.url);
  return r;
}
`,
);
const noStack = [
  '--import',
  file('no-stack-register.mjs', `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(noStackHooks).href)});\n`),
];

test('--help and run --help list the options without loading the stack (it loads lazily)', async (t) => {
  const [top, run, stackRun] = await Promise.all([
    vmstack(['--help'], {}, 30_000, noStack),
    vmstack(['run', '--help'], {}, 30_000, noStack),
    vmstack(['run', '--size', '64k'], {}, 30_000, noStack),
  ]);
  t.is(stackRun.code, 1, 'the hook does refuse the stack: a run cannot start');
  t.regex(stackRun.stderr, /the stack was loaded: file:.*\/packages\//);
  t.is(top.code, 0, top.stderr);
  t.regex(top.stdout, /vmstack run \[jobfile\]/);
  t.regex(top.stdout, /Exit codes/);
  t.is(run.code, 0, run.stderr);
  t.regex(run.stdout, /Exit codes/);
  for (const option of [
    '--rw',
    '--bs',
    '--iodepth',
    '--numjobs',
    '--strategy',
    '--clock',
    '--quantum',
    '--guest-ram',
    '--profile',
    '--output-format',
    '--output',
  ]) {
    t.regex(run.stdout, new RegExp(`^\\s+${option.replace(/[+]/g, '\\+')}\\s`, 'm'), option);
  }
  t.regex(run.stdout, /choices: "direct", "strict", "lazy", "bounce"/);
});

test('one small run: --output gets complete fio JSON', async (t) => {
  const out = join(tmp, 'run.json');
  const r = await vmstack(
    ['run', '--rw', 'read', '--bs', '4k', '--iodepth', '1', '--size', '64k', '--strategy', 'strict', '--output', out, '--output-format', 'json'],
    {},
    110_000,
  );
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, '');
  t.false(existsSync(`${out}.partial`));
  const json = JSON.parse(readFileSync(out, 'utf8')) as { jobs: { read: { io_bytes: number } }[]; vmstack: { counters: unknown } };
  t.is(json.jobs[0].read.io_bytes, 65536);
  t.is(typeof json.vmstack.counters, 'object');
  t.not(json.vmstack.counters, null);
});
