/**
 * The guest's per-function profile: the shared profiler of `@vmstack/shm`
 * (`call-profile.ts`), counted as `perf report --children` counts it.
 */

export { type CallTreeNode, type ProfileEntry, Profiler } from '@vmstack/shm';
