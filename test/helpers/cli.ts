/** The vmstack CLI in a child process, as a user runs it. */

import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const exec = promisify(execFile);
const CLI_PATH = fileURLToPath(new URL('../../../packages/cli/dist/src/main.js', import.meta.url));

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** `vmstack run --guest-ram 64m ARGS`; a non-zero exit is returned with its output, not thrown. */
export async function vmstackRun(args: string[]): Promise<CliRun> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [CLI_PATH, 'run', '--guest-ram', '64m', ...args], { timeout: 240_000, maxBuffer: 64 << 20 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}
