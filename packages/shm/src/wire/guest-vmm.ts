/**
 * The records between a guest vCPU and the VMM. The virtio-iommu requests
 * themselves live in guest RAM (a split virtqueue, see virtqueue.ts and
 * virtio-iommu.ts); these records are the kick (the guest's notify write, a
 * VM exit) and the used notification the busy-polling guest waits for.
 * Records are the ring's (see `RECORD`): type i32 @0, request id i32 @4,
 * model timestamp f64 @8, payload from byte 16.
 *
 * | type  | name           | direction  | request id       | payload (offset from 16: field) |
 * |-------|----------------|------------|------------------|---------------------------------|
 * | 0x201 | GuestToVmmKick | vCPU → vmm | 0                | (none) |
 * | 0x202 | VmmToGuestUsed | vmm → vCPU | the kick's       | 0: requests i32 (requests handled for this kick) |
 * | 0x203 | GuestToVmmDone | vCPU → vmm | 0                | (none) the vCPU will send nothing more |
 *
 * Timestamps: a kick carries the model time of the notify write; the used
 * record the VMM's model time when the used elements are written.
 */

import { encodeRecordHeader, RECORD } from '../ring.js';

export const GuestToVmmKick = 0x201;
export const VmmToGuestUsed = 0x202;
export const GuestToVmmDone = 0x203;

const USED_REQUESTS = RECORD.payloadOffset + 0;

/** Write a kick (the virtqueue notify) at `off` of the vCPU's kick ring. */
export function encodeKick(dv: DataView, off: number, timestampNs: number): void {
  encodeRecordHeader(dv, off, GuestToVmmKick, 0, timestampNs);
}

/** Write the vCPU's last record: it will kick no more. */
export function encodeGuestToVmmDone(dv: DataView, off: number, timestampNs: number): void {
  encodeRecordHeader(dv, off, GuestToVmmDone, 0, timestampNs);
}

/** Write the used notification answering kick `kickRequestId`. */
export function encodeUsed(dv: DataView, off: number, timestampNs: number, kickRequestId: number, requests: number): void {
  encodeRecordHeader(dv, off, VmmToGuestUsed, kickRequestId, timestampNs);
  dv.setInt32(off + USED_REQUESTS, requests, true);
}

export function usedRequests(dv: DataView, off: number): number {
  return dv.getInt32(off + USED_REQUESTS, true);
}
