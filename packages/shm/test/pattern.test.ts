import { BLOCK_BYTES, blockSeed, fillBlock, fillUnwrittenBlock, PATTERN_MAGIC, unwrittenBlockIntact, verifyBlock } from '@vmstack/shm';
import test from 'ava';

test('fillBlock: the header fields little-endian at their offsets, and the block verifies with every algorithm', (t) => {
  for (const algo of ['none', 'crc32c', 'md5'] as const) {
    const u8 = new Uint8Array(3 * BLOCK_BYTES).fill(0xee);
    const off = BLOCK_BYTES + 0;
    const lba = 2 ** 21 + 3; // byte offset above 2^32
    fillBlock(u8, off, lba, 0xdead_beef, algo);
    const dv = new DataView(u8.buffer);
    t.is(dv.getUint32(off, true), PATTERN_MAGIC);
    t.is(dv.getUint16(off + 4, true), { none: 0, crc32c: 1, md5: 2 }[algo]);
    t.is(dv.getUint16(off + 6, true), 0);
    t.is(dv.getUint32(off + 8, true) + dv.getUint32(off + 12, true) * 2 ** 32, lba * BLOCK_BYTES);
    t.is(blockSeed(u8, off), 0xdead_beef);
    t.is(dv.getUint32(off + 20, true), 0);
    t.true(verifyBlock(u8, off, lba, algo, 0xdead_beef));
    t.false(verifyBlock(u8, off, lba + 1, algo));
    t.is(u8[off - 1], 0xee, 'nothing written before the block');
    t.is(u8[off + BLOCK_BYTES], 0xee, 'nothing written after it');
  }
});

test('a block no job wrote: fio verify refuses it with every algorithm (no header), the model knows it intact, and a changed byte or block is not', (t) => {
  const u8 = new Uint8Array(2 * BLOCK_BYTES);
  const lba = 2 ** 21 + 5;
  fillUnwrittenBlock(u8, BLOCK_BYTES, lba, 0x89);
  t.not(new DataView(u8.buffer).getUint32(BLOCK_BYTES, true), PATTERN_MAGIC);
  for (const algo of ['none', 'crc32c', 'md5', 'sha1', 'sha256', 'xxhash', 'meta', 'pattern'] as const) t.false(verifyBlock(u8, BLOCK_BYTES, lba, algo), algo);
  t.false(verifyBlock(u8, BLOCK_BYTES, lba, 'crc32c', 0x89));
  t.true(unwrittenBlockIntact(u8, BLOCK_BYTES, lba, 0x89));
  t.false(unwrittenBlockIntact(u8, BLOCK_BYTES, lba + 1, 0x89), 'another block of the drive');
  t.false(unwrittenBlockIntact(u8, BLOCK_BYTES, lba, 0x8a), 'another drive');
  u8[BLOCK_BYTES + 1000] ^= 1;
  t.false(unwrittenBlockIntact(u8, BLOCK_BYTES, lba, 0x89), 'one bit changed');
  // what a job writes is never mistaken for the drive's own data
  fillBlock(u8, 0, lba, 0x89, 'none');
  t.false(unwrittenBlockIntact(u8, 0, lba, 0x89));
});
