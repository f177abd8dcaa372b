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
       * what to answer in the tail: INVAL for a request too short for its
       * type; null for an unknown type (QEMU answers UNSUPP; the spec says
       * the buffer goes back unwritten) and when the device-writable part
       * cannot even hold a tail — then return the buffer unwritten, used
       * length 0 (spec §5.13.6)
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
  // "If a request type is not recognized, the device SHOULD NOT write the buffer and SHOULD set the used length to zero."
  if (rawType < VIRTIO_IOMMU_T_ATTACH || rawType > VIRTIO_IOMMU_T_PROBE)
    return { type: 'reject', rawType, status: null, reason: `unknown request type ${rawType}` };
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
    case VIRTIO_IOMMU_T_MAP: {
      // MAP and UNMAP come once or more per I/O: their fields listed, not spread
      const r = readMapRequest(mem, outGpa);
      return { type: rawType, domain: r.domain, virtStart: r.virtStart, virtEnd: r.virtEnd, physStart: r.physStart, flags: r.flags };
    }
    case VIRTIO_IOMMU_T_UNMAP: {
      const r = readUnmapRequest(mem, outGpa);
      return { type: rawType, domain: r.domain, virtStart: r.virtStart, virtEnd: r.virtEnd, reservedZero: r.reservedZero };
    }
    default:
      return { type: VIRTIO_IOMMU_T_PROBE, ...readProbeRequest(mem, outGpa) };
  }
}

// ---------------------------------------------------------------- exact u64

/** A u64 field exactly, as a bigint (for the rare value at or above 2^53, where `readU64` rounds). */
export function readU64Exact(mem: GuestMemory, gpa: number): bigint {
  return mem.dv.getBigUint64(gpa, true);
}

/** Byte offsets of MAP / UNMAP's u64 fields in the device-readable part. */
export const VIRTIO_IOMMU_VIRT_START_OFFSET = 8;
export const VIRTIO_IOMMU_VIRT_END_OFFSET = 16;
export const VIRTIO_IOMMU_PHYS_START_OFFSET = 24;

// ---------------------------------------------------------------- feature bits and config space

/**
 * Feature bits (virtio 1.2 §5.13.3). The device offers them in
 * `device_feature`; the driver writes the ones it accepts to
 * `driver_feature` and sets FEATURES_OK.
 */
export const VIRTIO_IOMMU_F_INPUT_RANGE = 0;
export const VIRTIO_IOMMU_F_DOMAIN_RANGE = 1;
export const VIRTIO_IOMMU_F_MAP_UNMAP = 2;
export const VIRTIO_IOMMU_F_BYPASS = 3;
export const VIRTIO_IOMMU_F_PROBE = 4;
export const VIRTIO_IOMMU_F_MMIO = 5;
export const VIRTIO_IOMMU_F_BYPASS_CONFIG = 6;

/** device_status bits (virtio 1.2 §2.1). */
export const VIRTIO_CONFIG_S_ACKNOWLEDGE = 1;
export const VIRTIO_CONFIG_S_DRIVER = 2;
export const VIRTIO_CONFIG_S_DRIVER_OK = 4;
export const VIRTIO_CONFIG_S_FEATURES_OK = 8;

/** The mask of one feature bit (bits 0–31: the device-specific ones live there). */
export function viommuFeature(bit: number): number {
  return 1 << bit;
}

/**
 * The virtio-iommu's configuration, as the device presents it and the
 * driver reads it (struct virtio_iommu_config, 40 bytes).
 */
export interface ViommuConfig {
  /** supported page sizes; the lowest set bit is the granularity */
  pageSizeMask: bigint;
  /** the IOVAs the device translates, inclusive (F_INPUT_RANGE) */
  inputRange: { start: bigint; end: bigint };
  /** the domain ids the device accepts, inclusive (F_DOMAIN_RANGE) */
  domainRange: { start: number; end: number };
  /** bytes of properties in a PROBE request (F_PROBE) */
  probeSize: number;
  /** 1: endpoints not attached to a domain are in bypass mode (F_BYPASS_CONFIG) */
  bypass: number;
}

/**
 * The page the driver and the device share for configuration: the subset
 * of the virtio-pci common configuration a driver uses to negotiate
 * features, then the device-specific configuration. In a real machine
 * this is the device's BAR, read and written by the driver through
 * MMIO; here it is a page of guest RAM set aside for it, written by the
 * device when the VMM creates it and read by the driver at probe.
 * | offset | size | field |
 * |---|---|---|
 * | 0  | 4 | device_feature, bits 0–31 (written by the device) |
 * | 4  | 4 | driver_feature, bits 0–31 (written by the driver) |
 * | 8  | 4 | device_status (driver: ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK) |
 * | 16 | 8 | page_size_mask u64 |
 * | 24 | 8 | input_range.start u64 |
 * | 32 | 8 | input_range.end u64 |
 * | 40 | 4 | domain_range.start u32 |
 * | 44 | 4 | domain_range.end u32 |
 * | 48 | 4 | probe_size u32 |
 * | 52 | 1 | bypass u8 (0 or 1) |
 * | 53 | 3 | reserved |
 */
export const VIOMMU_CONFIG_PAGE_BYTES = 64;
const CFG_DEVICE_FEATURE = 0;
const CFG_DRIVER_FEATURE = 4;
const CFG_STATUS = 8;
const CFG_DEVICE = 16;

/** Device side: present `features` and `config` (before the driver probes). */
export function writeViommuConfigPage(mem: GuestMemory, gpa: number, features: number, config: ViommuConfig): void {
  mem.u8.fill(0, gpa, gpa + VIOMMU_CONFIG_PAGE_BYTES);
  const dv = mem.dv;
  dv.setUint32(gpa + CFG_DEVICE_FEATURE, features >>> 0, true);
  const c = gpa + CFG_DEVICE;
  dv.setBigUint64(c, config.pageSizeMask, true);
  dv.setBigUint64(c + 8, config.inputRange.start, true);
  dv.setBigUint64(c + 16, config.inputRange.end, true);
  dv.setUint32(c + 24, config.domainRange.start, true);
  dv.setUint32(c + 28, config.domainRange.end, true);
  dv.setUint32(c + 32, config.probeSize, true);
  if (config.bypass !== 0 && config.bypass !== 1) throw new RangeError(`virtio-iommu config bypass ${config.bypass} is not 0 or 1`);
  mem.u8[c + 36] = config.bypass;
}

/** Driver side: the device-specific configuration. */
export function readViommuConfig(mem: GuestMemory, gpa: number): ViommuConfig {
  const dv = mem.dv;
  const c = gpa + CFG_DEVICE;
  return {
    pageSizeMask: dv.getBigUint64(c, true),
    inputRange: { start: dv.getBigUint64(c + 8, true), end: dv.getBigUint64(c + 16, true) },
    domainRange: { start: dv.getUint32(c + 24, true), end: dv.getUint32(c + 28, true) },
    probeSize: dv.getUint32(c + 32, true),
    bypass: mem.u8[c + 36],
  };
}

/** Driver side: the features the device offers. */
export function readDeviceFeatures(mem: GuestMemory, gpa: number): number {
  return mem.dv.getUint32(gpa + CFG_DEVICE_FEATURE, true);
}

/** Driver side: accept `features` (a subset of the offer) and set FEATURES_OK; the device reads them with `readNegotiatedFeatures`. */
export function writeDriverFeatures(mem: GuestMemory, gpa: number, features: number): void {
  const i32 = new Int32Array(mem.u8.buffer as SharedArrayBuffer, gpa, 4);
  Atomics.store(i32, CFG_DRIVER_FEATURE / 4, features | 0);
  Atomics.or(i32, CFG_STATUS / 4, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
}

/** Driver side: the device may be used (DRIVER_OK). */
export function writeDriverOk(mem: GuestMemory, gpa: number): void {
  Atomics.or(new Int32Array(mem.u8.buffer as SharedArrayBuffer, gpa, 4), CFG_STATUS / 4, VIRTIO_CONFIG_S_DRIVER_OK);
}

/** Device side: device_status. */
export function readDeviceStatus(mem: GuestMemory, gpa: number): number {
  return Atomics.load(new Int32Array(mem.u8.buffer as SharedArrayBuffer, gpa, 4), CFG_STATUS / 4);
}

/** Device side: the features the driver accepted, or null before FEATURES_OK. */
export function readNegotiatedFeatures(mem: GuestMemory, gpa: number): number | null {
  const i32 = new Int32Array(mem.u8.buffer as SharedArrayBuffer, gpa, 4);
  if ((Atomics.load(i32, CFG_STATUS / 4) & VIRTIO_CONFIG_S_FEATURES_OK) === 0) return null;
  return Atomics.load(i32, CFG_DRIVER_FEATURE / 4) >>> 0;
}

// ---------------------------------------------------------------- fault reports (event queue)

/**
 * struct virtio_iommu_fault (24 B), written by the device into a buffer the
 * driver left on the event queue:
 * | offset | size | field |
 * |---|---|---|
 * | 0  | 1 | reason: 0 UNKNOWN, 1 DOMAIN, 2 MAPPING |
 * | 1  | 3 | reserved (zero) |
 * | 4  | 4 | flags: READ 1, WRITE 2, ADDRESS 0x100 (address is valid) |
 * | 8  | 4 | endpoint u32 |
 * | 12 | 4 | reserved1 (zero) |
 * | 16 | 8 | address u64 |
 */
export const VIRTIO_IOMMU_FAULT_R_UNKNOWN = 0;
export const VIRTIO_IOMMU_FAULT_R_DOMAIN = 1;
export const VIRTIO_IOMMU_FAULT_R_MAPPING = 2;
export const VIRTIO_IOMMU_FAULT_F_READ = 1;
export const VIRTIO_IOMMU_FAULT_F_WRITE = 2;
export const VIRTIO_IOMMU_FAULT_F_EXEC = 4;
export const VIRTIO_IOMMU_FAULT_F_ADDRESS = 0x100;
export const VIRTIO_IOMMU_FAULT_BYTES = 24;

export interface ViommuFault {
  reason: number;
  flags: number;
  endpoint: number;
  address: number;
}

/** Device side: write a fault report (reserved fields zero, undefined flags cleared). */
export function writeFault(mem: GuestMemory, gpa: number, f: ViommuFault): void {
  mem.u8.fill(0, gpa, gpa + VIRTIO_IOMMU_FAULT_BYTES);
  mem.u8[gpa] = f.reason;
  mem.dv.setUint32(
    gpa + 4,
    f.flags & (VIRTIO_IOMMU_FAULT_F_READ | VIRTIO_IOMMU_FAULT_F_WRITE | VIRTIO_IOMMU_FAULT_F_EXEC | VIRTIO_IOMMU_FAULT_F_ADDRESS),
    true,
  );
  mem.dv.setUint32(gpa + 8, checkU32(f.endpoint, 'fault endpoint'), true);
  writeU64(mem.dv, gpa + 16, f.address, 'virtio-iommu fault address');
}

/**
 * Driver side (viommu_fault_handler): the report, or null when a reserved
 * byte is set (the driver MUST ignore such a report). An unknown reason
 * reads as UNKNOWN; undefined flags and reserved1 are ignored.
 */
export function readFault(mem: GuestMemory, gpa: number): ViommuFault | null {
  if (!allZero(mem.u8, gpa + 1, 3)) return null;
  const reason = mem.u8[gpa];
  return {
    reason: reason <= VIRTIO_IOMMU_FAULT_R_MAPPING ? reason : VIRTIO_IOMMU_FAULT_R_UNKNOWN,
    flags:
      mem.dv.getUint32(gpa + 4, true) & (VIRTIO_IOMMU_FAULT_F_READ | VIRTIO_IOMMU_FAULT_F_WRITE | VIRTIO_IOMMU_FAULT_F_EXEC | VIRTIO_IOMMU_FAULT_F_ADDRESS),
    endpoint: mem.dv.getUint32(gpa + 8, true),
    address: readU64(mem.dv, gpa + 16),
  };
}
