/**
 * fio's random map (lib/axmap.c, used by io_u.c `get_next_rand_block`):
 * with random I/O, fio draws a block at random and, if the map says it was
 * done already in this pass, takes the next free block after it
 * (`axmap_next_free`, wrapping to the start); every block of the region is
 * therefore done exactly once per pass, and the map is cleared for the next
 * pass (a new loop, or time_based going on). `norandommap` turns it off.
 *
 * Two levels of bits, as axmap's: one bit per block, and one bit per 32
 * blocks saying that word is full, so the next free block is found without
 * scanning full words.
 */
export class RandomMap {
  private readonly blocks: Uint32Array;
  private readonly fullWords: Uint32Array;
  private used = 0;

  constructor(readonly nrBlocks: number) {
    if (!Number.isSafeInteger(nrBlocks) || nrBlocks < 1) throw new Error(`random map: ${nrBlocks} blocks`);
    this.blocks = new Uint32Array(Math.ceil(nrBlocks / 32));
    this.fullWords = new Uint32Array(Math.ceil(this.blocks.length / 32));
    this.markTail();
  }

  /** Blocks done in this pass. */
  get usedBlocks(): number {
    return this.used;
  }

  /** Every block done: the pass is over. */
  get isFull(): boolean {
    return this.used >= this.nrBlocks;
  }

  /** The next block: drawn with `rng`, or the next free one after it; a full map starts a new pass first. */
  next(rng: () => number): number {
    const free = this.pick(rng);
    this.set(free);
    return free;
  }

  /** A free block, drawn with `rng` or the next free one after it (not marked yet); a full map starts a new pass first. */
  pick(rng: () => number): number {
    if (this.used >= this.nrBlocks) this.reset();
    const b = Math.min(this.nrBlocks - 1, Math.floor(rng() * this.nrBlocks));
    return this.isSet(b) ? this.nextFree(b) : b;
  }

  /** Mark up to `n` blocks from the free block `b`, stopping at the first one already done or the map's end; returns how many. */
  markRun(b: number, n: number): number {
    let k = 0;
    while (k < n && b + k < this.nrBlocks && !this.isSet(b + k)) this.set(b + k++);
    return k;
  }

  /** Clears the map: a new pass (fio's next loop). */
  reset(): void {
    this.blocks.fill(0);
    this.fullWords.fill(0);
    this.used = 0;
    this.markTail();
  }

  isSet(b: number): boolean {
    return (this.blocks[b >>> 5] & (1 << (b & 31))) !== 0;
  }

  private set(b: number): void {
    const w = b >>> 5;
    this.blocks[w] |= 1 << (b & 31);
    this.used++;
    if (this.blocks[w] === 0xffffffff) this.fullWords[w >>> 5] |= 1 << (w & 31);
  }

  /** `axmap_next_free`: the first clear bit after `b`, wrapping to 0. */
  private nextFree(b: number): number {
    const start = b >>> 5;
    // the rest of b's own word
    const rest = ~this.blocks[start] & (b % 32 === 31 ? 0 : ~0 << ((b & 31) + 1));
    if (rest !== 0) return (start << 5) + ctz(rest);
    const words = this.blocks.length;
    for (let n = 1; n <= words; n++) {
      const w = (start + n) % words;
      // skip whole runs of full words through the upper level
      const fw = this.fullWords[w >>> 5];
      if (fw === 0xffffffff && (w & 31) === 0) {
        n += 31;
        continue;
      }
      if (fw & (1 << (w & 31))) continue;
      const free = ~this.blocks[w];
      if (free !== 0) return (w << 5) + ctz(free);
    }
    throw new Error('random map: no free block in a map that is not full');
  }

  /** Bits past the last block are set, so they are never handed out. */
  private markTail(): void {
    const last = this.blocks.length - 1;
    const tail = this.nrBlocks & 31;
    if (tail !== 0) {
      this.blocks[last] = ~((1 << tail) - 1) >>> 0;
    }
  }
}

/** Count of trailing zero bits of a non-zero 32-bit word. */
function ctz(x: number): number {
  return 31 - Math.clz32(x & -x);
}
