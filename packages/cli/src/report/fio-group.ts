/**
 * fio's group_reporting: the jobs of one reporting group reported as one
 * (fio's sum_thread_stats). The joined job keeps the first job's name, says
 * how many jobs it stands for (`jobs=N`), carries the last job's own options
 * (as fio's JSON does) and the first error; per direction bytes and I/Os add
 * up, the runtime is the longest, latency statistics and histograms are
 * joined as one population, and bandwidth and IOPS samples are summed
 * (fio's pure sum: the group's bandwidth); depth, submit and complete
 * counts, context switches and the drive's counters add up.
 */

import { type FioDirStat, type FioIoStat, sum_stat } from '@vmstack/guest-kernel';
import { createLatencyHistogram, type DirectionResult, type FioRun, type JobResult, mergeHistograms } from './result.js';

/** fio's sum_stat with pure_sum: min, max, mean, S and samples added. */
function pureSum(a: FioIoStat, b: FioIoStat): FioIoStat {
  if (b.samples === 0) return { ...a };
  if (a.samples === 0) return { ...b };
  return { min: a.min + b.min, max: a.max + b.max, samples: a.samples + b.samples, mean: a.mean + b.mean, s: a.s + b.s };
}

function joinPlat(a: readonly [number, number][], b: readonly [number, number][]): [number, number][] {
  const m = new Map<number, number>(a);
  for (const [i, c] of b) m.set(i, (m.get(i) ?? 0) + c);
  return [...m.entries()].sort((x, y) => x[0] - y[0]);
}

function joinFioDir(a: FioDirStat | undefined, b: FioDirStat | undefined): FioDirStat | undefined {
  if (!a || !b) return undefined;
  return {
    slat: sum_stat(a.slat, b.slat),
    clat: sum_stat(a.clat, b.clat),
    lat: sum_stat(a.lat, b.lat),
    clatPlat: joinPlat(a.clatPlat, b.clatPlat),
    bw: pureSum(a.bw, b.bw),
    iops: pureSum(a.iops, b.iops),
  };
}

function joinDir(dirs: readonly DirectionResult[]): DirectionResult {
  const fio = dirs.slice(1).reduce<FioDirStat | undefined>((acc, d) => joinFioDir(acc, d.fio), dirs[0].fio);
  return {
    ioBytes: dirs.reduce((s, d) => s + d.ioBytes, 0),
    totalIos: dirs.reduce((s, d) => s + d.totalIos, 0),
    runtimeNs: Math.max(...dirs.map((d) => d.runtimeNs)),
    slatNs: mergeHistograms(createLatencyHistogram(), ...dirs.map((d) => d.slatNs)),
    clatNs: mergeHistograms(createLatencyHistogram(), ...dirs.map((d) => d.clatNs)),
    latNs: mergeHistograms(createLatencyHistogram(), ...dirs.map((d) => d.latNs)),
    ...(fio ? { fio } : {}),
  };
}

const addArrays = (a: readonly number[], b: readonly number[]) => a.map((v, i) => v + (b[i] ?? 0));

/** The engine's job-wide counts of several jobs added up; undefined when one has none. */
function joinJobStats(fios: readonly JobResult['fio'][]): JobResult['fio'] {
  if (!fios.every((f) => f !== undefined)) return undefined;
  const [first, ...rest] = fios as NonNullable<JobResult['fio']>[];
  const out: NonNullable<JobResult['fio']> = { ...first, disk: { ...first.disk, busyMs: [...first.disk.busyMs] } };
  for (const b of rest) {
    out.ioUMap = addArrays(out.ioUMap, b.ioUMap);
    out.ioUSubmit = addArrays(out.ioUSubmit, b.ioUSubmit);
    out.ioUComplete = addArrays(out.ioUComplete, b.ioUComplete);
    out.totalSubmit += b.totalSubmit;
    out.totalComplete += b.totalComplete;
    out.totalIoU += b.totalIoU;
    out.ctx += b.ctx;
    out.disk.ios = [out.disk.ios[0] + b.disk.ios[0], out.disk.ios[1] + b.disk.ios[1]];
    out.disk.ticksMs = [out.disk.ticksMs[0] + b.disk.ticksMs[0], out.disk.ticksMs[1] + b.disk.ticksMs[1]];
    out.disk.inQueueMs += b.disk.inQueueMs;
    out.disk.busyMs.push(...b.disk.busyMs);
  }
  return out;
}

/** The jobs of one reporting group as one (fio's group_reporting). */
export function joinJobs(jobs: readonly JobResult[]): JobResult {
  const first = jobs[0];
  if (jobs.length === 1) return first;
  const runtimeNs = jobs.reduce((s, j) => s + j.jobRuntimeNs, 0);
  const weighted = (pct: (j: JobResult) => number) => (runtimeNs ? jobs.reduce((s, j) => s + pct(j) * j.jobRuntimeNs, 0) / runtimeNs : 0);
  const fio = joinJobStats(jobs.map((j) => j.fio));
  const verifies = jobs.flatMap((j) => (j.verify ? [j.verify] : []));
  return {
    ...first,
    jobOptions: jobs[jobs.length - 1].jobOptions,
    read: joinDir(jobs.map((j) => j.read)),
    write: joinDir(jobs.map((j) => j.write)),
    jobRuntimeNs: Math.max(...jobs.map((j) => j.jobRuntimeNs)),
    usrCpuPct: weighted((j) => j.usrCpuPct),
    sysCpuPct: weighted((j) => j.sysCpuPct),
    ctx: jobs.reduce((s, j) => s + j.ctx, 0),
    error: jobs.find((j) => j.error !== 0)?.error ?? 0,
    jobs: jobs.reduce((s, j) => s + (j.jobs ?? 1), 0),
    ...(verifies.length
      ? {
          verify: {
            blocksChecked: verifies.reduce((s, v) => s + v.blocksChecked, 0),
            corrupt: verifies.reduce((s, v) => s + v.corrupt, 0),
            overwritten: verifies.reduce((s, v) => s + (v.overwritten ?? 0), 0),
            neverWritten: verifies.reduce((s, v) => s + (v.neverWritten ?? 0), 0),
            ...(verifies.find((v) => v.firstNeverWritten) ? { firstNeverWritten: verifies.find((v) => v.firstNeverWritten)?.firstNeverWritten } : {}),
          },
        }
      : {}),
    ...(fio ? { fio } : {}),
  };
}

/** fio's flag options: a bare key or a nonzero value sets them. */
function flagSet(v: string | undefined): boolean {
  return v !== undefined && (v.trim() === '' || Number(v) !== 0);
}

/**
 * The run as fio reports it with group_reporting: each reporting group with
 * group_reporting set (in [global] or in one of its jobs) becomes one job,
 * in the place of its first job.
 */
export function applyGroupReporting<R extends Pick<FioRun, 'jobs' | 'globalOptions'>>(run: R): R {
  const global = flagSet(run.globalOptions.group_reporting);
  const grouped = new Map<number, JobResult[]>();
  for (const j of run.jobs) {
    const list = grouped.get(j.groupid) ?? [];
    list.push(j);
    grouped.set(j.groupid, list);
  }
  const out: JobResult[] = [];
  const done = new Set<number>();
  for (const j of run.jobs) {
    const list = grouped.get(j.groupid) ?? [j];
    const joined = list.some((x) => flagSet(x.jobOptions.group_reporting)) || (global && !list.some((x) => x.jobOptions.group_reporting === '0'));
    if (!joined) {
      out.push(j);
      continue;
    }
    if (done.has(j.groupid)) continue;
    done.add(j.groupid);
    out.push(joinJobs(list));
  }
  return { ...run, jobs: out };
}
