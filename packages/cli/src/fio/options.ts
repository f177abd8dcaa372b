/**
 * What fio's job options mean to the model: every option of fio's
 * options.c (plus the libaio and io_uring engine options) is in
 * `FIO_OPTION_TABLE` as one of
 *   handled      → read into a `FioJobSpec` field;
 *   ignored      → accepted, changes nothing the model does, reported once
 *                  in `ParsedJobs.ignoredOptions`;
 *   notModelled  → would change the workload and the model cannot: an
 *                  `InputError` — unless the value is the option's neutral
 *                  "off" value (e.g. `ramp_time=0`, `fsync=0`), then ignored;
 *   deprecated   → fio itself rejects it.
 * A name in no row is not a fio option: an `InputError` that suggests the
 * closest name.
 *
 * Precedence, lowest first (later wins, as in fio): the caller's defaults,
 * the `[global]` sections above the job in file order, command-line
 * overrides, the job's own section. Differences from fio's defaults:
 * ioengine=libaio (fio's default is psync). `direct` defaults to 0 as
 * in fio: buffered I/O through the guest's page cache. A job with neither
 * `size` nor a `filename` fails as fio fails a job with no size
 * ("<job>: you need to specify size="); with `filename=/dev/nvme<X>n1` the
 * size is the drive's, as fio takes a block device's.
 *
 * Groups (fio init.c add_job): a job with `stonewall` starts a new barrier
 * group (`groupId`) if any job precedes it; `stonewall` or `new_group` starts
 * a new reporting group (`reportGroupId`). numjobs clones share their
 * section's groups.
 */

import { totalmem } from 'node:os';
import {
  BLOCK_SIZE_ALLOWED,
  type BlockSizeSpec,
  FIO_DEFAULT_RANDSEED,
  FIO_DEFAULT_RWMIXREAD_PCT,
  FIO_IOENGINE_ALLOWED,
  FIO_IOENGINES,
  type FioIoEngine,
  type FioJobSpec,
  IO_URING_BUFFERED_REFUSED,
  type JobSpecWrittenAs,
  MAX_NRFILES,
  NVME_FILENAME_ALLOWED,
  nvmeFilenameDevice,
  type ParsedJobs,
  type PerDirection,
  RANDOM_DISTRIBUTION_ALLOWED,
  type RandomDistribution,
  RW_MODES,
  type RwMode,
  type VerifyMode,
  validateJobSpec,
} from '@vmstack/guest-kernel';
import { closestName, InputError, inputExcerpt } from '@vmstack/shm';
import { expandFioKeywords, type FioKeywords, type JobFile, type ParseJobFileOptions, readJobFile } from './jobfile.js';
import { checkRegionBytes, DRIVE_CAPACITY_BYTES, type KbBase, parseCount, parseSizeBytes, parseTimeNs } from './sizes.js';

export type OptionRule =
  | { kind: 'handled' }
  | { kind: 'ignored' }
  | { kind: 'notModelled'; reason: string; neutral?: readonly string[] }
  | { kind: 'deprecated' };

const HANDLED: OptionRule = { kind: 'handled' };
const IGNORED: OptionRule = { kind: 'ignored' };
const DEPRECATED: OptionRule = { kind: 'deprecated' };
const notModelled = (reason: string, ...neutral: string[]): OptionRule => ({ kind: 'notModelled', reason, neutral });

const PACING = 'pacing is rate, rate_iops, rate_min, rate_iops_min and thinktime (no rate process, cycle or latency targets)';
const ONE_BS = 'block sizes are bs (per direction), bsrange or bssplit, multiples of 4 KiB';
const UNIFORM = 'offsets are sequential, or random (uniform, zipf, pareto, normal or zoned) over the job region';
const AMOUNT = 'a job runs once over its region, or for runtime with time_based';
const FILES = 'each job does I/O to one region of the NVMe namespace, not to files';
const FLUSH = 'barriers, sync_file_range and O_SYNC/O_DSYNC writes are not modelled (fsync, fdatasync and end_fsync are)';
const VERIFY = 'verify is modelled with verify, do_verify, verify_pattern, verify_fatal and verify_backlog only';
const ZONES = 'zoned namespaces and data placement are not modelled';
const TRIM = 'trim is not modelled';
const BUFFERS = 'I/O buffers are page-aligned malloc memory in the model';
const SCHED = 'the guest block layer has no I/O scheduler or priorities in the model';
const EXEC = 'the model runs no external commands, profiles or replays';
const IO_URING_CMD = 'an option of the io_uring_cmd engine, which is not modelled';

/** fio option → what the model does with it. Aliases are in `FIO_OPTION_ALIASES`. */
export const FIO_OPTION_TABLE: Readonly<Record<string, OptionRule>> = {
  // -- handled: read into FioJobSpec --------------------------------------
  name: HANDLED,
  rw: HANDLED,
  bs: HANDLED,
  size: HANDLED,
  offset: HANDLED,
  offset_increment: HANDLED,
  iodepth: HANDLED,
  numjobs: HANDLED,
  runtime: HANDLED,
  time_based: HANDLED,
  rwmixread: HANDLED,
  rwmixwrite: HANDLED,
  verify: HANDLED,
  do_verify: HANDLED,
  randseed: HANDLED,
  ioengine: HANDLED,
  direct: HANDLED,
  buffered: HANDLED,
  stonewall: HANDLED,
  new_group: HANDLED,
  kb_base: HANDLED,
  filename: HANDLED, // the guest's /dev/nvme<X>n1: which drive of the VM the job does I/O to
  // statistics and log files, kept by the job engine in model time (fio-stat.ts in the guest)
  bwavgtime: HANDLED,
  iopsavgtime: HANDLED,
  write_bw_log: HANDLED,
  write_lat_log: HANDLED,
  write_iops_log: HANDLED,
  write_hist_log: HANDLED,
  log_avg_msec: HANDLED,
  log_hist_msec: HANDLED,
  log_hist_coarseness: HANDLED,
  log_offset: HANDLED,
  log_max_value: HANDLED,
  per_job_logs: HANDLED,
  norandommap: HANDLED,
  bsrange: HANDLED,
  bssplit: HANDLED,
  loops: HANDLED,
  number_ios: HANDLED,
  io_size: HANDLED,
  random_distribution: HANDLED,
  ramp_time: HANDLED,
  thinktime: HANDLED,
  thinktime_spin: HANDLED,
  thinktime_blocks: HANDLED,
  rate: HANDLED,
  rate_iops: HANDLED,
  rate_min: HANDLED,
  rate_iops_min: HANDLED,
  fadvise_hint: HANDLED, // POSIX_FADV_SEQUENTIAL/RANDOM: the page cache's readahead (direct=0)
  end_fsync: HANDLED,
  fsync: HANDLED,
  fdatasync: HANDLED,

  // -- ignored: change nothing the model does -----------------------------
  description: IGNORED,
  directory: IGNORED,
  filename_format: IGNORED,
  unique_filename: IGNORED,
  openfiles: IGNORED,
  file_service_type: HANDLED, // roundrobin (fio's default) only, with several files
  create_serialize: IGNORED,
  create_fsync: IGNORED,
  create_on_open: IGNORED,
  allow_file_create: IGNORED,
  allow_mounted_write: IGNORED,
  overwrite: IGNORED,
  fallocate: IGNORED,
  unlink: IGNORED,
  unlink_each_loop: IGNORED,
  thread: IGNORED, // every job is a thread (a vCPU worker) in the model
  softrandommap: IGNORED,
  randrepeat: IGNORED, // the model always seeds from randseed
  allrandrepeat: IGNORED,
  random_generator: IGNORED,
  // io_uring: SQEs per io_uring_enter; libaio, psync, pvsync: ignored (one system call per I/O)
  iodepth_batch: HANDLED,
  // The engine reaps each completion as its interrupt arrives; doorbell and
  // interrupt batching emerge from the device model instead.
  iodepth_batch_complete_min: IGNORED,
  iodepth_batch_complete_max: IGNORED,
  iodepth_low: IGNORED,
  userspace_reap: IGNORED,
  zero_buffers: IGNORED, // buffer contents do not change modelled costs
  refill_buffers: IGNORED,
  scramble_buffers: IGNORED,
  buffer_pattern: IGNORED,
  buffer_compress_percentage: IGNORED,
  buffer_compress_chunk: IGNORED,
  dedupe_percentage: IGNORED,
  dedupe_global: IGNORED,
  dedupe_mode: IGNORED,
  dedupe_working_set_percentage: IGNORED,
  'hugepage-size': IGNORED,
  lockmem: IGNORED,
  nice: IGNORED, // one job per vCPU: nothing to share a CPU with
  cpumask: IGNORED,
  cpus_allowed: IGNORED,
  cpus_allowed_policy: IGNORED,
  numa_cpu_nodes: IGNORED,
  numa_mem_policy: IGNORED,
  gpu_dev_id: IGNORED,
  uid: IGNORED,
  gid: IGNORED,
  cgroup: IGNORED,
  cgroup_nodelete: IGNORED,
  clocksource: IGNORED, // model time is the clock
  gtod_reduce: IGNORED,
  gtod_cpu: IGNORED,
  group_reporting: HANDLED, // reporting: the report layer joins the group's jobs (report/fio-group.ts)
  unified_rw_reporting: IGNORED,
  stats: IGNORED,
  clat_percentiles: IGNORED,
  lat_percentiles: IGNORED,
  slat_percentiles: IGNORED,
  percentile_list: IGNORED,
  significant_figures: IGNORED,
  disable_lat: IGNORED,
  disable_clat: IGNORED,
  disable_slat: IGNORED,
  disable_bw_measurement: IGNORED,
  disk_util: IGNORED,
  unit_base: IGNORED,
  write_iolog: IGNORED,
  log_entries: IGNORED,
  log_compression: IGNORED, // compressed in memory, written out plain: the files are the same
  log_compression_cpus: IGNORED,
  block_error_percentiles: IGNORED,
  continue_on_error: IGNORED, // the model raises no I/O errors to continue on
  ignore_error: IGNORED,
  error_dump: IGNORED,
  exitall_on_error: IGNORED,
  exit_what: IGNORED,
  verify_dump: IGNORED,
  verify_state_save: IGNORED,
  verifysort: IGNORED, // soft-deprecated in fio: accepted, no effect
  verifysort_nr: IGNORED,
  flow_watermark: IGNORED,

  // -- not modelled: would change the workload ----------------------------
  rate_process: notModelled(PACING, 'linear'),
  rate_cycle: notModelled(PACING),
  rate_ignore_thinktime: notModelled(PACING, '0'),
  thinktime_blocks_type: notModelled(PACING, 'complete'),
  thinktime_iotime: notModelled(PACING, '0'),
  max_latency: notModelled(PACING, '0'),
  latency_target: notModelled(PACING, '0'),
  latency_window: notModelled(PACING, '0'),
  latency_percentile: notModelled(PACING, '100'),
  latency_run: notModelled(PACING, '0'),
  flow_id: notModelled(PACING, '0'),
  flow: notModelled(PACING, '0'),
  flow_sleep: notModelled(PACING, '0'),
  startdelay: notModelled(PACING, '0'),
  bs_unaligned: notModelled(ONE_BS, '0'),
  ba: notModelled(ONE_BS),
  bs_is_seq_rand: notModelled(ONE_BS, '0'),
  percentage_random: notModelled(UNIFORM, '100'),
  rw_sequencer: notModelled(UNIFORM, 'sequential'),
  offset_align: notModelled(UNIFORM, '0'),
  serialize_overlap: notModelled(UNIFORM, '0'),
  fill_device: notModelled(AMOUNT, '0'),
  steadystate: notModelled(AMOUNT),
  steadystate_duration: notModelled(AMOUNT, '0'),
  steadystate_ramp_time: notModelled(AMOUNT, '0'),
  wait_for: notModelled('jobs run in stonewall groups only'),
  exitall: notModelled(AMOUNT),
  create_only: notModelled(AMOUNT, '0'),
  nrfiles: HANDLED, // the job's region in N equal files, taken in turn
  filesize: notModelled(FILES),
  file_append: notModelled(FILES, '0'),
  opendir: notModelled(FILES),
  lockfile: notModelled(FILES, 'none'),
  pre_read: notModelled(FILES, '0'),
  write_barrier: notModelled(FLUSH, '0'),
  sync_file_range: notModelled(FLUSH),
  // each job's page cache starts empty: fio's invalidate=1 (drop the cache at the start) is what the model does
  invalidate: notModelled("each job's page cache starts empty (invalidate=1, fio's default)", '1'),
  fsync_on_close: notModelled(FLUSH, '0'),
  sync: notModelled(FLUSH, 'none', '0'),
  atomic: notModelled(FLUSH, '0'),
  verify_interval: notModelled(VERIFY),
  verify_offset: notModelled(VERIFY),
  verify_pattern: HANDLED,
  verify_fatal: HANDLED,
  verify_async: notModelled(VERIFY, '0'),
  verify_async_cpus: notModelled(VERIFY),
  verify_backlog: HANDLED,
  verify_backlog_batch: notModelled(VERIFY),
  verify_only: notModelled(VERIFY, '0'),
  experimental_verify: notModelled(VERIFY, '0'),
  verify_state_load: notModelled(VERIFY, '0'),
  trim_percentage: notModelled(TRIM, '0'),
  trim_verify_zero: notModelled(TRIM),
  trim_backlog: notModelled(TRIM),
  trim_backlog_batch: notModelled(TRIM),
  zonemode: notModelled(ZONES, 'none'),
  zonesize: notModelled(ZONES, '0'),
  zonecapacity: notModelled(ZONES, '0'),
  zonerange: notModelled(ZONES, '0'),
  zoneskip: notModelled(ZONES, '0'),
  read_beyond_wp: notModelled(ZONES, '0'),
  max_open_zones: notModelled(ZONES, '0'),
  job_max_open_zones: notModelled(ZONES, '0'),
  ignore_zone_limits: notModelled(ZONES, '0'),
  zone_reset_threshold: notModelled(ZONES),
  zone_reset_frequency: notModelled(ZONES),
  fdp: notModelled(ZONES, '0'),
  fdp_pli: notModelled(ZONES),
  mem: notModelled(BUFFERS, 'malloc'),
  iomem_align: notModelled(BUFFERS, '0'),
  io_submit_mode: notModelled('the job engine submits inline on its vCPU', 'inline'),
  ioscheduler: notModelled(SCHED, 'none'),
  prio: notModelled(SCHED),
  prioclass: notModelled(SCHED),
  cmdprio_percentage: notModelled(SCHED, '0'),
  cmdprio_class: notModelled(SCHED),
  cmdprio: notModelled(SCHED),
  cmdprio_bssplit: notModelled(SCHED),
  cgroup_weight: notModelled(SCHED),
  write_hint: notModelled(SCHED, 'none'),
  nowait: notModelled('RWF_NOWAIT submission is not modelled', '0'),
  read_iolog: notModelled(EXEC),
  read_iolog_chunked: notModelled(EXEC, '0'),
  replay_no_stall: notModelled(EXEC),
  replay_redirect: notModelled(EXEC),
  replay_scale: notModelled(EXEC),
  replay_align: notModelled(EXEC),
  replay_time_scale: notModelled(EXEC),
  replay_skip: notModelled(EXEC),
  merge_blktrace_file: notModelled(EXEC),
  merge_blktrace_scalars: notModelled(EXEC),
  merge_blktrace_iters: notModelled(EXEC),
  exec_prerun: notModelled(EXEC),
  exec_postrun: notModelled(EXEC),
  profile: notModelled(EXEC),
  log_prio: notModelled('the model has no I/O priorities to log', '0'),
  log_store_compressed: notModelled('log files are written plain', '0'),
  log_unix_epoch: notModelled('log times are model ms since the job started', '0'),
  log_alternate_epoch: notModelled('log times are model ms since the job started', '0'),
  log_alternate_epoch_clock_id: notModelled('log times are model ms since the job started'),
  // io_uring engine options: resolveIoUring reads them (ioengine=io_uring only, as fio)
  hipri: HANDLED,
  fixedbufs: HANDLED,
  registerfiles: HANDLED,
  sqthread_poll: HANDLED,
  sqthread_poll_cpu: HANDLED,
  nonvectored: HANDLED,
  uncached: HANDLED,
  force_async: HANDLED,
  cmd_type: notModelled(IO_URING_CMD),

  // -- deprecated: fio rejects them ---------------------------------------
  percentage_sequential: DEPRECATED,
  rwmixcycle: DEPRECATED,
};

/** fio's alternative names (options.c `.alias`). */
export const FIO_OPTION_ALIASES: Readonly<Record<string, string>> = {
  readwrite: 'rw',
  blocksize: 'bs',
  timeout: 'runtime',
  fileoffset: 'offset',
  wait_for_previous: 'stonewall',
  iodepth_batch_submit: 'iodepth_batch',
  iodepth_batch_complete: 'iodepth_batch_complete_min',
  io_limit: 'io_size',
  fill_fs: 'fill_device',
  blockalign: 'ba',
  blocksize_range: 'bsrange',
  blocksize_unaligned: 'bs_unaligned',
  nr_files: 'nrfiles',
  iomem: 'mem',
  mem_align: 'iomem_align',
  ratemin: 'rate_min',
  ratecycle: 'rate_cycle',
  disable_bw: 'disable_bw_measurement',
  ss: 'steadystate',
  ss_dur: 'steadystate_duration',
  ss_ramp: 'steadystate_ramp_time',
};

/** One option as written, with where it came from for errors (e.g. `[global] bs`, `--bs`). */
interface Written {
  key: string;
  value: string;
  field: string;
}

interface Section {
  name: string;
  isGlobal: boolean;
  options: Written[];
}

/**
 * Options as the CLI layer passes them: keys are fio option names
 * (snake_case, e.g. `time_based`; yargs' `_`, `$0` are skipped, camelCase
 * copies are not fio options and are refused); `undefined` means not given,
 * `true`/`false` mean 1/0.
 */
export type JobOptionValues = Record<string, string | number | boolean | undefined>;

export interface JobsFromFileOptions extends ParseJobFileOptions {
  /** Command-line options: override `[global]`, overridden by a job's own section. */
  overrides?: JobOptionValues;
  /** The caller's defaults, below everything in the file. */
  defaults?: JobOptionValues;
}

/** The command line as one job section named after `--name` (default `vmstack`). */
export function jobsFromCommandLine(opts: JobOptionValues, defaults: JobOptionValues = {}, keywords?: FioKeywords): ParsedJobs {
  const nameValue = opts.name ?? defaults.name ?? 'vmstack';
  const name = String(nameValue);
  if (name === '') throw new InputError('--name', nameValue, 'a non-empty job name');
  // fio substitutes its keywords ($ncpus, $mb_memory, $pagesize) on the command line too
  const options = toWritten(opts, (key) => `--${key}`)
    .filter((o) => o.key !== 'name')
    .map((o) => ({ ...o, value: expandFioKeywords(o.value, keywords) }));
  return buildJobs(
    [{ name, isGlobal: false, options }],
    [],
    toWritten(defaults, defaultField).filter((o) => o.key !== 'name'),
  );
}

/** A fio job file; `overrides` (command-line options) override its `[global]` sections. */
export function jobsFromFile(path: string, overrides: JobOptionValues = {}, options: JobsFromFileOptions = {}): ParsedJobs {
  return jobsFromJobFile(readJobFile(path, options), { ...options, overrides });
}

/** Same as `jobsFromFile` for an already parsed file (e.g. from `parseJobFileText`). */
export function jobsFromJobFile(file: JobFile, options: Omit<JobsFromFileOptions, keyof ParseJobFileOptions> = {}): ParsedJobs {
  const sections: Section[] = file.sections.map((s) => ({
    name: s.name,
    isGlobal: s.name === 'global',
    options: s.options.map((o) => ({ key: o.key, value: o.value, field: `[${inputExcerpt(s.name)}] ${inputExcerpt(o.key)}` })),
  }));
  if (!sections.some((s) => !s.isGlobal)) {
    throw new InputError('job file', file.path, 'at least one job section besides [global], e.g. [randread-4k]');
  }
  const overrides = toWritten(options.overrides ?? {}, (key) => `--${key}`);
  const defaults = toWritten(options.defaults ?? {}, defaultField).filter((o) => o.key !== 'name');
  return buildJobs(sections, overrides, defaults);
}

const defaultField = (key: string): string => `default ${key}`;

function toWritten(values: JobOptionValues, field: (key: string) => string): Written[] {
  return Object.entries(values)
    .filter(([key, value]) => value !== undefined && key !== '_' && key !== '$0')
    .map(([key, value]) => ({
      key,
      // A boolean flag (`--time_based`) means 1, as `time_based=1` would.
      value: value === true ? '1' : value === false ? '0' : String(value),
      field: field(inputExcerpt(key)),
    }));
}

/** The rule for an option name, or an InputError if fio has no such option or the model cannot run it. */
function classify(o: Written, ignored: Set<string>): 'handled' | 'ignored' {
  const rule = FIO_OPTION_TABLE[FIO_OPTION_ALIASES[o.key] ?? o.key];
  if (rule === undefined) {
    const near = closestOptionName(o.key);
    throw new InputError(o.field, o.value, `not a fio option${near ? ` (did you mean ${near}?)` : ''}`);
  }
  switch (rule.kind) {
    case 'handled':
      return 'handled';
    case 'ignored':
      ignored.add(o.key);
      return 'ignored';
    case 'deprecated':
      throw new InputError(o.field, o.value, `remove it: ${o.key} is deprecated and fio itself rejects it`);
    case 'notModelled': {
      const neutral = rule.neutral ?? [];
      if (neutral.includes(o.value.trim().toLowerCase())) {
        ignored.add(o.key);
        return 'ignored';
      }
      const instead = neutral.length > 0 ? `remove it or set ${o.key}=${neutral[0]}` : 'remove it';
      throw new InputError(o.field, o.value, `${instead}; ${o.key} is not modelled: ${rule.reason}`);
    }
  }
}

function buildJobs(sections: Section[], overrides: Written[], defaults: Written[]): ParsedJobs {
  const ignored = new Set<string>();
  const handled = (list: Written[]): Written[] => list.filter((o) => classify(o, ignored) === 'handled');
  // Classify everything first, in order, so the first bad line is the one reported.
  const handledDefaults = handled(defaults);
  const handledSections = sections.map((s) => ({ ...s, options: handled(s.options) }));
  const handledOverrides = handled(overrides);

  const globalOptions: Record<string, string> = {};
  const jobOptions: Record<string, Record<string, string>> = {};
  const jobs: FioJobSpec[] = [];
  const globalsSoFar: Written[] = [];
  let groupId = 0;
  let reportGroupId = 0;
  let jobsInReportGroup = 0;

  sections.forEach((section, i) => {
    if (section.isGlobal) {
      for (const o of section.options) globalOptions[o.key] = o.value;
      globalsSoFar.push(...handledSections[i].options);
      return;
    }
    if (Object.hasOwn(jobOptions, section.name)) {
      throw new InputError(`[${inputExcerpt(section.name)}]`, section.name, 'a job name used by one section only');
    }
    jobOptions[section.name] = Object.fromEntries(section.options.map((o) => [o.key, o.value]));

    const job = resolveJob(section.name, [...handledDefaults, ...globalsSoFar, ...handledOverrides, ...handledSections[i].options]);
    if (job.stonewall && jobs.length > 0) groupId++;
    if ((job.stonewall || job.newGroup) && jobsInReportGroup > 0) {
      reportGroupId++;
      jobsInReportGroup = 0;
    }
    for (let jobIndex = 0; jobIndex < job.numjobs; jobIndex++) {
      const spec: FioJobSpec = {
        ...job.spec,
        jobIndex,
        groupId,
        reportGroupId,
        offsetBytes: job.spec.offsetBytes + jobIndex * job.offsetIncrementBytes,
      };
      jobs.push(validateJobSpec(spec, job.writtenAs));
      jobsInReportGroup++;
    }
    for (const key of job.ignored) ignored.add(key);
  });

  for (const o of overrides) globalOptions[o.key] = o.value;
  return { jobs, ignoredOptions: [...ignored], globalOptions, jobOptions };
}

const MAX_NUMJOBS = 4096; // fio's default --max-jobs

interface ResolvedJob {
  spec: FioJobSpec;
  writtenAs: JobSpecWrittenAs;
  numjobs: number;
  offsetIncrementBytes: number;
  stonewall: boolean;
  newGroup: boolean;
  /** options this job accepts and the model (like fio, for this engine) ignores */
  ignored: string[];
}

/**
 * Folds the handled options of one job (lowest precedence first) into a
 * spec, one step per group of options. The steps run in this order, so when
 * several options are wrong the first one here is the one reported.
 */
function resolveJob(sectionName: string, options: Written[]): ResolvedJob {
  const job = jobOptionSlots(sectionName, options);
  const kbBase = resolveKbBase(job);
  const { rw, readBs, writeBs } = resolveRwAndBlockSizes(job, kbBase);
  const blockSizeBytes = Math.max(readBs.maxBytes, writeBs.maxBytes);
  const { sizeBytes, offsetBytes, offsetIncrementBytes } = resolveRegion(job, kbBase);
  const { iodepth, numjobs } = resolveDepthAndClones(job);
  checkRegionFits(job, rw, sizeBytes, offsetBytes, offsetBytes + (numjobs - 1) * offsetIncrementBytes);
  const { runtimeNs, timeBased } = resolveDuration(job);
  const rwmixreadPct = resolveRwmixread(job);
  const { verify, doVerify, ...verifyOptions } = resolveVerify(job);
  const randseed = resolveRandseed(job);
  const direct = resolveDirect(job);
  const engine = resolveEngine(job, direct, iodepth);
  const { stonewall, newGroup } = resolveGroups(job);
  const { filename, nrfiles } = resolveFiles(job, sizeBytes, blockSizeBytes);
  const stats = resolveStatsAndLogs(job);
  // fio names a job after its section; a name= in [global] does not rename the sections below it
  const flush = resolveFlushes(job);
  const nameOpt = job.get('name');
  const ownName = nameOpt && !nameOpt.field.startsWith('[global]') ? nameOpt.value : '';
  return {
    spec: {
      name: ownName !== '' ? ownName : sectionName,
      jobIndex: 0,
      groupId: 0,
      reportGroupId: 0,
      rw,
      rwmixreadPct,
      blockSizeBytes,
      readBs,
      writeBs,
      ...resolveAmount(job, kbBase),
      randomDistribution: resolveRandomDistribution(job),
      ...resolvePacing(job, kbBase),
      sizeBytes,
      offsetBytes,
      iodepth,
      runtimeNs,
      timeBased,
      verify,
      doVerify,
      ...verifyOptions,
      randseed,
      ioengine: engine.ioengine,
      ...engine.uring,
      direct,
      randomMap: !flagSet(job, 'norandommap'),
      fadviseHint: resolveFadviseHint(job),
      ...flush,
      ...(filename === undefined ? {} : { filename }),
      ...(nrfiles === 1 ? {} : { nrfiles }),
      ...stats,
    },
    writtenAs: job.writtenAs,
    numjobs,
    offsetIncrementBytes,
    stonewall,
    newGroup,
    ignored: engine.ignored,
  };
}

/** One job's handled options, the winning one per meaning, and where its spec fields were written. */
interface JobOptionSlots {
  sectionName: string;
  /** The option that decides `slot` (a canonical option name), if any was written. */
  get(slot: string): Written | undefined;
  /** Remembers where a spec field was written, for validateJobSpec's errors. */
  note(key: keyof FioJobSpec, o: Written | undefined): void;
  writtenAs: JobSpecWrittenAs;
}

/** Inverse options share a slot with the option they invert; the later one wins, as in fio. */
const OPTION_SLOT: Readonly<Record<string, string>> = { buffered: 'direct', rwmixwrite: 'rwmixread' };

/** One slot per meaning, aliases resolved; later options (higher precedence) replace earlier ones. */
function jobOptionSlots(sectionName: string, options: readonly Written[]): JobOptionSlots {
  const slots = new Map<string, Written>();
  for (const o of options) {
    const canonical = FIO_OPTION_ALIASES[o.key] ?? o.key;
    slots.set(OPTION_SLOT[canonical] ?? canonical, o);
  }
  const writtenAs: JobSpecWrittenAs = {};
  return {
    sectionName,
    get: (slot) => slots.get(slot),
    note: (key, o) => {
      if (o) writtenAs[key] = { field: o.field, value: o.value };
    },
    writtenAs,
  };
}

/** kb_base, read first: it changes how every size is read (fio gives it prio 1). */
function resolveKbBase(job: JobOptionSlots): KbBase {
  const o = job.get('kb_base');
  if (!o) return 1024;
  if (o.value.trim() !== '1024' && o.value.trim() !== '1000') {
    throw new InputError(o.field, o.value, '1024 (k = 1024, the default) or 1000 (k = 1000, kib = 1024)');
  }
  return Number(o.value.trim()) as KbBase;
}

/**
 * rw (default read) and the block sizes of each direction: bssplit, else
 * bsrange, else bs (default 4k); each is `read[,write[,trim]]`, a value left
 * empty keeping the default, one value for both.
 */
function resolveRwAndBlockSizes(job: JobOptionSlots, kbBase: KbBase): { rw: RwMode; readBs: BlockSizeSpec; writeBs: BlockSizeSpec } {
  const rwOpt = job.get('rw');
  const rw = rwOpt ? parseRw(rwOpt) : 'read';
  const fixed = (bytes: number): BlockSizeSpec => ({ minBytes: bytes, maxBytes: bytes, split: [] });
  let sizes: [BlockSizeSpec, BlockSizeSpec] = [fixed(4096), fixed(4096)];
  const splitOpt = job.get('bssplit');
  const rangeOpt = job.get('bsrange');
  const bsOpt = job.get('bs');
  if (splitOpt) sizes = perDirection(splitOpt, (o, v) => parseBsSplit(o, v, kbBase), sizes);
  else if (rangeOpt) sizes = perDirection(rangeOpt, (o, v) => parseBsRange(o, v, kbBase), sizes);
  else if (bsOpt) sizes = perDirection(bsOpt, (o, v) => fixed(parseBlockSize(o, v, kbBase)), sizes);
  const o = splitOpt ?? rangeOpt ?? bsOpt;
  job.note('blockSizeBytes', o);
  job.note('readBs', o);
  job.note('writeBs', o);
  return { rw, readBs: sizes[0], writeBs: sizes[1] };
}

/** fio's `read,write,trim` lists: one value for both, an empty one the default; trim is not modelled. */
function perDirection<T>(o: Written, parse: (o: Written, v: string) => T, dflt: [T, T]): [T, T] {
  const parts = o.value.split(',');
  if (parts.length > 3) throw new InputError(o.field, o.value, 'at most read,write,trim values');
  if (parts.length === 3 && parts[2].trim() !== '') throw new InputError(o.field, o.value, 'read[,write]: trim is not modelled (leave the third value empty)');
  const read = parts[0].trim() === '' ? dflt[0] : parse(o, parts[0]);
  if (parts.length === 1) return [read, read];
  return [read, parts[1].trim() === '' ? dflt[1] : parse(o, parts[1])];
}

/** bsrange: `MIN-MAX`. */
function parseBsRange(o: Written, v: string, kbBase: KbBase): BlockSizeSpec {
  const m = /^\s*([^-\s]+)\s*-\s*([^-\s]+)\s*$/.exec(v);
  if (!m) throw new InputError(o.field, o.value, `MIN-MAX[,MIN-MAX] block sizes, e.g. 4k-64k; ${BLOCK_SIZE_ALLOWED}`);
  const lo = parseBlockSize(o, m[1], kbBase);
  const hi = parseBlockSize(o, m[2], kbBase);
  return { minBytes: Math.min(lo, hi), maxBytes: Math.max(lo, hi), split: [] };
}

/** bssplit: `SIZE/PCT:SIZE/PCT...`; sizes without a share split what the others leave, equally (as fio). */
function parseBsSplit(o: Written, v: string, kbBase: KbBase): BlockSizeSpec {
  const entries = v.split(':').map((e) => {
    const [size, pct, extra] = e.split('/');
    if (extra !== undefined || size.trim() === '') throw new InputError(o.field, o.value, 'SIZE/PCT:SIZE/PCT..., e.g. 4k/50:64k/50');
    const bytes = parseBlockSize(o, size, kbBase);
    if (pct === undefined || pct.trim() === '') return { bytes, pct: -1 };
    return { bytes, pct: parseCount(o.field, pct, 'a whole percentage per size, e.g. 4k/50:64k/50') };
  });
  const given = entries.filter((e) => e.pct >= 0).reduce((t, e) => t + e.pct, 0);
  const open = entries.filter((e) => e.pct < 0);
  if (given > 100 || (open.length === 0 && given !== 100)) throw new InputError(o.field, o.value, 'shares adding up to 100, e.g. 4k/50:64k/50');
  const rest = 100 - given;
  open.forEach((e, i) => {
    e.pct = Math.floor(rest / open.length) + (i < rest % open.length ? 1 : 0);
  });
  const split = entries.filter((e) => e.pct > 0);
  const sizes = split.map((e) => e.bytes);
  return { minBytes: Math.min(...sizes), maxBytes: Math.max(...sizes), split };
}

/** ramp_time, thinktime (microseconds without a unit, as in fio) with thinktime_spin and thinktime_blocks, and the rate caps and minimums. */
function resolvePacing(
  job: JobOptionSlots,
  kbBase: KbBase,
): Pick<FioJobSpec, 'rampTimeNs' | 'thinktimeNs' | 'thinktimeSpinNs' | 'thinktimeBlocks' | 'rate' | 'rateIops' | 'rateMin' | 'rateIopsMin'> {
  const time = (key: string, unit: 's' | 'us'): number => {
    const o = job.get(key);
    return o ? parseTimeNs(o.field, o.value, unit) : 0;
  };
  const blocksOpt = job.get('thinktime_blocks');
  const thinktimeBlocks = blocksOpt ? parseCount(blocksOpt.field, blocksOpt.value, 'a whole number of I/Os >= 1') : 1;
  if (thinktimeBlocks < 1) throw new InputError(blocksOpt!.field, blocksOpt!.value, 'a whole number of I/Os >= 1');
  const perDir = (key: string, parse: (o: Written, v: string) => number): PerDirection => {
    const o = job.get(key);
    if (!o) return { read: 0, write: 0 };
    const [read, write] = perDirection(o, parse, [0, 0]);
    return { read, write };
  };
  const bytesPerS = (o: Written, v: string) => parseSizeBytes(o.field, v, kbBase);
  const iops = (o: Written, v: string) => parseCount(o.field, v, 'a whole number of I/Os per second per direction, e.g. 1000 or 1000,500');
  const thinktimeNs = time('thinktime', 'us');
  const thinktimeSpinNs = time('thinktime_spin', 'us');
  const spinOpt = job.get('thinktime_spin');
  if (spinOpt && thinktimeSpinNs > thinktimeNs) throw new InputError(spinOpt.field, spinOpt.value, 'at most thinktime (the busy part of it)');
  return {
    rampTimeNs: time('ramp_time', 's'),
    thinktimeNs,
    thinktimeSpinNs,
    thinktimeBlocks,
    rate: perDir('rate', bytesPerS),
    rateIops: perDir('rate_iops', iops),
    rateMin: perDir('rate_min', bytesPerS),
    rateIopsMin: perDir('rate_iops_min', iops),
  };
}

/** loops (default 1), io_size (default: size) and number_ios (default: no limit). */
function resolveAmount(job: JobOptionSlots, kbBase: KbBase): { loops: number; ioSizeBytes: number | null; numberIos: number } {
  const loopsOpt = job.get('loops');
  const loops = loopsOpt ? parseCount(loopsOpt.field, loopsOpt.value, 'a whole number >= 1') : 1;
  if (loops < 1) throw new InputError(loopsOpt!.field, loopsOpt!.value, 'a whole number >= 1');
  const ioOpt = job.get('io_size');
  const ioSizeBytes = ioOpt ? parseRegionBytes(ioOpt, kbBase) : null;
  if (ioOpt && ioSizeBytes === 0) throw new InputError(ioOpt.field, ioOpt.value, 'a size > 0, e.g. 1g');
  job.note('ioSizeBytes', ioOpt);
  const nOpt = job.get('number_ios');
  const numberIos = nOpt ? parseCount(nOpt.field, nOpt.value, 'a whole number of I/Os >= 0 (0: no limit)') : 0;
  return { loops, ioSizeBytes, numberIos };
}

/** random_distribution: random (default), zipf:THETA, pareto:H, normal:DEV, zoned:A/S:A/S...; zoned_abs and a center value are refused. */
function resolveRandomDistribution(job: JobOptionSlots): RandomDistribution {
  const o = job.get('random_distribution');
  if (!o) return { kind: 'random' };
  const v = o.value.trim();
  const bad = (): never => {
    throw new InputError(o.field, o.value, `${RANDOM_DISTRIBUTION_ALLOWED}; zoned_abs, per-direction zones and a center value are not modelled`);
  };
  const num = (t: string | undefined): number => (t !== undefined && /^\d+(\.\d+)?$/.test(t.trim()) ? Number(t) : bad());
  const [kind, ...args] = v.split(':');
  let d: RandomDistribution;
  if (kind === 'random' && args.length === 0) d = { kind: 'random' };
  else if (kind === 'zipf' && args.length === 1) d = { kind: 'zipf', theta: num(args[0]) };
  else if (kind === 'pareto' && args.length === 1) d = { kind: 'pareto', h: num(args[0]) };
  else if (kind === 'normal' && args.length === 1) d = { kind: 'normal', devPct: num(args[0]) };
  else if (kind === 'zoned' && args.length > 0 && !v.includes(',')) {
    d = {
      kind: 'zoned',
      zones: args.map((z) => {
        const [a, s, extra] = z.split('/');
        if (extra !== undefined) bad();
        return { accessPct: num(a), sizePct: num(s) };
      }),
    };
  } else d = bad();
  job.note('randomDistribution', o);
  return d;
}

/** The job's region: size (required), offset, and offset_increment, which places each numjobs clone. */
function resolveRegion(job: JobOptionSlots, kbBase: KbBase): { sizeBytes: number; offsetBytes: number; offsetIncrementBytes: number } {
  const sizeOpt = regionSizeOpt(job, kbBase);
  if (!sizeOpt) {
    // fio filesetup.c: "<name>: you need to specify size=" when neither a size nor the file gives one
    throw new InputError(
      `[${inputExcerpt(job.sectionName)}] size`,
      undefined,
      `a size: ${inputExcerpt(job.sectionName)}: you need to specify size= (as fio: no size and no file size), e.g. size=64m, or filename=/dev/nvme0n1 for the whole drive`,
    );
  }
  const sizeBytes = parseRegionBytes(sizeOpt, kbBase);
  job.note('sizeBytes', sizeOpt);

  const offsetOpt = job.get('offset');
  const offsetBytes = offsetOpt ? parseRegionBytes(offsetOpt, kbBase) : 0;
  job.note('offsetBytes', offsetOpt);
  const incOpt = job.get('offset_increment');
  const offsetIncrementBytes = incOpt ? parseRegionBytes(incOpt, kbBase) : 0;
  if (incOpt && offsetIncrementBytes % 4096 !== 0) {
    throw new InputError(incOpt.field, incOpt.value, 'a multiple of 4096 bytes (each clone starts on a 4 KiB logical block), e.g. 1g');
  }
  return { sizeBytes, offsetBytes, offsetIncrementBytes };
}

/**
 * The job's size as bytes: `size`, where `size=N%` is N percent of the
 * drive (fio: of the device's size), no more than what lies past `offset`;
 * no size: the drive's (`driveSizeOf`).
 */
function regionSizeOpt(job: JobOptionSlots, kbBase: KbBase): Written | undefined {
  const o = job.get('size');
  if (!o) return driveSizeOf(job, kbBase);
  const pct = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(o.value);
  if (!pct) return o;
  const p = Number(pct[1]);
  if (p <= 0 || p > 100) throw new InputError(o.field, o.value, 'a percentage of the drive from 1% to 100% (fio size=N%), or a size, e.g. 64m');
  const offsetOpt = job.get('offset');
  const offsetBytes = offsetOpt ? parseRegionBytes(offsetOpt, kbBase) : 0;
  const bytes = Math.min(Math.floor((DRIVE_CAPACITY_BYTES * p) / 100), DRIVE_CAPACITY_BYTES - offsetBytes);
  return { ...o, value: String(bytes - (bytes % 4096)) };
}

/**
 * No size, but a filename: the drive's size from the job's offset on, as fio
 * sizes a job on a block device (its `real_file_size` less `offset`).
 */
function driveSizeOf(job: JobOptionSlots, kbBase: KbBase): Written | undefined {
  const fileOpt = job.get('filename');
  if (!fileOpt || nvmeFilenameDevice(fileOpt.value.trim()) === null) return undefined;
  const offsetOpt = job.get('offset');
  const offsetBytes = offsetOpt ? parseRegionBytes(offsetOpt, kbBase) : 0;
  return { key: 'size', value: String(Math.max(0, DRIVE_CAPACITY_BYTES - offsetBytes)), field: `${fileOpt.field} (no size: the drive's size)` };
}

/** The last clone's region ends within the modelled drive (and, if the job writes, within the host's RAM). */
function checkRegionFits(job: JobOptionSlots, rw: RwMode, sizeBytes: number, offsetBytes: number, lastOffsetBytes: number): void {
  const sizeOpt = regionSizeOpt(job, 1024);
  if (!sizeOpt) return;
  const offsetOpt = job.get('offset');
  const incOpt = job.get('offset_increment');
  checkRegionBytes(
    { size: sizeOpt, ...(offsetOpt ? { offset: offsetOpt } : {}), ...(incOpt ? { offsetIncrement: incOpt } : {}) },
    offsetBytes,
    lastOffsetBytes,
    sizeBytes,
    rw !== 'read' && rw !== 'randread',
    totalmem(),
  );
}

/** iodepth (default 1) and numjobs, the number of clones of the job (default 1). */
function resolveDepthAndClones(job: JobOptionSlots): { iodepth: number; numjobs: number } {
  const iodepthOpt = job.get('iodepth');
  const iodepth = iodepthOpt ? parseCount(iodepthOpt.field, iodepthOpt.value, 'a whole number from 1 to 4096') : 1;
  job.note('iodepth', iodepthOpt);

  const numjobsOpt = job.get('numjobs');
  if (!numjobsOpt) return { iodepth, numjobs: 1 };
  const numjobs = parseCount(numjobsOpt.field, numjobsOpt.value, `a whole number from 1 to ${MAX_NUMJOBS}`);
  if (numjobs < 1 || numjobs > MAX_NUMJOBS) {
    throw new InputError(numjobsOpt.field, numjobsOpt.value, `a whole number from 1 to ${MAX_NUMJOBS}`);
  }
  return { iodepth, numjobs };
}

/** runtime (0 or none: no limit, as in fio) and time_based. */
function resolveDuration(job: JobOptionSlots): { runtimeNs: number | null; timeBased: boolean } {
  const runtimeOpt = job.get('runtime');
  const runtimeNs = runtimeOpt ? parseTimeNs(runtimeOpt.field, runtimeOpt.value) : 0;
  job.note('runtimeNs', runtimeOpt);
  const timeBasedOpt = job.get('time_based');
  const timeBased = timeBasedOpt ? parseSetFlag(timeBasedOpt) : false;
  job.note('timeBased', timeBasedOpt);
  return { runtimeNs: runtimeNs === 0 ? null : runtimeNs, timeBased };
}

/** The read share of a mixed job: rwmixread, or 100 − rwmixwrite, whichever was written last. */
function resolveRwmixread(job: JobOptionSlots): number {
  const o = job.get('rwmixread');
  if (!o) return FIO_DEFAULT_RWMIXREAD_PCT;
  const pct = parseCount(o.field, o.value, 'a whole percentage from 0 to 100');
  if (pct > 100) throw new InputError(o.field, o.value, 'a whole percentage from 0 to 100');
  return o.key === 'rwmixwrite' ? 100 - pct : pct;
}

/** verify (default none), do_verify (default 1), verify_pattern, verify_fatal, verify_backlog. */
function resolveVerify(job: JobOptionSlots): { verify: VerifyMode; doVerify: boolean } & Pick<FioJobSpec, 'verifyPattern' | 'verifyFatal' | 'verifyBacklog'> {
  const verifyOpt = job.get('verify');
  const patternOpt = job.get('verify_pattern');
  const verifyPattern = patternOpt ? parseVerifyPattern(patternOpt) : undefined;
  // fio: a verify_pattern without verify= means verify=pattern
  const verify = verifyOpt ? parseVerify(verifyOpt) : verifyPattern ? 'pattern' : 'none';
  if (verify === 'pattern' && !verifyPattern && verifyOpt) {
    throw new InputError(verifyOpt.field, verifyOpt.value, 'verify=pattern together with verify_pattern=<pattern>, e.g. verify_pattern=0xdeadbeef');
  }
  const doVerifyOpt = job.get('do_verify');
  const doVerify = doVerifyOpt ? parseBool(doVerifyOpt) : true;
  const fatalOpt = job.get('verify_fatal');
  const backlogOpt = job.get('verify_backlog');
  const verifyBacklog = backlogOpt ? parseCount(backlogOpt.field, backlogOpt.value, 'a whole number of blocks ≥ 0, e.g. 1024 (0: verify at the end)') : 0;
  return {
    verify,
    doVerify,
    ...(verifyPattern ? { verifyPattern } : {}),
    ...(fatalOpt && parseBool(fatalOpt) ? { verifyFatal: true } : {}),
    ...(verifyBacklog > 0 ? { verifyBacklog } : {}),
  };
}

const VERIFY_PATTERN_ALLOWED =
  'a number (decimal, or 0x hex of any length) or a quoted string, or several joined, e.g. 0xdeadbeef or "abcd"; %o is not modelled';

/** fio's verify_pattern: numbers (hex of any width, or decimal up to 32 bits) and quoted strings, concatenated. */
function parseVerifyPattern(o: Written): number[] {
  const bytes: number[] = [];
  let rest = o.value.trim();
  if (rest === '') throw new InputError(o.field, o.value, VERIFY_PATTERN_ALLOWED);
  while (rest !== '') {
    const hex = /^0[xX]([0-9a-fA-F]+)/.exec(rest);
    const str = /^"([^"]*)"|^'([^']*)'/.exec(rest);
    const dec = /^(\d+)/.exec(rest);
    if (hex) {
      const digits = hex[1].length % 2 ? `0${hex[1]}` : hex[1];
      for (let i = 0; i < digits.length; i += 2) bytes.push(Number.parseInt(digits.slice(i, i + 2), 16));
      rest = rest.slice(hex[0].length);
    } else if (str) {
      for (const c of Buffer.from(str[1] ?? str[2] ?? '', 'utf8')) bytes.push(c);
      rest = rest.slice(str[0].length);
    } else if (dec) {
      const v = Number(dec[1]);
      if (v > 0xffffffff) throw new InputError(o.field, o.value, VERIFY_PATTERN_ALLOWED);
      // fio writes a decimal number in as few bytes as hold it, most significant first
      const width = v > 0xffffff ? 4 : v > 0xffff ? 3 : v > 0xff ? 2 : 1;
      for (let i = width - 1; i >= 0; i--) bytes.push(Math.floor(v / 256 ** i) % 256);
      rest = rest.slice(dec[0].length);
    } else throw new InputError(o.field, o.value, VERIFY_PATTERN_ALLOWED);
  }
  if (bytes.length === 0 || bytes.length > 512) throw new InputError(o.field, o.value, `${VERIFY_PATTERN_ALLOWED}; 1 to 512 bytes`);
  return bytes;
}

/** randseed (default: fio's). */
function resolveRandseed(job: JobOptionSlots): number {
  const o = job.get('randseed');
  return o ? parseCount(o.field, o.value, `a whole number from 0 to ${Number.MAX_SAFE_INTEGER} (decimal or 0x hex)`) : FIO_DEFAULT_RANDSEED;
}

/** The io_uring engine's options (fio engines/io_uring.c), in the order they are checked. */
const IO_URING_OPTIONS = ['hipri', 'fixedbufs', 'registerfiles', 'sqthread_poll', 'sqthread_poll_cpu', 'nonvectored', 'uncached', 'force_async'] as const;

interface ResolvedEngine {
  ioengine: FioIoEngine;
  uring: Pick<FioJobSpec, 'iodepthBatchSubmit' | 'fixedBufs'>;
  ignored: string[];
}

/**
 * ioengine (libaio, psync, pvsync or io_uring; default libaio), fio's
 * iodepth_batch_submit and the io_uring engine's options, which fio takes
 * with ioengine=io_uring only ("Bad option" otherwise).
 */
function resolveEngine(job: JobOptionSlots, direct: boolean, iodepth: number): ResolvedEngine {
  const engineOpt = job.get('ioengine');
  job.note('ioengine', engineOpt);
  const name = engineOpt ? engineOpt.value.trim() : 'libaio';
  if (!(FIO_IOENGINES as readonly string[]).includes(name)) throw new InputError(engineOpt!.field, engineOpt!.value, FIO_IOENGINE_ALLOWED);
  const ioengine = name as FioIoEngine;
  const batchOpt = job.get('iodepth_batch');
  if (ioengine !== 'io_uring') {
    for (const key of IO_URING_OPTIONS) {
      const o = job.get(key);
      if (o)
        throw new InputError(o.field, o.value, `remove it: ${key} is an option of ioengine=io_uring (fio: "Bad option <${key}>" with ioengine=${ioengine})`);
    }
    // one system call per I/O: fio has no batch to make
    return { ioengine, uring: {}, ignored: batchOpt ? [batchOpt.key] : [] };
  }
  if (!direct) throw new InputError(engineOpt!.field, engineOpt!.value, IO_URING_BUFFERED_REFUSED);
  return { ioengine, uring: resolveIoUring(job, batchOpt, iodepth), ignored: job.get('nonvectored') ? ['nonvectored'] : [] };
}

/** A set io_uring option the model cannot run: one line naming why. */
export const IO_URING_REFUSED: Readonly<Partial<Record<(typeof IO_URING_OPTIONS)[number], string>>> = {
  hipri: 'polled completions (IORING_SETUP_IOPOLL) need an NVMe poll queue without interrupts, which the modelled controller does not have',
  registerfiles: 'no published measurement of the per-I/O file reference (fget/fput) it saves was found',
  sqthread_poll: 'the SQ poll kernel thread submits from a CPU of its own, and the model runs each job on one vCPU with no other CPU beside it',
  sqthread_poll_cpu: 'it places the SQ poll thread, and sqthread_poll is not modelled',
  uncached: 'RWF_UNCACHED buffered I/O is not modelled (io_uring runs with direct=1 only)',
  force_async: 'IOSQE_ASYNC hands requests to io-wq worker threads, which the model does not have',
};

/**
 * io_uring: iodepth_batch_submit (default 1; 0 or more than iodepth: iodepth,
 * as fio's fixup_options sets it), fixedbufs; the options the model cannot
 * run are refused unless off. nonvectored (IORING_OP_READ or READV) changes
 * no modelled cost and is ignored.
 */
function resolveIoUring(job: JobOptionSlots, batchOpt: Written | undefined, iodepth: number): ResolvedEngine['uring'] {
  for (const key of IO_URING_OPTIONS) {
    const o = job.get(key);
    const reason = IO_URING_REFUSED[key];
    if (!o || !reason) continue;
    const on = key === 'sqthread_poll_cpu' ? true : key === 'uncached' || key === 'force_async' ? parseInt0(o) !== 0 : parseSetFlag(o);
    if (on)
      throw new InputError(o.field, o.value, `${key === 'sqthread_poll_cpu' ? 'remove it' : `remove it or set ${key}=0`}; ${key} is not modelled: ${reason}`);
  }
  const nonvectored = job.get('nonvectored');
  if (nonvectored && !['-1', '0', '1'].includes(nonvectored.value.trim())) throw new InputError(nonvectored.field, nonvectored.value, '-1 (detect), 0 or 1');
  let batch = 1;
  if (batchOpt) {
    job.note('iodepthBatchSubmit', batchOpt);
    batch = parseCount(batchOpt.field, batchOpt.value, `a whole number of I/Os per submit call, 0 to ${iodepth} (0: iodepth)`);
    if (batch === 0 || batch > iodepth) batch = iodepth;
  }
  const fixedOpt = job.get('fixedbufs');
  job.note('fixedBufs', fixedOpt);
  return { iodepthBatchSubmit: batch, fixedBufs: fixedOpt ? parseSetFlag(fixedOpt) : false };
}

/** A whole number >= 0 (uncached, force_async). */
function parseInt0(o: Written): number {
  return parseCount(o.field, o.value, `a whole number >= 0 (0: off)`);
}

/** direct (or its inverse buffered; default 0 as in fio: through the page cache). */
function resolveDirect(job: JobOptionSlots): boolean {
  const directOpt = job.get('direct');
  job.note('direct', directOpt);
  if (!directOpt) return false;
  const flag = parseBool(directOpt);
  return directOpt.key === 'buffered' ? !flag : flag;
}

/** A FIO_OPT_STR_SET option (a bare key sets it), false when absent. */
function flagSet(job: JobOptionSlots, key: string): boolean {
  const o = job.get(key);
  return o ? parseSetFlag(o) : false;
}

/** fadvise_hint: 1 (default: by rw, sequential or random) or 0; fio's explicit random/sequential/normal values are refused. */
function resolveFadviseHint(job: JobOptionSlots): boolean {
  const o = job.get('fadvise_hint');
  if (!o) return true;
  const v = o.value.trim();
  if (v === '0' || v === '1') return v === '1';
  throw new InputError(
    o.field,
    o.value,
    "0 or 1 (1, fio's default: POSIX_FADV_SEQUENTIAL or _RANDOM by rw); fio's random, sequential and normal are not modelled",
  );
}

/** end_fsync (bool), fsync=N and fdatasync=N (every N writes; 0: never). */
function resolveFlushes(job: JobOptionSlots): { endFsync: boolean; fsyncEveryIos: number; fdatasyncEveryIos: number } {
  const endOpt = job.get('end_fsync');
  const every = (key: string): number => {
    const o = job.get(key);
    return o ? parseCount(o.field, o.value, `a whole number of writes >= 0 (${key} after every N writes; 0: never)`) : 0;
  };
  return { endFsync: endOpt ? parseBool(endOpt) : false, fsyncEveryIos: every('fsync'), fdatasyncEveryIos: every('fdatasync') };
}

/**
 * filename: the drive of the VM the job does I/O to, /dev/nvme<X>n1 (absent: the topology places the job); or fio's
 * list `a:b` (`\:` a colon in a name): one job over several files, here equal parts of its region on its drive (the
 * list's length wins over nrfiles, as in fio). nrfiles: without a filename, that many files. With several files only
 * fio's default file_service_type, roundrobin (one I/O from each file in turn), is modelled.
 */
function resolveFiles(job: JobOptionSlots, sizeBytes: number, blockSizeBytes: number): { filename?: string; nrfiles: number } {
  const o = job.get('filename');
  const names = o ? splitFioFilenames(o.value.trim()) : [];
  let filename: string | undefined;
  let nrfiles = 1;
  if (o && names.length === 1) {
    filename = names[0];
    if (nvmeFilenameDevice(filename) === null) throw new InputError(o.field, o.value, NVME_FILENAME_ALLOWED);
    job.note('filename', o);
  } else if (o) {
    const drives = names.filter((n) => n.startsWith('/dev/'));
    if (names.some((n) => n === '')) throw new InputError(o.field, o.value, 'file names separated by colons, none empty, e.g. a:b');
    if (drives.length > 0)
      throw new InputError(
        o.field,
        o.value,
        `one drive, /dev/nvme<X>n1 (one namespace each), or files that are parts of the job's drive, e.g. a:b; ${drives.join(', ')}: ` +
          'one job doing I/O to several drives is not modelled, each job drives one: give each drive a job of its own, ' +
          'e.g. [a] filename=/dev/nvme0n1 and [b] filename=/dev/nvme1n1',
      );
    nrfiles = names.length;
    job.note('nrfiles', o);
  } else {
    const n = job.get('nrfiles');
    if (n) {
      nrfiles = parseCount(n.field, n.value, `a whole number of files from 1 to ${MAX_NRFILES}`);
      job.note('nrfiles', n);
    }
  }
  const fst = job.get('file_service_type');
  if (fst && nrfiles > 1 && !/^roundrobin(:1)?$/.test(fst.value.trim()))
    throw new InputError(
      fst.field,
      fst.value,
      `roundrobin (fio's default: one I/O from each of the job's ${nrfiles} files in turn); random, sequential, ` +
        'zipf, pareto, normal, gauss and roundrobin:N are not modelled',
    );
  if (nrfiles > 1 && Math.floor(sizeBytes / nrfiles / 4096) * 4096 < blockSizeBytes) {
    const field = o ? o.field : (job.get('nrfiles')?.field ?? 'nrfiles');
    throw new InputError(
      field,
      o ? o.value : nrfiles,
      `at most ${Math.max(1, Math.floor(sizeBytes / blockSizeBytes))} files: size is split between them, each at least bs`,
    );
  }
  return { ...(filename === undefined ? {} : { filename }), nrfiles };
}

/** fio's filename list: names separated by ':', a '\:' being a colon within a name. */
function splitFioFilenames(text: string): string[] {
  const names: string[] = [''];
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '\\' && text[i + 1] === ':') {
      names[names.length - 1] += ':';
      i++;
    } else if (text[i] === ':') names.push('');
    else names[names.length - 1] += text[i];
  }
  return names;
}

/** A whole number of ms ≥ 0 (fio's int options in ms). */
function parseMsec(o: Written, min = 0): number {
  const allowed = `a whole number of ms from ${min}, e.g. 500`;
  const v = parseCount(o.field, o.value, allowed);
  if (v < min) throw new InputError(o.field, o.value, allowed);
  return v;
}

/**
 * bwavgtime / iopsavgtime (the sampling windows, default 500 ms) and the log
 * files: write_bw_log, write_lat_log, write_iops_log, write_hist_log (a file
 * prefix; bare: the job's name), log_avg_msec, log_hist_msec,
 * log_hist_coarseness (0…6), log_offset, per_job_logs.
 */
function resolveStatsAndLogs(job: JobOptionSlots): Pick<FioJobSpec, 'bwAvgMs' | 'iopsAvgMs' | 'logs'> {
  const out: Pick<FioJobSpec, 'bwAvgMs' | 'iopsAvgMs' | 'logs'> = {};
  const bwAvg = job.get('bwavgtime');
  if (bwAvg) out.bwAvgMs = parseMsec(bwAvg, 1);
  const iopsAvg = job.get('iopsavgtime');
  if (iopsAvg) out.iopsAvgMs = parseMsec(iopsAvg, 1);
  const nameOpt = job.get('name');
  const jobName = nameOpt && !nameOpt.field.startsWith('[global]') && nameOpt.value !== '' ? nameOpt.value : job.sectionName;
  const prefix = (key: string): string | undefined => {
    const o = job.get(key);
    if (!o) return undefined;
    const v = o.value.trim();
    if (v.includes('/') && v.endsWith('/')) throw new InputError(o.field, o.value, 'a file name prefix, e.g. mylog (fio appends _bw.1.log)');
    return v === '' ? jobName : v;
  };
  const bw = prefix('write_bw_log');
  const lat = prefix('write_lat_log');
  const iops = prefix('write_iops_log');
  const hist = prefix('write_hist_log');
  if (bw === undefined && lat === undefined && iops === undefined && hist === undefined) return out;
  const avg = job.get('log_avg_msec');
  const histMsec = job.get('log_hist_msec');
  const coarse = job.get('log_hist_coarseness');
  const histCoarseness = coarse ? parseCount(coarse.field, coarse.value, 'a whole number from 0 to 6') : 0;
  if (coarse && histCoarseness > 6) throw new InputError(coarse.field, coarse.value, 'a whole number from 0 to 6');
  const offsetOpt = job.get('log_offset');
  const perJob = job.get('per_job_logs');
  const maxOpt = job.get('log_max_value');
  out.logs = {
    ...(bw === undefined ? {} : { bw }),
    ...(lat === undefined ? {} : { lat }),
    ...(iops === undefined ? {} : { iops }),
    ...(hist === undefined ? {} : { hist }),
    avgMsec: avg ? parseMsec(avg) : 0,
    histMsec: histMsec ? parseMsec(histMsec) : 0,
    histCoarseness,
    offset: offsetOpt ? parseBool(offsetOpt) : false,
    perJobLogs: perJob ? parseBool(perJob) : true,
    ...(maxOpt && parseBool(maxOpt) ? { maxValue: true } : {}),
  };
  // fio samples a logged bandwidth or IOPS at the log's period unless bwavgtime / iopsavgtime says otherwise
  if (bw !== undefined && !bwAvg && out.logs.avgMsec > 0) out.bwAvgMs = out.logs.avgMsec;
  if (iops !== undefined && !iopsAvg && out.logs.avgMsec > 0) out.iopsAvgMs = out.logs.avgMsec;
  return out;
}

/** stonewall (starts a barrier group) and new_group (starts a reporting group); buildJobs numbers the groups. */
function resolveGroups(job: JobOptionSlots): { stonewall: boolean; newGroup: boolean } {
  const stonewallOpt = job.get('stonewall');
  const stonewall = stonewallOpt ? parseSetFlag(stonewallOpt) : false;
  const newGroupOpt = job.get('new_group');
  const newGroup = newGroupOpt ? parseSetFlag(newGroupOpt) : false;
  return { stonewall, newGroup };
}

const RW_ALLOWED = `one of ${RW_MODES.join(', ')} (readwrite = rw); trim and ":N" suffixes are not modelled`;

function parseRw(o: Written): RwMode {
  const v = o.value.trim();
  if (v === 'readwrite') return 'rw';
  if ((RW_MODES as readonly string[]).includes(v)) return v as RwMode;
  throw new InputError(o.field, o.value, RW_ALLOWED);
}

/** One block size (of a bs, bsrange or bssplit value `v`), checked against the model's limits. */
function parseBlockSize(o: Written, v: string, kbBase: KbBase): number {
  let bytes: number;
  try {
    bytes = parseSizeBytes(o.field, v, kbBase);
  } catch {
    throw new InputError(o.field, o.value, BLOCK_SIZE_ALLOWED);
  }
  checkIecSuffix({ ...o, value: v }, bytes, kbBase, BLOCK_SIZE_ALLOWED);
  if (bytes < 4096 || bytes > 2 * 1024 * 1024 || bytes % 4096 !== 0) {
    throw new InputError(o.field, o.value, `${BLOCK_SIZE_ALLOWED}; the model's NVMe namespace has 4 KiB logical blocks`);
  }
  return bytes;
}

/** A size of the model's regions: parsed by fio's rules, with a hint when fio's kib = 1000 bites. */
function parseRegionBytes(o: Written, kbBase: KbBase): number {
  return checkIecSuffix(o, parseSizeBytes(o.field, o.value, kbBase), kbBase, 'a multiple of 4096 bytes, e.g. 64m');
}

/**
 * fio's default kb_base=1024 reads "4KiB" as 4000 bytes (its inverted
 * compatibility mode); say so when that breaks 4 KiB alignment.
 */
function checkIecSuffix(o: Written, bytes: number, kbBase: KbBase, allowed: string): number {
  if (kbBase === 1024 && /[kmgtp]ib$/i.test(o.value.trim()) && bytes % 4096 !== 0) {
    throw new InputError(
      o.field,
      o.value,
      `${allowed}; with fio's default kb_base=1024, KiB/MiB/GiB mean powers of 1000 (4KiB = 4000 bytes): write 4k, or set kb_base=1000`,
    );
  }
  return bytes;
}

function parseVerify(o: Written): VerifyMode {
  const v = o.value.trim();
  if (v === '0' || v === 'none') return 'none';
  if (v === 'crc32c' || v === 'crc32c-intel') return 'crc32c';
  if (v === 'md5' || v === 'sha256' || v === 'sha1' || v === 'xxhash' || v === 'meta' || v === 'pattern') return v;
  throw new InputError(
    o.field,
    o.value,
    '0 (none), crc32c (or crc32c-intel), md5, sha1, sha256, xxhash, meta or pattern; crc7, crc16, crc32, crc64, sha3-*, sha512 and sha224 are not modelled',
  );
}

/** fio FIO_OPT_BOOL: a value is required; 0 is false, any other whole number true. */
function parseBool(o: Written, allowed = `${o.key}=0 or ${o.key}=1`): boolean {
  if (o.value.trim() === '') throw new InputError(o.field, '', `${allowed} (fio requires a value for ${o.key})`);
  return parseCount(o.field, o.value, allowed) !== 0;
}

/** fio FIO_OPT_STR_SET: a bare key sets it; a value 0 clears it. */
function parseSetFlag(o: Written): boolean {
  if (o.value.trim() === '') return true;
  return parseCount(o.field, o.value, `the bare key ${o.key}, or ${o.key}=0 / ${o.key}=1`) !== 0;
}

/** The known option name closest to a misspelt one, if it is close (as fio's "Did you mean"). */
function closestOptionName(name: string): string | undefined {
  return closestName(name, [...Object.keys(FIO_OPTION_TABLE), ...Object.keys(FIO_OPTION_ALIASES)], Math.max(1, Math.floor(name.length / 4)));
}
