/**
 * Shared memory reused from run to run, by size.
 *
 * Every region of a run (guest RAM, rings, lock tables, page tables, the
 * control block) is a SharedArrayBuffer made by `allocateShared`. With reuse
 * on (`setSharedBufferReuse(true)`; `setWorkerReuse(true)` turns it on), the
 * buffers a run made are handed back with `releaseSharedBuffers` when the run
 * has ended, and the next run of this thread that asks for a buffer of the
 * same size gets one of them, zeroed: a fresh SharedArrayBuffer is all zeros,
 * and so is a reused one.
 *
 * Why: a worker kept idle between runs (lifecycle.ts) still maps the last
 * run's buffers until its isolate collects its garbage, which an idle isolate
 * does not do, and so does this thread; with a fresh guest RAM per run the
 * process's shared memory grew by a run's regions per run. Forcing those
 * collections frees them, but it also discards the workers' optimized code
 * (V8 drops the code that embeds objects which die, and the maps of the
 * run's objects die with them), so each run paid its JIT warm-up again. With
 * the same buffers reused, what an idle worker still maps is memory the pool
 * holds anyway: nothing grows, nothing needs collecting, the code stays warm.
 *
 * Zeroing touches only what a run wrote: each 1 MiB chunk is compared with
 * zeros first (memcmp; a page never written reads the kernel's shared zero
 * page, from cache, and stays out of RSS), and only the non-zero 4 KiB pages
 * of a chunk that differs are filled.
 *
 * The pool keeps a buffer for `POOL_KEEP_RELEASES` releases after it was last
 * handed back and at most `MAX_POOLED_BYTES` in all; a buffer it drops is let
 * go by this thread and, on request (`onSharedBuffersDropped`), by idle workers.
 * That request forces a full collection in every idle worker, which costs them
 * their optimized code, so the pool makes it only once the buffers dropped since
 * the last one add up to `COLLECT_DROPPED_BYTES` (a run of another shape leaves
 * small regions behind, a lock table or a flush queue of a few KiB, which V8
 * frees in its own time), or when it is emptied.
 */

/** releases (runs ended) a pooled buffer waits for a run of its size before the pool drops it */
export const POOL_KEEP_RELEASES = 8;
/** the pool holds at most this many bytes of idle buffers */
export const MAX_POOLED_BYTES = 4 * 1024 * 1024 * 1024;

/** dropped bytes that make the pool ask for a forced collection (`onSharedBuffersDropped`) */
export const COLLECT_DROPPED_BYTES = 64 * 1024 * 1024;

const CHUNK_BYTES = 1024 * 1024;
const PAGE_BYTES = 4096;

interface Pooled {
  readonly sab: SharedArrayBuffer;
  /** the release count when it was handed back */
  readonly releasedAt: number;
}

let reuse = false;
/** idle buffers by byte length, oldest first */
const pool = new Map<number, Pooled[]>();
let pooledBytes = 0;
let releases = 0;
/** bytes dropped since the listener was last called */
let droppedSinceCollect = 0;
/** the buffers allocated inside the innermost `captureSharedBuffers`, if any */
let capturing: SharedArrayBuffer[] | null = null;
let droppedListener: (() => void) | null = null;
let zeroChunk: Buffer | undefined;

/** What the pool holds and has done on this thread. */
export const sharedPoolStats = { reusedBuffers: 0, reusedBytes: 0, freshBuffers: 0, freshBytes: 0, droppedBuffers: 0, droppedBytes: 0, zeroingMs: 0 };

/** Reuse released buffers on this thread (off: every `allocateShared` is a fresh buffer, and the pool is emptied). */
export function setSharedBufferReuse(enabled: boolean): void {
  reuse = enabled;
  if (!enabled) dropPooled(() => true, true);
}

/** Let go of every idle buffer (the runs are over: `releaseIdleWorkers` calls this). */
export function dropPooledSharedBuffers(): void {
  dropPooled(() => true, true);
}

/** Bytes of idle buffers the pool holds. */
export function pooledSharedBytes(): number {
  return pooledBytes;
}

/**
 * Called when the pool has dropped `COLLECT_DROPPED_BYTES` since the last call, or is emptied
 * (lifecycle.ts asks idle workers to let go of them).
 */
export function onSharedBuffersDropped(listener: (() => void) | null): void {
  droppedListener = listener;
}

/**
 * A zeroed SharedArrayBuffer of `sizeBytes`: a pooled one of that size when
 * reuse is on and one is idle, else a new one. Inside `captureSharedBuffers`
 * it is recorded, to be handed back when the run ends.
 */
export function allocateShared(sizeBytes: number): SharedArrayBuffer {
  let sab: SharedArrayBuffer | undefined;
  if (reuse) {
    const list = pool.get(sizeBytes);
    const entry = list?.pop();
    if (entry) {
      if (list!.length === 0) pool.delete(sizeBytes);
      pooledBytes -= sizeBytes;
      sab = entry.sab;
      const t0 = performance.now();
      zeroWritten(sab);
      sharedPoolStats.zeroingMs += performance.now() - t0;
      sharedPoolStats.reusedBuffers++;
      sharedPoolStats.reusedBytes += sizeBytes;
    }
  }
  if (!sab) {
    sab = new SharedArrayBuffer(sizeBytes);
    sharedPoolStats.freshBuffers++;
    sharedPoolStats.freshBytes += sizeBytes;
  }
  capturing?.push(sab);
  return sab;
}

/** Run `allocate` and return what it returned with every buffer it took through `allocateShared`. */
export function captureSharedBuffers<T>(allocate: () => T): { value: T; buffers: SharedArrayBuffer[] } {
  const outer = capturing;
  const buffers: SharedArrayBuffer[] = [];
  capturing = buffers;
  try {
    return { value: allocate(), buffers };
  } finally {
    capturing = outer;
    outer?.push(...buffers);
  }
}

/**
 * Hand a run's buffers back once no thread uses them any more (its workers
 * finished or were terminated; an idle worker that still maps them does not
 * write). Without reuse they are simply let go.
 */
export function releaseSharedBuffers(buffers: readonly SharedArrayBuffer[]): void {
  if (!reuse) return;
  releases++;
  for (const sab of buffers) {
    const list = pool.get(sab.byteLength) ?? [];
    list.push({ sab, releasedAt: releases });
    pool.set(sab.byteLength, list);
    pooledBytes += sab.byteLength;
  }
  dropPooled((e) => releases - e.releasedAt >= POOL_KEEP_RELEASES, false);
  if (pooledBytes > MAX_POOLED_BYTES) {
    // oldest first, until the pool fits
    const all = [...pool.values()].flat().sort((a, b) => a.releasedAt - b.releasedAt);
    let over = pooledBytes - MAX_POOLED_BYTES;
    const drop = new Set<Pooled>();
    for (const e of all) {
      if (over <= 0) break;
      drop.add(e);
      over -= e.sab.byteLength;
    }
    dropPooled((e) => drop.has(e), false);
  }
}

function dropPooled(which: (e: Pooled) => boolean, emptying: boolean): void {
  let dropped = 0;
  for (const [size, list] of pool) {
    const keep = list.filter((e) => !which(e));
    dropped += list.length - keep.length;
    pooledBytes -= (list.length - keep.length) * size;
    droppedSinceCollect += (list.length - keep.length) * size;
    sharedPoolStats.droppedBuffers += list.length - keep.length;
    sharedPoolStats.droppedBytes += (list.length - keep.length) * size;
    if (keep.length === 0) pool.delete(size);
    else pool.set(size, keep);
  }
  if (dropped > 0 && (emptying || droppedSinceCollect >= COLLECT_DROPPED_BYTES)) {
    droppedSinceCollect = 0;
    droppedListener?.();
  }
}

/** Zero what a run wrote into `sab`: the non-zero 4 KiB pages of each 1 MiB chunk that is not all zeros. */
function zeroWritten(sab: SharedArrayBuffer): void {
  zeroChunk ??= Buffer.alloc(CHUNK_BYTES);
  const zero = zeroChunk;
  const buf = Buffer.from(sab);
  const length = buf.length;
  for (let chunk = 0; chunk < length; chunk += CHUNK_BYTES) {
    const chunkEnd = Math.min(length, chunk + CHUNK_BYTES);
    if (buf.compare(zero, 0, chunkEnd - chunk, chunk, chunkEnd) === 0) continue;
    for (let page = chunk; page < chunkEnd; page += PAGE_BYTES) {
      const pageEnd = Math.min(chunkEnd, page + PAGE_BYTES);
      if (buf.compare(zero, 0, pageEnd - page, page, pageEnd) !== 0) buf.fill(0, page, pageEnd);
    }
  }
}
