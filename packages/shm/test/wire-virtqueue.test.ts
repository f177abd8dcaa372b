import { Worker } from 'node:worker_threads';
import test from 'ava';
import { InputError } from '../src/errors.js';
import { mulberry32Float } from '../src/prng.js';
import type { GuestMemory, VirtqueueChain, VirtqueueErrorKind, VirtqueueLayout, VirtqueueSegment } from '../src/wire/virtqueue.js';
import {
  attachGuestMemory,
  readU64,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VirtqueueDevice,
  VirtqueueDriver,
  VirtqueueError,
  virtqueueLayout,
  writeU64,
} from '../src/wire/virtqueue.js';
import type { DeviceHelperData } from './virtqueue-device-helper.js';

const mulberry32 = mulberry32Float;

const KICK = 0;
const IRQ = 1;

function setup(
  queueSizeEntries: number,
  ramBytes = 1 << 20,
  baseGpa = 0x1000,
): { mem: GuestMemory; layout: VirtqueueLayout; drv: VirtqueueDriver; dev: VirtqueueDevice } {
  const mem = attachGuestMemory(new SharedArrayBuffer(ramBytes));
  const layout = virtqueueLayout(queueSizeEntries, baseGpa);
  const drv = VirtqueueDriver.init(mem, layout);
  const dev = new VirtqueueDevice(mem, layout);
  return { mem, layout, drv, dev };
}

const idxOf = (mem: GuestMemory, ringGpa: number): number => mem.dv.getUint16(ringGpa + 2, true);

test('layout: spec sizes and alignments (desc 16 × q @16, avail 6 + 2q @2, used 6 + 8q @4)', (t) => {
  const l = virtqueueLayout(256, 0x10000);
  t.is(l.descGpa, 0x10000);
  t.is(l.availGpa, 0x10000 + 16 * 256);
  t.is(l.usedGpa, 0x10000 + 16 * 256 + 6 + 2 * 256 + 2); // 6 + 512 = 518 → aligned up to 520
  t.is(l.usedGpa % 4, 0);
  t.is(l.driverStateGpa, l.usedGpa + 6 + 8 * 256 + 2); // 2054 → 2056
  t.is(l.totalBytes, l.driverStateGpa + 16 + 8 * 256 - 0x10000);
  const one = virtqueueLayout(1, 0);
  t.deepEqual([one.descGpa, one.availGpa, one.usedGpa], [0, 16, 24]);
  const two = virtqueueLayout(2, 0); // avail ends at 32 + 6 + 4 = 42: used aligned to 4 → 44 (not 48)
  t.deepEqual([two.descGpa, two.availGpa, two.usedGpa, two.driverStateGpa], [0, 32, 44, 72]);
  for (const bad of [0, 3, 100, 65536, 1.5]) t.throws(() => virtqueueLayout(bad, 0), { instanceOf: InputError });
  t.throws(() => virtqueueLayout(8, 8), { instanceOf: RangeError });
});

test("popAvailInto refills one chain record: its arrays take each chain's segments, longer or shorter", (t) => {
  const { drv, dev } = setup(8);
  const rec = { head: -1, out: [] as VirtqueueSegment[], in: [] as VirtqueueSegment[] };
  t.false(dev.popAvailInto(rec));
  t.true(
    drv.addBuf(
      [
        { gpa: 0x20000, lenBytes: 36 },
        { gpa: 0x30000, lenBytes: 8 },
      ],
      [{ gpa: 0x40000, lenBytes: 4 }],
      1,
    ),
  );
  t.true(drv.addBuf([{ gpa: 0x50000, lenBytes: 24 }], [{ gpa: 0x60000, lenBytes: 4 }], 2));
  drv.publish();
  t.true(dev.popAvailInto(rec));
  const firstOut = rec.out[0];
  t.deepEqual(rec.out, [
    { gpa: 0x20000, lenBytes: 36 },
    { gpa: 0x30000, lenBytes: 8 },
  ]);
  t.true(dev.popAvailInto(rec));
  t.deepEqual(rec.out, [{ gpa: 0x50000, lenBytes: 24 }]);
  t.deepEqual(rec.in, [{ gpa: 0x60000, lenBytes: 4 }]);
  t.is(rec.out[0], firstOut, 'the segment object is reused');
  t.false(dev.popAvailInto(rec));
});

test('driver → device → driver: descriptors, flags, rings and lengths as the spec lays them out', (t) => {
  const { mem, layout, drv, dev } = setup(8);
  const out: VirtqueueSegment[] = [
    { gpa: 0x20000, lenBytes: 36 },
    { gpa: 0x30008, lenBytes: 8 },
  ];
  const inn: VirtqueueSegment[] = [{ gpa: 0x40004, lenBytes: 4 }];
  t.is(drv.numFree, 8);
  t.true(drv.addBuf(out, inn, 0xdead_beef));
  t.is(drv.numFree, 5);
  t.is(dev.popAvail(), null, 'nothing visible before publish');
  t.is(drv.publish(), 1);
  t.is(idxOf(mem, layout.availGpa), 1);
  const head = mem.dv.getUint16(layout.availGpa + 4, true);
  // walk the raw descriptor table
  const d = (i: number) => layout.descGpa + 16 * i;
  const raw: [number, number, number][] = [];
  for (let i = head, k = 0; k < 3; k++) {
    raw.push([readU64(mem.dv, d(i)), mem.dv.getUint32(d(i) + 8, true), mem.dv.getUint16(d(i) + 12, true)]);
    i = mem.dv.getUint16(d(i) + 14, true);
  }
  t.deepEqual(raw, [
    [0x20000, 36, VIRTQ_DESC_F_NEXT],
    [0x30008, 8, VIRTQ_DESC_F_NEXT],
    [0x40004, 4, VIRTQ_DESC_F_WRITE],
  ]);
  const chain = dev.popAvail() as VirtqueueChain;
  t.deepEqual(chain, { head, out, in: inn });
  t.is(dev.popAvail(), null);
  t.is(drv.getBuf(), null, 'nothing used yet');
  dev.pushUsed(chain.head, 4);
  t.is(idxOf(mem, layout.usedGpa), 1);
  t.is(mem.dv.getUint32(layout.usedGpa + 4, true), head);
  t.is(mem.dv.getUint32(layout.usedGpa + 8, true), 4);
  t.deepEqual(drv.getBuf(), { token: 0xdead_beef, lenBytes: 4 });
  t.is(drv.getBuf(), null);
  t.is(drv.numFree, 8);
});

test('full queue: addBuf returns false; random out-of-order completion recycles every descriptor (seeded)', (t) => {
  const rand = mulberry32(2024);
  const q = 16;
  const { drv, dev } = setup(q);
  const inFlight = new Map<number, { out: VirtqueueSegment[]; in: VirtqueueSegment[] }>();
  const headToken = new Map<number, number>();
  let nextToken = 1;
  let gpa = 0x80000;
  const seg = (): VirtqueueSegment => ({ gpa: (gpa += 64), lenBytes: 1 + Math.floor(rand() * 64) });
  for (let round = 0; round < 3000; round++) {
    // add until full
    for (;;) {
      const out = Array.from({ length: Math.floor(rand() * 3) }, seg);
      const inn = Array.from({ length: (out.length === 0 ? 1 : 0) + Math.floor(rand() * 3) }, seg);
      const need = out.length + inn.length;
      const free = drv.numFree;
      const ok = drv.addBuf(out, inn, nextToken);
      t.is(ok, free >= need);
      if (!ok) break;
      inFlight.set(nextToken++, { out, in: inn });
      if (gpa > 0xf0000) gpa = 0x80000;
    }
    drv.publish();
    const popped: VirtqueueChain[] = [];
    for (let c = dev.popAvail(); c; c = dev.popAvail()) popped.push(c);
    // complete a random subset in random order
    popped.sort(() => rand() - 0.5);
    const completeNow = popped.slice(0, Math.ceil(popped.length * rand()));
    const later = popped.slice(completeNow.length);
    for (const c of [...completeNow, ...later]) {
      // the device must see exactly the segments of some in-flight request
      const match = [...inFlight.entries()].find(
        ([tok, r]) => !headToken.has(tok) && JSON.stringify({ out: r.out, in: r.in }) === JSON.stringify({ out: c.out, in: c.in }),
      );
      if (!match) return t.fail(`popped chain ${JSON.stringify(c)} matches no in-flight request`);
      headToken.set(match[0], c.head);
    }
    for (const c of completeNow)
      dev.pushUsed(
        c.head,
        c.in.reduce((s, x) => s + x.lenBytes, 0),
      );
    for (let b = drv.getBuf(); b; b = drv.getBuf()) {
      const r = inFlight.get(b.token);
      if (!r) return t.fail(`unknown token ${b.token}`);
      t.is(
        b.lenBytes,
        r.in.reduce((s, x) => s + x.lenBytes, 0),
      );
      inFlight.delete(b.token);
      headToken.delete(b.token);
    }
    // finish the rest
    for (const c of later) dev.pushUsed(c.head, 0);
    for (let b = drv.getBuf(); b; b = drv.getBuf()) {
      inFlight.delete(b.token);
      headToken.delete(b.token);
    }
    t.is(inFlight.size, 0);
    t.is(drv.numFree, q);
  }
});

test('indexes wrap at 2^16 (single thread, 70 000 chains through a 4-entry queue)', (t) => {
  const { mem, layout, drv, dev } = setup(4);
  const total = 70_000;
  let done = 0;
  let sent = 0;
  while (done < total) {
    while (sent < total && drv.addBuf([{ gpa: 0x9000, lenBytes: 4 }], [{ gpa: 0xa000 + 8 * (sent % 4), lenBytes: 8 }], sent)) sent++;
    drv.publish();
    for (let c = dev.popAvail(); c; c = dev.popAvail()) dev.pushUsed(c.head, 8);
    for (let b = drv.getBuf(); b; b = drv.getBuf()) {
      if (b.token !== done) return t.fail(`token ${b.token}, expected ${done}`);
      done++;
    }
  }
  t.is(idxOf(mem, layout.availGpa), total & 0xffff);
  t.is(idxOf(mem, layout.usedGpa), total & 0xffff);
  t.is(drv.numFree, 4);
});

test('driver state lives in guest RAM: a second driver instance (another vCPU) carries on where the first stopped', (t) => {
  const { mem, layout, drv, dev } = setup(8);
  const other = new VirtqueueDriver(mem, layout);
  t.true(drv.addBuf([{ gpa: 0x9000, lenBytes: 4 }], [], 1));
  t.true(other.addBuf([], [{ gpa: 0xa000, lenBytes: 4 }], 2));
  t.is(other.numFree, 6);
  t.is(drv.publish(), 2);
  const a = dev.popAvail()!;
  const b = dev.popAvail()!;
  dev.pushUsed(b.head, 4);
  dev.pushUsed(a.head, 0);
  t.deepEqual(other.getBuf(), { token: 2, lenBytes: 4 });
  t.deepEqual(drv.getBuf(), { token: 1, lenBytes: 0 });
  t.is(drv.numFree, 8);
  t.throws(() => new VirtqueueDriver(mem, virtqueueLayout(8, 0x40000)), { message: /not initialised/ });
});

test('device rejects malformed chains with a typed error and never hangs; the queue carries on', (t) => {
  const q = 8;
  const ramBytes = 1 << 20;
  const { mem, layout, drv, dev } = setup(q, ramBytes);
  const d = (i: number) => layout.descGpa + 16 * i;
  const add3 = (token: number): number => {
    t.true(
      drv.addBuf(
        [
          { gpa: 0x9000, lenBytes: 16 },
          { gpa: 0x9100, lenBytes: 16 },
        ],
        [{ gpa: 0x9200, lenBytes: 16 }],
        token,
      ),
    );
    drv.publish();
    const shadowSlot = (idxOf(mem, layout.availGpa) - 1) & (q - 1);
    return mem.dv.getUint16(layout.availGpa + 4 + 2 * shadowSlot, true);
  };
  const nextOf = (i: number) => mem.dv.getUint16(d(i) + 14, true);
  const expectError = (kind: VirtqueueErrorKind, head: number | null): void => {
    const e = t.throws(() => dev.popAvail(), { instanceOf: VirtqueueError });
    t.is(e?.kind, kind);
    t.is(e?.head, head);
  };
  const complete = (head: number): void => {
    dev.pushUsed(head, 0);
    t.truthy(drv.getBuf());
  };

  // loop: last descriptor (made device-readable) chains back to the head
  let h = add3(1);
  const last = nextOf(nextOf(h));
  mem.dv.setUint16(d(last) + 12, VIRTQ_DESC_F_NEXT, true);
  mem.dv.setUint16(d(last) + 14, h, true);
  expectError('loop', h);
  complete(h);

  // next index out of range
  h = add3(2);
  mem.dv.setUint16(d(h) + 14, q + 3, true);
  expectError('next-index', h);
  complete(h);

  // buffer runs past guest RAM; and an address far above 2^53
  h = add3(3);
  writeU64(mem.dv, d(h), ramBytes - 8);
  expectError('out-of-ram', h);
  complete(h);
  h = add3(4);
  mem.dv.setBigUint64(d(nextOf(h)), 1n << 60n, true);
  expectError('out-of-ram', h);
  complete(h);

  // device-readable after device-writable
  h = add3(5);
  mem.dv.setUint16(d(h) + 12, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, true);
  expectError('order', h);
  complete(h);

  // INDIRECT is not negotiated
  h = add3(6);
  mem.dv.setUint16(d(h) + 12, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, true);
  expectError('indirect', h);
  complete(h);

  // head out of range: the queue moves past it, there is no chain to answer
  h = add3(7);
  const slot = (idxOf(mem, layout.availGpa) - 1) & (q - 1);
  mem.dv.setUint16(layout.availGpa + 4 + 2 * slot, 0xffff, true);
  expectError('head-index', null);
  dev.pushUsed(h, 0); // the driver's chain is still in flight; return it so the driver can reuse it
  t.deepEqual(drv.getBuf(), { token: 7, lenBytes: 0 });

  // avail.idx jumped more than a queue's worth: broken, nothing consumed
  const real = idxOf(mem, layout.availGpa);
  Atomics.store(mem.u16, (layout.availGpa + 2) >>> 1, (real + q + 1) & 0xffff);
  expectError('avail-idx', null);
  expectError('avail-idx', null);
  Atomics.store(mem.u16, (layout.availGpa + 2) >>> 1, real);

  // after all that, a good chain still goes through
  h = add3(8);
  const c = dev.popAvail()!;
  t.is(c.head, h);
  t.deepEqual(c.in, [{ gpa: 0x9200, lenBytes: 16 }]);
  dev.pushUsed(h, 16);
  t.deepEqual(drv.getBuf(), { token: 8, lenBytes: 16 });
  t.is(drv.numFree, q);
});

test('a loop in a 32768-entry queue is detected, not spun on', (t) => {
  const q = 32768;
  const { mem, layout, drv, dev } = setup(q, 2 << 20);
  t.true(
    drv.addBuf(
      [
        { gpa: 0x9000, lenBytes: 1 },
        { gpa: 0x9000, lenBytes: 1 },
      ],
      [],
      1,
    ),
  );
  drv.publish();
  const head = mem.dv.getUint16(layout.availGpa + 4, true);
  const second = mem.dv.getUint16(layout.descGpa + 16 * head + 14, true);
  mem.dv.setUint16(layout.descGpa + 16 * second + 12, VIRTQ_DESC_F_NEXT, true);
  mem.dv.setUint16(layout.descGpa + 16 * second + 14, head, true);
  t.throws(() => dev.popAvail(), { instanceOf: VirtqueueError, message: /loop/ });
});

test('driver rejects a used ring the device corrupted', (t) => {
  const q = 8;
  const { mem, layout, drv, dev } = setup(q);
  t.true(
    drv.addBuf(
      [
        { gpa: 0x9000, lenBytes: 4 },
        { gpa: 0x9000, lenBytes: 4 },
      ],
      [],
      1,
    ),
  );
  drv.publish();
  const c = dev.popAvail()!;
  // id of a descriptor that is not a chain head
  const second = mem.dv.getUint16(layout.descGpa + 16 * c.head + 14, true);
  dev.pushUsed(second, 0);
  t.throws(() => drv.getBuf(), { instanceOf: VirtqueueError, message: /used-id/ });
  // id out of range
  mem.dv.setUint32(layout.usedGpa + 4, q + 1, true);
  t.throws(() => drv.getBuf(), { instanceOf: VirtqueueError, message: /used-id/ });
  // used.idx jumping past a queue's worth
  Atomics.store(mem.u16, (layout.usedGpa + 2) >>> 1, q + 2);
  t.throws(() => drv.getBuf(), { instanceOf: VirtqueueError, message: /used-idx/ });
  // repair: the real completion
  Atomics.store(mem.u16, (layout.usedGpa + 2) >>> 1, 1);
  mem.dv.setUint32(layout.usedGpa + 4, c.head, true);
  t.deepEqual(drv.getBuf(), { token: 1, lenBytes: 0 });
  t.is(drv.numFree, q);
});

test('addBuf validates its arguments', (t) => {
  const { drv } = setup(4);
  t.throws(() => drv.addBuf([], [], 1), { instanceOf: RangeError });
  t.throws(() => drv.addBuf([{ gpa: 0, lenBytes: 1 }], [], -1), { instanceOf: RangeError });
  t.throws(() => drv.addBuf([{ gpa: 0, lenBytes: 2 ** 32 }], [], 1), { instanceOf: RangeError });
  t.throws(() => drv.addBuf([{ gpa: -4096, lenBytes: 1 }], [], 1), { instanceOf: RangeError });
  t.is(drv.numFree, 4, 'a rejected addBuf leaves the free list alone');
});

test('two threads: device in a worker, 140 000 chains across two 2^16 wraps, every byte checked (seeded)', async (t) => {
  const rand = mulberry32(0xc0ffee);
  const q = 64;
  const ramBytes = 4 << 20;
  const baseGpa = 0x1000;
  const ram = new SharedArrayBuffer(ramBytes);
  const mem = attachGuestMemory(ram);
  const layout = virtqueueLayout(q, baseGpa);
  const drv = VirtqueueDriver.init(mem, layout);
  const bellsSab = new SharedArrayBuffer(8);
  const bells = new Int32Array(bellsSab);
  const totalChains = 140_000;
  const data: DeviceHelperData = { ram, bells: bellsSab, queueSizeEntries: q, baseGpa, totalChains };
  const worker = new Worker(new URL('./virtqueue-device-helper.js', import.meta.url), { workerData: data });
  const workerDone = new Promise<{ ok: boolean; error?: string; handled?: number; parks?: number }>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`device worker exited with ${code} before reporting`)));
  });

  // each request slot (token) owns 1 KiB of guest RAM at 0x100000 + 1024 × slot
  const SLOT_BYTES = 1024;
  const dataBase = 0x100000;
  const freeSlots = Array.from({ length: q }, (_, i) => i);
  const expected = new Map<number, { in: VirtqueueSegment[]; hash: number }>();
  let sent = 0;
  let done = 0;
  let mismatches = 0;
  const deadline = Date.now() + 90_000;
  while (done < totalChains) {
    let added = 0;
    while (sent < totalChains && freeSlots.length > 0) {
      const slot = freeSlots[freeSlots.length - 1];
      const base = dataBase + SLOT_BYTES * slot;
      const out: VirtqueueSegment[] = [];
      const inn: VirtqueueSegment[] = [];
      let off = 0;
      let h = 0x811c9dc5;
      const nOut = 1 + Math.floor(rand() * 3);
      for (let s = 0; s < nOut; s++) {
        const len = 1 + Math.floor(rand() * 96);
        for (let i = 0; i < len; i++) {
          const b = Math.floor(rand() * 256);
          mem.u8[base + off + i] = b;
          h = Math.imul(h ^ b, 0x01000193) >>> 0;
        }
        out.push({ gpa: base + off, lenBytes: len });
        off += len + 8;
      }
      const nIn = 1 + Math.floor(rand() * 2);
      for (let s = 0; s < nIn; s++) {
        const len = (s === 0 ? 4 : 1) + Math.floor(rand() * 96);
        mem.u8.fill(0xee, base + off, base + off + len);
        inn.push({ gpa: base + off, lenBytes: len });
        off += len + 8;
      }
      if (!drv.addBuf(out, inn, slot)) break;
      freeSlots.pop();
      expected.set(slot, { in: inn, hash: h });
      sent++;
      added++;
    }
    if (added > 0 && drv.publish() > 0) {
      Atomics.add(bells, KICK, 1);
      Atomics.notify(bells, KICK);
    }
    const seenIrq = Atomics.load(bells, IRQ);
    let got = 0;
    for (let b = drv.getBuf(); b; b = drv.getBuf()) {
      const e = expected.get(b.token)!;
      let k = 0;
      let total = 0;
      for (const s of e.in) {
        for (let i = s.gpa; i < s.gpa + s.lenBytes; i++, k++) {
          const want = k < 4 ? (e.hash >>> (8 * k)) & 0xff : (e.hash + k) & 0xff;
          if (mem.u8[i] !== want) mismatches++;
        }
        total += s.lenBytes;
      }
      if (b.lenBytes !== total) mismatches++;
      expected.delete(b.token);
      freeSlots.push(b.token);
      done++;
      got++;
    }
    if (got === 0 && added === 0) {
      if (Date.now() > deadline) break;
      Atomics.wait(bells, IRQ, seenIrq, 1000);
    }
  }
  const result = await workerDone;
  await worker.terminate();
  t.true(result.ok, result.error);
  t.is(result.handled, totalChains);
  t.is(done, totalChains);
  t.is(mismatches, 0);
  t.is(idxOf(mem, layout.availGpa), totalChains & 0xffff);
  t.is(idxOf(mem, layout.usedGpa), totalChains & 0xffff);
  t.is(drv.numFree, q);
  t.log(`device parked ${result.parks} times`);
});
