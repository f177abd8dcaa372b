/**
 * Worker entry of the NVMe device: step the engine; when nothing progressed,
 * park until a vCPU's bound passes what the engine needs (the next completion,
 * or the time of a doorbell that waits for the other vCPUs), or a record arrives.
 * Inputs: one doorbell ring per vCPU and the host's IOTLB-invalidation ring;
 * outputs: one interrupt ring per vCPU. The rules are in engine.ts.
 */

import { faultCheckpoint, NEVER_NS, workerMain } from '@vmstack/shm';
import { DeviceEngine } from './engine.js';
import type { DeviceWorkerInit, DeviceWorkerResult } from './index.js';

workerMain<DeviceWorkerInit, DeviceWorkerResult>((boot, control) => {
  const engine = new DeviceEngine(boot.init, boot.index, control, boot.fault);
  return () => {
    const ev = control.event(boot.index);
    for (;;) {
      const seq = ev.prepare();
      faultCheckpoint(engine.clock.nowNs());
      const progressed = engine.step();
      if (engine.done()) break;
      if (progressed) {
        control.noteProgress(boot.index);
        continue;
      }
      if (control.aborted()) return { aborted: true } as unknown as DeviceWorkerResult;
      // sleep until the vCPUs are half a lookahead past what we need: one wake-up then
      // posts a batch of completions, and the vCPUs still see our EOT ahead of them; or,
      // with a doorbell waiting for the other vCPUs to pass its time, until one reaches it
      // (a lone vCPU: also when it is half a lookahead past what the last step saw, see refreshNs)
      const completionsNs = Math.min(engine.needNs + engine.wakeSlackNs, engine.refreshNs);
      // (attacking: until they pass the time of our next DMA)
      const wakeNs = Math.min(completionsNs, engine.doorbellWaitNs(), engine.attackWaitNs());
      control.setWaitFor(boot.index, wakeNs);
      // re-read the bounds after publishing the threshold: a vCPU that raised its EOT in between did not wake us
      if (engine.minVcpuBound() >= completionsNs || engine.doorbellReady() || engine.attackReady()) {
        control.setWaitFor(boot.index, NEVER_NS);
        continue;
      }
      ev.wait(seq, boot.init.spinLoads);
      control.setWaitFor(boot.index, NEVER_NS);
    }
    return engine.result();
  };
});
