import test from 'ava';
import { addCount, addSmallPeak, counterWords } from '../src/iommu/bounce-pool/region.js';

test('addCount carries into the high half: the i64 reads the exact sum past 2^32', (t) => {
  const counters = new BigInt64Array(new SharedArrayBuffer(4 * 8));
  const words = counterWords(counters);
  let want = 0n;
  for (const n of [0xffff_fff0, 0x20, 4096, 0xffff_ffff, 1, 7]) {
    addCount(words, 2, n);
    want += BigInt(n);
  }
  t.is(counters[2], want);
  t.is(counters[1], 0n);
  t.is(counters[3], 0n);
});

test('addSmallPeak moves a small counter and its peak in their low halves', (t) => {
  const counters = new BigInt64Array(new SharedArrayBuffer(4 * 8));
  const words = counterWords(counters);
  t.is(addSmallPeak(words, 0, 1, 1), 1);
  t.is(addSmallPeak(words, 0, 1, 1), 2);
  t.is(addSmallPeak(words, 0, -1, -1), 1);
  t.is(addSmallPeak(words, 0, 1, 1), 2);
  t.is(addSmallPeak(words, 0, 1, 1), 3);
  t.is(counters[0], 3n);
  t.is(counters[1], 3n, 'the peak');
  addSmallPeak(words, 0, -1, -3);
  t.is(counters[0], 0n);
  t.is(counters[1], 3n);
});
