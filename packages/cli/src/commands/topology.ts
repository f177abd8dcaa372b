/**
 * `vmstack topology`: what `vmstack run` with the same options would run, as
 * a tree (`formatTopologyTree`) or as the JSON `--topology FILE` reads back.
 * Nothing runs. A shape the planner cannot run yet is still printed (exit 0),
 * followed by one line saying why it cannot run yet (on stderr with
 * `--output-format json`, so that stdout stays the topology alone).
 */

import type { DmaStrategy, FioJobSpec, ViommuDriverGeneration } from '@vmstack/guest-kernel';
import { DEFAULT_PROFILE_PATH, InputError, loadProfile } from '@vmstack/shm';
import { jobsFromCommandLine, jobsFromFile } from '../fio/options.js';
import { type BuiltTopology, resolveTopology, type TopologyArgs } from '../topology/build.js';
import { planStack } from '../topology/plan.js';
import { formatTopologyTree } from '../topology/tree.js';
import { parseGuestRam } from './run.js';

export interface TopologyCommandArgs {
  jobfile?: string;
  /** fio options from the command line, as written */
  fio: Record<string, string | boolean>;
  strategy: DmaStrategy;
  driver: ViommuDriverGeneration;
  /** as written, e.g. "512m" */
  guestRam: string;
  untrusted: boolean;
  topology: TopologyArgs;
  outputFormat: 'normal' | 'json';
}

export async function topologyCommand(a: TopologyCommandArgs): Promise<void> {
  // the shape does not depend on the size: a stand-in for jobs without one (run refuses those, as fio does)
  const defaults = { rw: 'read', bs: '4k', iodepth: '1', size: '64m' };
  const parsed = a.jobfile ? jobsFromFile(a.jobfile, a.fio, { defaults }) : jobsFromCommandLine(a.fio, defaults);
  const groups = [...new Set(parsed.jobs.map((j) => j.groupId))].sort((x, y) => x - y);
  if (groups.length > 1 && (a.topology.file !== undefined || a.outputFormat === 'json'))
    throw new InputError(
      a.topology.file !== undefined ? '--topology' : '--output-format',
      a.topology.file ?? a.outputFormat,
      `jobs of one barrier group: a topology places jobs by their index in one group's list, and the job file has ${groups.length} stonewall groups`,
    );
  const guestRamBytes = a.topology.file === undefined ? parseGuestRam(a.guestRam) : 0;
  const vm = { strategy: a.strategy, driverGeneration: a.driver, guestRamBytes, untrusted: a.untrusted };
  const shapes = groups.map((g) =>
    resolveTopology(
      a.topology,
      parsed.jobs.filter((j) => j.groupId === g),
      vm,
    ),
  );
  const profile = loadProfile(DEFAULT_PROFILE_PATH);
  const notRunnable = shapes.map((s) => notRunnableYet(s, profile));

  if (a.outputFormat === 'json') {
    process.stdout.write(`${JSON.stringify(shapes[0].topology, null, 2)}\n`);
    if (notRunnable[0]) process.stderr.write(`vmstack: not runnable yet: ${notRunnable[0]}\n`);
    return;
  }
  const text = shapes.map((s, gi) => {
    const head = groups.length > 1 ? `barrier group ${groups[gi]}\n` : '';
    return `${head}${formatTopologyTree(s.topology, s.jobs)}${notRunnable[gi] ? `not runnable yet: ${notRunnable[gi]}\n` : ''}`;
  });
  process.stdout.write(text.join('\n'));
}

/** Why the planner refuses this shape (its InputError's message), or null if it would run it. */
function notRunnableYet(s: BuiltTopology, profile: ReturnType<typeof loadProfile>): string | null {
  try {
    planStack(s.topology, { jobs: s.jobs as FioJobSpec[], profile });
    return null;
  } catch (e) {
    if (e instanceof InputError) return e.message.replace(/\s*\n\s*/g, ' ');
    throw e;
  }
}
