/**
 * Single-producer / single-consumer ring of fixed-size records in a
 * SharedArrayBuffer, after ringbuf.js: `Ring.allocate` creates it, the
 * constructor (`Ring.attach`) joins it; each index has exactly one writer.
 * Several producers may share a ring only by taking turns under a lock they
 * all hold while producing (each calls `claimProducer` after taking it): one
 * writer of the tail at a time, as the kernel's invalidation queue has under
 * `qi->q_lock`.
 *
 * Layout (bytes):
 * | offset | size | field        | writer |
 * |--------|------|--------------|--------|
 * | 0      | 4    | tail (records published, free-running) | producer |
 * | 64     | 4    | head (records released, free-running)  | consumer |
 * | 128    | 8    | dataEvent (EventCount: consumer waits for records) | notify: producer |
 * | 192    | 8    | spaceEvent (EventCount: producer waits for space)  | notify: consumer |
 * | 256    | 4    | capacity (records, power of two) | allocate |
 * | 260    | 4    | recordBytes                      | allocate |
 * | 320    | G    | front guard (canary bytes, G = guardBytes) | allocate |
 * | 320+G  | capacity*recordBytes | records | producer writes, consumer reads |
 * | …      | G    | back guard                                  | allocate |
 *
 * Records are 64 bytes (one cache line) by default. A record starts with the
 * common message header (see `RECORD`): type, request id, model timestamp.
 * The consumer may be told to notify an outside EventCount instead of the
 * ring's own (a worker with several inputs waits on one event).
 */

import { type AbortFlag, EventCount, RunAborted, threadWaitStats } from './event.js';
import { allocateShared } from './shared-pool.js';

const TAIL = 0; // i32 index
const HEAD = 16; // i32 index (byte 64)
const DATA_EVENT = 32; // i32 index (byte 128)
const SPACE_EVENT = 48; // i32 index (byte 192)
const CAPACITY = 64; // i32 index (byte 256)
const RECORD_BYTES = 65; // i32 index (byte 260)
const HEADER_BYTES = 320;
export const CANARY_BYTE = 0xa5;

/** Byte offsets of the common record header. */
export const RECORD = {
  typeOffset: 0, // i32: message type, named by direction
  requestIdOffset: 4, // i32: request id; a reply carries its request's id
  timestampOffset: 8, // f64: model time (ns) at which the sender sent it
  payloadOffset: 16, // 48 bytes of payload in a 64-byte record
} as const;

export const DEFAULT_RECORD_BYTES = 64;

/** Write the common header of the record at byte `off` (the wire modules' encoders start with it). */
export function encodeRecordHeader(dv: DataView, off: number, type: number, requestId: number, timestampNs: number): void {
  dv.setInt32(off + RECORD.typeOffset, type, true);
  dv.setInt32(off + RECORD.requestIdOffset, requestId, true);
  dv.setFloat64(off + RECORD.timestampOffset, timestampNs, true);
}

export interface RingOptions {
  capacityRecords: number;
  recordBytes?: number;
  guardBytes?: number;
}

/** What crosses postMessage to let another thread attach. */
export interface RingHandle {
  readonly sab: SharedArrayBuffer;
  /** when set, the producer notifies this event (shared by the consumer's worker) instead of the ring's own */
  readonly consumerEvent?: { sab: SharedArrayBuffer; index: number };
}

export class Ring {
  readonly i32: Int32Array;
  readonly u8: Uint8Array;
  readonly dv: DataView;
  readonly f64: Float64Array;
  readonly capacity: number;
  readonly recordBytes: number;
  readonly dataBaseBytes: number;
  readonly guardBytes: number;
  private readonly mask: number;
  /** the consumer's wake-up event (the ring's own, or its worker's) */
  readonly dataEvent: EventCount;
  readonly spaceEvent: EventCount;
  // producer-local
  private reservedTail: number;
  /** last value of head the producer read: space is known free up to it without touching the consumer's cache line */
  private cachedHead: number;
  // consumer-local
  private localHead: number;

  static allocate(opts: RingOptions, consumerEvent?: { sab: SharedArrayBuffer; index: number }): RingHandle {
    const recordBytes = opts.recordBytes ?? DEFAULT_RECORD_BYTES;
    const capacity = opts.capacityRecords;
    if (!Number.isInteger(capacity) || capacity < 2 || (capacity & (capacity - 1)) !== 0)
      throw new RangeError(`ring capacity ${capacity} must be a power of two ≥ 2`);
    if (recordBytes < 16 || recordBytes % 8 !== 0) throw new RangeError(`ring recordBytes ${recordBytes} must be a multiple of 8 and ≥ 16`);
    const guard = opts.guardBytes ?? 0;
    if (guard % 8 !== 0) throw new RangeError(`ring guardBytes ${guard} must be a multiple of 8`);
    const sab = allocateShared(HEADER_BYTES + 2 * guard + capacity * recordBytes);
    const i32 = new Int32Array(sab, 0, HEADER_BYTES / 4);
    i32[CAPACITY] = capacity;
    i32[RECORD_BYTES] = recordBytes;
    const u8 = new Uint8Array(sab);
    u8.fill(CANARY_BYTE, HEADER_BYTES, HEADER_BYTES + guard);
    u8.fill(CANARY_BYTE, HEADER_BYTES + guard + capacity * recordBytes);
    return consumerEvent ? { sab, consumerEvent } : { sab };
  }

  static attach(handle: RingHandle): Ring {
    return new Ring(handle);
  }

  private constructor(handle: RingHandle) {
    const sab = handle.sab;
    this.i32 = new Int32Array(sab, 0, HEADER_BYTES / 4);
    this.capacity = this.i32[CAPACITY];
    this.recordBytes = this.i32[RECORD_BYTES];
    const dataBytes = this.capacity * this.recordBytes;
    this.guardBytes = (sab.byteLength - HEADER_BYTES - dataBytes) / 2;
    if (!(this.capacity > 0) || !Number.isInteger(this.guardBytes) || this.guardBytes < 0) throw new RangeError('not a ring buffer');
    this.mask = this.capacity - 1;
    this.dataBaseBytes = HEADER_BYTES + this.guardBytes;
    this.u8 = new Uint8Array(sab);
    this.dv = new DataView(sab);
    this.f64 = new Float64Array(sab, 0, Math.floor(sab.byteLength / 8));
    this.dataEvent = handle.consumerEvent
      ? new EventCount(new Int32Array(handle.consumerEvent.sab), handle.consumerEvent.index)
      : new EventCount(this.i32, DATA_EVENT);
    this.spaceEvent = new EventCount(this.i32, SPACE_EVENT);
    this.reservedTail = Atomics.load(this.i32, TAIL);
    this.localHead = Atomics.load(this.i32, HEAD);
    this.cachedHead = this.localHead;
  }

  // ---- producer side -------------------------------------------------

  /** Records the producer may still reserve. */
  freeRecords(): number {
    this.cachedHead = Atomics.load(this.i32, HEAD);
    return this.capacity - ((this.reservedTail - this.cachedHead) | 0);
  }

  /**
   * Reserve the next record; returns its byte offset in `u8`/`dv`, or -1 if
   * the ring is full. Nothing is visible to the consumer before `publish`.
   */
  tryReserve(): number {
    // head is re-read only when the cached copy says full (one shared load per ring-full, not per record)
    if (((this.reservedTail - this.cachedHead) | 0) >= this.capacity) {
      this.cachedHead = Atomics.load(this.i32, HEAD);
      if (((this.reservedTail - this.cachedHead) | 0) >= this.capacity) return -1;
    }
    const off = this.dataBaseBytes + (this.reservedTail & this.mask) * this.recordBytes;
    this.reservedTail = (this.reservedTail + 1) | 0;
    return off;
  }

  /**
   * Reserve, waiting for space if the ring is full: first spin on head itself
   * (`spinLoads` loads), then park on the space event.
   */
  reserve(spinLoads: number, abort?: AbortFlag): number {
    let off = this.tryReserve();
    if (off >= 0) return off;
    for (let i = 0; i < spinLoads; i++) {
      off = this.tryReserve();
      if (off >= 0) {
        this.spaceEvent.spinsWon++;
        threadWaitStats.spinsWon++;
        return off;
      }
    }
    for (;;) {
      const seq = this.spaceEvent.prepare();
      off = this.tryReserve();
      if (off >= 0) return off;
      if (abort?.aborted()) throw new RunAborted('while waiting for ring space');
      this.spaceEvent.wait(seq, 0);
    }
  }

  /**
   * For producers that take turns under a lock: pick up the tail (and head)
   * as the previous holder left them. Call with the lock held, before
   * reserving; with a single producer it changes nothing.
   */
  claimProducer(): void {
    this.reservedTail = Atomics.load(this.i32, TAIL);
    this.cachedHead = Atomics.load(this.i32, HEAD);
  }

  /** Sequence number (free-running) the next reserved record will get. */
  nextSeq(): number {
    return this.reservedTail;
  }

  /** Make every reserved record visible and wake the consumer once. */
  publish(): void {
    Atomics.store(this.i32, TAIL, this.reservedTail);
    this.dataEvent.notify();
  }

  /**
   * Make every reserved record visible without waking a parked consumer (`EventCount.bump`):
   * for a producer that wakes the consumer itself when it needs an answer, as a lone vCPU does
   * its device (see the guest's `NvmeBar.lazyWake`).
   */
  publishQuiet(): void {
    Atomics.store(this.i32, TAIL, this.reservedTail);
    this.dataEvent.bump();
  }

  /** Records published but not yet released by the consumer (producer's view). */
  inFlight(): number {
    return (Atomics.load(this.i32, TAIL) - Atomics.load(this.i32, HEAD)) | 0;
  }

  /** Free-running count of records the consumer has released. */
  releasedCount(): number {
    return Atomics.load(this.i32, HEAD);
  }

  publishedCount(): number {
    return Atomics.load(this.i32, TAIL);
  }

  /**
   * For an observer that is neither producer nor consumer: the timestamp of
   * the oldest record published and not yet released, or `none`. Re-reads
   * head after reading the record, so a release in between is never mistaken
   * for a record still waiting.
   */
  oldestPendingTimestamp(none: number): number {
    for (;;) {
      const head = Atomics.load(this.i32, HEAD);
      if (head === Atomics.load(this.i32, TAIL)) return none;
      const ts = this.timestampAt(this.dataBaseBytes + (head & this.mask) * this.recordBytes);
      if (Atomics.load(this.i32, HEAD) === head) return ts;
    }
  }

  // ---- consumer side -------------------------------------------------

  /** Records published and not yet released (consumer's view). */
  available(): number {
    return (Atomics.load(this.i32, TAIL) - this.localHead) | 0;
  }

  /** Byte offset of the i-th unreleased record (i < available()). */
  offsetAt(i: number): number {
    return this.dataBaseBytes + ((this.localHead + i) & this.mask) * this.recordBytes;
  }

  /** Release n records back to the producer. */
  release(n: number): void {
    if (n <= 0) return;
    this.localHead = (this.localHead + n) | 0;
    Atomics.store(this.i32, HEAD, this.localHead);
    this.spaceEvent.notify();
  }

  /**
   * Block until at least one record is available: first spin on tail itself
   * (`spinLoads` loads), then park on the data event. Spinning on tail, not
   * on the event's counter, sees a record one cache-line transfer sooner and
   * leaves the counter's line to the producer.
   */
  waitForData(spinLoads: number, abort?: AbortFlag): number {
    let n = this.available();
    if (n > 0) return n;
    for (let i = 0; i < spinLoads; i++) {
      n = this.available();
      if (n > 0) {
        this.dataEvent.spinsWon++;
        threadWaitStats.spinsWon++;
        return n;
      }
    }
    for (;;) {
      const seq = this.dataEvent.prepare();
      n = this.available();
      if (n > 0) return n;
      if (abort?.aborted()) throw new RunAborted('while waiting for ring data');
      this.dataEvent.wait(seq, 0);
    }
  }

  // ---- record helpers --------------------------------------------------

  typeAt(off: number): number {
    return this.dv.getInt32(off + RECORD.typeOffset, true);
  }

  requestIdAt(off: number): number {
    return this.dv.getInt32(off + RECORD.requestIdOffset, true);
  }

  timestampAt(off: number): number {
    return this.dv.getFloat64(off + RECORD.timestampOffset, true);
  }

  writeHeader(off: number, type: number, requestId: number, timestampNs: number): void {
    encodeRecordHeader(this.dv, off, type, requestId, timestampNs);
  }

  /** True when both guard areas still hold the canary pattern. */
  canariesIntact(): boolean {
    const g = this.guardBytes;
    const end = this.dataBaseBytes + this.capacity * this.recordBytes;
    for (let i = this.dataBaseBytes - g; i < this.dataBaseBytes; i++) if (this.u8[i] !== CANARY_BYTE) return false;
    for (let i = end; i < end + g; i++) if (this.u8[i] !== CANARY_BYTE) return false;
    return true;
  }
}
