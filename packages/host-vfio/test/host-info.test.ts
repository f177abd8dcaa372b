/**
 * The host's answers to the VMM's container and group calls beyond MAP and
 * UNMAP: VFIO_IOMMU_GET_INFO as the VMM reads it (iova_pgsizes, the span of
 * the IOVA_RANGE capability, DMA_AVAIL), and VFIO_GROUP_SET_CONTAINER /
 * UNSET_CONTAINER, which set and clear the group's device's context entry
 * and flush its IOTLB. Both directly and through the RPC record (serve).
 */

import { IommuContextEntry, IoPgtable } from '@vmstack/iommu-hw';
import {
  decodeGetInfoReply,
  encodeGroupContainerRequest,
  LockTable,
  ModelClock,
  type RpcRequestView,
  VmmToHostGetInfo,
  VmmToHostGroupContainer,
  vfioReplyErrno,
} from '@vmstack/shm';
import test from 'ava';
import { HostVfio } from '../src/host.js';
import { IOMMU_LOCK, MMAP_LOCK, QI_Q_LOCK, VFIO_IOMMU_PGSIZES, VfioContainer, X86_MSI_IOVA_BASE } from '../src/vfio-iommu-type1.js';
import { TEST_COSTS } from './helpers/costs.js';

const RAM = 4 * 1024 * 1024;
const EP = 0x100;

function rig() {
  const locks = LockTable.attach(
    LockTable.allocate([
      { name: IOMMU_LOCK, kind: 'mutex' },
      { name: QI_Q_LOCK, kind: 'spinlock' },
      { name: MMAP_LOCK, kind: 'rwsem' },
    ]),
    0,
  );
  const container = VfioContainer.attach(VfioContainer.allocate({ guestRamBytes: RAM, lockedVmLimitPages: RAM / 4096, dmaEntryLimit: 100 }), {
    pgtable: IoPgtable.attach(IoPgtable.allocate({ tablePages: 16 })),
    lockTable: locks,
    costs: TEST_COSTS,
    invalidateIotlb: () => {},
  });
  const context = new IommuContextEntry(IommuContextEntry.allocate());
  let flushes = 0;
  const host = new HostVfio(container, new ModelClock('virtual'), null, new Map([[EP, { context, invalidateIotlb: () => flushes++ }]]));
  return { host, context, flushes: () => flushes, locks };
}

const view = (type: number, dv: DataView) => ({ type, requestId: 1, timestampNs: 500, dv, payloadOffset: 16 }) as RpcRequestView;

test('GET_INFO as the VMM reads it: the host page sizes, the span of the two IOVA ranges around the MSI window, the mappings available', (t) => {
  const { host, locks } = rig();
  const i = host.getInfo(0);
  t.is(i.errno, 0);
  t.is(i.iovaPgsizes, VFIO_IOMMU_PGSIZES);
  t.is(i.iovaPgsizes, 0x4020_1000n, '4 KiB, 2 MiB, 1 GiB');
  t.deepEqual(i.iovaRanges, { count: 2, start: 0, end: 2 ** 48 - 1 });
  t.true(X86_MSI_IOVA_BASE > i.iovaRanges!.start && X86_MSI_IOVA_BASE < i.iovaRanges!.end, 'the MSI window is the hole between them');
  t.is(i.dmaAvail, 100);
  t.is(locks.get(IOMMU_LOCK).stat().acquisitions, 1, 'under iommu->lock, as the kernel builds the capabilities');
  const dv = new DataView(new ArrayBuffer(64));
  host.serve(view(VmmToHostGetInfo, dv)).write(dv, 16);
  const r = decodeGetInfoReply(dv, 16);
  t.deepEqual(r, { errno: 0, iovaPgsizes: VFIO_IOMMU_PGSIZES, iovaRanges: { count: 2, start: 0, end: 2 ** 48 - 1 }, dmaAvail: 100 });
});

test("UNSET_CONTAINER clears the group device's context entry and flushes its IOTLB; SET_CONTAINER sets it again; a second UNSET or an unknown group: -EINVAL", (t) => {
  const { host, context, flushes } = rig();
  t.true(context.present);
  t.is(host.groupSetContainer(EP, false, 0).errno, 0);
  t.false(context.present);
  t.is(flushes(), 1);
  t.is(host.groupSetContainer(EP, false, 0).errno, -22, 'not in the container');
  t.is(host.groupSetContainer(0x300, false, 0).errno, -22, 'no such group');
  const dv = new DataView(new ArrayBuffer(64));
  encodeGroupContainerRequest(dv, 16, EP, true);
  host.serve(view(VmmToHostGroupContainer, dv)).write(dv, 16);
  t.is(vfioReplyErrno(dv, 16), 0);
  t.true(context.present);
  t.is(flushes(), 2);
});
