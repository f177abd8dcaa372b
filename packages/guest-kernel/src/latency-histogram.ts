/**
 * A latency histogram of the fio job engine (clat, lat, slat): an
 * hdr-histogram-js `JsHistogram` (1 ns to one hour, 3 significant digits),
 * fed in bulk. Per I/O the engine only counts the value in the hdr bucket it
 * falls in, found with integer arithmetic (`hdrCountsIndex`); `flush()` adds
 * each bucket's count to the histogram with one `recordValueWithCount` of the
 * bucket's lowest value. The histogram's counts, and so its encoding, its
 * percentiles, min, max and mean, are the same as when every value is
 * recorded on its own: hdr-histogram-js encodes the counts up to the bucket
 * of its largest value, and a decoded histogram takes min and max from the
 * counts.
 */

import { build, encodeIntoCompressedBase64, type Histogram } from 'hdr-histogram-js';

/** hdr-histogram's sub-bucket layout at 3 significant digits: 2048 sub-buckets, 1024 per half. */
const SUB_BUCKET_HALF_COUNT_MAGNITUDE = 10;
const SUB_BUCKET_HALF_COUNT = 1 << SUB_BUCKET_HALF_COUNT_MAGNITUDE;
/** values from here on are recorded into the histogram directly (beyond int32 arithmetic) */
const FAST_LIMIT = 2 ** 31;
/** indices of values below FAST_LIMIT */
const FAST_INDICES = (31 - SUB_BUCKET_HALF_COUNT_MAGNITUDE + 1) * SUB_BUCKET_HALF_COUNT;
const PENDING_MAX = 0xffff_ffff;

/**
 * hdr-histogram's countsArrayIndex for lowestDiscernibleValue 1 and 3
 * significant digits, for 1 ≤ value < 2^31: bucket = max(msb − 10, 0),
 * sub-bucket = ⌊value / 2^bucket⌋, index = bucket·1024 + sub-bucket.
 */
export function hdrCountsIndex(value: number): number {
  const v = Math.floor(value);
  const msb = 31 - Math.clz32(v);
  const bucket = msb > SUB_BUCKET_HALF_COUNT_MAGNITUDE ? msb - SUB_BUCKET_HALF_COUNT_MAGNITUDE : 0;
  return bucket * SUB_BUCKET_HALF_COUNT + (v >>> bucket);
}

/** The lowest value of hdr-histogram's bucket `index` (its valueFromIndex for unit magnitude 0). */
export function hdrLowestValueAt(index: number): number {
  let bucket = (index >> SUB_BUCKET_HALF_COUNT_MAGNITUDE) - 1;
  let sub = (index & (SUB_BUCKET_HALF_COUNT - 1)) + SUB_BUCKET_HALF_COUNT;
  if (bucket < 0) {
    sub -= SUB_BUCKET_HALF_COUNT;
    bucket = 0;
  }
  return sub * 2 ** bucket;
}

export class LatencyHistogram {
  readonly hdr: Histogram = build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 3_600_000_000_000,
    numberOfSignificantValueDigits: 3,
    autoResize: true,
    useWebAssembly: false,
  });
  /** counts not yet added to `hdr`, by hdr index, how many in all (a flush comes before one could wrap), and the range of indices they span */
  private readonly pending = new Uint32Array(FAST_INDICES);
  private pendingTotal = 0;
  private lowIndex = FAST_INDICES;
  private highIndex = -1;

  /** One value, ns (values below 1 or from 2^31 on go to the histogram directly). */
  record(value: number): void {
    if (!(value >= 1 && value < FAST_LIMIT)) {
      this.hdr.recordValue(value);
      return;
    }
    if (this.pendingTotal === PENDING_MAX) this.flush();
    this.pendingTotal++;
    const i = hdrCountsIndex(value);
    this.pending[i]++;
    if (i < this.lowIndex) this.lowIndex = i;
    if (i > this.highIndex) this.highIndex = i;
  }

  /** Add the pending counts to the histogram. */
  flush(): void {
    const pending = this.pending;
    for (let i = this.lowIndex; i <= this.highIndex; i++) {
      const n = pending[i];
      if (n === 0) continue;
      this.hdr.recordValueWithCount(hdrLowestValueAt(i), n);
      pending[i] = 0;
    }
    this.lowIndex = FAST_INDICES;
    this.highIndex = -1;
    this.pendingTotal = 0;
  }

  /** The histogram as hdr-histogram's compressed base64 (what the reports decode). */
  encode(): string {
    this.flush();
    return encodeIntoCompressedBase64(this.hdr as never);
  }
}
