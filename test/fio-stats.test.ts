/**
 * fio's statistics and outputs from real runs of the stack, through the CLI
 * as a fio user runs it: every statistic fio fills is filled, the formats
 * parse back, verify modes and failures behave as fio's (exit 1 on a job
 * error), group_reporting, --section and --parse-only.
 */

import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { plat_idx_to_val } from '@vmstack/guest-kernel';
import test from 'ava';

const exec = promisify(execFile);
const cli = fileURLToPath(new URL('../../packages/cli/dist/src/main.js', import.meta.url));

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

async function vmstack(args: string[], cwd?: string): Promise<Ran> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [cli, 'run', '--guest-ram', '64m', '--direct', '1', ...args], {
      timeout: 240_000,
      cwd,
      maxBuffer: 64 << 20,
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

function jobFile(lines: string[]): { dir: string; path: string } {
  const dir = mkdtempSync(join(tmpdir(), 'vmstack-fio-stats-'));
  const path = join(dir, 'job.fio');
  writeFileSync(path, `${lines.join('\n')}\n`);
  return { dir, path };
}

type Obj = Record<string, unknown>;

test('a run fills every statistic fio fills: depths, submit/complete, ctx, exact latencies, bins in fio buckets, disk_util', async (t) => {
  const r = await vmstack(['--rw', 'randread', '--bs', '4k', '--iodepth', '8', '--size', '1m', '--output-format', 'json+']);
  t.is(r.code, 0, r.stderr);
  const doc = JSON.parse(r.stdout) as Obj;
  const job = (doc.jobs as Obj[])[0];
  const read = job.read as Obj;
  const slat = read.slat_ns as Obj;
  const clat = read.clat_ns as Obj;
  const lat = read.lat_ns as Obj;
  t.is(clat.N, 256);
  t.true((job.ctx as number) > 0, 'the job slept waiting for completions');
  const sum = (o: unknown) => Object.values(o as Record<string, number>).reduce((a, b) => a + b, 0);
  t.true(Math.abs(sum(job.iodepth_level) - 100) < 1);
  t.is((job.iodepth_submit as Obj)['4'], 100);
  t.true(Math.abs(sum(job.iodepth_complete) - 100) < 1);
  t.true(Math.abs((lat.mean as number) - (slat.mean as number) - (clat.mean as number)) < 2e-6, 'lat = slat + clat (each printed with 6 decimals)');
  const values = new Set(Array.from({ length: 1856 }, (_, i) => plat_idx_to_val(i)));
  const bins = clat.bins as Record<string, number>;
  for (const k of Object.keys(bins)) t.true(values.has(Number(k)), `bin ${k} is a fio bucket value`);
  t.is(sum(bins), 256);
  const disk = (doc.disk_util as Obj[])[0];
  t.like(disk, { name: 'nvme0n1', read_ios: 256, write_ios: 0 });
  t.true((disk.util as number) > 0);
  t.true((disk.in_queue as number) > 0);
});

test('terse, json,normal and normal: parse back; normal starts with fio’s lines and ends its fio part with Disk stats', async (t) => {
  const r = await vmstack(['--rw', 'randwrite', '--bs', '16k', '--size', '512k', '--verify', 'sha256', '--output-format', 'terse,json,normal']);
  t.is(r.code, 0, r.stderr);
  // fio's order: its start-up lines (normal is among the formats), then terse, JSON and normal
  t.regex(r.stdout, /^vmstack: \(g=0\): rw=randwrite, bs=\(R\) 16384B-16384B, \(W\) 16384B-16384B, \(T\) 16384B-16384B, ioengine=libaio, iodepth=1\n/);
  t.regex(r.stdout, /^fio-3\.33 \(vmstack [^)]+\)\nStarting 1 process\n\n/m);
  const [, , , , terse, ...rest] = r.stdout.split('\n');
  const f = terse.split(';');
  t.is(f.length, 130);
  t.is(f[0], '3');
  t.is(f[2], 'vmstack');
  t.is(f[5], '512', 'verify reads count in the read statistics (KiB)');
  t.is(f[46], '512', 'written KiB');
  const text = rest.join('\n');
  const json = JSON.parse(text.slice(0, text.indexOf('\n}\n') + 2)) as Obj;
  const job = (json.jobs as Obj[])[0];
  t.is((job.read as Obj).io_bytes, 512 * 1024);
  t.is(job.error, 0);
  const normal = text.slice(text.indexOf('\n}\n') + 3);
  // a blank line after the JSON, as fio prints it
  t.regex(normal, /^\nvmstack: \(groupid=0, jobs=1\): err= 0: /);
  t.regex(normal, /\nDisk stats \(read\/write\):\n {2}nvme0n1: ios=32\/32, merge=0\/0, /);
});

test('verify modes: sha1, xxhash, meta and a verify_pattern pass; a job with verify failures makes the run exit 1 (err=84)', async (t) => {
  const { path } = jobFile([
    '[global]',
    'size=256k',
    'bs=16k',
    'iodepth=4',
    '[a]',
    'rw=randwrite',
    'verify=sha1',
    '[b]',
    'stonewall',
    'rw=write',
    'verify=xxhash',
    'verify_backlog=4',
    '[c]',
    'stonewall',
    'rw=write',
    'verify=meta',
    '[d]',
    'stonewall',
    'rw=write',
    'verify=crc32c',
    'verify_pattern=0xdeadbeef',
  ]);
  const ok = await vmstack([path, '--minimal']);
  t.is(ok.code, 0, ok.stderr);
  const lines = ok.stdout.trim().split('\n');
  t.deepEqual(
    lines.map((l) => l.split(';').slice(2, 5)),
    [
      ['a', '0', '0'],
      ['b', '1', '0'],
      ['c', '2', '0'],
      ['d', '3', '0'],
    ],
  );
  // two clones writing one region: what one wrote over the other fails the other's verify, as in fio
  const { path: overlap } = jobFile(['[w]', 'size=256k', 'rw=randwrite', 'numjobs=2', 'verify=md5', 'verify_fatal=1']);
  const bad = await vmstack([overlap, '--minimal']);
  t.is(bad.code, 1, 'a job error makes the run exit 1');
  t.true(bad.stdout.split('\n').some((l) => l.split(';')[4] === '84'));
});

test('group_reporting, [global] name=, --section and --parse-only as fio', async (t) => {
  const { path } = jobFile([
    '[global]',
    'name=ignored',
    'size=256k',
    'group_reporting',
    '[r]',
    'rw=read',
    'numjobs=2',
    'offset_increment=256k',
    '[s]',
    'rw=read',
  ]);
  const all = await vmstack([path, '--output-format', 'json']);
  t.is(all.code, 0, all.stderr);
  const doc = JSON.parse(all.stdout) as { jobs: Obj[] };
  t.is(doc.jobs.length, 1, 'one reporting group, reported as one job');
  t.is(doc.jobs[0].jobname, 'r', 'the sections keep their names');
  t.is((doc.jobs[0].read as Obj).io_bytes, 3 * 256 * 1024);
  const section = await vmstack([path, '--section', 's', '--minimal']);
  t.deepEqual(
    section.stdout
      .trim()
      .split('\n')
      .map((l) => l.split(';')[2]),
    ['s'],
  );
  const parse = await vmstack([path, '--parse-only']);
  t.deepEqual([parse.code, parse.stdout], [0, '']);
  // several --name on the command line: one job each, the options after a --name its own, those before global
  const two = await vmstack(['--size', '256k', '--name', 'a', '--rw', 'read', '--name', 'b', '--rw', 'write', '--bs', '8k', '--minimal']);
  t.deepEqual(
    two.stdout
      .trim()
      .split('\n')
      .map((l) => [l.split(';')[2], l.split(';')[5], l.split(';')[46]]),
    [
      ['a', '256', '0'],
      ['b', '0', '256'],
    ],
  );
  const wrong = await vmstack([path, '--section', 'nope']);
  t.is(wrong.code, 2);
  t.regex(wrong.stderr, /--section/);
});

test('log files in fio’s names and formats, written where fio writes them', async (t) => {
  const { dir, path } = jobFile(['[lg]', 'size=256k', 'rw=randread', 'write_bw_log', 'write_lat_log=v', 'write_iops_log=v', 'log_offset=1']);
  const r = await vmstack([path, '--minimal'], dir);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(
    readdirSync(dir)
      .filter((f) => f.endsWith('.log'))
      .sort(),
    ['lg_bw.1.log', 'v_clat.1.log', 'v_iops.1.log', 'v_lat.1.log', 'v_slat.1.log'],
  );
  const clat = readFileSync(join(dir, 'v_clat.1.log'), 'utf8').trim().split('\n');
  t.is(clat.length, 64, 'one entry per I/O');
  for (const line of clat) t.regex(line, /^\d+, \d+, 0, 4096, \d+, 0$/);
  const offsets = clat.map((l) => Number(l.split(', ')[4]));
  t.true(offsets.every((o) => o % 4096 === 0 && o < 256 * 1024));
});
