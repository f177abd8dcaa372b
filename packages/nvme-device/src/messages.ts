/**
 * The NVMe device worker's protocol: every record it receives or sends.
 * Records are 64 bytes: the common header (type i32 @0, request id i32 @4,
 * model timestamp f64 @8, see shm RECORD) and a payload from byte 16.
 *
 * | type | name | direction | payload (offset from 16: field) |
 * |------|------|-----------|---------------------------------|
 * | 0x101 | GuestToDeviceDoorbell   | vCPU → device  | 0: qid i32, 4: which i32 (0 SQ tail, 1 CQ head), 8: value i32 |
 * | 0x102 | DeviceToGuestInterrupt  | device → vCPU  | 0: vector i32, 4: cqeCount i32 (CQEs this interrupt makes visible) |
 * | 0x103 | HostToDeviceIotlbInval  | host → device  | (defined with the host's protocol, host-vfio/src/messages.ts) |
 * | 0x104 | GuestToDeviceDone       | vCPU → device  | (none) the vCPU will send nothing more |
 * | 0x105 | GuestToDeviceRegWrite   | vCPU → device  | 0: reg i32 (0 AQA, 1 ASQ, 2 ACQ, 3 CC), 8: value f64 |
 *
 * Timestamps: a doorbell carries the model time of the MMIO write; an
 * interrupt the model time the MSI is pending for the guest; an
 * invalidation the host's time (it is applied before any later DMA).
 */

export const GuestToDeviceDoorbell = 0x101;
export const DeviceToGuestInterrupt = 0x102;
export { HostToDeviceIotlbInval, IotlbInvalPayload } from '@vmstack/host-vfio';
export const GuestToDeviceDone = 0x104;
export const GuestToDeviceRegWrite = 0x105;

export const DOORBELL_SQ_TAIL = 0;
export const DOORBELL_CQ_HEAD = 1;

export const DoorbellPayload = { qid: 0, which: 4, value: 8 } as const;
export const InterruptPayload = { vector: 0, cqeCount: 4 } as const;
export const RegWritePayload = { reg: 0, value: 8 } as const;
