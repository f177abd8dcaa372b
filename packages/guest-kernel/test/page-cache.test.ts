import { LockTable, ModelClock, mulberry32Float, PAGE_SIZE_BYTES } from '@vmstack/shm';
import test from 'ava';
import { RandomMap } from '../src/fio/random-map.js';
import { PAGE_CACHE_MAX_REQUEST_PAGES } from '../src/job-spec.js';
import { PageAllocator } from '../src/mm/page-alloc.js';
import { get_init_ra_size, get_next_ra_size, PageCache, type PageCacheBlockIo, VM_READAHEAD_PAGES } from '../src/mm/page-cache.js';

const COSTS = { memcpyBytesPerNs: 12, pageCachePerPageNs: 50, guestPageAllocNs: 100 };
const RAM_BYTES = 64 * 1024 * 1024;

interface Bio {
  isRead: boolean;
  lba: number;
  pages: number;
  gpas: readonly number[];
  done: (status: number) => void;
}

/**
 * A page cache over a fake drive: requests complete when the cache waits,
 * a read fills each page with its LBA, a write stores the page's first word
 * as the block's content.
 */
function setup(o: { limitPages?: number; fadvise?: 'sequential' | 'random' | 'none'; endLba?: number; maxInflight?: number; failWrites?: boolean } = {}) {
  const handle = PageAllocator.allocate({ ramBytes: RAM_BYTES, heapStartBytes: 1024 * 1024 });
  const locks = LockTable.allocate(PageAllocator.lockSpecs(handle));
  const pages = PageAllocator.attach(handle, 0, LockTable.attach(locks, 0), COSTS);
  const clock = new ModelClock('virtual');
  const mem = new Uint8Array(RAM_BYTES);
  const dv = new DataView(mem.buffer);
  const bios: Bio[] = [];
  const pending: Bio[] = [];
  const drive = new Map<number, number>();
  const io: PageCacheBlockIo = {
    submit_bio(isRead, lba, gpas, done) {
      if (pending.length >= (o.maxInflight ?? 32)) return false;
      const b = { isRead, lba, pages: gpas.length, gpas: [...gpas], done };
      bios.push(b);
      pending.push(b);
      return true;
    },
    wait() {
      clock.charge(10_000);
      for (const b of pending.splice(0)) {
        const fail = !b.isRead && o.failWrites === true;
        b.gpas.forEach((gpa, k) => {
          if (b.isRead) dv.setUint32(gpa, drive.get(b.lba + k) ?? b.lba + k, true);
          else if (!fail) drive.set(b.lba + k, dv.getUint32(gpa, true));
        });
        b.done(fail ? 6 : 0);
      }
    },
  };
  const pc = new PageCache(io, pages, clock, COSTS, mem, {
    limitPages: o.limitPages ?? 4096,
    endLba: o.endLba ?? 1 << 20,
    fadvise: o.fadvise ?? 'sequential',
    rng: mulberry32Float(7),
  });
  // one user page to read into and write from
  const user = pages.alloc_pages(0);
  return { pc, bios, pending, drive, mem, dv, user, pages, clock };
}

test('get_init_ra_size and get_next_ra_size follow mm/readahead.c', (t) => {
  // 128 KiB maximum (32 pages): up to a 32nd of it ×4, up to a quarter ×2 (rounded up to a power of two), else the maximum
  t.deepEqual(
    [1, 2, 3, 4, 8, 9, 16, 32].map((n) => get_init_ra_size(n, 32)),
    [4, 4, 8, 8, 16, 32, 32, 32],
  );
  // ×4 below a sixteenth of the maximum, ×2 up to half, then the maximum
  t.deepEqual(
    [1, 2, 4, 8, 16, 32].map((n) => get_next_ra_size(n, 32)),
    [4, 4, 8, 16, 32, 32],
  );
  t.is(VM_READAHEAD_PAGES, 32);
});

test('sequential 4 KiB reads: the readahead window ramps 4, 8, 16, 32, 64 pages (fadvise sequential: 2 × 128 KiB) and stays', (t) => {
  const { pc, bios, user } = setup();
  for (let i = 0; i < 512; i++) t.true(pc.filemap_read(i, 1, [user]));
  t.true(
    bios.every((b) => b.isRead),
    'only reads',
  );
  t.deepEqual(
    bios.slice(0, 7).map((b) => [b.lba, b.pages]),
    [
      [0, 4],
      [4, 8],
      [12, 16],
      [28, 32],
      [60, 64],
      [124, 64],
      [188, 64],
    ],
  );
  t.is(pc.stats.misses, 1, 'only the first read misses: readahead stays ahead of the reader');
  t.is(
    pc.stats.readPages,
    bios.reduce((s, b) => s + b.pages, 0),
  );
});

test('without the fadvise hint the window stops at read_ahead_kb (32 pages); with POSIX_FADV_RANDOM each read reads just its pages', (t) => {
  const plain = setup({ fadvise: 'none' });
  for (let i = 0; i < 256; i++) plain.pc.filemap_read(i, 1, [plain.user]);
  t.is(Math.max(...plain.bios.map((b) => b.pages)), 32);
  const random = setup({ fadvise: 'random' });
  for (const i of [700, 3, 90, 91, 92, 5000]) random.pc.filemap_read(i, 1, [random.user]);
  t.deepEqual(
    random.bios.map((b) => [b.lba, b.pages]),
    [
      [700, 1],
      [3, 1],
      [90, 1],
      [91, 1],
      [92, 1],
      [5000, 1],
    ],
  );
});

test('a read copies the page to the user buffer; a cached page is not read again', (t) => {
  const { pc, bios, dv, user } = setup({ fadvise: 'random' });
  t.true(pc.filemap_read(42, 1, [user]));
  t.is(dv.getUint32(user, true), 42);
  dv.setUint32(user, 0, true);
  t.true(pc.filemap_read(42, 1, [user]));
  t.is(dv.getUint32(user, true), 42);
  t.is(bios.length, 1);
  t.is(pc.stats.hits, 1);
});

test('writes stay dirty in the cache until fsync writes them back in index order, contiguous runs in one request each', (t) => {
  const { pc, bios, drive, dv, user } = setup();
  for (const i of [10, 11, 12, 20, 13, 21]) {
    dv.setUint32(user, 1000 + i, true);
    pc.generic_perform_write(i, 1, [user]);
  }
  t.is(bios.length, 0, 'nothing written back below the background threshold');
  t.is(pc.dirtyPages, 6);
  t.true(pc.vfs_fsync_range());
  t.deepEqual(
    bios.map((b) => [b.isRead, b.lba, b.pages]),
    [
      [false, 10, 4],
      [false, 20, 2],
    ],
  );
  t.is(pc.dirtyPages, 0);
  t.deepEqual(
    [10, 11, 12, 13, 20, 21].map((i) => drive.get(i)),
    [1010, 1011, 1012, 1013, 1020, 1021],
  );
  // dropped from the cache, the data comes back from the drive
  pc.invalidate_mapping_pages();
  t.is(pc.cachedPages, 0);
  t.true(pc.filemap_read(12, 1, [user]));
  t.is(dv.getUint32(user, true), 1012);
});

test('a writeback request holds at most 127 pages (the NVMe driver segment limit)', (t) => {
  const { pc, bios, user } = setup();
  for (let i = 0; i < 300; i++) pc.generic_perform_write(i, 1, [user]);
  pc.vfs_fsync_range();
  t.deepEqual(
    bios.map((b) => b.pages),
    [PAGE_CACHE_MAX_REQUEST_PAGES, PAGE_CACHE_MAX_REQUEST_PAGES, 300 - 2 * PAGE_CACHE_MAX_REQUEST_PAGES],
  );
});

test('dirty thresholds: past 10% of the cache the flusher writes back, and the writer never holds more than 20% dirty', (t) => {
  const { pc, bios, user } = setup({ limitPages: 1000 });
  t.is(pc.backgroundThreshPages, 100);
  t.is(pc.dirtyThreshPages, 200);
  let maxDirty = 0;
  for (let i = 0; i < 900; i++) {
    pc.generic_perform_write(i, 1, [user]);
    maxDirty = Math.max(maxDirty, pc.dirtyPages);
  }
  t.true(bios.length > 0, 'the flusher wrote during the job');
  t.true(maxDirty <= 200, `at most dirty_ratio dirty (${maxDirty})`);
  t.true(pc.cachedPages <= 1000);
});

test('the cache holds at most its limit: clean pages are reclaimed, least recently used first', (t) => {
  const { pc, bios, user } = setup({ limitPages: 64, fadvise: 'random' });
  for (let i = 0; i < 200; i++) pc.filemap_read(i, 1, [user]);
  t.true(pc.cachedPages <= 64);
  t.true(pc.stats.reclaimedPages >= 136);
  // the most recent page is still cached, the oldest is not
  const before = bios.length;
  pc.filemap_read(199, 1, [user]);
  t.is(bios.length, before);
  pc.filemap_read(0, 1, [user]);
  t.is(bios.length, before + 1);
});

test('pages come from the allocator in shuffled order: a request is scattered, not one contiguous run', (t) => {
  const { pc, bios } = setup({ fadvise: 'random' });
  const user = 0;
  pc.filemap_read(
    0,
    64,
    Array.from({ length: 64 }, () => user),
  );
  const gpas = bios[0].gpas;
  let adjacent = 0;
  for (let k = 1; k < gpas.length; k++) if (gpas[k] === gpas[k - 1] + PAGE_SIZE_BYTES) adjacent++;
  t.true(adjacent < 8, `few physically adjacent neighbours (${adjacent} of 63)`);
  // pages written one at a time are as scattered: their writeback request is 64 segments, not one run
  const w = setup();
  for (let i = 0; i < 64; i++) w.pc.generic_perform_write(i, 1, [w.user]);
  w.pc.vfs_fsync_range();
  const wg = w.bios[0].gpas;
  let wAdjacent = 0;
  for (let k = 1; k < wg.length; k++) if (wg[k] === wg[k - 1] + PAGE_SIZE_BYTES) wAdjacent++;
  t.true(wAdjacent < 8, `few physically adjacent neighbours among written pages (${wAdjacent} of 63)`);
});

test('a failed writeback leaves the pages dirty and fsync reports it; release frees every page', (t) => {
  const { pc, user, pages } = setup({ failWrites: true });
  const freeBefore = pages.freeBytes();
  pc.generic_perform_write(5, 1, [user]);
  t.false(pc.vfs_fsync_range());
  t.is(pc.dirtyPages, 1);
  pc.release();
  t.is(pc.cachedPages, 0);
  t.is(pages.freeBytes(), freeBefore);
});

test("fio's random map: every block exactly once per pass, then a new pass", (t) => {
  for (const n of [1, 31, 32, 33, 512, 1000, 5000]) {
    const map = new RandomMap(n);
    const rng = mulberry32Float(n);
    const seen = new Set<number>();
    for (let i = 0; i < n; i++) seen.add(map.next(rng));
    t.is(seen.size, n, `${n} blocks, each once`);
    t.true([...seen].every((b) => b >= 0 && b < n));
    const second = new Set<number>();
    for (let i = 0; i < n; i++) second.add(map.next(rng));
    t.is(second.size, n, 'the second pass covers them all again');
  }
  // without a map, draws repeat: 512 draws over 512 blocks leave about a third of them out
  const rng = mulberry32Float(1);
  const drawn = new Set<number>();
  for (let i = 0; i < 512; i++) drawn.add(Math.floor(rng() * 512));
  t.true(drawn.size < 400);
});
