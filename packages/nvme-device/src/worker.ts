/**
 * Worker entry of the NVMe device. Inputs: one doorbell ring per vCPU and
 * the host's IOTLB-invalidation ring; outputs: one interrupt ring per vCPU.
 *
 * Conservative clock (virtual mode): the device handles a doorbell stamped t
 * only when no other vCPU can still ring one earlier, and posts a completion
 * due at C only when C ≤ (smallest vCPU bound) + the minimum doorbell →
 * completion delay — no doorbell yet to come can complete before it. A vCPU's
 * bound is min(its published EOT, max(its published clock, the oldest interrupt
 * we sent it that it has not consumed), its oldest unprocessed doorbell): an
 * idle vCPU publishes NEVER, and our interrupt wakes it at max(clock, ts). The device publishes as its
 * EOT the earliest interrupt time it may still send.
 * Invalidations are applied before anything else, every round: the host
 * sends them before it replies, so any doorbell that depends on one is
 * causally after it.
 */

import { workerMain, ModelClock, Ring, RECORD, SentLog, attachGuestMemory, NEVER_NS } from '@vmstack/shm';
import { IoPgtable } from '@vmstack/host-vfio';
import { Iotlb } from './iotlb.js';
import { NvmeMedia } from './media.js';
import { NvmeNamespace } from './namespace.js';
import { NvmeController } from './controller.js';
import { GuestToDeviceDoorbell, GuestToDeviceDone, GuestToDeviceRegWrite, DeviceToGuestInterrupt, DoorbellPayload, InterruptPayload, IotlbInvalPayload, RegWritePayload } from './messages.js';
import type { DeviceWorkerInit, DeviceWorkerResult } from './index.js';

workerMain<DeviceWorkerInit, DeviceWorkerResult>((boot, control) => {
  const init = boot.init;
  const clock = new ModelClock(init.clockMode, init.dilation, init.epochMs);
  const mem = attachGuestMemory(init.guestRam);
  const iotlb = new Iotlb(IoPgtable.attach(init.pgtable), init.costs);
  const media = new NvmeMedia(init.costs);
  const ns = new NvmeNamespace(init.namespace.sizeBlocks, init.namespace.seed, init.namespace.algo);
  const ctrl = new NvmeController(mem, iotlb, media, ns, clock, init.costs);
  const doorbells = init.doorbellRings.map((h) => Ring.attach(h));
  const irqs = init.irqRings.map((h) => Ring.attach(h));
  const sent = irqs.map((r) => new SentLog(r));
  const inval = Ring.attach(init.invalRing);
  const vcpus = init.vcpuWorkers;
  const finished = new Array<boolean>(vcpus.length).fill(false);
  const minDelayNs = init.costs.nvmeDoorbellLatencyNs + init.costs.nvmeSqeFetchNs + media.minServiceNs();
  const virtual = init.clockMode === 'virtual';
  control.publishEot(boot.index, 0);

  const raise = (cqid: number, vector: number, tsNs: number): void => {
    const v = init.vcpuOfCq[cqid];
    const r = irqs[v];
    const seq = r.nextSeq();
    const off = r.reserve(init.spinLoads, control);
    r.writeHeader(off, DeviceToGuestInterrupt, cqid, tsNs);
    r.dv.setInt32(off + RECORD.payloadOffset + InterruptPayload.vector, vector, true);
    r.dv.setInt32(off + RECORD.payloadOffset + InterruptPayload.cqeCount, 1, true);
    sent[v].record(seq, tsNs);
    r.publish();
  };

  /** What vCPU v may still send us, at the earliest. */
  const vcpuBound = (v: number): number => {
    if (finished[v]) return NEVER_NS;
    // an interrupt it has not taken yet wakes it no earlier than its own clock
    const eot = control.eotNs(vcpus[v]);
    const pending = sent[v].earliestUnconsumedNs();
    let b = pending === NEVER_NS ? eot : Math.min(eot, Math.max(pending, control.clockNs(vcpus[v])));
    const ring = doorbells[v];
    if (ring.available() > 0) b = Math.min(b, ring.timestampAt(ring.offsetAt(0)));
    return b;
  };

  return () => {
    const ev = control.event(boot.index);
    for (;;) {
      const seq = ev.prepare();
      let progressed = false;
      // 1. invalidations first
      const ni = inval.available();
      for (let i = 0; i < ni; i++) {
        const off = inval.offsetAt(i);
        const iova = inval.dv.getFloat64(off + RECORD.payloadOffset + IotlbInvalPayload.iova, true);
        const size = inval.dv.getFloat64(off + RECORD.payloadOffset + IotlbInvalPayload.sizeBytes, true);
        if (size === 0) iotlb.invalidateAll();
        else iotlb.invalidate(iova, size);
      }
      if (ni > 0) {
        inval.release(ni);
        progressed = true;
      }
      // 2. doorbells, merged in time order across vCPUs
      for (;;) {
        let best = -1;
        let bestTs = NEVER_NS;
        for (let v = 0; v < doorbells.length; v++) {
          const r = doorbells[v];
          if (r.available() > 0) {
            const ts = r.timestampAt(r.offsetAt(0));
            if (ts < bestTs) {
              bestTs = ts;
              best = v;
            }
          }
        }
        if (best < 0) break;
        if (virtual) {
          let safe = true;
          for (let u = 0; u < doorbells.length && safe; u++) if (u !== best && vcpuBound(u) < bestTs) safe = false;
          if (!safe) break;
        }
        const r = doorbells[best];
        const off = r.offsetAt(0);
        const type = r.typeAt(off);
        const p = off + RECORD.payloadOffset;
        if (type === GuestToDeviceDoorbell) {
          ctrl.onDoorbell(r.dv.getInt32(p + DoorbellPayload.qid, true), r.dv.getInt32(p + DoorbellPayload.which, true), r.dv.getInt32(p + DoorbellPayload.value, true), bestTs);
        } else if (type === GuestToDeviceRegWrite) {
          ctrl.registerWrite(r.dv.getInt32(p + RegWritePayload.reg, true), r.dv.getFloat64(p + RegWritePayload.value, true), bestTs);
        } else if (type === GuestToDeviceDone) {
          finished[best] = true;
        } else {
          throw new Error(`nvme-device: unexpected record type 0x${type.toString(16)} from vCPU ${best}`);
        }
        r.release(1);
        progressed = true;
      }
      // 3. completions no future doorbell can precede
      let minBound = NEVER_NS;
      for (let v = 0; v < vcpus.length; v++) minBound = Math.min(minBound, vcpuBound(v));
      const horizonNs = virtual ? (minBound === NEVER_NS ? NEVER_NS : minBound + minDelayNs) : clock.nowNs();
      if (ctrl.postCompletionsUpTo(horizonNs, raise) > 0) progressed = true;
      // 4. publish the earliest interrupt we may still raise
      const eot = Math.min(ctrl.nextCompletionNs(), horizonNs);
      control.raiseEot(boot.index, eot >= NEVER_NS ? NEVER_NS : eot + init.costs.nvmeCqePostNs + init.costs.msiLatencyNs, vcpus);
      if (finished.every(Boolean) && ctrl.pendingCommands() === 0) break;
      if (progressed) continue;
      if (control.aborted()) return { aborted: true } as unknown as DeviceWorkerResult;
      // park until a vCPU's bound passes what we need, or a record arrives
      const needNs = ctrl.nextCompletionNs() - minDelayNs;
      control.setWaitFor(boot.index, needNs);
      // re-read the bounds after publishing the threshold: a vCPU that raised its EOT in between did not wake us
      let freshBound = NEVER_NS;
      for (let v = 0; v < vcpus.length; v++) freshBound = Math.min(freshBound, vcpuBound(v));
      if (freshBound >= needNs) {
        control.setWaitFor(boot.index, NEVER_NS);
        continue;
      }
      ev.wait(seq, init.spinLoads);
      control.setWaitFor(boot.index, NEVER_NS);
    }
    control.publishEot(boot.index, NEVER_NS);
    return { counters: { ...ctrl.counters }, iotlb: iotlb.stats(), writtenBlocks: ns.writtenBlocks(), clockNs: clock.nowNs() };
  };
});
