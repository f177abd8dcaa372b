import test from 'ava';
import { IoPgtable } from '../src/io-pgtable.js';
import { PgtableJournal } from '../src/pgtable-journal.js';

const PAGE = 4096;

test('a table with a journal records every map and unmap with the writer time, in order; one without records nothing', (t) => {
  const journal = PgtableJournal.allocate(8);
  const h = { ...IoPgtable.allocate({ tablePages: 16 }), journal };
  const table = IoPgtable.attach(h);
  table.map(0x10000, 0x40000, 2 * PAGE, 3, PAGE, 100);
  table.unmap(0x10000, PAGE, 250);
  table.map(0x20000, 0x80000, PAGE, 1);
  const seen: number[][] = [];
  const reader = new PgtableJournal(journal);
  t.is(
    reader.drain((...e) => seen.push(e)),
    3,
  );
  t.deepEqual(seen, [
    [0x10000, 2 * PAGE, 0x40000, 3, 100],
    [0x10000, PAGE, -1, 0, 250],
    [0x20000, PAGE, 0x80000, 1, 0],
  ]);
  t.is(
    reader.drain(() => t.fail('drained twice')),
    0,
  );
  const plain = IoPgtable.attach(IoPgtable.allocate({ tablePages: 16 }));
  plain.map(0x10000, 0x40000, PAGE, 3, PAGE, 5);
  t.is(plain.unmap(0x10000, PAGE, 6), PAGE);
});

test('a full journal counts what it drops', (t) => {
  const journal = PgtableJournal.allocate(2);
  const j = new PgtableJournal(journal);
  for (let i = 0; i < 5; i++) j.record(i * PAGE, PAGE, i * PAGE, 3, i);
  t.is(j.dropped(), 3);
  t.is(
    new PgtableJournal(journal).drain(() => {}),
    2,
  );
});
