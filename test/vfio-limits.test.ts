/**
 * vfio_iommu_type1's limits and the host's superpages, on the whole stack:
 * - a strict run whose I/Os in flight need more DMA mappings than the
 *   container's dma_entry_limit: VFIO answers -ENOSPC, the VMM answers the
 *   MAP with VIRTIO_IOMMU_S_NOMEM, and the guest's driver fails the run
 *   naming that status (Linux would return BLK_STS_RESOURCE and requeue:
 *   not modelled);
 * - the same run within the limit completes;
 * - a huge-page guest (hugetlbfs-backed RAM) gets 2 MiB host leaves for the
 *   direct strategy's one-to-one map: far fewer IOTLB misses than 4 KiB leaves.
 */

import test from 'ava';
import { NO_LEAKS, runFio } from './helpers/stack.js';

/** 256 KiB I/Os on scattered pages: 64 MAPs (vfio_dma entries) each, two or three I/Os in flight */
const DEEP = { rw: 'randread', bs: '256k', iodepth: '32', size: '4m' };

test('strict, I/Os of 64 scattered pages queued 32 deep, dma_entry_limit 100: a MAP meets -ENOSPC and the guest sees VIRTIO_IOMMU_S_NOMEM', async (t) => {
  // the coherent region's entry + 64 per I/O: the second I/O in flight passes 100
  await t.throwsAsync(() => runFio('strict', DEEP, { vfioDmaEntryLimit: 100 }), { message: /VIRTIO_IOMMU_S_NOMEM/ });
});

test('strict, the same run with room for all 32 I/Os in flight (1 + 32 × 64 entries) completes, leaving nothing mapped', async (t) => {
  const r = await runFio('strict', DEEP, { vfioDmaEntryLimit: 2049 });
  t.is(r.ios, 16);
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
