/**
 * EventCount: the one way a thread waits in vmstack.
 *
 * Two Int32 words in a SharedArrayBuffer: `seq` (bumped by every notify) and
 * `parked` (1 while the owner sleeps in Atomics.wait). The owner reads `seq`,
 * checks its conditions, and waits only if `seq` has not moved: a notify that
 * lands between the check and the wait is never lost. Waiting spins a
 * configurable number of loads first (cheap when the peer has a core of its
 * own), then parks; notify pays for `Atomics.notify` only when the owner is
 * parked, and only the first notifier after the owner parked pays for it. Parking uses a
 * timeout so an aborted run is always noticed.
 *
 * | word | name   | writer |
 * |------|--------|--------|
 * | +0   | seq    | any notifier (Atomics.add) |
 * | +1   | parked | the owner sets it, the owner or the first notifier clears it |
 */

export const EVENT_WORDS = 2;
const SEQ = 0;
const PARKED = 1;

export interface WaitStrategy {
  /** loads of `seq` before parking; 0 parks at once, Infinity never parks */
  readonly spinLoads: number;
}

export const DEFAULT_SPIN_LOADS = 2000;

/** Set when the run is being torn down; every waiter checks it. */
export interface AbortFlag {
  aborted(): boolean;
}

export class RunAborted extends Error {
  constructor(readonly reason: string) {
    super(`run aborted: ${reason}`);
    this.name = 'RunAborted';
  }
}

/**
 * Parks and wake-ups of this thread, over every EventCount it waited on: the run's handoff cost.
 * `parkedNs`: wall ns spent parked in `parkThread`; `runNs`: wall ns of the run's body (set by
 * workerMain), so `runNs - parkedNs` is the thread's busy time, spinning included.
 */
export const threadWaitStats = { parks: 0, spinsWon: 0, notifiesSent: 0, parkedNs: 0, runNs: 0 };

/**
 * Where this thread says it sleeps in one of vmstack's waits (a word of its
 * slot in the run's control block, set by workerMain; none off a worker): 1
 * while parked in `parkThread`, 0 otherwise. The watchdog reads it to tell a
 * worker that waits for a peer from one that runs, or sleeps elsewhere,
 * without progress.
 */
const waitMarker: { words: Int32Array | null; index: number } = { words: null, index: 0 };

export function setThreadWaitMarker(words: Int32Array | null, index = 0): void {
  waitMarker.words = words;
  waitMarker.index = index;
}

/** Atomics.wait, marked as a wait for a peer in this thread's control-block slot (see setThreadWaitMarker). */
export function parkThread(words: Int32Array, index: number, value: number, timeoutMs: number): 'ok' | 'not-equal' | 'timed-out' {
  const m = waitMarker.words;
  if (m) Atomics.store(m, waitMarker.index, 1);
  const t0 = performance.now();
  const r = Atomics.wait(words, index, value, timeoutMs);
  threadWaitStats.parkedNs += Math.round((performance.now() - t0) * 1e6);
  if (m) Atomics.store(m, waitMarker.index, 0);
  return r;
}

export class EventCount {
  private readonly seqIndex: number;
  private readonly parkedIndex: number;
  /** counters for the transport benchmark */
  parks = 0;
  spinsWon = 0;

  constructor(
    readonly words: Int32Array,
    baseIndex: number,
  ) {
    if (baseIndex < 0 || baseIndex + EVENT_WORDS > words.length) throw new RangeError(`EventCount at ${baseIndex} outside ${words.length} words`);
    this.seqIndex = baseIndex + SEQ;
    this.parkedIndex = baseIndex + PARKED;
  }

  /** Read before checking conditions; pass to `wait`. */
  prepare(): number {
    return Atomics.load(this.words, this.seqIndex);
  }

  /**
   * Bump `seq`, and wake the owner if it is parked. The first notifier to find it parked
   * clears `parked` and pays for the one `Atomics.notify`; the notifiers after it, before the
   * owner is back (a vCPU raising its EOT several times per I/O, a device posting a batch of
   * interrupts), find it cleared and only bump `seq`. An owner that has set `parked` but is not
   * asleep yet sees `seq` moved and does not sleep.
   */
  notify(): void {
    Atomics.add(this.words, this.seqIndex, 1);
    if (Atomics.load(this.words, this.parkedIndex) !== 0 && Atomics.exchange(this.words, this.parkedIndex, 0) !== 0) {
      Atomics.notify(this.words, this.seqIndex);
      threadWaitStats.notifiesSent++;
    }
  }

  /**
   * Bump `seq` without waking a parked owner: an owner spinning, or about to park, sees it
   * and runs; a parked one sleeps on until its own threshold or a `notify` wakes it.
   */
  bump(): void {
    Atomics.add(this.words, this.seqIndex, 1);
  }

  /**
   * Wait until `seq` differs from `observed` (or `timeoutMs` passes).
   * Returns false on timeout.
   */
  wait(observed: number, spinLoads: number, timeoutMs = 100): boolean {
    const w = this.words;
    for (let i = 0; i < spinLoads; i++) {
      if (Atomics.load(w, this.seqIndex) !== observed) {
        this.spinsWon++;
        threadWaitStats.spinsWon++;
        return true;
      }
    }
    Atomics.store(w, this.parkedIndex, 1);
    this.parks++;
    threadWaitStats.parks++;
    const r = parkThread(w, this.seqIndex, observed, timeoutMs);
    Atomics.store(w, this.parkedIndex, 0);
    return r !== 'timed-out';
  }
}
