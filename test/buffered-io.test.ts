/**
 * Whole stack on real workers: buffered I/O (fio direct=0, fio's default)
 * through the guest's page cache, under every DMA strategy. The drive sees
 * the page cache's requests (readahead windows, writeback runs of scattered
 * pages), not fio's I/Os; fio-style verify still finds every block it wrote,
 * since fio syncs and drops the cache before its verify phase, so the
 * verify reads come from the drive.
 */

import type { DmaStrategy } from '@vmstack/guest-kernel';
import { releaseIdleWorkers, setWorkerReuse } from '@vmstack/shm';
import test from 'ava';
import { KiB, MiB, NO_LEAKS, runFio } from './helpers/stack.js';

setWorkerReuse(true);
test.after.always(() => releaseIdleWorkers());

const STRATEGIES: readonly DmaStrategy[] = ['direct', 'strict', 'lazy', 'bounce'];

for (const strategy of STRATEGIES) {
  test(`${strategy}: buffered writes (sequential and random) read back intact by fio's verify; nothing leaks`, async (t) => {
    const size = 512 * KiB;
    const blocks = size / 4096;
    const r = await runFio(
      strategy,
      [
        { rw: 'randwrite', bs: '4k', iodepth: '4', size: String(size), direct: '0', verify: 'crc32c' },
        { rw: 'write', bs: '16k', iodepth: '1', size: String(size), offset: String(size), direct: '0', verify: 'md5', end_fsync: '1' },
      ],
      strategy === 'bounce' ? { alwaysBounceLimitBytes: 512 * KiB } : {},
    );
    const [rnd, seq] = r.result.jobs;
    t.is(rnd.error, 0);
    t.is(seq.error, 0);
    t.is(rnd.write.totalIos, blocks);
    t.is(seq.write.totalIos, size / (16 * KiB));
    t.deepEqual(rnd.verify, { blocksChecked: blocks, corrupt: 0, overwritten: 0, neverWritten: 0 });
    t.deepEqual(seq.verify, { blocksChecked: blocks, corrupt: 0, overwritten: 0, neverWritten: 0 });
    t.deepEqual(r.leaks, NO_LEAKS);
    t.is(r.counters.nvme.faults, 0);
    // writeback went out in runs of up to 127 pages and the sequential verify read through readahead: far fewer
    // commands than the 2 × 128 writes and 2 × 128 verify reads of 4 KiB O_DIRECT would take
    t.true(r.counters.nvme.commands < 200, `${r.counters.nvme.commands} NVMe commands`);
    if (strategy !== 'direct') t.is(r.counters.dma.map_calls, r.counters.dma.unmap_calls, 'every page-cache request unmapped');
  });
}

test('end_fsync: the write runtime ends after the dirty pages reached the drive', async (t) => {
  const size = String(1024 * KiB);
  const r = await runFio('strict', [
    { rw: 'write', bs: '4k', size, direct: '0' },
    { rw: 'write', bs: '4k', size, offset: size, direct: '0', end_fsync: '1' },
  ]);
  const [plain, synced] = r.result.jobs;
  t.is(plain.write.totalIos, synced.write.totalIos);
  // 1 MiB of scattered pages mapped page by page and written: far longer than copying them into the cache
  t.true(synced.write.runtimeNs > 2 * plain.write.runtimeNs, `${synced.write.runtimeNs} ns against ${plain.write.runtimeNs} ns`);
});

test('buffered sequential reads: readahead turns 1024 reads of 4 KiB into a few dozen NVMe reads of up to 256 KiB, each one DMA mapping', async (t) => {
  const r = await runFio('strict', { rw: 'read', bs: '4k', iodepth: '1', size: String(4 * MiB), direct: '0', verify: 'crc32c' });
  const [job] = r.result.jobs;
  t.is(job.read.totalIos, 1024);
  t.like(
    job.verify,
    { blocksChecked: 1024, corrupt: 0, overwritten: 0, neverWritten: 1024 },
    "the drive's own data read intact (fio refuses it: never written)",
  );
  // windows of 4, 8, 16, 32, then 64 pages (the fadvise-sequential maximum), the last cut at the region's end:
  // 4 + 15 of 64 pages + one of 4 cover the 1024 pages, each read once
  t.is(r.counters.dma.map_calls, 4 + 15 + 1, 'one mapping per readahead request');
  t.true(r.counters.nvme.commands < 30, `${r.counters.nvme.commands} NVMe commands (with the admin commands)`);
  // scattered page-cache pages: strict maps each physically contiguous run on its own, so many more VMM MAP requests than mappings
  t.true(r.counters.virtio_iommu.map > 10 * r.counters.dma.map_calls, `${r.counters.virtio_iommu.map} MAP requests`);
});

test('O_DIRECT random writes with the random map write every block once; verify reads each back', async (t) => {
  const r = await runFio('lazy', { rw: 'randwrite', bs: '4k', iodepth: '8', size: String(2 * MiB), verify: 'crc32c' });
  const [job] = r.result.jobs;
  t.is(job.write.totalIos, 512);
  t.deepEqual(job.verify, { blocksChecked: 512, corrupt: 0, overwritten: 0, neverWritten: 0 });
  t.is(job.error, 0);
});
