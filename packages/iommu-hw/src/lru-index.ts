/**
 * A least-recently-used set of number keys with a number value each, of a
 * fixed capacity: what a hardware cache (the IOTLB, the CPU's last-level
 * cache) keeps. Entries sit in preallocated typed arrays, chained from the
 * oldest to the newest; a Map finds a key's entry. A hit moves the entry to
 * the newest end and allocates nothing; only an insert or a delete changes
 * the Map.
 */

export class LruIndex {
  private readonly slotOf = new Map<number, number>();
  private readonly keys: Float64Array;
  private readonly values: Float64Array;
  /** the chain, oldest → newest; free entries are chained through `next` from `freeHead` */
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private oldest = -1;
  private newest = -1;
  private freeHead: number;

  constructor(readonly capacity: number) {
    this.keys = new Float64Array(capacity);
    this.values = new Float64Array(capacity);
    this.prev = new Int32Array(capacity);
    this.next = new Int32Array(capacity);
    this.freeHead = capacity > 0 ? 0 : -1;
    for (let i = 0; i < capacity; i++) this.next[i] = i + 1 < capacity ? i + 1 : -1;
  }

  get size(): number {
    return this.slotOf.size;
  }

  has(key: number): boolean {
    return this.slotOf.has(key);
  }

  /** The entry of `key`, or -1. */
  find(key: number): number {
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
    this.slotOf.set(key, e);
    this.linkNewest(e);
  }

  /** The least recently used key (the index must not be empty). */
  oldestKey(): number {
    if (this.oldest < 0) throw new Error('LruIndex: no entries');
    return this.keys[this.oldest];
  }

  /** Drop `key` if present. */
  delete(key: number): boolean {
    const e = this.slotOf.get(key);
    if (e === undefined) return false;
    this.slotOf.delete(key);
    this.unlink(e);
    this.next[e] = this.freeHead;
    this.freeHead = e;
    return true;
  }

  clear(): void {
    for (let e = this.oldest; e >= 0; ) {
      const n = this.next[e];
      this.next[e] = this.freeHead;
      this.freeHead = e;
      e = n;
    }
    this.oldest = -1;
    this.newest = -1;
    this.slotOf.clear();
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
