/**
 * @file Quantized diffusion compared (issue 20, docs/experiments/diffusion-quant.md): the MNIST DiT of
 * examples/diffusion-mnist.ts (trained here briefly and cached), then float vs W8A8 RTN calibrated on
 * pure noise vs W8A8 / W4A8 PTQ4DM (NDTC calibration from the float sampler) vs W4A8 EfficientDM
 * (TALSQ + LoRA, data-free distillation) vs FPSAttention (FP8 E4M3 Q/K/V/P, block-sparse tiles) on
 * the float model and on W4A8 EfficientDM, swapped in after distillation or distilled with it.
 * The float DiT predicts x₀ by default (--prediction; ε-prediction drew no class-recognisable digits at
 * any budget tried, see the doc's diagnosis). Metric: noise-prediction (ε̂, converted from the model's
 * output) MSE against the float model on held-out (x_t, t) from the float sampler; class accuracy and
 * Fréchet distance of class-conditional samples under a judge CNN; a PNG grid of samples per configuration.
 * Run: npx tsx examples/experiments/diffusion-quant.ts [--train-steps 3000] [--distill-trajectories 40] [--float-only]
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Generator, loadSafetensors, noGrad, saveSafetensors, tidy } from '@qgrad/core';
import { AdamW, DiT, Diffusion, LambdaLR, cosineSchedule, mnistDiTConfig, trainStep, type BetaSchedule, type DiTConfig, type PredictionType } from '@qgrad/nn';
import {
  collectCalibration, efficientDM, efficientDMDistill, efficientDMParameters, mergeEfficientDM, noiseCalibration, prepareFpsAttention, ptq4dm, talsq, TimestepModule,
  type ActQuantConfig, type CalibrationSet, type FpsAttentionOptions, type PtqMethod, type QATRule,
} from '@qgrad/quant';
import { cli, CliError } from '../lib/args.js';
import { mnistBatch, mnistData } from '../lib/mnist.js';
import { saveImageGrid } from '../lib/png.js';
import { classAccuracy, frechetDistance, judgeFeatures, JUDGE_FEATURES, mnistJudge, realDigits } from '../lib/sample-quality.js';
import { useBackend } from '../lib/train.js';

const args = cli('experiments/diffusion-quant', 'Float vs W8A8 RTN (noise calibration) vs W8A8/W4A8 PTQ4DM vs W4A8 EfficientDM on the MNIST DiT: noise-prediction MSE vs float on held-out (x_t, t), and sample grids.', {
  trainSteps: { type: 'int', default: 3000, min: 1, help: 'float DiT training steps (cached in <float-dir>/float-<shape>-<steps>[-<prediction>]-seed<N>.safetensors)' },
  prediction: { type: 'string', default: 'x0', help: "what the float DiT predicts: 'x0', 'v' or 'epsilon' (the sampler and the ε-MSE metric convert its output to ε̂)" },
  floatSeed: { type: 'int', default: -1, min: -1, help: 'seed of the float model\'s init and training (default: --seed); fix it to share one float model across seeds' },
  floatDir: { type: 'string', default: '', help: 'folder of the cached float model (default: --run-dir)' },
  floatOnly: { type: 'boolean', help: 'train or load the float model, evaluate its row (ε-MSE 0, class accuracy, Fréchet) and stop' },
  dim: { type: 'int', default: 64, min: 1, help: `float DiT width (a multiple of its ${mnistDiTConfig.numHeads} attention heads)` },
  depth: { type: 'int', default: 3, min: 1, help: 'float DiT blocks' },
  patch: { type: 'int', default: 7, min: 1, max: 28, help: 'patch size (divides 28; the FPS rows need an even patch grid: 7 → 4×4, 2 → 14×14)' },
  schedule: { type: 'string', default: 'linear', help: "β schedule: 'linear' or 'cosine'" },
  batchSize: { type: 'int', default: 64, min: 1, help: 'float training images per step' },
  lr: { type: 'number', default: 2e-3, exclusiveMin: 0, help: 'float training peak LR' },
  sampleSteps: { type: 'int', default: 20, min: 1, help: 'DDIM steps (calibration, held-out pairs, distillation, samples; TALSQ buckets)' },
  calib: { type: 'int', default: 256, min: 1, help: 'calibration samples' },
  heldOut: { type: 'int', default: 256, min: 1, help: 'held-out (x_t, t) pairs' },
  rank: { type: 'int', default: 8, min: 1, help: 'EfficientDM LoRA rank' },
  distillTrajectories: { type: 'int', default: 40, min: 1, help: 'EfficientDM teacher trajectories (each sampleSteps optimizer steps)' },
  distillBatch: { type: 'int', default: 16, min: 1, help: 'EfficientDM images per trajectory' },
  loraLr: { type: 'number', default: 1e-3, exclusiveMin: 0, help: 'EfficientDM LoRA LR (the reference scales it by mean Δ_w / 2500 over 16,000 steps; this run is 800 steps)' },
  actLr: { type: 'number', default: 5e-4, exclusiveMin: 0, help: 'TALSQ step-size LR (the reference: 5e-4)' },
  seed: { type: 'int', default: 0, min: 0, help: 'seed of training, calibration, held-out draws and samples' },
  qualitySamples: { type: 'int', default: 500, min: 10, help: 'class-conditional samples per configuration for the judge (class accuracy, Fréchet distance; the first 100 make the PNG grid)' },
  judge: { type: 'string', default: '', help: 'sample-quality judge checkpoint, trained there when absent (default <run-dir>/judge-600.safetensors)' },
  fpsOnly: { type: 'boolean', help: 'only the rows the FPSAttention rows build on or compare with: float, W4A8 PTQ4DM (GPTQ), W4A8 EfficientDM' },
  backend: { type: 'string', default: 'wasm', help: "'wasm' or 'js'" },
  runDir: { type: 'string', default: 'runs/experiments/diffusion-quant', help: 'output directory' },
});
useBackend(args.backend);
if (!['x0', 'v', 'epsilon'].includes(args.prediction)) throw new CliError(`--prediction must be 'x0', 'v' or 'epsilon', got '${args.prediction}'`);
if (args.schedule !== 'linear' && args.schedule !== 'cosine') throw new CliError(`--schedule must be 'linear' or 'cosine', got '${args.schedule}'`);
if (28 % args.patch || (28 / args.patch) % 2) throw new CliError(`--patch must divide 28 into an even grid (the FPS rows cut it into 2×2 tiles), got ${args.patch}`);
if (args.dim % mnistDiTConfig.numHeads) throw new CliError(`--dim must be a multiple of ${mnistDiTConfig.numHeads} (the DiT's attention heads), got ${args.dim}`);
mkdirSync(args.runDir, { recursive: true });

const T = 1000;
const K = args.sampleSteps;
const config: DiTConfig = { ...mnistDiTConfig, dim: args.dim, depth: args.depth, patchSize: args.patch };
const diffusion = new Diffusion({ timesteps: T, schedule: args.schedule as BetaSchedule, prediction: args.prediction as PredictionType });
const floatSeed = args.floatSeed < 0 ? args.seed : args.floatSeed;
const shape = [1, 28, 28];
const seconds = (t0: number) => ((performance.now() - t0) / 1000).toFixed(1);

function floatModel(): TimestepModule<DiT> {
  const net = new DiT(config, { generator: new Generator(floatSeed) });
  const pred = args.prediction === 'epsilon' ? '' : `-${args.prediction}`; // ε-prediction keeps the old cache names
  const dir = args.floatDir || args.runDir;
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `float-d${args.dim}x${args.depth}-p${args.patch}-${args.schedule}-${args.trainSteps}${pred}-seed${floatSeed}.safetensors`);
  if (existsSync(path)) {
    net.loadStateDict(loadSafetensors(path));
    return new TimestepModule(net);
  }
  // as examples/diffusion-mnist.ts: data in [−1, 1], 10 % of labels dropped to "no label"
  const raw = mnistData();
  const data = { ...raw, trainX: raw.trainX.mul(0.3081).add(0.1307).mul(2).sub(1) };
  const opt = new AdamW(net.parameters(), { lr: args.lr, weightDecay: 0 });
  const sched = new LambdaLR(opt, cosineSchedule({ warmupSteps: Math.min(40, args.trainSteps / 10), totalSteps: args.trainSteps, minLrRatio: 0.1 }));
  const t0 = performance.now();
  for (let i = 0; i < args.trainSteps; i++) {
    const loss = trainStep(net, opt, () => {
      const [x, y] = mnistBatch(data, args.batchSize, i, floatSeed);
      const g = new Generator(floatSeed * 1_000_003 + i);
      const labels = Array.from(y.dataSync(), (l) => (g.random() < 0.1 ? 10 : Number(l)));
      const l = diffusion.loss((xt, t) => net.forward(xt, t, labels), x, { generator: g });
      opt.zeroGrad();
      l.backward();
      opt.step();
      return l.item();
    });
    sched.step();
    if ((i + 1) % 250 === 0 || i === 0) console.log(`float step ${i + 1}/${args.trainSteps} loss ${loss.toFixed(4)} (${seconds(t0)} s)`);
  }
  saveSafetensors(path, net.stateDict());
  console.log(`float model: ${args.trainSteps} steps in ${seconds(t0)} s → ${path}`);
  return new TimestepModule(net);
}

const teacher = floatModel();
teacher.eval();
const g = new Generator(args.seed + 1);
const labelsOf = (n: number, gen: Generator) => Array.from({ length: n }, () => Math.floor(gen.random() * 10));
let t0 = performance.now();
const ndtc = collectCalibration(diffusion, teacher, { samples: args.calib, shape, steps: K, labels: labelsOf(args.calib, g), generator: g });
const noise = args.fpsOnly || args.floatOnly ? null : noiseCalibration(diffusion, args.calib, shape, { labels: labelsOf(args.calib, g), generator: g });
const single = args.fpsOnly || args.floatOnly ? null : collectCalibration(diffusion, teacher, { samples: args.calib, shape, steps: K, sampling: { kind: 'single', index: 0 }, labels: labelsOf(args.calib, g), generator: g });
// held out: uniform over the sampler's steps, another generator
const hg = new Generator(args.seed + 1000);
const held = collectCalibration(diffusion, teacher, { samples: args.heldOut, shape, steps: K, sampling: { kind: 'uniform' }, labels: labelsOf(args.heldOut, hg), generator: hg });
console.log(`calibration and held-out sets from the float sampler: ${seconds(t0)} s`);
/** The model's ε̂ on the held-out pairs, converted from its output (x̂₀, v̂ or ε̂ itself). */
const heldEps = (m: TimestepModule) => diffusion.epsilonOf(m.forward(held.x, held.t, held.labels), held.x, held.t);
const heldRef = tidy(() => noGrad(() => heldEps(teacher)));

/** MSE of ε̂ against the float model's on the held-out pairs: all, and split at t < T/2 (late denoising) and ≥ T/2. */
function heldOutMse(m: TimestepModule): { all: number; low: number; high: number } {
  const d = tidy(() => noGrad(() => heldEps(m).sub(heldRef).square().mean([1, 2, 3]).dataSync().slice()));
  const pick = (f: (t: number) => boolean) => {
    const v = held.t.map((t, i) => (f(t) ? d[i]! : NaN)).filter((x) => !Number.isNaN(x));
    return v.reduce((a, b) => a + b, 0) / v.length;
  };
  return { all: pick(() => true), low: pick((t) => t < T / 2), high: pick((t) => t >= T / 2) };
}

/** A fresh copy of the float model (the teacher stays float). */
function copy(): TimestepModule<DiT> {
  const net = new DiT(config, { generator: new Generator(0) });
  net.loadStateDict(teacher.net.stateDict());
  return new TimestepModule(net);
}

const A8: ActQuantConfig = { grid: 'int', bits: 8, scale: { mode: 'fixed', rule: 'mse' } };
/** Weight bits for every Linear/Conv2d, 8 for the first and last layer (as PTQ4DM and EfficientDM); A8 on every input; the label embedding stays float. */
function rules(bits: number): { rules: QATRule[]; default: QATRule; skip: string[] } {
  return { rules: [{ match: ['net.x_embed', 'net.out'], weight: { grid: 'int', bits: 8 }, input: A8 }], default: { weight: { grid: 'int', bits }, input: A8 }, skip: ['net.y_embed'] };
}
function quantized(bits: number, method: PtqMethod, cal: CalibrationSet): TimestepModule<DiT> {
  const m = copy();
  ptq4dm(m, cal, { method, ...rules(bits), batchSize: 64 });
  m.eval();
  return m;
}

// the judge of sample quality (examples/lib/sample-quality.ts) and its features of the 2,000 real test digits
const judge = mnistJudge({ path: args.judge || join(args.runDir, 'judge-600.safetensors'), log: (l) => console.log(l) });
const realFeatures = judgeFeatures(judge, realDigits(2000).images);
console.log(`judge: ${(100 * judge.testAcc).toFixed(2)} % on the real test digits`);

interface Row { name: string; calibration: string; seconds: number; mse: { all: number; low: number; high: number }; quality: { accuracy: number; frechet: number }; note?: string }
const rows: Row[] = [];
// class k mod 10: the grid's 10 columns are the 10 classes
const sampleLabels = Array.from({ length: args.qualitySamples }, (_, k) => k % 10);
function evaluate(name: string, calibration: string, m: TimestepModule, started: number, note?: string): void {
  const secs = Number(seconds(started));
  const mse = heldOutMse(m);
  const file = `samples-${name.replace(/[^a-z0-9]+/gi, '-').replace(/-$/, '').toLowerCase()}.png`;
  const quality = tidy(() => {
    const samples = diffusion.sampleDdim((x, t) => tidy(() => m.forward(x, t, sampleLabels)), [sampleLabels.length, ...shape], K, { generator: new Generator(args.seed + 7) });
    saveImageGrid(join(args.runDir, file), samples.narrow(0, 0, Math.min(100, sampleLabels.length)), { cols: 10, lo: -1, hi: 1, scale: 2 });
    return { accuracy: classAccuracy(judge, samples, sampleLabels), frechet: frechetDistance(judgeFeatures(judge, samples), realFeatures, JUDGE_FEATURES) };
  });
  rows.push({ name, calibration, seconds: secs, mse, quality, ...(note && { note }) });
  console.log(`${name.padEnd(28)} ${calibration.padEnd(22)} mse ${mse.all.toExponential(3)} (t<T/2 ${mse.low.toExponential(3)}, t≥T/2 ${mse.high.toExponential(3)})  class acc ${(100 * quality.accuracy).toFixed(1)} %  Fréchet ${quality.frechet.toFixed(2)}  ${secs}s → ${file}`);
}

t0 = performance.now();
evaluate('float', '-', teacher, t0);
if (args.floatOnly) {
  writeFileSync(join(args.runDir, 'results.json'), JSON.stringify({ args, rows }, null, 1));
  console.log(`--float-only: wrote ${args.runDir}/results.json`);
  process.exit(0);
}
if (noise && single) {
  t0 = performance.now();
  evaluate('W8A8 RTN', 'noise (x~N(0,I), t~U)', quantized(8, 'rtn', noise), t0);
  t0 = performance.now();
  evaluate('W8A8 RTN single-t', 'sampler, t = 0 only', quantized(8, 'rtn', single), t0);
  t0 = performance.now();
  evaluate('W8A8 PTQ4DM (RTN)', 'sampler, NDTC', quantized(8, 'rtn', ndtc), t0);
  t0 = performance.now();
  evaluate('W4A8 RTN', 'noise (x~N(0,I), t~U)', quantized(4, 'rtn', noise), t0);
  t0 = performance.now();
  evaluate('W4A8 PTQ4DM (RTN)', 'sampler, NDTC', quantized(4, 'rtn', ndtc), t0);
}
t0 = performance.now();
const w4 = quantized(4, 'gptq', ndtc);
evaluate('W4A8 PTQ4DM (GPTQ)', 'sampler, NDTC', w4, t0);

// FPSAttention (methods-2.md §9): Q, K, V, P in FP8 E4M3 over the patch grid cut into 2×2 tiles (of 2×2 patches at 7×7 patches);
// sparse: each head attends 2 of the 4 key tiles, its tile row (first half of the heads) or column
const half = teacher.net.grid / 2;
const fpsDense: FpsAttentionOptions = { grid: [teacher.net.grid, teacher.net.grid], tile: [half, half] };
const fpsSparse: FpsAttentionOptions = { ...fpsDense, sparsity: { kind: 'window', reach: Array.from({ length: config.numHeads }, (_, h) => (h < config.numHeads / 2 ? [0, 1] : [1, 0])) } };

/**
 * EfficientDM from the W4A8 PTQ4DM (GPTQ) model: TALSQ buckets = sampler steps, LoRA on every
 * Linear, distilled from the float teacher; with `fps`, the attention is FPSAttention throughout
 * the distillation (trained jointly).
 */
function efficientDMStudent(fps: FpsAttentionOptions | null): { student: TimestepModule<DiT>; losses: number[]; note: string } {
  const student = quantized(4, 'gptq', ndtc);
  if (fps) prepareFpsAttention(student, fps);
  talsq(student, { input: A8, timesteps: T, buckets: K });
  efficientDM(student, { rank: args.rank, generator: new Generator(args.seed + 3) });
  const p = efficientDMParameters(student);
  const optimizer = new AdamW([
    { params: p.lora.flatMap((l) => l.params), lr: args.loraLr },
    { params: p.weightScales, lr: 1e-6 },
    { params: p.activationScales, lr: args.actLr },
  ], { weightDecay: 0 });
  const total = args.distillTrajectories * K;
  const scheduler = new LambdaLR(optimizer, (s: number) => 1 - s / total); // linear decay, no warmup (the reference)
  const dg = new Generator(args.seed + 5);
  const losses = efficientDMDistill(student, teacher, diffusion, {
    optimizer, scheduler, trajectories: args.distillTrajectories, batchSize: args.distillBatch, shape, steps: K,
    labels: () => labelsOf(args.distillBatch, dg), generator: dg,
    onStep: ({ step, loss }) => {
      if (step % 100 === 0) console.log(`distill${fps ? ' (FPS attention)' : ''} step ${step}/${total} loss ${loss.toFixed(4)} (${seconds(t0)} s)`);
    },
  });
  const first = losses.slice(0, K * 2).reduce((a, b) => a + b, 0) / (K * 2);
  const last = losses.slice(-K * 2).reduce((a, b) => a + b, 0) / (K * 2);
  mergeEfficientDM(student);
  student.eval();
  return { student, losses, note: `distillation loss (mean of first / last ${2 * K} steps) ${first.toFixed(4)} → ${last.toFixed(4)}; ${total} steps` };
}

t0 = performance.now();
const edm = efficientDMStudent(null);
evaluate('W4A8 EfficientDM', 'NDTC init + distill', edm.student, t0, edm.note);

for (const [name, fps] of [['float + FP8 attention', fpsDense], ['float + FPS attention', fpsSparse]] as const) {
  t0 = performance.now();
  const m = copy();
  prepareFpsAttention(m, fps);
  m.eval();
  evaluate(name, '-', m, t0);
}
t0 = performance.now();
prepareFpsAttention(edm.student, fpsSparse);
evaluate('W4A8 EfficientDM → FPS attention', 'swapped in after distill', edm.student, t0);
t0 = performance.now();
const joint = efficientDMStudent(fpsSparse);
evaluate('W4A8 EfficientDM with FPS attention', 'distilled with it (joint)', joint.student, t0, joint.note);

const md = [
  `| config | calibration | MSE vs float (all t) | t < ${T / 2} | t ≥ ${T / 2} | class acc % | Fréchet | seconds |`,
  '|---|---|---|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.name} | ${r.calibration} | ${r.mse.all.toExponential(3)} | ${r.mse.low.toExponential(3)} | ${r.mse.high.toExponential(3)} | ${(100 * r.quality.accuracy).toFixed(1)} | ${r.quality.frechet.toFixed(2)} | ${r.seconds} |`),
].join('\n');
writeFileSync(join(args.runDir, 'results.md'), `${md}\n`);
writeFileSync(join(args.runDir, 'results.json'), JSON.stringify({ args, rows, losses: edm.losses, jointLosses: joint.losses }, null, 1));
console.log(`\n${md}\n${rows.filter((r) => r.note).map((r) => `${r.name}: ${r.note}`).join('\n')}\nwrote ${args.runDir}/{results.md, results.json, samples-*.png}`);
