/**
 * virtio-iommu request formats (virtio 1.2 §5.13.6; Linux
 * include/uapi/linux/virtio_iommu.h, "definition v0.12").
 *
 * A request is one buffer in guest RAM: a device-readable part (head +
 * fields) followed by a device-writable part (PROBE properties, then the
 * tail). The driver (Linux viommu_send_req_sync) queues it as two
 * descriptors split at `viommuGetWriteDescOffsetBytes`. All fields are
 * little-endian; every reserved byte is written as zero.
 *
 * head (4 B) / tail (4 B)
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 1 | type (head) / status (tail) |
 * | 1 | 3 | reserved |
 *
 * ATTACH (24 B) — DETACH (24 B) has `reserved[8]` at 12 instead of flags + reserved[4]
 * | offset | size | field |
 * |---|---|---|
 * | 0  | 4 | head, type 1 (ATTACH) / 2 (DETACH) |
 * | 4  | 4 | domain u32 |
 * | 8  | 4 | endpoint u32 |
 * | 12 | 4 | flags u32 (VIRTIO_IOMMU_ATTACH_F_BYPASS = 1); DETACH: reserved |
 * | 16 | 4 | reserved |
 * | 20 | 4 | tail |
 *
 * MAP (40 B)
 * | offset | size | field |
 * |---|---|---|
 * | 0  | 4 | head, type 3 |
 * | 4  | 4 | domain u32 |
 * | 8  | 8 | virt_start u64 |
 * | 16 | 8 | virt_end u64, inclusive (a 4 KiB page at V: virt_end = V + 4095) |
 * | 24 | 8 | phys_start u64 |
 * | 32 | 4 | flags u32: READ=1, WRITE=2, MMIO=4 |
 * | 36 | 4 | tail |
 *
 * UNMAP (32 B)
 * | offset | size | field |
 * |---|---|---|
 * | 0  | 4 | head, type 4 |
 * | 4  | 4 | domain u32 |
 * | 8  | 8 | virt_start u64 |
 * | 16 | 8 | virt_end u64, inclusive |
 * | 24 | 4 | reserved |
 * | 28 | 4 | tail |
 *
 * PROBE (76 + probe_size B)
 * | offset | size | field |
 * |---|---|---|
 * | 0  | 4  | head, type 5 |
 * | 4  | 4  | endpoint u32 |
 * | 8  | 64 | reserved |
 * | 72 | probe_size | properties, written by the device, zero-filled after the last |
 * | 72 + probe_size | 4 | tail |
 *
 * PROBE property header (4 B) and RESV_MEM property (24 B, length = 20)
 * | offset | size | field |
 * |---|---|---|
 * | 0  | 2 | type: bits 0–11 type (0 NONE ends the list, 1 RESV_MEM), bits 12–15 reserved |
 * | 2  | 2 | length: bytes of value after this header (next property at +4+length) |
 * | 4  | 1 | subtype: 0 RESERVED, 1 MSI |
 * | 5  | 3 | reserved |
 * | 8  | 8 | start u64 |
 * | 16 | 8 | end u64, inclusive |
 *
 * Fields read as u64 come back as numbers (see `readU64`: exact below 2^53).
 */

import type { GuestMemory } from './virtqueue.js';
import { readU64, writeU64 } from './virtqueue.js';

export const VIRTIO_IOMMU_T_ATTACH = 1;
export const VIRTIO_IOMMU_T_DETACH = 2;
export const VIRTIO_IOMMU_T_MAP = 3;
export const VIRTIO_IOMMU_T_UNMAP = 4;
export const VIRTIO_IOMMU_T_PROBE = 5;

export const VIRTIO_IOMMU_S_OK = 0;
export const VIRTIO_IOMMU_S_IOERR = 1;
export const VIRTIO_IOMMU_S_UNSUPP = 2;
export const VIRTIO_IOMMU_S_DEVERR = 3;
export const VIRTIO_IOMMU_S_INVAL = 4;
export const VIRTIO_IOMMU_S_RANGE = 5;
export const VIRTIO_IOMMU_S_NOENT = 6;
export const VIRTIO_IOMMU_S_FAULT = 7;
export const VIRTIO_IOMMU_S_NOMEM = 8;

export const VIRTIO_IOMMU_ATTACH_F_BYPASS = 1;

export const VIRTIO_IOMMU_MAP_F_READ = 1;
export const VIRTIO_IOMMU_MAP_F_WRITE = 2;
export const VIRTIO_IOMMU_MAP_F_MMIO = 4;
export const VIRTIO_IOMMU_MAP_F_MASK = VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_WRITE | VIRTIO_IOMMU_MAP_F_MMIO;

export const VIRTIO_IOMMU_PROBE_T_NONE = 0;
export const VIRTIO_IOMMU_PROBE_T_RESV_MEM = 1;
export const VIRTIO_IOMMU_PROBE_T_MASK = 0xfff;
export const VIRTIO_IOMMU_RESV_MEM_T_RESERVED = 0;
export const VIRTIO_IOMMU_RESV_MEM_T_MSI = 1;

/** QEMU's probe_size (VIOMMU_PROBE_SIZE). */
export const VIRTIO_IOMMU_PROBE_SIZE_BYTES_DEFAULT = 512;

export const VIRTIO_IOMMU_HEAD_BYTES = 4;
export const VIRTIO_IOMMU_TAIL_BYTES = 4;
/** bytes of a PROBE request before its properties */
export const VIRTIO_IOMMU_PROBE_FIXED_BYTES = 72;
export const VIRTIO_IOMMU_PROPERTY_HEADER_BYTES = 4;
/** header + value of a RESV_MEM property; its length field is this minus 4 */
export const VIRTIO_IOMMU_RESV_MEM_BYTES = 24;

const FIXED_SIZE_BYTES: Readonly<Record<number, number>> = {
  [VIRTIO_IOMMU_T_ATTACH]: 24,
  [VIRTIO_IOMMU_T_DETACH]: 24,
  [VIRTIO_IOMMU_T_MAP]: 40,
  [VIRTIO_IOMMU_T_UNMAP]: 32,
};

const STATUS_NAMES = ['OK', 'IOERR', 'UNSUPP', 'DEVERR', 'INVAL', 'RANGE', 'NOENT', 'FAULT', 'NOMEM'];

/** `VIRTIO_IOMMU_S_<NAME>` for a status code, or `VIRTIO_IOMMU_S_<code>?` for an unknown one. */
export function statusName(code: number): string {
  const name = STATUS_NAMES[code];
  return name === undefined ? `VIRTIO_IOMMU_S_${code}?` : `VIRTIO_IOMMU_S_${name}`;
}

/** Whole request, head to tail. PROBE includes `probeSizeBytes` of properties. */
export function requestSizeBytes(type: number, probeSizeBytes = VIRTIO_IOMMU_PROBE_SIZE_BYTES_DEFAULT): number {
  if (type === VIRTIO_IOMMU_T_PROBE) return VIRTIO_IOMMU_PROBE_FIXED_BYTES + checkProbeSize(probeSizeBytes) + VIRTIO_IOMMU_TAIL_BYTES;
  const size = FIXED_SIZE_BYTES[type];
  if (size === undefined) throw new RangeError(`virtio-iommu: no request type ${type}`);
  return size;
}

/**
 * viommu_get_write_desc_offset: bytes of the device-readable part, i.e.
 * where the device-writable descriptor starts (the tail, or the PROBE
 * properties).
 */
export function viommuGetWriteDescOffsetBytes(type: number, probeSizeBytes = VIRTIO_IOMMU_PROBE_SIZE_BYTES_DEFAULT): number {
  const size = requestSizeBytes(type, probeSizeBytes);
  return type === VIRTIO_IOMMU_T_PROBE ? size - probeSizeBytes - VIRTIO_IOMMU_TAIL_BYTES : size - VIRTIO_IOMMU_TAIL_BYTES;
}

function checkProbeSize(probeSizeBytes: number): number {
  if (!Number.isInteger(probeSizeBytes) || probeSizeBytes < 0 || probeSizeBytes % 8 !== 0) {
    throw new RangeError(`virtio-iommu probe_size ${probeSizeBytes} is not a non-negative multiple of 8`);
  }
  return probeSizeBytes;
}

function checkU32(value: number, field: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) throw new RangeError(`virtio-iommu ${field}: ${value} is not a u32`);
  return value;
}

function allZero(u8: Uint8Array, from: number, lenBytes: number): boolean {
  for (let i = from; i < from + lenBytes; i++) if (u8[i] !== 0) return false;
  return true;
}

function writeHead(mem: GuestMemory, gpa: number, type: number, sizeBytes: number): void {
  // zero the whole request, tail included, as Linux's designated initialisers do
  mem.u8.fill(0, gpa, gpa + sizeBytes);
  mem.u8[gpa] = type;
}

// ---------------------------------------------------------------- tail

/** Device side: write `status` (and zero reserved) into the tail at `tailGpa`. */
export function writeTail(mem: GuestMemory, tailGpa: number, status: number): void {
  if (!Number.isInteger(status) || status < 0 || status > 0xff) throw new RangeError(`virtio-iommu status ${status} is not a u8`);
  mem.u8[tailGpa] = status;
  mem.u8.fill(0, tailGpa + 1, tailGpa + VIRTIO_IOMMU_TAIL_BYTES);
}

/** Driver side: the status byte of the tail at `tailGpa` (reserved bytes ignored, as the spec says). */
export function readTail(mem: GuestMemory, tailGpa: number): number {
  return mem.u8[tailGpa];
}

/** Where the tail of a request at `gpa` is. */
export function tailGpaOf(gpa: number, type: number, probeSizeBytes = VIRTIO_IOMMU_PROBE_SIZE_BYTES_DEFAULT): number {
  return gpa + requestSizeBytes(type, probeSizeBytes) - VIRTIO_IOMMU_TAIL_BYTES;
}

// ---------------------------------------------------------------- requests

export interface ViommuAttachFields {
  domain: number;
  endpoint: number;
  /** VIRTIO_IOMMU_ATTACH_F_BYPASS or 0 */
  flags: number;
}
export interface ViommuDetachFields {
  domain: number;
  endpoint: number;
}
export interface ViommuMapFields {
  domain: number;
  virtStart: number;
  /** inclusive */
  virtEnd: number;
  physStart: number;
  /** VIRTIO_IOMMU_MAP_F_* */
  flags: number;
}
export interface ViommuUnmapFields {
  domain: number;
  virtStart: number;
  /** inclusive */
  virtEnd: number;
}
export interface ViommuProbeFields {
  endpoint: number;
}
/** What the device read; `reservedZero` is false if any reserved byte of the body was set (ATTACH must then fail with INVAL). */
export type ViommuRead<T> = T & { reservedZero: boolean };

export function writeAttachRequest(mem: GuestMemory, gpa: number, f: ViommuAttachFields): void {
  writeHead(mem, gpa, VIRTIO_IOMMU_T_ATTACH, 24);
  mem.dv.setUint32(gpa + 4, checkU32(f.domain, 'domain'), true);
  mem.dv.setUint32(gpa + 8, checkU32(f.endpoint, 'endpoint'), true);
  mem.dv.setUint32(gpa + 12, checkU32(f.flags, 'flags'), true);
}

export function readAttachRequest(mem: GuestMemory, gpa: number): ViommuRead<ViommuAttachFields> {
  const dv = mem.dv;
  return {
    domain: dv.getUint32(gpa + 4, true),
    endpoint: dv.getUint32(gpa + 8, true),
    flags: dv.getUint32(gpa + 12, true),
    reservedZero: allZero(mem.u8, gpa + 16, 4),
  };
}

export function writeDetachRequest(mem: GuestMemory, gpa: number, f: ViommuDetachFields): void {
  writeHead(mem, gpa, VIRTIO_IOMMU_T_DETACH, 24);
  mem.dv.setUint32(gpa + 4, checkU32(f.domain, 'domain'), true);
  mem.dv.setUint32(gpa + 8, checkU32(f.endpoint, 'endpoint'), true);
}

export function readDetachRequest(mem: GuestMemory, gpa: number): ViommuRead<ViommuDetachFields> {
  return { domain: mem.dv.getUint32(gpa + 4, true), endpoint: mem.dv.getUint32(gpa + 8, true), reservedZero: allZero(mem.u8, gpa + 12, 8) };
}

export function writeMapRequest(mem: GuestMemory, gpa: number, f: ViommuMapFields): void {
  writeHead(mem, gpa, VIRTIO_IOMMU_T_MAP, 40);
  const dv = mem.dv;
  dv.setUint32(gpa + 4, checkU32(f.domain, 'domain'), true);
  writeU64(dv, gpa + 8, f.virtStart, 'virtio-iommu virt_start');
  writeU64(dv, gpa + 16, f.virtEnd, 'virtio-iommu virt_end');
  writeU64(dv, gpa + 24, f.physStart, 'virtio-iommu phys_start');
  dv.setUint32(gpa + 32, checkU32(f.flags, 'flags'), true);
}

export function readMapRequest(mem: GuestMemory, gpa: number): ViommuMapFields {
  const dv = mem.dv;
  return {
    domain: dv.getUint32(gpa + 4, true),
    virtStart: readU64(dv, gpa + 8),
    virtEnd: readU64(dv, gpa + 16),
    physStart: readU64(dv, gpa + 24),
    flags: dv.getUint32(gpa + 32, true),
  };
}

export function writeUnmapRequest(mem: GuestMemory, gpa: number, f: ViommuUnmapFields): void {
  writeHead(mem, gpa, VIRTIO_IOMMU_T_UNMAP, 32);
  const dv = mem.dv;
  dv.setUint32(gpa + 4, checkU32(f.domain, 'domain'), true);
  writeU64(dv, gpa + 8, f.virtStart, 'virtio-iommu virt_start');
  writeU64(dv, gpa + 16, f.virtEnd, 'virtio-iommu virt_end');
}

export function readUnmapRequest(mem: GuestMemory, gpa: number): ViommuRead<ViommuUnmapFields> {
  const dv = mem.dv;
  return { domain: dv.getUint32(gpa + 4, true), virtStart: readU64(dv, gpa + 8), virtEnd: readU64(dv, gpa + 16), reservedZero: allZero(mem.u8, gpa + 24, 4) };
}

/** Writes head, endpoint and zeroes reserved, properties and tail (the buffer the device fills). */
export function writeProbeRequest(mem: GuestMemory, gpa: number, f: ViommuProbeFields, probeSizeBytes = VIRTIO_IOMMU_PROBE_SIZE_BYTES_DEFAULT): void {
  writeHead(mem, gpa, VIRTIO_IOMMU_T_PROBE, requestSizeBytes(VIRTIO_IOMMU_T_PROBE, probeSizeBytes));
  mem.dv.setUint32(gpa + 4, checkU32(f.endpoint, 'endpoint'), true);
}

export function readProbeRequest(mem: GuestMemory, gpa: number): ViommuRead<ViommuProbeFields> {
  return { endpoint: mem.dv.getUint32(gpa + 4, true), reservedZero: allZero(mem.u8, gpa + 8, 64) };
}

// ---------------------------------------------------------------- PROBE properties

export interface ViommuResvMem {
  /** VIRTIO_IOMMU_RESV_MEM_T_RESERVED or VIRTIO_IOMMU_RESV_MEM_T_MSI */
  subtype: number;
  start: number;
  /** inclusive */
  end: number;
}

export type ViommuProbeProperty =
  | ({ kind: 'resv-mem' } & ViommuResvMem)
  /** a property the driver does not know (or whose reserved bits are set): skipped */
  | { kind: 'ignored'; type: number; lengthBytes: number };

/**
 * Device side: write `props` as RESV_MEM properties into the properties area
 * at `propertiesGpa` (request gpa + 72) and zero the rest of the
 * `probeSizeBytes`. Returns the bytes of properties written. Throws
 * RangeError when they do not fit (the device then answers INVAL).
 */
export function writeProbeProperties(mem: GuestMemory, propertiesGpa: number, probeSizeBytes: number, props: readonly ViommuResvMem[]): number {
  checkProbeSize(probeSizeBytes);
  const needed = props.length * VIRTIO_IOMMU_RESV_MEM_BYTES;
  if (needed > probeSizeBytes) throw new RangeError(`virtio-iommu: ${props.length} RESV_MEM properties need ${needed} bytes, probe_size is ${probeSizeBytes}`);
  mem.u8.fill(0, propertiesGpa, propertiesGpa + probeSizeBytes);
  const dv = mem.dv;
  let at = propertiesGpa;
  for (const p of props) {
    if (!Number.isInteger(p.subtype) || p.subtype < 0 || p.subtype > 0xff) throw new RangeError(`virtio-iommu RESV_MEM subtype ${p.subtype} is not a u8`);
    dv.setUint16(at, VIRTIO_IOMMU_PROBE_T_RESV_MEM, true);
    dv.setUint16(at + 2, VIRTIO_IOMMU_RESV_MEM_BYTES - VIRTIO_IOMMU_PROPERTY_HEADER_BYTES, true);
    mem.u8[at + 4] = p.subtype;
    writeU64(dv, at + 8, p.start, 'virtio-iommu RESV_MEM start');
    writeU64(dv, at + 16, p.end, 'virtio-iommu RESV_MEM end');
    at += VIRTIO_IOMMU_RESV_MEM_BYTES;
  }
  return needed;
}

/**
 * Driver side (Linux viommu_probe_endpoint): parse properties until a NONE
 * type or the end of `probeSizeBytes`. A property whose reserved type bits
 * are set, or that is unknown, is reported as 'ignored'; one that runs past
 * the end stops the parse; a RESV_MEM too short to hold its fields is
 * ignored; an unknown RESV_MEM subtype is kept (the driver treats it as
 * RESERVED).
 */
export function readProbeProperties(mem: GuestMemory, propertiesGpa: number, probeSizeBytes: number): ViommuProbeProperty[] {
  checkProbeSize(probeSizeBytes);
  const dv = mem.dv;
  const out: ViommuProbeProperty[] = [];
  let cur = 0;
  while (cur + VIRTIO_IOMMU_PROPERTY_HEADER_BYTES <= probeSizeBytes) {
    const rawType = dv.getUint16(propertiesGpa + cur, true);
    const lengthBytes = dv.getUint16(propertiesGpa + cur + 2, true);
    if (rawType === VIRTIO_IOMMU_PROBE_T_NONE) break;
    const total = VIRTIO_IOMMU_PROPERTY_HEADER_BYTES + lengthBytes;
    if (cur + total > probeSizeBytes) break;
    const at = propertiesGpa + cur;
    if (rawType === VIRTIO_IOMMU_PROBE_T_RESV_MEM && total >= VIRTIO_IOMMU_RESV_MEM_BYTES) {
      out.push({ kind: 'resv-mem', subtype: mem.u8[at + 4], start: readU64(dv, at + 8), end: readU64(dv, at + 16) });
    } else {
      out.push({ kind: 'ignored', type: rawType, lengthBytes });
    }
    cur += total;
  }
  return out;
}

// ---------------------------------------------------------------- device-side decoder

export type ViommuRequest =
  | ({ type: typeof VIRTIO_IOMMU_T_ATTACH } & ViommuRead<ViommuAttachFields>)
  | ({ type: typeof VIRTIO_IOMMU_T_DETACH } & ViommuRead<ViommuDetachFields>)
  | ({ type: typeof VIRTIO_IOMMU_T_MAP } & ViommuMapFields)
  | ({ type: typeof VIRTIO_IOMMU_T_UNMAP } & ViommuRead<ViommuUnmapFields>)
  | ({ type: typeof VIRTIO_IOMMU_T_PROBE } & ViommuRead<ViommuProbeFields>)
  | {
      type: 'reject';
      rawType: number;
      /**
       * what to answer in the tail: UNSUPP for an unknown type (as QEMU
       * does), INVAL for a request too short for its type; null when the
       * device-writable part cannot even hold a tail — then return the
       * buffer unwritten, used length 0 (spec §5.13.6)
       */
      status: number | null;
      reason: string;
    };

/**
 * Device side (QEMU virtio_iommu_handle_command): read the head of the
 * device-readable part at `outGpa` and decode the request it names.
 * `outLenBytes` / `inLenBytes` are the sizes of the device-readable and
 * device-writable parts as the virtqueue chain gave them; the tail goes at
 * `inGpa + inLenBytes - 4` (after the properties for PROBE).
 */
export function decodeRequest(
  mem: GuestMemory,
  outGpa: number,
  outLenBytes: number,
  inLenBytes: number,
  probeSizeBytes = VIRTIO_IOMMU_PROBE_SIZE_BYTES_DEFAULT,
): ViommuRequest {
  const rawType = outLenBytes >= 1 ? mem.u8[outGpa] : -1;
  if (inLenBytes < VIRTIO_IOMMU_TAIL_BYTES)
    return { type: 'reject', rawType, status: null, reason: `device-writable part of ${inLenBytes} bytes cannot hold the tail` };
  if (outLenBytes < VIRTIO_IOMMU_HEAD_BYTES)
    return { type: 'reject', rawType, status: VIRTIO_IOMMU_S_INVAL, reason: `device-readable part of ${outLenBytes} bytes cannot hold the head` };
  if (rawType < VIRTIO_IOMMU_T_ATTACH || rawType > VIRTIO_IOMMU_T_PROBE)
    return { type: 'reject', rawType, status: VIRTIO_IOMMU_S_UNSUPP, reason: `unknown request type ${rawType}` };
  const needOut = viommuGetWriteDescOffsetBytes(rawType, probeSizeBytes);
  const needIn = requestSizeBytes(rawType, probeSizeBytes) - needOut;
  if (outLenBytes < needOut || inLenBytes < needIn) {
    return {
      type: 'reject',
      rawType,
      status: VIRTIO_IOMMU_S_INVAL,
      reason: `type ${rawType} needs ${needOut}+${needIn} bytes, got ${outLenBytes}+${inLenBytes}`,
    };
  }
  switch (rawType) {
    case VIRTIO_IOMMU_T_ATTACH:
      return { type: rawType, ...readAttachRequest(mem, outGpa) };
    case VIRTIO_IOMMU_T_DETACH:
      return { type: rawType, ...readDetachRequest(mem, outGpa) };
    case VIRTIO_IOMMU_T_MAP:
      return { type: rawType, ...readMapRequest(mem, outGpa) };
    case VIRTIO_IOMMU_T_UNMAP:
      return { type: rawType, ...readUnmapRequest(mem, outGpa) };
    default:
      return { type: VIRTIO_IOMMU_T_PROBE, ...readProbeRequest(mem, outGpa) };
  }
}
