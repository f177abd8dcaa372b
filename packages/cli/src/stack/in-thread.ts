/**
 * The in-thread transport: the same components, the same shared-memory
 * layouts and the same code, all in the calling thread. The VMM and the host
 * are called directly (the VFIO port is the host object itself), and when the
 * vCPU would park waiting for the device it steps the device instead. It
 * serves package-level tests and is the speed baseline the worker transport
 * is measured against. One vCPU only: several vCPUs need threads of their own.
 */

import { threadId } from 'node:worker_threads';
import { type GuestPlatform, runGuestVcpu, type VcpuWorkerInit } from '@vmstack/guest-kernel';
import { createHost, type HostWorkerInit, type HostWorkerResult } from '@vmstack/host-vfio';
import { DeviceEngine, type DeviceWorkerInit, type DeviceWorkerResult } from '@vmstack/nvme-device';
import {
  type ControlHandle,
  type FaultSpec,
  faultFor,
  InputError,
  isDeviceFaultMode,
  RunControl,
  type RunOutcome,
  type VfioContainerPort,
  type WorkerSpec,
} from '@vmstack/shm';
import { createVmm, type VmmWorkerInit } from '@vmstack/vmm';
import type { ComponentWallNs } from '../report/vmstack-report.js';

/** Which spec is which: the one VM's vCPUs, its VMM thread, that thread's host context and the drive. */
export interface InThreadWorkers {
  vcpus: number[];
  vmm: number;
  host: number;
  device: number;
}

export class InThreadStall extends Error {
  constructor(what: string) {
    super(`in-thread stack stalled: the vCPU waits for ${what} and the device can make no progress`);
    this.name = 'InThreadStall';
  }
}

/**
 * Run the specs of a one-vCPU topology in this thread; same result shape as
 * runWorkers. `workers` says which spec is which (the planner's worker indices).
 * With `timeComponents`, timers around each component's calls (device steps,
 * the VMM's handling of a kick, the host's VFIO calls) say where the wall time
 * of the vCPU's run went: `componentWallNs`, the guest being the rest of that run.
 */
export function runInThread(
  specs: readonly WorkerSpec[],
  controlHandle: ControlHandle,
  workers: InThreadWorkers,
  timeComponents = false,
  /** the run's injected faults: the device's misbehaviour modes apply as on its worker; the others stop worker threads, which this transport has none of */
  faults?: readonly FaultSpec[],
): RunOutcome<unknown> & { componentWallNs?: ComponentWallNs } {
  if (workers.vcpus.length !== 1)
    throw new InputError('--transport', 'in-thread', `one job (numjobs=1) only; this topology has ${workers.vcpus.length} vCPUs: use --transport workers`);
  const control = RunControl.attach(controlHandle);
  const { vmm: vmmW, host: hostW, device: devW } = workers;
  const vcpuW = workers.vcpus[0];
  const hostInit = specs[hostW].init as HostWorkerInit;
  const vmmInit = specs[vmmW].init as VmmWorkerInit;
  const { host, container, clock: hostClock } = createHost(hostInit, hostW, control);
  // the host's time inside kicks only: mapping guest RAM at VM start (direct) is not the job loop's
  const wall = { vmm: 0, host: 0, device: 0, inKick: false };
  const timedHost: VfioContainerPort = {
    mapDma(args, nowNs) {
      const t0 = performance.now();
      const r = host.mapDma(args, nowNs);
      if (wall.inKick) wall.host += performance.now() - t0;
      return r;
    },
    unmapDma(args, nowNs) {
      const t0 = performance.now();
      const r = host.unmapDma(args, nowNs);
      if (wall.inKick) wall.host += performance.now() - t0;
      return r;
    },
    // outside the job loop's kicks (start-up, teardown) or rare: not timed
    getInfo: (nowNs) => host.getInfo(nowNs),
    readFault: (nowNs) => host.readFault(nowNs),
    groupSetContainer: (endpoint, set, nowNs) => host.groupSetContainer(endpoint, set, nowNs),
  };
  const vmm = createVmm(vmmInit, vmmW, control, timeComponents ? timedHost : host);
  const deviceFault = faultFor(faults, specs[devW].role);
  const engine = new DeviceEngine(
    specs[devW].init as DeviceWorkerInit,
    devW,
    control,
    deviceFault && isDeviceFaultMode(deviceFault.mode) ? deviceFault : undefined,
  );
  const step = timeComponents
    ? (): boolean => {
        const t0 = performance.now();
        const progressed = engine.step();
        wall.device += performance.now() - t0;
        return progressed;
      }
    : (): boolean => engine.step();
  const until = (cond: () => boolean, what: string): void => {
    for (;;) {
      if (cond()) return;
      const progressed = step();
      if (cond()) return;
      if (!progressed) throw new InThreadStall(what);
    }
  };
  const platform: GuestPlatform = {
    kick(nowNs) {
      const t0 = timeComponents ? performance.now() : 0;
      wall.inKick = true;
      vmm.device.virtio_iommu_handle_command(nowNs + vmmInit.kickWakeupNs);
      wall.inKick = false;
      if (timeComponents) wall.vmm += performance.now() - t0;
      return vmm.clock.nowNs();
    },
    awaitBound(tNs, bound) {
      // as until, without a closure or a message per call (one wait or more per I/O)
      for (;;) {
        if (bound() >= tNs) return;
        const progressed = step();
        if (bound() >= tNs) return;
        if (!progressed) throw new InThreadStall(`the device's bound to reach ${tNs} ns`);
      }
    },
    awaitInput(ready) {
      until(ready, 'an interrupt');
    },
    done() {},
    awaitFaultReports(drain) {
      // as with workers: the device makes its last DMAs, then the VMM reports the host's faults,
      // the guest's event handlers running whenever the event queue is full
      until(() => engine.done(), 'the device to finish');
      deviceResult ??= engine.result();
      vmm.reportFaults(drain);
    },
  };
  let deviceResult: DeviceWorkerResult | undefined;
  vmm.startVm();
  const vcpuStartMs = performance.now();
  const vcpuResult = runGuestVcpu(specs[vcpuW].init as VcpuWorkerInit, vcpuW, control, platform)();
  const vcpuWallMs = performance.now() - vcpuStartMs;
  const deviceInVcpuMs = wall.device;
  until(() => engine.done(), 'the device to finish');
  // as with workers: the device reports when its vCPUs are done, before the VM is torn down
  deviceResult ??= engine.result();
  vmm.stopVm();
  const results: unknown[] = [];
  results[vcpuW] = vcpuResult;
  results[vmmW] = vmm.result();
  results[hostW] = {
    stats: container.stats(),
    profile: host.profile,
    callTree: host.profiler.callTree(),
    clockNs: hostClock.nowNs(),
  } satisfies HostWorkerResult;
  results[devW] = deviceResult;
  const ms = (x: number) => Math.round(x * 1e6);
  const componentWallNs = timeComponents
    ? {
        // while the vCPU ran (bring-up, job, shutdown): the VMM's time includes the host calls it
        // made, and the guest is the rest of the vCPU's run
        guest: ms(Math.max(0, vcpuWallMs - wall.vmm - deviceInVcpuMs)),
        vmm: ms(wall.vmm - wall.host),
        host: ms(wall.host),
        device: ms(deviceInVcpuMs),
      }
    : undefined;
  return { workers: specs.map((s, i) => ({ role: s.role, index: i, threadId })), results, componentWallNs };
}
