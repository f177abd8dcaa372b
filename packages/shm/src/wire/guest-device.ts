/**
 * The records between a guest vCPU and the NVMe device: the vCPU's MMIO
 * writes to the passed-through BAR (doorbells, controller registers) and
 * the device's MSI-X interrupts. Records are the ring's (see `RECORD`): the
 * header (type i32 @0, request id i32 @4, model timestamp f64 @8) and a
 * payload from byte 16.
 *
 * | type  | name                   | direction     | request id | payload (offset from 16: field) |
 * |-------|------------------------|---------------|------------|---------------------------------|
 * | 0x101 | GuestToDeviceDoorbell  | vCPU → device | 0          | 0: qid i32, 4: which i32 (DOORBELL_SQ_TAIL / DOORBELL_CQ_HEAD), 8: value i32 |
 * | 0x102 | DeviceToGuestInterrupt | device → vCPU | cqid       | 0: vector i32, 4: cqeCount i32 (CQEs this interrupt makes visible) |
 * | 0x104 | GuestToDeviceDone      | vCPU → device | 0          | (none) the vCPU will send nothing more |
 * | 0x105 | GuestToDeviceRegWrite  | vCPU → device | 0          | 0: reg i32 (NVME_REG_AQA, _ASQ, _ACQ, _CC), 8: value f64 |
 *
 * Timestamps: a doorbell or register write carries the model time of the
 * MMIO write; an interrupt the model time the MSI is pending for the guest.
 */

import { encodeRecordHeader, RECORD } from '../ring.js';

export const GuestToDeviceDoorbell = 0x101;
export const DeviceToGuestInterrupt = 0x102;
export const GuestToDeviceDone = 0x104;
export const GuestToDeviceRegWrite = 0x105;

/** Doorbell `which`: the SQ tail doorbell or the CQ head doorbell. */
export const DOORBELL_SQ_TAIL = 0;
export const DOORBELL_CQ_HEAD = 1;

/** Controller registers a GuestToDeviceRegWrite names (NVMe base spec §3.1: AQA, ASQ, ACQ, CC). */
export const NVME_REG_AQA = 0;
export const NVME_REG_ASQ = 1;
export const NVME_REG_ACQ = 2;
export const NVME_REG_CC = 3;

const P = RECORD.payloadOffset;
const DOORBELL_QID = P + 0;
const DOORBELL_WHICH = P + 4;
const DOORBELL_VALUE = P + 8;
const INTERRUPT_VECTOR = P + 0;
const INTERRUPT_CQE_COUNT = P + 4;
const REG_WRITE_REG = P + 0;
const REG_WRITE_VALUE = P + 8;

/** Write a doorbell record at `off` (a reserved record of the vCPU's doorbell ring). */
export function encodeDoorbell(dv: DataView, off: number, timestampNs: number, qid: number, which: number, value: number): void {
  encodeRecordHeader(dv, off, GuestToDeviceDoorbell, 0, timestampNs);
  dv.setInt32(off + DOORBELL_QID, qid, true);
  dv.setInt32(off + DOORBELL_WHICH, which, true);
  dv.setInt32(off + DOORBELL_VALUE, value, true);
}

export function doorbellQid(dv: DataView, off: number): number {
  return dv.getInt32(off + DOORBELL_QID, true);
}

export function doorbellWhich(dv: DataView, off: number): number {
  return dv.getInt32(off + DOORBELL_WHICH, true);
}

export function doorbellValue(dv: DataView, off: number): number {
  return dv.getInt32(off + DOORBELL_VALUE, true);
}

/** Write a controller register write (AQA, ASQ, ACQ, CC) at `off`. */
export function encodeRegWrite(dv: DataView, off: number, timestampNs: number, reg: number, value: number): void {
  encodeRecordHeader(dv, off, GuestToDeviceRegWrite, 0, timestampNs);
  dv.setInt32(off + REG_WRITE_REG, reg, true);
  dv.setFloat64(off + REG_WRITE_VALUE, value, true);
}

export function regWriteReg(dv: DataView, off: number): number {
  return dv.getInt32(off + REG_WRITE_REG, true);
}

export function regWriteValue(dv: DataView, off: number): number {
  return dv.getFloat64(off + REG_WRITE_VALUE, true);
}

/** Write the vCPU's last record: it will ring nothing more. */
export function encodeGuestToDeviceDone(dv: DataView, off: number, timestampNs: number): void {
  encodeRecordHeader(dv, off, GuestToDeviceDone, 0, timestampNs);
}

/** Write an interrupt record for completion queue `cqid` at `off` (a reserved record of the vCPU's interrupt ring). */
export function encodeInterrupt(dv: DataView, off: number, timestampNs: number, cqid: number, vector: number, cqeCount: number): void {
  encodeRecordHeader(dv, off, DeviceToGuestInterrupt, cqid, timestampNs);
  dv.setInt32(off + INTERRUPT_VECTOR, vector, true);
  dv.setInt32(off + INTERRUPT_CQE_COUNT, cqeCount, true);
}

export function interruptCqeCount(dv: DataView, off: number): number {
  return dv.getInt32(off + INTERRUPT_CQE_COUNT, true);
}
