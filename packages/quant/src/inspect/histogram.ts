/**
 * @file A weight's histogram against its quantization grid: values in grid units (w/s + z, so every
 * channel or group lines up on the integer levels), the levels, and two renderings — a small
 * dependency-free SVG and a vega-lite spec for those who render with vega.
 */
import { noGrad, type Tensor } from '@qgrad/core';
import type { WeightQuantizer } from '../qat/quantizers.js';

/** A layer's weight histogram in grid units, with the grid's levels to draw over it. */
export interface WeightHistogram {
  /** Bin edges (bins + 1), in grid units. */
  edges: number[];
  counts: number[];
  /** The grid's levels in the same units (int: qmin … qmax; NF4: its 16 values …). */
  levels: number[];
  /** Fraction of elements beyond the outer levels by more than half the outer gap (clipped). */
  clippedFraction: number;
}

/**
 * Histogram of `w` in units of its quantizer's scale: u = w/s + z (or (w − β)/s), any grid.
 * @example const h = weightHistogram(layer.weight, layer.weightQuantizer!, { bins: 64 });
 */
export function weightHistogram(w: Tensor, q: WeightQuantizer, opts: { bins?: number } = {}): WeightHistogram {
  const g = q.gridParams(w);
  const u = noGrad(() => {
    const v = q.group(w.detach()).view;
    return g.plan.offset === 'beta' ? v.sub(g.zeroPoint).div(g.scale) : v.div(g.scale).add(g.zeroPoint);
  }).dataSync();
  const levels = Array.from(q.grid.levels(w.dtype === 'float64' ? 'float64' : 'float32'));
  const [first, last] = [levels[0]!, levels[levels.length - 1]!];
  const gapLo = levels.length > 1 ? levels[1]! - first : 1;
  const gapHi = levels.length > 1 ? last - levels[levels.length - 2]! : 1;
  const lo = first - 1.5 * gapLo;
  const hi = last + 1.5 * gapHi;
  const bins = opts.bins ?? Math.min(200, Math.max(16, Math.round(((hi - lo) / Math.min(gapLo, gapHi)) * 8)));
  const counts = new Array<number>(bins).fill(0);
  let clipped = 0;
  for (let i = 0; i < u.length; i++) {
    const v = u[i]!;
    if (v < first - gapLo / 2 || v > last + gapHi / 2) clipped++;
    const b = Math.min(Math.max(Math.floor(((v - lo) / (hi - lo)) * bins), 0), bins - 1);
    counts[b]!++;
  }
  const edges = Array.from({ length: bins + 1 }, (_, i) => lo + ((hi - lo) * i) / bins);
  return { edges, counts, levels, clippedFraction: clipped / u.length };
}

/**
 * A bar chart of the histogram with the grid levels as red ticks, as a standalone SVG string.
 * @example writeFileSync('hist.svg', histogramSvg(weightHistogram(layer.weight, layer.weightQuantizer!), { title: 'fc1' }));
 */
export function histogramSvg(h: WeightHistogram, opts: { width?: number; height?: number; title?: string } = {}): string {
  const W = opts.width ?? 480;
  const H = opts.height ?? 200;
  const pad = 24;
  const [lo, hi] = [h.edges[0]!, h.edges[h.edges.length - 1]!];
  const x = (v: number) => pad + ((v - lo) / (hi - lo)) * (W - 2 * pad);
  const max = Math.max(1, ...h.counts);
  const y = (c: number) => H - pad - (c / max) * (H - 2 * pad);
  const bars = h.counts.map((c, i) => `<rect x="${x(h.edges[i]!).toFixed(2)}" y="${y(c).toFixed(2)}" width="${Math.max(x(h.edges[i + 1]!) - x(h.edges[i]!) - 0.5, 0.5).toFixed(2)}" height="${(H - pad - y(c)).toFixed(2)}" fill="#4c78a8"/>`);
  const ticks = h.levels.map((l) => `<line x1="${x(l).toFixed(2)}" x2="${x(l).toFixed(2)}" y1="${H - pad}" y2="${H - pad + 6}" stroke="#e45756" stroke-width="2"/>`);
  const labels = [h.levels[0]!, h.levels[h.levels.length - 1]!].map((l) => `<text x="${x(l).toFixed(2)}" y="${H - 4}" font-size="10" text-anchor="middle">${l}</text>`);
  const title = opts.title ? `<text x="${W / 2}" y="14" font-size="12" text-anchor="middle">${escapeXml(opts.title)}</text>` : '';
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">${title}${bars.join('')}${ticks.join('')}${labels.join('')}</svg>`;
}

/**
 * The histogram as a vega-lite spec (bars plus grid-level rules).
 * @example const spec = histogramVegaLite(weightHistogram(layer.weight, layer.weightQuantizer!)); // hand to vega-embed
 */
export function histogramVegaLite(h: WeightHistogram, title = 'weights in grid units'): Record<string, unknown> {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    layer: [
      { data: { values: h.counts.map((c, i) => ({ lo: h.edges[i], hi: h.edges[i + 1], count: c })) }, mark: 'bar', encoding: { x: { field: 'lo', type: 'quantitative', title: 'w/s + z' }, x2: { field: 'hi' }, y: { field: 'count', type: 'quantitative' } } },
      { data: { values: h.levels.map((l) => ({ level: l })) }, mark: { type: 'rule', color: '#e45756' }, encoding: { x: { field: 'level', type: 'quantitative' } } },
    ],
  };
}

function escapeXml(s: string): string {
  return s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);
}
