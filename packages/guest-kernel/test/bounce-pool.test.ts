import test from 'ava';
import { InputError, IOMMU_PRIV, IOMMU_READ, IOMMU_WRITE, LockTable, ModelClock, NEVER_NS, RunControl, runWorkers } from '@vmstack/shm';
import {
  BouncePool,
  DMA_BIDIRECTIONAL,
  DMA_FROM_DEVICE,
  DMA_TO_DEVICE,
  IOMMU_CACHE,
  SlotState,
  bouncePoolClassLockName,
  dma_info_to_prot,
  type BouncePoolOptions,
  type DmaSegment,
} from '../src/iommu/bounce-pool.js';
import { TestPages } from './helpers/bounce-page-allocator.js';
import { fillNoise, mulberry32 } from './helpers/bounce-prng.js';
import type { BounceWorkerInit, BounceWorkerResult } from './helpers/bounce-worker.js';

const COSTS = { bouncePoolListOpNs: 20, memcpyBytesPerNs: 12, memsetBytesPerNs: 8, guestPageAllocNs: 100, iovaRbtreeOpNs: 250 };
const RO = IOMMU_READ | IOMMU_CACHE;
const WO = IOMMU_WRITE | IOMMU_CACHE;
const RW = IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE;
const IOVA_BASE = 2 ** 32;
const HEAP_GPA = 1 << 20;

function setup(opts: Partial<BouncePoolOptions> = {}, heapPages = 2048, cpu = 0) {
  const handle = BouncePool.allocate({ iovaBase: IOVA_BASE, ...opts });
  const locks = LockTable.allocate(BouncePool.lockSpecs(handle));
  const pages = new TestPages(TestPages.allocate(HEAP_GPA, heapPages));
  const pool = BouncePool.attach(handle, cpu, LockTable.attach(locks, cpu), pages, COSTS);
  const ram = new Uint8Array(new SharedArrayBuffer(HEAP_GPA + heapPages * 4096));
  return { handle, locks, pages, pool, ram, clock: new ModelClock('virtual') };
}

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
    t.true(ranges.every((r, k) => k === 0 || r[0] === ranges[k - 1][1]), 'slots are contiguous and disjoint');
    t.is(iovaEnd - iovaBase, BouncePool.iovaSpanBytes(opts));
    // largest class first: the first slot at the base belongs to the largest class
    t.deepEqual(pool.iovaToSlot(iovaBase), { cls: pool.numClasses - 1, slot: 0, offsetBytes: 0 });
    t.is(pool.iovaToSlot(iovaBase - 1), null);
    t.is(pool.iovaToSlot(iovaEnd), null);
  }
  t.is(BouncePool.iovaSpanBytes({}), 1024 * 255 * 4096, 'defaults: 1024 slots × 255 pages, "slightly under 1GB"');
});

test('class selection: smallest power-of-2 class that holds the size; oversize counted', (t) => {
  const { pool, clock } = setup();
  const cases: [number, number][] = [[1, 0], [4096, 0], [4097, 1], [8192, 1], [8193, 2], [65536, 4], [65537, 5], [524288, 7], [524289, -1], [1 << 24, -1]];
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
  t.deepEqual(order.map((s) => s.slot), [c.slot, b.slot, a.slot]);
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
  t.is(clock.nowNs() - before, 4 * COSTS.bouncePoolListOpNs, 'lock + pop, plus one list op per slot walked past');
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
  t.is(clock.nowNs() - before, COSTS.bouncePoolListOpNs);
  t.deepEqual([b.cls, b.slot, b.iova, b.gpa], [a.cls, a.slot, a.iova, a.gpa]);
  t.false(b.needsMap);
  t.false(b.fresh);
  t.is(pages.counts().allocCalls, calls);
});

test('a miss allocates class-size memory and charges guestPageAllocNs per 4 KiB page (the rest by the page allocator)', (t) => {
  const { pool, clock, pages } = setup();
  const before = clock.nowNs();
  const s = pool.acquire(64 * 1024, RW, clock)!;
  t.is(clock.nowNs() - before, COSTS.bouncePoolListOpNs + (15 * COSTS.guestPageAllocNs) / 2);
  t.is(pages.allocatedBytes(), 64 * 1024);
  t.is(s.gpa % (64 * 1024), 0);
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
  t.deepEqual(gone.map((e) => [e.cls, e.slot, e.iova, e.sizeBytes, e.perm, e.gpa]), [[0, a.slot, a.iova, 4096, RO, a.gpa]]);
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
  t.deepEqual(gone2.map((e) => e.slot), [c.slot]);
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

test('memory accounting: current and peak follow slot and fallback memory, and match the page allocator', (t) => {
  const { pool, clock, pages } = setup();
  const check = (what: string) => t.is(pool.stats().memoryBytesCurrent, pages.allocatedBytes(), what);
  const s = [4096, 65536, 524288].map((n) => pool.acquire(n, RW, clock)!);
  check('after acquires');
  t.is(pool.stats().memoryBytesPeak, 4096 + 65536 + 524288);
  for (const x of s) pool.release(x, clock);
  check('cached slots keep their memory');
  const fb = pool.fallback.insert(2 ** 40, 10_000, RW, clock)!;
  t.is(fb.allocBytes, 16384);
  t.is(fb.mapBytes, 12288);
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

/** Three caller segments with canary gaps between them, in guest RAM. */
function segmentsIn(ram: Uint8Array, base: number, lens: number[]): DmaSegment[] {
  const segs: DmaSegment[] = [];
  let gpa = base;
  for (const len of lens) {
    gpa += 64; // canary gap
    segs.push({ gpa, lenBytes: len });
    gpa += len;
  }
  return segs;
}

function concat(ram: Uint8Array, segs: DmaSegment[]): Uint8Array {
  const out = new Uint8Array(segs.reduce((n, s) => n + s.lenBytes, 0));
  let p = 0;
  for (const s of segs) {
    out.set(ram.subarray(s.gpa, s.gpa + s.lenBytes), p);
    p += s.lenBytes;
  }
  return out;
}

function sameBytes(t: import('ava').ExecutionContext, a: Uint8Array, b: Uint8Array, what = 'bytes equal'): void {
  t.true(a.length === b.length && Buffer.compare(a, b) === 0, what);
}

function sameOutside(t: import('ava').ExecutionContext, before: Uint8Array, after: Uint8Array, ranges: [number, number][], what: string): void {
  const inside = new Uint8Array(after.length);
  for (const [lo, hi] of ranges) inside.fill(1, lo, hi);
  let diff = 0;
  for (let i = 0; i < after.length; i++) if (!inside[i] && before[i] !== after[i]) diff++;
  t.is(diff, 0, `${what}: bytes outside the copied ranges changed`);
}

test('copies: a scatter list into one buffer and back, exact bytes, canaries intact; sync copies only the sub-range', (t) => {
  const { pool, clock, ram } = setup();
  fillNoise(ram, 11);
  const segs = segmentsIn(ram, 4096, [1000, 7000, 12_000]); // below the page allocator's heap
  const total = 20_000;
  const s = pool.acquire(total + 100, RW, clock)!;
  t.is(s.classBytes, 32768, 'one buffer for the whole list');
  const slotOffset = 100;
  const callerRanges = segs.map((x) => [x.gpa, x.gpa + x.lenBytes] as [number, number]);
  const dataRange: [number, number] = [s.gpa + slotOffset, s.gpa + slotOffset + total];

  let before = ram.slice();
  let t0 = clock.nowNs();
  t.is(pool.bounceToDevice(ram, s.gpa, segs, clock, slotOffset), total);
  t.is(clock.nowNs() - t0, Math.ceil(total / COSTS.memcpyBytesPerNs));
  sameBytes(t, ram.subarray(...dataRange), concat(ram, segs));
  sameOutside(t, before, ram, [dataRange], 'to device');
  t.is(pool.stats().bytesCopiedToDevice, total);

  fillNoise(ram.subarray(...dataRange), 12); // the device writes the buffer
  before = ram.slice();
  t.is(pool.bounceFromDevice(ram, s.gpa, segs, clock, slotOffset), total);
  sameBytes(t, concat(ram, segs), ram.subarray(...dataRange));
  sameOutside(t, before, ram, callerRanges, 'from device');
  t.is(pool.stats().bytesCopiedFromDevice, total);

  // dma_sync_single_for_cpu of [900, 900 + 9000): spans segments 0..2
  fillNoise(ram.subarray(...dataRange), 13);
  before = ram.slice();
  t0 = clock.nowNs();
  t.is(pool.syncRange(ram, s.gpa, segs, 900, 9000, DMA_FROM_DEVICE, true, clock, slotOffset), 9000);
  t.is(clock.nowNs() - t0, Math.ceil(9000 / COSTS.memcpyBytesPerNs));
  const got = concat(ram, segs);
  sameBytes(t, got.subarray(900, 9900), ram.subarray(dataRange[0] + 900, dataRange[0] + 9900));
  sameBytes(t, got.subarray(0, 900), concat(before, segs).subarray(0, 900), 'before the range: caller unchanged');
  sameBytes(t, got.subarray(9900), concat(before, segs).subarray(9900), 'after the range: caller unchanged');
  sameOutside(t, before, ram, callerRanges, 'sync for cpu');

  before = ram.slice();
  t.is(pool.syncRange(ram, s.gpa, segs, 0, total, DMA_TO_DEVICE, true, clock, slotOffset), 0, 'TO_DEVICE: nothing to copy for the cpu');
  t.is(pool.syncRange(ram, s.gpa, segs, 0, total, DMA_FROM_DEVICE, false, clock, slotOffset), 0, 'FROM_DEVICE: nothing to copy for the device');
  sameBytes(t, ram, before, "no sync copied anything");
  t.is(pool.syncRange(ram, s.gpa, segs, 19_000, 1000, DMA_BIDIRECTIONAL, false, clock, slotOffset), 1000);
  sameBytes(t, ram.subarray(dataRange[1] - 1000, dataRange[1]), ram.subarray(segs[2].gpa + 11_000, segs[2].gpa + 12_000));
  sameOutside(t, before, ram, [[dataRange[1] - 1000, dataRange[1]]], 'sync for device');
  t.throws(() => pool.syncRange(ram, s.gpa, segs, 19_500, 1000, DMA_BIDIRECTIONAL, true, clock, slotOffset), { instanceOf: RangeError });
});

test('padding is zeroed only for fresh buffers of untrusted devices', (t) => {
  const { pool, clock, ram } = setup();
  fillNoise(ram, 21);
  const segs = [{ gpa: 4096, lenBytes: 5000 }];
  // untrusted, fresh, map_page at offset 100 of an 8 KiB slot
  const s = pool.acquire(5100, RO, clock)!;
  t.true(s.fresh);
  const r = pool.bounceOnMap(ram, { gpa: s.gpa, sizeBytes: s.classBytes, fresh: s.fresh }, segs, DMA_TO_DEVICE, { untrusted: true, slotOffsetBytes: 100 }, clock);
  t.deepEqual(r, { copiedBytes: 5000, zeroedBytes: 100 + 8192 - 5100 });
  t.true(ram.subarray(s.gpa, s.gpa + 100).every((b) => b === 0));
  t.true(ram.subarray(s.gpa + 5100, s.gpa + 8192).every((b) => b === 0));
  sameBytes(t, ram.subarray(s.gpa + 100, s.gpa + 5100), ram.subarray(4096, 9096));
  pool.release(s, clock);

  // the same slot from the cache: its old bytes stay (the device saw them already)
  ram.fill(0xee, s.gpa, s.gpa + 8192);
  const again = pool.acquire(5100, RO, clock)!;
  t.is(again.slot, s.slot);
  t.false(again.fresh);
  const r2 = pool.bounceOnMap(ram, { gpa: again.gpa, sizeBytes: again.classBytes, fresh: again.fresh }, segs, DMA_TO_DEVICE, { untrusted: true, slotOffsetBytes: 100 }, clock);
  t.is(r2.zeroedBytes, 0);
  t.true(ram.subarray(again.gpa, again.gpa + 100).every((b) => b === 0xee));
  t.true(ram.subarray(again.gpa + 5100, again.gpa + 8192).every((b) => b === 0xee));

  // trusted device, fresh slot: no zeroing
  const tr = pool.acquire(5100, RW, clock)!;
  ram.fill(0x55, tr.gpa, tr.gpa + 8192);
  t.is(pool.bounceOnMap(ram, { gpa: tr.gpa, sizeBytes: 8192, fresh: true }, segs, DMA_BIDIRECTIONAL, { untrusted: false, slotOffsetBytes: 100 }, clock).zeroedBytes, 0);
  t.true(ram.subarray(tr.gpa, tr.gpa + 100).every((b) => b === 0x55));

  // untrusted, fresh, DMA_ATTR_SKIP_CPU_SYNC: no copy, the whole slot cleared
  const sk = pool.acquire(5100, WO, clock)!;
  ram.fill(0x77, sk.gpa, sk.gpa + 8192);
  t.deepEqual(pool.bounceOnMap(ram, { gpa: sk.gpa, sizeBytes: 8192, fresh: true }, segs, DMA_TO_DEVICE, { untrusted: true, slotOffsetBytes: 100, skipCpuSync: true }, clock), { copiedBytes: 0, zeroedBytes: 8192 });
  t.true(ram.subarray(sk.gpa, sk.gpa + 8192).every((b) => b === 0));

  // untrusted, fresh, FROM_DEVICE: padding cleared, the data range neither copied nor cleared (as in the series)
  const fd = pool.acquire(5100, WO | IOMMU_PRIV, clock)!;
  ram.fill(0x99, fd.gpa, fd.gpa + 8192);
  const before = clock.nowNs();
  t.deepEqual(pool.bounceOnMap(ram, { gpa: fd.gpa, sizeBytes: 8192, fresh: true }, segs, DMA_FROM_DEVICE, { untrusted: true, slotOffsetBytes: 100 }, clock), { copiedBytes: 0, zeroedBytes: 3192 });
  t.is(clock.nowNs() - before, Math.ceil(3192 / COSTS.memsetBytesPerNs));
  t.true(ram.subarray(fd.gpa + 100, fd.gpa + 5100).every((b) => b === 0x99));
  t.is(pool.stats().bytesZeroed, 3192 + 8192 + 3192);
  // unmap: FROM_DEVICE copies out, TO_DEVICE does not
  t.is(pool.bounceOnUnmap(ram, fd.gpa, segs, DMA_FROM_DEVICE, { slotOffsetBytes: 100 }, clock), 5000);
  sameBytes(t, ram.subarray(4096, 9096), ram.subarray(fd.gpa + 100, fd.gpa + 5100));
  t.is(pool.bounceOnUnmap(ram, s.gpa, segs, DMA_TO_DEVICE, {}, clock), 0);
});

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
  t.is(dma_info_to_prot(DMA_TO_DEVICE, true), RO);
  t.is(dma_info_to_prot(DMA_FROM_DEVICE, true, true), WO | IOMMU_PRIV);
  t.is(dma_info_to_prot(DMA_BIDIRECTIONAL, false), IOMMU_READ | IOMMU_WRITE);
});

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
  // copy helpers serve fallback buffers
  const ram = new Uint8Array(new SharedArrayBuffer(HEAP_GPA + 2048 * 4096));
  fillNoise(ram, 5);
  const r = pool.bounceOnMap(ram, { gpa: a.gpa, sizeBytes: a.mapBytes, fresh: true }, [{ gpa: 64, lenBytes: 5000 }], DMA_TO_DEVICE, { untrusted: true }, clock);
  t.deepEqual(r, { copiedBytes: 5000, zeroedBytes: 8192 - 5000 });
});

test('class locks are the named spinlocks of the lock table, charged in model time', (t) => {
  const { pool, locks, clock } = setup();
  const s = pool.acquire(4096, RO, clock)!;
  pool.release(s, clock);
  const stats = LockTable.attach(locks, 0).stats();
  const l4k = stats.find((x) => x.name === bouncePoolClassLockName(4096))!;
  t.is(l4k.kind, 'spinlock');
  t.is(l4k.acquisitions, 2);
  t.is(l4k.holdtimeTotalNs, 2 * COSTS.bouncePoolListOpNs);
  t.deepEqual(BouncePool.lockSpecs(setup({ lockSuffix: '/dom1' }).handle).map((x) => x.name).slice(0, 2), ['bounce_pool->class_lock/4096/dom1', 'bounce_pool->class_lock/8192/dom1']);
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
      init: { pool: handle, locks, pages: pagesHandle, ram, owners, iterations, seed: 1000 + i, maxHeld: 12, evictEvery: i === 0 ? 400 : 0 } satisfies BounceWorkerInit,
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
  t.true(lockStats.some((l) => l.realContentions > 0), 'the threads really met on a class lock');
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

test('DMA_ATTR_PERSISTENT_STREAMING: the slot stays mapped through eviction passes; teardown releases it', (t) => {
  const { pool, clock } = setup({ evictionPeriodNs: 1000 });
  const persistent = pool.acquire(4096, IOMMU_WRITE, clock, { persistent: true })!;
  const ordinary = pool.acquire(4096, IOMMU_WRITE, clock)!;
  pool.release(persistent, clock);
  pool.release(ordinary, clock);
  t.deepEqual(pool.evictionPass(1000, clock), [], 'first pass: both only age');
  const evicted = pool.evictionPass(2000, clock);
  t.deepEqual(evicted.map((e) => e.slot), [ordinary.slot], 'second pass: the ordinary slot goes, the persistent one stays');
  for (const e of evicted) pool.finishEviction(e, clock);
  t.deepEqual(pool.evictionPass(3000, clock), []);
  const again = pool.acquire(4096, IOMMU_WRITE, clock)!;
  t.is(again.slot, persistent.slot, 'still cached and mapped: a hit');
  t.false(again.needsMap);
  pool.release(again, clock);
  const gone = pool.evictionPass(4000, clock, true);
  t.deepEqual(gone.map((e) => e.slot), [persistent.slot], 'teardown releases it');
});
