import { releaseIdleWorkers, setWorkerReuse } from '@vmstack/shm';
import test from 'ava';
import { runFio } from './helpers/stack.js';

// the stack's workers stay between runs (no start-up per run); they exit before the process does
setWorkerReuse(true);
test.after.always(() => releaseIdleWorkers());

// The model's numbers must not depend on how the components are run: every
// worker on its own thread, or all of them in this thread with direct calls.
for (const strategy of ['direct', 'strict', 'lazy', 'bounce'] as const) {
  test(`${strategy}: workers and the in-thread transport give the same numbers`, async (t) => {
    const job = { rw: 'read', bs: '4k', iodepth: '16', size: '512k', verify: 'crc32c' };
    const workers = await runFio(strategy, job);
    const inThread = await runFio(strategy, job, { transport: 'in-thread' });
    t.is(workers.result.jobs[0].read.runtimeNs, inThread.result.jobs[0].read.runtimeNs);
    t.deepEqual(workers.counters.virtio_iommu, inThread.counters.virtio_iommu);
    t.deepEqual(workers.counters.iotlb, inThread.counters.iotlb);
    t.deepEqual(workers.verify, inThread.verify);
    const threads = new Set(inThread.result.vmstack.workers.map((w) => w.thread_id));
    t.is(threads.size, 1, 'in-thread: one thread');
  });
}
