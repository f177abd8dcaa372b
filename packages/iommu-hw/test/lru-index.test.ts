import test from 'ava';
import { LruIndex } from '../src/lru-index.js';

/** The same LRU as a Map in use order (delete + set on a touch, the first key the oldest). */
class MapLru {
  readonly m = new Map<number, number>();
  constructor(readonly capacity: number) {}
  touchOrInsert(key: number, value: number): number | undefined {
    const v = this.m.get(key);
    if (v !== undefined) {
      this.m.delete(key);
      this.m.set(key, v);
      return v;
    }
    if (this.m.size >= this.capacity) this.m.delete(this.m.keys().next().value as number);
    this.m.set(key, value);
    return undefined;
  }
}

test('LruIndex keeps the order and the evictions of a Map-ordered LRU, through touches, deletes and clears', (t) => {
  for (const [capacity, dense] of [
    [1, false],
    [3, false],
    [64, false],
    [3, true],
    [64, true],
  ] as const) {
    const lru = new LruIndex(capacity, { dense });
    const ref = new MapLru(capacity);
    let x = 7;
    for (let i = 0; i < 20000; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const key = (x % (capacity * 3)) * (dense ? 37 : 1);
      const op = (x >>> 16) % 100;
      if (op < 85) {
        const e = lru.find(key);
        let got: number | undefined;
        if (e >= 0) {
          got = lru.valueAt(e);
          lru.touch(e);
        } else {
          if (lru.size >= capacity) lru.delete(lru.oldestKey());
          lru.insert(key, i);
        }
        const want = ref.touchOrInsert(key, i);
        if (got !== want) t.fail(`capacity ${capacity}, step ${i}: value ${got}, expected ${want}`);
      } else if (op < 99) {
        if (lru.delete(key) !== ref.m.delete(key)) t.fail(`capacity ${capacity}, step ${i}: delete of ${key} differs`);
      } else {
        lru.clear();
        ref.m.clear();
      }
      if (lru.size !== ref.m.size) t.fail(`capacity ${capacity}, step ${i}: size ${lru.size}, expected ${ref.m.size}`);
    }
    t.deepEqual(lru.keyList(), [...ref.m.keys()]);
  }
});

test('LruIndex refuses an insert beyond its capacity', (t) => {
  const lru = new LruIndex(2);
  lru.insert(1, 0);
  lru.insert(2, 0);
  t.throws(() => lru.insert(3, 0), { message: /full/ });
  t.is(lru.oldestKey(), 1);
});
