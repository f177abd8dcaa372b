/**
 * Worker entry of the host kernel (vfio_iommu_type1). Serves the VMM's
 * ioctls from an RPC ring until the VMM says it is done; sends IOTLB
 * invalidations to the device through its own ring.
 */

import { workerMain, ModelClock, LockTable, Ring, RpcServer, RECORD, type RingHandle } from '@vmstack/shm';
import { IoPgtable } from './io-pgtable.js';
import { VfioContainer } from './vfio-iommu-type1.js';
import { HostVfio } from './host.js';
import { VmmToHostDone, HostToVmmReply } from './messages.js';
import type { HostWorkerInit, HostWorkerResult } from './index.js';

const HostToDeviceIotlbInval = 0x103; // nvme-device/src/messages.ts (the device's protocol)

workerMain<HostWorkerInit, HostWorkerResult>((boot, control) => {
  const init = boot.init;
  const clock = new ModelClock(init.clockMode, init.dilation, init.epochMs);
  const locks = LockTable.attach(init.locks, boot.index, control, init.spinLoads);
  const pgtable = IoPgtable.attach(init.pgtable);
  const inval = Ring.attach(init.invalRing as RingHandle);
  const container = new VfioContainer({
    pgtable,
    lockTable: locks,
    costs: init.costs,
    lockedVmLimitPages: init.lockedVmLimitPages,
    dmaEntryLimit: init.dmaEntryLimit,
    invalidateIotlb: (iova: number, sizeBytes: number) => {
      const off = inval.reserve(init.spinLoads, control);
      inval.writeHeader(off, HostToDeviceIotlbInval, 0, clock.nowNs());
      inval.dv.setFloat64(off + RECORD.payloadOffset, iova, true);
      inval.dv.setFloat64(off + RECORD.payloadOffset + 8, sizeBytes, true);
      inval.publish();
    },
  });
  const host = new HostVfio(container, clock);
  const server = new RpcServer(init.vmmRpc);
  control.publishEot(boot.index, Number.MAX_SAFE_INTEGER); // reactive
  return () => {
    const ev = control.event(boot.index);
    let done = false;
    while (!done) {
      const seq = ev.prepare();
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
    }
    return { stats: container.stats(), clockNs: clock.nowNs() };
  };
});
