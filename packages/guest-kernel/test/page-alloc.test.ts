import { InputError, LockTable, ModelClock, PAGE_SIZE_BYTES, RunControl, runWorkers } from '@vmstack/shm';
import test from 'ava';
import { HUGE_PAGE_SIZE_BYTES, MAX_ORDER, mulberry32, PAGE_ALLOC_ZONE_LOCK, PageAllocator, type PageAllocatorOptions } from '../src/mm/page-alloc.js';
import type { MmWorkerInit, MmWorkerResult } from './helpers/mm-worker.js';

const COSTS = { guestPageAllocNs: 100 };
const MiB = 1024 * 1024;

function zone(opts: PageAllocatorOptions) {
  const handle = PageAllocator.allocate(opts);
  const locks = LockTable.allocate(PageAllocator.lockSpecs(handle));
  return { handle, locks, pa: PageAllocator.attach(handle, 0, LockTable.attach(locks, 0), COSTS) };
}

test('every order 0..MAX_ORDER comes back naturally aligned, inside the heap', (t) => {
  const { pa } = zone({ ramBytes: 64 * MiB, heapStartBytes: 3 * MiB + 4096 });
  const c = new ModelClock('virtual');
  for (let order = 0; order <= MAX_ORDER; order++) {
    const gpa = pa.alloc_pages(order, c);
    t.true(gpa >= 3 * MiB + 4096, `order ${order} at ${gpa}`);
    t.true(gpa + (PAGE_SIZE_BYTES << order) <= 64 * MiB);
    t.is(gpa % (PAGE_SIZE_BYTES << order), 0, `order ${order} aligned`);
  }
  t.is(pa.usedBytes(), PAGE_SIZE_BYTES * (2 ** (MAX_ORDER + 1) - 1));
  t.is(c.nowNs(), (MAX_ORDER + 1) * 50, 'half of guestPageAllocNs per alloc');
  t.throws(() => pa.alloc_pages(MAX_ORDER + 1, c), { instanceOf: RangeError });
});

test('freeing everything coalesces back to the initial buddy lists', (t) => {
  // 1 MiB .. 8 MiB: frames 256..2047 → one order-8, one order-9, one order-10 block
  const { pa } = zone({ ramBytes: 8 * MiB, heapStartBytes: 1 * MiB });
  const c = new ModelClock('virtual');
  const initial = pa.statistics().nrFree;
  t.deepEqual(initial, [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]);
  const pages: number[] = [];
  for (;;) {
    const gpa = pa.alloc_pages(0, c);
    if (gpa < 0) break;
    pages.push(gpa);
  }
  t.is(pages.length, 7 * 256);
  t.is(new Set(pages).size, pages.length);
  t.is(pa.freeBytes(), 0);
  t.is(pa.statistics().allocFailures, 1);
  const rng = mulberry32(7);
  for (let i = pages.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [pages[i], pages[j]] = [pages[j], pages[i]];
  }
  for (const gpa of pages) pa.free_pages(gpa, 0, c);
  t.deepEqual(pa.statistics().nrFree, initial);
  t.is(pa.freeBytes(), 7 * MiB);
  const big = pa.alloc_pages(MAX_ORDER, c);
  t.is(big, 4 * MiB, 'the order-10 block is whole again');
});

test('ENOMEM is -1; a higher order fails while smaller blocks remain', (t) => {
  const { pa } = zone({ ramBytes: 8 * MiB, heapStartBytes: 1 * MiB });
  t.not(pa.alloc_pages(10), -1);
  t.is(pa.alloc_pages(10), -1);
  t.not(pa.alloc_pages(9), -1);
  t.not(pa.alloc_pages(8), -1);
  t.is(pa.alloc_pages(0), -1);
  t.is(pa.freeBytes(), 0);
});

test('splitting hands out the lower half and keeps the buddy; free merges it back', (t) => {
  const { pa } = zone({ ramBytes: 4 * MiB, heapStartBytes: 0 });
  const a = pa.alloc_pages(0);
  const b = pa.alloc_pages(0);
  t.is(a, 0);
  t.is(b, PAGE_SIZE_BYTES, 'the buddy of the first page');
  const s = pa.statistics().nrFree;
  t.deepEqual(s.slice(0, 10), [0, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
  pa.free_pages(a, 0);
  pa.free_pages(b, 0);
  t.deepEqual(pa.statistics().nrFree, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
});

test('double free and a wrong order are caught', (t) => {
  const { pa } = zone({ ramBytes: 4 * MiB, heapStartBytes: 0 });
  const a = pa.alloc_pages(2);
  t.throws(() => pa.free_pages(a, 1), { message: /allocated with order 2, freed with order 1/ });
  pa.free_pages(a, 2);
  t.throws(() => pa.free_pages(a, 2), { message: /double free/ });
  t.throws(() => pa.free_pages(a + 4096, 0), { message: /not allocated/ });
});

test('scattered user buffer: no page is followed by its physical successor; same seed, same pages', (t) => {
  const make = (seed: number) => {
    const { pa } = zone({ ramBytes: 16 * MiB, heapStartBytes: 2 * MiB });
    return { pa, buf: pa.allocUserBuffer(256 * 1024 + 100, 'none', mulberry32(seed)) };
  };
  const { pa, buf } = make(1);
  t.is(buf.pageGpas.length, 65);
  t.is(new Set(buf.pageGpas).size, 65);
  for (let i = 0; i + 1 < buf.pageGpas.length; i++) t.not(buf.pageGpas[i + 1], buf.pageGpas[i] + PAGE_SIZE_BYTES, `pages ${i} and ${i + 1} contiguous`);
  for (const g of buf.pageGpas) t.is(g % PAGE_SIZE_BYTES, 0);
  t.deepEqual(make(1).buf.pageGpas, buf.pageGpas);
  t.notDeepEqual(make(2).buf.pageGpas, buf.pageGpas);
  t.is(pa.usedBytes(), 65 * PAGE_SIZE_BYTES);
  pa.freeUserBuffer(buf);
  t.is(pa.usedBytes(), 0);
  // a two-page buffer can only be scattered by putting the higher page first
  const two = pa.allocUserBuffer(8192, 'none', mulberry32(3));
  t.is(two.pageGpas[0], two.pageGpas[1] + PAGE_SIZE_BYTES);
});

test('huge user buffer: 2 MiB aligned, physically contiguous blocks', (t) => {
  const { pa } = zone({ ramBytes: 32 * MiB, heapStartBytes: 1 * MiB });
  const buf = pa.allocUserBuffer(5 * MiB, 'huge', mulberry32(1));
  t.is(buf.blocks.length, 3);
  t.is(buf.pageGpas.length, 1280);
  for (const b of buf.blocks) t.is(b.gpa % HUGE_PAGE_SIZE_BYTES, 0);
  for (let i = 0; i < buf.pageGpas.length; i++) {
    const block = buf.blocks[Math.floor(i / 512)];
    t.is(buf.pageGpas[i], block.gpa + (i % 512) * PAGE_SIZE_BYTES);
  }
  t.is(pa.usedBytes(), 6 * MiB, 'whole 2 MiB pages are taken');
});

test('a buffer larger than free RAM is an InputError and leaks nothing', (t) => {
  const { pa } = zone({ ramBytes: 8 * MiB, heapStartBytes: 1 * MiB });
  t.throws(() => pa.allocUserBuffer(8 * MiB, 'huge', mulberry32(1)), { instanceOf: InputError, message: /userBuffer.sizeBytes/ });
  t.throws(() => pa.allocUserBuffer(8 * MiB, 'none', mulberry32(1)), { instanceOf: InputError });
  t.is(pa.usedBytes(), 0);
  t.throws(() => PageAllocator.allocate({ ramBytes: 8 * MiB + 1, heapStartBytes: 0 }), { instanceOf: InputError, message: /ramBytes/ });
  t.throws(() => PageAllocator.allocate({ ramBytes: 8 * MiB, heapStartBytes: 8 * MiB }), { instanceOf: InputError, message: /heapStartBytes/ });
});

test('4 real worker threads share the zone without handing out a frame twice', async (t) => {
  const opts = { ramBytes: 16 * MiB, heapStartBytes: 4 * MiB };
  const handle = PageAllocator.allocate(opts);
  const locks = LockTable.allocate(PageAllocator.lockSpecs(handle));
  const owner = new SharedArrayBuffer(4 * (opts.ramBytes / PAGE_SIZE_BYTES));
  const { results } = await runWorkers<MmWorkerResult>(
    Array.from({ length: 4 }, (_, cpu) => ({
      role: `guest-kernel/vcpu${cpu}`,
      entry: new URL('./helpers/mm-worker.js', import.meta.url),
      init: { scenario: 'pages-churn', locks, owner, cpu, seed: 77 + cpu, iterations: 20_000, maxOutstanding: 40, pages: handle } satisfies MmWorkerInit,
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
  t.true(
    results.some((r) => r.failures > 0),
    'the zone ran out at times (12 MiB, up to 160 blocks of up to 512 KiB)',
  );
  const pa = PageAllocator.attach(handle, 0, LockTable.attach(locks, 0), COSTS);
  t.is(pa.freeBytes(), 12 * MiB);
  t.deepEqual(pa.statistics().nrFree, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3], 'fully coalesced: 3 order-10 blocks');
  const zl = LockTable.attach(locks, 0).get(PAGE_ALLOC_ZONE_LOCK).stat();
  t.is(
    zl.acquisitions,
    results.reduce((a, r) => a + r.allocs + r.failures + r.frees, 0),
  );
});
