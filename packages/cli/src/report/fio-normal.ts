/**
 * fio's normal (human) output, from a vmstack run (FioRun): per job the
 * show_thread_status_normal() block, then show_group_stats()'s
 * "Run status group N (all jobs):" lines. Line formats, unit scaling
 * (num2str() with fio's defaults sig_figs=4, kb_base=1024, unit_base=bytes;
 * nsec/usec/msec chosen by nsec_to_usec()/nsec_to_msec() and
 * show_clat_percentiles()'s thresholds) and rounding follow fio 3.33's stat.c
 * and lib/num2str.c. The numbers are the ones fio-json.ts computes; see its
 * header for where each comes from. The start-up lines come from
 * formatFioNormalHeader, the "Disk stats" from the jobs' drives; the
 * vmstack section is not printed here (the CLI prints its own tables). `pid=` is this process's pid: every vmstack job runs
 * as a thread of it, as fio jobs do with `thread`.
 */

import type { FioGroupStats } from './fio-json.js';
import {
  cFixed,
  FIO_DEFAULT_PERCENTILES,
  FIO_IODEPTH_LABELS,
  type FioLatKind,
  fioBwAggPercent,
  fioCtime,
  fioDepthDistributions,
  fioDirectionTotals,
  fioDirLatStat,
  fioDirSampleStat,
  fioDiskUtil,
  fioGroupStats,
  fioLatencyDistribution,
  fioPercentiles,
  fioVersionString,
} from './fio-json.js';
import type { DirectionResult, FioRun, JobResult } from './result.js';

/** fio's defaults: significant figures, percentile decimals. */
const SIG_FIGS = 4;
const PERCENTILE_PRECISION = 2;

export type Num2StrUnits = 'none' | 'persec' | 'byte' | 'bit' | 'bytepersec' | 'bitpersec';

/**
 * fio's num2str(): `num` scaled by 1000 (SI) or 1024 (IEC, `pow2`) until it has
 * at most `maxlen` digits, with the remainder as decimals and fio's carry
 * rounding (quirks included: 14.99 with one decimal prints as "14.0").
 */
export function num2str(num: number, maxlen: number, base: number, pow2: boolean, units: Num2StrUnits): string {
  const prefixes = pow2 ? ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi'] : ['', 'k', 'M', 'G', 'T', 'P'];
  const unitStr = { none: '', persec: '/s', byte: 'B', bit: 'bit', bytepersec: 'B/s', bitpersec: 'bit/s' }[units];
  const thousand = pow2 ? 1024 : 1000;
  let n = Math.trunc(num);
  if (units === 'bit' || units === 'bitpersec') n *= 8;
  let post = 0;
  for (let b = base; b > 1; post++) b = Math.trunc(b / thousand);
  let modulo = -1;
  let carry = false;
  // fio bounds this loop by sizeof(sistr) (bytes, not entries) and clamps below
  while (post < 48) {
    if (String(n).length <= maxlen) break;
    modulo = n % thousand;
    n = Math.floor(n / thousand);
    carry = modulo >= thousand / 2;
    post++;
  }
  const done = () => `${n}${prefixes[post < prefixes.length ? post : 0]}${unitStr}`;
  if (modulo === -1) return done();
  const room = maxlen - String(n).length;
  if (room <= 1) {
    if (carry) n++;
    return done();
  }
  const decimals = cFixed(modulo / thousand, room - 1).slice(2);
  return `${n}.${decimals}${prefixes[post < prefixes.length ? post : 0]}${unitStr}`;
}

/** `%<width>.<digits>f` */
function f(x: number, width: number, digits: number): string {
  return cFixed(x, digits).padStart(width);
}

/** display_lat(): one "    clat (usec): min=…, max=…, avg=…, stdev=…" line. */
function displayLat(name: string, dir: DirectionResult, kind: FioLatKind): string {
  const s = fioDirLatStat(dir, kind);
  if (s.N === 0) return '';
  let { min, max, mean, stddev: dev } = s;
  let base = '(nsec)';
  if (min > 2_000_000 && max > 99_999_999 && dev > 1_000_000) {
    [min, max, mean, dev] = [Math.floor(min / 1e6), Math.floor(max / 1e6), mean / 1e6, dev / 1e6];
    base = '(msec)';
  } else if (min > 2000 && max > 99_999 && dev > 1000) {
    [min, max, mean, dev] = [Math.floor(min / 1e3), Math.floor(max / 1e3), mean / 1e3, dev / 1e3];
    base = '(usec)';
  }
  const minp = num2str(min, 6, 1, false, 'none');
  const maxp = num2str(max, 6, 1, false, 'none');
  return `    ${name} ${base}: min=${minp}, max=${maxp}, avg=${f(mean, 5, 2)}, stdev=${f(dev, 5, 2)}\n`;
}

/** show_clat_percentiles(): the "    clat percentiles (usec):" block. */
function showClatPercentiles(dir: DirectionResult, pre: string): string {
  const s = fioDirLatStat(dir, 'clat');
  if (s.N === 0) return '';
  const plist = FIO_DEFAULT_PERCENTILES;
  const ovals = fioPercentiles(s.buckets, plist);
  const minv = Math.min(...ovals);
  const maxv = Math.max(...ovals);
  let scaleDown = 0;
  let divisor = 1;
  let unit = 'nsec';
  if (minv > 2_000_000 && maxv > 99_999_999) [scaleDown, divisor, unit] = [2, 1_000_000, 'msec'];
  else if (minv > 2000 && maxv > 99_999) [scaleDown, divisor, unit] = [1, 1000, 'usec'];
  const top = Math.floor(maxv / divisor);
  const timeWidth = Math.max(5, top > 0 ? Math.trunc(Math.log10(top) + 1) : 0);
  const perLine = Math.floor((80 - 7) / (PERCENTILE_PRECISION + 10 + timeWidth));
  let out = `    ${pre} percentiles (${unit}):\n     |`;
  for (let j = 0; j < ovals.length; j++) {
    if (j !== 0 && j % perLine === 0) out += '     |';
    const last = j === ovals.length - 1;
    let v = ovals[j];
    for (let i = 0; i < scaleDown; i++) v = Math.floor((v + 999) / 1000);
    out += ` ${f(plist[j], PERCENTILE_PRECISION + 3, PERCENTILE_PRECISION)}th=[${String(v).padStart(timeWidth)}]${last ? '\n' : ','}`;
    if (last) break;
    if (j % perLine === perLine - 1) out += '\n';
  }
  return out;
}

/** show_ddir_status() for read or write. */
function showDdirStatus(dir: DirectionResult, name: string, group: FioGroupStats | undefined, ddir: number): string {
  const t = fioDirectionTotals(dir);
  if (!t.runtimeMs) return '';
  const iops = Math.floor((1000 * t.totalIos) / t.runtimeMs);
  let out =
    `  ${name}: IOPS=${num2str(iops, SIG_FIGS, 1, false, 'none')}, ` +
    `BW=${num2str(t.bwBytes, SIG_FIGS, 1, true, 'bytepersec')} (${num2str(t.bwBytes, SIG_FIGS, 1, false, 'bytepersec')})` +
    `(${num2str(t.ioBytes, SIG_FIGS, 1, true, 'byte')}/${t.runtimeMs}msec)\n`;
  out += displayLat('slat', dir, 'slat');
  out += displayLat('clat', dir, 'clat');
  out += displayLat(' lat', dir, 'lat');
  out += showClatPercentiles(dir, 'clat');
  const bw = fioDirSampleStat(dir, 'bw');
  if (bw) {
    const pOfAgg = fioBwAggPercent(group, ddir, bw.mean);
    let { min, max, mean, dev } = bw;
    let bwStr = 'KiB';
    if (mean > 1024 * 1024) {
      [min, max, mean, dev] = [Math.trunc(min / 1024), Math.trunc(max / 1024), mean / 1024, dev / 1024];
      bwStr = 'MiB';
    }
    out +=
      `   bw (${bwStr.padStart(5)}/s): min=${String(min).padStart(5)}, max=${String(max).padStart(5)}, ` +
      `per=${f(pOfAgg, 3, 2)}%, avg=${f(mean, 5, 2)}, stdev=${f(dev, 5, 2)}, samples=${bw.samples}\n`;
  }
  const io = fioDirSampleStat(dir, 'iops');
  if (io) {
    out +=
      `   iops        : min=${String(io.min).padStart(5)}, max=${String(io.max).padStart(5)}, ` +
      `avg=${f(io.mean, 5, 2)}, stdev=${f(io.dev, 5, 2)}, samples=${io.samples}\n`;
  }
  return out;
}

/** show_lat(): "  lat (usec)   : 2=…%, 4=…%" lines, five entries per line, nonzero entries only. */
function showLat(values: number[], labels: string[], unit: string): string {
  let out = '';
  let line = 0;
  let newLine = true;
  let shown = false;
  values.forEach((v, i) => {
    if (v <= 0) return;
    shown = true;
    if (newLine) {
      if (line) out += '\n';
      out += `  lat (${unit})   : `;
      newLine = false;
      line = 0;
    }
    if (line) out += ', ';
    out += `${labels[i]}=${f(v, 3, 2)}%`;
    line++;
    if (line === 5) newLine = true;
  });
  return shown ? `${out}\n` : '';
}

const LAT_LABELS = ['2', '4', '10', '20', '50', '100', '250', '500', '750', '1000'];

const STRERROR: Record<number, string> = {
  5: 'Input/output error',
  12: 'Cannot allocate memory',
  14: 'Bad address',
  22: 'Invalid argument',
  28: 'No space left on device',
  84: 'Invalid or incomplete multibyte or wide character',
};

function verror(job: JobResult): string {
  const parts: string[] = [];
  if (job.verify && job.verify.corrupt > 0) parts.push(`verify: ${job.verify.corrupt} of ${job.verify.blocksChecked} blocks corrupt`);
  if (job.verify && (job.verify.overwritten ?? 0) > 0)
    parts.push(
      `verify: ${job.verify.overwritten} of ${job.verify.blocksChecked} blocks written over by another job (bad header rand_seed: the jobs' regions overlap)`,
    );
  if (job.verify && (job.verify.neverWritten ?? 0) > 0)
    parts.push(`verify: ${job.verify.neverWritten} of ${job.verify.blocksChecked} blocks never written (bad magic header: no verify header in them)`);
  parts.push(`error=${STRERROR[job.error] ?? `errno ${job.error}`}`);
  return parts.join(', ');
}

/** show_thread_status_normal() for one job. */
function showThreadStatusNormal(job: JobResult, group: FioGroupStats | undefined, time: string): string {
  if (!job.read.ioBytes && !job.write.ioBytes && !job.read.totalIos && !job.write.totalIos) return '';
  const err = String(job.error).padStart(2);
  let out = job.error
    ? `${job.jobname}: (groupid=${job.groupid}, jobs=${job.jobs ?? 1}): err=${err} (${verror(job)}): pid=${process.pid}: ${time}\n`
    : `${job.jobname}: (groupid=${job.groupid}, jobs=${job.jobs ?? 1}): err=${err}: pid=${process.pid}: ${time}\n`;
  if (job.read.ioBytes) out += showDdirStatus(job.read, 'read', group, 0);
  if (job.write.ioBytes) out += showDdirStatus(job.write, 'write', group, 1);
  const lat = fioLatencyDistribution(job);
  out += showLat(lat.ns, LAT_LABELS, 'nsec');
  out += showLat(lat.us, LAT_LABELS, 'usec');
  out += showLat(lat.ms, [...LAT_LABELS, '2000', '>=2000'], 'msec');
  out += `  cpu          : usr=${f(job.usrCpuPct, 3, 2)}%, sys=${f(job.sysCpuPct, 3, 2)}%, ctx=${job.ctx}, majf=0, minf=0\n`;
  const dist = fioDepthDistributions(job);
  const depth = FIO_IODEPTH_LABELS.map((l, i) => `${l}=${f(dist.level[i] ?? job.iodepthLevels?.[l] ?? 0, 3, 1)}%`).join(', ');
  out += `  IO depths    : ${depth}\n`;
  const line = (values: number[]) => ['0', '4', '8', '16', '32', '64', '>=64'].map((l, i) => `${l}=${f(values[i] ?? 0, 3, 1)}%`).join(', ');
  out += `     submit    : ${line(dist.submit)}\n`;
  out += `     complete  : ${line(dist.complete)}\n`;
  out += `     issued rwts: total=${job.read.totalIos},${job.write.totalIos},0,0 short=0,0,0,0 dropped=0,0,0,0\n`;
  if (job.iodepth) {
    out += `     latency   : target=0, window=0, percentile=100.00%, depth=${job.iodepth}\n`;
  }
  return out;
}

/** show_group_stats(): "Run status group N (all jobs):" and one line per direction with I/O. */
function showGroupStats(g: FioGroupStats): string {
  let out = `\nRun status group ${g.groupid} (all jobs):\n`;
  const names = ['   READ', '  WRITE', '   TRIM'];
  for (let i = 0; i < 3; i++) {
    if (!g.maxRunMs[i]) continue;
    const bw = (v: number, pow2: boolean) => num2str(v, SIG_FIGS, 1, pow2, 'bytepersec');
    out +=
      `${names[i]}: bw=${bw(g.aggBps[i], true)} (${bw(g.aggBps[i], false)}), ` +
      `${bw(g.minBwBps[i], true)}-${bw(g.maxBwBps[i], true)} (${bw(g.minBwBps[i], false)}-${bw(g.maxBwBps[i], false)}), ` +
      `io=${num2str(g.ioBytes[i], SIG_FIGS, 1, true, 'byte')} (${num2str(g.ioBytes[i], SIG_FIGS, 1, false, 'byte')}), ` +
      `run=${g.minRunMs[i]}-${g.maxRunMs[i]}msec\n`;
  }
  return out;
}

/** What fio's start-up lines say about a job. */
export interface FioJobHeader {
  name: string;
  groupid: number;
  rw: string;
  blockSizeBytes: number;
  ioengine: string;
  iodepth: number;
  /** the clone index: fio prints clones after the first as "..." */
  jobIndex: number;
}

/**
 * fio's lines before the run: one "name: (g=N): rw=…, bs=(R) …, ioengine=…,
 * iodepth=N" per job section ("..." for its further clones), the version, and
 * "Starting N process(es)".
 */
export function formatFioNormalHeader(jobs: readonly FioJobHeader[], threads = false): string {
  let out = '';
  for (const j of jobs) {
    if (j.jobIndex > 0) {
      if (j.jobIndex === 1) out += '...\n';
      continue;
    }
    const bs = `${j.blockSizeBytes}B-${j.blockSizeBytes}B`;
    out += `${j.name}: (g=${j.groupid}): rw=${j.rw}, bs=(R) ${bs}, (W) ${bs}, (T) ${bs}, ioengine=${j.ioengine}, iodepth=${j.iodepth}\n`;
  }
  const kind = threads ? 'thread' : 'process';
  const plural = jobs.length === 1 ? '' : threads ? 's' : 'es';
  out += `${fioVersionString()}\nStarting ${jobs.length} ${kind}${plural}\n\n`;
  return out;
}

/** show_disk_util(): "Disk stats (read/write):" and one line per drive. */
export function formatFioDiskStats(jobs: readonly JobResult[]): string {
  const disks = fioDiskUtil(jobs);
  if (disks.length === 0) return '';
  let out = '\nDisk stats (read/write):\n';
  for (const d of disks) {
    out +=
      `  ${d.name}: ios=${d.ios[0]}/${d.ios[1]}, merge=${d.merges[0]}/${d.merges[1]}, ` +
      `ticks=${d.ticks[0]}/${d.ticks[1]}, in_queue=${d.inQueue}, util=${f(d.util, 3, 2)}%\n`;
  }
  return out;
}

/** fio's normal output for the run (per-job blocks, the run status groups, the disk stats). */
export function formatFioNormal(result: Pick<FioRun, 'timestampMs' | 'jobs'>): string {
  const groups = fioGroupStats(result.jobs);
  const time = fioCtime(result.timestampMs);
  let out = '';
  for (const job of result.jobs) out += showThreadStatusNormal(job, groups.get(job.groupid), time);
  for (const id of [...groups.keys()].sort((a, b) => a - b)) out += showGroupStats(groups.get(id)!);
  out += formatFioDiskStats(result.jobs);
  return out;
}
