import test from 'ava';
import { Ring, RunControl, runWorkers } from '@vmstack/shm';

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
  t.true(Ring.attach(ring).canariesIntact());
  // 10^6 records through 256 slots wraps the ring thousands of times
  t.true(records / 256 > 1000);
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

test('ring validates its shape', (t) => {
  t.throws(() => Ring.allocate({ capacityRecords: 3 }), { message: /power of two/ });
  t.throws(() => Ring.allocate({ capacityRecords: 4, recordBytes: 12 }), { message: /multiple of 8/ });
});
