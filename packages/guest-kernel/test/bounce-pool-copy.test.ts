/**
 * The bounce pool's copies: scatter lists into one buffer and back, sync of
 * a sub-range, and the padding rules for fresh buffers of untrusted devices.
 * Expected bytes come from a separate reference (`concat` of the caller's
 * segments); expected times are worked out by hand from the test costs.
 */

import { IOMMU_PRIV } from '@vmstack/shm';
import test, { type ExecutionContext } from 'ava';
import { DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE, type DmaSegment } from '../src/iommu/bounce-pool.js';
import { RO, RW, setup, WO } from './helpers/bounce-pool-setup.js';
import { fillNoise } from './helpers/bounce-prng.js';

/** Caller segments of the given lengths with 64-byte canary gaps between them, in guest RAM. */
function segmentsIn(base: number, lens: number[]): DmaSegment[] {
  const segs: DmaSegment[] = [];
  let gpa = base;
  for (const len of lens) {
    gpa += 64; // canary gap
    segs.push({ gpa, lenBytes: len });
    gpa += len;
  }
  return segs;
}

/** The reference: the caller's bytes, segment after segment. */
function concat(ram: Uint8Array, segs: DmaSegment[]): Uint8Array {
  const out = new Uint8Array(segs.reduce((n, s) => n + s.lenBytes, 0));
  let p = 0;
  for (const s of segs) {
    out.set(ram.subarray(s.gpa, s.gpa + s.lenBytes), p);
    p += s.lenBytes;
  }
  return out;
}

function sameBytes(t: ExecutionContext, a: Uint8Array, b: Uint8Array, what = 'bytes equal'): void {
  t.true(a.length === b.length && Buffer.compare(a, b) === 0, what);
}

function sameOutside(t: ExecutionContext, before: Uint8Array, after: Uint8Array, ranges: [number, number][], what: string): void {
  const inside = new Uint8Array(after.length);
  for (const [lo, hi] of ranges) inside.fill(1, lo, hi);
  let diff = 0;
  for (let i = 0; i < after.length; i++) if (!inside[i] && before[i] !== after[i]) diff++;
  t.is(diff, 0, `${what}: bytes outside the copied ranges changed`);
}

test('copies: a scatter list into one buffer and back, exact bytes, canaries intact; sync copies only the sub-range', (t) => {
  const { pool, clock, ram } = setup();
  fillNoise(ram, 11);
  const segs = segmentsIn(4096, [1000, 7000, 12_000]); // below the page allocator's heap
  const total = 20_000;
  const s = pool.acquire(total + 100, RW, clock)!;
  t.is(s.classBytes, 32768, 'one buffer for the whole list');
  const slotOffset = 100;
  const callerRanges = segs.map((x) => [x.gpa, x.gpa + x.lenBytes] as [number, number]);
  const dataRange: [number, number] = [s.gpa + slotOffset, s.gpa + slotOffset + total];

  let before = ram.slice();
  let t0 = clock.nowNs();
  t.is(pool.bounceToDevice(ram, s.gpa, segs, clock, slotOffset), total);
  t.is(clock.nowNs() - t0, 1667, '20 000 bytes at 12 bytes/ns = 1666.7 ns, the clock rounds a charge up');
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
  t.is(clock.nowNs() - t0, 750, '9000 bytes at 12 bytes/ns');
  const got = concat(ram, segs);
  sameBytes(t, got.subarray(900, 9900), ram.subarray(dataRange[0] + 900, dataRange[0] + 9900));
  sameBytes(t, got.subarray(0, 900), concat(before, segs).subarray(0, 900), 'before the range: caller unchanged');
  sameBytes(t, got.subarray(9900), concat(before, segs).subarray(9900), 'after the range: caller unchanged');
  sameOutside(t, before, ram, callerRanges, 'sync for cpu');

  before = ram.slice();
  t.is(pool.syncRange(ram, s.gpa, segs, 0, total, DMA_TO_DEVICE, true, clock, slotOffset), 0, 'TO_DEVICE: nothing to copy for the cpu');
  t.is(pool.syncRange(ram, s.gpa, segs, 0, total, DMA_FROM_DEVICE, false, clock, slotOffset), 0, 'FROM_DEVICE: nothing to copy for the device');
  sameBytes(t, ram, before, 'no sync copied anything');
  t.is(pool.syncRange(ram, s.gpa, segs, 19_000, 1000, DMA_BIDIRECTIONAL, false, clock, slotOffset), 1000);
  // the last 1000 bytes of the mapping are the last 1000 of segment 2 (12 000 bytes long)
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
  const r = pool.bounceOnMap(
    ram,
    { gpa: s.gpa, sizeBytes: s.classBytes, fresh: s.fresh },
    segs,
    DMA_TO_DEVICE,
    { untrusted: true, slotOffsetBytes: 100 },
    clock,
  );
  // head [0, 100) = 100 bytes, tail [100 + 5000, 8192) = 3092 bytes
  t.deepEqual(r, { copiedBytes: 5000, zeroedBytes: 3192 });
  t.true(ram.subarray(s.gpa, s.gpa + 100).every((b) => b === 0));
  t.true(ram.subarray(s.gpa + 5100, s.gpa + 8192).every((b) => b === 0));
  sameBytes(t, ram.subarray(s.gpa + 100, s.gpa + 5100), ram.subarray(4096, 9096));
  pool.release(s, clock);

  // the same slot from the cache: its old bytes stay (the device saw them already)
  ram.fill(0xee, s.gpa, s.gpa + 8192);
  const again = pool.acquire(5100, RO, clock)!;
  t.is(again.slot, s.slot);
  t.false(again.fresh);
  const r2 = pool.bounceOnMap(
    ram,
    { gpa: again.gpa, sizeBytes: again.classBytes, fresh: again.fresh },
    segs,
    DMA_TO_DEVICE,
    { untrusted: true, slotOffsetBytes: 100 },
    clock,
  );
  t.is(r2.zeroedBytes, 0);
  t.true(ram.subarray(again.gpa, again.gpa + 100).every((b) => b === 0xee));
  t.true(ram.subarray(again.gpa + 5100, again.gpa + 8192).every((b) => b === 0xee));

  // trusted device, fresh slot: no zeroing
  const tr = pool.acquire(5100, RW, clock)!;
  ram.fill(0x55, tr.gpa, tr.gpa + 8192);
  t.is(
    pool.bounceOnMap(ram, { gpa: tr.gpa, sizeBytes: 8192, fresh: true }, segs, DMA_BIDIRECTIONAL, { untrusted: false, slotOffsetBytes: 100 }, clock)
      .zeroedBytes,
    0,
  );
  t.true(ram.subarray(tr.gpa, tr.gpa + 100).every((b) => b === 0x55));

  // untrusted, fresh, DMA_ATTR_SKIP_CPU_SYNC: no copy, the whole slot cleared
  const sk = pool.acquire(5100, WO, clock)!;
  ram.fill(0x77, sk.gpa, sk.gpa + 8192);
  t.deepEqual(
    pool.bounceOnMap(
      ram,
      { gpa: sk.gpa, sizeBytes: 8192, fresh: true },
      segs,
      DMA_TO_DEVICE,
      { untrusted: true, slotOffsetBytes: 100, skipCpuSync: true },
      clock,
    ),
    { copiedBytes: 0, zeroedBytes: 8192 },
  );
  t.true(ram.subarray(sk.gpa, sk.gpa + 8192).every((b) => b === 0));

  // untrusted, fresh, FROM_DEVICE: padding cleared, the data range neither copied nor cleared (as in the series)
  const fd = pool.acquire(5100, WO | IOMMU_PRIV, clock)!;
  ram.fill(0x99, fd.gpa, fd.gpa + 8192);
  const before = clock.nowNs();
  t.deepEqual(pool.bounceOnMap(ram, { gpa: fd.gpa, sizeBytes: 8192, fresh: true }, segs, DMA_FROM_DEVICE, { untrusted: true, slotOffsetBytes: 100 }, clock), {
    copiedBytes: 0,
    zeroedBytes: 3192,
  });
  t.is(clock.nowNs() - before, 399, '3192 bytes at 8 bytes/ns');
  t.true(ram.subarray(fd.gpa + 100, fd.gpa + 5100).every((b) => b === 0x99));
  t.is(pool.stats().bytesZeroed, 3192 + 8192 + 3192);
  // unmap: FROM_DEVICE copies out, TO_DEVICE does not
  t.is(pool.bounceOnUnmap(ram, fd.gpa, segs, DMA_FROM_DEVICE, { slotOffsetBytes: 100 }, clock), 5000);
  sameBytes(t, ram.subarray(4096, 9096), ram.subarray(fd.gpa + 100, fd.gpa + 5100));
  t.is(pool.bounceOnUnmap(ram, s.gpa, segs, DMA_TO_DEVICE, {}, clock), 0);
});
