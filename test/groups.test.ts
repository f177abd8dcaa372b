import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { VmstackGroupsReport } from '@vmstack/cli';
import test from 'ava';

const run = promisify(execFile);
const cli = fileURLToPath(new URL('../../packages/cli/dist/src/main.js', import.meta.url));

test('stonewall groups run one after another on the same drive: a read group verifies what the write group wrote', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmstack-groups-'));
  const job = join(dir, 'write-then-verify.fio');
  writeFileSync(
    job,
    [
      '[global]',
      'bs=16k',
      'size=1m',
      'iodepth=8',
      'verify=md5',
      '',
      '[write-phase]',
      'rw=write',
      'do_verify=0',
      '',
      '[read-verify]',
      'stonewall',
      'rw=read',
      '',
    ].join('\n'),
  );
  const { stdout } = await run(process.execPath, [cli, 'run', job, '--strategy', 'strict', '--guest-ram', '64m', '--output-format', 'json'], {
    timeout: 120_000,
  });
  const out = JSON.parse(stdout) as { jobs: { jobname: string; read: { io_bytes: number }; write: { io_bytes: number } }[]; vmstack: VmstackGroupsReport };
  t.deepEqual(
    out.jobs.map((j) => [j.jobname, j.read.io_bytes, j.write.io_bytes]),
    [
      ['write-phase', 0, 1 << 20],
      ['read-verify', 1 << 20, 0],
    ],
  );
  t.deepEqual(
    out.vmstack.groups[1].verify,
    { blocks_checked: 256, corrupt: 0, overwritten: 0, never_written: 0 },
    'every block the first group wrote, read back and checked (its writer’s seed)',
  );
});
