import type { ExecutionContext } from 'ava';
import test from 'ava';
import { mulberry32Float } from '../src/prng.js';
import {
  decodeRequest,
  readAttachRequest,
  readDetachRequest,
  readMapRequest,
  readProbeProperties,
  readProbeRequest,
  readTail,
  readUnmapRequest,
  requestSizeBytes,
  statusName,
  tailGpaOf,
  VIRTIO_IOMMU_ATTACH_F_BYPASS,
  VIRTIO_IOMMU_MAP_F_MMIO,
  VIRTIO_IOMMU_MAP_F_READ,
  VIRTIO_IOMMU_MAP_F_WRITE,
  VIRTIO_IOMMU_PROBE_SIZE_BYTES_DEFAULT,
  VIRTIO_IOMMU_PROBE_T_RESV_MEM,
  VIRTIO_IOMMU_RESV_MEM_T_MSI,
  VIRTIO_IOMMU_RESV_MEM_T_RESERVED,
  VIRTIO_IOMMU_S_DEVERR,
  VIRTIO_IOMMU_S_FAULT,
  VIRTIO_IOMMU_S_INVAL,
  VIRTIO_IOMMU_S_IOERR,
  VIRTIO_IOMMU_S_NOENT,
  VIRTIO_IOMMU_S_NOMEM,
  VIRTIO_IOMMU_S_OK,
  VIRTIO_IOMMU_S_RANGE,
  VIRTIO_IOMMU_S_UNSUPP,
  VIRTIO_IOMMU_T_ATTACH,
  VIRTIO_IOMMU_T_DETACH,
  VIRTIO_IOMMU_T_MAP,
  VIRTIO_IOMMU_T_PROBE,
  VIRTIO_IOMMU_T_UNMAP,
  viommuGetWriteDescOffsetBytes,
  writeAttachRequest,
  writeDetachRequest,
  writeMapRequest,
  writeProbeProperties,
  writeProbeRequest,
  writeTail,
  writeUnmapRequest,
} from '../src/wire/virtio-iommu.js';
import type { GuestMemory } from '../src/wire/virtqueue.js';
import { attachGuestMemory } from '../src/wire/virtqueue.js';

const mulberry32 = mulberry32Float;

const RAM_BYTES = 64 * 1024;

/** Guest RAM full of seeded random "canary" bytes, and a snapshot to compare against. */
function canaryRam(rand: () => number): { mem: GuestMemory; before: Uint8Array } {
  const mem = attachGuestMemory(new SharedArrayBuffer(RAM_BYTES));
  for (let i = 0; i < RAM_BYTES; i++) mem.u8[i] = Math.floor(rand() * 256);
  return { mem, before: mem.u8.slice() };
}

/** Every byte outside [from, from + len) is unchanged. */
function assertOnlyTouched(t: ExecutionContext, mem: GuestMemory, before: Uint8Array, from: number, lenBytes: number): void {
  for (let i = 0; i < RAM_BYTES; i++) {
    if (i >= from && i < from + lenBytes) continue;
    if (mem.u8[i] !== before[i]) {
      t.fail(`byte at ${i} changed, outside [${from}, ${from + lenBytes})`);
      return;
    }
  }
  t.pass();
}

const u32 = (r: () => number): number => Math.floor(r() * 2 ** 32);
const addr48 = (r: () => number): number => Math.floor(r() * 2 ** 36) * 4096;
const le64 = (mem: GuestMemory, gpa: number): number => Number(mem.dv.getBigUint64(gpa, true));
const zeros = (mem: GuestMemory, gpa: number, n: number): boolean => mem.u8.subarray(gpa, gpa + n).every((b) => b === 0);

test('request sizes match the spec structs (MAP 40 with inclusive end, UNMAP 32, ATTACH/DETACH 24)', (t) => {
  t.is(requestSizeBytes(VIRTIO_IOMMU_T_ATTACH), 24);
  t.is(requestSizeBytes(VIRTIO_IOMMU_T_DETACH), 24);
  t.is(requestSizeBytes(VIRTIO_IOMMU_T_MAP), 40);
  t.is(requestSizeBytes(VIRTIO_IOMMU_T_UNMAP), 32);
  t.is(requestSizeBytes(VIRTIO_IOMMU_T_PROBE), 4 + 4 + 64 + 512 + 4);
  t.is(requestSizeBytes(VIRTIO_IOMMU_T_PROBE, 256), 4 + 4 + 64 + 256 + 4);
  t.throws(() => requestSizeBytes(9), { instanceOf: RangeError });
  t.throws(() => requestSizeBytes(VIRTIO_IOMMU_T_PROBE, 100), { instanceOf: RangeError });
  // the device-readable part ends where the tail (or PROBE's properties) begins
  t.is(viommuGetWriteDescOffsetBytes(VIRTIO_IOMMU_T_MAP), 36);
  t.is(viommuGetWriteDescOffsetBytes(VIRTIO_IOMMU_T_UNMAP), 28);
  t.is(viommuGetWriteDescOffsetBytes(VIRTIO_IOMMU_T_ATTACH), 20);
  t.is(viommuGetWriteDescOffsetBytes(VIRTIO_IOMMU_T_PROBE), 72);
});

test('status names', (t) => {
  const codes = [
    VIRTIO_IOMMU_S_OK,
    VIRTIO_IOMMU_S_IOERR,
    VIRTIO_IOMMU_S_UNSUPP,
    VIRTIO_IOMMU_S_DEVERR,
    VIRTIO_IOMMU_S_INVAL,
    VIRTIO_IOMMU_S_RANGE,
    VIRTIO_IOMMU_S_NOENT,
    VIRTIO_IOMMU_S_FAULT,
    VIRTIO_IOMMU_S_NOMEM,
  ];
  t.deepEqual(codes, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  t.deepEqual(
    codes.map(statusName),
    ['OK', 'IOERR', 'UNSUPP', 'DEVERR', 'INVAL', 'RANGE', 'NOENT', 'FAULT', 'NOMEM'].map((n) => `VIRTIO_IOMMU_S_${n}`),
  );
  t.is(statusName(42), 'VIRTIO_IOMMU_S_42?');
});

test('MAP: exact byte offsets, round trip, no overrun (seeded)', (t) => {
  const rand = mulberry32(0x3a9);
  for (let iter = 0; iter < 200; iter++) {
    const { mem, before } = canaryRam(rand);
    const gpa = 8 * Math.floor(rand() * ((RAM_BYTES - 64) / 8));
    const virtStart = addr48(rand);
    const f = {
      domain: u32(rand),
      virtStart,
      virtEnd: virtStart + 4096 * (1 + Math.floor(rand() * 64)) - 1,
      physStart: addr48(rand),
      flags: Math.floor(rand() * 8),
    };
    writeMapRequest(mem, gpa, f);
    t.is(mem.u8[gpa], VIRTIO_IOMMU_T_MAP);
    t.true(zeros(mem, gpa + 1, 3), 'head reserved');
    t.is(mem.dv.getUint32(gpa + 4, true), f.domain);
    t.is(le64(mem, gpa + 8), f.virtStart);
    t.is(le64(mem, gpa + 16), f.virtEnd);
    t.is(le64(mem, gpa + 24), f.physStart);
    t.is(mem.dv.getUint32(gpa + 32, true), f.flags);
    t.true(zeros(mem, gpa + 36, 4), 'tail zeroed');
    t.deepEqual(readMapRequest(mem, gpa), f);
    assertOnlyTouched(t, mem, before, gpa, 40);
  }
});

test('MAP: a one-page mapping has virt_end = virt_start + 4095 (inclusive)', (t) => {
  const mem = attachGuestMemory(new SharedArrayBuffer(4096));
  writeMapRequest(mem, 0, { domain: 1, virtStart: 0x10000, virtEnd: 0x10fff, physStart: 0x2000, flags: VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_WRITE });
  t.is(le64(mem, 16) - le64(mem, 8) + 1, 4096);
  t.is(mem.dv.getUint32(32, true), 3);
  t.is(VIRTIO_IOMMU_MAP_F_MMIO, 4);
});

test('UNMAP, ATTACH, DETACH, PROBE: exact offsets, round trip, reserved zero, no overrun', (t) => {
  const rand = mulberry32(77);
  for (let iter = 0; iter < 100; iter++) {
    const { mem, before } = canaryRam(rand);
    const gpa = 8 * Math.floor(rand() * ((RAM_BYTES - 1024) / 8));

    const virtStart = addr48(rand);
    const un = { domain: u32(rand), virtStart, virtEnd: virtStart + 4096 * (1 + Math.floor(rand() * 16)) - 1 };
    writeUnmapRequest(mem, gpa, un);
    t.is(mem.u8[gpa], VIRTIO_IOMMU_T_UNMAP);
    t.is(mem.dv.getUint32(gpa + 4, true), un.domain);
    t.is(le64(mem, gpa + 8), un.virtStart);
    t.is(le64(mem, gpa + 16), un.virtEnd);
    t.true(zeros(mem, gpa + 24, 8), 'reserved[4] + tail');
    t.deepEqual(readUnmapRequest(mem, gpa), { ...un, reservedZero: true });
    assertOnlyTouched(t, mem, before, gpa, 32);
    mem.u8.set(before);

    const at = { domain: u32(rand), endpoint: u32(rand), flags: rand() < 0.5 ? VIRTIO_IOMMU_ATTACH_F_BYPASS : 0 };
    writeAttachRequest(mem, gpa, at);
    t.deepEqual(
      [mem.u8[gpa], mem.dv.getUint32(gpa + 4, true), mem.dv.getUint32(gpa + 8, true), mem.dv.getUint32(gpa + 12, true)],
      [VIRTIO_IOMMU_T_ATTACH, at.domain, at.endpoint, at.flags],
    );
    t.true(zeros(mem, gpa + 16, 8), 'reserved[4] + tail');
    t.deepEqual(readAttachRequest(mem, gpa), { ...at, reservedZero: true });
    assertOnlyTouched(t, mem, before, gpa, 24);
    mem.u8.set(before);

    const de = { domain: u32(rand), endpoint: u32(rand) };
    writeDetachRequest(mem, gpa, de);
    t.deepEqual([mem.u8[gpa], mem.dv.getUint32(gpa + 4, true), mem.dv.getUint32(gpa + 8, true)], [VIRTIO_IOMMU_T_DETACH, de.domain, de.endpoint]);
    t.true(zeros(mem, gpa + 12, 12), 'reserved[8] + tail');
    t.deepEqual(readDetachRequest(mem, gpa), { ...de, reservedZero: true });
    assertOnlyTouched(t, mem, before, gpa, 24);
    mem.u8.set(before);

    const probeSize = 8 * (1 + Math.floor(rand() * 64));
    const pr = { endpoint: u32(rand) };
    writeProbeRequest(mem, gpa, pr, probeSize);
    t.is(mem.u8[gpa], VIRTIO_IOMMU_T_PROBE);
    t.is(mem.dv.getUint32(gpa + 4, true), pr.endpoint);
    t.true(zeros(mem, gpa + 8, 64 + probeSize + 4), 'reserved[64] + properties + tail');
    t.deepEqual(readProbeRequest(mem, gpa), { ...pr, reservedZero: true });
    assertOnlyTouched(t, mem, before, gpa, 76 + probeSize);
  }
});

test('tail: written at the end of each request, status only, reserved zeroed', (t) => {
  const rand = mulberry32(5);
  const { mem, before } = canaryRam(rand);
  const gpa = 1000;
  for (const type of [VIRTIO_IOMMU_T_ATTACH, VIRTIO_IOMMU_T_DETACH, VIRTIO_IOMMU_T_MAP, VIRTIO_IOMMU_T_UNMAP, VIRTIO_IOMMU_T_PROBE]) {
    mem.u8.set(before);
    const tail = tailGpaOf(gpa, type);
    t.is(tail, gpa + requestSizeBytes(type) - 4);
    writeTail(mem, tail, VIRTIO_IOMMU_S_RANGE);
    t.is(readTail(mem, tail), VIRTIO_IOMMU_S_RANGE);
    t.deepEqual([...mem.u8.subarray(tail, tail + 4)], [5, 0, 0, 0]);
    assertOnlyTouched(t, mem, before, tail, 4);
  }
  t.is(tailGpaOf(0, VIRTIO_IOMMU_T_PROBE, 64), 72 + 64);
  t.throws(() => writeTail(mem, 0, 256), { instanceOf: RangeError });
});

test('writers reject values that do not fit their fields', (t) => {
  const mem = attachGuestMemory(new SharedArrayBuffer(4096));
  t.throws(() => writeAttachRequest(mem, 0, { domain: 2 ** 32, endpoint: 0, flags: 0 }), { instanceOf: RangeError });
  t.throws(() => writeMapRequest(mem, 0, { domain: 0, virtStart: -4096, virtEnd: 0, physStart: 0, flags: 0 }), { instanceOf: RangeError });
  t.throws(() => writeMapRequest(mem, 0, { domain: 0, virtStart: 2 ** 53, virtEnd: 0, physStart: 0, flags: 0 }), { instanceOf: RangeError });
  t.throws(() => writeUnmapRequest(mem, 0, { domain: 0, virtStart: 0.5, virtEnd: 0, physStart: 0 } as never), { instanceOf: RangeError });
});

test('readers: a u64 above 2^53 (e.g. virt_end = ~0) still compares above any IOVA limit', (t) => {
  const mem = attachGuestMemory(new SharedArrayBuffer(4096));
  writeUnmapRequest(mem, 0, { domain: 3, virtStart: 0, virtEnd: 4095 });
  mem.dv.setBigUint64(16, 0xffff_ffff_ffff_ffffn, true);
  const r = readUnmapRequest(mem, 0);
  t.true(r.virtEnd >= 2 ** 64 - 4096);
  t.true(r.virtEnd > 2 ** 48);
  mem.dv.setBigUint64(16, 2n ** 53n + 1n, true);
  t.true(readUnmapRequest(mem, 0).virtEnd >= 2 ** 53);
});

test('reserved bytes set by the driver are reported (ATTACH must then fail with INVAL)', (t) => {
  const mem = attachGuestMemory(new SharedArrayBuffer(4096));
  writeAttachRequest(mem, 0, { domain: 1, endpoint: 2, flags: 0 });
  mem.u8[19] = 1;
  t.false(readAttachRequest(mem, 0).reservedZero);
  writeUnmapRequest(mem, 64, { domain: 1, virtStart: 0, virtEnd: 4095 });
  mem.u8[64 + 24] = 0x80;
  t.false(readUnmapRequest(mem, 64).reservedZero);
  writeDetachRequest(mem, 128, { domain: 1, endpoint: 2 });
  mem.u8[128 + 19] = 2;
  t.false(readDetachRequest(mem, 128).reservedZero);
  writeProbeRequest(mem, 256, { endpoint: 9 }, 64);
  mem.u8[256 + 71] = 1;
  t.false(readProbeRequest(mem, 256).reservedZero);
});

test('PROBE: device writes RESV_MEM (MSI doorbell) properties, driver parses them', (t) => {
  const rand = mulberry32(11);
  const { mem, before } = canaryRam(rand);
  const gpa = 2048;
  const probeSize = VIRTIO_IOMMU_PROBE_SIZE_BYTES_DEFAULT;
  writeProbeRequest(mem, gpa, { endpoint: 0x10 }, probeSize);
  const props = [
    { subtype: VIRTIO_IOMMU_RESV_MEM_T_MSI, start: 0x0800_0000, end: 0x080f_ffff },
    { subtype: VIRTIO_IOMMU_RESV_MEM_T_RESERVED, start: 0xfee0_0000, end: 0xfeef_ffff },
  ];
  t.is(writeProbeProperties(mem, gpa + 72, probeSize, props), 48);
  // property 0: type 1, length 20 (value only), subtype, start, end; property 1 at +24
  const p = gpa + 72;
  t.is(mem.dv.getUint16(p, true), VIRTIO_IOMMU_PROBE_T_RESV_MEM);
  t.is(mem.dv.getUint16(p + 2, true), 20);
  t.is(mem.u8[p + 4], VIRTIO_IOMMU_RESV_MEM_T_MSI);
  t.true(zeros(mem, p + 5, 3));
  t.is(le64(mem, p + 8), 0x0800_0000);
  t.is(le64(mem, p + 16), 0x080f_ffff);
  t.is(mem.dv.getUint16(p + 24, true), VIRTIO_IOMMU_PROBE_T_RESV_MEM);
  t.true(zeros(mem, p + 48, probeSize - 48), 'rest of properties zero-filled');
  writeTail(mem, tailGpaOf(gpa, VIRTIO_IOMMU_T_PROBE, probeSize), VIRTIO_IOMMU_S_OK);
  assertOnlyTouched(t, mem, before, gpa, requestSizeBytes(VIRTIO_IOMMU_T_PROBE, probeSize));
  t.deepEqual(
    readProbeProperties(mem, p, probeSize),
    props.map((x) => ({ kind: 'resv-mem', ...x })),
  );
  t.throws(() => writeProbeProperties(mem, p, 40, props), { instanceOf: RangeError });
});

test('PROBE parsing: unknown types and reserved type bits are skipped, a NONE or an overrunning property ends the list', (t) => {
  const mem = attachGuestMemory(new SharedArrayBuffer(4096));
  const p = 0;
  // unknown type 7 with 4 bytes of value, then RESV_MEM with reserved bits, then a good RESV_MEM, then NONE
  mem.dv.setUint16(p, 7, true);
  mem.dv.setUint16(p + 2, 4, true);
  writeProbeProperties(mem, p + 8, 48, [
    { subtype: 1, start: 0x1000, end: 0x1fff },
    { subtype: 9, start: 0x4000, end: 0x4fff },
  ]);
  mem.dv.setUint16(p + 8, 0x1000 | VIRTIO_IOMMU_PROBE_T_RESV_MEM, true);
  t.deepEqual(readProbeProperties(mem, p, 128), [
    { kind: 'ignored', type: 7, lengthBytes: 4 },
    { kind: 'ignored', type: 0x1001, lengthBytes: 20 },
    { kind: 'resv-mem', subtype: 9, start: 0x4000, end: 0x4fff },
  ]);
  // a property that claims more bytes than probe_size ends the parse
  mem.dv.setUint16(p + 32 + 2, 200, true);
  t.is(readProbeProperties(mem, p, 128).length, 2);
});

test('decoder: dispatches every type, rejects unknown (no status: returned unwritten), short (INVAL) and tail-less (no status) requests', (t) => {
  const mem = attachGuestMemory(new SharedArrayBuffer(8192));
  writeAttachRequest(mem, 0, { domain: 4, endpoint: 8, flags: VIRTIO_IOMMU_ATTACH_F_BYPASS });
  t.deepEqual(decodeRequest(mem, 0, 20, 4), { type: VIRTIO_IOMMU_T_ATTACH, domain: 4, endpoint: 8, flags: 1, reservedZero: true });
  writeDetachRequest(mem, 64, { domain: 4, endpoint: 8 });
  t.deepEqual(decodeRequest(mem, 64, 20, 4), { type: VIRTIO_IOMMU_T_DETACH, domain: 4, endpoint: 8, reservedZero: true });
  writeMapRequest(mem, 128, { domain: 4, virtStart: 0x1000, virtEnd: 0x2fff, physStart: 0x9000, flags: 1 });
  t.deepEqual(decodeRequest(mem, 128, 36, 4), { type: VIRTIO_IOMMU_T_MAP, domain: 4, virtStart: 0x1000, virtEnd: 0x2fff, physStart: 0x9000, flags: 1 });
  writeUnmapRequest(mem, 192, { domain: 4, virtStart: 0x1000, virtEnd: 0x2fff });
  t.deepEqual(decodeRequest(mem, 192, 28, 4), { type: VIRTIO_IOMMU_T_UNMAP, domain: 4, virtStart: 0x1000, virtEnd: 0x2fff, reservedZero: true });
  writeProbeRequest(mem, 1024, { endpoint: 3 });
  t.deepEqual(decodeRequest(mem, 1024, 72, 516), { type: VIRTIO_IOMMU_T_PROBE, endpoint: 3, reservedZero: true });

  mem.u8[4096] = 0x42;
  const unknown = decodeRequest(mem, 4096, 40, 4);
  t.like(unknown, { type: 'reject', rawType: 0x42, status: null });
  t.like(decodeRequest(mem, 128, 35, 4), { type: 'reject', rawType: VIRTIO_IOMMU_T_MAP, status: VIRTIO_IOMMU_S_INVAL });
  t.like(decodeRequest(mem, 1024, 72, 100), { type: 'reject', rawType: VIRTIO_IOMMU_T_PROBE, status: VIRTIO_IOMMU_S_INVAL });
  t.like(decodeRequest(mem, 128, 2, 4), { type: 'reject', status: VIRTIO_IOMMU_S_INVAL });
  t.like(decodeRequest(mem, 128, 36, 3), { type: 'reject', status: null });
  // a longer device-readable part than needed is fine (the device ignores the excess)
  t.like(decodeRequest(mem, 128, 64, 8), { type: VIRTIO_IOMMU_T_MAP });
});
