/**
 * One writer of the several-writers test: CPU `cpu` of 2 owns the pages
 * whose index has its parity in a window that straddles a 2 MiB boundary
 * (so both writers share the leaf tables and the table above them). Each
 * round it maps its pages one by one, checks them with the walker, unmaps
 * them one by one and checks that each unmap cleared exactly its page.
 */

import type { IoPgtable } from '../../src/io-pgtable.js';

const PAGE = 4096;
/** 32 pages below and 32 above the 2 MiB boundary at 4 MiB */
export const WINDOW_IOVA = 4 * 1024 * 1024 - 32 * PAGE;
export const WINDOW_PAGES = 64;

export function hpaOf(iova: number): number {
  return iova + 2 ** 32;
}

export function runWriter(pt: IoPgtable, cpu: number, rounds: number): { errors: string[]; maps: number } {
  const errors: string[] = [];
  let maps = 0;
  for (let r = 0; r < rounds && errors.length < 10; r++) {
    for (let i = cpu; i < WINDOW_PAGES; i += 2) {
      pt.map(WINDOW_IOVA + i * PAGE, hpaOf(WINDOW_IOVA + i * PAGE), PAGE, 3);
      maps++;
    }
    for (let i = cpu; i < WINDOW_PAGES; i += 2) {
      const iova = WINDOW_IOVA + i * PAGE;
      const w = pt.walk(iova);
      if (w?.hpa !== hpaOf(iova)) errors.push(`cpu ${cpu} round ${r}: 0x${iova.toString(16)} walks to ${w ? `0x${w.hpa.toString(16)}` : 'nothing'}`);
    }
    for (let i = cpu; i < WINDOW_PAGES; i += 2) {
      const cleared = pt.unmap(WINDOW_IOVA + i * PAGE, PAGE);
      if (cleared !== PAGE) errors.push(`cpu ${cpu} round ${r}: unmap of page ${i} cleared ${cleared} bytes`);
    }
  }
  return { errors, maps };
}
