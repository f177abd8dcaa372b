/**
 * The drive's timing model: when does a read or write of N bytes, arriving at
 * the controller at model time t, complete?
 *
 * Stages of one command (all times model ns):
 * | stage | resource | occupancy | order |
 * |-------|----------|-----------|-------|
 * | accept | controller (one) | `nvmeControllerCommandNs` per command; the command proceeds as soon as it is accepted (that work is part of the QD1 latency) | call order |
 * | media access | one of `nvmeChannelsCount` channels (dies) | read: `nvmeReadLatencyNs`; write: from its data's arrival until programmed | the earliest free channel, call order |
 * | media data | the media bus, SHARED by all channels | bytes / `nvmeMediaReadBytesPerNs` (or `…Write…`): the drive's sustained sequential figure | earliest gap after the data is ready |
 * | PCIe data | the link, SHARED, one timeline per direction | bytes / `pcieLinkBytesPerNs` | earliest gap after the data is ready |
 *
 * Read: accept → channel (latency) → media bus → link to host → complete.
 * Write: accept → link from host → channel: media bus, then
 * `nvmeWriteLatencyNs` (program / write-cache commit) → complete.
 *
 * So at QD1 a read takes latency + bytes/media + bytes/link; at high queue
 * depth small reads saturate at min(channels / latency, 1 / controllerNs)
 * commands per ns (unless the byte rates bind first), and big sequential
 * reads at min(media, link) bytes per ns.
 *
 * Reservations are final: each call books its stages on the timelines and
 * later calls only use what is still free, so a completion, once returned,
 * never moves. Shared resources are booked into the earliest gap that fits
 * (a write whose data is ready need not queue behind a read still in its
 * media latency); booked intervals ending before the latest arrival seen are
 * forgotten, so a call whose arrival is earlier than an earlier call's is
 * served as if it arrived at that latest arrival (the device worker
 * presents commands in model-time order, so this does not happen there).
 */

import { InputError } from '@vmstack/shm';

export const NVME_CMD_WRITE = 0x01;
export const NVME_CMD_READ = 0x02;
/** Smallest command: one 512-byte LBA. */
export const MIN_COMMAND_BYTES = 512;

export interface MediaCosts {
  readonly nvmeReadLatencyNs: number;
  readonly nvmeWriteLatencyNs: number;
  readonly nvmeMediaReadBytesPerNs: number;
  readonly nvmeMediaWriteBytesPerNs: number;
  readonly nvmeChannelsCount: number;
  readonly nvmeControllerCommandNs: number;
  readonly pcieLinkBytesPerNs: number;
}

export interface MediaStats {
  reads: number;
  writes: number;
  bytesRead: number;
  bytesWritten: number;
  /** latest completion booked so far */
  lastCompletionNs: number;
}

/**
 * Busy intervals of one shared resource, sorted and disjoint: entries from
 * `head` to `length` (forgotten ones before it are dropped in one go now and
 * then, not shifted out per booking), in typed arrays that grow by doubling.
 */
class Timeline {
  private starts = new Float64Array(64);
  private ends = new Float64Array(64);
  private length = 0;
  private head = 0;
  private floorNs = 0;

  /** Book `durNs` at the earliest start ≥ readyNs where it fits; returns the start. */
  reserve(readyNs: number, durNs: number): number {
    let t = Math.max(readyNs, this.floorNs);
    if (durNs <= 0) return t;
    if (this.length === this.starts.length) this.grow();
    const { starts, ends } = this;
    const length = this.length;
    // first interval ending after t
    let lo = this.head;
    let hi = length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (ends[mid] <= t) lo = mid + 1;
      else hi = mid;
    }
    let i = lo;
    while (i < length && starts[i] < t + durNs) {
      t = Math.max(t, ends[i]);
      i++;
    }
    const end = t + durNs;
    const joinPrev = i > this.head && ends[i - 1] === t;
    const joinNext = i < length && starts[i] === end;
    if (joinPrev && joinNext) {
      ends[i - 1] = ends[i];
      starts.copyWithin(i, i + 1, length);
      ends.copyWithin(i, i + 1, length);
      this.length--;
    } else if (joinPrev) {
      ends[i - 1] = end;
    } else if (joinNext) {
      starts[i] = t;
    } else {
      starts.copyWithin(i + 1, i, length);
      ends.copyWithin(i + 1, i, length);
      starts[i] = t;
      ends[i] = end;
      this.length++;
    }
    return t;
  }

  private grow(): void {
    const starts = new Float64Array(this.starts.length * 2);
    const ends = new Float64Array(this.ends.length * 2);
    starts.set(this.starts);
    ends.set(this.ends);
    this.starts = starts;
    this.ends = ends;
  }

  /** Forget intervals ending at or before `ns`; nothing may be booked before it any more. */
  prune(ns: number): void {
    if (ns <= this.floorNs) return;
    this.floorNs = ns;
    let k = this.head;
    while (k < this.length && this.ends[k] <= ns) k++;
    this.head = k;
    if (k >= FORGOTTEN_DROP_AT) {
      this.starts.copyWithin(0, k, this.length);
      this.ends.copyWithin(0, k, this.length);
      this.length -= k;
      this.head = 0;
    }
  }
}

/** forgotten intervals a timeline keeps before dropping them all at once */
const FORGOTTEN_DROP_AT = 64;

export class NvmeMedia {
  private readonly c: MediaCosts;
  private controllerFreeNs = 0;
  private readonly channelFreeNs: Float64Array;
  private readonly mediaBus = new Timeline();
  private readonly linkToHost = new Timeline();
  private readonly linkFromHost = new Timeline();
  private frontierNs = 0;
  private readonly counters: MediaStats = { reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, lastCompletionNs: 0 };

  constructor(costs: MediaCosts) {
    const ns = ['nvmeReadLatencyNs', 'nvmeWriteLatencyNs', 'nvmeControllerCommandNs'] as const;
    for (const k of ns) {
      const v = costs[k];
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new InputError(`profile.${k}`, v, 'a finite number of ns ≥ 0');
    }
    const rates = ['nvmeMediaReadBytesPerNs', 'nvmeMediaWriteBytesPerNs', 'pcieLinkBytesPerNs'] as const;
    for (const k of rates) {
      const v = costs[k];
      if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new InputError(`profile.${k}`, v, 'a bandwidth in bytes/ns (= GB/s) > 0');
    }
    const ch = costs.nvmeChannelsCount;
    if (!Number.isSafeInteger(ch) || ch < 1) throw new InputError('profile.nvmeChannelsCount', ch, 'an integer count ≥ 1');
    this.c = { ...costs };
    this.channelFreeNs = new Float64Array(ch);
  }

  /**
   * Book one command; returns its completion time (ns, rounded up to the
   * integer model clock). `opcode` is the NVMe I/O opcode (NVME_CMD_READ or
   * NVME_CMD_WRITE).
   */
  schedule(opcode: number, bytes: number, arrivalNs: number): number {
    if (opcode !== NVME_CMD_READ && opcode !== NVME_CMD_WRITE)
      throw new RangeError(`NvmeMedia.schedule: opcode 0x${Number(opcode).toString(16)} is neither read (0x02) nor write (0x01)`);
    if (!Number.isSafeInteger(bytes) || bytes < MIN_COMMAND_BYTES)
      throw new RangeError(`NvmeMedia.schedule: ${bytes} bytes; a command moves an integer number of bytes ≥ ${MIN_COMMAND_BYTES}`);
    if (!Number.isFinite(arrivalNs) || arrivalNs < 0) throw new RangeError(`NvmeMedia.schedule: arrival ${arrivalNs} ns must be a finite time ≥ 0`);
    const c = this.c;
    if (arrivalNs > this.frontierNs) {
      this.frontierNs = arrivalNs;
      this.mediaBus.prune(arrivalNs);
      this.linkToHost.prune(arrivalNs);
      this.linkFromHost.prune(arrivalNs);
    }

    const acceptNs = Math.max(arrivalNs, this.frontierNs, this.controllerFreeNs);
    this.controllerFreeNs = acceptNs + c.nvmeControllerCommandNs;
    const ch = this.earliestChannel();
    const linkNs = bytes / c.pcieLinkBytesPerNs;
    let doneNs: number;
    if (opcode === NVME_CMD_READ) {
      const accessNs = Math.max(acceptNs, this.channelFreeNs[ch]);
      this.channelFreeNs[ch] = accessNs + c.nvmeReadLatencyNs;
      const mediaNs = bytes / c.nvmeMediaReadBytesPerNs;
      const mediaEnd = this.mediaBus.reserve(accessNs + c.nvmeReadLatencyNs, mediaNs) + mediaNs;
      doneNs = this.linkToHost.reserve(mediaEnd, linkNs) + linkNs;
      this.counters.reads++;
      this.counters.bytesRead += bytes;
    } else {
      const dataInNs = this.linkFromHost.reserve(acceptNs, linkNs) + linkNs;
      const accessNs = Math.max(dataInNs, this.channelFreeNs[ch]);
      const mediaNs = bytes / c.nvmeMediaWriteBytesPerNs;
      const mediaEnd = this.mediaBus.reserve(accessNs, mediaNs) + mediaNs;
      doneNs = mediaEnd + c.nvmeWriteLatencyNs;
      this.channelFreeNs[ch] = doneNs;
      this.counters.writes++;
      this.counters.bytesWritten += bytes;
    }
    const completionNs = Math.ceil(doneNs);
    if (completionNs > this.counters.lastCompletionNs) this.counters.lastCompletionNs = completionNs;
    return completionNs;
  }

  /**
   * The smallest arrival → completion time any command can have (a
   * MIN_COMMAND_BYTES command on an idle drive): the device's lookahead for
   * conservative synchronisation.
   */
  minServiceNs(): number {
    const c = this.c;
    const b = MIN_COMMAND_BYTES;
    const read = c.nvmeReadLatencyNs + b / c.nvmeMediaReadBytesPerNs + b / c.pcieLinkBytesPerNs;
    const write = c.nvmeWriteLatencyNs + b / c.nvmeMediaWriteBytesPerNs + b / c.pcieLinkBytesPerNs;
    return Math.floor(Math.min(read, write));
  }

  stats(): MediaStats {
    return { ...this.counters };
  }

  private earliestChannel(): number {
    const f = this.channelFreeNs;
    let best = 0;
    for (let i = 1; i < f.length; i++) if (f[i] < f[best]) best = i;
    return best;
  }
}
