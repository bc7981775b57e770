/**
 * @file Result tables for the experiment runners (examples/experiments/): mean ± sample std over
 * seeds, a Markdown table, and results.{md,json,svg} written to runs/experiments/<name>/, so
 * every runner reports the same way. The SVG is a vega-lite bar chart with ±std whiskers.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

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

/** Horizontal bars (mean) with ±std whiskers, one bar per config, coloured by group. */
export async function barChartSvg(rows: ConfigResult[], metric: string, title: string): Promise<string> {
  const values = rows.map((r) => ({ label: r.group ? `${r.group} · ${r.config}` : r.config, group: r.group ?? '', m: mean(r.values), lo: mean(r.values) - std(r.values), hi: mean(r.values) + std(r.values) }));
  const y = { field: 'label', type: 'nominal' as const, sort: null, title: null };
  const spec: TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    data: { values },
    width: 380,
    layer: [
      { mark: 'bar', encoding: { y, x: { field: 'm', type: 'quantitative', title: metric, scale: { zero: false } }, color: { field: 'group', type: 'nominal', title: null } } },
      { mark: { type: 'rule', color: 'black' }, encoding: { y, x: { field: 'lo', type: 'quantitative' }, x2: { field: 'hi' } } },
    ],
  };
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
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
  writeFileSync(join(dir, 'results.svg'), await barChartSvg(o.rows, o.metric, o.title));
  return md;
}
