/**
 * The guest's per-function profile, in the spirit of `perf report`: for each
 * modelled kernel function, calls, total model time (children included),
 * self time (children excluded) and bytes. Profiled functions nest: a frame
 * is entered when the function starts and exited when it returns, and a
 * child's total is taken out of its parent's self time. Model time spent
 * waiting for the VMM (a busy-poll) is self time of the function that polls.
 */

import type { ModelClock } from '@vmstack/shm';

export interface ProfileEntry {
  calls: number;
  ns: number;
  selfNs: number;
  bytes: number;
}

export class Profiler {
  private readonly stack: { startNs: number; childNs: number }[] = [];
  readonly entries = new Map<string, ProfileEntry>();

  constructor(private readonly clock: ModelClock) {}

  /** A profiled function starts. */
  enter(): void {
    this.stack.push({ startNs: this.clock.nowNs(), childNs: 0 });
  }

  /** It returns: record it under `fn` (null: drop the frame, e.g. a call that did nothing). */
  exit(fn: string | null, bytes = 0): void {
    const frame = this.stack.pop();
    if (!frame) throw new Error(`profiler: exit from ${fn ?? 'a function'} without enter`);
    const total = this.clock.nowNs() - frame.startNs;
    const parent = this.stack[this.stack.length - 1];
    if (parent) parent.childNs += total;
    if (fn === null) return;
    let e = this.entries.get(fn);
    if (!e) {
      e = { calls: 0, ns: 0, selfNs: 0, bytes: 0 };
      this.entries.set(fn, e);
    }
    e.calls++;
    e.ns += total;
    e.selfNs += total - frame.childNs;
    e.bytes += bytes;
  }

  toJSON(): Record<string, ProfileEntry> {
    return Object.fromEntries(this.entries);
  }
}
