/**
 * --output, --html and --flamegraph never remove or replace anything but a regular file:
 * a character device (or a symlink to one) is written through and stays what
 * it was; a directory or a missing directory is refused with exit 2 before
 * any run starts; an existing file survives bad input for every command.
 */

import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { oneInputErrorLine, vmstack } from './helpers/cli.js';

const tmp = mkdtempSync(join(tmpdir(), 'vmstack-output-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

const TINY_RUN = ['run', '--size', '64k', '--output-format', 'json'];

test('a symlink to a character device as --output is written through and stays a symlink', async (t) => {
  const link = join(tmp, 'null-link');
  symlinkSync('/dev/null', link);
  const r = await vmstack([...TINY_RUN, '--output', link]);
  t.is(r.code, 0, r.stderr);
  t.true(lstatSync(link).isSymbolicLink());
  t.is(readlinkSync(link), '/dev/null');
  t.true(statSync('/dev/null').isCharacterDevice());
  t.false(existsSync(`${link}.partial`));
});

test('/dev/null as --output stays the character device', async (t) => {
  const r = await vmstack([...TINY_RUN, '--output', '/dev/null']);
  t.is(r.code, 0, r.stderr);
  t.true(statSync('/dev/null').isCharacterDevice());
  t.false(existsSync('/dev/null.partial'));
});

test('a symlink to a regular file: the file gets the output, the link stays', async (t) => {
  const target = join(tmp, 'target.json');
  writeFileSync(target, 'old');
  const link = join(tmp, 'file-link.json');
  symlinkSync(target, link);
  const r = await vmstack([...TINY_RUN, '--output', link]);
  t.is(r.code, 0, r.stderr);
  t.true(lstatSync(link).isSymbolicLink());
  t.is((JSON.parse(readFileSync(target, 'utf8')) as { jobs: unknown[] }).jobs.length, 1);
});

const dir = join(tmp, 'a-directory');
mkdirSync(dir);
const dirLink = join(tmp, 'dir-link');
symlinkSync(dir, dirLink);
const missingDir = join(tmp, 'no-such-dir', 'out.json');
const danglingLink = join(tmp, 'dangling-link');
symlinkSync(join(tmp, 'nothing-here'), danglingLink);

const REFUSED: [string, string[], string[]][] = [
  ['run --output <directory>', ['run', '--size', '64k', '--output', dir], ['--output', dir, 'a directory']],
  ['run --output <symlink to a directory>', ['run', '--size', '64k', '--output', dirLink], ['--output', dirLink, 'a directory']],
  ['compare --output <directory>', ['compare', '--output', dir], ['--output', dir, 'a directory']],
  ['compare --html <directory>', ['compare', '--html', dir], ['--html', dir, 'a directory']],
  ['sweep --output <directory>', ['sweep', '--output', dir], ['--output', dir, 'a directory']],
  ['scale --html <directory>', ['scale', '--html', dir], ['--html', dir, 'a directory']],
  ['run --flamegraph <directory>', ['run', '--size', '64k', '--flamegraph', dir], ['--flamegraph', dir, 'a directory']],
  ['run --flamegraph, missing directory', ['run', '--size', '64k', '--flamegraph', missingDir], ['--flamegraph', missingDir, 'ENOENT']],
  ['run --output <symlink to nothing>', ['run', '--size', '64k', '--output', danglingLink], ['--output', danglingLink, 'symlink to nothing']],
  ['run, missing directory', ['run', '--size', '64k', '--output', missingDir], ['--output', missingDir, 'ENOENT']],
  ['compare, missing directory', ['compare', '--output', missingDir], ['--output', missingDir, 'ENOENT']],
  ['scale, missing directory', ['scale', '--output', missingDir], ['--output', missingDir, 'ENOENT']],
  ['sweep, missing directory', ['sweep', '--html', missingDir], ['--html', missingDir, 'ENOENT']],
];

for (const [title, args, mentions] of REFUSED) {
  test(`refused before any run, exit 2, one line: ${title}`, async (t) => {
    // a run of compare, scale or sweep takes far longer than this: the path is checked first
    const r = await vmstack(args, 15_000);
    const line = oneInputErrorLine(r);
    for (const m of mentions) t.true(line.includes(m), `"${line}" should mention ${m}`);
    t.true(statSync(dir).isDirectory());
    t.true(lstatSync(danglingLink).isSymbolicLink());
  });
}

const BAD_INPUT: [string, string[]][] = [
  ['run', ['run', '--bs', '3000']],
  ['compare', ['compare', '--size', '1x']],
  ['compare, bad block size', ['compare', '--bs', '3k']],
  ['sweep', ['sweep', '--bs', '3000']],
  ['scale', ['scale', '--jobs', 'x']],
  ['scale, bad rw', ['scale', '--jobs', '1', '--strategies', 'strict', '--rw', 'sideways']],
];

for (const [title, args] of BAD_INPUT) {
  test(`bad input leaves existing --output and --html files as they were: ${title}`, async (t) => {
    const name = title.replace(/\W+/g, '-');
    const out = join(tmp, `${name}.out`);
    writeFileSync(out, 'previous result');
    const html = join(tmp, `${name}.html`);
    writeFileSync(html, 'previous report');
    const withHtml = args[0] === 'run' ? [] : ['--html', html];
    const r = await vmstack([...args, '--output', out, ...withHtml], 60_000);
    t.is(r.code, 2, r.stderr);
    t.is(readFileSync(out, 'utf8'), 'previous result');
    t.is(readFileSync(html, 'utf8'), 'previous report');
    t.false(existsSync(`${out}.partial`));
  });
}
