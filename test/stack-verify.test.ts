/**
 * Whole stack on real workers: every DMA strategy moves the right bytes.
 * Each topology runs two fio jobs at once on two vCPUs: a read job (verify
 * crc32c: each block read must be the drive's pre-filled block for its LBA)
 * and a write job on a disjoint region (verify md5 + do_verify=1: after
 * writing, it reads back every block it wrote). After shutdown nothing is
 * left behind: no IOVA, no VMM mapping, no pinned page, no locked_vm.
 *
 * Limit of this check (reported, not fixable here): the model's verify
 * accepts any self-consistent block for the LBA, so a write the device
 * dropped would read back the pre-filled block and still pass; a write that
 * carried the wrong bytes (e.g. a bounce slot not filled) is caught.
 */

import test, { type ExecutionContext } from 'ava';
import type { DmaStrategy } from '@vmstack/guest-kernel';
import { runFio, NO_LEAKS, KiB, MiB, type StackRun } from './helpers/stack.js';

/** bytes per job and block size: enough I/Os to cycle the queue, small enough to stay fast */
const SIZE: Record<string, number> = { '4k': 256 * KiB, '16k': 256 * KiB, '128k': 1 * MiB };
const BS: Record<string, number> = { '4k': 4 * KiB, '16k': 16 * KiB, '128k': 128 * KiB };

interface Case {
  strategy: DmaStrategy;
  bs: '4k' | '16k' | '128k';
  untrusted?: boolean;
}

function runCase(c: Case): Promise<StackRun> {
  const sizeBytes = SIZE[c.bs];
  const common = { bs: c.bs, iodepth: '8', size: String(sizeBytes) };
  const jobs = [
    { ...common, rw: 'read', verify: 'crc32c' },
    { ...common, rw: 'write', verify: 'md5', do_verify: '1', offset: String(sizeBytes) },
  ];
  return runFio(c.strategy, jobs, { untrusted: c.untrusted ?? false, ...(c.strategy === 'bounce' ? { alwaysBounceLimitBytes: BS[c.bs] } : {}) });
}

async function check(t: ExecutionContext, c: Case): Promise<void> {
  const sizeBytes = SIZE[c.bs];
  const r = await runCase(c);
  const [rd, wr] = r.result.jobs;
  const blocks = sizeBytes / 4096;
  const ios = sizeBytes / BS[c.bs];
  t.is(rd.error, 0, 'read job: no I/O error');
  t.is(wr.error, 0, 'write job: no I/O error');
  t.is(rd.read.totalIos, ios, 'read job: every I/O completed');
  t.is(wr.write.totalIos, ios, 'write job: every I/O completed');
  t.deepEqual(rd.verify, { blocksChecked: blocks, corrupt: 0 }, 'read job: every block read checked, none corrupt');
  t.deepEqual(wr.verify, { blocksChecked: blocks, corrupt: 0 }, 'write job: every block written read back, none corrupt');
  t.deepEqual(r.verify, { blocks_checked: 2 * blocks, corrupt: 0 });
  t.deepEqual(r.leaks, NO_LEAKS);
  t.is(r.counters.nvme.faults, 0);
  t.is(r.counters.iotlb.faults, 0);
  t.is(r.counters.virtio_iommu.errors, 0);
  // one dma map per I/O: reads, writes and the write job's verify reads
  const maps = r.counters.dma.map_calls;
  t.is(maps, 3 * ios);
  t.is(r.counters.dma.unmap_calls, c.strategy === 'direct' ? 0 : maps);
  if (c.strategy === 'direct') {
    t.is(r.counters.virtio_iommu.map, 0, 'direct: no virtio-iommu request, the device sees guest physical addresses');
  } else {
    t.true(r.counters.virtio_iommu.map > 0);
    t.is(r.counters.vfio.unmap_dma, r.counters.vfio.map_dma, 'every VFIO mapping was unmapped');
  }
  if (c.strategy === 'bounce') {
    t.is(r.counters.dma.bounced_mappings, maps, 'the pool served every mapping');
    // (lower bounds: the figures are the write job's vCPU's snapshot, see below)
    t.true(r.counters.bounce!.bytes_copied_to_device >= ios * BS[c.bs], 'write data went through the slots');
    t.true(r.counters.bounce!.bytes_copied_from_device >= ios * BS[c.bs], 'read data came back through the slots');
    // Not asserted here: memory_bytes_current / slots_cached / evictions after
    // shutdown. BUG (packages/cli/src/stack/run-stack.ts, bounceCounters): the
    // pool's figures come from the LAST vCPU's snapshot, but vCPU 0 tears the
    // pool down after every other vCPU finished, so with two jobs the report
    // shows the cached slots' memory (e.g. 65536 bytes at 4k) although the
    // leak counters prove it was all unmapped and freed; and which way it goes
    // is a race between threads. bounce.test.ts checks it with one vCPU.
  }
  if (c.untrusted && c.strategy === 'strict') t.is(r.counters.dma.per_segment_maps, maps * (BS[c.bs] / 4096), 'untrusted strict (5.10-era): one map per page segment');
}

const cases: Case[] = [];
for (const strategy of ['direct', 'strict', 'lazy', 'bounce'] as const) for (const bs of ['4k', '128k'] as const) cases.push({ strategy, bs });
for (const strategy of ['strict', 'bounce'] as const) cases.push({ strategy, bs: '16k', untrusted: true });

for (const c of cases) {
  test(`${c.untrusted ? 'untrusted ' : ''}${c.strategy} ${c.bs}: a read job (crc32c) and a write job (md5, do_verify) check every block, nothing leaks, no device fault`, check, c);
}

