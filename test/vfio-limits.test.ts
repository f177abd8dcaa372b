/**
 * vfio_iommu_type1's limits and the host's superpages, on the whole stack:
 * - a strict run whose I/Os in flight need more DMA mappings than the
 *   container's dma_entry_limit: VFIO answers -ENOSPC, the VMM answers the
 *   MAP with VIRTIO_IOMMU_S_NOMEM, the guest's driver returns -ENOMEM,
 *   dma-iommu unwinds the mapping and the NVMe driver answers
 *   BLK_STS_RESOURCE: the request is dispatched again once another
 *   completes, and the run completes with every block verified;
 * - an I/O that alone needs more mappings than the limit can never be
 *   dispatched: the run fails naming the status;
 * - the same run within the limit never meets it;
 * - a huge-page guest (hugetlbfs-backed RAM) gets 2 MiB host leaves for the
 *   direct strategy's one-to-one map: far fewer IOTLB misses than 4 KiB leaves.
 */

import test from 'ava';
import { NO_LEAKS, runFio } from './helpers/stack.js';

/** 256 KiB I/Os on scattered pages: 64 MAPs (vfio_dma entries) each, two or three I/Os in flight */
const DEEP = { rw: 'randread', bs: '256k', iodepth: '32', size: '4m' };

test('strict, I/Os of 64 scattered pages queued 32 deep, dma_entry_limit 100: MAPs meet -ENOSPC, the requests wait and complete', async (t) => {
  // the coherent region's entry + 64 per I/O: a second I/O in flight passes 100
  const r = await runFio('strict', { ...DEEP, verify: 'crc32c' }, { vfioDmaEntryLimit: 100 });
  t.is(r.ios, 16);
  t.true(r.counters.dma.map_no_mem > 0, `maps refused for want of mappings: ${r.counters.dma.map_no_mem}`);
  t.is(r.counters.dma.map_calls, 16 + r.counters.dma.map_no_mem, 'each refused map was tried again and made');
  t.deepEqual(r.verify, { blocks_checked: 16 * 64, corrupt: 0, overwritten: 0, never_written: 16 * 64 });
  t.deepEqual(r.leaks, NO_LEAKS, 'the unwound maps left nothing behind');
});

test('strict, dma_entry_limit 50: one I/O needs 64 mappings, so it never fits; the run fails naming VIRTIO_IOMMU_S_NOMEM', async (t) => {
  await t.throwsAsync(() => runFio('strict', DEEP, { vfioDmaEntryLimit: 50 }), { message: /VIRTIO_IOMMU_S_NOMEM.*no I\/O in flight/ });
});

test('strict, the same run with room for all 32 I/Os in flight (1 + 32 × 64 entries) never meets the limit', async (t) => {
  const r = await runFio('strict', DEEP, { vfioDmaEntryLimit: 2049 });
  t.is(r.ios, 16);
  t.is(r.counters.dma.map_no_mem, 0);
  t.deepEqual(r.leaks, NO_LEAKS);
});

test('direct on hugetlbfs-backed RAM: 2 MiB host leaves, so the device walks far less than with 4 KiB leaves', async (t) => {
  // 16 buffers of 32 pages: more pages than the IOTLB holds
  const fio = { rw: 'randread', bs: '128k', iodepth: '16', size: '8m' };
  const [small, huge] = await Promise.all([runFio('direct', fio), runFio('direct', fio, { bufferContiguity: 'huge' })]);
  t.is(small.ios, huge.ios);
  t.true(huge.counters.iotlb.misses * 8 < small.counters.iotlb.misses, `misses: ${huge.counters.iotlb.misses} huge vs ${small.counters.iotlb.misses}`);
  t.deepEqual(huge.leaks, NO_LEAKS);
});
