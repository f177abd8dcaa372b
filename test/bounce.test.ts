/**
 * Whole stack on real workers: the bounce-buffer pool. A cached slot is
 * still mapped, so only a miss (a fresh slot) sends a virtio-iommu MAP; when
 * a class runs out of slots a trusted mapping falls back to the strict path
 * and an untrusted one to the fallback tree of single-use buffers, without
 * deadlock or error. The pool's memory exists only while slots are in use
 * or cached: shutdown releases it all.
 */

import { releaseIdleWorkers, setWorkerReuse } from '@vmstack/shm';
import test from 'ava';
import { NO_LEAKS, runFio } from './helpers/stack.js';

// the stack's workers stay between runs (no start-up per run); they exit before the process does
setWorkerReuse(true);
test.after.always(() => releaseIdleWorkers());

test('4 KiB reads through the pool: MAPs only on misses, far fewer than I/Os; the hit rate is reported; teardown releases the memory', async (t) => {
  const r = await runFio('bounce', { rw: 'read', bs: '4k', iodepth: '16', size: '2m', verify: 'crc32c' });
  const ios = 512;
  const b = r.counters.bounce!;
  const v = r.counters.virtio_iommu;
  t.is(r.ios, ios);
  t.is(b.hits + b.misses, ios, 'every I/O took a slot');
  t.is(b.exhausted + b.fallbacks + b.oversize, 0);
  t.is(v.map, b.misses + 1, 'a MAP per miss, plus the coherent queue memory');
  t.true(v.map * 10 < ios, `${v.map} MAPs for ${ios} I/Os`);
  const hitRate = b.hits / ios;
  t.log(
    `pool hit rate ${(100 * hitRate).toFixed(1)}% (${b.hits} hits, ${b.misses} misses), ${v.map} MAPs, ${v.unmap} UNMAPs, memory peak ${b.memory_bytes_peak} bytes`,
  );
  t.true(hitRate > 0.9);
  // the slots stay mapped during the run: the UNMAPs are the teardown's evictions and the coherent memory's
  t.is(b.evictions, b.misses, 'teardown evicted every cached slot');
  t.is(v.unmap, b.evictions + 1);
  t.is(r.counters.dma.bounced_mappings, ios);
  t.is(b.bytes_copied_from_device, ios * 4096, 'each read copied its 4 KiB out of its slot');
  t.is(b.bytes_copied_to_device, 0, 'nothing copied in for reads');
  t.true(b.memory_bytes_peak >= b.slots_in_use_peak * 4096);
  t.true(b.memory_bytes_peak > 0);
  t.is(b.memory_bytes_current, 0, 'teardown freed the cached slots');
  t.is(b.slots_cached, 0);
  t.deepEqual(r.verify, { blocks_checked: ios, corrupt: 0, overwritten: 0, never_written: ios });
  t.deepEqual(r.leaks, NO_LEAKS);
  t.is(r.counters.nvme.faults, 0);
});

const EXHAUST = { rw: 'read', bs: '4k', iodepth: '32', size: '1m', verify: 'crc32c' };

test('exhaustion, trusted device (4 slots per class, iodepth 32): the overflow takes the strict path; no deadlock, no error, nothing leaked', async (t) => {
  const r = await runFio('bounce', EXHAUST, { slotsPerClass: 4 });
  const ios = 256;
  const b = r.counters.bounce!;
  const d = r.counters.dma;
  t.is(r.ios, ios);
  t.is(r.result.jobs[0].error, 84, 'no I/O error (EIO 5): only EILSEQ, fio refusing the drive data no job wrote');
  t.true(b.exhausted > 0, `exhausted ${b.exhausted}`);
  t.true(b.slots_in_use_peak <= 4);
  t.is(b.fallbacks, 0, 'a trusted device never uses the fallback tree');
  t.is(d.bounced_mappings + d.strict_mappings, ios);
  t.is(d.strict_mappings, b.exhausted, 'every refused acquire went the strict way');
  t.true(r.counters.virtio_iommu.map > b.misses + 1, 'strict mappings send MAPs of their own');
  t.is(r.counters.virtio_iommu.map, b.misses + d.strict_mappings + 1);
  t.is(b.memory_bytes_current, 0);
  t.deepEqual(r.verify, { blocks_checked: ios, corrupt: 0, overwritten: 0, never_written: ios });
  t.deepEqual(r.leaks, NO_LEAKS);
  t.is(r.counters.nvme.faults, 0);
});

test('exhaustion, untrusted device: bouncing stays mandatory, the fallback tree serves the overflow; no deadlock, no error, nothing leaked', async (t) => {
  const r = await runFio('bounce', EXHAUST, { slotsPerClass: 4, untrusted: true });
  const ios = 256;
  const b = r.counters.bounce!;
  t.is(r.ios, ios);
  t.is(r.result.jobs[0].error, 84, 'no I/O error (EIO 5): only EILSEQ, fio refusing the drive data no job wrote');
  t.true(b.exhausted > 0);
  t.true(b.fallbacks > 0, `fallbacks ${b.fallbacks}`);
  t.is(b.hits + b.misses + b.fallbacks, ios);
  t.is(r.counters.dma.bounced_mappings, ios, 'every mapping bounced');
  t.is(r.counters.dma.strict_mappings, 0, "never the device's own pages");
  t.is(r.counters.virtio_iommu.map, b.misses + b.fallbacks + 1, 'a MAP per miss and per single-use fallback buffer');
  t.is(b.memory_bytes_current, 0, 'fallback buffers and cached slots freed');
  t.true(b.memory_bytes_peak > 4 * 4096, "fallback buffers added to the slots' memory");
  t.deepEqual(r.verify, { blocks_checked: ios, corrupt: 0, overwritten: 0, never_written: ios });
  t.deepEqual(r.leaks, NO_LEAKS);
  t.is(r.counters.nvme.faults, 0);
});
