/**
 * The NVMe device as an attacker (`vmstack attack`): while it serves the
 * workload, it also issues DMAs of its own, through the same IOTLB and host
 * page-table walk as its real DMAs, into real guest RAM, and records what
 * each one reached.
 *
 * Accesses (kinds):
 * - `after-unmap-read` / `after-unmap-write`: the first page of a buffer the
 *   guest has unmapped, at each of `delaysNs` after its unmap returned (the
 *   guest logs every unmap, shm wire/dma-trace.ts). An access is made only
 *   while the guest has not mapped that IOVA again (then it would reach a new,
 *   legitimate mapping; counted as `remapped`).
 * - `read-only-write`: a write into the buffer of a write command (mapped
 *   DMA_TO_DEVICE, so read-only for the device) while the command runs.
 * - `neighbour`: `neighbourBytes` just before and just after a buffer while
 *   its command runs (the buffers here are whole pages, so these bytes lie in
 *   the neighbouring IOVA pages).
 * - `never-mapped`: one pass over the IOVA pages [0, scanPages) at the fetch
 *   of command `scanAfterCommands`: IOVAs no command gave it (with no IOMMU
 *   translation, guest-physical addresses: the whole of guest RAM).
 * The in-command tries and the pass are made at the model time of the
 * command's fetch.
 * A write stores the bytes that are already there, so the workload and its
 * verify are undisturbed; that it succeeded shows the device could have
 * changed them.
 *
 * What a successful access reached, byte by byte, by host page:
 * - `secret`: a page of planted secret bytes the guest never gave the device
 *   (any is an escape);
 * - `seen`: a page the device was given earlier (a buffer, a queue, a PRP
 *   list): data it saw before, or a later I/O's data in the same place;
 * - `other`: any other page of guest RAM it was never given.
 * A successful after-unmap access is also split by why it worked: the host
 * page table still mapped the IOVA (`hostMapped`: no IOMMU, a lazy unmap not
 * yet sent to the host, a pool slot that stays mapped), or only a stale IOTLB
 * entry did (`staleIotlb`).
 *
 * Timing. An access at model time t is made only once no vCPU can still do
 * anything stamped before t (every vCPU's bound has passed t, counting its
 * timers), and after applying every IOTLB invalidation the host stamped at or
 * before t: the host sends an invalidation before its unmap returns (VT-d's
 * wait descriptor completes only after the invalidation), so an unmap that
 * returned before t can no longer be used through the IOTLB at t. By then the
 * host, running ahead in real time, may have changed the page table again
 * (unmapped it, mapped the IOVA anew): an IOTLB miss of the attacker walks
 * the table as it stood at t, from its journal (iommu-hw pgtable-journal.ts).
 * The attacker's page walks charge a scratch clock: the device's own timing,
 * and so the workload's, is unchanged but for the IOTLB entries it fills.
 */

import { type IommuProt, type IoPageWalker, type IoPgtable, type Iotlb, PgtableJournal } from '@vmstack/iommu-hw';
import { DmaUnmapLog, type GuestMemory, ModelClock, PAGE_SIZE_BYTES } from '@vmstack/shm';
import { heapPop, heapPush } from './heap.js';

const PAGE = PAGE_SIZE_BYTES;

export const ATTACK_KINDS = ['after-unmap-read', 'after-unmap-write', 'read-only-write', 'neighbour', 'never-mapped'] as const;
export type AttackKind = (typeof ATTACK_KINDS)[number];

/** What the device is told to do as an attacker (DeviceWorkerInit.attack). */
export interface DeviceAttackPlan {
  /** each vCPU's DMA map log (shm wire/dma-trace.ts) */
  unmapLogs: SharedArrayBuffer[];
  /** model ns after an unmap returned at which its first page is tried, ascending */
  delaysNs: number[];
  /** try every n-th unmapped buffer, and every n-th command's buffer while it runs */
  sampleEvery: number;
  /** host pages (guest RAM offset / 4096) holding planted secret bytes, never given to the device: for classifying what was reached */
  secretPfns: number[];
  /** host pages the guest maps for the device at boot (its coherent area: queues, PRP lists): given, whether the device used them yet or not */
  coherentPfns: number[];
  /** IOVA pages [0, scanPages) tried once */
  scanPages: number;
  /** the pass happens at the fetch of this command (1-based) */
  scanAfterCommands: number;
  /** bytes tried on each side of a running command's buffer */
  neighbourBytes: number;
}

export interface AttackKindStats {
  attempts: number;
  faults: number;
  successes: number;
  secretBytes: number;
  seenBytes: number;
  otherBytes: number;
  /** after-unmap successes through a host mapping that was still there */
  hostMapped: number;
  /** after-unmap successes through a stale IOTLB entry only (the host page table no longer mapped it) */
  staleIotlb: number;
}

export interface DeviceAttackResult {
  kinds: Record<AttackKind, AttackKindStats>;
  /** sampled unmaps */
  unmapsProbed: number;
  /** after-unmap tries not made: the guest had mapped the IOVA again by then */
  remapped: number;
  /** per sampled unmap, the largest probe delay at which a read or write of its first page still worked (-1: none), model ns */
  staleWindowsNs: number[];
  /** the probe delays, model ns */
  delaysNs: number[];
  /** map log or page-table journal entries lost (full) */
  droppedLogEntries: number;
}

/** The planted secret: the byte at guest RAM offset `hpa` of a secret page. */
export function attackSecretByte(hpa: number): number {
  return (Math.imul(hpa, 0x9e3779b1) >>> 24) ^ 0xa5;
}

/** Fill [gpa, gpa + bytes) of guest RAM with the secret. */
export function plantAttackSecret(u8: Uint8Array, gpa: number, bytes: number): void {
  for (let a = gpa; a < gpa + bytes; a++) u8[a] = attackSecretByte(a);
}

function emptyStats(): AttackKindStats {
  return { attempts: 0, faults: 0, successes: 0, secretBytes: 0, seenBytes: 0, otherBytes: 0, hostMapped: 0, staleIotlb: 0 };
}

/**
 * The IOTLB's page walker: the table as it is for the device's own DMAs,
 * and, while `atNs` ≥ 0, the table as it stood at model time `atNs`
 * (replayed from its journal) for the attacker's.
 */
export class TimedWalker implements IoPageWalker {
  atNs = -1;
  private readonly journal: PgtableJournal | null;
  /** IOVA page frame → [atNs, hpa (-1: unmapped), prot] triples, ascending in time */
  private readonly history = new Map<number, number[]>();

  constructor(
    private readonly table: IoPgtable,
    journal: SharedArrayBuffer | undefined,
  ) {
    this.journal = journal ? new PgtableJournal(journal) : null;
  }

  /** Take the journal's new entries. */
  drain(): void {
    this.journal?.drain((iova, sizeBytes, hpa, prot, atNs) => {
      const first = Math.floor(iova / PAGE);
      for (let k = 0; k < sizeBytes / PAGE; k++) {
        const h = this.history.get(first + k);
        const entry = [atNs, hpa < 0 ? -1 : hpa + k * PAGE, prot];
        if (h === undefined) {
          this.history.set(first + k, entry);
          continue;
        }
        // equal times keep their journal order
        let i = h.length;
        while (i > 0 && h[i - 3] > atNs) i -= 3;
        h.splice(i, 0, ...entry);
      }
    });
  }

  dropped(): number {
    return this.journal?.dropped() ?? 0;
  }

  walk(iova: number): { hpa: number; prot: number; levels: number } | null {
    if (this.atNs < 0 || this.journal === null) return this.table.walk(iova);
    const pfn = Math.floor(iova / PAGE);
    const h = this.history.get(pfn);
    if (h === undefined) return null;
    let i = h.length - 3;
    while (i >= 0 && h[i] > this.atNs) i -= 3;
    if (i < 0 || h[i + 1] < 0) return null;
    return { hpa: h[i + 1] + (iova - pfn * PAGE), prot: h[i + 2] as IommuProt, levels: 4 };
  }
}

interface Probe {
  tNs: number;
  seq: number;
  kind: AttackKind;
  iova: number;
  bytes: number;
  write: boolean;
  /** after-unmap tries: when the guest's unmap returned, its index in staleWindowsNs, the delay; else -1 */
  unmapNs: number;
  unmap: number;
  delayNs: number;
}

export class DeviceAttacker {
  private readonly logs: DmaUnmapLog[];
  private readonly scratchClock = new ModelClock('virtual');
  private readonly scratch = new Uint8Array(PAGE);
  /** host pages the device was given (its coherent area; any successful translation of its own commands) */
  private readonly givenPfns = new Set<number>();
  private readonly secretPfns: Set<number>;
  /** IOVA page → the model times the guest began mapping it (from the map log), ascending */
  private readonly mapTimesNs = new Map<number, number[]>();
  private readonly probes: Probe[] = [];
  private seq = 0;
  private unmapsSeen = 0;
  private commands = 0;
  readonly result: DeviceAttackResult;

  constructor(
    private readonly plan: DeviceAttackPlan,
    private readonly mem: GuestMemory,
    private readonly iotlb: Iotlb,
    private readonly walker: TimedWalker,
  ) {
    this.logs = plan.unmapLogs.map((sab) => new DmaUnmapLog(sab));
    this.secretPfns = new Set(plan.secretPfns);
    for (const pfn of plan.coherentPfns) this.givenPfns.add(pfn);
    this.result = {
      kinds: Object.fromEntries(ATTACK_KINDS.map((k) => [k, emptyStats()])) as Record<AttackKind, AttackKindStats>,
      unmapsProbed: 0,
      remapped: 0,
      staleWindowsNs: [],
      delaysNs: [...plan.delaysNs],
      droppedLogEntries: 0,
    };
  }

  /** The device translated an address for its own work: the page is given. */
  noteGiven(hpa: number): void {
    if (hpa >= 0) this.givenPfns.add(Math.floor(hpa / PAGE));
  }

  /** A command's buffer, at its fetch (controller BufferObserver): the in-command tries, and the pass once. */
  onBuffer(iovaPages: readonly number[], _hpas: readonly number[], isRead: boolean, t: ModelClock): void {
    const tNs = t.nowNs();
    this.commands++;
    if (this.commands === this.plan.scanAfterCommands) this.push(probe(tNs, 'never-mapped', 0, this.plan.scanPages * PAGE, false));
    if ((this.commands - 1) % this.plan.sampleEvery !== 0 || iovaPages.length === 0) return;
    const n = this.plan.neighbourBytes;
    const first = iovaPages[0] - (iovaPages[0] % PAGE);
    if (n > 0) {
      const last = iovaPages[iovaPages.length - 1];
      if (first >= n) this.push(probe(tNs, 'neighbour', first - n, n, false));
      this.push(probe(tNs, 'neighbour', last - (last % PAGE) + PAGE, n, false));
    }
    // a write command's buffer is mapped for the device to read only
    if (!isRead) this.push(probe(tNs, 'read-only-write', first, PAGE, true));
  }

  /** Take the guests' new map log entries and the page-table journal; schedule the after-unmap tries of every n-th unmap. */
  drainLogs(): void {
    this.walker.drain();
    for (const log of this.logs) {
      log.drain((iova, lenBytes, atNs, kind) => {
        const page = iova - (iova % PAGE);
        if (kind === 'map') {
          for (let a = page; a < iova + lenBytes; a += PAGE) {
            const times = this.mapTimesNs.get(a);
            if (times === undefined) this.mapTimesNs.set(a, [atNs]);
            else insertSorted(times, atNs);
          }
          return;
        }
        if (this.unmapsSeen++ % this.plan.sampleEvery !== 0) return;
        const unmap = this.result.staleWindowsNs.length;
        this.result.staleWindowsNs.push(-1);
        this.result.unmapsProbed++;
        for (const d of this.plan.delaysNs) {
          this.push({ ...probe(atNs + d, 'after-unmap-read', page, PAGE, false), unmapNs: atNs, unmap, delayNs: d });
          this.push({ ...probe(atNs + d, 'after-unmap-write', page, PAGE, true), unmapNs: atNs, unmap, delayNs: d });
        }
      });
    }
  }

  /** The model time of the next try, or Infinity. */
  nextProbeNs(): number {
    return this.probes.length > 0 ? this.probes[0].tNs : Number.POSITIVE_INFINITY;
  }

  /**
   * Make every try stamped before `boundNs`, in time order;
   * `applyInvalidationsUpTo(t)` brings the IOTLB to model time t first.
   */
  runProbesBefore(boundNs: number, applyInvalidationsUpTo: (tNs: number) => void): number {
    let n = 0;
    while (this.probes.length > 0 && this.probes[0].tNs < boundNs) {
      const p = this.pop();
      applyInvalidationsUpTo(p.tNs);
      n++;
      this.walker.atNs = p.tNs;
      // the scratch clock only dates the try (a fault the IOMMU records carries its time)
      this.scratchClock.syncTo(p.tNs);
      try {
        if (p.kind === 'never-mapped') {
          for (let a = p.iova; a < p.iova + p.bytes; a += PAGE) this.access(p.kind, a, PAGE, false, false);
          continue;
        }
        if (p.unmap < 0) {
          this.access(p.kind, p.iova, p.bytes, p.write, false);
          continue;
        }
        if (mappedBetween(this.mapTimesNs.get(p.iova), p.unmapNs, p.tNs)) {
          this.result.remapped++;
          continue;
        }
        const ok = this.access(p.kind, p.iova, p.bytes, p.write, true);
        if (ok && p.delayNs > this.result.staleWindowsNs[p.unmap]) this.result.staleWindowsNs[p.unmap] = p.delayNs;
      } finally {
        this.walker.atNs = -1;
      }
    }
    return n;
  }

  finish(): DeviceAttackResult {
    this.result.droppedLogEntries = this.logs.reduce((s, l) => s + l.dropped(), 0) + this.walker.dropped();
    return this.result;
  }

  /**
   * One DMA of `bytes` at `iova` (within one page) through the IOTLB:
   * a read copies the bytes out, a write stores them back unchanged.
   * Returns whether it went through.
   */
  private access(kind: AttackKind, iova: number, bytes: number, write: boolean, afterUnmap: boolean): boolean {
    const s = this.result.kinds[kind];
    s.attempts++;
    const hpa = this.iotlb.translate(iova, write, this.scratchClock);
    if (hpa < 0 || hpa + bytes > this.mem.u8.length) {
      s.faults++;
      return false;
    }
    s.successes++;
    const u8 = this.mem.u8;
    if (write) u8.set(u8.subarray(hpa, hpa + bytes), hpa);
    else this.scratch.set(u8.subarray(hpa, hpa + bytes));
    const pfn = Math.floor(hpa / PAGE);
    if (this.secretPfns.has(pfn)) {
      // the bytes that still hold the secret (the guest never gave the page, so all of them should)
      let secret = 0;
      for (let a = hpa; a < hpa + bytes; a++) if (u8[a] === attackSecretByte(a)) secret++;
      s.secretBytes += secret;
      s.otherBytes += bytes - secret;
    } else if (this.givenPfns.has(pfn)) s.seenBytes += bytes;
    else s.otherBytes += bytes;
    if (afterUnmap) {
      // the table as it stood at the access (walker.atNs)
      if (this.walker.walk(iova) === null) s.staleIotlb++;
      else s.hostMapped++;
    }
    return true;
  }

  private push(p: Probe): void {
    p.seq = this.seq++;
    heapPush(this.probes, p, earlier);
  }

  private pop(): Probe {
    return heapPop(this.probes, earlier);
  }
}

function probe(tNs: number, kind: AttackKind, iova: number, bytes: number, write: boolean): Probe {
  return { tNs, seq: 0, kind, iova, bytes, write, unmapNs: -1, unmap: -1, delayNs: 0 };
}

/** Insert `t` into the ascending `times` (maps arrive nearly in order: from the back). */
function insertSorted(times: number[], t: number): void {
  let i = times.length;
  while (i > 0 && times[i - 1] > t) i--;
  times.splice(i, 0, t);
}

/** Whether a map time in `times` (ascending) lies in (afterNs, untilNs]. */
function mappedBetween(times: readonly number[] | undefined, afterNs: number, untilNs: number): boolean {
  if (times === undefined) return false;
  let lo = 0;
  let hi = times.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (times[mid] <= afterNs) lo = mid + 1;
    else hi = mid;
  }
  return lo < times.length && times[lo] <= untilNs;
}

function earlier(a: Probe, b: Probe): boolean {
  return a.tNs < b.tNs || (a.tNs === b.tNs && a.seq < b.seq);
}
