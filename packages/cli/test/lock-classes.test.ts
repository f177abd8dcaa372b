import test from 'ava';
import { aggregateLockClass, hasSharedLockClass, type LockInstanceRow, lockClassOf, lockClassRows, withLockClass } from '../src/report/lock-classes.js';
import { emptyDirection, type RunResult } from '../src/report/result.js';
import { formatVmstackTables } from '../src/report/tables.js';
import { sampleVmstackReport } from './helpers/vmstack-report.js';

test('lockClassOf drops the VM prefix and every /qualifier', (t) => {
  const cases: [string, string][] = [
    ['viommu->request_lock', 'viommu->request_lock'],
    ['cpu_rcache->lock/3', 'cpu_rcache->lock'],
    ['bounce_pool->class_lock/4096', 'bounce_pool->class_lock'],
    ['qi->q_lock/dmar0', 'qi->q_lock'],
    ['iommu->lock/container1', 'iommu->lock'],
    ['vm1:viommu->request_lock', 'viommu->request_lock'],
    ['vm12:cpu_rcache->lock/3', 'cpu_rcache->lock'],
    ['vm0:fq->lock/1/extra', 'fq->lock'],
    ['mmap_lock', 'mmap_lock'],
  ];
  for (const [name, cls] of cases) t.is(lockClassOf(name), cls, name);
});

/** A row with the given counters; everything else 0. */
function row(name: string, o: Partial<LockInstanceRow>): LockInstanceRow {
  return {
    name,
    kind: 'spinlock',
    con_bounces: 0,
    contentions: 0,
    waittime_min_ns: 0,
    waittime_max_ns: 0,
    waittime_total_ns: 0,
    waittime_avg_ns: 0,
    acq_bounces: 0,
    acquisitions: 0,
    holdtime_min_ns: 0,
    holdtime_max_ns: 0,
    holdtime_total_ns: 0,
    holdtime_avg_ns: 0,
    real_contentions: 0,
    ...o,
  };
}

test('a class sums counts and totals, takes min and max over the instances that have them, and averages per contention and per acquisition', (t) => {
  const c = aggregateLockClass('cpu_rcache->lock', [
    row('cpu_rcache->lock/0', {
      con_bounces: 1,
      contentions: 2,
      waittime_min_ns: 300,
      waittime_max_ns: 700,
      waittime_total_ns: 1000,
      acq_bounces: 3,
      acquisitions: 10,
      holdtime_min_ns: 40,
      holdtime_max_ns: 90,
      holdtime_total_ns: 500,
      real_contentions: 1,
    }),
    // never waited: its waittime_min 0 is "none", not a minimum
    row('cpu_rcache->lock/1', { acquisitions: 30, holdtime_min_ns: 20, holdtime_max_ns: 60, holdtime_total_ns: 1100, acq_bounces: 1 }),
    row('cpu_rcache->lock/2', {
      con_bounces: 4,
      contentions: 6,
      waittime_min_ns: 150,
      waittime_max_ns: 2000,
      waittime_total_ns: 5000,
      acquisitions: 20,
      holdtime_min_ns: 50,
      holdtime_max_ns: 80,
      holdtime_total_ns: 1200,
      real_contentions: 2,
    }),
    // never taken: its holdtime_min 0 is "none"
    row('cpu_rcache->lock/3', {}),
  ]);
  t.deepEqual(c, {
    class: 'cpu_rcache->lock',
    kind: 'spinlock',
    instances: 4,
    con_bounces: 5,
    contentions: 8,
    waittime_min_ns: 150,
    waittime_max_ns: 2000,
    waittime_total_ns: 6000,
    waittime_avg_ns: 750,
    acq_bounces: 4,
    acquisitions: 60,
    holdtime_min_ns: 20,
    holdtime_max_ns: 90,
    holdtime_total_ns: 2800,
    holdtime_avg_ns: 2800 / 60,
    real_contentions: 3,
  });
});

test('a class that never waited nor was taken reports 0 minima and averages, not Infinity or NaN', (t) => {
  const c = aggregateLockClass('fq->lock', [row('fq->lock/0', {}), row('fq->lock/1', {})]);
  t.is(c.waittime_min_ns, 0);
  t.is(c.waittime_avg_ns, 0);
  t.is(c.holdtime_min_ns, 0);
  t.is(c.holdtime_avg_ns, 0);
  t.is(c.instances, 2);
});

test('a class of one instance repeats its row', (t) => {
  const r = row('iommu->lock', {
    contentions: 3,
    waittime_min_ns: 10,
    waittime_max_ns: 50,
    waittime_total_ns: 90,
    waittime_avg_ns: 30,
    acquisitions: 9,
    holdtime_min_ns: 5,
    holdtime_max_ns: 7,
    holdtime_total_ns: 54,
    holdtime_avg_ns: 6,
  });
  const { name: _name, ...counters } = r;
  t.deepEqual(aggregateLockClass('iommu->lock', [r]), { class: 'iommu->lock', instances: 1, ...counters });
});

test('lockClassRows groups by class across VMs and qualifiers, in order of first appearance', (t) => {
  const rows = [
    row('vm0:viommu->request_lock', { acquisitions: 5 }),
    row('iommu->lock/container0', { acquisitions: 7 }),
    row('vm1:viommu->request_lock', { acquisitions: 6 }),
    row('vm0:cpu_rcache->lock/0', { acquisitions: 1 }),
    row('vm1:cpu_rcache->lock/0', { acquisitions: 2 }),
    row('iommu->lock/container1', { acquisitions: 8 }),
  ];
  const classes = lockClassRows(rows);
  t.deepEqual(
    classes.map((c) => [c.class, c.instances, c.acquisitions]),
    [
      ['viommu->request_lock', 2, 11],
      ['iommu->lock', 2, 15],
      ['cpu_rcache->lock', 2, 3],
    ],
  );
  t.true(hasSharedLockClass(classes));
  t.false(hasSharedLockClass(lockClassRows([row('a', {}), row('b', {})])));
});

test('withLockClass puts the class right after the name', (t) => {
  const r = withLockClass(row('vm1:bounce_pool->class_lock/4096', { acquisitions: 2 }));
  t.is(r.class, 'bounce_pool->class_lock');
  t.deepEqual(Object.keys(r).slice(0, 3), ['name', 'class', 'kind']);
});

function runWith(lockNames: string[]): RunResult {
  const vmstack = sampleVmstackReport();
  vmstack.lock_stat = lockNames.map((n) => withLockClass(row(n, { acquisitions: 4, holdtime_total_ns: 400, holdtime_avg_ns: 100 })));
  vmstack.lock_classes = lockClassRows(vmstack.lock_stat);
  const job = { jobname: 'j', groupid: 0, jobOptions: {}, read: emptyDirection(), write: emptyDirection(), jobRuntimeNs: 1e6 };
  return { timestampMs: 0, globalOptions: {}, jobs: [{ ...job, usrCpuPct: 0, sysCpuPct: 0, ctx: 0, error: 0, iodepth: 1 }], vmstack };
}

test('normal output prints the per-class table after lock_stat only when some class has several instances', (t) => {
  const shared = formatVmstackTables(runWith(['viommu->request_lock', 'cpu_rcache->lock/0', 'cpu_rcache->lock/1']));
  t.regex(shared, /^# lock classes/m);
  t.regex(shared, /^ {2}cpu_rcache->lock\s+2\s+0\s+0\s+0\.00\s+0\.00\s+0\.00\s+0\.00\s+0\s+8\s+0\.00\s+0\.00\s+0\.80\s+0\.10$/m);
  t.true(shared.indexOf('lock_stat version') < shared.indexOf('# lock classes'));
  t.true(shared.indexOf('# lock classes') < shared.indexOf('# profile'));
  const single = formatVmstackTables(runWith(['viommu->request_lock', 'cpu_rcache->lock/0']));
  t.notRegex(single, /lock classes/);
});
