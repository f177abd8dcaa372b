/**
 * Conservative time synchronisation between workers (virtual clock mode),
 * built on the control block's published EOTs and per-worker events.
 * See clock.ts for the rules.
 */

import { NEVER_NS, type RunControl } from './clock.js';
import { RunAborted } from './event.js';
import type { Ring } from './ring.js';

export class WorkerSync {
  constructor(
    readonly control: RunControl,
    readonly self: number,
    readonly spinLoads: number,
  ) {}

  /** Smallest published EOT among `peers` (NEVER_NS if none). */
  minPeerEotNs(peers: readonly number[]): number {
    let m = NEVER_NS;
    for (let i = 0; i < peers.length; i++) {
      const e = this.control.eotNs(peers[i]);
      if (e < m) m = e;
    }
    return m;
  }

  /**
   * Block until `bound()` ≥ tNs or `interrupted()` is true. `bound` reads the
   * peers' EOTs (possibly corrected by the caller); peers that raise their EOT
   * to our published wait threshold wake us. Returns true if the bound was
   * reached, false if interrupted.
   */
  awaitBound(tNs: number, bound: () => number, interrupted: () => boolean): boolean {
    const ev = this.control.event(this.self);
    for (;;) {
      const seq = ev.prepare();
      if (bound() >= tNs) {
        this.control.setWaitFor(this.self, NEVER_NS);
        return true;
      }
      if (interrupted()) {
        this.control.setWaitFor(this.self, NEVER_NS);
        return false;
      }
      if (this.control.aborted()) throw new RunAborted(`worker ${this.self} waiting for model time ${tNs}`);
      this.control.setWaitFor(this.self, tNs);
      // re-check after publishing the threshold: a peer may have raised its EOT in between
      if (bound() >= tNs) continue;
      ev.wait(seq, this.spinLoads);
    }
  }
}

/**
 * What a sender remembers about the messages it put in one ring: their
 * timestamps, so it can tell the earliest one the receiver has not consumed
 * yet. The receiver publishes its new EOT before it releases what it consumed,
 * so min(receiver EOT, earliest unconsumed + reaction lookahead) is a safe
 * bound on what the receiver may still send.
 */
export class SentLog {
  private readonly ts: Float64Array;
  private readonly mask: number;

  constructor(private readonly ring: Ring) {
    this.ts = new Float64Array(ring.capacity);
    this.mask = ring.capacity - 1;
  }

  /** Call once per record, in publish order, before or right after publishing it. */
  record(seq: number, tsNs: number): void {
    this.ts[seq & this.mask] = tsNs;
  }

  /** Timestamp of the oldest record the receiver has not released, or NEVER_NS. */
  earliestUnconsumedNs(): number {
    const released = this.ring.releasedCount();
    const published = this.ring.publishedCount();
    if (released === published) return NEVER_NS;
    return this.ts[released & this.mask];
  }
}
