/** The project's PRNG (shm/prng.ts), uint32 per call, for reproducible test payloads. */
export { mulberry32 } from '@vmstack/shm';
