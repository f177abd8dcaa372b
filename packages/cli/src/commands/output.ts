/**
 * Where a command's text goes. A file named by --output or --html appears
 * only complete: the text is written to `<file>.partial` and renamed, and a
 * write that fails leaves neither file behind.
 */

import { renameSync, rmSync, writeFileSync } from 'node:fs';

/** Write `text` to `path` whole: to `<path>.partial` first, renamed once written. */
export function writeComplete(path: string, text: string): void {
  const partial = `${path}.partial`;
  try {
    writeFileSync(partial, text);
    renameSync(partial, path);
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
