/**
 * fio job specs: the validated, unit-carrying description of one fio job
 * clone, as the guest vCPU worker's job engine consumes it (one spec per
 * vCPU). The CLI turns fio job files and command-line options into these
 * (`packages/cli/src/fio/`); the worker calls `validateJobSpec` again on
 * what it receives, so a spec that reaches the engine always obeys the
 * rules below.
 *
 * Model limits (fio itself is laxer):
 * - block sizes are multiples of the 4 KiB NVMe LBA of this model, 4 KiB … 2 MiB;
 * - region size and offsets are 4 KiB aligned, and a region holds at least one block;
 * - I/O goes through fio's libaio, psync, pvsync or io_uring engine, O_DIRECT (`direct=1`) or buffered through the
 *   guest's page cache (`direct=0`, fio's default: `mm/page-cache.ts`).
 */
import { InputError } from '@vmstack/shm';
import type { FioLogSpec } from './fio-stat.js';

/** fio `rw=`; fio's `readwrite` is normalised to `rw`. */
export type RwMode = 'read' | 'write' | 'randread' | 'randwrite' | 'rw' | 'randrw';
export const RW_MODES: readonly RwMode[] = ['read', 'write', 'randread', 'randwrite', 'rw', 'randrw'];

/** fio `verify=`; fio's `0` and `crc32c-intel` map to `none` and `crc32c`. */
export type VerifyMode = 'none' | 'crc32c' | 'md5' | 'sha256' | 'sha1' | 'xxhash' | 'meta' | 'pattern';
export const VERIFY_MODES: readonly VerifyMode[] = ['none', 'crc32c', 'md5', 'sha256', 'sha1', 'xxhash', 'meta', 'pattern'];

/** NVMe logical block size of the modelled namespace. */
export const NVME_LBA_SIZE_BYTES = 4096;
export const MIN_BLOCK_SIZE_BYTES = 4096;
export const MAX_BLOCK_SIZE_BYTES = 2 * 1024 * 1024;
export const MAX_IODEPTH = 4096;
/** fio's default `randseed` (options.c: `.def = "0x89"`). */
export const FIO_DEFAULT_RANDSEED = 0x89;

/** Whether a job writes (fio's td_write()). */
export function fioJobWrites(job: { rw: RwMode }): boolean {
  return job.rw !== 'read' && job.rw !== 'randread';
}

/**
 * The seed a job writes its blocks from (stamped in each block's header, as
 * fio stamps `rand_seed` in its verify header): from `randseed` and the
 * clone's index, so clones of one section write different content.
 */
export function fioWriteSeed(job: { randseed: number; jobIndex: number }): number {
  return (job.randseed ^ 0x5a5a5a5a ^ Math.imul(job.jobIndex + 1, 0x9e3779b9)) >>> 0;
}

/** fio's default `rwmixread`. */
export const FIO_DEFAULT_RWMIXREAD_PCT = 50;

export const BLOCK_SIZE_ALLOWED = 'a multiple of 4096 bytes from 4096 to 2 MiB (e.g. 4k, 128k)';

/**
 * The block sizes of one direction: fio `bs` (min = max), `bsrange`
 * (min-max: fio draws min + max × r, aligned down to min) or `bssplit`
 * (each size with its share, percent).
 */
export interface BlockSizeSpec {
  minBytes: number;
  maxBytes: number;
  /** bssplit: sizes and shares (summing to 100); empty: bs or bsrange */
  split: { bytes: number; pct: number }[];
}

/** A value per direction (fio's `read,write` options). */
export interface PerDirection {
  read: number;
  write: number;
}

/** fio `random_distribution`: where random offsets fall (non-uniform ones turn the random map off, as in fio). */
export type RandomDistribution =
  | { kind: 'random' }
  | { kind: 'zipf'; theta: number }
  | { kind: 'pareto'; h: number }
  | { kind: 'normal'; devPct: number }
  /** zoned: `accessPct` of the I/O goes to the next `sizePct` of the region, zone after zone */
  | { kind: 'zoned'; zones: { accessPct: number; sizePct: number }[] };

/** One fio job clone: a `numjobs=N` section becomes N specs, one per vCPU. */
export interface FioJobSpec {
  /** fio job name (section name, or its `name=`); numjobs clones share it. */
  name: string;
  /** 0 … numjobs-1 within its section (fio's subjob number). */
  jobIndex: number;
  /**
   * Barrier group, 0-based, in file order: a job with `stonewall` (alias
   * `wait_for_previous`) starts a new one. Groups run one after another;
   * jobs within a group run concurrently.
   */
  groupId: number;
  /**
   * fio's reporting `groupid` (the `groupid` of fio JSON): starts a new
   * value on `stonewall` or `new_group`. `new_group` alone adds no barrier.
   */
  reportGroupId: number;
  rw: RwMode;
  /** Share of reads in `rw`/`randrw`, percent (fio `rwmixread`, default 50). */
  rwmixreadPct: number;
  /** the largest block size of either direction: the size of each I/O buffer */
  blockSizeBytes: number;
  /** fio `bs=r,w`, `bsrange`, `bssplit`, per direction */
  readBs: BlockSizeSpec;
  writeBs: BlockSizeSpec;
  /** fio `loops` (default 1): passes over the job's I/O amount */
  loops: number;
  /** fio `io_size`: bytes of I/O per loop; null: `size` */
  ioSizeBytes: number | null;
  /** fio `number_ios`: stop after this many I/Os; 0: no limit */
  numberIos: number;
  /** fio `random_distribution` (default random: uniform) */
  randomDistribution: RandomDistribution;
  /** fio `ramp_time` in model ns: I/O before it is not counted; `runtime` starts after it */
  rampTimeNs: number;
  /** fio `thinktime` (model ns; 0: none), of it `thinktime_spin` busy, after every `thinktime_blocks` I/Os */
  thinktimeNs: number;
  thinktimeSpinNs: number;
  thinktimeBlocks: number;
  /** fio `rate` and `rate_iops` per direction (0: no cap): bytes and I/Os per second */
  rate: PerDirection;
  rateIops: PerDirection;
  /** fio `rate_min` and `rate_iops_min`: a job below them fails (0: none) */
  rateMin: PerDirection;
  rateIopsMin: PerDirection;
  /** Size of this job's region (fio `size`). */
  sizeBytes: number;
  /** Start of this job's region: `offset` + jobIndex × `offset_increment`. */
  offsetBytes: number;
  /** 1 … 4096. */
  iodepth: number;
  /** fio `runtime` in model ns; null: no limit (run through the region once). */
  runtimeNs: number | null;
  /** fio `time_based`: loop over the region until `runtime` has passed. */
  timeBased: boolean;
  verify: VerifyMode;
  /** fio `do_verify` (default 1): run the verify phase after writing. */
  doVerify: boolean;
  /** fio `randseed` (default 0x89). */
  randseed: number;
  /**
   * fio `ioengine`: libaio (io_submit per I/O, completions by io_getevents),
   * psync / pvsync (one pread/pwrite or preadv/pwritev per I/O, the thread
   * blocked until it completes: depth 1, as fio caps it) or io_uring (SQEs
   * committed by one io_uring_enter per `iodepthBatchSubmit` I/Os).
   */
  ioengine: FioIoEngine;
  /** io_uring: I/Os queued in the SQ ring before one io_uring_enter submits them (fio `iodepth_batch_submit`; absent: 1) */
  iodepthBatchSubmit?: number;
  /** io_uring `fixedbufs`: the buffers are registered (pinned once), so no I/O pins its pages */
  fixedBufs?: boolean;
  /** fio `direct` (default 0, as in fio): O_DIRECT; false: buffered through the guest's page cache */
  direct: boolean;
  /**
   * fio's random map (default on; `norandommap` turns it off): random offsets
   * cover every block once per pass over the region, as fio's axmap does; off:
   * each offset is drawn independently (some blocks twice, some never).
   */
  randomMap: boolean;
  /** fio `fadvise_hint` (default 1): POSIX_FADV_SEQUENTIAL or _RANDOM by `rw`, which sets the page cache's readahead */
  fadviseHint: boolean;
  /** fio `end_fsync`: fsync the file when the job's writes are done (buffered I/O: write back every dirty page) */
  endFsync: boolean;
  /** fio `fsync=N`: fsync after every N writes; 0: never */
  fsyncEveryIos: number;
  /** fio `fdatasync=N`: fdatasync after every N writes; 0: never */
  fdatasyncEveryIos: number;
  /**
   * fio `filename`: the NVMe drive the job does I/O to, as the guest names it
   * (`/dev/nvme<X>n1`, X the drive's index in its VM); absent: the topology
   * places the job on a drive.
   */
  filename?: string;
  /** fio `verify_pattern`: the bytes written into (and checked in) every block, repeated */
  verifyPattern?: number[];
  /** fio `verify_fatal`: the first verify failure ends the job */
  verifyFatal?: boolean;
  /** fio `verify_backlog`: read back every N written blocks while writing (0 or absent: all at the end) */
  verifyBacklog?: number;
  /** fio `bwavgtime` / `iopsavgtime`: the bandwidth and IOPS sampling windows, model ms (default 500) */
  bwAvgMs?: number;
  iopsAvgMs?: number;
  /** fio's write_bw_log, write_lat_log, write_iops_log, write_hist_log: what the job logs (absent: no logs) */
  logs?: FioLogSpec;
  /**
   * fio's nrfiles (or the names of `filename=a:b`): the job's region is split into this many equal files, taken in turn
   * one I/O each (file_service_type=roundrobin); absent: 1
   */
  nrfiles?: number;
  /**
   * fio's --status-interval, in model ns: the job keeps a copy of its statistics at every multiple of it
   * (the first at `statusFirstNs`, model time of its run), for the periodic status dumps (absent: none)
   */
  statusIntervalNs?: number;
  statusFirstNs?: number;
}

/**
 * NVMe commands a buffered job (direct=0) may have in flight for its page
 * cache (readahead and writeback), besides its iodepth fio slots: each takes a
 * command id and a PRP list page of its queue.
 */
export const PAGE_CACHE_MAX_REQUESTS = 32;
/**
 * Pages in one page-cache request: the NVMe driver's queue limit of 127
 * segments (Linux 5.10 `NVME_MAX_SEGS`), each scattered page-cache page a
 * segment of its own.
 */
export const PAGE_CACHE_MAX_REQUEST_PAGES = 127;

/** fio's I/O engines the model runs. */
export const FIO_IOENGINES = ['libaio', 'psync', 'pvsync', 'io_uring'] as const;
export type FioIoEngine = (typeof FIO_IOENGINES)[number];
export const FIO_IOENGINE_ALLOWED = 'libaio, psync, pvsync or io_uring (the submission paths modelled)';
export const IO_URING_BUFFERED_REFUSED =
  'ioengine=io_uring with direct=1 only: a buffered read that misses the page cache goes to an io-wq worker thread, which the model does not have';
/**
 * fio's synchronous engines (FIO_SYNCIO): one system call per I/O that
 * returns when the I/O is done, so fio caps the queue depth at 1 ("note: both
 * iodepth >= 1 and synchronous I/O engine are selected, queue depth will be
 * capped at 1").
 */
export function fioSyncEngine(engine: FioIoEngine): boolean {
  return engine === 'psync' || engine === 'pvsync';
}
/** fio's note when it caps a synchronous engine's iodepth. */
export const FIO_SYNC_DEPTH_NOTE = 'note: both iodepth >= 1 and synchronous I/O engine are selected, queue depth will be capped at 1';
/** The I/Os a job keeps in flight: its iodepth, or 1 for a synchronous engine (fio's cap); its buffers are that many. */
export function fioEngineIodepth(job: { ioengine: FioIoEngine; iodepth: number }): number {
  return fioSyncEngine(job.ioengine) ? 1 : job.iodepth;
}

/** NVMe command slots (command ids, PRP list pages) a job's queue needs: its iodepth, plus the page cache's requests when buffered. */
export function jobNvmeCommandSlots(job: { iodepth: number; direct: boolean }): number {
  return job.direct ? job.iodepth : job.iodepth + PAGE_CACHE_MAX_REQUESTS;
}

export const RANDOM_DISTRIBUTION_ALLOWED =
  'random, zipf:THETA (THETA > 0, not 1), pareto:H (0 < H < 1), normal:DEV (0 < DEV <= 100) or zoned:PCT/PCT[:PCT/PCT...] (access %/size %, each summing to 100)';

function isRandomDistribution(d: RandomDistribution | undefined): boolean {
  if (!d) return false;
  switch (d.kind) {
    case 'random':
      return true;
    case 'zipf':
      return Number.isFinite(d.theta) && d.theta > 0 && d.theta !== 1;
    case 'pareto':
      return Number.isFinite(d.h) && d.h > 0 && d.h < 1;
    case 'normal':
      return Number.isFinite(d.devPct) && d.devPct > 0 && d.devPct <= 100;
    case 'zoned': {
      const sum = (f: (z: { accessPct: number; sizePct: number }) => number) => d.zones.reduce((t, z) => t + f(z), 0);
      return d.zones.length > 0 && d.zones.length <= 256 && sum((z) => z.accessPct) === 100 && sum((z) => z.sizePct) === 100;
    }
    default:
      return false;
  }
}

/** What fio `filename` may be in the model. */
export const NVME_FILENAME_ALLOWED =
  '/dev/nvme<X>n1, a drive of the VM as the guest names it (X: its index in the VM, from 0; n1: the one namespace of each drive)';

/** The index in its VM of the drive `/dev/nvme<X>n1` names; null for anything else (another form, another namespace). */
export function nvmeFilenameDevice(filename: string): number | null {
  const m = /^\/dev\/nvme(0|[1-9]\d{0,5})n1$/.exec(filename);
  return m ? Number(m[1]) : null;
}

/** The result of parsing a job file or command line. */
export interface ParsedJobs {
  /** In file order; numjobs clones adjacent. */
  jobs: FioJobSpec[];
  /** fio options that were accepted but do not change what the model does, each named once. */
  ignoredOptions: string[];
  /** `[global]` (and command-line) options as written, for fio JSON "global options". */
  globalOptions: Record<string, string>;
  /** Each job section's own options as written, by section name, for fio JSON "job options". */
  jobOptions: Record<string, Record<string, string>>;
}

/** How the user wrote the value behind a spec field, so errors can quote it. */
export type JobSpecWrittenAs = Partial<Record<keyof FioJobSpec, { field: string; value: string }>>;

/** The most files (nrfiles, or names in filename=a:b) one job takes in turn. */
export const MAX_NRFILES = 4096;

/** fio option names of the spec fields, used in errors when no `writtenAs` is given. */
const FIO_FIELD: Record<keyof FioJobSpec, string> = {
  name: 'name',
  jobIndex: 'jobIndex',
  groupId: 'groupId',
  reportGroupId: 'reportGroupId',
  rw: 'rw',
  rwmixreadPct: 'rwmixread',
  blockSizeBytes: 'bs',
  readBs: 'bs',
  writeBs: 'bs',
  loops: 'loops',
  ioSizeBytes: 'io_size',
  numberIos: 'number_ios',
  randomDistribution: 'random_distribution',
  rampTimeNs: 'ramp_time',
  thinktimeNs: 'thinktime',
  thinktimeSpinNs: 'thinktime_spin',
  thinktimeBlocks: 'thinktime_blocks',
  rate: 'rate',
  rateIops: 'rate_iops',
  rateMin: 'rate_min',
  rateIopsMin: 'rate_iops_min',
  sizeBytes: 'size',
  offsetBytes: 'offset',
  iodepth: 'iodepth',
  runtimeNs: 'runtime',
  timeBased: 'time_based',
  verify: 'verify',
  doVerify: 'do_verify',
  randseed: 'randseed',
  ioengine: 'ioengine',
  direct: 'direct',
  randomMap: 'norandommap',
  fadviseHint: 'fadvise_hint',
  endFsync: 'end_fsync',
  fsyncEveryIos: 'fsync',
  fdatasyncEveryIos: 'fdatasync',
  filename: 'filename',
  verifyPattern: 'verify_pattern',
  verifyFatal: 'verify_fatal',
  verifyBacklog: 'verify_backlog',
  bwAvgMs: 'bwavgtime',
  iopsAvgMs: 'iopsavgtime',
  logs: 'write_bw_log',
  nrfiles: 'nrfiles',
  statusIntervalNs: '--status-interval',
  statusFirstNs: '--status-interval',
  iodepthBatchSubmit: 'iodepth_batch_submit',
  fixedBufs: 'fixedbufs',
};

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isLbaAligned = (v: number): boolean => v % NVME_LBA_SIZE_BYTES === 0;

/**
 * Checks every rule of the model on a spec and returns it unchanged;
 * throws `InputError` naming the option (as `writtenAs` says the user wrote
 * it, else by its fio name), the value and what is allowed.
 */
export function validateJobSpec(spec: FioJobSpec, writtenAs: JobSpecWrittenAs = {}): FioJobSpec {
  const fail = (key: keyof FioJobSpec, allowed: string): never => {
    const w = writtenAs[key];
    throw new InputError(w?.field ?? FIO_FIELD[key], w ? w.value : spec[key], allowed);
  };

  if (typeof spec.name !== 'string' || spec.name.length === 0) fail('name', 'a non-empty job name');
  if (!isCount(spec.jobIndex)) fail('jobIndex', 'a whole number >= 0');
  if (!isCount(spec.groupId)) fail('groupId', 'a whole number >= 0');
  if (!isCount(spec.reportGroupId)) fail('reportGroupId', 'a whole number >= 0');
  if (!RW_MODES.includes(spec.rw)) fail('rw', `one of ${RW_MODES.join(', ')} (readwrite = rw)`);
  if (!isCount(spec.rwmixreadPct) || spec.rwmixreadPct > 100) fail('rwmixreadPct', 'a whole percentage from 0 to 100');

  const bs = spec.blockSizeBytes;
  if (!isCount(bs) || bs < MIN_BLOCK_SIZE_BYTES || bs > MAX_BLOCK_SIZE_BYTES || !isLbaAligned(bs)) {
    fail('blockSizeBytes', `${BLOCK_SIZE_ALLOWED}; the model's NVMe namespace has 4 KiB logical blocks`);
  }
  for (const key of ['readBs', 'writeBs'] as const) {
    const b = spec[key];
    const sizes = [b?.minBytes, b?.maxBytes, ...(b?.split ?? []).map((x) => x.bytes)];
    const okSize = (x: unknown) => isCount(x) && x >= MIN_BLOCK_SIZE_BYTES && x <= MAX_BLOCK_SIZE_BYTES && isLbaAligned(x);
    if (!b || !sizes.every(okSize) || b.minBytes > b.maxBytes || b.maxBytes > bs) fail(key, `${BLOCK_SIZE_ALLOWED}, min <= max`);
    if (b.split.length > 0 && b.split.reduce((t, x) => t + x.pct, 0) !== 100) fail(key, 'bssplit shares adding up to 100');
  }
  if (!isCount(spec.loops) || spec.loops < 1) fail('loops', 'a whole number >= 1');
  if (spec.ioSizeBytes !== null && (!isCount(spec.ioSizeBytes) || spec.ioSizeBytes === 0)) fail('ioSizeBytes', 'a size > 0');
  if (!isCount(spec.numberIos)) fail('numberIos', 'a whole number >= 0 (0: no limit)');
  if (!isRandomDistribution(spec.randomDistribution)) fail('randomDistribution', RANDOM_DISTRIBUTION_ALLOWED);
  if (!isCount(spec.rampTimeNs)) fail('rampTimeNs', 'a duration >= 0');
  if (!isCount(spec.thinktimeNs)) fail('thinktimeNs', 'a duration >= 0 (microseconds without a unit, as in fio)');
  if (!isCount(spec.thinktimeSpinNs) || spec.thinktimeSpinNs > spec.thinktimeNs) fail('thinktimeSpinNs', 'a duration from 0 to thinktime');
  if (!isCount(spec.thinktimeBlocks) || spec.thinktimeBlocks < 1) fail('thinktimeBlocks', 'a whole number >= 1');
  for (const key of ['rate', 'rateIops', 'rateMin', 'rateIopsMin'] as const) {
    const v = spec[key];
    if (!v || !isCount(v.read) || !isCount(v.write)) fail(key, 'a whole number >= 0 per direction (read[,write]); 0: none');
  }
  const size = spec.sizeBytes;
  if (!isCount(size) || size < bs || !isLbaAligned(size)) {
    fail('sizeBytes', `a multiple of 4096 bytes, at least one block (bs = ${bs} bytes), e.g. 64m`);
  }
  if (!isCount(spec.offsetBytes) || !isLbaAligned(spec.offsetBytes)) {
    fail('offsetBytes', 'a multiple of 4096 bytes >= 0 (the 4 KiB NVMe logical block), e.g. 0, 1g');
  }
  if (!isCount(spec.iodepth) || spec.iodepth < 1 || spec.iodepth > MAX_IODEPTH) {
    fail('iodepth', `a whole number from 1 to ${MAX_IODEPTH}`);
  }
  if (spec.runtimeNs !== null && (!isCount(spec.runtimeNs) || spec.runtimeNs === 0)) {
    fail('runtimeNs', 'a duration > 0, e.g. 10 (seconds), 10s, 500ms; or leave runtime unset');
  }
  if (typeof spec.timeBased !== 'boolean') fail('timeBased', 'set or unset');
  if (spec.timeBased && spec.runtimeNs === null) {
    fail('timeBased', 'time_based only together with runtime > 0 (e.g. runtime=10s), else the job never ends');
  }
  if (!VERIFY_MODES.includes(spec.verify)) fail('verify', `0 (none) or one of ${VERIFY_MODES.slice(1).join(', ')}`);
  if (typeof spec.doVerify !== 'boolean') fail('doVerify', '0 or 1');
  if (!isCount(spec.randseed)) fail('randseed', `a whole number from 0 to ${Number.MAX_SAFE_INTEGER}`);
  if (!FIO_IOENGINES.includes(spec.ioengine)) fail('ioengine', FIO_IOENGINE_ALLOWED);
  if (spec.ioengine === 'io_uring' && !spec.direct) fail('ioengine', IO_URING_BUFFERED_REFUSED);
  const batch = spec.iodepthBatchSubmit;
  if (batch !== undefined && (spec.ioengine !== 'io_uring' || !isCount(batch) || batch < 1 || batch > spec.iodepth)) {
    fail('iodepthBatchSubmit', 'with ioengine=io_uring only, 1 to iodepth');
  }
  if (spec.fixedBufs !== undefined && (spec.ioengine !== 'io_uring' || typeof spec.fixedBufs !== 'boolean'))
    fail('fixedBufs', 'with ioengine=io_uring only, set or unset');
  if (typeof spec.direct !== 'boolean') fail('direct', '0 (buffered, through the page cache) or 1 (O_DIRECT)');
  if (typeof spec.randomMap !== 'boolean') fail('randomMap', 'set or unset');
  if (typeof spec.fadviseHint !== 'boolean') fail('fadviseHint', '0 or 1');
  if (typeof spec.endFsync !== 'boolean') fail('endFsync', '0 or 1');
  if (!isCount(spec.fsyncEveryIos)) fail('fsyncEveryIos', 'a whole number of writes >= 0 (0: never)');
  if (!isCount(spec.fdatasyncEveryIos)) fail('fdatasyncEveryIos', 'a whole number of writes >= 0 (0: never)');
  if (spec.filename !== undefined && (typeof spec.filename !== 'string' || nvmeFilenameDevice(spec.filename) === null)) fail('filename', NVME_FILENAME_ALLOWED);
  if (spec.nrfiles !== undefined) {
    const files = spec.nrfiles;
    if (!isCount(files) || files < 1 || files > MAX_NRFILES) fail('nrfiles', `a whole number of files from 1 to ${MAX_NRFILES}`);
    // each file holds at least one I/O of the largest size
    if (Math.floor(spec.sizeBytes / files / NVME_LBA_SIZE_BYTES) * NVME_LBA_SIZE_BYTES < spec.blockSizeBytes)
      fail('nrfiles', `at most ${Math.max(1, Math.floor(spec.sizeBytes / spec.blockSizeBytes))} files: size is split between them, each at least bs`);
  }
  return spec;
}
