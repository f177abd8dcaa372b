/**
 * Block contents that can be checked, in the spirit of fio's verify headers.
 * Every 4 KiB logical block the drive holds (pre-filled or written by a job)
 * is self-describing:
 *
 * | offset | size | field |
 * |--------|------|-------|
 * | 0      | 4    | magic 0x56534b42 ("VSKB") |
 * | 4      | 2    | verify algorithm (0 none, 1 crc32c, 2 md5) |
 * | 8      | 8    | byte offset of the block in the namespace |
 * | 16     | 4    | seed the payload was generated from |
 * | 24     | 16   | checksum of bytes 0–23 and 40–4095 (crc32c: 4 bytes; md5: 16) |
 * | 40     | 4056 | payload: a per-seed template, the block number stamped every 512 bytes |
 *
 * A reader checks magic, offset and checksum (or, with no checksum, the
 * regenerated payload), so a block that landed at the wrong place, was torn,
 * or was never written is caught. The checksums use @node-rs/crc32 (native
 * crc32c) and node:crypto (md5).
 */

import { createHash } from 'node:crypto';
import { crc32c } from '@node-rs/crc32';

export const BLOCK_BYTES = 4096;
export const PATTERN_MAGIC = 0x56534b42;
export type VerifyAlgo = 'none' | 'crc32c' | 'md5';
const ALGO_CODE: Record<VerifyAlgo, number> = { none: 0, crc32c: 1, md5: 2 };
const PAYLOAD_OFFSET = 40;
const CSUM_OFFSET = 24;

const templates = new Map<number, Uint8Array>();

function template(seed: number): Uint8Array {
  let t = templates.get(seed);
  if (!t) {
    t = new Uint8Array(BLOCK_BYTES);
    let x = (seed ^ 0x9e3779b9) >>> 0 || 1;
    const dv = new DataView(t.buffer);
    for (let i = 0; i < BLOCK_BYTES; i += 4) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      dv.setUint32(i, x, true);
    }
    templates.set(seed, t);
  }
  return t;
}

function checksum(u8: Uint8Array, off: number, algo: VerifyAlgo, out: Uint8Array): void {
  out.fill(0);
  if (algo === 'none') return;
  const head = u8.subarray(off, off + CSUM_OFFSET);
  const body = u8.subarray(off + PAYLOAD_OFFSET, off + BLOCK_BYTES);
  if (algo === 'crc32c') {
    const c = crc32c(Buffer.from(body.buffer, body.byteOffset, body.byteLength), crc32c(Buffer.from(head.buffer, head.byteOffset, head.byteLength)));
    new DataView(out.buffer, out.byteOffset).setUint32(0, c >>> 0, true);
  } else {
    out.set(createHash('md5').update(head).update(body).digest());
  }
}

const scratch = new Uint8Array(16);

/** The payload part of each seed's template (a view made once per seed). */
const payloads = new Map<number, Uint8Array>();

/** Write block `lba`'s content (generated from `seed`) at `u8[off…]`. */
export function fillBlock(u8: Uint8Array, off: number, lba: number, seed: number, algo: VerifyAlgo): void {
  let payload = payloads.get(seed);
  if (!payload) {
    payload = template(seed).subarray(PAYLOAD_OFFSET);
    payloads.set(seed, payload);
  }
  u8.set(payload, off + PAYLOAD_OFFSET);
  for (let s = 512; s < BLOCK_BYTES; s += 512) {
    u8[off + s] = lba & 0xff;
    u8[off + s + 1] = (lba >>> 8) & 0xff;
    u8[off + s + 2] = (lba >>> 16) & 0xff;
    u8[off + s + 3] = (lba >>> 24) & 0xff;
  }
  // the header, little-endian, byte by byte (no DataView per block)
  putU32(u8, off, PATTERN_MAGIC);
  putU32(u8, off + 4, ALGO_CODE[algo]);
  const byteOffset = lba * BLOCK_BYTES;
  putU32(u8, off + 8, byteOffset >>> 0);
  putU32(u8, off + 12, Math.floor(byteOffset / 0x1_0000_0000));
  putU32(u8, off + 16, seed >>> 0);
  putU32(u8, off + 20, 0);
  checksum(u8, off, algo, scratch);
  u8.set(scratch, off + CSUM_OFFSET);
}

function putU32(u8: Uint8Array, off: number, v: number): void {
  u8[off] = v & 0xff;
  u8[off + 1] = (v >>> 8) & 0xff;
  u8[off + 2] = (v >>> 16) & 0xff;
  u8[off + 3] = (v >>> 24) & 0xff;
}

/** The seed stamped in the header of the block at `u8[off…]` (who wrote it). */
export function blockSeed(u8: Uint8Array, off: number): number {
  return new DataView(u8.buffer, u8.byteOffset).getUint32(off + 16, true);
}

/**
 * True when the block at `u8[off…]` is intact content for block `lba`; with
 * `expectSeed`, also that it is the content that writer put there (a write
 * that never reached the drive leaves the older content: caught).
 */
export function verifyBlock(u8: Uint8Array, off: number, lba: number, algo: VerifyAlgo, expectSeed?: number): boolean {
  const dv = new DataView(u8.buffer, u8.byteOffset);
  if (dv.getUint32(off, true) !== PATTERN_MAGIC) return false;
  if (expectSeed !== undefined && dv.getUint32(off + 16, true) !== expectSeed >>> 0) return false;
  const byteOffset = dv.getUint32(off + 8, true) + dv.getUint32(off + 12, true) * 0x1_0000_0000;
  if (byteOffset !== lba * BLOCK_BYTES) return false;
  const code = dv.getUint16(off + 4, true);
  if (algo !== 'none' && code === ALGO_CODE[algo]) {
    checksum(u8, off, algo, scratch);
    for (let i = 0; i < 16; i++) if (u8[off + CSUM_OFFSET + i] !== scratch[i]) return false;
    return true;
  }
  // no checksum to rely on: regenerate the block and compare every byte
  const expect = new Uint8Array(BLOCK_BYTES);
  const codeAlgo = (Object.keys(ALGO_CODE) as VerifyAlgo[]).find((k) => ALGO_CODE[k] === code) ?? 'none';
  fillBlock(expect, 0, lba, dv.getUint32(off + 16, true), codeAlgo);
  for (let i = 0; i < BLOCK_BYTES; i++) if (u8[off + i] !== expect[i]) return false;
  return true;
}
