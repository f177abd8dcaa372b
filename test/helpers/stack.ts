/**
 * Shared by the whole-stack tests: run one fio job line on real workers
 * (runStack) with small, fast settings, and read the `vmstack` report of the
 * result. Runs of one test file go one at a time
 * (AVA starts a file's tests together; each run is 4+ worker threads, AVA
 * runs two files at a time, and on a 2-core machine serial runs finished the
 * verify file in 32 s against 44 s two at a time). VMSTACK_TEST_RUNS=n
 * allows n at once.
 */

import {
  jobsFromCommandLine,
  type LeakReport,
  type LockStatRow,
  type RunResult,
  runStack,
  type StackOptions,
  type TopologyFlags,
  topologyFromFlags,
  type VerifyReport,
  type VmstackCounters,
} from '@vmstack/cli';
import type { DmaStrategy } from '@vmstack/guest-kernel';
import { DEFAULT_PROFILE_PATH, DEFAULT_QUANTUM_NS, loadProfile } from '@vmstack/shm';

export const profile = loadProfile(DEFAULT_PROFILE_PATH);
export const KiB = 1024;
export const MiB = 1024 * KiB;
const MAX_CONCURRENT_RUNS = Number(process.env.VMSTACK_TEST_RUNS ?? 1);

export interface StackRun {
  result: RunResult;
  counters: VmstackCounters;
  leaks: LeakReport;
  verify: VerifyReport;
  /** completed I/Os of every job, both directions (verify-phase reads included, as fio counts them) */
  ios: number;
  lock(name: string): LockStatRow;
  /** bytes per model ns of job 0's reads */
  readBytesPerNs: number;
}

let running = 0;
const waiting: (() => void)[] = [];

async function limited<T>(f: () => Promise<T>): Promise<T> {
  if (running >= MAX_CONCURRENT_RUNS) await new Promise<void>((resolve) => waiting.push(resolve));
  running++;
  try {
    return await f();
  } finally {
    running--;
    waiting.shift()?.();
  }
}

/**
 * Run `fio` (fio option → value, as on the command line; a list: one job
 * per entry, each on its own vCPU, all at once) with `strategy`.
 * Defaults: virtual clock, quantum 0 (exact, as the CLI), v5.10 driver, scattered user pages, 64 MiB of
 * guest RAM (128 MiB for untrusted strict/lazy: swiotlb takes 64 MiB), and a
 * 60 s real-time limit so a stall fails fast with every worker's state.
 */
export function runFio(
  strategy: DmaStrategy,
  fio: Record<string, string> | Record<string, string>[],
  extra: Partial<StackOptions> = {},
  shape?: TopologyFlags,
): Promise<StackRun> {
  return limited(async () => {
    // several option sets: one job (one vCPU) each, all running at once
    const sets = Array.isArray(fio) ? fio : [fio];
    const parsed = {
      jobs: sets.flatMap((o, i) => jobsFromCommandLine({ name: sets.length > 1 ? `job${i}` : 'vmstack', ...o }, { direct: '1' }).jobs),
      jobOptions: {},
      globalOptions: {},
    };
    const swiotlb = extra.untrusted === true && (strategy === 'strict' || strategy === 'lazy');
    const guestRamBytes = (swiotlb ? 128 : 64) * MiB;
    // a shape from the topology flags (--vms, --devices, ...): its topology and its job list
    const built = shape
      ? topologyFromFlags(parsed.jobs, { ...shape, strategy, driverGeneration: 'v5.10', guestRamBytes, untrusted: extra.untrusted === true })
      : undefined;
    const result = await runStack({
      jobs: built ? built.jobs : parsed.jobs,
      topology: built?.topology,
      jobOptions: parsed.jobOptions,
      globalOptions: parsed.globalOptions,
      strategy,
      clock: 'virtual',
      profile,
      quantumNs: DEFAULT_QUANTUM_NS,
      driverGeneration: 'v5.10',
      bufferContiguity: 'none',
      guestRamBytes,
      spinLoads: 2000,
      dilation: 1,
      timeoutMs: 60_000,
      ...extra,
    });
    const v = result.vmstack;
    const locks = v.lock_stat;
    const read = result.jobs[0].read;
    return {
      result,
      counters: v.counters,
      leaks: v.leaks,
      verify: v.verify,
      ios: result.jobs.reduce((s, j) => s + j.read.totalIos + j.write.totalIos, 0),
      lock(name: string): LockStatRow {
        const l = locks.find((x) => x.name === name);
        if (!l) throw new Error(`no lock ${name} in lock_stat (have ${locks.map((x) => x.name).join(', ')})`);
        return l;
      },
      readBytesPerNs: read.runtimeNs > 0 ? read.ioBytes / read.runtimeNs : 0,
    };
  });
}

/** The four leak counters, all expected 0 after shutdown. */
export const NO_LEAKS: LeakReport = { iovas: 0, iova_mappings_in_vmm: 0, pinned_pages: 0, locked_vm_pages: 0 };
