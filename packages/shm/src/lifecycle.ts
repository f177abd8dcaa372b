/**
 * Starting, running and stopping the stack's workers — one code path for the
 * CLI, the tests and the benchmarks. Workers are always started from compiled
 * JavaScript (`dist/src/worker.js` of their package) with no loader flags.
 *
 * Protocol (the only postMessage traffic; never on the I/O path):
 *   main → worker   { kind: 'boot', boot }       a run's { role, index, control, init },
 *                                                to a new worker or an idle one (reused)
 *   worker → main   { kind: 'ready' }            after attaching to shared memory
 *   main → worker   { kind: 'go' }               once every worker is ready
 *   worker → main   { kind: 'result', result }   when its work is done
 *   worker → main   { kind: 'failed', message }  when its body threw
 *   main → worker   { kind: 'collect' }          an idle worker: collect garbage now (the
 *                                                shared-buffer pool dropped buffers it may map)
 *   main → worker   { kind: 'exit' }             an idle worker: close and exit
 * With `setWorkerReuse(true)` on a thread (the main thread, a piscina
 * thread), a worker whose run succeeded stays, idle and unref'd, for the next
 * run of the same entry file started from that thread: starting a worker (a
 * new isolate that loads its modules) costs about as much as a short run.
 * Whoever turns reuse on lets the idle workers go with `releaseIdleWorkers()`
 * before the thread ends (a piscina thread: before the pool terminates it): a
 * worker terminated while V8 still compiles its hot code in the background
 * can abort the process (Node 20), a worker that exits by itself cannot.
 * Otherwise workers exit after their run.
 * An idle worker holds nothing of its last run but objects over shared
 * memory that the next run reuses: the boot never travels as `workerData`
 * (which a worker keeps for its lifetime), the run's closure is dropped when
 * its result is sent, and reuse also turns on the shared-buffer pool
 * (shared-pool.ts), so the buffers an idle worker still maps until its isolate
 * next collects are the ones the next run of the same size gets back. Only
 * when the pool drops buffers are idle workers told to collect (`collect`):
 * a forced collection discards the optimized code that embeds the dying run's
 * objects, and the next run would pay its JIT warm-up again.
 * A worker that throws, exits early or errors makes the run fail: the control
 * block's abort flag is set, every parked thread is woken (they all check the
 * flag), the other workers are terminated, and `run()` rejects with a
 * `WorkerFailure` naming the worker's role and thread id.
 * A run that stands still (see watchdog.ts: no worker publishes anything new
 * for `watchdogMs`) fails the same way, with a `WorkerStall` naming the
 * worker that holds it back. `faults` (fault.ts) makes chosen workers fail.
 */

import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { isMainThread, parentPort, threadId, Worker, workerData } from 'node:worker_threads';
import { type ControlHandle, RunControl } from './clock.js';
import { WorkerFailure, WorkerStall } from './errors.js';
import { RunAborted, setThreadWaitMarker, threadWaitStats } from './event.js';
import { type FaultSpec, faultFor, setThreadFault } from './fault.js';
import { dropPooledSharedBuffers, onSharedBuffersDropped, setSharedBufferReuse } from './shared-pool.js';
import { StallDetector, watchdogSampleMs } from './watchdog.js';

export interface WorkerSpec {
  /** human role name, e.g. `guest-kernel/vcpu0`, `vmm`, `host-vfio`, `nvme-device` */
  readonly role: string;
  /** compiled worker entry (`new URL('./worker.js', import.meta.url)` from the package's index) */
  readonly entry: URL;
  /** anything structured-cloneable, SharedArrayBuffers included */
  readonly init: unknown;
}

export interface WorkerBoot<I> {
  readonly role: string;
  /** the worker's index in the run (its slot in the control block) */
  readonly index: number;
  readonly control: ControlHandle;
  readonly init: I;
  /** a fault to inject (fault.ts) */
  readonly fault?: FaultSpec;
}

export interface WorkerInfo {
  readonly role: string;
  readonly index: number;
  readonly threadId: number;
}

export interface RunOutcome<R> {
  readonly workers: WorkerInfo[];
  readonly results: R[];
}

export interface RunOptions {
  /** called once every worker is ready, before `go` */
  onReady?: (workers: WorkerInfo[]) => void;
  /** reject if the run has not finished by then (ms of real time) */
  timeoutMs?: number;
  /** grace for terminating the other workers after a failure */
  graceMs?: number;
  /** fail the run once no worker has published progress for this long (real ms; see watchdog.ts); 0 or absent: no watchdog */
  watchdogMs?: number;
  /** faults to inject: each worker gets the first whose role pattern matches its role */
  faults?: readonly FaultSpec[];
  /** called when a run fails, after the abort flag is set: wake what the control block does not reach (e.g. LockTable.wakeAll) */
  onAbort?: () => void;
}

/**
 * Node flags for every worker: none, unless VMSTACK_WORKER_NODE_FLAGS asks
 * for some (e.g. "--cpu-prof --cpu-prof-dir=prof" to profile each worker).
 */
const WORKER_NODE_FLAGS = (process.env.VMSTACK_WORKER_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean);

interface Slot {
  spec: WorkerSpec;
  worker: Worker;
  info: WorkerInfo;
  ready: boolean;
  done: boolean;
  exited: boolean;
  result: unknown;
  /** this run's listeners, removed when the worker goes back to the idle pool */
  listeners: { message: (m: { kind: string; result?: unknown; message?: string }) => void; error: (e: Error) => void; exit: (code: number) => void };
}

/** Workers that finished a run and wait for the next, by entry file (per thread). */
const idleWorkers = new Map<string, Worker[]>();
let workerReuse = false;

/** Keep workers between runs of this thread, and reuse its shared buffers; see releaseIdleWorkers. */
export function setWorkerReuse(enabled: boolean): void {
  workerReuse = enabled;
  setSharedBufferReuse(enabled);
  onSharedBuffersDropped(enabled ? collectDroppedBuffers : null);
}
const MAX_IDLE_WORKERS_PER_ENTRY = 8;

function takeIdleWorker(entry: URL): Worker | undefined {
  return idleWorkers.get(entry.href)?.pop();
}

function keepIdleWorker(entry: URL, worker: Worker): void {
  const list = idleWorkers.get(entry.href) ?? [];
  if (!workerReuse || list.length >= MAX_IDLE_WORKERS_PER_ENTRY) {
    worker.postMessage({ kind: 'exit' });
    return;
  }
  worker.unref(); // an idle worker does not keep the process alive
  list.push(worker);
  idleWorkers.set(entry.href, list);
  if (!pooled.has(worker)) {
    // once per worker: an idle worker that exits (released, or crashed) leaves the pool; an
    // error while idle (no run listens) ends it without taking this thread down
    pooled.add(worker);
    worker.on('error', () => {});
    worker.once('exit', () => {
      for (const l of idleWorkers.values()) {
        const i = l.indexOf(worker);
        if (i >= 0) l.splice(i, 1);
      }
    });
  }
}

/**
 * The shared-buffer pool dropped buffers: let them go now, on this thread and
 * in every idle worker. Neither allocates while idle, so V8 alone would keep
 * them mapped until the next run's allocations start a collection.
 */
function collectDroppedBuffers(): void {
  collectGarbage();
  for (const list of idleWorkers.values()) for (const w of list) w.postMessage({ kind: 'collect' });
}

/** workers that have been in the pool (their exit listener is registered) */
const pooled = new WeakSet<Worker>();

/**
 * Let every idle worker of this thread exit by itself (it closes its port),
 * and the shared-buffer pool let go of its buffers; resolves once the workers
 * have exited. Call before the thread ends.
 */
export function releaseIdleWorkers(): Promise<void> {
  const all = [...idleWorkers.values()].flat();
  idleWorkers.clear();
  dropPooledSharedBuffers();
  return Promise.all(
    all.map(
      (w) =>
        new Promise<void>((resolve) => {
          w.once('exit', () => resolve());
          w.ref(); // keep the process up until it is gone
          w.postMessage({ kind: 'exit' });
        }),
    ),
  ).then(() => undefined);
}

/**
 * Start every worker, wait for all handshakes, let them go, and collect their
 * results (in spec order). Rejects with a WorkerFailure on the first failure.
 */
export function runWorkers<R>(specs: readonly WorkerSpec[], control: ControlHandle, opts: RunOptions = {}): Promise<RunOutcome<R>> {
  const ctl = RunControl.attach(control);
  return new Promise<RunOutcome<R>>((resolve, reject) => {
    const slots: Slot[] = [];
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    let watchdog: NodeJS.Timeout | undefined;

    const finish = (err: Error | null): void => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      if (watchdog) clearInterval(watchdog);
      if (err) {
        ctl.abort();
        opts.onAbort?.();
        // give parked threads a moment to notice, then make sure none is left
        const grace = setTimeout(() => {
          for (const s of slots) if (!s.done) void s.worker.terminate();
        }, opts.graceMs ?? 200);
        grace.unref();
        // workers that finished their part wait for a next run: tell them to exit
        for (const s of slots) if (s.done && !s.exited) s.worker.postMessage({ kind: 'exit' });
        Promise.allSettled(slots.map((s) => (s.done ? Promise.resolve() : s.worker.terminate()))).then(() => reject(err));
        return;
      }
      // every worker finished its run: keep the ones still alive for the next run
      for (const s of slots) {
        s.worker.off('message', s.listeners.message);
        s.worker.off('error', s.listeners.error);
        s.worker.off('exit', s.listeners.exit);
        if (!s.exited) keepIdleWorker(s.spec.entry, s.worker);
      }
      resolve({ workers: slots.map((s) => s.info), results: slots.map((s) => s.result as R) });
    };

    if (specs.length === 0) {
      resolve({ workers: [], results: [] });
      return;
    }
    const fail = (slot: Slot, reason: string): void => finish(new WorkerFailure(slot.info.role, slot.info.threadId, reason));

    specs.forEach((spec, index) => {
      const fault = faultFor(opts.faults, spec.role);
      const boot: WorkerBoot<unknown> = { role: spec.role, index, control, init: spec.init, ...(fault ? { fault } : {}) };
      let worker: Worker;
      const idle = takeIdleWorker(spec.entry);
      try {
        if (idle) {
          worker = idle;
          worker.ref();
        } else {
          worker = new Worker(spec.entry, { execArgv: WORKER_NODE_FLAGS, name: spec.role });
        }
        worker.postMessage({ kind: 'boot', boot });
      } catch (e) {
        finish(new WorkerFailure(spec.role, -1, `could not start: ${(e as Error).message}`));
        return;
      }
      const message = (m: { kind: string; result?: unknown; message?: string }): void => {
        if (m.kind === 'ready') {
          slot.ready = true;
          if (slots.length === specs.length && slots.every((s) => s.ready)) {
            opts.onReady?.(slots.map((s) => s.info));
            for (const s of slots) s.worker.postMessage({ kind: 'go' });
            if (opts.watchdogMs) startWatchdog(opts.watchdogMs);
          }
        } else if (m.kind === 'result') {
          slot.done = true;
          slot.result = m.result;
          if (slots.length === specs.length && slots.every((s) => s.done)) finish(null);
        } else if (m.kind === 'failed') {
          fail(slot, m.message ?? 'unknown error');
        }
      };
      const error = (e: Error): void => fail(slot, e.message);
      const exit = (code: number): void => {
        slot.exited = true;
        if (!slot.done) fail(slot, `exited with code ${code} before finishing`);
        slot.done = true;
      };
      const slot: Slot = {
        spec,
        worker,
        info: { role: spec.role, index, threadId: worker.threadId },
        ready: false,
        done: false,
        exited: false,
        result: undefined,
        listeners: { message, error, exit },
      };
      slots.push(slot);
      worker.on('message', message);
      worker.on('error', error);
      worker.on('exit', exit);
    });
    const startWatchdog = (watchdogMs: number): void => {
      const detector = new StallDetector(
        ctl,
        slots.map((s) => s.info),
        watchdogMs,
        performance.now(),
      );
      watchdog = setInterval(() => {
        const stall = detector.sample(performance.now(), (i) => !slots[i].done);
        if (!stall) return;
        const s = slots[stall.suspects[0]];
        finish(new WorkerStall(s.info.role, s.info.threadId, `stalled: no progress for ${stall.stalledMs} ms`, stall.message));
      }, watchdogSampleMs(watchdogMs));
      watchdog.unref();
    };
    if (opts.timeoutMs) {
      timer = setTimeout(() => finish(new WorkerFailure('run', -1, `did not finish within ${opts.timeoutMs} ms`)), opts.timeoutMs);
      timer.unref();
    }
  });
}

/**
 * The body of a worker entry file: attach, handshake, wait for `go`, run,
 * report; then wait for the next run's boot (an idle worker is reused, see
 * runWorkers). `body` runs synchronously on the worker thread (it may block
 * in Atomics.wait); its return value is the worker's result.
 */
export function workerMain<I, R>(attach: (boot: WorkerBoot<I>, control: RunControl) => (() => R) | (() => Promise<R>)): void {
  if (isMainThread || !parentPort) throw new Error('workerMain must run inside a worker thread');
  const port = parentPort;
  const runOnce = (boot: WorkerBoot<I>): void => {
    // a run's hand-off counts are its own
    threadWaitStats.parks = 0;
    threadWaitStats.spinsWon = 0;
    threadWaitStats.notifiesSent = 0;
    threadWaitStats.parkedNs = 0;
    threadWaitStats.runNs = 0;
    const control = RunControl.attach(boot.control);
    const marker = control.waitMarkerRef(boot.index);
    setThreadWaitMarker(marker.words, marker.index);
    setThreadFault(boot.fault ?? null, control);
    // the run's closure holds every view of its shared memory: dropped once the run ends
    let body: (() => R) | (() => Promise<R>) | undefined;
    try {
      body = attach(boot, control);
    } catch (e) {
      reportFailure(port, control, e);
      return;
    }
    const onGo = (m: { kind: string }): void => {
      if (m.kind !== 'go') return;
      port.off('message', onGo);
      const run = body!;
      body = undefined;
      const goMs = performance.now();
      Promise.resolve()
        .then(() => run())
        .then(
          (result) => {
            threadWaitStats.runNs = Math.round((performance.now() - goMs) * 1e6);
            // every worker reports how often it parked and woke others: the cost of its handoffs
            if (result && typeof result === 'object') (result as Record<string, unknown>).waits = { ...threadWaitStats };
            port.postMessage({ kind: 'result', result });
          },
          (e) => reportFailure(port, control, e),
        );
    };
    port.on('message', onGo);
    port.postMessage({ kind: 'ready' });
  };
  port.on('message', (m: { kind: string; boot?: WorkerBoot<I> }) => {
    if (m.kind === 'boot' && m.boot) runOnce(m.boot);
    else if (m.kind === 'collect') collectGarbage();
    else if (m.kind === 'exit') port.close(); // nothing left to do: the thread ends by itself
  });
  // a worker started with its boot as workerData (by hand, not by runWorkers) runs it at once
  if (workerData) runOnce(workerData as WorkerBoot<I>);
}

/**
 * A full garbage collection of this thread, now: an idle isolate allocates
 * nothing, so V8 would not collect dropped SharedArrayBuffer objects before
 * the next run, and their memory (a guest RAM is tens of MiB and more) would
 * stay mapped meanwhile. `gc` is taken once from a fresh context with
 * `--expose-gc` set. The flag is process-wide and stays set: clearing it
 * again would race with another worker taking its own `gc`.
 */
let fullGc: (() => void) | undefined;
function collectGarbage(): void {
  if (!fullGc) {
    setFlagsFromString('--expose-gc');
    const gc: unknown = runInNewContext('typeof gc === "function" ? gc : undefined');
    if (typeof gc !== 'function') return;
    fullGc = gc as () => void;
  }
  fullGc();
}

function reportFailure(port: NonNullable<typeof parentPort>, control: RunControl, e: unknown): void {
  if (e instanceof RunAborted || control.aborted()) {
    // another worker failed first (some waits throw a plain Error on the abort); this one just stops
    port.postMessage({ kind: 'result', result: { aborted: true } });
    port.close();
    return;
  }
  const message = e instanceof Error ? e.message : String(e);
  control.abort();
  port.postMessage({ kind: 'failed', message });
  port.close();
}

export { threadId as currentThreadId };
