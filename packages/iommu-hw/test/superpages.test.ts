/**
 * Superpage leaves in the host page table and the IOTLB: 2 MiB and 1 GiB
 * leaves where the caller allows them and IOVA, HPA and length are aligned;
 * the walk reports the leaf level; an unmap clears a superpage whole and
 * never splits it; the IOTLB caches a superpage as one entry.
 */

import { ModelClock } from '@vmstack/shm';
import test from 'ava';
import { IoPgtable, IoPgtableError, SUPERPAGE_1G_BYTES, SUPERPAGE_2M_BYTES } from '../src/io-pgtable.js';
import { Iotlb } from '../src/iotlb.js';

const PAGE = 4096;
const M2 = SUPERPAGE_2M_BYTES;
const G1 = SUPERPAGE_1G_BYTES;

function table(tablePages = 64): IoPgtable {
  return IoPgtable.attach(IoPgtable.allocate({ tablePages }));
}

interface Row {
  iova: number;
  hpa: number;
  sizeBytes: number;
  maxLeafBytes: number;
  /** leaf entries map() writes */
  leaves: number;
  /** tables in use afterwards, root included */
  tables: number;
  /** [iova probe, expected leaf level] */
  probes: [number, number][];
}

const rows: [string, Row][] = [
  [
    '2 MiB aligned on both sides, 2 MiB allowed: one level-2 leaf',
    {
      iova: 4 * M2,
      hpa: 8 * M2,
      sizeBytes: M2,
      maxLeafBytes: M2,
      leaves: 1,
      tables: 3,
      probes: [
        [4 * M2, 2],
        [5 * M2 - 1, 2],
      ],
    },
  ],
  [
    'the same range with 4 KiB leaves only (the default): 512 level-1 leaves',
    { iova: 4 * M2, hpa: 8 * M2, sizeBytes: M2, maxLeafBytes: PAGE, leaves: 512, tables: 4, probes: [[4 * M2, 1]] },
  ],
  [
    'HPA off the 2 MiB boundary: 4 KiB leaves although the IOVA is aligned',
    { iova: 4 * M2, hpa: 8 * M2 + PAGE, sizeBytes: M2, maxLeafBytes: M2, leaves: 512, tables: 4, probes: [[4 * M2, 1]] },
  ],
  [
    'IOVA off the 2 MiB boundary: 4 KiB leaves',
    { iova: 4 * M2 + PAGE, hpa: 8 * M2 + PAGE, sizeBytes: M2, maxLeafBytes: M2, leaves: 512, tables: 5, probes: [[4 * M2 + PAGE, 1]] },
  ],
  [
    '2 MiB + 8 KiB: one superpage, then two 4 KiB leaves',
    {
      iova: 4 * M2,
      hpa: 8 * M2,
      sizeBytes: M2 + 2 * PAGE,
      maxLeafBytes: M2,
      leaves: 3,
      tables: 4,
      probes: [
        [4 * M2, 2],
        [5 * M2, 1],
        [5 * M2 + PAGE, 1],
      ],
    },
  ],
  [
    '4 KiB head, then a 2 MiB leaf: a superpage starts on its boundary',
    {
      iova: 4 * M2 - PAGE,
      hpa: 8 * M2 - PAGE,
      sizeBytes: M2 + PAGE,
      maxLeafBytes: M2,
      leaves: 2,
      tables: 4,
      probes: [
        [4 * M2 - PAGE, 1],
        [4 * M2, 2],
      ],
    },
  ],
  [
    '1 GiB aligned, 1 GiB allowed: one level-3 leaf',
    { iova: G1, hpa: 2 * G1, sizeBytes: G1, maxLeafBytes: G1, leaves: 1, tables: 2, probes: [[G1 + 12345, 3]] },
  ],
  ['1 GiB aligned, 2 MiB allowed: 512 level-2 leaves', { iova: G1, hpa: 2 * G1, sizeBytes: G1, maxLeafBytes: M2, leaves: 512, tables: 3, probes: [[G1, 2]] }],
  [
    '1 GiB + 2 MiB, 1 GiB allowed: one level-3 and one level-2 leaf',
    {
      iova: G1,
      hpa: 2 * G1,
      sizeBytes: G1 + M2,
      maxLeafBytes: G1,
      leaves: 2,
      tables: 3,
      probes: [
        [G1, 3],
        [2 * G1, 2],
      ],
    },
  ],
];

for (const [name, r] of rows) {
  test(`map/walk: ${name}`, (t) => {
    const pt = table();
    t.is(pt.map(r.iova, r.hpa, r.sizeBytes, 3, r.maxLeafBytes), r.leaves, 'leaf entries written');
    t.is(pt.leafEntries, r.leaves);
    t.is(pt.mappedPages, r.sizeBytes / PAGE, 'mapped pages count 4 KiB pages whatever the leaf');
    t.is(pt.tablePagesInUse, r.tables);
    for (const [iova, level] of r.probes) {
      const w = pt.walk(iova);
      t.is(w?.hpa, r.hpa + (iova - r.iova), `hpa of 0x${iova.toString(16)}`);
      t.is(w?.leafLevel, level, `leaf level of 0x${iova.toString(16)}`);
      t.is(w?.pageSizeBytes, [0, PAGE, M2, G1][level]);
      t.is(w?.levels, 5 - level, 'levels read: one fewer per superpage level');
    }
    t.is(pt.walk(r.iova - 1)?.hpa ?? null, null);
    t.is(pt.walk(r.iova + r.sizeBytes), null);
    t.is(pt.unmap(r.iova, r.sizeBytes), r.sizeBytes);
    t.deepEqual([pt.mappedPages, pt.leafEntries, pt.tablePagesInUse], [0, 0, 1], 'all gone, tables back in the pool');
  });
}

test('map over a superpage is EEXIST, and a superpage over a mapped 4 KiB page is EEXIST; nothing is written', (t) => {
  const pt = table();
  pt.map(4 * M2, 0, M2, 3, M2);
  const e1 = t.throws(() => pt.map(4 * M2 + 5 * PAGE, 0x100000, PAGE, 3), { instanceOf: IoPgtableError });
  t.is(e1?.errno, 17);
  pt.map(8 * M2 + 7 * PAGE, 0, PAGE, 3);
  const e2 = t.throws(() => pt.map(8 * M2, 0, M2, 3, M2), { instanceOf: IoPgtableError });
  t.is(e2?.errno, 17);
  t.is(pt.walk(8 * M2), null, 'the refused superpage left nothing');
  t.is(pt.leafEntries, 2);
});

test('a superpage needs fewer tables: a pool of 3 maps 2 MiB as one leaf, not as 512 4 KiB leaves', (t) => {
  const small = table(3);
  const e = t.throws(() => small.map(0, 0, M2, 3), { instanceOf: IoPgtableError });
  t.is(e?.errno, 12, 'root + L3 + L2 + L1 do not fit in 3');
  t.is(small.map(0, 0, M2, 3, M2), 1);
  t.is(small.tablePagesInUse, 3);
});

test('unmap never splits a superpage: a range inside one clears the whole leaf and says so', (t) => {
  const pt = table();
  pt.map(4 * M2, 8 * M2, 2 * M2, 3, M2);
  const r = pt.unmapEntries(4 * M2 + 16 * PAGE, PAGE);
  t.deepEqual(r, { sizeBytes: M2, leafEntries: 1 }, 'the 2 MiB leaf went whole (intel_iommu_unmap rounds up to the large page)');
  t.is(pt.walk(4 * M2), null);
  t.is(pt.walk(5 * M2)?.leafLevel, 2, 'the neighbouring superpage is untouched');
  t.is(pt.mappedPages, 512);
  t.deepEqual(pt.unmapEntries(5 * M2, M2), { sizeBytes: M2, leafEntries: 1 });
  t.deepEqual(pt.unmapEntries(5 * M2, M2), { sizeBytes: 0, leafEntries: 0 }, 'unmapping nothing clears nothing');
});

test('walker on another attach sees superpages (the device side of the shared table)', (t) => {
  const h = IoPgtable.allocate({ tablePages: 8 });
  IoPgtable.attach(h).map(G1, 0, G1, 1, G1);
  t.deepEqual(IoPgtable.attach(h).walk(G1 + M2 + 5), { hpa: M2 + 5, prot: 1, levels: 2, leafLevel: 3, pageSizeBytes: G1 });
});

test('map rejects a largest leaf that is not 4 KiB, 2 MiB or 1 GiB', (t) => {
  t.throws(() => table().map(0, 0, M2, 3, 64 * 1024), { instanceOf: RangeError });
});

function tlbRig(leaf: number, entries = 4) {
  const pt = table();
  const tlb = new Iotlb(pt, { iotlbMissWalkNs: 100, iotlbEntriesCount: entries });
  return { pt, tlb, clock: new ModelClock('virtual'), leaf };
}

test('IOTLB: a 2 MiB superpage is one entry; every 4 KiB page in it hits after the first miss', (t) => {
  const { pt, tlb, clock } = tlbRig(M2);
  pt.map(4 * M2, 8 * M2, M2, 3, M2);
  for (let p = 0; p < 512; p++) t.is(tlb.translate(4 * M2 + p * PAGE + 7, p % 2 === 0, clock), 8 * M2 + p * PAGE + 7);
  t.deepEqual(tlb.stats(), { hits: 511, misses: 1, faults: 0, invalidations: 0, entries: 1 });
});

test('IOTLB: the same 2 MiB in 4 KiB leaves misses once per page and evicts (4 entries)', (t) => {
  const { pt, tlb, clock } = tlbRig(PAGE);
  pt.map(4 * M2, 8 * M2, M2, 3);
  for (let p = 0; p < 512; p++) tlb.translate(4 * M2 + p * PAGE, false, clock);
  t.deepEqual(tlb.stats(), { hits: 0, misses: 512, faults: 0, invalidations: 0, entries: 4 });
});

test('IOTLB: a 1 GiB superpage is one entry; 4 KiB and superpage entries live side by side', (t) => {
  const { pt, tlb, clock } = tlbRig(G1);
  pt.map(G1, 0, G1, 3, G1);
  pt.map(0x1000, 0x5000, PAGE, 1);
  t.is(tlb.translate(G1 + 300 * M2 + 9, true, clock), 300 * M2 + 9);
  t.is(tlb.translate(0x1008, false, clock), 0x5008);
  t.is(tlb.translate(G1 + 3, false, clock), 3);
  t.is(tlb.translate(0x1010, false, clock), 0x5010);
  t.deepEqual(tlb.stats(), { hits: 2, misses: 2, faults: 0, invalidations: 0, entries: 2 });
});

test('IOTLB: invalidating any page of a cached superpage drops the whole entry; a range elsewhere keeps it', (t) => {
  const { pt, tlb, clock } = tlbRig(M2);
  pt.map(4 * M2, 8 * M2, 2 * M2, 3, M2);
  tlb.translate(4 * M2, false, clock);
  tlb.translate(5 * M2, false, clock);
  t.is(tlb.size, 2);
  tlb.invalidate(6 * M2, PAGE);
  t.is(tlb.size, 2, 'a range past both superpages drops nothing');
  tlb.invalidate(5 * M2 + 100 * PAGE, PAGE);
  t.is(tlb.size, 1, 'one page of the second superpage drops that whole entry');
  pt.unmap(4 * M2, 2 * M2);
  t.is(tlb.translate(4 * M2 + PAGE, false, clock), 8 * M2 + PAGE, 'the first is still cached: stale until invalidated, as in hardware');
  tlb.invalidate(4 * M2, 2 * M2);
  t.is(tlb.size, 0);
  t.true(tlb.translate(4 * M2, false, clock) < 0, 'after the invalidation the walk finds nothing');
});

test('IOTLB: a permission fault on a superpage entry counts a hit and a fault', (t) => {
  const { pt, tlb, clock } = tlbRig(M2);
  pt.map(0, 0, M2, 1, M2);
  t.is(tlb.translate(PAGE, false, clock), PAGE);
  t.true(tlb.translate(2 * PAGE, true, clock) < 0);
  t.deepEqual(tlb.stats(), { hits: 1, misses: 1, faults: 1, invalidations: 0, entries: 1 });
});
