/**
 * What a run hands to the reporters: per job, per direction, the byte and I/O
 * counts, the model runtime and three latency histograms (slat, clat, lat) in
 * nanoseconds of model time — the same split fio makes:
 *   slat = submission latency (job queues the I/O → it is handed to the device),
 *   clat = completion latency (handed to the device → completion seen by the job),
 *   lat  = slat + clat.
 *
 * Histograms are hdr-histogram-js `JsHistogram`s (the plain-JS build, never the
 * WASM one: it works synchronously inside worker threads). They cross worker
 * boundaries as strings: `encodeHistogram` in the worker, `decodeHistogram` in
 * the receiver, `mergeHistograms` to sum jobs or workers.
 *
 * Resolution: 3 significant digits (values up to 2047 ns are exact; above that a
 * bucket spans at most 1/1024 of its value), from 1 ns to 1 h, auto-resizing
 * beyond that rather than throwing.
 */

import type { FioDirStat, FioJobStat, NeverWrittenBlock } from '@vmstack/guest-kernel';
import type { DeviceAttackResult } from '@vmstack/nvme-device';
import type { Histogram } from 'hdr-histogram-js';
import { build, decodeFromCompressedBase64, encodeIntoCompressedBase64, JsHistogram } from 'hdr-histogram-js';
import type { CallTreeRoot } from './flamegraph.js';
import type { VmstackOutput, VmstackReport } from './vmstack-report.js';

export type { Histogram };

/** Highest latency a fresh histogram tracks without resizing: one hour. */
export const LATENCY_HISTOGRAM_HIGHEST_NS = 3_600_000_000_000;
/** Significant decimal digits kept by every latency histogram. */
export const LATENCY_HISTOGRAM_SIGNIFICANT_DIGITS = 3;

/** One direction (read or write) of one job. */
export interface DirectionResult {
  /** Bytes transferred by completed I/Os. */
  ioBytes: number;
  /** Completed I/Os. */
  totalIos: number;
  /** Model ns from job start to its last completion in this direction (0: no I/O). */
  runtimeNs: number;
  /** Submission latency per I/O, ns. */
  slatNs: Histogram;
  /** Completion latency per I/O, ns. */
  clatNs: Histogram;
  /** Total latency (slat + clat) per I/O, ns. */
  latNs: Histogram;
  /** IOPS measured per averaging window (fio's iops_* fields); absent: not measured. */
  iopsSamples?: number[];
  /** Bandwidth in KiB/s per averaging window (fio's bw_* fields); absent: not measured. */
  bwSamplesKiBps?: number[];
  /** fio's own statistics of the direction (exact io_stats, clat in fio's buckets, bw and iops samples); absent: from the histograms */
  fio?: FioDirStat;
}

export interface JobResult {
  jobname: string;
  groupid: number;
  /** The job's own options as written in the job file (fio's "job options"). */
  jobOptions: Record<string, string>;
  read: DirectionResult;
  write: DirectionResult;
  /** Model ns the job ran (fio's job_runtime, reported in ms). */
  jobRuntimeNs: number;
  /** Share of jobRuntimeNs the job's vCPU spent in guest user / kernel code, percent. */
  usrCpuPct: number;
  sysCpuPct: number;
  /** Context switches of the job's vCPU. */
  ctx: number;
  /** errno-style error code; 0 = none. */
  error: number;
  /** The job's iodepth (fio's latency_depth when no latency_target is set). */
  iodepth: number;
  /** fio's "1","2","4","8","16","32",">=64" depth buckets, percent of issued I/Os. */
  iodepthLevels?: Record<string, number>;
  /**
   * corrupt: damaged or stale blocks; overwritten: intact blocks another job of the group wrote over this job's;
   * neverWritten: intact blocks no job wrote (no verify header: fio's "bad magic header"), the first of them
   */
  verify?: { blocksChecked: number; corrupt: number; overwritten?: number; neverWritten?: number; firstNeverWritten?: NeverWrittenBlock };
  /** fio's statistics as the job engine kept them (depth distributions, ctx, the drive's counters, logs); absent: not measured */
  fio?: Omit<FioJobStat, 'read' | 'write'>;
  /** fio's rw= and bs of the job, for fio's start-up lines */
  rw?: string;
  blockSizeBytes?: number;
  /** jobs this result stands for: more than 1 when group_reporting joined them */
  jobs?: number;
  /** the guest's name of the drive the job did I/O to (fio's disk_util name), e.g. nvme0n1 */
  disk?: string;
}

/** What a run hands to the next barrier group: the drive's written blocks. */
export interface RunCarry {
  namespaceBlocks: [number, Uint8Array][];
}

/**
 * What the fio reporters print: one run, or the runs of several barrier
 * groups joined (every group's jobs in order, `vmstack.groups` one report per
 * group).
 */
export interface FioRun {
  /** Wall-clock ms since the epoch when the results were gathered (fio's timestamp_ms). */
  timestampMs: number;
  /** The job file's [global] options. */
  globalOptions: Record<string, string>;
  jobs: JobResult[];
  /** Printed verbatim as the top-level "vmstack" key of the JSON output. */
  vmstack: VmstackOutput;
}

/** What fio prints in a status dump (--status-interval): the jobs so far, without the model's report. */
export type FioStatusRun = Omit<FioRun, 'vmstack'> & { vmstack?: VmstackOutput };

/** fio's status dump at model time `atNs` of a run: every job's statistics from its start up to then (a job over by then: its final ones). */
export interface FioStatusDump {
  atNs: number;
  jobs: JobResult[];
}

/** One run (one barrier group). */
export interface RunResult extends FioRun {
  vmstack: VmstackReport;
  /** not printed: the drive's state for the next barrier group */
  carry?: RunCarry;
  /** `vmstack attack`: what the attacking device reached, each drive's added up (not printed by run) */
  attack?: DeviceAttackResult;
  /** not printed: each worker's call tree, for the flame graphs (report/flamegraph.ts) */
  callTrees?: CallTreeRoot[];
  /** --status-interval: the status dumps due while the run's jobs ran, in model time order (absent: none asked for) */
  statusDumps?: FioStatusDump[];
  /** model time the run's last job ended */
  endNs?: number;
}

/** A fresh, empty latency histogram (ns). */
export function createLatencyHistogram(): Histogram {
  return build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: LATENCY_HISTOGRAM_HIGHEST_NS,
    numberOfSignificantValueDigits: LATENCY_HISTOGRAM_SIGNIFICANT_DIGITS,
    autoResize: true,
    useWebAssembly: false,
  });
}

/** A direction with no I/O: zero counts, empty histograms, no samples. */
export function emptyDirection(): DirectionResult {
  return {
    ioBytes: 0,
    totalIos: 0,
    runtimeNs: 0,
    slatNs: createLatencyHistogram(),
    clatNs: createLatencyHistogram(),
    latNs: createLatencyHistogram(),
  };
}

/** A job as a status dump shows it before it started (a later stonewall group's): its name and options, nothing done. */
export function notStartedJob(job: JobResult): JobResult {
  const zeros = (a: readonly number[] | undefined) => (a ?? []).map(() => 0);
  const { verify, fio, ...rest } = job;
  return {
    ...rest,
    read: emptyDirection(),
    write: emptyDirection(),
    jobRuntimeNs: 0,
    usrCpuPct: 0,
    sysCpuPct: 0,
    ctx: 0,
    error: 0,
    ...(verify ? { verify: { blocksChecked: 0, corrupt: 0, overwritten: 0, neverWritten: 0 } } : {}),
    ...(fio
      ? {
          fio: {
            ...fio,
            ioUMap: zeros(fio.ioUMap),
            ioUSubmit: zeros(fio.ioUSubmit),
            ioUComplete: zeros(fio.ioUComplete),
            totalSubmit: 0,
            totalComplete: 0,
            totalIoU: 0,
            ctx: 0,
            disk: { ios: [0, 0], ticksMs: [0, 0], inQueueMs: 0, busyMs: [] },
            logs: {},
          },
        }
      : {}),
  };
}

/** The histogram as a compressed base64 string (HdrHistogram V2 encoding), safe to postMessage. */
export function encodeHistogram(h: Histogram): string {
  return encodeIntoCompressedBase64(asJsHistogram(h));
}

/** Inverse of `encodeHistogram`; the result auto-resizes like a fresh one. */
export function decodeHistogram(encoded: string): Histogram {
  const h = decodeFromCompressedBase64(encoded, 32, false);
  h.autoResize = true;
  return h;
}

/** Adds every `from` histogram into `into` (hdr `add`) and returns `into`. */
export function mergeHistograms(into: Histogram, ...from: Histogram[]): Histogram {
  for (const h of from) into.add(h);
  return into;
}

/** One non-empty bucket of a histogram, in ascending value order. */
export interface HistogramBucket {
  /** Smallest and largest ns value counted in this bucket. */
  lowNs: number;
  highNs: number;
  /** The value reports use for the bucket: its midpoint (hdr's median-equivalent value). */
  valueNs: number;
  count: number;
}

/** Non-empty buckets of `h`, ascending. Requires the plain-JS implementation. */
export function histogramBuckets(h: Histogram): HistogramBucket[] {
  const js = asJsHistogram(h);
  const buckets: HistogramBucket[] = [];
  if (js.totalCount === 0) return buckets;
  const it = js.recordedValuesIterator;
  it.reset();
  while (it.hasNext()) {
    const v = it.next();
    const at = v.valueIteratedTo;
    buckets.push({
      lowNs: js.lowestEquivalentValue(at),
      highNs: js.highestEquivalentValue(at),
      valueNs: js.medianEquivalentValue(at),
      count: v.countAtValueIteratedTo,
    });
  }
  return buckets;
}

function asJsHistogram(h: Histogram): JsHistogram {
  if (!(h instanceof JsHistogram)) {
    throw new TypeError('latency histograms must be hdr-histogram-js JsHistograms (build with useWebAssembly: false)');
  }
  return h;
}
