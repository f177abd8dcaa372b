import { Worker } from 'node:worker_threads';
import { InputError, IOMMU_READ, IOMMU_WRITE } from '@vmstack/shm';
import test from 'ava';
import { HPA_LIMIT, IOVA_LIMIT, type IommuProt, IoPgtable, IoPgtableError } from '../src/io-pgtable.js';
import { ACKED, BATCH_PAGES, batchIova, expectedHpa, mulberry32, PUBLISHED, protOf, STOP } from './helpers/pgtable-protocol.js';
import { runWriter, WINDOW_IOVA, WINDOW_PAGES } from './helpers/pgtable-writer-loop.js';

const PAGE = 4096;
const MIB2 = 2 * 1024 * 1024;
const GIB = 2 ** 30;

function table(tablePages = 64): IoPgtable {
  return IoPgtable.attach(IoPgtable.allocate({ tablePages }));
}

test('allocate rejects a pool that is not a positive integer, naming the field', (t) => {
  for (const bad of [0, -1, 1.5, Number.NaN, 2 ** 21]) {
    const e = t.throws(() => IoPgtable.allocate({ tablePages: bad }), { instanceOf: InputError });
    t.is(e?.field, 'tablePages');
  }
});

test("attach checks the region; a second attach sees the first one's writes", (t) => {
  const h = IoPgtable.allocate({ tablePages: 8 });
  t.throws(() => IoPgtable.attach({ sab: new SharedArrayBuffer(4096), tablePages: 8 }), { instanceOf: RangeError });
  t.throws(() => IoPgtable.attach({ sab: h.sab, tablePages: 9 }), { instanceOf: RangeError });
  IoPgtable.attach(h).map(0x5000, 0x9000, PAGE, 3);
  t.deepEqual(IoPgtable.attach(h).walk(0x5abc), { hpa: 0x9abc, prot: 3, levels: 4, leafLevel: 1, pageSizeBytes: 4096 });
});

test('map/walk: each page translates with its offset and prot; neighbours are not present', (t) => {
  const pt = table();
  pt.map(0x10000, 0x200000, 3 * PAGE, IOMMU_READ as IommuProt);
  t.deepEqual(pt.walk(0x10000), { hpa: 0x200000, prot: 1, levels: 4, leafLevel: 1, pageSizeBytes: 4096 });
  t.deepEqual(pt.walk(0x11fff), { hpa: 0x201fff, prot: 1, levels: 4, leafLevel: 1, pageSizeBytes: 4096 });
  t.deepEqual(pt.walk(0x12008), { hpa: 0x202008, prot: 1, levels: 4, leafLevel: 1, pageSizeBytes: 4096 });
  t.is(pt.walk(0xf000), null);
  t.is(pt.walk(0x13000), null);
  t.is(pt.walk(-4096), null);
  t.is(pt.walk(IOVA_LIMIT), null);
  t.is(pt.mappedPages, 3);
  t.is(pt.tablePagesInUse, 4, 'root + one table per lower level');
  pt.map(0x20000, 0x300000, PAGE, IOMMU_WRITE as IommuProt);
  t.is(pt.walk(0x20000)?.prot, 2);
});

test('tables are taken per 2 MiB, 1 GiB and 512 GiB region the range touches', (t) => {
  const pt = table();
  pt.map(MIB2 - PAGE, 0, 2 * PAGE, 3); // crosses a 2 MiB boundary: root + L3 + L2 + 2 × L1
  t.is(pt.tablePagesInUse, 5);
  pt.map(GIB - PAGE, 0x100000, 2 * PAGE, 3); // crosses 1 GiB: the first L1 is new, then a new L2 + L1
  t.is(pt.tablePagesInUse, 8);
  pt.map(512 * GIB - PAGE, 0x200000, 2 * PAGE, 3); // crosses 512 GiB: new L2+L1 below, new L3+L2+L1 above
  t.is(pt.tablePagesInUse, 13);
  t.is(pt.walk(512 * GIB)?.hpa, 0x201000);
  pt.unmap(0, 1024 * GIB);
  t.is(pt.tablePagesInUse, 1, 'empty tables go back to the pool');
  t.is(pt.mappedPages, 0);
});

test('the top of the 48-bit IOVA space and of the 2 TiB HPA space map; past them throws', (t) => {
  const pt = table();
  pt.map(IOVA_LIMIT - PAGE, HPA_LIMIT - PAGE, PAGE, 3);
  t.deepEqual(pt.walk(IOVA_LIMIT - 1), { hpa: HPA_LIMIT - 1, prot: 3, levels: 4, leafLevel: 1, pageSizeBytes: 4096 });
  t.throws(() => pt.map(IOVA_LIMIT - PAGE, 0, 2 * PAGE, 3), { instanceOf: RangeError });
  t.throws(() => pt.map(0, HPA_LIMIT, PAGE, 3), { instanceOf: RangeError });
  t.throws(() => pt.map(0x800, 0, PAGE, 3), { instanceOf: RangeError });
  t.throws(() => pt.map(0, 0x800, PAGE, 3), { instanceOf: RangeError });
  t.throws(() => pt.map(0, 0, 100, 3), { instanceOf: RangeError });
  t.throws(() => pt.map(0, 0, PAGE, 0 as 1), { instanceOf: RangeError });
  t.throws(() => pt.unmap(0, 0), { instanceOf: RangeError });
});

test('map over a mapped page is EEXIST and writes nothing', (t) => {
  const pt = table();
  pt.map(0x5000, 0x1000, PAGE, 3);
  const e = t.throws(() => pt.map(0x3000, 0x7000, 4 * PAGE, 1), { instanceOf: IoPgtableError });
  t.is(e?.errno, 17);
  t.is(pt.walk(0x3000), null);
  t.is(pt.walk(0x4000), null);
  t.is(pt.walk(0x5000)?.hpa, 0x1000);
  t.is(pt.mappedPages, 1);
});

test('an exhausted table pool is ENOMEM, all or nothing, and freeing tables makes room', (t) => {
  const pt = table(4);
  pt.map(0, 0, PAGE, 3); // uses all 4 tables
  const e = t.throws(() => pt.map(MIB2 - PAGE, 0x1000, 2 * PAGE, 3), { instanceOf: IoPgtableError });
  t.is(e?.errno, 12);
  t.is(pt.walk(MIB2 - PAGE), null, 'the page inside the existing table was not written');
  t.is(pt.tablePagesInUse, 4);
  t.is(pt.unmap(0, PAGE), PAGE);
  t.is(pt.tablePagesInUse, 1);
  pt.map(5 * GIB, 0x3000, PAGE, 3);
  t.is(pt.walk(5 * GIB)?.hpa, 0x3000);
});

test('unmap returns only the bytes that were mapped, skipping holes', (t) => {
  const pt = table();
  pt.map(0x1000, 0x1000, 2 * PAGE, 3);
  pt.map(0x8000, 0x8000, PAGE, 3);
  pt.map(3 * MIB2, 0, PAGE, 3);
  t.is(pt.unmap(0, 4 * MIB2), 4 * PAGE);
  t.is(pt.unmap(0, 4 * MIB2), 0);
  t.is(pt.mappedPages, 0);
  t.is(pt.tablePagesInUse, 1);
});

test('random map/unmap agrees with a reference map (seeded)', (t) => {
  const rand = mulberry32(42);
  const pt = table(256);
  const ref = new Map<number, { hpa: number; prot: number }>();
  for (let step = 0; step < 3000; step++) {
    const pfn = (rand() % 4) * 262144 + (rand() % 2048); // four GiB regions, 8 MiB each
    const pages = 1 + (rand() % 8);
    if (rand() % 2 === 0) {
      const hpa = (rand() % 100000) * PAGE;
      const prot = ((rand() % 3) + 1) as 1 | 2 | 3;
      let free = true;
      for (let i = 0; i < pages; i++) if (ref.has(pfn + i)) free = false;
      try {
        pt.map(pfn * PAGE, hpa, pages * PAGE, prot);
        t.true(free);
        for (let i = 0; i < pages; i++) ref.set(pfn + i, { hpa: hpa + i * PAGE, prot });
      } catch (e) {
        t.false(free);
        t.is((e as IoPgtableError).errno, 17);
      }
    } else {
      let present = 0;
      for (let i = 0; i < pages; i++) if (ref.delete(pfn + i)) present++;
      t.is(pt.unmap(pfn * PAGE, pages * PAGE), present * PAGE);
    }
    t.is(pt.mappedPages, ref.size);
  }
  for (let r = 0; r < 4; r++) {
    for (let p = 0; p < 2056; p++) {
      const pfn = r * 262144 + p;
      const want = ref.get(pfn);
      const got = pt.walk(pfn * PAGE);
      if (want === undefined) t.is(got, null);
      else t.deepEqual(got, { hpa: want.hpa, prot: want.prot, levels: 4, leafLevel: 1, pageSizeBytes: 4096 });
    }
  }
});

test('two threads: the host maps and unmaps while a walker thread never sees a wrong translation', async (t) => {
  const handle = IoPgtable.allocate({ tablePages: 16 });
  const pt = IoPgtable.attach(handle);
  const ctrl = new SharedArrayBuffer(16);
  const c = new Int32Array(ctrl);
  const worker = new Worker(new URL('./helpers/pgtable-walker.js', import.meta.url), { workerData: { handle, ctrl, seed: 7 } });
  const result = new Promise<{ walks: number; hits: number; roundsVerified: number; errors: string[] }>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`walker exited with ${code} before reporting`)));
  });
  const waitAck = (round: number): void => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const a = Atomics.load(c, ACKED);
      if (a >= round) return;
      if (Date.now() > deadline) throw new Error(`walker did not acknowledge round ${round}`);
      Atomics.wait(c, ACKED, a, 100);
    }
  };
  const ROUNDS = 200;
  try {
    for (let r = 1; r <= ROUNDS; r++) {
      for (let i = 0; i < BATCH_PAGES; i++) {
        const iova = batchIova(r) + i * PAGE;
        pt.map(iova, expectedHpa(iova), PAGE, protOf(r));
      }
      Atomics.store(c, PUBLISHED, r);
      if (r > 1) {
        waitAck(r - 1);
        t.is(pt.unmap(batchIova(r - 1), BATCH_PAGES * PAGE), BATCH_PAGES * PAGE);
      }
    }
    waitAck(ROUNDS);
    pt.unmap(batchIova(ROUNDS), BATCH_PAGES * PAGE);
  } finally {
    Atomics.store(c, STOP, 1);
  }
  const r = await result;
  t.deepEqual(r.errors, []);
  t.true(r.roundsVerified >= 1 && r.hits > 0, JSON.stringify(r));
  t.is(pt.mappedPages, 0);
  t.is(pt.tablePagesInUse, 1);
  t.log(`walker: ${r.walks} walks, ${r.hits} hits, ${r.roundsVerified} rounds verified`);
});

test('two writer threads (CPUs of a bare-metal kernel) map and unmap interleaved pages that share tables: every write lands, the pool comes back whole', async (t) => {
  const handle = IoPgtable.allocate({ tablePages: 16 });
  const pt = IoPgtable.attach(handle);
  const ROUNDS = 4000;
  const start = new SharedArrayBuffer(8);
  const s = new Int32Array(start);
  const worker = new Worker(new URL('./helpers/pgtable-writer.js', import.meta.url), { workerData: { handle, cpu: 1, rounds: ROUNDS, start } });
  const other = new Promise<{ errors: string[]; maps: number }>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`writer exited with ${code} before reporting`)));
  });
  while (Atomics.load(s, 0) === 0) Atomics.wait(s, 0, 0, 10);
  Atomics.store(s, 1, 1);
  Atomics.notify(s, 1);
  const mine = runWriter(pt, 0, ROUNDS);
  const theirs = await other;
  t.deepEqual(mine.errors, []);
  t.deepEqual(theirs.errors, []);
  t.is(mine.maps + theirs.maps, ROUNDS * WINDOW_PAGES);
  t.is(pt.mappedPages, 0);
  t.is(pt.tablePagesInUse, 1, 'every table the writers took went back to the pool');
  pt.map(WINDOW_IOVA, 0, PAGE, 3);
  t.is(pt.walk(WINDOW_IOVA)?.hpa, 0, 'the writer word was left free');
});
