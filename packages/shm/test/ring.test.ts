import { Ring, RunControl, runWorkers } from '@vmstack/shm';
import test from 'ava';

const entry = new URL('./helpers/scenario-worker.js', import.meta.url);

test('10^6 records between two real workers: no loss, no reordering, no overrun, wrap-around', async (t) => {
  const records = 1_000_000;
  const ring = Ring.allocate({ capacityRecords: 256, recordBytes: 64, guardBytes: 64 });
  const control = RunControl.allocate();
  const out = await runWorkers<Record<string, unknown>>(
    [
      { role: 'producer', entry, init: { scenario: 'ring-producer', ring, records, seed: 42, batch: 16 } },
      { role: 'consumer', entry, init: { scenario: 'ring-consumer', ring, records, seed: 42 } },
    ],
    control,
    { timeoutMs: 60_000 },
  );
  const consumer = out.results[1];
  t.is(consumer.received, records);
  t.is(consumer.mismatches, 0);
  t.true(consumer.canaries as boolean, 'guard bytes around the ring are untouched');
  // tail (byte 0) and head (byte 64) count records free-running: both reached 10^6, so every slot of
  // the 256 was reused thousands of times
  const after = Ring.attach(ring);
  t.true(after.canariesIntact());
  t.is(after.publishedCount(), records);
  t.is(after.releasedCount(), records);
  t.is(new Int32Array(ring.sab, 0, 1)[0], records, 'tail at byte 0');
  t.is(new Int32Array(ring.sab, 64, 1)[0], records, 'head at byte 64');
  t.true((consumer.batches as number) > 1, 'the consumer saw the records in several batches');
  t.not(out.workers[0].threadId, out.workers[1].threadId);
});

test('ring refuses to overfill and frees space on release', (t) => {
  const h = Ring.allocate({ capacityRecords: 4, guardBytes: 8 });
  const r = Ring.attach(h);
  const offs = [r.tryReserve(), r.tryReserve(), r.tryReserve(), r.tryReserve()];
  t.true(offs.every((o) => o >= 0));
  t.is(new Set(offs).size, 4);
  t.is(r.tryReserve(), -1);
  r.publish();
  t.is(r.available(), 4);
  r.release(1);
  t.true(r.tryReserve() >= 0);
  t.is(r.tryReserve(), -1);
  t.true(r.canariesIntact());
});

test('ring wrap-around: record n sits at byte 320 + guard + (n mod capacity) × recordBytes, and the free-running indices cross 2^31', (t) => {
  const capacity = 4;
  const recordBytes = 32;
  const guardBytes = 16;
  const h = Ring.allocate({ capacityRecords: capacity, recordBytes, guardBytes });
  // start tail (byte 0) and head (byte 64) just below 2^31, so the run wraps the counters as well as the slots
  const start = 0x7fff_fffd;
  const words = new Int32Array(h.sab);
  words[0] = start;
  words[16] = start;
  const producer = Ring.attach(h);
  const consumer = Ring.attach(h);
  const dataBase = 320 + guardBytes;
  for (let n = 0; n < 3 * capacity; n++) {
    const seq = (start + n) | 0;
    t.is(producer.nextSeq(), seq);
    const off = producer.tryReserve();
    t.is(off, dataBase + ((n + start) % capacity) * recordBytes, `record ${n} in slot ${(n + start) % capacity}`);
    producer.writeHeader(off, 7, n, n * 10);
    producer.publish();
    t.is(consumer.available(), 1);
    t.is(consumer.offsetAt(0), off);
    t.is(consumer.requestIdAt(consumer.offsetAt(0)), n);
    consumer.release(1);
    t.is(producer.inFlight(), 0);
  }
  t.is(producer.publishedCount(), (start + 3 * capacity) | 0, 'tail wrapped past 2^31 to a negative int32');
  t.true(producer.publishedCount() < 0);
  t.is(producer.freeRecords(), capacity);
  t.true(producer.canariesIntact());
});

test('ring validates its shape', (t) => {
  t.throws(() => Ring.allocate({ capacityRecords: 3 }), { message: /power of two/ });
  t.throws(() => Ring.allocate({ capacityRecords: 4, recordBytes: 12 }), { message: /multiple of 8/ });
});

test('two producers taking turns under a lock: each claims the tail the other left, so no record overwrites another', (t) => {
  const h = Ring.allocate({ capacityRecords: 8 });
  const a = Ring.attach(h);
  const b = Ring.attach(h);
  const consumer = Ring.attach(h);
  const produce = (p: Ring, value: number): void => {
    p.claimProducer();
    const off = p.tryReserve();
    p.dv.setInt32(off + 16, value, true);
    p.publish();
  };
  produce(a, 1);
  produce(b, 2);
  produce(a, 3);
  t.is(consumer.available(), 3);
  t.deepEqual(
    [0, 1, 2].map((i) => consumer.dv.getInt32(consumer.offsetAt(i) + 16, true)),
    [1, 2, 3],
  );
  consumer.release(3);
  // without the claim, b's own idea of the tail is stale: it would overwrite record 3
  const off = b.tryReserve();
  t.is(off, consumer.offsetAt(-1), 'a stale producer reserves the slot of the last record published by the other');
});
