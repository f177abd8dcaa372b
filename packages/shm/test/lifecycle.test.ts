import test from 'ava';
import { RunControl, runWorkers, WorkerFailure } from '@vmstack/shm';

const entry = new URL('./helpers/scenario-worker.js', import.meta.url);

test('a worker crashing mid-run rejects the run within 1 s, naming it; no thread stays parked', async (t) => {
  const control = RunControl.allocate();
  const crashAt = new SharedArrayBuffer(8);
  const run = runWorkers(
    [
      { role: 'nvme-device', entry, init: { scenario: 'park-forever' } },
      { role: 'vmm', entry, init: { scenario: 'crash', crashAfterMs: 50, crashAt } },
      { role: 'host-vfio', entry, init: { scenario: 'park-forever' } },
    ],
    control,
  );
  const err = await t.throwsAsync(run, { instanceOf: WorkerFailure });
  // from the moment the worker threw, not from start-up (which depends on the machine's load)
  const elapsedMs = Date.now() - new Float64Array(crashAt)[0];
  t.regex(err!.message, /worker vmm \(thread \d+\) failed: deliberate crash/);
  t.true(elapsedMs < 1000, `rejected ${elapsedMs} ms after the crash`);
  t.true(RunControl.attach(control).aborted(), 'abort flag set, parked workers were woken');
});

test('handshake: every worker reports ready before any starts; results come back in order', async (t) => {
  let readyCount = -1;
  const c2 = RunControl.allocate();
  const res = await runWorkers([{ role: 'p', entry, init: { scenario: 'park-forever' } }], c2, {
    onReady: (w) => {
      readyCount = w.length;
      setTimeout(() => RunControl.attach(c2).abort(), 20);
    },
  });
  t.is(readyCount, 1);
  t.like(res.results[0], { woke: 'abort' });
});
