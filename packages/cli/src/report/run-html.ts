/**
 * `vmstack run --html`: an offline HTML report of one run, per barrier group
 * the topology it ran (drawn as a tree), the jobs' throughput, and the locks
 * that were contended or held, as in /proc/lock_stat.
 */

import type { BuiltTopology } from '../topology/build.js';
import { htmlPage, htmlTable } from './html.js';
import type { RunResult } from './result.js';
import { topologyHtml } from './topology-html.js';

const MiB = 1024 * 1024;

function mibps(bytes: number, ns: number): string {
  return ns > 0 ? ((bytes / MiB) * (1e9 / ns)).toFixed(1) : '0.0';
}

function iops(ios: number, ns: number): string {
  return ns > 0 ? Math.round(ios * (1e9 / ns)).toString() : '0';
}

/** The report of a run: `results` and `shapes` one per barrier group, in order. */
export function formatRunHtml(results: readonly RunResult[], shapes: readonly BuiltTopology[]): string {
  const sections = results.flatMap((r, gi) => {
    const group = results.length > 1 ? ` — barrier group ${gi}` : '';
    const v = r.vmstack;
    return [
      {
        heading: `Topology${group}`,
        body: `<p class="meta">strategy ${v.strategy}, driver ${v.driver_generation}, clock ${v.clock}${v.untrusted ? ', untrusted device' : ''}</p>\n${topologyHtml(shapes[gi].topology, shapes[gi].jobs)}`,
      },
      {
        heading: `Jobs${group}`,
        body: htmlTable(
          ['job', 'read MiB/s', 'read IOPS', 'write MiB/s', 'write IOPS', 'runtime ms'],
          r.jobs.map((j) => [
            j.jobname,
            mibps(j.read.ioBytes, j.read.runtimeNs),
            iops(j.read.totalIos, j.read.runtimeNs),
            mibps(j.write.ioBytes, j.write.runtimeNs),
            iops(j.write.totalIos, j.write.runtimeNs),
            (j.jobRuntimeNs / 1e6).toFixed(3),
          ]),
        ),
      },
      {
        heading: `Locks${group}`,
        body: htmlTable(
          ['lock', 'kind', 'contentions', 'wait total µs', 'acquisitions', 'hold total µs'],
          v.lock_stat
            .filter((l) => l.acquisitions > 0)
            .sort((a, b) => b.contentions - a.contentions || b.acquisitions - a.acquisitions)
            .map((l) => [
              l.name,
              l.kind,
              String(l.contentions),
              (l.waittime_total_ns / 1000).toFixed(1),
              String(l.acquisitions),
              (l.holdtime_total_ns / 1000).toFixed(1),
            ]),
        ),
      },
    ];
  });
  return htmlPage('vmstack run', sections);
}
