/**
 * Fault reports through the whole stack: a DMA the device makes outside its
 * command's PRPs (`--inject-fault nvme-device/*:dma-outside-prps@…`) faults
 * in the host IOMMU, which records it; with `--vmm qemu-notifier` the VMM
 * reads the host's fault queue at teardown and reports it on the virtio-iommu
 * event queue, where the guest's driver finds it (`vmstack.virtio_iommu.faults`).
 * crosvm-2021 reports nothing: the fault stays counted on the host. A run
 * without faults reports none, and the in-thread transport reports the same.
 */

import { runAttack } from '@vmstack/cli';
import { DEFAULT_QUANTUM_NS, releaseIdleWorkers, setWorkerReuse, VIRTIO_IOMMU_FAULT_BYTES } from '@vmstack/shm';
import test from 'ava';
import { runFio } from './helpers/stack.js';

setWorkerReuse(true);
test.after.always(() => releaseIdleWorkers());

const JOB = { rw: 'read', bs: '4k', iodepth: '4', size: '256k' };
const FAULT = [{ role: 'nvme-device/*', mode: 'dma-outside-prps' as const, atNs: 40_000 }];
/** the drive's endpoint (requester id) in the default topology: PCI 01:00.0 */
const EP = 0x100;

test('qemu-notifier: the device fault reaches the guest as a MAPPING report of a write by the drive, with its address', async (t) => {
  const run = await runFio('strict', JOB, { vmm: 'qemu-notifier', faults: FAULT });
  const f = run.result.vmstack.virtio_iommu!.faults;
  t.is(run.counters.nvme.faults, 1);
  t.true(f.forwarded);
  t.deepEqual(f.host, { faults: 1, not_present: 1, permission: 0, overflowed: 0, read_by_vmm: 1 });
  t.is(f.reported, 1);
  t.is(f.dropped, 0);
  t.is(f.guest.buffers_posted, 32);
  t.is(f.guest.faults, 1);
  t.deepEqual(f.guest.by_reason, { unknown: 0, domain: 0, mapping: 1 });
  // a read command's data: the device writes memory
  t.deepEqual(f.guest.by_flags, { read: 0, write: 1, exec: 0, address: 1 });
  t.is(f.guest.first.length, 1);
  t.is(f.guest.first[0].reason, 'MAPPING');
  t.is(f.guest.first[0].endpoint, EP);
  t.deepEqual(f.guest.first[0].flags, ['WRITE', 'ADDRESS']);
  t.regex(f.guest.first[0].address!, /^0x[0-9a-f]+$/);
  t.is(VIRTIO_IOMMU_FAULT_BYTES, 24);
});

test('crosvm-2021: the fault is recorded on the host and never reported to the guest', async (t) => {
  const run = await runFio('strict', JOB, { faults: FAULT });
  const f = run.result.vmstack.virtio_iommu!.faults;
  t.false(f.forwarded);
  t.is(f.host.faults, 1);
  t.is(f.host.read_by_vmm, 0);
  t.is(f.reported, 0);
  t.is(f.guest.faults, 0);
  t.is(f.guest.buffers_posted, 32, 'the driver posted its buffers all the same');
});

test('a run without faults reports none, and the in-thread transport reports the same as the workers', async (t) => {
  const clean = await runFio('strict', JOB, { vmm: 'qemu-notifier' });
  const c = clean.result.vmstack.virtio_iommu!.faults;
  t.is(c.host.faults, 0);
  t.is(c.reported + c.dropped + c.guest.faults, 0);
  const workers = await runFio('strict', JOB, { vmm: 'qemu-notifier', faults: FAULT });
  const inThread = await runFio('strict', JOB, { vmm: 'qemu-notifier', faults: FAULT, transport: 'in-thread' });
  t.deepEqual(inThread.result.vmstack.virtio_iommu, workers.result.vmstack.virtio_iommu);
  t.is(inThread.result.vmstack.virtio_iommu!.faults.guest.faults, 1);
});

test('vmstack attack --vmm qemu-notifier: every fault of the attacking device reaches the guest (the event queue drained as it fills), the same in two runs', async (t) => {
  const once = () =>
    runAttack({
      configs: [{ strategy: 'strict', untrusted: false }],
      runArgs: {
        fio: { rw: 'randrw', bs: '4k', iodepth: '4', size: '256k', verify: 'crc32c', direct: '1' },
        strategy: 'strict',
        clock: 'virtual',
        quantumNs: DEFAULT_QUANTUM_NS,
        driver: 'v5.10',
        bufferContiguity: 'none',
        guestRam: '64m',
        untrusted: false,
        outputFormat: 'normal',
        vmm: 'qemu-notifier',
      },
      attack: { delaysNs: [0, 1000], sampleEvery: 4, secretPages: 4, scanPages: 256, scanAfterCommands: 16, neighbourBytes: 64 },
    });
  const a = await once();
  const row = a.rows[0];
  const f = row.fault_reports!;
  t.true(row.faults > 100, `the attack faulted ${row.faults} times`);
  t.true(f.host.faults >= row.faults, "the host recorded every fault of the attack (and the workload's own, none here)");
  t.is(f.host.overflowed, 0);
  t.is(f.reported, f.host.faults);
  t.is(f.dropped, 0);
  t.is(f.guest.faults, f.reported);
  t.is(f.guest.by_reason.mapping + f.guest.by_reason.domain + f.guest.by_reason.unknown, f.guest.faults);
  t.is(f.guest.by_flags.read + f.guest.by_flags.write, f.guest.faults, 'each report names its access');
  const b = await once();
  t.deepEqual(b.rows[0].fault_reports, f, 'the reports do not depend on thread timing');
});
