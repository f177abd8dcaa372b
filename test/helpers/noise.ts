import { mulberry32 } from '@vmstack/shm';

/** Fill `bytes` with seeded noise (the project's PRNG, one byte per draw). */
export function fillNoise(bytes: Uint8Array, seed: number): void {
  const rng = mulberry32(seed);
  for (let i = 0; i < bytes.length; i++) bytes[i] = rng() & 0xff;
}
