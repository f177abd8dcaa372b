import { LockTable, ModelClock, NEVER_NS, RunControl, runWorkers } from '@vmstack/shm';
import test from 'ava';
import { FlushQueue, fqLockName, IOVA_FQ_SIZE, IOVA_FQ_TIMEOUT_NS, type IovaFreer } from '../src/iommu/flush-queue.js';
import { IovaDomain } from '../src/iommu/iova.js';
import type { MmWorkerInit, MmWorkerResult } from './helpers/mm-worker.js';

const COSTS = { iovaRcacheHitNs: 30, iovaRbtreeOpNs: 250, flushQueueAddNs: 20 };
const LIMIT = 2 ** 36 - 1;
const FLUSH_NS = 5_000;

function setup(cpus: number) {
  const iova = IovaDomain.allocate({ startPfn: 1, limitPfn: LIMIT, cpus, maxAllocations: 10_000 });
  const fqh = FlushQueue.allocate({ cpus });
  const locks = LockTable.allocate([...IovaDomain.lockSpecs(iova), ...FlushQueue.lockSpecs(fqh)]);
  const flushes: number[] = [];
  const attach = (cpu: number, onFlush?: (clock: ModelClock) => void) => {
    const lt = LockTable.attach(locks, cpu);
    const d = IovaDomain.attach(iova, cpu, lt, COSTS);
    const fq = FlushQueue.attach(fqh, cpu, lt, d, COSTS, (clock) => {
      flushes.push(clock.nowNs());
      clock.charge(FLUSH_NS);
      onFlush?.(clock);
    });
    return { d, fq };
  };
  return { iova, fqh, locks, flushes, attach };
}

test('the 256th queue_iova finds the ring full, flushes the IOTLB and frees the 255 queued IOVAs', (t) => {
  const { attach, flushes } = setup(1);
  const { d, fq } = attach(0);
  const c = new ModelClock('virtual');
  const pfns = Array.from({ length: IOVA_FQ_SIZE }, () => d.alloc_iova_fast(1, LIMIT, c));
  for (let i = 0; i < IOVA_FQ_SIZE - 1; i++) fq.queue_iova(0, pfns[i], 1, c);
  t.is(fq.pending(0), 255);
  t.is(flushes.length, 0);
  t.is(d.stats().allocatedPages, 256, 'queued IOVAs still count as allocated');
  const before = c.nowNs();
  fq.queue_iova(0, pfns[255], 1, c);
  t.is(flushes.length, 1);
  t.is(fq.pending(0), 1);
  t.like(fq.stats(), { flushes: 1, flushesByFull: 1, flushesByTimer: 0, entriesFreed: 255 });
  t.is(d.stats().allocatedPages, 1);
  t.is(d.rcacheState(0, 0).loaded + d.rcacheState(0, 0).prev, 255, "freed into this CPU's rcache");
  // queue add + the flush + 255 rcache inserts (128 fill loaded, then a swap with the empty prev: no depot visit)
  t.is(c.nowNs() - before, 20 + FLUSH_NS + 255 * 30);
});

test('a queued IOVA is not reusable before the flush, and is the first one reused after it', (t) => {
  const { attach } = setup(1);
  const { d, fq } = attach(0);
  const c = new ModelClock('virtual');
  const p = d.alloc_iova_fast(4, LIMIT, c);
  fq.queue_iova(0, p, 4, c);
  const seen = new Set<number>();
  for (let i = 0; i < 50; i++) {
    const q = d.alloc_iova_fast(4, LIMIT, c);
    t.not(q, p);
    seen.add(q);
  }
  t.is(seen.size, 50);
  c.advanceTo(fq.nextDeadlineNs());
  t.true(fq.fq_flush_timeout(c.nowNs(), c));
  t.is(d.alloc_iova_fast(4, LIMIT, c), p, 'after the flush it sits in the rcache');
});

test("the timer flushes 10 ms of model time after the first queue_iova, walking every CPU's ring", (t) => {
  const { attach, flushes } = setup(2);
  const cpu0 = attach(0);
  const cpu1 = attach(1);
  const c0 = new ModelClock('virtual');
  const c1 = new ModelClock('virtual');
  c0.charge(1_000);
  const a = cpu0.d.alloc_iova_fast(1, LIMIT, c0);
  cpu0.fq.queue_iova(0, a, 1, c0);
  const armNs = c0.nowNs();
  t.is(armNs, 1_000 + 2 * 30 + 250 + 20, 'alloc (miss) + queue add');
  t.is(cpu0.fq.nextDeadlineNs(), armNs + IOVA_FQ_TIMEOUT_NS, 'armed when queue_iova returns, + 10 ms');
  t.is(cpu1.fq.nextDeadlineNs(), NEVER_NS, 'the timer belongs to the CPU that armed it');
  c1.charge(2_000_000);
  const b = cpu1.d.alloc_iova_fast(2, LIMIT, c1);
  cpu1.fq.queue_iova(1, b, 2, c1);
  t.is(cpu0.fq.nextDeadlineNs(), armNs + IOVA_FQ_TIMEOUT_NS, 'queueing while the timer is on does not re-arm it');
  t.false(cpu1.fq.fq_flush_timeout(armNs + IOVA_FQ_TIMEOUT_NS, c1), 'not the owner');
  t.false(cpu0.fq.fq_flush_timeout(armNs + IOVA_FQ_TIMEOUT_NS - 1, c0), 'one ns early');
  t.is(flushes.length, 0);
  c0.advanceTo(armNs + IOVA_FQ_TIMEOUT_NS);
  t.true(cpu0.fq.fq_flush_timeout(c0.nowNs(), c0));
  t.deepEqual(flushes, [armNs + IOVA_FQ_TIMEOUT_NS]);
  t.is(cpu0.fq.pending(0), 0);
  t.is(cpu0.fq.pending(1), 0, "cpu1's ring was freed by cpu0's timer");
  t.like(cpu0.fq.stats(), { flushes: 1, flushesByTimer: 1, entriesFreed: 2 });
  t.is(cpu0.fq.nextDeadlineNs(), NEVER_NS, 'disarmed until the next queue_iova');
  t.false(cpu0.fq.fq_flush_timeout(c0.nowNs() + IOVA_FQ_TIMEOUT_NS, c0));
  t.is(cpu0.d.stats().allocatedPages, 0);
});

test('an entry queued while a flush is in progress waits for the next flush (fq_flush_start_cnt)', (t) => {
  const { attach } = setup(2);
  const c = new ModelClock('virtual');
  const cpu1 = attach(1);
  const late = cpu1.d.alloc_iova_fast(1, LIMIT, c);
  const cpu0 = attach(0, (clock) => {
    if (cpu1.fq.pending(1) === 0) cpu1.fq.queue_iova(1, late, 1, clock); // queued after the flush started
  });
  const early = cpu0.d.alloc_iova_fast(1, LIMIT, c);
  cpu0.fq.queue_iova(0, early, 1, c);
  c.advanceTo(cpu0.fq.nextDeadlineNs());
  t.true(cpu0.fq.fq_flush_timeout(c.nowNs(), c));
  t.is(cpu0.fq.pending(0), 0, 'queued before the flush: freed');
  t.is(cpu0.fq.pending(1), 1, 'queued during the flush: kept');
  t.not(cpu1.fq.nextDeadlineNs(), NEVER_NS, 'and it re-armed the timer, now on cpu1');
  c.advanceTo(cpu1.fq.nextDeadlineNs());
  t.true(cpu1.fq.fq_flush_timeout(c.nowNs(), c));
  t.is(cpu1.fq.pending(1), 0);
});

test('3 real worker threads: lazy unmaps never let an IOVA be reused before its flush', async (t) => {
  const cpus = 3;
  const limitPfn = 8191;
  const iova = IovaDomain.allocate({ startPfn: 1, limitPfn, cpus, maxAllocations: 16_384 });
  const fqh = FlushQueue.allocate({ cpus });
  const locks = LockTable.allocate([...IovaDomain.lockSpecs(iova), ...FlushQueue.lockSpecs(fqh)]);
  const owner = new SharedArrayBuffer(4 * (limitPfn + 1));
  const flushLog = new SharedArrayBuffer(4 * (limitPfn + 2));
  const { results } = await runWorkers<MmWorkerResult>(
    Array.from({ length: cpus }, (_, cpu) => ({
      role: `guest-kernel/vcpu${cpu}`,
      entry: new URL('./helpers/mm-worker.js', import.meta.url),
      init: {
        scenario: 'fq-churn',
        locks,
        owner,
        cpu,
        seed: 500 + cpu,
        iterations: 20_000,
        maxOutstanding: 16,
        iova,
        fq: fqh,
        stepNs: 20_000,
        flushLog,
      } satisfies MmWorkerInit,
    })),
    RunControl.allocate(),
    { timeoutMs: 60_000 },
  );
  for (const r of results) {
    t.is(r.collisions, 0, 'an IOVA was handed out while still queued or in use');
    t.is(r.misaligned, 0);
    t.is(r.badFrees, 0, 'a queued IOVA was freed twice');
    t.is(r.earlyFrees, 0, 'a queued IOVA was freed before an IOTLB flush that followed its queueing');
  }
  const s = FlushQueue.stats(fqh);
  t.true(s.flushesByTimer > 0, `timer flushes ${s.flushesByTimer}`);
  t.true(s.flushesByFull > 0, `full flushes ${s.flushesByFull}`);
  t.is(
    s.flushesByTimer,
    results.reduce((a, r) => a + r.timerFlushes, 0),
  );
  // drain what is still queued: every page must then be unowned and unallocated
  const lt = LockTable.attach(locks, 0);
  const d = IovaDomain.attach(iova, 0, lt, COSTS);
  const ownerWords = new Int32Array(owner);
  const freer: IovaFreer = {
    free_iova_fast(pfn, pages, clock) {
      for (let i = pfn; i < pfn + pages; i++) Atomics.store(ownerWords, i, 0);
      d.free_iova_fast(pfn, pages, clock);
    },
  };
  const fq = FlushQueue.attach(fqh, 0, lt, freer, COSTS, () => {});
  fq.fq_flush_all(new ModelClock('virtual'));
  for (let cpu = 0; cpu < cpus; cpu++) t.is(fq.pending(cpu), 0);
  t.true(ownerWords.every((w) => w === 0));
  t.is(IovaDomain.stats(iova).allocatedPages, 0);
  t.is(
    FlushQueue.stats(fqh).entriesFreed,
    results.reduce((a, r) => a + r.frees, 0),
  );
  const l0 = lt.get(fqLockName(0)).stat();
  t.true(l0.acquisitions > 0);
  t.log(`flushes: ${s.flushesByFull} full, ${s.flushesByTimer} timer; fq->lock/0: ${l0.acquisitions} acquisitions, ${l0.realContentions} real contentions`);
});
