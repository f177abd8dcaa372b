/**
 * The host IOMMU's record of the translation faults of one device (its
 * requester id): what VT-d keeps in its fault recording registers and AMD-Vi
 * in its event log, and what the host driver's fault handler (dmar_fault,
 * amd_iommu_int_thread) reads out and hands to `iommu_report_device_fault`.
 *
 * One writer, the device's DMA engine (the IOTLB that faulted), and one
 * reader, the host kernel draining it (host-vfio's fault queue). A record
 * that finds the log full is not kept, as VT-d sets Primary Fault Overflow
 * and records nothing more until software frees a register; it is still
 * counted, by reason. Shared memory layout (little-endian):
 *
 * | byte | size | field | writer |
 * |------|------|-------|--------|
 * | 0    | 4    | records written (i32, Atomics) | device |
 * | 4    | 4    | records read (i32, Atomics) | host |
 * | 8    | 4    | faults not kept: the log was full | device |
 * | 12   | 4    | source id: the requester's endpoint id | set at allocation |
 * | 16   | 4    | faults with no translation (all, kept or not) | device |
 * | 20   | 4    | faults on a translation without the access's permission | device |
 * | 24   | 4    | capacity (records) | set at allocation |
 * | 32+32·i | 32 | record i mod capacity: 0 model ns (f64), 8 iova (f64), 16 access (u32: IOMMU_READ or IOMMU_WRITE), 20 reason (u32) | device |
 */

import { IOMMU_READ, IOMMU_WRITE } from '@vmstack/shm';

/** No translation for the IOVA (VT-d fault reason 0x06 with second-level tables: a not-present entry). */
export const IOMMU_FAULT_REASON_NOT_PRESENT = 1;
/** A translation without the access's permission (VT-d fault reasons 0x05 write / 0x06 read). */
export const IOMMU_FAULT_REASON_PERMISSION = 2;

const HEADER_BYTES = 32;
const RECORD_BYTES = 32;
const I_WRITTEN = 0;
const I_READ = 1;
const I_OVERFLOW = 2;
const I_SOURCE = 3;
const I_NOT_PRESENT = 4;
const I_PERMISSION = 5;
const I_CAPACITY = 6;

/**
 * The log's records by default. VT-d has at most 256 fault recording
 * registers, which the host's fault interrupt handler drains as faults come;
 * the model's host reads the log only when the VMM reads its fault queue, so
 * the log stands for the registers and the kernel's queue together and holds
 * what that queue would: 65536 records (a scan of 256 MiB of IOVA pages).
 */
export const IOMMU_FAULT_LOG_RECORDS_DEFAULT = 65536;

export interface IommuFaultRecord {
  /** model ns of the DMA that faulted */
  timeNs: number;
  /** the requester's endpoint id */
  sourceId: number;
  iova: number;
  /** IOMMU_READ (the device read memory) or IOMMU_WRITE (it wrote memory) */
  access: number;
  /** IOMMU_FAULT_REASON_* */
  reason: number;
}

export interface IommuFaultLogStats {
  /** every fault of the device, kept or not */
  faults: number;
  notPresent: number;
  permission: number;
  /** faults not kept: the log was full */
  overflowed: number;
  /** records the host has read out */
  read: number;
}

export class IommuFaultLog {
  private readonly i32: Int32Array;
  private readonly dv: DataView;
  private readonly capacity: number;

  /** A zeroed log of `capacity` records for the device whose requester id is `sourceId`. */
  static allocate(sourceId: number, capacity = IOMMU_FAULT_LOG_RECORDS_DEFAULT, alloc = (n: number) => new SharedArrayBuffer(n)): SharedArrayBuffer {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`IommuFaultLog: capacity ${capacity} must be ≥ 1`);
    const sab = alloc(HEADER_BYTES + RECORD_BYTES * capacity);
    const i32 = new Int32Array(sab, 0, HEADER_BYTES / 4);
    i32.fill(0);
    i32[I_SOURCE] = sourceId;
    i32[I_CAPACITY] = capacity;
    return sab;
  }

  constructor(sab: SharedArrayBuffer) {
    this.i32 = new Int32Array(sab, 0, HEADER_BYTES / 4);
    this.dv = new DataView(sab);
    this.capacity = this.i32[I_CAPACITY];
    if (!(this.capacity >= 1) || sab.byteLength < HEADER_BYTES + RECORD_BYTES * this.capacity) throw new RangeError('IommuFaultLog: not an allocated log');
  }

  get sourceId(): number {
    return this.i32[I_SOURCE];
  }

  /** The device's side: record a faulting access (`write`: the device wrote memory). */
  record(timeNs: number, iova: number, write: boolean, reason: number): void {
    this.i32[reason === IOMMU_FAULT_REASON_NOT_PRESENT ? I_NOT_PRESENT : I_PERMISSION]++;
    const written = this.i32[I_WRITTEN];
    if (written - Atomics.load(this.i32, I_READ) >= this.capacity) {
      this.i32[I_OVERFLOW]++;
      return;
    }
    const off = HEADER_BYTES + RECORD_BYTES * (written % this.capacity);
    this.dv.setFloat64(off, timeNs, true);
    this.dv.setFloat64(off + 8, iova, true);
    this.dv.setUint32(off + 16, write ? IOMMU_WRITE : IOMMU_READ, true);
    this.dv.setUint32(off + 20, reason, true);
    Atomics.store(this.i32, I_WRITTEN, written + 1);
  }

  /** The host's side: the oldest record not yet read, or null; reading frees its slot. */
  next(): IommuFaultRecord | null {
    const read = this.i32[I_READ];
    if (read === Atomics.load(this.i32, I_WRITTEN)) return null;
    const off = HEADER_BYTES + RECORD_BYTES * (read % this.capacity);
    const r: IommuFaultRecord = {
      timeNs: this.dv.getFloat64(off, true),
      sourceId: this.sourceId,
      iova: this.dv.getFloat64(off + 8, true),
      access: this.dv.getUint32(off + 16, true),
      reason: this.dv.getUint32(off + 20, true),
    };
    Atomics.store(this.i32, I_READ, read + 1);
    return r;
  }

  stats(): IommuFaultLogStats {
    const notPresent = this.i32[I_NOT_PRESENT];
    const permission = this.i32[I_PERMISSION];
    return { faults: notPresent + permission, notPresent, permission, overflowed: this.i32[I_OVERFLOW], read: Atomics.load(this.i32, I_READ) };
  }
}
