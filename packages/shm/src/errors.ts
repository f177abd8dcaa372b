/**
 * Errors that carry an exit code. Bad input (a job file, an option, a
 * topology, a cost profile) is an `InputError`: the CLI prints its one-line
 * message and exits with code 2, never a stack trace.
 */
export class InputError extends Error {
  readonly exitCode = 2;
  /**
   * @param field   the option, key or file the problem is in (e.g. `bs`, `profile.memcpyBytesPerNs`)
   * @param value   the offending value as the user wrote it
   * @param allowed what would have been accepted
   */
  constructor(
    readonly field: string,
    readonly value: unknown,
    readonly allowed: string,
  ) {
    super(`${oneLine(field)}: ${formatValue(value)} is not allowed; ${oneLine(allowed)}`);
    this.name = 'InputError';
  }
}

/** A worker died or a run could not complete; names the worker and its role. */
export class WorkerFailure extends Error {
  constructor(
    readonly role: string,
    readonly threadId: number,
    readonly reason: string,
  ) {
    super(`worker ${role} (thread ${threadId}) failed: ${reason}`);
    this.name = 'WorkerFailure';
  }
}

/** The run stood still (see watchdog.ts): names the worker to blame, its model time and what it waits for. */
export class WorkerStall extends WorkerFailure {
  constructor(role: string, threadId: number, reason: string, message: string) {
    super(role, threadId, reason);
    this.message = message;
    this.name = 'WorkerStall';
  }
}

/** Characters of an echoed value an error shows: a 200 KB job-file line or a profile array is cut to an excerpt. */
export const INPUT_ERROR_VALUE_CHARS = 60;

/** Line breaks and other control characters, which would split a one-line message or move the terminal's cursor. */
const CONTROL_CHARS = /[\p{Cc}\u2028\u2029]/gu;

/** `text` with its control characters written as \u escapes: one line whatever it holds. */
function oneLine(text: string): string {
  return text.replace(CONTROL_CHARS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * A name the user wrote (an option key, a section name, a topology id) as a
 * field or an `allowed` text may show it: control characters escaped, cut to
 * INPUT_ERROR_VALUE_CHARS characters like an echoed value.
 */
export function inputExcerpt(text: string): string {
  const line = oneLine(text.length > 2 * INPUT_ERROR_VALUE_CHARS ? text.slice(0, 2 * INPUT_ERROR_VALUE_CHARS) : text);
  return line.length > INPUT_ERROR_VALUE_CHARS ? `${line.slice(0, INPUT_ERROR_VALUE_CHARS)}…` : line;
}

/**
 * The value as JSON, cut to an excerpt. A value JSON cannot write (a BigInt, a
 * value nested deeper than the stack, an object without a prototype) is shown
 * as String shows it, or by its kind.
 */
function formatValue(value: unknown): string {
  if (value === undefined) return '(missing)';
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    try {
      text = String(value);
    } catch {
      text = Array.isArray(value) ? '(a list nested too deep to show)' : `(${typeof value})`;
    }
  }
  return inputExcerpt(text);
}
