/**
 * Worker entry of the host kernel (vfio_iommu_type1). Serves the VMM's
 * ioctls from an RPC ring until the VMM says it is done; sends IOTLB
 * invalidations to the device through its own ring.
 */

import { faultCheckpoint, HostToVmmReply, RpcServer, VmmToHostDone, workerMain } from '@vmstack/shm';
import { createHost } from './host.js';
import type { HostWorkerInit, HostWorkerResult } from './index.js';

workerMain<HostWorkerInit, HostWorkerResult>((boot, control) => {
  const init = boot.init;
  const { host, container, clock } = createHost(init, boot.index, control);
  const server = new RpcServer(init.vmmRpc);
  control.publishEot(boot.index, Number.MAX_SAFE_INTEGER); // reactive
  return () => {
    const ev = control.event(boot.index);
    let done = false;
    while (!done) {
      const seq = ev.prepare();
      faultCheckpoint(clock.nowNs());
      if (server.request.available() === 0) {
        if (control.aborted()) return { aborted: true } as unknown as HostWorkerResult;
        ev.wait(seq, init.spinLoads);
        continue;
      }
      server.serveAvailable(
        (req) => {
          if (req.type === VmmToHostDone) {
            done = true;
            return { type: HostToVmmReply, timestampNs: clock.nowNs(), write: () => {} };
          }
          return host.serve(req);
        },
        control,
        init.spinLoads,
      );
      // no peer reads a reactive worker's clock: it is there for the watchdog and stall reports
      control.publishClock(boot.index, clock.nowNs());
      control.noteProgress(boot.index);
    }
    return {
      stats: container.stats(),
      profile: host.profile,
      callTree: host.profiler.callTree(),
      clockNs: clock.nowNs(),
      ...(host.faultQueue ? { faults: host.faultQueue.stats() } : {}),
    };
  };
});
