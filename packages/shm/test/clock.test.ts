import { ModelClock, NEVER_NS, Ring, RunControl, runWorkers } from '@vmstack/shm';
import test from 'ava';

const entry = new URL('./helpers/scenario-worker.js', import.meta.url);

type Timeline = [string, number][];

async function senderReceiver(): Promise<Timeline> {
  const control = RunControl.allocate();
  const ctl = RunControl.attach(control);
  // receiver is worker 1; the sender (worker 0) starts at model time 0
  ctl.publishEot(0, 0);
  const ring = Ring.allocate({ capacityRecords: 64 }, ctl.eventRef(1));
  const events = [2500, 2600, 7000, 12_345];
  const out = await runWorkers<{ timeline?: Timeline }>(
    [
      { role: 'sender', entry, init: { scenario: 'clock-sender', ring, events, stepNs: 700, peers: [1] } },
      { role: 'receiver', entry, init: { scenario: 'clock-receiver', ring, events, stepNs: 1000, untilNs: 15_000, peers: [0] } },
    ],
    control,
    { timeoutMs: 30_000 },
  );
  return out.results[1].timeline!;
}

test('virtual clock: a receiver handles its events in model-time order, held back until its sender has passed t', async (t) => {
  const timeline = await senderReceiver();
  const times = timeline.map(([, ns]) => ns);
  t.deepEqual(
    [...times].sort((a, b) => a - b),
    times,
    'events handled in model-time order',
  );
  t.deepEqual(
    timeline.filter(([k]) => k === 'input').map(([, ns]) => ns),
    [2500, 2600, 7000, 12_345],
  );
  t.is(timeline.filter(([k]) => k === 'timer').length, 15);
  // the timer at 3000 comes after the inputs at 2500/2600, never before them
  const i3000 = timeline.findIndex(([k, ns]) => k === 'timer' && ns === 3000);
  const i2600 = timeline.findIndex(([k, ns]) => k === 'input' && ns === 2600);
  t.true(i2600 < i3000);
});

test('virtual clock: the same inputs give the same timeline twice', async (t) => {
  const a = await senderReceiver();
  const b = await senderReceiver();
  t.deepEqual(a, b);
});

test('virtual clock: a reactive worker publishes NEVER and blocks no one while idle', async (t) => {
  const control = RunControl.allocate();
  const ctl = RunControl.attach(control);
  const ring = Ring.allocate({ capacityRecords: 4 }, ctl.eventRef(1));
  const inbox = Ring.allocate({ capacityRecords: 64 }, ctl.eventRef(0));
  const finished = new SharedArrayBuffer(4);
  // worker 0 receives from the reactive worker 1 only; its timers must all run while 1 idles
  const run = runWorkers<{ timeline?: Timeline; handled?: number }>(
    [
      { role: 'receiver', entry, init: { scenario: 'clock-receiver', ring: inbox, events: [], stepNs: 1000, untilNs: 50_000, peers: [1], finished } },
      { role: 'reactive', entry, init: { scenario: 'clock-reactive', ring } },
    ],
    control,
    { timeoutMs: 30_000 },
  );
  // the receiver finishes every timer while the reactive worker has not been sent anything yet
  const f = new Int32Array(finished);
  const receiverDone = (Atomics as unknown as { waitAsync(i32: Int32Array, index: number, value: number): { value: Promise<string> | string } }).waitAsync(
    f,
    0,
    0,
  ).value;
  await Promise.race([receiverDone, run]);
  t.is(Atomics.load(f, 0), 50, 'the receiver ran through its 50 timers with the reactive worker idle');
  // then wake the reactive worker so the run can end
  const r = Ring.attach(ring);
  r.writeHeader(r.tryReserve(), 1, 0, 0);
  r.publish();
  const out = await run;
  t.is(out.results[0].timeline!.length, 50);
  t.is(out.results[1].handled, 1);
  t.is(ctl.eotNs(1), NEVER_NS);
});

test('virtual clock: a vCPU is held back by the quantum', async (t) => {
  const control = RunControl.allocate();
  const ctl = RunControl.attach(control);
  ctl.publishEot(0, 0);
  ctl.publishEot(1, 0);
  const quantumNs = 5000;
  const out = await runWorkers<{ maxLeadNs: number; heldBack: number }>(
    [
      { role: 'vcpu0', entry, init: { scenario: 'quantum-vcpu', peers: [1], stepNs: 1000, untilNs: 200_000, quantumNs } },
      { role: 'vcpu1', entry, init: { scenario: 'quantum-vcpu', peers: [0], stepNs: 1000, untilNs: 200_000, quantumNs, realDelayUs: 200 } },
    ],
    control,
    { timeoutMs: 30_000 },
  );
  const fast = out.results[0];
  t.true(fast.heldBack > 0, 'the fast vCPU had to wait for the slow one');
  t.true(fast.maxLeadNs <= quantumNs, `lead ${fast.maxLeadNs} ns ≤ quantum`);
});

test('ModelClock: charges round up to whole ns and never goes back', (t) => {
  const c = new ModelClock('virtual');
  c.charge(341.3);
  t.is(c.nowNs(), 342);
  c.syncTo(100);
  t.is(c.nowNs(), 342);
  c.syncTo(1000);
  t.is(c.nowNs(), 1000);
  const w = new ModelClock('wall');
  const before = w.nowNs();
  w.charge(200_000);
  t.true(w.nowNs() - before >= 200_000);
});

test('restartAt reuses a virtual clock as a fresh timeline at a time', (t) => {
  const c = new ModelClock('virtual');
  c.advanceTo(5000);
  c.charge(10);
  c.restartAt(1200.5);
  t.is(c.nowNs(), 1201, 'as new ModelClock then advanceTo: back to the given time, rounded up');
  c.restartAt(-3);
  t.is(c.nowNs(), 0);
  t.throws(() => new ModelClock('wall').restartAt(0), { message: /virtual clocks only/ });
});
