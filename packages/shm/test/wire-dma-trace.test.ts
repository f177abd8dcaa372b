import test from 'ava';
import { DmaUnmapLog } from '../src/wire/dma-trace.js';

test('the DMA map log hands its reader each map and unmap once, in order, and counts what did not fit', (t) => {
  const sab = DmaUnmapLog.allocate(3);
  const writer = new DmaUnmapLog(sab);
  const reader = new DmaUnmapLog(sab);
  writer.append('map', 0x1000, 4096, 10);
  writer.append('unmap', 0x1000, 4096, 20);
  const seen: unknown[] = [];
  t.is(
    reader.drain((...e) => seen.push(e)),
    2,
  );
  writer.append('map', 0x3000, 8192, 30);
  writer.append('unmap', 0x3000, 8192, 40);
  t.is(
    reader.drain((...e) => seen.push(e)),
    1,
  );
  t.deepEqual(seen, [
    [0x1000, 4096, 10, 'map'],
    [0x1000, 4096, 20, 'unmap'],
    [0x3000, 8192, 30, 'map'],
  ]);
  t.is(writer.dropped(), 1);
  t.throws(() => DmaUnmapLog.allocate(0), { instanceOf: RangeError });
});
