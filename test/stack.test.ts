import { jobsFromCommandLine, runStack } from '@vmstack/cli';
import { DEFAULT_PROFILE_PATH, loadProfile, releaseIdleWorkers, setWorkerReuse } from '@vmstack/shm';
import test from 'ava';

// the stack's workers stay between runs (no start-up per run); they exit before the process does
setWorkerReuse(true);
test.after.always(() => releaseIdleWorkers());

const profile = loadProfile(DEFAULT_PROFILE_PATH);

async function run(strategy: 'direct' | 'strict', opts: Record<string, string>) {
  // O_DIRECT: one DMA mapping per fio I/O
  const parsed = jobsFromCommandLine(opts, { direct: '1' });
  return runStack({
    jobs: parsed.jobs,
    jobOptions: parsed.jobOptions,
    globalOptions: {},
    strategy,
    clock: 'virtual',
    profile,
    quantumNs: 0,
    driverGeneration: 'v5.10',
    bufferContiguity: 'none',
    guestRamBytes: 64 * 1024 * 1024,
    spinLoads: 2000,
    dilation: 1,
    timeoutMs: 60_000,
  });
}

test('strict, iodepth 1: one MAP per I/O (plus the coherent region), one UNMAP per I/O, every block verified, nothing leaked', async (t) => {
  const r = await run('strict', { rw: 'read', bs: '4k', iodepth: '1', size: '512k', verify: 'crc32c' });
  const c = r.vmstack.counters;
  const ios = r.jobs[0].read.totalIos;
  t.is(ios, 128);
  t.is(c.virtio_iommu.map, ios + 1);
  t.is(c.virtio_iommu.unmap, ios + 1, 'one per I/O, and the coherent queue memory at shutdown');
  t.is(c.vfio.map_dma, ios + 1);
  t.is(c.vfio.unmap_dma, ios + 1);
  t.is(c.nvme.faults, 0);
  t.deepEqual(r.vmstack.verify, { blocks_checked: 128, corrupt: 0, overwritten: 0, never_written: 128 });
  t.is(r.vmstack.leaks.iova_mappings_in_vmm, 0, 'everything unmapped at shutdown');
  const workers = r.vmstack.workers;
  t.deepEqual(
    workers.map((w) => w.role),
    ['vm0/vcpu0', 'vm0/vmm/viommu0', 'vm0/host-vfio/viommu0', 'nvme-device/nvme-ctrl0'],
  );
  t.is(new Set(workers.map((w) => w.thread_id)).size, 4);
});

test('direct issues no virtio-iommu request and is faster than strict; the virtual clock repeats itself', async (t) => {
  const d = await run('direct', { rw: 'read', bs: '4k', iodepth: '1', size: '256k', verify: 'crc32c' });
  const s = await run('strict', { rw: 'read', bs: '4k', iodepth: '1', size: '256k' });
  const s2 = await run('strict', { rw: 'read', bs: '4k', iodepth: '1', size: '256k' });
  t.is(d.vmstack.counters.virtio_iommu.map, 0);
  t.deepEqual(d.vmstack.verify, { blocks_checked: 64, corrupt: 0, overwritten: 0, never_written: 64 });
  t.true(d.jobs[0].read.runtimeNs < s.jobs[0].read.runtimeNs);
  t.is(s.jobs[0].read.runtimeNs, s2.jobs[0].read.runtimeNs);
});
