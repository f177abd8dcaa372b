/**
 * Worker entry of one guest vCPU: the guest code (guest.ts) with a platform
 * that parks on shared memory and reaches the VMM through its rings.
 */

import { encodeGuestToVmmDone, encodeKick, NEVER_NS, Ring, WorkerSync, workerMain } from '@vmstack/shm';
import { runGuestVcpu } from './guest.js';
import type { VcpuWorkerInit, VcpuWorkerResult } from './index.js';
import type { GuestPlatform } from './vcpu.js';

workerMain<VcpuWorkerInit, VcpuWorkerResult>((boot, control) => {
  const init = boot.init;
  const kicks = init.viommus.map((v) => Ring.attach(v.kickRing));
  const useds = init.viommus.map((v) => Ring.attach(v.usedRing));
  const sync = new WorkerSync(control, boot.index, init.spinLoads);
  const ev = control.event(boot.index);
  const platform: GuestPlatform = {
    kick(nowNs, viommu) {
      const kick = kicks[viommu];
      const used = useds[viommu];
      encodeKick(kick.dv, kick.reserve(init.spinLoads, control), nowNs);
      kick.publish();
      used.waitForData(init.spinLoads, control);
      const ts = used.timestampAt(used.offsetAt(0));
      used.release(1);
      return ts;
    },
    awaitBound(tNs, bound) {
      sync.awaitBound(tNs, bound, () => false);
    },
    awaitInput(ready, thresholdNs = NEVER_NS) {
      for (;;) {
        const seq = ev.prepare();
        if (ready()) return;
        if (control.aborted()) throw new Error('aborted');
        control.setWaitFor(boot.index, thresholdNs);
        if (ready()) {
          control.setWaitFor(boot.index, NEVER_NS);
          return;
        }
        ev.wait(seq, init.spinLoads);
        control.setWaitFor(boot.index, NEVER_NS);
      }
    },
    done(nowNs) {
      for (const kick of kicks) {
        encodeGuestToVmmDone(kick.dv, kick.reserve(init.spinLoads, control), nowNs);
        kick.publish();
      }
    },
  };
  return runGuestVcpu(init, boot.index, control, platform);
});
