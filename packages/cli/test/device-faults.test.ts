/**
 * A misbehaving NVMe device (`--inject-fault nvme-device/…:MODE@TIME`):
 * a dropped or corrupted write is caught by fio's verify (the job's err=
 * EILSEQ, verify corrupt 1), and a DMA outside the command's PRPs is refused
 * by the host IOMMU (an IOTLB fault, the command failed: err= EIO) — every
 * mode under every strategy, for several seeds (fault time and queue depth),
 * run in this process; and through the CLI, once per mode, the exit status
 * is 1, as fio's is when a job ends with an error.
 */

import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type FaultSpec, releaseIdleWorkers, setWorkerReuse } from '@vmstack/shm';
import test from 'ava';
import { runOptionsOf } from '../src/commands/run.js';
import { parseFault } from '../src/faults.js';
import { runStack } from '../src/stack/run-stack.js';

setWorkerReuse(true);
test.after.always(() => releaseIdleWorkers());

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));
const REPO = fileURLToPath(new URL('../../../../', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'vmstack-device-faults-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

const MAX_PROCESSES = 3;
let running = 0;
const waiting: (() => void)[] = [];

async function vmstack(args: readonly string[]): Promise<{ code: number | null; stderr: string }> {
  if (running >= MAX_PROCESSES) await new Promise<void>((go) => waiting.push(go));
  running++;
  try {
    return await new Promise((resolve) => {
      execFile(process.execPath, [MAIN, ...args], { cwd: REPO, timeout: 120_000, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stderr });
      });
    });
  } finally {
    running--;
    waiting.shift()?.();
  }
}

interface Report {
  jobs: { error: number }[];
  vmstack: { verify: { corrupt: number }; counters: { iotlb: { faults: number }; nvme: { faults: number } } };
}

const MODES = ['drop-write', 'corrupt-write', 'dma-outside-prps'] as const;
const STRATEGIES = ['direct', 'strict', 'lazy', 'bounce'] as const;
/** each seed: the fault's model time and the queue depth */
const SEEDS = [1, 2, 3];
const EILSEQ = 84;
const EIO = 5;

function runArgs(strategy: string, iodepth: number, faults: FaultSpec[]) {
  return {
    fio: { rw: 'write', bs: '4k', iodepth: String(iodepth), size: '256k', verify: 'crc32c', direct: '1' },
    strategy: strategy as (typeof STRATEGIES)[number],
    clock: 'virtual' as const,
    quantumNs: 0,
    driver: 'v5.10' as const,
    bufferContiguity: 'none' as const,
    guestRam: '512m',
    untrusted: false,
    outputFormat: 'json' as const,
    faults,
  };
}

for (const mode of MODES) {
  for (const strategy of STRATEGIES) {
    test.serial(`${mode}, ${strategy}, seeds ${SEEDS.join(', ')}: caught every time`, async (t) => {
      for (const seed of SEEDS) {
        const atUs = (seed * 37) % 120;
        const iodepth = 1 + ((seed * 5) % 8);
        const what = `${mode}@${atUs}us, iodepth ${iodepth}`;
        const run = runOptionsOf(runArgs(strategy, iodepth, [parseFault(`nvme-device/*:${mode}@${atUs}us`)]));
        const r = await runStack(run.groups[0]);
        const job = r.jobs[0];
        if (mode === 'dma-outside-prps') {
          t.is(job.error, EIO, `${what}: the command failed`);
          t.is(r.vmstack.counters.iotlb.faults, 1, `${what}: the host IOMMU refused the access`);
          t.is(r.vmstack.counters.nvme.faults, 1, what);
        } else {
          t.is(job.error, EILSEQ, `${what}: a verify failure`);
          t.is(r.vmstack.counters.iotlb.faults, 0, what);
        }
        // the block the device did not write, wrote wrong or could not read reads back wrong
        t.is(job.verify?.corrupt, 1, what);
      }
    });
  }
  test(`vmstack run with ${mode}: fio's JSON says it, and the exit status is 1`, async (t) => {
    const out = join(tmp, `${mode}.json`);
    const r = await vmstack([
      'run',
      ...['--rw', 'write', '--size', '256k', '--iodepth', '4', '--verify', 'crc32c', '--strategy', 'strict', '--direct', '1'],
      ...['--inject-fault', `nvme-device/nvme-ctrl0:${mode}@20us`, '--output-format', 'json', '--output', out],
    ]);
    t.is(r.code, 1, r.stderr);
    t.is(r.stderr, '');
    const report = JSON.parse(readFileSync(out, 'utf8')) as Report;
    t.is(report.jobs[0].error, mode === 'dma-outside-prps' ? EIO : EILSEQ);
    t.is(report.vmstack.verify.corrupt, 1);
  });
}

test('the same run without a fault: exit 0, nothing corrupt', async (t) => {
  const out = join(tmp, 'clean.json');
  const r = await vmstack(['run', '--rw', 'write', '--size', '256k', '--verify', 'crc32c', '--direct', '1', '--output-format', 'json', '--output', out]);
  t.is(r.code, 0, r.stderr);
  const report = JSON.parse(readFileSync(out, 'utf8')) as Report;
  t.is(report.jobs[0].error, 0);
  t.is(report.vmstack.verify.corrupt, 0);
});

test('a device misbehaviour on a worker that is not a device: exit 2, one line naming the role', async (t) => {
  const r = await vmstack(['run', '--size', '64k', '--inject-fault', 'vm0/vcpu0:drop-write@0ns']);
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr.trimEnd(), /^vmstack: --inject-fault ROLE: "vm0\/vcpu0" is not allowed; an NVMe device worker for mode drop-write[^\n]*$/);
});
