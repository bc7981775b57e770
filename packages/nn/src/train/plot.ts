/**
 * @file Training curves as SVG: a vega-lite spec (one panel per metric group, one line per
 * series) compiled to vega and rendered headless (`view.toSVG()`). vega and vega-lite are
 * optional dependencies, imported only when a plot is drawn; without them the `PlotCurves`
 * callback says so once and the run goes on.
 */
import { writeFileAtomic } from '@qgrad/core';
import type { MetricsRecord } from './metrics.js';
import type { Callback, RunContext } from './trainer.js';

/** A vega-lite specification (kept loose here, so this package's types do not need vega-lite's). */
export type VegaLiteSpec = Record<string, unknown>;

interface VegaModules {
  vega: { View: new (runtime: unknown, opts: { renderer: 'none' }) => { toSVG(): Promise<string>; finalize(): void }; parse(spec: unknown): unknown };
  vegaLite: { compile(spec: unknown): { spec: unknown } };
}

async function loadVega(): Promise<VegaModules | null> {
  // non-literal specifiers: bundlers leave them alone, and nothing fails to import when they are absent
  const names = ['vega', 'vega-lite'];
  try {
    const [vega, vegaLite] = await Promise.all(names.map((n) => import(/* @vite-ignore */ n)));
    return { vega, vegaLite } as unknown as VegaModules;
  } catch {
    return null;
  }
}

/**
 * Renders a vega-lite spec to an SVG string; throws naming the packages when vega or vega-lite
 * is not installed.
 * @example const svg = await renderSvg(curvesSpec(records, { loss: ['loss', 'val_loss'] }));
 */
export async function renderSvg(spec: VegaLiteSpec): Promise<string> {
  const m = await loadVega();
  if (!m) throw new Error('renderSvg: plotting needs the optional packages vega and vega-lite (npm install vega vega-lite)');
  const view = new m.vega.View(m.vega.parse(m.vegaLite.compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/**
 * A vega-lite spec plotting every numeric field of the records (except `step`) against the step:
 * fields are grouped into panels by `panels` (panel title → field names); fields in no group get
 * a panel of their own. Non-finite values are left out.
 * @example curvesSpec(records, { loss: ['loss', 'val_loss'], accuracy: ['val_acc'] }, 'mnist-mlp');
 */
export function curvesSpec(records: MetricsRecord[], panels: Record<string, string[]> = {}, title = ''): VegaLiteSpec {
  const grouped = new Map<string, string>();
  for (const [p, fields] of Object.entries(panels)) for (const f of fields) grouped.set(f, p);
  const values: { step: number; panel: string; series: string; value: number }[] = [];
  for (const r of records) {
    for (const [k, v] of Object.entries(r)) {
      if (k === 'step' || typeof v !== 'number' || !Number.isFinite(v)) continue;
      values.push({ step: r.step, panel: grouped.get(k) ?? k, series: k, value: v });
    }
  }
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    data: { values },
    facet: { column: { field: 'panel', type: 'nominal', title: null, header: { labelLimit: 0 } } },
    spec: {
      width: 320,
      height: 200,
      mark: { type: 'line', point: values.length < 200 },
      encoding: {
        x: { field: 'step', type: 'quantitative', title: 'step' },
        y: { field: 'value', type: 'quantitative', title: null, scale: { zero: false } },
        color: { field: 'series', type: 'nominal', title: null, legend: { labelLimit: 0 } },
      },
    },
    resolve: { scale: { y: 'independent' } },
  };
}

/**
 * Writes the curves of `records` to `path` as SVG (atomically).
 * @example await plotCurves('runs/x/curves.svg', readMetrics('runs/x/metrics.jsonl'), { loss: ['loss', 'val_loss'] });
 */
export async function plotCurves(path: string, records: MetricsRecord[], panels: Record<string, string[]> = {}, title = ''): Promise<void> {
  writeFileAtomic(path, await renderSvg(curvesSpec(records, panels, title)));
}

/**
 * Draws the run's curves (every record so far, resumed parts included) to an SVG when the run
 * ends normally or early; without vega/vega-lite it logs that once and skips the plot.
 * @example new Trainer({ ...opts, callbacks: [new JsonlMetrics(m), new PlotCurves('runs/x/curves.svg', { loss: ['loss', 'val_loss'] })] });
 */
export class PlotCurves implements Callback {
  constructor(readonly path: string, readonly panels: Record<string, string[]> = {}, readonly title?: string) {}
  async onEnd(ctx: RunContext, error?: unknown): Promise<void> {
    if (error !== undefined) return;
    if (!(await loadVega())) return ctx.log(`no plot: ${this.path} needs the optional packages vega and vega-lite (npm install vega vega-lite)`);
    await plotCurves(this.path, ctx.records(), this.panels, this.title ?? ctx.name);
  }
}
