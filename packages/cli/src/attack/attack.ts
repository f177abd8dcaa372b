/**
 * `vmstack attack`: what a malicious or buggy NVMe device can still reach
 * under each DMA strategy. For every strategy and trust setting it runs the
 * same fio workload with the device attacking meanwhile (nvme-device
 * attack.ts): after-unmap reads and writes at chosen delays, writes into
 * read-only mappings, the bytes next to its buffers, a pass over IOVAs it
 * was never given. Guest RAM holds planted secret pages the guest never gives
 * the device; a byte of them reached is an escape.
 *
 * Each row: attempts, faults, successes, and the bytes reached split into
 * secret (never given: an escape), seen (pages the device was given earlier:
 * its own buffers and queues, an earlier I/O's data in a reused slot) and
 * other (guest memory never given that holds no planted secret); the
 * after-unmap successes split by why they worked (the host still mapped the
 * IOVA, or only a stale IOTLB entry did), and the stale window: per probed
 * unmap, the largest probe delay at which its buffer could still be read or
 * written (whichever its mapping allowed).
 */

import type { DmaStrategy } from '@vmstack/guest-kernel';
import { ATTACK_KINDS, type AttackKind, type AttackKindStats, type DeviceAttackResult } from '@vmstack/nvme-device';
import type { RunArgs } from '../commands/run.js';
import { htmlPage, htmlTable } from '../report/html.js';
import type { ViommuFaultsReport } from '../report/viommu-faults.js';
import { runStack, type StackAttackOptions } from '../stack/run-stack.js';

export interface AttackConfig {
  strategy: DmaStrategy;
  untrusted: boolean;
}

export interface AttackOptions {
  configs: AttackConfig[];
  /** the run's arguments, as `vmstack run` takes them; strategy and untrusted are set per config */
  runArgs: RunArgs;
  attack: StackAttackOptions;
}

export interface AttackRow {
  strategy: DmaStrategy;
  trust: 'trusted' | 'untrusted';
  /** I/Os the workload completed */
  ios: number;
  /** the workload's verify: corrupt blocks (the attack's writes store what is there: 0 expected) */
  verify_corrupt: number;
  attempts: number;
  faults: number;
  successes: number;
  secret_bytes: number;
  seen_bytes: number;
  other_bytes: number;
  after_unmap: { attempts: number; successes: number; host_mapped: number; stale_iotlb: number; remapped_skipped: number };
  stale_window: {
    unmaps_probed: number;
    /** probed unmaps whose buffer could still be read or written after the unmap returned */
    usable_after_unmap: number;
    /** of those, the ones still usable at the largest probe delay */
    open_at_last_delay: number;
    median_us: number | null;
    max_us: number | null;
  };
  kinds: Record<AttackKind, { attempts: number; faults: number; successes: number; secret_bytes: number; seen_bytes: number; other_bytes: number }>;
  /** map log or page-table journal entries that did not fit (their after-unmap tries are then less exact); 0 expected */
  dropped_log_entries: number;
  /** behind a virtio-iommu: the device's translation faults as the host recorded them and as the guest was told (run's `virtio_iommu.faults`) */
  fault_reports: ViommuFaultsReport | null;
}

export interface AttackReport {
  workload: { rw: string; bs: string; iodepth: string; size: string; verify: string };
  delays_us: number[];
  sample_every: number;
  secret_pages: number;
  rows: AttackRow[];
}

function fioValue(a: RunArgs, k: string, dflt: string): string {
  const v = a.fio[k];
  return v === undefined ? dflt : String(v);
}

export async function runAttack(o: AttackOptions): Promise<AttackReport> {
  const { runOptionsOf } = await import('../commands/run.js');
  const rows: AttackRow[] = [];
  for (const c of o.configs) {
    const run = runOptionsOf({ ...o.runArgs, strategy: c.strategy, untrusted: c.untrusted });
    const result = await runStack({ ...run.groups[0], attack: o.attack });
    const ios = result.jobs.reduce((s, j) => s + j.read.totalIos + j.write.totalIos, 0);
    const corrupt = result.jobs.reduce((s, j) => s + (j.verify?.corrupt ?? 0), 0);
    rows.push({ ...attackRow(c, ios, corrupt, result.attack!), fault_reports: result.vmstack.virtio_iommu?.faults ?? null });
  }
  return {
    workload: {
      rw: fioValue(o.runArgs, 'rw', 'randrw'),
      bs: fioValue(o.runArgs, 'bs', '4k'),
      iodepth: fioValue(o.runArgs, 'iodepth', '8'),
      size: fioValue(o.runArgs, 'size', '2m'),
      verify: fioValue(o.runArgs, 'verify', 'crc32c'),
    },
    delays_us: o.attack.delaysNs.map((d) => d / 1000),
    sample_every: o.attack.sampleEvery,
    secret_pages: o.attack.secretPages,
    rows,
  };
}

function attackRow(c: AttackConfig, ios: number, corrupt: number, a: DeviceAttackResult): Omit<AttackRow, 'fault_reports'> {
  const all = ATTACK_KINDS.map((k) => a.kinds[k]);
  const sum = (f: (s: AttackKindStats) => number) => all.reduce((t, s) => t + f(s), 0);
  const au = [a.kinds['after-unmap-read'], a.kinds['after-unmap-write']];
  const windows = a.staleWindowsNs.filter((w) => w >= 0).sort((x, y) => x - y);
  const last = a.delaysNs.length > 0 ? a.delaysNs[a.delaysNs.length - 1] : -1;
  return {
    strategy: c.strategy,
    trust: c.untrusted ? 'untrusted' : 'trusted',
    ios,
    verify_corrupt: corrupt,
    attempts: sum((s) => s.attempts),
    faults: sum((s) => s.faults),
    successes: sum((s) => s.successes),
    secret_bytes: sum((s) => s.secretBytes),
    seen_bytes: sum((s) => s.seenBytes),
    other_bytes: sum((s) => s.otherBytes),
    after_unmap: {
      attempts: au[0].attempts + au[1].attempts,
      successes: au[0].successes + au[1].successes,
      host_mapped: au[0].hostMapped + au[1].hostMapped,
      stale_iotlb: au[0].staleIotlb + au[1].staleIotlb,
      remapped_skipped: a.remapped,
    },
    stale_window: {
      unmaps_probed: a.unmapsProbed,
      usable_after_unmap: windows.length,
      open_at_last_delay: windows.filter((w) => w === last).length,
      median_us: windows.length > 0 ? windows[Math.floor((windows.length - 1) / 2)] / 1000 : null,
      max_us: windows.length > 0 ? windows[windows.length - 1] / 1000 : null,
    },
    kinds: Object.fromEntries(
      ATTACK_KINDS.map((k) => {
        const s = a.kinds[k];
        return [
          k,
          { attempts: s.attempts, faults: s.faults, successes: s.successes, secret_bytes: s.secretBytes, seen_bytes: s.seenBytes, other_bytes: s.otherBytes },
        ];
      }),
    ) as AttackRow['kinds'],
    dropped_log_entries: a.droppedLogEntries,
  };
}

const HEAD = ['strategy', 'device', 'attempts', 'faults', 'successes', 'secret B', 'seen B', 'other B', 'after-unmap ok', 'stale IOTLB', 'window µs p50/max'];

function windowCell(r: AttackRow): string {
  const w = r.stale_window;
  if (w.median_us === null) return '-';
  const open = w.open_at_last_delay > 0 ? ` (${w.open_at_last_delay}/${w.unmaps_probed} never closed)` : '';
  return `${fmtUs(w.median_us)}/${fmtUs(w.max_us!)}${open}`;
}

function fmtUs(us: number): string {
  return us >= 100 ? us.toFixed(0) : us >= 1 ? us.toFixed(1) : us.toFixed(2);
}

function cells(r: AttackRow): string[] {
  return [
    r.strategy,
    r.trust,
    String(r.attempts),
    String(r.faults),
    String(r.successes),
    String(r.secret_bytes),
    String(r.seen_bytes),
    String(r.other_bytes),
    `${r.after_unmap.successes}/${r.after_unmap.attempts}`,
    String(r.after_unmap.stale_iotlb),
    windowCell(r),
  ];
}

const KIND_HEAD = ['strategy', 'device', 'kind', 'attempts', 'faults', 'successes', 'secret B', 'seen B', 'other B'];

function kindCells(r: AttackRow): string[][] {
  return ATTACK_KINDS.map((k) => {
    const s = r.kinds[k];
    return [
      r.strategy,
      r.trust,
      k,
      String(s.attempts),
      String(s.faults),
      String(s.successes),
      String(s.secret_bytes),
      String(s.seen_bytes),
      String(s.other_bytes),
    ];
  });
}

const FAULT_HEAD = ['strategy', 'device', 'host faults', 'not recorded', 'reported', 'dropped', 'guest read', 'first report'];

/** The fault-report rows: rows behind a virtio-iommu only. */
function faultCells(r: AttackRow): string[][] {
  const f = r.fault_reports;
  if (!f) return [];
  const first = f.guest.first[0];
  return [
    [
      r.strategy,
      r.trust,
      String(f.host.faults),
      String(f.host.overflowed),
      f.forwarded ? String(f.reported) : '-',
      f.forwarded ? String(f.dropped) : '-',
      String(f.guest.faults),
      first ? `${first.reason} [${first.flags.join(' ')}] EP ${first.endpoint} at ${first.address ?? '?'}` : '-',
    ],
  ];
}

function textTable(head: readonly string[], rows: readonly (readonly string[])[], leftColumns: number): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: readonly string[]) => r.map((c, i) => (i < leftColumns ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(head), ...rows.map(line)].join('\n');
}

function describe(r: AttackReport): string {
  const w = r.workload;
  return (
    `fio --rw=${w.rw} --bs=${w.bs} --iodepth=${w.iodepth} --size=${w.size} --verify=${w.verify} per row, the device attacking meanwhile; ` +
    `${r.secret_pages} pages of planted secret the guest never gives the device; after-unmap tries of every ${r.sample_every}th unmap at ` +
    `${r.delays_us.map(fmtUs).join(', ')} µs after it returned.`
  );
}

export function formatAttackTable(r: AttackReport): string {
  const out = [
    'DMA exposure per strategy (vmstack attack)',
    describe(r),
    '',
    textTable(HEAD, r.rows.map(cells), 2),
    '',
    'secret B: planted secret bytes reached (never given: any is an escape); seen B: bytes of pages the device was given before (its buffers, queues,',
    'an earlier I/O in a reused slot); other B: other guest memory never given. after-unmap ok: tries after the unmap returned that worked;',
    "stale IOTLB: of those, the ones only a stale IOTLB entry allowed (the host's page table no longer mapped the IOVA); window: per probed unmap,",
    'the largest delay at which its buffer could still be read or written (as its mapping allowed: a read buffer is write-only for the device).',
    '',
    'By kind:',
    textTable(KIND_HEAD, r.rows.flatMap(kindCells), 3),
    '',
  ];
  const faultRows = r.rows.flatMap(faultCells);
  if (faultRows.length > 0)
    out.push(
      'Fault reports (virtio-iommu event queue):',
      textTable(FAULT_HEAD, faultRows, 2),
      '',
      "host faults: translation faults the host IOMMU saw (every fault above, and the workload's own); not recorded: its fault log was full;",
      'reported / dropped: reports the VMM wrote into an event buffer / found none for, the driver having posted none back',
      '("-": this VMM reports none, --vmm qemu-notifier does);',
      "guest read: reports the guest's virtio-iommu driver read from its event queue.",
      '',
    );
  for (const row of r.rows) {
    if (row.dropped_log_entries > 0)
      out.push(
        `warning: ${row.strategy} ${row.trust}: ${row.dropped_log_entries} map-log or page-table journal entries did not fit; its after-unmap counts are less exact`,
      );
  }
  return out.join('\n');
}

export function formatAttackHtml(r: AttackReport): string {
  return htmlPage('vmstack attack: DMA exposure per strategy', [
    { heading: 'Exposure', body: `<p class="meta">${escHtml(describe(r))}</p>${htmlTable(HEAD, r.rows.map(cells), [0, 1])}` },
    { heading: 'By kind of access', body: htmlTable(KIND_HEAD, r.rows.flatMap(kindCells), [0, 1, 2]) },
    ...(r.rows.some((x) => x.fault_reports)
      ? [{ heading: 'Fault reports (virtio-iommu event queue)', body: htmlTable(FAULT_HEAD, r.rows.flatMap(faultCells), [0, 1, 7]) }]
      : []),
  ]);
}

function escHtml(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}
