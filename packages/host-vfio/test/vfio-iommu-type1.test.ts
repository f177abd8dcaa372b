import { IoPgtable } from '@vmstack/iommu-hw';
import { InputError, LockTable, ModelClock } from '@vmstack/shm';
import test from 'ava';
import {
  EEXIST,
  EFAULT,
  EINVAL,
  ENOMEM,
  ENOSPC,
  EOVERFLOW,
  IOMMU_LOCK,
  MMAP_LOCK,
  QI_Q_LOCK,
  VFIO_IOMMU_TLB_SYNC_MAX,
  VfioContainer,
  type VfioContainerAllocateOptions,
  type VfioContainerAttachOptions,
} from '../src/vfio-iommu-type1.js';
import { TEST_COSTS } from './helpers/costs.js';

const PAGE = 4096;
const COSTS = TEST_COSTS;

interface Rig {
  c: VfioContainer;
  pt: IoPgtable;
  clock: ModelClock;
  invals: { iova: number; sizeBytes: number; atNs: number; pinnedPages: number; stillMapped: boolean }[];
  lockTable: LockTable;
  /** model ns a call took */
  timed<T>(f: () => T): { r: T; ns: number };
}

/** guest RAM of the rigs unless a test says otherwise */
const RAM_BYTES = 64 * 1024 * 1024;

type RigOptions = Partial<VfioContainerAllocateOptions> & Partial<Omit<VfioContainerAttachOptions, 'pgtable' | 'lockTable'>> & { tablePages?: number };

function rig(opts: RigOptions = {}): Rig {
  const pt = IoPgtable.attach(IoPgtable.allocate({ tablePages: opts.tablePages ?? 64 }));
  const lockTable = LockTable.attach(
    LockTable.allocate([
      { name: IOMMU_LOCK, kind: 'mutex' },
      { name: QI_Q_LOCK, kind: 'spinlock' },
      { name: MMAP_LOCK, kind: 'rwsem' },
    ]),
    0,
  );
  const clock = new ModelClock('virtual');
  const invals: Rig['invals'] = [];
  const handle = VfioContainer.allocate({
    guestRamBytes: opts.guestRamBytes ?? RAM_BYTES,
    lockedVmLimitPages: opts.lockedVmLimitPages ?? Infinity,
    dmaEntryLimit: opts.dmaEntryLimit ?? 65535,
    maxDmaEntries: opts.maxDmaEntries,
    fineGrainedSuperPages: opts.fineGrainedSuperPages,
  });
  const r: Rig = {
    pt,
    clock,
    invals,
    lockTable,
    c: VfioContainer.attach(handle, {
      pgtable: pt,
      lockTable,
      costs: opts.costs ?? COSTS,
      invalidateIotlb: (iova, sizeBytes, clk) =>
        invals.push({ iova, sizeBytes, atNs: clk.nowNs(), pinnedPages: r.c.pinnedPages, stillMapped: pt.walk(iova) !== null }),
    }),
    timed<T>(f: () => T) {
      const t0 = clock.nowNs();
      const res = f();
      return { r: res, ns: clock.nowNs() - t0 };
    },
  };
  return r;
}

const map = (r: Rig, iova: number, vaddr: number, pages: number, read = true, write = true): number =>
  r.c.vfio_dma_do_map({ iova, vaddr, sizeBytes: pages * PAGE, read, write }, r.clock).errno;
const unmap = (r: Rig, iova: number, pages: number): { errno: number; unmappedBytes: number } =>
  r.c.vfio_dma_do_unmap({ iova, sizeBytes: pages * PAGE }, r.clock);

test("errno constants are Linux's", (t) => {
  t.deepEqual([EINVAL, EEXIST, ENOMEM, ENOSPC, EFAULT, EOVERFLOW], [22, 17, 12, 28, 14, 75]);
  t.is(VFIO_IOMMU_TLB_SYNC_MAX, 512);
});

test('map then unmap: page tables, pins, locked_vm, one invalidation, exact costs, lock held throughout', (t) => {
  const r = rig();
  const m = r.timed(() => map(r, 0x100000, 0x40000, 4, true, false));
  t.is(m.r, 0);
  t.is(m.ns, 1000 + 4 * 100 + 500 + 4 * 10, 'base + pin/page + one locked_vm update + PTE/page');
  t.deepEqual(r.pt.walk(0x101234), { hpa: 0x41234, prot: 1, levels: 4 });
  t.deepEqual(r.c.stats(), { mapDmaCalls: 1, unmapDmaCalls: 0, pinnedPages: 4, pinnedPagesPeak: 4, lockedVmPages: 4, dmaCount: 1, iotlbInvalidations: 0 });

  const u = r.timed(() => unmap(r, 0x100000, 4));
  t.deepEqual(u.r, { errno: 0, unmappedBytes: 4 * PAGE });
  t.is(u.ns, 2000 + 4 * 20 + 700 + 4 * 50 + 500, 'base + PTE clear/page + one flush + unpin/page + one locked_vm update');
  t.is(r.pt.walk(0x100000), null);
  t.is(r.pt.tablePagesInUse, 1);
  t.deepEqual(
    r.invals.map((i) => [i.iova, i.sizeBytes]),
    [[0x100000, 4 * PAGE]],
  );
  t.is(r.invals[0].atNs, m.ns + 2000 + 4 * 20, 'the invalidation is sent after the PTEs are cleared');
  t.false(r.invals[0].stillMapped);
  t.is(r.invals[0].pinnedPages, 4, 'pages are unpinned only after the IOTLB flush');
  t.deepEqual(r.c.stats(), { mapDmaCalls: 1, unmapDmaCalls: 1, pinnedPages: 0, pinnedPagesPeak: 4, lockedVmPages: 0, dmaCount: 0, iotlbInvalidations: 1 });

  const s = r.lockTable.get(IOMMU_LOCK).stat();
  t.is(s.acquisitions, 2);
  t.is(s.holdtimeMaxNs, u.ns);
  t.is(s.holdtimeMinNs, m.ns);
});

test('map argument checks: -EINVAL one by one, nothing pinned or mapped', (t) => {
  const r = rig();
  const cases: [string, { iova: number; vaddr: number; sizeBytes: number; read: boolean; write: boolean }, number][] = [
    ['no READ or WRITE', { iova: 0, vaddr: 0, sizeBytes: PAGE, read: false, write: false }, 1000],
    ['size 0 (before the lock)', { iova: 0, vaddr: 0, sizeBytes: 0, read: true, write: true }, 0],
    ['iova not page-aligned', { iova: 0x800, vaddr: 0, sizeBytes: PAGE, read: true, write: true }, 1000],
    ['vaddr not page-aligned', { iova: 0, vaddr: 0x10, sizeBytes: PAGE, read: true, write: true }, 1000],
    ['size not page-aligned', { iova: 0, vaddr: 0, sizeBytes: PAGE + 1, read: true, write: true }, 1000],
    ['range past the 48-bit aperture', { iova: 2 ** 48 - PAGE, vaddr: 0, sizeBytes: 2 * PAGE, read: true, write: true }, 1000],
    ['iova past the aperture', { iova: 2 ** 50, vaddr: 0, sizeBytes: PAGE, read: true, write: true }, 1000],
    ['negative iova (not a u64)', { iova: -PAGE, vaddr: 0, sizeBytes: PAGE, read: true, write: true }, 0],
    ['fractional size (not a u64)', { iova: 0, vaddr: 0, sizeBytes: 1.5, read: true, write: true }, 0],
    ['iova 2^64 (not a u64)', { iova: 2 ** 64, vaddr: 0, sizeBytes: PAGE, read: true, write: true }, 0],
    ['iova beyond 2^53 that does not wrap: outside the aperture', { iova: 2 ** 60, vaddr: 0, sizeBytes: PAGE, read: true, write: true }, 1000],
    ['NaN vaddr', { iova: 0, vaddr: Number.NaN, sizeBytes: PAGE, read: true, write: true }, 0],
  ];
  for (const [what, args, ns] of cases) {
    const res = r.timed(() => r.c.vfio_dma_do_map(args, r.clock));
    t.is(res.r.errno as number, -EINVAL, what);
    t.is(res.ns, ns, `${what}: charged`);
  }
  t.deepEqual(r.c.stats(), {
    mapDmaCalls: cases.length,
    unmapDmaCalls: 0,
    pinnedPages: 0,
    pinnedPagesPeak: 0,
    lockedVmPages: 0,
    dmaCount: 0,
    iotlbInvalidations: 0,
  });
  t.is(r.pt.mappedPages, 0);
  t.is(map(r, 2 ** 48 - PAGE, 0, 1), 0, 'the last page of the aperture maps');
});

test('overlap with an existing vfio_dma is -EEXIST; adjacent ranges map', (t) => {
  const r = rig();
  t.is(map(r, 0x10000, 0, 4), 0); // [0x10000, 0x14000)
  for (const [iova, pages] of [
    [0x10000, 4],
    [0x0f000, 2],
    [0x13000, 4],
    [0x11000, 1],
    [0x08000, 32],
  ]) {
    t.is(map(r, iova, 0x100000, pages), -EEXIST, `0x${iova.toString(16)} +${pages}`);
  }
  t.is(map(r, 0x0c000, 0x100000, 4), 0, 'ends where the first begins');
  t.is(map(r, 0x14000, 0x100000, 1), 0, 'begins where the first ends');
  t.is(r.c.dmaCount, 3);
  t.is(r.c.pinnedPages, 8, 'distinct pages: vaddr pages 0-3 and 0x100-0x103 (the third mapping shares 0x100)');
  t.is(r.c.lockedVmPages, 9);
});

test('dma_entry_limit: the next map is -ENOSPC until an unmap frees an entry', (t) => {
  const r = rig({ dmaEntryLimit: 2 });
  t.is(map(r, 0x0000, 0, 1), 0);
  t.is(map(r, 0x1000, 0x1000, 1), 0);
  t.is(map(r, 0x2000, 0x2000, 1), -ENOSPC);
  t.is(r.c.pinnedPages, 2);
  t.is(unmap(r, 0x0000, 1).errno, 0);
  t.is(map(r, 0x2000, 0x2000, 1), 0);
  t.is(map(r, 0x1000, 0x1000, 1), -EEXIST, 'the overlap check comes before the entry limit');
});

test("RLIMIT_MEMLOCK: a map that would pass it is -ENOMEM with the kernel's partial pin undone", (t) => {
  const r = rig({ lockedVmLimitPages: 6 });
  t.is(map(r, 0x100000, 0, 4), 0);
  const res = r.timed(() => map(r, 0x200000, 0x10000, 4));
  t.is(res.r, -ENOMEM);
  // pages 1 and 2 pin and fit (4+1, 4+2 ≤ 6); page 3 pins, fails the check and is put; then pages 1-2 are put
  t.is(res.ns, 1000 + 3 * 100 + 3 * 50);
  t.deepEqual(r.c.stats(), { mapDmaCalls: 2, unmapDmaCalls: 0, pinnedPages: 4, pinnedPagesPeak: 7, lockedVmPages: 4, dmaCount: 1, iotlbInvalidations: 0 });
  t.is(r.pt.walk(0x200000), null);
  t.is(map(r, 0x200000, 0x10000, 2), 0, 'up to the limit exactly');
  t.is(r.c.lockedVmPages, 6);
  t.is(map(r, 0x300000, 0x20000, 1), -ENOMEM, 'the first page of a chunk is checked too');
  t.is(r.c.pinnedPages, 6);
});

test('locked_vm counts per vfio_dma: a page mapped at two IOVAs is pinned twice and accounted twice', (t) => {
  const r = rig();
  t.is(map(r, 0x100000, 0x8000, 4), 0);
  t.is(map(r, 0x200000, 0x8000, 4), 0);
  t.is(map(r, 0x300000, 0xa000, 4), 0); // overlaps 2 of the same pages
  t.is(r.c.pinnedPages, 6);
  t.is(r.c.lockedVmPages, 12);
  t.is(r.pt.walk(0x200000)?.hpa, 0x8000);
  t.is(unmap(r, 0x100000, 4).unmappedBytes, 4 * PAGE);
  t.is(r.c.pinnedPages, 6, 'every page is still pinned by another mapping');
  t.is(r.c.lockedVmPages, 8);
  t.is(unmap(r, 0x200000, 4).unmappedBytes, 4 * PAGE);
  t.is(r.c.pinnedPages, 4);
  t.is(r.c.lockedVmPages, 4);
  t.is(unmap(r, 0x300000, 4).unmappedBytes, 4 * PAGE);
  t.deepEqual([r.c.pinnedPages, r.c.pinnedPagesPeak, r.c.lockedVmPages], [0, 6, 0]);
});

test('a full host page-table pool is -ENOMEM from vfio_iommu_map: unpinned and unaccounted again', (t) => {
  const r = rig({ tablePages: 4 });
  t.is(map(r, 0, 0, 1), 0);
  const res = r.timed(() => map(r, 2 * 1024 * 1024, 0x1000, 2));
  t.is(res.r, -ENOMEM);
  t.is(res.ns, 1000 + 2 * 100 + 500 + 2 * 50 + 500, 'pin + account, then unpin + unaccount');
  t.deepEqual(r.c.stats(), { mapDmaCalls: 2, unmapDmaCalls: 0, pinnedPages: 1, pinnedPagesPeak: 3, lockedVmPages: 1, dmaCount: 1, iotlbInvalidations: 0 });
  t.is(unmap(r, 2 * 1024 * 1024, 2).unmappedBytes, 0, 'no vfio_dma was left behind');
});

test('vaddr past guest RAM is -EFAULT; the chunk mapped before it is unmapped, flushed and unpinned', (t) => {
  const r = rig({ guestRamBytes: 16 * PAGE });
  const res = r.timed(() => map(r, 0x100000, 14 * PAGE, 4));
  t.is(res.r, -EFAULT);
  // chunk 1: pages 14, 15 pin, page 16 faults (ending the chunk) → account → map;
  // chunk 2: page 16 faults again → vfio_remove_dma: clear, flush, unpin, unaccount
  t.is(res.ns, 1000 + 4 * 100 + 500 + 2 * 10 + (2 * 20 + 700 + 2 * 50 + 500));
  t.deepEqual(
    r.invals.map((i) => [i.iova, i.sizeBytes]),
    [[0x100000, 2 * PAGE]],
  );
  t.deepEqual(r.c.stats(), { mapDmaCalls: 1, unmapDmaCalls: 0, pinnedPages: 0, pinnedPagesPeak: 2, lockedVmPages: 0, dmaCount: 0, iotlbInvalidations: 1 });
  t.is(r.pt.mappedPages, 0);
  t.is(map(r, 0x100000, 12 * PAGE, 4), 0, 'the last pages of guest RAM map');
});

test('unmap argument checks and the v2 no-bisect rule: -EINVAL, nothing removed', (t) => {
  const r = rig();
  t.is(map(r, 0x10000, 0, 4), 0);
  const cases: [string, number, number][] = [
    ['iova not page-aligned', 0x10800, PAGE],
    ['size 0', 0x10000, 0],
    ['size not page-aligned', 0x10000, PAGE + 512],
    ['starts inside a mapping', 0x11000, 3 * PAGE],
    ['ends inside a mapping', 0x10000, 2 * PAGE],
    ['ends inside a mapping, starting before it', 0x0, 0x12000],
    ['starts inside, ends after', 0x13000, 4 * PAGE],
    ['negative iova', -PAGE, PAGE],
  ];
  for (const [what, iova, sizeBytes] of cases) {
    t.deepEqual(r.c.vfio_dma_do_unmap({ iova, sizeBytes }, r.clock) as { errno: number; unmappedBytes: number }, { errno: -EINVAL, unmappedBytes: 0 }, what);
  }
  t.is(r.c.dmaCount, 1);
  t.is(r.c.pinnedPages, 4);
  t.is(r.c.iotlbInvalidations, 0);
  t.is(r.pt.mappedPages, 4);
});

test('unmapping nothing succeeds with 0 bytes and no invalidation', (t) => {
  const r = rig();
  t.is(map(r, 0x10000, 0, 4), 0);
  t.deepEqual(unmap(r, 0x20000, 16), { errno: 0, unmappedBytes: 0 });
  t.deepEqual(unmap(r, 0x0, 16), { errno: 0, unmappedBytes: 0 }, 'ends exactly where the mapping begins');
  t.deepEqual(r.c.vfio_dma_do_unmap({ iova: 2 ** 50, sizeBytes: PAGE }, r.clock), { errno: 0, unmappedBytes: 0 });
  t.is(r.c.iotlbInvalidations, 0);
  t.is(r.invals.length, 0);
});

test('an unmap covering several whole mappings (and holes) removes them all, one invalidation each', (t) => {
  const r = rig();
  t.is(map(r, 0x10000, 0x100000, 4), 0);
  t.is(map(r, 0x20000, 0x200000, 2), 0);
  t.is(map(r, 0x40000, 0x300000, 1), 0);
  t.is(map(r, 0x80000, 0x400000, 1), 0); // outside the unmap
  const res = r.timed(() => unmap(r, 0x10000, 0x40));
  t.deepEqual(res.r, { errno: 0, unmappedBytes: 7 * PAGE });
  t.is(res.ns, 2000 + 3 * (700 + 500) + 7 * (20 + 50), 'one base, then per vfio_dma a flush and an account');
  t.deepEqual(
    r.invals.map((i) => [i.iova, i.sizeBytes]).sort((a, b) => a[0] - b[0]),
    [
      [0x10000, 4 * PAGE],
      [0x20000, 2 * PAGE],
      [0x40000, PAGE],
    ],
  );
  t.deepEqual(r.c.stats(), { mapDmaCalls: 4, unmapDmaCalls: 1, pinnedPages: 1, pinnedPagesPeak: 8, lockedVmPages: 1, dmaCount: 1, iotlbInvalidations: 3 });
  t.is(r.pt.walk(0x80000)?.hpa, 0x400000);
  t.is(r.pt.mappedPages, 1);
});

test('gather batches: with per-page chunks (fgsp) an IOTLB sync every 512 chunks; VT-d chunks a contiguous vfio_dma into one', (t) => {
  const pages = 2 * VFIO_IOMMU_TLB_SYNC_MAX + 76;
  const amd = rig({ fineGrainedSuperPages: true });
  t.is(map(amd, 0x1000000, 0, pages), 0);
  const res = amd.timed(() => unmap(amd, 0x1000000, pages));
  t.deepEqual(res.r, { errno: 0, unmappedBytes: pages * PAGE });
  t.deepEqual(
    amd.invals.map((i) => [i.iova, i.sizeBytes, i.pinnedPages]),
    [
      [0x1000000, 512 * PAGE, pages],
      [0x1000000 + 512 * PAGE, 512 * PAGE, pages - 512],
      [0x1000000 + 1024 * PAGE, 76 * PAGE, 76],
    ],
    'each batch is flushed before its pages are unpinned',
  );
  t.is(res.ns, 2000 + pages * (20 + 50) + 3 * 700 + 500);
  t.is(amd.c.iotlbInvalidations, 3);
  t.is(amd.c.pinnedPages, 0);

  const vtd = rig();
  t.is(map(vtd, 0x1000000, 0, pages), 0);
  t.is(unmap(vtd, 0x1000000, pages).unmappedBytes, pages * PAGE);
  t.is(vtd.c.iotlbInvalidations, 1);
  t.deepEqual(
    vtd.invals.map((i) => [i.iova, i.sizeBytes]),
    [[0x1000000, pages * PAGE]],
  );
});

test("the lock is the named mutex of the lock table; a second container can use its own; both invalidate under their unit's qi->q_lock", (t) => {
  const h = LockTable.allocate([
    { name: 'iommu->lock/vm0', kind: 'mutex' },
    { name: 'iommu->lock/vm1', kind: 'mutex' },
    { name: QI_Q_LOCK, kind: 'spinlock' },
    { name: 'mmap_lock/vm0', kind: 'rwsem' },
    { name: 'mmap_lock/vm1', kind: 'rwsem' },
  ]);
  const locks = LockTable.attach(h, 3);
  const clock = new ModelClock('virtual');
  const mk = (lockName: string, mmapLockName: string) =>
    VfioContainer.attach(VfioContainer.allocate({ guestRamBytes: RAM_BYTES, lockedVmLimitPages: 100 }), {
      pgtable: IoPgtable.attach(IoPgtable.allocate({ tablePages: 8 })),
      lockTable: locks,
      lockName,
      mmapLockName,
      costs: COSTS,
      invalidateIotlb: () => {},
    });
  const c0 = mk('iommu->lock/vm0', 'mmap_lock/vm0');
  const c1 = mk('iommu->lock/vm1', 'mmap_lock/vm1');
  c0.vfio_dma_do_map({ iova: 0, vaddr: 0, sizeBytes: PAGE, read: true, write: true }, clock);
  c1.vfio_dma_do_map({ iova: 0, vaddr: 0, sizeBytes: PAGE, read: true, write: true }, clock);
  c1.vfio_dma_do_unmap({ iova: 0, sizeBytes: PAGE }, clock);
  t.deepEqual(
    locks.stats().map((s) => [s.name, s.acquisitions, s.readAcquisitions]),
    [
      ['iommu->lock/vm0', 1, undefined],
      ['iommu->lock/vm1', 2, undefined],
      ['qi->q_lock', 1, undefined],
      ['mmap_lock/vm0', 1, 1],
      ['mmap_lock/vm1', 2, 1],
    ],
    'the one unmap took qi->q_lock for its IOTLB invalidation; each VMM process its own mmap_lock',
  );
  t.false(locks.get('iommu->lock/vm0').isLocked());
  t.throws(() => mk('iommu->lock', 'mmap_lock/vm0'), { instanceOf: RangeError });
  t.throws(() => mk('iommu->lock/vm0', 'iommu->lock/vm1'), { instanceOf: RangeError, message: /no rwsem named/ });
});

test('a lock held by another thread in model time delays the ioctl (virtual clock)', (t) => {
  const r = rig();
  const other = new ModelClock('virtual');
  const peer = LockTable.attach(r.lockTable.handle, 1).get(IOMMU_LOCK);
  other.charge(5000);
  peer.lock(other);
  other.charge(3000);
  peer.unlock(other); // released at 8000
  t.is(map(r, 0, 0, 1), 0);
  t.is(r.clock.nowNs(), 8000 + 1000 + 100 + 500 + 10);
  t.is(r.lockTable.get(IOMMU_LOCK).stat().waittimeTotalNs, 8000);
});

test('allocate and attach options are checked, naming the field', (t) => {
  const pgtable = IoPgtable.attach(IoPgtable.allocate({ tablePages: 4 }));
  const lockTable = LockTable.attach(
    LockTable.allocate([
      { name: IOMMU_LOCK, kind: 'mutex' },
      { name: QI_Q_LOCK, kind: 'spinlock' },
      { name: MMAP_LOCK, kind: 'rwsem' },
    ]),
    0,
  );
  const base: VfioContainerAllocateOptions = { guestRamBytes: RAM_BYTES, lockedVmLimitPages: 10 };
  const badAllocate: [Partial<VfioContainerAllocateOptions>, string][] = [
    [{ lockedVmLimitPages: -1 }, 'lockedVmLimitPages'],
    [{ lockedVmLimitPages: 1.5 }, 'lockedVmLimitPages'],
    [{ dmaEntryLimit: -1 }, 'dmaEntryLimit'],
    [{ guestRamBytes: 1000 }, 'guestRamBytes'],
    [{ guestRamBytes: 0 }, 'guestRamBytes'],
    [{ guestRamBytes: Infinity }, 'guestRamBytes'],
    [{ maxDmaEntries: -1 }, 'maxDmaEntries'],
    [{ maxDmaEntries: 2 ** 30 }, 'maxDmaEntries'],
  ];
  for (const [patch, field] of badAllocate) {
    const e = t.throws(() => VfioContainer.allocate({ ...base, ...patch }), { instanceOf: InputError });
    t.is(e?.field, field);
  }
  const attachBase: VfioContainerAttachOptions = { pgtable, lockTable, costs: COSTS, invalidateIotlb: () => {} };
  const handle = VfioContainer.allocate(base);
  for (const [costs, field] of [
    [{ ...COSTS, hostIotlbFlushNs: -5 }, 'profile.hostIotlbFlushNs'],
    [{ ...COSTS, vfioPinPagePerPageNs: Number.NaN }, 'profile.vfioPinPagePerPageNs'],
  ] as const) {
    const e = t.throws(() => VfioContainer.attach(handle, { ...attachBase, costs }), { instanceOf: InputError });
    t.is(e?.field, field);
  }
  t.notThrows(() => VfioContainer.attach(VfioContainer.allocate({ ...base, lockedVmLimitPages: Infinity, dmaEntryLimit: 0 }), attachBase));
  t.is(VfioContainer.allocate({ ...base, dmaEntryLimit: 2 ** 32 - 1 }).maxDmaEntries, 65535, 'room for 65535 entries unless told');
});

test('maxDmaEntries below dma_entry_limit: a map that needs more room is a RangeError (a model limit), not an errno', (t) => {
  const r = rig({ maxDmaEntries: 2 });
  t.is(map(r, 0x0000, 0, 1), 0);
  t.is(map(r, 0x1000, 0x1000, 1), 0);
  t.throws(() => map(r, 0x2000, 0x2000, 1), { instanceOf: RangeError, message: /vfio_dma set is full \(2 entries/ });
  t.false(r.lockTable.get(IOMMU_LOCK).isLocked(), 'iommu->lock released');
});

test('mmap_lock: read-held around each page pin (vaddr_get_pfn), write-held around each locked_vm update (vfio_lock_acct), in model time', (t) => {
  const r = rig({ guestRamBytes: 16 * PAGE });
  const mm = r.lockTable.rwsem(MMAP_LOCK);
  t.is(map(r, 0x100000, 0, 4), 0);
  t.like(mm.stat(), {
    acquisitions: 1,
    holdtimeTotalNs: COSTS.vfioLockedVmAccountNs,
    readAcquisitions: 4,
    readHoldtimeTotalNs: 4 * COSTS.vfioPinPagePerPageNs,
  });
  t.is(unmap(r, 0x100000, 4).errno, 0);
  t.like(mm.stat(), { acquisitions: 2, readAcquisitions: 4 }, 'unpinning takes no read hold; the unaccounting a write hold');
  t.is(map(r, 0x200000, 15 * PAGE, 2), -EFAULT);
  t.like(mm.stat(), { acquisitions: 4, readAcquisitions: 7 }, 'the faulting pins take their read hold too');
  t.is(mm.holders(), 0);

  // another thread of the VMM process (a page fault, an mmap) holds mmap_lock for write from 0 to 50 µs of model time
  const other = LockTable.attach(r.lockTable.handle, 1).rwsem(MMAP_LOCK);
  const mmClock = new ModelClock('virtual');
  other.down_write(mmClock);
  mmClock.syncTo(r.clock.nowNs() + 50_000);
  other.up_write(mmClock);
  const m = r.timed(() => map(r, 0x300000, 0, 2));
  t.is(m.r, 0);
  t.is(
    m.ns,
    50_000 + 2 * COSTS.vfioPinPagePerPageNs + COSTS.vfioLockedVmAccountNs + 2 * COSTS.hostIommuMapPerPageNs,
    'the first pin waited for the write release',
  );
  t.like(mm.stat(), { readContentions: 1, readWaittimeTotalNs: 50_000 - COSTS.vfioDmaDoMapBaseNs });
  t.is(r.lockTable.get(IOMMU_LOCK).stat().holdtimeMaxNs, m.ns, 'iommu->lock was held across the wait');
});

test('one container, two attachments (two threads of the VMM process): each sees and undoes what the other mapped', (t) => {
  const h = LockTable.allocate([
    { name: IOMMU_LOCK, kind: 'mutex' },
    { name: QI_Q_LOCK, kind: 'spinlock' },
    { name: MMAP_LOCK, kind: 'rwsem' },
  ]);
  const pgtable = IoPgtable.allocate({ tablePages: 16 });
  const handle = VfioContainer.allocate({ guestRamBytes: RAM_BYTES, lockedVmLimitPages: 6, dmaEntryLimit: 3 });
  const on = (cpu: number) =>
    VfioContainer.attach(handle, { pgtable: IoPgtable.attach(pgtable), lockTable: LockTable.attach(h, cpu), costs: COSTS, invalidateIotlb: () => {} });
  const [a, b] = [on(0), on(1)];
  const ca = new ModelClock('virtual');
  const cb = new ModelClock('virtual');
  const mapOn = (c: VfioContainer, clk: ModelClock, iova: number, vaddr: number, pages: number) =>
    c.vfio_dma_do_map({ iova, vaddr, sizeBytes: pages * PAGE, read: true, write: true }, clk).errno as number;
  t.is(mapOn(a, ca, 0x10000, 0, 4), 0);
  t.is(mapOn(b, cb, 0x12000, 0x100000, 1), -EEXIST, "B sees A's vfio_dma");
  t.is(mapOn(b, cb, 0x20000, 0x100000, 3), -ENOMEM, "B's pins count against the locked_vm A left (4 of 6)");
  t.is(mapOn(b, cb, 0x20000, 0x2000, 2), 0);
  t.deepEqual(
    b.dmaList().map((d) => [d.iova, d.vaddr, d.sizeBytes]),
    [
      [0x10000, 0, 4 * PAGE],
      [0x20000, 0x2000, 2 * PAGE],
    ],
  );
  t.is(a.pinCount(0x2000), 2, 'page 2 is pinned by both mappings');
  t.deepEqual(a.stats(), b.stats());
  t.like(a.stats(), { mapDmaCalls: 4, dmaCount: 2, lockedVmPages: 6, pinnedPages: 4 });
  t.deepEqual(b.vfio_dma_do_unmap({ iova: 0x10000, sizeBytes: 4 * PAGE }, cb), { errno: 0, unmappedBytes: 4 * PAGE }, "B unmaps A's mapping");
  t.deepEqual(a.vfio_dma_do_unmap({ iova: 0, sizeBytes: 0, all: true }, ca), { errno: 0, unmappedBytes: 2 * PAGE });
  t.like(
    b.stats(),
    { unmapDmaCalls: 2, dmaCount: 0, lockedVmPages: 0, pinnedPages: 0, pinnedPagesPeak: 7 },
    'the peak: 4 pages, and 3 pinned by the refused map before it gave them back',
  );
  t.is(IoPgtable.attach(pgtable).mappedPages, 0);
  const s = LockTable.attach(h, 2).get(IOMMU_LOCK).stat();
  t.is(s.acquisitions, 8, 'six ioctls and the two reads of the set');
  t.is(s.acqBounces, 4, 'iommu->lock went A → B (3 maps, the list) → A (pin count) → B (unmap) → A (unmap all)');
});

// vfio_dma_do_map / vfio_dma_do_unmap: check_add_overflow(iova, size - 1) and,
// for a map, (vaddr, size - 1) answer -EOVERFLOW; a map checks before taking
// iommu->lock (nothing charged), an unmap under it.
const U64_TOP_PAGE = 2 ** 64 - PAGE;

test('map: iova or vaddr + size wrapping past 2^64 - 1 is -EOVERFLOW before the lock; the top page itself is -EINVAL (aperture) or -EFAULT (user space)', (t) => {
  const r = rig();
  const cases: [string, { iova: number; vaddr: number; sizeBytes: number; read: boolean; write: boolean }, number, number][] = [
    ['iova + size wraps', { iova: U64_TOP_PAGE, vaddr: 0, sizeBytes: 2 * PAGE, read: true, write: true }, -EOVERFLOW, 0],
    ['vaddr + size wraps', { iova: 0, vaddr: U64_TOP_PAGE, sizeBytes: 2 * PAGE, read: true, write: true }, -EOVERFLOW, 0],
    ['size 2^64 - 4096 from iova 2 pages', { iova: 2 * PAGE, vaddr: 0, sizeBytes: U64_TOP_PAGE, read: true, write: true }, -EOVERFLOW, 0],
    ['wraps and is unaligned: the wrap is checked first', { iova: U64_TOP_PAGE, vaddr: 0x10, sizeBytes: 2 * PAGE, read: true, write: true }, -EOVERFLOW, 0],
    ['the last iova page, no wrap: outside the aperture', { iova: U64_TOP_PAGE, vaddr: 0, sizeBytes: PAGE, read: true, write: true }, -EINVAL, 1000],
  ];
  for (const [what, args, errno, ns] of cases) {
    const res = r.timed(() => r.c.vfio_dma_do_map(args, r.clock));
    t.is(res.r.errno as number, errno, what);
    t.is(res.ns, ns, `${what}: charged`);
  }
  const top = r.c.vfio_dma_do_map({ iova: 0, vaddr: U64_TOP_PAGE, sizeBytes: PAGE, read: true, write: true }, r.clock);
  t.is(top.errno as number, -EFAULT, 'the last vaddr page, no wrap: above TASK_SIZE, pin_user_pages fails');
  t.is(r.c.dmaCount, 0);
  t.is(r.c.pinnedPages, 0);
  t.is(r.c.lockedVmPages, 0);
  t.is(r.pt.mappedPages, 0);
});

test('unmap: iova + size wrapping past 2^64 - 1 is -EOVERFLOW, nothing removed', (t) => {
  const r = rig();
  t.is(map(r, 0x10000, 0, 4), 0);
  for (const [what, iova, sizeBytes] of [
    ['from the top page, 2 pages', U64_TOP_PAGE, 2 * PAGE],
    ['from 0x10000, 2^64 - 4096 bytes', 0x10000, U64_TOP_PAGE],
  ] as const) {
    const res = r.timed(() => r.c.vfio_dma_do_unmap({ iova, sizeBytes }, r.clock));
    t.deepEqual(res.r as { errno: number; unmappedBytes: number }, { errno: -EOVERFLOW, unmappedBytes: 0 }, what);
    t.is(res.ns, COSTS.vfioDmaDoUnmapBaseNs, `${what}: checked under the lock`);
  }
  t.deepEqual(r.c.vfio_dma_do_unmap({ iova: U64_TOP_PAGE, sizeBytes: PAGE }, r.clock), { errno: 0, unmappedBytes: 0 }, 'the top page itself: nothing there');
  t.is(r.c.dmaCount, 1);
  t.is(r.pt.mappedPages, 4);
});

test('VFIO_DMA_UNMAP_FLAG_ALL: iova and size must be 0; removes every vfio_dma, one invalidation each, and answers the bytes unmapped', (t) => {
  const r = rig();
  t.is(map(r, 0x10000, 0, 4), 0);
  t.is(map(r, 0x40000, 0x10000, 2), 0);
  t.is(map(r, 0x100000, 0x20000, 1), 0);
  for (const [what, iova, sizeBytes] of [
    ['iova set', 0x10000, 0],
    ['size set', 0, 4 * PAGE],
    ['unaligned iova', 0x800, 0],
  ] as const) {
    t.deepEqual(
      r.c.vfio_dma_do_unmap({ iova, sizeBytes, all: true }, r.clock) as { errno: number; unmappedBytes: number },
      { errno: -EINVAL, unmappedBytes: 0 },
      what,
    );
  }
  t.is(r.c.dmaCount, 3, 'a refused UNMAP_ALL removes nothing');
  const res = r.timed(() => r.c.vfio_dma_do_unmap({ iova: 0, sizeBytes: 0, all: true }, r.clock));
  t.deepEqual(res.r as { errno: number; unmappedBytes: number }, { errno: 0, unmappedBytes: 7 * PAGE });
  t.deepEqual(
    r.invals.map((i) => [i.iova, i.sizeBytes, i.stillMapped]),
    [
      [0x10000, 4 * PAGE, false],
      [0x40000, 2 * PAGE, false],
      [0x100000, PAGE, false],
    ],
    'each vfio_dma unmapped and flushed in iova order, before its pages are unpinned',
  );
  t.is(
    res.ns,
    COSTS.vfioDmaDoUnmapBaseNs +
      7 * (COSTS.hostIommuUnmapPerPageNs + COSTS.vfioUnpinPagePerPageNs) +
      3 * (COSTS.hostIotlbFlushNs + COSTS.vfioLockedVmAccountNs),
  );
  t.like(r.c.stats(), { dmaCount: 0, pinnedPages: 0, lockedVmPages: 0, iotlbInvalidations: 3 });
  t.is(r.pt.mappedPages, 0);
  t.deepEqual(r.c.vfio_dma_do_unmap({ iova: 0, sizeBytes: 0, all: true }, r.clock), { errno: 0, unmappedBytes: 0 }, 'an empty container: 0 bytes');
});

test('qi_submit_sync: two containers on one host IOMMU unit queue their invalidations behind each other under qi->q_lock, in model time', (t) => {
  const h = LockTable.allocate([
    { name: 'iommu->lock/container0', kind: 'mutex' },
    { name: 'iommu->lock/container1', kind: 'mutex' },
    { name: QI_Q_LOCK, kind: 'spinlock' },
    { name: 'mmap_lock/vm0', kind: 'rwsem' },
    { name: 'mmap_lock/vm1', kind: 'rwsem' },
  ]);
  const mk = (cpu: number, lockName: string) =>
    VfioContainer.attach(VfioContainer.allocate({ guestRamBytes: RAM_BYTES, lockedVmLimitPages: 100 }), {
      pgtable: IoPgtable.attach(IoPgtable.allocate({ tablePages: 8 })),
      lockTable: LockTable.attach(h, cpu),
      lockName,
      mmapLockName: `mmap_lock/vm${cpu}`,
      costs: COSTS,
      invalidateIotlb: () => {},
    });
  const a = mk(0, 'iommu->lock/container0');
  const b = mk(1, 'iommu->lock/container1');
  const clockA = new ModelClock('virtual');
  const clockB = new ModelClock('virtual');
  a.vfio_dma_do_map({ iova: 0, vaddr: 0, sizeBytes: PAGE, read: true, write: true }, clockA);
  b.vfio_dma_do_map({ iova: 0, vaddr: 0, sizeBytes: PAGE, read: true, write: true }, clockB);
  clockB.syncTo(clockA.nowNs());
  a.vfio_dma_do_unmap({ iova: 0, sizeBytes: PAGE }, clockA);
  // B's unmap starts at the same model time: its own container lock is free, the unit's queue is not
  b.vfio_dma_do_unmap({ iova: 0, sizeBytes: PAGE }, clockB);
  const q = LockTable.attach(h, 2).get(QI_Q_LOCK).stat();
  t.is(q.acquisitions, 2);
  t.is(q.contentions, 1, "B found A's invalidation on the queue");
  t.is(q.waittimeTotalNs, COSTS.hostIotlbFlushNs, "B waited for A's whole submit and wait: the hardware completes wait descriptors in order");
  const own = LockTable.attach(h, 2)
    .stats()
    .filter((s) => s.name.startsWith('iommu->lock'));
  t.deepEqual(
    own.map((s) => s.contentions),
    [0, 0],
    'the containers do not share their iommu->lock',
  );
  t.is(clockB.nowNs(), clockA.nowNs() + COSTS.hostIotlbFlushNs, 'B ends one invalidation later than A');
});
