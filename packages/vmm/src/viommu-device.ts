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
 * would split a mapping fails with RANGE, as the spec requires. A bypass
 * domain maps guest RAM one to one through VFIO while an endpoint is
 * attached to it.
 *
 * Configuration and features: the device presents its feature bits and
 * struct virtio_iommu_config (page_size_mask, input_range, domain_range,
 * probe_size, bypass) in the configuration page the driver reads at probe
 * (`writeViommuConfigPage`), and reads back the features the driver
 * accepted; MAP/UNMAP need F_MAP_UNMAP, the MMIO flag F_MMIO, the
 * ATTACH bypass flag F_BYPASS_CONFIG, and a domain outside domain_range is
 * refused once F_DOMAIN_RANGE is negotiated. Without a configuration page
 * (tests of the request path alone) every offered feature counts as
 * negotiated.
 *
 * Every check below is made before anything takes effect or reaches VFIO.
 * The status of each, with the spec's wording, is listed in this package's
 * README ("Conformance").
 *
 * Fault reports (with `eventQueue` and `reportFaults`): at VM teardown, once
 * the drives have made their last DMA, the device read()s the host's fault
 * queue (`VfioContainerPort.readFault`) and turns each record into a struct
 * virtio_iommu_fault in the next buffer the driver posted on the event queue
 * (virtio_iommu_report_fault, as QEMU's): the reason is UNKNOWN for an
 * endpoint the device does not know, DOMAIN when the endpoint was attached to
 * no domain at the fault's model time, MAPPING otherwise; the flags are
 * ADDRESS and the access (READ or WRITE). When the driver's buffers are all
 * used, the device lets the driver's event handler run (`drain`: the event
 * queue's interrupt), which reads the reports and posts the buffers again; a
 * report that then still finds no buffer is dropped and counted (QEMU: "no
 * buffer available in event queue"). Reporting at teardown keeps a run's
 * reports independent of thread timing; no cost is charged for the path.
 *
 * 64-bit fields: MAP and UNMAP read virt_start, virt_end and phys_start as
 * numbers, exact below 2^53. Where one is at or above 2^53 the request is
 * read again as bigints and judged exactly (range, order, alignment); what
 * passes is below 2^48 (input_range), where numbers are exact.
 */

import {
  decodeRequest,
  type GuestMemory,
  type HostIommuFault,
  IOMMU_PGFAULT_PERM_WRITE,
  type LockTable,
  type ModelClock,
  type Mutex,
  PAGE_SIZE_BYTES,
  type ProfileEntry,
  Profiler,
  readNegotiatedFeatures,
  readU64Exact,
  type VfioContainerPort,
  VIRTIO_IOMMU_ATTACH_F_BYPASS,
  VIRTIO_IOMMU_F_BYPASS_CONFIG,
  VIRTIO_IOMMU_F_DOMAIN_RANGE,
  VIRTIO_IOMMU_F_INPUT_RANGE,
  VIRTIO_IOMMU_F_MAP_UNMAP,
  VIRTIO_IOMMU_F_MMIO,
  VIRTIO_IOMMU_F_PROBE,
  VIRTIO_IOMMU_FAULT_BYTES,
  VIRTIO_IOMMU_FAULT_F_ADDRESS,
  VIRTIO_IOMMU_FAULT_F_READ,
  VIRTIO_IOMMU_FAULT_F_WRITE,
  VIRTIO_IOMMU_FAULT_R_DOMAIN,
  VIRTIO_IOMMU_FAULT_R_MAPPING,
  VIRTIO_IOMMU_FAULT_R_UNKNOWN,
  VIRTIO_IOMMU_MAP_F_MMIO,
  VIRTIO_IOMMU_MAP_F_READ,
  VIRTIO_IOMMU_MAP_F_WRITE,
  VIRTIO_IOMMU_PHYS_START_OFFSET,
  VIRTIO_IOMMU_PROBE_SIZE_BYTES_DEFAULT,
  VIRTIO_IOMMU_RESV_MEM_T_MSI,
  VIRTIO_IOMMU_S_DEVERR,
  VIRTIO_IOMMU_S_FAULT,
  VIRTIO_IOMMU_S_INVAL,
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
  VIRTIO_IOMMU_VIRT_END_OFFSET,
  VIRTIO_IOMMU_VIRT_START_OFFSET,
  type ViommuConfig,
  type ViommuResvMem,
  VirtqueueDevice,
  VirtqueueError,
  type VirtqueueLayout,
  type VirtqueueSegment,
  viommuFeature,
  writeFault,
  writeProbeProperties,
  writeTail,
  writeViommuConfigPage,
} from '@vmstack/shm';

export const VIOMMU_DEVICE_MUTEX = 'viommu_dev->mutex';
/** The x86 MSI doorbell window the PROBE's RESV_MEM (MSI) property reserves. */
export const MSI_IOVA_BASE = 0xfee0_0000;
export const MSI_IOVA_LENGTH = 0x10_0000;
const ENOMEM = -12;
const EFAULT = -14;
const EEXIST = -17;
const EINVAL = -22;
const ENOSPC = -28;
const TWO_POW_53 = 2 ** 53;

/** page_size_mask: 4 KiB pages and every larger power of two (bits 12..63), as QEMU advertises with a 4 KiB host. */
export const VIOMMU_PAGE_SIZE_MASK_DEFAULT = ~BigInt(PAGE_SIZE_BYTES - 1) & 0xffff_ffff_ffff_ffffn;
/** input_range: the 48-bit IOVAs the host IOMMU translates (VT-d 4-level). */
export const VIOMMU_INPUT_RANGE_DEFAULT = { start: 0n, end: 2n ** 48n - 1n };
/** domain_range: 32-bit domain ids (QEMU's default). */
export const VIOMMU_DOMAIN_RANGE_DEFAULT = { start: 0, end: 0xffff_ffff };
/** The features the device offers: everything but F_BYPASS, which F_BYPASS_CONFIG supersedes (a device SHOULD NOT offer both). */
export const VIOMMU_DEVICE_FEATURES_DEFAULT =
  viommuFeature(VIRTIO_IOMMU_F_INPUT_RANGE) |
  viommuFeature(VIRTIO_IOMMU_F_DOMAIN_RANGE) |
  viommuFeature(VIRTIO_IOMMU_F_MAP_UNMAP) |
  viommuFeature(VIRTIO_IOMMU_F_PROBE) |
  viommuFeature(VIRTIO_IOMMU_F_MMIO) |
  viommuFeature(VIRTIO_IOMMU_F_BYPASS_CONFIG);

export interface ViommuDeviceConfig {
  /** the endpoint ids of the devices behind this virtio-iommu; no other endpoint exists */
  endpointIds: readonly number[];
  /** the config space's page_size_mask; its lowest set bit is the page granularity */
  pageSizeMask?: bigint;
  probeSizeBytes?: number;
  /** input_range (default 48-bit) */
  inputRange?: { start: bigint; end: bigint };
  /** domain_range (default all u32) */
  domainRange?: { start: number; end: number };
  /** the features offered (default VIOMMU_DEVICE_FEATURES_DEFAULT) */
  features?: number;
  /** where the configuration page is in guest RAM (the driver reads it at probe); absent: every offered feature counts as negotiated */
  configGpa?: number;
  /** bytes of guest RAM a bypass domain maps one to one (default: all of it) */
  guestRamBytes?: number;
  /** this device's mutex in the lock table (default `viommu_dev->mutex`; a VM with several virtio-iommus has one each) */
  mutexName?: string;
  /**
   * How an UNMAP reaches VFIO (vmm-path.ts): `per-mapping`, one
   * VFIO_IOMMU_UNMAP_DMA per covered mapping (default); `whole-range`, one
   * VFIO_IOMMU_UNMAP_DMA spanning every covered mapping, which type1 takes
   * apart into its `vfio_dma`s.
   */
  vfioUnmap?: 'per-mapping' | 'whole-range';
  /** the event virtqueue in guest RAM, whose buffers the driver posts for fault reports */
  eventQueue?: VirtqueueLayout | null;
  /** read the host's fault queue at teardown and report each fault (vmm-path.ts); default false */
  reportFaults?: boolean;
}

/** A fault report as the device wrote it, with the model time of the DMA that faulted. */
export interface ViommuFaultReport {
  reason: number;
  flags: number;
  endpoint: number;
  address: number;
  timeNs: number;
}

/** The device's fault reporting. */
export interface ViommuDeviceFaultCounters {
  /** records read from the host's fault queue */
  read: number;
  /** reports written into an event buffer */
  reported: number;
  /** reports dropped: no event buffer posted (or one too small for a report) */
  dropped: number;
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
  /** MAPs refused because VFIO ran out of mappings or locked memory (-ENOSPC / -ENOMEM): answered NOMEM */
  vfioNoResources: number;
}

/** The profile row of each request type's handler (made once: a name built per request costs a string per request). */
const VIRTIO_IOMMU_HANDLE_FN = [
  'virtio_iommu_handle_',
  'virtio_iommu_handle_attach',
  'virtio_iommu_handle_detach',
  'virtio_iommu_handle_map',
  'virtio_iommu_handle_unmap',
  'virtio_iommu_handle_probe',
] as const;

function segmentsBytes(segments: readonly VirtqueueSegment[]): number {
  let n = 0;
  for (let i = 0; i < segments.length; i++) n += segments[i].lenBytes;
  return n;
}

export class VirtioIommuDevice {
  private readonly vq: VirtqueueDevice;
  private readonly domains = new Map<number, Domain>();
  /** attached endpoint → its domain */
  private readonly endpoints = new Map<number, number>();
  /** the endpoints the device was configured with */
  private readonly endpointIds: ReadonlySet<number>;
  /** the smallest page size in page_size_mask: MAP ranges must be aligned on it */
  private pageGranuleBytes: number;
  private pageSizeMask: bigint;
  private readonly probeSizeBytes: number;
  private inputRange: { start: bigint; end: bigint };
  /** input_range as numbers (its end rounds up above 2^53: compare with ≤ on exact values only) */
  private inputStart: number;
  private inputEnd: number;
  private readonly domainRange: { start: number; end: number };
  private readonly offered: number;
  private readonly configGpa: number | null;
  private readonly guestRamBytes: number;
  /** the RESV_MEM regions of every endpoint (PROBE reports them; MAP may not overlap them) */
  readonly resvMem: readonly ViommuResvMem[] = [{ subtype: VIRTIO_IOMMU_RESV_MEM_T_MSI, start: MSI_IOVA_BASE, end: MSI_IOVA_BASE + MSI_IOVA_LENGTH - 1 }];
  private readonly mutex: Mutex;
  private readonly vfioUnmapWholeRange: boolean;
  private readonly evq: VirtqueueDevice | null;
  private readonly reportFaults: boolean;
  /** per endpoint, the model-time intervals [from, to) it was attached to a domain (to: Infinity while attached) */
  private readonly attachedNs = new Map<number, { fromNs: number; toNs: number }[]>();
  /** endpoints whose VFIO group the device took out of the container (DETACH from a domain that keeps other endpoints) */
  private readonly outOfContainer = new Set<number>();
  readonly faultCounters: ViommuDeviceFaultCounters = { read: 0, reported: 0, dropped: 0 };
  /**
   * per function: calls, model ns, bytes (the run's per-function profile). The
   * host kernel's VFIO work is a callee of the request's handler (it runs in
   * the VMM thread's ioctl): in the call tree only, the host reports its rows.
   */
  readonly profiler: Profiler;
  readonly counters: ViommuDeviceCounters = {
    attach: 0,
    detach: 0,
    map: 0,
    unmap: 0,
    probe: 0,
    errors: 0,
    vfioMapDma: 0,
    vfioUnmapDma: 0,
    kicks: 0,
    vfioNoResources: 0,
  };

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
    // "The device MUST set at least one bit in page_size_mask"
    if (mask <= 0n || mask >= 1n << 64n) throw new Error('virtio-iommu: page_size_mask must be a u64 with a bit set');
    this.pageGranuleBytes = Number(mask & -mask);
    this.pageSizeMask = mask;
    this.endpointIds = new Set(config.endpointIds);
    this.probeSizeBytes = config.probeSizeBytes ?? VIRTIO_IOMMU_PROBE_SIZE_BYTES_DEFAULT;
    this.inputRange = config.inputRange ?? VIOMMU_INPUT_RANGE_DEFAULT;
    this.inputStart = Number(this.inputRange.start);
    this.inputEnd = Number(this.inputRange.end);
    this.domainRange = config.domainRange ?? VIOMMU_DOMAIN_RANGE_DEFAULT;
    this.offered = config.features ?? VIOMMU_DEVICE_FEATURES_DEFAULT;
    this.configGpa = config.configGpa ?? null;
    this.guestRamBytes = config.guestRamBytes ?? mem.u8.length;
    if (this.configGpa !== null) writeViommuConfigPage(mem, this.configGpa, this.offered, this.config());
    this.vq = new VirtqueueDevice(mem, layout);
    this.mutex = locks.get(config.mutexName ?? VIOMMU_DEVICE_MUTEX);
    this.vfioUnmapWholeRange = config.vfioUnmap === 'whole-range';
    this.evq = config.eventQueue ? new VirtqueueDevice(mem, config.eventQueue) : null;
    this.reportFaults = config.reportFaults ?? false;
    this.profiler = new Profiler(clock);
  }

  get profile(): Record<string, ProfileEntry> {
    return this.profiler.toJSON();
  }

  /**
   * What the host's VFIO_IOMMU_GET_INFO said, applied at start-up as QEMU does
   * (vfio_get_iommu_info, then virtio_iommu_set_page_size_mask): page_size_mask
   * keeps only the page sizes the host IOMMU maps (`iova_pgsizes`; none in
   * common is an error, as QEMU refuses the device), and input_range narrows
   * to the span of the host's usable IOVA ranges (QEMU reports the holes
   * between them as reserved regions instead; here the one hole is the MSI
   * window, which PROBE already reports). The configuration page is written
   * again. With the default host (4 KiB, 2 MiB and 1 GiB pages; the 48-bit
   * aperture) the granule and the range stay what they were.
   */
  vfio_apply_iommu_info(info: { iovaPgsizes: bigint; iovaRanges: { start: number; end: number } | null }): void {
    if (info.iovaPgsizes !== 0n) {
      const mask = this.pageSizeMask & info.iovaPgsizes;
      if (mask === 0n)
        throw new Error(`virtio-iommu: page_size_mask 0x${this.pageSizeMask.toString(16)} has no page size of the host's 0x${info.iovaPgsizes.toString(16)}`);
      this.pageSizeMask = mask;
      this.pageGranuleBytes = Number(mask & -mask);
    }
    if (info.iovaRanges) {
      const start = BigInt(info.iovaRanges.start) > this.inputRange.start ? BigInt(info.iovaRanges.start) : this.inputRange.start;
      const end = BigInt(info.iovaRanges.end) < this.inputRange.end ? BigInt(info.iovaRanges.end) : this.inputRange.end;
      this.inputRange = { start, end };
      this.inputStart = Number(start);
      this.inputEnd = Number(end);
    }
    if (this.configGpa !== null) writeViommuConfigPage(this.mem, this.configGpa, this.offered, this.config());
  }

  /** struct virtio_iommu_config as the device presents it. */
  config(): ViommuConfig {
    return {
      pageSizeMask: this.pageSizeMask,
      inputRange: this.inputRange,
      domainRange: this.domainRange,
      probeSize: this.probeSizeBytes,
      bypass: 0,
    };
  }

  /** The features in force: what the driver accepted (of those offered), or every offered one without a configuration page. */
  private negotiated(bit: number): boolean {
    const f = this.configGpa === null ? this.offered : (readNegotiatedFeatures(this.mem, this.configGpa) ?? 0) & this.offered;
    return (f & viommuFeature(bit)) !== 0;
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
    const chain = this.chain;
    for (;;) {
      let popped: boolean;
      try {
        popped = this.vq.popAvailInto(chain);
      } catch (e) {
        if (e instanceof VirtqueueError) {
          // a broken ring: QEMU marks the device broken (virtio_error); we stop serving it
          this.counters.errors++;
          throw new Error(`virtio-iommu: ${e.message}`);
        }
        throw e;
      }
      if (!popped) break;
      handled++;
      this.clock.charge(this.costs.vmmViommuRequestNs);
      const outSeg = chain.out[0];
      const inSeg = chain.in[chain.in.length - 1];
      const outLen = segmentsBytes(chain.out);
      const inLen = segmentsBytes(chain.in);
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
      if (req.type === VIRTIO_IOMMU_T_PROBE && !(this.offered & viommuFeature(VIRTIO_IOMMU_F_PROBE))) {
        // "If the device does not offer the VIRTIO_IOMMU_F_PROBE feature ... SHOULD NOT write the buffer and SHOULD set the used length to zero."
        this.counters.probe++;
        this.counters.errors++;
        this.vq.pushUsed(chain.head, 0);
        continue;
      }
      this.profiler.enter();
      this.mutex.lock(this.clock);
      let status: number;
      let written = VIRTIO_IOMMU_TAIL_BYTES;
      try {
        switch (req.type) {
          case VIRTIO_IOMMU_T_ATTACH:
            this.counters.attach++;
            status = req.reservedZero ? this.virtio_iommu_attach(req.domain, req.endpoint, req.flags) : VIRTIO_IOMMU_S_INVAL;
            break;
          case VIRTIO_IOMMU_T_DETACH:
            // "The device MUST ignore reserved."
            this.counters.detach++;
            status = this.virtio_iommu_detach(req.domain, req.endpoint);
            break;
          case VIRTIO_IOMMU_T_MAP:
            this.counters.map++;
            status = this.virtio_iommu_map(req.domain, req.virtStart, req.virtEnd, req.physStart, req.flags, outSeg.gpa);
            break;
          case VIRTIO_IOMMU_T_UNMAP:
            this.counters.unmap++;
            status = this.virtio_iommu_unmap(req.domain, req.virtStart, req.virtEnd, outSeg.gpa);
            break;
          case VIRTIO_IOMMU_T_PROBE: {
            this.counters.probe++;
            status = this.virtio_iommu_probe(req.endpoint, inSeg.gpa);
            if (status === VIRTIO_IOMMU_S_OK) written = inSeg.lenBytes;
            break;
          }
          default:
            status = VIRTIO_IOMMU_S_UNSUPP;
        }
      } finally {
        this.mutex.unlock(this.clock);
      }
      if (status !== VIRTIO_IOMMU_S_OK) this.counters.errors++;
      const fn = VIRTIO_IOMMU_HANDLE_FN[req.type];
      const mapped = (req.type === VIRTIO_IOMMU_T_MAP || req.type === VIRTIO_IOMMU_T_UNMAP) && status === VIRTIO_IOMMU_S_OK;
      this.profiler.exit(fn, mapped ? req.virtEnd - req.virtStart + 1 : 0);
      writeTail(this.mem, tailGpa, status);
      this.vq.pushUsed(chain.head, written);
    }
    return handled;
  }

  /** the chain being handled (one record, filled by each pop) */
  private readonly chain: { head: number; out: VirtqueueSegment[]; in: VirtqueueSegment[] } = { head: 0, out: [], in: [] };

  private virtio_iommu_attach(domainId: number, endpoint: number, flags: number): number {
    // "If the device does not recognize a flags bit, it MUST reject the request": the bypass flag exists only with F_BYPASS_CONFIG
    const known = this.negotiated(VIRTIO_IOMMU_F_BYPASS_CONFIG) ? VIRTIO_IOMMU_ATTACH_F_BYPASS : 0;
    if (flags & ~known) return VIRTIO_IOMMU_S_INVAL;
    if (!this.endpointIds.has(endpoint)) return VIRTIO_IOMMU_S_NOENT;
    if (this.negotiated(VIRTIO_IOMMU_F_DOMAIN_RANGE) && (domainId < this.domainRange.start || domainId > this.domainRange.end)) return VIRTIO_IOMMU_S_RANGE;
    const bypass = (flags & VIRTIO_IOMMU_ATTACH_F_BYPASS) !== 0;
    let d = this.domains.get(domainId);
    if (d && d.bypass !== bypass) return VIRTIO_IOMMU_S_INVAL;
    const prev = this.endpoints.get(endpoint);
    if (prev === domainId) return VIRTIO_IOMMU_S_OK;
    if (!d && bypass) {
      // a bypass domain: guest RAM one to one through VFIO while an endpoint is attached (QEMU switches the endpoint to system memory)
      const r = this.vfioMap(0, 0, this.guestRamBytes, VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_WRITE);
      if (r !== VIRTIO_IOMMU_S_OK) return r;
    }
    // "the device SHOULD first detach it from that domain and attach it to the one identified by domain"
    if (prev !== undefined) this.virtio_iommu_detach(prev, endpoint);
    // an endpoint whose group left the container joins it again (the domain's mappings are the container's)
    if (this.outOfContainer.has(endpoint) && this.vfioGroupContainer(endpoint, true) === 0) this.outOfContainer.delete(endpoint);
    if (!d) {
      d = { id: domainId, endpoints: new Set(), bypass, mappings: [] };
      this.domains.set(domainId, d);
    }
    d.endpoints.add(endpoint);
    this.endpoints.set(endpoint, domainId);
    let spans = this.attachedNs.get(endpoint);
    if (!spans) this.attachedNs.set(endpoint, (spans = []));
    spans.push({ fromNs: this.clock.nowNs(), toNs: Number.POSITIVE_INFINITY });
    return VIRTIO_IOMMU_S_OK;
  }

  private virtio_iommu_detach(domainId: number, endpoint: number): number {
    if (!this.endpointIds.has(endpoint)) return VIRTIO_IOMMU_S_NOENT;
    const d = this.domains.get(domainId);
    if (!d || this.endpoints.get(endpoint) !== domainId) return VIRTIO_IOMMU_S_INVAL;
    d.endpoints.delete(endpoint);
    this.endpoints.delete(endpoint);
    const spans = this.attachedNs.get(endpoint);
    if (spans) spans[spans.length - 1].toNs = this.clock.nowNs();
    if (d.endpoints.size > 0) {
      // the domain keeps other endpoints, whose mappings stay in the one container: the endpoint's
      // group leaves the container (its DMA then faults), as QEMU's per-endpoint notifier unmaps
      // the domain from the endpoint's own address space
      if (this.vfioGroupContainer(endpoint, false) === 0) this.outOfContainer.add(endpoint);
    }
    if (d.endpoints.size === 0) {
      // the last endpoint leaves: the domain and its mappings go with it
      if (d.bypass) this.vfioUnmap(0, this.guestRamBytes);
      for (const m of d.mappings) if (!(m.flags & VIRTIO_IOMMU_MAP_F_MMIO)) this.vfioUnmap(m.start, m.end - m.start + 1);
      this.domains.delete(domainId);
    }
    return VIRTIO_IOMMU_S_OK;
  }

  private virtio_iommu_map(domainId: number, start: number, end: number, phys: number, flags: number, reqGpa: number): number {
    if (!this.negotiated(VIRTIO_IOMMU_F_MAP_UNMAP)) return VIRTIO_IOMMU_S_UNSUPP;
    // "If the device doesn't recognize a flags bit, it MUST reject the request": MMIO exists only with F_MMIO
    const known = VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_WRITE | (this.negotiated(VIRTIO_IOMMU_F_MMIO) ? VIRTIO_IOMMU_MAP_F_MMIO : 0);
    if (flags & ~known) return VIRTIO_IOMMU_S_INVAL;
    const d = this.domains.get(domainId);
    if (!d) return VIRTIO_IOMMU_S_NOENT;
    if (d.bypass) return VIRTIO_IOMMU_S_INVAL;
    if (start >= TWO_POW_53 || end >= TWO_POW_53 || phys >= TWO_POW_53) return this.mapBeyond53(reqGpa);
    if (end < start) return VIRTIO_IOMMU_S_INVAL;
    if (start < this.inputStart || end > this.inputEnd) return VIRTIO_IOMMU_S_RANGE;
    const g = this.pageGranuleBytes;
    if (start % g !== 0 || phys % g !== 0 || (end + 1) % g !== 0) return VIRTIO_IOMMU_S_RANGE;
    // "The device SHOULD reject a MAP request that overlaps a RESV_MEM region": refused as an existing mapping is
    for (const r of this.resvMem) if (start <= r.end && end >= r.start) return VIRTIO_IOMMU_S_INVAL;
    const i = lowerBound(d.mappings, start);
    if ((i < d.mappings.length && d.mappings[i].start <= end) || (i > 0 && d.mappings[i - 1].end >= start)) return VIRTIO_IOMMU_S_INVAL;
    if (!(flags & VIRTIO_IOMMU_MAP_F_MMIO)) {
      const r = this.vfioMap(start, phys, end - start + 1, flags);
      if (r !== VIRTIO_IOMMU_S_OK) return r;
    }
    d.mappings.splice(i, 0, { start, end, phys, flags });
    return VIRTIO_IOMMU_S_OK;
  }

  /** A MAP with a field at or above 2^53, judged on the exact values: never inside a 48-bit input range. */
  private mapBeyond53(reqGpa: number): number {
    const start = readU64Exact(this.mem, reqGpa + VIRTIO_IOMMU_VIRT_START_OFFSET);
    const end = readU64Exact(this.mem, reqGpa + VIRTIO_IOMMU_VIRT_END_OFFSET);
    const phys = readU64Exact(this.mem, reqGpa + VIRTIO_IOMMU_PHYS_START_OFFSET);
    if (end < start) return VIRTIO_IOMMU_S_INVAL;
    if (start < this.inputRange.start || end > this.inputRange.end) return VIRTIO_IOMMU_S_RANGE;
    const g = BigInt(this.pageGranuleBytes);
    if (start % g !== 0n || phys % g !== 0n || (end + 1n) % g !== 0n) return VIRTIO_IOMMU_S_RANGE;
    // inside the input range with phys_start past guest RAM: no memory to map ("Bad address")
    return VIRTIO_IOMMU_S_FAULT;
  }

  private virtio_iommu_unmap(domainId: number, start: number, end: number, reqGpa: number): number {
    if (!this.negotiated(VIRTIO_IOMMU_F_MAP_UNMAP)) return VIRTIO_IOMMU_S_UNSUPP;
    const d = this.domains.get(domainId);
    if (!d) return VIRTIO_IOMMU_S_NOENT;
    if (d.bypass) return VIRTIO_IOMMU_S_INVAL;
    if (start >= TWO_POW_53 && end >= TWO_POW_53) {
      // both rounded: order them exactly (nothing is mapped up there, so the request unmaps nothing)
      const s = readU64Exact(this.mem, reqGpa + VIRTIO_IOMMU_VIRT_START_OFFSET);
      const e = readU64Exact(this.mem, reqGpa + VIRTIO_IOMMU_VIRT_END_OFFSET);
      return e < s ? VIRTIO_IOMMU_S_INVAL : VIRTIO_IOMMU_S_OK;
    }
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

  /** PROBE: the endpoint's RESV_MEM properties (the MSI window), zero-filled to probe_size. */
  private virtio_iommu_probe(endpoint: number, propertiesGpa: number): number {
    if (!this.endpointIds.has(endpoint)) return VIRTIO_IOMMU_S_NOENT;
    try {
      writeProbeProperties(this.mem, propertiesGpa, this.probeSizeBytes, this.resvMem);
    } catch (e) {
      // "If the properties list is smaller than probe_size, the device SHOULD NOT write any property ... set status to VIRTIO_IOMMU_S_INVAL."
      if (e instanceof RangeError) return VIRTIO_IOMMU_S_INVAL;
      throw e;
    }
    return VIRTIO_IOMMU_S_OK;
  }

  /** VFIO_IOMMU_MAP_DMA for a MAP, its errno as a request status. */
  private vfioMap(iova: number, phys: number, sizeBytes: number, flags: number): number {
    this.clock.charge(this.costs.vfioIoctlSyscallNs);
    this.counters.vfioMapDma++;
    this.profiler.enter();
    const r = this.vfio.mapDma(
      { iova, vaddr: phys, sizeBytes, read: (flags & VIRTIO_IOMMU_MAP_F_READ) !== 0, write: (flags & VIRTIO_IOMMU_MAP_F_WRITE) !== 0 },
      this.clock.nowNs(),
    );
    this.clock.syncTo(r.doneNs);
    this.profiler.exit('vfio_dma_do_map', sizeBytes, false);
    return this.statusOfVfioErrno(r.errno);
  }

  /**
   * What the driver is told when VFIO refuses a map: out of mappings
   * (dma_entry_limit, -ENOSPC) or of locked memory (RLIMIT_MEMLOCK, -ENOMEM)
   * is NOMEM ("Insufficient resources"), a phys_start the VMM cannot pin
   * (-EFAULT) is FAULT ("Bad address"), a clash VFIO sees (-EEXIST, -EINVAL)
   * is INVAL, anything else DEVERR.
   */
  private statusOfVfioErrno(errno: number): number {
    switch (errno) {
      case 0:
        return VIRTIO_IOMMU_S_OK;
      case ENOMEM:
      case ENOSPC:
        this.counters.vfioNoResources++;
        return VIRTIO_IOMMU_S_NOMEM;
      case EFAULT:
        return VIRTIO_IOMMU_S_FAULT;
      case EEXIST:
      case EINVAL:
        return VIRTIO_IOMMU_S_INVAL;
      default:
        return VIRTIO_IOMMU_S_DEVERR;
    }
  }

  /** VFIO_GROUP_SET_CONTAINER / UNSET_CONTAINER for the endpoint's group; -1 when the port cannot move groups. */
  private vfioGroupContainer(endpoint: number, set: boolean): number {
    if (!this.vfio.groupSetContainer) return -1;
    this.clock.charge(this.costs.vfioIoctlSyscallNs);
    const r = this.vfio.groupSetContainer(endpoint, set, this.clock.nowNs());
    this.clock.syncTo(r.doneNs);
    return r.errno;
  }

  private vfioUnmap(iova: number, sizeBytes: number): number {
    this.clock.charge(this.costs.vfioIoctlSyscallNs);
    this.counters.vfioUnmapDma++;
    this.profiler.enter();
    const r = this.vfio.unmapDma({ iova, sizeBytes }, this.clock.nowNs());
    this.clock.syncTo(r.doneNs);
    this.profiler.exit('vfio_dma_do_unmap', sizeBytes, false);
    return r.errno;
  }

  /**
   * virtio_iommu_report_fault: write `f` into the next buffer the driver
   * posted on the event queue and return it used. Returns false, counting a
   * drop, when no buffer is posted; a buffer too small for the report is
   * returned unwritten (a report is never split over buffers).
   */
  virtio_iommu_report_fault(f: ViommuFaultReport): boolean {
    const r = this.reportInto(f);
    if (r === 'no-buffer') this.faultCounters.dropped++;
    return r === 'written';
  }

  /** The report into the next posted buffer: written, none posted, or a buffer too small (returned unwritten, counted dropped). */
  private reportInto(f: ViommuFaultReport): 'written' | 'no-buffer' | 'bad-buffer' {
    const chain = this.evq ? this.evq.popAvail() : null;
    if (!chain) return 'no-buffer';
    const seg = chain.in[0];
    if (chain.out.length > 0 || chain.in.length !== 1 || seg.lenBytes < VIRTIO_IOMMU_FAULT_BYTES) {
      this.evq!.pushUsed(chain.head, 0);
      this.faultCounters.dropped++;
      return 'bad-buffer';
    }
    writeFault(this.mem, seg.gpa, f);
    this.evq!.pushUsed(chain.head, VIRTIO_IOMMU_FAULT_BYTES);
    this.faultCounters.reported++;
    return 'written';
  }

  /** The report of a host fault record: its reason as the device saw the endpoint at the fault's time, its flags. */
  faultReportOf(h: HostIommuFault): ViommuFaultReport {
    const access = h.perm & IOMMU_PGFAULT_PERM_WRITE ? VIRTIO_IOMMU_FAULT_F_WRITE : VIRTIO_IOMMU_FAULT_F_READ;
    let reason = VIRTIO_IOMMU_FAULT_R_MAPPING;
    if (!this.endpointIds.has(h.devId)) reason = VIRTIO_IOMMU_FAULT_R_UNKNOWN;
    else if (!(this.attachedNs.get(h.devId) ?? []).some((s) => h.timeNs >= s.fromNs && h.timeNs < s.toNs)) reason = VIRTIO_IOMMU_FAULT_R_DOMAIN;
    return { reason, flags: VIRTIO_IOMMU_FAULT_F_ADDRESS | access, endpoint: h.devId, address: h.addr, timeNs: h.timeNs };
  }

  /**
   * At VM teardown: read every record of the host's fault queue and report
   * each, in the order the host queued them. Nothing when the device does not
   * report faults, the host offers no queue, or the driver never negotiated
   * features (no virtio-iommu driver: nobody posted event buffers).
   */
  reportHostFaults(drain?: () => void): number {
    if (!this.reportFaults || !this.vfio.readFault) return 0;
    if (this.configGpa !== null && readNegotiatedFeatures(this.mem, this.configGpa) === null) return 0;
    let n = 0;
    let sinceDrain = 0;
    for (;;) {
      const r = this.vfio.readFault(this.clock.nowNs());
      if (!r.fault) return n;
      this.faultCounters.read++;
      n++;
      const report = this.faultReportOf(r.fault);
      let done = this.reportInto(report);
      if (done === 'no-buffer' && drain && sinceDrain > 0) {
        // the driver handles the reports it has (its event interrupt) and posts their buffers again
        drain();
        sinceDrain = 0;
        done = this.reportInto(report);
      }
      if (done === 'no-buffer') this.faultCounters.dropped++;
      if (done === 'written') sinceDrain++;
    }
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
