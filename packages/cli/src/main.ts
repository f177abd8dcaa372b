#!/usr/bin/env node
/**
 * vmstack command line. `vmstack run [job-file] [options…]` runs fio jobs on
 * the modelled stack with real workers and prints fio-style output.
 *
 * Exit codes: 0 the run completed; 1 it failed (a worker crashed or stalled:
 * one line naming the worker) or an internal error (with its stack);
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
import yargs, { type Argv, type CommandModule, type Options } from 'yargs';
import { hideBin } from 'yargs/helpers';
import type { RunArgs } from './commands/run.js';
import { parseFault, parseWatchdogMs } from './faults.js';

const STRATEGIES = ['direct', 'strict', 'lazy', 'bounce'] as const satisfies readonly DmaStrategy[];
const CLOCKS = ['virtual', 'wall'] as const;
const DRIVERS = ['v5.10', 'v6.x'] as const satisfies readonly ViommuDriverGeneration[];
const CONTIGUITIES = ['none', 'huge'] as const satisfies readonly UserBufferContiguity[];
const OUTPUT_FORMATS = ['normal', 'json', 'json+'] as const;

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

const EXIT_CODES = 'Exit codes: 0 done; 1 the run failed (a worker crashed or stalled); 2 bad input (one line on stderr, nothing started).';

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
  verify: { type: 'string', describe: '0, crc32c or md5' },
  do_verify: { type: 'string', describe: '0 or 1: read back and check after writing (default: 1)' },
  randseed: { type: 'string', describe: 'seed of random offsets (default: 0x89)' },
  direct: { type: 'string', describe: '0 (default, as fio: buffered through the guest page cache) or 1 (O_DIRECT)' },
  ioengine: { type: 'string', describe: 'libaio only' },
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
};

const OUTPUT_OPTIONS: Record<string, Options> = {
  'output-format': {
    ...choice('output-format', OUTPUT_FORMATS),
    describe: "normal: fio's summary + the model's tables; json(+): fio JSON + a vmstack key (default: normal)",
  },
  output: { type: 'string', describe: 'write to this file: <file>.partial, renamed when the run completes' },
  html: { type: 'string', describe: 'also write an offline HTML report (the topology, the jobs, the locks) to this file' },
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
      'ROLE:MODE@TIME, repeatable: the worker(s) ROLE (a role, * and ** patterns) throw, exit, stall or park at model time TIME, e.g. vm0/vcpu0:stall@50us',
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
  await runCommand(runArgsOf(argv));
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
    bufferContiguity: opt<UserBufferContiguity>('buffer_contiguity', 'none'),
    guestRam: opt<string>('guest-ram', '512m'),
    untrusted: opt<boolean>('untrusted', false),
    alwaysBounceLimit: argv['always-bounce-limit'] as string | undefined,
    alwaysBounceLimitAt: argv['always-bounce-limit-at'] as string | undefined,
    slotsPerClass: argv['slots-per-class'] as string | undefined,
    outputFormat: opt<RunArgs['outputFormat']>('output-format', 'normal'),
    output: argv.output as string | undefined,
    html: argv.html as string | undefined,
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

const COMPARE_OPTIONS: Record<string, Options> = {
  profile: { type: 'string', describe: 'cost profile JSON (default: profiles/i5-10210U.json)' },
  size: { type: 'string', describe: 'bytes read per run, at least 64 × the block size (default: 32m)' },
  bs: { type: 'string', describe: 'a subset of the reference block sizes, e.g. 4k,128k (default: 4k,16k,64k,128k)' },
  parallel: { type: 'string', describe: 'run the topologies on this many piscina threads; the table does not change (default: 1)' },
  'output-format': { ...choice('output-format', ['normal', 'json'] as const), describe: 'normal: the table; json: every run and ratio (default: normal)' },
  output: { type: 'string', describe: 'write to this file: <file>.partial, renamed when complete' },
  html: { type: 'string', describe: 'also write an offline HTML report with an SVG chart to this file' },
};

function compareBuilder(y: Argv): Argv {
  for (const [name, o] of Object.entries(COMPARE_OPTIONS)) y.option(name, o);
  return y
    .example('$0 compare', 'the reference experiment on the default profile')
    .example('$0 compare --bs 4k,16k --output-format json --output cmp.json', 'two rows, as JSON')
    .epilog(
      `fio --rw=read --direct=1 --ioengine=libaio --iodepth=64, one job, NVMe via VFIO behind virtio-iommu: strict mapping vs the bounce-buffer pool; reference ratios 2.8, 4.7, 3.6, 3.6.\n${EXIT_CODES}`,
    );
}

async function compareHandler(argv: Record<string, unknown>): Promise<void> {
  const positionals = (argv._ as unknown[]).slice(1);
  if (positionals.length > 0) throw new InputError('compare', String(positionals[0]), 'no positional arguments; see vmstack compare --help');
  for (const [key, value] of Object.entries(argv)) {
    if (key === '_' || key === '$0' || Object.hasOwn(COMPARE_OPTIONS, key) || BUILTIN_OPTIONS.includes(key)) continue;
    const near = closest(key, Object.keys(COMPARE_OPTIONS));
    throw new InputError(
      `--${key}`,
      value === true ? '' : String(value),
      `not an option of vmstack compare${near ? ` (did you mean --${near}?)` : ''}; see vmstack compare --help`,
    );
  }
  const { compareCommand } = await import('./commands/compare.js');
  await compareCommand({
    profile: argv.profile as string | undefined,
    size: argv.size as string | undefined,
    bs: argv.bs as string | undefined,
    parallel: argv.parallel as string | undefined,
    outputFormat: (argv['output-format'] as 'normal' | 'json' | undefined) ?? 'normal',
    output: argv.output as string | undefined,
    html: argv.html as string | undefined,
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
    command: 'compare',
    describe: 'the reference experiment: strict vs the bounce-buffer pool at 4k, 16k, 64k, 128k, against the published ratios',
    builder: compareBuilder,
    handler: (argv) => compareHandler(argv),
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
