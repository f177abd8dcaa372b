/**
 * A progress bar for commands that make many runs (compare, sweep, scale):
 * on stderr, redrawn in place, only when stderr is a terminal; elsewhere
 * (a pipe, a file, a test) it prints nothing.
 *
 *   compare [##########----------] 4/8 runs, eta 00m:21s
 *
 * The ETA is wall time: the time so far over the runs done, times the runs left.
 */

import { etaToStr } from './fio-status.js';

const WIDTH = 20;

export class RunProgress {
  private done = 0;
  private readonly startMs = performance.now();
  private readonly shown: boolean;

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly out: { isTTY?: boolean; write(s: string): unknown } = process.stderr,
  ) {
    this.shown = out.isTTY === true && total > 1;
    this.draw();
  }

  /** The bar as it reads after `done` of `total` runs, `elapsedMs` in. */
  static bar(label: string, done: number, total: number, elapsedMs: number): string {
    const filled = Math.round((WIDTH * done) / Math.max(1, total));
    const eta = done > 0 ? etaToStr(((total - done) * elapsedMs) / done / 1000) : '--';
    return `${label} [${'#'.repeat(filled)}${'-'.repeat(WIDTH - filled)}] ${done}/${total} runs, eta ${eta}`;
  }

  private draw(): void {
    if (this.shown) this.out.write(`\r${RunProgress.bar(this.label, this.done, this.total, performance.now() - this.startMs)}`);
  }

  /** One run finished. */
  tick(): void {
    this.done++;
    this.draw();
  }

  /** All runs finished (or failed): the line is cleared. */
  end(): void {
    if (this.shown) this.out.write(`\r${' '.repeat(RunProgress.bar(this.label, this.total, this.total, 0).length + 8)}\r`);
  }

  /** `p`, counted as one run when it settles. */
  track<T>(p: Promise<T>): Promise<T> {
    return p.finally(() => this.tick());
  }
}
