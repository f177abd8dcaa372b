import { InputError, LockTable, ModelClock, RunControl, runWorkers } from '@vmstack/shm';
import test from 'ava';
import { IOVA_MAG_SIZE, IOVA_RBTREE_LOCK, IovaDomain, type IovaDomainOptions, iommu_dma_iova_len, MAX_GLOBAL_MAGS } from '../src/iommu/iova.js';
import type { MmWorkerInit, MmWorkerResult } from './helpers/mm-worker.js';

const COSTS = { iovaRcacheHitNs: 30, iovaRbtreeOpNs: 250 };
const PFN_32BIT_MAX = 2 ** 20 - 1; // DMA_BIT_MASK(32) >> 12
const PFN_48BIT_MAX = 2 ** 36 - 1;

function domain(opts: IovaDomainOptions) {
  const handle = IovaDomain.allocate(opts);
  const locks = LockTable.allocate(IovaDomain.lockSpecs(handle));
  const attach = (cpu: number) => IovaDomain.attach(handle, cpu, LockTable.attach(locks, cpu), COSTS);
  return { handle, locks, attach };
}

test('top-down, size-aligned placement below the limit (32-bit domain)', (t) => {
  const d = domain({ startPfn: 1, limitPfn: PFN_32BIT_MAX, cpus: 1, maxAllocations: 100 }).attach(0);
  const c = new ModelClock('virtual');
  t.is(d.alloc_iova_fast(1, PFN_32BIT_MAX, c), 0xfffff);
  t.is(d.alloc_iova_fast(4, PFN_32BIT_MAX, c), 0xffff8); // (0xfffff - 4) & ~3
  t.is(d.alloc_iova_fast(8, PFN_32BIT_MAX, c), 0xffff0);
  t.is(d.alloc_iova_fast(48, PFN_32BIT_MAX, c), 0xfffc0); // 48 pages aligned to 64
  t.is(d.alloc_iova_fast(2, PFN_32BIT_MAX, c), 0xfffbe);
  // a lower limit: placed just below it, and (the kernel's cached32_node) the next allocation goes below that one
  t.is(d.alloc_iova_fast(1, 0x7fff, c), 0x7fff);
  t.is(d.alloc_iova_fast(1, PFN_32BIT_MAX, c), 0x7ffe);
  t.deepEqual(
    d.ranges().map((r) => [r.loPfn, r.hiPfn]),
    [
      [0x7ffe, 0x7ffe],
      [0x7fff, 0x7fff],
      [0xfffbe, 0xfffbf],
      [0xfffc0, 0xfffef],
      [0xffff0, 0xffff7],
      [0xffff8, 0xffffb],
      [0xfffff, 0xfffff],
    ],
  );
  t.is(d.checkTree(), null);
  const s = d.stats();
  t.is(s.rbtreeAllocs, 7);
  t.is(s.rcacheMisses, 7);
  t.is(s.allocatedPages, 1 + 4 + 8 + 48 + 2 + 1 + 1);
  // each cacheable miss: magazine lookup + depot lookup (both magazines empty) = 2 × 30; 48 pages is not cacheable
  t.is(c.nowNs(), 6 * 2 * 30 + 7 * 250);
});

test('48-bit domain: cached_node for 64-bit limits, cached32_node for 32-bit limits', (t) => {
  const d = domain({ startPfn: 1, limitPfn: PFN_48BIT_MAX, cpus: 1, maxAllocations: 100 }).attach(0);
  const c = new ModelClock('virtual');
  t.is(d.alloc_iova_fast(1, PFN_48BIT_MAX, c), PFN_48BIT_MAX);
  t.is(d.alloc_iova_fast(1, PFN_32BIT_MAX, c), PFN_32BIT_MAX, 'SAC attempt below 4 GiB');
  t.is(d.alloc_iova_fast(16, PFN_48BIT_MAX, c), PFN_48BIT_MAX + 1 - 32, 'below the 48-bit one, 16-aligned');
  t.is(d.alloc_iova_fast(4, 2 ** 40, c), PFN_48BIT_MAX + 1 - 36, 'a limit above the domain is capped; placed below the cached node');
  t.is(d.checkTree(), null);
});

test('an rcache hit returns the just-freed pfn of the same size and charges only the rcache cost', (t) => {
  const d = domain({ startPfn: 1, limitPfn: PFN_48BIT_MAX, cpus: 1, maxAllocations: 100 }).attach(0);
  const c = new ModelClock('virtual');
  const p = d.alloc_iova_fast(4, PFN_48BIT_MAX, c);
  d.free_iova_fast(p, 4, c);
  t.is(d.stats().rbtreeFrees, 0, 'the free went to the magazine, the range stays in the tree');
  const before = c.nowNs();
  t.is(d.alloc_iova_fast(4, PFN_48BIT_MAX, c), p);
  t.is(c.nowNs() - before, 30);
  t.not(d.alloc_iova_fast(2, PFN_48BIT_MAX, c), p, 'another size class misses');
  // a cached pfn above the caller's limit is not used
  const q = d.alloc_iova_fast(1, PFN_48BIT_MAX, c);
  d.free_iova_fast(q, 1, c);
  t.is(d.alloc_iova_fast(1, PFN_32BIT_MAX, c), PFN_32BIT_MAX);
  // 64 pages is above the largest cached size (32): straight back to the tree
  const big = d.alloc_iova_fast(64, PFN_48BIT_MAX, c);
  d.free_iova_fast(big, 64, c);
  const s = d.stats();
  t.is(s.rcacheHits, 1);
  t.is(s.rbtreeFrees, 1);
  t.is(s.allocatedPages, 4 + 2 + 1);
  t.throws(() => d.alloc_iova_fast(3, PFN_48BIT_MAX, c), { instanceOf: RangeError, message: /power of two/ });
  t.deepEqual([1, 3, 5, 17, 31, 32, 33, 48].map(iommu_dma_iova_len), [1, 4, 8, 32, 32, 32, 33, 48]);
  t.not(d.alloc_iova_fast(iommu_dma_iova_len(33), PFN_48BIT_MAX, c), 0, '33 pages: not cacheable, not rounded');
  t.throws(() => d.free_iova_fast(12345, 64, c), { message: /not an allocated IOVA/ });
});

test('magazines: loaded/prev swap at 128, depot spill at 32 magazines, refill in LIFO order', (t) => {
  const total = IOVA_MAG_SIZE * (2 + MAX_GLOBAL_MAGS) + IOVA_MAG_SIZE; // 4480
  const d = domain({ startPfn: 1, limitPfn: PFN_48BIT_MAX, cpus: 1, maxAllocations: total + 10 }).attach(0);
  const c = new ModelClock('virtual');
  const pfns: number[] = [];
  for (let i = 0; i < total; i++) pfns.push(d.alloc_iova_fast(1, PFN_48BIT_MAX, c));
  t.is(new Set(pfns).size, total);
  const state = () => d.rcacheState(0, 0);
  let freed = 0;
  const freeUpTo = (n: number) => {
    for (; freed < n; freed++) d.free_iova_fast(pfns[freed], 1, c);
  };
  freeUpTo(128);
  t.like(state(), { loaded: 128, prev: 0, depotMagazines: 0 });
  freeUpTo(129);
  t.like(state(), { loaded: 1, prev: 128, depotMagazines: 0 }, 'full loaded swapped with empty prev');
  freeUpTo(256);
  t.like(state(), { loaded: 128, prev: 128, depotMagazines: 0 });
  freeUpTo(257);
  t.like(state(), { loaded: 1, prev: 128, depotMagazines: 1, depotPfns: 128 }, 'both full: loaded goes to the depot');
  freeUpTo(256 + 32 * 128);
  t.like(state(), { loaded: 128, prev: 128, depotMagazines: 32, depotPfns: 32 * 128 });
  t.is(d.stats().rbtreeFrees, 0);
  freeUpTo(256 + 32 * 128 + 1);
  t.like(state(), { loaded: 1, prev: 128, depotMagazines: 32 }, 'depot full: loaded magazine emptied into the tree');
  t.is(d.stats().rbtreeFrees, 128);
  freeUpTo(total);
  t.like(state(), { loaded: 128, prev: 128, depotMagazines: 32 });
  t.is(d.stats().rbtreeFrees, 128);
  t.is(d.checkTree(), null);
  t.is(d.stats().rbtreeNodes, total - 128);

  // refill: loaded first (LIFO), then the swapped prev, then depot magazines
  const before = d.stats();
  t.is(d.alloc_iova_fast(1, PFN_48BIT_MAX, c), pfns[total - 1], 'last freed comes back first');
  const cached = 128 + 128 + 32 * 128;
  for (let i = 1; i < cached; i++) t.not(d.alloc_iova_fast(1, PFN_48BIT_MAX, c), 0);
  let s = d.stats();
  t.is(s.rcacheHits - before.rcacheHits, cached);
  t.is(s.rcacheMisses - before.rcacheMisses, 0);
  t.like(state(), { loaded: 0, prev: 0, depotMagazines: 0 });
  t.not(d.alloc_iova_fast(1, PFN_48BIT_MAX, c), 0);
  s = d.stats();
  t.is(s.rcacheMisses - before.rcacheMisses, 1, 'everything cached consumed: the next one misses');
});

test("exhaustion returns 0; rcache flush-and-retry frees other CPUs' cached IOVAs", (t) => {
  const dom = domain({ startPfn: 1, limitPfn: 64, cpus: 2, maxAllocations: 200 });
  const cpu0 = dom.attach(0);
  const cpu1 = dom.attach(1);
  // one clock for both: with two, each lock would also move one CPU's clock to the other's release time
  const c0 = new ModelClock('virtual');
  const c1 = c0;
  const held: number[] = [];
  for (let i = 0; i < 64; i++) held.push(cpu1.alloc_iova_fast(1, 64, c1));
  t.deepEqual(
    [...held].sort((a, b) => a - b),
    Array.from({ length: 64 }, (_, i) => i + 1),
  );
  t.is(cpu1.alloc_iova_fast(1, 64, c1), 0, 'space exhausted even after flushing (nothing cached)');
  t.is(cpu1.stats().allocFailures, 1);
  t.is(cpu1.stats().rcacheFlushes, 1);
  for (const p of held) cpu1.free_iova_fast(p, 1, c1);
  t.is(cpu1.rcacheState(1, 0).loaded, 64, "all 64 pages sit in cpu1's magazine");

  t.is(cpu0.alloc_iova_fast(2, 64, c0, false), 0, 'without flushRcache: fails');
  const before = c0.nowNs();
  const p = cpu0.alloc_iova_fast(2, 64, c0);
  t.not(p, 0, "the flush returned cpu1's cached pages to the tree");
  t.is(p % 2, 0);
  t.is(cpu1.rcacheState(1, 0).loaded, 0);
  const s = cpu0.stats();
  t.is(s.rcacheFlushes, 2);
  t.is(s.rbtreeFrees, 64);
  // magazine + depot lookup, failed rbtree attempt, 64 frees under the lock, successful rbtree attempt
  t.is(c0.nowNs() - before, 2 * 30 + 250 + 64 * 250 + 250);
  for (let i = 1; i < 31; i++) t.not(cpu0.alloc_iova_fast(2, 64, c0), 0);
  t.is(cpu0.alloc_iova_fast(2, 64, c0), 0, 'pfns 1..64 hold 31 size-aligned two-page ranges ([2,3] … [62,63])');
  t.is(cpu0.checkTree(), null);
});

test('rbtree node pool exhaustion fails like a failed GFP_ATOMIC allocation', (t) => {
  const d = domain({ startPfn: 1, limitPfn: PFN_48BIT_MAX, cpus: 1, maxAllocations: 3 }).attach(0);
  const c = new ModelClock('virtual');
  for (let i = 0; i < 3; i++) t.not(d.alloc_iova_fast(64, PFN_48BIT_MAX, c), 0);
  t.is(d.alloc_iova_fast(64, PFN_48BIT_MAX, c), 0);
});

test('reserve_iova keeps a range out of allocation', (t) => {
  const d = domain({ startPfn: 1, limitPfn: PFN_32BIT_MAX, cpus: 1, maxAllocations: 100 }).attach(0);
  const c = new ModelClock('virtual');
  t.true(d.reserve_iova(0xfee00, 0xfffff)); // e.g. an MSI window
  t.true(d.reserve_iova(0xfed00, 0xfee10), 'overlapping reservation merges');
  t.deepEqual(d.ranges(), [{ loPfn: 0xfed00, hiPfn: 0xfffff }]);
  t.is(d.alloc_iova_fast(1, PFN_32BIT_MAX, c), 0xfecff);
  t.is(d.stats().allocatedPages, 1);
});

test('options are validated with InputError', (t) => {
  t.throws(() => IovaDomain.allocate({ startPfn: 0, limitPfn: 100, cpus: 1, maxAllocations: 10 }), { instanceOf: InputError, message: /iova.startPfn/ });
  t.throws(() => IovaDomain.allocate({ startPfn: 1, limitPfn: 100, cpus: 0, maxAllocations: 10 }), { instanceOf: InputError, message: /iova.cpus/ });
});

test('random alloc/free against a reference model keeps the tree valid and ranges disjoint', (t) => {
  const d = domain({ startPfn: 1, limitPfn: 4095, cpus: 1, maxAllocations: 5000 }).attach(0);
  const c = new ModelClock('virtual');
  let seed = 42;
  const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const held = new Map<number, number>();
  const sizes = [1, 2, 4, 8, 16, 32, 64, 100];
  for (let i = 0; i < 20_000; i++) {
    if (held.size > 0 && rnd() < 0.5) {
      const keys = [...held.keys()];
      const p = keys[Math.floor(rnd() * keys.length)];
      d.free_iova_fast(p, held.get(p)!, c);
      held.delete(p);
    } else {
      const size = sizes[Math.floor(rnd() * sizes.length)];
      const p = d.alloc_iova_fast(size, 4095, c);
      if (p === 0) continue;
      for (const [q, qs] of held) if (p <= q + qs - 1 && q <= p + size - 1) t.fail(`[${p}, +${size}) overlaps [${q}, +${qs})`);
      held.set(p, size);
    }
    if (i % 1000 === 0) t.is(d.checkTree(), null);
  }
  t.is(
    d.stats().allocatedPages,
    [...held.values()].reduce((a, b) => a + b, 0),
  );
});

test('4 real worker threads allocating and freeing concurrently never share a page', async (t) => {
  const cpus = 4;
  const limitPfn = 4095;
  const handle = IovaDomain.allocate({ startPfn: 1, limitPfn, cpus, maxAllocations: 8192 });
  const locks = LockTable.allocate(IovaDomain.lockSpecs(handle));
  const owner = new SharedArrayBuffer(4 * (limitPfn + 1));
  const iterations = 20_000;
  const { results } = await runWorkers<MmWorkerResult>(
    Array.from({ length: cpus }, (_, cpu) => ({
      role: `guest-kernel/vcpu${cpu}`,
      entry: new URL('./helpers/mm-worker.js', import.meta.url),
      init: { scenario: 'iova-churn', locks, owner, cpu, seed: 1000 + cpu, iterations, maxOutstanding: 24, iova: handle } satisfies MmWorkerInit,
    })),
    RunControl.allocate(),
    { timeoutMs: 60_000 },
  );
  for (const r of results) {
    t.is(r.collisions, 0);
    t.is(r.misaligned, 0);
    t.is(r.badFrees, 0);
    t.is(r.allocs, r.frees);
  }
  const s = IovaDomain.stats(handle);
  t.is(s.allocatedPages, 0);
  t.is(
    s.rcacheHits + s.rcacheMisses,
    results.reduce((a, r) => a + r.allocs + r.failures, 0),
  );
  t.true(s.rcacheFlushes > 0, `the small space forced flush-and-retry (${s.rcacheFlushes})`);
  t.true(s.rcacheHits > 0 && s.rbtreeAllocs > 0);
  t.true(new Int32Array(owner).every((w) => w === 0));
  // return every cached IOVA: the tree must be empty and valid
  const d = IovaDomain.attach(handle, 0, LockTable.attach(locks, 0), COSTS);
  for (let cpu = 0; cpu < cpus; cpu++) d.free_cpu_cached_iovas(cpu);
  d.free_global_cached_iovas();
  t.deepEqual(d.ranges(), []);
  t.is(d.checkTree(), null);
  const rb = LockTable.attach(locks, 0).get(IOVA_RBTREE_LOCK).stat();
  t.true(rb.acquisitions > 0);
  t.log(
    `hits ${s.rcacheHits} misses ${s.rcacheMisses} flushes ${s.rcacheFlushes} failures ${s.allocFailures}; rbtree lock: ${rb.acquisitions} acquisitions, ${rb.realContentions} real contentions`,
  );
});
