/**
 * @file Result tables for the experiment runners (examples/experiments/): mean ± sample std over
 * seeds, a Markdown table, and results.{md,json,svg} written to runs/experiments/<name>/, so
 * every runner reports the same way. The SVG is a dot plot (mean ± std error bars) on an axis
 * that does not start at 0, since the configurations usually sit within a few points of each other.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderSvg, type VegaLiteSpec } from '@qgrad/nn';

export const mean = (v: number[]): number => v.reduce((a, b) => a + b, 0) / v.length;
/** Sample standard deviation (n − 1); 0 for a single value. */
export const std = (v: number[]): number => (v.length > 1 ? Math.sqrt(v.reduce((a, b) => a + (b - mean(v)) ** 2, 0) / (v.length - 1)) : 0);

/** One configuration's runs: the metric per seed plus whatever else the runner reports. */
export interface ConfigResult {
  /** Short row label, unique within the table. */
  config: string;
  /** Group shown as its own column (e.g. the model) and used to colour the plot. */
  group?: string;
  seeds: number[];
  /** The headline metric, one value per seed (same order as seeds). */
  values: number[];
  /** Extra columns (already formatted or numbers). */
  extra?: Record<string, string | number>;
}

/** `m ± s` with `digits` decimals (no ± for one seed). */
export function pm(values: number[], digits = 2): string {
  return values.length > 1 ? `${mean(values).toFixed(digits)} ± ${std(values).toFixed(digits)}` : `${mean(values).toFixed(digits)}`;
}

/** Markdown table: config, group, metric mean ± std, seeds, per-seed values, extra columns. */
export function markdownTable(rows: ConfigResult[], metric: string, digits = 2): string {
  const extras = [...new Set(rows.flatMap((r) => Object.keys(r.extra ?? {})))];
  const hasGroup = rows.some((r) => r.group);
  const head = ['config', ...(hasGroup ? ['model'] : []), `${metric} (mean ± std)`, 'n', 'per seed', ...extras];
  const fmt = (v: string | number | undefined) => (v === undefined ? '' : typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(digits)) : v);
  const body = rows.map((r) => [r.config, ...(hasGroup ? [r.group ?? ''] : []), pm(r.values, digits), String(r.values.length), r.values.map((v) => v.toFixed(digits)).join(', '), ...extras.map((e) => fmt(r.extra?.[e]))]);
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...body.map((b) => `| ${b.join(' | ')} |`)].join('\n');
}

/** One paired comparison: first − second per seed (same seed ⇒ same initialisation and batches). */
export interface Paired {
  label: string;
  seeds: number[];
  diffs: number[];
  /** Extra columns (e.g. the two configurations' memories). */
  extra?: Record<string, string>;
}

/**
 * first(seed) − second(seed) over the seeds where both exist; null when none does.
 * @example pairedDiffs('w4 − fp', [0, 1], (s) => w4[s], (s) => fp[s]);
 */
export function pairedDiffs(label: string, seeds: number[], first: (seed: number) => number | undefined, second: (seed: number) => number | undefined, extra?: Record<string, string>): Paired | null {
  const both = seeds.map((s) => [s, first(s), second(s)] as const).filter((t): t is readonly [number, number, number] => t[1] !== undefined && t[2] !== undefined);
  if (!both.length) return null;
  return { label, seeds: both.map((t) => t[0]), diffs: both.map((t) => t[1] - t[2]), ...(extra && Object.keys(extra).length && { extra }) };
}

/** Markdown table of paired differences: per seed, mean ± std, on how many seeds the first is better (lower; `higher`: above, for accuracies). */
export function pairedTable(rows: Paired[], opts: { digits?: number; higher?: boolean } = {}): string {
  const digits = opts.digits ?? 4;
  const extras = [...new Set(rows.flatMap((r) => Object.keys(r.extra ?? {})))];
  const sign = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(digits)}`;
  const head = [`comparison (${opts.higher ? 'positive' : 'negative'} = first is better)`, 'per seed', 'mean ± std', 'first better', ...extras];
  const body = rows.map((r) => [r.label, r.diffs.map(sign).join(', '), `${sign(mean(r.diffs))} ± ${std(r.diffs).toFixed(digits)}`, `${r.diffs.filter((x) => (opts.higher ? x > 0 : x < 0)).length}/${r.diffs.length}`, ...extras.map((e) => r.extra?.[e] ?? '')]);
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...body.map((b) => `| ${b.join(' | ')} |`)].join('\n');
}

/** One row of a dot plot: its label, an optional group (colour) and the values over seeds. */
export interface DotRow {
  label: string;
  group?: string;
  values: number[];
}

/**
 * A dot plot: one row per label, a dot at the mean and an error bar of ± one sample std, on an
 * axis fitted to the data (not from 0, so differences of a few tenths stay visible); labels are
 * never truncated; rows keep their order, coloured by group.
 * @example dotPlotSpec([{ label: 'fp32', values: [97.1, 97.4] }, { label: 'w4a4', values: [96.8, 97.0] }], 'test acc %', 'MNIST');
 */
export function dotPlotSpec(rows: DotRow[], metric: string, title: string): VegaLiteSpec {
  const grouped = rows.some((r) => r.group);
  const values = rows.map((r) => {
    const m = mean(r.values);
    const s = std(r.values);
    return { label: r.label, group: r.group ?? '', m, lo: m - s, hi: m + s, n: r.values.length };
  });
  const color = grouped ? { color: { field: 'group', type: 'nominal', title: null, legend: { labelLimit: 0, orient: 'bottom' } } } : {};
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: title, limit: 0 },
    data: { values },
    width: 380,
    height: { step: 20 },
    encoding: { y: { field: 'label', type: 'nominal', sort: null, title: null, axis: { labelLimit: 0, grid: true, gridDash: [2, 3] } } },
    layer: [
      { mark: { type: 'rule', strokeWidth: 2 }, encoding: { x: { field: 'lo', type: 'quantitative', title: `${metric} (mean ± std over seeds)`, scale: { zero: false } }, x2: { field: 'hi' }, ...color } },
      { mark: { type: 'point', filled: true, size: 70, opacity: 1 }, encoding: { x: { field: 'm', type: 'quantitative' }, ...color } },
    ],
  };
}

/** `dotPlotSpec` rendered to SVG. */
export async function dotPlotSvg(rows: DotRow[], metric: string, title: string): Promise<string> {
  return renderSvg(dotPlotSpec(rows, metric, title));
}

/** The dot plot of an experiment table: rows labelled `group · config` in full. */
export function resultsSvg(rows: ConfigResult[], metric: string, title: string): Promise<string> {
  return dotPlotSvg(rows.map((r) => ({ label: r.group ? `${r.group} · ${r.config}` : r.config, group: r.group, values: r.values })), metric, title);
}

/**
 * Writes <dir>/results.md (a heading, `notes`, the table), results.json (rows with mean/std and
 * `meta`) and results.svg; returns the Markdown.
 */
export async function writeResults(dir: string, o: { title: string; metric: string; rows: ConfigResult[]; notes?: string; meta?: Record<string, unknown>; digits?: number }): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const md = `## ${o.title}\n\n${o.notes ? `${o.notes}\n\n` : ''}${markdownTable(o.rows, o.metric, o.digits)}\n`;
  writeFileSync(join(dir, 'results.md'), md);
  const json = { title: o.title, metric: o.metric, meta: o.meta ?? {}, rows: o.rows.map((r) => ({ ...r, mean: mean(r.values), std: std(r.values) })) };
  writeFileSync(join(dir, 'results.json'), `${JSON.stringify(json, null, 1)}\n`);
  writeFileSync(join(dir, 'results.svg'), await resultsSvg(o.rows, o.metric, o.title));
  return md;
}

/**
 * A weight histogram against its grid (quant's `weightHistogram`) as a vega-lite chart with both
 * axes titled: bars of counts over grid units (w/s + z), a dashed rule at every grid level, and
 * the fraction clipped beyond the outer levels in the subtitle.
 * @example writeFileSync('w.svg', await weightHistogramSvg(weightHistogram(layer.weight, layer.weightQuantizer!), 'layer 0'));
 */
export function weightHistogramSvg(h: { edges: number[]; counts: number[]; levels: number[]; clippedFraction: number }, title: string): Promise<string> {
  const bins = h.counts.map((count, i) => ({ lo: h.edges[i]!, hi: h.edges[i + 1]!, count }));
  const x = { type: 'quantitative' as const, title: 'weight in grid units (w / scale + zero point)', scale: { zero: false, nice: false } };
  return renderSvg({
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: { text: title, subtitle: `${(h.clippedFraction * 100).toFixed(2)} % of weights clipped beyond the outer levels; dashed lines: the grid's ${h.levels.length} levels`, limit: 0, subtitleLimit: 0 } as unknown as string,
    width: 420,
    height: 200,
    layer: [
      { data: { values: bins }, mark: { type: 'rect', color: '#4c78a8' }, encoding: { x: { field: 'lo', ...x }, x2: { field: 'hi' }, y: { field: 'count', type: 'quantitative', title: 'number of weights' } } },
      { data: { values: h.levels.map((level) => ({ level })) }, mark: { type: 'rule', color: '#e45756', strokeDash: [4, 3] }, encoding: { x: { field: 'level', type: 'quantitative' } } },
    ],
  });
}
