/**
 * The VFIO container ioctls the VMM makes on the host kernel
 * (VFIO_IOMMU_MAP_DMA / VFIO_IOMMU_UNMAP_DMA) as a port, and their records
 * when the host runs in its own worker: requests and replies pair by
 * request id (`RpcClient` / `RpcServer`, which write the record header and
 * hand these functions the payload's byte offset `p`).
 *
 * | type  | name              | direction  | payload (offset from p: field) |
 * |-------|-------------------|------------|--------------------------------|
 * | 0x301 | VmmToHostMapDma   | vmm → host | 0: iova f64, 8: vaddr f64, 16: sizeBytes f64, 24: flags i32 (VFIO_DMA_MAP_FLAG_READ 1, _WRITE 2) |
 * | 0x302 | VmmToHostUnmapDma | vmm → host | 0: iova f64, 8: sizeBytes f64 |
 * | 0x303 | HostToVmmReply    | host → vmm | 0: errno i32 (0 or negative), 8: unmappedBytes f64 (UNMAP_DMA only) |
 * | 0x304 | VmmToHostDone     | vmm → host | (none) stop serving; answered by an empty HostToVmmReply |
 *
 * Timestamps: the request carries the VMM's model time at the ioctl; the
 * reply the host's model time when the ioctl returns.
 */

import type { AbortFlag } from '../event.js';
import { type RpcChannelHandles, RpcClient } from '../rpc.js';

export const VmmToHostMapDma = 0x301;
export const VmmToHostUnmapDma = 0x302;
export const HostToVmmReply = 0x303;
export const VmmToHostDone = 0x304;

/** VFIO_DMA_MAP_FLAG_* (include/uapi/linux/vfio.h). */
export const VFIO_DMA_MAP_FLAG_READ = 1;
export const VFIO_DMA_MAP_FLAG_WRITE = 2;

const MAP_IOVA = 0;
const MAP_VADDR = 8;
const MAP_SIZE_BYTES = 16;
const MAP_FLAGS = 24;
const UNMAP_IOVA = 0;
const UNMAP_SIZE_BYTES = 8;
const REPLY_ERRNO = 0;
const REPLY_UNMAPPED_BYTES = 8;

export interface VfioMapDmaArgs {
  iova: number;
  vaddr: number;
  sizeBytes: number;
  read: boolean;
  write: boolean;
}

export interface VfioUnmapDmaArgs {
  iova: number;
  sizeBytes: number;
}

/** The VFIO type1 ioctls as a port: called directly in one thread, or through the rings (`VfioRpcPort`). */
export interface VfioContainerPort {
  mapDma(args: VfioMapDmaArgs, nowNs: number): { errno: number; doneNs: number };
  unmapDma(args: VfioUnmapDmaArgs, nowNs: number): { errno: number; unmappedBytes: number; doneNs: number };
}

export function encodeMapDmaRequest(dv: DataView, p: number, args: VfioMapDmaArgs): void {
  dv.setFloat64(p + MAP_IOVA, args.iova, true);
  dv.setFloat64(p + MAP_VADDR, args.vaddr, true);
  dv.setFloat64(p + MAP_SIZE_BYTES, args.sizeBytes, true);
  dv.setInt32(p + MAP_FLAGS, (args.read ? VFIO_DMA_MAP_FLAG_READ : 0) | (args.write ? VFIO_DMA_MAP_FLAG_WRITE : 0), true);
}

/** Decode a MAP_DMA request into `out` (reused by the caller). */
export function decodeMapDmaRequest(dv: DataView, p: number, out: VfioMapDmaArgs): VfioMapDmaArgs {
  const flags = dv.getInt32(p + MAP_FLAGS, true);
  out.iova = dv.getFloat64(p + MAP_IOVA, true);
  out.vaddr = dv.getFloat64(p + MAP_VADDR, true);
  out.sizeBytes = dv.getFloat64(p + MAP_SIZE_BYTES, true);
  out.read = (flags & VFIO_DMA_MAP_FLAG_READ) !== 0;
  out.write = (flags & VFIO_DMA_MAP_FLAG_WRITE) !== 0;
  return out;
}

export function encodeUnmapDmaRequest(dv: DataView, p: number, args: VfioUnmapDmaArgs): void {
  dv.setFloat64(p + UNMAP_IOVA, args.iova, true);
  dv.setFloat64(p + UNMAP_SIZE_BYTES, args.sizeBytes, true);
}

/** Decode an UNMAP_DMA request into `out` (reused by the caller). */
export function decodeUnmapDmaRequest(dv: DataView, p: number, out: VfioUnmapDmaArgs): VfioUnmapDmaArgs {
  out.iova = dv.getFloat64(p + UNMAP_IOVA, true);
  out.sizeBytes = dv.getFloat64(p + UNMAP_SIZE_BYTES, true);
  return out;
}

export function encodeVfioReply(dv: DataView, p: number, errno: number, unmappedBytes: number): void {
  dv.setInt32(p + REPLY_ERRNO, errno, true);
  dv.setFloat64(p + REPLY_UNMAPPED_BYTES, unmappedBytes, true);
}

export function vfioReplyErrno(dv: DataView, p: number): number {
  return dv.getInt32(p + REPLY_ERRNO, true);
}

export function vfioReplyUnmappedBytes(dv: DataView, p: number): number {
  return dv.getFloat64(p + REPLY_UNMAPPED_BYTES, true);
}

/**
 * The VMM's end of the port when the host runs in its own worker: each call
 * is one request record and one reply record. The record writers are bound
 * once; the arguments of the call in flight are held here while it is sent.
 */
export class VfioRpcPort implements VfioContainerPort {
  readonly client: RpcClient;
  private mapArgs: VfioMapDmaArgs | null = null;
  private unmapArgs: VfioUnmapDmaArgs | null = null;
  private readonly writeMap = (dv: DataView, p: number): void => encodeMapDmaRequest(dv, p, this.mapArgs!);
  private readonly writeUnmap = (dv: DataView, p: number): void => encodeUnmapDmaRequest(dv, p, this.unmapArgs!);
  private readonly readMapReply = (dv: DataView, p: number, doneNs: number) => ({ errno: vfioReplyErrno(dv, p), doneNs });
  private readonly readUnmapReply = (dv: DataView, p: number, doneNs: number) => ({
    errno: vfioReplyErrno(dv, p),
    unmappedBytes: vfioReplyUnmappedBytes(dv, p),
    doneNs,
  });

  constructor(handles: RpcChannelHandles, abort: AbortFlag, spinLoads: number) {
    this.client = new RpcClient(handles, abort, spinLoads);
  }

  mapDma(args: VfioMapDmaArgs, nowNs: number): { errno: number; doneNs: number } {
    this.mapArgs = args;
    const r = this.client.call(VmmToHostMapDma, nowNs, this.writeMap, this.readMapReply);
    this.mapArgs = null;
    return r;
  }

  unmapDma(args: VfioUnmapDmaArgs, nowNs: number): { errno: number; unmappedBytes: number; doneNs: number } {
    this.unmapArgs = args;
    const r = this.client.call(VmmToHostUnmapDma, nowNs, this.writeUnmap, this.readUnmapReply);
    this.unmapArgs = null;
    return r;
  }

  /** The VMM is done: the host stops serving once it has answered. */
  done(nowNs: number): void {
    this.client.call(VmmToHostDone, nowNs, noPayload, noReply);
  }
}

const noPayload = (): void => {};
const noReply = (): number => 0;
