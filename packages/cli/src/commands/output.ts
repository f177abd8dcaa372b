/**
 * Where a command's text goes. `--output` and `--html` never remove or
 * replace anything but a regular file:
 * - a regular file (or a new one, or a symlink to one) is replaced only by a
 *   complete new file: the text goes to `<file>.partial` beside it and is
 *   renamed over it, so a run that fails or bad input leaves it as it was;
 * - a character device or FIFO (or a symlink to one: /dev/stdout, /dev/null)
 *   is written through directly, as the user meant;
 * - anything else (a directory, a block device, a socket, a missing parent
 *   directory) is refused by `checkOutputPath` before any run starts.
 */

import { accessSync, constants, lstatSync, realpathSync, renameSync, rmSync, type Stats, statSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { InputError } from '@vmstack/shm';

const OUTPUT_ALLOWED =
  'a regular file (replaced only once the run completes), a new file in an existing writable directory, or a character device or FIFO such as /dev/stdout';

function statOrUndefined(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** `path` is a symlink itself (whether or not what it names exists). */
function statOrUndefinedLink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

/** Written through in place: a character device or a FIFO, reached directly or by a symlink. */
function isStream(st: Stats): boolean {
  return st.isCharacterDevice() || st.isFIFO();
}

/**
 * `path` given as `field` (--output, --html) can take the command's text: checked before any run starts.
 * `inputs` are the run's input files, which the output must not overwrite.
 */
export function checkOutputPath(field: string, path: string, inputs: readonly (string | undefined)[] = []): void {
  if (path === '') throw new InputError(field, path, OUTPUT_ALLOWED);
  let st: Stats | undefined;
  try {
    st = statOrUndefined(path);
  } catch (e) {
    throw new InputError(field, path, `${OUTPUT_ALLOWED} (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  if (st === undefined && statOrUndefinedLink(path)) throw new InputError(field, path, `${OUTPUT_ALLOWED}; it is a symlink to nothing`);
  if (st !== undefined && isStream(st)) return;
  if (st !== undefined && !st.isFile())
    throw new InputError(field, path, `${OUTPUT_ALLOWED}; it is ${st.isDirectory() ? 'a directory' : 'not a regular file'}`);
  const target = st === undefined ? resolve(path) : realpathSync(path);
  for (const input of inputs) {
    if (input !== undefined && (resolve(input) === resolve(path) || resolve(input) === target)) {
      throw new InputError(field, path, `a file other than the run's inputs (it is the job file or the profile)`);
    }
  }
  const dir = dirname(target);
  const dirStat = statOrUndefined(dir);
  if (dirStat === undefined || !dirStat.isDirectory()) throw new InputError(field, path, `${OUTPUT_ALLOWED}; its directory ${dir} does not exist (ENOENT)`);
  try {
    accessSync(dir, constants.W_OK);
  } catch (e) {
    throw new InputError(field, path, `${OUTPUT_ALLOWED}; its directory ${dir} is not writable (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
}

/** Write `text` to `path`: a device or FIFO directly; a file whole, to `<file>.partial` first, renamed once written. */
export function writeComplete(path: string, text: string): void {
  const st = statOrUndefined(path);
  if (st !== undefined && isStream(st)) {
    writeFileSync(path, text);
    return;
  }
  // a symlink to a file: the file it names is replaced, the link stays
  const target = st === undefined ? path : realpathSync(path);
  const partial = `${target}.partial`;
  try {
    writeFileSync(partial, text);
    renameSync(partial, target);
  } catch (e) {
    rmSync(partial, { force: true });
    throw e;
  }
}

/** The command's text: to the --output file when there is one, else to stdout. */
export function emitOutput(text: string, output: string | undefined): void {
  if (output) writeComplete(output, text);
  else process.stdout.write(text);
}
