/**
 * The DMA map log of `vmstack attack`: a vCPU appends one entry each time
 * dma-iommu's map or unmap of an I/O buffer returns, and the NVMe device,
 * acting as an attacker, reads the entries to time its after-unmap accesses
 * (and to tell a stale mapping from the guest mapping the IOVA again). It is an
 * instrument of the attack experiment, not a modelled channel: nothing in the
 * modelled kernel or device depends on it, and it costs no model time.
 *
 * One log per vCPU (single producer, single consumer), a SharedArrayBuffer:
 *
 * | offset | size | field |
 * |--------|------|-------|
 * | 0      | 4    | count i32: entries written (Atomics; written after the entry) |
 * | 4      | 4    | dropped i32: entries not written, the log being full |
 * | 8      | 32·n | entry k at 8 + 32k: iova f64, lenBytes f64, atNs f64 (an unmap: model time the call returned; a map: the time the call began), kind f64 (0 unmap, 1 map) |
 *
 * A vCPU writes an entry as the call returns, before it publishes a clock or
 * EOT past its time, so a reader that has seen the vCPU's bound pass t finds
 * every unmap that returned at or before t. (A map that began before t and
 * has not returned yet may be missing; the vCPU's bound then lies before its
 * return.)
 */

const HEADER_BYTES = 8;
const ENTRY_BYTES = 32;
const F64_PER_ENTRY = ENTRY_BYTES / 8;

export type DmaTraceKind = 'map' | 'unmap';

export class DmaUnmapLog {
  private readonly words: Int32Array;
  private readonly f64: Float64Array;
  readonly capacity: number;
  /** the consumer's next entry */
  private readPos = 0;

  static allocate(capacityEntries: number): SharedArrayBuffer {
    if (!Number.isSafeInteger(capacityEntries) || capacityEntries < 1) throw new RangeError(`DmaUnmapLog: capacity ${capacityEntries} must be ≥ 1`);
    return new SharedArrayBuffer(HEADER_BYTES + ENTRY_BYTES * capacityEntries);
  }

  constructor(readonly sab: SharedArrayBuffer) {
    this.words = new Int32Array(sab, 0, 2);
    this.f64 = new Float64Array(sab, HEADER_BYTES);
    this.capacity = Math.floor((sab.byteLength - HEADER_BYTES) / ENTRY_BYTES);
  }

  /** Producer: the unmap of [iova, iova + lenBytes) returned at `atNs`, or its map began at `atNs`. */
  append(kind: DmaTraceKind, iova: number, lenBytes: number, atNs: number): void {
    const n = Atomics.load(this.words, 0);
    if (n >= this.capacity) {
      Atomics.add(this.words, 1, 1);
      return;
    }
    const e = F64_PER_ENTRY * n;
    this.f64[e] = iova;
    this.f64[e + 1] = lenBytes;
    this.f64[e + 2] = atNs;
    this.f64[e + 3] = kind === 'map' ? 1 : 0;
    Atomics.store(this.words, 0, n + 1);
  }

  /** Consumer: each entry written since the last call, in order. */
  drain(visit: (iova: number, lenBytes: number, atNs: number, kind: DmaTraceKind) => void): number {
    const n = Atomics.load(this.words, 0);
    const from = this.readPos;
    for (let k = from; k < n; k++) {
      const e = F64_PER_ENTRY * k;
      visit(this.f64[e], this.f64[e + 1], this.f64[e + 2], this.f64[e + 3] === 1 ? 'map' : 'unmap');
    }
    this.readPos = n;
    return n - from;
  }

  /** Entries the producer could not write (the log was full). */
  dropped(): number {
    return Atomics.load(this.words, 1);
  }
}
