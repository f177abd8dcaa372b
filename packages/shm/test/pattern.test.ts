import { BLOCK_BYTES, blockSeed, fillBlock, PATTERN_MAGIC, verifyBlock } from '@vmstack/shm';
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
