/** Latency histograms for the report tests. */

import { createLatencyHistogram, type Histogram } from '../../src/report/result.js';

/** A latency histogram holding `count` samples of each `valueNs`. */
export function hist(...entries: Array<[valueNs: number, count: number]>): Histogram {
  const h = createLatencyHistogram();
  for (const [v, c] of entries) h.recordValueWithCount(v, c);
  return h;
}

/** One sample of every value from `from` to `to` (ns), as `hist` entries. */
export function range(from: number, to: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let v = from; v <= to; v++) out.push([v, 1]);
  return out;
}
