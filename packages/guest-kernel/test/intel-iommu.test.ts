/**
 * The bare-metal VT-d driver under dma-iommu, in one thread: the real IOVA
 * domain, flush queue, pool, swiotlb and page allocator over a real
 * page-table pool (IoPgtable) and a real `inval` ring, read back as the
 * device reads them. "CPUs" are LockTable attachments with their own model
 * clocks.
 */

import { IoPgtable } from '@vmstack/iommu-hw';
import {
  asGpa,
  asIova,
  DEFAULT_PROFILE_PATH,
  InputError,
  IOMMU_READ,
  IOMMU_WRITE,
  iotlbInvalIova,
  iotlbInvalSizeBytes,
  LockTable,
  loadProfile,
  ModelClock,
  Ring,
} from '@vmstack/shm';
import test from 'ava';
import { DmaIommu, type DmaStrategy } from '../src/dma.js';
import { BouncePool, DMA_FROM_DEVICE, DMA_TO_DEVICE, type DmaSegment } from '../src/iommu/bounce-pool.js';
import { iommu_iotlb_sync, newIotlbGather } from '../src/iommu/domain-ops.js';
import { FlushQueue } from '../src/iommu/flush-queue.js';
import { bareMetalDmaCosts, IntelIommuDriver, type IntelIommuInit, QI_Q_LOCK } from '../src/iommu/intel-iommu.js';
import { IovaDomain } from '../src/iommu/iova.js';
import { Swiotlb } from '../src/iommu/swiotlb.js';
import { PageAllocator } from '../src/mm/page-alloc.js';
import { Profiler } from '../src/profile.js';

const PAGE = 4096;
const MiB = 1024 * 1024;
const RAM_BYTES = 16 * MiB;
const SWIOTLB_GPA = 2 * MiB;
const HEAP_GPA = 4 * MiB;
const POOL_IOVA = 4 * 1024 * MiB;
const LIMIT_PFN = 2 ** 36 - 1;
const DOMAIN = 7;

/** Round numbers, so the expected model times below can be worked out by hand; the allocators cost nothing. */
const COSTS = {
  hostIommuMapPerPageNs: 10,
  hostIommuUnmapPerPageNs: 20,
  hostIotlbFlushNs: 700,
  iommuDmaMapCallNs: 40,
  iommuDmaSgPerSegmentNs: 5,
  iovaRcacheHitNs: 0,
  iovaRbtreeOpNs: 0,
  flushQueueAddNs: 0,
  guestPageAllocNs: 0,
  bouncePoolListOpNs: 0,
  memcpyBytesPerNs: 1e9,
  memsetBytesPerNs: 1e9,
  swiotlbSlotSearchNs: 0,
};

interface RigOptions {
  cpus?: number;
  untrusted?: boolean;
  alwaysBounceLimitBytes?: number;
}

/** One domain on one VT-d unit, as a bare-metal kernel sets it up; `cpu(i)` attaches CPU i. */
function rig(strategy: DmaStrategy, o: RigOptions = {}) {
  const cpus = o.cpus ?? 1;
  const untrusted = o.untrusted ?? false;
  const ram = new Uint8Array(new SharedArrayBuffer(RAM_BYTES));
  const pgtableH = IoPgtable.allocate({ tablePages: 256 });
  const invalRing = Ring.allocate({ capacityRecords: 64 });
  const pageH = PageAllocator.allocate({ ramBytes: RAM_BYTES, heapStartBytes: HEAP_GPA });
  const iovaH = IovaDomain.allocate({ startPfn: 1, limitPfn: LIMIT_PFN, cpus, maxAllocations: 4096 });
  const fqH = strategy === 'lazy' ? FlushQueue.allocate({ cpus }) : null;
  const poolH =
    strategy === 'bounce' ? BouncePool.allocate({ iovaBase: POOL_IOVA, slotsPerClass: 16, alwaysBounceLimitBytes: o.alwaysBounceLimitBytes }) : null;
  const tlbH = untrusted && strategy !== 'bounce' ? Swiotlb.allocate({ areaGpa: SWIOTLB_GPA, sizeBytes: 1 * MiB, minAlignMask: PAGE - 1 }) : null;
  const locksH = LockTable.allocate([
    ...IntelIommuDriver.lockSpecs(),
    ...PageAllocator.lockSpecs(pageH),
    ...IovaDomain.lockSpecs(iovaH),
    ...(fqH ? FlushQueue.lockSpecs(fqH) : []),
    ...(poolH ? BouncePool.lockSpecs(poolH) : []),
    ...(tlbH ? Swiotlb.lockSpecs(tlbH) : []),
  ]);
  const init: IntelIommuInit = { pgtable: pgtableH, invalRing, domainId: DOMAIN };
  const cpu = (c: number) => {
    const locks = LockTable.attach(locksH, c);
    const clock = new ModelClock('virtual');
    const profiler = new Profiler(clock);
    const pages = PageAllocator.attach(pageH, c, locks, COSTS);
    const iovad = IovaDomain.attach(iovaH, c, locks, COSTS);
    if (poolH && c === 0) iovad.reserve_iova(POOL_IOVA / PAGE, (POOL_IOVA + BouncePool.iovaSpanBytes({ slotsPerClass: 16 })) / PAGE - 1);
    const iommu = IntelIommuDriver.attach(init, { lockTable: locks, clock, costs: COSTS, profiler, spinLoads: 16 });
    const fq = fqH ? FlushQueue.attach(fqH, c, locks, iovad, COSTS, () => iommu.flush_iotlb_all(DOMAIN)) : null;
    const pool = poolH ? BouncePool.attach(poolH, c, locks, pages, COSTS) : null;
    const swiotlb = tlbH ? Swiotlb.attach(tlbH, c, locks, ram, COSTS) : null;
    const dma = new DmaIommu(
      strategy,
      { domain: DOMAIN, iovad, iommu, fq, pool, swiotlb, mem: ram, cpu: c, limitPfn: LIMIT_PFN, untrusted },
      clock,
      COSTS,
      profiler,
    );
    return { locks, clock, profiler, pages, iovad, iommu, fq, pool, dma };
  };
  const pgtable = IoPgtable.attach(pgtableH);
  /** The device's end of the invalidation queue. */
  const device = Ring.attach(invalRing);
  /** Invalidations the device has received since the last call: [iova, size (0 = all), model time]. */
  const invalidations = () => {
    const out: { iova: number; sizeBytes: number; atNs: number }[] = [];
    const n = device.available();
    for (let i = 0; i < n; i++) {
      const off = device.offsetAt(i);
      out.push({ iova: iotlbInvalIova(device.dv, off), sizeBytes: iotlbInvalSizeBytes(device.dv, off), atNs: device.timestampAt(off) });
    }
    device.release(n);
    return out;
  };
  const qLock = () => LockTable.attach(locksH, cpus).get(QI_Q_LOCK).stat();
  return { ram, pgtable, cpu, invalidations, qLock, iovaH };
}

/** The model ns `f` charged on `clock`. */
function timed<T>(clock: ModelClock, f: () => T): { r: T; ns: number } {
  const start = clock.nowNs();
  const r = f();
  return { r, ns: clock.nowNs() - start };
}

test('strict: map writes the leaf PTEs (one map call per physically contiguous run); unmap clears them and sends one invalidation of the range under qi->q_lock', (t) => {
  const s = rig('strict');
  const c = s.cpu(0);
  const a = c.pages.alloc_pages(2); // four contiguous pages: the buffer is pages 0, 1 and 3
  const b = a + 3 * PAGE;
  const segs: DmaSegment[] = [
    { gpa: a, lenBytes: 2 * PAGE },
    { gpa: b, lenBytes: PAGE },
  ];
  const map = timed(c.clock, () => c.dma.iommu_dma_map_sg(segs, DMA_FROM_DEVICE));
  const m = map.r;
  const iova = m.dmaSegments[0].dmaAddr;
  t.like(c.iommu.counters, { mapCalls: 2, mappedPages: 3, invalidations: 0 });
  [a, a + PAGE, b].forEach((gpa, i) => {
    const w = s.pgtable.walk(iova + i * PAGE + 5);
    t.deepEqual(
      w && { hpa: w.hpa, prot: w.prot },
      { hpa: gpa + 5, prot: IOMMU_WRITE },
      `page ${i}: the device may write it (a read from the drive), nothing else`,
    );
  });
  t.is(s.pgtable.walk(iova + 3 * PAGE), null, 'nothing past the mapping');
  t.is(s.pgtable.mappedPages, 3);
  t.deepEqual(s.invalidations(), [], 'a map sends nothing: non-present → present needs no flush on a real unit');
  t.is(map.ns, COSTS.iommuDmaMapCallNs + 2 * COSTS.iommuDmaSgPerSegmentNs + 3 * COSTS.hostIommuMapPerPageNs, 'dma-iommu call + segments + 3 PTE writes');

  const unmapAt = c.clock.nowNs();
  const unmap = timed(c.clock, () => c.dma.iommu_dma_unmap_sg(m));
  for (let i = 0; i < 3; i++) t.is(s.pgtable.walk(iova + i * PAGE), null);
  t.is(s.pgtable.mappedPages, 0);
  t.is(s.pgtable.tablePagesInUse, 1, 'the emptied tables went back to the pool');
  t.deepEqual(s.invalidations(), [{ iova, sizeBytes: 3 * PAGE, atNs: unmapAt + COSTS.iommuDmaMapCallNs + 3 * COSTS.hostIommuUnmapPerPageNs }]);
  t.is(unmap.ns, COSTS.iommuDmaMapCallNs + 3 * COSTS.hostIommuUnmapPerPageNs + COSTS.hostIotlbFlushNs);
  t.like(s.qLock(), { acquisitions: 1, contentions: 0, holdtimeTotalNs: COSTS.hostIotlbFlushNs });
  t.like(c.iommu.counters, { unmapCalls: 1, unmappedPages: 3, iotlbSyncs: 1, flushAll: 0, invalidations: 1 });
  t.is(IovaDomain.stats(s.iovaH).allocatedPages, 0, 'strict: the IOVA is free once the invalidation is done');
  const prof = c.profiler.entries;
  t.like(prof.get('intel_iommu_map_pages'), { calls: 2, ns: 3 * COSTS.hostIommuMapPerPageNs, bytes: 3 * PAGE });
  t.like(prof.get('intel_iommu_unmap_pages'), { calls: 1, ns: 3 * COSTS.hostIommuUnmapPerPageNs });
  t.like(prof.get('intel_iommu_tlb_sync'), { calls: 1, ns: COSTS.hostIotlbFlushNs, selfNs: 0 });
  t.like(prof.get('qi_submit_sync'), { calls: 1, ns: COSTS.hostIotlbFlushNs, selfNs: COSTS.hostIotlbFlushNs });
});

test('strict: every unmap is one invalidation (n unmaps, n acquisitions of qi->q_lock)', (t) => {
  const s = rig('strict');
  const c = s.cpu(0);
  const gpa = c.pages.alloc_pages(0);
  for (let i = 0; i < 10; i++) c.dma.iommu_dma_unmap_sg(c.dma.iommu_dma_map_sg([{ gpa, lenBytes: PAGE }], DMA_TO_DEVICE));
  t.is(s.invalidations().length, 10);
  t.like(s.qLock(), { acquisitions: 10, holdtimeTotalNs: 10 * COSTS.hostIotlbFlushNs });
});

test('lazy: unmaps clear the PTEs at once but send nothing; the flush queue later sends one domain-wide invalidation and only then frees the IOVAs', (t) => {
  const s = rig('lazy');
  const c = s.cpu(0);
  const gpa = c.pages.alloc_pages(0);
  const iovas: number[] = [];
  for (let i = 0; i < 10; i++) {
    const m = c.dma.iommu_dma_map_sg([{ gpa, lenBytes: PAGE }], DMA_TO_DEVICE);
    iovas.push(m.dmaSegments[0].dmaAddr);
    t.is(s.pgtable.walk(m.dmaSegments[0].dmaAddr)?.prot as number, IOMMU_READ);
    c.dma.iommu_dma_unmap_sg(m);
    t.is(s.pgtable.walk(m.dmaSegments[0].dmaAddr), null, 'the PTE is cleared by the unmap itself');
  }
  t.is(new Set(iovas).size, 10, 'no IOVA was reused before a flush');
  t.deepEqual(s.invalidations(), []);
  t.is(s.qLock().acquisitions, 0);
  t.is(c.fq!.pending(0), 10);
  t.is(IovaDomain.stats(s.iovaH).allocatedPages, 10, 'the IOVAs wait for the flush');

  const deadline = c.dma.nextTimerNs();
  c.clock.advanceTo(deadline);
  c.dma.runTimers();
  t.deepEqual(s.invalidations(), [{ iova: 0, sizeBytes: 0, atNs: deadline }], 'one domain-selective invalidation (size 0: all)');
  t.like(s.qLock(), { acquisitions: 1, holdtimeTotalNs: COSTS.hostIotlbFlushNs });
  t.like(c.iommu.counters, { flushAll: 1, iotlbSyncs: 0, invalidations: 1 });
  t.is(c.clock.nowNs(), deadline + COSTS.hostIotlbFlushNs);
  t.is(IovaDomain.stats(s.iovaH).allocatedPages, 0);
  t.like(c.profiler.entries.get('intel_flush_iotlb_all'), { calls: 1, ns: COSTS.hostIotlbFlushNs });
});

test('bounce: the pool maps a slot once (one map call, its PTEs stay); hits send nothing; the eviction at teardown unmaps it with one invalidation', (t) => {
  const s = rig('bounce', { alwaysBounceLimitBytes: 16 * 1024 });
  const c = s.cpu(0);
  const gpa = c.pages.alloc_pages(0);
  let slotIova = -1;
  for (let k = 0; k < 5; k++) {
    const m = c.dma.iommu_dma_map_sg([{ gpa, lenBytes: PAGE }], DMA_FROM_DEVICE);
    t.is(m.kind, 'slot');
    if (k === 0) slotIova = m.dmaSegments[0].dmaAddr;
    t.is(m.dmaSegments[0].dmaAddr as number, slotIova, 'the same cached slot');
    c.dma.iommu_dma_unmap_sg(m);
    t.is(s.pgtable.walk(slotIova)?.prot as number, IOMMU_WRITE, 'the slot stays mapped after its unmap');
  }
  t.like(c.iommu.counters, { mapCalls: 1, mappedPages: 1, unmapCalls: 0, invalidations: 0 });
  t.deepEqual(s.invalidations(), []);
  const slotGpa = s.pgtable.walk(slotIova)!.hpa;
  t.true(slotGpa >= HEAP_GPA && slotGpa !== gpa, 'the PTE points at the slot, not at the caller');
  t.is(c.dma.evict(true), 1);
  t.is(s.pgtable.walk(slotIova), null);
  t.deepEqual(
    s.invalidations().map(({ iova, sizeBytes }) => ({ iova, sizeBytes })),
    [{ iova: slotIova, sizeBytes: PAGE }],
  );
  t.like(c.iommu.counters, { unmapCalls: 1, iotlbSyncs: 1, invalidations: 1 });
});

test('untrusted strict: a sub-page segment is bounced through swiotlb; the PTE maps the swiotlb slot, not the caller; its unmap invalidates', (t) => {
  const s = rig('strict', { untrusted: true });
  const c = s.cpu(0);
  const page = c.pages.alloc_pages(0);
  s.ram.fill(0x33, page, page + PAGE);
  const m = c.dma.iommu_dma_map_sg([{ gpa: page + 512, lenBytes: 1024 }], DMA_TO_DEVICE);
  t.is(m.kind, 'per-segment');
  t.is(c.dma.counters.swiotlbBounces, 1);
  const w = s.pgtable.walk(m.dmaSegments[0].dmaAddr);
  t.truthy(w);
  t.true(w!.hpa >= SWIOTLB_GPA && w!.hpa < SWIOTLB_GPA + MiB, 'the device reaches the swiotlb area');
  t.is(w!.prot as number, IOMMU_READ);
  t.is(s.ram[w!.hpa], 0x33, 'the bytes were copied in');
  t.is(s.ram[w!.hpa + 1024], 0, 'and nothing of the caller beyond them');
  c.dma.iommu_dma_unmap_sg(m);
  t.is(s.pgtable.walk(m.dmaSegments[0].dmaAddr), null);
  t.is(s.invalidations().length, 1);
  t.is(c.dma.counters.swiotlbBounces, 2, 'one bounce each way');
});

test('two CPUs on one VT-d unit: the second one to reach qi->q_lock at the same model time waits for the whole invalidation of the first', (t) => {
  const s = rig('strict', { cpus: 2 });
  const a = s.cpu(0);
  const b = s.cpu(1);
  const ga = a.pages.alloc_pages(0);
  const gb = b.pages.alloc_pages(0);
  const ma = a.dma.iommu_dma_map_sg([{ gpa: ga, lenBytes: PAGE }], DMA_TO_DEVICE);
  const mb = b.dma.iommu_dma_map_sg([{ gpa: gb, lenBytes: PAGE }], DMA_TO_DEVICE);
  t.not(ma.dmaSegments[0].dmaAddr, mb.dmaSegments[0].dmaAddr);
  t.is(s.pgtable.walk(ma.dmaSegments[0].dmaAddr)?.hpa, ga);
  t.is(s.pgtable.walk(mb.dmaSegments[0].dmaAddr)?.hpa, gb, "both CPUs' PTEs are in the one domain table");
  b.clock.syncTo(a.clock.nowNs());
  a.clock.syncTo(b.clock.nowNs());
  const t0 = a.clock.nowNs();
  a.dma.iommu_dma_unmap_sg(ma);
  b.dma.iommu_dma_unmap_sg(mb);
  const q = s.qLock();
  t.is(q.acquisitions, 2);
  t.is(q.contentions, 1, "B found A's invalidation on the queue");
  t.is(q.waittimeTotalNs, COSTS.hostIotlbFlushNs, "B waited for A's whole submit and wait");
  t.is(q.conBounces, 1);
  t.is(a.clock.nowNs(), t0 + COSTS.iommuDmaMapCallNs + COSTS.hostIommuUnmapPerPageNs + COSTS.hostIotlbFlushNs);
  t.is(b.clock.nowNs(), a.clock.nowNs() + COSTS.hostIotlbFlushNs, 'B ends one invalidation later');
  const inv = s.invalidations();
  t.deepEqual(
    inv.map((i) => i.iova),
    [ma.dmaSegments[0].dmaAddr, mb.dmaSegments[0].dmaAddr],
    "both CPUs' invalidations reach the device through the unit's one queue, in lock order, none overwritten",
  );
  t.is(inv[1].atNs - inv[0].atNs, COSTS.hostIotlbFlushNs, "B's is stamped when it got the queue");
});

test('the gather: adjacent unmaps of one size merge into one invalidation; a disjoint range or another size syncs what was gathered first', (t) => {
  const s = rig('strict');
  const c = s.cpu(0);
  const gpa = c.pages.alloc_pages(2);
  const base = 0x10_0000;
  c.iommu.map_pages(DOMAIN, asIova(base), asGpa(gpa), 4 * PAGE, true, true);
  c.iommu.map_pages(DOMAIN, asIova(base + 8 * PAGE), asGpa(gpa), 2 * PAGE, true, true);
  const g = newIotlbGather();
  c.iommu.unmap_pages(DOMAIN, asIova(base), PAGE, g);
  c.iommu.unmap_pages(DOMAIN, asIova(base + PAGE), PAGE, g);
  t.deepEqual(s.invalidations(), [], 'adjacent: gathered');
  c.iommu.unmap_pages(DOMAIN, asIova(base + 3 * PAGE), PAGE, g);
  t.deepEqual(
    s.invalidations().map(({ iova, sizeBytes }) => ({ iova, sizeBytes })),
    [{ iova: base, sizeBytes: 2 * PAGE }],
    'disjoint: the first two went out together',
  );
  c.iommu.unmap_pages(DOMAIN, asIova(base + 8 * PAGE), 2 * PAGE, g);
  t.deepEqual(
    s.invalidations().map(({ iova, sizeBytes }) => ({ iova, sizeBytes })),
    [{ iova: base + 3 * PAGE, sizeBytes: PAGE }],
    'another size: synced first',
  );
  iommu_iotlb_sync(c.iommu, DOMAIN, g);
  t.deepEqual(
    s.invalidations().map(({ iova, sizeBytes }) => ({ iova, sizeBytes })),
    [{ iova: base + 8 * PAGE, sizeBytes: 2 * PAGE }],
  );
  t.is(g.endIova, 0, 'iommu_iotlb_sync leaves the gather empty');
  iommu_iotlb_sync(c.iommu, DOMAIN, g);
  t.deepEqual(s.invalidations(), [], 'an empty gather invalidates nothing');
  t.is(s.pgtable.walk(base + 2 * PAGE)?.hpa, gpa + 2 * PAGE, 'the page never unmapped is still there');
  t.is(s.qLock().acquisitions, 3);
});

test('errors: a second map of a mapped page, an unmap of what is not mapped, another domain, a bad cost', (t) => {
  const s = rig('strict');
  const c = s.cpu(0);
  c.iommu.map_pages(DOMAIN, asIova(0x2000), asGpa(0x9000), PAGE, true, false);
  t.throws(() => c.iommu.map_pages(DOMAIN, asIova(0x2000), asGpa(0xa000), PAGE, true, false), { message: /already mapped/ });
  t.is(s.pgtable.walk(0x2000)?.hpa, 0x9000, 'the first mapping is kept');
  t.throws(() => c.iommu.unmap_pages(DOMAIN, asIova(0x8000), PAGE, newIotlbGather()), { message: /cleared 0 of 4096/ });
  t.throws(() => c.iommu.map_pages(DOMAIN + 1, asIova(0x4000), asGpa(0x9000), PAGE, true, false), { message: /not this driver's domain/ });
  t.throws(() => c.iommu.map_pages(DOMAIN, asIova(0x4000), asGpa(0x9000), PAGE, false, false), { message: /no READ or WRITE/ });
  const e = t.throws(
    () =>
      new IntelIommuDriver({
        pgtable: s.pgtable,
        inval: Ring.attach(Ring.allocate({ capacityRecords: 2 })),
        lockTable: c.locks,
        domainId: DOMAIN,
        clock: c.clock,
        costs: { ...COSTS, hostIotlbFlushNs: -1 },
        profiler: c.profiler,
        spinLoads: 1,
      }),
    { instanceOf: InputError },
  );
  t.is(e?.field, 'profile.hostIotlbFlushNs');
});

test('the profile: bare-metal dma-iommu costs take the call overhead without a virtio-iommu mapping tree; the VT-d work reuses the host keys', (t) => {
  const p = loadProfile(DEFAULT_PROFILE_PATH);
  t.deepEqual(bareMetalDmaCosts(p), { iommuDmaMapCallNs: p.iommuDmaMapCallBareMetalNs, iommuDmaSgPerSegmentNs: p.iommuDmaSgPerSegmentNs });
  t.true(p.iommuDmaMapCallBareMetalNs < p.iommuDmaMapCallNs);
  t.regex(p.sources.iommuDmaMapCallBareMetalNs, /viommu_add_mapping/);
  t.is(p.hostCpuThreadsCount, 8);
});
