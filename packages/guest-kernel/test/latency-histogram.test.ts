import test from 'ava';
import { build, encodeIntoCompressedBase64, type JsHistogram } from 'hdr-histogram-js';
import { plat_val_to_idx } from '../src/fio-stat.js';
import { hdrCountsIndex, hdrLowestValueAt, LatencyHistogram } from '../src/latency-histogram.js';

function hdr(): JsHistogram {
  return build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 3_600_000_000_000,
    numberOfSignificantValueDigits: 3,
    autoResize: true,
    useWebAssembly: false,
  }) as unknown as JsHistogram;
}

/** values around every power of two, fractions of them, and a spread in between */
function sampleValues(): number[] {
  const values: number[] = [1, 1.5, 2, 63.9, 64, 127, 127.99, 128, 2047.5, 2048, 2049];
  for (let k = 0; k < 31; k++) {
    const p = 2 ** k;
    values.push(p, p - 1, p + 1, p - 0.25, p + 0.75, p * 1.5, p * 1.999);
  }
  let x = 12345;
  for (let i = 0; i < 20000; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    values.push(1 + (x % 2 ** (1 + (i % 31))) + (i % 3) * 0.5);
  }
  return values.filter((v) => v >= 1 && v < 2 ** 31);
}

test('hdrCountsIndex is hdr-histogram countsArrayIndex, and hdrLowestValueAt lies in the same bucket', (t) => {
  const h = hdr();
  for (const v of sampleValues()) {
    const i = hdrCountsIndex(v);
    if (i !== h.countsArrayIndex(v)) t.fail(`value ${v}: index ${i}, hdr ${h.countsArrayIndex(v)}`);
    if (hdrLowestValueAt(i) !== h.valueFromIndex(i)) t.fail(`index ${i}: lowest ${hdrLowestValueAt(i)}, hdr ${h.valueFromIndex(i)}`);
  }
  t.pass();
});

test('a LatencyHistogram encodes as the same values recorded one by one', (t) => {
  const values = sampleValues();
  values.push(0.5, 2 ** 31, 5e9, 4e12);
  const one = hdr();
  const bulk = new LatencyHistogram();
  for (const v of values) {
    one.recordValue(v);
    bulk.record(v);
  }
  t.is(bulk.encode(), encodeIntoCompressedBase64(one));
  // recorded after a flush, too
  for (const v of values.slice(0, 100)) {
    one.recordValue(v);
    bulk.record(v);
  }
  t.is(bulk.encode(), encodeIntoCompressedBase64(one));
});

/** fio's plat_val_to_idx as fio writes it, with floating-point log2 */
function platReference(val: number): number {
  const v = Math.max(0, Math.floor(val));
  const msb = v === 0 ? 0 : Math.floor(Math.log2(v));
  const m = v > 0 && 2 ** msb > v ? msb - 1 : msb;
  if (m <= 6) return v;
  const errorBits = m - 6;
  return Math.min(((errorBits + 1) << 6) + (63 & Math.floor(v / 2 ** errorBits)), 29 * 64 - 1);
}

test('plat_val_to_idx: the integer path gives fio buckets', (t) => {
  for (const v of [0, 0.5, ...sampleValues(), 2 ** 31, 2 ** 40 + 3, 1e15]) {
    if (plat_val_to_idx(v) !== platReference(v)) t.fail(`value ${v}: ${plat_val_to_idx(v)}, expected ${platReference(v)}`);
  }
  t.pass();
});
