/**
 * Worker entry of the VMM: the virtio-iommu device backend. It waits for
 * kicks from the vCPUs (one ring per vCPU), handles the request queue in
 * guest RAM, calls VFIO on the host worker through an RPC ring, and tells
 * the kicking vCPU when the used elements are written.
 */

import { encodeUsed, faultCheckpoint, GuestToVmmDone, GuestToVmmKick, NEVER_NS, Ring, VfioRpcPort, workerMain } from '@vmstack/shm';
import type { VmmWorkerInit, VmmWorkerResult } from './index.js';
import { createVmm } from './vmm.js';

workerMain<VmmWorkerInit, VmmWorkerResult>((boot, control) => {
  const init = boot.init;
  // waiting for the host's answer, the VMM spins longer: the host is running on the other core
  const vfio = new VfioRpcPort(init.hostRpc, control, init.rpcSpinLoads);
  const vmm = createVmm(init, boot.index, control, vfio);
  const { device, clock } = vmm;
  const kicks = init.kickRings.map((h) => Ring.attach(h));
  const used = init.usedRings.map((h) => Ring.attach(h));
  control.publishEot(boot.index, NEVER_NS); // reactive: sends only in reply to a kick
  return () => {
    vmm.startVm();
    const ev = control.event(boot.index);
    let live = kicks.length;
    const finished = new Array<boolean>(kicks.length).fill(false);
    while (live > 0) {
      const seq = ev.prepare();
      faultCheckpoint(clock.nowNs());
      let progressed = false;
      for (let v = 0; v < kicks.length; v++) {
        const ring = kicks[v];
        const n = ring.available();
        for (let i = 0; i < n; i++) {
          const off = ring.offsetAt(i);
          const type = ring.typeAt(off);
          if (type === GuestToVmmDone) {
            if (!finished[v]) live--;
            finished[v] = true;
            continue;
          }
          if (type !== GuestToVmmKick) throw new Error(`vmm: unexpected record type 0x${type.toString(16)} from vCPU ${v}`);
          // the kick wakes the device thread (ioeventfd): it starts after the wake-up latency
          const startNs = ring.timestampAt(off) + init.kickWakeupNs;
          const handled = device.virtio_iommu_handle_command(startNs);
          const r = used[v];
          const roff = r.reserve(init.spinLoads, control);
          encodeUsed(r.dv, roff, clock.nowNs(), ring.requestIdAt(off), handled);
          r.publish();
        }
        if (n > 0) {
          ring.release(n);
          progressed = true;
          // no peer reads a reactive worker's clock: it is there for the watchdog and stall reports
          control.publishClock(boot.index, clock.nowNs());
          control.noteProgress(boot.index);
        }
      }
      if (!progressed) {
        if (control.aborted()) return { aborted: true } as unknown as VmmWorkerResult;
        ev.wait(seq, init.spinLoads);
      }
    }
    // the device reports what it saw of the guest before the VM is torn down (the one-thread
    // stack does the same): else the teardown's IOTLB invalidation may or may not reach it first
    while (init.deviceWorkers.some((w) => control.clockNs(w) !== NEVER_NS)) {
      if (control.aborted()) return { aborted: true } as unknown as VmmWorkerResult;
      ev.wait(ev.prepare(), init.spinLoads, 1);
    }
    // every DMA the drives made is in the host's fault queue now
    vmm.reportFaults();
    vmm.stopVm();
    vfio.done(clock.nowNs());
    return vmm.result();
  };
});
