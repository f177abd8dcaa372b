/**
 * Worker used by the shm tests: runs one named scenario against the shared
 * memory given in `init` and returns what it observed.
 */
import { faultCheckpoint, LockTable, type LockTableHandle, ModelClock, NEVER_NS, Ring, type RingHandle, WorkerSync, workerMain } from '@vmstack/shm';
import { mulberry32 } from './prng.js';

interface Init {
  scenario:
    | 'ring-producer'
    | 'ring-consumer'
    | 'mutex-increment'
    | 'mutex-wait'
    | 'crash'
    | 'exit-early'
    | 'park-forever'
    | 'clock-sender'
    | 'clock-receiver'
    | 'clock-reactive'
    | 'quantum-vcpu'
    | 'idle-reactive'
    | 'progressing';
  ring?: RingHandle;
  ring2?: RingHandle;
  records?: number;
  batch?: number;
  seed?: number;
  locks?: LockTableHandle;
  counter?: SharedArrayBuffer;
  iterations?: number;
  /** i32[0]: how many park-forever workers have parked (each adds 1 and notifies before its first wait) */
  parked?: SharedArrayBuffer;
  /** clock-receiver: i32[0] set to the timeline's length (and notified) once it has handled everything */
  finished?: SharedArrayBuffer;
  /** crash: throw once this many workers have parked */
  crashAfterParked?: number;
  events?: number[];
  stepNs?: number;
  peers?: number[];
  quantumNs?: number;
  untilNs?: number;
  realDelayUs?: number;
  log?: SharedArrayBuffer;
  /** progressing: real ms to keep making progress (one step per 20 ms) */
  progressMs?: number;
  /** progressing: the idle-reactive worker to wake once done */
  wake?: number;
}

workerMain<Init, unknown>((boot, control) => {
  const init = boot.init;
  const spin = 500;
  switch (init.scenario) {
    case 'ring-producer':
      return () => {
        const ring = Ring.attach(init.ring!);
        const rng = mulberry32(init.seed!);
        const batch = init.batch ?? 16;
        for (let i = 0; i < init.records!; ) {
          const n = Math.min(batch, init.records! - i);
          for (let k = 0; k < n; k++, i++) {
            const off = ring.reserve(spin, control);
            ring.writeHeader(off, 7, i, i * 10);
            for (let b = 16; b < ring.recordBytes; b += 4) ring.dv.setUint32(off + b, rng(), true);
          }
          ring.publish();
        }
        return { sent: init.records };
      };
    case 'ring-consumer':
      return () => {
        const ring = Ring.attach(init.ring!);
        const rng = mulberry32(init.seed!);
        let expected = 0;
        let mismatches = 0;
        let batches = 0;
        while (expected < init.records!) {
          const n = ring.waitForData(spin, control);
          batches++;
          for (let k = 0; k < n; k++) {
            const off = ring.offsetAt(k);
            if (ring.requestIdAt(off) !== expected || ring.typeAt(off) !== 7 || ring.timestampAt(off) !== expected * 10) mismatches++;
            for (let b = 16; b < ring.recordBytes; b += 4) if (ring.dv.getUint32(off + b, true) !== rng()) mismatches++;
            expected++;
          }
          ring.release(n);
        }
        return { received: expected, mismatches, batches, canaries: ring.canariesIntact() };
      };
    case 'mutex-increment':
      return () => {
        const locks = LockTable.attach(init.locks!, boot.index, control, 200);
        const m = locks.get('test_lock');
        const c = new Int32Array(init.counter!);
        for (let i = 0; i < init.iterations!; i++) {
          m.lock();
          c[0] = c[0] + 1; // deliberately not atomic: only the lock makes it exact
          m.unlock();
        }
        return { done: init.iterations };
      };
    case 'mutex-wait':
      return () => {
        // the test holds test_lock: block on it, then report what the holder wrote before releasing it
        const m = LockTable.attach(init.locks!, boot.index, control, 200).get('test_lock');
        const c = new Int32Array(init.counter!);
        m.lock();
        const sawValue = c[0];
        m.unlock();
        return { sawValue };
      };
    case 'crash':
      return () => {
        // crash mid-run: once the other workers are parked
        const parked = new Int32Array(init.parked!);
        for (let n = Atomics.load(parked, 0); n < init.crashAfterParked!; n = Atomics.load(parked, 0)) Atomics.wait(parked, 0, n);
        throw new Error('deliberate crash in test worker');
      };
    case 'exit-early':
      return () => {
        // end the thread without reporting anything: only the runner can tell the others
        const parked = new Int32Array(init.parked!);
        for (let n = Atomics.load(parked, 0); n < init.crashAfterParked!; n = Atomics.load(parked, 0)) Atomics.wait(parked, 0, n);
        process.exit(3);
      };
    case 'idle-reactive':
      // a reactive worker with nothing to do: EOT NEVER, parked on its event until i32[0] of `finished` is set
      return () => {
        control.publishEot(boot.index, NEVER_NS);
        const ev = control.event(boot.index);
        const finished = new Int32Array(init.finished!);
        for (;;) {
          const seq = ev.prepare();
          faultCheckpoint(0);
          if (Atomics.load(finished, 0) !== 0) return { idle: true };
          if (control.aborted()) return { aborted: true };
          ev.wait(seq, 100);
        }
      };
    case 'progressing':
      // a worker whose model clock moves one step per 20 ms of real time, then tells the idle one to finish
      return () => {
        const sleep = new Int32Array(new SharedArrayBuffer(4));
        const start = performance.now();
        let nowNs = 0;
        while (performance.now() - start < init.progressMs!) {
          faultCheckpoint(nowNs);
          nowNs += 1000;
          control.publishClock(boot.index, nowNs);
          control.publishEot(boot.index, nowNs);
          Atomics.wait(sleep, 0, 0, 20);
        }
        Atomics.store(new Int32Array(init.finished!), 0, 1);
        control.event(init.wake!).notify();
        return { clockNs: nowNs };
      };
    case 'park-forever':
      return () => {
        // wait on our own event with no one ever notifying it; only an abort ends this
        const ev = control.event(boot.index);
        let first = true;
        let notified = false;
        for (;;) {
          const seq = ev.prepare();
          if (control.aborted()) return { woke: 'abort', notified };
          if (first && init.parked) {
            const parked = new Int32Array(init.parked);
            Atomics.add(parked, 0, 1);
            Atomics.notify(parked, 0);
          }
          first = false;
          // true: the event moved (the abort bumps every worker's event), false: the wait timed out
          notified = ev.wait(seq, 100, 10_000);
        }
      };
    case 'clock-sender':
      // sends events at given model times; publishes its clock as EOT between them
      return () => {
        const ring = Ring.attach(init.ring!);
        const clock = new ModelClock('virtual');
        const watchers = init.peers ?? [];
        for (const t of init.events!) {
          // pretend to work up to t in small steps, publishing EOT as a vCPU does
          while (clock.nowNs() < t) {
            clock.charge(Math.min(init.stepNs ?? 1000, t - clock.nowNs()));
            control.raiseEot(boot.index, clock.nowNs(), watchers);
          }
          const off = ring.reserve(spin, control);
          ring.writeHeader(off, 1, 0, clock.nowNs());
          ring.publish();
        }
        control.raiseEot(boot.index, NEVER_NS, watchers);
        return { endNs: clock.nowNs() };
      };
    case 'clock-receiver':
      // has its own timed events every stepNs; may handle one at t only when the sender's EOT ≥ t.
      return () => {
        const ring = Ring.attach(init.ring!);
        const clock = new ModelClock('virtual');
        const sync = new WorkerSync(control, boot.index, spin);
        const peers = init.peers!;
        const timeline: [string, number][] = [];
        let nextTimerNs = init.stepNs!;
        let inputsDone = 0;
        const totalInputs = init.events!.length;
        const lookaheadNs = 0;
        while (nextTimerNs <= init.untilNs! || inputsDone < totalInputs) {
          // earliest pending input, if any
          const n = ring.available();
          const inputNs = n > 0 ? ring.timestampAt(ring.offsetAt(0)) : NEVER_NS;
          const timerNs = nextTimerNs <= init.untilNs! ? nextTimerNs : NEVER_NS;
          const t = Math.min(inputNs, timerNs);
          if (t === NEVER_NS) {
            ring.waitForData(spin, control);
            continue;
          }
          // conservative: handle t only when no sender can still send anything earlier
          // strictly past t: a sender whose EOT is t may still send something stamped t
          const ok = sync.awaitBound(
            t + 1,
            () => Math.min(sync.minPeerEotNs(peers) + lookaheadNs, ring.available() > n ? ring.timestampAt(ring.offsetAt(n)) : NEVER_NS),
            () => ring.available() > n,
          );
          if (!ok) continue; // a new input arrived: re-evaluate which event is first
          clock.syncTo(t);
          if (inputNs <= timerNs) {
            timeline.push(['input', t]);
            ring.release(1);
            inputsDone++;
          } else {
            timeline.push(['timer', t]);
            nextTimerNs += init.stepNs!;
          }
        }
        if (init.finished) {
          const f = new Int32Array(init.finished);
          Atomics.store(f, 0, timeline.length);
          Atomics.notify(f, 0);
        }
        return { timeline };
      };
    case 'clock-reactive':
      // a purely reactive worker: publishes NEVER and only answers inputs
      return () => {
        control.publishEot(boot.index, NEVER_NS);
        const ring = Ring.attach(init.ring!);
        const n = ring.waitForData(spin, control);
        ring.release(n);
        return { handled: n };
      };
    case 'quantum-vcpu':
      // steps model time by stepNs up to untilNs, never more than quantumNs ahead of the other vCPUs' EOT
      return () => {
        const clock = new ModelClock('virtual');
        const sync = new WorkerSync(control, boot.index, spin);
        const peers = init.peers!;
        let maxLeadNs = 0;
        let heldBack = 0;
        while (clock.nowNs() < init.untilNs!) {
          const next = clock.nowNs() + init.stepNs!;
          if (sync.minPeerEotNs(peers) + init.quantumNs! < next) heldBack++;
          sync.awaitBound(
            next,
            () => sync.minPeerEotNs(peers) + init.quantumNs!,
            () => false,
          );
          const live = peers.map((p) => control.eotNs(p)).filter((e) => e !== NEVER_NS);
          if (live.length > 0) maxLeadNs = Math.max(maxLeadNs, next - Math.min(...live));
          const until = performance.now() + (init.realDelayUs ?? 0) / 1000;
          while (performance.now() < until) {
            /* a slow vCPU in real time */
          }
          clock.charge(init.stepNs!);
          control.publishClock(boot.index, clock.nowNs());
          control.raiseEot(boot.index, clock.nowNs(), peers);
        }
        control.raiseEot(boot.index, NEVER_NS, peers);
        return { maxLeadNs, heldBack };
      };
  }
});
