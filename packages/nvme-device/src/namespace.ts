/**
 * The drive's namespace: 4 KiB logical blocks. A block nobody wrote holds a
 * deterministic, self-checking pattern (shm/pattern.ts) as if an earlier
 * verify job had filled the drive; written blocks persist in a sparse map.
 */

import { BLOCK_BYTES, fillBlock, type VerifyAlgo } from '@vmstack/shm';

export class NvmeNamespace {
  private readonly written = new Map<number, Uint8Array>();

  constructor(
    readonly sizeBlocks: number,
    readonly prefillSeed: number,
    readonly prefillAlgo: VerifyAlgo,
    /** blocks an earlier run wrote (fio's barrier groups run one after another on the same drive) */
    initialBlocks: readonly (readonly [number, Uint8Array])[] = [],
    /** the verify pattern the earlier verify job wrote (fio's verify_pattern) */
    readonly prefillPattern?: Uint8Array,
  ) {
    for (const [lba, data] of initialBlocks) this.written.set(lba, data);
  }

  /** Copy block `lba` into `dst[off…off+4096)`. */
  readBlock(lba: number, dst: Uint8Array, off: number): void {
    const w = this.written.get(lba);
    if (w) dst.set(w, off);
    else fillBlock(dst, off, lba, this.prefillSeed, this.prefillAlgo, this.prefillPattern);
  }

  writeBlock(lba: number, src: Uint8Array, off: number): void {
    this.written.set(lba, src.slice(off, off + BLOCK_BYTES));
  }

  writtenBlocks(): number {
    return this.written.size;
  }

  /** Every written block, for the next run on the same drive. */
  exportBlocks(): [number, Uint8Array][] {
    return [...this.written.entries()];
  }
}
