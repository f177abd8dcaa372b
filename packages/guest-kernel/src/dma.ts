/**
 * dma-iommu (Linux drivers/iommu/dma-iommu.c) for the strategies the model
 * compares:
 * - `direct`: no IOMMU; the device sees guest physical addresses.
 * - `strict`: map per I/O; unmap + IOTLB invalidation per I/O.
 * - `lazy`: unmap per I/O, but the invalidation and the IOVA's return to the
 *   allocator wait for the per-CPU flush queue (256 entries or 10 ms).
 * - `bounce`: the per-domain pool of reusable, still-mapped bounce buffers
 *   (io-bounce-buffers, 2021 series) in front of the strict path: mappings up
 *   to `always_bounce_limit` take a cached slot (no IOMMU request); larger
 *   ones, a full class or a size above the largest class take the strict path.
 * Untrusted devices (`untrusted`): with `bounce`, bouncing is mandatory and a
 * whole scatter list goes into ONE buffer (the fallback tree serves what the
 * pool cannot); with `strict`/`lazy`, the kernel of the reference period
 * (5.10–5.15) maps every segment of an untrusted list on its own
 * (`iommu_dma_map_sg` → `iommu_dma_map_sg_swiotlb` → one `iommu_dma_map_page`
 * per segment), bouncing sub-granule segments through swiotlb.
 *
 * A user buffer is a list of guest-physical segments. `iommu_dma_map_sg`
 * reserves one IOVA range for the whole list and calls the IOMMU driver's map
 * once per physically contiguous run; unmap is one call for the whole IOVA
 * range followed by an IOTLB sync.
 *
 * The IOMMU driver is reached only through `IommuDomainOps`
 * (`iommu/domain-ops.ts`, the kernel's `struct iommu_domain_ops`): the
 * virtio-iommu driver in a VM, or the VT-d driver on bare metal.
 */

import { asGpa, asIova, IOMMU_READ, IOMMU_WRITE, type Iova, type ModelClock, PAGE_SIZE_BYTES } from '@vmstack/shm';
import { BouncePool, type BounceSlot, DMA_FROM_DEVICE, DMA_TO_DEVICE, type DmaDirection, type DmaSegment, type FallbackBuffer } from './iommu/bounce-pool.js';
import {
  type IommuDomainOps,
  type IommuIotlbGather,
  IommuMapNoMemError,
  iommu_iotlb_gather_init,
  iommu_iotlb_sync,
  newIotlbGather,
} from './iommu/domain-ops.js';
import type { FlushQueue } from './iommu/flush-queue.js';
import { type IovaDomain, iommu_dma_iova_len } from './iommu/iova.js';
import type { Swiotlb } from './iommu/swiotlb.js';
import type { LastLevelCache } from './mm/llc.js';
import type { Profiler } from './profile.js';

export type DmaStrategy = 'direct' | 'strict' | 'lazy' | 'bounce';
export const DMA_STRATEGIES: readonly DmaStrategy[] = ['direct', 'strict', 'lazy', 'bounce'];

export interface DmaCosts {
  iommuDmaMapCallNs: number;
  iommuDmaSgPerSegmentNs: number;
}

/**
 * One piece of a mapped buffer as the device addresses it: the bus address
 * (an IOVA behind the IOMMU; with `direct`, the guest-physical address
 * itself, which is then the IOVA) and its length.
 */
export interface DmaAddrSegment {
  readonly dmaAddr: Iova;
  readonly lenBytes: number;
}

/** One mapped buffer: what the device is given and what unmap needs. */
export interface DmaMapping {
  /** device-visible segments, in order (for PRPs: page-sized pieces) */
  dmaSegments: DmaAddrSegment[];
  /** the caller's segments (for the copies of bounced mappings) */
  segments: readonly DmaSegment[];
  dir: DmaDirection;
  totalBytes: number;
  kind: 'direct' | 'iommu' | 'per-segment' | 'slot' | 'fallback';
  /** 'iommu': the IOVA range; 'per-segment': one per segment */
  iovaRanges: { pfn: number; pages: number; swiotlb: number; mapBytes: number; offset: number }[];
  slot: BounceSlot | null;
  fallback: FallbackBuffer | null;
}

export interface DmaCounters {
  mapCalls: number;
  unmapCalls: number;
  bouncedMappings: number;
  strictMappings: number;
  perSegmentMaps: number;
  swiotlbBounces: number;
  /** maps the IOMMU driver refused for want of resources (-ENOMEM), unwound and left to the caller to retry */
  mapNoMem: number;
}

export interface DmaIommuDeps {
  domain: number;
  iovad: IovaDomain | null;
  /** the IOMMU driver's domain operations (virtio-iommu in a VM, VT-d on bare metal) */
  iommu: IommuDomainOps | null;
  fq: FlushQueue | null;
  pool: BouncePool | null;
  swiotlb: Swiotlb | null;
  mem: Uint8Array;
  cpu: number;
  limitPfn: number;
  untrusted: boolean;
  /** the vCPU's last-level cache: the device's writes land in it or in DRAM (mm/llc.ts); null: no cache model */
  cache?: LastLevelCache | null;
}

export class DmaIommu {
  readonly counters: DmaCounters = { mapCalls: 0, unmapCalls: 0, bouncedMappings: 0, strictMappings: 0, perSegmentMaps: 0, swiotlbBounces: 0, mapNoMem: 0 };

  constructor(
    readonly strategy: DmaStrategy,
    private readonly d: DmaIommuDeps,
    private readonly clock: ModelClock,
    private readonly costs: DmaCosts,
    private readonly profiler: Profiler,
  ) {
    if (strategy !== 'direct' && (!d.iovad || !d.iommu)) throw new Error(`dma-iommu: strategy ${strategy} needs an IOVA domain and an IOMMU driver`);
    if (strategy === 'lazy' && !d.fq) throw new Error('dma-iommu: lazy needs a flush queue');
    if (strategy === 'bounce' && !d.pool) throw new Error('dma-iommu: bounce needs the pool');
  }

  /**
   * The map of a streaming DMA (`dma_map_sg` / `dma_map_page`).
   * `attrs.persistentStreaming` is DMA_ATTR_PERSISTENT_STREAMING: with the pool,
   * the mapping is served from it whatever its size and its slot stays mapped.
   */
  iommu_dma_map_sg(segments: readonly DmaSegment[], dir: DmaDirection, attrs: { persistentStreaming?: boolean } = NO_ATTRS, into?: DmaMapping): DmaMapping {
    this.counters.mapCalls++;
    let totalBytes = 0;
    for (let i = 0; i < segments.length; i++) totalBytes += segments[i].lenBytes;
    const m: DmaMapping = into
      ? reuseMapping(into, segments, dir, totalBytes)
      : { dmaSegments: [], segments, dir, totalBytes, kind: 'direct', iovaRanges: [], slot: null, fallback: null };
    if (this.strategy === 'direct') {
      // no IOMMU: the bus address is the guest-physical address
      for (let i = 0; i < segments.length; i++) setDmaSegment(m, i, asIova(segments[i].gpa), segments[i].lenBytes);
      setCount(m.dmaSegments, segments.length);
      setCount(m.iovaRanges, 0);
      return m;
    }
    this.profiler.enter();
    this.clock.charge(this.costs.iommuDmaMapCallNs + segments.length * this.costs.iommuDmaSgPerSegmentNs);
    const pool = this.d.pool;
    try {
      // the pool is tried first, inside the entry point, as io_bounce_buffers_map_page/_sg are in the series
      const bounced =
        this.strategy === 'bounce' &&
        pool !== null &&
        (this.d.untrusted || attrs.persistentStreaming || pool.shouldBounce(totalBytes, true)) &&
        this.mapBounced(m, pool, attrs.persistentStreaming === true);
      if (bounced) {
        // served by the pool
      } else if (this.d.untrusted) {
        this.mapPerSegment(m);
      } else {
        this.mapRange(m);
      }
    } catch (e) {
      // a refused map (IommuMapNoMemError) returns to the caller: the profiled call ends here
      this.profiler.exit(entryName(segments.length, 'map'), totalBytes);
      throw e;
    }
    this.profiler.exit(entryName(segments.length, 'map'), totalBytes);
    return m;
  }

  iommu_dma_unmap_sg(m: DmaMapping): void {
    this.noteDeviceWrites(m);
    if (m.kind === 'direct') return;
    this.profiler.enter();
    this.counters.unmapCalls++;
    this.clock.charge(this.costs.iommuDmaMapCallNs);
    switch (m.kind) {
      case 'slot':
      case 'fallback':
        this.unmapBounced(m);
        break;
      case 'per-segment': {
        // iommu_dma_unmap_sg of an untrusted device: one iommu_dma_unmap_page per segment
        const perSegment = m.segments.length > 1;
        for (const r of m.iovaRanges) {
          if (perSegment) this.profiler.enter();
          if (r.swiotlb >= 0) {
            this.profiler.enter();
            this.d.swiotlb!.swiotlb_tbl_unmap_single(asGpa(r.swiotlb), r.mapBytes, m.dir, this.clock);
            this.profiler.exit('swiotlb_tbl_unmap_single', r.mapBytes);
            this.counters.swiotlbBounces++;
          }
          this.unmapIovaRange(r.pfn, r.pages);
          if (perSegment) this.profiler.exit('iommu_dma_unmap_page', r.mapBytes);
        }
        break;
      }
      default:
        this.unmapIovaRange(m.iovaRanges[0].pfn, m.iovaRanges[0].pages);
    }
    this.profiler.exit(entryName(m.segments.length, 'unmap'), m.totalBytes);
  }

  /**
   * The DMA is complete: for a mapping the device may have written (FROM_DEVICE,
   * BIDIRECTIONAL), the buffer it wrote (the caller's pages, a pool slot, a
   * fallback buffer or swiotlb slots) is where the device's data is now, in
   * the cache's DDIO share or in DRAM; the copies that follow are charged by it.
   */
  private noteDeviceWrites(m: DmaMapping): void {
    const cache = this.d.cache;
    if (!cache || m.dir === DMA_TO_DEVICE) return;
    if (m.slot) cache.device_write(m.slot.gpa, m.totalBytes);
    else if (m.fallback) cache.device_write(m.fallback.gpa, m.totalBytes);
    else if (m.kind === 'per-segment')
      m.iovaRanges.forEach((r, i) => {
        if (r.swiotlb >= 0) cache.device_write(r.swiotlb, r.mapBytes);
        else cache.device_write(m.segments[i].gpa, m.segments[i].lenBytes);
      });
    else for (const s of m.segments) cache.device_write(s.gpa, s.lenBytes);
  }

  /** the buffer a bounce copy goes to (one object reused: calls never nest) */
  private readonly bounceBuf = { gpa: 0, sizeBytes: 0, fresh: false };

  /** The iotlb_gather of one unmap (a stack variable in the kernel; one object reused here, as calls never nest). */
  private readonly gather: IommuIotlbGather = newIotlbGather();

  /** An empty gather for an unmap that is synced at once. */
  private strictGather(): IommuIotlbGather {
    return iommu_iotlb_gather_init(this.gather, false);
  }

  // the IOMMU prot of a direction: DMA_TO_DEVICE: the device reads; DMA_FROM_DEVICE: it writes; BIDIRECTIONAL: both

  private allocIova(pages: number): number {
    const pfn = this.d.iovad!.alloc_iova_fast(iommu_dma_iova_len(pages), this.d.limitPfn, this.clock);
    if (pfn === 0) throw new Error('dma-iommu: IOVA space exhausted');
    return pfn;
  }

  /** The normal path: one IOVA range, one map call per physically contiguous run. */
  private mapRange(m: DmaMapping): void {
    this.counters.strictMappings++;
    const first = m.segments[0];
    const offset = first.gpa % PAGE_SIZE_BYTES;
    const pages = Math.ceil((offset + m.totalBytes) / PAGE_SIZE_BYTES);
    const pfn = this.allocIova(pages);
    const iova = iovaOfPfn(pfn);
    const read = m.dir !== DMA_FROM_DEVICE;
    const write = m.dir !== DMA_TO_DEVICE;
    let runIova = iova;
    let runGpa = asGpa(first.gpa - offset);
    let runBytes = 0;
    let next: number = runGpa;
    try {
      for (const s of m.segments) {
        const segStart = s.gpa - (s.gpa % PAGE_SIZE_BYTES);
        const segBytes = Math.ceil(((s.gpa % PAGE_SIZE_BYTES) + s.lenBytes) / PAGE_SIZE_BYTES) * PAGE_SIZE_BYTES;
        if (segStart !== next && runBytes > 0) {
          this.d.iommu!.map_pages(this.d.domain, runIova, runGpa, runBytes, read, write);
          runIova = asIova(runIova + runBytes);
          runGpa = asGpa(segStart);
          runBytes = 0;
        }
        if (runBytes === 0) runGpa = asGpa(segStart);
        runBytes += segBytes;
        next = segStart + segBytes;
      }
      this.d.iommu!.map_pages(this.d.domain, runIova, runGpa, runBytes, read, write);
      runIova = asIova(runIova + runBytes);
      this.d.iommu!.iotlb_sync_map(this.d.domain, iova, pages * PAGE_SIZE_BYTES);
    } catch (e) {
      if (!(e instanceof IommuMapNoMemError)) throw e;
      // a failed map_pages leaves the runs before it mapped; a failed iotlb_sync_map (batched MAPs) may leave any of them
      this.unwindFailedMap(pfn, pages, runIova - iova);
      throw e;
    }
    m.kind = 'iommu';
    setIovaRange(m, 0, pfn, pages, -1, pages * PAGE_SIZE_BYTES, offset);
    setCount(m.iovaRanges, 1);
    setDmaSegment(m, 0, asIova(iova + offset), m.totalBytes);
    setCount(m.dmaSegments, 1);
  }

  /** Untrusted device, reference-period kernel: every segment mapped on its own; sub-granule ones bounced via swiotlb. */
  private mapPerSegment(m: DmaMapping): void {
    m.kind = 'per-segment';
    setCount(m.iovaRanges, 0);
    setCount(m.dmaSegments, 0);
    const read = m.dir !== DMA_FROM_DEVICE;
    const write = m.dir !== DMA_TO_DEVICE;
    // iommu_dma_map_sg_swiotlb: one iommu_dma_map_page per segment (a single segment is the entry point itself)
    const perSegment = m.segments.length > 1;
    for (const s of m.segments) {
      if (perSegment) this.profiler.enter();
      this.counters.perSegmentMaps++;
      const offset = s.gpa % PAGE_SIZE_BYTES;
      const aligned = offset === 0 && s.lenBytes % PAGE_SIZE_BYTES === 0;
      let phys = asGpa(s.gpa);
      let tlb = -1;
      const mapBytes = Math.ceil((offset + s.lenBytes) / PAGE_SIZE_BYTES) * PAGE_SIZE_BYTES;
      if (!aligned) {
        // iommu_dma_map_page for an untrusted device: bounce the whole granule-padded buffer
        if (!this.d.swiotlb) throw new Error('dma-iommu: an untrusted sub-granule mapping needs swiotlb');
        this.profiler.enter();
        tlb = this.d.swiotlb.swiotlb_tbl_map_single(asGpa(s.gpa), s.lenBytes, mapBytes, m.dir, this.clock);
        this.profiler.exit('swiotlb_tbl_map_single', s.lenBytes);
        if (tlb < 0) throw new Error('dma-iommu: swiotlb buffer is full');
        this.d.swiotlb.clearPadding(asGpa(tlb), s.lenBytes, mapBytes, m.dir, this.clock);
        this.counters.swiotlbBounces++;
        phys = asGpa(tlb);
      }
      const physOffset = phys % PAGE_SIZE_BYTES;
      const pages = Math.ceil((physOffset + s.lenBytes) / PAGE_SIZE_BYTES);
      const pfn = this.allocIova(pages);
      this.d.iommu!.map_pages(this.d.domain, iovaOfPfn(pfn), asGpa(phys - physOffset), pages * PAGE_SIZE_BYTES, read, write);
      this.d.iommu!.iotlb_sync_map(this.d.domain, iovaOfPfn(pfn), pages * PAGE_SIZE_BYTES);
      m.iovaRanges.push({ pfn, pages, swiotlb: tlb, mapBytes: s.lenBytes, offset: physOffset });
      m.dmaSegments.push({ dmaAddr: asIova(iovaOfPfn(pfn) + physOffset), lenBytes: s.lenBytes });
      if (perSegment) this.profiler.exit('iommu_dma_map_page', s.lenBytes);
    }
  }

  /**
   * The pool (`io_bounce_buffers_map_page`/`_map_sg`): a cached, still-mapped
   * slot (a hit sends nothing); a miss maps the slot once. Returns false when
   * the pool did not serve a trusted mapping, which then takes the normal path.
   */
  private mapBounced(m: DmaMapping, pool: BouncePool, persistent: boolean): boolean {
    this.profiler.enter();
    const fn = m.segments.length === 1 ? 'io_bounce_buffers_map_page' : 'io_bounce_buffers_map_sg';
    const read = m.dir !== DMA_FROM_DEVICE;
    const write = m.dir !== DMA_TO_DEVICE;
    const perm = (read ? IOMMU_READ : 0) | (write ? IOMMU_WRITE : 0);
    const slot = pool.acquire(m.totalBytes, perm, this.clock, persistent ? PERSISTENT : NOT_PERSISTENT);
    if (slot) {
      if (slot.needsUnmapFirst) {
        const gather = this.strictGather();
        this.d.iommu!.unmap_pages(this.d.domain, asIova(slot.iova), slot.classBytes, gather);
        iommu_iotlb_sync(this.d.iommu!, this.d.domain, gather);
      }
      if (slot.needsMap) {
        this.d.iommu!.map_pages(this.d.domain, asIova(slot.iova), asGpa(slot.gpa), slot.classBytes, read, write);
        this.d.iommu!.iotlb_sync_map(this.d.domain, asIova(slot.iova), slot.classBytes);
      }
      this.profiler.enter();
      const buf = this.bounceBuf;
      buf.gpa = slot.gpa;
      buf.sizeBytes = slot.classBytes;
      buf.fresh = slot.fresh;
      const copy = pool.bounceOnMap(this.d.mem, buf, m.segments, m.dir, this.d.untrusted ? UNTRUSTED : TRUSTED, this.clock);
      this.exitCopyFrame(copy.copiedBytes, copy.zeroedBytes);
      m.kind = 'slot';
      m.slot = slot;
      setDmaSegment(m, 0, asIova(slot.iova), m.totalBytes);
      setCount(m.dmaSegments, 1);
      setCount(m.iovaRanges, 0);
      this.counters.bouncedMappings++;
      this.profiler.exit(fn, m.totalBytes);
      return true;
    }
    if (!this.d.untrusted) {
      // trusted: the pool declines and the entry point takes the normal path
      this.profiler.exit(fn, 0);
      return false;
    }
    // untrusted: bouncing is mandatory; a single-use buffer from the fallback tree
    const mapBytes = Math.ceil(m.totalBytes / PAGE_SIZE_BYTES) * PAGE_SIZE_BYTES;
    const pfn = this.allocIova(mapBytes / PAGE_SIZE_BYTES);
    const fb = pool.fallback.insert(iovaOfPfn(pfn), m.totalBytes, perm, this.clock);
    if (!fb) throw new Error('dma-iommu: no memory for an untrusted bounce buffer');
    this.d.iommu!.map_pages(this.d.domain, asIova(fb.iova), asGpa(fb.gpa), fb.mapBytes, read, write);
    this.d.iommu!.iotlb_sync_map(this.d.domain, asIova(fb.iova), fb.mapBytes);
    this.profiler.enter();
    const buf = this.bounceBuf;
    buf.gpa = fb.gpa;
    buf.sizeBytes = fb.mapBytes;
    buf.fresh = true;
    const copy = pool.bounceOnMap(this.d.mem, buf, m.segments, m.dir, UNTRUSTED, this.clock);
    this.exitCopyFrame(copy.copiedBytes, copy.zeroedBytes);
    m.kind = 'fallback';
    m.fallback = fb;
    setCount(m.iovaRanges, 0);
    m.iovaRanges.push({ pfn, pages: mapBytes / PAGE_SIZE_BYTES, swiotlb: -1, mapBytes, offset: 0 });
    m.dmaSegments = [{ dmaAddr: asIova(fb.iova), lenBytes: m.totalBytes }];
    this.counters.bouncedMappings++;
    this.profiler.exit(fn, m.totalBytes);
    return true;
  }

  /** `io_bounce_buffers_unmap_page`/`_unmap_sg`: the bytes back to the caller, the slot back to the pool (or the fallback buffer freed). */
  private unmapBounced(m: DmaMapping): void {
    const pool = this.d.pool!;
    this.profiler.enter();
    if (m.slot) {
      this.profiler.enter();
      this.exitCopyFrame(pool.bounceOnUnmap(this.d.mem, m.slot.gpa, m.segments, m.dir, NO_COPY_OPTS, this.clock), 0);
      pool.release(m.slot, this.clock); // stays mapped, cached for the next mapping
    } else if (m.fallback) {
      this.profiler.enter();
      this.exitCopyFrame(pool.bounceOnUnmap(this.d.mem, m.fallback.gpa, m.segments, m.dir, NO_COPY_OPTS, this.clock), 0);
      const r = m.iovaRanges[0];
      const gather = this.strictGather();
      this.d.iommu!.unmap_pages(this.d.domain, iovaOfPfn(r.pfn), r.mapBytes, gather);
      iommu_iotlb_sync(this.d.iommu!, this.d.domain, gather);
      pool.fallback.remove(m.fallback.iova, this.clock);
      this.d.iovad!.free_iova_fast(r.pfn, iommu_dma_iova_len(r.pages), this.clock);
    }
    this.profiler.exit(m.segments.length === 1 ? 'io_bounce_buffers_unmap_page' : 'io_bounce_buffers_unmap_sg', m.totalBytes);
  }

  /** The frame of a bounce copy: `memcpy` when it copied, `memset` when it only cleared padding, none when it did neither. */
  private exitCopyFrame(copiedBytes: number, zeroedBytes: number): void {
    if (copiedBytes > 0) this.profiler.exit('memcpy', copiedBytes);
    else if (zeroedBytes > 0) this.profiler.exit('memset', zeroedBytes);
    else this.profiler.exit(null);
  }

  /**
   * A map the IOMMU driver refused for want of resources: iommu_map unmaps
   * what it had mapped (`mappedBytes` from the start of the range, synced at
   * once whatever the strategy) and iommu_dma_map_sg frees the IOVA.
   */
  private unwindFailedMap(pfn: number, pages: number, mappedBytes: number): void {
    this.counters.mapNoMem++;
    if (mappedBytes > 0) {
      const gather = iommu_iotlb_gather_init(this.gather, false);
      this.d.iommu!.unmap_pages(this.d.domain, iovaOfPfn(pfn), mappedBytes, gather);
      iommu_iotlb_sync(this.d.iommu!, this.d.domain, gather);
    }
    this.d.iovad!.free_iova_fast(pfn, iommu_dma_iova_len(pages), this.clock);
  }

  /**
   * __iommu_dma_unmap: the unmap gathers its range; strict syncs now, lazy
   * (`iotlb_gather.queued`) queues the IOVA until the flush queue's next flush.
   */
  private unmapIovaRange(pfn: number, pages: number): void {
    const lazy = this.strategy === 'lazy';
    const gather = iommu_iotlb_gather_init(this.gather, lazy);
    this.d.iommu!.unmap_pages(this.d.domain, iovaOfPfn(pfn), pages * PAGE_SIZE_BYTES, gather);
    if (lazy) {
      this.d.fq!.queue_iova(this.d.cpu, pfn, iommu_dma_iova_len(pages), this.clock);
    } else {
      iommu_iotlb_sync(this.d.iommu!, this.d.domain, gather);
      this.d.iovad!.free_iova_fast(pfn, iommu_dma_iova_len(pages), this.clock);
    }
  }

  /** sysfs writes to always_bounce_limit, in model time (an administrator changing the knob during the run) */
  private limitSchedule: { atNs: number; bytes: number }[] = [];

  scheduleAlwaysBounceLimit(schedule: readonly { atNs: number; bytes: number }[]): void {
    this.limitSchedule = [...schedule].sort((a, b) => a.atNs - b.atNs);
  }

  /** The next timer this vCPU owns: the flush queue's, the pool's eviction pass, a scheduled knob change. */
  nextTimerNs(): number {
    let t = Number.MAX_SAFE_INTEGER;
    if (this.limitSchedule.length > 0) t = this.limitSchedule[0].atNs;
    if (this.d.fq) t = Math.min(t, this.d.fq.nextDeadlineNs());
    if (this.d.pool) t = Math.min(t, this.d.pool.nextEvictionNs());
    return t;
  }

  /** Run the timers due at or before the clock. */
  runTimers(): void {
    const now = this.clock.nowNs();
    while (this.limitSchedule.length > 0 && this.limitSchedule[0].atNs <= now) this.d.pool?.setAlwaysBounceLimit(this.limitSchedule.shift()!.bytes, this.clock);
    if (this.d.fq && this.d.fq.nextDeadlineNs() <= now) this.d.fq.fq_flush_timeout(now, this.clock);
    if (this.d.pool?.evictionDue(this.clock)) this.evict(false);
  }

  /** The pool's eviction pass (or, at teardown, every cached slot): unmap, then free. */
  evict(teardown: boolean): number {
    const pool = this.d.pool;
    if (!pool) return 0;
    this.profiler.enter();
    const evicted = pool.evictionPass(this.clock.nowNs(), this.clock, teardown);
    const gather = this.strictGather();
    for (const e of evicted) this.d.iommu!.unmap_pages(this.d.domain, asIova(e.iova), e.sizeBytes, gather);
    if (evicted.length > 0) iommu_iotlb_sync(this.d.iommu!, this.d.domain, gather);
    for (const e of evicted) pool.finishEviction(e, this.clock);
    this.profiler.exit(evicted.length > 0 ? 'io_buffer_manager_evict' : null);
    return evicted.length;
  }

  /** End of a vCPU's work: drain its flush queue. */
  quiesce(): void {
    if (this.d.fq) this.d.fq.fq_flush_all(this.clock);
  }
}

const NO_ATTRS: { persistentStreaming?: boolean } = Object.freeze({});
/** the option objects of the pool's calls, made once */
const PERSISTENT = Object.freeze({ persistent: true });
const NOT_PERSISTENT = Object.freeze({ persistent: false });
const TRUSTED = Object.freeze({ untrusted: false });
const UNTRUSTED = Object.freeze({ untrusted: true });
const NO_COPY_OPTS = Object.freeze({});

/**
 * A mapping object used again for the next mapping (the caller's, e.g. one per
 * fio I/O slot, once its earlier mapping is unmapped). Its arrays and their
 * entry objects are kept: the map paths overwrite entries in order with
 * setDmaSegment / setIovaRange and cut each array to its count with setCount,
 * so a mapping of the same shape as the last allocates nothing.
 */
function reuseMapping(m: DmaMapping, segments: readonly DmaSegment[], dir: DmaDirection, totalBytes: number): DmaMapping {
  m.segments = segments;
  m.dir = dir;
  m.totalBytes = totalBytes;
  m.kind = 'direct';
  m.slot = null;
  m.fallback = null;
  return m;
}

/** Entry i of `m.dmaSegments`: an existing entry object is overwritten. */
function setDmaSegment(m: DmaMapping, i: number, dmaAddr: Iova, lenBytes: number): void {
  const e = m.dmaSegments[i] as { dmaAddr: Iova; lenBytes: number } | undefined;
  if (e === undefined) {
    m.dmaSegments[i] = { dmaAddr, lenBytes };
    return;
  }
  e.dmaAddr = dmaAddr;
  e.lenBytes = lenBytes;
}

/** Entry i of `m.iovaRanges`, as setDmaSegment. */
function setIovaRange(m: DmaMapping, i: number, pfn: number, pages: number, swiotlb: number, mapBytes: number, offset: number): void {
  const r = m.iovaRanges[i];
  if (r === undefined) {
    m.iovaRanges[i] = { pfn, pages, swiotlb, mapBytes, offset };
    return;
  }
  r.pfn = pfn;
  r.pages = pages;
  r.swiotlb = swiotlb;
  r.mapBytes = mapBytes;
  r.offset = offset;
}

/** Cut a mapping's array to the `n` entries this mapping set (no change, no work). */
function setCount(a: unknown[], n: number): void {
  if (a.length !== n) a.length = n;
}

/** The IOVA of an IOVA page frame (the allocator hands out pfns). */
function iovaOfPfn(pfn: number): Iova {
  return asIova(pfn * PAGE_SIZE_BYTES);
}

export { BouncePool };

/** The dma-iommu entry point of a map or unmap: `_page` for one segment (dma_map_page), `_sg` for a scatter list. */
function entryName(segments: number, op: 'map' | 'unmap'): string {
  if (op === 'map') return segments === 1 ? 'iommu_dma_map_page' : 'iommu_dma_map_sg';
  return segments === 1 ? 'iommu_dma_unmap_page' : 'iommu_dma_unmap_sg';
}
