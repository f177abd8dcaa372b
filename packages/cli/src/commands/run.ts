/**
 * `vmstack run`: parse the jobs, check everything the user gave against what
 * the model can run — BEFORE any worker starts, so bad input is one line and
 * exit 2, never a hang or a worker crash — then run each barrier group on the
 * stack and print (or write) fio-style output.
 *
 * Checks at the door, in order: the jobs (fio/options.ts), a --topology
 * FILE, the cost profile, --quantum, --guest-ram, the bounce options, the
 * topology (jobs running at once ≤ the worker slots; guest RAM ≥ what
 * runStack lays out plus the fio I/O buffers; the shape options, built by
 * topology/build.ts), the --output and --html paths. Without topology options
 * the run has the default topology, which runStack builds itself.
 *
 * `--output <file>`: the text goes to `<file>.partial`, renamed to `<file>`
 * only when complete, so a run that fails or bad input (exit 2) leaves an
 * older `<file>` as it was (see commands/output.ts).
 */

import { totalmem } from 'node:os';
import {
  BouncePool,
  type DmaStrategy,
  FIO_SYNC_DEPTH_NOTE,
  type FioJobSpec,
  fioJobWrites,
  fioSyncEngine,
  STATUS_DUMPS_MAX,
  type UserBufferContiguity,
  type ViommuDriverGeneration,
} from '@vmstack/guest-kernel';
import { type CallTreeNode, type ClockMode, DEFAULT_PROFILE_PATH, type FaultSpec, InputError, loadProfile, MAX_WORKERS, mergeCallTrees } from '@vmstack/shm';
import type { VmmPath } from '@vmstack/vmm';
import { DEFAULT_FIO_KEYWORDS, type FioKeywords, type JobFile, readJobFile } from '../fio/jobfile.js';
import { jobsFromCommandLine, jobsFromJobFile } from '../fio/options.js';
import { parseCount, parseSizeBytes, parseTimeNs } from '../fio/sizes.js';
import { applyGroupReporting } from '../report/fio-group.js';
import { formatFioJson } from '../report/fio-json.js';
import { fioLogFiles } from '../report/fio-logs.js';
import { formatFioNormal, formatFioNormalHeader } from '../report/fio-normal.js';
import { FioStatusLine } from '../report/fio-status.js';
import { formatFioTerse } from '../report/fio-terse.js';
import { type CallTreeRoot, type FlamegraphFormat, formatFlamegraph } from '../report/flamegraph.js';
import { type FioRun, type FioStatusRun, type JobResult, notStartedJob, type RunResult } from '../report/result.js';
import { formatRunHtml } from '../report/run-html.js';
import { formatVmstackReport } from '../report/tables.js';
import { fioBufferBytes, planGuestLayout } from '../stack/guest-layout.js';
import { type JobStatus, runStack, type StackOptions } from '../stack/run-stack.js';
import { type BuiltTopology, jobsByDevice, resolveTopology, type TopologyArgs } from '../topology/build.js';
import { guestLayoutRequest, NON_VCPU_WORKERS } from '../topology/plan.js';
import { checkOutputPath, emitOutput, writeComplete } from './output.js';

export interface RunArgs {
  jobfile?: string;
  /** fio options from the command line, as written */
  fio: Record<string, string | boolean>;
  strategy: DmaStrategy;
  clock: ClockMode;
  profile?: string;
  quantumNs: number;
  driver: ViommuDriverGeneration;
  /** how the VMM's virtio-iommu device reaches VFIO; undefined: crosvm-2021 */
  vmm?: VmmPath;
  bufferContiguity: UserBufferContiguity;
  /** as written, e.g. "512m" */
  guestRam: string;
  untrusted: boolean;
  /** as written, e.g. "4k"; undefined: the pool's default */
  alwaysBounceLimit?: string;
  /** `5ms=128k,20ms=4k`: sysfs writes to always_bounce_limit at model times */
  alwaysBounceLimitAt?: string;
  /** as written; undefined: the pool's default */
  slotsPerClass?: string;
  /** as written; undefined: vfio_iommu_type1's default (65535) */
  dmaEntryLimit?: string;
  /** fio's --output-format: normal, json, json+ or terse, or several joined by commas (e.g. json,normal) */
  outputFormat: string;
  /** several --name on the command line: one job each, with the fio options written after its --name (`fio` holds the ones before) */
  commandLineJobs?: readonly { name: string; options: Record<string, string | boolean> }[];
  /** fio's --section: run only these job sections of the file ([global] sections apply as ever) */
  sections?: readonly string[];
  /** fio's --parse-only: check the jobs and every option, run nothing, print nothing */
  parseOnly?: boolean;
  /** fio's --eta: the status line while jobs run; auto (default): when stdout is a terminal and takes the normal output */
  eta?: 'auto' | 'always' | 'never';
  /** fio's --status-interval, as written (a fio time, bare number: seconds), in model time: a full status dump every interval */
  statusInterval?: string;
  output?: string;
  /** an HTML run report (the topology, the jobs, the locks) to this file */
  html?: string;
  /** the profile's call paths as a flame graph to this file (report/flamegraph.ts) */
  flamegraph?: string;
  /** its format; undefined: folded */
  flamegraphFormat?: FlamegraphFormat;
  /** --vms, --devices, … or --topology FILE (topology/build.ts); undefined: the default shape */
  topology?: TopologyArgs;
  /** real ms without progress before the run fails (shm watchdog.ts); undefined: the default, 0: none */
  watchdogMs?: number;
  /** --inject-fault: faults to inject into the workers (shm fault.ts) */
  faults?: readonly FaultSpec[];
}

/** Jobs of one barrier group run at once, one vCPU worker each, beside the vmm, host-vfio and device workers. */
export const MAX_JOBS_AT_ONCE = MAX_WORKERS - NON_VCPU_WORKERS;

/** What `run` runs, from its arguments: everything checked, nothing started. */
export interface RunOptions {
  /** one per barrier group, in order; a group's run adds what the one before left on the drive (`carry`) */
  groups: StackOptions[];
  /** the cost profile's file, which an output must not replace */
  profilePath: string;
  /** lines to print before the run starts (overlapping verify regions, ignored fio options) */
  warnings: string[];
  /** each group's topology and job list (the default shape written out when no topology option was given), for the HTML report */
  shapes: BuiltTopology[];
}

/**
 * The arguments → run options step, shared by `run` and every point of
 * `scale`: parses the jobs, loads the profile and applies every check at the
 * door (see the header) except the --output path.
 */
export function runOptionsOf(args: RunArgs): RunOptions {
  // fio's defaults. A job without a size fails as in fio, once every other option has been checked: the jobs are read
  // with a stand-in size first, so a wrong option elsewhere is the one reported
  const fioDefaults = { rw: 'read', bs: '4k', iodepth: '1' };
  // fio's $mb_memory and $ncpus are the guest's: its RAM, and --vcpus (else one vCPU per job)
  const keywords = { ...DEFAULT_FIO_KEYWORDS, mb_memory: Math.floor(parseGuestRam(args.guestRam) / 2 ** 20), ncpus: Number(args.topology?.vcpus ?? 1) || 1 };
  const readJobs = (defaults: Record<string, string>) =>
    args.jobfile
      ? jobsFromJobFile(jobFileSections(args.jobfile, args.sections, keywords), { overrides: args.fio, defaults })
      : args.commandLineJobs
        ? jobsFromJobFile(commandLineJobFile(args.fio, args.commandLineJobs), { defaults })
        : jobsFromCommandLine(args.fio, defaults, keywords);
  const parsed = readJobs({ ...fioDefaults, size: '64m' });
  const groups = [...new Set(parsed.jobs.map((j) => j.groupId))].sort((x, y) => x - y);
  const jobsOf = (g: number) => parsed.jobs.filter((j) => j.groupId === g);
  // --topology FILE gives the strategy, driver, RAM and untrusted of its VMs: the checks below read them from its first VM
  const fromFile = args.topology?.file === undefined ? undefined : topologyFileOf(args.topology, groups.length, parsed.jobs);
  const a = fromFile ? { ...args, ...modelOptionsOf(fromFile) } : args;
  const profilePath = a.profile ?? DEFAULT_PROFILE_PATH;
  const profile = loadProfile(profilePath);
  if (!Number.isSafeInteger(a.quantumNs) || a.quantumNs < 0) throw new InputError('--quantum', a.quantumNs, 'a whole number of model ns ≥ 0');
  const guestRamBytes = parseGuestRam(a.guestRam);
  const alwaysBounceLimitBytes = a.alwaysBounceLimit === undefined ? undefined : parseAlwaysBounceLimit('--always-bounce-limit', a.alwaysBounceLimit);
  const slotsPerClass =
    a.slotsPerClass === undefined ? undefined : parseCount('--slots-per-class', a.slotsPerClass, 'a whole number of slots per size class, e.g. 1024');
  checkBounceOptions(a, alwaysBounceLimitBytes, slotsPerClass, profile.bounceEvictionPeriodNs);
  const vfioDmaEntryLimit = a.dmaEntryLimit === undefined ? undefined : parseDmaEntryLimit(a.dmaEntryLimit);
  const alwaysBounceLimitSchedule = a.alwaysBounceLimitAt === undefined ? undefined : parseLimitSchedule(a.alwaysBounceLimitAt);
  if (alwaysBounceLimitSchedule && a.strategy !== 'bounce')
    throw new InputError('--always-bounce-limit-at', a.alwaysBounceLimitAt, `only with --strategy bounce (the pool's knob; --strategy is ${a.strategy})`);

  // each group's shape and job list; without topology options the default one, which runStack builds itself
  const vmOptions = { strategy: a.strategy, driverGeneration: a.driver, guestRamBytes, untrusted: a.untrusted };
  const shapes: BuiltTopology[] = [];
  const warnings: string[] = [];
  for (const g of groups) {
    checkJobsAtOnce(a, jobsOf(g), groups.length);
    checkGuestRam(a, jobsOf(g), guestRamBytes);
    shapes.push(fromFile ?? resolveTopology(a.topology ?? {}, jobsOf(g), vmOptions));
    for (const onOneDrive of jobsByDevice(shapes[shapes.length - 1])) {
      const overlap = overlappingVerifyWarning(onOneDrive);
      if (overlap) warnings.push(`warning: ${overlap}`);
    }
  }
  if (parsed.ignoredOptions.length > 0) warnings.push(`ignoring options that do not change the model: ${parsed.ignoredOptions.join(', ')}`);
  // fio's note when it caps a synchronous engine's depth (psync, pvsync) at 1
  if (parsed.jobs.some((j) => fioSyncEngine(j.ioengine) && j.iodepth > 1)) warnings.push(FIO_SYNC_DEPTH_NOTE);
  // every job has a size of its own (or its drive's), as fio requires: "<job>: you need to specify size="
  readJobs(fioDefaults);
  return {
    groups: groups.map((g, gi) => ({
      ...(a.topology ? { jobs: shapes[gi].jobs, topology: shapes[gi].topology } : { jobs: jobsOf(g) }),
      jobOptions: parsed.jobOptions,
      globalOptions: parsed.globalOptions,
      strategy: a.strategy,
      clock: a.clock,
      profile,
      quantumNs: a.quantumNs,
      driverGeneration: a.driver,
      ...(a.vmm === undefined ? {} : { vmm: a.vmm }),
      bufferContiguity: a.bufferContiguity,
      guestRamBytes,
      untrusted: a.untrusted,
      alwaysBounceLimitBytes,
      alwaysBounceLimitSchedule,
      slotsPerClass,
      vfioDmaEntryLimit,
      spinLoads: 2000,
      dilation: 1,
      ...(a.watchdogMs === undefined ? {} : { watchdogMs: a.watchdogMs }),
      ...(a.faults ? { faults: a.faults } : {}),
    })),
    profilePath,
    warnings,
    shapes,
  };
}

/** fio's output formats, in the order fio prints them. */
export const FIO_OUTPUT_FORMATS = ['terse', 'json', 'json+', 'normal'] as const;
export type FioOutputFormat = (typeof FIO_OUTPUT_FORMATS)[number];

/** fio's --output-format list ("json,normal"); `field` names the option in errors. */
export function parseOutputFormats(text: string, field = '--output-format'): FioOutputFormat[] {
  const parts = text.split(',').map((p) => p.trim());
  for (const p of parts) {
    if (!(FIO_OUTPUT_FORMATS as readonly string[]).includes(p)) {
      throw new InputError(field, text, `one of ${FIO_OUTPUT_FORMATS.join(', ')}, or several joined by commas (e.g. json,normal)`);
    }
  }
  return FIO_OUTPUT_FORMATS.filter((f) => parts.includes(f));
}

/** Several command-line jobs as fio reads them: a [global] section of the options before the first --name, a section per --name. */
function commandLineJobFile(global: Record<string, string | boolean>, jobs: NonNullable<RunArgs['commandLineJobs']>): JobFile {
  const options = (o: Record<string, string | boolean>) =>
    Object.entries(o).map(([key, v]) => ({ key, value: v === true ? '' : v === false ? '0' : v, where: 'command line' }));
  return {
    path: 'command line',
    sections: [
      { name: 'global', where: 'command line', options: options(global) },
      ...jobs.map((j) => ({ name: j.name, where: 'command line', options: options(j.options) })),
    ],
  };
}

/** The job file, with --section: only the named job sections (and every [global]), as fio's --section runs them. */
function jobFileSections(path: string, sections: readonly string[] | undefined, keywords: FioKeywords) {
  const file = readJobFile(path, { keywords });
  if (!sections || sections.length === 0) return file;
  const names = file.sections.filter((s) => s.name !== 'global').map((s) => s.name);
  for (const name of sections) {
    if (!names.includes(name)) throw new InputError('--section', name, `a job section of ${path}: ${names.join(', ')}`);
  }
  return { ...file, sections: file.sections.filter((s) => s.name === 'global' || sections.includes(s.name)) };
}

/** The run's text in fio's formats, in fio's order (terse, JSON, normal), the model's tables after fio's normal output. */
export function formatRunOutput(results: readonly RunResult[], formats: readonly FioOutputFormat[], header = ''): string {
  const joined: FioRun = {
    ...results[0],
    jobs: results.flatMap((r) => r.jobs),
    vmstack: results.length === 1 ? results[0].vmstack : { groups: results.map((r) => r.vmstack) },
  };
  let text = formats.includes('normal') ? header : '';
  // fio's --status-interval dumps come first, in time order, each with every job: the groups that ran before at their
  // final numbers, the running group's so far, the later groups' not started
  for (const [gi, r] of results.entries())
    for (const dump of r.statusDumps ?? []) {
      const later = results.slice(gi + 1).flatMap((p) => p.jobs.map(notStartedJob));
      const jobs = [...results.slice(0, gi).flatMap((p) => p.jobs), ...dump.jobs, ...later];
      text += formatFioReports(applyGroupReporting({ timestampMs: r.timestampMs, globalOptions: r.globalOptions, jobs }), formats);
    }
  const result = applyGroupReporting(joined);
  text += formatFioReports(result, formats);
  if (formats.includes('normal')) text += formatVmstackReport(results);
  return text;
}

/** fio's reports of a run or a status dump, in fio's order (terse, JSON, normal); a dump has no `vmstack` key or tables. */
function formatFioReports(result: FioStatusRun, formats: readonly FioOutputFormat[]): string {
  let text = '';
  if (formats.includes('terse')) text += formatFioTerse(result);
  if (formats.includes('json+')) text += `${formatFioJson(result, { plus: true })}\n`;
  else if (formats.includes('json')) text += `${formatFioJson(result, { plus: false })}\n`;
  if (formats.includes('normal')) text += `${formatFioNormal(result)}\n`;
  return text;
}

/**
 * fio's --status-interval in model time: each barrier group's jobs keep a copy of their statistics at every
 * multiple of the interval counted from the start of the run (the groups one after another), the first in a group
 * at the first multiple at or after the model time the groups before it took (`beforeNs`).
 */
export function statusDumpJobs(jobs: readonly FioJobSpec[], intervalNs: number | undefined, beforeNs: number): FioJobSpec[] {
  if (intervalNs === undefined) return [...jobs];
  const first = Math.max(1, Math.ceil(beforeNs / intervalNs)) * intervalNs - beforeNs;
  return jobs.map((j) => ({ ...j, statusIntervalNs: intervalNs, statusFirstNs: first }));
}

/** --status-interval: a fio time (a bare number is seconds), more than 0. */
export function parseStatusInterval(text: string): number {
  const ns = parseTimeNs('--status-interval', text);
  if (ns <= 0)
    throw new InputError('--status-interval', text, 'a model time > 0 with an optional unit: us, ms, s, m (a bare number is seconds), e.g. 1s or 500us');
  return ns;
}

export async function runCommand(a: RunArgs): Promise<void> {
  const formats = parseOutputFormats(a.outputFormat);
  const statusIntervalNs = a.statusInterval === undefined ? undefined : parseStatusInterval(a.statusInterval);
  const run = runOptionsOf(a);
  if (a.parseOnly) return;
  if (a.output !== undefined) checkOutputPath('--output', a.output, [a.jobfile, run.profilePath, a.topology?.file]);
  if (a.html !== undefined) checkOutputPath('--html', a.html, [a.jobfile, run.profilePath, a.topology?.file]);
  if (a.flamegraphFormat !== undefined && a.flamegraph === undefined)
    throw new InputError('--flamegraph-format', a.flamegraphFormat, 'only with --flamegraph FILE, the file it writes');
  if (a.flamegraph !== undefined) checkOutputPath('--flamegraph', a.flamegraph, [a.jobfile, run.profilePath, a.topology?.file, a.output, a.html]);
  for (const w of run.warnings) process.stderr.write(`vmstack: ${w}\n`);
  const header = fioHeaderOf(run);
  // fio draws its status line only with the normal output (with json or terse, not even with --eta always)
  const showEta =
    formats.includes('normal') &&
    (a.eta === 'always' || (a.eta !== 'never' && a.output === undefined && process.stdout.isTTY === true && formats.length === 1));
  // fio prints its start-up lines before the jobs start, then its status line; into a file they go with the rest, once complete
  const early = showEta && a.output === undefined && formats.includes('normal');
  if (early) process.stdout.write(header);

  // everything is checked: the run starts
  const results: RunResult[] = [];
  let beforeNs = 0;
  for (const [gi, group] of run.groups.entries()) {
    const status = showEta ? new FioStatusLine(group.jobs, performance.now()) : undefined;
    results.push(
      await runStack({
        ...group,
        jobs: statusDumpJobs(group.jobs, statusIntervalNs, beforeNs),
        ...(status ? { onStatus: (s: readonly JobStatus[]) => process.stdout.write(status.line(s, performance.now())), statusIntervalMs: 1000 } : {}),
        // barrier groups run one after another on the same drive: what one writes, the next reads
        carry: results[gi - 1]?.carry,
        exportNamespace: gi < run.groups.length - 1,
      }),
    );
    beforeNs += results[gi].endNs ?? 0;
  }
  if (showEta) process.stdout.write('\n');
  if (results.some((r) => (r.statusDumps?.length ?? 0) >= STATUS_DUMPS_MAX))
    process.stderr.write(`vmstack: --status-interval ${a.statusInterval}: only the first ${STATUS_DUMPS_MAX} status dumps of a job were kept\n`);
  // fio's lines as a job fails: what verify found (stderr), and the job's error, on stdout in the normal text, as fio
  // puts it; with json or terse on stdout, to stderr (the document stays whole); with --output, nowhere, as in fio
  const failed = fioJobErrorLines(results.flatMap((r, g) => r.jobs.map((job, i) => ({ job, ioengine: run.groups[g].jobs[i].ioengine }))));
  process.stderr.write(failed.verify);
  const errorsInText = formats.includes('normal') && a.output === undefined;
  if (a.output === undefined && !errorsInText) process.stderr.write(failed.errors);
  else if (errorsInText && early) process.stdout.write(failed.errors);
  // after "Starting N processes", before the blank line that opens the reports
  const text = formatRunOutput(results, formats, early ? '' : errorsInText && failed.errors ? `${header.replace(/\n$/, '')}${failed.errors}\n` : header);
  emitOutput(text, a.output);
  // fio writes each job's log files into the working directory when the job ends
  const logJobs = results.flatMap((r, g) => r.jobs.map((j, i) => ({ spec: run.groups[g].jobs[i], logs: j.fio?.logs })));
  for (const f of fioLogFiles(logJobs)) writeComplete(f.path, f.text);
  if (a.html !== undefined) writeComplete(a.html, formatRunHtml(results, run.shapes));
  if (a.flamegraph !== undefined) {
    const name = results.flatMap((r) => r.jobs.map((j) => j.jobname)).join(',');
    writeComplete(a.flamegraph, formatFlamegraph(runCallTrees(results), a.flamegraphFormat ?? 'folded', `vmstack run ${name}`, 'vmstack'));
  }
  // fio exits 1 when a job ended with an error (I/O errors, verify failures)
  if (results.some((r) => r.jobs.some((j) => j.error !== 0))) process.exitCode = 1;
}

/**
 * fio's lines for jobs that ended with an error: per job whose verify refused data no job wrote, fio's
 * "verify: bad magic header" for the first such block (fio prints one per failing I/O, and its job stops there;
 * here the job reads on, and the report counts them), and per failed job "fio: pid=…, err=…".
 */
export function fioJobErrorLines(jobs: readonly { job: JobResult; ioengine: string }[]): { verify: string; errors: string } {
  let verify = '';
  let errors = '';
  for (const { job: j, ioengine } of jobs) {
    const b = j.verify?.firstNeverWritten;
    if (b)
      verify +=
        `verify: bad magic header ${b.magic.toString(16)}, wanted acca at file /dev/${j.disk ?? 'nvme0n1'} offset ${b.offsetBytes}, ` +
        `length 4096 (requested block: offset=${b.ioOffsetBytes}, length=${b.ioLengthBytes})\n`;
    // where fio 3.33 notices the failed verify: the synchronous engines as each I/O completes, the others as they reap
    const where = SYNC_ENGINES.has(ioengine) ? 'io_u.c:2152, func=io_u_sync_complete' : 'io_u.c:2190, func=io_u_queued_complete';
    if (j.error === EILSEQ) errors += `fio: pid=${process.pid}, err=${EILSEQ}/file:${where}, error=Invalid or incomplete multibyte or wide character\n`;
  }
  return { verify, errors };
}

const EILSEQ = 84;
/** fio's engines that complete each I/O in its submit call */
const SYNC_ENGINES = new Set(['sync', 'psync', 'vsync', 'pvsync', 'pvsync2']);

/** The call trees of a run's barrier groups as one flame graph: the same root (worker) of every group adds up. */
export function runCallTrees(results: readonly RunResult[]): CallTreeRoot[] {
  const byName = new Map<string, { where: CallTreeRoot['where']; trees: CallTreeNode[][] }>();
  for (const r of results)
    for (const root of r.callTrees ?? []) {
      const e = byName.get(root.name) ?? { where: root.where, trees: [] };
      e.trees.push(root.tree);
      byName.set(root.name, e);
    }
  return [...byName].map(([name, e]) => ({ name, where: e.where, tree: mergeCallTrees(e.trees) }));
}

/** fio's start-up lines for the run's jobs ("thread" when a job says so, as fio's "Starting N threads"). */
function fioHeaderOf(run: RunOptions): string {
  const jobs = run.groups.flatMap((g) => g.jobs);
  const first = run.groups[0];
  const threads = Object.hasOwn(first?.globalOptions ?? {}, 'thread') || Object.values(first?.jobOptions ?? {}).some((o) => Object.hasOwn(o, 'thread'));
  return formatFioNormalHeader(
    jobs.map((j) => ({
      name: j.name,
      groupid: j.reportGroupId,
      rw: j.rw,
      blockSizeBytes: j.blockSizeBytes,
      ioengine: j.ioengine,
      iodepth: j.iodepth,
      jobIndex: j.jobIndex,
    })),
    threads,
  );
}

/** --topology FILE for these jobs: the file places jobs by their index in one barrier group's list. */
function topologyFileOf(t: TopologyArgs, groupCount: number, jobs: readonly FioJobSpec[]): BuiltTopology {
  if (groupCount > 1)
    throw new InputError('--topology', t.file, `jobs of one barrier group: the file places jobs by index, and the job file has ${groupCount} stonewall groups`);
  return resolveTopology(t, jobs, { strategy: 'strict', driverGeneration: 'v5.10', guestRamBytes: 0 });
}

/** What the run's checks read from the command line, as a topology file gives it: its first VM's. */
function modelOptionsOf(b: BuiltTopology): Pick<RunArgs, 'strategy' | 'driver' | 'guestRam' | 'untrusted'> {
  const vm = b.topology.vms[0];
  return { strategy: vm.strategy, driver: vm.driverGeneration, guestRam: formatSize(vm.ramBytes), untrusted: vm.devices.some((d) => d.untrusted) };
}

/** --guest-ram: a fio size, whole 4 KiB pages, no more than the host has. */
export function parseGuestRam(text: string): number {
  const bytes = parseSizeBytes('--guest-ram', text);
  if (bytes <= 0 || bytes % 4096 !== 0) throw new InputError('--guest-ram', text, 'a whole number of 4 KiB pages > 0, e.g. 512m, 4g');
  const hostBytes = totalmem();
  if (bytes > hostBytes)
    throw new InputError('--guest-ram', text, `at most the host's RAM (${Math.floor(hostBytes / MiB)}m): guest RAM is one SharedArrayBuffer`);
  return bytes;
}

/**
 * Guest RAM a barrier group needs, laid out as runStack lays it out:
 * [64 KiB reserved][virtqueue][viommu request slots][slot word][admin SQ, CQ,
 * identify][per vCPU: SQ, CQ, PRP pages][swiotlb area, untrusted strict/lazy]
 * then, 2 MiB aligned, the page allocator's heap — from which every job's
 * vCPU takes iodepth fio buffers of bs bytes before its first I/O (4 KiB
 * pages, or whole 2 MiB pages with --buffer_contiguity huge).
 * Keep in step with stack/run-stack.ts.
 */
export interface GuestRamPlan {
  /** where the heap starts: rings, queues and the swiotlb area below it */
  heapStartBytes: number;
  /** fio I/O buffers of all jobs, in whole pages */
  buffersBytes: number;
  neededBytes: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;

export function guestRamPlan(
  jobs: readonly FioJobSpec[],
  o: { strategy: DmaStrategy; untrusted: boolean; bufferContiguity: UserBufferContiguity },
): GuestRamPlan {
  const { heapStartBytes } = planGuestLayout(guestLayoutRequest(jobs, o));
  const buffersBytes = fioBufferBytes(jobs, o.bufferContiguity);
  return { heapStartBytes, buffersBytes, neededBytes: heapStartBytes + buffersBytes };
}

function checkGuestRam(a: RunArgs, jobs: readonly FioJobSpec[], guestRamBytes: number): void {
  const plan = guestRamPlan(jobs, { strategy: a.strategy, untrusted: a.untrusted, bufferContiguity: a.bufferContiguity });
  if (plan.neededBytes <= guestRamBytes) return;
  const shapes = [...new Set(jobs.map((j) => `iodepth ${j.iodepth} × bs ${formatSize(j.blockSizeBytes)}`))].join(', ');
  throw new InputError(
    '--guest-ram',
    a.guestRam,
    `at least ${formatSize(plan.neededBytes, 'up')} for these jobs: ${formatSize(plan.buffersBytes)} of fio I/O buffers ` +
      `(${jobs.length} job${jobs.length === 1 ? '' : 's'}, ${shapes}${a.bufferContiguity === 'huge' ? ', each buffer in whole 2 MiB pages' : ''}) ` +
      `+ ${formatSize(plan.heapStartBytes)} of queues and rings; raise --guest-ram (e.g. --guest-ram ${formatSize(plan.neededBytes, 'up')}) or lower iodepth, bs or numjobs`,
  );
}

function checkJobsAtOnce(a: RunArgs, jobs: readonly FioJobSpec[], groupCount: number): void {
  if (jobs.length <= MAX_JOBS_AT_ONCE) return;
  const field = a.fio.numjobs !== undefined ? '--numjobs' : groupCount > 1 ? `jobs in barrier group ${jobs[0].groupId}` : 'numjobs';
  const value = a.fio.numjobs !== undefined ? a.fio.numjobs : jobs.length;
  throw new InputError(
    field,
    value,
    `at most ${MAX_JOBS_AT_ONCE} jobs running at once (each job is a vCPU worker; with the vmm, host-vfio and device workers the run has ${MAX_WORKERS} worker slots); ` +
      'split them into stonewall groups or lower numjobs',
  );
}

/** The pool's own checks (BouncePool.config), reported under the CLI's option names. */
function checkBounceOptions(a: RunArgs, alwaysBounceLimitBytes: number | undefined, slotsPerClass: number | undefined, evictionPeriodNs: number): void {
  if (a.strategy !== 'bounce') {
    const given: [string, string | undefined][] = [
      ['--always-bounce-limit', a.alwaysBounceLimit],
      ['--slots-per-class', a.slotsPerClass],
    ];
    for (const [field, value] of given)
      if (value !== undefined) throw new InputError(field, value, `only with --strategy bounce (the pool's option; --strategy is ${a.strategy})`);
    return;
  }
  try {
    BouncePool.config({ iovaBase: 4 * 1024 * MiB, evictionPeriodNs, alwaysBounceLimitBytes, slotsPerClass });
  } catch (e) {
    if (!(e instanceof InputError)) throw e;
    const cli: Record<string, [string, string | undefined]> = {
      'bounce.slotsPerClass': ['--slots-per-class', a.slotsPerClass],
      'bounce.alwaysBounceLimitBytes': ['--always-bounce-limit', a.alwaysBounceLimit],
    };
    const [field, value] = cli[e.field] ?? [e.field, undefined];
    throw new InputError(field, value ?? e.value, e.allowed);
  }
}

/** Bytes as a fio size the user can type back: 4k, 64m, 2g, or bytes. `up`: round up to whole MiB (for "at least" sizes). */
export function formatSize(bytes: number, round: 'exact' | 'up' = 'exact'): string {
  if (round === 'up' && bytes > MiB) bytes = align(bytes, MiB);
  for (const [suffix, unit] of [
    ['g', 1024 * MiB],
    ['m', MiB],
    ['k', KiB],
  ] as const) {
    if (bytes >= unit && bytes % unit === 0) return `${bytes / unit}${suffix}`;
  }
  return String(bytes);
}

function align(v: number, a: number): number {
  return Math.ceil(v / a) * a;
}

/** `5ms=128k,20ms=4k` → [{atNs, bytes}]: the knob's value from each model time on. */
export function parseLimitSchedule(text: string): { atNs: number; bytes: number }[] {
  return text.split(',').map((part) => {
    const m = /^\s*([^=]+)=([^=]+)\s*$/.exec(part);
    if (!m) throw new InputError('--always-bounce-limit-at', text, 'a list of TIME=SIZE, e.g. 5ms=128k,20ms=4k (model time from the start of the run)');
    const atNs = parseTimeNs('--always-bounce-limit-at', m[1].trim());
    const bytes = parseAlwaysBounceLimit('--always-bounce-limit-at', m[2].trim());
    return { atNs, bytes };
  });
}

/** The pool keeps always_bounce_limit as a 32-bit int of bytes (BouncePool.config checks the same range). */
const MAX_ALWAYS_BOUNCE_LIMIT_BYTES = 0x7fffffff;

/** always_bounce_limit, from --always-bounce-limit or a --always-bounce-limit-at write: one rule for both, the pool's. */
export function parseAlwaysBounceLimit(field: string, text: string): number {
  const bytes = parseSizeBytes(field, text);
  if (bytes > MAX_ALWAYS_BOUNCE_LIMIT_BYTES) {
    throw new InputError(field, text, `a size from 0 to ${MAX_ALWAYS_BOUNCE_LIMIT_BYTES} bytes (2g - 1): mappings up to it bounce, e.g. 4k or 128k`);
  }
  return bytes;
}

/**
 * fio runs jobs of one group that write over each other's region with verify,
 * and reports the blocks one wrote over the other's as verify failures (bad
 * header rand_seed). Say so before the run, with the usual way out.
 */
export function overlappingVerifyWarning(jobs: readonly FioJobSpec[]): string | null {
  const label = (j: FioJobSpec) => `'${j.name}'${jobs.filter((k) => k.name === j.name).length > 1 ? ` #${j.jobIndex}` : ''}`;
  for (const checker of jobs) {
    if (checker.verify === 'none') continue;
    for (const writer of jobs) {
      if (writer === checker || !fioJobWrites(writer)) continue;
      const lo = Math.max(checker.offsetBytes, writer.offsetBytes);
      const hi = Math.min(checker.offsetBytes + checker.sizeBytes, writer.offsetBytes + writer.sizeBytes);
      if (lo >= hi) continue;
      return (
        `job ${label(writer)} writes into the region job ${label(checker)} verifies ([${formatSize(lo)}, ${formatSize(hi)}) of the drive, barrier group ${checker.groupId}): ` +
        `blocks written over by the other job are verify failures, as in fio (bad header rand_seed); ` +
        `give each job its own region (e.g. offset_increment=${formatSize(checker.sizeBytes)}) or put them in separate stonewall groups`
      );
    }
  }
  return null;
}

/** --dma-entry-limit: vfio_iommu_type1's dma_entry_limit module parameter (a uint). */
function parseDmaEntryLimit(text: string): number {
  const allowed = 'a whole number of DMA mappings per VFIO container from 1 to 4294967295 (vfio_iommu_type1 dma_entry_limit; default 65535)';
  const n = parseCount('--dma-entry-limit', text, allowed);
  if (n < 1 || n > 0xffff_ffff) throw new InputError('--dma-entry-limit', text, allowed);
  return n;
}
