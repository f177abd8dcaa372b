/**
 * The bounce pool's slot manager: the IOVA layout of the size classes, class
 * selection, the per-prot LIFO caches, misses and their memory, full classes,
 * eviction, and DMA_ATTR_PERSISTENT_STREAMING slots.
 */

import { IOMMU_PRIV, IOMMU_WRITE, NEVER_NS } from '@vmstack/shm';
import test from 'ava';
import { BouncePool, type BouncePoolOptions, IOMMU_CACHE, SlotState } from '../src/iommu/bounce-pool.js';
import { IOVA_BASE, RO, RW, setup, WO } from './helpers/bounce-pool-setup.js';
import { mulberry32 } from './helpers/bounce-prng.js';

const KiB = 1024;
const MiB = 1024 * KiB;

test('slot ↔ IOVA: the documented layout, largest class first from the base', (t) => {
  // defaults: classes 0..7 = 4 KiB … 512 KiB, 1024 slots each, carved largest first:
  // class 7 at +0, class 6 at +1024 × 512 KiB = +512 MiB, class 5 at +512 + 256 = +768 MiB,
  // class 4 at +896 MiB, class 3 at +960 MiB, class 2 at +992 MiB, class 1 at +1008 MiB,
  // class 0 at +1016 MiB, end at +1020 MiB
  const { pool } = setup();
  t.is(pool.slotToIova(7, 0), 0x1_0000_0000, 'class 7 (512 KiB), slot 0 → the base, 4 GiB');
  t.is(pool.slotToIova(7, 1), 0x1_0008_0000, 'class 7, slot 1 → base + 512 KiB');
  t.is(pool.slotToIova(6, 0), 0x1_2000_0000, 'class 6 (256 KiB), slot 0 → base + 512 MiB');
  t.is(pool.slotToIova(2, 3), 0x1_3e00_c000, 'class 2 (16 KiB), slot 3 → base + 992 MiB + 3 × 16 KiB');
  t.is(pool.slotToIova(0, 0), 0x1_3f80_0000, 'class 0 (4 KiB), slot 0 → base + 1016 MiB');
  t.is(pool.slotToIova(0, 1023), 0x1_3fbf_f000, 'class 0, last slot → base + 1020 MiB − 4 KiB');
  t.deepEqual(pool.iovaRange, { iovaBase: 0x1_0000_0000, iovaEnd: 0x1_3fc0_0000 });
  t.is(BouncePool.iovaSpanBytes({}), 1020 * MiB, '1024 slots × 255 pages (128 + 64 + … + 1): just under 1 GiB');
  t.deepEqual(pool.iovaToSlot(0x1_3e00_c000 + 5000), { cls: 2, slot: 3, offsetBytes: 5000 });
  t.deepEqual(pool.iovaToSlot(0x1_3f7f_ffff), { cls: 1, slot: 1023, offsetBytes: 8191 }, 'the byte before class 0 is the last byte of class 1');
  t.deepEqual(pool.iovaToSlot(0x1_0000_0000), { cls: 7, slot: 0, offsetBytes: 0 });
  t.is(pool.iovaToSlot(0x0_ffff_ffff), null, 'below the base');
  t.is(pool.iovaToSlot(0x1_3fc0_0000), null, 'the end is outside');

  // 8 KiB … 64 KiB, 3 slots: class 3 (64 KiB) at +0, class 2 (32 KiB) at +192 KiB,
  // class 1 (16 KiB) at +192 + 96 = +288 KiB, class 0 (8 KiB) at +288 + 48 = +336 KiB, end +360 KiB
  const small = setup({ minClassBytes: 8192, maxClassBytes: 65536, slotsPerClass: 3 }).pool;
  const expected: [number, number, number][] = [
    [3, 0, 0],
    [3, 1, 64 * KiB],
    [3, 2, 128 * KiB],
    [2, 0, 192 * KiB],
    [2, 1, 224 * KiB],
    [2, 2, 256 * KiB],
    [1, 0, 288 * KiB],
    [1, 1, 304 * KiB],
    [1, 2, 320 * KiB],
    [0, 0, 336 * KiB],
    [0, 1, 344 * KiB],
    [0, 2, 352 * KiB],
  ];
  t.deepEqual(
    expected.map(([cls, slot]) => small.slotToIova(cls, slot) - IOVA_BASE),
    expected.map(([, , off]) => off),
  );
  t.deepEqual(small.iovaRange, { iovaBase: IOVA_BASE, iovaEnd: IOVA_BASE + 360 * KiB });
  t.is(BouncePool.iovaSpanBytes({ minClassBytes: 8192, maxClassBytes: 65536, slotsPerClass: 3 }), 360 * KiB);
});

test('slot ↔ IOVA: every slot of every class round-trips, each byte maps back, the slots tile the reserved range', (t) => {
  for (const opts of [{}, { minClassBytes: 8192, maxClassBytes: 65536, slotsPerClass: 3 }] as Partial<BouncePoolOptions>[]) {
    const { pool } = setup(opts);
    const rng = mulberry32(7);
    const ranges: [number, number][] = [];
    let bad = 0;
    for (let cls = 0; cls < pool.numClasses; cls++) {
      const bytes = pool.classBytes(cls);
      for (let i = 0; i < pool.slotsPerClass; i++) {
        const iova = pool.slotToIova(cls, i);
        if (iova % bytes !== 0) bad++;
        for (const off of [0, bytes - 1, rng() % bytes]) {
          const back = pool.iovaToSlot(iova + off);
          if (!back || back.cls !== cls || back.slot !== i || back.offsetBytes !== off) bad++;
        }
        ranges.push([iova, iova + bytes]);
      }
    }
    t.is(bad, 0);
    ranges.sort((a, b) => a[0] - b[0]);
    const { iovaBase, iovaEnd } = pool.iovaRange;
    t.is(ranges[0][0], iovaBase);
    t.is(ranges[ranges.length - 1][1], iovaEnd);
    t.true(
      ranges.every((r, k) => k === 0 || r[0] === ranges[k - 1][1]),
      'slots are contiguous and disjoint',
    );
    t.is(pool.iovaToSlot(iovaBase - 1), null);
    t.is(pool.iovaToSlot(iovaEnd), null);
  }
});

test('class selection: smallest power-of-2 class that holds the size; oversize counted', (t) => {
  const { pool, clock } = setup();
  const cases: [number, number][] = [
    [1, 0],
    [4096, 0],
    [4097, 1],
    [8192, 1],
    [8193, 2],
    [65536, 4],
    [65537, 5],
    [524288, 7],
    [524289, -1],
    [1 << 24, -1],
  ];
  for (const [size, cls] of cases) t.is(pool.classFor(size), cls, `size ${size}`);
  const s = pool.acquire(300_000, RO, clock);
  t.is(s?.classBytes, 512 * 1024);
  t.is(pool.acquire(524289, RO, clock), null);
  t.is(pool.stats().oversize, 1);
  t.throws(() => pool.classFor(0), { instanceOf: RangeError });
  t.throws(() => pool.acquire(4096, IOMMU_CACHE, clock), { instanceOf: RangeError }, 'a prot with neither READ nor WRITE is a bug (BUG_ON)');
});

test('cached slots are LIFO per permission; another permission misses', (t) => {
  const { pool, clock } = setup();
  const [a, b, c] = [0, 1, 2].map(() => pool.acquire(4096, RO, clock)!);
  t.true(a.needsMap && a.fresh && !a.needsUnmapFirst);
  for (const s of [a, b, c]) pool.release(s, clock);
  t.is(pool.slotInfo(0, a.slot).stateName, 'cached');
  const rw = pool.acquire(4096, RW, clock)!;
  t.true(rw.needsMap, 'RW does not take an RO slot');
  t.false([a.slot, b.slot, c.slot].includes(rw.slot));
  const wo = pool.acquire(2000, WO, clock)!;
  t.true(wo.needsMap);
  const order = [0, 1, 2].map(() => pool.acquire(4096, RO, clock)!);
  t.deepEqual(
    order.map((s) => s.slot),
    [c.slot, b.slot, a.slot],
  );
  t.true(order.every((s) => !s.needsMap && !s.fresh));
  const st = pool.stats();
  t.is(st.hits, 3);
  t.is(st.misses, 5);
  t.is(st.slotsInUse, 5);
  t.is(st.slotsInUsePeak, 5);
});

test('a prot with other bits (IOMMU_PRIV) is found by a linear search of its R/W list', (t) => {
  const { pool, clock } = setup();
  const PRIV_RO = RO | IOMMU_PRIV;
  const abc = [0, 1, 2].map(() => pool.acquire(4096, RO, clock)!);
  const x = pool.acquire(4096, PRIV_RO, clock)!;
  pool.release(x, clock);
  for (const s of abc) pool.release(s, clock); // RO list: c, b, a, x
  const before = clock.nowNs();
  const hit = pool.acquire(4096, PRIV_RO, clock)!;
  t.is(hit.slot, x.slot);
  t.false(hit.needsMap);
  t.is(clock.nowNs() - before, 80, 'lock + pop (20 ns) plus 20 ns for each of the 3 slots walked past');
  t.is(pool.stats().searchSteps, 3);
  const miss = pool.acquire(4096, PRIV_RO, clock)!;
  t.true(miss.needsMap);
  t.is(pool.stats().searchSteps, 6);
  t.is(pool.acquire(4096, RO, clock)!.slot, abc[2].slot, 'the RO slots were left in place, in order');
});

test('hit after release: same slot, same memory, no map, no page allocation', (t) => {
  const { pool, clock, pages } = setup();
  const a = pool.acquire(10_000, WO, clock)!;
  pool.release(a, clock);
  const calls = pages.counts().allocCalls;
  const before = clock.nowNs();
  const b = pool.acquire(12_000, WO, clock)!;
  t.is(clock.nowNs() - before, 20, 'one list operation: lock + pop');
  t.deepEqual([b.cls, b.slot, b.iova, b.gpa], [a.cls, a.slot, a.iova, a.gpa]);
  t.false(b.needsMap);
  t.false(b.fresh);
  t.is(pages.counts().allocCalls, calls);
});

test('a miss allocates class-size memory and charges guestPageAllocNs per 4 KiB page (the rest by the page allocator)', (t) => {
  const { pool, clock, pages } = setup();
  const before = clock.nowNs();
  const s = pool.acquire(64 * 1024, RW, clock)!;
  // 20 ns list op + half of (16 pages − 1 charged by the page allocator) × 100 ns = 20 + 750
  t.is(clock.nowNs() - before, 770);
  t.is(pages.allocatedBytes(), 64 * 1024);
  t.is(s.gpa % (64 * 1024), 0);
  t.is(s.iova, 0x1_3800_0000, 'the first slot of class 4 (64 KiB): base + 896 MiB');
});

test('a full class returns null; the series does not reuse cached slots of another prot (option: it does, after an unmap)', (t) => {
  for (const reuse of [false, true]) {
    const { pool, clock } = setup({ slotsPerClass: 4, reuseOtherPermissionSlots: reuse });
    const held = [0, 1, 2, 3].map(() => pool.acquire(4096, RO, clock)!);
    t.true(held.every((s) => s !== null));
    t.is(pool.acquire(100, RO, clock), null);
    t.is(pool.stats().exhausted, 1);
    t.truthy(pool.acquire(8192, RO, clock), 'the next class still serves');
    pool.release(held[1], clock);
    const wo = pool.acquire(4096, WO, clock);
    if (!reuse) {
      t.is(wo, null);
      t.is(pool.stats().exhausted, 2);
      t.false(pool.acquire(4096, RO, clock)!.needsMap, 'the cached RO slot is still a hit');
    } else {
      t.truthy(wo);
      t.is(wo!.slot, held[1].slot);
      t.true(wo!.needsMap && wo!.needsUnmapFirst && !wo!.fresh);
      t.is(wo!.oldPerm, RO);
      t.is(wo!.gpa, held[1].gpa, 'memory kept');
      t.is(pool.stats().permissionSteals, 1);
      pool.release(wo!, clock);
      t.false(pool.acquire(4096, WO, clock)!.needsMap, 'now cached as WO');
    }
  }
});

test('page allocator out of memory: acquire returns null, the slot returns to the empty list', (t) => {
  const { pool, clock, pages } = setup({ slotsPerClass: 4 }, 2);
  const a = pool.acquire(4096, RO, clock)!;
  pool.acquire(4096, RO, clock);
  t.is(pool.acquire(4096, RO, clock), null);
  t.is(pool.stats().allocFailures, 1);
  t.deepEqual(pool.classCounts(0), { inUse: 2, cached: 0, untouched: 1, empty: 1 });
  pool.abortAcquire(a, clock); // e.g. the IOMMU map failed
  t.is(pool.slotInfo(0, a.slot).stateName, 'empty');
  t.is(pages.allocatedBytes(), 4096);
  const c = pool.acquire(4096, RW, clock)!;
  t.true(c.fresh && c.needsMap);
  t.is(pool.stats().slotsInUse, 2);
});

test('eviction: slots idle for two passes are returned for unmap and freed; a busy slot and a reused one survive', (t) => {
  const { pool, clock, pages } = setup();
  const P = 5_000_000_000;
  t.is(pool.nextEvictionNs(), NEVER_NS, 'nothing cached: no pass pending');
  const a = pool.acquire(4096, RO, clock)!;
  const b = pool.acquire(4096, RW, clock)!;
  const c = pool.acquire(16384, WO, clock)!;
  pool.release(a, clock);
  const armedAt = clock.nowNs();
  pool.release(c, clock);
  t.is(pool.nextEvictionNs(), armedAt + P, 'armed by the first release, not moved by the second');
  clock.advanceTo(P);
  t.deepEqual(pool.evictionPass(clock.nowNs(), clock), []);
  t.is(pool.slotInfo(0, a.slot).stateName, 'old');
  t.is(pool.slotInfo(c.cls, c.slot).stateName, 'old');
  t.is(pool.nextEvictionNs(), P + P);
  const c2 = pool.acquire(16384, WO, clock)!; // reused between passes: no longer old
  t.is(c2.slot, c.slot);
  pool.release(c2, clock);
  clock.advanceTo(2 * P);
  const gone = pool.evictionPass(clock.nowNs(), clock);
  // a is the first slot of class 0 (4 KiB): base + 1016 MiB
  t.deepEqual(
    gone.map((e) => [e.cls, e.slot, e.iova, e.sizeBytes, e.perm, e.gpa]),
    [[0, 0, 0x1_3f80_0000, 4096, RO, a.gpa]],
  );
  t.is(pool.slotInfo(0, a.slot).stateName, 'evicting', 'not reusable before the unmap is done');
  t.is(pool.stats().memoryBytesCurrent, 4096 + 4096 + 16384);
  pool.finishEviction(gone[0], clock); // after the caller's IOMMU unmap
  t.is(pool.slotInfo(0, a.slot).stateName, 'empty');
  t.is(pool.slotInfo(0, a.slot).gpa, -1);
  t.is(pool.slotInfo(0, b.slot).state, SlotState.IN_USE, 'busy slot untouched');
  t.is(pool.stats().memoryBytesCurrent, 4096 + 16384);
  t.is(pages.allocatedBytes(), 4096 + 16384);
  t.is(pool.stats().evictions, 1);
  clock.advanceTo(3 * P);
  const gone2 = pool.evictionPass(clock.nowNs(), clock);
  t.deepEqual(
    gone2.map((e) => e.slot),
    [c.slot],
  );
  for (const e of gone2) pool.finishEviction(e, clock);
  t.is(pool.nextEvictionNs(), NEVER_NS, 'nothing was aged: the work is not requeued');
  const again = pool.acquire(4096, RO, clock)!;
  t.true(again.needsMap && again.fresh, 'an evicted slot needs memory and a map again');
  pool.release(b, clock);
  t.is(pool.nextEvictionNs(), clock.nowNs() + P);
  t.throws(() => pool.finishEviction(b, clock), { message: /not evicting/ });
  t.throws(() => pool.release(b, clock), { message: /not in use/ });
});

test('teardown evicts every cached slot at once', (t) => {
  const { pool, clock, pages } = setup();
  const s = [4096, 8192, 300_000].map((n) => pool.acquire(n, RW, clock)!);
  for (const x of s) pool.release(x, clock);
  const busy = pool.acquire(4096, RO, clock)!;
  const gone = pool.evictionPass(clock.nowNs(), clock, true);
  t.is(gone.length, 3);
  for (const e of gone) pool.finishEviction(e, clock);
  t.is(pages.allocatedBytes(), busy.classBytes);
  t.is(pool.stats().slotsCached, 0);
});

test('DMA_ATTR_PERSISTENT_STREAMING: the slot stays mapped through eviction passes; teardown releases it', (t) => {
  const { pool, clock } = setup({ evictionPeriodNs: 1000 });
  const persistent = pool.acquire(4096, IOMMU_WRITE, clock, { persistent: true })!;
  const ordinary = pool.acquire(4096, IOMMU_WRITE, clock)!;
  pool.release(persistent, clock);
  pool.release(ordinary, clock);
  t.deepEqual(pool.evictionPass(1000, clock), [], 'first pass: both only age');
  const evicted = pool.evictionPass(2000, clock);
  t.deepEqual(
    evicted.map((e) => e.slot),
    [ordinary.slot],
    'second pass: the ordinary slot goes, the persistent one stays',
  );
  for (const e of evicted) pool.finishEviction(e, clock);
  t.deepEqual(pool.evictionPass(3000, clock), []);
  const again = pool.acquire(4096, IOMMU_WRITE, clock)!;
  t.is(again.slot, persistent.slot, 'still cached and mapped: a hit');
  t.false(again.needsMap);
  pool.release(again, clock);
  const gone = pool.evictionPass(4000, clock, true);
  t.deepEqual(
    gone.map((e) => e.slot),
    [persistent.slot],
    'teardown releases it',
  );
});
