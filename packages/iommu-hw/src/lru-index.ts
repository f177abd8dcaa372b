/**
 * A least-recently-used set of number keys with a number value each, of a
 * fixed capacity: what a hardware cache (the IOTLB, the CPU's last-level
 * cache) keeps. Entries sit in preallocated typed arrays, chained from the
 * oldest to the newest; a Map finds a key's entry, or, for small
 * non-negative integer keys (`dense`: page frame numbers of guest RAM), a
 * typed array indexed by the key that grows by doubling. A hit moves the
 * entry to the newest end and allocates nothing; with `dense` neither does an
 * insert or a delete.
 */

export class LruIndex {
  private readonly slotOf = new Map<number, number>();
  /** dense keys: entry + 1 by key, 0 for absent */
  private dense: Int32Array | null;
  private count = 0;
  private readonly keys: Float64Array;
  private readonly values: Float64Array;
  /** the chain, oldest → newest; free entries are chained through `next` from `freeHead` */
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private oldest = -1;
  private newest = -1;
  private freeHead: number;

  constructor(
    readonly capacity: number,
    opts: { readonly dense?: boolean } = {},
  ) {
    this.dense = opts.dense ? new Int32Array(1024) : null;
    this.keys = new Float64Array(capacity);
    this.values = new Float64Array(capacity);
    this.prev = new Int32Array(capacity);
    this.next = new Int32Array(capacity);
    this.freeHead = capacity > 0 ? 0 : -1;
    for (let i = 0; i < capacity; i++) this.next[i] = i + 1 < capacity ? i + 1 : -1;
  }

  get size(): number {
    return this.count;
  }

  has(key: number): boolean {
    return this.find(key) >= 0;
  }

  /** The entry of `key`, or -1. */
  find(key: number): number {
    const dense = this.dense;
    if (dense !== null) return key < dense.length ? dense[key] - 1 : -1;
    const e = this.slotOf.get(key);
    return e === undefined ? -1 : e;
  }

  valueAt(entry: number): number {
    return this.values[entry];
  }

  /** Make an entry the most recently used. */
  touch(entry: number): void {
    if (entry === this.newest) return;
    this.unlink(entry);
    this.linkNewest(entry);
  }

  /** Add `key` (not present) as the most recently used; the caller makes room first (size < capacity). */
  insert(key: number, value: number): void {
    const e = this.freeHead;
    if (e < 0) throw new Error(`LruIndex: insert into a full index (capacity ${this.capacity})`);
    this.freeHead = this.next[e];
    this.keys[e] = key;
    this.values[e] = value;
    this.setSlot(key, e);
    this.count++;
    this.linkNewest(e);
  }

  /** The least recently used key (the index must not be empty). */
  oldestKey(): number {
    if (this.oldest < 0) throw new Error('LruIndex: no entries');
    return this.keys[this.oldest];
  }

  /** Drop `key` if present. */
  delete(key: number): boolean {
    const e = this.find(key);
    if (e < 0) return false;
    if (this.dense !== null) this.dense[key] = 0;
    else this.slotOf.delete(key);
    this.count--;
    this.unlink(e);
    this.next[e] = this.freeHead;
    this.freeHead = e;
    return true;
  }

  clear(): void {
    for (let e = this.oldest; e >= 0; ) {
      const n = this.next[e];
      if (this.dense !== null) this.dense[this.keys[e]] = 0;
      this.next[e] = this.freeHead;
      this.freeHead = e;
      e = n;
    }
    this.oldest = -1;
    this.newest = -1;
    this.slotOf.clear();
    this.count = 0;
  }

  private setSlot(key: number, e: number): void {
    if (this.dense === null) {
      this.slotOf.set(key, e);
      return;
    }
    if (!(Number.isInteger(key) && key >= 0 && key < 2 ** 31)) throw new RangeError(`LruIndex: dense key ${key} is not an integer from 0 to 2^31 - 1`);
    if (key >= this.dense.length) {
      let n = this.dense.length;
      while (n <= key) n *= 2;
      const grown = new Int32Array(n);
      grown.set(this.dense);
      this.dense = grown;
    }
    this.dense[key] = e + 1;
  }

  /** The keys present, oldest first (a copy). */
  keyList(): number[] {
    const out: number[] = [];
    for (let e = this.oldest; e >= 0; e = this.next[e]) out.push(this.keys[e]);
    return out;
  }

  private unlink(e: number): void {
    const p = this.prev[e];
    const n = this.next[e];
    if (p >= 0) this.next[p] = n;
    else this.oldest = n;
    if (n >= 0) this.prev[n] = p;
    else this.newest = p;
  }

  private linkNewest(e: number): void {
    this.prev[e] = this.newest;
    this.next[e] = -1;
    if (this.newest >= 0) this.next[this.newest] = e;
    else this.oldest = e;
    this.newest = e;
  }
}
