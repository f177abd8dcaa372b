/**
 * A self-contained HTML report with inline SVG charts: no scripts, no fonts,
 * nothing fetched — it reads offline and prints. Charts: grouped bars
 * (throughput per block size and strategy, with the reference ratios), and
 * line charts (scaling with jobs, lock wait with jobs).
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
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}">`);
  out.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`);
  for (let i = 0; i <= 5; i++) {
    const v = (max * i) / 5;
    out.push(`<line x1="${left}" x2="${W - 20}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/>`);
    out.push(`<text x="${left - 6}" y="${y(v) + 4}" text-anchor="end" font-size="11">${fmt(v)}</text>`);
  }
  out.push(`<text x="16" y="${top + plotH / 2}" transform="rotate(-90 16 ${top + plotH / 2})" text-anchor="middle" font-size="12">${esc(yLabel)}</text>`);
  groups.forEach((g, gi) => {
    const x0 = left + gi * groupW + groupW * 0.15;
    g.bars.forEach((b) => {
      const si = series.indexOf(b.series);
      const x = x0 + si * barW;
      out.push(`<rect x="${x.toFixed(1)}" y="${y(b.value).toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${(top + plotH - y(b.value)).toFixed(1)}" fill="${COLORS[si % COLORS.length]}"><title>${esc(`${g.label} ${b.series}: ${fmt(b.value)}`)}</title></rect>`);
      out.push(`<text x="${(x + barW / 2 - 1).toFixed(1)}" y="${(y(b.value) - 3).toFixed(1)}" text-anchor="middle" font-size="10">${fmt(b.value)}</text>`);
    });
    out.push(`<text x="${left + gi * groupW + groupW / 2}" y="${top + plotH + 16}" text-anchor="middle" font-size="12">${esc(g.label)}</text>`);
    if (g.note) out.push(`<text x="${left + gi * groupW + groupW / 2}" y="${top + plotH + 32}" text-anchor="middle" font-size="11" fill="#555">${esc(g.note)}</text>`);
  });
  series.forEach((s, si) => {
    out.push(`<rect x="${left + si * 140}" y="${H - 18}" width="12" height="12" fill="${COLORS[si % COLORS.length]}"/><text x="${left + si * 140 + 16}" y="${H - 8}" font-size="12">${esc(s)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}

export function lineChartSvg(title: string, xLabel: string, yLabel: string, series: readonly LineSeries[]): string {
  const W = 640;
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
  const x = (v: number) => left + (xMax === xMin ? plotW / 2 : ((v - xMin) / (xMax - xMin)) * plotW);
  const y = (v: number) => top + plotH - (v / yMax) * plotH;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}">`);
  out.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`);
  for (let i = 0; i <= 5; i++) {
    const v = (yMax * i) / 5;
    out.push(`<line x1="${left}" x2="${W - 20}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/>`);
    out.push(`<text x="${left - 6}" y="${y(v) + 4}" text-anchor="end" font-size="11">${fmt(v)}</text>`);
  }
  for (const v of [...new Set(xs)].sort((a, b) => a - b)) out.push(`<text x="${x(v)}" y="${top + plotH + 16}" text-anchor="middle" font-size="12">${fmt(v)}</text>`);
  out.push(`<text x="${left + plotW / 2}" y="${top + plotH + 34}" text-anchor="middle" font-size="12">${esc(xLabel)}</text>`);
  out.push(`<text x="16" y="${top + plotH / 2}" transform="rotate(-90 16 ${top + plotH / 2})" text-anchor="middle" font-size="12">${esc(yLabel)}</text>`);
  series.forEach((s, si) => {
    const c = COLORS[si % COLORS.length];
    const pts = [...s.points].sort((a, b) => a.x - b.x);
    out.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts.map((p) => `${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`).join(' ')}"/>`);
    for (const p of pts) out.push(`<circle cx="${x(p.x).toFixed(1)}" cy="${y(p.y).toFixed(1)}" r="3.5" fill="${c}"><title>${esc(`${s.name} @ ${fmt(p.x)}: ${fmt(p.y)}`)}</title></circle>`);
    out.push(`<rect x="${left + si * 140}" y="${H - 18}" width="12" height="12" fill="${c}"/><text x="${left + si * 140 + 16}" y="${H - 8}" font-size="12">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}

export function htmlTable(head: readonly string[], rows: readonly (readonly string[])[]): string {
  return `<table><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`).join('')}</tbody></table>`;
}

export function htmlPage(title: string, sections: readonly { heading: string; body: string }[]): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}p.meta{color:#555}</style>
</head><body><h1>${esc(title)}</h1>
${sections.map((s) => `<h2>${esc(s.heading)}</h2>\n${s.body}`).join('\n')}
</body></html>
`;
}

export { esc as escapeHtml };
