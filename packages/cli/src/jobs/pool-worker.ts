/**
 * The piscina thread's body (jobs/local.ts): runs a task, keeping its stack
 * workers and shared buffers for the next one; or, once the pool is done,
 * lets its idle workers exit.
 */

import { releaseIdleWorkers, setWorkerReuse } from '@vmstack/shm';
import { type JobTask, type JobTaskResult, runJobTask } from './tasks.js';

export type PoolMessage =
  | { kind: 'task'; task: JobTask }
  /** every thread gets one: `barrier` counts the releases started, so each waits for the others (at most RELEASE_WAIT_MS) */
  | { kind: 'release'; barrier: SharedArrayBuffer; threads: number };

/** how long a release waits for the other threads' releases to start */
const RELEASE_WAIT_MS = 10_000;

setWorkerReuse(true);

export default async function run(m: PoolMessage): Promise<JobTaskResult | null> {
  if (m.kind === 'task') return runJobTask(m.task);
  const started = new Int32Array(m.barrier);
  Atomics.add(started, 0, 1);
  Atomics.notify(started, 0);
  const deadline = Date.now() + RELEASE_WAIT_MS;
  for (let n = Atomics.load(started, 0); n < m.threads && Date.now() < deadline; n = Atomics.load(started, 0)) Atomics.wait(started, 0, n, 100);
  await releaseIdleWorkers();
  return null;
}
