/**
 * A run's call trees as flame graphs, in the two formats perf users open:
 *
 * - **folded** (Brendan Gregg's `stackcollapse` output, what `flamegraph.pl`,
 *   speedscope and most flame-graph viewers read): one line per call path,
 *   `root;caller;…;function count`, the count being the path's self time in
 *   model ns;
 * - **speedscope** (its file format, `https://www.speedscope.app/file-format-schema.json`):
 *   one `sampled` profile per root, each distinct call path a sample whose
 *   weight is its self time in nanoseconds.
 *
 * The roots say where the work ran: each vCPU (`guest/vcpu0`, …; with several
 * VMs `vm1/guest/vcpu0`), the VMM (`vmm`), and the host kernel (`host`) when
 * no VMM calls into it. The host's VFIO work runs in the VMM thread's ioctl,
 * so with a VMM it appears under the VMM's request handlers
 * (`vmm;virtio_iommu_handle_map;vfio_dma_do_map`) and not as a root of its
 * own: no model ns is drawn twice.
 */

import type { CallTreeNode } from '@vmstack/shm';
import type { ProfileWhere } from './vmstack-report.js';

export const FLAMEGRAPH_FORMATS = ['folded', 'speedscope'] as const;
export type FlamegraphFormat = (typeof FLAMEGRAPH_FORMATS)[number];

/** One root of a run's flame graph: a worker's call tree and where it ran. */
export interface CallTreeRoot {
  /** `guest/vcpu0`, `vmm`, `host` (with several VMs prefixed by the VM's id) */
  name: string;
  where: ProfileWhere;
  tree: CallTreeNode[];
}

/** Frame names in folded stacks: `;` separates frames and the last space the count, so neither may appear in a name. */
function foldedName(name: string): string {
  return name.replace(/[;\s]/g, '_');
}

/** Each call path with self time: the frames from the root down, and the self ns. */
function* paths(root: CallTreeRoot): Generator<{ frames: string[]; selfNs: number }> {
  const frames: string[] = [root.name];
  function* walk(nodes: readonly CallTreeNode[]): Generator<{ frames: string[]; selfNs: number }> {
    for (const n of nodes) {
      frames.push(n.name);
      if (n.selfNs > 0) yield { frames: [...frames], selfNs: n.selfNs };
      yield* walk(n.children);
      frames.pop();
    }
  }
  yield* walk(root.tree);
}

/** Folded stacks: `root;a;b self_ns` per call path with self time, roots in the given order. */
export function formatFolded(roots: readonly CallTreeRoot[]): string {
  const lines: string[] = [];
  for (const root of roots) for (const p of paths(root)) lines.push(`${p.frames.map(foldedName).join(';')} ${Math.round(p.selfNs)}`);
  return lines.length > 0 ? `${lines.join('\n')}\n` : '';
}

/** speedscope's file format (see the header). */
export interface SpeedscopeFile {
  $schema: 'https://www.speedscope.app/file-format-schema.json';
  shared: { frames: { name: string }[] };
  profiles: {
    type: 'sampled';
    name: string;
    unit: 'nanoseconds';
    startValue: number;
    endValue: number;
    samples: number[][];
    weights: number[];
  }[];
  name: string;
  activeProfileIndex: number;
  exporter: string;
}

/** A speedscope file: one sampled profile per root, frames shared; `name` names the group (e.g. the job). */
export function speedscopeFile(roots: readonly CallTreeRoot[], name: string, exporter: string): SpeedscopeFile {
  const frames: { name: string }[] = [];
  const frameIndex = new Map<string, number>();
  const indexOf = (frame: string): number => {
    let i = frameIndex.get(frame);
    if (i === undefined) {
      i = frames.length;
      frames.push({ name: frame });
      frameIndex.set(frame, i);
    }
    return i;
  };
  const profiles = roots.map((root) => {
    const samples: number[][] = [];
    const weights: number[] = [];
    for (const p of paths(root)) {
      // the root is the profile itself: its stacks start at the outermost function
      samples.push(p.frames.slice(1).map(indexOf));
      weights.push(Math.round(p.selfNs));
    }
    const total = weights.reduce((s, w) => s + w, 0);
    return { type: 'sampled' as const, name: root.name, unit: 'nanoseconds' as const, startValue: 0, endValue: total, samples, weights };
  });
  return {
    $schema: 'https://www.speedscope.app/file-format-schema.json',
    shared: { frames },
    profiles,
    name,
    activeProfileIndex: 0,
    exporter,
  };
}

/** The run's flame graph in `format`, as the text of a file. */
export function formatFlamegraph(roots: readonly CallTreeRoot[], format: FlamegraphFormat, name: string, exporter: string): string {
  return format === 'folded' ? formatFolded(roots) : `${JSON.stringify(speedscopeFile(roots, name, exporter))}\n`;
}
