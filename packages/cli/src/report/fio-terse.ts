/**
 * fio's terse output, version 3 (`--output-format terse`, `--minimal`): one
 * line of `;`-separated fields per job, as fio 3.33's
 * show_thread_status_terse_all() and show_ddir_status_terse() print them and
 * its HOWTO ("Terse output") lists them:
 *
 *   3;fio version;jobname;groupid;error;
 *   then for read and for write: io_kbytes;bw KiB/s;iops;runtime ms;
 *     slat min;max;mean;stdev (µs); clat min;max;mean;stdev (µs);
 *     20 clat percentiles "p%=µs" (unused ones "0%=0");
 *     lat min;max;mean;stdev (µs); bw min;max;aggregate %;mean;stdev (KiB/s);
 *   usr cpu%;sys cpu%;ctx;majf;minf;
 *   7 I/O depths (%3.1f%%); 10 µs latency buckets (the ns ones folded into the
 *   first, as fio does); 12 ms latency buckets (%3.2f%%);
 *   per drive: name;read ios;write ios;read merges;write merges;read ticks;
 *   write ticks;in_queue;util%.
 *
 * The numbers are those of the JSON and normal outputs (fio-json.ts).
 */

import {
  cFixed,
  FIO_DEFAULT_PERCENTILES,
  type FioGroupStats,
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

/** fio's FIO_IO_U_LIST_MAX_LEN: percentile fields per direction. */
const FIO_IO_U_LIST_MAX_LEN = 20;

const ff = (x: number) => cFixed(x, 6);

function latFields(dir: DirectionResult, kind: 'slat' | 'clat' | 'lat'): string {
  const s = fioDirLatStat(dir, kind);
  if (s.N === 0) return ';0;0;0.000000;0.000000';
  return `;${Math.floor(s.min / 1000)};${Math.floor(s.max / 1000)};${ff(s.mean / 1000)};${ff(s.stddev / 1000)}`;
}

function ddirTerse(dir: DirectionResult, group: FioGroupStats | undefined, ddir: number): string {
  const t = fioDirectionTotals(dir);
  const bw = t.runtimeMs ? Math.floor(Math.floor((1000 * t.ioBytes) / t.runtimeMs) / 1024) : 0;
  const iops = t.runtimeMs ? Math.floor((1000 * t.totalIos) / t.runtimeMs) : 0;
  let out = `;${t.ioKbytes};${bw};${iops};${t.runtimeMs}`;
  out += latFields(dir, 'slat');
  out += latFields(dir, 'clat');
  const clat = fioDirLatStat(dir, 'clat');
  const ovals = clat.N > 0 ? fioPercentiles(clat.buckets) : [];
  for (let i = 0; i < FIO_IO_U_LIST_MAX_LEN; i++) {
    out += i < ovals.length ? `;${ff(FIO_DEFAULT_PERCENTILES[i])}%=${Math.floor(ovals[i] / 1000)}` : ';0%=0';
  }
  out += latFields(dir, 'lat');
  const b = fioDirSampleStat(dir, 'bw');
  if (b) {
    // show_ddir_status_terse: the mean as a share of the group's aggregate bandwidth
    const agg = group?.aggBps[ddir] ?? 0;
    const pOfAgg = agg ? Math.min(100, (b.mean * 100) / Math.floor(agg / 1024)) : 100;
    out += `;${b.min};${b.max};${ff(pOfAgg)}%;${ff(b.mean)};${ff(b.dev)}`;
  } else out += ';0;0;0.000000%;0.000000;0.000000';
  return out;
}

/** One job's terse v3 line (with the drives' fields when `disks`). */
export function fioTerseLine(job: JobResult, group: FioGroupStats | undefined, disks: string): string {
  let out = `3;${fioVersionString()};${job.jobname};${job.groupid};${job.error}`;
  out += ddirTerse(job.read, group, 0);
  out += ddirTerse(job.write, group, 1);
  out += `;${ff(job.usrCpuPct)}%;${ff(job.sysCpuPct)}%;${job.ctx};0;0`;
  const depth = fioDepthDistributions(job);
  for (let i = 0; i < 7; i++) out += `;${cFixed(depth.level[i] ?? 0, 1)}%`;
  // the ns buckets go into the first µs bucket (stat_calc_lat_nu)
  const lat = fioLatencyDistribution(job);
  const total = job.read.totalIos + job.write.totalIos;
  const nsCount = total ? lat.ns.reduce((a, p) => a + p, 0) : 0;
  lat.us.forEach((p, i) => {
    out += `;${cFixed(i === 0 ? p + nsCount : p, 2)}%`;
  });
  for (const p of lat.ms) out += `;${cFixed(p, 2)}%`;
  return `${out}${disks}\n`;
}

/** The whole run as terse v3 lines, one per job (fio prints the drives' fields on every line). */
export function formatFioTerse(result: Pick<FioRun, 'jobs'>): string {
  const groups = fioGroupStats(result.jobs);
  const disks = fioDiskUtil(result.jobs)
    .map((d) => `;${d.name};${d.ios[0]};${d.ios[1]};${d.merges[0]};${d.merges[1]};${d.ticks[0]};${d.ticks[1]};${d.inQueue};${cFixed(d.util, 2)}%`)
    .join('');
  return result.jobs.map((j) => fioTerseLine(j, groups.get(j.groupid), disks)).join('');
}
