/**
 * @file Training curves as SVG: a vega-lite spec compiled to vega and rendered headless in Node
 * (renderer 'none', `view.toSVG()`), one line per series, one panel per metric.
 */
import { writeFileSync } from 'node:fs';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { Record_ } from './metrics.js';

/**
 * Plots every numeric field of the records (except `step`) against the step: fields are grouped
 * into panels by `panels` (panel title → field names); fields in no group get a panel of their own.
 * @example await plotCurves('runs/x/curves.svg', records, { loss: ['train_loss', 'val_loss'] });
 */
export async function plotCurves(path: string, records: Record_[], panels: Record<string, string[]> = {}, title = ''): Promise<void> {
  const grouped = new Map<string, string>();
  for (const [p, fields] of Object.entries(panels)) for (const f of fields) grouped.set(f, p);
  const values: { step: number; panel: string; series: string; value: number }[] = [];
  for (const r of records) {
    for (const [k, v] of Object.entries(r)) {
      if (k === 'step' || typeof v !== 'number' || !Number.isFinite(v)) continue;
      values.push({ step: r.step, panel: grouped.get(k) ?? k, series: k, value: v });
    }
  }
  const spec: TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    data: { values },
    facet: { column: { field: 'panel', type: 'nominal', title: null } },
    spec: {
      width: 320,
      height: 200,
      mark: { type: 'line', point: values.length < 200 },
      encoding: {
        x: { field: 'step', type: 'quantitative', title: 'step' },
        y: { field: 'value', type: 'quantitative', title: null, scale: { zero: false } },
        color: { field: 'series', type: 'nominal', title: null },
      },
    },
    resolve: { scale: { y: 'independent' } },
  };
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  writeFileSync(path, await view.toSVG());
  view.finalize();
}
