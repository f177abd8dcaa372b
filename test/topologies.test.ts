/**
 * Topologies on real workers: several VMs on one host, each with its vCPUs, a
 * VMM and the host kernel context of that VMM's ioctls (a worker each), one
 * passed-through NVMe controller per VM (a device worker each). What the VMs
 * share is the host: here, the host IOMMU unit whose invalidation queue every
 * VFIO unmap goes through under `qi->q_lock`. Each test says what the model
 * predicts and why.
 */

import type { Topology, TopologyFlags } from '@vmstack/cli';
import type { DmaStrategy } from '@vmstack/guest-kernel';
import { releaseIdleWorkers, setWorkerReuse } from '@vmstack/shm';
import test from 'ava';
import { NO_LEAKS, runFio, type StackRun } from './helpers/stack.js';

setWorkerReuse(true);
test.after.always(() => releaseIdleWorkers());

const FIO = { rw: 'randread', bs: '4k', iodepth: '16', size: '512k', verify: 'crc32c' };
const IOS_PER_JOB = 128;

/** `vms` VMs of one vCPU, one job, one virtio-iommu, one container and one drive each; drive k behind host IOMMU unit k mod `units`. */
function vmsTopology(vms: number, units: number, strategy: DmaStrategy): Topology {
  return {
    platform: 'vm',
    vms: Array.from({ length: vms }, (_, k) => ({
      id: `vm${k}`,
      ramBytes: 64 * 1024 * 1024,
      strategy,
      driverGeneration: 'v5.10',
      vcpus: [{ id: 0 }],
      jobs: [{ job: k, vcpu: 0 }],
      viommus: [{ id: `viommu${k}` }],
      containers: [{ id: `container${k}` }],
      devices: [
        { id: `nvme${k}`, controller: `nvme-ctrl${k}`, viommu: `viommu${k}`, endpointId: 0x100, domainId: 1, container: `container${k}`, untrusted: false },
      ],
    })),
    hostIommus: Array.from({ length: units }, (_, u) => ({
      id: `dmar${u}`,
      controllers: Array.from({ length: vms }, (_, k) => k)
        .filter((k) => k % units === u)
        .map((k) => `nvme-ctrl${k}`),
    })),
    controllers: Array.from({ length: vms }, (_, k) => ({ id: `nvme-ctrl${k}` })),
  };
}

/** The same job in every VM (job k runs in VM k), exact model-time order. */
function runVms(strategy: DmaStrategy, vms: number, units: number): Promise<StackRun> {
  const sets = Array.from({ length: vms }, () => FIO);
  return runFio(strategy, sets, { topology: vmsTopology(vms, units, strategy), quantumNs: 0 });
}

const alone = (strategy: DmaStrategy) => runFio(strategy, FIO, { quantumNs: 0 });

/** `jobs` copies of the job in the shape the topology flags give, as `vmstack run --numjobs <jobs> --devices 2 ...` builds it. */
function runShape(strategy: DmaStrategy, jobs: number, shape: TopologyFlags): Promise<StackRun> {
  return runFio(
    strategy,
    Array.from({ length: jobs }, () => FIO),
    { quantumNs: 0 },
    shape,
  );
}

test('two VMs on one host IOMMU unit, strict: every VFIO unmap invalidates through the shared queue, so qi->q_lock contends; each VM`s own locks see nothing of the other VM', async (t) => {
  const [two, one] = await Promise.all([runVms('strict', 2, 1), alone('strict')]);
  const q = two.lock('qi->q_lock');
  t.log(`qi->q_lock: ${q.acquisitions} acquisitions, ${q.contentions} contentions, ${(q.waittime_total_ns / 1000).toFixed(1)} µs waited`);
  t.is(two.ios, 2 * IOS_PER_JOB);
  t.is(q.acquisitions, 2 * one.lock('qi->q_lock').acquisitions, 'one queue takes both VMs` invalidations');
  t.true(q.contentions > 0, 'an invalidation found the other VM`s on the queue');
  t.true(q.waittime_total_ns > 0);
  for (const vm of ['vm0', 'vm1']) {
    for (const name of ['viommu->request_lock', 'viommu_dev->mutex', 'zone->lock']) {
      const own = two.lock(`${vm}:${name}`);
      t.is(own.contentions, 0, `${vm}:${name}: one vCPU, and no other VM takes it`);
      t.is(own.acquisitions, one.lock(name).acquisitions, `${vm}:${name}: as many acquisitions as the VM alone`);
    }
    t.is(two.lock(`iommu->lock/container${vm.slice(2)}`).contentions, 0, 'a container per VM: its iommu->lock is its own');
  }
  const lockClass = (c: string) => two.result.vmstack.lock_classes.find((x) => x.class === c);
  t.like(lockClass('viommu->request_lock'), { instances: 2, acquisitions: 2 * one.lock('viommu->request_lock').acquisitions, contentions: 0 });
  t.like(lockClass('iommu->lock'), { instances: 2, contentions: 0 });
  t.like(lockClass('qi->q_lock'), { instances: 1, contentions: q.contentions });
  t.deepEqual(two.verify, { blocks_checked: 2 * IOS_PER_JOB, corrupt: 0, overwritten: 0, never_written: 2 * IOS_PER_JOB });
  t.deepEqual(two.leaks, NO_LEAKS);
  t.deepEqual(
    two.result.vmstack.vms?.map((v) => [v.id, v.jobs]),
    [
      ['vm0', [0]],
      ['vm1', [1]],
    ],
  );
});

test('two VMs on separate host IOMMU units share nothing: each VM runs exactly as it does alone, to the nanosecond', async (t) => {
  const [two, one] = await Promise.all([runVms('strict', 2, 2), alone('strict')]);
  for (const u of ['dmar0', 'dmar1']) t.is(two.lock(`qi->q_lock/${u}`).contentions, 0, `${u} serves one VM`);
  for (const j of two.result.jobs) {
    t.deepEqual(j.read.clatNs.mean, one.result.jobs[0].read.clatNs.mean, 'mean completion latency as alone');
    t.is(j.read.runtimeNs, one.result.jobs[0].read.runtimeNs, 'runtime as alone');
  }
  t.deepEqual(two.verify.corrupt, 0);
});

test('two VMs with the bounce-buffer pool on one unit: slots stay mapped, so I/Os send no unmaps; qi->q_lock is taken only for the pool`s own slot unmaps', async (t) => {
  const [two, strict] = await Promise.all([runVms('bounce', 2, 1), runVms('strict', 2, 1)]);
  const q = two.lock('qi->q_lock');
  t.log(`pool: qi->q_lock ${q.acquisitions} acquisitions, ${q.contentions} contentions; strict: ${strict.lock('qi->q_lock').acquisitions}`);
  for (const r of [two, strict]) t.is(r.lock('qi->q_lock').acquisitions, r.counters.iotlb.invalidations, 'one qi_submit_sync per IOTLB invalidation');
  t.true(two.counters.bounce!.hits > 0);
  t.true(q.acquisitions < strict.lock('qi->q_lock').acquisitions / 5, 'a fraction of strict`s invalidations: slot evictions and shutdown only');
  t.deepEqual(two.verify, { blocks_checked: 2 * IOS_PER_JOB, corrupt: 0, overwritten: 0, never_written: 2 * IOS_PER_JOB });
  t.deepEqual(two.leaks, NO_LEAKS);
});

test('a run of two VMs repeats itself exactly (exact model-time order across VMs)', async (t) => {
  const a = await runVms('strict', 2, 1);
  const b = await runVms('strict', 2, 1);
  t.deepEqual(
    b.result.jobs.map((j) => [j.read.runtimeNs, j.read.clatNs.mean]),
    a.result.jobs.map((j) => [j.read.runtimeNs, j.read.clatNs.mean]),
  );
  t.deepEqual(
    b.result.vmstack.lock_stat.map((l) => [l.name, l.acquisitions, l.contentions, l.waittime_total_ns]),
    a.result.vmstack.lock_stat.map((l) => [l.name, l.acquisitions, l.contentions, l.waittime_total_ns]),
  );
});

test('the planner`s worker roles and the jobs` order: VM by VM, devices last; jobs come back in job-list order', async (t) => {
  const r = await runVms('direct', 2, 1);
  t.deepEqual(
    r.result.vmstack.workers.map((w) => w.role),
    [
      'vm0/vcpu0',
      'vm0/vmm/viommu0',
      'vm0/host-vfio/viommu0',
      'vm1/vcpu0',
      'vm1/vmm/viommu1',
      'vm1/host-vfio/viommu1',
      'nvme-device/nvme-ctrl0',
      'nvme-device/nvme-ctrl1',
    ],
  );
  t.deepEqual(
    r.result.jobs.map((j) => j.jobname),
    ['job0', 'job1'],
  );
});

test('one VM, four jobs, strict, the default shape: the vCPUs contend on the one viommu->request_lock, which serialises their requests, so iommu->lock never does', async (t) => {
  const r = await runShape('strict', 4, {});
  const req = r.lock('viommu->request_lock');
  t.log(`request_lock: ${req.contentions} contentions, ${(req.waittime_total_ns / 1000).toFixed(1)} µs; iommu->lock: ${r.lock('iommu->lock').contentions}`);
  t.true(req.contentions > 0);
  t.is(r.lock('iommu->lock').contentions, 0);
  t.is(r.lock('viommu_dev->mutex').contentions, 0);
  t.deepEqual(r.verify.corrupt, 0);
});

test('one VM, two drives behind one virtio-iommu: jobs on different drives still meet at its one request_lock; each drive has a domain of its own', async (t) => {
  const r = await runShape('strict', 2, { devices: 2 });
  t.true(r.lock('viommu->request_lock').contentions > 0, 'two vCPUs, one request queue');
  for (const d of ['nvme0', 'nvme1']) t.is(r.lock(`iovad->iova_rbtree_lock/${d}`).contentions, 0, `${d}'s IOVA allocator is its own`);
  t.is(r.lock('iommu->lock').contentions, 0, 'behind the request_lock, the container lock never contends');
  t.deepEqual(r.verify, { blocks_checked: 2 * IOS_PER_JOB, corrupt: 0, overwritten: 0, never_written: 2 * IOS_PER_JOB });
  t.deepEqual(r.leaks, NO_LEAKS);
});

test('one VM, two virtio-iommus, a container per drive: nothing of the guest or the VMM is shared, so no lock of theirs contends; the drives share the host IOMMU unit', async (t) => {
  const r = await runShape('strict', 2, { devices: 2, viommus: 2, container: 'per-device' });
  for (const v of ['viommu0', 'viommu1']) {
    t.is(r.lock(`viommu->request_lock/${v}`).contentions, 0);
    t.is(r.lock(`viommu_dev->mutex/${v}`).contentions, 0);
  }
  t.true(
    r.result.vmstack.lock_stat.filter((l) => l.class === 'iommu->lock').every((l) => l.contentions === 0),
    'a container each',
  );
  t.true(r.lock('qi->q_lock').acquisitions > 0);
  t.deepEqual(r.verify, { blocks_checked: 2 * IOS_PER_JOB, corrupt: 0, overwritten: 0, never_written: 2 * IOS_PER_JOB });
  t.deepEqual(r.leaks, NO_LEAKS);
});

test('the pool in the shapes above: two drives, two virtio-iommus, two VMs: the pool maps its slots once per domain, so the big locks stay nearly idle', async (t) => {
  const shapes: [string, TopologyFlags][] = [
    ['two drives', { devices: 2 }],
    ['two virtio-iommus', { devices: 2, viommus: 2, container: 'per-device' }],
    ['two VMs', { vms: 2 }],
  ];
  for (const [what, shape] of shapes) {
    const [pool, strict] = await Promise.all([runShape('bounce', 2, shape), runShape('strict', 2, shape)]);
    const acq = (r: StackRun, c: string) => r.result.vmstack.lock_classes.find((x) => x.class === c)?.acquisitions ?? 0;
    t.log(`${what}: request_lock acquisitions pool ${acq(pool, 'viommu->request_lock')} / strict ${acq(strict, 'viommu->request_lock')}`);
    t.true(acq(pool, 'viommu->request_lock') * 5 < acq(strict, 'viommu->request_lock'), `${what}: far fewer virtio-iommu requests`);
    t.true(pool.counters.bounce!.hits > 0);
    t.is(pool.verify.corrupt, 0);
    t.deepEqual(pool.leaks, NO_LEAKS);
  }
});

test('bare metal, strict, four randrw jobs: no virtio-iommu, so no request_lock to serialise them; the CPUs meet in the IOVA allocator and at the unit`s qi->q_lock', async (t) => {
  // (pure reads complete one at a time from the drive, ~2.4 µs apart at its limit: their unmaps never overlap the 850 ns invalidation)
  const r = await runFio(
    'strict',
    Array.from({ length: 4 }, () => ({ ...FIO, rw: 'randrw' })),
    { quantumNs: 0 },
    { platform: 'bare-metal' },
  );
  const cls = (c: string) => r.result.vmstack.lock_classes.find((x) => x.class === c);
  const q = r.lock('qi->q_lock');
  const iova = ['iovad->iova_rbtree_lock', 'rcache->lock', 'cpu_rcache->lock'].map((c) => cls(c)?.contentions ?? 0);
  t.log(`qi->q_lock: ${q.acquisitions} acquisitions, ${q.contentions} contentions; IOVA allocator contentions (rbtree, depot, per-CPU): ${iova.join(', ')}`);
  t.is(cls('viommu->request_lock'), undefined, 'no virtio-iommu');
  t.is(cls('iommu->lock'), undefined, 'no VFIO container');
  t.is(r.counters.virtio_iommu.map + r.counters.vfio.map_dma, 0);
  t.true(q.contentions > 0, 'strict invalidates once per unmap through the one queue');
  t.true(q.acquisitions >= 4 * IOS_PER_JOB);
  t.true(
    iova.some((c) => c > 0),
    'the IOVA allocator is where the CPUs meet besides the queue',
  );
  const cpu = r.result.vmstack.cpu;
  t.is(cpu.busy_ns.length, 4);
  t.is(cpu.host_cpu_threads, 8, 'the i5-10210U: 4 cores, 8 threads');
  t.is(cpu.host_share_pct, (100 * cpu.busy_ns.reduce((a, b) => a + b, 0)) / (cpu.span_ns * 8), 'top`s view: all CPUs` busy time over the host`s threads');
  t.is(r.verify.corrupt, 0);
  t.deepEqual(r.leaks, NO_LEAKS);
});

test('bare metal with the pool: slots stay mapped in the VT-d domain, so the invalidation queue is nearly idle; every strategy verifies clean, untrusted too', async (t) => {
  const [pool, strict] = await Promise.all([runShape('bounce', 4, { platform: 'bare-metal' }), runShape('strict', 4, { platform: 'bare-metal' })]);
  t.true(pool.lock('qi->q_lock').acquisitions * 5 < strict.lock('qi->q_lock').acquisitions);
  t.true(pool.counters.bounce!.hits > 0);
  for (const strategy of ['direct', 'lazy', 'strict', 'bounce'] as const) {
    const r = await runFio(strategy, FIO, { quantumNs: 0, untrusted: strategy !== 'direct' }, { platform: 'bare-metal' });
    t.deepEqual(r.verify, { blocks_checked: IOS_PER_JOB, corrupt: 0, overwritten: 0, never_written: IOS_PER_JOB }, strategy);
    t.deepEqual(r.leaks, NO_LEAKS, strategy);
  }
});

test('one VM, two virtio-iommus whose drives share one VFIO container: two VMM threads, two host contexts, one iommu->lock — it contends; the request_locks do not', async (t) => {
  const r = await runFio(
    'strict',
    Array.from({ length: 2 }, () => ({ ...FIO, rw: 'randrw' })),
    { quantumNs: 0 },
    { devices: 2, viommus: 2, container: 'shared' },
  );
  const c = r.lock('iommu->lock');
  t.log(`iommu->lock: ${c.acquisitions} acquisitions, ${c.contentions} contentions, ${(c.waittime_total_ns / 1000).toFixed(1)} µs`);
  t.true(c.contentions > 0, 'two host contexts take the one container lock');
  for (const v of ['viommu0', 'viommu1']) t.is(r.lock(`viommu->request_lock/${v}`).contentions, 0, `${v}: one vCPU's requests`);
  t.is(r.result.vmstack.workers.filter((w) => w.role.includes('/host-vfio/')).length, 2, 'a host context per VMM thread');
  t.is(r.lock('mmap_lock').contentions, 0, 'the VMM`s mmap_lock is taken only under iommu->lock');
  t.is(r.verify.corrupt, 0);
  t.deepEqual(r.leaks, NO_LEAKS);
});
