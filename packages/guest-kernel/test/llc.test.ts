import { LockTable, ModelClock } from '@vmstack/shm';
import test from 'ava';
import { DMA_FROM_DEVICE } from '../src/iommu/bounce-pool/dma-direction.js';
import { BouncePool } from '../src/iommu/bounce-pool.js';
import { copyCostNs, LastLevelCache } from '../src/mm/llc.js';
import { TestPages } from './helpers/bounce-page-allocator.js';
import { COSTS, HEAP_GPA, IOVA_BASE, WO } from './helpers/bounce-pool-setup.js';

const PAGE = 4096;
const MiB = 1 << 20;
/** round numbers: DRAM 10 bytes/ns, cache 40 bytes/ns, a 1 MiB cache */
const CACHE = { memcpyBytesPerNs: 10, memcpyCacheBytesPerNs: 40, llcBytes: MiB, ddioLlcBytes: 0 };

test('copyCostNs: cached bytes at cache bandwidth, the rest at DRAM bandwidth', (t) => {
  t.is(copyCostNs(4000, 0, CACHE), 100);
  t.is(copyCostNs(0, 4000, CACHE), 400);
  t.is(copyCostNs(4000, 4000, CACHE), 500);
});

test('a copy between buffers the CPU touched recently runs at cache bandwidth; a first copy, or a working set larger than the cache, at DRAM bandwidth', (t) => {
  const llc = new LastLevelCache(CACHE);
  const src = 16 * MiB;
  const dst = 32 * MiB;
  t.is(llc.memcpyNs(dst, src, 16 * PAGE), (16 * PAGE) / 10, 'nothing cached yet');
  t.is(llc.memcpyNs(dst, src, 16 * PAGE), (16 * PAGE) / 40, 'both ends were just touched');
  // 2 × 1 MiB touched: more than the cache holds; the oldest pages left first
  const big = llc.memcpyNs(dst, src, MiB);
  t.true(big > MiB / 40, 'part of it from DRAM');
  t.is(llc.memcpyNs(dst, src, MiB), MiB / 10, 'a 2 MiB working set in a 1 MiB cache: each page was evicted before its next use');
  // a piece counts as cached only if both its source and its destination are
  const llc2 = new LastLevelCache(CACHE);
  llc2.cpu_touch(src, PAGE);
  t.is(llc2.memcpyNs(dst, src, PAGE), PAGE / 10);
  // pieces split at either end's page boundary
  const llc3 = new LastLevelCache(CACHE);
  llc3.cpu_touch(src, 2 * PAGE);
  llc3.cpu_touch(dst, PAGE);
  t.is(llc3.memcpyNs(dst + 2048, src, PAGE), 2048 / 40 + 2048 / 10);
});

test('without DDIO a device write goes to DRAM and invalidates the cached copy; with DDIO it lands in the DDIO share, the oldest leaving first', (t) => {
  const buf = 8 * MiB;
  const user = 12 * MiB;
  const none = new LastLevelCache(CACHE);
  none.cpu_touch(buf, 4 * PAGE);
  none.cpu_touch(user, 4 * PAGE);
  none.device_write(buf, 4 * PAGE);
  t.false(none.cached(buf));
  t.is(none.memcpyNs(user, buf, 4 * PAGE), (4 * PAGE) / 10, 'the device’s data is read from DRAM');

  const ddio = new LastLevelCache({ ...CACHE, ddioLlcBytes: 8 * PAGE });
  ddio.cpu_touch(user, 4 * PAGE);
  ddio.device_write(buf, 4 * PAGE);
  t.true(ddio.cached(buf));
  t.is(ddio.memcpyNs(user, buf, 4 * PAGE), (4 * PAGE) / 40, 'copied out of the DDIO share at cache bandwidth');
  // 12 more pages written by the device: the share holds 8, the first ones are gone
  const other = 20 * MiB;
  ddio.device_write(other, 12 * PAGE);
  t.false(ddio.cached(other));
  t.true(ddio.cached(other + 11 * PAGE));
});

test('the pool’s unmap copy is charged by the cache model: DRAM for device-written data without DDIO, cache bandwidth with DDIO', (t) => {
  const costsOf = (ddioLlcBytes: number) => ({ ...COSTS, memcpyBytesPerNs: 10, memcpyCacheBytesPerNs: 40, llcBytes: MiB, ddioLlcBytes });
  const unmapCopyNs = (ddioLlcBytes: number): number => {
    const handle = BouncePool.allocate({ iovaBase: IOVA_BASE });
    const locks = LockTable.attach(LockTable.allocate(BouncePool.lockSpecs(handle)), 0);
    const pages = new TestPages(TestPages.allocate(HEAP_GPA, 256));
    const llc = new LastLevelCache(costsOf(ddioLlcBytes));
    const pool = BouncePool.attach(handle, 0, locks, pages, costsOf(ddioLlcBytes), llc);
    const ram = new Uint8Array(new SharedArrayBuffer(HEAP_GPA + 256 * PAGE));
    const clock = new ModelClock('virtual');
    const slot = pool.acquire(PAGE, WO, clock)!;
    const user = [{ gpa: 4 * PAGE, lenBytes: PAGE }];
    llc.cpu_touch(user[0].gpa, PAGE); // fio's buffer, used before
    llc.device_write(slot.gpa, PAGE); // the drive's data
    const before = clock.nowNs();
    pool.bounceOnUnmap(ram, slot.gpa, user, DMA_FROM_DEVICE, {}, clock);
    return clock.nowNs() - before;
  };
  t.is(unmapCopyNs(0), Math.ceil(PAGE / 10));
  t.is(unmapCopyNs(8 * PAGE), Math.ceil(PAGE / 40));
});
