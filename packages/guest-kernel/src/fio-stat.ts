/**
 * fio's per-job statistics (stat.c, io_u.c, iolog.c of fio 3.33), kept by the
 * guest's fio job engine in model time, so the reporters can print every
 * number fio prints, computed as fio computes it:
 *
 * - `io_stat` (add_stat_sample): min, max, samples, Welford mean and S, for
 *   slat, clat and lat per direction; exact, so lat's mean is slat's plus
 *   clat's;
 * - the clat histogram in fio's own log-linear buckets (plat_val_to_idx:
 *   FIO_IO_U_PLAT_BITS = 6, FIO_IO_U_PLAT_VAL = 64, 29 groups), from which fio
 *   computes its percentiles and json+ prints its bins;
 * - `io_u_map` (io_u_mark_depth: the depth after each submission),
 *   `io_u_submit` / `io_u_complete` (io_u_mark_submit / _complete: I/Os per
 *   submit call and per reap), with their call counts;
 * - bandwidth and IOPS samples every `bw_avg_time` / `iops_avg_time` model ms
 *   (__add_samples: the rate over the window since the last sample, KiB/s and
 *   I/Os per s, per direction that moved data in it);
 * - the job's log files (write_bw_log, write_lat_log, write_iops_log,
 *   write_hist_log) as fio writes them: one entry per I/O, or with
 *   log_avg_msec one averaged entry per window (add_log_sample);
 * - the block device's counters as /proc/diskstats keeps them for the job's
 *   drive (ios, ticks, time in queue, busy time), which fio reports as
 *   disk_util;
 * - context switches: the job's thread sleeps in io_getevents each time it
 *   waits for a completion (one switch out per sleep).
 */

/** fio's histogram: 64 buckets per power of two, 29 groups. */
export const FIO_IO_U_PLAT_BITS = 6;
export const FIO_IO_U_PLAT_VAL = 1 << FIO_IO_U_PLAT_BITS;
export const FIO_IO_U_PLAT_GROUP_NR = 29;
export const FIO_IO_U_PLAT_NR = FIO_IO_U_PLAT_GROUP_NR * FIO_IO_U_PLAT_VAL;
/** fio's io_u_map / io_u_submit / io_u_complete buckets. */
export const FIO_IO_U_MAP_NR = 7;
/** fio's default bw_avg_time and iops_avg_time, ms. */
export const FIO_DEFAULT_AVG_TIME_MS = 500;

/** fio's plat_val_to_idx(): the histogram bucket of a latency in ns. */
export function plat_val_to_idx(val: number): number {
  if (val >= 0 && val < 2 ** 31) {
    // the same with integer arithmetic: the most significant bit from clz32, the offset by a shift
    const u = Math.floor(val);
    if (u < FIO_IO_U_PLAT_VAL << 1) return u;
    const errorBits = 31 - Math.clz32(u) - FIO_IO_U_PLAT_BITS;
    return ((errorBits + 1) << FIO_IO_U_PLAT_BITS) + ((FIO_IO_U_PLAT_VAL - 1) & (u >>> errorBits));
  }
  const v = Math.max(0, Math.floor(val));
  const msb = v === 0 ? 0 : Math.floor(Math.log2(v));
  // Math.log2 may round up just below a power of two
  const m = v > 0 && 2 ** msb > v ? msb - 1 : msb;
  if (m <= FIO_IO_U_PLAT_BITS) return v;
  const errorBits = m - FIO_IO_U_PLAT_BITS;
  const base = (errorBits + 1) << FIO_IO_U_PLAT_BITS;
  const offset = (FIO_IO_U_PLAT_VAL - 1) & Math.floor(v / 2 ** errorBits);
  return Math.min(base + offset, FIO_IO_U_PLAT_NR - 1);
}

/** fio's plat_idx_to_val(): the value fio reports for a bucket (the middle of its range, integer). */
export function plat_idx_to_val(idx: number): number {
  if (idx < FIO_IO_U_PLAT_VAL << 1) return idx;
  const errorBits = (idx >> FIO_IO_U_PLAT_BITS) - 1;
  const base = 2 ** (errorBits + FIO_IO_U_PLAT_BITS);
  const k = idx % FIO_IO_U_PLAT_VAL;
  return Math.floor(base + (k + 0.5) * 2 ** errorBits);
}

/** fio's struct io_stat. */
export interface FioIoStat {
  min: number;
  max: number;
  samples: number;
  mean: number;
  /** Welford's running sum of squared differences (fio's S) */
  s: number;
}

export function newIoStat(): FioIoStat {
  return { min: Number.POSITIVE_INFINITY, max: 0, samples: 0, mean: 0, s: 0 };
}

/** fio's add_stat_sample(). */
export function add_stat_sample(is: FioIoStat, data: number): void {
  if (data > is.max) is.max = data;
  if (data < is.min) is.min = data;
  const delta = data - is.mean;
  if (delta) {
    is.mean += delta / (is.samples + 1);
    is.s += delta * (data - is.mean);
  }
  is.samples++;
}

/** Two io_stats as one (fio's sum_stat, as group_reporting uses). */
export function sum_stat(a: FioIoStat, b: FioIoStat): FioIoStat {
  if (b.samples === 0) return { ...a };
  if (a.samples === 0) return { ...b };
  const n = a.samples + b.samples;
  const delta = b.mean - a.mean;
  return {
    min: Math.min(a.min, b.min),
    max: Math.max(a.max, b.max),
    samples: n,
    mean: a.mean + (delta * b.samples) / n,
    s: a.s + b.s + (delta * delta * a.samples * b.samples) / n,
  };
}

/** The sample standard deviation fio prints (0 with fewer than two samples). */
export function ioStatDev(is: FioIoStat): number {
  return is.samples > 1 ? Math.sqrt(is.s / (is.samples - 1)) : 0;
}

/**
 * Which log files a job writes, and how (fio's write_*_log, log_avg_msec,
 * log_hist_msec, log_hist_coarseness, log_offset, per_job_logs). Each log is
 * named by its file prefix (fio's value of write_*_log, or the job's name);
 * absent: not written.
 */
export interface FioLogSpec {
  bw?: string;
  lat?: string;
  iops?: string;
  hist?: string;
  /** log_hist_coarseness: 2^n fio buckets per column of the histogram log */
  histCoarseness: number;
  /** per_job_logs: the file names carry the job's number */
  perJobLogs: boolean;
  /** log_max_value: an averaged entry carries the window's largest value, not its mean */
  maxValue?: boolean;
  /** log_avg_msec: 0 logs every I/O */
  avgMsec: number;
  /** log_hist_msec */
  histMsec: number;
  /** log_offset: each entry carries the I/O's offset */
  offset: boolean;
}

/** One log entry as fio writes it: time (ms since the job started), value, data direction, block size, offset. */
export interface FioLogEntry {
  timeMs: number;
  value: number;
  ddir: number;
  bs: number;
  offset: number;
}

/** One write_hist_log entry: time, direction, block size, the clat histogram's bucket counts since the last entry. */
export interface FioHistLogEntry {
  timeMs: number;
  ddir: number;
  bs: number;
  counts: number[];
}

/** The job's logs, by fio's file suffix (bw, iops, clat, slat, lat) and the clat histogram log. */
export interface FioJobLogs {
  bw?: FioLogEntry[];
  iops?: FioLogEntry[];
  clat?: FioLogEntry[];
  slat?: FioLogEntry[];
  lat?: FioLogEntry[];
  clatHist?: FioHistLogEntry[];
}

/** One direction's statistics. */
export interface FioDirStat {
  slat: FioIoStat;
  clat: FioIoStat;
  lat: FioIoStat;
  /** clat in fio's buckets: [index, count] of every non-empty bucket, ascending */
  clatPlat: [number, number][];
  bw: FioIoStat;
  iops: FioIoStat;
}

/** What the engine hands back: plain data, safe to post between threads. */
export interface FioJobStat {
  read: FioDirStat;
  write: FioDirStat;
  ioUMap: number[];
  ioUSubmit: number[];
  ioUComplete: number[];
  totalSubmit: number;
  totalComplete: number;
  /** I/Os issued, fio's total_io_u summed over directions (io_u_map's total) */
  totalIoU: number;
  ctx: number;
  disk: FioDiskStat;
  logs: FioJobLogs;
}

/**
 * The drive's counters as the guest block layer keeps them for this job
 * (part_stat: ios, sectors, ticks, io_ticks, time in queue), ms as the kernel
 * counts them; `busyMs` lists the half-open model-ms ranges the drive had this
 * job's I/O in flight, so jobs on one drive can be joined.
 */
export interface FioDiskStat {
  ios: [number, number];
  ticksMs: [number, number];
  inQueueMs: number;
  busyMs: [number, number][];
}

class DirCollector {
  slat = newIoStat();
  clat = newIoStat();
  lat = newIoStat();
  plat = new Float64Array(FIO_IO_U_PLAT_NR);
  bw = newIoStat();
  iops = newIoStat();
  bytes = 0;
  blocks = 0;
  statBytes = 0;
  statBlocks = 0;
  histSince = new Float64Array(FIO_IO_U_PLAT_NR);
  histLastMs = 0;
  out(): FioDirStat {
    const clatPlat: [number, number][] = [];
    for (let i = 0; i < FIO_IO_U_PLAT_NR; i++) if (this.plat[i] > 0) clatPlat.push([i, this.plat[i]]);
    return { slat: this.slat, clat: this.clat, lat: this.lat, clatPlat, bw: this.bw, iops: this.iops };
  }
}

/** fio's io_log averaging window for one direction (iolog avg_window / avg_last). */
class AvgLog {
  readonly entries: FioLogEntry[] = [];
  private readonly window = [newIoStat(), newIoStat()];
  private readonly last = [0, 0];
  constructor(
    private readonly avgMsec: number,
    private readonly maxValue = false,
  ) {}
  /** add_log_sample() */
  add(elapsedMs: number, value: number, ddir: number, bs: number, offset: number): void {
    if (!this.avgMsec) {
      this.entries.push({ timeMs: elapsedMs, value, ddir, bs, offset });
      return;
    }
    add_stat_sample(this.window[ddir], value);
    if (elapsedMs < this.last[ddir] || elapsedMs - this.last[ddir] < this.avgMsec) return;
    this.flush(ddir, elapsedMs);
    this.last[ddir] = elapsedMs - (elapsedMs % this.avgMsec);
  }
  /** __add_stat_to_log(): the window's mean, rounded (or its largest value, log_max_value), as one entry (block size 0) */
  flush(ddir: number, elapsedMs: number): void {
    const w = this.window[ddir];
    if (w.samples) this.entries.push({ timeMs: elapsedMs, value: this.maxValue ? w.max : Math.floor(w.mean + 0.5), ddir, bs: 0, offset: 0 });
    this.window[ddir] = newIoStat();
  }
  /** finalize_logs() */
  finish(elapsedMs: number): void {
    if (!this.avgMsec) return;
    this.flush(0, elapsedMs);
    this.flush(1, elapsedMs);
  }
}

function mapIndexDepth(depth: number): number {
  if (depth >= 64) return 6;
  if (depth >= 32) return 5;
  if (depth >= 16) return 4;
  if (depth >= 8) return 3;
  if (depth >= 4) return 2;
  if (depth >= 2) return 1;
  return 0;
}

/** __io_u_mark_map(): 0, 1-4, 5-8, 9-16, 17-32, 33-64, more */
function mapIndexCount(nr: number): number {
  if (nr > 64) return 6;
  if (nr > 32) return 5;
  if (nr > 16) return 4;
  if (nr > 8) return 3;
  if (nr > 4) return 2;
  if (nr > 0) return 1;
  return 0;
}

const NS_PER_MS = 1_000_000;

/** The engine's side: call on every submission, completion, reap and sleep, in model time. */
export class FioStatCollector {
  private readonly dirs = [new DirCollector(), new DirCollector()];
  private readonly ioUMap = new Array<number>(FIO_IO_U_MAP_NR).fill(0);
  private readonly ioUSubmit = new Array<number>(FIO_IO_U_MAP_NR).fill(0);
  private readonly ioUComplete = new Array<number>(FIO_IO_U_MAP_NR).fill(0);
  private totalSubmit = 0;
  private totalComplete = 0;
  private totalIoU = 0;
  private ctx = 0;
  private bwSampleNs: number;
  private iopsSampleNs: number;
  private readonly diskIos: [number, number] = [0, 0];
  private readonly diskTicksNs: [number, number] = [0, 0];
  private inQueueNs = 0;
  private inflight = 0;
  private busyFromNs = 0;
  private readonly busyMs: [number, number][] = [];
  private readonly bwLog?: AvgLog;
  private readonly iopsLog?: AvgLog;
  private readonly clatLog?: AvgLog;
  private readonly slatLog?: AvgLog;
  private readonly latLog?: AvgLog;
  private readonly histLog?: FioHistLogEntry[];

  constructor(
    private readonly startNs: number,
    private readonly bwAvgMs = FIO_DEFAULT_AVG_TIME_MS,
    private readonly iopsAvgMs = FIO_DEFAULT_AVG_TIME_MS,
    private readonly log?: FioLogSpec,
    private readonly blockSizeBytes = 0,
  ) {
    this.bwSampleNs = startNs;
    this.iopsSampleNs = startNs;
    const max = log?.maxValue === true;
    if (log?.bw) this.bwLog = new AvgLog(log.avgMsec, max);
    if (log?.iops) this.iopsLog = new AvgLog(log.avgMsec, max);
    if (log?.lat) {
      this.clatLog = new AvgLog(log.avgMsec, max);
      this.slatLog = new AvgLog(log.avgMsec, max);
      this.latLog = new AvgLog(log.avgMsec, max);
    }
    if (log?.hist) this.histLog = [];
  }

  private elapsedMs(nowNs: number): number {
    return Math.floor((nowNs - this.startNs) / NS_PER_MS);
  }

  /**
   * One I/O handed to the device (io_u_mark_depth); `ownCall`: in a submit
   * call of its own (io_u_mark_submit of 1), else counted by `submitCall`.
   */
  submitted(nowNs: number, ownCall = true): void {
    if (this.inflight === 0) this.busyFromNs = nowNs;
    this.inflight++;
    this.totalIoU++;
    this.ioUMap[mapIndexDepth(this.inflight)]++;
    if (ownCall) this.submitCall(1);
  }

  /** One submit call of `nr` I/Os (io_u_mark_submit), e.g. an io_uring_enter of a batch of SQEs. */
  submitCall(nr: number): void {
    this.ioUSubmit[mapIndexCount(nr)]++;
    this.totalSubmit++;
  }

  /** One reap of `nr` completions (io_u_mark_complete). */
  reaped(nr: number): void {
    this.ioUComplete[mapIndexCount(nr)]++;
    this.totalComplete++;
  }

  /** The job's thread sleeps waiting for a completion: one context switch. */
  slept(): void {
    this.ctx++;
  }

  /**
   * One I/O completed: its latencies, bytes, and the samples and log entries
   * due by now. `hasSlat` false: a synchronous engine's I/O, which fio times
   * as clat only (its slat has no samples).
   */
  completed(nowNs: number, ddir: number, bytes: number, offsetBytes: number, submitNs: number, issueNs: number, hasSlat = true): void {
    const d = this.dirs[ddir];
    const slat = Math.max(0, issueNs - submitNs);
    const clat = Math.max(0, nowNs - issueNs);
    const lat = slat + clat;
    if (hasSlat) add_stat_sample(d.slat, slat);
    add_stat_sample(d.clat, clat);
    add_stat_sample(d.lat, lat);
    d.plat[plat_val_to_idx(clat)]++;
    d.bytes += bytes;
    d.blocks++;
    const elapsed = this.elapsedMs(nowNs);
    this.clatLog?.add(elapsed, clat, ddir, bytes, offsetBytes);
    if (hasSlat) this.slatLog?.add(elapsed, slat, ddir, bytes, offsetBytes);
    this.latLog?.add(elapsed, lat, ddir, bytes, offsetBytes);
    if (this.histLog && this.log?.histMsec) this.histSample(d, ddir, clat, elapsed, bytes);
    // the block layer's accounting of the drive: the I/O's time from submission to completion
    this.diskIos[ddir]++;
    this.diskTicksNs[ddir] += lat;
    this.inQueueNs += lat;
    this.inflight--;
    if (this.inflight === 0) this.addBusy(this.busyFromNs, nowNs);
    // per-I/O bandwidth and IOPS logs (log_avg_msec=0) take the place of the windowed samples, as in fio
    if (this.bwLog && this.log?.avgMsec === 0) {
      // add_bw_sample(): bytes over the completion latency in ns, times 10^6
      const rate = clat ? Math.floor((bytes * 1_000_000) / clat) : 0;
      add_stat_sample(d.bw, rate);
      this.bwLog.add(elapsed, rate, ddir, bytes, offsetBytes);
    }
    if (this.iopsLog && this.log?.avgMsec === 0) {
      add_stat_sample(d.iops, 1);
      this.iopsLog.add(elapsed, 1, ddir, bytes, offsetBytes);
    }
    this.tick(nowNs);
  }

  private histSample(d: DirCollector, ddir: number, clat: number, elapsed: number, bytes: number): void {
    d.histSince[plat_val_to_idx(clat)]++;
    if (!d.histLastMs) d.histLastMs = elapsed;
    const window = elapsed - d.histLastMs;
    const histMsec = this.log?.histMsec ?? 0;
    if (histMsec && window >= histMsec) {
      this.histLog?.push({ timeMs: elapsed, ddir, bs: bytes, counts: Array.from(d.histSince) });
      d.histSince.fill(0);
      d.histLastMs = elapsed - (window - histMsec);
    }
  }

  private addBusy(fromNs: number, toNs: number): void {
    const a = Math.floor((fromNs - this.startNs) / NS_PER_MS);
    const b = Math.floor((toNs - this.startNs) / NS_PER_MS) + 1;
    const last = this.busyMs[this.busyMs.length - 1];
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else this.busyMs.push([a, b]);
  }

  /** fio's helper thread: the bandwidth and IOPS samples whose window has passed by `nowNs`. */
  tick(nowNs: number): void {
    const perIoBw = this.bwLog && this.log?.avgMsec === 0;
    const perIoIops = this.iopsLog && this.log?.avgMsec === 0;
    if (!perIoBw && nowNs - this.bwSampleNs >= this.bwAvgMs * NS_PER_MS) {
      this.bwSampleNs = this.addSamples(nowNs, this.bwSampleNs, true, this.bwLog);
    }
    if (!perIoIops && nowNs - this.iopsSampleNs >= this.iopsAvgMs * NS_PER_MS) {
      this.iopsSampleNs = this.addSamples(nowNs, this.iopsSampleNs, false, this.iopsLog);
    }
  }

  /** __add_samples(): each direction's rate over the window, in KiB/s (bw) or I/Os per s. */
  private addSamples(nowNs: number, sinceNs: number, isKb: boolean, log: AvgLog | undefined): number {
    const spentMs = Math.floor((nowNs - sinceNs) / NS_PER_MS);
    const elapsed = this.elapsedMs(nowNs);
    this.dirs.forEach((d, ddir) => {
      const delta = isKb ? d.bytes - d.statBytes : d.blocks - d.statBlocks;
      if (!delta) return;
      const rate = spentMs ? (isKb ? Math.floor(Math.floor((delta * 1000) / spentMs) / 1024) : Math.floor((delta * 1000) / spentMs)) : 0;
      add_stat_sample(isKb ? d.bw : d.iops, rate);
      log?.add(elapsed, rate, ddir, this.blockSizeBytes, 0);
      if (isKb) d.statBytes = d.bytes;
      else d.statBlocks = d.blocks;
    });
    return nowNs;
  }

  /**
   * The statistics so far, at `nowNs` while the job runs (fio's status dumps): copies, so the
   * job goes on counting; the drive busy since the last idle moment counts up to `nowNs`; no logs.
   */
  snapshot(nowNs: number): FioJobStat {
    const dir = (d: DirCollector): FioDirStat => {
      const o = d.out();
      return { ...o, slat: { ...o.slat }, clat: { ...o.clat }, lat: { ...o.lat }, bw: { ...o.bw }, iops: { ...o.iops } };
    };
    const busyMs = this.busyMs.map((r): [number, number] => [r[0], r[1]]);
    if (this.inflight > 0) {
      const a = Math.floor((this.busyFromNs - this.startNs) / NS_PER_MS);
      const b = Math.floor((nowNs - this.startNs) / NS_PER_MS) + 1;
      const last = busyMs[busyMs.length - 1];
      if (last && a <= last[1]) last[1] = Math.max(last[1], b);
      else busyMs.push([a, b]);
    }
    return {
      read: dir(this.dirs[0]),
      write: dir(this.dirs[1]),
      ioUMap: [...this.ioUMap],
      ioUSubmit: [...this.ioUSubmit],
      ioUComplete: [...this.ioUComplete],
      totalSubmit: this.totalSubmit,
      totalComplete: this.totalComplete,
      totalIoU: this.totalIoU,
      ctx: this.ctx,
      disk: {
        ios: [...this.diskIos],
        ticksMs: [Math.floor(this.diskTicksNs[0] / NS_PER_MS), Math.floor(this.diskTicksNs[1] / NS_PER_MS)],
        inQueueMs: Math.floor(this.inQueueNs / NS_PER_MS),
        busyMs,
      },
      logs: {},
    };
  }

  /** Everything, once the job is over at `endNs`. */
  result(endNs: number): FioJobStat {
    const elapsed = this.elapsedMs(endNs);
    for (const l of [this.bwLog, this.iopsLog, this.clatLog, this.slatLog, this.latLog]) l?.finish(elapsed);
    const logs: FioJobLogs = {};
    if (this.bwLog) logs.bw = this.bwLog.entries;
    if (this.iopsLog) logs.iops = this.iopsLog.entries;
    if (this.clatLog) logs.clat = this.clatLog.entries;
    if (this.slatLog) logs.slat = this.slatLog.entries;
    if (this.latLog) logs.lat = this.latLog.entries;
    if (this.histLog) logs.clatHist = this.histLog;
    return {
      read: this.dirs[0].out(),
      write: this.dirs[1].out(),
      ioUMap: this.ioUMap,
      ioUSubmit: this.ioUSubmit,
      ioUComplete: this.ioUComplete,
      totalSubmit: this.totalSubmit,
      totalComplete: this.totalComplete,
      totalIoU: this.totalIoU,
      ctx: this.ctx,
      disk: {
        ios: [...this.diskIos],
        ticksMs: [Math.floor(this.diskTicksNs[0] / NS_PER_MS), Math.floor(this.diskTicksNs[1] / NS_PER_MS)],
        inQueueMs: Math.floor(this.inQueueNs / NS_PER_MS),
        busyMs: this.busyMs,
      },
      logs,
    };
  }
}
