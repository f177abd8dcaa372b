/**
 * The guest's virtio-iommu driver (Linux drivers/iommu/virtio-iommu.c).
 *
 * Requests go into the request virtqueue in guest RAM under
 * `viommu->request_lock`, a spinlock taken with interrupts off and held while
 * the driver busy-polls for the device's answer (`__viommu_sync_req`): the
 * guest's big lock. Two driver generations:
 * - `v5.10` (the reference period, Linux 5.8–5.15): `viommu_map` sends each
 *   MAP and waits for it (`viommu_send_req_sync`); `viommu_unmap` only queues
 *   the UNMAP (`viommu_add_req`) and `viommu_iotlb_sync` kicks and waits.
 * - `v6.x` (batched, Linux 6.2+ with `iotlb_sync_map`): MAPs are queued and
 *   flushed once by `viommu_iotlb_sync_map`.
 * A full queue is synced and the add retried, as `viommu_add_req` does.
 *
 * dma-iommu reaches it through `IommuDomainOps` (`viommu_domain_ops`): each
 * entry calls the `viommu_*` function of the same name; the IOTLB gather is
 * not used (an UNMAP is a queued request, sent by the next sync).
 *
 * Probe (`viommu_probe`, vCPU 0, once the VMM is up): reads the features
 * the device offers from its configuration page, accepts those the Linux
 * driver knows (MAP_UNMAP, INPUT_RANGE, DOMAIN_RANGE, PROBE, MMIO,
 * BYPASS_CONFIG), refuses a device without MAP_UNMAP or without a page
 * size, and reads page_size_mask, input_range (the domain aperture),
 * domain_range and probe_size. `viommu_probe_endpoint` then sends a PROBE
 * per endpoint before it is attached and returns the RESV_MEM regions,
 * which dma-iommu keeps out of the IOVA allocator.
 *
 * Event queue (vCPU 0, with `eventQueue`): `viommu_fill_evtq` posts one
 * 24-byte buffer per queue entry at probe; `viommu_event_handler` takes every
 * used buffer, hands each well-formed report to `viommu_fault_handler` and
 * posts the buffer again. Linux logs each fault ("%s fault from EP %u at
 * %#llx [%s%s%s]", ratelimited); the model counts them by reason and flags
 * and keeps the first few reports. The handler runs at teardown, whenever a
 * VMM thread reporting the host's faults has used every buffer, and once the
 * threads are done (see the VMM's device). No cost is charged for either: no
 * sourced figure.
 */

import {
  type Gpa,
  type GuestMemory,
  type Iova,
  type LockTable,
  type ModelClock,
  type Mutex,
  readDeviceFeatures,
  readFault,
  readProbeProperties,
  readTail,
  readViommuConfig,
  requestSizeBytes,
  statusName,
  VIRTIO_IOMMU_F_BYPASS_CONFIG,
  VIRTIO_IOMMU_F_DOMAIN_RANGE,
  VIRTIO_IOMMU_F_INPUT_RANGE,
  VIRTIO_IOMMU_F_MAP_UNMAP,
  VIRTIO_IOMMU_F_MMIO,
  VIRTIO_IOMMU_F_PROBE,
  VIRTIO_IOMMU_FAULT_BYTES,
  VIRTIO_IOMMU_FAULT_F_ADDRESS,
  VIRTIO_IOMMU_FAULT_F_EXEC,
  VIRTIO_IOMMU_FAULT_F_READ,
  VIRTIO_IOMMU_FAULT_F_WRITE,
  VIRTIO_IOMMU_FAULT_R_DOMAIN,
  VIRTIO_IOMMU_FAULT_R_MAPPING,
  VIRTIO_IOMMU_PROBE_FIXED_BYTES,
  VIRTIO_IOMMU_PROBE_SIZE_BYTES_DEFAULT,
  VIRTIO_IOMMU_S_NOMEM,
  VIRTIO_IOMMU_S_OK,
  VIRTIO_IOMMU_T_ATTACH,
  VIRTIO_IOMMU_T_DETACH,
  VIRTIO_IOMMU_T_MAP,
  VIRTIO_IOMMU_T_PROBE,
  VIRTIO_IOMMU_T_UNMAP,
  type ViommuFault,
  VirtqueueDriver,
  type VirtqueueLayout,
  viommuFeature,
  viommuGetWriteDescOffsetBytes,
  writeAttachRequest,
  writeDetachRequest,
  writeDriverFeatures,
  writeDriverOk,
  writeMapRequest,
  writeProbeRequest,
  writeUnmapRequest,
} from '@vmstack/shm';
import { type IommuDomainOps, type IommuIotlbGather, IommuMapNoMemError } from '../iommu/domain-ops.js';
import type { Profiler } from '../profile.js';

export const VIOMMU_REQUEST_LOCK = 'viommu->request_lock';
export type ViommuDriverGeneration = 'v5.10' | 'v6.x';
export const VIOMMU_REQUEST_SLOT_BYTES = 640; // PROBE (72 + 512 + 4) is the largest request

export interface ViommuCosts {
  viommuRequestPrepareNs: number;
  vmExitKernelNs: number;
}

/** How the driver reaches the device: a kick that returns when the used ring has been updated. */
export interface ViommuTransport {
  /** notify the device at `nowNs`; returns the model time the answers are visible */
  kick(nowNs: number): number;
}

/** The feature bits the driver knows (Linux's virtio-iommu feature table). */
export const VIOMMU_DRIVER_FEATURES =
  viommuFeature(VIRTIO_IOMMU_F_MAP_UNMAP) |
  viommuFeature(VIRTIO_IOMMU_F_INPUT_RANGE) |
  viommuFeature(VIRTIO_IOMMU_F_DOMAIN_RANGE) |
  viommuFeature(VIRTIO_IOMMU_F_PROBE) |
  viommuFeature(VIRTIO_IOMMU_F_MMIO) |
  viommuFeature(VIRTIO_IOMMU_F_BYPASS_CONFIG);

/** What `viommu_probe` learnt of the device. */
export interface ViommuProbed {
  /** the negotiated features */
  features: number;
  pageSizeMask: bigint;
  /** the domain aperture: input_range if negotiated, else the whole 64-bit space */
  aperture: { start: bigint; end: bigint };
  /** the domain ids the driver may use */
  domains: { first: number; last: number };
  /** bytes of PROBE properties; 0 without F_PROBE */
  probeSizeBytes: number;
  /** VIRTIO_IOMMU_MAP_F_* the driver may use */
  mapFlags: number;
}

/** A RESV_MEM region a PROBE reported, inclusive. */
export interface ViommuResvRegion {
  subtype: number;
  start: number;
  end: number;
}

export interface ViommuCounters {
  map: number;
  unmap: number;
  attach: number;
  detach: number;
  probe: number;
  kicks: number;
}

/** The event queue in guest RAM: the virtqueue and its buffers (one struct virtio_iommu_fault per entry). */
export interface ViommuEventQueue {
  layout: VirtqueueLayout;
  buffersGpa: number;
}

/** Bytes of guest RAM an event queue of `entries` takes: the virtqueue, then one report buffer per entry. */
export function viommuEventQueueBytes(layout: VirtqueueLayout): number {
  return Math.ceil(layout.totalBytes / 8) * 8 + layout.queueSizeEntries * VIRTIO_IOMMU_FAULT_BYTES;
}

/** Reports the driver keeps, in the order it read them (Linux logs them, ratelimited). */
export const VIOMMU_FAULT_REPORTS_KEPT = 8;

/** What viommu_event_handler / viommu_fault_handler saw. */
export interface ViommuFaultStats {
  /** event buffers posted at probe */
  buffersPosted: number;
  /** reports read */
  faults: number;
  byReason: { unknown: number; domain: number; mapping: number };
  byFlags: { read: number; write: number; exec: number; address: number };
  /** buffers used with a bad length, or a report with a reserved byte set: ignored */
  ignored: number;
  /** the first VIOMMU_FAULT_REPORTS_KEPT reports */
  first: ViommuFault[];
}

export function emptyViommuFaultStats(): ViommuFaultStats {
  return {
    buffersPosted: 0,
    faults: 0,
    byReason: { unknown: 0, domain: 0, mapping: 0 },
    byFlags: { read: 0, write: 0, exec: 0, address: 0 },
    ignored: 0,
    first: [],
  };
}

export class ViommuDriver implements IommuDomainOps {
  private vqDriver: VirtqueueDriver | null;
  private readonly lock: Mutex;
  /** shared, in guest RAM: the next request slot (under request_lock) */
  private readonly slotWord: Int32Array;
  private readonly maxReqs: number;
  readonly counters: ViommuCounters = { map: 0, unmap: 0, attach: 0, detach: 0, probe: 0, kicks: 0 };
  private queuedFailures: string[] = [];
  private queuedNoMem = false;
  /** what the probe learnt; null until `viommu_probe` (or without a configuration page) */
  probed: ViommuProbed | null = null;
  /** the event queue's driver (vCPU 0 once probed) */
  private evq: VirtqueueDriver | null = null;
  readonly faultStats: ViommuFaultStats = emptyViommuFaultStats();

  constructor(
    private readonly mem: GuestMemory,
    private readonly layout: VirtqueueLayout,
    init: boolean,
    private readonly requestAreaGpa: number,
    slotWordGpa: number,
    locks: LockTable,
    private readonly transport: ViommuTransport,
    private readonly clock: ModelClock,
    private readonly costs: ViommuCosts,
    readonly generation: ViommuDriverGeneration,
    private readonly profiler: Profiler,
    /** this virtio-iommu's request lock in `locks` (a VM with several virtio-iommus has one each) */
    requestLockName = VIOMMU_REQUEST_LOCK,
    /** the device's configuration page in guest RAM; null: no negotiation (the device's defaults hold) */
    private readonly configGpa: number | null = null,
    /** the event queue (vCPU 0 fills it at probe); null: none */
    private readonly eventQueue: ViommuEventQueue | null = null,
  ) {
    // vCPU 0 probes the device and sets the queue up; the others join it on first use
    this.vqDriver = init ? VirtqueueDriver.init(mem, layout) : null;
    this.lock = locks.get(requestLockName);
    this.slotWord = new Int32Array(mem.u8.buffer as SharedArrayBuffer, slotWordGpa, 1);
    this.maxReqs = layout.queueSizeEntries >> 1;
  }

  private get vq(): VirtqueueDriver {
    return (this.vqDriver ??= new VirtqueueDriver(this.mem, this.layout));
  }

  /** viommu_add_req: caller holds request_lock. */
  private addReq(type: number, write: (gpa: number) => void, probeSizeBytes = VIRTIO_IOMMU_PROBE_SIZE_BYTES_DEFAULT): void {
    this.clock.charge(this.costs.viommuRequestPrepareNs);
    if (this.vq.numFree < 2) this.syncLocked();
    const slot = this.slotWord[0] % this.maxReqs;
    this.slotWord[0] = (this.slotWord[0] + 1) % this.maxReqs;
    const gpa = this.requestAreaGpa + slot * VIOMMU_REQUEST_SLOT_BYTES;
    write(gpa);
    const outLen = viommuGetWriteDescOffsetBytes(type, probeSizeBytes);
    const total = requestSizeBytes(type, probeSizeBytes);
    const out = this.reqOut[0];
    out.gpa = gpa;
    out.lenBytes = outLen;
    const inn = this.reqIn[0];
    inn.gpa = gpa + outLen;
    inn.lenBytes = total - outLen;
    if (!this.vq.addBuf(this.reqOut, this.reqIn, slot)) throw new Error('virtio-iommu: request queue full after a sync');
  }

  /** the request's device-readable and device-writable segments (addBuf copies them into descriptors: one pair, reused) */
  private readonly reqOut = [{ gpa: 0, lenBytes: 0 }];
  private readonly reqIn = [{ gpa: 0, lenBytes: 0 }];

  /** __viommu_sync_req: kick, busy-poll until the device has used every request. Caller holds request_lock. */
  private syncLocked(): void {
    this.profiler.enter();
    this.vq.publish();
    this.clock.charge(this.costs.vmExitKernelNs); // the notify write exits to KVM (ioeventfd)
    this.counters.kicks++;
    const doneNs = this.transport.kick(this.clock.nowNs());
    this.clock.syncTo(doneNs); // busy-polling the used ring meanwhile
    for (;;) {
      const used = this.vq.getBuf();
      if (!used) break;
      const gpa = this.requestAreaGpa + used.token * VIOMMU_REQUEST_SLOT_BYTES;
      const type = this.mem.u8[gpa];
      const tailGpa = gpa + requestSizeBytes(type, this.probed?.probeSizeBytes || VIRTIO_IOMMU_PROBE_SIZE_BYTES_DEFAULT) - 4;
      // "When a device uses a buffer without having written to it (i.e. used length is zero), the driver SHOULD interpret it as a request failure."
      if (used.lenBytes === 0) {
        this.queuedFailures.push(`request type ${type}: returned unwritten (used length 0)`);
        continue;
      }
      const status = readTail(this.mem, tailGpa);
      if (status !== VIRTIO_IOMMU_S_OK) this.queuedFailures.push(`request type ${type}: ${statusName(status)}`);
      if (status === VIRTIO_IOMMU_S_NOMEM) this.queuedNoMem = true;
    }
    this.profiler.exit('viommu_sync_req');
  }

  private sendSync(type: number, write: (gpa: number) => void, probeSizeBytes?: number): void {
    this.lock.lock(this.clock);
    try {
      this.addReq(type, write, probeSizeBytes);
      this.syncLocked();
    } finally {
      this.lock.unlock(this.clock);
    }
    this.throwFailures();
  }

  private throwFailures(): void {
    if (this.queuedFailures.length > 0) {
      const f = this.queuedFailures.join('; ');
      const noMem = this.queuedNoMem;
      this.queuedFailures = [];
      this.queuedNoMem = false;
      // viommu_get_req_errno: NOMEM is -ENOMEM, which the caller may retry; anything else is a failure of the model
      if (noMem && f.split('; ').every((x) => x.endsWith(statusName(VIRTIO_IOMMU_S_NOMEM)))) throw new IommuMapNoMemError(`virtio-iommu request failed: ${f}`);
      throw new Error(`virtio-iommu request failed: ${f}`);
    }
  }

  viommu_attach_dev(domain: number, endpoint: number): void {
    // viommu_domain_finalise: ida_alloc_range(first_domain, last_domain) has no id outside domain_range
    if (this.probed && (domain < this.probed.domains.first || domain > this.probed.domains.last))
      throw new Error(`virtio-iommu: domain ${domain} is outside the device's domain_range [${this.probed.domains.first}, ${this.probed.domains.last}]`);
    this.counters.attach++;
    this.sendSync(VIRTIO_IOMMU_T_ATTACH, (gpa) => writeAttachRequest(this.mem, gpa, { domain, endpoint, flags: 0 }));
  }

  viommu_detach_dev(domain: number, endpoint: number): void {
    this.counters.detach++;
    this.sendSync(VIRTIO_IOMMU_T_DETACH, (gpa) => writeDetachRequest(this.mem, gpa, { domain, endpoint }));
  }

  /**
   * viommu_probe: negotiate features through the configuration page and
   * read the configuration (vCPU 0, once the device exists). Throws, as the
   * driver's probe fails, for a device without MAP_UNMAP or page sizes.
   */
  viommu_probe(): ViommuProbed {
    if (this.probed) return this.probed;
    if (this.configGpa === null) throw new Error('virtio-iommu: no configuration page to probe');
    const offered = readDeviceFeatures(this.mem, this.configGpa);
    const features = offered & VIOMMU_DRIVER_FEATURES;
    const has = (bit: number) => (features & viommuFeature(bit)) !== 0;
    // "Drivers verify that devices set VIRTIO_IOMMU_F_MAP_UNMAP and fail gracefully if they don't."
    if (!has(VIRTIO_IOMMU_F_MAP_UNMAP)) throw new Error('virtio-iommu: the device does not offer VIRTIO_IOMMU_F_MAP_UNMAP');
    const cfg = readViommuConfig(this.mem, this.configGpa);
    if (cfg.pageSizeMask === 0n) throw new Error('virtio-iommu: the device presents no page size (page_size_mask 0)');
    writeDriverFeatures(this.mem, this.configGpa, features);
    const probeSizeBytes = has(VIRTIO_IOMMU_F_PROBE) ? cfg.probeSize : 0;
    if (VIRTIO_IOMMU_PROBE_FIXED_BYTES + probeSizeBytes + 4 > VIOMMU_REQUEST_SLOT_BYTES || probeSizeBytes % 8 !== 0)
      throw new Error(`virtio-iommu: probe_size ${probeSizeBytes} does not fit a ${VIOMMU_REQUEST_SLOT_BYTES}-byte request slot`);
    this.probed = {
      features,
      pageSizeMask: cfg.pageSizeMask,
      aperture: has(VIRTIO_IOMMU_F_INPUT_RANGE) ? cfg.inputRange : { start: 0n, end: 2n ** 64n - 1n },
      domains: has(VIRTIO_IOMMU_F_DOMAIN_RANGE) ? { first: cfg.domainRange.start, last: cfg.domainRange.end } : { first: 0, last: 0xffff_ffff },
      probeSizeBytes,
      mapFlags: 1 | 2 | (has(VIRTIO_IOMMU_F_MMIO) ? 4 : 0),
    };
    if (this.vqDriver && this.eventQueue) this.viommu_fill_evtq(this.eventQueue);
    writeDriverOk(this.mem, this.configGpa);
    return this.probed;
  }

  /** viommu_fill_evtq: post one report buffer per entry of the event queue. */
  private viommu_fill_evtq(q: ViommuEventQueue): void {
    const vq = VirtqueueDriver.init(this.mem, q.layout);
    for (let i = 0; i < q.layout.queueSizeEntries; i++) {
      vq.addBuf([], [{ gpa: q.buffersGpa + i * VIRTIO_IOMMU_FAULT_BYTES, lenBytes: VIRTIO_IOMMU_FAULT_BYTES }], i);
    }
    vq.publish();
    this.evq = vq;
    this.faultStats.buffersPosted = q.layout.queueSizeEntries;
  }

  /**
   * viommu_event_handler: every used event buffer; a report of the right
   * length without reserved bytes goes to viommu_fault_handler; the buffer
   * is posted again. Returns the reports read.
   */
  viommu_event_handler(): number {
    const vq = this.evq;
    const q = this.eventQueue;
    if (!vq || !q) return 0;
    let n = 0;
    for (let used = vq.getBuf(); used; used = vq.getBuf()) {
      const gpa = q.buffersGpa + used.token * VIRTIO_IOMMU_FAULT_BYTES;
      const f = used.lenBytes === VIRTIO_IOMMU_FAULT_BYTES ? readFault(this.mem, gpa) : null;
      if (f) {
        this.viommu_fault_handler(f);
        n++;
      } else {
        this.faultStats.ignored++;
      }
      vq.addBuf([], [{ gpa, lenBytes: VIRTIO_IOMMU_FAULT_BYTES }], used.token);
    }
    vq.publish();
    return n;
  }

  /** viommu_fault_handler: Linux logs the report; counted here, the first few kept. */
  private viommu_fault_handler(f: ViommuFault): void {
    const s = this.faultStats;
    s.faults++;
    if (f.reason === VIRTIO_IOMMU_FAULT_R_DOMAIN) s.byReason.domain++;
    else if (f.reason === VIRTIO_IOMMU_FAULT_R_MAPPING) s.byReason.mapping++;
    else s.byReason.unknown++;
    if (f.flags & VIRTIO_IOMMU_FAULT_F_READ) s.byFlags.read++;
    if (f.flags & VIRTIO_IOMMU_FAULT_F_WRITE) s.byFlags.write++;
    if (f.flags & VIRTIO_IOMMU_FAULT_F_EXEC) s.byFlags.exec++;
    if (f.flags & VIRTIO_IOMMU_FAULT_F_ADDRESS) s.byFlags.address++;
    // without F_ADDRESS the address means nothing (Linux then logs no address)
    if (s.first.length < VIOMMU_FAULT_REPORTS_KEPT) s.first.push(f.flags & VIRTIO_IOMMU_FAULT_F_ADDRESS ? f : { ...f, address: 0 });
  }

  /**
   * viommu_probe_endpoint: PROBE the endpoint (only with F_PROBE) and return
   * its RESV_MEM regions (viommu_add_resv_mem), which the caller reserves in
   * the IOVA domain. An unknown subtype counts as RESERVED, as the spec says.
   */
  viommu_probe_endpoint(endpoint: number): ViommuResvRegion[] {
    const probeSize = this.probed ? this.probed.probeSizeBytes : VIRTIO_IOMMU_PROBE_SIZE_BYTES_DEFAULT;
    if (probeSize === 0) return [];
    this.counters.probe++;
    let reqGpa = 0;
    this.sendSync(
      VIRTIO_IOMMU_T_PROBE,
      (gpa) => {
        reqGpa = gpa;
        writeProbeRequest(this.mem, gpa, { endpoint }, probeSize);
      },
      probeSize,
    );
    return readProbeProperties(this.mem, reqGpa + VIRTIO_IOMMU_PROBE_FIXED_BYTES, probeSize).flatMap((p) =>
      p.kind === 'resv-mem' ? [{ subtype: p.subtype, start: p.start, end: p.end }] : [],
    );
  }

  /** viommu_map_pages: one MAP for a physically contiguous run. */
  viommu_map_pages(domain: number, iova: Iova, paddr: Gpa, sizeBytes: number, read: boolean, write: boolean): void {
    this.profiler.enter();
    this.counters.map++;
    const flags = (read ? 1 : 0) | (write ? 2 : 0);
    const fill = (gpa: number) => writeMapRequest(this.mem, gpa, { domain, virtStart: iova, virtEnd: iova + sizeBytes - 1, physStart: paddr, flags });
    try {
      if (this.generation === 'v5.10') {
        this.sendSync(VIRTIO_IOMMU_T_MAP, fill);
      } else {
        this.lock.lock(this.clock);
        try {
          this.addReq(VIRTIO_IOMMU_T_MAP, fill);
        } finally {
          this.lock.unlock(this.clock);
        }
      }
    } finally {
      this.profiler.exit('viommu_map_pages', sizeBytes);
    }
  }

  /** viommu_iotlb_sync_map (batched driver only): flush queued MAPs. */
  viommu_iotlb_sync_map(): void {
    if (this.generation === 'v5.10') return;
    this.viommu_iotlb_sync();
  }

  /** viommu_unmap_pages: queue one UNMAP for the range; the IOTLB sync sends it. */
  viommu_unmap_pages(domain: number, iova: Iova, sizeBytes: number): void {
    this.profiler.enter();
    this.counters.unmap++;
    this.lock.lock(this.clock);
    try {
      this.addReq(VIRTIO_IOMMU_T_UNMAP, (gpa) => writeUnmapRequest(this.mem, gpa, { domain, virtStart: iova, virtEnd: iova + sizeBytes - 1 }));
    } finally {
      this.lock.unlock(this.clock);
    }
    this.profiler.exit('viommu_unmap_pages', sizeBytes);
  }

  /** viommu_iotlb_sync / viommu_flush_iotlb_all: kick and wait for everything queued. */
  viommu_iotlb_sync(): void {
    this.lock.lock(this.clock);
    try {
      this.syncLocked();
    } finally {
      this.lock.unlock(this.clock);
    }
    this.throwFailures();
  }

  // ---- viommu_domain_ops: what dma-iommu calls -------------------------

  map_pages(domain: number, iova: Iova, paddr: Gpa, sizeBytes: number, read: boolean, write: boolean): void {
    this.viommu_map_pages(domain, iova, paddr, sizeBytes, read, write);
  }

  iotlb_sync_map(_domain: number, _iova: Iova, _sizeBytes: number): void {
    this.viommu_iotlb_sync_map();
  }

  unmap_pages(domain: number, iova: Iova, sizeBytes: number, _gather: IommuIotlbGather): void {
    this.viommu_unmap_pages(domain, iova, sizeBytes);
  }

  iotlb_sync(_domain: number, _gather: IommuIotlbGather): void {
    this.viommu_iotlb_sync();
  }

  /** viommu_flush_iotlb_all: the same sync of everything queued. */
  flush_iotlb_all(_domain: number): void {
    this.viommu_iotlb_sync();
  }
}
