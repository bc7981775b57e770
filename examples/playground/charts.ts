/**
 * @file The playground's two charts as SVG markup, drawn by hand (no chart library): the loss per
 * step with a moving average, and a weight histogram against the grid's levels, each with labelled
 * axes. Strings in, strings out, so the page sets them as its SVGs' content.
 */
import type { WeightHistogram } from '@qgrad/quant';

/** Width and height of both SVGs (the page's markup says the same). */
export const SIZE = { width: 560, height: 280 } as const;
const M = { left: 56, right: 14, top: 14, bottom: 44 };

/** About `count` round tick values covering [lo, hi] (steps of 1, 2 or 5 × 10^k). */
export function ticks(lo: number, hi: number, count = 6): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

const fmt = (v: number) => (Math.abs(v) >= 1000 || v === Math.round(v) ? String(Math.round(v)) : String(Number(v.toPrecision(3))));

/** A frame with x and y ticks, their numbers and the two axis titles; `x`, `y` map data to pixels. */
function axes(x: (v: number) => number, y: (v: number) => number, xTicks: number[], yTicks: number[], xTitle: string, yTitle: string): string {
  const { width: W, height: H } = SIZE;
  const bottom = H - M.bottom;
  const parts = [`<rect x="${M.left}" y="${M.top}" width="${W - M.left - M.right}" height="${bottom - M.top}" fill="none" stroke="#999"/>`];
  for (const t of xTicks) parts.push(`<line x1="${x(t)}" x2="${x(t)}" y1="${bottom}" y2="${bottom + 4}" stroke="#999"/><text x="${x(t)}" y="${bottom + 16}" text-anchor="middle">${fmt(t)}</text>`);
  for (const t of yTicks) parts.push(`<line x1="${M.left - 4}" x2="${M.left}" y1="${y(t)}" y2="${y(t)}" stroke="#999"/><text x="${M.left - 7}" y="${y(t) + 4}" text-anchor="end">${fmt(t)}</text>`);
  parts.push(`<text x="${(M.left + W - M.right) / 2}" y="${H - 6}" text-anchor="middle">${xTitle}</text>`);
  parts.push(`<text transform="translate(14 ${(M.top + bottom) / 2}) rotate(-90)" text-anchor="middle">${yTitle}</text>`);
  return parts.join('');
}

/** The mean of each value's last `window` values (fewer at the start). */
export function movingAverage(values: readonly number[], window: number): number[] {
  let sum = 0;
  return values.map((v, i) => {
    sum += v - (i >= window ? values[i - window]! : 0);
    return sum / Math.min(i + 1, window);
  });
}

/**
 * The loss curve of the steps so far on an x axis of `steps` steps, y from 0 to the largest loss.
 * @example svg.innerHTML = lossChart([2.3, 1.9, 1.4], 200);
 */
export function lossChart(losses: readonly number[], steps: number): string {
  const { width: W, height: H } = SIZE;
  const finite = losses.filter(Number.isFinite);
  const top = Math.max(0.1, ...finite) * 1.05;
  const x = (s: number) => +(M.left + (s / Math.max(steps - 1, 1)) * (W - M.left - M.right)).toFixed(2);
  const y = (v: number) => +(H - M.bottom - (Math.min(v, top) / top) * (H - M.bottom - M.top)).toFixed(2);
  const line = (vs: readonly number[], colour: string, width: number) =>
    vs.length ? `<polyline fill="none" stroke="${colour}" stroke-width="${width}" points="${vs.map((v, i) => `${x(i)},${y(v)}`).join(' ')}"/>` : '';
  return axes(x, y, ticks(0, Math.max(steps - 1, 1)), ticks(0, top, 5), 'training step', 'cross-entropy loss') + line(losses, '#bbb', 1) + line(movingAverage(losses, 20), '#1f5fa8', 2);
}

/**
 * A histogram in grid units (bars) with the grid's levels (red lines), numbered levels on the x axis.
 * @example svg.innerHTML = histogramChart(training.histogram('0'));
 */
export function histogramChart(h: WeightHistogram): string {
  const { width: W, height: H } = SIZE;
  const [lo, hi] = [h.edges[0]!, h.edges[h.edges.length - 1]!];
  const top = Math.max(1, ...h.counts) * 1.05;
  const x = (v: number) => +(M.left + ((v - lo) / (hi - lo)) * (W - M.left - M.right)).toFixed(2);
  const y = (c: number) => +(H - M.bottom - (c / top) * (H - M.bottom - M.top)).toFixed(2);
  const bars = h.counts.map((c, i) => {
    const [a, b] = [x(h.edges[i]!), x(h.edges[i + 1]!)];
    return `<rect x="${a}" y="${y(c)}" width="${Math.max(b - a - 0.5, 0.5).toFixed(2)}" height="${(H - M.bottom - y(c)).toFixed(2)}" fill="#4c78a8"/>`;
  });
  const levels = h.levels.map((l) => `<line x1="${x(l)}" x2="${x(l)}" y1="${M.top}" y2="${H - M.bottom}" stroke="#e45756" stroke-opacity="0.7" stroke-dasharray="3 3"/>`);
  // a level is numbered when it is clear of the last numbered one (NF4's crowd near zero)
  const labelled: number[] = [];
  for (const l of h.levels) if (!labelled.length || x(l) - x(labelled.at(-1)!) >= 40) labelled.push(l);
  return axes(x, y, labelled, ticks(0, top, 5), 'weight in grid units (w / s + z); red: the grid’s levels', 'weights per bin') + bars.join('') + levels.join('');
}
