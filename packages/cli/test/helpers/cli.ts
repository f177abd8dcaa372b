/** The built CLI, spawned as users script it: `node packages/cli/dist/src/main.js …`. */

import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

// compiled helper: packages/cli/dist/test/helpers/cli.js
export const MAIN = fileURLToPath(new URL('../../src/main.js', import.meta.url));
export const REPO = fileURLToPath(new URL('../../../../../', import.meta.url));

export interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** At most this many CLI processes at once per test file: the machine has few cores. */
const MAX_PROCESSES = 3;
let running = 0;
const waiting: (() => void)[] = [];

/** Runs the CLI with `args` from the repository root; a process still running after `timeoutMs` is killed (code null). */
export async function vmstack(args: readonly string[], timeoutMs = 30_000): Promise<Outcome> {
  if (running >= MAX_PROCESSES) await new Promise<void>((go) => waiting.push(go));
  running++;
  try {
    return await new Promise((resolve) => {
      execFile(
        process.execPath,
        [MAIN, ...args],
        { cwd: REPO, timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024 },
        (err, stdout, stderr) => {
          const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
          resolve({ code, stdout, stderr });
        },
      );
    });
  } finally {
    running--;
    waiting.shift()?.();
  }
}

/** The one stderr line of a bad-input exit, or a description of what was wrong instead. */
export function oneInputErrorLine(r: Outcome): string {
  if (r.code !== 2) return `exit ${r.code}, expected 2: ${r.stderr}`;
  if (/^\s+at /m.test(r.stderr)) return `a stack trace: ${r.stderr}`;
  const lines = r.stderr.replace(/\n$/, '').split('\n');
  if (lines.length !== 1 || !lines[0].startsWith('vmstack: ')) return `not one "vmstack: " line: ${r.stderr}`;
  return lines[0];
}
