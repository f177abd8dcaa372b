/**
 * The virtio-iommu device backend of the VMM (after QEMU hw/virtio/virtio-iommu.c
 * and crosvm's virtio-iommu device): domains, endpoints, a mapping tree per
 * domain, and ATTACH / DETACH / MAP / UNMAP / PROBE read from a split
 * virtqueue in guest RAM with the spec's layouts and status codes. One
 * device mutex is held for each request, the VFIO calls it makes included.
 *
 * Mapping to VFIO: a MAP becomes one VFIO_IOMMU_MAP_DMA; an UNMAP covering
 * several earlier MAPs becomes one VFIO_IOMMU_UNMAP_DMA per covered mapping
 * (QEMU's IOMMU notifier fires once per mapping), or, with `vfioUnmap:
 * 'whole-range'`, one spanning them all (crosvm, vmm-path.ts). An UNMAP that
 * would split a mapping fails with RANGE, as the spec requires.
 *
 * The device knows its endpoints from its configuration (the PCI requester
 * ids of the devices behind it) and its page granularity from page_size_mask.
 * Requests are checked against both before anything takes effect or reaches
 * VFIO: ATTACH, DETACH and PROBE of an endpoint it does not have answer NOENT,
 * and a MAP whose virt_start, phys_start or virt_end + 1 is not aligned on the
 * granularity answers RANGE.
 */

import type { VfioContainerPort } from '@vmstack/shm';
import {
  decodeRequest,
  type GuestMemory,
  type LockTable,
  type ModelClock,
  type Mutex,
  PAGE_SIZE_BYTES,
  VIRTIO_IOMMU_MAP_F_MASK,
  VIRTIO_IOMMU_MAP_F_MMIO,
  VIRTIO_IOMMU_MAP_F_READ,
  VIRTIO_IOMMU_MAP_F_WRITE,
  VIRTIO_IOMMU_PROBE_SIZE_BYTES_DEFAULT,
  VIRTIO_IOMMU_RESV_MEM_T_MSI,
  VIRTIO_IOMMU_S_DEVERR,
  VIRTIO_IOMMU_S_INVAL,
  VIRTIO_IOMMU_S_IOERR,
  VIRTIO_IOMMU_S_NOENT,
  VIRTIO_IOMMU_S_NOMEM,
  VIRTIO_IOMMU_S_OK,
  VIRTIO_IOMMU_S_RANGE,
  VIRTIO_IOMMU_S_UNSUPP,
  VIRTIO_IOMMU_T_ATTACH,
  VIRTIO_IOMMU_T_DETACH,
  VIRTIO_IOMMU_T_MAP,
  VIRTIO_IOMMU_T_PROBE,
  VIRTIO_IOMMU_T_UNMAP,
  VIRTIO_IOMMU_TAIL_BYTES,
  VirtqueueDevice,
  VirtqueueError,
  type VirtqueueLayout,
  writeProbeProperties,
  writeTail,
} from '@vmstack/shm';

export const VIOMMU_DEVICE_MUTEX = 'viommu_dev->mutex';
export const MSI_IOVA_BASE = 0xfee0_0000;
export const MSI_IOVA_LENGTH = 0x10_0000;
const ENOMEM = -12;
const EEXIST = -17;
const EINVAL = -22;

/** page_size_mask: 4 KiB pages and every larger power of two (bits 12..63), as QEMU advertises with a 4 KiB host. */
export const VIOMMU_PAGE_SIZE_MASK_DEFAULT = ~BigInt(PAGE_SIZE_BYTES - 1) & 0xffff_ffff_ffff_ffffn;

export interface ViommuDeviceConfig {
  /** the endpoint ids of the devices behind this virtio-iommu; no other endpoint exists */
  endpointIds: readonly number[];
  /** the config space's page_size_mask; its lowest set bit is the page granularity */
  pageSizeMask?: bigint;
  probeSizeBytes?: number;
  /** this device's mutex in the lock table (default `viommu_dev->mutex`; a VM with several virtio-iommus has one each) */
  mutexName?: string;
  /**
   * How an UNMAP reaches VFIO (vmm-path.ts): `per-mapping`, one
   * VFIO_IOMMU_UNMAP_DMA per covered mapping (default); `whole-range`, one
   * VFIO_IOMMU_UNMAP_DMA spanning every covered mapping, which type1 takes
   * apart into its `vfio_dma`s.
   */
  vfioUnmap?: 'per-mapping' | 'whole-range';
}

export interface ViommuDeviceCosts {
  vmmViommuRequestNs: number;
  vfioIoctlSyscallNs: number;
}

interface Mapping {
  start: number;
  end: number; // inclusive
  phys: number;
  flags: number;
}

interface Domain {
  id: number;
  endpoints: Set<number>;
  bypass: boolean;
  /** sorted by start; a domain holds a few thousand mappings at most */
  mappings: Mapping[];
}

export interface ViommuDeviceCounters {
  attach: number;
  detach: number;
  map: number;
  unmap: number;
  probe: number;
  errors: number;
  vfioMapDma: number;
  vfioUnmapDma: number;
  kicks: number;
}

export class VirtioIommuDevice {
  private readonly vq: VirtqueueDevice;
  private readonly domains = new Map<number, Domain>();
  /** attached endpoint → its domain */
  private readonly endpoints = new Map<number, number>();
  /** the endpoints the device was configured with */
  private readonly endpointIds: ReadonlySet<number>;
  /** the smallest page size in page_size_mask: MAP ranges must be aligned on it */
  private readonly pageGranuleBytes: number;
  private readonly probeSizeBytes: number;
  private readonly mutex: Mutex;
  private readonly vfioUnmapWholeRange: boolean;
  /** per function: calls, model ns, bytes (the run's per-function profile) */
  readonly profile: Record<string, { calls: number; ns: number; selfNs: number; bytes: number }> = {};
  /** model ns spent in VFIO calls during the current request (not the VMM's own time) */
  private vfioNs = 0;
  readonly counters: ViommuDeviceCounters = { attach: 0, detach: 0, map: 0, unmap: 0, probe: 0, errors: 0, vfioMapDma: 0, vfioUnmapDma: 0, kicks: 0 };

  constructor(
    private readonly mem: GuestMemory,
    layout: VirtqueueLayout,
    private readonly vfio: VfioContainerPort,
    locks: LockTable,
    private readonly clock: ModelClock,
    private readonly costs: ViommuDeviceCosts,
    config: ViommuDeviceConfig,
  ) {
    const mask = config.pageSizeMask ?? VIOMMU_PAGE_SIZE_MASK_DEFAULT;
    if (mask <= 0n) throw new Error('virtio-iommu: page_size_mask must have a bit set');
    this.pageGranuleBytes = Number(mask & -mask);
    this.endpointIds = new Set(config.endpointIds);
    this.probeSizeBytes = config.probeSizeBytes ?? VIRTIO_IOMMU_PROBE_SIZE_BYTES_DEFAULT;
    this.vq = new VirtqueueDevice(mem, layout);
    this.mutex = locks.get(config.mutexName ?? VIOMMU_DEVICE_MUTEX);
    this.vfioUnmapWholeRange = config.vfioUnmap === 'whole-range';
  }

  /**
   * virtio_iommu_handle_command: the guest kicked the request queue at
   * model time `kickNs`. Handles every available request and returns the
   * number handled; the clock then says when the used elements were written.
   */
  virtio_iommu_handle_command(kickNs: number): number {
    this.clock.syncTo(kickNs);
    this.counters.kicks++;
    let handled = 0;
    for (;;) {
      let chain: ReturnType<typeof this.vq.popAvail>;
      try {
        chain = this.vq.popAvail();
      } catch (e) {
        if (e instanceof VirtqueueError) {
          // a broken ring: QEMU marks the device broken (virtio_error); we stop serving it
          this.counters.errors++;
          throw new Error(`virtio-iommu: ${e.message}`);
        }
        throw e;
      }
      if (!chain) break;
      handled++;
      this.clock.charge(this.costs.vmmViommuRequestNs);
      const outSeg = chain.out[0];
      const inSeg = chain.in[chain.in.length - 1];
      const outLen = chain.out.reduce((s, x) => s + x.lenBytes, 0);
      const inLen = chain.in.reduce((s, x) => s + x.lenBytes, 0);
      if (!outSeg || !inSeg || chain.out.length > 1 || chain.in.length > 1) {
        // this model's driver always uses one readable and one writable buffer
        this.counters.errors++;
        if (inSeg && inSeg.lenBytes >= VIRTIO_IOMMU_TAIL_BYTES) writeTail(this.mem, inSeg.gpa + inSeg.lenBytes - VIRTIO_IOMMU_TAIL_BYTES, VIRTIO_IOMMU_S_INVAL);
        this.vq.pushUsed(chain.head, inSeg ? VIRTIO_IOMMU_TAIL_BYTES : 0);
        continue;
      }
      const req = decodeRequest(this.mem, outSeg.gpa, outLen, inLen, this.probeSizeBytes);
      const tailGpa = inSeg.gpa + inSeg.lenBytes - VIRTIO_IOMMU_TAIL_BYTES;
      if (req.type === 'reject') {
        this.counters.errors++;
        if (req.status === null) {
          this.vq.pushUsed(chain.head, 0);
        } else {
          writeTail(this.mem, tailGpa, req.status);
          this.vq.pushUsed(chain.head, VIRTIO_IOMMU_TAIL_BYTES);
        }
        continue;
      }
      const reqStartNs = this.clock.nowNs();
      this.vfioNs = 0;
      this.mutex.lock(this.clock);
      let status: number;
      let written = VIRTIO_IOMMU_TAIL_BYTES;
      try {
        switch (req.type) {
          case VIRTIO_IOMMU_T_ATTACH:
            this.counters.attach++;
            status = req.reservedZero ? this.virtio_iommu_attach(req.domain, req.endpoint, (req.flags & 1) !== 0) : VIRTIO_IOMMU_S_INVAL;
            break;
          case VIRTIO_IOMMU_T_DETACH:
            this.counters.detach++;
            status = req.reservedZero ? this.virtio_iommu_detach(req.domain, req.endpoint) : VIRTIO_IOMMU_S_INVAL;
            break;
          case VIRTIO_IOMMU_T_MAP:
            this.counters.map++;
            status = this.virtio_iommu_map(req.domain, req.virtStart, req.virtEnd, req.physStart, req.flags);
            break;
          case VIRTIO_IOMMU_T_UNMAP:
            this.counters.unmap++;
            status = this.virtio_iommu_unmap(req.domain, req.virtStart, req.virtEnd);
            break;
          case VIRTIO_IOMMU_T_PROBE: {
            this.counters.probe++;
            if (!this.endpointIds.has(req.endpoint)) {
              status = VIRTIO_IOMMU_S_NOENT;
            } else {
              writeProbeProperties(this.mem, inSeg.gpa, this.probeSizeBytes, [
                { subtype: VIRTIO_IOMMU_RESV_MEM_T_MSI, start: MSI_IOVA_BASE, end: MSI_IOVA_BASE + MSI_IOVA_LENGTH - 1 },
              ]);
              status = VIRTIO_IOMMU_S_OK;
              written = inSeg.lenBytes;
            }
            break;
          }
          default:
            status = VIRTIO_IOMMU_S_UNSUPP;
        }
      } finally {
        this.mutex.unlock(this.clock);
      }
      if (status !== VIRTIO_IOMMU_S_OK) this.counters.errors++;
      const fn = `virtio_iommu_handle_${['', 'attach', 'detach', 'map', 'unmap', 'probe'][req.type]}`;
      const e = (this.profile[fn] ??= { calls: 0, ns: 0, selfNs: 0, bytes: 0 });
      e.calls++;
      e.ns += this.clock.nowNs() - reqStartNs;
      e.selfNs += this.clock.nowNs() - reqStartNs - this.vfioNs;
      if (req.type === VIRTIO_IOMMU_T_MAP || req.type === VIRTIO_IOMMU_T_UNMAP) e.bytes += req.virtEnd - req.virtStart + 1;
      writeTail(this.mem, tailGpa, status);
      this.vq.pushUsed(chain.head, written);
    }
    return handled;
  }

  private virtio_iommu_attach(domainId: number, endpoint: number, bypass: boolean): number {
    if (!this.endpointIds.has(endpoint)) return VIRTIO_IOMMU_S_NOENT;
    const prev = this.endpoints.get(endpoint);
    if (prev !== undefined && prev !== domainId) this.virtio_iommu_detach(prev, endpoint);
    let d = this.domains.get(domainId);
    if (!d) {
      d = { id: domainId, endpoints: new Set(), bypass, mappings: [] };
      this.domains.set(domainId, d);
    } else if (d.bypass !== bypass) {
      return VIRTIO_IOMMU_S_INVAL;
    }
    d.endpoints.add(endpoint);
    this.endpoints.set(endpoint, domainId);
    return VIRTIO_IOMMU_S_OK;
  }

  private virtio_iommu_detach(domainId: number, endpoint: number): number {
    if (!this.endpointIds.has(endpoint)) return VIRTIO_IOMMU_S_NOENT;
    const d = this.domains.get(domainId);
    if (!d || this.endpoints.get(endpoint) !== domainId) return VIRTIO_IOMMU_S_INVAL;
    d.endpoints.delete(endpoint);
    this.endpoints.delete(endpoint);
    if (d.endpoints.size === 0) {
      // the last endpoint leaves: the domain's mappings go with it
      for (const m of d.mappings) if (!(m.flags & VIRTIO_IOMMU_MAP_F_MMIO)) this.vfioUnmap(m.start, m.end - m.start + 1);
      this.domains.delete(domainId);
    }
    return VIRTIO_IOMMU_S_OK;
  }

  private virtio_iommu_map(domainId: number, start: number, end: number, phys: number, flags: number): number {
    const d = this.domains.get(domainId);
    if (!d) return VIRTIO_IOMMU_S_NOENT;
    if (flags & ~VIRTIO_IOMMU_MAP_F_MASK) return VIRTIO_IOMMU_S_INVAL;
    if (end < start) return VIRTIO_IOMMU_S_INVAL;
    if (d.bypass) return VIRTIO_IOMMU_S_INVAL;
    const g = this.pageGranuleBytes;
    if (start % g !== 0 || phys % g !== 0 || (end + 1) % g !== 0) return VIRTIO_IOMMU_S_RANGE;
    const i = lowerBound(d.mappings, start);
    if ((i < d.mappings.length && d.mappings[i].start <= end) || (i > 0 && d.mappings[i - 1].end >= start)) return VIRTIO_IOMMU_S_INVAL;
    if (!(flags & VIRTIO_IOMMU_MAP_F_MMIO)) {
      this.clock.charge(this.costs.vfioIoctlSyscallNs);
      this.counters.vfioMapDma++;
      const vfioStartNs = this.clock.nowNs();
      const r = this.vfio.mapDma(
        {
          iova: start,
          vaddr: phys,
          sizeBytes: end - start + 1,
          read: (flags & VIRTIO_IOMMU_MAP_F_READ) !== 0,
          write: (flags & VIRTIO_IOMMU_MAP_F_WRITE) !== 0,
        },
        this.clock.nowNs(),
      );
      this.clock.syncTo(r.doneNs);
      this.vfioNs += this.clock.nowNs() - vfioStartNs;
      if (r.errno === ENOMEM) return VIRTIO_IOMMU_S_NOMEM;
      if (r.errno === EEXIST || r.errno === EINVAL) return VIRTIO_IOMMU_S_INVAL;
      if (r.errno !== 0) return VIRTIO_IOMMU_S_IOERR;
    }
    d.mappings.splice(i, 0, { start, end, phys, flags });
    return VIRTIO_IOMMU_S_OK;
  }

  private virtio_iommu_unmap(domainId: number, start: number, end: number): number {
    const d = this.domains.get(domainId);
    if (!d) return VIRTIO_IOMMU_S_NOENT;
    if (end < start) return VIRTIO_IOMMU_S_INVAL;
    let i = lowerBound(d.mappings, start);
    // a mapping that starts before the range and reaches into it would be split
    if (i > 0 && d.mappings[i - 1].end >= start) return VIRTIO_IOMMU_S_RANGE;
    let j = i;
    while (j < d.mappings.length && d.mappings[j].start <= end) {
      if (d.mappings[j].end > end) return VIRTIO_IOMMU_S_RANGE;
      j++;
    }
    let status = VIRTIO_IOMMU_S_OK;
    if (this.vfioUnmapWholeRange) {
      const covered = d.mappings.slice(i, j).filter((m) => !(m.flags & VIRTIO_IOMMU_MAP_F_MMIO));
      const first = covered[0];
      const last = covered[covered.length - 1];
      if (first && this.vfioUnmap(first.start, last.end - first.start + 1) !== 0) status = VIRTIO_IOMMU_S_DEVERR;
    } else {
      for (; i < j; i++) {
        const m = d.mappings[i];
        if (!(m.flags & VIRTIO_IOMMU_MAP_F_MMIO) && this.vfioUnmap(m.start, m.end - m.start + 1) !== 0) status = VIRTIO_IOMMU_S_DEVERR;
      }
    }
    d.mappings.splice(lowerBound(d.mappings, start), j - lowerBound(d.mappings, start));
    return status;
  }

  private vfioUnmap(iova: number, sizeBytes: number): number {
    this.clock.charge(this.costs.vfioIoctlSyscallNs);
    this.counters.vfioUnmapDma++;
    const vfioStartNs = this.clock.nowNs();
    const r = this.vfio.unmapDma({ iova, sizeBytes }, this.clock.nowNs());
    this.clock.syncTo(r.doneNs);
    this.vfioNs += this.clock.nowNs() - vfioStartNs;
    return r.errno;
  }

  /** Mappings still held, per domain (for leak checks). */
  mappingCount(): number {
    let n = 0;
    for (const d of this.domains.values()) n += d.mappings.length;
    return n;
  }
}

function lowerBound(ms: Mapping[], start: number): number {
  let lo = 0;
  let hi = ms.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ms[mid].start < start) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export { VIRTIO_IOMMU_MAP_F_READ, VIRTIO_IOMMU_MAP_F_WRITE };
