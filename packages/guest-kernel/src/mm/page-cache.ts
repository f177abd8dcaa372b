/**
 * The guest's page cache for buffered I/O (fio `direct=0`) on one job's drive:
 * the block device's `address_space`, one 4 KiB page per cached logical block,
 * after Linux 5.10 `mm/filemap.c`, `mm/readahead.c` and `mm/page-writeback.c`.
 *
 * Reads (`filemap_read`, the kernel's `generic_file_buffered_read`) look each
 * page up; a miss starts synchronous readahead (`page_cache_sync_ra`), a page
 * carrying the readahead marker (`PG_readahead`) starts the next window
 * asynchronously (`page_cache_async_ra`); both go through
 * `ondemand_readahead`, whose window starts at `get_init_ra_size` of the
 * request and grows by `get_next_ra_size` (×4 while below a sixteenth of the
 * maximum, then ×2) up to `ra_pages`. The maximum is the block device's
 * `read_ahead_kb` of 128 KiB (`VM_READAHEAD_PAGES`), doubled for the file by
 * `POSIX_FADV_SEQUENTIAL`; `POSIX_FADV_RANDOM` (FMODE_RANDOM) reads just the
 * requested pages (`force_page_cache_readahead`). fio gives one of the two
 * hints by `rw` unless `fadvise_hint=0`. The reader then waits for the pages
 * (`wait_on_page_locked`) and copies them to the user buffer.
 *
 * Writes (`generic_perform_write`) copy the user buffer into cache pages
 * (allocated on a miss; a partial page would be read first, but every fio I/O
 * here is whole pages) and mark them dirty; `balance_dirty_pages` then wakes
 * the flusher above the background threshold (`dirty_background_ratio`, 10%)
 * and holds the writer until writeback brings the dirty pages under the
 * threshold (`dirty_ratio`, 20%), both of the memory the cache may use. The
 * flusher (`wb_writeback`) writes dirty pages in index order, contiguous runs
 * in one request each; it also wakes every `dirty_writeback_centisecs` (5 s)
 * and writes what was dirtied more than `dirty_expire_centisecs` (30 s) ago.
 * `vfs_fsync_range` writes everything back and waits for it.
 *
 * The DMA a strategy sees is therefore the page cache's, not fio's buffer:
 * requests of up to `PAGE_CACHE_MAX_REQUEST_PAGES` pages, each page a
 * scatter-list segment of its own, since the pages come from the page
 * allocator in batches handed out in shuffled order, as scattered as a
 * kernel's free pages are after some uptime.
 *
 * The model's simplifications: the cache belongs to one job (jobs do not
 * share cached pages); it may use the job's share of the guest's free memory
 * at the job's start (`limitPages`), reclaiming its own clean pages,
 * least recently used first, beyond it; the flusher runs on the job's vCPU
 * (the guest has one vCPU per job); `balance_dirty_pages` throttles only at
 * the dirty threshold (no pause ramp between the thresholds).
 *
 * Costs: `pageCachePerPageNs` per page looked up, added or dropped (the
 * xarray walk, page reference and LRU), `copyBytesNs` for the copies, and
 * the page allocator's own charge for each page allocated and freed.
 */

import { type ModelClock, NEVER_NS, PAGE_SIZE_BYTES } from '@vmstack/shm';
import { PAGE_CACHE_MAX_REQUEST_PAGES } from '../job-spec.js';
import type { PageAllocator } from './page-alloc.js';

/** `VM_READAHEAD_PAGES`: the default `read_ahead_kb` of a block device, 128 KiB. */
export const VM_READAHEAD_PAGES = 32;
/** `vm.dirty_background_ratio` default. */
export const DIRTY_BACKGROUND_RATIO_PCT = 10;
/** `vm.dirty_ratio` default. */
export const DIRTY_RATIO_PCT = 20;
/** `vm.dirty_writeback_centisecs` default, 500: the flusher's periodic wake-up. */
export const DIRTY_WRITEBACK_INTERVAL_NS = 5_000_000_000;
/** `vm.dirty_expire_centisecs` default, 3000: a dirty page older than this is written back at the next wake-up. */
export const DIRTY_EXPIRE_NS = 30_000_000_000;
/** `SWAP_CLUSTER_MAX`: pages reclaimed per pass. */
const SWAP_CLUSTER_MAX = 32;
/** Pages the cache takes from the allocator at once (and hands out in shuffled order). */
const ALLOC_BATCH_PAGES = 64;

function shuffle(a: number[], rng: () => number): void {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
}

export interface PageCacheCosts {
  readonly memcpyBytesPerNs: number;
  readonly pageCachePerPageNs: number;
}

/** The model time a copy of `bytes` takes on the vCPU: the one copy-cost function of buffered I/O. */
export function copyBytesNs(costs: { readonly memcpyBytesPerNs: number }, bytes: number): number {
  return bytes / costs.memcpyBytesPerNs;
}

/**
 * The block layer below the cache: submits requests on the job's NVMe queue
 * and waits for completions. `submit_bio` returns false when no request slot
 * is free (the caller waits and tries again); `done` is called with the NVMe
 * status once the request completed and its DMA is unmapped.
 */
export interface PageCacheBlockIo {
  submit_bio(isRead: boolean, lba: number, pageGpas: readonly number[], done: (status: number) => void): boolean;
  /** idle until at least one interrupt or timer has been handled */
  wait(): void;
}

export interface PageCacheOptions {
  /** the pages the cache may hold: its share of the guest's free memory */
  limitPages: number;
  /** the end of the file (page index): readahead reads no further */
  endLba: number;
  /** fio's fadvise hint: 'sequential' (ra_pages × 2), 'random' (FMODE_RANDOM) or 'none' */
  fadvise: 'sequential' | 'random' | 'none';
  /** shuffles the pages of each allocation batch over the file offsets */
  rng: () => number;
}

interface CachedPage {
  gpa: number;
  uptodate: boolean;
  dirty: boolean;
  /** under a read or writeback request (PG_locked / PG_writeback) */
  inIo: boolean;
  /** PG_readahead: reading it starts the next readahead window */
  readahead: boolean;
  /** model time the page became dirty */
  dirtiedNs: number;
  /** the last read failed (PG_error) */
  error: boolean;
}

/** `struct file_ra_state`. */
interface FileRaState {
  start: number;
  size: number;
  asyncSize: number;
  raPages: number;
  /** page index of the last read (`prev_pos >> PAGE_SHIFT`), -1: none */
  prevIndex: number;
}

export interface PageCacheStats {
  /** pages found in the cache / not found, on reads */
  hits: number;
  misses: number;
  /** readahead requests and the pages they read */
  readRequests: number;
  readPages: number;
  /** writeback requests and the pages they wrote */
  writeRequests: number;
  writePages: number;
  /** pages reclaimed to make room */
  reclaimedPages: number;
  /** times a writer waited in balance_dirty_pages */
  dirtyThrottles: number;
  /** most pages the cache held at once */
  peakPages: number;
}

export class PageCache {
  private readonly pages = new Map<number, CachedPage>();
  /** clean pages in least-recently-used order (Map insertion order; a use moves a page to the end) */
  private readonly lru = new Map<number, CachedPage>();
  private dirtyCount = 0;
  private inflightRequests = 0;
  private readonly ra: FileRaState;
  private readonly randomMode: boolean;
  readonly backgroundThreshPages: number;
  readonly dirtyThreshPages: number;
  /** the flusher's next periodic wake-up (NEVER while nothing is dirty) */
  private nextFlushNs = NEVER_NS;
  readonly stats: PageCacheStats = {
    hits: 0,
    misses: 0,
    readRequests: 0,
    readPages: 0,
    writeRequests: 0,
    writePages: 0,
    reclaimedPages: 0,
    dirtyThrottles: 0,
    peakPages: 0,
  };

  constructor(
    private readonly io: PageCacheBlockIo,
    private readonly allocator: PageAllocator,
    private readonly clock: ModelClock,
    private readonly costs: PageCacheCosts,
    private readonly mem: Uint8Array,
    private readonly o: PageCacheOptions,
  ) {
    // generic_fadvise: POSIX_FADV_SEQUENTIAL sets ra_pages = bdi->ra_pages * 2, POSIX_FADV_RANDOM sets FMODE_RANDOM
    const raPages = o.fadvise === 'sequential' ? 2 * VM_READAHEAD_PAGES : VM_READAHEAD_PAGES;
    this.ra = { start: 0, size: 0, asyncSize: 0, raPages, prevIndex: -1 };
    this.randomMode = o.fadvise === 'random';
    this.backgroundThreshPages = Math.max(1, Math.floor((o.limitPages * DIRTY_BACKGROUND_RATIO_PCT) / 100));
    this.dirtyThreshPages = Math.max(2, Math.floor((o.limitPages * DIRTY_RATIO_PCT) / 100));
  }

  get cachedPages(): number {
    return this.pages.size;
  }

  get dirtyPages(): number {
    return this.dirtyCount;
  }

  // ---- reads ----------------------------------------------------------

  /**
   * Read `nrPages` pages from `index` into the user pages `dst` (one gpa per
   * page); returns false on an I/O error (-EIO), as the kernel's buffered
   * read returns it.
   */
  filemap_read(index: number, nrPages: number, dst: readonly number[]): boolean {
    const last = index + nrPages;
    let ok = true;
    for (let i = index; i < last; i++) {
      this.clock.charge(this.costs.pageCachePerPageNs);
      let page = this.pages.get(i);
      if (page) this.stats.hits++;
      else {
        this.stats.misses++;
        this.page_cache_sync_ra(i, last - i);
        page = this.pages.get(i);
        if (!page) throw new Error(`page cache: readahead did not bring page ${i} in`);
      }
      if (page.readahead) this.page_cache_async_ra(page, i, last - i);
      while (page.inIo && !page.uptodate) this.io.wait();
      if (!page.uptodate) {
        ok = false;
        this.dropPage(i, page);
        continue;
      }
      this.touch(i, page);
      this.copyPage(page.gpa, dst[i - index]);
    }
    this.ra.prevIndex = last - 1;
    return ok;
  }

  /** `page_cache_sync_ra`: a miss at `index`; `reqSize` pages are wanted from it. */
  private page_cache_sync_ra(index: number, reqSize: number): void {
    if (this.randomMode) {
      this.force_page_cache_ra(index, reqSize);
      return;
    }
    this.ondemand_readahead(false, index, reqSize);
  }

  /** `page_cache_async_ra`: the reader reached a page with the readahead marker. */
  private page_cache_async_ra(page: CachedPage, index: number, reqSize: number): void {
    page.readahead = false;
    if (this.randomMode) return;
    this.ondemand_readahead(true, index, reqSize);
  }

  /** `force_page_cache_ra`: read just what was asked, in chunks of at most ra_pages. */
  private force_page_cache_ra(index: number, nrToRead: number): void {
    const chunk = Math.max(1, this.ra.raPages);
    for (let i = index; i < index + nrToRead; i += chunk) this.do_page_cache_ra(i, Math.min(chunk, index + nrToRead - i), 0);
  }

  /** `ondemand_readahead` (Linux 5.10 mm/readahead.c); indices are the block device's page indices (LBAs). */
  private ondemand_readahead(hitReadaheadMarker: boolean, index: number, reqSize: number): void {
    const ra = this.ra;
    const maxPages = ra.raPages;
    const window = (): 'initial' | 'readit' | 'standalone' | 'none' => {
      if (index === 0) return 'initial';
      // the expected callback index: sequential, ramp the window up and push it forward
      if (index === ra.start + ra.size - ra.asyncSize || index === ra.start + ra.size) {
        ra.start += ra.size;
        ra.size = get_next_ra_size(ra.size, maxPages);
        ra.asyncSize = ra.size;
        return 'readit';
      }
      if (hitReadaheadMarker) {
        // a marker hit without a matching window (interleaved readers): go on from the first missing page
        let start = index + 1;
        while (start - index <= maxPages && this.pages.has(start)) start++;
        if (start - index > maxPages) return 'none';
        ra.start = start;
        ra.size = get_next_ra_size(start - index + reqSize, maxPages);
        ra.asyncSize = ra.size;
        return 'readit';
      }
      if (reqSize > maxPages) return 'initial';
      // sequential cache miss: the read continues the previous one
      if (ra.prevIndex >= 0 && index >= ra.prevIndex && index - ra.prevIndex <= 1) return 'initial';
      if (this.try_context_readahead(index, reqSize, maxPages)) return 'readit';
      return 'standalone';
    };
    const what = window();
    if (what === 'none') return;
    if (what === 'standalone') {
      // a standalone, small random read: read as is, and leave the readahead state alone
      this.do_page_cache_ra(index, reqSize, 0);
      return;
    }
    if (what === 'initial') {
      ra.start = index;
      ra.size = get_init_ra_size(reqSize, maxPages);
      ra.asyncSize = ra.size > reqSize ? ra.size - reqSize : ra.size;
    }
    // readit: a window that is all async at its start gets the next one merged in
    if (index === ra.start && ra.size === ra.asyncSize) {
      const addPages = get_next_ra_size(ra.size, maxPages);
      if (ra.size + addPages <= maxPages) {
        ra.asyncSize = addPages;
        ra.size += addPages;
      } else {
        ra.size = maxPages;
        ra.asyncSize = maxPages >> 1;
      }
    }
    this.do_page_cache_ra(ra.start, ra.size, ra.asyncSize);
  }

  /** `try_context_readahead`: the pages just before `index` are cached (a sequential reader the state lost track of). */
  private try_context_readahead(index: number, reqSize: number, maxPages: number): boolean {
    let history = 0;
    while (history < maxPages && index - 1 - history >= 0 && this.pages.has(index - 1 - history)) history++;
    if (history <= reqSize) return false;
    // cached from the start of the file: a strong sign of a long sequential read
    if (index - history === 0) history *= 2;
    this.ra.start = index;
    this.ra.size = Math.min(history + reqSize, maxPages);
    this.ra.asyncSize = 1;
    return true;
  }

  /**
   * `do_page_cache_ra` / `page_cache_ra_unbounded`: allocate the missing
   * pages of [index, index + nrToRead) (up to the end of the region), mark
   * the one `lookaheadSize` from the end with PG_readahead, and read each
   * contiguous run of new pages with one request per `PAGE_CACHE_MAX_REQUEST_PAGES`.
   */
  private do_page_cache_ra(index: number, nrToRead: number, lookaheadSize: number): void {
    const end = Math.min(index + nrToRead, this.o.endLba);
    const marker = index + nrToRead - lookaheadSize;
    let run: number[] = [];
    let runStart = index;
    const flush = (): void => {
      if (run.length > 0) this.read_pages(runStart, run);
      run = [];
    };
    const fresh: number[] = [];
    for (let i = index; i < end; i++) if (!this.pages.has(i)) fresh.push(i);
    const gpas = this.allocPages(fresh.length);
    let k = 0;
    for (let i = index; i < end; i++) {
      if (this.pages.has(i)) {
        flush();
        continue;
      }
      const page: CachedPage = { gpa: gpas[k++], uptodate: false, dirty: false, inIo: true, readahead: i === marker, dirtiedNs: 0, error: false };
      this.addPage(i, page);
      if (run.length === 0) runStart = i;
      run.push(i);
      if (run.length === PAGE_CACHE_MAX_REQUEST_PAGES) flush();
    }
    flush();
  }

  /** `read_pages`: one read request for a contiguous run of new pages. */
  private read_pages(startIndex: number, indices: readonly number[]): void {
    const pages = indices.map((i) => this.pages.get(i)!);
    this.stats.readRequests++;
    this.stats.readPages += pages.length;
    this.submit(true, startIndex, pages, (status) => {
      for (const p of pages) {
        p.inIo = false;
        p.uptodate = status === 0;
        p.error = status !== 0;
      }
    });
  }

  // ---- writes ---------------------------------------------------------

  /** `generic_perform_write`: copy `nrPages` user pages `src` into the cache from `index`, mark them dirty. */
  generic_perform_write(index: number, nrPages: number, src: readonly number[]): void {
    const missing: number[] = [];
    for (let i = index; i < index + nrPages; i++) if (!this.pages.has(i)) missing.push(i);
    const gpas = this.allocPages(missing.length);
    let k = 0;
    for (let i = index; i < index + nrPages; i++) {
      this.clock.charge(this.costs.pageCachePerPageNs);
      let page = this.pages.get(i);
      if (!page) {
        page = { gpa: gpas[k++], uptodate: true, dirty: false, inIo: false, readahead: false, dirtiedNs: 0, error: false };
        this.addPage(i, page);
      }
      // a page under writeback is waited for before it is written again (wait_for_stable_page)
      while (page.inIo) this.io.wait();
      this.copyPage(src[i - index], page.gpa);
      page.uptodate = true;
      page.error = false;
      if (!page.dirty) {
        page.dirty = true;
        page.dirtiedNs = this.clock.nowNs();
        this.dirtyCount++;
        this.lru.delete(i);
        if (this.nextFlushNs === NEVER_NS) this.nextFlushNs = this.clock.nowNs() + DIRTY_WRITEBACK_INTERVAL_NS;
      }
    }
    this.balance_dirty_pages();
  }

  /**
   * `balance_dirty_pages`: above the background threshold the flusher starts
   * writing; at the dirty threshold the writer waits until writeback has
   * brought the dirty pages back under it.
   */
  private balance_dirty_pages(): void {
    if (this.dirtyCount <= this.backgroundThreshPages) return;
    this.wb_writeback(this.backgroundThreshPages, NEVER_NS);
    if (this.dirtyCount + this.pagesUnderWriteback() < this.dirtyThreshPages) return;
    this.stats.dirtyThrottles++;
    while (this.dirtyCount + this.pagesUnderWriteback() >= this.dirtyThreshPages && this.inflightRequests > 0) this.io.wait();
  }

  private writebackPages = 0;

  private pagesUnderWriteback(): number {
    return this.writebackPages;
  }

  /**
   * `wb_writeback`: write dirty pages back in index order until at most
   * `targetDirty` are left dirty, taking only pages dirtied before
   * `dirtiedBeforeNs` (NEVER: any); contiguous dirty runs go in one request
   * (at most `PAGE_CACHE_MAX_REQUEST_PAGES` pages).
   */
  private wb_writeback(targetDirty: number, dirtiedBeforeNs: number): void {
    if (this.dirtyCount <= targetDirty) return;
    const dirty = [...this.pages.entries()].filter(([, p]) => p.dirty && !p.inIo && p.dirtiedNs < dirtiedBeforeNs).map(([i]) => i);
    dirty.sort((a, b) => a - b);
    let run: number[] = [];
    const flush = (): void => {
      if (run.length > 0) this.write_pages(run);
      run = [];
    };
    for (const i of dirty) {
      if (this.dirtyCount - run.length <= targetDirty) break;
      if (run.length > 0 && (i !== run[run.length - 1] + 1 || run.length === PAGE_CACHE_MAX_REQUEST_PAGES)) flush();
      run.push(i);
    }
    flush();
  }

  /** One writeback request for a contiguous run of dirty pages: they are clean (PG_writeback) until it completes. */
  private write_pages(indices: readonly number[]): void {
    const pages = indices.map((i) => this.pages.get(i)!);
    for (const p of pages) {
      p.dirty = false;
      p.inIo = true;
    }
    this.dirtyCount -= pages.length;
    this.writebackPages += pages.length;
    this.stats.writeRequests++;
    this.stats.writePages += pages.length;
    this.submit(false, indices[0], pages, (status) => {
      this.writebackPages -= pages.length;
      pages.forEach((p, n) => {
        p.inIo = false;
        if (status !== 0) {
          // a failed writeback leaves the page dirty (the kernel's mapping error is reported by fsync)
          p.dirty = true;
          p.error = true;
          this.dirtyCount++;
        } else this.lru.set(indices[n], p);
      });
      if (this.dirtyCount === 0) this.nextFlushNs = NEVER_NS;
    });
  }

  /**
   * `vfs_fsync_range` over the whole region: write back every dirty page and
   * wait for all writeback; returns false if a writeback failed.
   */
  vfs_fsync_range(): boolean {
    let failed = false;
    for (;;) {
      this.wb_writeback(0, NEVER_NS);
      while (this.writebackPages > 0) this.io.wait();
      if (this.dirtyCount === 0) break;
      // pages left dirty by a failed writeback: report it once, as fsync returns -EIO
      if ([...this.pages.values()].some((p) => p.dirty && p.error)) {
        failed = true;
        break;
      }
    }
    return !failed;
  }

  /**
   * `invalidate_mapping_pages`: drop every clean page not under I/O (fio's
   * `invalidate` at the start, and before its verify phase, through
   * POSIX_FADV_DONTNEED).
   */
  invalidate_mapping_pages(): void {
    for (const [i, p] of [...this.pages.entries()]) if (!p.dirty && !p.inIo) this.dropPage(i, p);
  }

  /** Wait for all I/O, then free every page (the job is over: its cache goes with it). */
  release(): void {
    while (this.inflightRequests > 0) this.io.wait();
    for (const [i, p] of [...this.pages.entries()]) this.dropPage(i, p);
    for (const gpa of this.spare.splice(0)) this.allocator.free_pages(gpa, 0, this.clock);
  }

  // ---- the flusher's timer --------------------------------------------

  /** Model time of the flusher's next periodic wake-up (NEVER: nothing dirty). */
  nextTimerNs(): number {
    return this.nextFlushNs;
  }

  /** `wb_check_old_data_flush`: the periodic wake-up writes back pages dirtied more than 30 s ago. */
  runTimers(): void {
    const now = this.clock.nowNs();
    if (now < this.nextFlushNs) return;
    this.nextFlushNs = this.dirtyCount > 0 ? now + DIRTY_WRITEBACK_INTERVAL_NS : NEVER_NS;
    this.wb_writeback(0, now - DIRTY_EXPIRE_NS + 1);
    if (this.dirtyCount > this.backgroundThreshPages) this.wb_writeback(this.backgroundThreshPages, NEVER_NS);
  }

  // ---- pages ----------------------------------------------------------

  private submit(isRead: boolean, index: number, pages: readonly CachedPage[], done: (status: number) => void): void {
    const gpas = pages.map((p) => p.gpa);
    while (
      !this.io.submit_bio(isRead, index, gpas, (status) => {
        this.inflightRequests--;
        done(status);
      })
    )
      this.io.wait();
    this.inflightRequests++;
  }

  private copyPage(fromGpa: number, toGpa: number): void {
    this.mem.copyWithin(toGpa, fromGpa, fromGpa + PAGE_SIZE_BYTES);
    this.clock.charge(copyBytesNs(this.costs, PAGE_SIZE_BYTES));
  }

  private addPage(index: number, page: CachedPage): void {
    this.pages.set(index, page);
    if (!page.dirty) this.lru.set(index, page);
    if (this.pages.size > this.stats.peakPages) this.stats.peakPages = this.pages.size;
  }

  /** mark_page_accessed: the page moves to the end of the LRU. */
  private touch(index: number, page: CachedPage): void {
    if (this.lru.delete(index)) this.lru.set(index, page);
  }

  private dropPage(index: number, page: CachedPage): void {
    this.clock.charge(this.costs.pageCachePerPageNs);
    if (page.dirty) this.dirtyCount--;
    this.pages.delete(index);
    this.lru.delete(index);
    this.allocator.free_pages(page.gpa, 0, this.clock);
  }

  /**
   * `n` order-0 pages for new cache entries: taken from a batch of
   * `ALLOC_BATCH_PAGES` pages allocated together and shuffled, so that pages
   * written or read one at a time are as scattered as a readahead window's;
   * within the cache's limit, reclaiming clean pages (least recently used
   * first, a `SWAP_CLUSTER_MAX` batch at a time) and, if none is clean,
   * waiting for writeback.
   */
  private allocPages(n: number): number[] {
    const out: number[] = [];
    while (out.length < n) {
      if (this.spare.length > 0) {
        out.push(this.spare.pop()!);
        continue;
      }
      const room = Math.min(ALLOC_BATCH_PAGES, this.o.limitPages - this.pages.size - out.length);
      for (let k = 0; k < room; k++) {
        const gpa = this.allocator.alloc_pages(0, this.clock);
        if (gpa < 0) break;
        this.spare.push(gpa);
      }
      if (this.spare.length > 0) {
        shuffle(this.spare, this.o.rng);
        continue;
      }
      if (this.shrink_page_list() > 0) continue;
      if (this.dirtyCount > 0) this.wb_writeback(0, NEVER_NS);
      if (this.inflightRequests === 0) {
        throw new Error(`page cache: no page to reclaim (${this.pages.size} cached, limit ${this.o.limitPages}, ${this.allocator.freeBytes()} bytes free)`);
      }
      this.io.wait();
    }
    shuffle(out, this.o.rng);
    return out;
  }

  /** Pages allocated for the cache and not used yet. */
  private readonly spare: number[] = [];

  /** `shrink_page_list`: free up to SWAP_CLUSTER_MAX clean, idle pages from the cold end of the LRU. */
  private shrink_page_list(): number {
    let freed = 0;
    for (const [i, p] of this.lru) {
      if (freed >= SWAP_CLUSTER_MAX) break;
      if (p.dirty || p.inIo) continue;
      this.dropPage(i, p);
      freed++;
    }
    this.stats.reclaimedPages += freed;
    return freed;
  }
}

/** `get_init_ra_size`: the first window, from the request size rounded up to a power of two. */
export function get_init_ra_size(size: number, max: number): number {
  const newsize = roundupPowOfTwo(size);
  if (newsize <= max / 32) return newsize * 4;
  if (newsize <= max / 4) return newsize * 2;
  return max;
}

/** `get_next_ra_size`: ×4 while small, ×2 up to half the maximum, then the maximum. */
export function get_next_ra_size(cur: number, max: number): number {
  if (cur < max / 16) return 4 * cur;
  if (cur <= max / 2) return 2 * cur;
  return max;
}

function roundupPowOfTwo(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}
