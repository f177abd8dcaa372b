/**
 * Test double for the guest page allocator, shareable between threads: a
 * first-fit allocator of size-aligned 2^order page blocks over [baseGpa,
 * baseGpa + pages × 4 KiB), state in a SharedArrayBuffer, one spin/park lock
 * word. It charges nothing (so tests see the pool's own charges) and throws on
 * a double or mis-sized free.
 *
 * Layout (Int32 words): 0 lock, 1 pages allocated, 2 alloc calls, 3 free calls,
 * 4 failures; then one word per page: 0 free, order + 1 at a block's head,
 * -1 inside a block.
 */
import type { PageAllocator } from '../../src/iommu/bounce-pool.js';

const HDR = 8;

export interface TestPagesHandle {
  readonly sab: SharedArrayBuffer;
  readonly baseGpa: number;
  readonly pages: number;
}

export class TestPages implements PageAllocator {
  private readonly w: Int32Array;

  static allocate(baseGpa: number, pages: number): TestPagesHandle {
    return { sab: new SharedArrayBuffer((HDR + pages) * 4), baseGpa, pages };
  }

  constructor(readonly h: TestPagesHandle) {
    this.w = new Int32Array(h.sab);
  }

  alloc_pages(order: number): number {
    const n = 1 << order;
    this.lock();
    try {
      this.w[2]++;
      for (let p = 0; p + n <= this.h.pages; p += n) {
        let free = true;
        for (let k = 0; k < n && free; k++) free = this.w[HDR + p + k] === 0;
        if (!free) continue;
        this.w[HDR + p] = order + 1;
        for (let k = 1; k < n; k++) this.w[HDR + p + k] = -1;
        this.w[1] += n;
        return this.h.baseGpa + p * 4096;
      }
      this.w[4]++;
      return -1;
    } finally {
      this.unlock();
    }
  }

  free_pages(gpa: number, order: number): void {
    const p = (gpa - this.h.baseGpa) / 4096;
    this.lock();
    try {
      if (!Number.isInteger(p) || p < 0 || p >= this.h.pages || this.w[HDR + p] !== order + 1) {
        throw new Error(`free_pages(0x${gpa.toString(16)}, ${order}): not an allocated block of that order (have ${this.w[HDR + p]})`);
      }
      for (let k = 0; k < 1 << order; k++) this.w[HDR + p + k] = 0;
      this.w[1] -= 1 << order;
      this.w[3]++;
    } finally {
      this.unlock();
    }
  }

  allocatedBytes(): number {
    return Atomics.load(this.w, 1) * 4096;
  }

  counts(): { allocCalls: number; freeCalls: number; failures: number } {
    return { allocCalls: Atomics.load(this.w, 2), freeCalls: Atomics.load(this.w, 3), failures: Atomics.load(this.w, 4) };
  }

  private lock(): void {
    for (let spins = 0; Atomics.compareExchange(this.w, 0, 0, 1) !== 0; spins++) {
      if (spins > 100) Atomics.wait(this.w, 0, 1, 1);
    }
  }

  private unlock(): void {
    Atomics.store(this.w, 0, 0);
    Atomics.notify(this.w, 0, 1);
  }
}
