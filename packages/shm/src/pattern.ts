/**
 * Block contents that can be checked, in the spirit of fio's verify headers.
 * Every 4 KiB logical block a job writes is self-describing (the blocks no job
 * wrote hold headerless data: `fillUnwrittenBlock` below):
 *
 * | offset | size | field |
 * |--------|------|-------|
 * | 0      | 4    | magic 0x56534b42 ("VSKB") |
 * | 4      | 2    | verify algorithm (0 none, 1 crc32c, 2 md5, 3 sha256, 4 sha1, 5 xxhash, 6 meta) |
 * | 8      | 8    | byte offset of the block in the namespace |
 * | 16     | 4    | seed the payload was generated from |
 * | 24     | 32   | checksum of bytes 0–23 and 56–4095 (crc32c 4 bytes, xxhash 4, md5 16, sha1 20, sha256 32) |
 * | 56     | 4040 | payload: a per-seed template, the block number stamped every 512 bytes; with a verify pattern, the pattern alone |
 *
 * A reader checks magic, offset and checksum (or, with no checksum, the
 * regenerated payload), so a block that landed at the wrong place, was torn,
 * or was never written is caught. `meta` checks the header only (magic,
 * offset, seed), as fio's verify=meta checks its meta header. `pattern` has
 * no header at all: the block is the verify pattern repeated, and only the
 * pattern is checked, as fio's verify=pattern does. The checksums use
 * @node-rs/crc32 (native crc32c), node:crypto (md5, sha1, sha256) and
 * xxh32 below (fio's xxhash is XXH32, seed 0).
 */

import { createHash } from 'node:crypto';
import { crc32c } from '@node-rs/crc32';

export const BLOCK_BYTES = 4096;
export const PATTERN_MAGIC = 0x56534b42;
export type VerifyAlgo = 'none' | 'crc32c' | 'md5' | 'sha256' | 'sha1' | 'xxhash' | 'meta' | 'pattern';
const ALGO_CODE: Record<VerifyAlgo, number> = { none: 0, crc32c: 1, md5: 2, sha256: 3, sha1: 4, xxhash: 5, meta: 6, pattern: 7 };
const PAYLOAD_OFFSET = 56;
const CSUM_OFFSET = 24;
const CSUM_BYTES = 32;

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

/** XXH32 (seed 0) of `parts` joined, as fio's verify=xxhash computes it. */
export function xxh32(parts: readonly Uint8Array[], seed = 0): number {
  const P1 = 0x9e3779b1;
  const P2 = 0x85ebca77;
  const P3 = 0xc2b2ae3d;
  const P4 = 0x27d4eb2f;
  const P5 = 0x165667b1;
  const total = parts.reduce((n, p) => n + p.length, 0);
  const data = parts.length === 1 ? parts[0] : new Uint8Array(total);
  if (parts.length > 1) {
    let at = 0;
    for (const p of parts) {
      data.set(p, at);
      at += p.length;
    }
  }
  const rd = (i: number) => (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)) >>> 0;
  const rotl = (x: number, r: number) => ((x << r) | (x >>> (32 - r))) >>> 0;
  const round = (acc: number, lane: number) => Math.imul(rotl((acc + Math.imul(lane, P2)) >>> 0, 13), P1) >>> 0;
  let i = 0;
  let h: number;
  if (total >= 16) {
    let v1 = (seed + P1 + P2) >>> 0;
    let v2 = (seed + P2) >>> 0;
    let v3 = seed >>> 0;
    let v4 = (seed - P1) >>> 0;
    for (; i + 16 <= total; i += 16) {
      v1 = round(v1, rd(i));
      v2 = round(v2, rd(i + 4));
      v3 = round(v3, rd(i + 8));
      v4 = round(v4, rd(i + 12));
    }
    h = (rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18)) >>> 0;
  } else h = (seed + P5) >>> 0;
  h = (h + total) >>> 0;
  for (; i + 4 <= total; i += 4) h = Math.imul(rotl((h + Math.imul(rd(i), P3)) >>> 0, 17), P4) >>> 0;
  for (; i < total; i++) h = Math.imul(rotl((h + Math.imul(data[i], P5)) >>> 0, 11), P1) >>> 0;
  h ^= h >>> 15;
  h = Math.imul(h, P2) >>> 0;
  h ^= h >>> 13;
  h = Math.imul(h, P3) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

function checksum(u8: Uint8Array, off: number, algo: VerifyAlgo, out: Uint8Array): void {
  out.fill(0);
  if (algo === 'none' || algo === 'meta' || algo === 'pattern') return;
  const head = u8.subarray(off, off + CSUM_OFFSET);
  const body = u8.subarray(off + PAYLOAD_OFFSET, off + BLOCK_BYTES);
  const dv = new DataView(out.buffer, out.byteOffset);
  if (algo === 'crc32c') {
    const c = crc32c(Buffer.from(body.buffer, body.byteOffset, body.byteLength), crc32c(Buffer.from(head.buffer, head.byteOffset, head.byteLength)));
    dv.setUint32(0, c >>> 0, true);
  } else if (algo === 'xxhash') {
    dv.setUint32(0, xxh32([head, body]), true);
  } else {
    out.set(createHash(algo).update(head).update(body).digest());
  }
}

const scratch = new Uint8Array(CSUM_BYTES);

/** The payload part of each seed's template (a view made once per seed). */
const payloads = new Map<number, Uint8Array>();

/** The verify pattern repeated over `len` bytes from `u8[at]` (fio fills its buffers so with verify_pattern). */
function fillPattern(u8: Uint8Array, at: number, len: number, pattern: Uint8Array): void {
  for (let i = 0; i < len; i++) u8[at + i] = pattern[i % pattern.length];
}

/**
 * Write block `lba`'s content (generated from `seed`, or the verify `pattern`
 * in the payload when one is given) at `u8[off…]`. With `algo` 'pattern' the
 * whole block is the pattern, no header.
 */
export function fillBlock(u8: Uint8Array, off: number, lba: number, seed: number, algo: VerifyAlgo, pattern?: Uint8Array): void {
  if (algo === 'pattern') {
    fillPattern(u8, off, BLOCK_BYTES, pattern && pattern.length > 0 ? pattern : DEFAULT_PATTERN);
    return;
  }
  if (pattern && pattern.length > 0) fillPattern(u8, off + PAYLOAD_OFFSET, BLOCK_BYTES - PAYLOAD_OFFSET, pattern);
  else {
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

/**
 * A block no job of the run wrote: the data already on the drive, as a real
 * drive holds data fio did not write. It carries no verify header (its first
 * bytes are data, so fio's header check fails on it: "bad magic header", err=84),
 * but it is deterministic: a per-seed template with the block number stamped
 * every 512 bytes from byte 0, so the model can still check that a read
 * brought exactly what the drive held at `lba` (`unwrittenBlockIntact`).
 */
export function fillUnwrittenBlock(u8: Uint8Array, off: number, lba: number, seed: number): void {
  u8.set(template((seed ^ UNWRITTEN_SEED_SALT) >>> 0), off);
  for (let s = 0; s < BLOCK_BYTES; s += 512) {
    u8[off + s] ^= lba & 0xff;
    u8[off + s + 1] ^= (lba >>> 8) & 0xff;
    u8[off + s + 2] ^= (lba >>> 16) & 0xff;
    u8[off + s + 3] ^= (lba >>> 24) & 0xff;
  }
}

/** Keeps the unwritten blocks' template apart from the payload template of a writer with the same seed. */
const UNWRITTEN_SEED_SALT = 0x55a4_0000;

const unwrittenScratch = new Uint8Array(BLOCK_BYTES);

/** True when the block at `u8[off…]` is block `lba` of a drive nobody wrote (`fillUnwrittenBlock` with `seed`), intact. */
export function unwrittenBlockIntact(u8: Uint8Array, off: number, lba: number, seed: number): boolean {
  fillUnwrittenBlock(unwrittenScratch, 0, lba, seed);
  for (let i = 0; i < BLOCK_BYTES; i++) if (u8[off + i] !== unwrittenScratch[i]) return false;
  return true;
}

/** The 16-bit word where fio's verify header keeps its magic (0xacca), as fio prints it in "bad magic header %x". */
export function blockMagic16(u8: Uint8Array, off: number): number {
  return u8[off] | (u8[off + 1] << 8);
}

/** verify=pattern without verify_pattern: fio requires one; the model's stand-in is fio's 0xdeadbeef-like word */
const DEFAULT_PATTERN = new Uint8Array([0xef, 0xbe, 0xad, 0xde]);

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
export function verifyBlock(u8: Uint8Array, off: number, lba: number, algo: VerifyAlgo, expectSeed?: number, pattern?: Uint8Array): boolean {
  if (algo === 'pattern') {
    const p = pattern && pattern.length > 0 ? pattern : DEFAULT_PATTERN;
    for (let i = 0; i < BLOCK_BYTES; i++) if (u8[off + i] !== p[i % p.length]) return false;
    return true;
  }
  const dv = new DataView(u8.buffer, u8.byteOffset);
  if (dv.getUint32(off, true) !== PATTERN_MAGIC) return false;
  if (expectSeed !== undefined && dv.getUint32(off + 16, true) !== expectSeed >>> 0) return false;
  const byteOffset = dv.getUint32(off + 8, true) + dv.getUint32(off + 12, true) * 0x1_0000_0000;
  if (byteOffset !== lba * BLOCK_BYTES) return false;
  const code = dv.getUint16(off + 4, true);
  // meta: fio checks the header alone (magic, offset, who wrote it)
  if (algo === 'meta') return code === ALGO_CODE.meta;
  if (algo !== 'none' && code === ALGO_CODE[algo]) {
    checksum(u8, off, algo, scratch);
    for (let i = 0; i < CSUM_BYTES; i++) if (u8[off + CSUM_OFFSET + i] !== scratch[i]) return false;
    // with a verify pattern fio also compares the payload with the pattern
    if (pattern && pattern.length > 0)
      for (let i = PAYLOAD_OFFSET; i < BLOCK_BYTES; i++) if (u8[off + i] !== pattern[(i - PAYLOAD_OFFSET) % pattern.length]) return false;
    return true;
  }
  // no checksum to rely on: regenerate the block and compare every byte
  const expect = new Uint8Array(BLOCK_BYTES);
  const codeAlgo = (Object.keys(ALGO_CODE) as VerifyAlgo[]).find((k) => ALGO_CODE[k] === code) ?? 'none';
  fillBlock(expect, 0, lba, dv.getUint32(off + 16, true), codeAlgo, pattern);
  for (let i = 0; i < BLOCK_BYTES; i++) if (u8[off + i] !== expect[i]) return false;
  return true;
}
