/**
 * "Did you mean …?" for error messages: the known name nearest to what the
 * user wrote (Levenshtein distance), if it is near enough.
 */

export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length];
}

/**
 * The first candidate at the smallest distance from `name`, if that distance is
 * at most `maxDistance`. A candidate whose length differs from the name's by
 * more than `maxDistance` is skipped unmeasured (an edit distance is at least
 * that difference), so a name of 200 000 characters costs no more than a short one.
 */
export function closestName<T extends string>(
  name: string,
  candidates: Iterable<T>,
  maxDistance: number,
  distance: (a: string, b: string) => number = editDistance,
): T | undefined {
  let best: T | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    if (Math.abs(name.length - c.length) > maxDistance) continue;
    const d = distance(name, c);
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  return bestDistance <= maxDistance ? best : undefined;
}
