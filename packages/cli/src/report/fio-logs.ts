/**
 * fio's log files (write_bw_log, write_lat_log, write_iops_log,
 * write_hist_log) from the job engine's entries, named and formatted as fio
 * 3.33 writes them (init.c gen_log_name, iolog.c flush_samples and
 * flush_hist_samples), so fio2gnuplot, fiologparser and
 * fio-histo-log-pctiles.py read them:
 *
 * - `<prefix>_bw.<n>.log`, `_iops`, `_clat`, `_slat`, `_lat`, `_clat_hist`;
 *   `<n>` is the job's number in the run (1…), left out with per_job_logs=0
 *   (jobs then share the file);
 * - one line per entry: `time, value, direction, block size, priority`
 *   (`time, value, direction, block size, offset, priority` with
 *   log_offset=1): time in ms since the job started (model time), the value
 *   in KiB/s (bw), I/Os (iops) or ns (latencies), direction 0 read 1 write,
 *   block size 0 for averaged entries; priority 0 (no I/O priorities in the
 *   model);
 * - the histogram log: `time, direction, block size, ` and the completion
 *   latency counts of fio's 1856 buckets since the previous line, 2^coarseness
 *   buckets per column.
 */

import type { FioHistLogEntry, FioJobSpec, FioJobStat, FioLogEntry } from '@vmstack/guest-kernel';
import { FIO_IO_U_PLAT_NR } from '@vmstack/guest-kernel';

/** One log file: its name (relative, as fio writes them into the working directory) and its text. */
export interface FioLogFile {
  path: string;
  text: string;
}

function logLines(entries: readonly FioLogEntry[], offset: boolean): string {
  let out = '';
  for (const e of entries) {
    out += offset ? `${e.timeMs}, ${e.value}, ${e.ddir}, ${e.bs}, ${e.offset}, 0\n` : `${e.timeMs}, ${e.value}, ${e.ddir}, ${e.bs}, 0\n`;
  }
  return out;
}

function histLines(entries: readonly FioHistLogEntry[], coarseness: number): string {
  const stride = 1 << coarseness;
  let out = '';
  for (const e of entries) {
    const cols: number[] = [];
    for (let j = 0; j < FIO_IO_U_PLAT_NR; j += stride) {
      let sum = 0;
      for (let k = 0; k < stride; k++) sum += e.counts[j + k] ?? 0;
      cols.push(sum);
    }
    out += `${e.timeMs}, ${e.ddir}, ${e.bs}, ${cols.join(', ')}\n`;
  }
  return out;
}

/** fio's gen_log_name(): `<prefix>_<kind>.<n>.log`, or `<prefix>_<kind>.log` without per-job logs. */
export function fioLogName(prefix: string, kind: string, jobNumber: number, perJob: boolean): string {
  return perJob ? `${prefix}_${kind}.${jobNumber}.log` : `${prefix}_${kind}.log`;
}

/**
 * The log files of a run: `jobs[i]` is the i-th job of the run (its number is
 * i + 1) with the logs its engine kept. Jobs that share a file name
 * (per_job_logs=0) share the file, in job order.
 */
export function fioLogFiles(jobs: readonly { spec: FioJobSpec; logs: FioJobStat['logs'] | undefined }[]): FioLogFile[] {
  const files = new Map<string, string>();
  const add = (path: string, text: string) => files.set(path, (files.get(path) ?? '') + text);
  jobs.forEach(({ spec, logs }, i) => {
    const l = spec.logs;
    if (!l || !logs) return;
    const name = (prefix: string, kind: string) => fioLogName(prefix, kind, i + 1, l.perJobLogs);
    if (l.bw !== undefined) add(name(l.bw, 'bw'), logLines(logs.bw ?? [], l.offset));
    if (l.iops !== undefined) add(name(l.iops, 'iops'), logLines(logs.iops ?? [], l.offset));
    if (l.lat !== undefined) {
      add(name(l.lat, 'clat'), logLines(logs.clat ?? [], l.offset));
      add(name(l.lat, 'slat'), logLines(logs.slat ?? [], l.offset));
      add(name(l.lat, 'lat'), logLines(logs.lat ?? [], l.offset));
    }
    if (l.hist !== undefined) add(name(l.hist, 'clat_hist'), histLines(logs.clatHist ?? [], l.histCoarseness));
  });
  return [...files.entries()].map(([path, text]) => ({ path, text }));
}
