/**
 * Split virtqueue in guest RAM (virtio 1.2 §2.7), both ends of it.
 *
 * The guest's virtio-iommu front end is the driver (Linux
 * drivers/virtio/virtio_ring.c: virtqueue_add_split, virtqueue_get_buf); the
 * VMM's backend is the device (QEMU hw/virtio/virtio.c: virtqueue_pop,
 * virtqueue_push). Both sides view the same guest RAM SharedArrayBuffer.
 * Every multi-byte field is little-endian; the ring indexes are free-running
 * u16 counters that wrap at 2^16, and a ring slot is `idx & (queueSize - 1)`
 * (the queue size is a power of 2, so 2^16 is a multiple of it).
 *
 * Memory ordering: descriptors and ring entries are plain stores; the
 * publishing store of `avail.idx` (driver) and `used.idx` (device) is an
 * `Atomics.store`, and the reader's first access is an `Atomics.load` of the
 * same index, so everything written before the index is visible after it.
 *
 * Descriptor table (align 16, 16 B × queueSize)
 * | offset | size | field | meaning |
 * |---|---|---|---|
 * | 0  | 8 | addr  | guest physical address of the buffer (u64) |
 * | 8  | 4 | len   | buffer length in bytes (u32) |
 * | 12 | 2 | flags | VIRTQ_DESC_F_NEXT=1, VIRTQ_DESC_F_WRITE=2 (device-writable), INDIRECT=4 (not negotiated) |
 * | 14 | 2 | next  | index of the next descriptor when NEXT is set |
 *
 * Available ring (align 2, 6 + 2 × queueSize B), written by the driver
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 2 | flags (VIRTQ_AVAIL_F_NO_INTERRUPT=1; left 0) |
 * | 2 | 2 | idx (next slot the driver will fill; Atomics) |
 * | 4 | 2 × qsz | ring[]: head descriptor index of each chain |
 * | 4 + 2 × qsz | 2 | used_event (VIRTIO_F_EVENT_IDX only; left 0) |
 *
 * Used ring (align 4, 6 + 8 × queueSize B), written by the device
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 2 | flags (VIRTQ_USED_F_NO_NOTIFY=1; left 0) |
 * | 2 | 2 | idx (next slot the device will fill; Atomics) |
 * | 4 + 8 × i | 4 | ring[i].id: head index of the chain returned |
 * | 8 + 8 × i | 4 | ring[i].len: bytes the device wrote into the chain |
 * | 4 + 8 × qsz | 2 | avail_event (VIRTIO_F_EVENT_IDX only; left 0) |
 *
 * Driver state (align 8, 16 + 8 × queueSize B) — not part of the virtio ABI.
 * It models Linux's `struct vring_virtqueue` (free list, shadow indexes,
 * per-descriptor `desc_extra` and `desc_state`), which lives in guest kernel
 * memory. Several vCPU threads take turns driving the queue (under the
 * guest's `request_lock`), so this state must live in the shared guest RAM
 * too, right after the used ring. The device never reads it.
 * | offset | size | field |
 * |---|---|---|
 * | 0  | 4 | magic 0x56514453 ("VQDS") once `VirtqueueDriver.init` ran |
 * | 4  | 2 | queueSizeEntries (u16; 32768 max) |
 * | 6  | 2 | freeHead: first free descriptor |
 * | 8  | 2 | numFree |
 * | 10 | 2 | lastUsedIdx: next used slot the driver will read |
 * | 12 | 2 | availIdxShadow: avail.idx after the chains added so far |
 * | 14 | 2 | reserved |
 * | 16 + 8 × i | 4 | token of the chain headed by descriptor i |
 * | 20 + 8 × i | 2 | chainLen: descriptors in that chain (0 = i is not an in-flight head) |
 * | 22 + 8 × i | 2 | next: next descriptor in i's chain or on the free list (Linux desc_extra.next) |
 */

import { InputError } from '../errors.js';

// ---------------------------------------------------------------- guest RAM

/**
 * Views over the whole guest RAM (a SharedArrayBuffer shared by the vCPU
 * workers, the VMM and the device). Every index is a guest physical address:
 * `u8[gpa]`, `dv.getUint32(gpa, true)`, `u16[gpa >>> 1]` (for Atomics on
 * 2-byte aligned u16 fields).
 */
export interface GuestMemory {
  readonly u8: Uint8Array;
  readonly dv: DataView;
  readonly u16: Uint16Array;
  readonly sizeBytes: number;
}

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  // Atomics on Uint16Array use host byte order; the wire formats are little-endian.
  throw new Error('vmstack wire formats need a little-endian host');
}

/** Views over a guest RAM buffer (byte 0 = guest physical address 0). Size must be a multiple of 8. */
export function attachGuestMemory(buffer: SharedArrayBuffer | ArrayBuffer): GuestMemory {
  if (buffer.byteLength % 8 !== 0) throw new RangeError(`guest RAM of ${buffer.byteLength} bytes is not a multiple of 8`);
  return {
    u8: new Uint8Array(buffer),
    dv: new DataView(buffer),
    u16: new Uint16Array(buffer),
    sizeBytes: buffer.byteLength,
  };
}

const TWO_POW_32 = 0x1_0000_0000;

/**
 * Read a little-endian u64 as a number. Exact below 2^53 (all guest
 * physical addresses and IOVAs here are < 2^48); a larger value rounds but
 * stays ≥ 2^53, so any range check against a limit below 2^53 still
 * rejects it.
 */
export function readU64(dv: DataView, offset: number): number {
  return dv.getUint32(offset + 4, true) * TWO_POW_32 + dv.getUint32(offset, true);
}

/** Write a non-negative safe integer as a little-endian u64. */
export function writeU64(dv: DataView, offset: number, value: number, field = 'u64'): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${field}: ${value} is not an integer in [0, 2^53)`);
  dv.setUint32(offset, value >>> 0, true);
  dv.setUint32(offset + 4, Math.floor(value / TWO_POW_32), true);
}

// ---------------------------------------------------------------- layout

export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;

export const VIRTQ_DESC_BYTES = 16;
export const VIRTQ_DESC_ALIGN_BYTES = 16;
export const VIRTQ_AVAIL_ALIGN_BYTES = 2;
export const VIRTQ_USED_ALIGN_BYTES = 4;
/** Largest split queue size (virtio 1.2 §2.7: Queue Size ≤ 32768). */
export const VIRTQ_MAX_SIZE_ENTRIES = 32768;

const DRIVER_STATE_MAGIC = 0x56514453;
const DS_HEADER_BYTES = 16;
const DS_ENTRY_BYTES = 8;

export interface VirtqueueLayout {
  readonly queueSizeEntries: number;
  readonly descGpa: number;
  readonly availGpa: number;
  readonly usedGpa: number;
  /** the driver's private bookkeeping (see the header table) */
  readonly driverStateGpa: number;
  /** from descGpa to the end of the driver state */
  readonly totalBytes: number;
}

/** One guest buffer of a chain, as the driver adds it and the device pops it. */
export interface VirtqueueSegment {
  readonly gpa: number;
  readonly lenBytes: number;
}

function alignUp(value: number, align: number): number {
  return Math.ceil(value / align) * align;
}

/**
 * Place a split virtqueue of `queueSizeEntries` at `baseGpa` with the virtio
 * 1.x alignments (descriptors 16, avail 2, used 4), followed by the driver
 * state (8).
 */
export function virtqueueLayout(queueSizeEntries: number, baseGpa: number): VirtqueueLayout {
  if (
    !Number.isInteger(queueSizeEntries) ||
    queueSizeEntries < 1 ||
    queueSizeEntries > VIRTQ_MAX_SIZE_ENTRIES ||
    (queueSizeEntries & (queueSizeEntries - 1)) !== 0
  ) {
    throw new InputError('queueSizeEntries', queueSizeEntries, `a power of 2 from 1 to ${VIRTQ_MAX_SIZE_ENTRIES}`);
  }
  if (!Number.isSafeInteger(baseGpa) || baseGpa < 0 || baseGpa % VIRTQ_DESC_ALIGN_BYTES !== 0) {
    throw new RangeError(`virtqueue base GPA ${baseGpa} is not a non-negative multiple of ${VIRTQ_DESC_ALIGN_BYTES}`);
  }
  const q = queueSizeEntries;
  const descGpa = baseGpa;
  const availGpa = alignUp(descGpa + VIRTQ_DESC_BYTES * q, VIRTQ_AVAIL_ALIGN_BYTES);
  const usedGpa = alignUp(availGpa + 6 + 2 * q, VIRTQ_USED_ALIGN_BYTES);
  const driverStateGpa = alignUp(usedGpa + 6 + 8 * q, 8);
  const end = driverStateGpa + DS_HEADER_BYTES + DS_ENTRY_BYTES * q;
  return { queueSizeEntries: q, descGpa, availGpa, usedGpa, driverStateGpa, totalBytes: end - baseGpa };
}

// ---------------------------------------------------------------- errors

export type VirtqueueErrorKind =
  /** avail.idx moved more than queueSize past the device's last_avail_idx */
  | 'avail-idx'
  /** avail ring entry names a descriptor ≥ queueSize */
  | 'head-index'
  /** a descriptor's next ≥ queueSize */
  | 'next-index'
  /** the chain is longer than the table: it loops */
  | 'loop'
  /** addr + len runs past the end of guest RAM */
  | 'out-of-ram'
  /** a device-readable descriptor after a device-writable one */
  | 'order'
  /** VIRTQ_DESC_F_INDIRECT: the feature is not negotiated */
  | 'indirect'
  /** used.idx moved more than queueSize past the driver's last_used_idx */
  | 'used-idx'
  /** used ring entry names a descriptor that is not an in-flight head */
  | 'used-id';

/**
 * A malformed ring seen by either side. On the device side `head` is the
 * chain's head when it is a valid index: the device has already moved past
 * that avail entry, so the VMM can answer the chain (used length 0 or a
 * DEVERR tail) and carry on; `head === null` means the queue itself is
 * broken (QEMU would mark the device DEVICE_NEEDS_RESET).
 */
export class VirtqueueError extends Error {
  constructor(
    readonly kind: VirtqueueErrorKind,
    readonly head: number | null,
    detail: string,
  ) {
    super(`virtqueue ${kind}: ${detail}`);
    this.name = 'VirtqueueError';
  }
}

function checkLayoutFits(memory: GuestMemory, layout: VirtqueueLayout): void {
  const end = layout.descGpa + layout.totalBytes;
  if (end > memory.sizeBytes) throw new RangeError(`virtqueue [${layout.descGpa}, ${end}) lies outside guest RAM of ${memory.sizeBytes} bytes`);
}

// ---------------------------------------------------------------- driver

/**
 * The guest side (Linux vring_virtqueue, split layout). One thread at a time:
 * callers hold the guest's request_lock. Each vCPU worker constructs its own
 * instance over the same guest RAM; all state lives in guest RAM.
 */
export class VirtqueueDriver {
  private readonly q: number;
  private readonly ds: number;
  private readonly dv: DataView;

  /** Zero the ring and the driver state, build the free list, and attach. */
  static init(memory: GuestMemory, layout: VirtqueueLayout): VirtqueueDriver {
    checkLayoutFits(memory, layout);
    const q = layout.queueSizeEntries;
    memory.u8.fill(0, layout.descGpa, layout.descGpa + layout.totalBytes);
    const dv = memory.dv;
    const ds = layout.driverStateGpa;
    dv.setUint16(ds + 4, q, true);
    dv.setUint16(ds + 6, 0, true);
    dv.setUint16(ds + 8, q, true);
    for (let i = 0; i < q; i++) dv.setUint16(ds + DS_HEADER_BYTES + DS_ENTRY_BYTES * i + 6, (i + 1) & 0xffff, true);
    dv.setUint32(ds, DRIVER_STATE_MAGIC, true);
    return new VirtqueueDriver(memory, layout);
  }

  /** Attach to a queue another guest thread initialised. */
  constructor(
    readonly memory: GuestMemory,
    readonly layout: VirtqueueLayout,
  ) {
    checkLayoutFits(memory, layout);
    this.q = layout.queueSizeEntries;
    this.ds = layout.driverStateGpa;
    this.dv = memory.dv;
    if (this.dv.getUint32(this.ds, true) !== DRIVER_STATE_MAGIC)
      throw new RangeError(`virtqueue at GPA ${layout.descGpa}: not initialised (VirtqueueDriver.init)`);
    const q = this.dv.getUint16(this.ds + 4, true);
    if (q !== this.q) throw new RangeError(`virtqueue at GPA ${layout.descGpa}: initialised with ${q} entries, layout says ${this.q}`);
  }

  /** Free descriptors. */
  get numFree(): number {
    return this.dv.getUint16(this.ds + 8, true);
  }

  private entry(i: number): number {
    return this.ds + DS_HEADER_BYTES + DS_ENTRY_BYTES * i;
  }

  /**
   * virtqueue_add_split: chain `out` (device-readable) then `in`
   * (device-writable) segments, put the head in the avail ring (not yet
   * visible: see `publish`). Returns false when fewer descriptors are free
   * than segments given. `token` (u32) comes back from `getBuf`.
   */
  addBuf(outSegments: readonly VirtqueueSegment[], inSegments: readonly VirtqueueSegment[], token: number): boolean {
    const total = outSegments.length + inSegments.length;
    if (total === 0) throw new RangeError('virtqueue addBuf: no segments');
    if (!Number.isInteger(token) || token < 0 || token > 0xffff_ffff) throw new RangeError(`virtqueue addBuf: token ${token} is not a u32`);
    const dv = this.dv;
    const numFree = this.numFree;
    if (numFree < total) return false;
    const head = dv.getUint16(this.ds + 6, true);
    let i = head;
    for (let s = 0; s < total; s++) {
      const writable = s >= outSegments.length;
      const seg = writable ? inSegments[s - outSegments.length] : outSegments[s];
      if (!Number.isInteger(seg.lenBytes) || seg.lenBytes < 0 || seg.lenBytes > 0xffff_ffff)
        throw new RangeError(`virtqueue addBuf: segment length ${seg.lenBytes} is not a u32`);
      const d = this.layout.descGpa + VIRTQ_DESC_BYTES * i;
      const next = dv.getUint16(this.entry(i) + 6, true);
      const more = s < total - 1;
      writeU64(dv, d, seg.gpa, 'virtqueue segment gpa');
      dv.setUint32(d + 8, seg.lenBytes, true);
      dv.setUint16(d + 12, (writable ? VIRTQ_DESC_F_WRITE : 0) | (more ? VIRTQ_DESC_F_NEXT : 0), true);
      dv.setUint16(d + 14, more ? next : 0, true);
      i = next;
    }
    dv.setUint16(this.ds + 6, i, true);
    dv.setUint16(this.ds + 8, numFree - total, true);
    const e = this.entry(head);
    dv.setUint32(e, token, true);
    dv.setUint16(e + 4, total, true);
    const shadow = dv.getUint16(this.ds + 12, true);
    dv.setUint16(this.layout.availGpa + 4 + 2 * (shadow & (this.q - 1)), head, true);
    dv.setUint16(this.ds + 12, (shadow + 1) & 0xffff, true);
    return true;
  }

  /**
   * Make every chain added since the last publish visible to the device
   * (Atomics.store of avail.idx). Returns how many chains that exposed; the
   * caller kicks the device when it is non-zero.
   */
  publish(): number {
    const shadow = this.dv.getUint16(this.ds + 12, true);
    const idxIndex = (this.layout.availGpa + 2) >>> 1;
    const before = this.memory.u16[idxIndex];
    Atomics.store(this.memory.u16, idxIndex, shadow);
    return (shadow - before) & 0xffff;
  }

  /**
   * virtqueue_get_buf: take the next used entry, free its chain and return
   * its token and the length the device wrote; null when none is pending.
   * Throws VirtqueueError on a used ring the device corrupted.
   */
  getBuf(): { token: number; lenBytes: number } | null {
    const dv = this.dv;
    const lastUsed = dv.getUint16(this.ds + 10, true);
    const usedIdx = Atomics.load(this.memory.u16, (this.layout.usedGpa + 2) >>> 1);
    if (usedIdx === lastUsed) return null;
    if (((usedIdx - lastUsed) & 0xffff) > this.q)
      throw new VirtqueueError('used-idx', null, `used.idx ${usedIdx} is more than ${this.q} past last_used_idx ${lastUsed}`);
    const el = this.layout.usedGpa + 4 + 8 * (lastUsed & (this.q - 1));
    const id = dv.getUint32(el, true);
    const lenBytes = dv.getUint32(el + 4, true);
    if (id >= this.q) throw new VirtqueueError('used-id', null, `used id ${id} ≥ queue size ${this.q}`);
    const e = this.entry(id);
    const chainLen = dv.getUint16(e + 4, true);
    if (chainLen === 0) throw new VirtqueueError('used-id', id, `used id ${id} is not an in-flight chain head`);
    const token = dv.getUint32(e, true);
    // detach_buf_split: walk the driver's own next links, never the device-visible ones.
    let tail = id;
    for (let k = 1; k < chainLen; k++) tail = dv.getUint16(this.entry(tail) + 6, true);
    dv.setUint16(this.entry(tail) + 6, dv.getUint16(this.ds + 6, true), true);
    dv.setUint16(this.ds + 6, id, true);
    dv.setUint16(this.ds + 8, this.numFree + chainLen, true);
    dv.setUint16(e + 4, 0, true);
    dv.setUint16(this.ds + 10, (lastUsed + 1) & 0xffff, true);
    return { token, lenBytes };
  }
}

// ---------------------------------------------------------------- device

export interface VirtqueueChain {
  readonly head: number;
  /** device-readable segments, in chain order */
  readonly out: VirtqueueSegment[];
  /** device-writable segments, in chain order */
  readonly in: VirtqueueSegment[];
}

/**
 * The VMM side (QEMU virtqueue_pop / virtqueue_push). One thread: the VMM
 * worker. Attaching picks up the indexes where the ring stands (used.idx),
 * so a device attached to a fresh ring starts at 0.
 */
export class VirtqueueDevice {
  private readonly q: number;
  private lastAvailIdx: number;
  private usedIdx: number;

  constructor(
    readonly memory: GuestMemory,
    readonly layout: VirtqueueLayout,
  ) {
    checkLayoutFits(memory, layout);
    this.q = layout.queueSizeEntries;
    this.usedIdx = Atomics.load(memory.u16, (layout.usedGpa + 2) >>> 1);
    this.lastAvailIdx = this.usedIdx;
  }

  /** Chains the driver has published and the device has not popped yet. */
  pending(): number {
    return (Atomics.load(this.memory.u16, (this.layout.availGpa + 2) >>> 1) - this.lastAvailIdx) & 0xffff;
  }

  /**
   * virtqueue_pop: the next published chain, or null. Validates every
   * descriptor (index, loop, bounds, order, no INDIRECT) and throws
   * VirtqueueError on the first fault; at most queueSize descriptors are
   * read per chain, so a malicious ring never makes this loop forever.
   */
  popAvail(): VirtqueueChain | null {
    const chain = { head: 0, out: [] as VirtqueueSegment[], in: [] as VirtqueueSegment[] };
    return this.popAvailInto(chain) ? chain : null;
  }

  /**
   * virtqueue_pop into a chain record the caller keeps (its arrays and
   * segment objects are overwritten, so a device that pops one chain at a
   * time allocates nothing); false when none is pending. Validates and
   * throws as `popAvail`.
   */
  popAvailInto(chain: { head: number; out: VirtqueueSegment[]; in: VirtqueueSegment[] }): boolean {
    const { u16, dv, sizeBytes } = this.memory;
    const availIdx = Atomics.load(u16, (this.layout.availGpa + 2) >>> 1);
    if (availIdx === this.lastAvailIdx) return false;
    if (((availIdx - this.lastAvailIdx) & 0xffff) > this.q) {
      throw new VirtqueueError('avail-idx', null, `avail.idx ${availIdx} is more than ${this.q} past last_avail_idx ${this.lastAvailIdx}`);
    }
    const head = dv.getUint16(this.layout.availGpa + 4 + 2 * (this.lastAvailIdx & (this.q - 1)), true);
    this.lastAvailIdx = (this.lastAvailIdx + 1) & 0xffff;
    if (head >= this.q) throw new VirtqueueError('head-index', null, `avail ring names descriptor ${head} ≥ queue size ${this.q}`);
    const out = chain.out;
    const inn = chain.in;
    let nOut = 0;
    let nIn = 0;
    let i = head;
    for (let count = 0; ; count++) {
      if (count >= this.q) throw new VirtqueueError('loop', head, `chain from ${head} is longer than the ${this.q}-entry table`);
      const d = this.layout.descGpa + VIRTQ_DESC_BYTES * i;
      const gpa = readU64(dv, d);
      const lenBytes = dv.getUint32(d + 8, true);
      const flags = dv.getUint16(d + 12, true);
      if (flags & VIRTQ_DESC_F_INDIRECT) throw new VirtqueueError('indirect', head, `descriptor ${i} is INDIRECT, which is not negotiated`);
      if (gpa + lenBytes > sizeBytes)
        throw new VirtqueueError('out-of-ram', head, `descriptor ${i} [${gpa}, +${lenBytes}) runs past guest RAM of ${sizeBytes} bytes`);
      if (flags & VIRTQ_DESC_F_WRITE) setSegment(inn, nIn++, gpa, lenBytes);
      else if (nIn > 0) throw new VirtqueueError('order', head, `device-readable descriptor ${i} follows a device-writable one`);
      else setSegment(out, nOut++, gpa, lenBytes);
      if (!(flags & VIRTQ_DESC_F_NEXT)) break;
      i = dv.getUint16(d + 14, true);
      if (i >= this.q) throw new VirtqueueError('next-index', head, `descriptor next ${i} ≥ queue size ${this.q}`);
    }
    if (out.length !== nOut) out.length = nOut;
    if (inn.length !== nIn) inn.length = nIn;
    chain.head = head;
    return true;
  }

  /** virtqueue_push: return chain `head` with `writtenLenBytes` written into its device-writable part. */
  pushUsed(head: number, writtenLenBytes: number): void {
    if (!Number.isInteger(head) || head < 0 || head >= this.q) throw new RangeError(`virtqueue pushUsed: head ${head} outside [0, ${this.q})`);
    if (!Number.isInteger(writtenLenBytes) || writtenLenBytes < 0 || writtenLenBytes > 0xffff_ffff)
      throw new RangeError(`virtqueue pushUsed: length ${writtenLenBytes} is not a u32`);
    const dv = this.memory.dv;
    const el = this.layout.usedGpa + 4 + 8 * (this.usedIdx & (this.q - 1));
    dv.setUint32(el, head, true);
    dv.setUint32(el + 4, writtenLenBytes, true);
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    Atomics.store(this.memory.u16, (this.layout.usedGpa + 2) >>> 1, this.usedIdx);
  }
}

/** Segment k of a chain record: an existing segment object is overwritten. */
function setSegment(segments: VirtqueueSegment[], k: number, gpa: number, lenBytes: number): void {
  const s = segments[k] as { gpa: number; lenBytes: number } | undefined;
  if (s === undefined) segments[k] = { gpa, lenBytes };
  else {
    s.gpa = gpa;
    s.lenBytes = lenBytes;
  }
}
