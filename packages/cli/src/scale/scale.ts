/**
 * `vmstack scale`: many jobs at once. For each strategy and each job count,
 * run `numjobs` fio jobs (one vCPU each) and report the aggregate throughput
 * and what the big locks cost: contentions and model wait time on
 * viommu->request_lock (the guest's), viommu_dev->mutex (the VMM's) and
 * iommu->lock (the VFIO container's).
 */

import type { DmaStrategy } from '@vmstack/guest-kernel';
import { DEFAULT_PROFILE_PATH, InputError, loadProfile } from '@vmstack/shm';
import { jobsFromCommandLine } from '../fio/options.js';
import { htmlPage, htmlTable, lineChartSvg } from '../report/html.js';
import { runStack } from '../stack/run-stack.js';

export const SCALE_LOCKS = ['viommu->request_lock', 'viommu_dev->mutex', 'iommu->lock'] as const;

export interface ScaleOptions {
  profilePath?: string;
  jobs: number[];
  strategies: DmaStrategy[];
  rw: string;
  bs: string;
  iodepth: number;
  size: string;
  quantumNs: number;
}

export interface ScaleCell {
  strategy: DmaStrategy;
  numjobs: number;
  aggregateMiBps: number;
  iops: number;
  locks: Record<string, { acquisitions: number; contentions: number; waittimeTotalUs: number; waittimeAvgUs: number }>;
  simulatedIosPerWallS: number;
}

export interface ScaleResult {
  profile: string;
  workload: string;
  cells: ScaleCell[];
}

export async function runScale(o: ScaleOptions): Promise<ScaleResult> {
  const profile = loadProfile(o.profilePath ?? DEFAULT_PROFILE_PATH);
  for (const n of o.jobs) if (!Number.isInteger(n) || n < 1 || n > 32) throw new InputError('--jobs', n, 'whole numbers of jobs from 1 to 32, e.g. 1,2,4');
  const cells: ScaleCell[] = [];
  for (const strategy of o.strategies) {
    for (const numjobs of o.jobs) {
      const parsed = jobsFromCommandLine(
        { name: `${strategy}-${numjobs}`, rw: o.rw, bs: o.bs, iodepth: String(o.iodepth), size: o.size, numjobs: String(numjobs) },
        {},
      );
      const r = await runStack({
        jobs: parsed.jobs,
        jobOptions: parsed.jobOptions,
        globalOptions: parsed.globalOptions,
        strategy,
        clock: 'virtual',
        profile,
        quantumNs: o.quantumNs,
        driverGeneration: 'v5.10',
        bufferContiguity: 'none',
        guestRamBytes: 512 * 1024 * 1024,
        spinLoads: 2000,
        dilation: 1,
        alwaysBounceLimitBytes: 4096,
      });
      const bytes = r.jobs.reduce((s, j) => s + j.read.ioBytes + j.write.ioBytes, 0);
      const ios = r.jobs.reduce((s, j) => s + j.read.totalIos + j.write.totalIos, 0);
      const spanNs = Math.max(...r.jobs.map((j) => Math.max(j.read.runtimeNs, j.write.runtimeNs)));
      const locks: ScaleCell['locks'] = {};
      for (const l of r.vmstack.lock_stat) {
        if ((SCALE_LOCKS as readonly string[]).includes(l.name))
          locks[l.name] = {
            acquisitions: l.acquisitions,
            contentions: l.contentions,
            waittimeTotalUs: l.waittime_total_ns / 1000,
            waittimeAvgUs: l.waittime_avg_ns / 1000,
          };
      }
      cells.push({
        strategy,
        numjobs,
        aggregateMiBps: bytes / 1048576 / (spanNs / 1e9),
        iops: ios / (spanNs / 1e9),
        locks,
        simulatedIosPerWallS: r.vmstack.model_speed.simulated_ios_per_wall_s,
      });
    }
  }
  return {
    profile: profile.name,
    workload: `fio --rw=${o.rw} --bs=${o.bs} --iodepth=${o.iodepth} --size=${o.size} per job, one vCPU per job, quantum ${o.quantumNs} ns`,
    cells,
  };
}

export function formatScaleTable(r: ScaleResult): string {
  const head = ['strategy', 'jobs', 'MiB/s', 'IOPS', ...SCALE_LOCKS.flatMap((l) => [`${l} con`, 'wait µs'])];
  const rows = r.cells.map((c) => [
    c.strategy,
    String(c.numjobs),
    c.aggregateMiBps.toFixed(1),
    Math.round(c.iops).toString(),
    ...SCALE_LOCKS.flatMap((l) => [String(c.locks[l]?.contentions ?? 0), (c.locks[l]?.waittimeTotalUs ?? 0).toFixed(1)]),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((x) => x[i].length)));
  const line = (cells: string[]) => cells.map((x, i) => (i === 0 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join('  ');
  return [`vmstack scale — profile ${r.profile}`, r.workload, '', line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line), ''].join('\n');
}

export function formatScaleHtml(r: ScaleResult): string {
  const strategies = [...new Set(r.cells.map((c) => c.strategy))];
  const series = (f: (c: ScaleCell) => number) =>
    strategies.map((s) => ({ name: s, points: r.cells.filter((c) => c.strategy === s).map((c) => ({ x: c.numjobs, y: f(c) })) }));
  return htmlPage(`vmstack scale — profile ${r.profile}`, [
    {
      heading: 'Throughput with jobs',
      body: `<p class="meta">${r.workload}</p>\n${lineChartSvg(
        'aggregate throughput',
        'jobs (vCPUs)',
        'MiB/s',
        series((c) => c.aggregateMiBps),
      )}`,
    },
    {
      heading: 'Lock wait with jobs',
      body: lineChartSvg(
        'viommu->request_lock: total model wait',
        'jobs (vCPUs)',
        'µs of model time',
        series((c) => c.locks['viommu->request_lock']?.waittimeTotalUs ?? 0),
      ),
    },
    {
      heading: 'Table',
      body: htmlTable(
        ['strategy', 'jobs', 'MiB/s', 'IOPS', ...SCALE_LOCKS.map((l) => `${l} contentions / wait µs`)],
        r.cells.map((c) => [
          c.strategy,
          String(c.numjobs),
          c.aggregateMiBps.toFixed(1),
          String(Math.round(c.iops)),
          ...SCALE_LOCKS.map((l) => `${c.locks[l]?.contentions ?? 0} / ${(c.locks[l]?.waittimeTotalUs ?? 0).toFixed(1)}`),
        ]),
      ),
    },
  ]);
}
