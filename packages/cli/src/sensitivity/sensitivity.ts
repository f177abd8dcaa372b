/**
 * `vmstack sensitivity`: which profile values move the reference
 * experiment's ratios most. Each chosen profile value is multiplied by each
 * factor (default ×0.5 and ×2), one value at a time, every other value left
 * as the profile has it, and every row of `compare` (strict and the pool) is
 * run again with it. The result, per row: the baseline ratio, the ratio with
 * each changed value, and the values ranked by the largest change they cause.
 *
 * A changed value stays a valid profile value: ns and counts are rounded to
 * whole numbers and every value is held within its key's plausibility bounds
 * (shm profile.ts); a value the change leaves equal (0 × 2, a count of 1
 * halved) is reported as unchanged and not run.
 */

import { type CostKey, type CostProfile, InputError, PROFILE_KEYS } from '@vmstack/shm';
import { type CompareCell, type CompareCellResult, runCompareCells } from '../compare/cells.js';
import { type CompareRow, REFERENCE_ROWS } from '../compare/experiment.js';
import { htmlPage, htmlTable } from '../report/html.js';
import { RunProgress } from '../report/progress.js';
import type { StackOptions } from '../stack/run-stack.js';

export const DEFAULT_FACTORS = [0.5, 2] as const;

export interface SensitivityOptions {
  /** profile keys to vary; default every key */
  keys?: readonly string[];
  factors?: readonly number[];
  /** reference rows by label; default all four */
  blockSizes?: readonly string[];
  /** bytes read per run; default two queue fills (2 × 64 × bs) per row */
  sizeBytes?: number;
  parallel?: number;
  /** a cell's run as compare builds it, with the profile given */
  stackFor: (strategy: 'strict' | 'bounce', row: CompareRow, sizeBytes: number, iodepth: number) => StackOptions;
}

export interface SensitivityPoint {
  factor: number;
  /** the value run; equal to the baseline: unchanged, not run */
  value: number;
  changed: boolean;
  ratio: number;
  /** (ratio / baseline ratio − 1) · 100 */
  deltaPct: number;
  strictMiBps: number;
  poolMiBps: number;
}

export interface SensitivityKeyRow {
  key: string;
  baseline: number;
  points: SensitivityPoint[];
  /** the largest |deltaPct| over the factors */
  maxAbsDeltaPct: number;
}

export interface SensitivityRow {
  blockSize: string;
  baselineRatio: number;
  referenceRatio: number;
  strictMiBps: number;
  poolMiBps: number;
  /** every varied key, the one that moves this row's ratio most first */
  keys: SensitivityKeyRow[];
}

export interface SensitivityResult {
  profile: string;
  factors: number[];
  sizeBytesPerRow: Record<string, number>;
  rows: SensitivityRow[];
  runs: number;
  wallMs: number;
  parallel: number;
}

const ALL_KEYS: readonly string[] = PROFILE_KEYS.map((s) => s.key);

/** `key`'s value × `factor`, made a valid value of its unit and bounds. */
export function scaledValue(key: CostKey, value: number, factor: number): number {
  const spec = PROFILE_KEYS.find((s) => s.key === key)!;
  let v = value * factor;
  if (spec.unit !== 'bytes/ns') v = Math.round(v);
  return Math.min(spec.max, Math.max(spec.min, v));
}

export function parseKeys(text: string): string[] {
  const keys = text.split(',').map((k) => k.trim());
  for (const k of keys) if (!ALL_KEYS.includes(k)) throw new InputError('--keys', k, `profile keys, comma-separated: ${ALL_KEYS.join(', ')}`);
  if (new Set(keys).size !== keys.length) throw new InputError('--keys', text, 'each profile key once');
  return keys;
}

export function parseFactors(text: string): number[] {
  const xs = text.split(',').map((f) => f.trim());
  return xs.map((f) => {
    const x = Number(f);
    if (f === '' || !Number.isFinite(x) || x <= 0 || x === 1)
      throw new InputError('--factors', text, 'positive factors other than 1, comma-separated, e.g. 0.5,2');
    return x;
  });
}

export async function runSensitivity(o: SensitivityOptions): Promise<SensitivityResult> {
  const keys = (o.keys ?? ALL_KEYS) as CostKey[];
  const factors = [...(o.factors ?? DEFAULT_FACTORS)];
  const parallel = o.parallel ?? 1;
  if (!Number.isInteger(parallel) || parallel < 1 || parallel > 16) throw new InputError('--parallel', parallel, 'a whole number of threads from 1 to 16');
  const labels = REFERENCE_ROWS.map((r) => r.label);
  for (const b of o.blockSizes ?? []) if (!labels.includes(b)) throw new InputError('--bs', b, `one of the reference block sizes: ${labels.join(', ')}`);
  const rows = REFERENCE_ROWS.filter((r) => !o.blockSizes || o.blockSizes.includes(r.label));
  const iodepth = 64;
  const sizeOf = (r: CompareRow) => o.sizeBytes ?? 2 * iodepth * r.blockSizeBytes;
  for (const r of rows)
    if (sizeOf(r) < r.blockSizeBytes * iodepth)
      throw new InputError('--size', o.sizeBytes, `at least iodepth × bs = ${r.blockSizeBytes * iodepth} bytes for bs ${r.label}, so the queue fills`);
  // the baseline stacks: every check of run applies once, before anything runs
  const base = rows.map((r) => ({ row: r, strict: o.stackFor('strict', r, sizeOf(r), iodepth), pool: o.stackFor('bounce', r, sizeOf(r), iodepth) }));
  const profile = base[0].strict.profile;

  // every cell: the baseline, then each key × factor whose value changes
  const variants: { key: CostKey | null; factor: number; value: number; profile: CostProfile }[] = [{ key: null, factor: 1, value: 0, profile }];
  for (const key of keys)
    for (const factor of factors) {
      const value = scaledValue(key, profile[key], factor);
      if (value !== profile[key]) variants.push({ key, factor, value, profile: { ...profile, [key]: value } });
    }
  const cells: CompareCell[] = variants.flatMap((v) =>
    base.flatMap((b) => [
      { strategy: 'strict' as const, blockSizeBytes: b.row.blockSizeBytes, stack: { ...b.strict, profile: v.profile } },
      { strategy: 'bounce' as const, blockSizeBytes: b.row.blockSizeBytes, stack: { ...b.pool, profile: v.profile } },
    ]),
  );
  const started = performance.now();
  const results = await runCompareCells(cells, parallel, new RunProgress('sensitivity', cells.length));
  const at = (vi: number, ri: number): [CompareCellResult, CompareCellResult] => {
    const i = (vi * rows.length + ri) * 2;
    return [results[i], results[i + 1]];
  };

  const out: SensitivityRow[] = rows.map((row, ri) => {
    const [s0, p0] = at(0, ri);
    const baselineRatio = p0.mibPerS / s0.mibPerS;
    const keyRows: SensitivityKeyRow[] = keys.map((key) => {
      const points = factors.map((factor): SensitivityPoint => {
        const vi = variants.findIndex((v) => v.key === key && v.factor === factor);
        if (vi < 0) return { factor, value: profile[key], changed: false, ratio: baselineRatio, deltaPct: 0, strictMiBps: s0.mibPerS, poolMiBps: p0.mibPerS };
        const [s, p] = at(vi, ri);
        const ratio = p.mibPerS / s.mibPerS;
        return {
          factor,
          value: variants[vi].value,
          changed: true,
          ratio,
          deltaPct: (ratio / baselineRatio - 1) * 100,
          strictMiBps: s.mibPerS,
          poolMiBps: p.mibPerS,
        };
      });
      return { key, baseline: profile[key], points, maxAbsDeltaPct: Math.max(...points.map((p) => Math.abs(p.deltaPct))) };
    });
    keyRows.sort((a, b) => b.maxAbsDeltaPct - a.maxAbsDeltaPct || a.key.localeCompare(b.key));
    return { blockSize: row.label, baselineRatio, referenceRatio: row.referenceRatio, strictMiBps: s0.mibPerS, poolMiBps: p0.mibPerS, keys: keyRows };
  });
  return {
    profile: profile.name,
    factors,
    sizeBytesPerRow: Object.fromEntries(rows.map((r) => [r.label, sizeOf(r)])),
    rows: out,
    runs: cells.length,
    wallMs: performance.now() - started,
    parallel,
  };
}

function signed(x: number, digits = 1): string {
  return (x >= 0 ? '+' : '') + x.toFixed(digits);
}

/** Per row: the keys that move the ratio, most first (`top` of them; keys that move nothing are counted, not listed). */
export function formatSensitivityTable(r: SensitivityResult, top = 10): string {
  const lines = [`vmstack sensitivity — profile ${r.profile}: each value × ${r.factors.join(', × ')}, one at a time; ratio = pool MiB/s / strict MiB/s`, ''];
  for (const row of r.rows) {
    lines.push(
      `${row.blockSize}: baseline ratio ${row.baselineRatio.toFixed(2)} (reference ${row.referenceRatio}), strict ${row.strictMiBps.toFixed(1)} MiB/s, pool ${row.poolMiBps.toFixed(1)} MiB/s, ${r.sizeBytesPerRow[row.blockSize]} bytes per run`,
    );
    const head = ['key', 'value', ...r.factors.flatMap((f) => [`×${f} ratio`, 'Δ %'])];
    const moving = row.keys.filter((k) => k.maxAbsDeltaPct > 0);
    const body = moving
      .slice(0, top)
      .map((k) => [k.key, String(k.baseline), ...k.points.flatMap((p) => (p.changed ? [p.ratio.toFixed(2), signed(p.deltaPct)] : ['unchanged', '']))]);
    const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
    const line = (cells: readonly string[]) =>
      cells
        .map((x, i) => (i === 0 ? x.padEnd(widths[i]) : x.padStart(widths[i])))
        .join('  ')
        .trimEnd();
    lines.push(line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line));
    lines.push(`(${moving.length} of ${row.keys.length} values move this ratio; ${Math.max(0, moving.length - top)} more not shown)`, '');
  }
  lines.push(`${r.runs} runs in ${(r.wallMs / 1000).toFixed(1)} s, ${r.parallel === 1 ? 'serial' : `${r.parallel} piscina threads`}`, '');
  return lines.join('\n');
}

/** A tornado chart: per key, a bar from the baseline ratio to each factor's ratio, the widest on top. */
export function tornadoSvg(title: string, row: SensitivityRow, factors: readonly number[], top = 15): string {
  const keys = row.keys.filter((k) => k.maxAbsDeltaPct > 0).slice(0, top);
  const ratios = [row.baselineRatio, ...keys.flatMap((k) => k.points.map((p) => p.ratio))];
  const lo = Math.min(...ratios);
  const hi = Math.max(...ratios);
  const span = hi - lo || 1;
  const W = 760;
  const left = 230;
  const right = 40;
  const barH = 16;
  const top0 = 40;
  const H = top0 + keys.length * (barH + 6) + 40;
  const x = (v: number) => left + ((v - lo) / span) * (W - left - right);
  const colors = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759'];
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${title}">`];
  out.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${title}</text>`);
  keys.forEach((k, i) => {
    const y = top0 + i * (barH + 6);
    out.push(`<text x="${left - 6}" y="${y + barH - 4}" text-anchor="end" font-size="11">${k.key}</text>`);
    k.points.forEach((p, fi) => {
      if (!p.changed) return;
      const x0 = Math.min(x(row.baselineRatio), x(p.ratio));
      const w = Math.max(1, Math.abs(x(p.ratio) - x(row.baselineRatio)));
      out.push(
        `<rect x="${x0}" y="${y}" width="${w}" height="${barH}" fill="${colors[fi % colors.length]}" opacity="0.85"><title>${k.key} ×${p.factor}: ${p.ratio.toFixed(3)} (${signed(p.deltaPct)}%)</title></rect>`,
      );
    });
  });
  const bx = x(row.baselineRatio);
  out.push(`<line x1="${bx}" x2="${bx}" y1="${top0 - 6}" y2="${H - 34}" stroke="#000"/>`);
  out.push(`<text x="${bx}" y="${H - 20}" text-anchor="middle" font-size="11">baseline ${row.baselineRatio.toFixed(2)}</text>`);
  out.push(
    `<text x="${left}" y="${H - 6}" font-size="11">${lo.toFixed(2)}</text><text x="${W - right}" y="${H - 6}" text-anchor="end" font-size="11">${hi.toFixed(2)}</text>`,
  );
  factors.forEach((f, fi) => {
    out.push(
      `<rect x="${W - 200 + fi * 80}" y="28" width="10" height="10" fill="${colors[fi % colors.length]}"/><text x="${W - 186 + fi * 80}" y="37" font-size="11">×${f}</text>`,
    );
  });
  out.push('</svg>');
  return out.join('\n');
}

export function formatSensitivityHtml(r: SensitivityResult): string {
  return htmlPage(
    `vmstack sensitivity — profile ${r.profile}`,
    r.rows.map((row) => ({
      heading: `${row.blockSize}: ratio ${row.baselineRatio.toFixed(2)} (reference ${row.referenceRatio})`,
      body: `${tornadoSvg(`${row.blockSize}: pool / strict with one value × ${r.factors.join(' or ×')}`, row, r.factors)}\n${htmlTable(
        ['key', 'value', ...r.factors.flatMap((f) => [`×${f} value`, `×${f} ratio`, `×${f} Δ %`])],
        row.keys.map((k) => [
          k.key,
          String(k.baseline),
          ...k.points.flatMap((p) => (p.changed ? [String(p.value), p.ratio.toFixed(3), signed(p.deltaPct, 2)] : ['unchanged', '', ''])),
        ]),
        [0],
      )}`,
    })),
  );
}
