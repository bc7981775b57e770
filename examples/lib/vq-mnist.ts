/**
 * @file The VQ-VAE / FSQ-VAE on MNIST shared by examples/vq-mnist.ts and experiments/vq.ts: a
 * small conv autoencoder whose 7×7 grid of latent vectors goes through one of @qgrad/quant's
 * quantizers (VQ, FSQ, SimVQ, residual VQ), trained by nn's `fit` on pixel MSE plus the
 * quantizer's loss; test MSE and codebook usage/perplexity over the whole test split; a PNG of
 * test digits above their reconstructions.
 */
import { Generator, cat, interpolate, mseLoss, noGrad, tensor, tidy, type Tensor } from '@qgrad/core';
import { AdamW, Conv2d, LambdaLR, Module, ReLU, Sequential, cosineSchedule, fit, trainStep, type FitOptions, type RunResult } from '@qgrad/nn';
import { codeStats, FSQ, ResidualVQ, SimVQ, VectorQuantizer } from '@qgrad/quant';
import { CliError } from './args.js';
import { checkBatchSize, mnistBatch, mnistData, type MnistData } from './mnist.js';
import { saveImageGrid } from './png.js';
import { NONFINITE_HINT } from './train.js';

export const QUANTIZERS = ['vq', 'fsq', 'simvq', 'rvq'] as const;
export type QuantizerName = (typeof QUANTIZERS)[number];

/** How the latent vectors are quantized. */
export interface QuantizerSpec {
  quantizer: QuantizerName;
  /** Codes per codebook (vq, simvq, rvq). */
  codes: number;
  /** Latent vector size (vq, simvq, rvq); FSQ's is the number of levels. */
  dim: number;
  /** FSQ's levels per channel. */
  levels: number[];
  /** vq/rvq: 'ema' codebook updates (decay 0.99) or 'grad' (codebook loss). */
  update: 'ema' | 'grad';
  /** vq/rvq: re-seed codes whose EMA count falls below this from the batch (0: never; needs 'ema'). */
  deadCode: number;
  /** rvq: number of stages. */
  stages: number;
  /** Commitment weight β (vq, simvq, rvq). */
  beta: number;
}

/** What one quantizer step gives the autoencoder: the straight-through output, its loss (none for FSQ) and the indices of each codebook. */
interface Quantized {
  quantized: Tensor;
  loss: Tensor | null;
  indices: Tensor[];
}

/** Total codes of a spec's codebook (per stage for rvq) and the latent size the encoder must produce. */
export function quantizerShape(s: QuantizerSpec): { codes: number; dim: number; stages: number } {
  if (s.quantizer === 'fsq') return { codes: s.levels.reduce((a, b) => a * b, 1), dim: s.levels.length, stages: 1 };
  return { codes: s.codes, dim: s.dim, stages: s.quantizer === 'rvq' ? s.stages : 1 };
}

/** A flag combination that cannot mean anything becomes a CliError naming the flags. */
export function checkSpec(s: QuantizerSpec): void {
  if (!QUANTIZERS.includes(s.quantizer)) throw new CliError(`--quantizer must be one of ${QUANTIZERS.join(', ')}, got '${s.quantizer}'`);
  if (s.update !== 'ema' && s.update !== 'grad') throw new CliError(`--update must be 'ema' or 'grad', got '${s.update as string}'`);
  if (s.quantizer === 'fsq' && (!s.levels.length || s.levels.some((l) => !Number.isInteger(l) || l < 2))) {
    throw new CliError(`--levels must be comma-separated integers ≥ 2, got '${s.levels.join(',')}'`);
  }
  // the dead-code test reads the EMA counts, which a gradient-trained codebook does not keep
  if (s.deadCode > 0 && s.update === 'grad' && (s.quantizer === 'vq' || s.quantizer === 'rvq')) throw new CliError(`--dead-code ${s.deadCode} needs --update ema (it reads the EMA code counts); with --update grad pass --dead-code 0`);
}

/** Parses --levels ("8,6,5"); a malformed list is a CliError. */
export function parseLevels(text: string): number[] {
  const v = text.split(',').map((t) => Number(t.trim()));
  if (!v.length || v.some((l) => !Number.isInteger(l) || l < 2)) throw new CliError(`--levels must be comma-separated integers ≥ 2, got '${text}'`);
  return v;
}

function makeQuantizer(s: QuantizerSpec, g: Generator): { module: Module; quantize: (z: Tensor) => Quantized } {
  const vqOpts = { beta: s.beta, ema: s.update === 'ema' ? { decay: 0.99 } : (false as const), deadCodeThreshold: s.deadCode, generator: g };
  switch (s.quantizer) {
    case 'vq': {
      const m = new VectorQuantizer(s.codes, s.dim, vqOpts);
      return { module: m, quantize: (z) => { const o = m.forward(z); return { quantized: o.quantized, loss: o.loss, indices: [o.indices] }; } };
    }
    case 'simvq': {
      const m = new SimVQ(s.codes, s.dim, { beta: s.beta, generator: g });
      return { module: m, quantize: (z) => { const o = m.forward(z); return { quantized: o.quantized, loss: o.loss, indices: [o.indices] }; } };
    }
    case 'rvq': {
      const m = new ResidualVQ(s.stages, s.codes, s.dim, vqOpts);
      return { module: m, quantize: (z) => { const o = m.forward(z); return { quantized: o.quantized, loss: o.loss, indices: o.indices }; } };
    }
    case 'fsq': {
      const m = new FSQ(s.levels);
      return { module: m, quantize: (z) => { const o = m.forward(z); return { quantized: o.quantized, loss: null, indices: [o.indices] }; } };
    }
    default: {
      const never: never = s.quantizer;
      throw new Error(`unknown quantizer ${String(never)}`);
    }
  }
}

/**
 * Conv encoder (28 → 14 → 7, `channels` then 2·`channels`), a 1×1 conv to the latent size, the
 * quantizer on each of the 7×7 latent vectors, and a decoder mirroring the encoder with
 * nearest ×2 upsampling + 3×3 conv (core has no transposed conv). Pixels in [0, 1] in and out.
 */
export class VqAutoencoder extends Module {
  encoder: Sequential;
  decoder: Sequential;
  quantizer: Module;
  readonly #quantize: (z: Tensor) => Quantized;
  readonly #up1: Conv2d;
  readonly #up2: Conv2d;
  readonly #out: Conv2d;

  constructor(readonly spec: QuantizerSpec, channels: number, seed: number) {
    super();
    const g = new Generator(seed);
    const c = channels;
    const { dim } = quantizerShape(spec);
    this.encoder = this.registerModule('encoder', new Sequential(
      new Conv2d(1, c, 3, { stride: 2, padding: 1, generator: g }), new ReLU(), // [B, c, 14, 14]
      new Conv2d(c, 2 * c, 3, { stride: 2, padding: 1, generator: g }), new ReLU(), // [B, 2c, 7, 7]
      new Conv2d(2 * c, dim, 1, { generator: g }), // [B, dim, 7, 7]
    ));
    this.decoder = this.registerModule('decoder', new Sequential(new Conv2d(dim, 2 * c, 3, { padding: 1, generator: g }), new ReLU())); // [B, 2c, 7, 7]
    this.#up1 = this.registerModule('up1', new Conv2d(2 * c, c, 3, { padding: 1, generator: g }));
    this.#up2 = this.registerModule('up2', new Conv2d(c, c, 3, { padding: 1, generator: g }));
    this.#out = this.registerModule('out', new Conv2d(c, 1, 3, { padding: 1, generator: g }));
    const q = makeQuantizer(spec, g);
    this.quantizer = this.registerModule('quantizer', q.module);
    this.#quantize = q.quantize;
  }

  /** Reconstruction [B, 1, 28, 28], the quantizer's loss and the code indices (per codebook, [B, 7, 7]). */
  forward(x: Tensor): { reconstruction: Tensor; loss: Tensor | null; indices: Tensor[] } {
    const z = this.encoder.forward(x).permute(0, 2, 3, 1); // [B, 7, 7, dim]: one vector per position
    const q = this.#quantize(z);
    let h = this.decoder.forward(q.quantized.permute(0, 3, 1, 2)); // [B, 2c, 7, 7]
    h = this.#up1.forward(interpolate(h, { scaleFactor: 2 })).relu(); // [B, c, 14, 14]
    h = this.#up2.forward(interpolate(h, { scaleFactor: 2 })).relu(); // [B, c, 28, 28]
    return { reconstruction: this.#out.forward(h), loss: q.loss, indices: q.indices };
  }
}

/** Test-split figures: pixel MSE (in [0, 1] units) and, over every test vector, the fraction of codes used and the perplexity (mean over rvq's codebooks). */
export interface VqEval {
  test_mse: number;
  usage: number;
  perplexity: number;
}

export function evaluateVq(model: VqAutoencoder, x: Tensor, chunk = 500): VqEval {
  const { codes, stages } = quantizerShape(model.spec);
  const wasTraining = model.training;
  model.eval(); // no EMA update or re-seeding from test digits
  const n = x.shape[0]!;
  let sq = 0;
  const indices: number[][] = Array.from({ length: stages }, () => []);
  noGrad(() => {
    for (let s = 0; s < n; s += chunk) {
      const len = Math.min(chunk, n - s);
      tidy(() => {
        const xs = x.narrow(0, s, len);
        const out = model.forward(xs);
        sq += mseLoss(out.reconstruction, xs).item() * len;
        out.indices.forEach((idx, l) => indices[l]!.push(...Array.from(idx.dataSync(), Number)));
      });
    }
  });
  if (wasTraining) model.train();
  let usage = 0;
  let perplexity = 0;
  for (const idx of indices) {
    const st = codeStats(tensor(Int32Array.from(idx)), codes);
    usage += st.usage / stages;
    perplexity += st.perplexity / stages;
  }
  return { test_mse: sq / n, usage, perplexity };
}

/**
 * Test digits `from`..`from + 8·cols` as rows of `cols`: each row of originals is followed by the
 * row of their reconstructions (pixels clipped to [0, 1]).
 */
export function saveReconstructions(path: string, model: VqAutoencoder, x: Tensor, cols = 16, rows = 4, from = 0): void {
  const wasTraining = model.training;
  model.eval();
  noGrad(() => {
    const xs = x.narrow(0, from, cols * rows); // [cols·rows, 1, 28, 28]
    const rec = model.forward(xs).reconstruction;
    const pairs: Tensor[] = [];
    for (let r = 0; r < rows; r++) pairs.push(xs.narrow(0, r * cols, cols), rec.narrow(0, r * cols, cols));
    saveImageGrid(path, cat(pairs, 0), { cols, lo: 0, hi: 1, scale: 2 });
  });
  if (wasTraining) model.train();
}

/** What a training run needs besides the model. */
export interface VqTrainOptions {
  steps: number;
  batchSize: number;
  lr: number;
  seed: number;
  /** nn's `fit` run-control options (run directory, resume, cadences, progress bar …). */
  fit?: Partial<FitOptions>;
}

/**
 * Trains the autoencoder with AdamW (no weight decay: it would shrink a gradient-trained codebook
 * towards 0) and a cosine schedule on pixel MSE + the quantizer's loss; every step records the
 * batch's code usage and perplexity beside the loss.
 */
export async function trainVq(model: VqAutoencoder, data: MnistData, o: VqTrainOptions): Promise<RunResult> {
  checkBatchSize(data, o.batchSize);
  const optimizer = new AdamW(model.parameters(), { lr: o.lr, weightDecay: 0 });
  const scheduler = new LambdaLR(optimizer, cosineSchedule({ warmupSteps: Math.min(50, o.steps / 10), totalSteps: o.steps, minLrRatio: 0.05 }));
  const { codes, stages } = quantizerShape(model.spec);
  return fit({
    model, optimizer, scheduler, steps: o.steps, seed: o.seed, nonFiniteHint: NONFINITE_HINT, evalAtStart: false,
    ...o.fit,
    step: ({ index }) => {
      const m = trainStep(model, optimizer, () => {
        const [x] = mnistBatch(data, o.batchSize, index, o.seed); // [B, 1, 28, 28] in [0, 1]
        const out = model.forward(x);
        const rec = mseLoss(out.reconstruction, x);
        const total = out.loss ? rec.add(out.loss) : rec;
        optimizer.zeroGrad();
        total.backward();
        optimizer.step();
        const st = out.indices.map((idx) => codeStats(idx, codes));
        return { loss: total.item(), mse: rec.item(), batch_usage: st.reduce((a, s) => a + s.usage, 0) / stages, batch_perplexity: st.reduce((a, s) => a + s.perplexity, 0) / stages };
      });
      scheduler.step();
      return m;
    },
    evaluate: () => ({ ...evaluateVq(model, data.testX) }),
    panels: { 'pixel MSE': ['mse', 'test_mse'], 'codes used (fraction)': ['batch_usage', 'usage'], perplexity: ['batch_perplexity', 'perplexity'] },
  });
}

/** MNIST for the autoencoder: images [N, 1, 28, 28] with pixels back in [0, 1] (the shared loader normalises to zero mean, unit variance). */
export function vqMnistData(): MnistData {
  const d = mnistData();
  const unit = (x: Tensor) => x.mul(0.3081).add(0.1307);
  return { ...d, trainX: unit(d.trainX), testX: unit(d.testX) };
}
