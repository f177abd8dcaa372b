/** A complete `vmstack` report for the report tests: a strict run of two jobs on two vCPUs. */

import { lockClassOf, lockClassRows } from '../../src/report/lock-classes.js';
import type { LockStatRow, VmstackReport } from '../../src/report/vmstack-report.js';

/** A lock_stat row: 2 contentions waiting 1 µs in all, `acquisitions` holds of `holdtimeTotalNs` in all. */
export function lockRow(name: string, acquisitions: number, holdtimeTotalNs: number): LockStatRow {
  return {
    name,
    class: lockClassOf(name),
    kind: 'mutex',
    con_bounces: 0,
    contentions: 2,
    waittime_min_ns: 100,
    waittime_max_ns: 900,
    waittime_total_ns: 1000,
    waittime_avg_ns: 500,
    acq_bounces: 1,
    acquisitions,
    holdtime_min_ns: 10,
    holdtime_max_ns: 5000,
    holdtime_total_ns: holdtimeTotalNs,
    holdtime_avg_ns: holdtimeTotalNs / acquisitions,
    real_contentions: 0,
  };
}

/** What runStack reports for a strict run of two jobs that moved 1 MiB. */
export function sampleVmstackReport(): VmstackReport {
  const lockStat = [lockRow('viommu->request_lock', 51, 144_950), lockRow('iommu->lock', 33, 38_800)];
  return {
    strategy: 'strict',
    untrusted: false,
    clock: 'virtual',
    transport: 'workers',
    driver_generation: 'v5.10',
    workers: ['guest-kernel/vcpu0', 'guest-kernel/vcpu1', 'vmm', 'host-vfio', 'nvme-device'].map((role, i) => ({
      role,
      thread_id: i + 1,
      waits: { parks: 10, spins_won: 2, notifies_sent: 7, parked_ns: 1_000_000, run_ns: 5_000_000 },
    })),
    counters: {
      virtio_iommu: { attach: 1, detach: 1, map: 17, unmap: 16, probe: 1, kicks: 33, errors: 0 },
      vfio: { map_dma: 17, unmap_dma: 16, pinned_pages_peak: 24 },
      iotlb: { hits: 37, misses: 21, faults: 0, invalidations: 16, entries: 1 },
      nvme: { commands: 20, faults: 0, interrupts: 20 },
      dma: { map_calls: 16, unmap_calls: 16, bounced_mappings: 0, strict_mappings: 16, per_segment_maps: 0, swiotlb_bounces: 0, map_no_mem: 0 },
      lazy: null,
      bounce: null,
      swiotlb: null,
      copies: { cache_bytes: 0, dram_bytes: 0 },
    },
    lock_stat: lockStat,
    lock_classes: lockClassRows(lockStat),
    profile: {
      nvme_irq: { calls: 16, ns: 118_080, self_ns: 118_080, ns_per_gb: 112_609_863.28, self_ns_per_gb: 112_609_863.28, where: 'guest' },
      iommu_dma_map_page: { calls: 16, ns: 500_000, self_ns: 500_000, ns_per_gb: 476_837_158.2, self_ns_per_gb: 476_837_158.2, where: 'guest' },
      viommu_unmap_pages: { calls: 16, ns: 3_200, self_ns: 3_200, ns_per_gb: 3_051_757.8, self_ns_per_gb: 3_051_757.8, where: 'guest' },
      vfio_pin_pages_remote: { calls: 0, ns: 0, self_ns: 0, ns_per_gb: 0, self_ns_per_gb: 0, where: 'host' },
    },
    verify: { blocks_checked: 256, corrupt: 1, overwritten: 0, never_written: 0 },
    leaks: { iovas: 0, iova_mappings_in_vmm: 1, pinned_pages: 24, locked_vm_pages: 0 },
    model_speed: {
      simulated_ios: 16,
      simulated_ns: 31_000_000,
      run_wall_ms: 808,
      job_loop_wall_ms: 62,
      simulated_ios_per_wall_s: 258,
      sim_time_per_wall_time: 0.5,
    },
    cpu: { busy_ns: [500_000], busy_pct: [50], span_ns: 1_000_000, host_cpu_threads: 8, host_share_pct: 6.25 },
  };
}
