#!/usr/bin/env node
/**
 * vmstack command line. `vmstack run [job-file] [options…]` runs fio jobs on
 * the modelled stack with real workers and prints fio-style output.
 *
 * Exit codes: 0 the run completed; 1 it failed (a worker crashed or stalled:
 * one line naming the worker), a job ended with an error as fio reports it
 * (err=: failed commands, verify failures), or an internal error (with its stack);
 * 2 bad input — one line on stderr naming the option or field, the value and
 * what is allowed; no worker has started.
 *
 * Only yargs and @vmstack/shm's errors load here: the run command imports
 * the stack lazily, so `--help` is instant. Every yargs error becomes an
 * `InputError`: choices are checked by `coerce` (which gets the InputError
 * out), unknown options and extra words by `checkArgv`, not by yargs'
 * English messages. No yargs defaults on run options: a bare `--strategy`
 * is an error, not the default; defaults are applied in `runArgsOf`.
 */

import { readFileSync } from 'node:fs';
import type { DmaStrategy, UserBufferContiguity, ViommuDriverGeneration } from '@vmstack/guest-kernel';
import { closestName, DEFAULT_QUANTUM_NS, editDistance, type FaultSpec, InputError, releaseIdleWorkers, setWorkerReuse, WorkerFailure } from '@vmstack/shm';
import type { VmmPath } from '@vmstack/vmm';
import yargs, { type Argv, type CommandModule, type Options } from 'yargs';
import { hideBin } from 'yargs/helpers';
import type { RunArgs } from './commands/run.js';
import { parseFault, parseWatchdogMs } from './faults.js';
import type { FlamegraphFormat } from './report/flamegraph.js';

const STRATEGIES = ['direct', 'strict', 'lazy', 'bounce'] as const satisfies readonly DmaStrategy[];
const CLOCKS = ['virtual', 'wall'] as const;
const DRIVERS = ['v5.10', 'v6.x'] as const satisfies readonly ViommuDriverGeneration[];
const CONTIGUITIES = ['none', 'huge'] as const satisfies readonly UserBufferContiguity[];
/** fio's --output-format: one of these, or several joined by commas (commands/run.ts parseOutputFormats) */
const OUTPUT_FORMATS = ['normal', 'json', 'json+', 'terse'] as const;
/** report/flamegraph.ts's formats, listed here so that --help does not load the report code */
const FLAMEGRAPH_FORMATS = ['folded', 'speedscope'] as const satisfies readonly FlamegraphFormat[];
const VMMS = ['crosvm-2021', 'no-sandbox', 'qemu-notifier'] as const satisfies readonly VmmPath[];

/** The last InputError a coerce threw: yargs wraps it in a YError, `fail` throws it as it was. */
let coerceError: InputError | undefined;

function coerced<T>(parse: (text: string) => T): (value: unknown) => T {
  return (value) => {
    try {
      return parse(String(value));
    } catch (e) {
      if (e instanceof InputError) coerceError = e;
      throw e;
    }
  };
}

function choice<const C extends readonly string[]>(option: string, choices: C): Options {
  const parse = (text: string): C[number] => {
    if ((choices as readonly string[]).includes(text)) return text;
    throw new InputError(`--${option}`, text, `one of ${choices.join(', ')}`);
  };
  return { type: 'string', choices: [...choices], coerce: coerced(parse) };
}

const EXIT_CODES =
  'Exit codes: 0 done; 1 the run failed (a worker crashed or stalled) or, as in fio, a job ended with an error (err=: failed commands, verify failures); ' +
  '2 bad input (one line on stderr, nothing started).';

const FIO_GROUP = "fio job options (override the job file's [global]):";
const MODEL_GROUP = 'Model:';
const OUTPUT_GROUP = 'Output:';

/** fio options taken on the command line; any other fio option goes in a job file. */
const FIO_OPTIONS: Record<string, Options> = {
  name: { type: 'string', describe: 'job name (default: vmstack)' },
  rw: { type: 'string', describe: 'read, write, randread, randwrite, rw, randrw (default: read)' },
  bs: { type: 'string', describe: 'block size, a multiple of 4k up to 2m (default: 4k)' },
  iodepth: { type: 'string', describe: 'I/Os in flight per job, 1…4096 (default: 1)' },
  numjobs: { type: 'string', describe: 'clones of the job, one vCPU each (default: 1)' },
  size: { type: 'string', describe: "the job's region of the namespace, e.g. 64m (default: 64m)" },
  offset: { type: 'string', describe: 'start of the region (default: 0)' },
  runtime: { type: 'string', describe: 'model time limit: 10 (s), 500ms, 2m' },
  time_based: { type: 'boolean', describe: 'loop over the region until runtime has passed' },
  rwmixread: { type: 'string', describe: 'percent reads for rw/randrw (default: 50)' },
  verify: { type: 'string', describe: '0, crc32c, md5, sha1, sha256, xxhash, meta or pattern (with verify_pattern in a job file)' },
  do_verify: { type: 'string', describe: '0 or 1: read back and check after writing (default: 1)' },
  randseed: { type: 'string', describe: 'seed of random offsets (default: 0x89)' },
  direct: { type: 'string', describe: '0 (default, as fio: buffered through the guest page cache) or 1 (O_DIRECT)' },
  ioengine: { type: 'string', describe: 'libaio (default), psync, pvsync or io_uring (its options in a job file)' },
  filename: { type: 'string', describe: "the job's drive as the guest names it, /dev/nvme<X>n1 (default: drive i mod --devices for job i)" },
};

const MODEL_OPTIONS: Record<string, Options> = {
  strategy: { ...choice('strategy', STRATEGIES), describe: 'guest DMA mapping: no IOMMU, strict or lazy unmap, bounce pool (default: strict)' },
  clock: { ...choice('clock', CLOCKS), describe: 'virtual: model time, deterministic; wall: real time (default: virtual)' },
  quantum: {
    type: 'string',
    describe: 'model ns a vCPU may run ahead of the slowest; 0 (default) orders lock grants exactly and repeats multi-job runs; more is faster, inexact',
    coerce: coerced((t) => {
      if (!/^\d+$/.test(t.trim()) || !Number.isSafeInteger(Number(t))) throw new InputError('--quantum', t, 'a whole number of model ns ≥ 0, e.g. 20000 or 0');
      return Number(t);
    }),
  },
  driver: { ...choice('driver', DRIVERS), describe: 'virtio-iommu driver generation (default: v5.10)' },
  vmm: {
    ...choice('vmm', VMMS),
    describe:
      "how the VMM's virtio-iommu device reaches VFIO: crosvm-2021 (jailed: seccomp on each syscall; one VFIO unmap per UNMAP), " +
      'no-sandbox (the same, unjailed) or qemu-notifier (no filter; one VFIO unmap per covered mapping) (default: crosvm-2021)',
  },
  'guest-ram': { type: 'string', describe: "guest RAM: rings, queues and every job's iodepth × bs of I/O buffers (default: 512m)" },
  buffer_contiguity: { ...choice('buffer_contiguity', CONTIGUITIES), describe: "fio's buffers in scattered 4 KiB pages or 2 MiB huge pages (default: none)" },
  profile: { type: 'string', describe: 'cost profile JSON (default: profiles/i5-10210U.json)' },
  untrusted: { type: 'boolean', describe: 'untrusted device: bouncing is mandatory (swiotlb; the pool with --strategy bounce)' },
  'always-bounce-limit': { type: 'string', describe: '--strategy bounce: bounce mappings up to this size (default: 4k)' },
  'always-bounce-limit-at': {
    type: 'string',
    describe: '--strategy bounce: change always_bounce_limit during the run, as a sysfs write: TIME=SIZE,… in model time, e.g. 5ms=128k',
  },
  'slots-per-class': { type: 'string', describe: '--strategy bounce: slots per pool size class (default: 1024)' },
  'dma-entry-limit': { type: 'string', describe: "vfio_iommu_type1's dma_entry_limit: DMA mappings per container (default: 65535)" },
};

const OUTPUT_OPTIONS: Record<string, Options> = {
  'output-format': {
    type: 'string',
    coerce: coerced((t) => {
      for (const p of t.split(','))
        if (!(OUTPUT_FORMATS as readonly string[]).includes(p.trim()))
          throw new InputError('--output-format', t, `one of ${OUTPUT_FORMATS.join(', ')}, or several joined by commas (e.g. json,normal)`);
      return t;
    }),
    describe: "normal: fio's summary + the model's tables; json(+): fio JSON + a vmstack key; terse: fio's terse v3 lines; or a list, e.g. json,normal",
  },
  minimal: { type: 'boolean', describe: 'fio --minimal: the same as --output-format terse' },
  section: { type: 'string', array: true, describe: 'run only this job section of the job file (repeatable); [global] sections apply as ever' },
  'parse-only': { type: 'boolean', describe: 'check the job file and every option, run nothing (exit 0 or 2)' },
  eta: {
    ...choice('eta', ['auto', 'always', 'never'] as const),
    describe: "fio's status line while the jobs run (model-time progress and rates, wall-time ETA); auto: on a terminal with normal output",
  },
  'status-interval': {
    type: 'string',
    describe:
      "fio's full status dump (cumulative from the jobs' start) every interval of MODEL time (a fio time, bare number: seconds, e.g. 1ms), " +
      'in the output format, before the final report; printed once the run ends',
  },
  output: { type: 'string', describe: 'write to this file: <file>.partial, renamed when the run completes' },
  html: { type: 'string', describe: 'also write an offline HTML report (the topology, the jobs, the locks) to this file' },
  flamegraph: {
    type: 'string',
    describe: "also write the profile's call paths as a flame graph to this file (<file>.partial, renamed when the run completes)",
  },
  'flamegraph-format': {
    ...choice('flamegraph-format', FLAMEGRAPH_FORMATS),
    describe: 'folded: folded stacks (flamegraph.pl), self model ns per call path; speedscope: speedscope JSON (default: folded)',
  },
};

const TOPOLOGY_GROUP = 'Topology (default: one VM, a vCPU per job, one NVMe drive behind one virtio-iommu):';

/** The shape of the run (topology/build.ts): a few counts, or a JSON file with everything. */
const TOPOLOGY_OPTIONS: Record<string, Options> = {
  vms: { type: 'string', describe: 'VMs, each running the whole job list on its own drives (default: 1)' },
  vcpus: { type: 'string', describe: 'vCPUs per VM; job i on vCPU i mod vcpus (default: one per job)' },
  devices: {
    type: 'string',
    describe: "passed-through NVMe drives per VM, each its own controller; a job's is its filename=/dev/nvmeXn1, else i mod devices (default: 1)",
  },
  viommus: { type: 'string', describe: 'virtio-iommus per VM, devices spread over them (default: 1)' },
  container: { ...choice('container', ['shared', 'per-device'] as const), describe: "one VFIO container for a VM's devices, or one each (default: shared)" },
  platform: { ...choice('platform', ['vm', 'bare-metal'] as const), describe: 'jobs in VMs, or on the host itself with no VMM (default: vm)' },
  'iommu-units': { type: 'string', describe: 'host IOMMU units, controllers spread over them (default: 1)' },
  topology: { type: 'string', describe: 'a JSON topology file (as vmstack topology --output-format json prints), instead of the options above' },
};

/** The topology options given, for topology/build.ts; undefined: none, the default shape. */
function topologyArgs(argv: Record<string, unknown>): RunArgs['topology'] {
  if (!Object.keys(TOPOLOGY_OPTIONS).some((k) => argv[k] !== undefined)) return undefined;
  const str = (k: string) => argv[k] as string | undefined;
  const besideFile = Object.fromEntries(['strategy', 'driver', 'guest-ram', 'untrusted'].filter((k) => argv[k] !== undefined).map((k) => [`--${k}`, argv[k]]));
  return {
    vms: str('vms'),
    vcpus: str('vcpus'),
    devices: str('devices'),
    viommus: str('viommus'),
    container: str('container'),
    platform: str('platform'),
    iommuUnits: str('iommu-units'),
    file: str('topology'),
    besideFile: besideFile as Record<string, string | boolean>,
  };
}

const CHECK_GROUP = 'Run checks:';

/** Options that check a run ends when a worker fails or stops (stack/faults.ts). */
const CHECK_OPTIONS: Record<string, Options> = {
  'watchdog-ms': {
    type: 'string',
    describe: 'fail the run (exit 1, naming the worker) once no worker made progress for this long, real ms; 0: never (default: 5000 per worker a core runs)',
    coerce: coerced(parseWatchdogMs),
  },
  'inject-fault': {
    type: 'string',
    describe:
      'ROLE:MODE@TIME, repeatable: the worker(s) ROLE (a role, * and ** patterns) throw, exit, stall or park at model time TIME, e.g. vm0/vcpu0:stall@50us; ' +
      'an nvme-device/… worker also misbehaves: drop-write or corrupt-write (its first write from TIME; verify catches it), dma-outside-prps (its first command ' +
      'from TIME moves a page to or from an address no PRP gave it: the IOMMU faults, the command fails with EIO)',
    coerce: (value: unknown) => (Array.isArray(value) ? value : [value]).map((v) => coerced(parseFault)(v)),
  },
};

const RUN_OPTIONS = { ...FIO_OPTIONS, ...MODEL_OPTIONS, ...TOPOLOGY_OPTIONS, ...OUTPUT_OPTIONS, ...CHECK_OPTIONS };
const BUILTIN_OPTIONS = ['help', 'h', 'version'];

function runBuilder(y: Argv): Argv {
  y.positional('jobfile', { type: 'string', describe: 'fio job file (ini syntax); without one, the command line is the job' });
  for (const [group, options] of [
    [FIO_GROUP, FIO_OPTIONS],
    [MODEL_GROUP, MODEL_OPTIONS],
    [TOPOLOGY_GROUP, TOPOLOGY_OPTIONS],
    [OUTPUT_GROUP, OUTPUT_OPTIONS],
    [CHECK_GROUP, CHECK_OPTIONS],
  ] as const) {
    for (const [name, o] of Object.entries(options)) y.option(name, { ...o, group });
  }
  return y
    .example('$0 run --rw randread --bs 4k --iodepth 16 --size 64m --strategy lazy', 'one job on the command line')
    .example('$0 run jobs.fio --strategy bounce --output r.json --output-format json', 'a job file; fio JSON to r.json')
    .example('$0 run --numjobs 4 --iodepth 8 --quantum 20000', 'four vCPUs fighting over the big locks, faster and inexact: up to 20 µs apart')
    .example('$0 run --vms 2 --devices 2 --rw randread --numjobs 2', 'two VMs, each with two drives, each drive with a job')
    .epilog(EXIT_CODES);
}

/** What `run` (or `topology`) got that it does not take: an unknown option (with the closest known one) or a second job file. */
async function checkArgv(argv: Record<string, unknown>, options: Record<string, Options> = RUN_OPTIONS, command = 'run'): Promise<void> {
  const positionals = (argv._ as unknown[]).slice(1);
  if (positionals.length > 0)
    throw new InputError('job file', String(positionals[0]), 'one job file per run, before or after the options (which start with --)');
  for (const [key, value] of Object.entries(argv)) {
    if (key === '_' || key === '$0' || key === 'jobfile' || Object.hasOwn(options, key) || BUILTIN_OPTIONS.includes(key)) continue;
    const written = value === true ? '' : String(value);
    const { FIO_OPTION_TABLE, FIO_OPTION_ALIASES } = await import('./fio/options.js');
    if (Object.hasOwn(FIO_OPTION_TABLE, key) || Object.hasOwn(FIO_OPTION_ALIASES, key)) {
      throw new InputError(
        `--${key}`,
        written,
        `a fio option vmstack ${command} does not take on the command line: write ${key}${written ? `=${written}` : ''} in a job file (vmstack ${command} --help lists the ones it takes)`,
      );
    }
    const near = closest(key, Object.keys(options));
    throw new InputError(`--${key}`, written, `not an option of vmstack ${command}${near ? ` (did you mean --${near}?)` : ''}; see vmstack ${command} --help`);
  }
}

async function runHandler(argv: Record<string, unknown>): Promise<void> {
  await checkArgv(argv);
  const { runCommand } = await import('./commands/run.js');
  const args = runArgsOf(argv);
  const several = commandLineJobs(hideBin(process.argv));
  await runCommand(several ? { ...args, fio: several.global, commandLineJobs: several.jobs } : args);
}

/**
 * fio's jobs on the command line: each --name starts a job, and the fio
 * options after it belong to that job; the ones before the first --name are
 * global. Undefined with fewer than two --name (one job: the options as they are).
 */
export function commandLineJobs(
  tokens: readonly string[],
): { global: Record<string, string | boolean>; jobs: { name: string; options: Record<string, string | boolean> }[] } | undefined {
  if (tokens.filter((t) => t === '--name' || t.startsWith('--name=')).length < 2) return undefined;
  const global: Record<string, string | boolean> = {};
  const jobs: { name: string; options: Record<string, string | boolean> }[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (!t.startsWith('--')) continue;
    const eq = t.indexOf('=');
    const key = eq < 0 ? t.slice(2) : t.slice(2, eq);
    const takesValue = RUN_OPTIONS[key]?.type !== 'boolean';
    let value: string | boolean = true;
    if (eq >= 0) value = t.slice(eq + 1);
    else if (takesValue && i + 1 < tokens.length) value = tokens[++i];
    if (!Object.hasOwn(FIO_OPTIONS, key)) continue;
    if (key === 'name') jobs.push({ name: String(value), options: {} });
    else (jobs.length ? jobs[jobs.length - 1].options : global)[key] = value;
  }
  return { global, jobs };
}

/** `run`'s arguments from its parsed options, its defaults applied: `run` and every point of `scale` go through here. */
function runArgsOf(argv: Record<string, unknown>): RunArgs {
  const fio: Record<string, string | boolean> = {};
  for (const k of Object.keys(FIO_OPTIONS)) if (argv[k] !== undefined) fio[k] = argv[k] as string | boolean;
  const opt = <T>(k: string, dflt: T): T => (argv[k] === undefined ? dflt : (argv[k] as T));
  const args: RunArgs = {
    jobfile: argv.jobfile as string | undefined,
    fio,
    strategy: opt<DmaStrategy>('strategy', 'strict'),
    clock: opt<RunArgs['clock']>('clock', 'virtual'),
    profile: argv.profile as string | undefined,
    quantumNs: opt<number>('quantum', DEFAULT_QUANTUM_NS),
    driver: opt<ViommuDriverGeneration>('driver', 'v5.10'),
    vmm: opt<VmmPath>('vmm', 'crosvm-2021'),
    bufferContiguity: opt<UserBufferContiguity>('buffer_contiguity', 'none'),
    guestRam: opt<string>('guest-ram', '512m'),
    untrusted: opt<boolean>('untrusted', false),
    alwaysBounceLimit: argv['always-bounce-limit'] as string | undefined,
    alwaysBounceLimitAt: argv['always-bounce-limit-at'] as string | undefined,
    slotsPerClass: argv['slots-per-class'] as string | undefined,
    dmaEntryLimit: argv['dma-entry-limit'] as string | undefined,
    outputFormat: argv.minimal === true ? 'terse' : opt<string>('output-format', 'normal'),
    ...(argv.section === undefined ? {} : { sections: (argv.section as unknown[]).map(String) }),
    parseOnly: argv['parse-only'] === true,
    ...(argv.eta === undefined ? {} : { eta: argv.eta as RunArgs['eta'] }),
    ...(argv['status-interval'] === undefined ? {} : { statusInterval: String(argv['status-interval']) }),
    output: argv.output as string | undefined,
    html: argv.html as string | undefined,
    flamegraph: argv.flamegraph as string | undefined,
    flamegraphFormat: argv['flamegraph-format'] as FlamegraphFormat | undefined,
    topology: topologyArgs(argv),
    watchdogMs: argv['watchdog-ms'] as number | undefined,
    faults: argv['inject-fault'] as FaultSpec[] | undefined,
  };
  return args;
}

/** `vmstack topology`: the job options, the model options that shape the VMs, the topology options; a tree or the JSON. */
const TOPOLOGY_COMMAND_OPTIONS: Record<string, Options> = {
  ...FIO_OPTIONS,
  ...Object.fromEntries(['strategy', 'driver', 'guest-ram', 'untrusted'].map((k) => [k, MODEL_OPTIONS[k]])),
  ...TOPOLOGY_OPTIONS,
  'output-format': {
    ...choice('output-format', ['normal', 'json'] as const),
    describe: 'normal: a tree; json: the topology, as --topology FILE reads it (default: normal)',
  },
};

async function topologyHandler(argv: Record<string, unknown>): Promise<void> {
  await checkArgv(argv, TOPOLOGY_COMMAND_OPTIONS, 'topology');
  const fio: Record<string, string | boolean> = {};
  for (const k of Object.keys(FIO_OPTIONS)) if (argv[k] !== undefined) fio[k] = argv[k] as string | boolean;
  const { topologyCommand } = await import('./commands/topology.js');
  await topologyCommand({
    jobfile: argv.jobfile as string | undefined,
    fio,
    strategy: (argv.strategy as DmaStrategy | undefined) ?? 'strict',
    driver: (argv.driver as ViommuDriverGeneration | undefined) ?? 'v5.10',
    guestRam: (argv['guest-ram'] as string | undefined) ?? '512m',
    untrusted: (argv.untrusted as boolean | undefined) ?? false,
    topology: topologyArgs(argv) ?? {},
    outputFormat: (argv['output-format'] as 'normal' | 'json' | undefined) ?? 'normal',
  });
}

const EMIT_JOBS_DESCRIBE =
  'write one batch job per run to this new directory instead of running them: a GNU parallel command list, a Slurm array script, a Kubernetes Indexed Job; then vmstack merge DIR';

/** compare's own options; the model and topology options are run's (COMPARE_RUN_OPTIONS). */
const COMPARE_OWN_OPTIONS: Record<string, Options> = {
  experiment: {
    ...choice('experiment', ['reference', 'untrusted'] as const),
    describe:
      'reference: strict vs the pool in a VM at 4k-128k; untrusted: the internal drive as an untrusted device, no VM, swiotlb vs the pool (default: reference)',
  },
  size: { type: 'string', describe: 'bytes read per run, at least 64 × the block size (default: 32m)' },
  bs: { type: 'string', describe: 'block sizes: a subset of 4k,16k,64k,128k for reference; any for untrusted (default: all four; untrusted 64k)' },
  parallel: { type: 'string', describe: 'run the cells on this many piscina threads; the table does not change (default: 1)' },
  'emit-jobs': { type: 'string', describe: EMIT_JOBS_DESCRIBE },
};

/**
 * The options of run that shape the model or the topology, shared with run's
 * declarations. compare sets the strategy and always_bounce_limit per cell,
 * and a --topology file would fix the strategy: those are not compare's.
 */
const COMPARE_RUN_OPTIONS: Record<string, Options> = {
  ...Object.fromEntries(Object.entries(MODEL_OPTIONS).filter(([k]) => !['strategy', 'always-bounce-limit', 'always-bounce-limit-at'].includes(k))),
  profile: { type: 'string', describe: 'cost profile JSON, or all: every profile in profiles/, one table each (default: profiles/i5-10210U.json)' },
  ...Object.fromEntries(Object.entries(TOPOLOGY_OPTIONS).filter(([k]) => k !== 'topology')),
  'watchdog-ms': CHECK_OPTIONS['watchdog-ms'],
};

const COMPARE_OUTPUT_OPTIONS: Record<string, Options> = {
  'output-format': { ...choice('output-format', ['normal', 'json'] as const), describe: 'normal: the table; json: every run and ratio (default: normal)' },
  output: { type: 'string', describe: 'write to this file: <file>.partial, renamed when complete' },
  html: { type: 'string', describe: 'also write an offline HTML report with an SVG chart to this file' },
};

const COMPARE_OPTIONS = { ...COMPARE_OWN_OPTIONS, ...COMPARE_RUN_OPTIONS, ...COMPARE_OUTPUT_OPTIONS };

function compareBuilder(y: Argv): Argv {
  for (const [group, options] of [
    ['Compare:', COMPARE_OWN_OPTIONS],
    [MODEL_GROUP, COMPARE_RUN_OPTIONS],
    [OUTPUT_GROUP, COMPARE_OUTPUT_OPTIONS],
  ] as const) {
    for (const [name, o] of Object.entries(options)) y.option(name, { ...o, group });
  }
  return y
    .example('$0 compare', 'the reference experiment on the default profile')
    .example('$0 compare --profile all', 'one table per profile in profiles/')
    .example('$0 compare --bs 4k,16k --driver v6.x --buffer_contiguity huge', 'two rows, the batched driver, huge-page buffers')
    .example('$0 compare --experiment untrusted', 'the internal drive as an untrusted device, no VM: swiotlb vs the pool')
    .epilog(
      `fio --rw=read --direct=1 --ioengine=libaio --iodepth=64, one job, NVMe via VFIO behind virtio-iommu: strict mapping vs the bounce-buffer pool; reference ratios 2.8, 4.7, 3.6, 3.6.\n${EXIT_CODES}`,
    );
}

/** The run options given on a command line that shares run's declarations: option name → parsed value. */
function givenRunOptions(argv: Record<string, unknown>, options: Record<string, Options>): Record<string, unknown> {
  const given: Record<string, unknown> = {};
  for (const k of Object.keys(options)) if (argv[k] !== undefined) given[k] = argv[k];
  return given;
}

async function compareHandler(argv: Record<string, unknown>): Promise<void> {
  const positionals = (argv._ as unknown[]).slice(1);
  if (positionals.length > 0) throw new InputError('compare', String(positionals[0]), 'no positional arguments; see vmstack compare --help');
  for (const [key, value] of Object.entries(argv)) {
    if (key === '_' || key === '$0' || Object.hasOwn(COMPARE_OPTIONS, key) || BUILTIN_OPTIONS.includes(key)) continue;
    const near = key === 'strategy' ? undefined : closest(key, Object.keys(COMPARE_OPTIONS));
    const why =
      key === 'strategy' || key === 'always-bounce-limit' || key === 'always-bounce-limit-at'
        ? 'compare sets it per cell (strict and the pool, always_bounce_limit covering the block size)'
        : key === 'topology'
          ? 'a topology file fixes the strategy, which compare sets per cell; give the shape as --vms, --devices, … instead'
          : `not an option of vmstack compare${near ? ` (did you mean --${near}?)` : ''}`;
    throw new InputError(`--${key}`, value === true ? '' : String(value), `${why}; see vmstack compare --help`);
  }
  const { compareCommand } = await import('./commands/compare.js');
  const { runArgvWith } = await import('./scale/vary.js');
  const given = givenRunOptions(argv, COMPARE_RUN_OPTIONS);
  delete given.profile;
  await compareCommand({
    experiment: argv.experiment as string | undefined,
    profile: argv.profile as string | undefined,
    size: argv.size as string | undefined,
    bs: argv.bs as string | undefined,
    parallel: argv.parallel as string | undefined,
    given,
    runArgsWith: (base, overrides) => runArgsOf(runArgvWith(RUN_OPTIONS, base, overrides)),
    outputFormat: (argv['output-format'] as 'normal' | 'json' | undefined) ?? 'normal',
    output: argv.output as string | undefined,
    html: argv.html as string | undefined,
    emitJobs: argv['emit-jobs'] as string | undefined,
  });
}

/** sensitivity's own options; the model and topology options are compare's (run's). */
const SENSITIVITY_OWN_OPTIONS: Record<string, Options> = {
  keys: { type: 'string', describe: 'profile keys to vary, comma-separated (default: every key)' },
  factors: { type: 'string', describe: 'factors each value is multiplied by, one at a time (default: 0.5,2)' },
  bs: { type: 'string', describe: 'rows: a subset of the reference block sizes 4k,16k,64k,128k (default: all four)' },
  size: { type: 'string', describe: 'bytes read per run, at least 64 × the block size (default: 2 × 64 × the block size, per row)' },
  parallel: { type: 'string', describe: 'run the cells on this many piscina threads; the numbers do not change (default: 1)' },
  top: { type: 'string', describe: 'values listed per row in the text output, the ones that move the ratio most (default: 10)' },
};

const SENSITIVITY_RUN_OPTIONS: Record<string, Options> = {
  ...COMPARE_RUN_OPTIONS,
  profile: { type: 'string', describe: 'the cost profile JSON whose values are varied (default: profiles/i5-10210U.json)' },
};

const SENSITIVITY_OPTIONS = { ...SENSITIVITY_OWN_OPTIONS, ...SENSITIVITY_RUN_OPTIONS, ...COMPARE_OUTPUT_OPTIONS };

async function sensitivityHandler(argv: Record<string, unknown>): Promise<void> {
  const positionals = (argv._ as unknown[]).slice(1);
  if (positionals.length > 0) throw new InputError('sensitivity', String(positionals[0]), 'no positional arguments; see vmstack sensitivity --help');
  for (const [key, value] of Object.entries(argv)) {
    if (key === '_' || key === '$0' || Object.hasOwn(SENSITIVITY_OPTIONS, key) || BUILTIN_OPTIONS.includes(key)) continue;
    const near = closest(key, Object.keys(SENSITIVITY_OPTIONS));
    throw new InputError(
      `--${key}`,
      value === true ? '' : String(value),
      `not an option of vmstack sensitivity${near ? ` (did you mean --${near}?)` : ''}; see vmstack sensitivity --help`,
    );
  }
  const { sensitivityCommand } = await import('./commands/sensitivity.js');
  const { runArgvWith } = await import('./scale/vary.js');
  const given = givenRunOptions(argv, SENSITIVITY_RUN_OPTIONS);
  delete given.profile;
  const str = (k: string) => argv[k] as string | undefined;
  await sensitivityCommand({
    profile: str('profile'),
    keys: str('keys'),
    factors: str('factors'),
    bs: str('bs'),
    size: str('size'),
    parallel: str('parallel'),
    top: str('top'),
    given,
    runArgsWith: (base, overrides) => runArgsOf(runArgvWith(RUN_OPTIONS, base, overrides)),
    outputFormat: (str('output-format') as 'normal' | 'json' | undefined) ?? 'normal',
    output: str('output'),
    html: str('html'),
  });
}

/** scale's own options; every other option of run but --strategy sets the base run of every point. */
const SCALE_OWN_OPTIONS: Record<string, Options> = {
  vary: {
    type: 'string',
    describe: 'the run dimension to vary, DIM=v1,v2,…: jobs (fio numjobs), iodepth, bs, vms, vcpus, devices, viommus (default: jobs=1,2,4)',
  },
  jobs: { type: 'string', describe: 'job counts, one vCPU per job: --jobs 1,2,4 is --vary jobs=1,2,4' },
  strategies: { type: 'string', describe: 'the series: strategies to compare at every point (default: strict,lazy,bounce)' },
};

/** scale's fio defaults: many small runs of O_DIRECT random reads, which map every I/O (bs as run's, named so the report shows it). */
const SCALE_FIO_DEFAULTS: Record<string, string> = { rw: 'randread', bs: '4k', iodepth: '8', size: '4m', direct: '1' };

const SCALE_BASE_OPTIONS: Record<string, Options> = Object.fromEntries(
  Object.entries({ ...FIO_OPTIONS, ...MODEL_OPTIONS })
    .filter(([name]) => name !== 'strategy')
    .map(([name, o]) => {
      const dflt = SCALE_FIO_DEFAULTS[name];
      return [name, dflt === undefined ? o : { ...o, describe: String(o.describe).replace(/\(default: [^)]*\)/, `(default: ${dflt})`) }];
    }),
);

const SCALE_OUTPUT_OPTIONS: Record<string, Options> = {
  'output-format': { ...choice('output-format', ['normal', 'json'] as const), describe: 'normal: tables; json: every point (default: normal)' },
  output: { type: 'string', describe: 'write to this file: <file>.partial, renamed when complete' },
  html: { type: 'string', describe: 'also write an offline HTML report with SVG charts to this file' },
  'emit-jobs': { type: 'string', describe: EMIT_JOBS_DESCRIBE },
};

const SCALE_OPTIONS = { ...SCALE_OWN_OPTIONS, ...SCALE_BASE_OPTIONS, ...SCALE_OUTPUT_OPTIONS };

async function scaleHandler(argv: Record<string, unknown>): Promise<void> {
  const positionals = (argv._ as unknown[]).slice(1);
  if (positionals.length > 0) throw new InputError('scale', String(positionals[0]), 'no positional arguments; see vmstack scale --help');
  for (const [key, value] of Object.entries(argv)) {
    if (key === '_' || key === '$0' || Object.hasOwn(SCALE_OPTIONS, key) || BUILTIN_OPTIONS.includes(key)) continue;
    const near = key === 'strategy' ? 'strategies' : closest(key, Object.keys(SCALE_OPTIONS));
    throw new InputError(
      `--${key}`,
      value === true ? '' : String(value),
      `not an option of vmstack scale${near ? ` (did you mean --${near}?)` : ''}; see vmstack scale --help`,
    );
  }
  const { scaleCommand } = await import('./commands/scale.js');
  const { runArgvWith } = await import('./scale/vary.js');
  const str = (k: string) => argv[k] as string | undefined;
  const given: Record<string, unknown> = {};
  for (const k of Object.keys(SCALE_BASE_OPTIONS)) if (argv[k] !== undefined) given[k] = argv[k];
  await scaleCommand({
    vary: str('vary'),
    jobs: str('jobs'),
    strategies: str('strategies'),
    given,
    fioDefaults: SCALE_FIO_DEFAULTS,
    runArgsWith: (overrides) => runArgsOf(runArgvWith(RUN_OPTIONS, given, overrides)),
    outputFormat: (str('output-format') as 'normal' | 'json' | undefined) ?? 'normal',
    output: str('output'),
    html: str('html'),
    emitJobs: str('emit-jobs'),
  });
}

const SWEEP_OPTIONS: Record<string, Options> = {
  strategies: { type: 'string', describe: 'strategies to run (default: direct,strict,lazy,bounce)' },
  bs: { type: 'string', describe: 'block sizes (default: 4k,16k,64k,128k)' },
  size: { type: 'string', describe: 'bytes read per run (default: 16m)' },
  iodepth: { type: 'string', describe: 'fio iodepth (default: 64)' },
  parallel: { type: 'string', describe: 'run the topologies on this many piscina threads; the numbers do not change (default: 1)' },
  profile: { type: 'string', describe: 'cost profile JSON (default: profiles/i5-10210U.json)' },
  'output-format': { ...choice('output-format', ['normal', 'json'] as const), describe: 'normal: a table; json: every cell (default: normal)' },
  output: { type: 'string', describe: 'write to this file: <file>.partial, renamed when complete' },
  html: { type: 'string', describe: 'also write an offline HTML report with an SVG chart to this file' },
  'emit-jobs': { type: 'string', describe: EMIT_JOBS_DESCRIBE },
};

async function sweepHandler(argv: Record<string, unknown>): Promise<void> {
  const positionals = (argv._ as unknown[]).slice(1);
  if (positionals.length > 0) throw new InputError('sweep', String(positionals[0]), 'no positional arguments; see vmstack sweep --help');
  for (const [key, value] of Object.entries(argv)) {
    if (key === '_' || key === '$0' || Object.hasOwn(SWEEP_OPTIONS, key) || BUILTIN_OPTIONS.includes(key)) continue;
    const near = closest(key, Object.keys(SWEEP_OPTIONS));
    throw new InputError(
      `--${key}`,
      value === true ? '' : String(value),
      `not an option of vmstack sweep${near ? ` (did you mean --${near}?)` : ''}; see vmstack sweep --help`,
    );
  }
  const { sweepCommand } = await import('./commands/sweep.js');
  const str = (k: string) => argv[k] as string | undefined;
  await sweepCommand({
    strategies: str('strategies'),
    bs: str('bs'),
    size: str('size'),
    iodepth: str('iodepth'),
    parallel: str('parallel'),
    profile: str('profile'),
    outputFormat: (str('output-format') as 'normal' | 'json' | undefined) ?? 'normal',
    output: str('output'),
    html: str('html'),
    emitJobs: str('emit-jobs'),
  });
}

/** `vmstack job DIR`: one run of a job directory; `vmstack merge DIR`: their report. */
const JOB_OPTIONS: Record<string, Options> = {
  index: { type: 'string', describe: 'the run to do, from 0 (default: SLURM_ARRAY_TASK_ID, else JOB_COMPLETION_INDEX)' },
};
const MERGE_OPTIONS: Record<string, Options> = {
  'output-format': { ...choice('output-format', ['normal', 'json'] as const), describe: "normal: the command's table; json: its JSON (default: normal)" },
  output: { type: 'string', describe: 'write to this file: <file>.partial, renamed when complete' },
  html: { type: 'string', describe: "also write the command's offline HTML report to this file" },
};

/** Unknown options and extra words of a command that takes one directory. */
function checkDirArgv(argv: Record<string, unknown>, options: Record<string, Options>, command: string): string {
  const positionals = (argv._ as unknown[]).slice(1);
  if (positionals.length > 0) throw new InputError(command, String(positionals[0]), `one directory; see vmstack ${command} --help`);
  for (const [key, value] of Object.entries(argv)) {
    if (key === '_' || key === '$0' || key === 'dir' || Object.hasOwn(options, key) || BUILTIN_OPTIONS.includes(key)) continue;
    const near = closest(key, Object.keys(options));
    throw new InputError(
      `--${key}`,
      value === true ? '' : String(value),
      `not an option of vmstack ${command}${near ? ` (did you mean --${near}?)` : ''}; see vmstack ${command} --help`,
    );
  }
  if (typeof argv.dir !== 'string' || argv.dir === '')
    throw new InputError(command, argv.dir as string | undefined, `a directory written by --emit-jobs, e.g. vmstack ${command} jobs/`);
  return argv.dir;
}

async function jobHandler(argv: Record<string, unknown>): Promise<void> {
  const dir = checkDirArgv(argv, JOB_OPTIONS, 'job');
  const { jobCommand } = await import('./commands/merge.js');
  await jobCommand({ dir, index: argv.index as string | undefined });
}

async function mergeHandler(argv: Record<string, unknown>): Promise<void> {
  const dir = checkDirArgv(argv, MERGE_OPTIONS, 'merge');
  const { mergeCommand } = await import('./commands/merge.js');
  await mergeCommand({
    dir,
    outputFormat: (argv['output-format'] as 'normal' | 'json' | undefined) ?? 'normal',
    output: argv.output as string | undefined,
    html: argv.html as string | undefined,
  });
}

/** `vmstack attack`: its own options, the fio options that shape its workload, and a few model options. */
const ATTACK_OWN_OPTIONS: Record<string, Options> = {
  strategies: { type: 'string', describe: 'strategies, one row (or two) each (default: direct,strict,lazy,bounce)' },
  trust: { type: 'string', describe: 'trusted, untrusted or both: the device as the guest treats it, a row each (default: trusted,untrusted)' },
  delays: {
    type: 'string',
    describe: 'model times after an unmap returned at which the device tries the buffer again, e.g. 0ns,1us,10ms (default: 0ns … 10ms, 12 steps)',
  },
  'sample-every': { type: 'string', describe: 'try every n-th unmapped buffer, and every n-th running command’s neighbours (default: 4)' },
  'secret-pages': { type: 'string', describe: 'pages of planted secret bytes the guest holds and never gives the device (default: 64)' },
  'scan-pages': { type: 'string', describe: 'IOVA pages from 0 the device tries once, mid-run (default: every page of guest RAM)' },
  'neighbour-bytes': { type: 'string', describe: 'bytes tried just before and after a running command’s buffer (default: 64)' },
};

const ATTACK_FIO_OPTIONS: Record<string, Options> = {
  rw: { type: 'string', describe: 'the workload: read, write, randread, randwrite, rw, randrw (default: randrw)' },
  bs: { type: 'string', describe: 'block size (default: 4k)' },
  iodepth: { type: 'string', describe: 'I/Os in flight (default: 8)' },
  size: { type: 'string', describe: 'the region each row reads and writes (default: 2m)' },
  verify: { type: 'string', describe: '0, crc32c or md5: the attacker’s writes must not disturb the data (default: crc32c)' },
};

const ATTACK_OPTIONS: Record<string, Options> = {
  ...ATTACK_OWN_OPTIONS,
  ...ATTACK_FIO_OPTIONS,
  driver: MODEL_OPTIONS.driver,
  vmm: MODEL_OPTIONS.vmm,
  platform: TOPOLOGY_OPTIONS.platform,
  profile: MODEL_OPTIONS.profile,
  'guest-ram': { type: 'string', describe: 'guest RAM, which the never-mapped pass covers (default: 128m)' },
  'output-format': { ...choice('output-format', ['normal', 'json'] as const), describe: 'normal: the exposure table; json: every row (default: normal)' },
  output: OUTPUT_OPTIONS.output,
  html: { type: 'string', describe: 'also write the exposure table as an offline HTML report to this file' },
};

async function attackHandler(argv: Record<string, unknown>): Promise<void> {
  await checkArgv(argv, ATTACK_OPTIONS, 'attack');
  const str = (k: string) => argv[k] as string | undefined;
  const fio: Record<string, string> = {};
  for (const k of Object.keys(ATTACK_FIO_OPTIONS)) if (argv[k] !== undefined) fio[k] = String(argv[k]);
  const { attackCommand } = await import('./commands/attack.js');
  await attackCommand({
    strategies: str('strategies'),
    trust: str('trust'),
    fio,
    driver: (argv.driver as ViommuDriverGeneration | undefined) ?? 'v5.10',
    vmm: argv.vmm as VmmPath | undefined,
    platform: str('platform'),
    profile: str('profile'),
    guestRam: str('guest-ram'),
    delays: str('delays'),
    sampleEvery: str('sample-every'),
    secretPages: str('secret-pages'),
    scanPages: str('scan-pages'),
    neighbourBytes: str('neighbour-bytes'),
    outputFormat: (str('output-format') as 'normal' | 'json' | undefined) ?? 'normal',
    output: str('output'),
    html: str('html'),
  });
}

/** Every command: name, builder, and a handler that imports its heavy code lazily. */
const COMMANDS: CommandModule[] = [
  {
    command: 'run [jobfile]',
    describe: 'run fio jobs on the modelled VM and print fio output, lock_stat and a profile',
    builder: runBuilder,
    handler: (argv) => runHandler(argv),
  },
  {
    command: 'topology [jobfile]',
    describe: 'print the topology a run would have (VMs, vCPUs and their jobs, virtio-iommus, devices, IOMMU units, worker threads), as a tree or JSON',
    builder: (y: Argv) => {
      y.positional('jobfile', { type: 'string', describe: 'fio job file; without one, the command line is the job' });
      for (const [name, o] of Object.entries(TOPOLOGY_COMMAND_OPTIONS)) y.option(name, o);
      return y
        .example('$0 topology --vms 2', 'two VMs, each running the job on its own drive')
        .example('$0 topology --vms 2 --output-format json > t.json && $0 run --topology t.json', 'the same shape from a file')
        .epilog(EXIT_CODES);
    },
    handler: (argv) => topologyHandler(argv),
  },
  {
    command: 'scale',
    describe: 'vary one run dimension (jobs, iodepth, bs, VMs, …): throughput, clat percentiles and lock wait per lock class at each point, per strategy',
    builder: (y: Argv) => {
      for (const [group, options] of [
        ['Scale:', SCALE_OWN_OPTIONS],
        ['Base run (any option of vmstack run but --strategy):', SCALE_BASE_OPTIONS],
        [OUTPUT_GROUP, SCALE_OUTPUT_OPTIONS],
      ] as const) {
        for (const [name, o] of Object.entries(options)) y.option(name, { ...o, group });
      }
      return y
        .example('$0 scale --jobs 1,2,4 --strategies strict,bounce --html scale.html', 'throughput and lock wait with 1, 2 and 4 jobs')
        .example('$0 scale --vary iodepth=1,4,16 --numjobs 2 --bs 16k', 'two jobs, deeper queues')
        .epilog(EXIT_CODES);
    },
    handler: (argv) => scaleHandler(argv),
  },
  {
    command: 'sweep',
    describe: 'throughput against block size for every strategy (direct, strict, lazy, bounce)',
    builder: (y: Argv) => {
      for (const [name, o] of Object.entries(SWEEP_OPTIONS)) y.option(name, o);
      return y.example('$0 sweep --bs 4k,64k --html sweep.html', 'two block sizes, four strategies, a chart').epilog(EXIT_CODES);
    },
    handler: (argv) => sweepHandler(argv),
  },
  {
    command: 'attack',
    describe: 'the device as an attacker: what it can still reach under each strategy (after unmap, read-only, never mapped, neighbours), as an exposure table',
    builder: (y: Argv) => {
      for (const [group, options] of [
        ['Attack:', ATTACK_OWN_OPTIONS],
        ['Workload (fio options):', ATTACK_FIO_OPTIONS],
        [
          MODEL_GROUP,
          {
            driver: ATTACK_OPTIONS.driver,
            vmm: ATTACK_OPTIONS.vmm,
            platform: ATTACK_OPTIONS.platform,
            profile: ATTACK_OPTIONS.profile,
            'guest-ram': ATTACK_OPTIONS['guest-ram'],
          },
        ],
        [OUTPUT_GROUP, { 'output-format': ATTACK_OPTIONS['output-format'], output: ATTACK_OPTIONS.output, html: ATTACK_OPTIONS.html }],
      ] as const) {
        for (const [name, o] of Object.entries(options)) y.option(name, { ...o, group });
      }
      return y
        .example('$0 attack', 'every strategy, trusted and untrusted: the exposure table')
        .example('$0 attack --strategies strict,lazy --trust trusted --delays 0ns,1us,10us,100us --output-format json', 'the stale window of lazy, as JSON')
        .epilog(EXIT_CODES);
    },
    handler: (argv) => attackHandler(argv),
  },
  {
    command: 'sensitivity',
    describe: 'each profile value × 0.5 and × 2, one at a time: which values move each ratio of the reference experiment most (text, JSON, tornado charts)',
    builder: (y: Argv) => {
      for (const [group, options] of [
        ['Sensitivity:', SENSITIVITY_OWN_OPTIONS],
        [MODEL_GROUP, SENSITIVITY_RUN_OPTIONS],
        [OUTPUT_GROUP, COMPARE_OUTPUT_OPTIONS],
      ] as const) {
        for (const [name, o] of Object.entries(options)) y.option(name, { ...o, group });
      }
      return y
        .example('$0 sensitivity --bs 16k,64k --parallel 2 --html sens.html', 'two rows, tornado charts')
        .example('$0 sensitivity --keys nvmeMediaReadBytesPerNs,hostThreadWakeupNs,memcpyBytesPerNs', 'three values only')
        .epilog(EXIT_CODES);
    },
    handler: (argv) => sensitivityHandler(argv),
  },
  {
    command: 'compare',
    describe: 'the reference experiment: strict vs the bounce-buffer pool at 4k, 16k, 64k, 128k, against the published ratios',
    builder: compareBuilder,
    handler: (argv) => compareHandler(argv),
  },
  {
    command: 'job <dir>',
    describe: 'one run of a directory written by compare, sweep or scale --emit-jobs (a batch job runs this); its result goes to DIR/results',
    builder: (y: Argv) => {
      y.positional('dir', { type: 'string', describe: 'the job directory' });
      for (const [name, o] of Object.entries(JOB_OPTIONS)) y.option(name, o);
      return y.example('$0 job jobs/ --index 3', 'run 4 of the directory').epilog(EXIT_CODES);
    },
    handler: (argv) => jobHandler(argv),
  },
  {
    command: 'merge <dir>',
    describe: "combine the results of a directory's runs into the report the command gives locally (table, JSON, HTML)",
    builder: (y: Argv) => {
      y.positional('dir', { type: 'string', describe: 'the job directory' });
      for (const [name, o] of Object.entries(MERGE_OPTIONS)) y.option(name, o);
      return y.example('$0 merge jobs/ --output-format json --html report.html', 'the JSON report and an HTML page').epilog(EXIT_CODES);
    },
    handler: (argv) => mergeHandler(argv),
  },
];
const COMMAND_NAMES = COMMANDS.map((c) => String(c.command).split(' ')[0]);

/** Options that take no value: a word after them is not theirs. */
const FLAG_OPTIONS = new Set(['--help', '--version', '--time_based', '--untrusted']);

/**
 * `--option -5ms=64k`: yargs reads a value that starts with `-` and is not a
 * number as short options (`-5`, `-m`, …). Joined as `--option=-5ms=64k`, it
 * reaches the option's own check, which names the option and the value.
 */
function joinDashValues(args: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    const next = args[i + 1];
    if (/^--[^=]+$/.test(arg) && !FLAG_OPTIONS.has(arg) && next !== undefined && /^-[\d.]/.test(next)) {
      out.push(`${arg}=${next}`);
      i++;
    } else out.push(arg);
  }
  return out;
}

async function main(): Promise<void> {
  const args = joinDashValues(hideBin(process.argv));
  const argv = await yargs(args)
    .scriptName('vmstack')
    .locale('en')
    .usage(
      '$0 <command> [options]\n\nA model of a virtualized NVMe I/O stack (guest kernel → virtio-iommu → VMM → VFIO → NVMe), each component a worker thread.',
    )
    .parserConfiguration({
      'camel-case-expansion': false,
      'dot-notation': false,
      'duplicate-arguments-array': false,
      'parse-numbers': false,
      'parse-positional-numbers': false,
    })
    .command(COMMANDS)
    .epilog(`vmstack run --help lists the run options.\n${EXIT_CODES}`)
    .fail((msg, err) => {
      if (coerceError) throw coerceError;
      if (err) throw err;
      throw new InputError('command line', args.join(' '), msg.replace(/\s+/g, ' ').trim());
    })
    .help()
    .alias('h', 'help')
    .version(cliVersion())
    .wrap(null)
    .parseAsync();
  const command = argv._[0];
  if (command === undefined || !COMMAND_NAMES.includes(String(command))) {
    throw new InputError(
      'command',
      command === undefined ? undefined : String(command),
      `${COMMAND_NAMES.join(' or ')}, e.g. vmstack run --rw randread --bs 4k --size 64m (see vmstack --help)`,
    );
  }
}

function cliVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** The candidate within a small edit distance of `name`, if any ("did you mean"). */
function closest(name: string, candidates: readonly string[]): string | undefined {
  const norm = (x: string) => x.toLowerCase().replace(/[-_]/g, '');
  return closestName(name, candidates, Math.max(2, Math.floor(name.length / 3)), (a, b) =>
    norm(a) === norm(b) ? 0 : editDistance(a.toLowerCase(), b.toLowerCase()),
  );
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ');
}

// `vmstack run … | head`: a closed pipe ends the output, not the run with a stack trace
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

// compare, sweep and scale run many topologies: their workers stay between runs, and
// exit by themselves before the process does (see runWorkers)
setWorkerReuse(true);
main()
  .then(() => releaseIdleWorkers())
  .catch(async (e: unknown) => {
    await releaseIdleWorkers();
    if (e instanceof InputError) {
      process.stderr.write(`vmstack: ${oneLine(e.message)}\n`);
      process.exit(2);
    }
    if (e instanceof WorkerFailure) {
      process.stderr.write(`vmstack: ${e.message}\n`);
      process.exit(1);
    }
    process.stderr.write(`vmstack: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(1);
  });
