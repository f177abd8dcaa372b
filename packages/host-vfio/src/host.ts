/**
 * The host kernel side as the VMM sees it: the VFIO container's ioctls on
 * the host's own model clock. `HostVfio` is the callee of the
 * VfioContainerPort in both transports (direct call in one thread; the host
 * worker's RpcServer across threads).
 */

import { IommuContextEntry, IoPgtable } from '@vmstack/iommu-hw';
import {
  decodeGroupContainerRequest,
  decodeMapDmaRequest,
  decodeUnmapDmaRequest,
  encodeFaultReadReply,
  encodeGetInfoReply,
  encodeIotlbInval,
  encodeVfioReply,
  type HostIommuFault,
  HostToVmmReply,
  LockTable,
  ModelClock,
  type ProfileEntry,
  Profiler,
  Ring,
  type RpcRequestView,
  RpcServer,
  RunControl,
  type VfioContainerPort,
  type VfioIommuInfo,
  type VfioMapDmaArgs,
  type VfioUnmapDmaArgs,
  VmmToHostFaultRead,
  VmmToHostGetInfo,
  VmmToHostGroupContainer,
  VmmToHostMapDma,
  VmmToHostUnmapDma,
} from '@vmstack/shm';
import type { HostWorkerInit } from './index.js';
import { IommufdFaultQueue } from './iommufd-fault.js';
import { decodeVfioIommuType1Info, VfioContainer } from './vfio-iommu-type1.js';

/** A VFIO group of the container: its device's context entry and how to flush the device's IOTLB. */
export interface VfioGroup {
  context: IommuContextEntry;
  invalidateIotlb: () => void;
}

/** What `HostVfio.serve` returns for RpcServer: the reply's type, time and payload writer. */
export interface VfioReplyRecord {
  type: number;
  timestampNs: number;
  write: (dv: DataView, p: number) => void;
}

export class HostVfio implements VfioContainerPort {
  /** per kernel function: calls, model ns, bytes (the run's per-function profile) */
  readonly profiler: Profiler;

  constructor(
    readonly container: VfioContainer,
    readonly clock: ModelClock,
    /** the fault queue the VMM reads (null: it allocated none) */
    readonly faultQueue: IommufdFaultQueue | null = null,
    /** the VFIO groups in the container, by their device's endpoint id */
    private readonly groups: ReadonlyMap<number, VfioGroup> = new Map(),
  ) {
    this.profiler = new Profiler(clock);
  }

  get profile(): Record<string, ProfileEntry> {
    return this.profiler.toJSON();
  }

  mapDma(args: VfioMapDmaArgs, nowNs: number): { errno: number; doneNs: number } {
    this.clock.syncTo(nowNs);
    this.profiler.enter();
    const r = this.container.vfio_dma_do_map(args, this.clock);
    this.profiler.exit('vfio_dma_do_map', args.sizeBytes);
    return { errno: r.errno, doneNs: this.clock.nowNs() };
  }

  unmapDma(args: VfioUnmapDmaArgs, nowNs: number): { errno: number; unmappedBytes: number; doneNs: number } {
    this.clock.syncTo(nowNs);
    this.profiler.enter();
    const r = this.container.vfio_dma_do_unmap(args, this.clock);
    this.profiler.exit('vfio_dma_do_unmap', r.unmappedBytes);
    return { errno: r.errno, unmappedBytes: r.unmappedBytes, doneNs: this.clock.nowNs() };
  }

  /**
   * VFIO_IOMMU_GET_INFO as a VMM makes it: the struct and its capability
   * chain in a buffer large enough (argsz 256), decoded as QEMU's
   * vfio_get_iommu_info does. Charges nothing beyond the ioctl's own work.
   */
  getInfo(nowNs: number): VfioIommuInfo & { doneNs: number } {
    this.clock.syncTo(nowNs);
    const arg = new DataView(new ArrayBuffer(256));
    arg.setUint32(0, arg.byteLength, true);
    const { errno } = this.container.vfio_iommu_type1_get_info(arg, this.clock);
    const i = decodeVfioIommuType1Info(arg);
    const ranges = i.iovaRanges && i.iovaRanges.length > 0 ? i.iovaRanges : null;
    return {
      errno,
      iovaPgsizes: errno === 0 ? i.iovaPgsizes : 0n,
      iovaRanges: errno === 0 && ranges ? { count: ranges.length, start: Number(ranges[0].start), end: Number(ranges[ranges.length - 1].end) } : null,
      dmaAvail: errno === 0 ? i.dmaAvail : null,
      doneNs: this.clock.nowNs(),
    };
  }

  /**
   * VFIO_GROUP_SET_CONTAINER / VFIO_GROUP_UNSET_CONTAINER on the group of the
   * device `endpoint`: unset, the group leaves the container's IOMMU domain and
   * its device's context entry is cleared (every DMA of it faults); set, it
   * joins again. Either way the device's IOTLB is flushed. -EINVAL for a group
   * the container does not have, or one already in (out of) the container.
   * Charges nothing: no sourced figure for the kernel's work.
   */
  groupSetContainer(endpoint: number, set: boolean, nowNs: number): { errno: number; doneNs: number } {
    this.clock.syncTo(nowNs);
    const g = this.groups.get(endpoint);
    if (!g || g.context.present === set) return { errno: -22, doneNs: this.clock.nowNs() };
    g.context.set(set);
    g.invalidateIotlb();
    return { errno: 0, doneNs: this.clock.nowNs() };
  }

  /** read() on the fault queue's fd: one record, or null (none queued, or no queue). Charges nothing. */
  readFault(nowNs: number): { fault: HostIommuFault | null; doneNs: number } {
    this.clock.syncTo(nowNs);
    return { fault: this.faultQueue ? this.faultQueue.iommufd_fault_fops_read() : null, doneNs: this.clock.nowNs() };
  }

  private readonly faultReply: VfioReplyRecord = { type: HostToVmmReply, timestampNs: 0, write: () => {} };
  private readonly infoReply: VfioReplyRecord = { type: HostToVmmReply, timestampNs: 0, write: () => {} };

  // serve() decodes into these and answers through one reply record: nothing is allocated per request
  private readonly mapArgs: VfioMapDmaArgs = { iova: 0, vaddr: 0, sizeBytes: 0, read: false, write: false };
  private readonly unmapArgs: VfioUnmapDmaArgs = { iova: 0, sizeBytes: 0 };
  private replyErrno = 0;
  private replyUnmappedBytes = 0;
  private readonly reply: VfioReplyRecord = {
    type: HostToVmmReply,
    timestampNs: 0,
    write: (dv, p) => encodeVfioReply(dv, p, this.replyErrno, this.replyUnmappedBytes),
  };

  /** Decode one ring request, call the container, describe the reply. */
  serve(req: RpcRequestView): VfioReplyRecord {
    let errno = -22;
    let unmappedBytes = 0;
    let doneNs = req.timestampNs;
    if (req.type === VmmToHostGetInfo) {
      const r = this.getInfo(req.timestampNs);
      this.infoReply.timestampNs = r.doneNs;
      this.infoReply.write = (dv, p) => encodeGetInfoReply(dv, p, r);
      return this.infoReply;
    }
    if (req.type === VmmToHostGroupContainer) {
      const a = decodeGroupContainerRequest(req.dv, req.payloadOffset);
      const r = this.groupSetContainer(a.endpoint, a.set, req.timestampNs);
      this.replyErrno = r.errno;
      this.replyUnmappedBytes = 0;
      this.reply.timestampNs = r.doneNs;
      return this.reply;
    }
    if (req.type === VmmToHostFaultRead) {
      const r = this.readFault(req.timestampNs);
      this.faultReply.timestampNs = r.doneNs;
      this.faultReply.write = (dv, p) => encodeFaultReadReply(dv, p, r.fault);
      return this.faultReply;
    }
    if (req.type === VmmToHostMapDma) {
      const r = this.mapDma(decodeMapDmaRequest(req.dv, req.payloadOffset, this.mapArgs), req.timestampNs);
      errno = r.errno;
      doneNs = r.doneNs;
    } else if (req.type === VmmToHostUnmapDma) {
      const r = this.unmapDma(decodeUnmapDmaRequest(req.dv, req.payloadOffset, this.unmapArgs), req.timestampNs);
      errno = r.errno;
      unmappedBytes = r.unmappedBytes;
      doneNs = r.doneNs;
    }
    this.replyErrno = errno;
    this.replyUnmappedBytes = unmappedBytes;
    this.reply.timestampNs = doneNs;
    return this.reply;
  }
}

export { RpcServer, RunControl };

/**
 * The host kernel of one run: this thread's view of the shared container,
 * over the shared host page tables, sending IOTLB invalidations to the
 * device through their ring. Used by the host worker and by the one-thread
 * stack alike.
 */
export function createHost(init: HostWorkerInit, self: number, control: RunControl): { host: HostVfio; container: VfioContainer; clock: ModelClock } {
  const clock = new ModelClock(init.clockMode, init.dilation, init.epochMs);
  const locks = LockTable.attach(init.locks, self, control, init.spinLoads);
  const invals = init.invalRings.map((h) => Ring.attach(h));
  const container = VfioContainer.attach(init.container, {
    pgtable: IoPgtable.attach(init.pgtable),
    lockTable: locks,
    lockName: init.containerLockName,
    qiLockName: init.qiLockName,
    mmapLockName: init.mmapLockName,
    costs: init.costs,
    // the container's one host domain translates for all its drives: each drops its cached translations
    invalidateIotlb: (iova: number, sizeBytes: number) => {
      for (const inval of invals) {
        encodeIotlbInval(inval.dv, inval.reserve(init.spinLoads, control), clock.nowNs(), iova, sizeBytes);
        inval.publish();
      }
    },
  });
  control.publishEot(self, Number.MAX_SAFE_INTEGER); // reactive
  const faults = init.faultLogs ? new IommufdFaultQueue(init.faultLogs) : null;
  const groups = new Map(
    (init.groups ?? []).map((g) => {
      const inval = invals[g.invalRing];
      const invalidateIotlb = () => {
        encodeIotlbInval(inval.dv, inval.reserve(init.spinLoads, control), clock.nowNs(), 0, 0);
        inval.publish();
      };
      return [g.endpointId, { context: new IommuContextEntry(g.context), invalidateIotlb }] as const;
    }),
  );
  return { host: new HostVfio(container, clock, faults, groups), container, clock };
}
