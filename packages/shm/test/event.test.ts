/**
 * EventCount: a notify wakes a parked owner with one Atomics.notify, however
 * many notifiers come before the owner is back; a notify that lands before
 * the owner sleeps is never lost.
 */
import { Worker } from 'node:worker_threads';
import { EVENT_WORDS, EventCount, threadWaitStats } from '@vmstack/shm';
import test from 'ava';

test('only the first notifier after the owner parked pays for the wake-up', (t) => {
  const words = new Int32Array(new SharedArrayBuffer(EVENT_WORDS * 4));
  const ev = new EventCount(words, 0);
  // the owner's side of a park, as wait() writes it, without sleeping this thread
  Atomics.store(words, 1, 1);
  const before = threadWaitStats.notifiesSent;
  ev.notify();
  ev.notify();
  ev.notify();
  t.is(threadWaitStats.notifiesSent - before, 1, 'one Atomics.notify for three notifies');
  t.is(Atomics.load(words, 1), 0, 'the first notifier cleared parked');
  t.is(Atomics.load(words, 0), 3, 'every notify moved seq');
  ev.notify();
  t.is(threadWaitStats.notifiesSent - before, 1, 'an owner that is not parked costs nothing');
});

test('a parked owner wakes, and a notify before it sleeps is not lost', async (t) => {
  const sab = new SharedArrayBuffer(EVENT_WORDS * 4);
  const ev = new EventCount(new Int32Array(sab), 0);
  // the owner (another thread) waits for two notifies, parking at once each time, with a 10 s timeout
  const owner = new Worker(
    `const { workerData: { sab, shm } } = require('node:worker_threads');
     import(shm).then(({ EventCount }) => {
       const ev = new EventCount(new Int32Array(sab), 0);
       let waits = 0;
       let timedOut = 0;
       for (let seen = 0; seen < 2; ) {
         const seq = ev.prepare();
         if (seq > seen) { seen = seq; continue; }
         waits++;
         if (!ev.wait(seq, 0, 10000)) timedOut++;
       }
       require('node:worker_threads').parentPort.postMessage({ waits, timedOut });
     });`,
    { eval: true, workerData: { sab, shm: import.meta.resolve('@vmstack/shm') } },
  );
  const done = new Promise<{ waits: number; timedOut: number }>((resolve) => owner.once('message', resolve));
  const words = new Int32Array(sab);
  // the first notify once the owner is parked, the second at once after (the owner may not be back yet)
  while (Atomics.load(words, 1) === 0) await new Promise((r) => setTimeout(r, 1));
  ev.notify();
  ev.notify();
  const r = await done;
  t.true(r.waits >= 1);
  t.is(r.timedOut, 0, 'every park ended by a notify');
  await owner.terminate();
});
