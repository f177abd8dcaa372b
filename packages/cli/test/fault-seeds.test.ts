/**
 * Every worker role × every worker fault (throw, exit, stall, park), at three
 * seeded moments and queue depths per pair, in this process: the run rejects
 * with one line naming the faulty worker (a failure, or the watchdog's stall
 * verdict), and the next run on the reused workers is clean. The CLI side of
 * the same faults (exit status, output files) is watchdog.test.ts.
 */

import { releaseIdleWorkers, setWorkerReuse } from '@vmstack/shm';
import test from 'ava';
import { runOptionsOf } from '../src/commands/run.js';
import { parseFault } from '../src/faults.js';
import { runStack } from '../src/stack/run-stack.js';

setWorkerReuse(true);
test.after.always(() => releaseIdleWorkers());

const ROLES = ['vm0/vcpu0', 'vm0/vmm/viommu0', 'vm0/host-vfio/viommu0', 'nvme-device/nvme-ctrl0'];
const MODES = ['throw', 'exit', 'stall', 'park'] as const;
const SEEDS = [1, 2, 3];
const reEscape = (s: string) => s.replace(/[/.]/g, '\\$&');

function stackOf(fault: string | null, iodepth: number) {
  return runOptionsOf({
    fio: { rw: 'randrw', bs: '4k', iodepth: String(iodepth), size: '128k', direct: '1', verify: 'crc32c' },
    strategy: 'strict',
    clock: 'virtual',
    quantumNs: 0,
    driver: 'v5.10',
    bufferContiguity: 'none',
    guestRam: '128m',
    untrusted: false,
    outputFormat: 'json',
    // a short watchdog for the faulty runs (they stall on purpose); the default for the clean one
    ...(fault ? { faults: [parseFault(fault)], watchdogMs: 400 } : {}),
  }).groups[0];
}

for (const role of ROLES) {
  test.serial(`${role}: every fault at three seeded moments ends the run naming ${role}; the next run is clean`, async (t) => {
    for (const mode of MODES) {
      for (const seed of SEEDS) {
        // the moment and the depth of each seed: early, mid-run and late in a 32-I/O job
        const atUs = [3, 41, 97][seed - 1];
        const iodepth = [1, 4, 8][seed - 1];
        const what = `${role}:${mode}@${atUs}us iodepth ${iodepth}`;
        const err = await t.throwsAsync(runStack(stackOf(`${role}:${mode}@${atUs}us`, iodepth)), undefined, what);
        const line = err?.message ?? '';
        t.is(line.split('\n').length, 1, `${what}: ${line}`);
        const verdict = mode === 'stall' || mode === 'park' ? 'stalled: no progress for' : 'failed: ';
        t.regex(line, new RegExp(`^worker ${reEscape(role)} \\(thread \\d+\\) ${verdict}`), what);
      }
    }
    const clean = await runStack(stackOf(null, 4));
    t.is(clean.jobs[0].error, 0);
    t.is(clean.vmstack.verify.corrupt, 0);
  });
}
