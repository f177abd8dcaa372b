/**
 * The NVMe device's event loop, one step at a time, so the same code runs in
 * the device's own worker (step, then park when nothing progressed) and in
 * one thread with the whole stack (the vCPU steps the device when it would
 * otherwise wait for it).
 *
 * Conservative clock (virtual mode): the device handles a doorbell stamped t
 * only when no other vCPU can still ring one earlier, and posts a completion
 * due at C only when C ≤ (smallest vCPU bound) + the minimum doorbell →
 * completion delay — no doorbell yet to come can complete before it. A vCPU's
 * bound is min(its published EOT, max(its published clock, the oldest interrupt
 * we sent it that it has not consumed), its oldest unprocessed doorbell): an
 * idle vCPU publishes NEVER, and our interrupt wakes it at max(clock, ts).
 * The device publishes as its EOT the earliest interrupt time it may still send.
 * Invalidations are applied before anything else, every step: the host sends
 * them before it replies, so any doorbell that depends on one is causally after it.
 *
 * With an attack plan (`vmstack attack`, attack.ts) the device also makes
 * DMAs of its own at chosen model times. One at t waits until no vCPU can do
 * anything stamped before t (`attackBound`), comes before any doorbell or
 * completion stamped later, and sees every invalidation stamped at or before t.
 * An injected misbehaviour (shm fault.ts DEVICE_FAULT_MODES) goes to the controller.
 */

import { IommuContextEntry, IommuFaultLog, IoPgtable, Iotlb } from '@vmstack/iommu-hw';
import {
  attachGuestMemory,
  doorbellQid,
  doorbellValue,
  doorbellWhich,
  encodeInterrupt,
  type FaultSpec,
  GuestToDeviceDone,
  GuestToDeviceDoorbell,
  GuestToDeviceRegWrite,
  iotlbInvalIova,
  iotlbInvalSizeBytes,
  isDeviceFaultMode,
  ModelClock,
  NEVER_NS,
  Ring,
  type RunControl,
  regWriteReg,
  regWriteValue,
  SentLog,
} from '@vmstack/shm';
import { DeviceAttacker, TimedWalker } from './attack.js';
import { NvmeController } from './controller.js';
import type { DeviceWorkerInit, DeviceWorkerResult } from './index.js';
import { NvmeMedia } from './media.js';
import { NvmeNamespace } from './namespace.js';

export class DeviceEngine {
  readonly clock: ModelClock;
  readonly iotlb: Iotlb;
  readonly ctrl: NvmeController;
  /** `vmstack attack`: the device's own DMAs (attack.ts); null in every other run */
  readonly attacker: DeviceAttacker | null;
  private readonly ns: NvmeNamespace;
  private readonly doorbells: Ring[];
  private readonly irqs: Ring[];
  private readonly sent: SentLog[];
  private readonly invals: Ring[];
  private readonly vcpus: number[];
  private readonly finished: boolean[];
  private readonly minDelayNs: number;
  private readonly virtual: boolean;
  /** what the last step needs before it can progress: the smallest vCPU bound that unblocks it */
  needNs = NEVER_NS;
  /** how far past `needNs` a parked device lets the vCPUs run before it wants waking (half the lookahead) */
  readonly wakeSlackNs: number;
  /**
   * A lone vCPU's doorbells leave a parked device asleep (the guest's `NvmeBar.lazyWake`): the
   * device then also wants waking when that vCPU is half a lookahead past the bound its last
   * step saw, to take the doorbells and publish its EOT again before the vCPU reaches it and
   * has to wait. NEVER_NS with several vCPUs, whose doorbells wake it.
   */
  refreshNs = NEVER_NS;

  constructor(
    readonly init: DeviceWorkerInit,
    readonly self: number,
    readonly control: RunControl,
    fault?: FaultSpec,
  ) {
    this.clock = new ModelClock(init.clockMode, init.dilation, init.epochMs);
    const mem = attachGuestMemory(init.guestRam);
    const pgtable = IoPgtable.attach(init.pgtable);
    // attacking, the walker also walks the table as it stood at an earlier model time
    const walker = init.attack ? new TimedWalker(pgtable, init.pgtable.journal) : null;
    this.iotlb = new Iotlb(walker ?? pgtable, init.costs);
    // the host IOMMU records each fault of this requester for the host kernel
    if (init.faultLog) this.iotlb.faultLog = new IommuFaultLog(init.faultLog);
    if (init.context) this.iotlb.context = new IommuContextEntry(init.context);
    const media = new NvmeMedia(init.costs);
    this.ns = new NvmeNamespace(init.namespace.sizeBlocks, init.namespace.seed, init.namespace.initialBlocks);
    const attacker = init.attack && walker ? new DeviceAttacker(init.attack, mem, this.iotlb, walker) : null;
    this.attacker = attacker;
    // the attacker learns which pages the device's own work was given
    const iommu = attacker
      ? {
          translate: (iova: number, write: boolean, clock: ModelClock): number => {
            const hpa = this.iotlb.translate(iova, write, clock);
            attacker.noteGiven(hpa);
            return hpa;
          },
        }
      : this.iotlb;
    this.ctrl = new NvmeController(mem, iommu, media, this.ns, this.clock, init.costs);
    if (attacker) this.ctrl.observer = (iovaPages, hpas, isRead, t) => attacker.onBuffer(iovaPages, hpas, isRead, t);
    if (fault && isDeviceFaultMode(fault.mode)) this.ctrl.misbehaviour = { mode: fault.mode, atNs: fault.atNs };
    this.doorbells = init.doorbellRings.map((h) => Ring.attach(h));
    this.irqs = init.irqRings.map((h) => Ring.attach(h));
    this.sent = this.irqs.map((r) => new SentLog(r));
    this.invals = init.invalRings.map((h) => Ring.attach(h));
    this.vcpus = init.vcpuWorkers;
    this.finished = new Array<boolean>(this.vcpus.length).fill(false);
    this.minDelayNs = init.costs.nvmeDoorbellLatencyNs + init.costs.nvmeSqeFetchNs + media.minServiceNs();
    this.virtual = init.clockMode === 'virtual';
    this.wakeSlackNs = Math.floor(this.minDelayNs / 2);
    control.publishEot(self, 0);
  }

  private raise = (cqid: number, vector: number, tsNs: number): void => {
    const v = this.init.vcpuOfCq[cqid];
    const r = this.irqs[v];
    const seq = r.nextSeq();
    const off = r.reserve(this.init.spinLoads, this.control);
    encodeInterrupt(r.dv, off, tsNs, cqid, vector, 1);
    this.sent[v].record(seq, tsNs);
    r.publish();
  };

  /** What vCPU v may still send us, at the earliest. */
  vcpuBound(v: number): number {
    if (this.finished[v]) return NEVER_NS;
    // Read what it has not taken before its EOT: a vCPU that wakes publishes its EOT
    // before it releases the interrupt that woke it, so either that interrupt is still
    // pending here or the EOT read below is no longer NEVER. (Read the other way round,
    // an EOT of NEVER read just before it woke and an empty log read just after would
    // put its bound at our next completion, after the time it is acting at.)
    const pending = this.sent[v].earliestUnconsumedNs();
    const eot = this.control.eotNs(this.vcpus[v]);
    let b = eot;
    if (eot === NEVER_NS) {
      // idle: it wakes at the oldest interrupt we sent it that it has not taken, or at
      // the next one we may raise (our next completion), and not before its own clock
      const next = this.ctrl.nextCompletionNs();
      const wake = Math.min(pending, next === NEVER_NS ? NEVER_NS : next + this.init.costs.nvmeCqePostNs + this.init.costs.msiLatencyNs);
      const clock = this.control.clockNs(this.vcpus[v]);
      b = wake === NEVER_NS || clock === NEVER_NS ? NEVER_NS : Math.max(wake, clock);
    } else {
      // an interrupt it has not taken yet wakes it no earlier than its own clock
      if (pending !== NEVER_NS) b = Math.min(eot, Math.max(pending, this.control.clockNs(this.vcpus[v])));
    }
    const ring = this.doorbells[v];
    if (ring.available() > 0) b = Math.min(b, ring.timestampAt(ring.offsetAt(0)));
    return b;
  }

  minVcpuBound(): number {
    let m = NEVER_NS;
    for (let v = 0; v < this.vcpus.length; v++) m = Math.min(m, this.vcpuBound(v));
    return m;
  }

  /** the time of the record `earliestDoorbell` found (it runs in every wait loop: no allocation) */
  private earliestDoorbellNs = NEVER_NS;

  /** The vCPU whose doorbell ring holds the earliest record (ties: the lower index), or -1; its time in `earliestDoorbellNs`. */
  private earliestDoorbell(): number {
    let v = -1;
    let tsNs = NEVER_NS;
    for (let u = 0; u < this.doorbells.length; u++) {
      const r = this.doorbells[u];
      if (r.available() > 0) {
        const ts = r.timestampAt(r.offsetAt(0));
        if (ts < tsNs) {
          tsNs = ts;
          v = u;
        }
      }
    }
    this.earliestDoorbellNs = tsNs;
    return v;
  }

  /**
   * May the record stamped `tsNs` on vCPU `v`'s doorbell ring be handled: can
   * no other vCPU still ring one stamped earlier? Equal times go in vCPU order.
   */
  private doorbellSafe(v: number, tsNs: number): boolean {
    if (!this.virtual) return true;
    for (let u = 0; u < this.doorbells.length; u++) {
      if (u === v) continue;
      const b = this.vcpuBound(u);
      if (b < tsNs || (b === tsNs && u < v)) return false;
    }
    return true;
  }

  /**
   * Parked with a doorbell waiting (the other vCPUs' bounds have not reached
   * its time): that time, which a vCPU raising its EOT to it wakes us at;
   * NEVER_NS when no doorbell waits.
   */
  doorbellWaitNs(): number {
    return this.earliestDoorbell() < 0 ? NEVER_NS : this.earliestDoorbellNs;
  }

  /** The earliest doorbell record can be handled now. */
  doorbellReady(): boolean {
    const v = this.earliestDoorbell();
    return v >= 0 && this.doorbellSafe(v, this.earliestDoorbellNs);
  }

  /** Every vCPU said it is done and nothing is pending. */
  done(): boolean {
    return this.finished.every(Boolean) && this.ctrl.pendingCommands() === 0;
  }

  /** invalidations received and not yet applied, in host time order */
  private readonly pendingInvals: { tsNs: number; iova: number; sizeBytes: number }[] = [];
  /** applied invalidations' records, for the next ones (one per strict unmap: none allocated per I/O) */
  private readonly freeInvals: { tsNs: number; iova: number; sizeBytes: number }[] = [];

  /** Take every IOTLB invalidation off the rings (one per host context serving the drive's container); returns whether there were any. */
  private drainInvalidations(): boolean {
    let total = 0;
    // indexed: runs twice per doorbell, and an array iterator is an object each time
    for (let r = 0; r < this.invals.length; r++) {
      const inval = this.invals[r];
      const n = inval.available();
      for (let i = 0; i < n; i++) {
        const off = inval.offsetAt(i);
        const e = this.freeInvals.pop() ?? { tsNs: 0, iova: 0, sizeBytes: 0 };
        e.tsNs = inval.timestampAt(off);
        e.iova = iotlbInvalIova(inval.dv, off);
        e.sizeBytes = iotlbInvalSizeBytes(inval.dv, off);
        this.pendingInvals.push(e);
      }
      if (n > 0) inval.release(n);
      total += n;
    }
    // each ring is in time order; several rings interleave
    if (total > 0 && this.invals.length > 1) this.pendingInvals.sort((a, b) => a.tsNs - b.tsNs);
    return total > 0;
  }

  /**
   * Apply the invalidations stamped at or before `tNs`, in order. The IOTLB's
   * contents then follow model time, not the order the threads happened to
   * run in: a fetch at t sees exactly the invalidations the host made before t.
   */
  private applyInvalidationsUpTo(tNs: number): void {
    let k = 0;
    while (k < this.pendingInvals.length && this.pendingInvals[k].tsNs <= tNs) {
      const e = this.pendingInvals[k++];
      if (e.sizeBytes === 0) this.iotlb.invalidateAll();
      else this.iotlb.invalidate(e.iova, e.sizeBytes);
    }
    if (k > 0) {
      const p = this.pendingInvals;
      for (let j = 0; j < k; j++) this.freeInvals.push(p[j]);
      // splice(0, k) without the array of removed entries
      for (let j = k; j < p.length; j++) p[j - k] = p[j];
      p.length -= k;
    }
  }

  /**
   * What vCPU v may still do at the earliest, for the attacker's DMAs: its
   * bound, and when idle its timer too (a lazy flush, a pool eviction).
   */
  private attackVcpuBound(v: number): number {
    const b = this.vcpuBound(v);
    if (b === NEVER_NS || this.control.eotNs(this.vcpus[v]) !== NEVER_NS) return b;
    const timer = this.control.timerNs(this.vcpus[v]);
    return timer === NEVER_NS ? b : Math.min(b, Math.max(timer, this.control.clockNs(this.vcpus[v])));
  }

  /** The attacker may act strictly before this model time: no vCPU can still do anything stamped earlier. */
  private attackBound(): number {
    let m = NEVER_NS;
    for (let v = 0; v < this.vcpus.length; v++) m = Math.min(m, this.attackVcpuBound(v));
    return m === NEVER_NS ? Number.POSITIVE_INFINITY : m;
  }

  /** Make the attacker's DMAs stamped before `beforeNs` that are safe now; returns how many. */
  private runAttacks(beforeNs: number): number {
    const a = this.attacker!;
    const bound = this.attackBound();
    // read after the bound: what the vCPUs did before it is in the rings and logs
    this.drainInvalidations();
    a.drainLogs();
    return a.runProbesBefore(Math.min(bound, beforeNs), (t) => this.applyInvalidationsUpTo(t));
  }

  /** Parked with an attacker DMA waiting: its time, which a vCPU passing wakes us at; NEVER_NS when none waits. */
  attackWaitNs(): number {
    const t = this.attacker ? this.attacker.nextProbeNs() : Number.POSITIVE_INFINITY;
    return t === Number.POSITIVE_INFINITY ? NEVER_NS : t + 1;
  }

  /** An attacker DMA can be made now. */
  attackReady(): boolean {
    return this.attacker !== null && this.attacker.nextProbeNs() < this.attackBound();
  }

  /** Do everything that can be done now; returns whether anything progressed. */
  step(): boolean {
    const { doorbells, ctrl, control } = this;
    let progressed = false;
    // 1. invalidations first
    if (this.drainInvalidations()) progressed = true;
    // the attacker's DMAs stamped before any doorbell still to come
    if (this.attacker && this.runAttacks(this.earliestDoorbell() < 0 ? Number.POSITIVE_INFINITY : this.earliestDoorbellNs) > 0) progressed = true;
    // 2. doorbells, merged in time order across vCPUs
    for (;;) {
      const best = this.earliestDoorbell();
      if (best < 0) break;
      const bestTs = this.earliestDoorbellNs;
      // vCPU u may still ring a doorbell stamped at its bound
      if (!this.doorbellSafe(best, bestTs)) break;
      if (this.attacker) {
        // the attacker's DMAs stamped before this doorbell go first; one that must wait holds it back
        if (this.runAttacks(bestTs) > 0) progressed = true;
        if (this.attacker.nextProbeNs() < bestTs) break;
      }
      // a doorbell we just saw may depend on an unmap whose invalidation the host
      // sent before it replied: drain again now that the doorbell is visible, and
      // apply what the host did before the doorbell (in model time)
      this.drainInvalidations();
      this.applyInvalidationsUpTo(bestTs);
      const r = doorbells[best];
      const off = r.offsetAt(0);
      const type = r.typeAt(off);
      if (type === GuestToDeviceDoorbell) {
        ctrl.onDoorbell(doorbellQid(r.dv, off), doorbellWhich(r.dv, off), doorbellValue(r.dv, off), bestTs);
      } else if (type === GuestToDeviceRegWrite) {
        ctrl.registerWrite(regWriteReg(r.dv, off), regWriteValue(r.dv, off), bestTs);
      } else if (type === GuestToDeviceDone) {
        this.finished[best] = true;
      } else {
        throw new Error(`nvme-device: unexpected record type 0x${type.toString(16)} from vCPU ${best}`);
      }
      r.release(1);
      progressed = true;
    }
    if (this.attacker && this.runAttacks(this.earliestDoorbell() < 0 ? Number.POSITIVE_INFINITY : this.earliestDoorbellNs) > 0) progressed = true;
    // 3. completions no future doorbell can precede (and, attacking, none after a DMA of ours still to make)
    const minBound = this.minVcpuBound();
    const horizonNs = this.virtual ? (minBound === NEVER_NS ? NEVER_NS : minBound + this.minDelayNs) : this.clock.nowNs();
    this.refreshNs = this.virtual && this.vcpus.length === 1 && minBound !== NEVER_NS ? minBound + this.wakeSlackNs : NEVER_NS;
    const attackNs = this.attacker ? this.attacker.nextProbeNs() : Number.POSITIVE_INFINITY;
    if (ctrl.postCompletionsUpTo(Math.min(horizonNs, attackNs), this.raise) > 0) progressed = true;
    // 4. publish the earliest interrupt we may still raise
    const eot = Math.min(ctrl.nextCompletionNs(), horizonNs);
    control.raiseEot(this.self, eot >= NEVER_NS ? NEVER_NS : eot + this.init.costs.nvmeCqePostNs + this.init.costs.msiLatencyNs, this.vcpus);
    // a completion held back by a DMA of ours waits for that DMA (attackWaitNs), not for the vCPUs' bound
    this.needNs = ctrl.nextCompletionNs() > attackNs ? NEVER_NS : ctrl.nextCompletionNs() - this.minDelayNs;
    return progressed;
  }

  result(): DeviceWorkerResult {
    this.drainInvalidations();
    // the attacker's DMAs still to make, every vCPU being done, in time order
    if (this.attacker) this.runAttacks(Number.POSITIVE_INFINITY);
    this.applyInvalidationsUpTo(NEVER_NS);
    this.control.publishEot(this.self, NEVER_NS);
    // finished, as a vCPU says it: clock NEVER (the VMM tears the VM down only after this)
    this.control.publishClock(this.self, NEVER_NS);
    return {
      counters: { ...this.ctrl.counters },
      iotlb: this.iotlb.stats(),
      writtenBlocks: this.ns.writtenBlocks(),
      namespaceBlocks: this.init.namespace.exportBlocks ? this.ns.exportBlocks() : undefined,
      clockNs: this.clock.nowNs(),
      ...(this.attacker ? { attack: this.attacker.finish() } : {}),
    };
  }
}
