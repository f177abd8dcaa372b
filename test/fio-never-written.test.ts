/**
 * fio's verify of data no job wrote: the drive's own data has no verify
 * header, so fio refuses it ("verify: bad magic header …, wanted acca",
 * err=84 EILSEQ, exit 1), whatever the strategy. The model still checks that
 * such a read brought exactly the drive's data (a damaged block is corrupt,
 * not never written), and write-then-verify jobs keep passing.
 */

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DmaStrategy } from '@vmstack/guest-kernel';
import { releaseIdleWorkers, setWorkerReuse } from '@vmstack/shm';
import test from 'ava';
import { vmstackRun } from './helpers/cli.js';
import { runFio } from './helpers/stack.js';

setWorkerReuse(true);
test.after.always(() => releaseIdleWorkers());

const vmstack = vmstackRun;

const STRATEGIES: DmaStrategy[] = ['direct', 'strict', 'lazy', 'bounce'];

test('rw=read verify=crc32c of a drive nobody wrote: exit 1, err=84 in the JSON and the normal output, fio’s lines', async (t) => {
  const args = ['--rw', 'read', '--bs', '4k', '--iodepth', '8', '--size', '256k', '--verify', 'crc32c', '--direct', '1'];
  const [json, normal] = await Promise.all([vmstack([...args, '--output-format', 'json']), vmstack(args)]);
  t.is(json.code, 1, 'a job that ended with an error: exit 1, as fio');
  const doc = JSON.parse(json.stdout) as { jobs: { error: number }[]; vmstack: { verify: Record<string, number> } };
  t.is(doc.jobs[0].error, 84);
  t.deepEqual(doc.vmstack.verify, { blocks_checked: 64, corrupt: 0, overwritten: 0, never_written: 64 });
  t.regex(
    json.stderr,
    /^verify: bad magic header [0-9a-f]+, wanted acca at file \/dev\/nvme0n1 offset 0, length 4096 \(requested block: offset=0, length=4096\)$/m,
  );
  t.regex(json.stderr, /^fio: pid=\d+, err=84\/file:io_u\.c:2190, func=io_u_queued_complete, error=Invalid or incomplete multibyte or wide character$/m);
  t.is(normal.code, 1);
  t.regex(
    normal.stdout,
    /^Starting 1 process\nfio: pid=\d+, err=84\/file:io_u\.c:2190, func=io_u_queued_complete, error=Invalid or incomplete multibyte or wide character\n\nvmstack: \(groupid=0, jobs=1\): err=84 \(/m,
  );
  t.false(normal.stderr.includes('fio: pid='), 'with the normal output on stdout the error line is in it, not on stderr');
});

for (const strategy of STRATEGIES) {
  test(`${strategy}: reading never-written blocks fails verify (never written, none corrupt); write-then-verify passes, O_DIRECT and buffered`, async (t) => {
    const read = await runFio(strategy, { rw: 'randread', bs: '8k', iodepth: '8', size: '256k', verify: 'md5' });
    t.is(read.result.jobs[0].error, 84);
    t.deepEqual(read.verify, { blocks_checked: 64, corrupt: 0, overwritten: 0, never_written: 64 });
    const pattern = await runFio(strategy, { rw: 'read', bs: '4k', iodepth: '4', size: '64k', verify: 'pattern', verify_pattern: '0xdeadbeef' });
    t.deepEqual(pattern.verify, { blocks_checked: 16, corrupt: 0, overwritten: 0, never_written: 16 }, 'verify=pattern: the drive data is not the pattern');
    const writes = await runFio(strategy, [
      { rw: 'write', bs: '16k', iodepth: '4', size: '256k', verify: 'crc32c' },
      { rw: 'randwrite', bs: '4k', iodepth: '8', size: '256k', offset: '256k', verify: 'sha256', direct: '0' },
    ]);
    t.deepEqual(
      writes.result.jobs.map((j) => j.error),
      [0, 0],
    );
    t.deepEqual(writes.verify, { blocks_checked: 128, corrupt: 0, overwritten: 0, never_written: 0 });
  });
}

test('a read group after a write group: what the earlier job wrote passes, the rest of the region is never written', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmstack-never-written-'));
  const path = join(dir, 'job.fio');
  writeFileSync(path, '[global]\nbs=16k\niodepth=4\nverify=md5\ndirect=1\n[w]\nrw=write\nsize=128k\ndo_verify=0\n[r]\nstonewall\nrw=read\nsize=256k\n');
  const r = await vmstack([path, '--output-format', 'json']);
  t.is(r.code, 1);
  const doc = JSON.parse(r.stdout) as { jobs: { jobname: string; error: number }[]; vmstack: { groups: { verify: Record<string, number> }[] } };
  t.deepEqual(
    doc.jobs.map((j) => [j.jobname, j.error]),
    [
      ['w', 0],
      ['r', 84],
    ],
  );
  t.deepEqual(doc.vmstack.groups[1].verify, { blocks_checked: 64, corrupt: 0, overwritten: 0, never_written: 32 });
  t.regex(
    r.stderr,
    /bad magic header [0-9a-f]+, wanted acca at file \/dev\/nvme0n1 offset 131072, length 4096 \(requested block: offset=131072, length=16384\)/,
  );
});
