/**
 * @file Paired differences between configurations of a finished experiment grid (same seed ⇒
 * same initialisation and batches): per seed, mean ± std, and on how many seeds the first is
 * better (lower, or higher with --higher). Prints a markdown table.
 * Run: npx tsx examples/experiments/paired.ts --runs runs/experiments/llama/runs.jsonl --pairs w4a4-quest:w4a4-ste,w4a4-lsq:fp
 */
import { CliError, cli } from '../lib/args.js';
import { readMetrics } from '@qgrad/nn';
import { pairedDiffs, pairedTable, type Paired } from '../lib/experiments.js';

const args = cli('experiments/paired', 'Paired per-seed differences of a metric between configurations of a runs.jsonl grid.', {
  runs: { type: 'string', default: 'runs/experiments/llama/runs.jsonl', help: 'the grid\'s runs.jsonl' },
  pairs: { type: 'string', default: '', help: 'comma-separated first:second config names' },
  metric: { type: 'string', default: 'valBpb', help: 'field of each run to compare (lower is better)' },
  steps: { type: 'int', default: 0, min: 0, help: 'only runs with this many steps (0 = all)' },
  model: { type: 'string', default: '', help: "only runs of this model (the MNIST grids hold 'mlp' and 'cnn'; default all)" },
  higher: { type: 'boolean', help: 'the metric is higher-is-better (accuracy): "first better" counts the seeds where the first is above' },
});
if (!args.pairs) throw new CliError('give --pairs first:second,…');
const runs = readMetrics(args.runs).filter((r) => (!args.steps || r.steps === args.steps) && (!args.model || r.model === args.model));
const value = (config: string, seed: number): number | undefined => {
  const r = runs.find((x) => x.config === config && x.seed === seed);
  return r ? Number(r[args.metric]) : undefined;
};
const rows: Paired[] = [];
for (const pair of args.pairs.split(',')) {
  const [a, b] = pair.split(':').map((s) => s.trim()) as [string, string];
  const seeds = [...new Set(runs.filter((r) => r.config === a).map((r) => Number(r.seed)))].sort((x, y) => x - y);
  const row = pairedDiffs(`${a} − ${b}`, seeds, (s) => value(a, s), (s) => value(b, s));
  if (row) rows.push(row);
}
console.log(pairedTable(rows, { higher: args.higher }));
