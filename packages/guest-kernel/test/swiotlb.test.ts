import { asGpa, InputError, LockTable, ModelClock } from '@vmstack/shm';
import test from 'ava';
import { DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE } from '../src/iommu/bounce-pool.js';
import { DMA_MAPPING_ERROR, IO_TLB_SEGSIZE, IO_TLB_SIZE, SWIOTLB_LOCK, Swiotlb, type SwiotlbOptions } from '../src/iommu/swiotlb.js';
import { fillNoise, mulberry32 } from './helpers/bounce-prng.js';

const COSTS = { swiotlbSlotSearchNs: 80, bouncePoolListOpNs: 20, memcpyBytesPerNs: 12, memsetBytesPerNs: 8 };
const AREA = 1 << 20; // gpa of the area
const SEG = IO_TLB_SEGSIZE * IO_TLB_SIZE;

function setup(opts: Partial<SwiotlbOptions> = {}) {
  const handle = Swiotlb.allocate({ areaGpa: AREA, sizeBytes: 4 * SEG, ...opts });
  const locks = LockTable.allocate(Swiotlb.lockSpecs(handle));
  const ram = new Uint8Array(new SharedArrayBuffer(AREA + handle.nslabs * IO_TLB_SIZE + (1 << 20)));
  const tlb = Swiotlb.attach(handle, 0, LockTable.attach(locks, 0), ram, COSTS);
  return { handle, locks, ram, tlb, clock: new ModelClock('virtual') };
}

const slotOf = (addr: number): number => Math.floor((addr - AREA) / IO_TLB_SIZE);
const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && Buffer.compare(a, b) === 0;

test('an allocation never crosses a 128-slot segment: it moves to the next segment', (t) => {
  const { tlb, clock } = setup();
  const a = tlb.swiotlb_tbl_map_single(asGpa(0x1000), 100 * IO_TLB_SIZE, 100 * IO_TLB_SIZE, DMA_FROM_DEVICE, clock);
  t.is(slotOf(a), 0);
  t.is(tlb.stats().index, 100, 'the hint moves past the allocation');
  const b = tlb.swiotlb_tbl_map_single(asGpa(0x1000), 40 * IO_TLB_SIZE, 40 * IO_TLB_SIZE, DMA_FROM_DEVICE, clock);
  t.is(slotOf(b), 128, 'slots 100..127 hold only 28 free: the search goes on to the next segment');
  const c = tlb.swiotlb_tbl_map_single(asGpa(0x1000), 28 * IO_TLB_SIZE, 28 * IO_TLB_SIZE, DMA_FROM_DEVICE, clock);
  t.is(slotOf(c), 168, 'searching resumes at the hint (168), not back at 100');
  const list = tlb.listSnapshot();
  t.deepEqual(Array.from(list.subarray(96, 104)), [0, 0, 0, 0, 28, 27, 26, 25]);
  t.is(list[127], 1);
  t.is(tlb.stats().usedSlots, 168);
});

test('random map/unmap against a reference bitmap: lists, boundaries, overlap, used and peak stay exact', (t) => {
  for (const minAlignMask of [0, 4095]) {
    const { tlb, handle, clock } = setup({ minAlignMask, sizeBytes: 8 * SEG });
    const n = handle.nslabs;
    const rng = mulberry32(minAlignMask + 3);
    const taken = new Uint8Array(n);
    const live: { addr: number; first: number; slots: number }[] = [];
    let peak = 0;
    let bad = 0;
    let failures = 0;
    for (let op = 0; op < 4000; op++) {
      if (live.length > 0 && (rng() % 100 < 45 || live.length > 60)) {
        const k = rng() % live.length;
        const m = live[k];
        live[k] = live[live.length - 1];
        live.pop();
        tlb.swiotlb_tbl_unmap_single(asGpa(m.addr), 1, DMA_TO_DEVICE, clock);
        taken.fill(0, m.first, m.first + m.slots);
      } else {
        const size = 1 + (rng() % (rng() % 4 === 0 ? 256 * 1024 : 12 * 1024));
        const orig = 4096 + (rng() % 200_000);
        const addr = tlb.swiotlb_tbl_map_single(asGpa(orig), size, size, DMA_FROM_DEVICE, clock);
        if (addr === DMA_MAPPING_ERROR) {
          failures++;
          continue;
        }
        const offset = (orig % IO_TLB_SIZE) & minAlignMask;
        const first = slotOf(addr - offset);
        const slots = Math.ceil((size + offset) / IO_TLB_SIZE);
        if (minAlignMask && addr % 4096 !== orig % 4096) bad++; // min_align_mask: low bits preserved
        if (Math.floor(first / IO_TLB_SEGSIZE) !== Math.floor((first + slots - 1) / IO_TLB_SEGSIZE)) bad++;
        for (let i = first; i < first + slots; i++) if (taken[i]++) bad++;
        live.push({ addr, first, slots });
      }
      const used = taken.reduce((s, x) => s + x, 0);
      peak = Math.max(peak, used);
      const st = tlb.stats();
      if (st.usedSlots !== used || st.peakUsedSlots !== peak) bad++;
      if (op % 50 === 0) {
        // list[i] = free slots from i to the end of its segment, 0 if taken
        const list = tlb.listSnapshot();
        for (let i = n - 1, run = 0; i >= 0; i--) {
          if (i % IO_TLB_SEGSIZE === IO_TLB_SEGSIZE - 1) run = 0;
          run = taken[i] ? 0 : run + 1;
          if (list[i] !== run) bad++;
        }
      }
    }
    t.is(bad, 0, `minAlignMask ${minAlignMask}`);
    t.true(failures > 0 && failures === tlb.stats().failures, 'the area ran full at times');
    t.true(tlb.stats().probes > 0);
  }
});

test('exhaustion: "swiotlb buffer is full" is a failure, and freeing makes room again', (t) => {
  const { tlb, clock } = setup({ sizeBytes: 2 * SEG });
  const a = tlb.swiotlb_tbl_map_single(asGpa(0), SEG, SEG, DMA_FROM_DEVICE, clock);
  const b = tlb.swiotlb_tbl_map_single(asGpa(0), SEG, SEG, DMA_FROM_DEVICE, clock);
  t.not(a, DMA_MAPPING_ERROR);
  t.not(b, DMA_MAPPING_ERROR);
  const before = clock.nowNs();
  t.is(tlb.swiotlb_tbl_map_single(asGpa(0), 2048, 2048, DMA_FROM_DEVICE, clock), DMA_MAPPING_ERROR);
  t.is(clock.nowNs() - before, COSTS.swiotlbSlotSearchNs, 'the search is charged even when it fails');
  t.is(tlb.swiotlb_tbl_map_single(asGpa(0), SEG + 1, SEG + 1, DMA_FROM_DEVICE, clock), DMA_MAPPING_ERROR, 'larger than a segment never fits');
  t.is(tlb.swiotlb_tbl_map_single(asGpa(0), 4096, 2048, DMA_FROM_DEVICE, clock), DMA_MAPPING_ERROR, 'mapping larger than the allocation');
  t.is(tlb.stats().failures, 3);
  tlb.swiotlb_tbl_unmap_single(asGpa(a), SEG, DMA_FROM_DEVICE, clock);
  const c = tlb.swiotlb_tbl_map_single(asGpa(0), 4096, 4096, DMA_FROM_DEVICE, clock);
  t.is(c, a, 'the hint wrapped to 0');
  t.is(tlb.stats().peakUsedSlots, 256);
  t.throws(() => tlb.swiotlb_tbl_unmap_single(asGpa(a + 4096), 1, DMA_FROM_DEVICE, clock), { message: /not mapped/ });
});

test('bounce copies: in at map (TO_DEVICE, BIDIRECTIONAL), out at unmap (FROM_DEVICE, BIDIRECTIONAL), exact bytes, canaries intact', (t) => {
  const { tlb, ram, clock } = setup();
  fillNoise(ram, 1);
  const orig = 0x3000 + 77;
  const size = 10_000;
  const snapshot = (): Uint8Array => ram.slice();
  const changedOutside = (before: Uint8Array, lo: number, hi: number): number => {
    let d = 0;
    for (let i = 0; i < ram.length; i++) if ((i < lo || i >= hi) && ram[i] !== before[i]) d++;
    return d;
  };

  let before = snapshot();
  let t0 = clock.nowNs();
  const a = tlb.swiotlb_tbl_map_single(asGpa(orig), size, size, DMA_TO_DEVICE, clock);
  t.is(clock.nowNs() - t0, COSTS.swiotlbSlotSearchNs + Math.ceil(size / COSTS.memcpyBytesPerNs));
  t.true(sameBytes(ram.subarray(a, a + size), ram.subarray(orig, orig + size)));
  t.is(changedOutside(before, a, a + size), 0);
  before = snapshot();
  tlb.swiotlb_tbl_unmap_single(asGpa(a), size, DMA_TO_DEVICE, clock);
  t.is(changedOutside(before, 0, 0), 0, 'TO_DEVICE: nothing copied back');

  before = snapshot();
  const b = tlb.swiotlb_tbl_map_single(asGpa(orig), size, size, DMA_FROM_DEVICE, clock);
  t.is(changedOutside(before, 0, 0), 0, 'FROM_DEVICE: nothing copied in');
  fillNoise(ram.subarray(b, b + size), 2); // the device writes
  before = snapshot();
  t0 = clock.nowNs();
  tlb.swiotlb_tbl_unmap_single(asGpa(b), size, DMA_FROM_DEVICE, clock);
  t.is(clock.nowNs() - t0, Math.ceil(size / COSTS.memcpyBytesPerNs) + COSTS.bouncePoolListOpNs);
  t.true(sameBytes(ram.subarray(orig, orig + size), ram.subarray(b, b + size)));
  t.is(changedOutside(before, orig, orig + size), 0);

  const c = tlb.swiotlb_tbl_map_single(asGpa(orig), size, size, DMA_BIDIRECTIONAL, clock);
  t.true(sameBytes(ram.subarray(c, c + size), ram.subarray(orig, orig + size)));
  fillNoise(ram.subarray(c, c + size), 3);
  tlb.swiotlb_tbl_unmap_single(asGpa(c), size, DMA_BIDIRECTIONAL, clock);
  t.true(sameBytes(ram.subarray(orig, orig + size), ram.subarray(c, c + size)));

  const d = tlb.swiotlb_tbl_map_single(asGpa(orig), size, size, DMA_BIDIRECTIONAL, clock, { skipCpuSync: true });
  t.false(sameBytes(ram.subarray(d, d + size), ram.subarray(orig, orig + size)), 'DMA_ATTR_SKIP_CPU_SYNC: no copy');
  const st = tlb.stats();
  t.is(st.bytesBouncedToDevice, 2 * size);
  t.is(st.bytesBouncedFromDevice, 2 * size);
  t.is(st.bytesBounced, 4 * size);
  t.is(st.maps, 4);
  t.is(st.unmaps, 3);
});

test('sync_single_for_cpu/device copy only the requested sub-range', (t) => {
  for (const minAlignMask of [0, 4095]) {
    const { tlb, ram, clock } = setup({ minAlignMask });
    fillNoise(ram, 4);
    const orig = 0x5000 + 200;
    const size = 20_000;
    const a = tlb.swiotlb_tbl_map_single(asGpa(orig), size, size, DMA_FROM_DEVICE, clock);
    fillNoise(ram.subarray(a, a + size), 5);
    const before = ram.slice();
    // a range that starts in the first slot (the kernel refuses later-slot starts below the align offset)
    t.is(tlb.swiotlb_sync_single_for_cpu(asGpa(a + 1000), 6000, DMA_FROM_DEVICE, clock), 6000);
    t.true(sameBytes(ram.subarray(orig + 1000, orig + 7000), ram.subarray(a + 1000, a + 7000)));
    t.true(sameBytes(ram.subarray(orig, orig + 1000), before.subarray(orig, orig + 1000)), 'before the range unchanged');
    t.true(sameBytes(ram.subarray(orig + 7000, orig + size), before.subarray(orig + 7000, orig + size)), 'after the range unchanged');
    t.is(tlb.swiotlb_sync_single_for_cpu(asGpa(a), size, DMA_TO_DEVICE, clock), 0);
    t.is(tlb.swiotlb_sync_single_for_device(asGpa(a), size, DMA_FROM_DEVICE, clock), 0);
    fillNoise(ram.subarray(orig, orig + size), 6);
    t.is(tlb.swiotlb_sync_single_for_device(asGpa(a + 100), 500, DMA_BIDIRECTIONAL, clock), 500);
    t.true(sameBytes(ram.subarray(a + 100, a + 600), ram.subarray(orig + 100, orig + 600)));
    t.false(sameBytes(ram.subarray(a + 600, a + 700), ram.subarray(orig + 600, orig + 700)));
    t.is(
      tlb.swiotlb_sync_single_for_cpu(asGpa(a + size - 10), 100, DMA_FROM_DEVICE, clock),
      10,
      'clamped at the end of the allocation (kernel: "Buffer overflow detected")',
    );
    t.is(tlb.stats().syncErrors, 1);
  }
});

test('min_align_mask (nvme-pci: 4 KiB − 1) keeps the low address bits; stride and alignment follow 5.15', (t) => {
  const { tlb, clock } = setup({ minAlignMask: 4095 });
  const orig = 0x7000 + 0x900;
  const a = tlb.swiotlb_tbl_map_single(asGpa(orig), 512, 512, DMA_FROM_DEVICE, clock);
  t.is(a % 4096, orig % 4096);
  t.is(slotOf(a), 1, 'the 2 KiB-aligned part of the offset picks an odd slot');
  const b = tlb.swiotlb_tbl_map_single(asGpa(0x8000), 4096, 4096, DMA_FROM_DEVICE, clock);
  t.is(slotOf(b), 4, 'a page or more: stride 4 slots from the hint (2), aligned');
  t.is(b % 4096, 0);
});

test('padding clean-up of iommu_dma_map_page: tail only after a copy in, all of it otherwise', (t) => {
  const { tlb, ram, clock } = setup();
  fillNoise(ram, 9);
  const a = tlb.swiotlb_tbl_map_single(asGpa(0x2000), 1000, 4096, DMA_TO_DEVICE, clock);
  t.is(tlb.clearPadding(asGpa(a), 1000, 4096, DMA_TO_DEVICE, clock), 3096);
  t.true(sameBytes(ram.subarray(a, a + 1000), ram.subarray(0x2000, 0x2000 + 1000)));
  t.true(ram.subarray(a + 1000, a + 4096).every((x) => x === 0));
  const b = tlb.swiotlb_tbl_map_single(asGpa(0x2000), 1000, 4096, DMA_FROM_DEVICE, clock);
  const before = clock.nowNs();
  t.is(tlb.clearPadding(asGpa(b), 1000, 4096, DMA_FROM_DEVICE, clock), 4096);
  t.is(clock.nowNs() - before, 4096 / COSTS.memsetBytesPerNs);
  t.true(ram.subarray(b, b + 4096).every((x) => x === 0));
  t.is(tlb.stats().bytesZeroed, 3096 + 4096);
});

test('the area lock is io_tlb_mem->lock, held for the search and the release only', (t) => {
  const { tlb, locks, clock } = setup();
  const a = tlb.swiotlb_tbl_map_single(asGpa(0x1000), 65536, 65536, DMA_TO_DEVICE, clock);
  tlb.swiotlb_tbl_unmap_single(asGpa(a), 65536, DMA_TO_DEVICE, clock);
  const s = LockTable.attach(locks, 0)
    .stats()
    .find((x) => x.name === SWIOTLB_LOCK)!;
  t.is(s.kind, 'spinlock');
  t.is(s.acquisitions, 2);
  t.is(s.holdtimeTotalNs, COSTS.swiotlbSlotSearchNs + COSTS.bouncePoolListOpNs, 'copies run outside the lock');
});

test('options are validated', (t) => {
  t.throws(() => Swiotlb.allocate({ areaGpa: AREA, sizeBytes: SEG + 2048 }), { instanceOf: InputError, message: /swiotlb\.sizeBytes/ });
  t.throws(() => Swiotlb.allocate({ areaGpa: AREA, minAlignMask: 1000 }), { instanceOf: InputError });
  t.throws(() => Swiotlb.allocate({ areaGpa: 100 }), { instanceOf: RangeError });
  const h = Swiotlb.allocate({ areaGpa: AREA });
  t.is(h.nslabs, 32768, 'default 64 MiB of 2 KiB slots');
  t.throws(() => Swiotlb.attach(h, 0, LockTable.allocate(Swiotlb.lockSpecs(h)), new Uint8Array(new SharedArrayBuffer(AREA + 4096)), COSTS), {
    instanceOf: RangeError,
  });
});
