/** mulberry32: a small seeded PRNG for the bounce-pool and swiotlb tests (uint32 per call). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** Fill `bytes` with seeded noise. */
export function fillNoise(bytes: Uint8Array, seed: number): void {
  const rng = mulberry32(seed);
  for (let i = 0; i < bytes.length; i++) bytes[i] = rng() & 0xff;
}
