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
 * | 0x305 | VmmToHostFaultRead | vmm → host | (none) read() of one record on the fault queue's fd; answered by a HostToVmmReply: 0: records i32 (1 or 0: none), 4: dev_id u32, 8: addr f64, 16: perm u32 (IOMMU_PGFAULT_PERM_*), 20: reason u32 (the host IOMMU's, iommu-hw IOMMU_FAULT_REASON_*), 24: model ns of the fault f64 |
 * | 0x306 | VmmToHostGroupContainer | vmm → host | 0: endpoint u32 (the group's device), 4: set i32 (1 VFIO_GROUP_SET_CONTAINER, 0 VFIO_GROUP_UNSET_CONTAINER); answered by a HostToVmmReply with its errno |
 * | 0x307 | VmmToHostGetInfo  | vmm → host | (none) VFIO_IOMMU_GET_INFO; answered by a HostToVmmReply: 0: errno i32, 4: nr_iovas u32 (IOVA_RANGE capability; 0: none), 8: iova_pgsizes u64, 16: first range's start f64, 24: last range's end f64 (IOVAs are below 2^53), 32: dma_avail i32 (-1: no capability) |
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
export const VmmToHostFaultRead = 0x305;
export const VmmToHostGroupContainer = 0x306;
export const VmmToHostGetInfo = 0x307;

/** What VFIO_IOMMU_GET_INFO told the VMM: the IOMMU page sizes and the span of the usable IOVA ranges. */
export interface VfioIommuInfo {
  errno: number;
  iovaPgsizes: bigint;
  /** the IOVA_RANGE capability: how many ranges, the lowest start and the highest end; null without it */
  iovaRanges: { count: number; start: number; end: number } | null;
  /** the DMA_AVAIL capability (mappings still available); null without it */
  dmaAvail: number | null;
}

export function encodeGetInfoReply(dv: DataView, p: number, i: VfioIommuInfo): void {
  dv.setInt32(p, i.errno, true);
  dv.setUint32(p + 4, i.iovaRanges ? i.iovaRanges.count : 0, true);
  dv.setBigUint64(p + 8, i.iovaPgsizes, true);
  dv.setFloat64(p + 16, i.iovaRanges ? i.iovaRanges.start : 0, true);
  dv.setFloat64(p + 24, i.iovaRanges ? i.iovaRanges.end : 0, true);
  dv.setInt32(p + 32, i.dmaAvail ?? -1, true);
}

export function decodeGetInfoReply(dv: DataView, p: number): VfioIommuInfo {
  const count = dv.getUint32(p + 4, true);
  const avail = dv.getInt32(p + 32, true);
  return {
    errno: dv.getInt32(p, true),
    iovaPgsizes: dv.getBigUint64(p + 8, true),
    iovaRanges: count > 0 ? { count, start: dv.getFloat64(p + 16, true), end: dv.getFloat64(p + 24, true) } : null,
    dmaAvail: avail >= 0 ? avail : null,
  };
}

export function encodeGroupContainerRequest(dv: DataView, p: number, endpoint: number, set: boolean): void {
  dv.setUint32(p, endpoint, true);
  dv.setInt32(p + 4, set ? 1 : 0, true);
}

export function decodeGroupContainerRequest(dv: DataView, p: number): { endpoint: number; set: boolean } {
  return { endpoint: dv.getUint32(p, true), set: dv.getInt32(p + 4, true) !== 0 };
}

/** enum iommu_hwpt_pgfault_perm (include/uapi/linux/iommufd.h): the access that faulted. */
export const IOMMU_PGFAULT_PERM_READ = 1 << 0;
export const IOMMU_PGFAULT_PERM_WRITE = 1 << 1;
export const IOMMU_PGFAULT_PERM_EXEC = 1 << 2;

/**
 * One record of the host's fault queue as read() returns it: the fields of
 * struct iommu_hwpt_pgfault the model fills (dev_id, perm, addr), and the
 * hardware's fault reason and the fault's model time, which that struct
 * does not carry (a page request has no reason) and the model adds.
 */
export interface HostIommuFault {
  devId: number;
  perm: number;
  addr: number;
  reason: number;
  timeNs: number;
}

const FAULT_RECORDS = 0;
const FAULT_DEV_ID = 4;
const FAULT_ADDR = 8;
const FAULT_PERM = 16;
const FAULT_REASON = 20;
const FAULT_TIME_NS = 24;

/** The reply to a VmmToHostFaultRead: one record, or none. */
export function encodeFaultReadReply(dv: DataView, p: number, f: HostIommuFault | null): void {
  dv.setInt32(p + FAULT_RECORDS, f ? 1 : 0, true);
  if (!f) return;
  dv.setUint32(p + FAULT_DEV_ID, f.devId, true);
  dv.setFloat64(p + FAULT_ADDR, f.addr, true);
  dv.setUint32(p + FAULT_PERM, f.perm, true);
  dv.setUint32(p + FAULT_REASON, f.reason, true);
  dv.setFloat64(p + FAULT_TIME_NS, f.timeNs, true);
}

export function decodeFaultReadReply(dv: DataView, p: number): HostIommuFault | null {
  if (dv.getInt32(p + FAULT_RECORDS, true) === 0) return null;
  return {
    devId: dv.getUint32(p + FAULT_DEV_ID, true),
    addr: dv.getFloat64(p + FAULT_ADDR, true),
    perm: dv.getUint32(p + FAULT_PERM, true),
    reason: dv.getUint32(p + FAULT_REASON, true),
    timeNs: dv.getFloat64(p + FAULT_TIME_NS, true),
  };
}

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
  /**
   * VFIO_GROUP_SET_CONTAINER / VFIO_GROUP_UNSET_CONTAINER on the group of the
   * device with requester id `endpoint` (absent: the port cannot move groups)
   */
  groupSetContainer?(endpoint: number, set: boolean, nowNs: number): { errno: number; doneNs: number };
  /** VFIO_IOMMU_GET_INFO on the container (absent: the port does not answer it) */
  getInfo?(nowNs: number): VfioIommuInfo & { doneNs: number };
  /** read() of one record on the host's fault queue fd (absent: the host offers no fault queue) */
  readFault?(nowNs: number): { fault: HostIommuFault | null; doneNs: number };
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

  private groupArgs = { endpoint: 0, set: false };
  private readonly writeGroup = (dv: DataView, p: number): void => encodeGroupContainerRequest(dv, p, this.groupArgs.endpoint, this.groupArgs.set);

  groupSetContainer(endpoint: number, set: boolean, nowNs: number): { errno: number; doneNs: number } {
    this.groupArgs = { endpoint, set };
    return this.client.call(VmmToHostGroupContainer, nowNs, this.writeGroup, this.readMapReply);
  }

  private readonly readInfoReply = (dv: DataView, p: number, doneNs: number) => ({ ...decodeGetInfoReply(dv, p), doneNs });

  getInfo(nowNs: number): VfioIommuInfo & { doneNs: number } {
    return this.client.call(VmmToHostGetInfo, nowNs, noPayload, this.readInfoReply);
  }

  private readonly readFaultReply = (dv: DataView, p: number, doneNs: number) => ({ fault: decodeFaultReadReply(dv, p), doneNs });

  readFault(nowNs: number): { fault: HostIommuFault | null; doneNs: number } {
    return this.client.call(VmmToHostFaultRead, nowNs, noPayload, this.readFaultReply);
  }

  /** The VMM is done: the host stops serving once it has answered. */
  done(nowNs: number): void {
    this.client.call(VmmToHostDone, nowNs, noPayload, noReply);
  }
}

const noPayload = (): void => {};
const noReply = (): number => 0;
