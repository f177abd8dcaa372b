/**
 * The bounce copies: the copy and padding rules of `io-bounce-buffers.c` in
 * David Stevens' series "Add dynamic iommu backed bounce buffers" (v2, Aug
 * 2021), for pool slots and fallback buffers alike.
 *
 * - Map (`io_bounce_buffers_map_page`/`_map_sg`): the caller's bytes go into
 *   the buffer for DMA_TO_DEVICE and DMA_BIDIRECTIONAL, unless
 *   DMA_ATTR_SKIP_CPU_SYNC. A mapping may be a scatter list: its segments sit
 *   back to back in the one buffer.
 * - Unmap (`io_bounce_buffers_unmap_page`/`_unmap_sg`): the buffer's bytes go
 *   back to the caller for DMA_FROM_DEVICE and DMA_BIDIRECTIONAL.
 * - dma_sync_*_for_cpu / _for_device (`io_bounce_buffers_sync_single`/
 *   `_sync_sg`): only the requested sub-range, and only in the direction the
 *   mapping calls for (`dmaSyncCopies`).
 * - Padding: a buffer is larger than the mapping (its class size, or the
 *   page-aligned fallback size), and the device can reach all of it. For an
 *   untrusted device the bytes around the data of a freshly allocated buffer
 *   are zeroed: the head [0, offset) and the tail [offset + size, buffer
 *   end), or the whole buffer under DMA_ATTR_SKIP_CPU_SYNC. The page
 *   allocator does not zero the memory (the series drops __GFP_ZERO), so
 *   otherwise the device would read stale guest memory there. A buffer reused
 *   from the cache is not cleared: it stayed mapped in this domain, so every
 *   byte in it is data the device could already read or wrote itself. The
 *   data range of a fresh DMA_FROM_DEVICE buffer is neither copied nor
 *   cleared, as in the series: there the device can read stale memory.
 *
 * Costs: each copy by where its bytes are (`mm/llc.ts`: the cache's or DRAM's
 * memcpy bandwidth; `memcpyBytesPerNs` without a cache model), `memsetBytesPerNs`
 * for padding.
 */

import type { ModelClock } from '@vmstack/shm';
import type { LastLevelCache } from '../../mm/llc.js';
import { DMA_BIDIRECTIONAL, DMA_FROM_DEVICE, DMA_TO_DEVICE, type DmaDirection } from './dma-direction.js';
import { addCount, type BouncePoolCosts, C_BYTES_FROM_DEVICE, C_BYTES_TO_DEVICE, C_BYTES_ZEROED, counterWords } from './region.js';

/** One piece of the caller's buffer, in guest RAM. */
export interface DmaSegment {
  readonly gpa: number;
  readonly lenBytes: number;
}

/** Linux `should_sync_buffer`/`io_buffer_needs_sync`: does this sync copy bytes? */
export function dmaSyncCopies(dir: DmaDirection, forCpu: boolean): boolean {
  return dir === DMA_BIDIRECTIONAL || (dir === DMA_FROM_DEVICE && forCpu) || (dir === DMA_TO_DEVICE && !forCpu);
}

function checkSegments(mem: Uint8Array, segments: readonly DmaSegment[]): number {
  let total = 0;
  for (const s of segments) {
    if (!Number.isInteger(s.gpa) || !Number.isInteger(s.lenBytes) || s.gpa < 0 || s.lenBytes < 0 || s.gpa + s.lenBytes > mem.length) {
      throw new RangeError(`segment {gpa ${s.gpa}, lenBytes ${s.lenBytes}} is not inside guest RAM (${mem.length} bytes)`);
    }
    total += s.lenBytes;
  }
  return total;
}

/**
 * Copy the sub-range [offsetBytes, offsetBytes + lenBytes) of a mapping whose
 * bytes are `segments` back to back, and sit in the bounce buffer from
 * `bufGpa`. Returns the bytes copied.
 */
export function copySegments(
  mem: Uint8Array,
  bufGpa: number,
  segments: readonly DmaSegment[],
  toBuffer: boolean,
  offsetBytes: number,
  lenBytes: number,
  onPiece?: (dstGpa: number, srcGpa: number, lenBytes: number) => void,
): number {
  const total = checkSegments(mem, segments);
  if (!Number.isInteger(offsetBytes) || !Number.isInteger(lenBytes) || offsetBytes < 0 || lenBytes < 0 || offsetBytes + lenBytes > total) {
    throw new RangeError(`range [${offsetBytes}, +${lenBytes}) is outside the mapping's ${total} bytes`);
  }
  if (bufGpa < 0 || bufGpa + total > mem.length) throw new RangeError(`bounce buffer at gpa ${bufGpa} + ${total} bytes is outside guest RAM`);
  const end = offsetBytes + lenBytes;
  let pos = 0;
  let copied = 0;
  for (const s of segments) {
    const lo = Math.max(offsetBytes, pos);
    const hi = Math.min(end, pos + s.lenBytes);
    if (hi > lo) {
      const caller = s.gpa + (lo - pos);
      const buf = bufGpa + lo;
      if (toBuffer) mem.copyWithin(buf, caller, caller + (hi - lo));
      else mem.copyWithin(caller, buf, buf + (hi - lo));
      if (onPiece) {
        if (toBuffer) onPiece(buf, caller, hi - lo);
        else onPiece(caller, buf, hi - lo);
      }
      copied += hi - lo;
    }
    pos += s.lenBytes;
    if (pos >= end) break;
  }
  return copied;
}

/** The copy work of one vCPU: charges its clock and counts into the pool's counters. */
export class BounceCopies {
  /** model ns of the copy in progress, by where its pieces' bytes are */
  private copyNs = 0;
  /** the counters as 32-bit words (region.ts counterWords) */
  private readonly words: Int32Array;
  private readonly chargePiece: ((dstGpa: number, srcGpa: number, lenBytes: number) => void) | undefined;

  constructor(
    private readonly counters: BigInt64Array,
    private readonly costs: BouncePoolCosts,
    private readonly cache: LastLevelCache | null = null,
  ) {
    this.words = counterWords(counters);
    const llc = cache;
    this.chargePiece = llc
      ? (dstGpa, srcGpa, lenBytes) => {
          this.copyNs += llc.memcpyNs(dstGpa, srcGpa, lenBytes);
        }
      : undefined;
  }

  /** Copy a sub-range between the caller's segments and the buffer, charged as memcpy by where the bytes are. */
  copy(mem: Uint8Array, bufGpa: number, segments: readonly DmaSegment[], toBuffer: boolean, offsetBytes: number, lenBytes: number, clock: ModelClock): number {
    this.copyNs = 0;
    const n = copySegments(mem, bufGpa, segments, toBuffer, offsetBytes, lenBytes, this.chargePiece);
    if (n > 0) {
      clock.charge(this.cache ? this.copyNs : n / this.costs.memcpyBytesPerNs);
      addCount(this.words, toBuffer ? C_BYTES_TO_DEVICE : C_BYTES_FROM_DEVICE, n);
    }
    return n;
  }

  /** Copy the caller's bytes into the buffer (map time, TO_DEVICE / BIDIRECTIONAL). */
  bounceToDevice(mem: Uint8Array, bufGpa: number, segments: readonly DmaSegment[], clock: ModelClock, slotOffsetBytes = 0): number {
    const total = checkSegments(mem, segments);
    return this.copy(mem, bufGpa + slotOffsetBytes, segments, true, 0, total, clock);
  }

  /** Copy the buffer's bytes back to the caller (unmap time, FROM_DEVICE / BIDIRECTIONAL). */
  bounceFromDevice(mem: Uint8Array, bufGpa: number, segments: readonly DmaSegment[], clock: ModelClock, slotOffsetBytes = 0): number {
    const total = checkSegments(mem, segments);
    return this.copy(mem, bufGpa + slotOffsetBytes, segments, false, 0, total, clock);
  }

  /**
   * `io_bounce_buffers_sync_single`/`_sync_sg` (dma_sync_*_for_cpu/device):
   * copy only [offsetBytes, offsetBytes + lenBytes) of the mapping, and only
   * if the direction calls for it (`dmaSyncCopies`). Returns bytes copied.
   */
  syncRange(
    mem: Uint8Array,
    bufGpa: number,
    segments: readonly DmaSegment[],
    offsetBytes: number,
    lenBytes: number,
    dir: DmaDirection,
    forCpu: boolean,
    clock: ModelClock,
    slotOffsetBytes = 0,
  ): number {
    if (!dmaSyncCopies(dir, forCpu)) return 0;
    return this.copy(mem, bufGpa + slotOffsetBytes, segments, !forCpu, offsetBytes, lenBytes, clock);
  }

  /**
   * `io_bounce_buffers_clear_padding`: zero [0, dataStartBytes) and
   * [dataEndBytes, sizeBytes) of the buffer. Returns bytes zeroed.
   */
  clearPadding(mem: Uint8Array, bufGpa: number, sizeBytes: number, dataStartBytes: number, dataEndBytes: number, clock: ModelClock): number {
    if (!(0 <= dataStartBytes && dataStartBytes <= dataEndBytes && dataEndBytes <= sizeBytes) || bufGpa < 0 || bufGpa + sizeBytes > mem.length) {
      throw new RangeError(`padding [0, ${dataStartBytes}) + [${dataEndBytes}, ${sizeBytes}) of gpa ${bufGpa} is not a valid range`);
    }
    mem.fill(0, bufGpa, bufGpa + dataStartBytes);
    mem.fill(0, bufGpa + dataEndBytes, bufGpa + sizeBytes);
    this.cache?.cpu_touch(bufGpa, dataStartBytes);
    this.cache?.cpu_touch(bufGpa + dataEndBytes, sizeBytes - dataEndBytes);
    const zeroed = dataStartBytes + (sizeBytes - dataEndBytes);
    if (zeroed > 0) {
      clock.charge(zeroed / this.costs.memsetBytesPerNs);
      Atomics.add(this.counters, C_BYTES_ZEROED, BigInt(zeroed));
    }
    return zeroed;
  }

  /**
   * The copy work of `io_bounce_buffers_map_page`/`_map_sg` for a pool slot
   * or a fallback buffer: the caller's bytes go in for TO_DEVICE and
   * BIDIRECTIONAL (unless DMA_ATTR_SKIP_CPU_SYNC); for an untrusted device a
   * fresh buffer has its padding cleared, all of it when the sync was
   * skipped. The mapping's data sits at `slotOffsetBytes` (map_page: the
   * offset in the page; the device address is iova + slotOffsetBytes).
   */
  bounceOnMap(
    mem: Uint8Array,
    buf: { readonly gpa: number; readonly sizeBytes: number; readonly fresh: boolean },
    segments: readonly DmaSegment[],
    dir: DmaDirection,
    opts: { readonly untrusted: boolean; readonly slotOffsetBytes?: number; readonly skipCpuSync?: boolean },
    clock: ModelClock,
  ): { readonly copiedBytes: number; readonly zeroedBytes: number } {
    const offset = opts.slotOffsetBytes ?? 0;
    const total = checkSegments(mem, segments);
    if (offset + total > buf.sizeBytes)
      throw new RangeError(`mapping of ${total} bytes at offset ${offset} does not fit a ${buf.sizeBytes}-byte bounce buffer`);
    let copiedBytes = 0;
    if (!opts.skipCpuSync && dmaSyncCopies(dir, false)) copiedBytes = this.copy(mem, buf.gpa + offset, segments, true, 0, total, clock);
    let zeroedBytes = 0;
    if (opts.untrusted && buf.fresh && (offset > 0 || offset + total < buf.sizeBytes || opts.skipCpuSync)) {
      zeroedBytes = opts.skipCpuSync
        ? this.clearPadding(mem, buf.gpa, buf.sizeBytes, 0, 0, clock)
        : this.clearPadding(mem, buf.gpa, buf.sizeBytes, offset, offset + total, clock);
    }
    const r = this.onMapResult;
    r.copiedBytes = copiedBytes;
    r.zeroedBytes = zeroedBytes;
    return r;
  }

  /** what bounceOnMap returns: one object, overwritten by the next call */
  private readonly onMapResult = { copiedBytes: 0, zeroedBytes: 0 };

  /** The copy work of `io_bounce_buffers_unmap_page`/`_unmap_sg`: bytes out for FROM_DEVICE and BIDIRECTIONAL. */
  bounceOnUnmap(
    mem: Uint8Array,
    bufGpa: number,
    segments: readonly DmaSegment[],
    dir: DmaDirection,
    opts: { readonly slotOffsetBytes?: number; readonly skipCpuSync?: boolean },
    clock: ModelClock,
  ): number {
    if (opts.skipCpuSync || !dmaSyncCopies(dir, true)) return 0;
    return this.bounceFromDevice(mem, bufGpa, segments, clock, opts.slotOffsetBytes ?? 0);
  }
}
