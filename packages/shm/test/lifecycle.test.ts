import { RunControl, runWorkers, WorkerFailure } from '@vmstack/shm';
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
