/**
 * @file `npm run demo`: trains a small MNIST MLP (784-256-10) once in float32 and once per
 * quantization config (W8A8, W4A4 and W2A2 with LSQ, ternary weights with BitNet's absmean),
 * converts each QAT model to integer codes, and prints a results table; writes
 * runs/demo/results.{json,svg}. A few minutes on 2 CPU cores.
 * Run: npm run demo -- [--epochs 1] [--backend wasm|js] [--help]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { crossEntropy, Generator, type Tensor } from '@qgrad/core';
import { AdamW, cosineSchedule, fit, LambdaLR, Linear, ReLU, Sequential, writeFileAtomic } from '@qgrad/nn';
import { bitsPerParameter, convert, prepareQAT, type QATConfig } from '@qgrad/quant';
import { cli } from './lib/args.js';
import { dotPlotSvg } from './lib/experiments.js';
import { checkBatchSize, evaluateClassifier, mnistBatch, mnistData } from './lib/mnist.js';
import { NONFINITE_HINT, SEED_MAX, commonOptions, useBackend } from './lib/train.js';

const args = cli('demo', 'Train and evaluate a small MNIST MLP in float32 and under several fake-quantization configs, then print a results table.', {
  epochs: { type: 'int', default: 1, min: 1, help: 'epochs over the 8,000 training digits per config' },
  batchSize: { type: 'int', default: 64, min: 1, help: 'images per step, at most the 8,000 training digits' },
  seed: { type: 'int', default: 0, min: 0, max: SEED_MAX, help: 'initialisation and batch-order seed' },
  allowNonfinite: commonOptions.allowNonfinite,
  backend: { type: 'string', default: 'wasm', help: "kernel backend: 'wasm' or 'js'" },
  runDir: { type: 'string', default: 'runs/demo', help: 'where results.json and results.svg go' },
});
useBackend(args.backend);

interface Config {
  name: string;
  qat: QATConfig | null;
}
// the first layer sees normalised pixels (signed); later layers see ReLU outputs (unsigned)
const intConfig = (bits: number): QATConfig => ({
  rules: [{ match: '0', weight: { bits }, input: { bits, signed: true } }],
  default: { weight: { bits }, input: { bits, signed: false } },
});
const CONFIGS: Config[] = [
  { name: 'FP32', qat: null },
  { name: 'W8A8 LSQ', qat: intConfig(8) },
  { name: 'W4A4 LSQ', qat: intConfig(4) },
  { name: 'W2A2 LSQ', qat: intConfig(2) },
  {
    name: 'ternary W (absmean) A8',
    qat: {
      rules: [{ match: '0', weight: { grid: 'ternary', scale: 'absmean' }, input: { bits: 8, signed: true } }],
      default: { weight: { grid: 'ternary', scale: 'absmean' }, input: { bits: 8, signed: false } },
    },
  },
];

const data = mnistData({ flatten: true });
checkBatchSize(data, args.batchSize);
const steps = Math.round((args.epochs * data.trainX.shape[0]!) / args.batchSize);
const rows: { config: string; accuracy: number; convertedAccuracy: number | null; bitsPerParam: number; msPerStep: number }[] = [];

for (const cfg of CONFIGS) {
  const g = new Generator(args.seed);
  const model = new Sequential(new Linear(784, 256, { generator: g }), new ReLU(), new Linear(256, 10, { generator: g }));
  if (cfg.qat) prepareQAT(model, cfg.qat);
  const optimizer = new AdamW(model.parameters(), { lr: 2e-3, weightDecay: 1e-4 });
  const scheduler = new LambdaLR(optimizer, cosineSchedule({ warmupSteps: Math.ceil(steps / 10), totalSteps: steps, minLrRatio: 0.05 }));
  // no run directory: a progress bar per config, no files; the table below is the output
  const run = await fit({
    model, optimizer, scheduler, steps, name: `demo ${cfg.name}`, seed: args.seed, allowNonfinite: args.allowNonfinite, nonFiniteHint: NONFINITE_HINT,
    loss: ({ index }) => {
      const [x, y] = mnistBatch(data, args.batchSize, index, args.seed); // [B, 784], [B]
      return crossEntropy(model.forward(x), y);
    },
  });
  const msPerStep = run.msPerStep;
  model.eval();
  const logits = (x: Tensor) => model.forward(x);
  const accuracy = evaluateClassifier(logits, data.testX, data.testY).test_acc;
  let convertedAccuracy: number | null = null;
  const bits = cfg.qat ? bitsPerParameter(model).bitsPerParameter : 32;
  if (cfg.qat) {
    convert(model); // integer codes + scales; must agree with the fake-quantized eval model
    convertedAccuracy = evaluateClassifier(logits, data.testX, data.testY).test_acc;
  }
  rows.push({ config: cfg.name, accuracy, convertedAccuracy, bitsPerParam: bits, msPerStep });
}

const pct = (v: number | null) => (v === null ? '-' : `${(v * 100).toFixed(2)} %`);
const table = [
  ['config', 'test accuracy', 'converted (int codes)', 'bits/param', 'ms/step'],
  ...rows.map((r) => [r.config, pct(r.accuracy), pct(r.convertedAccuracy), r.bitsPerParam.toFixed(2), r.msPerStep.toFixed(0)]),
];
const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
console.log(`\nMNIST MLP 784-256-10, ${args.epochs} epoch(s) × ${steps} steps of ${args.batchSize}, seed ${args.seed}, ${args.backend} backend; 2,000 test digits\n`);
table.forEach((r, k) => {
  console.log(r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  '));
  if (k === 0) console.log(widths.map((w) => '-'.repeat(w)).join('  '));
});

mkdirSync(args.runDir, { recursive: true });
const json = join(args.runDir, 'results.json');
writeFileAtomic(json, JSON.stringify({ epochs: args.epochs, steps, seed: args.seed, backend: args.backend, rows }, null, 2));
// one seed, so no error bars: dots on an axis that does not start at 0 (the configs sit within a few points)
const points = rows.flatMap((r) => [{ label: r.config, group: 'fake-quantized', values: [r.accuracy * 100] }, ...(r.convertedAccuracy === null ? [] : [{ label: r.config, group: 'converted (int codes)', values: [r.convertedAccuracy * 100] }])]);
writeFileSync(join(args.runDir, 'results.svg'), await dotPlotSvg(points, 'test accuracy %', 'MNIST MLP test accuracy by quantization config'));
console.log(`\nwrote ${json} and ${join(args.runDir, 'results.svg')}`);
