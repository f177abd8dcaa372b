/**
 * A self-contained HTML report with inline SVG charts: no scripts, no fonts,
 * nothing fetched — it reads offline and prints. Charts: grouped bars
 * (throughput per block size and strategy, with the reference ratios), and
 * line charts (throughput, latency and lock wait against a varied dimension).
 */

export interface BarGroup {
  label: string;
  bars: { series: string; value: number }[];
  /** text under the group (e.g. "2.60× (ref 2.8×)") */
  note?: string;
}

export interface LineSeries {
  name: string;
  points: { x: number; y: number }[];
}

const COLORS = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#b07aa1'];

function esc(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}

/** Round up to a 1/2/5 × 10^n step so axis ticks read well. */
function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmt(v: number): string {
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
}

/** Both charts' frame: svg element, title, five y gridlines with values, the y-axis label. */
function chartFrame(
  out: string[],
  title: string,
  yLabel: string,
  g: { W: number; H: number; left: number; top: number; plotH: number; yMax: number; y: (v: number) => number },
): void {
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${g.W}" height="${g.H}" viewBox="0 0 ${g.W} ${g.H}" role="img" aria-label="${esc(title)}">`);
  out.push(`<text x="${g.W / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`);
  for (let i = 0; i <= 5; i++) {
    const v = (g.yMax * i) / 5;
    out.push(`<line x1="${g.left}" x2="${g.W - 20}" y1="${g.y(v)}" y2="${g.y(v)}" stroke="#ddd"/>`);
    out.push(`<text x="${g.left - 6}" y="${g.y(v) + 4}" text-anchor="end" font-size="11">${fmt(v)}</text>`);
  }
  out.push(
    `<text x="16" y="${g.top + g.plotH / 2}" transform="rotate(-90 16 ${g.top + g.plotH / 2})" text-anchor="middle" font-size="12">${esc(yLabel)}</text>`,
  );
}

/** A legend entry: series `si`'s colour swatch and name along the bottom. */
function legendEntry(si: number, name: string, left: number, H: number): string {
  return `<rect x="${left + si * 140}" y="${H - 18}" width="12" height="12" fill="${COLORS[si % COLORS.length]}"/><text x="${left + si * 140 + 16}" y="${H - 8}" font-size="12">${esc(name)}</text>`;
}

export function barChartSvg(title: string, yLabel: string, groups: readonly BarGroup[]): string {
  const series = [...new Set(groups.flatMap((g) => g.bars.map((b) => b.series)))];
  const W = 640;
  const H = 340;
  const left = 70;
  const bottom = 70;
  const top = 40;
  const plotW = W - left - 20;
  const plotH = H - top - bottom;
  const max = niceMax(Math.max(...groups.flatMap((g) => g.bars.map((b) => b.value))));
  const groupW = plotW / Math.max(1, groups.length);
  const barW = (groupW * 0.7) / Math.max(1, series.length);
  const y = (v: number) => top + plotH - (v / max) * plotH;
  const out: string[] = [];
  chartFrame(out, title, yLabel, { W, H, left, top, plotH, yMax: max, y });
  groups.forEach((g, gi) => {
    const x0 = left + gi * groupW + groupW * 0.15;
    g.bars.forEach((b) => {
      const si = series.indexOf(b.series);
      const x = x0 + si * barW;
      out.push(
        `<rect x="${x.toFixed(1)}" y="${y(b.value).toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${(top + plotH - y(b.value)).toFixed(1)}" fill="${COLORS[si % COLORS.length]}"><title>${esc(`${g.label} ${b.series}: ${fmt(b.value)}`)}</title></rect>`,
      );
      out.push(`<text x="${(x + barW / 2 - 1).toFixed(1)}" y="${(y(b.value) - 3).toFixed(1)}" text-anchor="middle" font-size="10">${fmt(b.value)}</text>`);
    });
    out.push(`<text x="${left + gi * groupW + groupW / 2}" y="${top + plotH + 16}" text-anchor="middle" font-size="12">${esc(g.label)}</text>`);
    if (g.note)
      out.push(`<text x="${left + gi * groupW + groupW / 2}" y="${top + plotH + 32}" text-anchor="middle" font-size="11" fill="#555">${esc(g.note)}</text>`);
  });
  series.forEach((s, si) => out.push(legendEntry(si, s, left, H)));
  out.push('</svg>');
  return out.join('\n');
}

/** How a line chart lays out its x axis. */
export interface LineChartOptions {
  /** `value` (default): x positions proportional to the values; `even`: the distinct values evenly spaced, in order (1, 2, 4, 8 or 4k…128k read better so) */
  xSpacing?: 'value' | 'even';
  /** the tick label of an x value (default: the number) */
  xTickLabel?: (x: number) => string;
  /** the chart's width in px (default 640); the plot shrinks, the text keeps its size */
  widthPx?: number;
}

export function lineChartSvg(title: string, xLabel: string, yLabel: string, series: readonly LineSeries[], options: LineChartOptions = {}): string {
  const W = options.widthPx ?? 640;
  const H = 340;
  const left = 70;
  const bottom = 60;
  const top = 40;
  const plotW = W - left - 20;
  const plotH = H - top - bottom;
  const xs = series.flatMap((s) => s.points.map((p) => p.x));
  const xMin = Math.min(...xs);
  const xMax = Math.max(...xs);
  const yMax = niceMax(Math.max(...series.flatMap((s) => s.points.map((p) => p.y))));
  const distinct = [...new Set(xs)].sort((a, b) => a - b);
  const x =
    options.xSpacing === 'even'
      ? (v: number) => left + (distinct.length < 2 ? plotW / 2 : (distinct.indexOf(v) / (distinct.length - 1)) * plotW)
      : (v: number) => left + (xMax === xMin ? plotW / 2 : ((v - xMin) / (xMax - xMin)) * plotW);
  const tick = options.xTickLabel ?? fmt;
  const y = (v: number) => top + plotH - (v / yMax) * plotH;
  const out: string[] = [];
  chartFrame(out, title, yLabel, { W, H, left, top, plotH, yMax, y });
  for (const v of distinct) out.push(`<text x="${x(v)}" y="${top + plotH + 16}" text-anchor="middle" font-size="12">${esc(tick(v))}</text>`);
  out.push(`<text x="${left + plotW / 2}" y="${top + plotH + 34}" text-anchor="middle" font-size="12">${esc(xLabel)}</text>`);
  series.forEach((s, si) => {
    const c = COLORS[si % COLORS.length];
    const pts = [...s.points].sort((a, b) => a.x - b.x);
    out.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts.map((p) => `${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`).join(' ')}"/>`);
    for (const p of pts)
      out.push(
        `<circle cx="${x(p.x).toFixed(1)}" cy="${y(p.y).toFixed(1)}" r="3.5" fill="${c}"><title>${esc(`${s.name} @ ${tick(p.x)}: ${fmt(p.y)}`)}</title></circle>`,
      );
    out.push(legendEntry(si, s.name, left, H));
  });
  out.push('</svg>');
  return out.join('\n');
}

/** Charts side by side, two to a row (make them about 440 px wide), each scaled to fit its column. */
export function chartGrid(charts: readonly string[]): string {
  return `<div class="charts">\n${charts.join('\n')}\n</div>`;
}

/** A table; numbers align right, and so does every column but the first unless `leftColumns` names it (column indices). */
export function htmlTable(head: readonly string[], rows: readonly (readonly string[])[], leftColumns: readonly number[] = []): string {
  const cell = (tag: 'th' | 'td', text: string, i: number) => `<${tag}${leftColumns.includes(i) ? ' class="l"' : ''}>${esc(text)}</${tag}>`;
  return `<table><thead><tr>${head.map((h, i) => cell('th', h, i)).join('')}</tr></thead><tbody>${rows.map((r) => `<tr>${r.map((c, i) => cell('td', c, i)).join('')}</tr>`).join('')}</tbody></table>`;
}

export function htmlPage(title: string, sections: readonly { heading: string; body: string }[]): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child,td.l,th.l{text-align:left}p.meta{color:#555}.charts{display:grid;grid-template-columns:1fr 1fr;gap:4px 12px}.charts svg{width:100%;height:auto}details{margin:0.3em 0}.small{font-size:0.72em;overflow-x:auto}.small td{white-space:nowrap}.small td,.small th{padding:2px 4px}summary{cursor:pointer}</style>
</head><body><h1>${esc(title)}</h1>
${sections.map((s) => `<h2>${esc(s.heading)}</h2>\n${s.body}`).join('\n')}
</body></html>
`;
}

export { esc as escapeHtml };
