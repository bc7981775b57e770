/**
 * @file Denoising diffusion on MNIST: a small class-conditional Diffusion Transformer learns to
 * denoise DDPM's forward process (linear or cosine β schedule), predicting x₀ by default (ε-prediction
 * at this size ignores the label: docs/experiments/diffusion-quant.md); DDIM (default) or
 * DDPM sampling then writes a PNG grid with one row per digit. Writes runs/diffusion-mnist/.
 * Run: npx tsx examples/diffusion-mnist.ts [--steps 400] [--sampler ddim|ddpm] [--resume]
 */
import { join } from 'node:path';
import { Generator, noGrad, type Tensor } from '@qgrad/core';
import { AdamW, DiT, Diffusion, LambdaLR, cosineSchedule, fit, mnistDiTConfig, type BetaSchedule, type DiTConfig, type PredictionType } from '@qgrad/nn';
import { CliError, checkFlag, cli } from './lib/args.js';
import { checkBatchSize, mnistBatch, mnistData } from './lib/mnist.js';
import { saveImageGrid } from './lib/png.js';
import { commonOptions, runFlags, summary, useBackend } from './lib/train.js';

const args = cli('diffusion-mnist', 'Trains a class-conditional DiT denoiser (x₀-, v- or ε-prediction) with the DDPM objective on MNIST and samples a grid of digits.', {
  steps: { type: 'int', default: 400, min: 1, help: 'training steps' },
  batchSize: { type: 'int', default: 64, min: 1, help: 'images per step, at most the 8,000 training digits' },
  dim: { type: 'int', default: 64, min: 1, help: `DiT width (a multiple of its ${mnistDiTConfig.numHeads} attention heads)` },
  depth: { type: 'int', default: 3, min: 1, help: 'DiT blocks' },
  patch: { type: 'int', default: 7, min: 1, max: 28, help: 'patch size (divides 28; 4 is sharper and ~6× slower)' },
  lr: { type: 'number', default: 2e-3, exclusiveMin: 0, help: 'peak learning rate' },
  timesteps: { type: 'int', default: 1000, min: 1, help: 'diffusion steps T' },
  schedule: { type: 'string', default: 'linear', help: "β schedule: 'linear' or 'cosine'" },
  sampler: { type: 'string', default: 'ddim', help: "'ddim' (sampleSteps steps, deterministic) or 'ddpm' (all T steps, ancestral)" },
  sampleSteps: { type: 'int', default: 50, min: 1, help: 'DDIM steps (at most --timesteps)' },
  prediction: { type: 'string', default: 'x0', help: "what the DiT predicts: 'x0', 'v' or 'epsilon'" },
  labelDrop: { type: 'number', default: 0.1, min: 0, max: 1, help: 'fraction of training labels replaced by "no label"' },
  ...commonOptions,
});
useBackend(args.backend);
if (args.schedule !== 'linear' && args.schedule !== 'cosine') throw new CliError(`--schedule must be 'linear' or 'cosine', got '${args.schedule}'`);
if (!['x0', 'v', 'epsilon'].includes(args.prediction)) throw new CliError(`--prediction must be 'x0', 'v' or 'epsilon', got '${args.prediction}'`);
if (args.sampler !== 'ddim' && args.sampler !== 'ddpm') throw new CliError(`--sampler must be 'ddim' or 'ddpm', got '${args.sampler}'`);
if (28 % args.patch) throw new CliError(`--patch must divide 28 (the image size), got ${args.patch}`);
if (args.dim % mnistDiTConfig.numHeads) throw new CliError(`--dim must be a multiple of ${mnistDiTConfig.numHeads} (the DiT's attention heads), got ${args.dim}`);
// sampleDdim would quietly take min(steps, T) steps
checkFlag('sampleSteps', args.sampleSteps, { type: 'int', min: 1, max: args.timesteps }, 'at most --timesteps');

const config: DiTConfig = { ...mnistDiTConfig, dim: args.dim, depth: args.depth, patchSize: args.patch };
const model = new DiT(config, { generator: new Generator(args.seed) });
const diffusion = new Diffusion({ timesteps: args.timesteps, schedule: args.schedule as BetaSchedule, prediction: args.prediction as PredictionType });
const raw = mnistData();
checkBatchSize(raw, args.batchSize);
// DDPM works on data in [−1, 1]: undo the mean/std normalisation of the shared loader, then rescale
const toUnit = (x: Tensor) => x.mul(0.3081).add(0.1307).mul(2).sub(1);
const data = { ...raw, trainX: toUnit(raw.trainX) };
const optimizer = new AdamW(model.parameters(), { lr: args.lr, weightDecay: 0 });
const scheduler = new LambdaLR(optimizer, cosineSchedule({ warmupSteps: Math.min(40, args.steps / 10), totalSteps: args.steps, minLrRatio: 0.1 }));
console.log(`DiT: ${model.numParameters()} parameters, ${(28 / args.patch) ** 2} tokens; T = ${args.timesteps}, ${args.schedule} schedule`);

const result = await fit({
  ...runFlags('diffusion-mnist', args),
  model, optimizer, scheduler,
  config: { ...config, batchSize: args.batchSize, lr: args.lr, seed: args.seed, steps: args.steps, timesteps: args.timesteps, schedule: args.schedule, prediction: args.prediction },
  loss: ({ index, generator }) => {
    const [x, y] = mnistBatch(data, args.batchSize, index, args.seed); // [B, 1, 28, 28] in [−1, 1], [B]
    const g = generator(3); // timesteps, noise and label dropout of this step
    const labels = Array.from(y.dataSync(), (l) => (g.random() < args.labelDrop ? 10 : Number(l)));
    return diffusion.loss((xt, t) => model.forward(xt, t, labels), x, { generator: g });
  },
  // a fixed-noise validation loss on 256 test digits (same t and ε every time)
  evaluate: () =>
    noGrad(() => {
      const x = toUnit(data.testX.narrow(0, 0, 256));
      const labels = Array.from(data.testY.narrow(0, 0, 256).dataSync(), Number);
      return { val_loss: diffusion.loss((xt, t) => model.forward(xt, t, labels), x, { generator: new Generator(12345) }).item() };
    }),
  panels: { [`${args.prediction}-prediction MSE`]: ['loss', 'val_loss'] },
});

// one row per digit, ten samples each
const labels = Array.from({ length: 100 }, (_, k) => Math.floor(k / 10));
const predictor = (x: Tensor, t: number[]) => model.forward(x, t, labels);
const t0 = performance.now();
let last = 0;
const onStep = (done: number, total: number) => {
  if (done === total || performance.now() - last > 5000) {
    last = performance.now();
    console.log(`sampling ${done}/${total}`);
  }
};
const samples =
  args.sampler === 'ddpm'
    ? diffusion.sample(predictor, [100, 1, 28, 28], { generator: new Generator(args.seed), onStep })
    : diffusion.sampleDdim(predictor, [100, 1, 28, 28], args.sampleSteps, { generator: new Generator(args.seed), onStep });
const png = join(result.dir!, `samples-${args.sampler}.png`);
saveImageGrid(png, samples, { cols: 10, lo: -1, hi: 1, scale: 2 });
console.log(`sampled 100 digits with ${args.sampler.toUpperCase()} in ${((performance.now() - t0) / 1000).toFixed(1)} s → ${png}`);
console.log(summary(result, { 'final train loss': result.records.filter((r) => 'loss' in r).at(-1)!.loss as number, 'val loss': result.lastEval.val_loss! }));
