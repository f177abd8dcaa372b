/**
 * The watchdog's rule: when has a run stalled, and which worker is to blame.
 *
 * A worker shows progress through what it publishes in the control block:
 * its model clock, EOT, wait threshold, next timer and progress count. Many
 * workers are idle by design for long stretches (the VMM and host workers
 * wait for requests, a vCPU waits for an interrupt), so one worker standing
 * still is no stall. A stall is the whole run standing still: every worker
 * that has not finished publishes the same state for `watchdogMs` of real
 * time. Then the one(s) to blame are:
 * 1. the workers not waiting in one of vmstack's waits (see `parkThread`) at
 *    any of the last samples: they run, or sleep outside the protocol,
 *    without getting anything done; everyone else waits on them;
 * 2. if every worker waits (a deadlock of the protocol), the ones with the
 *    smallest EOT: no peer may pass that time, so they hold the run back;
 * 3. if every EOT is NEVER, the ones with a wait threshold; else all.
 */

import { NEVER_NS, type RunControl } from './clock.js';

/** Default stall bound: 5 s of real time per worker thread each core carries. */
export function defaultWatchdogMs(workers: number, cores: number): number {
  return 5000 * Math.max(1, Math.ceil(workers / Math.max(1, cores)));
}

export interface WatchedWorker {
  readonly role: string;
  readonly threadId: number;
  /** its slot in the control block */
  readonly index: number;
}

export interface Stall {
  /** positions in the watched list, the one to name first */
  readonly suspects: number[];
  readonly stalledMs: number;
  /** one line: who, at what model time, waiting for what */
  readonly message: string;
}

/** The state a worker publishes; any change is progress. */
interface Snapshot {
  eotNs: number;
  clockNs: number;
  waitForNs: number;
  timerNs: number;
  progress: number;
}

/** The last samples in which a worker counts as waiting if it was seen parked in any. */
const WAITING_SAMPLES = 3;

/** How often the watchdog samples, for a bound of `watchdogMs`. */
export function watchdogSampleMs(watchdogMs: number): number {
  return Math.max(10, Math.min(250, Math.floor(watchdogMs / 8)));
}

export class StallDetector {
  private readonly last: (Snapshot | null)[];
  private readonly waitSeen: number[][];
  private sinceMs: number;

  constructor(
    private readonly control: RunControl,
    private readonly workers: readonly WatchedWorker[],
    readonly watchdogMs: number,
    startMs: number,
  ) {
    this.last = workers.map(() => null);
    this.waitSeen = workers.map(() => []);
    this.sinceMs = startMs;
  }

  /** Take one sample at `nowMs` (real ms); `live(i)`: worker i has not finished. A stall once the bound has passed. */
  sample(nowMs: number, live: (i: number) => boolean): Stall | null {
    const c = this.control;
    let moved = false;
    for (let i = 0; i < this.workers.length; i++) {
      const w = this.workers[i].index;
      const s: Snapshot = { eotNs: c.eotNs(w), clockNs: c.clockNs(w), waitForNs: c.waitForNs(w), timerNs: c.timerNs(w), progress: c.progress(w) };
      const p = this.last[i];
      if (!p || p.eotNs !== s.eotNs || p.clockNs !== s.clockNs || p.waitForNs !== s.waitForNs || p.timerNs !== s.timerNs || p.progress !== s.progress) {
        if (live(i)) moved = true;
        this.last[i] = s;
      }
      const seen = this.waitSeen[i];
      seen.push(c.waiting(w) ? 1 : 0);
      if (seen.length > WAITING_SAMPLES) seen.shift();
    }
    if (moved) {
      this.sinceMs = nowMs;
      return null;
    }
    const stalledMs = nowMs - this.sinceMs;
    if (stalledMs < this.watchdogMs) return null;
    const liveIdx = this.workers.map((_, i) => i).filter(live);
    if (liveIdx.length === 0) return null;
    const suspects = this.blame(liveIdx);
    return { suspects, stalledMs, message: this.describe(suspects, stalledMs) };
  }

  private blame(liveIdx: number[]): number[] {
    const running = liveIdx.filter((i) => !this.waitSeen[i].some((x) => x === 1));
    if (running.length > 0) return running;
    const eot = (i: number) => this.last[i]?.eotNs ?? NEVER_NS;
    const minEot = Math.min(...liveIdx.map(eot));
    if (minEot < NEVER_NS) return liveIdx.filter((i) => eot(i) === minEot);
    const withThreshold = liveIdx.filter((i) => (this.last[i]?.waitForNs ?? NEVER_NS) < NEVER_NS);
    return withThreshold.length > 0 ? withThreshold : liveIdx;
  }

  private describe(suspects: number[], stalledMs: number): string {
    const ns = (x: number) => (x >= NEVER_NS ? 'never' : `${x} ns`);
    const first = suspects[0];
    const w = this.workers[first];
    const s = this.last[first]!;
    const waiting = this.waitSeen[first].some((x) => x === 1);
    let what: string;
    if (s.waitForNs < NEVER_NS) what = `waiting for its peers' EOT to reach ${s.waitForNs} ns`;
    else if (waiting) what = `waiting for a peer (parked), EOT ${ns(s.eotNs)}`;
    else what = `waiting for nothing vmstack knows of (running or asleep outside its waits), EOT ${ns(s.eotNs)}`;
    const others = suspects.slice(1).map((i) => this.workers[i].role);
    const also = others.length > 0 ? `; also stalled: ${others.join(', ')}` : '';
    const time = s.clockNs >= NEVER_NS ? 'idle (no model time published)' : `at model time ${s.clockNs} ns`;
    return `worker ${w.role} (thread ${w.threadId}) stalled: no progress for ${(stalledMs / 1000).toFixed(1)} s ${time}, ${what}${also}`;
  }
}
