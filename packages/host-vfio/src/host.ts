/**
 * The host kernel side as the VMM sees it: the VFIO container's ioctls on
 * the host's own model clock. `HostVfio` is the callee of the
 * VfioContainerPort in both transports (direct call in one thread; the host
 * worker's RpcServer across threads).
 */

import { IoPgtable } from '@vmstack/iommu-hw';
import {
  decodeMapDmaRequest,
  decodeUnmapDmaRequest,
  encodeFaultReadReply,
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
  type VfioMapDmaArgs,
  type VfioUnmapDmaArgs,
  VmmToHostFaultRead,
  VmmToHostMapDma,
  VmmToHostUnmapDma,
} from '@vmstack/shm';
import type { HostWorkerInit } from './index.js';
import { IommufdFaultQueue } from './iommufd-fault.js';
import { VfioContainer } from './vfio-iommu-type1.js';

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

  /** read() on the fault queue's fd: one record, or null (none queued, or no queue). Charges nothing. */
  readFault(nowNs: number): { fault: HostIommuFault | null; doneNs: number } {
    this.clock.syncTo(nowNs);
    return { fault: this.faultQueue ? this.faultQueue.iommufd_fault_fops_read() : null, doneNs: this.clock.nowNs() };
  }

  private readonly faultReply: VfioReplyRecord = { type: HostToVmmReply, timestampNs: 0, write: () => {} };

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
  return { host: new HostVfio(container, clock, faults), container, clock };
}
