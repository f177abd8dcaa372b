/**
 * vfio_iommu_type1's ioctls path by path, each errno the Linux
 * implementation returns (drivers/vfio/vfio_iommu_type1.c with the
 * check_add_overflow / -EOVERFLOW rework; include/uapi/linux/vfio.h): one
 * table per ioctl, each row the state it starts from, the arguments, the
 * errno and what must (not) have changed. Then VFIO_IOMMU_GET_INFO's argsz
 * handshake and capability chain, 64-bit arguments as bigints, and
 * superpage leaves for hugetlbfs-backed guest RAM.
 */

import { IoPgtable, SUPERPAGE_2M_BYTES } from '@vmstack/iommu-hw';
import { LockTable, ModelClock } from '@vmstack/shm';
import test from 'ava';
import {
  decodeVfioIommuType1Info,
  EEXIST,
  EFAULT,
  EINVAL,
  ENOMEM,
  ENOSPC,
  EOVERFLOW,
  IOMMU_LOCK,
  MMAP_LOCK,
  QI_Q_LOCK,
  VFIO_IOMMU_INFO_CAPS,
  VFIO_IOMMU_INFO_PGSIZES,
  VFIO_IOMMU_TYPE1_INFO_BYTES,
  VfioContainer,
  type VfioContainerAllocateOptions,
  type VfioDmaMapArgs,
  type VfioDmaUnmapArgs,
} from '../src/vfio-iommu-type1.js';
import { TEST_COSTS } from './helpers/costs.js';

const PAGE = 4096;
const M2 = SUPERPAGE_2M_BYTES;
const RAM_BYTES = 16 * 1024 * 1024;
const U64_MAX = (1n << 64n) - 1n;

function rig(opts: Partial<VfioContainerAllocateOptions> = {}) {
  const pt = IoPgtable.attach(IoPgtable.allocate({ tablePages: 64 }));
  const lockTable = LockTable.attach(
    LockTable.allocate([
      { name: IOMMU_LOCK, kind: 'mutex' },
      { name: QI_Q_LOCK, kind: 'spinlock' },
      { name: MMAP_LOCK, kind: 'rwsem' },
    ]),
    0,
  );
  const clock = new ModelClock('virtual');
  const invals: { iova: number; sizeBytes: number }[] = [];
  const c = VfioContainer.attach(VfioContainer.allocate({ guestRamBytes: RAM_BYTES, lockedVmLimitPages: Infinity, ...opts }), {
    pgtable: pt,
    lockTable,
    costs: TEST_COSTS,
    invalidateIotlb: (iova, sizeBytes) => invals.push({ iova, sizeBytes }),
  });
  const map = (a: Partial<VfioDmaMapArgs>): number =>
    c.vfio_dma_do_map({ iova: 0x10_0000, vaddr: 0x4_0000, sizeBytes: PAGE, read: true, write: true, ...a }, clock).errno;
  const unmap = (a: VfioDmaUnmapArgs): { errno: number; unmappedBytes: number } => c.vfio_dma_do_unmap(a, clock);
  return { c, pt, clock, invals, map, unmap };
}
type Rig = ReturnType<typeof rig>;

interface MapRow {
  /** what the kernel code checks */
  why: string;
  setup?: (r: Rig) => void;
  opts?: Partial<VfioContainerAllocateOptions>;
  args: Partial<VfioDmaMapArgs>;
  errno: number;
}

const mapRows: [string, MapRow][] = [
  ['a page', { why: 'vfio_dma_do_map succeeds', args: {}, errno: 0 }],
  ['iova not an integer', { why: 'a __u64 field that is not one: -EINVAL', args: { iova: 0.5 }, errno: -EINVAL }],
  ['iova 2^64', { why: 'past the u64 range: -EINVAL', args: { iova: 2n ** 64n }, errno: -EINVAL }],
  ['size 0', { why: '"if (!size) return -EINVAL" before the overflow check', args: { sizeBytes: 0 }, errno: -EINVAL }],
  [
    'iova + size - 1 past 2^64 - 1',
    {
      why: 'check_add_overflow(iova, size - 1): -EOVERFLOW, before the lock',
      args: { iova: U64_MAX - BigInt(PAGE) + 1n, sizeBytes: 2 * PAGE },
      errno: -EOVERFLOW,
    },
  ],
  [
    'iova + size - 1 = 2^64 - 1',
    { why: 'the last byte of the space does not wrap: on to the aperture check (-EINVAL)', args: { iova: U64_MAX - BigInt(PAGE) + 1n }, errno: -EINVAL },
  ],
  [
    'vaddr + size - 1 past 2^64 - 1',
    { why: 'check_add_overflow(vaddr, size - 1): -EOVERFLOW', args: { vaddr: U64_MAX, sizeBytes: 2 * PAGE }, errno: -EOVERFLOW },
  ],
  ['unaligned iova (bigint above 2^53)', { why: 'iova & (pgsize - 1): -EINVAL, exact above 2^53', args: { iova: 2n ** 60n + 1n }, errno: -EINVAL }],
  ['unaligned size', { why: 'size & (pgsize - 1): -EINVAL', args: { sizeBytes: PAGE + 512 }, errno: -EINVAL }],
  ['unaligned vaddr', { why: 'vaddr & (pgsize - 1): -EINVAL', args: { vaddr: 0x4_0100 }, errno: -EINVAL }],
  ['no READ or WRITE', { why: '"if (!prot || ...)": -EINVAL', args: { read: false, write: false }, errno: -EINVAL }],
  ['overlap', { why: 'vfio_find_dma finds one: -EEXIST', setup: (r) => r.map({ sizeBytes: 4 * PAGE }), args: { iova: 0x10_3000 }, errno: -EEXIST }],
  [
    'dma_avail 0',
    { why: '"if (!iommu->dma_avail)": -ENOSPC (dma_entry_limit)', opts: { dmaEntryLimit: 1 }, setup: (r) => r.map({ iova: 0 }), args: {}, errno: -ENOSPC },
  ],
  ['in the MSI window', { why: 'vfio_iommu_iova_dma_valid: the reserved MSI range is not in iova_list: -EINVAL', args: { iova: 0xfee0_0000 }, errno: -EINVAL }],
  ['past the 48-bit aperture', { why: 'vfio_iommu_iova_dma_valid: -EINVAL', args: { iova: 2 ** 48 }, errno: -EINVAL }],
  ['locked_vm at RLIMIT_MEMLOCK', { why: 'vfio_pin_pages_remote: locked_vm + 1 > limit: -ENOMEM', opts: { lockedVmLimitPages: 0 }, args: {}, errno: -ENOMEM }],
  ['vaddr outside the process', { why: 'pin_user_pages_remote fails: -EFAULT', args: { vaddr: RAM_BYTES }, errno: -EFAULT }],
];

for (const [name, row] of mapRows) {
  test(`VFIO_IOMMU_MAP_DMA, ${name} → ${row.errno}`, (t) => {
    const r = rig(row.opts);
    row.setup?.(r);
    const before = { dma: r.c.dmaCount, pages: r.pt.mappedPages, locked: r.c.lockedVmPages };
    t.is(r.map(row.args), row.errno, row.why);
    if (row.errno !== 0) t.deepEqual({ dma: r.c.dmaCount, pages: r.pt.mappedPages, locked: r.c.lockedVmPages }, before, 'a failed map leaves nothing behind');
    else t.is(r.c.dmaCount, before.dma + 1);
  });
}

interface UnmapRow {
  why: string;
  setup?: (r: Rig) => void;
  args: VfioDmaUnmapArgs;
  errno: number;
  unmappedBytes: number;
  dmaLeft: number;
}

const two = (r: Rig) => {
  r.map({ iova: 0x10_0000, sizeBytes: 4 * PAGE });
  r.map({ iova: 0x20_0000, vaddr: 0x8_0000, sizeBytes: 2 * PAGE });
};

const unmapRows: [string, UnmapRow][] = [
  [
    'exactly one mapping',
    { why: 'removed, its size returned', setup: two, args: { iova: 0x10_0000, sizeBytes: 4 * PAGE }, errno: 0, unmappedBytes: 4 * PAGE, dmaLeft: 1 },
  ],
  [
    'a range over both',
    { why: 'every vfio_dma inside goes', setup: two, args: { iova: 0, sizeBytes: 0x40_0000 }, errno: 0, unmappedBytes: 6 * PAGE, dmaLeft: 0 },
  ],
  [
    'nothing mapped there',
    { why: 'unmapping nothing succeeds with 0 bytes', setup: two, args: { iova: 0x30_0000, sizeBytes: PAGE }, errno: 0, unmappedBytes: 0, dmaLeft: 2 },
  ],
  [
    'unaligned iova',
    { why: 'iova & (pgsize - 1): -EINVAL', setup: two, args: { iova: 0x10_0800, sizeBytes: PAGE }, errno: -EINVAL, unmappedBytes: 0, dmaLeft: 2 },
  ],
  ['size 0', { why: '!size: -EINVAL', setup: two, args: { iova: 0x10_0000, sizeBytes: 0 }, errno: -EINVAL, unmappedBytes: 0, dmaLeft: 2 }],
  [
    'unaligned size',
    { why: 'size & (pgsize - 1): -EINVAL', setup: two, args: { iova: 0x10_0000, sizeBytes: 100 }, errno: -EINVAL, unmappedBytes: 0, dmaLeft: 2 },
  ],
  [
    'iova + size - 1 past 2^64 - 1',
    {
      why: 'check_add_overflow(iova, size - 1): -EOVERFLOW',
      setup: two,
      args: { iova: 0x10_0000, sizeBytes: U64_MAX - BigInt(PAGE) + 1n },
      errno: -EOVERFLOW,
      unmappedBytes: 0,
      dmaLeft: 2,
    },
  ],
  [
    'up to 2^64 - 1 exactly',
    {
      why: 'the last byte does not wrap: unmaps everything from iova',
      setup: two,
      args: { iova: 0x20_0000, sizeBytes: 2n ** 64n - 0x20_0000n },
      errno: 0,
      unmappedBytes: 2 * PAGE,
      dmaLeft: 1,
    },
  ],
  [
    'starting inside a mapping',
    {
      why: 'v2: an unmap may not bisect a vfio_dma: -EINVAL',
      setup: two,
      args: { iova: 0x10_1000, sizeBytes: 3 * PAGE },
      errno: -EINVAL,
      unmappedBytes: 0,
      dmaLeft: 2,
    },
  ],
  ['ending inside a mapping', { why: 'v2: -EINVAL', setup: two, args: { iova: 0x10_0000, sizeBytes: 2 * PAGE }, errno: -EINVAL, unmappedBytes: 0, dmaLeft: 2 }],
  [
    'FLAG_ALL',
    {
      why: 'VFIO_DMA_UNMAP_FLAG_ALL removes every vfio_dma',
      setup: two,
      args: { iova: 0, sizeBytes: 0, all: true },
      errno: 0,
      unmappedBytes: 6 * PAGE,
      dmaLeft: 0,
    },
  ],
  [
    'FLAG_ALL with a size',
    { why: 'FLAG_ALL needs iova = size = 0: -EINVAL', setup: two, args: { iova: 0, sizeBytes: PAGE, all: true }, errno: -EINVAL, unmappedBytes: 0, dmaLeft: 2 },
  ],
  ['FLAG_ALL with an iova', { why: '-EINVAL', setup: two, args: { iova: 0x10_0000, sizeBytes: 0, all: true }, errno: -EINVAL, unmappedBytes: 0, dmaLeft: 2 }],
];

for (const [name, row] of unmapRows) {
  test(`VFIO_IOMMU_UNMAP_DMA, ${name} → ${row.errno}`, (t) => {
    const r = rig();
    row.setup?.(r);
    t.deepEqual(r.unmap(row.args), { errno: row.errno, unmappedBytes: row.unmappedBytes }, row.why);
    t.is(r.c.dmaCount, row.dmaLeft);
  });
}

function infoBuffer(argsz: number, bytes = argsz): DataView {
  const dv = new DataView(new ArrayBuffer(bytes));
  if (bytes >= 4) dv.setUint32(0, argsz, true);
  return dv;
}

test('VFIO_IOMMU_GET_INFO: argsz below 16 is -EINVAL; a buffer shorter than argsz is -EFAULT', (t) => {
  const r = rig();
  t.is<number, number>(r.c.vfio_iommu_type1_get_info(infoBuffer(12, 16)).errno, -EINVAL);
  t.is<number, number>(r.c.vfio_iommu_type1_get_info(infoBuffer(64, 32)).errno, -EFAULT);
});

test('VFIO_IOMMU_GET_INFO: a 24-byte argsz gets flags and page sizes, and the argsz the chain needs; no chain written', (t) => {
  const r = rig();
  const dv = infoBuffer(VFIO_IOMMU_TYPE1_INFO_BYTES);
  t.is<number, number>(r.c.vfio_iommu_type1_get_info(dv).errno, 0);
  const info = decodeVfioIommuType1Info(dv);
  t.is(info.argsz, 24 + 32 + 16 + 48, 'migration 32 + dma_avail 12 (aligned to 16) + iova ranges 16 + 2 × 16');
  t.is(info.flags, VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS);
  t.is(info.iovaPgsizes, 0x4020_1000n, '4 KiB | 2 MiB | 1 GiB');
  t.is(info.capOffset, 0, 'no chain in a short buffer');
});

test('VFIO_IOMMU_GET_INFO: the capability chain, as QEMU walks it: IOVA ranges around the MSI window, DMA mappings available', (t) => {
  const r = rig({ dmaEntryLimit: 10 });
  r.map({});
  r.map({ iova: 0x20_0000 });
  const dv = infoBuffer(120);
  t.is<number, number>(r.c.vfio_iommu_type1_get_info(dv).errno, 0);
  const info = decodeVfioIommuType1Info(dv);
  t.is(info.capOffset, 24);
  t.deepEqual(info.iovaRanges, [
    { start: 0n, end: 0xfedf_ffffn },
    { start: 0xfef0_0000n, end: 2n ** 48n - 1n },
  ]);
  t.is(info.dmaAvail, 8, 'dma_entry_limit 10, two mappings held');
  t.deepEqual(info.migration, { pgsizeBitmap: 4096n, maxDirtyBitmapSizeBytes: 2n ** 28n });
  t.deepEqual([dv.getUint32(24 + 4, true), dv.getUint32(56 + 4, true), dv.getUint32(72 + 4, true)], [56, 72, 0], 'next offsets from the start of the struct');
  r.unmap({ iova: 0, sizeBytes: 0, all: true });
  r.c.vfio_iommu_type1_get_info(dv);
  t.is(decodeVfioIommuType1Info(dv).dmaAvail, 10, 'FLAG_ALL gave every entry back');
});

test('64-bit arguments: page-aligned bigints above 2^53 are exact (EOVERFLOW vs aperture), and numbers agree with bigints', (t) => {
  const r = rig();
  t.is(r.map({ iova: 2n ** 63n, sizeBytes: 2n ** 63n }), -EINVAL, 'ends at exactly 2^64 - 1: no wrap, outside the aperture');
  t.is(r.map({ iova: 2n ** 63n, sizeBytes: 2n ** 63n + BigInt(PAGE) }), -EOVERFLOW);
  t.is(r.map({ iova: 2 ** 63, sizeBytes: 2 ** 63 + PAGE }), -EOVERFLOW, 'the same as numbers: page multiples are exact doubles');
  t.is(r.map({ iova: 0x30_0000n, vaddr: 0x8_0000n, sizeBytes: BigInt(PAGE) }), 0, 'bigints in range map');
  t.deepEqual(r.unmap({ iova: 0x30_0000n, sizeBytes: BigInt(PAGE) }), { errno: 0, unmappedBytes: PAGE });
});

test('hugetlbfs-backed guest RAM: a 2 MiB-aligned map is written as 2 MiB leaves, charged per leaf; its unmap clears them whole', (t) => {
  const huge = rig({ hostPageSizeBytes: M2 });
  const small = rig();
  const t0 = huge.clock.nowNs();
  t.is(huge.map({ iova: 2 * M2, vaddr: 2 * M2, sizeBytes: 2 * M2 }), 0);
  const hugeNs = huge.clock.nowNs() - t0;
  t.is(small.map({ iova: 2 * M2, vaddr: 2 * M2, sizeBytes: 2 * M2 }), 0);
  t.deepEqual([huge.pt.leafEntries, small.pt.leafEntries], [2, 1024]);
  t.is(huge.pt.walk(3 * M2 + 5)?.leafLevel, 2);
  t.is(small.pt.walk(3 * M2 + 5)?.leafLevel, 1);
  t.is(small.clock.nowNs() - hugeNs, 1022 * TEST_COSTS.hostIommuMapPerPageNs, 'PTE writes: 2 instead of 1024; pins stay per 4 KiB page');
  t.is(huge.c.lockedVmPages, 1024);
  t.deepEqual(huge.unmap({ iova: 2 * M2, sizeBytes: 2 * M2 }), { errno: 0, unmappedBytes: 2 * M2 });
  t.deepEqual([huge.pt.mappedPages, huge.pt.leafEntries, huge.c.pinnedPages, huge.c.lockedVmPages], [0, 0, 0, 0]);
  t.is(huge.invals.length, 1, 'one IOTLB sync for the contiguous chunk');
});

test('hugetlbfs-backed guest RAM: a map off the 2 MiB boundary still uses 4 KiB leaves where it must', (t) => {
  const huge = rig({ hostPageSizeBytes: M2 });
  t.is(huge.map({ iova: 2 * M2 - PAGE, vaddr: 2 * M2 - PAGE, sizeBytes: M2 + 2 * PAGE }), 0);
  t.is(huge.pt.leafEntries, 3, 'head page, one 2 MiB leaf, tail page');
  t.deepEqual(huge.unmap({ iova: 2 * M2 - PAGE, sizeBytes: M2 + 2 * PAGE }), { errno: 0, unmappedBytes: M2 + 2 * PAGE });
  t.is(huge.pt.mappedPages, 0);
});

test('hostPageSizeBytes other than 4 KiB, 2 MiB or 1 GiB is refused, naming the field', (t) => {
  const e = t.throws(() => VfioContainer.allocate({ guestRamBytes: RAM_BYTES, lockedVmLimitPages: 1, hostPageSizeBytes: 65536 }));
  t.regex(e?.message ?? '', /hostPageSizeBytes/);
});
