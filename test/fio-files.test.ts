/**
 * One job over several files (fio's filename=a:b, nrfiles=N): equal parts of
 * the job's region on its drive, one I/O from each in turn. What the job
 * writes it reads back intact under every strategy.
 */

import type { DmaStrategy } from '@vmstack/guest-kernel';
import { releaseIdleWorkers, setWorkerReuse } from '@vmstack/shm';
import test from 'ava';
import { runFio } from './helpers/stack.js';

setWorkerReuse(true);
test.after.always(() => releaseIdleWorkers());

for (const strategy of ['direct', 'strict', 'lazy', 'bounce'] as DmaStrategy[]) {
  test(`${strategy}: filename=a:b and nrfiles=4 jobs write their files and verify every block they wrote`, async (t) => {
    const r = await runFio(strategy, [
      { filename: 'a:b', rw: 'write', bs: '4k', iodepth: '4', size: '128k', verify: 'crc32c' },
      { nrfiles: '4', rw: 'randwrite', bs: '8k', iodepth: '8', size: '256k', offset: '128k', verify: 'md5', direct: '0' },
    ]);
    t.deepEqual(
      r.result.jobs.map((j) => [j.error, j.write.ioBytes]),
      [
        [0, 128 * 1024],
        [0, 256 * 1024],
      ],
    );
    t.deepEqual(r.verify, { blocks_checked: 32 + 64, corrupt: 0, overwritten: 0, never_written: 0 });
  });
}
