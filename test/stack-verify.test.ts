/**
 * Whole stack on real workers: every DMA strategy moves the right bytes.
 * Each topology runs two fio jobs at once on two vCPUs: a read job (verify
 * crc32c: each block read must be the drive's own data for its LBA, intact,
 * which fio's verify refuses as never written: err=84, as fio)
 * and a write job on a disjoint region (verify md5 + do_verify=1: after
 * writing, it reads back every block it wrote). After shutdown nothing is
 * left behind: no IOVA, no VMM mapping, no pinned page, no locked_vm.
 *
 * Each block carries its writer's seed, and verify expects this job's seed
 * where the job wrote: a write the device dropped reads back the drive's
 * own data and is caught, as is one that carried the
 * wrong bytes (e.g. a bounce slot not filled) or landed at the wrong LBA.
 */

import type { DmaStrategy } from '@vmstack/guest-kernel';
import { releaseIdleWorkers, setWorkerReuse } from '@vmstack/shm';
import test, { type ExecutionContext } from 'ava';
import { KiB, MiB, NO_LEAKS, runFio, type StackRun } from './helpers/stack.js';

// the stack's workers stay between runs (no start-up per run); they exit before the process does
setWorkerReuse(true);
test.after.always(() => releaseIdleWorkers());

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
  t.is(rd.error, 84, "read job: the drive's own data has no verify header, EILSEQ as in fio");
  t.is(wr.error, 0, 'write job: no I/O error');
  t.is(rd.read.totalIos, ios, 'read job: every I/O completed');
  t.is(wr.write.totalIos, ios, 'write job: every I/O completed');
  t.like(
    rd.verify,
    { blocksChecked: blocks, corrupt: 0, overwritten: 0, neverWritten: blocks, firstNeverWritten: { offsetBytes: 0, ioOffsetBytes: 0 } },
    'read job: every block read checked; each is the drive data as it was (none corrupt), which fio refuses (never written)',
  );
  t.deepEqual(wr.verify, { blocksChecked: blocks, corrupt: 0, overwritten: 0, neverWritten: 0 }, 'write job: every block written read back, none corrupt');
  t.deepEqual(r.verify, { blocks_checked: 2 * blocks, corrupt: 0, overwritten: 0, never_written: blocks });
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
    // crosvm's path unmaps an UNMAP's whole range in one ioctl: each VFIO unmap takes one or more mappings; NO_LEAKS (no page left pinned) says all went
    t.true(r.counters.vfio.unmap_dma > 0 && r.counters.vfio.unmap_dma <= r.counters.vfio.map_dma, 'VFIO unmaps, each of one or more mappings');
  }
  if (c.strategy === 'bounce') {
    t.is(r.counters.dma.bounced_mappings, maps, 'the pool served every mapping');
    t.true(r.counters.bounce!.bytes_copied_to_device >= ios * BS[c.bs], 'write data went through the slots');
    t.true(r.counters.bounce!.bytes_copied_from_device >= ios * BS[c.bs], 'read data came back through the slots');
    // the pool's figures are vCPU 0's, read after it tore the pool down, once every vCPU finished
    t.is(r.counters.bounce!.memory_bytes_current, 0, 'shutdown freed the cached slots');
    t.is(r.counters.bounce!.slots_cached, 0);
  }
  if (c.untrusted && c.strategy === 'strict')
    t.is(r.counters.dma.per_segment_maps, maps * (BS[c.bs] / 4096), 'untrusted strict (5.10-era): one map per page segment');
}

const cases: Case[] = [];
for (const strategy of ['direct', 'strict', 'lazy', 'bounce'] as const) for (const bs of ['4k', '128k'] as const) cases.push({ strategy, bs });
for (const strategy of ['strict', 'bounce'] as const) cases.push({ strategy, bs: '16k', untrusted: true });

for (const c of cases) {
  test(
    `${c.untrusted ? 'untrusted ' : ''}${c.strategy} ${c.bs}: a read job (crc32c) and a write job (md5, do_verify) check every block, nothing leaks, no device fault`,
    check,
    c,
  );
}

test('two clones writing one region with verify: what one wrote over the other is counted as overwritten (err=84, as fio), never as corrupt; with offset_increment nothing is', async (t) => {
  const job = { rw: 'randrw', bs: '4k', iodepth: '8', size: '256k', numjobs: '2', verify: 'md5' };
  const shared = await runFio('strict', job);
  const overwritten = shared.result.jobs.map((j) => j.verify!.overwritten ?? 0);
  t.is(shared.verify.corrupt, 0, 'no block damaged by the stack');
  t.true(
    overwritten.every((n) => n > 0),
    `each clone found blocks the other wrote over its own: ${overwritten.join(', ')}`,
  );
  t.is(shared.verify.overwritten, overwritten[0] + overwritten[1]);
  t.deepEqual(
    shared.result.jobs.map((j) => j.error),
    [84, 84],
    'fio reports a verify failure as EILSEQ',
  );
  const own = await runFio('strict', { ...job, offset_increment: '256k' });
  t.deepEqual(own.verify, { blocks_checked: shared.verify.blocks_checked, corrupt: 0, overwritten: 0, never_written: 0 });
  t.deepEqual(
    own.result.jobs.map((j) => j.error),
    [0, 0],
  );
});
