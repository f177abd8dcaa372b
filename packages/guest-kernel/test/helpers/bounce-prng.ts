import { mulberry32 } from '@vmstack/shm';

/** The project's PRNG (uint32 per call), for the bounce-pool and swiotlb tests. */
export { mulberry32 };

/** Fill `bytes` with seeded noise. */
export function fillNoise(bytes: Uint8Array, seed: number): void {
  const rng = mulberry32(seed);
  for (let i = 0; i < bytes.length; i++) bytes[i] = rng() & 0xff;
}
