/**
 * The bounce pool as a whole: the decision whether a mapping bounces, the
 * pool's locks and options, and real worker threads sharing one pool. The
 * slots, the copies and the fallback tree have their own test files.
 */

import { InputError, LockTable, ModelClock, RunControl, runWorkers } from '@vmstack/shm';
import test from 'ava';
import { BouncePool, bouncePoolClassLockName, DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE, dma_info_to_prot } from '../src/iommu/bounce-pool.js';
import { TestPages } from './helpers/bounce-page-allocator.js';
import { COSTS, HEAP_GPA, IOVA_BASE, RO, setup } from './helpers/bounce-pool-setup.js';
import type { BounceWorkerInit, BounceWorkerResult } from './helpers/bounce-worker.js';

test('bounce decision: always_bounce_limit for trusted devices (a live knob), mandatory for untrusted, from the pool when persistent', (t) => {
  const { pool, handle, locks, pages } = setup();
  t.is(pool.bounceDecision(4096, true), 'optional');
  t.is(pool.bounceDecision(4097, true), 'none');
  t.is(pool.bounceDecision(1 << 20, false), 'required');
  t.is(pool.bounceDecision(65536, false, { granuleAligned: true }), 'none', 'series: an aligned untrusted mapping is not forced');
  t.is(pool.bounceDecision(4096, false, { granuleAligned: true }), 'optional');
  t.is(pool.bounceDecision(512 * 1024, true, { persistent: true }), 'required', 'DMA_ATTR_PERSISTENT_STREAMING: served from the pool whatever the limit');
  t.is(pool.bounceDecision(512, false, { persistent: true }), 'required');
  t.true(pool.shouldBounce(100, true));
  const other = BouncePool.attach(handle, 1, locks, pages, COSTS);
  other.setAlwaysBounceLimit(65536);
  t.is(pool.alwaysBounceLimitBytes(), 65536, 'another vCPU sees the new limit');
  t.is(pool.bounceDecision(65536, true), 'optional');
  t.is(pool.stats().alwaysBounceLimitBytes, 65536);
  t.throws(() => pool.setAlwaysBounceLimit(-1), { instanceOf: InputError });
  const off = setup({ optimization: false }).pool;
  t.is(off.bounceDecision(512, true), 'none', 'CONFIG_IOMMU_BOUNCE_BUFFERS off: only forced bounces');
  t.is(off.bounceDecision(512, false), 'required');
  // include/linux/iommu.h: IOMMU_READ 1, IOMMU_WRITE 2, IOMMU_CACHE 4, IOMMU_PRIV 32
  t.is(dma_info_to_prot(DMA_TO_DEVICE, true), 1 | 4);
  t.is(dma_info_to_prot(DMA_FROM_DEVICE, true, true), 2 | 4 | 32);
  t.is(dma_info_to_prot(DMA_BIDIRECTIONAL, false), 1 | 2);
});

test('class locks are the named spinlocks of the lock table, charged in model time', (t) => {
  const { pool, locks, clock } = setup();
  const s = pool.acquire(4096, RO, clock)!;
  pool.release(s, clock);
  const stats = LockTable.attach(locks, 0).stats();
  const l4k = stats.find((x) => x.name === bouncePoolClassLockName(4096))!;
  t.is(l4k.kind, 'spinlock');
  t.is(l4k.acquisitions, 2);
  t.is(l4k.holdtimeTotalNs, 40, 'acquire and release: one 20 ns list operation each under the lock');
  t.deepEqual(
    BouncePool.lockSpecs(setup({ lockSuffix: '/dom1' }).handle)
      .map((x) => x.name)
      .slice(0, 2),
    ['bounce_pool->class_lock/4096/dom1', 'bounce_pool->class_lock/8192/dom1'],
  );
});

test('options are validated at the door', (t) => {
  t.throws(() => BouncePool.allocate({ iovaBase: IOVA_BASE, slotsPerClass: 0 }), { instanceOf: InputError, message: /bounce\.slotsPerClass/ });
  t.throws(() => BouncePool.allocate({ iovaBase: IOVA_BASE, maxClassBytes: 100_000 }), { instanceOf: InputError });
  t.throws(() => BouncePool.allocate({ iovaBase: IOVA_BASE, maxClassBytes: 8 << 20 }), { instanceOf: InputError }, 'above the buddy allocator’s largest block');
  t.throws(() => BouncePool.allocate({ iovaBase: IOVA_BASE, alwaysBounceLimitBytes: 1.5 }), { instanceOf: InputError });
  t.throws(() => BouncePool.allocate({ iovaBase: IOVA_BASE + 4096 }), { instanceOf: RangeError, message: /multiple of 524288/ });
  const h = BouncePool.allocate({ iovaBase: IOVA_BASE });
  const copy = structuredClone(h);
  t.deepEqual({ ...copy, sab: null }, { ...h, sab: null }, 'the handle is plain data + a SharedArrayBuffer');
  t.true(copy.sab instanceof SharedArrayBuffer);
});

test('4 real worker threads acquire and release concurrently: no slot or memory ever has two owners', async (t) => {
  const workers = 4;
  const handle = BouncePool.allocate({ iovaBase: IOVA_BASE, maxClassBytes: 65536, slotsPerClass: 8 });
  const locks = LockTable.allocate(BouncePool.lockSpecs(handle));
  const heapPages = 1024;
  const pagesHandle = TestPages.allocate(HEAP_GPA, heapPages);
  const ram = new SharedArrayBuffer(HEAP_GPA + heapPages * 4096);
  const owners = new SharedArrayBuffer(4 * handle.numClasses * handle.slotsPerClass);
  const control = RunControl.allocate();
  const iterations = 20_000;
  const entry = new URL('./helpers/bounce-worker.js', import.meta.url);
  const { results } = await runWorkers<BounceWorkerResult>(
    Array.from({ length: workers }, (_, i) => ({
      role: `vcpu${i}`,
      entry,
      init: {
        pool: handle,
        locks,
        pages: pagesHandle,
        ram,
        owners,
        iterations,
        seed: 1000 + i,
        maxHeld: 12,
        evictEvery: i === 0 ? 400 : 0,
      } satisfies BounceWorkerInit,
    })),
    control,
    { timeoutMs: 100_000 },
  );
  const sum = (k: keyof BounceWorkerResult) => results.reduce((n, r) => n + r[k], 0);
  t.is(sum('ownerViolations'), 0);
  t.is(sum('tokenMismatches'), 0);
  t.is(sum('evictedWhileOwned'), 0);
  t.true(sum('acquires') > workers * 1000, `acquires ${sum('acquires')}`);
  t.true(sum('refused') > 0, 'the small pool ran full at times');
  t.true(sum('evicted') > 0, 'eviction ran against the churn');
  const pages = new TestPages(pagesHandle);
  const pool = BouncePool.attach(handle, 9, locks, pages, COSTS);
  const st = pool.stats();
  t.is(st.slotsInUse, 0);
  t.is(st.hits + st.misses, sum('acquires'));
  t.is(st.exhausted + st.allocFailures, sum('refused'));
  t.is(st.evictions, sum('evicted'));
  t.true(st.slotsInUsePeak <= workers * 12);
  t.is(st.memoryBytesCurrent, pages.allocatedBytes());
  const lockStats = LockTable.attach(locks, 9).stats();
  t.true(
    lockStats.some((l) => l.realContentions > 0),
    'the threads really met on a class lock',
  );
  const clock = new ModelClock('virtual');
  for (const e of pool.evictionPass(0, clock, true)) pool.finishEviction(e, clock);
  t.is(pages.allocatedBytes(), 0);
  t.is(pool.stats().memoryBytesCurrent, 0);
  let leaked = 0;
  for (let cls = 0; cls < pool.numClasses; cls++) {
    const c = pool.classCounts(cls);
    if (c.inUse !== 0 || c.cached !== 0 || c.empty + c.untouched !== pool.slotsPerClass) leaked++;
  }
  t.is(leaked, 0, 'every slot is back on the empty list or untouched');
});
