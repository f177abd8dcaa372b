/**
 * Worker for the guest memory-management tests: one vCPU hammering a shared
 * allocator (IOVA domain, IOVA domain behind a lazy flush queue, or the page
 * allocator) with a seeded random mix of allocations and frees.
 *
 * Double allocation is caught as it happens: `owner` holds one Int32 word per
 * pfn (IOVA) or frame (pages); an allocation claims each word with
 * compareExchange(0 → tag) and a free clears it. A claim that finds a word
 * already set is a collision (two owners of the same page at once).
 * With the flush queue, `flushLog` counts finished IOTLB flushes (word 0) and
 * records per pfn the count seen when it was queued: a queued IOVA freed
 * before any flush finished after its queueing is an early free.
 */
import { LockTable, type LockTableHandle, ModelClock, PAGE_SIZE_BYTES, workerMain } from '@vmstack/shm';
import { FlushQueue, type FlushQueueHandle } from '../../src/iommu/flush-queue.js';
import { IovaDomain, type IovaDomainHandle } from '../../src/iommu/iova.js';
import { mulberry32, PageAllocator, type PageAllocatorHandle } from '../../src/mm/page-alloc.js';

export interface MmWorkerInit {
  scenario: 'iova-churn' | 'fq-churn' | 'pages-churn';
  locks: LockTableHandle;
  owner: SharedArrayBuffer;
  cpu: number;
  seed: number;
  iterations: number;
  maxOutstanding: number;
  iova?: IovaDomainHandle;
  fq?: FlushQueueHandle;
  pages?: PageAllocatorHandle;
  /** for fq-churn: model ns of "I/O" between operations, so the 10 ms timer fires */
  stepNs?: number;
  /** for fq-churn: word 0 finished flushes, word 1 + pfn the count when pfn was queued */
  flushLog?: SharedArrayBuffer;
}

export interface MmWorkerResult {
  allocs: number;
  frees: number;
  failures: number;
  collisions: number;
  misaligned: number;
  badFrees: number;
  earlyFrees: number;
  timerFlushes: number;
  clockNs: number;
}

const IOVA_SIZES = [1, 1, 1, 2, 4, 8, 16, 32, 48, 64];
const COSTS = { iovaRcacheHitNs: 30, iovaRbtreeOpNs: 250, guestPageAllocNs: 100, flushQueueAddNs: 20 };

workerMain<MmWorkerInit, MmWorkerResult>((boot) => {
  const init = boot.init;
  const locks = LockTable.attach(init.locks, init.cpu);
  const owner = new Int32Array(init.owner);
  const tag = init.cpu + 1;
  const rng = mulberry32(init.seed);
  const clock = new ModelClock('virtual');
  const r: MmWorkerResult = { allocs: 0, frees: 0, failures: 0, collisions: 0, misaligned: 0, badFrees: 0, earlyFrees: 0, timerFlushes: 0, clockNs: 0 };

  const claim = (first: number, count: number): void => {
    for (let i = first; i < first + count; i++) if (Atomics.compareExchange(owner, i, 0, tag) !== 0) r.collisions++;
  };
  const release = (first: number, count: number): void => {
    for (let i = first; i < first + count; i++) if (Atomics.exchange(owner, i, 0) === 0) r.badFrees++;
  };

  if (init.scenario === 'pages-churn') {
    return () => {
      const pa = PageAllocator.attach(init.pages!, init.cpu, locks, COSTS);
      const held: { gpa: number; order: number }[] = [];
      for (let it = 0; it < init.iterations; it++) {
        if (held.length < init.maxOutstanding && (held.length === 0 || rng() < 0.55)) {
          const order = Math.floor(rng() * 8);
          const gpa = pa.alloc_pages(order, clock);
          if (gpa < 0) {
            r.failures++;
            continue;
          }
          r.allocs++;
          if (gpa % (PAGE_SIZE_BYTES << order) !== 0) r.misaligned++;
          claim(gpa / PAGE_SIZE_BYTES, 1 << order);
          held.push({ gpa, order });
        } else {
          const { gpa, order } = held.splice(Math.floor(rng() * held.length), 1)[0];
          release(gpa / PAGE_SIZE_BYTES, 1 << order);
          pa.free_pages(gpa, order, clock);
          r.frees++;
        }
      }
      for (const { gpa, order } of held) {
        release(gpa / PAGE_SIZE_BYTES, 1 << order);
        pa.free_pages(gpa, order, clock);
        r.frees++;
      }
      r.clockNs = clock.nowNs();
      return r;
    };
  }

  return () => {
    const iovad = IovaDomain.attach(init.iova!, init.cpu, locks, COSTS);
    let fq: FlushQueue | undefined;
    const flushLog = init.flushLog ? new Int32Array(init.flushLog) : new Int32Array(1);
    if (init.scenario === 'fq-churn') {
      // the flush queue frees through a wrapper that checks the flush ordering and clears ownership
      const freer = {
        free_iova_fast(pfn: number, pages: number, c: ModelClock): void {
          if (Atomics.load(flushLog, 0) <= Atomics.load(flushLog, 1 + pfn)) r.earlyFrees++;
          release(pfn, pages);
          iovad.free_iova_fast(pfn, pages, c);
        },
      };
      fq = FlushQueue.attach(init.fq!, init.cpu, locks, freer, COSTS, (c) => {
        c.charge(5_000);
        Atomics.add(flushLog, 0, 1);
      });
    }
    const held: { pfn: number; size: number }[] = [];
    const unmap = (pfn: number, size: number): void => {
      if (fq) {
        Atomics.store(flushLog, 1 + pfn, Atomics.load(flushLog, 0));
        fq.queue_iova(init.cpu, pfn, size, clock);
      } else {
        release(pfn, size);
        iovad.free_iova_fast(pfn, size, clock);
      }
      r.frees++;
    };
    for (let it = 0; it < init.iterations; it++) {
      if (fq) {
        clock.charge(init.stepNs ?? 0);
        if (fq.fq_flush_timeout(clock.nowNs(), clock)) r.timerFlushes++;
      }
      if (held.length < init.maxOutstanding && (held.length === 0 || rng() < 0.55)) {
        const size = IOVA_SIZES[Math.floor(rng() * IOVA_SIZES.length)];
        const pfn = iovad.alloc_iova_fast(size, iovad.limitPfn, clock);
        if (pfn === 0) {
          r.failures++;
          continue;
        }
        r.allocs++;
        const align = 2 ** Math.ceil(Math.log2(size));
        if (pfn % align !== 0 || pfn < iovad.startPfn || pfn + size - 1 > iovad.limitPfn) r.misaligned++;
        claim(pfn, size);
        held.push({ pfn, size });
      } else {
        const { pfn, size } = held.splice(Math.floor(rng() * held.length), 1)[0];
        unmap(pfn, size);
      }
    }
    for (const { pfn, size } of held) unmap(pfn, size);
    r.clockNs = clock.nowNs();
    return r;
  };
});
