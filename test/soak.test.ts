/**
 * A process that runs the stack many times with worker reuse on (compare,
 * sweep, scale, the tests) keeps nothing of its earlier runs: idle workers let
 * go of the guest RAM and rings they mapped, or map the same buffers the next
 * run gets back from the shared-buffer pool (shm shared-pool.ts).
 *
 * `process.memoryUsage().arrayBuffers` of this thread counts every
 * SharedArrayBuffer this thread allocated until the last thread that maps it
 * lets it go (the memory is freed by the allocator that made it, here this
 * thread's): a run's regions retained by an idle worker stay counted here.
 */

import { readdirSync } from 'node:fs';
import { jobsFromCommandLine, runStack } from '@vmstack/cli';
import { DEFAULT_PROFILE_PATH, loadProfile, releaseIdleWorkers, setWorkerReuse, sharedPoolStats } from '@vmstack/shm';
import test from 'ava';

setWorkerReuse(true);
test.after.always(() => releaseIdleWorkers());

const profile = loadProfile(DEFAULT_PROFILE_PATH);
const GUEST_RAM_BYTES = 64 * 1024 * 1024;
const RUNS = 60;
const WARM_UP_RUNS = 5;

/** threads of this process (Linux), or undefined where /proc is missing */
function threadCount(): number | undefined {
  try {
    return readdirSync('/proc/self/task').length;
  } catch {
    return undefined;
  }
}

async function runSmall() {
  const parsed = jobsFromCommandLine({ rw: 'read', bs: '4k', iodepth: '16', size: '64k' }, {});
  return runStack({
    jobs: parsed.jobs,
    jobOptions: parsed.jobOptions,
    globalOptions: {},
    strategy: 'strict',
    clock: 'virtual',
    profile,
    quantumNs: 0,
    driverGeneration: 'v5.10',
    bufferContiguity: 'none',
    guestRamBytes: GUEST_RAM_BYTES,
    spinLoads: 2000,
    dilation: 1,
    timeoutMs: 60_000,
  });
}

/** the shared buffers reachable from a value (a run's result must hold none: its regions go back to the pool) */
function sharedBuffersIn(x: unknown, seen = new Set<object>()): number {
  if (x === null || typeof x !== 'object' || seen.has(x)) return 0;
  seen.add(x);
  if (x instanceof SharedArrayBuffer) return 1;
  if (ArrayBuffer.isView(x)) return x.buffer instanceof SharedArrayBuffer ? 1 : 0;
  return Object.values(x).reduce((n: number, v) => n + sharedBuffersIn(v, seen), 0);
}

test(`${RUNS} runs in one process with worker reuse: heap, ArrayBuffers, RSS, threads and handles stay flat`, async (t) => {
  let base: { heapUsed: number; arrayBuffers: number; rss: number; threads: number | undefined; handles: string[]; freshBytes: number } | undefined;
  let maxHeapUsedBytes = 0;
  let maxArrayBuffersBytes = 0;
  let maxRssBytes = 0;
  for (let r = 1; r <= RUNS; r++) {
    const res = await runSmall();
    t.is(res.jobs[0].read.totalIos, 16);
    if (r === 1) t.is(sharedBuffersIn(res), 0, 'the result holds no shared memory');
    const m = process.memoryUsage();
    if (r === WARM_UP_RUNS) {
      base = {
        heapUsed: m.heapUsed,
        arrayBuffers: m.arrayBuffers,
        rss: m.rss,
        threads: threadCount(),
        handles: process.getActiveResourcesInfo(),
        freshBytes: sharedPoolStats.freshBytes,
      };
    } else if (r > WARM_UP_RUNS) {
      maxHeapUsedBytes = Math.max(maxHeapUsedBytes, m.heapUsed);
      maxArrayBuffersBytes = Math.max(maxArrayBuffersBytes, m.arrayBuffers);
      maxRssBytes = Math.max(maxRssBytes, m.rss);
    }
  }
  if (!base) throw new Error('no warm-up sample');
  const MiB = 1024 * 1024;
  const growth = (x: number, b: number) => `${((x - b) / MiB).toFixed(0)} MiB above the warm-up's ${(b / MiB).toFixed(0)} MiB`;
  // each run maps 64 MiB of guest RAM and ~37 MiB of other regions: kept, 55 runs would add ~5.4 GB
  t.true(
    maxArrayBuffersBytes - base.arrayBuffers < 3 * GUEST_RAM_BYTES,
    `ArrayBuffers ${growth(maxArrayBuffersBytes, base.arrayBuffers)}; bound ${(3 * GUEST_RAM_BYTES) / MiB} MiB`,
  );
  t.true(maxRssBytes - base.rss < 3 * GUEST_RAM_BYTES, `RSS ${growth(maxRssBytes, base.rss)}; bound ${(3 * GUEST_RAM_BYTES) / MiB} MiB`);
  t.true(maxHeapUsedBytes - base.heapUsed < 32 * MiB, `heap ${growth(maxHeapUsedBytes, base.heapUsed)}; bound 32 MiB`);
  // after warm-up every run's regions came from the pool: no new shared memory at all
  t.is(sharedPoolStats.freshBytes, base.freshBytes);
  // the same idle workers serve every run: none is left behind, none is added
  if (base.threads !== undefined) t.is(threadCount(), base.threads);
  t.deepEqual(process.getActiveResourcesInfo().sort(), base.handles.sort());
});
