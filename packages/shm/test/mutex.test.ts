import test from 'ava';
import { LockTable, RunControl, runWorkers, ModelClock, formatLockStat } from '@vmstack/shm';

const entry = new URL('./helpers/scenario-worker.js', import.meta.url);

async function incrementWith(workers: number, total: number) {
  const locks = LockTable.allocate([{ name: 'test_lock', kind: 'mutex' }]);
  const counter = new SharedArrayBuffer(4);
  const control = RunControl.allocate();
  await runWorkers(
    Array.from({ length: workers }, (_, i) => ({ role: `incrementer${i}`, entry, init: { scenario: 'mutex-increment', locks, counter, iterations: total / workers } })),
    control,
    { timeoutMs: 60_000 },
  );
  const stat = LockTable.attach(locks, 99).get('test_lock').stat();
  return { count: new Int32Array(counter)[0], stat };
}

test('4 real workers, 10^6 increments under the lock: exact count, contentions > 0', async (t) => {
  const { count, stat } = await incrementWith(4, 1_000_000);
  t.is(count, 1_000_000);
  t.is(stat.acquisitions, 1_000_000);
  t.true(stat.contentions > 0, `contentions ${stat.contentions}`);
  t.true(stat.acqBounces > 0);
});

test('one worker: no contention, acquisitions equal lock calls', async (t) => {
  const { count, stat } = await incrementWith(1, 1_000_000);
  t.is(count, 1_000_000);
  t.is(stat.acquisitions, 1_000_000);
  t.is(stat.contentions, 0);
  t.is(stat.conBounces, 0);
});

test('virtual clock: the acquirer waits in model time for the last release', (t) => {
  const h = LockTable.allocate([{ name: 'iommu->lock', kind: 'mutex' }, { name: 'viommu->request_lock', kind: 'spinlock' }]);
  const a = LockTable.attach(h, 0).get('iommu->lock');
  const b = LockTable.attach(h, 1).get('iommu->lock');
  const ca = new ModelClock('virtual');
  const cb = new ModelClock('virtual');
  ca.charge(1000);
  a.lock(ca);
  ca.charge(500); // held 500 ns of model time
  a.unlock(ca);
  cb.charge(1200); // arrives at 1200 while the lock was held until 1500
  b.lock(cb);
  t.is(cb.nowNs(), 1500);
  b.unlock(cb);
  const s = a.stat();
  t.is(s.acquisitions, 2);
  t.is(s.contentions, 1);
  t.is(s.waittimeTotalNs, 300);
  t.is(s.holdtimeMaxNs, 500);
  t.is(s.holdtimeMinNs, 0);
  t.is(s.acqBounces, 1);
  const text = formatLockStat(LockTable.attach(h, 0).stats());
  t.regex(text, /^lock_stat version 0\.4/);
  t.regex(text, /iommu->lock:\s+1\s+1\s+0\.30\s+0\.30\s+0\.30\s+0\.30\s+1\s+2\s+0\.00\s+0\.50\s+0\.50\s+0\.25/);
  t.regex(text, /viommu->request_lock:/);
});
