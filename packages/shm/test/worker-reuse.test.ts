/**
 * With worker reuse on, a worker kept for the next run holds no earlier run's
 * shared memory beyond what the next run reuses: run after run, each with a
 * 32 MiB "guest RAM" from the shared-buffer pool that two reused workers
 * write, the ArrayBuffer memory and RSS of the process stay within a few
 * guest RAMs. This thread's `arrayBuffers` counts a SharedArrayBuffer it
 * allocated until the last thread mapping it lets it go.
 */
import {
  allocateShared,
  captureSharedBuffers,
  RunControl,
  releaseIdleWorkers,
  releaseSharedBuffers,
  runWorkers,
  setWorkerReuse,
  sharedPoolStats,
} from '@vmstack/shm';
import test from 'ava';

const entry = new URL('./helpers/guest-ram-worker.js', import.meta.url);
const GUEST_RAM_BYTES = 32 * 1024 * 1024;
const RUNS = 24;
const WARM_UP_RUNS = 4;

setWorkerReuse(true);
test.after.always(() => releaseIdleWorkers());

test('reused workers and pooled guest RAM: ArrayBuffers and RSS stay within three guest RAMs', async (t) => {
  const threadIds = new Set<number>();
  let base = { arrayBuffers: 0, rss: 0 };
  let maxArrayBuffers = 0;
  let maxRss = 0;
  const freshBefore = sharedPoolStats.freshBuffers;
  for (let r = 1; r <= RUNS; r++) {
    const { value: regions, buffers } = captureSharedBuffers(() => ({ guestRam: allocateShared(GUEST_RAM_BYTES), control: RunControl.allocate() }));
    const { guestRam, control } = regions;
    // what the previous run wrote is gone: a reused buffer reads as zeros, as a fresh one does
    const view = new Uint8Array(guestRam);
    t.is(
      view.findIndex((b) => b !== 0),
      -1,
    );
    const out = await runWorkers<{ sum: number }>(
      [0, 1].map((i) => ({ role: `ram${i}`, entry, init: { guestRam, value: 1 + (r % 2) } })),
      control,
      { timeoutMs: 60_000 },
    );
    releaseSharedBuffers(buffers);
    t.deepEqual(
      out.results.map((x) => x.sum),
      [0, 1].map(() => (GUEST_RAM_BYTES / 4096) * (1 + (r % 2))),
    );
    for (const w of out.workers) threadIds.add(w.threadId);
    const m = process.memoryUsage();
    if (r === WARM_UP_RUNS) base = { arrayBuffers: m.arrayBuffers, rss: m.rss };
    else if (r > WARM_UP_RUNS) {
      maxArrayBuffers = Math.max(maxArrayBuffers, m.arrayBuffers);
      maxRss = Math.max(maxRss, m.rss);
    }
  }
  t.is(threadIds.size, 2, 'the same two workers served every run');
  t.is(sharedPoolStats.freshBuffers - freshBefore, 2, 'one guest RAM and one control block served every run');
  const MiB = 1024 * 1024;
  t.true(maxArrayBuffers - base.arrayBuffers < 3 * GUEST_RAM_BYTES, `ArrayBuffers grew ${((maxArrayBuffers - base.arrayBuffers) / MiB).toFixed(0)} MiB`);
  t.true(maxRss - base.rss < 3 * GUEST_RAM_BYTES, `RSS grew ${((maxRss - base.rss) / MiB).toFixed(0)} MiB`);
});
