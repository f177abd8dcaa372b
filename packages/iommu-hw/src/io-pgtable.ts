/**
 * Host IOMMU page tables: a VT-d-like second-level table for one domain, kept
 * in its own SharedArrayBuffer. The host's driver writes it (`map`, `unmap`:
 * vfio_iommu_type1 under `iommu->lock`, or a bare-metal kernel's VT-d driver
 * from every CPU that maps or unmaps DMA); the device's IOTLB walks it on a
 * miss (`walk`), with no lock, as the IOMMU hardware does.
 *
 * Geometry: 4 levels × 9 index bits over 4 KiB pages = 48-bit IOVA
 * (VT-d 4-level / x86-64 shape). Leaves are 4 KiB entries in level-1
 * tables, or superpages: a level-2 entry mapping 2 MiB or a level-3 entry
 * mapping 1 GiB (VT-d's PS bit), written where the caller allows them and
 * the IOVA, the HPA and the rest of the range are aligned on the superpage
 * (what `__domain_mapping` does with `hardware_largepage_caps`).
 *
 * | level | covers per entry | IOVA bits indexing it |
 * |-------|------------------|-----------------------|
 * | 4 (root) | 512 GiB       | 47..39 |
 * | 3        | 1 GiB         | 38..30 |
 * | 2        | 2 MiB         | 29..21 |
 * | 1 (leaf) | 4 KiB         | 20..12 |
 *
 * Entry (one Int32, so one `Atomics.store` publishes it whole; VT-d's entries
 * are 64-bit, this model needs no more than 29 bits of frame):
 * | bits  | meaning |
 * |-------|---------|
 * | 0     | READ  (IOMMU_READ: the device may read memory through it)  |
 * | 1     | WRITE (IOMMU_WRITE: the device may write memory through it) |
 * | 2     | PS: a level-2 or level-3 entry that is a leaf (2 MiB / 1 GiB superpage) |
 * | 31..3 | frame: leaf → host page frame of its first 4 KiB (HPA / PAGE_SIZE_BYTES); non-leaf → table index in the pool |
 * An entry is present when READ or WRITE is set (as in VT-d); non-leaf
 * entries carry both bits. HPAs up to 2 TiB are representable.
 *
 * SAB layout (`tablePages` = N, all Int32 words, entries of 4 bytes so one
 * table = 512 × 4 B = 2 KiB):
 * | offset (bytes)   | size     | field | writer |
 * |------------------|----------|-------|--------|
 * | 0                | 4        | magic 0x10a9d7b1 | allocate |
 * | 4                | 4        | tablePages (N)   | allocate |
 * | 8                | 4        | tables in use (root included) | host |
 * | 12               | 4        | free-list head (table index, -1 = empty) | host |
 * | 16               | 4        | 4 KiB pages mapped (a 2 MiB leaf counts 512) | host |
 * | 20               | 4        | table-reuse sequence (bumped before a pool table is linked) | host |
 * | 24               | 4        | writer word (0 free, 1 a writer is inside `map`/`unmap`) | host |
 * | 28               | 4        | leaf entries present, any level | host |
 * | 32               | 32       | reserved | — |
 * | 64               | 4·N      | presentCount[t]: present entries in table t | host |
 * | 64 + 4·N         | 4·N      | nextFree[t]: free-list link of table t      | host |
 * | T = align64(64 + 8·N) | 2048·N | table t at T + 2048·t (table 0 is the root) | host (entries), device reads |
 *
 * Publication order: a table is all zeroes when it is linked into its parent
 * (pool tables are zero: a table goes back only once its last entry is
 * cleared) and every entry is written with one `Atomics.store`, so a
 * lock-free walker sees either "not present" or a complete path. Tables left
 * empty by an unmap go back to the pool (their parent's link is cleared
 * first; like `dma_pte_free_pagetable`). An unmap never splits a superpage:
 * a leaf the range touches is cleared whole and its bytes are counted, as
 * `intel_iommu_unmap` rounds the size up to the large page it finds. The kernel
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

import { allocateShared, InputError, IOMMU_READ, IOMMU_WRITE, PAGE_SIZE_BYTES } from '@vmstack/shm';
import { PgtableJournal } from './pgtable-journal.js';

export const IOVA_BITS = 48;
/** One past the largest IOVA (the domain aperture, VT-d 4-level). */
export const IOVA_LIMIT = 2 ** IOVA_BITS;
export const PGTABLE_LEVELS = 4;
const ENTRIES_PER_TABLE = 512;
const TABLE_BYTES = ENTRIES_PER_TABLE * 4;
/** Largest host page frame an entry can hold (29 bits). */
const MAX_FRAME = 2 ** 29 - 1;
export const HPA_LIMIT = (MAX_FRAME + 1) * PAGE_SIZE_BYTES;
export const MAX_TABLE_PAGES = 1 << 20;
/** The leaf sizes the table can hold: 4 KiB (level 1), 2 MiB (level 2), 1 GiB (level 3). */
export const SUPERPAGE_2M_BYTES = 2 * 1024 * 1024;
export const SUPERPAGE_1G_BYTES = 1024 * 1024 * 1024;
/** 4 KiB pages an entry of each level covers, indexed by level (1 to 4) */
const SPAN_PAGES = [0, 1, ENTRIES_PER_TABLE, ENTRIES_PER_TABLE ** 2, ENTRIES_PER_TABLE ** 3];

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
const H_LEAVES = 7;
/** CAS attempts on the writer word before parking on it */
const WRITER_SPINS = 64;
const HEADER_WORDS = 16;
const PRESENT = IOMMU_READ | IOMMU_WRITE;
/** VT-d's PS bit: this level-2 / level-3 entry is a leaf */
const PS = 4;
const FRAME_SHIFT = 3;

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
  /** host physical address of the walked IOVA (leaf frame + offset in the leaf) */
  readonly hpa: number;
  readonly prot: IommuProt;
  /** table levels read to reach the leaf (4 for a 4 KiB leaf, 3 for 2 MiB, 2 for 1 GiB) */
  readonly levels: number;
  /** the level the leaf is at: 1 (4 KiB), 2 (2 MiB superpage) or 3 (1 GiB superpage) */
  readonly leafLevel: number;
  /** bytes the leaf maps: 4096, 2 MiB or 1 GiB */
  readonly pageSizeBytes: number;
}

/** What `unmapEntries` cleared. */
export interface IoPgtableUnmapped {
  /** bytes the cleared leaves mapped (more than asked when the range cut into a superpage) */
  readonly sizeBytes: number;
  /** leaf entries cleared */
  readonly leafEntries: number;
}

function tablesBaseBytes(n: number): number {
  return Math.ceil((HEADER_WORDS * 4 + 8 * n) / 64) * 64;
}

/** The leaf level for a largest leaf of `maxLeafBytes`: 1, 2 or 3. */
function maxLeafLevel(maxLeafBytes: number): number {
  if (maxLeafBytes === PAGE_SIZE_BYTES) return 1;
  if (maxLeafBytes === SUPERPAGE_2M_BYTES) return 2;
  if (maxLeafBytes === SUPERPAGE_1G_BYTES) return 3;
  throw new RangeError(`io-pgtable map: largest leaf ${maxLeafBytes} must be 4096, 2 MiB or 1 GiB`);
}

/** The largest leaf (level ≤ maxLevel) that fits at `pfn` mapping `frame`, with the range ending at `end`. */
function leafLevelAt(pfn: number, frame: number, end: number, maxLevel: number): number {
  for (let lv = maxLevel; lv >= 2; lv--) {
    const span = SPAN_PAGES[lv];
    if (pfn % span === 0 && frame % span === 0 && pfn + span <= end) return lv;
  }
  return 1;
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
    const sab = allocateShared(tablesBaseBytes(n) + n * TABLE_BYTES);
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

  /** 4 KiB pages mapped (a 2 MiB leaf counts 512, a 1 GiB leaf 262144). */
  get mappedPages(): number {
    return Atomics.load(this.words, H_MAPPED);
  }

  /** Leaf entries present, at any level (what an IOTLB would cache one entry each for). */
  get leafEntries(): number {
    return Atomics.load(this.words, H_LEAVES);
  }

  // ---- device side -------------------------------------------------------

  /**
   * Translate one IOVA the way the IOMMU's page walker does: root to leaf,
   * no lock. Returns null when any level is not present; else the HPA and
   * the leaf's level and size.
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
    for (let level = PGTABLE_LEVELS; level >= 1; level--) {
      const span = SPAN_PAGES[level];
      const e = Atomics.load(w, this.tableBase + table * ENTRIES_PER_TABLE + (Math.floor(pfn / span) % ENTRIES_PER_TABLE));
      if ((e & PRESENT) === 0) return null;
      if (level === 1 || (e & PS) !== 0) {
        const leafBytes = span * PAGE_SIZE_BYTES;
        return {
          hpa: (e >>> FRAME_SHIFT) * PAGE_SIZE_BYTES + (iova % leafBytes),
          prot: (e & PRESENT) as IommuProt,
          levels: PGTABLE_LEVELS - level + 1,
          leafLevel: level,
          pageSizeBytes: leafBytes,
        };
      }
      table = e >>> FRAME_SHIFT;
    }
    return null; // unreachable: level 1 returns
  }

  // ---- host side (one writer) --------------------------------------------

  /**
   * Map [iova, iova + sizeBytes) to [hpa, hpa + sizeBytes) with `prot`
   * (what `intel_iommu_map` → `__domain_mapping` does), with leaves up to
   * `maxLeafBytes` (4096, 2 MiB or 1 GiB: the largest page the caller
   * knows to be physically contiguous) wherever IOVA, HPA and the rest of
   * the range are aligned on them. All or nothing: it first checks that no
   * page is already mapped (EEXIST) and that the pool holds every table it
   * needs (ENOMEM), then writes. Returns the leaf entries written.
   * @throws IoPgtableError (errno ENOMEM or EEXIST); RangeError for arguments
   *   that are not page-aligned or leave the 48-bit IOVA / 2 TiB HPA space
   */
  map(iova: number, hpa: number, sizeBytes: number, prot: IommuProt, maxLeafBytes = PAGE_SIZE_BYTES, atNs = 0): number {
    checkRange('map', iova, sizeBytes);
    if (!Number.isSafeInteger(hpa) || hpa < 0 || hpa % PAGE_SIZE_BYTES !== 0 || hpa + sizeBytes > HPA_LIMIT) {
      throw new RangeError(`io-pgtable map: hpa ${hpa} must be a 4 KiB-aligned address with hpa + size ≤ ${HPA_LIMIT}`);
    }
    if (prot !== 1 && prot !== 2 && prot !== 3) throw new RangeError(`io-pgtable map: prot ${prot} must be READ (1), WRITE (2) or both (3)`);
    const maxLevel = maxLeafLevel(maxLeafBytes);
    this.lockWriters();
    try {
      const leaves = this.mapLocked(iova, hpa, sizeBytes, prot, maxLevel);
      this.journal?.record(iova, sizeBytes, hpa, prot, atNs);
      return leaves;
    } finally {
      this.unlockWriters();
    }
  }

  private mapLocked(iova: number, hpa: number, sizeBytes: number, prot: IommuProt, maxLevel: number): number {
    const first = iova / PAGE_SIZE_BYTES;
    const end = first + sizeBytes / PAGE_SIZE_BYTES;
    const frame0 = hpa / PAGE_SIZE_BYTES;
    const busy = this.firstPresentIn(0, PGTABLE_LEVELS, 0, first, end);
    if (busy >= 0) throw new IoPgtableError(EEXIST, `io-pgtable map: IOVA 0x${(busy * PAGE_SIZE_BYTES).toString(16)} is already mapped`);
    const need = this.missingTables(first, end, frame0, maxLevel);
    const free = this.n - this.tablePagesInUse;
    if (need > free) throw new IoPgtableError(ENOMEM, `io-pgtable map: needs ${need} more page-table pages, ${free} free of ${this.n}`);

    const w = this.words;
    let leaves = 0;
    let pfn = first;
    while (pfn < end) {
      const frame = frame0 + (pfn - first);
      const lv = leafLevelAt(pfn, frame, end, maxLevel);
      const table = this.tableFor(pfn, lv);
      const span = SPAN_PAGES[lv];
      if (lv === 1) {
        // the rest of this level-1 table's span takes 4 KiB leaves: a superpage starts only on its boundary
        const blockEnd = Math.min(end, (Math.floor(pfn / ENTRIES_PER_TABLE) + 1) * ENTRIES_PER_TABLE);
        for (; pfn < blockEnd; pfn++) {
          Atomics.store(w, this.tableBase + table * ENTRIES_PER_TABLE + (pfn % ENTRIES_PER_TABLE), ((frame0 + (pfn - first)) << FRAME_SHIFT) | prot);
          w[this.countBase + table]++;
          leaves++;
        }
      } else {
        Atomics.store(w, this.tableBase + table * ENTRIES_PER_TABLE + (Math.floor(pfn / span) % ENTRIES_PER_TABLE), (frame << FRAME_SHIFT) | PS | prot);
        w[this.countBase + table]++;
        leaves++;
        pfn += span;
      }
    }
    Atomics.add(w, H_MAPPED, end - first);
    Atomics.add(w, H_LEAVES, leaves);
    return leaves;
  }

  /**
   * Clear every present leaf in [iova, iova + sizeBytes) and return the
   * bytes that were mapped there; tables left empty go back to the pool.
   * A superpage the range touches is cleared whole (never split).
   */
  unmap(iova: number, sizeBytes: number, atNs = 0): number {
    return this.unmapEntries(iova, sizeBytes, atNs).sizeBytes;
  }

  /** `unmap`, also telling how many leaf entries it cleared. */
  unmapEntries(iova: number, sizeBytes: number, atNs = 0): IoPgtableUnmapped {
    checkRange('unmap', iova, sizeBytes);
    this.lockWriters();
    try {
      const first = iova / PAGE_SIZE_BYTES;
      const acc = { pages: 0, leaves: 0 };
      this.clearIn(0, PGTABLE_LEVELS, 0, first, first + sizeBytes / PAGE_SIZE_BYTES, acc);
      if (acc.pages > 0) {
        Atomics.sub(this.words, H_MAPPED, acc.pages);
        Atomics.sub(this.words, H_LEAVES, acc.leaves);
      }
      this.journal?.record(iova, sizeBytes, -1, 0, atNs);
      return { sizeBytes: acc.pages * PAGE_SIZE_BYTES, leafEntries: acc.leaves };
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

  /**
   * Clear the leaves of `table` (holding level-`level` entries, its first
   * entry at `basePfn`) that [first, end) touches, recursing into tables
   * below and returning those left empty to the pool (unlinked first).
   */
  private clearIn(table: number, level: number, basePfn: number, first: number, end: number, acc: { pages: number; leaves: number }): void {
    const w = this.words;
    const span = SPAN_PAGES[level];
    const i0 = Math.floor((first - basePfn) / span);
    const i1 = Math.floor((end - 1 - basePfn) / span);
    for (let i = i0; i <= i1; i++) {
      const slot = this.tableBase + table * ENTRIES_PER_TABLE + i;
      const e = w[slot];
      if ((e & PRESENT) === 0) continue;
      if (level === 1 || (e & PS) !== 0) {
        Atomics.store(w, slot, 0);
        w[this.countBase + table]--;
        acc.pages += span;
        acc.leaves++;
        continue;
      }
      const child = e >>> FRAME_SHIFT;
      const childBase = basePfn + i * span;
      this.clearIn(child, level - 1, childBase, Math.max(first, childBase), Math.min(end, childBase + span), acc);
      if (w[this.countBase + child] === 0) {
        // unlink first, then recycle: a walker can no longer reach the child through this table
        Atomics.store(w, slot, 0);
        w[this.countBase + table]--;
        w[this.nextBase + child] = w[H_FREE_HEAD];
        w[H_FREE_HEAD] = child;
        Atomics.sub(w, H_IN_USE, 1);
      }
    }
  }

  /**
   * Tables on the walk to `pfn`, indexed by the level of the entries they
   * hold: [_, level-1 table, level-2 table, level-3 table, root]; -1 where
   * the walk stops.
   */
  private path(pfn: number): number[] {
    const w = this.words;
    const p = [-1, -1, -1, -1, 0];
    let table = 0;
    for (let level = PGTABLE_LEVELS; level >= 2; level--) {
      const e = w[this.tableBase + table * ENTRIES_PER_TABLE + (Math.floor(pfn / SPAN_PAGES[level]) % ENTRIES_PER_TABLE)];
      if ((e & PRESENT) === 0 || (e & PS) !== 0) return p;
      table = e >>> FRAME_SHIFT;
      p[level - 1] = table;
    }
    return p;
  }

  /** The table holding level-`leafLevel` entries for `pfn`, creating missing tables on the way (pool checked by the caller). */
  private tableFor(pfn: number, leafLevel: number): number {
    const w = this.words;
    let table = 0;
    for (let level = PGTABLE_LEVELS; level > leafLevel; level--) {
      const slot = this.tableBase + table * ENTRIES_PER_TABLE + (Math.floor(pfn / SPAN_PAGES[level]) % ENTRIES_PER_TABLE);
      const e = w[slot];
      if ((e & PRESENT) !== 0) {
        table = e >>> FRAME_SHIFT;
      } else {
        const child = this.takeTable();
        Atomics.store(w, slot, (child << FRAME_SHIFT) | PRESENT);
        w[this.countBase + table]++;
        table = child;
      }
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

  /** First pfn in [first, end) under a present leaf of `table` (level-`level` entries from `basePfn`), or -1. Skips absent subtrees. */
  private firstPresentIn(table: number, level: number, basePfn: number, first: number, end: number): number {
    const w = this.words;
    const span = SPAN_PAGES[level];
    const i0 = Math.floor((first - basePfn) / span);
    const i1 = Math.floor((end - 1 - basePfn) / span);
    for (let i = i0; i <= i1; i++) {
      const e = w[this.tableBase + table * ENTRIES_PER_TABLE + i];
      if ((e & PRESENT) === 0) continue;
      const entryBase = basePfn + i * span;
      if (level === 1 || (e & PS) !== 0) return Math.max(first, entryBase);
      const r = this.firstPresentIn(e >>> FRAME_SHIFT, level - 1, entryBase, Math.max(first, entryBase), Math.min(end, entryBase + span));
      if (r >= 0) return r;
    }
    return -1;
  }

  /** Tables a map of [first, end) from `frame0` with leaves up to level `maxLevel` would take from the pool. */
  private missingTables(first: number, end: number, frame0: number, maxLevel: number): number {
    const counted = new Set<number>();
    let missing = 0;
    let pfn = first;
    while (pfn < end) {
      const lv = leafLevelAt(pfn, frame0 + (pfn - first), end, maxLevel);
      const p = this.path(pfn);
      for (let k = lv; k < PGTABLE_LEVELS; k++) {
        if (p[k] >= 0) continue;
        // the level-k table covering pfn, named by its level and the index of its span
        const key = k * 2 ** 40 + Math.floor(pfn / (SPAN_PAGES[k] * ENTRIES_PER_TABLE));
        if (!counted.has(key)) {
          counted.add(key);
          missing++;
        }
      }
      pfn = lv === 1 ? Math.min(end, (Math.floor(pfn / ENTRIES_PER_TABLE) + 1) * ENTRIES_PER_TABLE) : pfn + SPAN_PAGES[lv];
    }
    return missing;
  }
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
