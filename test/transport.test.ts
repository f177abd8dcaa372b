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

// model_speed: simulated time is the longest job's runtime; each component's wall time only when asked for
for (const transport of ['workers', 'in-thread'] as const) {
  test(`${transport}: model_speed gives simulated time per wall time, and each component's wall time when asked`, async (t) => {
    const job = { rw: 'read', bs: '4k', iodepth: '16', size: '512k' };
    const plain = (await runFio('strict', job, { transport })).result.vmstack.model_speed;
    t.is(plain.component_wall_ns, undefined);
    const run = await runFio('strict', job, { transport, timeComponents: true });
    const speed = run.result.vmstack.model_speed;
    t.is(speed.simulated_ns, run.result.jobs[0].jobRuntimeNs);
    t.true(speed.sim_time_per_wall_time > 0 && Number.isFinite(speed.sim_time_per_wall_time));
    const c = speed.component_wall_ns!;
    for (const k of ['guest', 'vmm', 'host', 'device'] as const) t.true(c[k] > 0, `${k} worked: ${c[k]} ns`);
    t.is(speed.component_wall_ns_per_io!.device, Math.round(c.device / speed.simulated_ios));
  });
}
