/**
 * What the parts of the bounce pool share: the control words and counters at
 * the head of the pool's SAB region, the interfaces to the guest's page
 * allocator and to the cost profile, and the accounting of buffer memory.
 *
 * The slot manager (`slots.ts`), the bounce copies (`copy.ts`) and the
 * fallback tree (`fallback.ts`) each own their part of one SAB region (the
 * whole table is `bouncePoolLayout` in `../bounce-pool.ts`); the rows here are
 * the part every one of them writes:
 * | field    | type    | contents | writer |
 * |----------|---------|----------|--------|
 * | control  | i32[8]  | `K_*` below: 0 always_bounce_limit bytes, 1 eviction re-arm request, 2 fallback entries | any (atomics); 2 under fallback_lock |
 * | counters | i64[24] | `C_*` below (a BigInt64 view of an f64 field, Atomics) | any |
 */

import { type FieldSpec, type ModelClock, PAGE_SIZE_BYTES } from '@vmstack/shm';

/** The guest's page allocator as the pool uses it (`mm/page-alloc.ts` fits). */
export interface PageAllocator {
  /** 2^order contiguous, size-aligned 4 KiB pages; returns the gpa or -1 */
  alloc_pages(order: number, clock: ModelClock): number;
  free_pages(gpa: number, order: number, clock: ModelClock): void;
}

/** Profile values the pool charges (a CostProfile fits). */
export interface BouncePoolCosts {
  readonly bouncePoolListOpNs: number;
  readonly memcpyBytesPerNs: number;
  readonly memsetBytesPerNs: number;
  readonly guestPageAllocNs: number;
  readonly iovaRbtreeOpNs: number;
}

// control words (i32)
export const K_LIMIT = 0;
export const K_REARM = 1;
export const K_FALLBACK_COUNT = 2;
export const CONTROL_WORDS = 8;
// counters (i64)
export const C_HITS = 0;
export const C_MISSES = 1;
export const C_STEALS = 2;
export const C_EXHAUSTED = 3;
export const C_OVERSIZE = 4;
export const C_ALLOC_FAILURES = 5;
export const C_SEARCH_STEPS = 6;
export const C_EVICTION_PASSES = 7;
export const C_EVICTIONS = 8;
export const C_FALLBACKS = 9;
export const C_FALLBACK_FAILURES = 10;
export const C_FALLBACK_IN_USE = 11;
export const C_BYTES_TO_DEVICE = 12;
export const C_BYTES_FROM_DEVICE = 13;
export const C_BYTES_ZEROED = 14;
export const C_SLOTS_IN_USE = 15;
export const C_SLOTS_IN_USE_PEAK = 16;
export const C_MEMORY = 17;
export const C_MEMORY_PEAK = 18;
export const C_FALLBACK_MEMORY = 19;
export const C_NEXT_EVICTION_NS = 20;
export const COUNTERS = 24;

/** The shared head of the pool's region: control words, then counters. */
export function sharedFields(): FieldSpec[] {
  return [
    { name: 'control', kind: 'i32', count: CONTROL_WORDS },
    { name: 'counters', kind: 'f64', count: COUNTERS },
  ];
}

/** Largest buddy order the guest's page allocator hands out (`mm/page-alloc.ts`: orders 0..10). */
export const MAX_ORDER = 10;

/** `get_order`: the smallest order whose block holds `bytes`. */
export function orderFor(bytes: number): number {
  const pages = Math.ceil(bytes / PAGE_SIZE_BYTES);
  return pages <= 1 ? 0 : 32 - Math.clz32(pages - 1);
}

/**
 * The series takes a buffer as 2^k order-0 pages, each costing
 * `guestPageAllocNs` for its alloc + free pair. The model takes one
 * contiguous block instead, and the page allocator charges one pair per call
 * itself; the pool charges the other (pages − 1) pairs, half at allocation
 * and half at free. This is that half.
 */
export function chargeExtraPagesHalf(clock: ModelClock, costs: BouncePoolCosts, pages: number): void {
  clock.charge(((pages - 1) * costs.guestPageAllocNs) / 2);
}

/** Which 32-bit word of an i64 holds its low half (platform byte order, as BigInt64Array uses it). */
const LOW_WORD = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1 ? 0 : 1;

/**
 * The pool's counters as 32-bit words over the same bytes, for the counters
 * the mapping path moves (no BigInt per mapping): counter i is words 2i and
 * 2i + 1, its low and high halves.
 */
export function counterWords(counters: BigInt64Array): Int32Array {
  return new Int32Array(counters.buffer, counters.byteOffset, counters.length * 2);
}

/**
 * Add 0 ≤ n < 2^32 to counter `i` through its words: an atomic add to the low
 * half, and the carry, by the adder whose add wrapped it, to the high half.
 * The total is exact once the adders are done (a reader in between may miss
 * a carry); stats() reads it as the i64.
 */
export function addCount(words: Int32Array, i: number, n: number): void {
  const lo = 2 * i + LOW_WORD;
  const old = Atomics.add(words, lo, n) >>> 0;
  if (old + n >= 0x1_0000_0000) Atomics.add(words, 2 * i + 1 - LOW_WORD, 1);
}

/**
 * A counter that stays within [0, 2^31) (slots in use and their peak): its low
 * half alone, atomically, the high half staying 0. Adds `delta`, raises
 * counter `peak` to the new value if it is higher, and returns that value.
 */
export function addSmallPeak(words: Int32Array, cur: number, peak: number, delta: number): number {
  const now = Atomics.add(words, 2 * cur + LOW_WORD, delta) + delta;
  if (peak < 0) return now;
  const pi = 2 * peak + LOW_WORD;
  let p = Atomics.load(words, pi);
  while (now > p) {
    const seen = Atomics.compareExchange(words, pi, p, now);
    if (seen === p) break;
    p = seen;
  }
  return now;
}

/** Add `delta` to counter `cur` and raise counter `peak` to the new value if it is higher. */
export function addPeak(a: BigInt64Array, cur: number, peak: number, delta: bigint): void {
  const now = Atomics.add(a, cur, delta) + delta;
  let p = Atomics.load(a, peak);
  while (now > p) {
    const seen = Atomics.compareExchange(a, peak, p, now);
    if (seen === p) return;
    p = seen;
  }
}
