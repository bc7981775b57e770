/**
 * @file Redraws an experiment's results.svg from its results.json (the rows with per-seed values),
 * without rerunning anything: how docs/experiments/*.svg are regenerated after a plot change.
 * Run: npx tsx examples/experiments/replot.ts --json docs/experiments/llama.json [--svg docs/experiments/llama.svg]
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { CliError, cli } from '../lib/args.js';
import { resultsSvg, type ConfigResult } from '../lib/experiments.js';

const args = cli('experiments/replot', 'Redraws an experiment dot plot (results.svg) from its results.json.', {
  json: { type: 'string', default: '', help: 'the results.json an experiment runner wrote' },
  svg: { type: 'string', default: '', help: 'where to write the plot (default: the .json path with .svg)' },
});
if (!args.json.endsWith('.json')) throw new CliError(`--json must name a .json file, got '${args.json}'`);
const results = JSON.parse(readFileSync(args.json, 'utf8')) as { title: string; metric: string; rows: ConfigResult[] };
const out = args.svg || args.json.replace(/\.json$/, '.svg');
writeFileSync(out, await resultsSvg(results.rows, results.metric, results.title));
console.log(`wrote ${out} (${results.rows.length} rows)`);
