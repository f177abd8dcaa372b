/**
 * The shared-buffer pool: a released buffer comes back for the next request
 * of its size, all zeros again; other sizes get fresh buffers; a buffer left
 * unused for POOL_KEEP_RELEASES releases is dropped, and releaseIdleWorkers
 * drops them all. Idle workers are asked to collect (a full collection, which
 * costs them their optimized code) only once the drops add up to
 * COLLECT_DROPPED_BYTES, or when the pool is emptied.
 */
import {
  allocateShared,
  COLLECT_DROPPED_BYTES,
  captureSharedBuffers,
  onSharedBuffersDropped,
  POOL_KEEP_RELEASES,
  pooledSharedBytes,
  releaseIdleWorkers,
  releaseSharedBuffers,
  setSharedBufferReuse,
} from '@vmstack/shm';
import test from 'ava';

test.serial('a released buffer is reused for its size, zeroed where it was written', (t) => {
  setSharedBufferReuse(true);
  const size = 3 * 1024 * 1024 + 100; // not a whole number of chunks or pages
  const { value: first, buffers } = captureSharedBuffers(() => allocateShared(size));
  t.deepEqual(buffers, [first]);
  const bytes = new Uint8Array(first);
  for (const at of [0, 4095, 4096, 1024 * 1024 + 7, size - 1]) bytes[at] = 0xa5;
  releaseSharedBuffers(buffers);
  t.is(pooledSharedBytes(), size);
  const again = captureSharedBuffers(() => [allocateShared(size), allocateShared(size)]);
  t.is(again.value[0], first, 'the pooled buffer');
  t.not(again.value[1], first, 'a second one of the size is fresh');
  t.is(
    new Uint8Array(again.value[0]).findIndex((b) => b !== 0),
    -1,
  );
  t.is(pooledSharedBytes(), 0);
  releaseSharedBuffers(again.buffers);
  setSharedBufferReuse(false);
  t.is(pooledSharedBytes(), 0, 'turning reuse off empties the pool');
});

test.serial(`a buffer no run asks for within ${POOL_KEEP_RELEASES} releases is dropped`, (t) => {
  setSharedBufferReuse(true);
  const idle = captureSharedBuffers(() => allocateShared(64 * 1024));
  releaseSharedBuffers(idle.buffers);
  for (let r = 1; r < POOL_KEEP_RELEASES; r++) releaseSharedBuffers(captureSharedBuffers(() => allocateShared(8192)).buffers);
  t.is(pooledSharedBytes(), 64 * 1024 + 8192, 'still kept');
  releaseSharedBuffers(captureSharedBuffers(() => allocateShared(8192)).buffers);
  t.is(pooledSharedBytes(), 8192, 'dropped');
  setSharedBufferReuse(false);
});

test.serial(`small drops ask for no collection until they add up to ${COLLECT_DROPPED_BYTES} bytes; emptying the pool does`, (t) => {
  setSharedBufferReuse(true);
  let calls = 0;
  onSharedBuffersDropped(() => calls++);
  /** one buffer of `sizeBytes` released, then left unused until the pool drops it */
  const dropOne = (sizeBytes: number) => {
    releaseSharedBuffers(captureSharedBuffers(() => allocateShared(sizeBytes)).buffers);
    for (let r = 0; r < POOL_KEEP_RELEASES; r++) releaseSharedBuffers(captureSharedBuffers(() => allocateShared(4096)).buffers);
  };
  dropOne(1024);
  t.is(calls, 0, 'a lock table sized buffer alone');
  dropOne(COLLECT_DROPPED_BYTES - 1024);
  t.is(calls, 1, 'the drops together reach the bound');
  dropOne(2048);
  t.is(calls, 1, 'counted afresh after a collection');
  setSharedBufferReuse(false);
  t.is(calls, 2, 'emptying the pool');
  onSharedBuffersDropped(null);
});

test.serial('without reuse every buffer is fresh and nothing is pooled', (t) => {
  setSharedBufferReuse(false);
  const a = captureSharedBuffers(() => allocateShared(4096));
  releaseSharedBuffers(a.buffers);
  t.is(pooledSharedBytes(), 0);
  t.not(allocateShared(4096), a.value);
});

test.serial('releaseIdleWorkers lets the pool go too', async (t) => {
  setSharedBufferReuse(true);
  releaseSharedBuffers(captureSharedBuffers(() => allocateShared(4096)).buffers);
  t.is(pooledSharedBytes(), 4096);
  await releaseIdleWorkers();
  t.is(pooledSharedBytes(), 0);
  setSharedBufferReuse(false);
});
