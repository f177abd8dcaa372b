/**
 * Worker for the bounce-pool concurrency test: one "vCPU" that acquires and
 * releases pool slots at random, claiming each slot in a shared owner table
 * and stamping a token into the slot's memory, so that a slot (or its memory)
 * handed to two owners at once is caught. Worker 0 also runs eviction passes.
 */
import { IOMMU_PRIV, IOMMU_READ, IOMMU_WRITE, LockTable, type LockTableHandle, ModelClock, workerMain } from '@vmstack/shm';
import { BouncePool, type BouncePoolHandle, type BounceSlot, IOMMU_CACHE } from '../../src/iommu/bounce-pool.js';
import { TestPages, type TestPagesHandle } from './bounce-page-allocator.js';
import { mulberry32 } from './bounce-prng.js';

export interface BounceWorkerInit {
  readonly pool: BouncePoolHandle;
  readonly locks: LockTableHandle;
  readonly pages: TestPagesHandle;
  readonly ram: SharedArrayBuffer;
  /** Int32 per global slot: 0 free, else owner id + 1 */
  readonly owners: SharedArrayBuffer;
  readonly iterations: number;
  readonly seed: number;
  readonly maxHeld: number;
  readonly evictEvery: number;
}

export interface BounceWorkerResult {
  acquires: number;
  refused: number;
  releases: number;
  ownerViolations: number;
  tokenMismatches: number;
  evicted: number;
  evictedWhileOwned: number;
  modelNs: number;
}

const PERMS = [IOMMU_READ | IOMMU_CACHE, IOMMU_WRITE | IOMMU_CACHE, IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE, IOMMU_READ | IOMMU_CACHE | IOMMU_PRIV];
const SIZES = [512, 4096, 6000, 16384, 65536];
const COSTS = { bouncePoolListOpNs: 20, memcpyBytesPerNs: 12, memsetBytesPerNs: 12, guestPageAllocNs: 100, iovaRbtreeOpNs: 250 };

workerMain<BounceWorkerInit, BounceWorkerResult>((boot, control) => {
  const init = boot.init;
  const id = boot.index;
  const locks = LockTable.attach(init.locks, id, control);
  const pool = BouncePool.attach(init.pool, id, locks, new TestPages(init.pages), COSTS);
  const owners = new Int32Array(init.owners);
  const ram = new Int32Array(init.ram);
  return () => {
    const rng = mulberry32(init.seed);
    const clock = new ModelClock('virtual');
    const held: { s: BounceSlot; token: number }[] = [];
    const r: BounceWorkerResult = {
      acquires: 0,
      refused: 0,
      releases: 0,
      ownerViolations: 0,
      tokenMismatches: 0,
      evicted: 0,
      evictedWhileOwned: 0,
      modelNs: 0,
    };
    const n = pool.slotsPerClass;
    const release = (k: number): void => {
      const { s, token } = held[k];
      held[k] = held[held.length - 1];
      held.pop();
      if (ram[s.gpa / 4] !== token || ram[(s.gpa + s.classBytes) / 4 - 1] !== token) r.tokenMismatches++;
      if (Atomics.compareExchange(owners, s.cls * n + s.slot, id + 1, 0) !== id + 1) r.ownerViolations++;
      pool.release(s, clock);
      r.releases++;
    };
    for (let it = 1; it <= init.iterations; it++) {
      clock.charge(50 + (rng() % 100));
      if (held.length < init.maxHeld && (held.length === 0 || rng() % 100 < 55)) {
        const s = pool.acquire(SIZES[rng() % SIZES.length], PERMS[rng() % PERMS.length], clock);
        if (!s) {
          r.refused++;
          continue;
        }
        r.acquires++;
        if (Atomics.compareExchange(owners, s.cls * n + s.slot, 0, id + 1) !== 0) r.ownerViolations++;
        const token = (id << 24) | (it & 0xffffff);
        ram[s.gpa / 4] = token;
        ram[(s.gpa + s.classBytes) / 4 - 1] = token;
        held.push({ s, token });
      } else {
        release(rng() % held.length);
      }
      if (init.evictEvery > 0 && it % init.evictEvery === 0) {
        for (const e of pool.evictionPass(clock.nowNs(), clock)) {
          if (Atomics.load(owners, e.cls * n + e.slot) !== 0) r.evictedWhileOwned++;
          pool.finishEviction(e, clock);
          r.evicted++;
        }
      }
    }
    while (held.length > 0) release(held.length - 1);
    r.modelNs = clock.nowNs();
    return r;
  };
});
