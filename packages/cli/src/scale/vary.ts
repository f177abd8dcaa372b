/**
 * `scale --vary DIM=v1,v2,...`: the run dimension a scale varies, and how a
 * point of the scale becomes a `run`.
 *
 * Every point is the `run` command's options with one option overridden:
 * `jobs` sets fio's `numjobs`, `iodepth` and `bs` the fio options of the same
 * name, and `vms`, `vcpus`, `devices` and `viommus` the topology options of
 * the same name. The override goes through `run`'s own option table (its
 * coerce and its checks), so a dimension whose option `run` does not take is
 * refused by name rather than ignored.
 */

import { closestName, InputError } from '@vmstack/shm';
import { parseSizeBytes } from '../fio/sizes.js';

/** Each dimension and the `run` option it sets. */
export const VARY_DIMS = {
  jobs: 'numjobs',
  iodepth: 'iodepth',
  bs: 'bs',
  vms: 'vms',
  vcpus: 'vcpus',
  devices: 'devices',
  viommus: 'viommus',
} as const;

export type VaryDim = keyof typeof VARY_DIMS;

const DIM_NAMES = Object.keys(VARY_DIMS) as VaryDim[];

/** What every --vary error ends with: the form and the dimensions. */
export const VARY_ALLOWED = `DIM=v1,v2,... with DIM one of ${DIM_NAMES.join(', ')}, e.g. --vary iodepth=1,4,16 or --vary bs=4k,64k`;

export interface Vary {
  dim: VaryDim;
  /** the run option each point sets, e.g. `numjobs` for `jobs` */
  option: string;
  /** the values as written, in the order given */
  values: string[];
  /** each value as a number for the charts' x axis: counts as written, bs in bytes */
  xs: number[];
  /** the whole argument as written, for errors */
  text: string;
}

/** Parses `DIM=v1,v2,...`: a known dimension, at least one value, each a whole number ≥ 1 (bs: a fio size > 0), none twice. */
export function parseVary(text: string): Vary {
  const m = /^\s*([^=\s]*)\s*=(.*)$/.exec(text);
  if (!m || m[1] === '') throw new InputError('--vary', text, VARY_ALLOWED);
  const name = m[1];
  if (!Object.hasOwn(VARY_DIMS, name)) {
    const near = closestName(name, DIM_NAMES, 2);
    throw new InputError('--vary', text, `${near ? `(did you mean ${near}?) ` : ''}${VARY_ALLOWED}`);
  }
  const dim = name as VaryDim;
  const values = m[2].split(',').map((v) => v.trim());
  const bad = (what: string) => new InputError('--vary', text, `${what}; ${VARY_ALLOWED}`);
  if (values.some((v) => v === '')) throw bad(`${dim} needs a comma-separated list of values with none empty`);
  const xs = values.map((v) => {
    if (dim === 'bs') {
      let bytes: number;
      try {
        bytes = parseSizeBytes('--vary', v);
      } catch (e) {
        if (e instanceof InputError) throw bad(`bs takes fio sizes, e.g. bs=4k,16k,64k ("${v}" is not one)`);
        throw e;
      }
      if (bytes <= 0) throw bad(`bs takes fio sizes > 0, e.g. bs=4k,16k,64k`);
      return bytes;
    }
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v)) || Number(v) < 1) throw bad(`${dim} takes whole numbers ≥ 1, e.g. ${dim}=1,2,4`);
    return Number(v);
  });
  const twice = xs.findIndex((x, i) => xs.indexOf(x) !== i);
  if (twice >= 0) throw bad(`each value once (${values[twice]} is given twice)`);
  return { dim, option: VARY_DIMS[dim], values, xs, text };
}

/**
 * What --vary and --jobs say together: `--jobs 1,2,4` is `--vary jobs=1,2,4`;
 * with neither, jobs=1,2,4.
 */
export function varyOfArgs(vary: string | undefined, jobs: string | undefined): Vary {
  if (vary !== undefined && jobs !== undefined)
    throw new InputError('--jobs', jobs, `either --jobs or --vary, not both: --jobs ${jobs} is --vary jobs=${jobs}`);
  if (jobs !== undefined) {
    try {
      return parseVary(`jobs=${jobs}`);
    } catch (e) {
      if (e instanceof InputError)
        throw new InputError('--jobs', jobs, `whole numbers of jobs ≥ 1, e.g. 1,2,4 (--jobs N,M is --vary jobs=N,M; ${VARY_ALLOWED})`);
      throw e;
    }
  }
  return parseVary(vary ?? 'jobs=1,2,4');
}

/** A `run` option's entry in its option table: what `coerce` does with a value written on the command line. */
export interface RunOptionSpec {
  coerce?: (value: unknown) => unknown;
}

/**
 * `run`'s parsed command line with `overrides` set as if they were written on
 * it (`--bs 64k`): each must be an option of `run`, and goes through its coerce.
 */
export function runArgvWith(
  runOptions: Readonly<Record<string, RunOptionSpec>>,
  base: Readonly<Record<string, unknown>>,
  overrides: Readonly<Record<string, string>>,
): Record<string, unknown> {
  const argv: Record<string, unknown> = { ...base };
  for (const [option, text] of Object.entries(overrides)) {
    const spec = runOptions[option];
    if (!Object.hasOwn(runOptions, option) || spec === undefined)
      throw new InputError(`--${option}`, text, 'no value: it is not an option of vmstack run in this build (see vmstack run --help)');
    argv[option] = spec.coerce ? spec.coerce(text) : text;
  }
  return argv;
}

/**
 * `f()` with an error about the varied option at `value` (one of run's checks
 * refusing, say, numjobs=40) told as an error of --vary, which is where the
 * user wrote it.
 */
export function asVaryError<T>(vary: Vary, value: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof InputError && e.field === `--${vary.option}`)
      throw new InputError('--vary', `${vary.dim}=${value}`, `--vary ${vary.dim} sets run's --${vary.option}, which takes ${e.allowed}; ${VARY_ALLOWED}`);
    throw e;
  }
}
