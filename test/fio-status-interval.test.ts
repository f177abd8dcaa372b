/**
 * fio's --status-interval, in model time, through the CLI as a fio user runs
 * it: a full status dump of cumulative values every interval, in the output
 * format, before the final report; each parses back, the values only grow,
 * and the final report is the one a run without the option prints.
 */

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { type CliRun, vmstackRun } from './helpers/cli.js';

/** `vmstack run --guest-ram 64m --direct 1 ARGS` */
const vmstack = (args: string[]): Promise<CliRun> => vmstackRun(['--direct', '1', ...args]);

type Obj = Record<string, unknown>;

/** Several JSON documents one after another, as fio prints them with --status-interval. */
function jsonDocuments(text: string): Obj[] {
  const docs: Obj[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') inString = true;
    else if (c === '{') {
      if (depth++ === 0) start = i;
    } else if (c === '}' && --depth === 0) docs.push(JSON.parse(text.slice(start, i + 1)) as Obj);
  }
  return docs;
}

const job = (doc: Obj, i = 0) => (doc.jobs as Obj[])[i];
const dir = (doc: Obj, d: 'read' | 'write', i = 0) => job(doc, i)[d] as Obj;

// a 5 ms (model time) job: dumps at 1, 2, 3, 4 and 5 ms of model time, then the final report
const TIMED = ['--rw', 'randread', '--bs', '4k', '--iodepth', '8', '--size', '1m', '--runtime', '5ms', '--time_based'];

test('json: one document per interval, cumulative and growing, then the final report, the same as without --status-interval', async (t) => {
  const [dumped, plain] = await Promise.all([
    vmstack([...TIMED, '--status-interval', '1ms', '--output-format', 'json']),
    vmstack([...TIMED, '--output-format', 'json']),
  ]);
  t.is(dumped.code, 0, dumped.stderr);
  const docs = jsonDocuments(dumped.stdout);
  t.is(docs.length, 6, 'five dumps and the final report');
  const dumps = docs.slice(0, -1);
  const final = docs[docs.length - 1];
  t.deepEqual(
    dumps.map((d) => job(d).job_runtime),
    [0, 1, 2, 3, 4],
    'each dump is cumulative from the job start (job_runtime in whole ms, as fio)',
  );
  for (const d of dumps) {
    t.false('vmstack' in d, "a dump carries fio's keys only");
    t.truthy(d.disk_util);
  }
  const fields = (d: Obj) => [
    dir(d, 'read').io_bytes as number,
    dir(d, 'read').total_ios as number,
    (dir(d, 'read').clat_ns as Obj).N as number,
    job(d).ctx as number,
    ((d.disk_util as Obj[])[0]?.read_ios as number) ?? 0,
  ];
  for (let i = 1; i < docs.length; i++) {
    const [a, b] = [fields(docs[i - 1]), fields(docs[i])];
    a.forEach((v, k) => t.true(b[k] >= v, `field ${k} of document ${i} does not go down: ${v} → ${b[k]}`));
  }
  t.true((dir(dumps[0], 'read').io_bytes as number) > 0, 'the first dump already has I/O in it');
  t.true((dir(dumps[4], 'read').io_bytes as number) < (dir(final, 'read').io_bytes as number), 'the last dump is before the end');
  // the dumps change nothing the model does: the final report is the run's without them
  const alone = jsonDocuments(plain.stdout);
  t.is(alone.length, 1);
  for (const k of ['io_bytes', 'total_ios', 'bw', 'iops', 'runtime']) t.is(dir(final, 'read')[k], dir(alone[0], 'read')[k], k);
  t.deepEqual(dir(final, 'read').clat_ns, dir(alone[0], 'read').clat_ns);
  t.deepEqual((final.vmstack as Obj).counters, (alone[0].vmstack as Obj).counters);
});

test('normal and terse: a full report (job, group, disk stats) or a terse line per interval, then the final one; fio header once', async (t) => {
  const [normal, terse] = await Promise.all([
    vmstack([...TIMED, '--status-interval', '1ms']),
    vmstack([...TIMED, '--status-interval', '1000us', '--output-format', 'terse', '--eta', 'always']),
  ]);
  t.is(normal.code, 0, normal.stderr);
  t.is(normal.stdout.match(/^Starting 1 process$/gm)?.length, 1);
  t.is(normal.stdout.match(/^vmstack: \(groupid=0, jobs=1\): err= 0/gm)?.length, 6);
  t.is(normal.stdout.match(/^Run status group 0 \(all jobs\):$/gm)?.length, 6);
  t.is(normal.stdout.match(/^Disk stats \(read\/write\):$/gm)?.length, 6);
  t.is(normal.stdout.match(/^lock_stat version/gm)?.length, 1, "the model's tables once, after the final report");
  t.is(terse.code, 0, terse.stderr);
  const lines = terse.stdout.trim().split('\n');
  t.is(lines.length, 6);
  const readKiB = lines.map((l) => Number(l.split(';')[5]));
  t.deepEqual(
    readKiB,
    [...readKiB].sort((a, b) => a - b),
  );
  t.false(terse.stdout.includes('Jobs:'), 'fio draws no status line with terse output, even with --eta always');
});

test('stonewall groups: the interval runs on across the groups; a dump in the second group has the first group’s final numbers', async (t) => {
  const dirPath = mkdtempSync(join(tmpdir(), 'vmstack-status-'));
  const path = join(dirPath, 'job.fio');
  writeFileSync(path, '[global]\nrw=randread\nbs=4k\niodepth=4\nsize=1m\nruntime=3ms\ntime_based\n[a]\n[b]\nstonewall\n');
  const r = await vmstack([path, '--status-interval', '1ms', '--output-format', 'json']);
  t.is(r.code, 0, r.stderr);
  const docs = jsonDocuments(r.stdout);
  t.is(docs.length, 7, 'three dumps in each group, then the final report');
  t.deepEqual(
    docs.map((d) => (d.jobs as Obj[]).map((j) => j.jobname)),
    Array.from({ length: 7 }, () => ['a', 'b']),
    'every job in every dump, as fio',
  );
  for (const d of docs.slice(0, 3)) t.is(dir(d, 'read', 1).io_bytes, 0, "the second group's job, not started yet");
  for (const d of docs.slice(3)) t.deepEqual(dir(d, 'read', 0), dir(docs[6], 'read', 0), "the first group's job, over: its final numbers");
  t.is(dir(docs[2], 'read', 0).total_ios !== dir(docs[6], 'read', 0).total_ios, true, 'the last dump in the first group is before its end');
});

test('--status-interval takes a fio time > 0; anything else is one line and exit 2', async (t) => {
  for (const bad of ['0', 'soon', '-1s']) {
    const r = await vmstack(['--size', '64k', '--status-interval', bad]);
    t.is(r.code, 2, bad);
    t.regex(r.stderr, /--status-interval/);
    t.is(r.stderr.trim().split('\n').length, 1);
  }
});
