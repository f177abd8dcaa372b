/**
 * dma-iommu in one thread, on the real chain below it: the guest's
 * virtio-iommu driver (ViommuDriver) kicks a real VMM backend
 * (VirtioIommuDevice) by direct call, whose VFIO port is a real
 * vfio_iommu_type1 container (HostVfio) writing a real host page table
 * (IoPgtable). "The device" here is the test: it reaches guest memory only
 * by walking that page table, with the permission it finds there. Guest
 * memory comes from the real page allocator, IOVAs from the real IOVA
 * domain, bounce slots from the real pool, swiotlb slots from a real
 * (small) swiotlb area — allocated and reserved as run-stack.ts does.
 *
 * Checks that the mechanism is the one claimed (how many MAP/UNMAP requests
 * reach the VMM), that the bytes land exactly where they should, and that an
 * untrusted device can reach nothing but the bytes it was given.
 */

import {
  BouncePool,
  DMA_BIDIRECTIONAL,
  DMA_FROM_DEVICE,
  DMA_TO_DEVICE,
  DmaIommu,
  type DmaMapping,
  type DmaSegment,
  type DmaStrategy,
  IovaDomain,
  LastLevelCache,
  PageAllocator,
  Profiler,
  SlotState,
  Swiotlb,
  VIOMMU_REQUEST_LOCK,
  VIOMMU_REQUEST_SLOT_BYTES,
  ViommuDriver,
} from '@vmstack/guest-kernel';
import { HostVfio } from '@vmstack/host-vfio';
import { attachGuestMemory, DEFAULT_PROFILE_PATH, IOMMU_READ, IOMMU_WRITE, LockTable, loadProfile, ModelClock, NEVER_NS, virtqueueLayout } from '@vmstack/shm';
import { VirtioIommuDevice } from '@vmstack/vmm';
import test, { type ExecutionContext } from 'ava';
import { fillNoise } from './helpers/noise.js';
import { VMM_HOST_LOCK_SPECS, vfioContainerOver } from './helpers/vfio-host.js';

const profile = loadProfile(DEFAULT_PROFILE_PATH);
const PAGE = 4096;
const MiB = 1024 * 1024;
const RAM_BYTES = 16 * MiB;
const VQ_GPA = 0x1_0000;
const SWIOTLB_GPA = 2 * MiB;
const SWIOTLB_BYTES = 1 * MiB;
const HEAP_GPA = 4 * MiB;
const POOL_IOVA = 4 * 1024 * MiB;
const LIMIT_PFN = 2 ** 36 - 1;
const DOMAIN = 1;
const EP = 0x100;

interface RigOptions {
  untrusted?: boolean;
  evictionPeriodNs?: number;
  alwaysBounceLimitBytes?: number;
  /** the cache's DDIO share; default: the profile's */
  ddioLlcBytes?: number;
}

function rig(strategy: DmaStrategy, o: RigOptions = {}) {
  const untrusted = o.untrusted ?? false;
  const mem = attachGuestMemory(new SharedArrayBuffer(RAM_BYTES));
  const layout = virtqueueLayout(128, VQ_GPA);
  const requestAreaGpa = Math.ceil((VQ_GPA + layout.totalBytes) / PAGE) * PAGE;
  const slotWordGpa = Math.ceil((requestAreaGpa + 64 * VIOMMU_REQUEST_SLOT_BYTES) / PAGE) * PAGE;
  const pageH = PageAllocator.allocate({ ramBytes: RAM_BYTES, heapStartBytes: HEAP_GPA });
  const iovaH = IovaDomain.allocate({ startPfn: 1, limitPfn: LIMIT_PFN, cpus: 1, maxAllocations: 4096 });
  const poolH =
    strategy === 'bounce'
      ? BouncePool.allocate({ iovaBase: POOL_IOVA, slotsPerClass: 16, evictionPeriodNs: o.evictionPeriodNs, alwaysBounceLimitBytes: o.alwaysBounceLimitBytes })
      : null;
  const tlbH = untrusted && strategy !== 'bounce' ? Swiotlb.allocate({ areaGpa: SWIOTLB_GPA, sizeBytes: SWIOTLB_BYTES, minAlignMask: PAGE - 1 }) : null;
  const locks = LockTable.attach(
    LockTable.allocate([
      { name: VIOMMU_REQUEST_LOCK, kind: 'spinlock' },
      ...VMM_HOST_LOCK_SPECS,
      ...PageAllocator.lockSpecs(pageH),
      ...IovaDomain.lockSpecs(iovaH),
      ...(poolH ? BouncePool.lockSpecs(poolH) : []),
      ...(tlbH ? Swiotlb.lockSpecs(tlbH) : []),
    ]),
    0,
  );
  const pages = PageAllocator.attach(pageH, 0, locks, profile);
  const iovad = IovaDomain.attach(iovaH, 0, locks, profile);
  if (poolH) iovad.reserve_iova(POOL_IOVA / PAGE, (POOL_IOVA + BouncePool.iovaSpanBytes({ slotsPerClass: 16 })) / PAGE - 1);
  const { pgtable, container } = vfioContainerOver(locks, RAM_BYTES, 256);
  const host = new HostVfio(container, new ModelClock('virtual'));
  const vmmClock = new ModelClock('virtual');
  const clock = new ModelClock('virtual');
  const profiler = new Profiler(clock);
  let device: VirtioIommuDevice | null = null;
  // the driver sets the virtqueue up; the device attaches to it afterwards
  const viommu = new ViommuDriver(
    mem,
    layout,
    true,
    requestAreaGpa,
    slotWordGpa,
    locks,
    {
      kick: (nowNs) => {
        device!.virtio_iommu_handle_command(nowNs);
        return vmmClock.nowNs();
      },
    },
    clock,
    profile,
    'v5.10',
    profiler,
  );
  device = new VirtioIommuDevice(mem, layout, host, locks, vmmClock, profile, { endpointIds: [EP] });
  const cache = new LastLevelCache(o.ddioLlcBytes === undefined ? profile : { ...profile, ddioLlcBytes: o.ddioLlcBytes });
  const pool = poolH ? BouncePool.attach(poolH, 0, locks, pages, profile, cache) : null;
  const swiotlb = tlbH ? Swiotlb.attach(tlbH, 0, locks, mem.u8, profile, cache) : null;
  const dma = new DmaIommu(
    strategy,
    { domain: DOMAIN, iovad, iommu: viommu, fq: null, pool, swiotlb, mem: mem.u8, cpu: 0, limitPfn: LIMIT_PFN, untrusted, cache },
    clock,
    profile,
    profiler,
  );
  viommu.viommu_attach_dev(DOMAIN, EP);
  const dev = device;

  /** virtio-iommu requests the VMM handled since the last call */
  let last = { map: 0, unmap: 0 };
  const requests = () => {
    const now = { map: dev.counters.map, unmap: dev.counters.unmap };
    const d = { map: now.map - last.map, unmap: now.unmap - last.unmap };
    last = now;
    return d;
  };

  /** The device: read or write through the IOMMU (host page table), page by page, with its permission. */
  const deviceRead = (iova: number, len: number): Uint8Array => {
    const out = new Uint8Array(len);
    for (let i = 0; i < len; i++) {
      const w = pgtable.walk(iova + i);
      if (!w || !(w.prot & IOMMU_READ)) throw new Error(`device read fault at IOVA 0x${(iova + i).toString(16)}`);
      out[i] = mem.u8[w.hpa];
    }
    return out;
  };
  const deviceWrite = (iova: number, bytes: Uint8Array): void => {
    for (let i = 0; i < bytes.length; i++) {
      const w = pgtable.walk(iova + i);
      if (!w || !(w.prot & IOMMU_WRITE)) throw new Error(`device write fault at IOVA 0x${(iova + i).toString(16)}`);
      mem.u8[w.hpa] = bytes[i];
    }
  };
  /** Every IOVA page the device can reach now, with its bytes. */
  const exposedPages = (): { iova: number; bytes: Uint8Array }[] => {
    // walk the whole guest-visible mapping state through the VMM's view: every mapped page
    const out: { iova: number; bytes: Uint8Array }[] = [];
    for (const r of mappedRanges())
      for (let a = r.start; a < r.end; a += PAGE) {
        const w = pgtable.walk(a)!;
        out.push({ iova: a, bytes: mem.u8.slice(w.hpa, w.hpa + PAGE) });
      }
    return out;
  };
  /** mapped IOVA ranges, found by probing the host page table around what the guest handed out */
  let probes: { start: number; end: number }[] = [];
  const mappedRanges = () => probes.filter((r) => pgtable.walk(r.start) !== null);
  /** remember where to look: a mapping's IOVA pages (and the pool's whole range for slots) */
  const watch = (m: DmaMapping) => {
    for (const s of m.dmaSegments) {
      const start = Math.floor(s.dmaAddr / PAGE) * PAGE;
      const end = Math.ceil((s.dmaAddr + s.lenBytes) / PAGE) * PAGE;
      // the page before and after too: a mapping must not reach past its pages
      probes.push({ start: start - PAGE, end: start }, { start, end }, { start: end, end: end + PAGE });
    }
    for (const r of m.iovaRanges) probes.push({ start: r.pfn * PAGE, end: (r.pfn + r.pages) * PAGE });
    if (m.slot) probes.push({ start: m.slot.iova, end: m.slot.iova + m.slot.classBytes });
    probes = probes.filter((p) => p.start >= 0);
  };
  requests(); // the ATTACH does not count
  return {
    mem,
    pages,
    iovad,
    iovaH,
    pool,
    swiotlb,
    dma,
    device: dev,
    container,
    pgtable,
    clock,
    profiler,
    cache,
    requests,
    deviceRead,
    deviceWrite,
    exposedPages,
    watch,
  };
}

type Rig = ReturnType<typeof rig>;

/** A user buffer of `n` pages, physically scattered (no page followed by its successor). */
function scattered(s: Rig, n: number): number[] {
  let seed = 7;
  const buf = s.pages.allocUserBuffer(n * PAGE, 'none', () => (seed = (seed * 16807) % 2147483647) / 2147483647);
  return [...buf.pageGpas];
}

/** Four contiguous pages: canary, buffer, canary, canary. */
function canaried(s: Rig, fill = 0xcc): { buf: number; block: number } {
  const block = s.pages.alloc_pages(2);
  s.mem.u8.fill(fill, block, block + 4 * PAGE);
  return { buf: block + PAGE, block };
}

function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  fillNoise(b, seed);
  for (let i = 0; i < len; i++) if (b[i] === 0 || b[i] === 0xcc) b[i] = 0x5a; // never zero, never the canary
  return b;
}

const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

test('strict: 4 scattered pages → 4 MAPs (one per physically contiguous run) under one IOVA range; the device reaches exactly those pages; unmap → 1 UNMAP', (t) => {
  const s = rig('strict');
  const gpas = scattered(s, 4);
  t.true(
    gpas.every((g, i) => i === 0 || g !== gpas[i - 1] + PAGE),
    'the pages are not contiguous',
  );
  const segs: DmaSegment[] = gpas.map((gpa) => ({ gpa, lenBytes: PAGE }));
  const m = s.dma.iommu_dma_map_sg(segs, DMA_FROM_DEVICE);
  t.deepEqual(s.requests(), { map: 4, unmap: 0 });
  t.is(m.dmaSegments.length, 1, 'the device gets one contiguous IOVA range');
  const iova = m.dmaSegments[0].dmaAddr;
  t.is(m.dmaSegments[0].lenBytes, 4 * PAGE);
  gpas.forEach((g, i) => {
    const w = s.pgtable.walk(iova + i * PAGE);
    t.deepEqual(w && { hpa: w.hpa, prot: w.prot }, { hpa: g, prot: IOMMU_WRITE }, `page ${i}: the device may only write (a read from the drive)`);
  });
  t.is(s.pgtable.walk(iova + 4 * PAGE), null);
  const data = pattern(4 * PAGE, 1);
  s.deviceWrite(iova, data);
  gpas.forEach((g, i) => t.true(same(s.mem.u8.subarray(g, g + PAGE), data.subarray(i * PAGE, (i + 1) * PAGE)), `page ${i} holds its part`));
  s.dma.iommu_dma_unmap_sg(m);
  t.deepEqual(s.requests(), { map: 0, unmap: 1 });
  t.is(s.container.unmapDmaCalls, 4, 'the VMM split the UNMAP into one VFIO unmap per MAP');
  for (let i = 0; i < 4; i++) t.is(s.pgtable.walk(iova + i * PAGE), null);
  t.deepEqual([s.container.dmaCount, s.container.pinnedPages, s.pgtable.mappedPages], [0, 0, 0]);
  t.is(IovaDomain.stats(s.iovaH).allocatedPages, 0, 'the IOVA range went back');
});

test('pool: the first 4 KiB map is a miss (1 MAP), later ones are hits (no request at all); the bytes are copied exactly, nothing around the buffer is touched', (t) => {
  const s = rig('bounce');
  const { buf, block } = canaried(s);
  const before = s.mem.u8.slice(block, block + 4 * PAGE);
  const seg: DmaSegment[] = [{ gpa: buf, lenBytes: PAGE }];
  let slotIova = -1;
  for (let k = 0; k < 5; k++) {
    const m = s.dma.iommu_dma_map_sg(seg, DMA_FROM_DEVICE);
    t.deepEqual(s.requests(), { map: k === 0 ? 1 : 0, unmap: 0 }, `map ${k}: ${k === 0 ? 'miss' : 'hit'}`);
    t.is(m.kind, 'slot');
    if (k === 0) slotIova = m.dmaSegments[0].dmaAddr;
    t.is(m.dmaSegments[0].dmaAddr as number, slotIova, 'the same cached slot');
    t.is(s.pgtable.walk(slotIova)?.prot as number, IOMMU_WRITE);
    const callerBefore = s.mem.u8.slice(buf, buf + PAGE);
    const data = pattern(PAGE, 10 + k);
    s.deviceWrite(slotIova, data);
    t.true(same(s.mem.u8.subarray(buf, buf + PAGE), callerBefore), 'nothing reaches the caller before unmap');
    s.dma.iommu_dma_unmap_sg(m);
    t.deepEqual(s.requests(), { map: 0, unmap: 0 }, 'unmap of a slot: no request, it stays mapped');
    t.true(same(s.mem.u8.subarray(buf, buf + PAGE), data), `map ${k}: the caller got the device's bytes`);
    t.true(same(s.mem.u8.subarray(block, buf), before.subarray(0, PAGE)), 'canary before');
    t.true(same(s.mem.u8.subarray(buf + PAGE, block + 4 * PAGE), before.subarray(2 * PAGE)), 'canaries after');
  }
  // a to-device mapping takes a read-only slot (a miss: another permission), filled at map time
  const out = pattern(PAGE, 99);
  s.mem.u8.set(out, buf);
  const w = s.dma.iommu_dma_map_sg(seg, DMA_TO_DEVICE);
  t.deepEqual(s.requests(), { map: 1, unmap: 0 });
  t.is(s.pgtable.walk(w.dmaSegments[0].dmaAddr)?.prot as number, IOMMU_READ, 'the device may only read it');
  t.true(same(s.deviceRead(w.dmaSegments[0].dmaAddr, PAGE), out), "the slot holds the caller's bytes");
  s.dma.iommu_dma_unmap_sg(w);
  t.true(same(s.mem.u8.subarray(buf, buf + PAGE), out));
  const st = s.pool!.stats();
  t.deepEqual([st.hits, st.misses, st.bytesCopiedFromDevice, st.bytesCopiedToDevice], [4, 2, 5 * PAGE, PAGE]);
});

test('pool: a sub-range sync copies only that range, and only in the direction it names', (t) => {
  const s = rig('bounce');
  const { buf, block } = canaried(s, 0x11);
  const seg: DmaSegment[] = [{ gpa: buf, lenBytes: PAGE }];
  const m = s.dma.iommu_dma_map_sg(seg, DMA_BIDIRECTIONAL);
  const slotGpa = m.slot!.gpa;
  const iova = m.dmaSegments[0].dmaAddr;
  t.true(same(s.deviceRead(iova, PAGE), new Uint8Array(PAGE).fill(0x11)), 'bidirectional: copied in at map');
  const dev = pattern(PAGE, 3);
  s.deviceWrite(iova, dev);
  // dma_sync_single_for_cpu(offset 1024, 512 bytes)
  t.is(s.pool!.syncRange(s.mem.u8, slotGpa, seg, 1024, 512, DMA_BIDIRECTIONAL, true, s.clock), 512);
  const expect = new Uint8Array(4 * PAGE).fill(0x11);
  expect.set(dev.subarray(1024, 1536), PAGE + 1024);
  t.true(same(s.mem.u8.subarray(block, block + 4 * PAGE), expect), 'exactly [1024, 1536) reached the caller');
  // dma_sync_single_for_device(offset 2048, 256): the caller's change reaches the slot, nothing else
  s.mem.u8.fill(0x77, buf + 2048, buf + 2048 + 256);
  s.mem.u8.fill(0x66, buf + 3000, buf + 3100); // not synced
  t.is(s.pool!.syncRange(s.mem.u8, slotGpa, seg, 2048, 256, DMA_BIDIRECTIONAL, false, s.clock), 256);
  const slot = s.deviceRead(iova, PAGE);
  const want = dev.slice();
  want.fill(0x77, 2048, 2048 + 256);
  t.true(same(slot, want), 'exactly [2048, 2304) reached the slot');
  // a from-device mapping has nothing to copy towards the device
  const r = s.dma.iommu_dma_map_sg([{ gpa: buf, lenBytes: PAGE }], DMA_FROM_DEVICE);
  t.is(s.pool!.syncRange(s.mem.u8, r.slot!.gpa, r.segments, 0, PAGE, DMA_FROM_DEVICE, false, s.clock), 0);
  s.dma.iommu_dma_unmap_sg(r);
  s.dma.iommu_dma_unmap_sg(m);
});

/**
 * An untrusted device is given 512 bytes in the middle of a page whose other
 * bytes are a secret. It must reach only those 512 bytes and zeroes: walk
 * every IOVA page it can reach. Then it writes 512 bytes; after unmap they
 * are in the caller's 512 bytes, and the secret around them is intact.
 */
function subPageUntrusted(t: ExecutionContext, strategy: 'strict' | 'bounce'): void {
  const s = rig(strategy, { untrusted: true });
  const page = s.pages.alloc_pages(0);
  const secret = pattern(PAGE, 0x5ec);
  s.mem.u8.set(secret, page);
  const OFF = 1792;
  const LEN = 512;
  const data = pattern(LEN, 0xda7a);
  s.mem.u8.set(data, page + OFF);
  const m = s.dma.iommu_dma_map_sg([{ gpa: page + OFF, lenBytes: LEN }], DMA_BIDIRECTIONAL);
  t.deepEqual(s.requests(), { map: 1, unmap: 0 });
  t.is(m.kind, strategy === 'bounce' ? 'slot' : 'per-segment');
  s.watch(m);
  const dmaAddr = m.dmaSegments[0].dmaAddr;
  const exposed = s.exposedPages();
  t.true(exposed.length >= 1);
  let leaked = 0;
  for (const p of exposed) {
    for (let i = 0; i < PAGE; i++) {
      const a = p.iova + i;
      const inWindow = a >= dmaAddr && a < dmaAddr + LEN;
      if (inWindow ? p.bytes[i] !== data[a - dmaAddr] : p.bytes[i] !== 0) leaked++;
    }
    t.is(s.pgtable.walk(p.iova)!.hpa === page, false, "the caller's own page is never mapped");
  }
  t.is(leaked, 0, 'the device sees the 512 bytes and zeroes, nothing else');
  // the device answers through the same window
  const reply = pattern(LEN, 0x4e91);
  s.deviceWrite(dmaAddr, reply);
  s.dma.iommu_dma_unmap_sg(m);
  const expect = secret.slice();
  expect.set(reply, OFF);
  t.true(same(s.mem.u8.subarray(page, page + PAGE), expect), 'the reply landed in the 512 bytes; the secret around them is intact');
  if (strategy === 'strict') {
    t.deepEqual(s.requests(), { map: 0, unmap: 1 });
    t.is(s.swiotlb!.stats().usedSlots, 0);
    t.is(s.exposedPages().length, 0, 'nothing stays mapped');
  } else {
    t.deepEqual(s.requests(), { map: 0, unmap: 0 }, 'the slot stays mapped, cached');
  }
}

test(
  'untrusted, 512 bytes inside a secret page, swiotlb (strict): the device reaches only those bytes and zeroed padding; its reply lands in them only',
  subPageUntrusted,
  'strict',
);
test(
  'untrusted, 512 bytes inside a secret page, pool (bounce): the device reaches only those bytes and zeroed padding; its reply lands in them only',
  subPageUntrusted,
  'bounce',
);

test('untrusted scatter list of 4 pages: the pool bounces the whole list into ONE buffer (1 MAP); swiotlb-era strict maps every segment (4 MAPs)', (t) => {
  for (const strategy of ['bounce', 'strict'] as const) {
    const s = rig(strategy, { untrusted: true });
    const gpas = scattered(s, 4);
    const data = pattern(4 * PAGE, 4);
    gpas.forEach((g, i) => s.mem.u8.set(data.subarray(i * PAGE, (i + 1) * PAGE), g));
    const m = s.dma.iommu_dma_map_sg(
      gpas.map((gpa) => ({ gpa, lenBytes: PAGE })),
      DMA_TO_DEVICE,
    );
    if (strategy === 'bounce') {
      t.deepEqual(s.requests(), { map: 1, unmap: 0 }, 'pool: one MAP');
      t.is(m.dmaSegments.length, 1);
      t.is(m.slot!.classBytes, 4 * PAGE, 'a 16 KiB slot');
      t.true(same(s.deviceRead(m.dmaSegments[0].dmaAddr, 4 * PAGE), data), 'the list, gathered in order');
    } else {
      t.deepEqual(s.requests(), { map: 4, unmap: 0 }, 'strict: a MAP per segment');
      t.is(m.dmaSegments.length, 4);
      m.dmaSegments.forEach((d, i) => t.true(same(s.deviceRead(d.dmaAddr, PAGE), data.subarray(i * PAGE, (i + 1) * PAGE)), `segment ${i}`));
    }
    s.dma.iommu_dma_unmap_sg(m);
    t.deepEqual(s.requests(), { map: 0, unmap: strategy === 'bounce' ? 0 : 4 });
  }
});

test('eviction: a cached slot idle for two passes is unmapped (UNMAP sent, memory freed); a slot used in between survives one more period', (t) => {
  const P = 1_000_000;
  const s = rig('bounce', { evictionPeriodNs: P });
  const pool = s.pool!;
  const a = canaried(s).buf;
  const b = canaried(s).buf;
  const ma = s.dma.iommu_dma_map_sg([{ gpa: a, lenBytes: PAGE }], DMA_FROM_DEVICE);
  const mb = s.dma.iommu_dma_map_sg([{ gpa: b, lenBytes: PAGE }], DMA_FROM_DEVICE);
  t.deepEqual(s.requests(), { map: 2, unmap: 0 });
  const A = { cls: ma.slot!.cls, slot: ma.slot!.slot, iova: ma.slot!.iova };
  const B = { cls: mb.slot!.cls, slot: mb.slot!.slot, iova: mb.slot!.iova };
  t.is(pool.nextEvictionNs(), NEVER_NS, 'nothing cached yet: no pass pending');
  s.dma.iommu_dma_unmap_sg(ma);
  s.dma.iommu_dma_unmap_sg(mb); // B is now at the head of the cache
  t.is(pool.stats().memoryBytesCurrent, 2 * PAGE);
  const first = pool.nextEvictionNs();
  t.true(first > s.clock.nowNs() && first <= s.clock.nowNs() + P);
  // pass 1: both become old, nothing is evicted
  s.clock.advanceTo(first);
  s.dma.runTimers();
  t.deepEqual(s.requests(), { map: 0, unmap: 0 });
  t.is(pool.slotInfo(A.cls, A.slot).state, SlotState.OLD);
  t.is(pool.slotInfo(B.cls, B.slot).state, SlotState.OLD);
  // B is used again in between (a hit: no request)
  const again = s.dma.iommu_dma_map_sg([{ gpa: b, lenBytes: PAGE }], DMA_FROM_DEVICE);
  t.is(again.slot!.slot, B.slot);
  s.dma.iommu_dma_unmap_sg(again);
  t.deepEqual(s.requests(), { map: 0, unmap: 0 });
  t.is(pool.slotInfo(B.cls, B.slot).state, SlotState.CACHED);
  // pass 2: A has been idle for a full period: unmapped and freed; B only ages
  const second = pool.nextEvictionNs();
  t.true(second > first);
  s.clock.advanceTo(second);
  s.dma.runTimers();
  t.deepEqual(s.requests(), { map: 0, unmap: 1 }, 'one UNMAP: A');
  t.is(s.pgtable.walk(A.iova), null, "A is gone from the device's view");
  t.not(s.pgtable.walk(B.iova), null, 'B is still mapped');
  t.is(pool.slotInfo(A.cls, A.slot).state, SlotState.EMPTY);
  t.is(pool.slotInfo(A.cls, A.slot).gpa, -1, "A's memory was freed");
  t.is(pool.slotInfo(B.cls, B.slot).state, SlotState.OLD);
  t.is(pool.stats().memoryBytesCurrent, PAGE);
  // pass 3: B goes too
  s.clock.advanceTo(pool.nextEvictionNs());
  s.dma.runTimers();
  t.deepEqual(s.requests(), { map: 0, unmap: 1 }, 'one UNMAP: B');
  t.is(s.pgtable.walk(B.iova), null);
  t.deepEqual([pool.stats().memoryBytesCurrent, pool.stats().evictions, pool.stats().slotsCached], [0, 2, 0]);
  t.is(pool.nextEvictionNs(), NEVER_NS, 'nothing cached: no pass pending');
  t.deepEqual([s.container.dmaCount, s.container.pinnedPages], [0, 0], 'the host holds nothing');
});

test('DMA_ATTR_PERSISTENT_STREAMING: served from the pool above always_bounce_limit, and its slot stays mapped through eviction passes', (t) => {
  const P = 1_000_000;
  const s = rig('bounce', { evictionPeriodNs: P });
  const pool = s.pool!;
  const big = 8 * PAGE; // above the default 4 KiB always_bounce_limit
  const a = canaried(s).buf;
  const plain = s.dma.iommu_dma_map_sg([{ gpa: a, lenBytes: PAGE }], DMA_FROM_DEVICE, {});
  t.is(plain.kind, 'slot');
  s.dma.iommu_dma_unmap_sg(plain);
  const buf = s.pages.alloc_pages(3, s.clock);
  const m = s.dma.iommu_dma_map_sg([{ gpa: buf, lenBytes: big }], DMA_TO_DEVICE, { persistentStreaming: true });
  t.is(m.kind, 'slot', 'from the pool, although 32 KiB is above the limit');
  const iova = m.slot!.iova;
  s.dma.iommu_dma_unmap_sg(m);
  s.requests();
  for (let pass = 0; pass < 4; pass++) {
    s.clock.advanceTo(pool.nextEvictionNs());
    s.dma.runTimers();
  }
  t.is(s.pgtable.walk(iova)?.prot as number, IOMMU_READ, 'the persistent slot is still mapped');
  t.is(pool.slotInfo(plain.slot!.cls, plain.slot!.slot).state, SlotState.EMPTY, 'the ordinary slot was evicted');
  t.deepEqual(s.requests(), { map: 0, unmap: 1 });
});

test('profile: the pool runs inside iommu_dma_map_sg / iommu_dma_unmap_sg, whose totals include it (as perf --children counts), with strict alike', (t) => {
  const totals: Record<string, { map: number; unmap: number; poolUnmap: number; memcpy: number }> = {};
  for (const strategy of ['strict', 'bounce'] as const) {
    const s = rig(strategy, { alwaysBounceLimitBytes: 64 * 1024 });
    const gpas = scattered(s, 4);
    for (let i = 0; i < 3; i++) {
      const m = s.dma.iommu_dma_map_sg(
        gpas.map((gpa) => ({ gpa, lenBytes: PAGE })),
        DMA_FROM_DEVICE,
      );
      s.dma.iommu_dma_unmap_sg(m);
    }
    const flat = s.profiler.toJSON();
    const tree = s.profiler.callTree();
    const unmap = tree.find((n) => n.name === 'iommu_dma_unmap_sg')!;
    t.truthy(unmap, `${strategy}: iommu_dma_unmap_sg is an outermost function`);
    t.is(flat.iommu_dma_unmap_sg.calls, 3);
    t.true(flat.iommu_dma_unmap_sg.ns > 0, `${strategy}: iommu_dma_unmap_sg has time`);
    const childNs = unmap.children.reduce((sum, c) => sum + c.ns, 0);
    t.is(unmap.ns, unmap.selfNs + childNs, `${strategy}: total = self + callees`);
    const poolUnmap = unmap.children.find((c) => c.name === 'io_bounce_buffers_unmap_sg');
    totals[strategy] = { map: flat.iommu_dma_map_sg.ns, unmap: flat.iommu_dma_unmap_sg.ns, poolUnmap: poolUnmap?.ns ?? 0, memcpy: flat.memcpy?.ns ?? 0 };
    if (strategy === 'bounce') {
      t.truthy(poolUnmap, 'the pool’s unmap is a callee of iommu_dma_unmap_sg');
      t.deepEqual(
        poolUnmap!.children.map((c) => c.name),
        ['memcpy'],
        'the copy back to the caller is the pool’s callee',
      );
      t.false(
        tree.some((n) => n.name.startsWith('io_bounce_buffers')),
        'no pool function is an outermost row',
      );
      t.is(flat.io_bounce_buffers_unmap_sg.ns, poolUnmap!.ns);
    } else {
      t.is(poolUnmap, undefined);
    }
  }
  // the entry points hold everything each strategy spends mapping and unmapping: the strict one its VMM round trips, the pool its copies
  t.true(totals.strict.unmap > totals.bounce.unmap, 'a strict unmap (an UNMAP round trip) costs more than the pool’s copy of 16 KiB');
  t.true(totals.bounce.unmap >= totals.bounce.poolUnmap + 3 * profile.iommuDmaMapCallNs);
  t.true(totals.bounce.memcpy > 0);
});

test('copies by where the bytes are: the pool’s unmap copy reads the device’s data from DRAM without DDIO, from the cache with it; strict copies nothing', (t) => {
  const copied = (strategy: 'strict' | 'bounce', ddioLlcBytes?: number) => {
    const s = rig(strategy, { alwaysBounceLimitBytes: 64 * 1024, ddioLlcBytes });
    const gpas = scattered(s, 4);
    for (let i = 0; i < 3; i++) {
      const m = s.dma.iommu_dma_map_sg(
        gpas.map((gpa) => ({ gpa, lenBytes: PAGE })),
        DMA_FROM_DEVICE,
      );
      s.dma.iommu_dma_unmap_sg(m);
    }
    return { ...s.cache.copied, memcpyNs: s.profiler.toJSON().memcpy?.ns ?? 0 };
  };
  t.is(profile.ddioLlcBytes, 0, 'the reference laptop has no DDIO');
  const noDdio = copied('bounce');
  t.deepEqual([noDdio.cachedBytes, noDdio.dramBytes], [0, 3 * 4 * PAGE], 'every copy reads what the device just wrote: DRAM');
  const ddio = copied('bounce', 1 << 20);
  // the first copy writes fio's buffer for the first time (not cached); the next two find both ends cached
  t.deepEqual([ddio.cachedBytes, ddio.dramBytes], [2 * 4 * PAGE, 4 * PAGE]);
  t.true(ddio.memcpyNs < noDdio.memcpyNs);
  const strict = copied('strict');
  t.deepEqual([strict.cachedBytes, strict.dramBytes, strict.memcpyNs], [0, 0, 0]);
});
