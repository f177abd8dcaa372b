/**
 * fio job file syntax (fio HOWTO "Job file format"): an ini file of
 * sections in order — `[global]` sections set defaults for the job sections
 * below them, every other `[name]` is a job. One option per line, `key=value`
 * or a bare `key`; lines starting with `;` or `#` are comments, and so is the
 * rest of a line after an unquoted `;` or `#`. `include other.fio` pulls in a
 * file of options (no sections; relative to the including file). `${VAR}` in
 * a value is replaced by the environment variable (empty if unset).
 *
 * This file only reads the syntax; what the options mean is `options.ts`.
 * Sections are split here, line by line, because the ini package would merge
 * sections of the same name, nest dotted names and reorder numeric ones; each
 * option line is then decoded by ini (quotes, escapes, inline comments).
 */
import { readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { InputError } from '@vmstack/shm';
import ini from 'ini';

export interface JobFileOption {
  key: string;
  /** The value as written, `${VAR}` expanded; `''` for a bare key. */
  value: string;
  /** `path:line` where the option was written. */
  where: string;
}

export interface JobFileSection {
  /** Section name; `global` for a global section. */
  name: string;
  where: string;
  options: JobFileOption[];
}

export interface JobFile {
  path: string;
  /** Every section in file order, `[global]` ones included. */
  sections: JobFileSection[];
}

export interface ParseJobFileOptions {
  /** Environment for `${VAR}`; default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Reads an `include`d file; default: a regular file's text (a FIFO, directory or device is refused). */
  readFile?: (path: string) => string;
  /** What fio's `$pagesize`, `$mb_memory` and `$ncpus` stand for: the guest's; default `DEFAULT_FIO_KEYWORDS`. */
  keywords?: FioKeywords;
}

/** The values of fio's keywords: the system fio runs on, here the guest. */
export interface FioKeywords {
  pagesize: number;
  mb_memory: number;
  ncpus: number;
}

/** The default guest: 4 KiB pages, 512 MiB of RAM (the default --guest-ram), one vCPU (each job runs on its own). */
export const DEFAULT_FIO_KEYWORDS: FioKeywords = { pagesize: 4096, mb_memory: 512, ncpus: 1 };

/**
 * fio's keyword substitution (options.c `fio_keyword_replace`): `$pagesize`,
 * `$mb_memory` and `$ncpus` become the system's values, and a value that used
 * one and has + - * / in it is computed as `bc` computes it (whole numbers,
 * division truncating), e.g. `size=8*$mb_memory`.
 */
export function expandFioKeywords(value: string, keywords: FioKeywords = DEFAULT_FIO_KEYWORDS): string {
  let used = false;
  const replaced = value.replace(/\$(pagesize|mb_memory|ncpus)/g, (_m, word: keyof FioKeywords) => {
    used = true;
    return String(keywords[word]);
  });
  if (!used || !/[-+*/]/.test(replaced) || replaced.includes("'")) return replaced;
  const n = evalIntegerExpression(replaced);
  return n === null ? replaced : String(n);
}

/** + - * / % and parentheses over whole numbers, as bc with scale 0; null if the text is not such an expression. */
function evalIntegerExpression(text: string): number | null {
  const tokens = text.match(/\d+|[-+*/%()]|\S/g) ?? [];
  let i = 0;
  const peek = () => tokens[i];
  const primary = (): number => {
    const t = tokens[i++];
    if (t === '(') {
      const v = sum();
      if (tokens[i++] !== ')') throw new Error('expected )');
      return v;
    }
    if (t === '-') return -primary();
    if (t !== undefined && /^\d+$/.test(t)) return Number(t);
    throw new Error(`unexpected ${t}`);
  };
  const product = (): number => {
    let v = primary();
    for (let op = peek(); op === '*' || op === '/' || op === '%'; op = peek()) {
      i++;
      const r = primary();
      if (op !== '*' && r === 0) throw new Error('division by zero');
      v = op === '*' ? v * r : op === '/' ? Math.trunc(v / r) : v % r;
    }
    return v;
  };
  const sum = (): number => {
    let v = product();
    for (let op = peek(); op === '+' || op === '-'; op = peek()) {
      i++;
      v = op === '+' ? v + product() : v - product();
    }
    return v;
  };
  try {
    const v = sum();
    return i === tokens.length && Number.isSafeInteger(v) ? v : null;
  } catch {
    return null;
  }
}

const MAX_INCLUDE_DEPTH = 16;

/**
 * Reads a regular file only: a FIFO would block the read until a writer came,
 * a device may never end, a directory is no job file.
 */
function readRegularFile(path: string): string {
  const st = statSync(path);
  if (!st.isFile()) {
    const what = st.isFIFO() ? 'a FIFO' : st.isDirectory() ? 'a directory' : st.isCharacterDevice() || st.isBlockDevice() ? 'a device' : 'not a regular file';
    throw Object.assign(new Error(what), { code: `it is ${what}` });
  }
  return readFileSync(path, 'utf8');
}

/** Reads and parses a job file; a missing or unreadable file, or one that is not a regular file, is an `InputError` naming the path. */
export function readJobFile(path: string, options: ParseJobFileOptions = {}): JobFile {
  const readFile = options.readFile ?? readRegularFile;
  return parseJobFileText(readText(readFile, 'job file', path), path, { ...options, readFile });
}

/** Parses job file text; `path` names it in errors and anchors relative `include`s. */
export function parseJobFileText(text: string, path: string, options: ParseJobFileOptions = {}): JobFile {
  const env = options.env ?? process.env;
  const readFile = options.readFile ?? readRegularFile;
  const sections: JobFileSection[] = [];
  let current: JobFileSection | undefined;

  // the files being read, outermost first: a file that includes itself, directly or through others, would never end
  const including: string[] = [resolve(path)];
  const parseLines = (body: string, file: string, depth: number): void => {
    body
      .replace(/^\uFEFF/, '')
      .split(/\r?\n/)
      .forEach((raw, i) => {
        const where = `${file}:${i + 1}`;
        const line = raw.trim();
        if (line === '' || line.startsWith(';') || line.startsWith('#')) return;

        const header = /^\[([^\]]*)\]\s*(?:[;#].*)?$/.exec(line);
        if (header) {
          if (depth > 0) throw new InputError(where, line, 'options only: an included file may not contain [sections]');
          const name = header[1].trim();
          if (name === '') throw new InputError(where, line, 'a section name, e.g. [global] or [randread-4k]');
          current = { name, where, options: [] };
          sections.push(current);
          return;
        }
        if (current === undefined) {
          throw new InputError(where, line, 'options inside a section: start with [global] or a [job-name]');
        }

        const include = /^include\s+(.+)$/.exec(line);
        if (include) {
          if (depth >= MAX_INCLUDE_DEPTH) throw new InputError(where, line, `includes nested at most ${MAX_INCLUDE_DEPTH} deep`);
          const target = include[1].trim();
          const full = isAbsolute(target) ? target : resolve(dirname(file), target);
          if (including.includes(resolve(full))) {
            throw new InputError(`${where} include`, target, 'a file not already being read: an include cycle never ends');
          }
          including.push(resolve(full));
          parseLines(readText(readFile, `${where} include`, full), full, depth + 1);
          including.pop();
          return;
        }

        current.options.push(decodeOption(line, where, env, options.keywords));
      });
  };

  parseLines(text, path, 0);
  return { path, sections };
}

/** One `key=value` or bare `key` line, decoded by ini. */
function decodeOption(line: string, where: string, env: NodeJS.ProcessEnv, keywords: FioKeywords | undefined): JobFileOption {
  const entries = Object.entries(ini.decode(line, { bracketedArray: false }));
  // ini also splits a line at a lone CR, so "[]\r]" decodes as a section: an object, not a value
  if (entries.length !== 1 || (typeof entries[0][1] === 'object' && entries[0][1] !== null)) {
    throw new InputError(where, line, 'one option per line: key=value or a bare key');
  }
  const [key, decoded] = entries[0];
  // ini turns a bare key into `true` and the words true/false/null into values; undo that.
  const value = decoded === true && !line.includes('=') ? '' : String(decoded);
  return { key, value: expandFioKeywords(expandEnv(value, env), keywords), where };
}

/** fio's `${VAR}` substitution: unset or empty variables become ''. */
export function expandEnv(value: string, env: NodeJS.ProcessEnv): string {
  return value.replace(/\$\{([^}]*)\}/g, (_match, name: string) => env[name] ?? '');
}

function readText(readFile: (path: string) => string, field: string, path: string): string {
  try {
    return readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new InputError(field, path, `a readable fio job file (${code})`);
  }
}
