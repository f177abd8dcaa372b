/**
 * Host IOMMU page tables: a VT-d-like second-level table for one domain, kept
 * in its own SharedArrayBuffer. The host's driver writes it (`map`, `unmap`:
 * vfio_iommu_type1 under `iommu->lock`, or a bare-metal kernel's VT-d driver
 * from every CPU that maps or unmaps DMA); the device's IOTLB walks it on a
 * miss (`walk`), with no lock, as the IOMMU hardware does.
 *
 * Geometry: 4 levels × 9 index bits over 4 KiB pages = 48-bit IOVA
 * (VT-d 4-level / x86-64 shape). Only 4 KiB leaves (no superpages).
 *
 * | level | covers per entry | IOVA bits indexing it |
 * |-------|------------------|-----------------------|
 * | 4 (root) | 512 GiB       | 47..39 |
 * | 3        | 1 GiB         | 38..30 |
 * | 2        | 2 MiB         | 29..21 |
 * | 1 (leaf) | 4 KiB         | 20..12 |
 *
 * Entry (one Int32, so one `Atomics.store` publishes it whole; VT-d's entries
 * are 64-bit, this model needs no more than 30 bits of frame):
 * | bits  | meaning |
 * |-------|---------|
 * | 0     | READ  (IOMMU_READ: the device may read memory through it)  |
 * | 1     | WRITE (IOMMU_WRITE: the device may write memory through it) |
 * | 31..2 | frame: leaf → host page frame (HPA / PAGE_SIZE_BYTES); non-leaf → table index in the pool |
 * An entry is present when READ or WRITE is set (as in VT-d); non-leaf
 * entries carry both bits. HPAs up to 4 TiB are representable.
 *
 * SAB layout (`tablePages` = N, all Int32 words, entries of 4 bytes so one
 * table = 512 × 4 B = 2 KiB):
 * | offset (bytes)   | size     | field | writer |
 * |------------------|----------|-------|--------|
 * | 0                | 4        | magic 0x10a9d7b1 | allocate |
 * | 4                | 4        | tablePages (N)   | allocate |
 * | 8                | 4        | tables in use (root included) | host |
 * | 12               | 4        | free-list head (table index, -1 = empty) | host |
 * | 16               | 4        | leaf entries present (mapped 4 KiB pages) | host |
 * | 20               | 4        | table-reuse sequence (bumped before a pool table is linked) | host |
 * | 24               | 4        | writer word (0 free, 1 a writer is inside `map`/`unmap`) | host |
 * | 28               | 36       | reserved | — |
 * | 64               | 4·N      | presentCount[t]: present entries in table t | host |
 * | 64 + 4·N         | 4·N      | nextFree[t]: free-list link of table t      | host |
 * | T = align64(64 + 8·N) | 2048·N | table t at T + 2048·t (table 0 is the root) | host (entries), device reads |
 *
 * Publication order: a table is all zeroes when it is linked into its parent
 * (pool tables are zero: a table goes back only once its last entry is
 * cleared) and every entry is written with one `Atomics.store`, so a
 * lock-free walker sees either "not present" or a complete path. Tables left
 * empty by an unmap go back to the pool (their parent's link is cleared
 * first; like `dma_pte_free_pagetable`). The kernel
 * frees such tables only after the IOTLB flush, so hardware never walks a
 * recycled table; here the walker gets the same guarantee from the reuse
 * sequence: it re-walks if a table was taken from the pool while it walked.
 * A walk racing the unmap of the same IOVA still sees the old translation or
 * none — the DMA-after-unmap window that IOTLB invalidation exists to close.
 *
 * Several writers. The kernel's VT-d driver writes PTEs without a lock
 * (`pfn_to_dma_pte` links a new table with cmpxchg; the IOVA allocator
 * hands each CPU a disjoint range). The pool's free list and counters here
 * are not lock-free, so `map` and `unmap` take the writer word for their
 * real-time duration only: a writer never waits for anything while inside,
 * no model time is charged for it, and it is not a lock of the model (no
 * lock_stat row). With one writer (vfio_iommu_type1) it is never contended.
 */

import { InputError, IOMMU_READ, IOMMU_WRITE, PAGE_SIZE_BYTES } from '@vmstack/shm';
import { PgtableJournal } from './pgtable-journal.js';

export const IOVA_BITS = 48;
/** One past the largest IOVA (the domain aperture, VT-d 4-level). */
export const IOVA_LIMIT = 2 ** IOVA_BITS;
export const PGTABLE_LEVELS = 4;
const ENTRIES_PER_TABLE = 512;
const TABLE_BYTES = ENTRIES_PER_TABLE * 4;
/** Largest host page frame an entry can hold (30 bits). */
const MAX_FRAME = 2 ** 30 - 1;
export const HPA_LIMIT = (MAX_FRAME + 1) * PAGE_SIZE_BYTES;
export const MAX_TABLE_PAGES = 1 << 20;

/** A leaf's permission: IOMMU_READ, IOMMU_WRITE or both (shm constants). */
export type IommuProt = 1 | 2 | 3;

const MAGIC = 0x10a9d7b1;
const H_MAGIC = 0;
const H_TABLE_PAGES = 1;
const H_IN_USE = 2;
const H_FREE_HEAD = 3;
const H_MAPPED = 4;
const H_REUSE_SEQ = 5;
const H_WRITER = 6;
/** CAS attempts on the writer word before parking on it */
const WRITER_SPINS = 64;
const HEADER_WORDS = 16;
const PRESENT = IOMMU_READ | IOMMU_WRITE;

const ENOMEM = 12;
const EEXIST = 17;

/** What `map` could not do; `errno` is the Linux error (positive) iommu_map would return. */
export class IoPgtableError extends Error {
  constructor(
    readonly errno: typeof ENOMEM | typeof EEXIST,
    message: string,
  ) {
    super(message);
    this.name = 'IoPgtableError';
  }
}

export interface IoPgtableHandle {
  readonly sab: SharedArrayBuffer;
  readonly tablePages: number;
  /** `vmstack attack`: a journal of every change in model time (pgtable-journal.ts) */
  readonly journal?: SharedArrayBuffer;
}

export interface IoPgtableWalk {
  /** host physical address of the walked IOVA (page frame + page offset) */
  readonly hpa: number;
  readonly prot: IommuProt;
  /** table levels read to reach the leaf */
  readonly levels: number;
}

function tablesBaseBytes(n: number): number {
  return Math.ceil((HEADER_WORDS * 4 + 8 * n) / 64) * 64;
}

export class IoPgtable {
  private readonly words: Int32Array;
  private readonly n: number;
  private readonly countBase: number; // i32 index of presentCount[0]
  private readonly nextBase: number; // i32 index of nextFree[0]
  private readonly tableBase: number; // i32 index of table 0 entry 0
  private readonly journal: PgtableJournal | null;

  /** Create the page-table region with a pool of `tablePages` tables (root included). */
  static allocate(opts: { tablePages: number }): IoPgtableHandle {
    const n = opts.tablePages;
    if (!Number.isInteger(n) || n < 1 || n > MAX_TABLE_PAGES) {
      throw new InputError('tablePages', n, `an integer from 1 to ${MAX_TABLE_PAGES} (host IOMMU page-table pool, root included; 4 tables map the first page)`);
    }
    const sab = new SharedArrayBuffer(tablesBaseBytes(n) + n * TABLE_BYTES);
    const w = new Int32Array(sab);
    w[H_MAGIC] = MAGIC;
    w[H_TABLE_PAGES] = n;
    w[H_IN_USE] = 1; // the root
    w[H_FREE_HEAD] = n > 1 ? 1 : -1;
    const nextBase = HEADER_WORDS + n;
    for (let t = 1; t < n; t++) w[nextBase + t] = t + 1 < n ? t + 1 : -1;
    w[nextBase] = -1;
    return { sab, tablePages: n };
  }

  /** Join a page-table region (host or device side). */
  static attach(handle: IoPgtableHandle): IoPgtable {
    return new IoPgtable(handle);
  }

  private constructor(readonly handle: IoPgtableHandle) {
    const w = new Int32Array(handle.sab);
    if (w.length < HEADER_WORDS || w[H_MAGIC] !== MAGIC) throw new RangeError('IoPgtable.attach: buffer is not an io-pgtable region');
    const n = w[H_TABLE_PAGES];
    if (n !== handle.tablePages || handle.sab.byteLength !== tablesBaseBytes(n) + n * TABLE_BYTES) {
      throw new RangeError(`IoPgtable.attach: region holds ${n} tables, handle says ${handle.tablePages}`);
    }
    this.words = w;
    this.n = n;
    this.countBase = HEADER_WORDS;
    this.nextBase = HEADER_WORDS + n;
    this.tableBase = tablesBaseBytes(n) / 4;
    this.journal = handle.journal ? new PgtableJournal(handle.journal) : null;
  }

  /** Tables taken from the pool, root included. */
  get tablePagesInUse(): number {
    return Atomics.load(this.words, H_IN_USE);
  }

  get tablePages(): number {
    return this.n;
  }

  /** 4 KiB leaf entries currently present. */
  get mappedPages(): number {
    return Atomics.load(this.words, H_MAPPED);
  }

  // ---- device side -------------------------------------------------------

  /**
   * Translate one IOVA the way the IOMMU's page walker does: root to leaf,
   * no lock. Returns null when any level is not present.
   */
  walk(iova: number): IoPgtableWalk | null {
    if (!(iova >= 0 && iova < IOVA_LIMIT)) return null;
    for (;;) {
      const seq = Atomics.load(this.words, H_REUSE_SEQ);
      const r = this.walkOnce(iova);
      if (Atomics.load(this.words, H_REUSE_SEQ) === seq) return r;
    }
  }

  private walkOnce(iova: number): IoPgtableWalk | null {
    const w = this.words;
    const pfn = Math.floor(iova / PAGE_SIZE_BYTES);
    let table = 0;
    let divisor = ENTRIES_PER_TABLE ** 3;
    for (let level = PGTABLE_LEVELS; level >= 1; level--) {
      const index = Math.floor(pfn / divisor) % ENTRIES_PER_TABLE;
      const e = Atomics.load(w, this.tableBase + table * ENTRIES_PER_TABLE + index);
      if ((e & PRESENT) === 0) return null;
      if (level === 1) {
        const frame = e >>> 2;
        return { hpa: frame * PAGE_SIZE_BYTES + (iova % PAGE_SIZE_BYTES), prot: (e & PRESENT) as IommuProt, levels: PGTABLE_LEVELS };
      }
      table = e >>> 2;
      divisor /= ENTRIES_PER_TABLE;
    }
    return null; // unreachable: level 1 returns
  }

  // ---- host side (one writer) --------------------------------------------

  /**
   * Map [iova, iova + sizeBytes) to [hpa, hpa + sizeBytes) with `prot`
   * (what `intel_iommu_map` → `__domain_mapping` does). All or nothing:
   * it first checks that no page is already mapped (EEXIST) and that the
   * pool holds every table it needs (ENOMEM), then writes.
   * @throws IoPgtableError (errno ENOMEM or EEXIST); RangeError for arguments
   *   that are not page-aligned or leave the 48-bit IOVA / 4 TiB HPA space
   */
  map(iova: number, hpa: number, sizeBytes: number, prot: IommuProt, atNs = 0): void {
    checkRange('map', iova, sizeBytes);
    if (!Number.isSafeInteger(hpa) || hpa < 0 || hpa % PAGE_SIZE_BYTES !== 0 || hpa + sizeBytes > HPA_LIMIT) {
      throw new RangeError(`io-pgtable map: hpa ${hpa} must be a 4 KiB-aligned address with hpa + size ≤ ${HPA_LIMIT}`);
    }
    if (prot !== 1 && prot !== 2 && prot !== 3) throw new RangeError(`io-pgtable map: prot ${prot} must be READ (1), WRITE (2) or both (3)`);
    this.lockWriters();
    try {
      this.mapLocked(iova, hpa, sizeBytes, prot);
      this.journal?.record(iova, sizeBytes, hpa, prot, atNs);
    } finally {
      this.unlockWriters();
    }
  }

  private mapLocked(iova: number, hpa: number, sizeBytes: number, prot: IommuProt): void {
    const first = iova / PAGE_SIZE_BYTES;
    const end = first + sizeBytes / PAGE_SIZE_BYTES;
    const busy = this.firstPresent(first, end);
    if (busy >= 0) throw new IoPgtableError(EEXIST, `io-pgtable map: IOVA 0x${(busy * PAGE_SIZE_BYTES).toString(16)} is already mapped`);
    const need = this.missingTables(first, end);
    const free = this.n - this.tablePagesInUse;
    if (need > free) throw new IoPgtableError(ENOMEM, `io-pgtable map: needs ${need} more page-table pages, ${free} free of ${this.n}`);

    const w = this.words;
    const frame0 = hpa / PAGE_SIZE_BYTES;
    let leafTable = -1;
    let leafBlock = -1;
    for (let pfn = first; pfn < end; pfn++) {
      const block = Math.floor(pfn / ENTRIES_PER_TABLE);
      if (block !== leafBlock) {
        leafTable = this.leafTableFor(pfn);
        leafBlock = block;
      }
      const slot = this.tableBase + leafTable * ENTRIES_PER_TABLE + (pfn % ENTRIES_PER_TABLE);
      Atomics.store(w, slot, ((frame0 + (pfn - first)) << 2) | prot);
      w[this.countBase + leafTable]++;
    }
    Atomics.add(w, H_MAPPED, end - first);
  }

  /**
   * Clear every present leaf in [iova, iova + sizeBytes) and return the
   * bytes that were mapped there; tables left empty go back to the pool.
   */
  unmap(iova: number, sizeBytes: number, atNs = 0): number {
    checkRange('unmap', iova, sizeBytes);
    this.lockWriters();
    try {
      const cleared = this.unmapLocked(iova, sizeBytes);
      this.journal?.record(iova, sizeBytes, -1, 0, atNs);
      return cleared;
    } finally {
      this.unlockWriters();
    }
  }

  /** Take the writer word (see "Several writers" above): spin briefly, then park on it. */
  private lockWriters(): void {
    const w = this.words;
    for (let tries = 0; Atomics.compareExchange(w, H_WRITER, 0, 1) !== 0; tries++) {
      if (tries >= WRITER_SPINS) Atomics.wait(w, H_WRITER, 1, 1);
    }
  }

  private unlockWriters(): void {
    Atomics.store(this.words, H_WRITER, 0);
    Atomics.notify(this.words, H_WRITER, 1);
  }

  private unmapLocked(iova: number, sizeBytes: number): number {
    const w = this.words;
    const first = iova / PAGE_SIZE_BYTES;
    const end = first + sizeBytes / PAGE_SIZE_BYTES;
    let cleared = 0;
    let pfn = first;
    while (pfn < end) {
      const blockEnd = Math.min(end, (Math.floor(pfn / ENTRIES_PER_TABLE) + 1) * ENTRIES_PER_TABLE);
      const path = this.path(pfn);
      if (path[1] < 0) {
        pfn = Math.min(end, absentEnd(pfn, path)); // nothing mapped below the missing table
        continue;
      }
      const leaf = path[1];
      const blockPfn = pfn;
      for (; pfn < blockEnd; pfn++) {
        const slot = this.tableBase + leaf * ENTRIES_PER_TABLE + (pfn % ENTRIES_PER_TABLE);
        if ((w[slot] & PRESENT) === 0) continue;
        Atomics.store(w, slot, 0);
        w[this.countBase + leaf]--;
        cleared++;
      }
      this.freeEmpty(blockPfn, path);
    }
    if (cleared > 0) Atomics.sub(w, H_MAPPED, cleared);
    return cleared * PAGE_SIZE_BYTES;
  }

  /**
   * Tables on the walk to `pfn`: [_, level-1 table, level-2 table, level-3 table, root],
   * -1 where the walk stops.
   */
  private path(pfn: number): number[] {
    const w = this.words;
    const p = [-1, -1, -1, -1, 0];
    let table = 0;
    let divisor = ENTRIES_PER_TABLE ** 3;
    for (let level = PGTABLE_LEVELS; level >= 2; level--) {
      const e = w[this.tableBase + table * ENTRIES_PER_TABLE + (Math.floor(pfn / divisor) % ENTRIES_PER_TABLE)];
      if ((e & PRESENT) === 0) return p;
      table = e >>> 2;
      p[level - 1] = table;
      divisor /= ENTRIES_PER_TABLE;
    }
    return p;
  }

  /** Return empty tables on the walk to `pfn` (`path`) to the pool, lowest level first; never the root. */
  private freeEmpty(pfn: number, path: number[]): void {
    const w = this.words;
    let divisor = ENTRIES_PER_TABLE;
    for (let level = 1; level <= 3; level++) {
      const t = path[level];
      if (t < 0 || w[this.countBase + t] !== 0) return;
      const parent = path[level + 1];
      // unlink first, then recycle: a walker can no longer reach t through the parent
      Atomics.store(w, this.tableBase + parent * ENTRIES_PER_TABLE + (Math.floor(pfn / divisor) % ENTRIES_PER_TABLE), 0);
      w[this.countBase + parent]--;
      w[this.nextBase + t] = w[H_FREE_HEAD];
      w[H_FREE_HEAD] = t;
      Atomics.sub(w, H_IN_USE, 1);
      divisor *= ENTRIES_PER_TABLE;
    }
  }

  /** The level-1 table for `pfn`, creating missing tables on the way (pool checked by the caller). */
  private leafTableFor(pfn: number): number {
    const w = this.words;
    let table = 0;
    let divisor = ENTRIES_PER_TABLE ** 3;
    for (let level = PGTABLE_LEVELS; level >= 2; level--) {
      const slot = this.tableBase + table * ENTRIES_PER_TABLE + (Math.floor(pfn / divisor) % ENTRIES_PER_TABLE);
      const e = w[slot];
      if ((e & PRESENT) !== 0) {
        table = e >>> 2;
      } else {
        const child = this.takeTable();
        Atomics.store(w, slot, (child << 2) | PRESENT);
        w[this.countBase + table]++;
        table = child;
      }
      divisor /= ENTRIES_PER_TABLE;
    }
    return table;
  }

  private takeTable(): number {
    const w = this.words;
    const t = w[H_FREE_HEAD];
    if (t < 0) throw new IoPgtableError(ENOMEM, 'io-pgtable: page-table pool exhausted');
    w[H_FREE_HEAD] = w[this.nextBase + t];
    w[this.nextBase + t] = -1;
    Atomics.add(w, H_IN_USE, 1);
    Atomics.add(w, H_REUSE_SEQ, 1); // before anything links or fills t
    return t;
  }

  /** First pfn in [first, end) with a present leaf, or -1. Skips absent 2 MiB blocks. */
  private firstPresent(first: number, end: number): number {
    const w = this.words;
    let pfn = first;
    while (pfn < end) {
      const blockEnd = Math.min(end, (Math.floor(pfn / ENTRIES_PER_TABLE) + 1) * ENTRIES_PER_TABLE);
      const path = this.path(pfn);
      const leaf = path[1];
      if (leaf < 0) {
        pfn = absentEnd(pfn, path);
        continue;
      }
      for (; pfn < blockEnd; pfn++) {
        if ((w[this.tableBase + leaf * ENTRIES_PER_TABLE + (pfn % ENTRIES_PER_TABLE)] & PRESENT) !== 0) return pfn;
      }
    }
    return -1;
  }

  /** Tables a map of [first, end) would have to take from the pool. */
  private missingTables(first: number, end: number): number {
    let missing = 0;
    let lastGib = -1;
    let lastTib = -1;
    for (let block = Math.floor(first / ENTRIES_PER_TABLE); block <= Math.floor((end - 1) / ENTRIES_PER_TABLE); block++) {
      const gib = Math.floor(block / ENTRIES_PER_TABLE);
      const tib = Math.floor(gib / ENTRIES_PER_TABLE);
      const p = this.path(block * ENTRIES_PER_TABLE);
      if (p[3] < 0 && tib !== lastTib) {
        missing++;
        lastTib = tib;
      }
      if (p[2] < 0 && gib !== lastGib) {
        missing++;
        lastGib = gib;
      }
      if (p[1] < 0) missing++;
    }
    return missing;
  }
}

/** First pfn after the region left unmapped by the missing table on `path` (the walk to `pfn`). */
function absentEnd(pfn: number, path: number[]): number {
  const span = path[3] < 0 ? ENTRIES_PER_TABLE ** 3 : path[2] < 0 ? ENTRIES_PER_TABLE ** 2 : ENTRIES_PER_TABLE;
  return (Math.floor(pfn / span) + 1) * span;
}

function checkRange(op: string, iova: number, sizeBytes: number): void {
  if (!Number.isSafeInteger(iova) || iova < 0 || iova % PAGE_SIZE_BYTES !== 0) {
    throw new RangeError(`io-pgtable ${op}: iova ${iova} must be a 4 KiB-aligned address`);
  }
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % PAGE_SIZE_BYTES !== 0) {
    throw new RangeError(`io-pgtable ${op}: size ${sizeBytes} must be a positive multiple of 4 KiB`);
  }
  if (iova + sizeBytes > IOVA_LIMIT) throw new RangeError(`io-pgtable ${op}: [0x${iova.toString(16)}, +${sizeBytes}) leaves the 48-bit IOVA space`);
}
