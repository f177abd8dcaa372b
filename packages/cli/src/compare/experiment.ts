/**
 * The reference experiment (one VM, one fio job, NVMe passed through with
 * VFIO behind virtio-iommu): fio --rw=read --direct=1 --ioengine=libaio
 * --iodepth=64, strict IOMMU mapping against the bounce-buffer pool, at 4k,
 * 16k, 64k and 128k. The published result: the pool raised throughput 2.8×,
 * 4.7×, 3.6× and 3.6×. One cost profile serves every row; nothing is set per
 * block size or per strategy except `always_bounce_limit`, raised to cover
 * the block size as in the published runs.
 */

import type { DmaStrategy } from '@vmstack/guest-kernel';
import { type CostProfile, DEFAULT_QUANTUM_NS, loadProfile } from '@vmstack/shm';
import { jobsFromCommandLine } from '../fio/options.js';
import { runStack } from '../stack/run-stack.js';

export interface CompareRow {
  blockSizeBytes: number;
  label: string;
  referenceRatio: number;
}

export const REFERENCE_ROWS: readonly CompareRow[] = [
  { blockSizeBytes: 4096, label: '4k', referenceRatio: 2.8 },
  { blockSizeBytes: 16384, label: '16k', referenceRatio: 4.7 },
  { blockSizeBytes: 65536, label: '64k', referenceRatio: 3.6 },
  { blockSizeBytes: 131072, label: '128k', referenceRatio: 3.6 },
];

/** The target: each model ratio within ±15% of the reference. */
export const RATIO_TOLERANCE = 0.15;

export interface CompareTask {
  strategy: DmaStrategy;
  blockSizeBytes: number;
  label: string;
  sizeBytes: number;
  iodepth: number;
  profilePath: string;
}

export interface CompareTaskResult {
  strategy: DmaStrategy;
  blockSizeBytes: number;
  ios: number;
  ioBytes: number;
  runtimeNs: number;
  mibPerS: number;
  iops: number;
  viommuMaps: number;
  viommuUnmaps: number;
  bounceHits: number;
  bounceMisses: number;
  simulatedIosPerWallS: number;
  jobLoopWallMs: number;
}

/** Run one cell of the table on real workers (also the piscina task body). */
export async function runCompareTask(t: CompareTask, profile?: CostProfile): Promise<CompareTaskResult> {
  const parsed = jobsFromCommandLine(
    {
      name: `${t.strategy}-${t.label}`,
      rw: 'read',
      bs: String(t.blockSizeBytes),
      iodepth: String(t.iodepth),
      size: String(t.sizeBytes),
      direct: '1',
      ioengine: 'libaio',
    },
    {},
  );
  const r = await runStack({
    jobs: parsed.jobs,
    jobOptions: parsed.jobOptions,
    globalOptions: parsed.globalOptions,
    strategy: t.strategy,
    clock: 'virtual',
    profile: profile ?? loadProfile(t.profilePath),
    quantumNs: DEFAULT_QUANTUM_NS,
    driverGeneration: 'v5.10',
    bufferContiguity: 'none',
    guestRamBytes: 256 * 1024 * 1024,
    spinLoads: 2000,
    dilation: 1,
    alwaysBounceLimitBytes: Math.max(4096, t.blockSizeBytes),
  });
  const read = r.jobs[0].read;
  const { counters: c, model_speed: speed } = r.vmstack;
  return {
    strategy: t.strategy,
    blockSizeBytes: t.blockSizeBytes,
    ios: read.totalIos,
    ioBytes: read.ioBytes,
    runtimeNs: read.runtimeNs,
    mibPerS: read.ioBytes / 1048576 / (read.runtimeNs / 1e9),
    iops: read.totalIos / (read.runtimeNs / 1e9),
    viommuMaps: c.virtio_iommu.map,
    viommuUnmaps: c.virtio_iommu.unmap,
    bounceHits: c.bounce?.hits ?? 0,
    bounceMisses: c.bounce?.misses ?? 0,
    simulatedIosPerWallS: speed.simulated_ios_per_wall_s,
    jobLoopWallMs: speed.job_loop_wall_ms,
  };
}
