/**
 * Worker used by the rwsem tests: readers and writers of one RwSemaphore in a
 * LockTable, checking from inside each hold what the semaphore promises.
 */
import { LockTable, type LockTableHandle, workerMain } from '@vmstack/shm';
import { mulberry32 } from './prng.js';

export interface RwsemWorkerInit {
  scenario: 'rwsem-mix' | 'rwsem-write-once';
  locks: LockTableHandle;
  name: string;
  /**
   * i32 words: [0] a and [1] b, written by writers only (always equal outside a write hold),
   * [2] readers inside now, [3] most readers seen inside at once, [4] writers inside now
   */
  shared: SharedArrayBuffer;
  iterations?: number;
  /** rwsem-mix: one iteration in this many writes */
  writeEvery?: number;
  seed?: number;
}

export interface RwsemWorkerResult {
  reads: number;
  writes: number;
  /** a reader saw a != b, or a writer inside; a writer saw readers or another writer inside */
  violations: number;
  /** rwsem-write-once: the value of a when the write hold began */
  sawValue?: number;
}

workerMain<RwsemWorkerInit, RwsemWorkerResult>((boot, control) => {
  const init = boot.init;
  const sem = LockTable.attach(init.locks, boot.index, control, 200).rwsem(init.name);
  const w = new Int32Array(init.shared);
  if (init.scenario === 'rwsem-write-once')
    return () => {
      sem.down_write();
      const sawValue = w[0];
      w[0] = sawValue + 1;
      sem.up_write();
      return { reads: 0, writes: 1, violations: 0, sawValue };
    };
  return () => {
    const rng = mulberry32(init.seed ?? 1);
    let reads = 0;
    let writes = 0;
    let violations = 0;
    for (let i = 0; i < init.iterations!; i++) {
      if (rng() % init.writeEvery! === 0) {
        sem.down_write();
        if (Atomics.load(w, 2) !== 0 || Atomics.add(w, 4, 1) !== 0) violations++;
        // deliberately not atomic, and a and b apart for a moment: only the semaphore keeps readers from seeing it
        w[0] = w[0] + 1;
        for (let k = 0; k < 20; k++) Atomics.load(w, 4);
        w[1] = w[1] + 1;
        Atomics.sub(w, 4, 1);
        sem.up_write();
        writes++;
      } else {
        sem.down_read();
        const inside = Atomics.add(w, 2, 1) + 1;
        for (let seen = Atomics.load(w, 3); inside > seen; seen = Atomics.load(w, 3)) {
          if (Atomics.compareExchange(w, 3, seen, inside) === seen) break;
        }
        if (w[0] !== w[1] || Atomics.load(w, 4) !== 0) violations++;
        for (let k = 0; k < 20; k++) Atomics.load(w, 2);
        if (w[0] !== w[1]) violations++;
        Atomics.sub(w, 2, 1);
        sem.up_read();
        reads++;
      }
    }
    return { reads, writes, violations };
  };
});
