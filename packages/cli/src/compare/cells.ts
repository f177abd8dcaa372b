/**
 * A cell of `compare` (one strategy at one block size) as a `run`: its stack
 * options are what `vmstack run` builds from the same command line, so
 * `compare` takes every model and topology option `run` takes and refuses
 * what `run` refuses. Cells run serially in this thread or on piscina
 * threads that keep their stack workers between cells (jobs/local.ts); with
 * the virtual clock both give the same numbers.
 */

import type { DmaStrategy } from '@vmstack/guest-kernel';
import { runOnPiscina, track } from '../jobs/local.js';
import type { RunProgress } from '../report/progress.js';
import type { RunResult } from '../report/result.js';
import { runStack, type StackOptions } from '../stack/run-stack.js';
import type { CompareTaskResult } from './experiment.js';

export interface CompareCell {
  strategy: DmaStrategy;
  blockSizeBytes: number;
  stack: StackOptions;
}

/** One cell's numbers: the reference table's, and what the untrusted experiment and sensitivity read. */
export interface CompareCellResult extends CompareTaskResult {
  /** per vCPU (job order): busy share of its job's runtime, % */
  cpuBusyPct: number[];
  /** every vCPU's busy time over (span × the host's hardware threads), % */
  hostSharePct: number;
  hostCpuThreads: number;
  /** dma_map_* / dma_unmap_* calls of the jobs */
  dmaMapCalls: number;
  dmaUnmapCalls: number;
  /** IOMMU map and unmap operations: virtio-iommu MAP/UNMAP requests in a VM, intel_iommu_map_pages/unmap_pages calls on bare metal */
  iommuMapOps: number;
  iommuUnmapOps: number;
  /** host IOTLB invalidations the device's IOMMU received */
  iotlbInvalidations: number;
  /** bytes the CPU copied for the device: swiotlb bounces and pool copies */
  bytesCopiedToDevice: number;
  bytesCopiedFromDevice: number;
}

/** The cell's numbers from its run: every job's I/O together, over the longest job's runtime. */
export function compareCellResultOf(cell: Pick<CompareCell, 'strategy' | 'blockSizeBytes'>, r: RunResult): CompareCellResult {
  const v = r.vmstack;
  const c = v.counters;
  const ios = r.jobs.reduce((s, j) => s + j.read.totalIos + j.write.totalIos, 0);
  const ioBytes = r.jobs.reduce((s, j) => s + j.read.ioBytes + j.write.ioBytes, 0);
  const runtimeNs = Math.max(...r.jobs.map((j) => Math.max(j.read.runtimeNs, j.write.runtimeNs)));
  const calls = (fn: string) => v.profile[fn]?.calls ?? 0;
  return {
    strategy: cell.strategy,
    blockSizeBytes: cell.blockSizeBytes,
    ios,
    ioBytes,
    runtimeNs,
    mibPerS: ioBytes / 1048576 / (runtimeNs / 1e9),
    iops: ios / (runtimeNs / 1e9),
    viommuMaps: c.virtio_iommu.map,
    viommuUnmaps: c.virtio_iommu.unmap,
    bounceHits: c.bounce?.hits ?? 0,
    bounceMisses: c.bounce?.misses ?? 0,
    simulatedIosPerWallS: v.model_speed.simulated_ios_per_wall_s,
    jobLoopWallMs: v.model_speed.job_loop_wall_ms,
    cpuBusyPct: v.cpu.busy_pct,
    hostSharePct: v.cpu.host_share_pct,
    hostCpuThreads: v.cpu.host_cpu_threads,
    dmaMapCalls: c.dma.map_calls,
    dmaUnmapCalls: c.dma.unmap_calls,
    iommuMapOps: c.virtio_iommu.map + calls('intel_iommu_map_pages'),
    iommuUnmapOps: c.virtio_iommu.unmap + calls('intel_iommu_unmap_pages'),
    iotlbInvalidations: c.iotlb.invalidations,
    bytesCopiedToDevice: (c.swiotlb?.bytes_bounced_to_device ?? 0) + (c.bounce?.bytes_copied_to_device ?? 0),
    bytesCopiedFromDevice: (c.swiotlb?.bytes_bounced_from_device ?? 0) + (c.bounce?.bytes_copied_from_device ?? 0),
  };
}

/** Runs the cells, in order: serially (`parallel` 1) or on that many piscina threads. */
export async function runCompareCells(cells: readonly CompareCell[], parallel: number, progress?: RunProgress): Promise<CompareCellResult[]> {
  try {
    if (parallel === 1) {
      const out: CompareCellResult[] = [];
      for (const cell of cells) out.push(compareCellResultOf(cell, await track(runStack(cell.stack), progress)));
      return out;
    }
    return (await runOnPiscina(
      cells.map((cell) => ({ kind: 'compare-stack', cell })),
      parallel,
      progress,
    )) as CompareCellResult[];
  } finally {
    progress?.end();
  }
}
