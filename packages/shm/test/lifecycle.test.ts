import { RunControl, runWorkers, StallDetector, WorkerFailure, WorkerStall } from '@vmstack/shm';
import test from 'ava';

const entry = new URL('./helpers/scenario-worker.js', import.meta.url);

/** Atomics.waitAsync (Node ≥ 16; the ES2023 lib the packages build against does not declare it). */
const waitAsync = (Atomics as unknown as { waitAsync(i32: Int32Array, index: number, value: number): { value: Promise<string> | string } }).waitAsync;

/** Resolve once i32[0] of `sab` has reached `n` (the park-forever workers add 1 and notify as they park). */
async function untilAtLeast(sab: SharedArrayBuffer, n: number): Promise<void> {
  const i32 = new Int32Array(sab);
  for (let v = Atomics.load(i32, 0); v < n; v = Atomics.load(i32, 0)) await waitAsync(i32, 0, v).value;
}

test('a worker crashing mid-run rejects the run with its error, naming it; the abort flag is set for the parked workers', async (t) => {
  const control = RunControl.allocate();
  const parked = new SharedArrayBuffer(4);
  const run = runWorkers(
    [
      { role: 'nvme-device', entry, init: { scenario: 'park-forever', parked } },
      { role: 'vmm', entry, init: { scenario: 'crash', parked, crashAfterParked: 2 } },
      { role: 'host-vfio', entry, init: { scenario: 'park-forever', parked } },
    ],
    control,
    // far beyond the test's own timeout: a crash that went unnoticed would end as "did not finish", not as the crash
    { timeoutMs: 100_000 },
  );
  const err = await t.throwsAsync(run, { instanceOf: WorkerFailure });
  t.is(err!.role, 'vmm');
  t.is(err!.reason, 'deliberate crash in test worker');
  t.regex(err!.message, /^worker vmm \(thread \d+\) failed: deliberate crash in test worker$/);
  t.is(Atomics.load(new Int32Array(parked), 0), 2, 'vmm crashed while both other workers were parked');
  t.true(RunControl.attach(control).aborted(), 'abort flag set, so parked workers wake and stop');
});

test('a worker that exits without a word: the runner names it, sets the abort flag and rejects', async (t) => {
  const control = RunControl.allocate();
  const parked = new SharedArrayBuffer(4);
  const run = runWorkers(
    [
      { role: 'vmm', entry, init: { scenario: 'exit-early', parked, crashAfterParked: 1 } },
      { role: 'host-vfio', entry, init: { scenario: 'park-forever', parked } },
    ],
    control,
    { timeoutMs: 100_000 },
  );
  const err = await t.throwsAsync(run, { instanceOf: WorkerFailure });
  t.is(err!.role, 'vmm');
  t.is(err!.reason, 'exited with code 3 before finishing');
  t.true(RunControl.attach(control).aborted(), 'the runner set the abort flag');
});

test('handshake: every worker reports ready before any starts; a parked worker is woken by the abort; results come back in order', async (t) => {
  const control = RunControl.allocate();
  const parked = new SharedArrayBuffer(4);
  let readyCount = -1;
  let parkedAtReady = -1;
  const run = runWorkers<{ woke: string; notified: boolean }>(
    [
      { role: 'p0', entry, init: { scenario: 'park-forever', parked } },
      { role: 'p1', entry, init: { scenario: 'park-forever', parked } },
    ],
    control,
    {
      onReady: (w) => {
        readyCount = w.length;
        parkedAtReady = Atomics.load(new Int32Array(parked), 0);
      },
    },
  );
  await untilAtLeast(parked, 2);
  RunControl.attach(control).abort();
  const res = await run;
  t.is(readyCount, 2);
  t.is(parkedAtReady, 0, 'no worker began its work before every worker was ready');
  t.deepEqual(
    res.workers.map((w) => w.role),
    ['p0', 'p1'],
  );
  for (const r of res.results) t.like(r, { woke: 'abort', notified: true });
});

test('watchdog: an idle reactive worker beside one that progresses is no stall; the run ends normally', async (t) => {
  const control = RunControl.allocate();
  const finished = new SharedArrayBuffer(4);
  const out = await runWorkers<{ idle?: boolean; clockNs?: number }>(
    [
      { role: 'vm0/vmm/viommu0', entry, init: { scenario: 'idle-reactive', finished } },
      // progresses for four watchdog bounds while the reactive worker sleeps through all of them
      { role: 'vm0/vcpu0', entry, init: { scenario: 'progressing', finished, progressMs: 1200, wake: 0 } },
    ],
    control,
    { timeoutMs: 100_000, watchdogMs: 300 },
  );
  t.true(out.results[0].idle);
  t.true((out.results[1].clockNs ?? 0) > 0);
  t.false(RunControl.attach(control).aborted());
});

test('watchdog: a worker that stalls (injected) while its peer sleeps idle ends the run, naming the stalled one, not the idle one', async (t) => {
  const control = RunControl.allocate();
  const finished = new SharedArrayBuffer(4);
  const run = runWorkers(
    [
      { role: 'vm0/vmm/viommu0', entry, init: { scenario: 'idle-reactive', finished } },
      { role: 'vm0/vcpu0', entry, init: { scenario: 'progressing', finished, progressMs: 100_000, wake: 0 } },
    ],
    control,
    { timeoutMs: 100_000, watchdogMs: 300, faults: [{ role: 'vm0/vcpu*', mode: 'stall', atNs: 3000 }] },
  );
  const err = await t.throwsAsync(run, { instanceOf: WorkerStall });
  t.is(err!.role, 'vm0/vcpu0');
  t.regex(err!.message, /^worker vm0\/vcpu0 \(thread \d+\) stalled: no progress for \d+\.\d s at model time 3000 ns, waiting for nothing/);
  t.true(RunControl.attach(control).aborted(), 'the watchdog set the abort flag, so the idle worker woke and stopped');
});

test('watchdog rule: when every worker waits (a deadlock), the one with the smallest EOT is named', (t) => {
  const control = RunControl.allocate();
  const ctl = RunControl.attach(control);
  const workers = ['vm0/vcpu0', 'vm0/vcpu1', 'vm0/vmm/viommu0'].map((role, index) => ({ role, index, threadId: index + 1 }));
  ctl.publishEot(0, 5000);
  ctl.publishEot(1, 2000);
  ctl.setWaitFor(0, 6000);
  for (const w of workers) Atomics.store(ctl.waitMarkerRef(w.index).words, ctl.waitMarkerRef(w.index).index, 1);
  const d = new StallDetector(ctl, workers, 1000, 0);
  t.is(
    d.sample(0, () => true),
    null,
    'the first sample is progress',
  );
  t.is(
    d.sample(500, () => true),
    null,
    'within the bound',
  );
  const stall = d.sample(1000, () => true);
  t.deepEqual(stall?.suspects, [1]);
  t.regex(stall!.message, /^worker vm0\/vcpu1 \(thread 2\) stalled: no progress for 1\.0 s at model time 0 ns, waiting for a peer \(parked\), EOT 2000 ns$/);
  // any published change is progress: the bound starts again
  ctl.noteProgress(2);
  t.is(
    d.sample(1500, () => true),
    null,
  );
  t.is(
    d.sample(2400, () => true),
    null,
  );
  t.truthy(d.sample(2500, () => true));
});
