/**
 * CPU load as a share of the whole host, the way `top`'s summary line and
 * `vmstat`'s us + sy columns show it: the busy time of the CPUs that worked,
 * summed, over (run time × the host's hardware threads). A vCPU busy for the
 * whole run is 100% of itself but 12.5% of the 4-core / 8-thread i5-10210U
 * (profile `hostCpuThreadsCount`); `top` and `vmstat` count Hyper-Threading
 * siblings as CPUs of their own, so the denominator is threads, not cores.
 *
 * The model does not place vCPUs on host threads: with more busy CPUs than
 * host threads the share can pass 100%, a sign the topology overcommits the
 * host, which the caller may want to report rather than hide.
 */

/**
 * @param busyNsPerCpu   model ns each CPU (vCPU, or a bare-metal CPU) was busy during the run
 * @param runtimeNs      the run's length in model ns (> 0)
 * @param hostCpuThreads the host's logical CPUs (a positive integer)
 * @returns percent of all host CPU time
 * @throws RangeError for a non-positive run time or thread count, or a busy time that is negative or longer than the run
 */
export function systemCpuSharePct(busyNsPerCpu: readonly number[], runtimeNs: number, hostCpuThreads: number): number {
  if (!(Number.isFinite(runtimeNs) && runtimeNs > 0)) throw new RangeError(`systemCpuSharePct: runtimeNs ${runtimeNs} must be a positive number of ns`);
  if (!(Number.isInteger(hostCpuThreads) && hostCpuThreads > 0)) {
    throw new RangeError(`systemCpuSharePct: hostCpuThreads ${hostCpuThreads} must be a positive integer`);
  }
  let busyNs = 0;
  busyNsPerCpu.forEach((ns, cpu) => {
    if (!(Number.isFinite(ns) && ns >= 0 && ns <= runtimeNs)) {
      throw new RangeError(`systemCpuSharePct: CPU ${cpu} busy ${ns} ns, outside [0, runtimeNs = ${runtimeNs}]`);
    }
    busyNs += ns;
  });
  return (100 * busyNs) / (runtimeNs * hostCpuThreads);
}
