/**
 * A journal of a page table's changes in model time, for `vmstack attack`:
 * every `IoPgtable.map` and `unmap` of a table that has one (its handle's
 * `journal`) appends the range, what it maps to and the writer's model time.
 * The attacking device reads it to walk the table as it stood at the model
 * time of its own access, rather than as the host, running ahead in real
 * time, has left it since. An instrument: no model cost, nothing reads it in
 * other runs.
 *
 * Layout (SharedArrayBuffer): count i32 @0 (entries written; stored after the
 * entry), dropped i32 @4, then entry k at 8 + 40k: iova f64, sizeBytes f64,
 * hpa f64 (-1: an unmap), prot f64, atNs f64. Appended under the table's
 * writer word, so entries of one table never interleave.
 */

const HEADER_BYTES = 8;
const F64_PER_ENTRY = 5;

export class PgtableJournal {
  private readonly words: Int32Array;
  private readonly f64: Float64Array;
  readonly capacity: number;
  private readPos = 0;

  static allocate(capacityEntries: number): SharedArrayBuffer {
    if (!Number.isSafeInteger(capacityEntries) || capacityEntries < 1) throw new RangeError(`PgtableJournal: capacity ${capacityEntries} must be ≥ 1`);
    return new SharedArrayBuffer(HEADER_BYTES + 8 * F64_PER_ENTRY * capacityEntries);
  }

  constructor(sab: SharedArrayBuffer) {
    this.words = new Int32Array(sab, 0, 2);
    this.f64 = new Float64Array(sab, HEADER_BYTES);
    this.capacity = Math.floor(this.f64.length / F64_PER_ENTRY);
  }

  /** Writer (holding the table's writer word): [iova, iova + sizeBytes) now maps to hpa (-1: unmapped) at model time atNs. */
  record(iova: number, sizeBytes: number, hpa: number, prot: number, atNs: number): void {
    const n = Atomics.load(this.words, 0);
    if (n >= this.capacity) {
      Atomics.add(this.words, 1, 1);
      return;
    }
    const e = F64_PER_ENTRY * n;
    this.f64[e] = iova;
    this.f64[e + 1] = sizeBytes;
    this.f64[e + 2] = hpa;
    this.f64[e + 3] = prot;
    this.f64[e + 4] = atNs;
    Atomics.store(this.words, 0, n + 1);
  }

  /** Reader: each entry written since the last call, in order. */
  drain(visit: (iova: number, sizeBytes: number, hpa: number, prot: number, atNs: number) => void): number {
    const n = Atomics.load(this.words, 0);
    const from = this.readPos;
    for (let k = from; k < n; k++) {
      const e = F64_PER_ENTRY * k;
      visit(this.f64[e], this.f64[e + 1], this.f64[e + 2], this.f64[e + 3], this.f64[e + 4]);
    }
    this.readPos = n;
    return n - from;
  }

  dropped(): number {
    return Atomics.load(this.words, 1);
  }
}
