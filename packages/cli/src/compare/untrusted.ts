/**
 * `vmstack compare --experiment untrusted`: the laptop's internal NVMe drive
 * made to appear untrusted (as an external-facing device), no VM — the host's
 * own kernel drives VT-d — fio --direct=1 --rw=read --ioengine=libaio
 * --iodepth=64 --bs=64k. Untrusted devices bounce by force; two ways:
 *
 * - swiotlb: strict mapping, each segment mapped on its own, sub-granule
 *   segments bounced through the preallocated swiotlb area (Linux 5.10–5.15);
 * - the pool: one pool buffer per scatter list, its slot mapped once.
 *
 * Per way: throughput, CPU load (each CPU running a job, and all of them as a
 * share of the host's hardware threads), IOMMU operations per I/O and bytes
 * copied, both directions.
 */

import type { DmaStrategy } from '@vmstack/guest-kernel';
import { InputError } from '@vmstack/shm';
import { parseSizeBytes } from '../fio/sizes.js';
import { htmlPage, htmlTable } from '../report/html.js';
import { RunProgress } from '../report/progress.js';
import type { StackOptions } from '../stack/run-stack.js';
import { type CompareCellResult, runCompareCells } from './cells.js';

export const UNTRUSTED_BLOCK_SIZES = ['64k'] as const;

/** The two ways an untrusted device's DMA is bounced, as strategies of dma-iommu. */
export const UNTRUSTED_WAYS: readonly { way: string; strategy: DmaStrategy }[] = [
  { way: 'swiotlb', strategy: 'strict' },
  { way: 'pool', strategy: 'bounce' },
];

export interface UntrustedOptions {
  /** bytes read per run; default 32 MiB */
  sizeBytes?: number;
  /** block sizes as written; default 64k */
  blockSizes?: string[];
  parallel?: number;
  /** a cell's run as `vmstack run` builds it (the experiment's platform and untrusted device, the model options given) */
  stackFor: (strategy: DmaStrategy, bs: { label: string; blockSizeBytes: number }, sizeBytes: number, iodepth: number) => StackOptions;
  modelOptionsText?: string;
}

export interface UntrustedWayResult extends CompareCellResult {
  way: string;
  iommuMapOpsPerIo: number;
  iommuUnmapOpsPerIo: number;
  iotlbInvalidationsPerIo: number;
  bytesCopiedPerIo: number;
}

export interface UntrustedRow {
  blockSize: string;
  blockSizeBytes: number;
  ways: UntrustedWayResult[];
  /** pool MiB/s over swiotlb MiB/s */
  throughputRatio: number;
}

export interface UntrustedResult {
  experiment: 'untrusted';
  profile: string;
  description: string;
  rows: UntrustedRow[];
  wallMs: number;
  parallel: number;
}

export async function runUntrusted(o: UntrustedOptions): Promise<UntrustedResult> {
  const sizeBytes = o.sizeBytes ?? 32 * 1024 * 1024;
  const iodepth = 64;
  const parallel = o.parallel ?? 1;
  if (!Number.isInteger(parallel) || parallel < 1 || parallel > 16) throw new InputError('--parallel', parallel, 'a whole number of threads from 1 to 16');
  const sizes = (o.blockSizes ?? [...UNTRUSTED_BLOCK_SIZES]).map((label) => {
    const blockSizeBytes = parseSizeBytes('--bs', label);
    if (blockSizeBytes <= 0 || blockSizeBytes % 4096 !== 0) throw new InputError('--bs', label, 'block sizes that are multiples of 4k, e.g. 64k or 16k,64k');
    if (sizeBytes < blockSizeBytes * iodepth)
      throw new InputError('--size', sizeBytes, `at least iodepth × bs = ${blockSizeBytes * iodepth} bytes for bs ${label}, so the queue fills`);
    return { label, blockSizeBytes };
  });
  const cells = sizes.flatMap((bs) =>
    UNTRUSTED_WAYS.map(({ strategy }) => ({ strategy, blockSizeBytes: bs.blockSizeBytes, stack: o.stackFor(strategy, bs, sizeBytes, iodepth) })),
  );
  const started = performance.now();
  const results = await runCompareCells(cells, parallel, new RunProgress('compare', cells.length));
  const rows = sizes.map((bs, i) => {
    const ways = UNTRUSTED_WAYS.map(({ way }, k) => {
      const r = results[i * UNTRUSTED_WAYS.length + k];
      return {
        ...r,
        way,
        iommuMapOpsPerIo: r.iommuMapOps / r.ios,
        iommuUnmapOpsPerIo: r.iommuUnmapOps / r.ios,
        iotlbInvalidationsPerIo: r.iotlbInvalidations / r.ios,
        bytesCopiedPerIo: (r.bytesCopiedToDevice + r.bytesCopiedFromDevice) / r.ios,
      };
    });
    return { blockSize: bs.label, blockSizeBytes: bs.blockSizeBytes, ways, throughputRatio: ways[1].mibPerS / ways[0].mibPerS };
  });
  const platform = cells[0]?.stack.topology?.platform ?? 'vm';
  return {
    experiment: 'untrusted',
    profile: cells[0]?.stack.profile.name ?? '',
    description:
      `fio --rw=read --direct=1 --ioengine=libaio --iodepth=${iodepth} --numjobs=1 --size=${sizeBytes}, the internal NVMe drive as an untrusted device, ` +
      `${platform === 'bare-metal' ? 'no VM (the host kernel drives VT-d)' : 'in a VM'}: swiotlb (strict, sub-granule segments bounced) vs the pool` +
      (o.modelOptionsText ? `; ${o.modelOptionsText}` : ''),
    rows,
    wallMs: performance.now() - started,
    parallel,
  };
}

const HEAD = ['bs', 'way', 'MiB/s', 'CPU busy %', 'host %', 'maps/IO', 'unmaps/IO', 'IOTLB inv/IO', 'copied to dev', 'copied from dev', 'copied B/IO'] as const;

function cellsOf(r: UntrustedRow, w: UntrustedWayResult): string[] {
  return [
    r.blockSize,
    w.way,
    w.mibPerS.toFixed(1),
    w.cpuBusyPct.map((x) => x.toFixed(1)).join('/'),
    w.hostSharePct.toFixed(2),
    w.iommuMapOpsPerIo.toFixed(2),
    w.iommuUnmapOpsPerIo.toFixed(2),
    w.iotlbInvalidationsPerIo.toFixed(2),
    String(w.bytesCopiedToDevice),
    String(w.bytesCopiedFromDevice),
    w.bytesCopiedPerIo.toFixed(0),
  ];
}

export function formatUntrustedTable(u: UntrustedResult): string {
  const body = u.rows.flatMap((r) => r.ways.map((w) => cellsOf(r, w)));
  const widths = HEAD.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((x, i) => (i < 2 ? x.padEnd(widths[i]) : x.padStart(widths[i])))
      .join('  ')
      .trimEnd();
  return [
    `vmstack compare --experiment untrusted — profile ${u.profile}`,
    u.description,
    '',
    line(HEAD),
    line(widths.map((w) => '-'.repeat(w))),
    ...body.map(line),
    '',
    ...u.rows.map((r) => `${r.blockSize}: the pool reads ${r.throughputRatio.toFixed(2)}× the throughput of swiotlb`),
    "CPU busy %: each CPU running a job, busy share of its job; host %: all of them over the span × the host's hardware threads.",
    'maps/unmaps per I/O: intel_iommu_map_pages / intel_iommu_unmap_pages calls (virtio-iommu MAP / UNMAP in a VM); copied: bytes the CPU bounced.',
    `whole run ${(u.wallMs / 1000).toFixed(1)} s, ${u.parallel === 1 ? 'serial' : `${u.parallel} piscina threads`}`,
    '',
  ].join('\n');
}

export function formatUntrustedHtml(us: readonly UntrustedResult[]): string {
  return htmlPage(
    'vmstack compare --experiment untrusted',
    us.map((u) => ({
      heading: `Untrusted NVMe — profile ${u.profile}`,
      body: `<p class="meta">${u.description}</p>\n${htmlTable(
        [...HEAD],
        u.rows.flatMap((r) => r.ways.map((w) => cellsOf(r, w))),
        [0, 1],
      )}`,
    })),
  );
}
