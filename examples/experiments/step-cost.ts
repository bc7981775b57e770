/**
 * @file CPU time of one tiny-Llama training step per configuration, measured side by side: the
 * configurations alternate within each repeat (so a change in machine load hits them alike), each
 * repeat a short runQatLlama run at the grid's shape, and the median over repeats is printed with
 * its ratio to the first configuration. docs/experiments/halo.md and cast.md quote it, beside the
 * grids' own per-run CPU times (taken at different moments of a shared machine).
 * Run: QGRAD_THREADS=1 npx tsx examples/experiments/step-cost.ts [--configs fp,halo-int8,halo-fp8] [--steps 20 --repeats 5]
 */
import { QAT_LLAMA_CONFIGS, runQatLlama } from '../lib/qat-llama.js';
import { CliError, cli } from '../lib/args.js';
import { commonOptions, useBackend } from '../lib/train.js';

const args = cli('experiments/step-cost', 'Median CPU ms per tiny-Llama training step of each configuration, alternated, with ratios to the first.', {
  configs: { type: 'string', default: 'fp,halo-int8,halo-fp8', help: 'comma-separated config names; the first is the ratio base' },
  steps: { type: 'int', default: 20, min: 2, help: 'training steps per timed run' },
  repeats: { type: 'int', default: 5, min: 1, help: 'timed runs per configuration; the median is printed' },
  batchSize: { type: 'int', default: 8, min: 1, help: 'sequences per step' },
  seqLen: { type: 'int', default: 64, min: 2, help: 'bytes per sequence' },
  backend: commonOptions.backend,
});
useBackend(args.backend);

const configs = args.configs.split(',').map((s) => s.trim());
const unknown = configs.filter((n) => !QAT_LLAMA_CONFIGS.some((c) => c.name === n));
if (unknown.length) throw new CliError(`unknown --configs ${unknown.join(', ')}; known: ${QAT_LLAMA_CONFIGS.map((c) => c.name).join(', ')}`);
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor((v.length - 1) / 2)]!;
const cpu = new Map<string, number[]>(configs.map((c) => [c, []]));
for (let r = 0; r < args.repeats; r++) {
  for (const config of configs) {
    // CPU time covers the steps alone (runQatLlama sums it per step; model build and evaluation excluded)
    const res = await runQatLlama({ config, seed: r, steps: args.steps, batchSize: args.batchSize, seqLen: args.seqLen, lr: 3e-3, valBlocks: 1, progress: false });
    cpu.get(config)!.push(res.cpuMsPerStep);
  }
}
const base = median(cpu.get(configs[0]!)!);
console.log(`| config | CPU ms/step (median of ${args.repeats}) | × ${configs[0]} | per repeat |\n|---|---|---|---|`);
for (const c of configs) {
  const v = cpu.get(c)!;
  console.log(`| ${c} | ${median(v).toFixed(1)} | ${(median(v) / base).toFixed(2)} | ${v.map((x) => x.toFixed(0)).join(', ')} |`);
}
