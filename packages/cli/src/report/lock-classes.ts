/**
 * Lock classes: lock_stat rows grouped the way Linux's lock_stat groups them.
 *
 * A lock instance in a run is named `[<vm id>:]<class>[/<qualifier>...]`:
 * `cpu_rcache->lock/3` (per CPU), `bounce_pool->class_lock/4096` (per size
 * class), `qi->q_lock/dmar0` (per IOMMU unit), `iommu->lock/container1` (per
 * VFIO container), `vm1:viommu->request_lock` (a per-VM lock in a run of
 * several VMs). Its class is the name without the VM prefix and without the
 * `/…` qualifiers: every instance initialised by the same code is one class,
 * as lockdep keys a class by the lock's static initialisation site.
 *
 * A class row sums its instances' counters. Minima and maxima are taken over
 * the instances that have the statistic, and the averages divide by the same
 * counts the Mutex divides a single lock's by (`Mutex.stat` in
 * @vmstack/shm): wait time per contention, hold time per acquisition. A class
 * of one instance therefore repeats that instance's row.
 */

import type { LockKind } from '@vmstack/shm';
import { htmlTable } from './html.js';
import type { LockClassRow, LockStatRow } from './vmstack-report.js';

/** The class of a lock instance: `vm1:cpu_rcache->lock/3` → `cpu_rcache->lock`. */
export function lockClassOf(name: string): string {
  const slash = name.indexOf('/');
  const head = slash < 0 ? name : name.slice(0, slash);
  const colon = head.indexOf(':');
  return colon < 0 ? head : head.slice(colon + 1);
}

/** A lock_stat row without its class, as the Mutex's counters give it. */
export type LockInstanceRow = Omit<LockStatRow, 'class'>;

/** The row with its `class` after the name. */
export function withLockClass(row: LockInstanceRow): LockStatRow {
  const { name, ...rest } = row;
  return { name, class: lockClassOf(name), ...rest };
}

/** Per-class aggregates of lock_stat rows, in the order each class first appears. */
export function lockClassRows(rows: readonly LockInstanceRow[]): LockClassRow[] {
  const byClass = new Map<string, LockInstanceRow[]>();
  for (const r of rows) {
    const c = lockClassOf(r.name);
    const list = byClass.get(c);
    if (list) list.push(r);
    else byClass.set(c, [r]);
  }
  return [...byClass].map(([c, instances]) => aggregateLockClass(c, instances));
}

/** One class's row from its instances' rows. */
export function aggregateLockClass(lockClass: string, instances: readonly LockInstanceRow[]): LockClassRow {
  const sum = (f: (r: LockInstanceRow) => number) => instances.reduce((s, r) => s + f(r), 0);
  const max = (f: (r: LockInstanceRow) => number) => instances.reduce((m, r) => Math.max(m, f(r)), 0);
  // an instance that never waited (or was never held) reports its minimum as 0: it has none
  const minOver = (has: (r: LockInstanceRow) => boolean, f: (r: LockInstanceRow) => number) => {
    const xs = instances.filter(has).map(f);
    return xs.length > 0 ? Math.min(...xs) : 0;
  };
  const contentions = sum((r) => r.contentions);
  const acquisitions = sum((r) => r.acquisitions);
  const waittimeTotalNs = sum((r) => r.waittime_total_ns);
  const holdtimeTotalNs = sum((r) => r.holdtime_total_ns);
  const kind: LockKind = instances[0]?.kind ?? 'mutex';
  return {
    class: lockClass,
    kind,
    instances: instances.length,
    con_bounces: sum((r) => r.con_bounces),
    contentions,
    waittime_min_ns: minOver(
      (r) => r.contentions > 0,
      (r) => r.waittime_min_ns,
    ),
    waittime_max_ns: max((r) => r.waittime_max_ns),
    waittime_total_ns: waittimeTotalNs,
    waittime_avg_ns: contentions > 0 ? waittimeTotalNs / contentions : 0,
    acq_bounces: sum((r) => r.acq_bounces),
    acquisitions,
    holdtime_min_ns: minOver(
      (r) => r.acquisitions > 0,
      (r) => r.holdtime_min_ns,
    ),
    holdtime_max_ns: max((r) => r.holdtime_max_ns),
    holdtime_total_ns: holdtimeTotalNs,
    holdtime_avg_ns: acquisitions > 0 ? holdtimeTotalNs / acquisitions : 0,
    real_contentions: sum((r) => r.real_contentions),
  };
}

/** True when some class has several instances: only then does the per-class table say more than lock_stat. */
export function hasSharedLockClass(classes: readonly LockClassRow[]): boolean {
  return classes.some((c) => c.instances > 1);
}

/** The per-class table's columns after the class name: lock_stat's, with the number of instances first. */
export const LOCK_CLASS_COLUMNS = [
  'instances',
  'con-bounces',
  'contentions',
  'waittime-min',
  'waittime-max',
  'waittime-total',
  'waittime-avg',
  'acq-bounces',
  'acquisitions',
  'holdtime-min',
  'holdtime-max',
  'holdtime-total',
  'holdtime-avg',
];

/** One class row's cells: counts as integers, times in µs with two decimals, as lock_stat prints them. */
export function lockClassCells(c: LockClassRow): string[] {
  const us = (ns: number) => (ns / 1000).toFixed(2);
  return [
    c.class,
    String(c.instances),
    String(c.con_bounces),
    String(c.contentions),
    us(c.waittime_min_ns),
    us(c.waittime_max_ns),
    us(c.waittime_total_ns),
    us(c.waittime_avg_ns),
    String(c.acq_bounces),
    String(c.acquisitions),
    us(c.holdtime_min_ns),
    us(c.holdtime_max_ns),
    us(c.holdtime_total_ns),
    us(c.holdtime_avg_ns),
  ];
}

/** The per-class table as HTML: lock_stat's columns under shorter heads (wait min … hold avg, in µs), in a small font to fit a page. */
export function lockClassesHtml(classes: readonly LockClassRow[]): string {
  const head = ['class', ...LOCK_CLASS_COLUMNS.map((c) => c.replace('waittime-', 'wait ').replace('holdtime-', 'hold ').replace('-bounces', ' bounces'))];
  return `<div class="small"><p class="meta">lock_stat summed per class; times in µs</p>${htmlTable(head, classes.map(lockClassCells))}</div>`;
}
