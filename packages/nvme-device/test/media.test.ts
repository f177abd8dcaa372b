import { InputError } from '@vmstack/shm';
import test from 'ava';
import { type MediaCosts, MIN_COMMAND_BYTES, NVME_CMD_READ, NVME_CMD_WRITE, NvmeMedia } from '../src/media.js';

/** Numbers of the kind the default profile uses (a TLC drive on PCIe 3.0 x4). */
const DRIVE: MediaCosts = {
  nvmeReadLatencyNs: 50_000,
  nvmeWriteLatencyNs: 20_000,
  nvmeMediaReadBytesPerNs: 3.5,
  nvmeMediaWriteBytesPerNs: 3.0,
  nvmeChannelsCount: 24,
  nvmeControllerCommandNs: 500,
  pcieLinkBytesPerNs: 3.94,
};
const KIB4 = 4096;

/** Keep `qd` commands outstanding; a completion immediately submits the next. Rates over the last 80%. */
function closedLoop(media: NvmeMedia, opcode: number, bytes: number, qd: number, total: number): { commandsPerNs: number; bytesPerNs: number } {
  const pending: number[] = [];
  const push = (ns: number) => {
    let i = pending.length;
    while (i > 0 && pending[i - 1] > ns) i--;
    pending.splice(i, 0, ns);
  };
  for (let i = 0; i < qd; i++) push(media.schedule(opcode, bytes, 0));
  const warm = Math.floor(total / 5);
  let done = 0;
  let tWarm = 0;
  let t = 0;
  while (done < total) {
    t = pending.shift()!;
    done++;
    if (done === warm) tWarm = t;
    push(media.schedule(opcode, bytes, t));
  }
  const commandsPerNs = (total - warm) / (t - tWarm);
  return { commandsPerNs, bytesPerNs: commandsPerNs * bytes };
}

test('QD1: a 4 KiB read takes latency + media transfer + link transfer; a write, link + media + program', (t) => {
  const media = new NvmeMedia(DRIVE);
  const readNs = 50_000 + KIB4 / 3.5 + KIB4 / 3.94;
  let at = 1000;
  for (let i = 0; i < 5; i++) {
    const done = media.schedule(NVME_CMD_READ, KIB4, at);
    t.true(Math.abs(done - at - readNs) <= 1, `read ${i}: ${done - at} vs ${readNs}`);
    at = done + 10_000;
  }
  const writeNs = KIB4 / 3.94 + KIB4 / 3.0 + 20_000;
  const done = media.schedule(NVME_CMD_WRITE, KIB4, at);
  t.true(Math.abs(done - at - writeNs) <= 1, `write: ${done - at} vs ${writeNs}`);
  t.deepEqual(media.stats(), { reads: 5, writes: 1, bytesRead: 5 * KIB4, bytesWritten: KIB4, lastCompletionNs: done });
});

test('QD32 4 KiB random reads saturate at channels / latency when the channels bind', (t) => {
  const { commandsPerNs } = closedLoop(new NvmeMedia(DRIVE), NVME_CMD_READ, KIB4, 32, 20_000);
  const want = Math.min(24 / 50_000, 1 / 500); // 480k IOPS
  t.true(Math.abs(commandsPerNs / want - 1) < 0.01, `${(commandsPerNs * 1e9).toFixed(0)} IOPS vs ${(want * 1e9).toFixed(0)}`);
});

test('QD32 4 KiB random reads saturate at 1 / controllerCommandNs when the controller binds', (t) => {
  const { commandsPerNs } = closedLoop(new NvmeMedia({ ...DRIVE, nvmeControllerCommandNs: 2500 }), NVME_CMD_READ, KIB4, 32, 20_000);
  const want = Math.min(24 / 50_000, 1 / 2500); // 400k IOPS
  t.true(Math.abs(commandsPerNs / want - 1) < 0.01, `${(commandsPerNs * 1e9).toFixed(0)} IOPS vs ${(want * 1e9).toFixed(0)}`);
});

test('QD1 is far from saturation: 4 KiB reads complete at 1 / (latency + transfer)', (t) => {
  const { commandsPerNs } = closedLoop(new NvmeMedia(DRIVE), NVME_CMD_READ, KIB4, 1, 2000);
  const want = 1 / (50_000 + KIB4 / 3.5 + KIB4 / 3.94);
  t.true(Math.abs(commandsPerNs / want - 1) < 0.001);
});

test('big sequential reads saturate at min(media, link) bandwidth', (t) => {
  const mediaBound = closedLoop(new NvmeMedia(DRIVE), NVME_CMD_READ, 128 * 1024, 16, 5000).bytesPerNs;
  t.true(Math.abs(mediaBound / 3.5 - 1) < 0.01, `${mediaBound.toFixed(3)} bytes/ns vs media 3.5`);
  const linkBound = closedLoop(new NvmeMedia({ ...DRIVE, pcieLinkBytesPerNs: 2.0 }), NVME_CMD_READ, 128 * 1024, 16, 5000).bytesPerNs;
  t.true(Math.abs(linkBound / 2.0 - 1) < 0.01, `${linkBound.toFixed(3)} bytes/ns vs link 2.0`);
  const writes = closedLoop(new NvmeMedia(DRIVE), NVME_CMD_WRITE, 128 * 1024, 16, 5000).bytesPerNs;
  t.true(Math.abs(writes / 3.0 - 1) < 0.01, `${writes.toFixed(3)} bytes/ns vs media write 3.0`);
});

test('the media bus is shared: a burst of reads on idle channels drains at the media bandwidth', (t) => {
  const media = new NvmeMedia({ ...DRIVE, nvmeChannelsCount: 1000, nvmeControllerCommandNs: 0 });
  let last = 0;
  for (let i = 0; i < 100; i++) last = media.schedule(NVME_CMD_READ, KIB4, 0);
  const want = 50_000 + (100 * KIB4) / 3.5 + KIB4 / 3.94;
  t.true(Math.abs(last - want) <= 1, `${last} vs ${want}`);
});

test('bookings are final: a later write fills gaps and does not move the read before it', (t) => {
  const solo = new NvmeMedia({ ...DRIVE, nvmeChannelsCount: 2 });
  const readAlone = solo.schedule(NVME_CMD_READ, KIB4, 0);
  const media = new NvmeMedia({ ...DRIVE, nvmeChannelsCount: 2 });
  const read = media.schedule(NVME_CMD_READ, KIB4, 0);
  const write = media.schedule(NVME_CMD_WRITE, KIB4, 100);
  t.is(read, readAlone);
  t.true(write < read, `write done at ${write}, read at ${read}`);
  t.true(Math.abs(write - (500 + KIB4 / 3.94 + KIB4 / 3.0 + 20_000)) <= 1, 'the write waited for the controller (busy until 500) only');
  const third = media.schedule(NVME_CMD_READ, KIB4, 200);
  t.true(Math.abs(third - (write + 50_000 + KIB4 / 3.5 + KIB4 / 3.94)) <= 2, 'both channels busy: the third read takes the one the write frees first');
  t.true(media.schedule(NVME_CMD_READ, KIB4, 200) > third);
});

test('minServiceNs bounds every command from below (seeded random mix)', (t) => {
  const media = new NvmeMedia(DRIVE);
  const min = media.minServiceNs();
  t.is(min, Math.floor(Math.min(50_000 + 512 / 3.5 + 512 / 3.94, 20_000 + 512 / 3.0 + 512 / 3.94)));
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  let at = 0;
  let worst = Infinity;
  for (let i = 0; i < 5000; i++) {
    at += Math.floor(rand() * 3000);
    const bytes = MIN_COMMAND_BYTES * (1 + Math.floor(rand() * 256));
    const done = media.schedule(rand() < 0.5 ? NVME_CMD_READ : NVME_CMD_WRITE, bytes, at);
    worst = Math.min(worst, done - at);
  }
  t.true(worst >= min, `shortest service ${worst} < lookahead ${min}`);
});

test('bad commands throw RangeError; bad costs are InputErrors naming the key', (t) => {
  const media = new NvmeMedia(DRIVE);
  t.throws(() => media.schedule(0x00, KIB4, 0), { instanceOf: RangeError });
  t.throws(() => media.schedule(NVME_CMD_READ, 100, 0), { instanceOf: RangeError });
  t.throws(() => media.schedule(NVME_CMD_READ, KIB4, Number.NaN), { instanceOf: RangeError });
  for (const [patch, field] of [
    [{ nvmeChannelsCount: 0 }, 'profile.nvmeChannelsCount'],
    [{ nvmeMediaReadBytesPerNs: 0 }, 'profile.nvmeMediaReadBytesPerNs'],
    [{ pcieLinkBytesPerNs: -1 }, 'profile.pcieLinkBytesPerNs'],
    [{ nvmeReadLatencyNs: Number.POSITIVE_INFINITY }, 'profile.nvmeReadLatencyNs'],
  ] as const) {
    const e = t.throws(() => new NvmeMedia({ ...DRIVE, ...patch }), { instanceOf: InputError });
    t.is(e?.field, field);
  }
});
