/**
 * Fault injection: make one worker fail, or stop making progress, at a
 * model time, to check that a run still ends, quickly and naming it
 * (`vmstack run --inject-fault ROLE:MODE@TIME`). runWorkers hands each
 * worker the fault whose role pattern matches its role; every worker loop
 * calls `faultCheckpoint` with its model clock, and the worker acts at the
 * first checkpoint at or after the fault's time:
 * - `throw`: its body throws (a crash the worker reports);
 * - `exit`: its thread exits with code 1 (a crash nobody reports);
 * - `stall`: it spins without publishing anything (a livelock);
 * - `park`: it sleeps in Atomics.wait on a word nobody notifies (a lost wake-up).
 * A stalled or parked worker still stops once the run is aborted, as every
 * vmstack wait does: the watchdog (see runWorkers) must notice it first.
 *
 * The NVMe device (an `nvme-device/…` role) can also misbehave without
 * failing, from the first command it fetches at or after the fault's time
 * (`DEVICE_FAULT_MODES`; the controller acts on them, not `faultCheckpoint`):
 * - `drop-write`: it completes one write command successfully without storing its data;
 * - `corrupt-write`: it stores one write command's data with one byte of each block flipped;
 * - `dma-outside-prps`: for one read or write command it moves the last data page to or from
 *   an address none of its PRPs gave it (the PRP's address with bit 39 flipped, 512 GiB away),
 *   which the host IOMMU must refuse: the command then completes with a DMA fault.
 */

import { type AbortFlag, RunAborted } from './event.js';

export const WORKER_FAULT_MODES = ['throw', 'exit', 'stall', 'park'] as const;
export const DEVICE_FAULT_MODES = ['drop-write', 'corrupt-write', 'dma-outside-prps'] as const;
export const FAULT_MODES = [...WORKER_FAULT_MODES, ...DEVICE_FAULT_MODES] as const;
export type FaultMode = (typeof FAULT_MODES)[number];
export type DeviceFaultMode = (typeof DEVICE_FAULT_MODES)[number];

/** Whether `mode` is a device misbehaviour (the controller acts on it) rather than a worker failure. */
export function isDeviceFaultMode(mode: string): mode is DeviceFaultMode {
  return (DEVICE_FAULT_MODES as readonly string[]).includes(mode);
}

/** The role prefix of the NVMe device workers: only they take DEVICE_FAULT_MODES. */
export const DEVICE_ROLE_PREFIX = 'nvme-device/';

export interface FaultSpec {
  /** a worker role, or a pattern: `*` any characters but `/`, `**` any characters, `?` one character */
  readonly role: string;
  readonly mode: FaultMode;
  /** model time from which the worker acts (ns) */
  readonly atNs: number;
}

/** Whether `role` matches the pattern (see FaultSpec.role). */
export function roleMatches(pattern: string, role: string): boolean {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '*' && pattern[i + 1] === '*') {
      re += '.*';
      i++;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`).test(role);
}

/** The first fault whose pattern matches `role`, if any. */
export function faultFor(faults: readonly FaultSpec[] | undefined, role: string): FaultSpec | undefined {
  return faults?.find((f) => roleMatches(f.role, role));
}

let threadFault: FaultSpec | null = null;
let threadAbort: AbortFlag | null = null;

/** This thread's fault for its current run (set by workerMain); null: none. */
export function setThreadFault(fault: FaultSpec | null, abort: AbortFlag | null): void {
  threadFault = fault;
  threadAbort = abort;
}

/** Called by every worker loop with its model clock: does the injected fault, once, when its time has come. */
export function faultCheckpoint(nowNs: number): void {
  const f = threadFault;
  if (f === null || nowNs < f.atNs || isDeviceFaultMode(f.mode)) return;
  threadFault = null;
  const abort = threadAbort;
  const what = `injected fault (${f.mode}) at model time ${nowNs} ns`;
  switch (f.mode) {
    case 'throw':
      throw new Error(what);
    case 'exit':
      process.exit(1);
      break;
    case 'stall':
      while (!abort?.aborted()) {
        /* spin: no clock, no EOT, no progress published */
      }
      throw new RunAborted(what);
    case 'park': {
      const word = new Int32Array(new SharedArrayBuffer(4));
      while (!abort?.aborted()) Atomics.wait(word, 0, 0, 100);
      throw new RunAborted(what);
    }
  }
}
