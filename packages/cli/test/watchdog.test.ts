/**
 * A worker that fails or stops making progress ends the run: for every worker
 * kind of the default topology and every injected fault (throw, exit, stall,
 * park), `vmstack run` exits 1 with one stderr line naming that worker, well
 * within the process timeout (the watchdog is set to 1.5 s), and leaves no
 * output file behind.
 */

import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));
const REPO = fileURLToPath(new URL('../../../../', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'vmstack-watchdog-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

interface Outcome {
  code: number | null;
  stderr: string;
}

/** Four CLI processes at once: most of a stalled run is the watchdog waiting (a stalled worker spins on a core meanwhile). */
const MAX_PROCESSES = 4;
let running = 0;
const waiting: (() => void)[] = [];

async function vmstack(args: readonly string[]): Promise<Outcome> {
  if (running >= MAX_PROCESSES) await new Promise<void>((go) => waiting.push(go));
  running++;
  try {
    return await new Promise((resolve) => {
      // far beyond the watchdog: a stall it missed would end here, killed, not with exit 1
      execFile(process.execPath, [MAIN, ...args], { cwd: REPO, timeout: 60_000, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stderr });
      });
    });
  } finally {
    running--;
    waiting.shift()?.();
  }
}

const ROLES = ['vm0/vcpu0', 'vm0/vmm/viommu0', 'vm0/host-vfio/viommu0', 'nvme-device/nvme-ctrl0'];
const MODES = ['throw', 'exit', 'stall', 'park'];
const reEscape = (s: string) => s.replace(/[/.]/g, '\\$&');

for (const role of ROLES) {
  for (const mode of MODES) {
    test(`${role}:${mode}: exit 1, one line naming ${role}, no output file`, async (t) => {
      const out = join(tmp, `${role.replace(/\//g, '_')}-${mode}.json`);
      const r = await vmstack(['run', '--size', '64k', '--watchdog-ms', '1500', '--inject-fault', `${role}:${mode}@10us`, '--output', out]);
      t.is(r.code, 1, r.stderr);
      const lines = r.stderr.trimEnd().split('\n');
      t.is(lines.length, 1, r.stderr);
      const verdict = mode === 'stall' || mode === 'park' ? 'stalled: no progress for \\d+\\.\\d s at model time \\d+ ns, waiting for ' : 'failed: ';
      t.regex(lines[0], new RegExp(`^vmstack: worker ${reEscape(role)} \\(thread \\d+\\) ${verdict}`));
      t.false(existsSync(out), 'a failed run writes no output');
      t.false(existsSync(`${out}.partial`), 'nor leaves a partial one');
    });
  }
}

test('a glob names every worker it matches: vm0/** stalls the vCPU, VMM and host; the run still ends naming one', async (t) => {
  const r = await vmstack(['run', '--size', '64k', '--watchdog-ms', '1500', '--inject-fault', 'vm0/**:park@0ns']);
  t.is(r.code, 1, r.stderr);
  t.regex(r.stderr.trimEnd(), /^vmstack: worker vm0\/\S+ \(thread \d+\) stalled: [^\n]*$/);
});

/** [args, what the one line must contain] */
const BAD: [string[], string[]][] = [
  [
    ['--inject-fault', 'vm0/vcpu0'],
    ['--inject-fault:', '"vm0/vcpu0"', 'ROLE:MODE@TIME'],
  ],
  [
    ['--inject-fault', 'vm0/vcpu0:hang@1us'],
    ['--inject-fault MODE:', '"hang"', 'throw, exit, stall, park'],
  ],
  [
    ['--inject-fault', 'vm0/vcpu0:stall@50'],
    ['--inject-fault TIME:', '"50"', 'ns, us, ms or s'],
  ],
  [
    ['--inject-fault', 'vm1/*:stall@1us'],
    ['--inject-fault ROLE:', '"vm1/*"', 'vm0/vcpu0, vm0/vmm/viommu0'],
  ],
  [
    ['--watchdog-ms', '1.5'],
    ['--watchdog-ms:', '"1.5"', 'whole number of real milliseconds'],
  ],
];

for (const [args, parts] of BAD) {
  test(`bad input ${args.join(' ')}: exit 2, one line naming the field`, async (t) => {
    const r = await vmstack(['run', '--size', '64k', ...args]);
    t.is(r.code, 2, r.stderr);
    const lines = r.stderr.trimEnd().split('\n');
    t.is(lines.length, 1, r.stderr);
    for (const p of parts) t.true(lines[0].includes(p), `${lines[0]} lacks ${p}`);
  });
}
