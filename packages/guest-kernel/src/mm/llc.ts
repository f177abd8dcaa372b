/**
 * The last-level cache as the CPU's copies see it, and the copy cost it
 * gives: a copy is charged by where its bytes are. Bytes whose source and
 * destination are both in the cache copy at cache bandwidth
 * (`memcpyCacheBytesPerNs`); the rest at DRAM bandwidth (`memcpyBytesPerNs`).
 *
 * What is in the cache, at 4 KiB page granularity:
 * - what the CPU touched most recently, up to `llcBytes` (least recently used
 *   pages leave first): a copy touches its source and its destination;
 * - what the device wrote most recently within the DDIO share
 *   (`ddioLlcBytes`): with Intel DDIO an inbound write allocates in a few
 *   ways of the LLC. A part without DDIO (`ddioLlcBytes` 0, the client
 *   parts) writes device data to DRAM and the write invalidates any cached
 *   copy, so the CPU then reads it from DRAM.
 * A device read (DMA to the device) leaves the cache as it was.
 *
 * One instance per vCPU: each vCPU sees the whole LLC (the model does not
 * share it between vCPUs). Every copy of the guest goes through `memcpyNs`:
 * the bounce pool's, swiotlb's, and a page cache's or user copy's.
 */

import { LruIndex } from '@vmstack/iommu-hw';
import { PAGE_SIZE_BYTES } from '@vmstack/shm';

/** The costs of a copy: the two bandwidths and the cache's sizes (profile keys). */
export interface CopyCosts {
  readonly memcpyBytesPerNs: number;
  readonly memcpyCacheBytesPerNs: number;
  readonly llcBytes: number;
  readonly ddioLlcBytes: number;
}

/** The model ns of a copy of `cachedBytes` at cache bandwidth and `dramBytes` at DRAM bandwidth. */
export function copyCostNs(cachedBytes: number, dramBytes: number, costs: Pick<CopyCosts, 'memcpyBytesPerNs' | 'memcpyCacheBytesPerNs'>): number {
  return cachedBytes / costs.memcpyCacheBytesPerNs + dramBytes / costs.memcpyBytesPerNs;
}

/** Pages held in least-recently-used order: a touch of a page makes it the most recent, a new page beyond the capacity evicts the oldest. */
class LruPages {
  private readonly pages: LruIndex;
  constructor(readonly capacityPages: number) {
    this.pages = new LruIndex(capacityPages, { dense: true });
  }

  has(page: number): boolean {
    return this.pages.has(page);
  }

  touch(page: number): void {
    if (this.capacityPages === 0) return;
    const e = this.pages.find(page);
    if (e >= 0) {
      this.pages.touch(e);
      return;
    }
    if (this.pages.size >= this.capacityPages) this.pages.delete(this.pages.oldestKey());
    this.pages.insert(page, 1);
  }

  drop(page: number): void {
    this.pages.delete(page);
  }

  get size(): number {
    return this.pages.size;
  }
}

export class LastLevelCache {
  private readonly cpu: LruPages;
  private readonly ddio: LruPages;
  /** bytes copied at each bandwidth, for tests and reports */
  readonly copied = { cachedBytes: 0, dramBytes: 0 };

  constructor(private readonly costs: CopyCosts) {
    this.cpu = new LruPages(Math.floor(costs.llcBytes / PAGE_SIZE_BYTES));
    this.ddio = new LruPages(Math.floor(Math.min(costs.ddioLlcBytes, costs.llcBytes) / PAGE_SIZE_BYTES));
  }

  /** Is the page holding `gpa` in the cache? */
  cached(gpa: number): boolean {
    const page = Math.floor(gpa / PAGE_SIZE_BYTES);
    return this.cpu.has(page) || this.ddio.has(page);
  }

  /** The CPU read or wrote [gpa, gpa + lenBytes): those pages are now the most recently used. */
  cpu_touch(gpa: number, lenBytes: number): void {
    if (lenBytes <= 0) return;
    const last = Math.floor((gpa + lenBytes - 1) / PAGE_SIZE_BYTES);
    for (let page = Math.floor(gpa / PAGE_SIZE_BYTES); page <= last; page++) {
      this.ddio.drop(page);
      this.cpu.touch(page);
    }
  }

  /** The device wrote [gpa, gpa + lenBytes): into the DDIO share when there is one, else to DRAM (cached copies invalidated). */
  device_write(gpa: number, lenBytes: number): void {
    if (lenBytes <= 0) return;
    const last = Math.floor((gpa + lenBytes - 1) / PAGE_SIZE_BYTES);
    for (let page = Math.floor(gpa / PAGE_SIZE_BYTES); page <= last; page++) {
      this.cpu.drop(page);
      if (this.ddio.capacityPages > 0) this.ddio.touch(page);
      else this.ddio.drop(page);
    }
  }

  /**
   * memcpy of `lenBytes` from `srcGpa` to `dstGpa`: the model ns it costs,
   * each piece at cache bandwidth when both its source and destination pages
   * are cached, else at DRAM bandwidth. Both ends are cached afterwards.
   */
  memcpyNs(dstGpa: number, srcGpa: number, lenBytes: number): number {
    let cachedBytes = 0;
    let dramBytes = 0;
    let done = 0;
    while (done < lenBytes) {
      const s = srcGpa + done;
      const d = dstGpa + done;
      // up to the next page boundary of either end
      const n = Math.min(lenBytes - done, PAGE_SIZE_BYTES - (s % PAGE_SIZE_BYTES), PAGE_SIZE_BYTES - (d % PAGE_SIZE_BYTES));
      if (this.cached(s) && this.cached(d)) cachedBytes += n;
      else dramBytes += n;
      done += n;
    }
    this.cpu_touch(srcGpa, lenBytes);
    this.cpu_touch(dstGpa, lenBytes);
    this.copied.cachedBytes += cachedBytes;
    this.copied.dramBytes += dramBytes;
    return copyCostNs(cachedBytes, dramBytes, this.costs);
  }
}
