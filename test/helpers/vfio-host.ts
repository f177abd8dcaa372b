/** The host side of a virtio-iommu test rig: the big locks and a VFIO container over a real host page table. */

import { IOMMU_LOCK, MMAP_LOCK, QI_Q_LOCK, VfioContainer } from '@vmstack/host-vfio';
import { IoPgtable } from '@vmstack/iommu-hw';
import { DEFAULT_PROFILE_PATH, type LockKind, type LockTable, loadProfile } from '@vmstack/shm';
import { VIOMMU_DEVICE_MUTEX } from '@vmstack/vmm';

const profile = loadProfile(DEFAULT_PROFILE_PATH);

/** The locks the VMM's virtio-iommu device and the host's vfio_iommu_type1 take, in the stack's order. */
export const VMM_HOST_LOCK_SPECS: readonly { name: string; kind: LockKind }[] = [
  { name: VIOMMU_DEVICE_MUTEX, kind: 'mutex' },
  { name: IOMMU_LOCK, kind: 'mutex' },
  { name: QI_Q_LOCK, kind: 'spinlock' },
  { name: MMAP_LOCK, kind: 'rwsem' },
];

/** A VFIO container for `ramBytes` of guest RAM over a fresh host page table of `tablePages`, taking its locks from `locks`. */
export function vfioContainerOver(
  locks: LockTable,
  ramBytes: number,
  tablePages: number,
  invalidateIotlb: (iova: number, sizeBytes: number) => void = () => {},
): { pgtable: IoPgtable; container: VfioContainer } {
  const pgtable = IoPgtable.attach(IoPgtable.allocate({ tablePages }));
  const container = VfioContainer.attach(VfioContainer.allocate({ guestRamBytes: ramBytes, lockedVmLimitPages: ramBytes / 4096 }), {
    pgtable,
    lockTable: locks,
    costs: profile,
    invalidateIotlb,
  });
  return { pgtable, container };
}
