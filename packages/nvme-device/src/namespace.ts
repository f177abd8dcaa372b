/**
 * The drive's namespace: 4 KiB logical blocks. A block nobody wrote holds the
 * drive's own data: deterministic, without fio's verify header
 * (shm/pattern.ts fillUnwrittenBlock), so fio's verify refuses it as fio
 * refuses data it did not write (err=84) while the model can still check a
 * read brought what the drive held; written blocks persist in a sparse map.
 */

import { BLOCK_BYTES, fillUnwrittenBlock } from '@vmstack/shm';

export class NvmeNamespace {
  private readonly written = new Map<number, Uint8Array>();

  constructor(
    readonly sizeBlocks: number,
    readonly prefillSeed: number,
    /** blocks an earlier run wrote (fio's barrier groups run one after another on the same drive) */
    initialBlocks: readonly (readonly [number, Uint8Array])[] = [],
  ) {
    for (const [lba, data] of initialBlocks) this.written.set(lba, data);
  }

  /** Copy block `lba` into `dst[off…off+4096)`. */
  readBlock(lba: number, dst: Uint8Array, off: number): void {
    const w = this.written.get(lba);
    if (w) dst.set(w, off);
    else fillUnwrittenBlock(dst, off, lba, this.prefillSeed);
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
