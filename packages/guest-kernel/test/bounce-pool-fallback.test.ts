/**
 * The bounce pool's fallback tree: single-use buffers keyed by IOVA range,
 * and the pool's memory accounting over slot and fallback memory.
 */
import test from 'ava';
import { DMA_TO_DEVICE } from '../src/iommu/bounce-pool.js';
import { HEAP_GPA, RO, RW, setup, WO } from './helpers/bounce-pool-setup.js';
import { fillNoise } from './helpers/bounce-prng.js';

test('fallback tree: single-use buffers keyed by IOVA range, found from any byte, freed at removal', (t) => {
  const { pool, clock, pages } = setup({ fallbackCapacity: 3 });
  const fb = pool.fallback;
  const base = 2 ** 44;
  const b = fb.insert(base + 0x100000, 600_000, RW, clock)!; // larger than the largest class
  const a = fb.insert(base, 5000, RO, clock)!;
  const used = pages.allocatedBytes();
  t.throws(() => fb.insert(base + 4096, 100, RO, clock), { message: /collision/ });
  t.throws(() => fb.insert(base + 0x100000 - 4096, 8192, RO, clock), { message: /collision/ });
  t.is(pages.allocatedBytes(), used, 'no memory leaked by a refused insert');
  const c = fb.insert(base + 0x200000, 4096, WO, clock)!;
  t.truthy(a && b && c);
  t.is(fb.size, 3);
  t.is(fb.lookup(base + 4999, clock)?.gpa, a.gpa);
  t.is(fb.lookup(base + 5000, clock), null, 'the byte after the mapping');
  t.is(fb.lookup(base + 0x100000 + 599_999, clock)?.iova, b.iova);
  t.is(fb.lookup(base - 1, clock), null);
  t.is(fb.insert(base + 0x300000, 4096, RO, clock), null, 'tree full');
  t.is(pool.stats().fallbackFailures, 1);
  t.deepEqual(fb.remove(base + 0x100000 + 17, clock), b);
  t.is(fb.lookup(base + 0x100000, clock), null);
  t.is(fb.lookup(base, clock)?.iova, a.iova);
  t.is(fb.lookup(base + 0x200000, clock)?.iova, c.iova);
  t.is(fb.remove(base + 0x100000, clock), null);
  const st = pool.stats();
  t.is(st.fallbacks, 3);
  t.is(st.fallbacksInUse, 2);
  t.is(st.memoryBytesCurrent, pages.allocatedBytes());
  // 5000 bytes: mapped as 2 pages (8192 bytes), held as an order-1 block
  t.deepEqual([a.mapBytes, a.allocBytes], [8192, 8192]);
  // 600 000 bytes: 147 pages mapped (602 112 bytes), held as an order-8 block of 256 pages
  t.deepEqual([b.mapBytes, b.allocBytes], [602_112, 1_048_576]);
  // the copies serve fallback buffers: data [0, 5000) of 8192 mapped bytes, tail 3192 bytes
  const ram = new Uint8Array(new SharedArrayBuffer(HEAP_GPA + 2048 * 4096));
  fillNoise(ram, 5);
  const r = pool.bounceOnMap(ram, { gpa: a.gpa, sizeBytes: a.mapBytes, fresh: true }, [{ gpa: 64, lenBytes: 5000 }], DMA_TO_DEVICE, { untrusted: true }, clock);
  t.deepEqual(r, { copiedBytes: 5000, zeroedBytes: 3192 });
});

test('memory accounting: current and peak follow slot and fallback memory, and match the page allocator', (t) => {
  const { pool, clock, pages } = setup();
  const check = (what: string) => t.is(pool.stats().memoryBytesCurrent, pages.allocatedBytes(), what);
  const s = [4096, 65536, 524288].map((n) => pool.acquire(n, RW, clock)!);
  check('after acquires');
  t.is(pool.stats().memoryBytesPeak, 4096 + 65536 + 524288);
  for (const x of s) pool.release(x, clock);
  check('cached slots keep their memory');
  const fb = pool.fallback.insert(2 ** 40, 10_000, RW, clock)!;
  t.is(fb.allocBytes, 16384, '10 000 bytes = 3 pages, held as an order-2 block of 4 pages');
  t.is(fb.mapBytes, 12288, 'mapped: the 3 pages');
  check('fallback memory counted');
  t.is(pool.stats().memoryBytesPeak, 4096 + 65536 + 524288 + 16384);
  t.is(pool.stats().fallbackMemoryBytesCurrent, 16384);
  pool.fallback.remove(2 ** 40 + 5, clock);
  check('fallback freed at unmap');
  for (let k = 0; k < 2; k++) for (const e of pool.evictionPass(clock.nowNs(), clock)) pool.finishEviction(e, clock);
  check('evicted');
  t.is(pool.stats().memoryBytesCurrent, 0);
  t.is(pool.stats().memoryBytesPeak, 4096 + 65536 + 524288 + 16384);
});
