/**
 * Running a command's tasks in this process: one after another in this
 * thread, or spread over `parallel` piscina threads. Each piscina thread
 * keeps its stack workers between the tasks it runs (worker reuse, and the
 * shared-buffer pool, as the main thread does), so a task pays no worker
 * start-up once its thread has run one. Before the pool is destroyed (which
 * terminates its threads) every thread lets its idle workers exit by
 * themselves: a worker terminated while V8 still compiles in the background
 * can abort the process (see shm lifecycle.ts).
 */

import type { CostProfile } from '@vmstack/shm';
import { Piscina } from 'piscina';
import { type CompareTask, type CompareTaskResult, runCompareTask } from '../compare/experiment.js';
import type { RunProgress } from '../report/progress.js';
import type { PoolMessage } from './pool-worker.js';
import type { JobTask, JobTaskResult } from './tasks.js';

/** compare's and sweep's cells, in task order. */
export async function runCompareTasks(
  tasks: readonly CompareTask[],
  profile: CostProfile,
  parallel: number,
  progress?: RunProgress,
): Promise<CompareTaskResult[]> {
  try {
    if (parallel === 1) {
      const results: CompareTaskResult[] = [];
      for (const t of tasks) results.push(await track(runCompareTask(t, profile), progress));
      return results;
    }
    return (await runOnPiscina(
      tasks.map((cell) => ({ kind: 'compare-cell', cell })),
      parallel,
      progress,
    )) as CompareTaskResult[];
  } finally {
    progress?.end();
  }
}

/** `p`, counted by the progress bar when it settles. */
export function track<T>(p: Promise<T>, progress: RunProgress | undefined): Promise<T> {
  return progress ? progress.track(p) : p;
}

/** Tasks on `threads` piscina threads, results in task order. */
export async function runOnPiscina(tasks: readonly JobTask[], threads: number, progress?: RunProgress): Promise<JobTaskResult[]> {
  const pool = new Piscina({ filename: new URL('./pool-worker.js', import.meta.url).href, minThreads: threads, maxThreads: threads });
  try {
    return await Promise.all(tasks.map((task) => track(pool.run({ kind: 'task', task } satisfies PoolMessage) as Promise<JobTaskResult>, progress)));
  } finally {
    // one release per thread: each waits at the barrier until all have started, so no thread takes two
    const barrier = new SharedArrayBuffer(4);
    await Promise.allSettled(Array.from({ length: threads }, () => pool.run({ kind: 'release', barrier, threads } satisfies PoolMessage)));
    await pool.destroy();
  }
}
