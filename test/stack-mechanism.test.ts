/**
 * Whole stack on real workers: the counters show HOW each strategy works,
 * not just that it works. strict sends one virtio-iommu MAP per physically
 * contiguous run and one UNMAP per I/O, each forwarded to VFIO and followed by
 * an IOTLB invalidation; direct sends nothing; lazy batches the
 * invalidations behind its flush queue. The model's throughput ranks them as
 * expected, the virtual clock repeats itself, and four vCPUs fight over the
 * driver's request_lock.
 */

import { VIOMMU_REQUEST_LOCK } from '@vmstack/guest-kernel';
import { IOMMU_LOCK } from '@vmstack/host-vfio';
import { releaseIdleWorkers, setWorkerReuse } from '@vmstack/shm';
import { VIOMMU_DEVICE_MUTEX } from '@vmstack/vmm';
import test from 'ava';
import { NO_LEAKS, runFio, type StackRun } from './helpers/stack.js';

// the stack's workers stay between runs (no start-up per run); they exit before the process does
setWorkerReuse(true);
test.after.always(() => releaseIdleWorkers());

/** 4k sequential reads at iodepth 32: the throughput comparison's workload */
const SEQ4K = { rw: 'read', bs: '4k', iodepth: '32', size: '512k', verify: 'crc32c' };
const IOS_SEQ4K = 128;
const memo = new Map<string, Promise<StackRun>>();
function once(key: string, f: () => Promise<StackRun>): Promise<StackRun> {
  let p = memo.get(key);
  if (!p) memo.set(key, (p = f()));
  return p;
}
const direct = () => once('direct', () => runFio('direct', SEQ4K));
const strict = () => once('strict', () => runFio('strict', SEQ4K));
const lazy = () => once('lazy', () => runFio('lazy', SEQ4K));

test('strict, 4k: one MAP per I/O + 1 for the coherent queue memory, one UNMAP per I/O + 1 at shutdown, every VFIO mapping unmapped, an IOTLB invalidation per unmap', async (t) => {
  const r = await strict();
  const c = r.counters;
  t.is(r.ios, IOS_SEQ4K);
  t.is(c.virtio_iommu.map, IOS_SEQ4K + 1);
  t.is(c.virtio_iommu.unmap, IOS_SEQ4K + 1);
  t.deepEqual([c.virtio_iommu.attach, c.virtio_iommu.probe, c.virtio_iommu.detach], [1, 1, 1]);
  t.is(c.vfio.map_dma, c.virtio_iommu.map, 'each MAP became one VFIO_IOMMU_MAP_DMA');
  t.is(c.vfio.unmap_dma, c.vfio.map_dma, 'each mapping was unmapped through VFIO');
  t.true(c.iotlb.invalidations >= IOS_SEQ4K, `IOTLB invalidations ${c.iotlb.invalidations} ≥ I/Os`);
  // v5.10 driver: a MAP waits for its answer, an UNMAP is kicked by the IOTLB sync: two VM exits per I/O
  t.true(c.virtio_iommu.kicks >= 2 * IOS_SEQ4K, `kicks ${c.virtio_iommu.kicks} ≥ 2 per I/O`);
  t.deepEqual(r.verify, { blocks_checked: IOS_SEQ4K, corrupt: 0, overwritten: 0, never_written: IOS_SEQ4K });
  t.deepEqual(r.leaks, NO_LEAKS);
});

test('strict, 16k on scattered user pages: one MAP per physically contiguous run (4 per I/O); on huge pages 1 per I/O', async (t) => {
  const fio = { rw: 'read', bs: '16k', iodepth: '8', size: '256k', verify: 'crc32c' };
  const [scattered, huge, notifier] = await Promise.all([
    runFio('strict', fio),
    runFio('strict', fio, { bufferContiguity: 'huge' }),
    runFio('strict', fio, { vmm: 'qemu-notifier' }),
  ]);
  const ios = 16;
  t.is(scattered.ios, ios);
  t.is(scattered.counters.virtio_iommu.map, 4 * ios + 1, 'four 4 KiB runs per 16 KiB I/O, plus the coherent memory');
  t.is(scattered.counters.virtio_iommu.unmap, ios + 1, 'one UNMAP covers the whole IOVA range');
  // crosvm (the default VMM path) hands VFIO the UNMAP's range in one ioctl; type1 removes each vfio_dma with its own flush
  t.is(scattered.counters.vfio.unmap_dma, scattered.counters.virtio_iommu.unmap, 'the UNMAP of a range covering 4 MAPs became one VFIO unmap');
  t.true(scattered.counters.iotlb.invalidations >= 4 * ios, 'an IOTLB invalidation per vfio_dma removed');
  // QEMU's notifier calls VFIO once per covered mapping
  t.is(notifier.counters.vfio.unmap_dma, notifier.counters.vfio.map_dma, 'qemu-notifier: the UNMAP of a range covering 4 MAPs became 4 VFIO unmaps');
  t.deepEqual(notifier.leaks, NO_LEAKS);
  t.is(huge.ios, ios);
  t.is(huge.counters.virtio_iommu.map, ios + 1, 'one contiguous run per I/O');
  t.is(huge.counters.virtio_iommu.unmap, ios + 1);
  for (const r of [scattered, huge]) {
    t.deepEqual(r.verify, { blocks_checked: 4 * ios, corrupt: 0, overwritten: 0, never_written: 4 * ios });
    t.deepEqual(r.leaks, NO_LEAKS);
  }
});

test('direct: no virtio-iommu request at all (the VMM maps guest RAM once through VFIO)', async (t) => {
  const r = await direct();
  const v = r.counters.virtio_iommu;
  t.deepEqual([v.attach, v.probe, v.map, v.unmap, v.detach, v.kicks], [0, 0, 0, 0, 0, 0]);
  t.deepEqual([r.counters.vfio.map_dma, r.counters.vfio.unmap_dma], [1, 1]);
  t.is(r.counters.iotlb.invalidations, 0);
  t.is(r.ios, IOS_SEQ4K);
  t.deepEqual(r.verify, { blocks_checked: IOS_SEQ4K, corrupt: 0, overwritten: 0, never_written: IOS_SEQ4K });
  t.deepEqual(r.leaks, NO_LEAKS);
});

test('lazy: invalidation in batches: far fewer kicks than strict, the flush queue flushed and freed one IOVA per I/O', async (t) => {
  const [l, s] = await Promise.all([lazy(), strict()]);
  const c = l.counters;
  t.is(l.ios, IOS_SEQ4K);
  t.is(c.virtio_iommu.map, IOS_SEQ4K + 1);
  t.is(c.virtio_iommu.unmap, IOS_SEQ4K + 1, 'still one UNMAP per I/O, queued behind the next kick');
  t.true(c.virtio_iommu.kicks < 1.5 * IOS_SEQ4K, `lazy kicks ${c.virtio_iommu.kicks} well below 2 per I/O`);
  t.true(c.virtio_iommu.kicks < s.counters.virtio_iommu.kicks * 0.75, `lazy kicks ${c.virtio_iommu.kicks} vs strict ${s.counters.virtio_iommu.kicks}`);
  t.true(c.lazy!.flushes >= 1);
  t.true(c.lazy!.flushes < IOS_SEQ4K / 4, `flushes ${c.lazy!.flushes}: batched`);
  t.is(c.lazy!.entries_freed, IOS_SEQ4K, 'every unmapped IOVA went back to the allocator through the flush queue');
  t.is(c.vfio.unmap_dma, c.vfio.map_dma);
  t.deepEqual(l.verify, { blocks_checked: IOS_SEQ4K, corrupt: 0, overwritten: 0, never_written: IOS_SEQ4K });
  t.deepEqual(l.leaks, NO_LEAKS);
});

test('throughput on the default profile, 4k sequential reads at iodepth 32: direct > lazy > strict', async (t) => {
  const [d, l, s] = await Promise.all([direct(), lazy(), strict()]);
  t.log(`bytes/ns: direct ${d.readBytesPerNs.toFixed(3)}, lazy ${l.readBytesPerNs.toFixed(3)}, strict ${s.readBytesPerNs.toFixed(3)}`);
  t.true(d.readBytesPerNs > l.readBytesPerNs, 'direct beats lazy');
  t.true(l.readBytesPerNs > s.readBytesPerNs, 'lazy beats strict');
});

// strict at iodepth 32 unmaps and invalidates every I/O's IOVA while later
// doorbells arrive, so its runs repeat only if the device applies each
// invalidation before any doorbell the host rang after publishing it.
test('the virtual clock repeats itself: the same input gives the same runtimes, latencies and counters (direct, strict at iodepth 32 three times, bounce)', async (t) => {
  const pool = { ...SEQ4K, iodepth: '16' };
  const [d1, d2, s1, s2, s3, b1, b2] = await Promise.all([
    direct(),
    runFio('direct', SEQ4K),
    strict(),
    runFio('strict', SEQ4K),
    runFio('strict', SEQ4K),
    runFio('bounce', pool),
    runFio('bounce', pool),
  ]);
  for (const [a, b, what] of [
    [d1, d2, 'direct'],
    [s1, s2, 'strict run 2'],
    [s1, s3, 'strict run 3'],
    [b1, b2, 'bounce'],
  ] as const) {
    const ra = a.result.jobs[0].read;
    const rb = b.result.jobs[0].read;
    t.is(ra.runtimeNs, rb.runtimeNs, `${what}: runtime`);
    t.is(a.result.jobs[0].jobRuntimeNs, b.result.jobs[0].jobRuntimeNs, `${what}: job runtime`);
    for (const p of [50, 99, 100]) t.is(ra.clatNs.getValueAtPercentile(p), rb.clatNs.getValueAtPercentile(p), `${what}: clat p${p}`);
    t.deepEqual(a.counters, b.counters, `${what}: every counter`);
  }
  t.true(b1.counters.virtio_iommu.map > 1, 'the pool run did talk to the VMM');
});

test('numjobs=4 strict: the vCPUs contend on viommu->request_lock; iommu->lock is taken once per VFIO call and, behind request_lock, never contended', async (t) => {
  const r = await runFio('strict', { rw: 'randread', bs: '4k', iodepth: '8', size: '512k', numjobs: '4', verify: 'crc32c' });
  const ios = 4 * 128;
  t.is(r.result.jobs.length, 4);
  t.is(r.ios, ios);
  const req = r.lock(VIOMMU_REQUEST_LOCK);
  t.log(`request_lock: ${req.acquisitions} acquisitions, ${req.contentions} contentions, ${(req.waittime_total_ns / 1000).toFixed(1)} µs waited`);
  t.true(req.contentions > 0, 'four vCPUs queue on the driver lock');
  t.true(req.waittime_total_ns > 0);
  const c = r.counters;
  t.is(c.virtio_iommu.map, ios + 1);
  t.is(c.virtio_iommu.unmap, ios + 1);
  const container = r.lock(IOMMU_LOCK);
  // and the VMM's VFIO_IOMMU_GET_INFO at start-up, which takes it once too
  t.is(container.acquisitions, c.vfio.map_dma + c.vfio.unmap_dma + 1, 'iommu->lock: one acquisition per VFIO ioctl');
  // One guest's virtio-iommu requests are serialised by its request_lock (the
  // driver holds it while it busy-polls for the answer), so the VMM's device
  // mutex and the host's container lock never see two requests of one VM at
  // once: no contention from a single VM.
  t.is(container.contentions, 0, 'iommu->lock: no contention from one VM');
  t.is(r.lock(VIOMMU_DEVICE_MUTEX).contentions, 0, 'the VMM device mutex: no contention either');
  t.deepEqual(r.verify, { blocks_checked: ios, corrupt: 0, overwritten: 0, never_written: ios });
  t.deepEqual(r.leaks, NO_LEAKS);
});

test('numjobs=3 strict with --quantum 0: lock grants follow model time exactly, so the same inputs give the same numbers every time', async (t) => {
  const job = { rw: 'randread', bs: '4k', iodepth: '8', size: '256k', numjobs: '3' };
  // what must repeat: every job's runtime and mean latency, and every lock's model-time
  // contentions and wait (the threads' own fights, real_contentions, may differ)
  const numbers = (r: StackRun) => ({
    jobs: r.result.jobs.map((j) => [j.read.runtimeNs, j.read.latNs.mean]),
    locks: r.result.vmstack.lock_stat.map((l) => [l.name, l.contentions, l.waittime_total_ns, l.holdtime_total_ns]),
  });
  const first = await runFio('strict', job, { quantumNs: 0 });
  t.true(first.lock(VIOMMU_REQUEST_LOCK).contentions > 0);
  for (let i = 0; i < 2; i++) t.deepEqual(numbers(await runFio('strict', job, { quantumNs: 0 })), numbers(first), `run ${i + 2} against run 1`);
});

test('numjobs=4 lazy randrw with --quantum 0: nested locks (flush queue → IOVA caches → request_lock) taken while peers block on them neither deadlock nor change the numbers', async (t) => {
  // every vCPU's flush-queue timer frees the other CPUs' rings under their locks, and the
  // end-of-job drain does too: vCPUs block on locks whose holders wait in the quantum gate
  const job = { rw: 'randrw', bs: '4k', iodepth: '8', size: '512k', numjobs: '4', offset_increment: '512k', verify: 'crc32c' };
  const numbers = (r: StackRun) => ({
    jobs: r.result.jobs.map((j) => [j.read.latNs.mean, j.write.latNs.mean]),
    locks: r.result.vmstack.lock_stat.map((l) => [l.name, l.contentions, l.waittime_total_ns, l.acq_bounces]),
  });
  const a = await runFio('lazy', job, { quantumNs: 0 });
  const b = await runFio('lazy', job, { quantumNs: 0 });
  t.deepEqual(numbers(b), numbers(a));
  // fio's verify phase reads back the blocks each job wrote (4k writes: one block each)
  const written = a.result.jobs.reduce((n, j) => n + j.write.totalIos, 0);
  t.true(written > 0 && written < 4 * 128);
  t.deepEqual(a.verify, { blocks_checked: written, corrupt: 0, overwritten: 0, never_written: 0 });
  t.deepEqual(a.leaks, NO_LEAKS);
});
