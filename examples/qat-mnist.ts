/**
 * @file Quantization-aware training on MNIST: an MLP (784-h-10) or a small CNN, every layer's
 * weights and inputs fake-quantized by prepareQAT (any grid: int, FP8/FP6/FP4, MX, NF4, ternary,
 * binary, codebook; LSQ or other estimators), trained for a few epochs per seed; prints test accuracy mean ± std over seeds of
 * the QAT model and of its converted integer-code model, and writes runs/qat-mnist/<config>/.
 * Run: npx tsx examples/qat-mnist.ts --bits-w 4 --bits-a 4 --estimator lsq --seeds 0,1,2
 *      npx tsx examples/qat-mnist.ts --grid nf4 --bits-a 0
 */
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { crossEntropy, Generator, noGrad, randn, type Tensor } from '@qgrad/core';
import { AdamW, Conv2d, Flatten, LambdaLR, Linear, MaxPool2d, ReLU, Sequential, cosineSchedule } from '@qgrad/nn';
import {
  bitsPerParameter, convert, GRID_NAMES, kmeansLevels, prepareQAT, quantizationError, weightHistogram, type Granularity, type GridName,
  type QATConfig, type QuantLinear, type ScaleConfig, type WeightQuantConfig,
} from '@qgrad/quant';
import { CliError, cli } from './lib/args.js';
import { dotPlotSvg, weightHistogramSvg } from './lib/experiments.js';
import { checkBatchSize, evaluateClassifier, mnistBatch, mnistData, trainMnistClassifier, type MnistData } from './lib/mnist.js';
import { encodeRecord, readMetrics } from '@qgrad/nn';
import { SEED_MAX, commonOptions, useBackend } from './lib/train.js';

const args = cli('qat-mnist', 'QAT on MNIST (8,000 train / 2,000 test digits): FP32 or fake-quantized weights/activations, mean ± std test accuracy over seeds.', {
  model: { type: 'string', default: 'mlp', help: "'mlp' (784-h-10) or 'cnn' (two 3×3 convs + linear)" },
  grid: { type: 'string', default: 'int', help: `weight grid: ${GRID_NAMES.join(', ')}, or 'fp32' (no quantization: the baseline)` },
  bitsW: { type: 'int', default: 4, min: 1, max: 16, help: "weight bits of the 'int' grid (unsigned below 2), or log2 of the 'codebook' levels (k-means of a Gaussian)" },
  bitsA: { type: 'int', default: 4, min: 0, max: 16, help: 'activation (layer input) bits, 2 to 16; 0 keeps activations in float' },
  estimator: { type: 'string', default: '', help: "weight/activation gradient estimator: lsq, lsq+, ste, clipped-ste, trust, relaxed (default: lsq where the scale is learned (int), else ste)" },
  scale: { type: 'string', default: '', help: 'weight scale: a mode (learned, fixed, dynamic) or a rule (lsq, absmax, absmean, median, mse, minmax, gaussian); default per grid (learned LSQ on int, dynamic absmean on ternary/binary, dynamic absmax otherwise)' },
  granularity: { type: 'string', default: '', help: "weight scales: 'tensor', 'channel', 'group<N>' or 'block<N>' (default: the grid's: NF4 block64, MX group32, else channel)" },
  seeds: { type: 'ints', default: [0, 1, 2], min: 0, max: SEED_MAX, help: 'comma-separated seeds, one run each' },
  epochs: { type: 'int', default: 1, min: 1, help: 'epochs over the 8,000 training digits' },
  batchSize: { type: 'int', default: 64, min: 1, help: 'images per step, at most the 8,000 training digits' },
  hidden: { type: 'int', default: 256, min: 1, help: 'hidden units of the MLP' },
  lr: { type: 'number', default: 2e-3, exclusiveMin: 0, help: 'peak learning rate (AdamW, cosine decay)' },
  scaleLrMult: { type: 'number', default: 1, min: 0, help: "quantizer scales' LR as a multiple of --lr (no weight decay on them; 0 freezes them); Adam moves a scale by ~lr per step whatever its size" },
  allowNonfinite: commonOptions.allowNonfinite,
  backend: { type: 'string', default: 'wasm', help: "kernel backend: 'wasm' or 'js'" },
  runDir: { type: 'string', default: 'runs/qat-mnist', help: 'output directory' },
});
useBackend(args.backend);

const grid = args.grid as GridName | 'fp32';
if (grid !== 'fp32' && !GRID_NAMES.includes(grid)) throw new CliError(`--grid must be one of ${GRID_NAMES.join(', ')} or fp32, got '${args.grid}'`);
if (args.model !== 'mlp' && args.model !== 'cnn') throw new CliError(`--model must be mlp or cnn, got '${args.model}'`);
if (args.bitsA === 1) throw new CliError("--bits-a must be 0 (float) or an integer in [2, 16], got '1'");
const seeds = args.seeds;
const sized = /^(group|block)(\d+)$/.exec(args.granularity);
if (args.granularity && !sized && args.granularity !== 'tensor' && args.granularity !== 'channel') throw new CliError(`--granularity must be 'tensor', 'channel', 'group<N>' or 'block<N>', got '${args.granularity}'`);
if (sized && !(Number(sized[2]) >= 1)) throw new CliError(`--granularity ${sized[1]}<N> needs N ≥ 1, got '${args.granularity}'`);
const granularity: Granularity | undefined = !args.granularity ? undefined : sized ? (sized[1] === 'group' ? { group: Number(sized[2]) } : { block: Number(sized[2]) }) : (args.granularity as 'tensor' | 'channel');

const label = grid === 'fp32' ? 'fp32' : `${grid === 'int' ? `w${args.bitsW}` : grid === 'codebook' ? `codebook${2 ** args.bitsW}` : grid}${args.bitsA ? `a${args.bitsA}` : ''}-${args.estimator || (grid === 'int' ? 'lsq' : 'ste')}${args.scale ? `-${args.scale}` : ''}-${args.model}`;

/** QAT rules: every layer; inputs of layers after a ReLU are unsigned, the (normalised) pixels signed. */
function qatConfig(): QATConfig | null {
  if (grid === 'fp32') return null;
  const weight: WeightQuantConfig = {
    grid,
    ...(grid === 'int' && { bits: args.bitsW, ...(args.bitsW < 2 && { signed: false }) }),
    ...(grid === 'codebook' && { levels: kmeansLevels(randn([4096], { generator: new Generator(12345) }), 2 ** args.bitsW) }),
    ...(granularity && { granularity }),
    ...(args.estimator && { estimator: args.estimator }),
    ...(args.scale && { scale: args.scale as ScaleConfig }),
  };
  const actEstimator = args.estimator && args.estimator !== 'lsq+' && grid === 'int' ? { estimator: args.estimator } : {};
  const input = (signed: boolean) => (args.bitsA ? { bits: args.bitsA, signed, ...actEstimator } : null);
  return { rules: [{ match: '0', weight, input: input(true) }], default: { weight, input: input(false) } };
}

function build(seed: number): Sequential {
  const g = new Generator(seed);
  if (args.model === 'mlp') return new Sequential(new Linear(784, args.hidden, { generator: g }), new ReLU(), new Linear(args.hidden, 10, { generator: g }));
  return new Sequential(
    new Conv2d(1, 8, 3, { padding: 1, generator: g }), new ReLU(), new MaxPool2d(2), // [B, 8, 14, 14]
    new Conv2d(8, 16, 3, { padding: 1, generator: g }), new ReLU(), new MaxPool2d(2), // [B, 16, 7, 7]
    new Flatten(), new Linear(16 * 7 * 7, 10, { generator: g }),
  );
}

const data: MnistData = mnistData({ flatten: args.model === 'mlp' });
checkBatchSize(data, args.batchSize);
const steps = Math.round((args.epochs * data.trainX.shape[0]!) / args.batchSize);
const outDir = join(args.runDir, label);
mkdirSync(outDir, { recursive: true });
const results: { seed: number; acc: number; convertedAcc: number; bitsPerParam: number; msPerStep: number }[] = [];

for (const seed of seeds) {
  const model = build(seed);
  const cfg = qatConfig();
  if (cfg) {
    const summary = prepareQAT(model, cfg);
    if (seed === seeds[0]) console.log(summary.toString());
    // learned activation scales initialise from the first batch they see: make that a training
    // batch, not the test images of the step-0 evaluation
    noGrad(() => model.forward(mnistBatch(data, args.batchSize, 0, seed)[0]));
  }
  const scales = new Set([...model.namedParameters()].filter(([n]) => /Quantizer\.(scale|zeroPoint)$/.test(n)).map(([, p]) => p));
  const others = model.parameters().filter((p) => !scales.has(p));
  const optimizer = new AdamW(scales.size ? [{ params: others }, { params: [...scales], lr: args.lr * args.scaleLrMult, weightDecay: 0 }] : others, { lr: args.lr, weightDecay: 1e-4 });
  const scheduler = new LambdaLR(optimizer, cosineSchedule({ warmupSteps: Math.min(50, steps / 10), totalSteps: steps, minLrRatio: 0.05 }));
  const runArgs = { steps, batchSize: args.batchSize, seed, runDir: join(outDir, `seed${seed}`), evalEvery: Math.max(Math.floor(steps / 4), 1), ckptEvery: steps, stopAt: 0, allowNonfinite: args.allowNonfinite };
  const result = await trainMnistClassifier(`qat-mnist ${label} seed ${seed}`, model, data, { optimizer, scheduler }, runArgs, { ...args });
  model.eval();
  let bitsPerParam = 32;
  let convertedAcc = result.lastEval.test_acc!;
  if (cfg) {
    const first = model.at(0) as unknown as QuantLinear;
    writeFileSync(join(outDir, `seed${seed}`, 'weights-layer0.svg'), await weightHistogramSvg(weightHistogram(first.weight, first.weightQuantizer!), `${label}: layer 0 weights against the grid`));
    const err = quantizationError(model).map((r) => `${r.name} ${r.sqnrDb.toFixed(1)} dB`).join(', ');
    const bits = bitsPerParameter(model);
    if (seed === seeds[0]) console.log(bits.toString());
    bitsPerParam = bits.bitsPerParameter;
    convert(model);
    convertedAcc = evaluateClassifier((x: Tensor) => model.forward(x), data.testX, data.testY).test_acc;
    console.log(`seed ${seed}: weight SQNR ${err}; converted model accuracy ${convertedAcc.toFixed(4)}`);
  }
  results.push({ seed, acc: result.lastEval.test_acc!, convertedAcc, bitsPerParam, msPerStep: result.msPerStep });
}

const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
const std = (v: number[]) => (v.length > 1 ? Math.sqrt(v.reduce((a, b) => a + (b - mean(v)) ** 2, 0) / (v.length - 1)) : 0);
const accs = results.map((r) => r.acc * 100);
const line = {
  config: label, model: args.model, grid, bitsW: grid === 'int' ? args.bitsW : grid === 'fp32' ? 32 : grid, bitsA: args.bitsA || 32,
  estimator: args.estimator || (grid === 'fp32' ? '-' : 'default'), scale: args.scale || '-', epochs: args.epochs, steps,
  seeds, accMean: mean(accs), accStd: std(accs), convertedAccMean: mean(results.map((r) => r.convertedAcc * 100)),
  bitsPerParam: results[0]!.bitsPerParam, msPerStep: mean(results.map((r) => r.msPerStep)), perSeed: results,
};
// step 0: readMetrics wants a numeric step on every record
appendFileSync(join(args.runDir, 'results.jsonl'), encodeRecord({ step: 0, ...line }));
await plotResults(join(args.runDir, 'results.svg'));
console.log(`\n${label}: test accuracy ${line.accMean.toFixed(2)} ± ${line.accStd.toFixed(2)} % over seeds ${seeds.join(',')} (converted ${line.convertedAccMean.toFixed(2)} %), ${line.bitsPerParam.toFixed(2)} bits/param, ${steps} steps × batch ${args.batchSize}, ${line.msPerStep.toFixed(0)} ms/step`);
console.log(`wrote ${outDir}/seed*/{metrics.jsonl, curves.svg, weights-layer0.svg}, ${args.runDir}/results.{jsonl,svg}`);

/** Accuracy ± std of every configuration in results.jsonl as a dot plot with error bars (the last line per config wins). */
async function plotResults(path: string): Promise<void> {
  const byConfig = new Map<string, { config: string; perSeed: { acc: number }[] }>();
  for (const r of readMetrics(join(args.runDir, 'results.jsonl')) as unknown as { config: string; perSeed: { acc: number }[] }[]) byConfig.set(r.config, r);
  const rows = [...byConfig.values()].map((r) => ({ label: r.config, values: r.perSeed.map((s) => s.acc * 100) }));
  writeFileSync(path, await dotPlotSvg(rows, 'test accuracy %', 'MNIST test accuracy'));
}
