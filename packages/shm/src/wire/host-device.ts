/**
 * The records the host kernel sends the NVMe device: IOTLB invalidations
 * (the VT-d invalidation queue, as vfio_iommu_type1's unmap flushes the
 * IOTLB). Records are the ring's (see `RECORD`): type i32 @0, request id
 * i32 @4, model timestamp f64 @8, payload from byte 16.
 *
 * | type  | name                   | direction     | request id | payload (offset from 16: field) |
 * |-------|------------------------|---------------|------------|---------------------------------|
 * | 0x103 | HostToDeviceIotlbInval | host → device | 0          | 0: iova f64, 8: sizeBytes f64 (0 = everything) |
 *
 * Timestamp: the host's model time of the flush; the device applies
 * invalidations in that order, before any DMA stamped later.
 */

import { encodeRecordHeader, RECORD } from '../ring.js';

export const HostToDeviceIotlbInval = 0x103;

const INVAL_IOVA = RECORD.payloadOffset + 0;
const INVAL_SIZE_BYTES = RECORD.payloadOffset + 8;

/** Write an invalidation of [iova, iova + sizeBytes) (sizeBytes 0: all) at `off` of the invalidation ring. */
export function encodeIotlbInval(dv: DataView, off: number, timestampNs: number, iova: number, sizeBytes: number): void {
  encodeRecordHeader(dv, off, HostToDeviceIotlbInval, 0, timestampNs);
  dv.setFloat64(off + INVAL_IOVA, iova, true);
  dv.setFloat64(off + INVAL_SIZE_BYTES, sizeBytes, true);
}

export function iotlbInvalIova(dv: DataView, off: number): number {
  return dv.getFloat64(off + INVAL_IOVA, true);
}

export function iotlbInvalSizeBytes(dv: DataView, off: number): number {
  return dv.getFloat64(off + INVAL_SIZE_BYTES, true);
}
