import { InputError, ModelClock } from '@vmstack/shm';
import test from 'ava';
import { IOTLB_FAULT_NOT_PRESENT, IOTLB_FAULT_READ, IOTLB_FAULT_WRITE, type IoPageWalker, Iotlb, isIotlbFault } from '../src/iotlb.js';

const PAGE = 4096;
const MISS_NS = 350;

/** A page table stand-in with the IoPgtable.walk shape; counts walks. */
class FakeWalker implements IoPageWalker {
  readonly pages = new Map<number, { hpa: number; prot: number }>();
  walks = 0;
  set(iova: number, hpa: number, prot: number): void {
    this.pages.set(iova / PAGE, { hpa, prot });
  }
  walk(iova: number) {
    this.walks++;
    const p = this.pages.get(Math.floor(iova / PAGE));
    return p ? { hpa: p.hpa + (iova % PAGE), prot: p.prot, levels: 4 } : null;
  }
}

function rig(entries = 64) {
  const walker = new FakeWalker();
  const tlb = new Iotlb(walker, { iotlbMissWalkNs: MISS_NS, iotlbEntriesCount: entries });
  const clock = new ModelClock('virtual');
  return { walker, tlb, clock };
}

test('a miss walks and charges iotlbMissWalkNs; a hit is free and does not walk', (t) => {
  const { walker, tlb, clock } = rig();
  walker.set(0x10000, 0x7000, 3);
  t.is(tlb.translate(0x10123, true, clock), 0x7123);
  t.is(clock.nowNs(), MISS_NS);
  t.is(walker.walks, 1);
  t.is(tlb.translate(0x10fff, false, clock), 0x7fff);
  t.is(tlb.translate(0x10000, true, clock), 0x7000);
  t.is(clock.nowNs(), MISS_NS);
  t.is(walker.walks, 1);
  t.deepEqual(tlb.stats(), { hits: 2, misses: 1, faults: 0, invalidations: 0, entries: 1 });
  t.deepEqual([tlb.hits, tlb.misses, tlb.faults, tlb.invalidations, tlb.size], [2, 1, 0, 0, 1]);
});

test('an unmapped IOVA faults (not present), is charged the walk and is not cached', (t) => {
  const { walker, tlb, clock } = rig();
  t.is(tlb.translate(0x5000, false, clock), IOTLB_FAULT_NOT_PRESENT);
  t.is(tlb.translate(0x5000, false, clock), IOTLB_FAULT_NOT_PRESENT);
  t.true(isIotlbFault(IOTLB_FAULT_NOT_PRESENT));
  t.is(walker.walks, 2);
  t.is(clock.nowNs(), 2 * MISS_NS);
  t.deepEqual(tlb.stats(), { hits: 0, misses: 2, faults: 2, invalidations: 0, entries: 0 });
  walker.set(0x5000, 0x9000, 1);
  t.is(tlb.translate(0x5000, false, clock), 0x9000, 'mapped later: the next access walks and succeeds');
});

test('permissions: a device write through a read-only page and a device read through a write-only page fault', (t) => {
  const { walker, tlb, clock } = rig();
  walker.set(0x1000, 0x11000, 1); // READ only: the device may read memory (an NVMe write's data)
  walker.set(0x2000, 0x12000, 2); // WRITE only: the device may write memory (an NVMe read's data)
  t.is(tlb.translate(0x1000, true, clock), IOTLB_FAULT_WRITE, 'miss path');
  t.is(tlb.translate(0x1000, true, clock), IOTLB_FAULT_WRITE, 'hit path');
  t.is(tlb.translate(0x1000, false, clock), 0x11000);
  t.is(tlb.translate(0x2000, false, clock), IOTLB_FAULT_READ);
  t.is(tlb.translate(0x2000, true, clock), 0x12000);
  t.false(isIotlbFault(0x12000));
  t.deepEqual(tlb.stats(), { hits: 3, misses: 2, faults: 3, invalidations: 0, entries: 2 });
});

test('LRU: a full IOTLB evicts the least recently used translation', (t) => {
  const { walker, tlb, clock } = rig(2);
  for (const p of [1, 2, 3]) walker.set(p * PAGE, p * 0x100000, 3);
  tlb.translate(1 * PAGE, false, clock); // miss: [1]
  tlb.translate(2 * PAGE, false, clock); // miss: [1 2]
  tlb.translate(1 * PAGE, false, clock); // hit:  [2 1]
  tlb.translate(3 * PAGE, false, clock); // miss, evicts 2: [1 3]
  t.is(walker.walks, 3);
  tlb.translate(1 * PAGE, false, clock);
  tlb.translate(3 * PAGE, false, clock);
  t.is(walker.walks, 3, '1 and 3 still cached');
  tlb.translate(2 * PAGE, false, clock);
  t.is(walker.walks, 4, '2 was evicted');
  t.is(tlb.size, 2);
});

test('invalidate drops exactly the pages the range touches; a stale entry translates until then', (t) => {
  const { walker, tlb, clock } = rig();
  for (let p = 0; p < 8; p++) walker.set(0x100000 + p * PAGE, 0x200000 + p * PAGE, 3);
  for (let p = 0; p < 8; p++) tlb.translate(0x100000 + p * PAGE, false, clock);
  walker.pages.clear(); // the host unmapped everything; the device has not been told yet
  t.is(tlb.translate(0x103000, true, clock), 0x203000, 'stale hit before the invalidation');
  tlb.invalidate(0x102800, 2 * PAGE); // touches pages 2, 3 and 4
  t.is(tlb.size, 5);
  t.is(tlb.translate(0x102000, false, clock), IOTLB_FAULT_NOT_PRESENT);
  t.is(tlb.translate(0x104000, false, clock), IOTLB_FAULT_NOT_PRESENT);
  t.is(tlb.translate(0x105000, false, clock), 0x205000);
  tlb.invalidate(0, 2 ** 47); // a range larger than the cache: scans the entries instead
  t.is(tlb.size, 0);
  t.is(tlb.invalidations, 2);
});

test('invalidate with size 0 and invalidateAll drop everything', (t) => {
  const { walker, tlb, clock } = rig();
  walker.set(0x1000, 0x1000, 3);
  walker.set(0x9000000, 0x2000, 3);
  tlb.translate(0x1000, false, clock);
  tlb.translate(0x9000000, false, clock);
  tlb.invalidate(0x5000, 0);
  t.is(tlb.size, 0);
  tlb.translate(0x1000, false, clock);
  tlb.invalidateAll();
  t.is(tlb.size, 0);
  t.is(tlb.invalidations, 2);
  t.throws(() => tlb.invalidate(-4096, PAGE), { instanceOf: RangeError });
});

test('bad costs are InputErrors naming the profile key', (t) => {
  const w = new FakeWalker();
  for (const [costs, field] of [
    [{ iotlbMissWalkNs: 10, iotlbEntriesCount: 0 }, 'profile.iotlbEntriesCount'],
    [{ iotlbMissWalkNs: 10, iotlbEntriesCount: 2.5 }, 'profile.iotlbEntriesCount'],
    [{ iotlbMissWalkNs: -1, iotlbEntriesCount: 64 }, 'profile.iotlbMissWalkNs'],
  ] as const) {
    const e = t.throws(() => new Iotlb(w, costs), { instanceOf: InputError });
    t.is(e?.field, field);
  }
});
