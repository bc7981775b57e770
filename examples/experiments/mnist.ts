/**
 * @file MNIST QAT grid: MLP and CNN × {FP32, W8A8, W4A4 and W2A2 LSQ, ternary absmean (BitNet
 * b1.58), ternary median (b1.58 Reloaded), binary} × seeds; writes runs/experiments/mnist/
 * results.{md,json,svg} and prints the table. Same models, data, batches, optimizer and QAT rules
 * as examples/qat-mnist.ts (one config there with the same seeds gives the same numbers), run in
 * one process (nn's `fit` without a run directory) with a single evaluation at the end, which is
 * what makes the grid fit a 2-core box.
 * Run: npx tsx examples/experiments/mnist.ts [--models mlp,cnn] [--seeds 0,1,2] [--only w4a4,fp32]
 * `--suite grids` runs the grid comparison instead (docs/experiments/grids.md): weights only, every
 * grid of @qgrad/quant at ~4 and ~8 bits beside FP32, MLP.
 */
import { appendFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { crossEntropy, Generator, randn, type Tensor } from '@qgrad/core';
import { AdamW, Conv2d, Flatten, LambdaLR, Linear, MaxPool2d, ReLU, Sequential, cosineSchedule, fit } from '@qgrad/nn';
import { bitsPerParameter, convert, kmeansLevels, prepareQAT, type GridName, type QATConfig, type WeightQuantConfig } from '@qgrad/quant';
import { CliError, cli } from '../lib/args.js';
import { writeResults, type ConfigResult } from '../lib/experiments.js';
import { encodeRecord, readMetrics } from '@qgrad/nn';
import { checkBatchSize, evaluateClassifier, mnistBatch, mnistData, type MnistData } from '../lib/mnist.js';
import { NONFINITE_HINT, SEED_MAX, commonOptions, useBackend } from '../lib/train.js';

const args = cli('experiments/mnist', 'MNIST QAT grid (configs × seeds) → mean ± std test accuracy table, JSON and SVG.', {
  models: { type: 'string', default: 'mlp,cnn', help: 'comma-separated: mlp, cnn' },
  seeds: { type: 'ints', default: [0, 1, 2], min: 0, max: SEED_MAX, help: 'comma-separated seeds' },
  only: { type: 'string', default: '', help: 'comma-separated config names to run (default all)' },
  epochs: { type: 'int', default: 1, min: 1, help: 'epochs over the 8,000 training digits (qat-mnist default)' },
  batchSize: { type: 'int', default: 64, min: 1, help: 'images per step, at most the 8,000 training digits' },
  lr: { type: 'number', default: 2e-3, exclusiveMin: 0, help: 'peak LR (AdamW, cosine)' },
  allowNonfinite: commonOptions.allowNonfinite,
  fresh: { type: 'boolean', help: 'ignore runs already in runs.jsonl (default: skip them, so an interrupted grid resumes)' },
  backend: { type: 'string', default: 'wasm', help: "'wasm' or 'js'" },
  suite: { type: 'string', default: 'qat', help: "'qat' (grids × estimators with quantized activations, mnist.md) or 'grids' (weight grids at ~4 and ~8 bits, grids.md)" },
  runDir: { type: 'string', default: '', help: 'output directory (default runs/experiments/mnist, or runs/experiments/grids for --suite grids)' },
});
useBackend(args.backend);

interface Cfg {
  name: string;
  grid: GridName | 'fp';
  bitsW: number;
  bitsA: number;
  scale?: WeightQuantConfig['scale'];
  /** Overrides of the weight config (granularity, levels). */
  weight?: Partial<WeightQuantConfig>;
  note: string;
}
/** The grid. Ternary/binary keep 8-bit activations (BitNet b1.58 is W1.58A8). */
const CONFIGS: Cfg[] = [
  { name: 'fp32', grid: 'fp', bitsW: 32, bitsA: 0, note: 'full precision' },
  { name: 'w8a8-lsq', grid: 'int', bitsW: 8, bitsA: 8, note: 'int8 per-channel LSQ weights, LSQ activations' },
  { name: 'w4a4-lsq', grid: 'int', bitsW: 4, bitsA: 4, note: 'int4 LSQ' },
  { name: 'w2a2-lsq', grid: 'int', bitsW: 2, bitsA: 2, note: 'int2 LSQ' },
  { name: 'ternary-absmean-a8', grid: 'ternary', bitsW: 2, bitsA: 8, scale: 'absmean', note: 'BitNet b1.58: γ = mean|W| per channel, STE; A8 LSQ' },
  { name: 'ternary-median-a8', grid: 'ternary', bitsW: 2, bitsA: 8, scale: 'median', note: 'b1.58 Reloaded: γ = median|W|, STE; A8 LSQ' },
  { name: 'binary-a8', grid: 'binary', bitsW: 1, bitsA: 8, note: 'sign(W)·α, α = mean|W| per channel, STE; A8 LSQ' },
];

/** The grid comparison: weights only (inputs stay float), per output channel unless the grid has its own blocks. */
const GRID_CONFIGS: Cfg[] = [
  { name: 'fp32', grid: 'fp', bitsW: 32, bitsA: 0, note: 'full precision' },
  { name: 'int8', grid: 'int', bitsW: 8, bitsA: 0, note: 'int8, learned LSQ step per channel' },
  { name: 'e4m3', grid: 'e4m3', bitsW: 8, bitsA: 0, note: 'FP8 E4M3, absmax per channel, STE' },
  { name: 'e5m2', grid: 'e5m2', bitsW: 8, bitsA: 0, note: 'FP8 E5M2, absmax per channel, STE' },
  { name: 'mxfp8', grid: 'mxfp8', bitsW: 8, bitsA: 0, weight: { granularity: { block: 32 } }, note: 'E4M3 elements, E8M0 scale per 32, STE' },
  { name: 'int4', grid: 'int', bitsW: 4, bitsA: 0, note: 'int4, learned LSQ step per channel' },
  { name: 'e2m1', grid: 'e2m1', bitsW: 4, bitsA: 0, note: 'FP4 E2M1, absmax per channel, STE' },
  { name: 'mxfp4', grid: 'mxfp4', bitsW: 4, bitsA: 0, weight: { granularity: { block: 32 } }, note: 'E2M1 elements, E8M0 scale per 32, STE' },
  { name: 'nf4', grid: 'nf4', bitsW: 4, bitsA: 0, weight: { granularity: { block: 64 } }, note: 'NF4, absmax per block of 64 (QLoRA\'s), STE' },
  { name: 'codebook16', grid: 'codebook', bitsW: 4, bitsA: 0, weight: { levels: kmeansLevels(randn([4096], { generator: new Generator(12345) }), 16) }, note: '16 levels, k-means of N(0, 1), absmax per channel, STE' },
];

/** qat-mnist's rules: every layer; the first layer's input (normalised pixels) signed, the others (after ReLU) unsigned. */
function qatConfig(c: Cfg, net: Sequential): QATConfig | null {
  if (c.grid === 'fp') return null;
  const weight: WeightQuantConfig = { grid: c.grid, ...(c.grid === 'int' && { bits: c.bitsW }), granularity: 'channel', ...(c.scale && { scale: c.scale }), ...c.weight };
  const input = (signed: boolean) => (c.bitsA ? { bits: c.bitsA, signed } : null);
  // A layer whose weight count is no multiple of the block (the CNN's first conv: 72 weights; its
  // classifier, 7,840, for NF4's 64) cannot take blocks: it gets one absmax scale per output
  // channel on the same element grid (MX: its E4M3 / E2M1 elements, as MX scales only blocks of 32).
  const g = weight.granularity;
  const block = typeof g === 'object' && 'block' in g ? g.block : 0;
  const perRow = block ? [...net.namedModules()].filter(([n, m]) => n !== '' && (m instanceof Linear || m instanceof Conv2d) && m.weight.numel() % block !== 0).map(([n]) => n) : [];
  const element: Partial<Record<GridName, GridName>> = { mxfp8: 'e4m3', mxfp4: 'e2m1' };
  const rowWeight: WeightQuantConfig = { ...weight, grid: element[c.grid] ?? c.grid, granularity: 'channel' };
  const w = (name: string) => (perRow.includes(name) ? rowWeight : weight);
  return { rules: [{ match: '0', weight: w('0'), input: input(true) }, ...perRow.filter((n) => n !== '0').map((n) => ({ match: n, weight: rowWeight, input: input(false) }))], default: { weight, input: input(false) } };
}

function build(model: string, seed: number): Sequential {
  const g = new Generator(seed);
  if (model === 'mlp') return new Sequential(new Linear(784, 256, { generator: g }), new ReLU(), new Linear(256, 10, { generator: g }));
  return new Sequential(
    new Conv2d(1, 8, 3, { padding: 1, generator: g }), new ReLU(), new MaxPool2d(2), // [B, 8, 14, 14]
    new Conv2d(8, 16, 3, { padding: 1, generator: g }), new ReLU(), new MaxPool2d(2), // [B, 16, 7, 7]
    new Flatten(), new Linear(16 * 7 * 7, 10, { generator: g }),
  );
}

interface Run { model: string; config: string; seed: number; acc: number; convertedAcc: number; bitsPerParam: number; storedBitsPerParam?: number; msPerStep: number; steps: number }

/** One training run, exactly qat-mnist's loop (AdamW wd 1e−4 except on scales, cosine with warmup, minLr 5%). */
async function runOne(data: MnistData, model: string, c: Cfg, seed: number): Promise<Run> {
  const net = build(model, seed);
  const cfg = qatConfig(c, net);
  if (cfg) prepareQAT(net, cfg);
  const steps = Math.round((args.epochs * data.trainX.shape[0]!) / args.batchSize);
  // quantizer scales in their own group without weight decay (qat-mnist with --scale-lr-mult 1)
  const scales = new Set([...net.namedParameters()].filter(([n]) => /Quantizer\.(scale|zeroPoint)$/.test(n)).map(([, p]) => p));
  const others = net.parameters().filter((p) => !scales.has(p));
  const optimizer = new AdamW(scales.size ? [{ params: others }, { params: [...scales], weightDecay: 0 }] : others, { lr: args.lr, weightDecay: 1e-4 });
  const scheduler = new LambdaLR(optimizer, cosineSchedule({ warmupSteps: Math.min(50, steps / 10), totalSteps: steps, minLrRatio: 0.05 }));
  // nn's fit without a run directory or evaluation: the progress bar and the NaN stop, no files
  const { msPerStep } = await fit({
    model: net, optimizer, scheduler, steps, seed, name: `${model}/${c.name}/${seed}`, allowNonfinite: args.allowNonfinite, nonFiniteHint: NONFINITE_HINT,
    loss: ({ index }) => {
      const [x, y] = mnistBatch(data, args.batchSize, index, seed); // [B, …], [B]
      return crossEntropy(net.forward(x), y);
    },
  });
  net.eval();
  const acc = evaluateClassifier((x: Tensor) => net.forward(x), data.testX, data.testY).test_acc;
  let convertedAcc = acc;
  let bitsPerParam = 32;
  let storedBitsPerParam = 32;
  if (cfg) {
    const bits = bitsPerParameter(net);
    bitsPerParam = bits.bitsPerParameter;
    storedBitsPerParam = bits.storedBitsPerParameter;
    convert(net); // integer codes; must reproduce the fake-quant accuracy
    convertedAcc = evaluateClassifier((x: Tensor) => net.forward(x), data.testX, data.testY).test_acc;
  }
  return { model, config: c.name, seed, acc: acc * 100, convertedAcc: convertedAcc * 100, bitsPerParam, storedBitsPerParam, msPerStep, steps };
}

if (args.suite !== 'qat' && args.suite !== 'grids') throw new CliError(`--suite must be 'qat' or 'grids', got '${args.suite}'`);
const suite = args.suite === 'grids' ? GRID_CONFIGS : CONFIGS;
const runDir = args.runDir || (args.suite === 'grids' ? 'runs/experiments/grids' : 'runs/experiments/mnist');
const models = args.models.split(',').map((s) => s.trim());
const seeds = args.seeds;
const only = args.only ? args.only.split(',').map((s) => s.trim()) : null;
const unknown = [...models.filter((m) => !['mlp', 'cnn'].includes(m)), ...(only ?? []).filter((n) => !suite.some((c) => c.name === n))];
if (unknown.length) throw new CliError(`unknown --models/--only name(s) ${unknown.join(', ')}; models: mlp, cnn; configs: ${suite.map((c) => c.name).join(', ')}`);
const configs = suite.filter((c) => !only || only.includes(c.name));
mkdirSync(runDir, { recursive: true });
const log = join(runDir, 'runs.jsonl');
const done = new Map<string, Run>();
if (!args.fresh && existsSync(log)) for (const r of readMetrics(log) as unknown as Run[]) done.set(`${r.model}/${r.config}/${r.seed}`, r);

const t0 = performance.now();
for (const model of models) {
  const data = mnistData({ flatten: model === 'mlp' });
  checkBatchSize(data, args.batchSize);
  for (const c of configs) {
    for (const seed of seeds) {
      const key = `${model}/${c.name}/${seed}`;
      if (done.has(key)) continue;
      const r = await runOne(data, model, c, seed);
      done.set(key, r);
      appendFileSync(log, encodeRecord({ step: 0, ...r }));
      console.log(`${key}: acc ${r.acc.toFixed(2)} % (converted ${r.convertedAcc.toFixed(2)} %), ${r.msPerStep.toFixed(0)} ms/step, ${((performance.now() - t0) / 1000).toFixed(0)} s elapsed`);
    }
  }
}

const rows: ConfigResult[] = [];
for (const model of models) {
  for (const c of configs) {
    const runs = seeds.map((s) => done.get(`${model}/${c.name}/${s}`)!).filter(Boolean);
    rows.push({
      config: c.name, group: model, seeds: runs.map((r) => r.seed), values: runs.map((r) => r.acc),
      extra: {
        'converted acc': runs.reduce((a, r) => a + r.convertedAcc, 0) / runs.length,
        'bits/param': runs[0]!.bitsPerParam,
        ...(args.suite === 'grids' && { 'stored bits/param': runs[0]!.storedBitsPerParam ?? runs[0]!.bitsPerParam }),
        'ms/step': Math.round(runs.reduce((a, r) => a + r.msPerStep, 0) / runs.length),
        what: c.note,
      },
    });
  }
}
const steps = Math.round((args.epochs * 8000) / args.batchSize);
const md = await writeResults(runDir, {
  title: args.suite === 'grids' ? `MNIST ${models.map((m) => m.toUpperCase()).join(' and ')}, weight grids: test accuracy (%)` : 'MNIST QAT: test accuracy (%)',
  metric: 'test acc %',
  rows,
  notes: `8,000 train / 2,000 test digits, ${args.epochs} epoch = ${steps} steps × batch ${args.batchSize}, AdamW lr ${args.lr} (cosine), seeds ${seeds.join(',')}. ` +
    (args.suite === 'grids'
      ? 'Every layer\'s weights quantized, inputs float; scales per output channel unless the grid has its own blocks (a layer whose weight count is no multiple of the block: per output channel). "converted acc" = the model after `convert` (codes on the grid).'
      : 'Every layer quantized (first-layer input signed, later inputs unsigned); weights per output channel. "converted acc" = the model after `convert` (integer codes).'),
  meta: { suite: args.suite, epochs: args.epochs, batchSize: args.batchSize, lr: args.lr, steps, seeds },
});
console.log(`\n${md}\nwrote ${runDir}/results.{md,json,svg} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
