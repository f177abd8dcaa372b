/**
 * The VT-d driver of a kernel running on bare metal (Linux
 * drivers/iommu/intel/iommu.c and dmar.c, 5.11–5.15: the releases where VT-d
 * sits under dma-iommu, second-level translation, queued invalidation): what
 * dma-iommu calls through `IommuDomainOps` when there is no VMM, no
 * virtio-iommu and no VFIO. The kernel writes the domain's page table in the
 * shared page-table pool (`IoPgtable`, the region the device's IOTLB walks)
 * and invalidates the IOTLB through the host IOMMU unit's invalidation queue
 * (the `inval` ring to the device). It is the same hardware work
 * vfio_iommu_type1 does in the host for a VM (`packages/host-vfio`), reached
 * without a VM exit, a VMM or an ioctl.
 *
 * Domain operations (`intel_iommu_ops.default_domain_ops`), named as in the
 * kernel:
 * - `intel_iommu_map_pages` → `intel_iommu_map` → `__domain_mapping`: writes
 *   the leaf PTEs of [iova, iova + size), linking missing tables. No lock:
 *   the kernel installs tables with cmpxchg and the IOVA allocator gives each
 *   CPU disjoint ranges.
 * - `intel_iommu_iotlb_sync_map` → `__mapping_notify_one`: a non-present →
 *   present change needs an IOTLB flush only in caching mode (CM=1, an
 *   emulated VT-d in a VM) and a write-buffer flush only with RWBF; a real
 *   unit has neither, so nothing is done or charged.
 * - `intel_iommu_unmap_pages` → `intel_iommu_unmap` → `domain_unmap`: clears
 *   the PTEs (`dma_pte_clear_range`; emptied tables go to the gather's
 *   freelist, here back to the pool) and, unless the gather is queued for the
 *   flush queue, `iommu_iotlb_gather_add_page`: a range disjoint from what the
 *   gather holds, or of another size, syncs the gather first.
 * - `intel_iommu_tlb_sync` → `iommu_flush_iotlb_psi` → `qi_flush_iotlb`
 *   (page-selective, the gathered range) → `qi_submit_sync`; then the freelist
 *   is freed (`put_pages_list`). The model invalidates exactly the gathered
 *   range (the hardware's address mask rounds it up to a power of two).
 * - `intel_flush_iotlb_all` → `qi_flush_iotlb` (domain-selective) →
 *   `qi_submit_sync`: the lazy flush queue's flush.
 * `qi_submit_sync` takes the unit's `qi->q_lock` (a raw spinlock, IRQs off),
 * queues the invalidation descriptor and a wait descriptor, writes the tail
 * register and polls the wait descriptor's status. The kernel drops the lock
 * between polls, but the hardware completes wait descriptors in queue order,
 * so a CPU that queues behind another still waits for the earlier one: the
 * lock is held here across the whole submit and wait, as host-vfio models it.
 * The invalidation travels to the device as one record on the `inval` ring
 * (the unit's queue, shared by every CPU: a holder of `qi->q_lock` claims
 * the ring's tail before producing), stamped at the submit.
 *
 * Costs (model ns on the calling CPU's clock; the profile keys host-vfio
 * charges for the same VT-d work):
 * | key | charged |
 * |-----|---------|
 * | hostIommuMapPerPageNs   | per page written by `intel_iommu_map_pages` |
 * | hostIommuUnmapPerPageNs | per page cleared by `intel_iommu_unmap_pages` |
 * | hostIotlbFlushNs        | per `qi_submit_sync`, holding `qi->q_lock` |
 * dma-iommu's own per-call work on bare metal is `iommuDmaMapCallBareMetalNs`
 * (`bareMetalDmaCosts`).
 *
 * Not modelled: superpages, device-IOTLB (ATS) invalidation, invalidation
 * queue faults.
 */

import { type IommuProt, IoPgtable, type IoPgtableHandle } from '@vmstack/iommu-hw';
import {
  type AbortFlag,
  type CostProfile,
  encodeIotlbInval,
  type Gpa,
  InputError,
  IOMMU_READ,
  IOMMU_WRITE,
  type Iova,
  type LockKind,
  type LockTable,
  type ModelClock,
  type Mutex,
  PAGE_SIZE_BYTES,
  Ring,
  type RingHandle,
} from '@vmstack/shm';
import type { DmaCosts } from '../dma.js';
import type { Profiler } from '../profile.js';
import { type IommuDomainOps, type IommuIotlbGather, iommu_iotlb_gather_add_range, iommu_iotlb_gather_is_disjoint, iommu_iotlb_sync } from './domain-ops.js';

/**
 * Name of a host IOMMU unit's queued-invalidation lock (`qi->q_lock` of
 * drivers/iommu/intel/dmar.c), the same lock class host-vfio takes.
 */
export const QI_Q_LOCK = 'qi->q_lock';

export interface IntelIommuCosts {
  readonly hostIommuMapPerPageNs: number;
  readonly hostIommuUnmapPerPageNs: number;
  readonly hostIotlbFlushNs: number;
}

const COST_KEYS: readonly (keyof IntelIommuCosts)[] = ['hostIommuMapPerPageNs', 'hostIommuUnmapPerPageNs', 'hostIotlbFlushNs'];

/** What a worker needs to attach the driver (plain data: crosses postMessage). */
export interface IntelIommuInit {
  /** the domain's page table: the shared page-table pool the device walks */
  readonly pgtable: IoPgtableHandle;
  /** the unit's invalidation queue to the device (records `HostToDeviceIotlbInval`) */
  readonly invalRing: RingHandle;
  /** the name of the unit's `qi->q_lock` in the lock table given to `attach` (default `qi->q_lock`) */
  readonly qiLockName?: string;
  /** the VT-d domain id of the device's domain (what `map_pages` and friends are called with) */
  readonly domainId: number;
}

export interface IntelIommuOptions {
  readonly pgtable: IoPgtable;
  readonly inval: Ring;
  /** holds the unit's `qi->q_lock` */
  readonly lockTable: LockTable;
  readonly qiLockName?: string;
  readonly domainId: number;
  /** the CPU's clock: every cost of a call is charged to it */
  readonly clock: ModelClock;
  readonly costs: IntelIommuCosts;
  readonly profiler: Profiler;
  /** spin loads before parking when the `inval` ring is full */
  readonly spinLoads: number;
  /** the run's abort flag, checked while waiting for ring space */
  readonly abort?: AbortFlag;
}

export interface IntelIommuCounters {
  /** intel_iommu_map_pages calls, and the pages they wrote */
  mapCalls: number;
  mappedPages: number;
  /** intel_iommu_unmap_pages calls, and the pages they cleared */
  unmapCalls: number;
  unmappedPages: number;
  /** intel_iommu_tlb_sync calls that invalidated a range (page-selective) */
  iotlbSyncs: number;
  /** intel_flush_iotlb_all calls (domain-selective) */
  flushAll: number;
  /** qi_submit_sync calls: invalidations sent to the device */
  invalidations: number;
}

/** dma-iommu's costs on bare metal: its per-call work without a virtio-iommu driver's mapping tree. */
export function bareMetalDmaCosts(profile: Pick<CostProfile, 'iommuDmaMapCallBareMetalNs' | 'iommuDmaSgPerSegmentNs'>): DmaCosts {
  return { iommuDmaMapCallNs: profile.iommuDmaMapCallBareMetalNs, iommuDmaSgPerSegmentNs: profile.iommuDmaSgPerSegmentNs };
}

export class IntelIommuDriver implements IommuDomainOps {
  readonly counters: IntelIommuCounters = { mapCalls: 0, mappedPages: 0, unmapCalls: 0, unmappedPages: 0, iotlbSyncs: 0, flushAll: 0, invalidations: 0 };
  readonly domainId: number;
  private readonly pgtable: IoPgtable;
  private readonly inval: Ring;
  private readonly qiLock: Mutex;
  private readonly clock: ModelClock;
  private readonly costs: IntelIommuCosts;
  private readonly profiler: Profiler;
  private readonly spinLoads: number;
  private readonly abort: AbortFlag | undefined;

  /** The lock the driver needs in the table it is given (one per host IOMMU unit, shared by every CPU). */
  static lockSpecs(qiLockName = QI_Q_LOCK): { name: string; kind: LockKind }[] {
    return [{ name: qiLockName, kind: 'spinlock' }];
  }

  /**
   * Join the unit from a worker: attach the page table and the `inval` ring
   * from `init`; `lockTable` must hold `IntelIommuDriver.lockSpecs(init.qiLockName)`.
   */
  static attach(
    init: IntelIommuInit,
    env: {
      lockTable: LockTable;
      clock: ModelClock;
      costs: IntelIommuCosts;
      profiler: Profiler;
      spinLoads: number;
      abort?: AbortFlag;
    },
  ): IntelIommuDriver {
    return new IntelIommuDriver({
      pgtable: IoPgtable.attach(init.pgtable),
      inval: Ring.attach(init.invalRing),
      qiLockName: init.qiLockName,
      domainId: init.domainId,
      ...env,
    });
  }

  constructor(opts: IntelIommuOptions) {
    for (const key of COST_KEYS) {
      const v = opts.costs?.[key];
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new InputError(`profile.${key}`, v, 'a finite number of ns ≥ 0');
    }
    if (!Number.isInteger(opts.domainId) || opts.domainId < 0) throw new InputError('domainId', opts.domainId, 'an integer ≥ 0 (the VT-d domain id)');
    this.pgtable = opts.pgtable;
    this.inval = opts.inval;
    this.qiLock = opts.lockTable.get(opts.qiLockName ?? QI_Q_LOCK);
    this.domainId = opts.domainId;
    this.clock = opts.clock;
    this.costs = { ...opts.costs };
    this.profiler = opts.profiler;
    this.spinLoads = opts.spinLoads;
    this.abort = opts.abort;
  }

  // ---- intel_iommu_ops.default_domain_ops -------------------------------

  map_pages(domain: number, iova: Iova, paddr: Gpa, sizeBytes: number, read: boolean, write: boolean): void {
    this.intel_iommu_map_pages(domain, iova, paddr, sizeBytes, read, write);
  }

  iotlb_sync_map(domain: number, _iova: Iova, _sizeBytes: number): void {
    this.checkDomain(domain);
    // __mapping_notify_one on a unit without caching mode or RWBF: nothing to flush
  }

  unmap_pages(domain: number, iova: Iova, sizeBytes: number, gather: IommuIotlbGather): void {
    this.intel_iommu_unmap_pages(domain, iova, sizeBytes, gather);
  }

  iotlb_sync(domain: number, gather: IommuIotlbGather): void {
    this.intel_iommu_tlb_sync(domain, gather);
  }

  flush_iotlb_all(domain: number): void {
    this.intel_flush_iotlb_all(domain);
  }

  // ---- the driver's functions --------------------------------------------

  /** intel_iommu_map_pages → __domain_mapping: write the leaf PTEs of the range. */
  intel_iommu_map_pages(domain: number, iova: Iova, paddr: Gpa, sizeBytes: number, read: boolean, write: boolean): void {
    this.checkDomain(domain);
    const prot = ((read ? IOMMU_READ : 0) | (write ? IOMMU_WRITE : 0)) as IommuProt | 0;
    // intel_iommu_map: "if (!(prot & (DMA_PTE_READ | DMA_PTE_WRITE))) return -EINVAL"
    if (prot === 0) throw new Error(`intel_iommu_map: no READ or WRITE for IOVA 0x${iova.toString(16)}`);
    this.profiler.enter();
    try {
      this.pgtable.map(iova, paddr, sizeBytes, prot, PAGE_SIZE_BYTES, this.clock.nowNs());
    } catch (e) {
      this.profiler.exit(null);
      throw new Error(`intel_iommu_map_pages: ${(e as Error).message}`);
    }
    const pages = sizeBytes / PAGE_SIZE_BYTES;
    this.clock.charge(this.costs.hostIommuMapPerPageNs * pages);
    this.counters.mapCalls++;
    this.counters.mappedPages += pages;
    this.profiler.exit('intel_iommu_map_pages', sizeBytes);
  }

  /** intel_iommu_unmap_pages → domain_unmap: clear the PTEs, gather the range (unless the flush queue will flush). */
  intel_iommu_unmap_pages(domain: number, iova: Iova, sizeBytes: number, gather: IommuIotlbGather): void {
    this.checkDomain(domain);
    this.profiler.enter();
    const cleared = this.pgtable.unmap(iova, sizeBytes, this.clock.nowNs());
    const pages = cleared / PAGE_SIZE_BYTES;
    this.clock.charge(this.costs.hostIommuUnmapPerPageNs * pages);
    this.counters.unmapCalls++;
    this.counters.unmappedPages += pages;
    // __iommu_dma_unmap: WARN_ON(unmapped != size) — a mapping dma-iommu made must be there whole
    if (cleared !== sizeBytes) {
      this.profiler.exit(null);
      throw new Error(`intel_iommu_unmap_pages: cleared ${cleared} of ${sizeBytes} bytes at IOVA 0x${iova.toString(16)}`);
    }
    if (!gather.queued) this.iommu_iotlb_gather_add_page(domain, gather, iova, sizeBytes);
    this.profiler.exit('intel_iommu_unmap_pages', sizeBytes);
  }

  /** iommu_iotlb_gather_add_page: a disjoint range or another size first syncs what the gather holds. */
  private iommu_iotlb_gather_add_page(domain: number, gather: IommuIotlbGather, iova: number, sizeBytes: number): void {
    if ((gather.pgsizeBytes !== 0 && gather.pgsizeBytes !== sizeBytes) || iommu_iotlb_gather_is_disjoint(gather, iova, sizeBytes)) {
      iommu_iotlb_sync(this, domain, gather);
    }
    gather.pgsizeBytes = sizeBytes;
    iommu_iotlb_gather_add_range(gather, iova, sizeBytes);
  }

  /** intel_iommu_tlb_sync: one page-selective invalidation of the gathered range (nothing when the gather is empty). */
  intel_iommu_tlb_sync(domain: number, gather: IommuIotlbGather): void {
    this.checkDomain(domain);
    if (gather.endIova === 0) return;
    this.profiler.enter();
    this.counters.iotlbSyncs++;
    this.qi_flush_iotlb(gather.startIova, gather.endIova - gather.startIova);
    this.profiler.exit('intel_iommu_tlb_sync');
  }

  /** intel_flush_iotlb_all: one domain-selective invalidation. */
  intel_flush_iotlb_all(domain: number): void {
    this.checkDomain(domain);
    this.profiler.enter();
    this.counters.flushAll++;
    this.qi_flush_iotlb(0, 0);
    this.profiler.exit('intel_flush_iotlb_all');
  }

  /** qi_flush_iotlb: an IOTLB invalidation descriptor for [iova, iova + sizeBytes) (sizeBytes 0: the whole domain), submitted and waited for. */
  private qi_flush_iotlb(iova: number, sizeBytes: number): void {
    this.qi_submit_sync(iova, sizeBytes);
  }

  /**
   * qi_submit_sync: under `qi->q_lock`, queue the descriptor and a wait
   * descriptor (the record on the `inval` ring, stamped now), then poll until
   * the hardware has written the wait status: `hostIotlbFlushNs`, lock held.
   */
  private qi_submit_sync(iova: number, sizeBytes: number): void {
    this.profiler.enter();
    this.qiLock.lock(this.clock);
    try {
      const ring = this.inval;
      ring.claimProducer();
      encodeIotlbInval(ring.dv, ring.reserve(this.spinLoads, this.abort), this.clock.nowNs(), iova, sizeBytes);
      ring.publish();
      this.counters.invalidations++;
      this.clock.charge(this.costs.hostIotlbFlushNs);
    } finally {
      this.qiLock.unlock(this.clock);
    }
    this.profiler.exit('qi_submit_sync');
  }

  private checkDomain(domain: number): void {
    if (domain !== this.domainId) throw new Error(`intel-iommu: domain ${domain} is not this driver's domain ${this.domainId}`);
  }
}
