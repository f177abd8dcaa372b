/**
 * fio's status line while jobs run (eta.c display_thread_status, 3.33):
 *
 *   Jobs: 1 (f=1): [r(1)][12.5%][r=305MiB/s][r=78.1k IOPS][eta 00m:07s]
 *
 * - "Jobs: N (f=N)": jobs running, files open (each job's drive, or its nrfiles parts of it);
 * - the run string: one letter per job, runs of the same letter as `X(n)`:
 *   R/r sequential/random read, W/w write, M/m mixed, V verifying, _ done;
 * - the share done: per job, its model time over `runtime` (time-based or
 *   runtime-limited jobs) or its completed I/Os over the I/Os it will issue
 *   (the verify reads of a writing job included), averaged over the jobs;
 * - bandwidth and IOPS over the last interval, in model time (fio's
 *   num2str: 4 significant figures, KiB/s scaled by 1024, IOPS by 1000);
 *   a writing job's completions are writes until its region is written,
 *   reads (the verify phase) after; a mixed job's are split by rwmixread;
 * - the ETA in wall time: the time this run has taken, scaled by what is
 *   left (eta_to_str: [d:][h:]mm:ss).
 *
 * Each line ends in "\r" and is padded to the previous one's length, as fio
 * redraws its line on a terminal.
 */

import { type FioJobSpec, fioJobWrites } from '@vmstack/guest-kernel';
import { NEVER_NS } from '@vmstack/shm';
import type { JobStatus } from '../stack/run-stack.js';
import { num2str } from './fio-normal.js';

/** fio's eta_to_str(). */
export function etaToStr(etaSec: number): string {
  let s = Math.max(0, Math.floor(etaSec));
  const sec = s % 60;
  s = Math.floor(s / 60);
  const m = s % 60;
  s = Math.floor(s / 60);
  const h = s % 24;
  const d = Math.floor(s / 24);
  const two = (n: number) => String(n).padStart(2, '0');
  let out = '';
  if (d) out += `${two(d)}d:`;
  if (h || d) out += `${two(h)}h:`;
  return `${out}${two(m)}m:${two(sec)}s`;
}

/** The run string with runs of one letter joined as fio prints them: `R(2)w(1)`. */
export function runString(letters: readonly string[]): string {
  let out = '';
  for (let i = 0; i < letters.length; ) {
    let j = i;
    while (j < letters.length && letters[j] === letters[i]) j++;
    out += `${letters[i]}(${j - i})`;
    i = j;
  }
  return out;
}

function jobLetter(job: FioJobSpec): string {
  const random = job.rw.startsWith('rand');
  if (job.rw === 'read' || job.rw === 'randread') return random ? 'r' : 'R';
  if (job.rw === 'write' || job.rw === 'randwrite') return random ? 'w' : 'W';
  return random ? 'm' : 'M';
}

/** The I/Os a job issues without a time limit: its region once, and read back once more when it verifies what it wrote. */
function plannedIos(job: FioJobSpec): { main: number; verify: number } {
  const main = Math.max(1, Math.floor(job.sizeBytes / job.blockSizeBytes));
  const verify = job.verify !== 'none' && job.doVerify && fioJobWrites(job) ? main : 0;
  return { main, verify };
}

/** Draws fio's status line from the jobs' status samples. */
export class FioStatusLine {
  private last: { wallMs: number; ios: number[]; clockNs: number } | undefined;
  private lastLength = 0;

  constructor(
    private readonly jobs: readonly FioJobSpec[],
    private readonly startWallMs: number,
  ) {}

  /** The line for a sample taken at `wallMs` (real ms). */
  line(status: readonly JobStatus[], wallMs: number): string {
    const letters: string[] = [];
    const fractions: number[] = [];
    const rate = [0, 0];
    const iops = [0, 0];
    const clocks = status.filter((s) => s.clockNs < NEVER_NS).map((s) => s.clockNs);
    const clockNs = clocks.length ? Math.min(...clocks) : (this.last?.clockNs ?? 0);
    const dtNs = this.last ? clockNs - this.last.clockNs : 0;
    let running = 0;
    let files = 0;
    this.jobs.forEach((job, i) => {
      const s = status[i] ?? { completedIos: 0, clockNs: NEVER_NS };
      const done = s.clockNs >= NEVER_NS && s.completedIos > 0;
      const { main, verify } = plannedIos(job);
      const byTime = job.runtimeNs ? Math.min(1, (s.clockNs < NEVER_NS ? s.clockNs : 0) / job.runtimeNs) : 0;
      const byIos = Math.min(1, s.completedIos / (main + verify));
      fractions.push(done ? 1 : job.timeBased ? byTime : Math.max(byIos, byTime));
      const verifying = !done && verify > 0 && s.completedIos >= main;
      letters.push(done ? '_' : verifying ? 'V' : jobLetter(job));
      if (!done) {
        running++;
        files += job.nrfiles ?? 1;
      }
      // this interval's completions, by direction
      const prev = this.last?.ios[i] ?? 0;
      const delta = Math.max(0, s.completedIos - prev);
      if (dtNs > 0 && delta > 0) {
        const perSec = (n: number) => (n * 1e9) / dtNs;
        const reads =
          job.rw === 'read' || job.rw === 'randread' || verifying
            ? delta
            : job.rw === 'write' || job.rw === 'randwrite'
              ? 0
              : Math.round((delta * job.rwmixreadPct) / 100);
        const writes = delta - reads;
        rate[0] += perSec(reads * job.blockSizeBytes) / 1024;
        rate[1] += perSec(writes * job.blockSizeBytes) / 1024;
        iops[0] += perSec(reads);
        iops[1] += perSec(writes);
      }
    });
    this.last = { wallMs, ios: status.map((s) => s.completedIos), clockNs };
    const perc = fractions.length ? fractions.reduce((a, b) => a + b, 0) / fractions.length : 0;
    const elapsedMs = wallMs - this.startWallMs;
    const etaStr = perc > 0 ? etaToStr(((1 - perc) / perc) * (elapsedMs / 1000)) : '--';
    const percStr = perc > 0 ? `${(perc * 100).toFixed(1)}%` : '-.-%';
    let out = `Jobs: ${running} (f=${files})`;
    if (running > 0) {
      out += `: [${runString(letters)}][${percStr}]`;
      const has = [rate[0] > 0 || iops[0] > 0, rate[1] > 0 || iops[1] > 0];
      if (has[0] || has[1]) {
        const c = ['r', 'w'];
        const bw = [0, 1].filter((d) => has[d]).map((d) => `${c[d]}=${num2str(Math.floor(rate[d]), 4, 1024, true, 'bytepersec')}`);
        const io = [0, 1].filter((d) => has[d]).map((d) => `${c[d]}=${num2str(Math.floor(iops[d]), 4, 1, false, 'none')}`);
        out += `[${bw.join(',')}][${io.join(',')} IOPS]`;
      }
      out += `[eta ${etaStr}]`;
    }
    const pad = out.length < this.lastLength ? ' '.repeat(this.lastLength - out.length) : '';
    this.lastLength = out.length;
    return `${out}${pad}\r`;
  }
}
