/** Shared by the io-pgtable concurrency test and its walker thread. */

export const PUBLISHED = 0;
export const ACKED = 1;
export const STOP = 2;
export const BATCH_PAGES = 300;
const GIB = 2 ** 30;

/** Batch r lives in GiB region r % 3 (so batches r and r ± 1 never overlap), at a page offset that moves with r. */
export function batchIova(r: number): number {
  return (1 + (r % 3)) * GIB + ((r * 37) % 1024) * 4096;
}

/** A translation no other IOVA of the test shares: hpa page = iova page scrambled, below 4 TiB. */
export function expectedHpa(iova: number): number {
  const pfn = iova / 4096;
  return ((pfn * 2654435761) % 2 ** 28) * 4096;
}

export function protOf(r: number): 1 | 2 | 3 {
  return ((r % 3) + 1) as 1 | 2 | 3;
}

/** The project's PRNG (uint32 per call). */
export { mulberry32 } from '@vmstack/shm';
