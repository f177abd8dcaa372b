/**
 * A binary min-heap kept in a plain array, ordered by `before`: the device's
 * pending completions (controller.ts) and the attacker's probes (attack.ts),
 * each ordered by model time and then by arrival.
 */

export function heapPush<T>(h: T[], e: T, before: (a: T, b: T) => boolean): void {
  h.push(e);
  let i = h.length - 1;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (before(h[parent], h[i])) break;
    const x = h[parent];
    h[parent] = h[i];
    h[i] = x;
    i = parent;
  }
}

/** The first element by `before`, taken out; the heap must not be empty. */
export function heapPop<T>(h: T[], before: (a: T, b: T) => boolean): T {
  const top = h[0];
  const last = h.pop()!;
  if (h.length > 0) {
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && before(h[l], h[m])) m = l;
      if (r < h.length && before(h[r], h[m])) m = r;
      if (m === i) break;
      const x = h[m];
      h[m] = h[i];
      h[i] = x;
      i = m;
    }
  }
  return top;
}
