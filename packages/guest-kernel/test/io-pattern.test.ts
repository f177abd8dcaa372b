import { mulberry32Float } from '@vmstack/shm';
import test from 'ava';
import { FioIoPattern, fioIoSource, type PatternIo } from '../src/fio/io-pattern.js';
import type { FioJobSpec } from '../src/job-spec.js';

const fixed = (bytes: number) => ({ minBytes: bytes, maxBytes: bytes, split: [] });

function spec(patch: Partial<FioJobSpec>): FioJobSpec {
  return {
    name: 'j',
    jobIndex: 0,
    groupId: 0,
    reportGroupId: 0,
    rw: 'read',
    rwmixreadPct: 50,
    blockSizeBytes: 4096,
    readBs: fixed(4096),
    writeBs: fixed(4096),
    loops: 1,
    ioSizeBytes: null,
    numberIos: 0,
    randomDistribution: { kind: 'random' },
    rampTimeNs: 0,
    thinktimeNs: 0,
    thinktimeSpinNs: 0,
    thinktimeBlocks: 1,
    rate: { read: 0, write: 0 },
    rateIops: { read: 0, write: 0 },
    rateMin: { read: 0, write: 0 },
    rateIopsMin: { read: 0, write: 0 },
    sizeBytes: 1024 * 1024,
    offsetBytes: 0,
    iodepth: 1,
    runtimeNs: null,
    timeBased: false,
    verify: 'none',
    doVerify: true,
    randseed: 0x89,
    ioengine: 'libaio',
    direct: true,
    randomMap: true,
    fadviseHint: true,
    endFsync: false,
    fsyncEveryIos: 0,
    fdatasyncEveryIos: 0,
    ...patch,
  };
}

function all(job: FioJobSpec, max = 1_000_000): PatternIo[] {
  const p = new FioIoPattern(job, mulberry32Float(1));
  const out: PatternIo[] = [];
  // the pattern reuses its record: keep a copy of each I/O
  for (let io = p.next(); io && out.length < max; io = p.next()) out.push({ ...io });
  return out;
}

test('sequential: the region once, in order, from offset; loops repeat it; io_size and number_ios set the amount', (t) => {
  const ios = all(spec({ offsetBytes: 8192 }));
  t.is(ios.length, 256);
  t.deepEqual(
    ios.slice(0, 3).map((i) => i.lba),
    [2, 3, 4],
  );
  t.is(all(spec({ loops: 3 })).length, 768);
  t.is(all(spec({ ioSizeBytes: 2 * 1024 * 1024 })).length, 512, 'io_size beyond size wraps round the region');
  t.is(all(spec({ ioSizeBytes: 64 * 1024 })).length, 16);
  t.is(all(spec({ numberIos: 10, loops: 5 })).length, 10);
});

test('random with the random map: every block of each loop exactly once; norandommap draws with replacement', (t) => {
  const ios = all(spec({ rw: 'randwrite', loops: 2 }));
  t.is(ios.length, 512);
  t.is(new Set(ios.slice(0, 256).map((i) => i.lba)).size, 256);
  t.is(new Set(ios.slice(256).map((i) => i.lba)).size, 256);
  const without = all(spec({ rw: 'randwrite', randomMap: false }));
  t.is(without.length, 256);
  t.true(new Set(without.map((i) => i.lba)).size < 200, 'some blocks twice, some never');
});

test('bs=r,w: reads and writes of a mixed job take their own size', (t) => {
  const ios = all(spec({ rw: 'rw', readBs: fixed(4096), writeBs: fixed(16384), blockSizeBytes: 16384 }));
  t.true(ios.every((i) => i.blocks === (i.isRead ? 1 : 4)));
  t.true(ios.some((i) => i.isRead) && ios.some((i) => !i.isRead));
});

test('bssplit: sizes in their shares; bsrange: sizes from min to max, multiples of min', (t) => {
  const split = all(
    spec({
      sizeBytes: 256 * 1024 * 1024,
      readBs: {
        minBytes: 4096,
        maxBytes: 65536,
        split: [
          { bytes: 4096, pct: 75 },
          { bytes: 65536, pct: 25 },
        ],
      },
      blockSizeBytes: 65536,
    }),
    4000,
  );
  const small = split.filter((i) => i.blocks === 1).length / split.length;
  t.true(small > 0.72 && small < 0.78, `4k share ${small}`);
  t.true(split.every((i) => i.blocks === 1 || i.blocks === 16));
  const range = all(spec({ sizeBytes: 64 * 1024 * 1024, readBs: { minBytes: 8192, maxBytes: 32768, split: [] }, blockSizeBytes: 32768 }), 2000);
  t.deepEqual([...new Set(range.map((i) => i.blocks))].sort(), [2, 4, 6, 8]);
});

test('random_distribution: zipf and pareto concentrate the I/O on few blocks, zoned puts each share in its zone', (t) => {
  const job = (d: FioJobSpec['randomDistribution']) => spec({ rw: 'randread', sizeBytes: 64 * 1024 * 1024, randomDistribution: d });
  // the share of the I/O on the hottest `pct` percent of the 16384 blocks
  const top = (ios: PatternIo[], pct = 1) => {
    const n = new Map<number, number>();
    for (const i of ios) n.set(i.lba, (n.get(i.lba) ?? 0) + 1);
    const counts = [...n.values()].sort((a, b) => b - a);
    return counts.slice(0, Math.round((16384 * pct) / 100)).reduce((s, c) => s + c, 0) / ios.length;
  };
  const uniform = all(job({ kind: 'random' }));
  const zipf = all(job({ kind: 'zipf', theta: 1.2 }));
  const pareto = all(job({ kind: 'pareto', h: 0.9 }));
  t.is(zipf.length, 16384, 'the amount is still size');
  t.true(top(uniform) < 0.02);
  t.true(top(zipf) > 0.5, `zipf:1.2 hottest 1%: ${top(zipf)}`);
  // pareto:0.9 is fio's 90/10 rule: about 90% of the I/O on 10% of the blocks
  t.true(top(pareto, 10) > 0.85, `pareto:0.9 hottest 10%: ${top(pareto, 10)}`);
  t.true(top(uniform, 10) < 0.15);
  const zoned = all(
    job({
      kind: 'zoned',
      zones: [
        { accessPct: 60, sizePct: 10 },
        { accessPct: 40, sizePct: 90 },
      ],
    }),
  );
  const inFirst = zoned.filter((i) => i.lba < 16384 / 10).length / zoned.length;
  t.true(inFirst > 0.57 && inFirst < 0.63, `60% in the first 10%: ${inFirst}`);
});

function allFiles(job: FioJobSpec): PatternIo[] {
  const p = fioIoSource(job, mulberry32Float(1));
  const out: PatternIo[] = [];
  // each file's pattern reuses its record: keep a copy of each I/O
  for (let io = p.next(); io; io = p.next()) out.push({ ...io });
  return out;
}

test('several files (filename=a:b, nrfiles): size split between them, each its own offsets from its start, one I/O from each in turn', (t) => {
  // as fio 3.33 wrote two 32 KiB files: a 0, b 0, a 4096, b 4096, …
  const seq = allFiles(spec({ sizeBytes: 64 * 1024, offsetBytes: 4096, nrfiles: 2 }));
  t.deepEqual(
    seq.map((i) => i.lba),
    [1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15, 8, 16],
  );
  // random: each file's blocks once (its own random map), the files still in turn
  const rnd = allFiles(spec({ rw: 'randwrite', sizeBytes: 96 * 1024, nrfiles: 3 }));
  t.is(rnd.length, 24);
  rnd.forEach((io, k) => t.is(Math.floor(io.lba / 8), k % 3, `I/O ${k} in file ${k % 3}`));
  t.deepEqual(
    [...new Set(rnd.map((i) => i.lba))].sort((a, b) => a - b),
    Array.from({ length: 24 }, (_, i) => i),
  );
  // number_ios counts the job's I/Os, over all files; a file whose part is done is passed over
  t.is(allFiles(spec({ sizeBytes: 64 * 1024, nrfiles: 2, numberIos: 5 })).length, 5);
  const uneven = allFiles(spec({ sizeBytes: 64 * 1024, nrfiles: 2, readBs: fixed(8192), writeBs: fixed(8192), blockSizeBytes: 8192, loops: 2 }));
  t.is(uneven.length, 16, 'two loops over each file');
  // one file: the job's own pattern, unchanged
  t.deepEqual(allFiles(spec({ rw: 'randread' })), all(spec({ rw: 'randread' })));
});
