/**
 * The host kernel side as the VMM sees it: the VFIO container's ioctls on
 * the host's own model clock. `HostVfio` is the callee of the
 * VfioContainerPort in both transports (direct call in one thread; the host
 * worker's RpcServer across threads).
 */

import { ModelClock, RunControl, RpcClient, RpcServer, LockTable, Ring, RECORD, type AbortFlag, type RpcChannelHandles, type RpcRequestView } from '@vmstack/shm';
import { IoPgtable } from './io-pgtable.js';
import type { HostWorkerInit } from './index.js';
import { VfioContainer } from './vfio-iommu-type1.js';
import {
  HostToVmmReply,
  HostToDeviceIotlbInval,
  IotlbInvalPayload,
  MapDmaPayload,
  ReplyPayload,
  UnmapDmaPayload,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
  VmmToHostMapDma,
  VmmToHostUnmapDma,
  type VfioContainerPort,
} from './messages.js';

export class HostVfio implements VfioContainerPort {
  /** per kernel function: calls, model ns, bytes (the run's per-function profile) */
  readonly profile: Record<string, { calls: number; ns: number; selfNs: number; bytes: number }> = {};

  private account(fn: string, startNs: number, bytes: number): void {
    const e = (this.profile[fn] ??= { calls: 0, ns: 0, selfNs: 0, bytes: 0 });
    e.calls++;
    e.ns += this.clock.nowNs() - startNs;
    e.selfNs += this.clock.nowNs() - startNs;
    e.bytes += bytes;
  }

  constructor(
    readonly container: VfioContainer,
    readonly clock: ModelClock,
  ) {}

  mapDma(args: { iova: number; vaddr: number; sizeBytes: number; read: boolean; write: boolean }, nowNs: number): { errno: number; doneNs: number } {
    this.clock.syncTo(nowNs);
    const start = this.clock.nowNs();
    const r = this.container.vfio_dma_do_map(args, this.clock);
    this.account('vfio_dma_do_map', start, args.sizeBytes);
    return { errno: r.errno, doneNs: this.clock.nowNs() };
  }

  unmapDma(args: { iova: number; sizeBytes: number }, nowNs: number): { errno: number; unmappedBytes: number; doneNs: number } {
    this.clock.syncTo(nowNs);
    const start = this.clock.nowNs();
    const r = this.container.vfio_dma_do_unmap(args, this.clock);
    this.account('vfio_dma_do_unmap', start, r.unmappedBytes);
    return { errno: r.errno, unmappedBytes: r.unmappedBytes, doneNs: this.clock.nowNs() };
  }

  /** Decode one ring request, call the container, describe the reply. */
  serve(req: RpcRequestView): { type: number; timestampNs: number; write: (dv: DataView, off: number) => void } {
    const dv = req.dv;
    const p = req.payloadOffset;
    let errno = -22;
    let unmappedBytes = 0;
    let doneNs = req.timestampNs;
    if (req.type === VmmToHostMapDma) {
      const flags = dv.getInt32(p + MapDmaPayload.flags, true);
      const r = this.mapDma(
        {
          iova: dv.getFloat64(p + MapDmaPayload.iova, true),
          vaddr: dv.getFloat64(p + MapDmaPayload.vaddr, true),
          sizeBytes: dv.getFloat64(p + MapDmaPayload.sizeBytes, true),
          read: (flags & VFIO_DMA_MAP_FLAG_READ) !== 0,
          write: (flags & VFIO_DMA_MAP_FLAG_WRITE) !== 0,
        },
        req.timestampNs,
      );
      errno = r.errno;
      doneNs = r.doneNs;
    } else if (req.type === VmmToHostUnmapDma) {
      const r = this.unmapDma({ iova: dv.getFloat64(p + UnmapDmaPayload.iova, true), sizeBytes: dv.getFloat64(p + UnmapDmaPayload.sizeBytes, true) }, req.timestampNs);
      errno = r.errno;
      unmappedBytes = r.unmappedBytes;
      doneNs = r.doneNs;
    }
    return {
      type: HostToVmmReply,
      timestampNs: doneNs,
      write: (odv, off) => {
        odv.setInt32(off + ReplyPayload.errno, errno, true);
        odv.setFloat64(off + ReplyPayload.unmappedBytes, unmappedBytes, true);
      },
    };
  }
}

/** The VMM's end of the port when the host runs in its own worker. */
export class VfioRpcPort implements VfioContainerPort {
  readonly client: RpcClient;

  constructor(handles: RpcChannelHandles, abort: AbortFlag, spinLoads: number) {
    this.client = new RpcClient(handles, abort, spinLoads);
  }

  mapDma(args: { iova: number; vaddr: number; sizeBytes: number; read: boolean; write: boolean }, nowNs: number): { errno: number; doneNs: number } {
    return this.client.call(
      VmmToHostMapDma,
      nowNs,
      (dv, p) => {
        dv.setFloat64(p + MapDmaPayload.iova, args.iova, true);
        dv.setFloat64(p + MapDmaPayload.vaddr, args.vaddr, true);
        dv.setFloat64(p + MapDmaPayload.sizeBytes, args.sizeBytes, true);
        dv.setInt32(p + MapDmaPayload.flags, (args.read ? VFIO_DMA_MAP_FLAG_READ : 0) | (args.write ? VFIO_DMA_MAP_FLAG_WRITE : 0), true);
      },
      (dv, p, ts) => ({ errno: dv.getInt32(p + ReplyPayload.errno, true), doneNs: ts }),
    );
  }

  unmapDma(args: { iova: number; sizeBytes: number }, nowNs: number): { errno: number; unmappedBytes: number; doneNs: number } {
    return this.client.call(
      VmmToHostUnmapDma,
      nowNs,
      (dv, p) => {
        dv.setFloat64(p + UnmapDmaPayload.iova, args.iova, true);
        dv.setFloat64(p + UnmapDmaPayload.sizeBytes, args.sizeBytes, true);
      },
      (dv, p, ts) => ({ errno: dv.getInt32(p + ReplyPayload.errno, true), unmappedBytes: dv.getFloat64(p + ReplyPayload.unmappedBytes, true), doneNs: ts }),
    );
  }
}

export { RpcServer, RunControl };


/**
 * The host kernel of one run: the container over the shared host page tables,
 * sending IOTLB invalidations to the device through their ring. Used by the
 * host worker and by the one-thread stack alike.
 */
export function createHost(init: HostWorkerInit, self: number, control: RunControl): { host: HostVfio; container: VfioContainer; clock: ModelClock } {
  const clock = new ModelClock(init.clockMode, init.dilation, init.epochMs);
  const locks = LockTable.attach(init.locks, self, control, init.spinLoads);
  const inval = Ring.attach(init.invalRing);
  const container = new VfioContainer({
    pgtable: IoPgtable.attach(init.pgtable),
    lockTable: locks,
    costs: init.costs,
    lockedVmLimitPages: init.lockedVmLimitPages,
    dmaEntryLimit: init.dmaEntryLimit,
    invalidateIotlb: (iova: number, sizeBytes: number) => {
      const off = inval.reserve(init.spinLoads, control);
      inval.writeHeader(off, HostToDeviceIotlbInval, 0, clock.nowNs());
      inval.dv.setFloat64(off + RECORD.payloadOffset + IotlbInvalPayload.iova, iova, true);
      inval.dv.setFloat64(off + RECORD.payloadOffset + IotlbInvalPayload.sizeBytes, sizeBytes, true);
      inval.publish();
    },
  });
  control.publishEot(self, Number.MAX_SAFE_INTEGER); // reactive
  return { host: new HostVfio(container, clock), container, clock };
}
