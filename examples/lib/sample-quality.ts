/**
 * @file Sample quality of generated MNIST digits, judged by a qgrad-trained classifier (issue 20's
 * diffusion experiment): the class accuracy of class-conditional samples, and a Fréchet distance
 * between the classifier's penultimate features of samples and of real test digits (FID's formula
 * with an MNIST CNN in place of Inception, so the numbers compare only with each other).
 */
import { existsSync } from 'node:fs';
import { Generator, loadSafetensors, noGrad, saveSafetensors, tidy, type Tensor } from '@qgrad/core';
import { AdamW, Conv2d, Flatten, LambdaLR, Linear, MaxPool2d, ReLU, Sequential, cosineSchedule } from '@qgrad/nn';
import { symmetricEigen } from '@qgrad/quant';
import { classifierStep, evaluateClassifier, mnistBatch, mnistData } from './mnist.js';

/** MNIST's pixel normalisation (mnist.ts): the judge sees what the classification examples see. */
const MEAN = 0.1307;
const STD = 0.3081;
/** Width of the features the Fréchet distance compares. */
export const JUDGE_FEATURES = 64;

/** A trained MNIST classifier split at its penultimate layer. */
export interface MnistJudge {
  /** Conv stages and the 64-wide hidden layer (after its ReLU): images → features [N, 64]. */
  body: Sequential;
  /** The last Linear: features → logits [N, 10]. */
  head: Linear;
  /** Its accuracy on the 2,000 real test digits. */
  testAcc: number;
}

/** Pixels in [−1, 1] (the diffusion model's range) → the classifier's normalised input, clamped to valid pixels. */
function judgeInput(images: Tensor): Tensor {
  return images.add(1).mul(0.5).clamp(0, 1).sub(MEAN).div(STD);
}

/**
 * Trains (or loads from `path` when it exists) the judge: the examples' two-stage CNN with a
 * 64-wide hidden layer before the classifier, AdamW, seeded batches of the 8,000 training digits.
 * @example const judge = mnistJudge({ path: 'runs/judge.safetensors' }); console.log(judge.testAcc);
 */
export function mnistJudge(opts: { path?: string; steps?: number; seed?: number; log?: (line: string) => void } = {}): MnistJudge {
  const steps = opts.steps ?? 600;
  const seed = opts.seed ?? 0;
  const g = new Generator(seed);
  const body = new Sequential(
    new Conv2d(1, 16, 3, { padding: 1, generator: g }), new ReLU(), new MaxPool2d(2),
    new Conv2d(16, 32, 3, { padding: 1, generator: g }), new ReLU(), new MaxPool2d(2),
    new Flatten(), new Linear(32 * 49, JUDGE_FEATURES, { generator: g }), new ReLU(),
  );
  const head = new Linear(JUDGE_FEATURES, 10, { generator: g });
  const model = new Sequential(body, head);
  const data = mnistData();
  if (opts.path && existsSync(opts.path)) {
    model.loadStateDict(loadSafetensors(opts.path));
  } else {
    const opt = new AdamW(model.parameters(), { lr: 3e-3, weightDecay: 1e-4 });
    const sched = new LambdaLR(opt, cosineSchedule({ warmupSteps: Math.min(30, steps / 10), totalSteps: steps, minLrRatio: 0.05 }));
    for (let i = 0; i < steps; i++) {
      const loss = tidy(() => {
        const [x, y] = mnistBatch(data, 64, i, seed);
        return classifierStep(model, opt, x, y);
      });
      sched.step();
      if (opts.log && ((i + 1) % 200 === 0 || i + 1 === steps)) opts.log(`judge step ${i + 1}/${steps} loss ${loss.toFixed(4)}`);
    }
    if (opts.path) saveSafetensors(opts.path, model.stateDict());
  }
  model.eval();
  const { test_acc } = evaluateClassifier((x) => model.forward(x), data.testX, data.testY);
  return { body, head, testAcc: test_acc };
}

/** Real test digits in the diffusion model's range [−1, 1]: [N, 1, 28, 28], with their labels. */
export function realDigits(n: number): { images: Tensor; labels: number[] } {
  const d = mnistData();
  const count = Math.min(n, d.testX.shape[0]!);
  const images = d.testX.narrow(0, 0, count).mul(STD).add(MEAN).mul(2).sub(1);
  return { images, labels: Array.from(d.testY.narrow(0, 0, count).dataSync(), Number) };
}

/**
 * The judge's penultimate features of images in [−1, 1] ([N, 1, 28, 28]), as N rows of 64 float64 values.
 * @example const f = judgeFeatures(judge, samples); // Float64Array of N·64
 */
export function judgeFeatures(judge: MnistJudge, images: Tensor, chunk = 250): Float64Array {
  const n = images.shape[0]!;
  const out = new Float64Array(n * JUDGE_FEATURES);
  noGrad(() => {
    for (let s = 0; s < n; s += chunk) {
      const len = Math.min(chunk, n - s);
      tidy(() => out.set(judge.body.forward(judgeInput(images.narrow(0, s, len))).dataSync(), s * JUDGE_FEATURES));
    }
  });
  return out;
}

/**
 * The share of images the judge classifies as the label they were generated for.
 * @example const acc = classAccuracy(judge, samples, labels); // 0.93
 */
export function classAccuracy(judge: MnistJudge, images: Tensor, labels: readonly number[]): number {
  const n = images.shape[0]!;
  if (labels.length !== n) throw new Error(`classAccuracy: ${labels.length} labels for ${n} images`);
  let hit = 0;
  noGrad(() => {
    for (let s = 0; s < n; s += 250) {
      const len = Math.min(250, n - s);
      tidy(() => {
        const pred = judge.head.forward(judge.body.forward(judgeInput(images.narrow(0, s, len)))).argmax(-1).dataSync();
        for (let i = 0; i < len; i++) if (Number(pred[i]) === labels[s + i]) hit++;
      });
    }
  });
  return hit / n;
}

/** Mean [d] and covariance [d·d] (divisor n − 1) of n rows of d features. */
export function featureMoments(x: ArrayLike<number>, d: number): { mean: Float64Array; cov: Float64Array } {
  const n = x.length / d;
  if (!Number.isInteger(n) || n < 2) throw new Error(`featureMoments: need at least 2 rows of ${d} features, got ${x.length} values`);
  const mean = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) mean[j]! += x[i * d + j]! / n;
  const cov = new Float64Array(d * d);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) {
      const cj = x[i * d + j]! - mean[j]!;
      for (let k = j; k < d; k++) cov[j * d + k]! += (cj * (x[i * d + k]! - mean[k]!)) / (n - 1);
    }
  }
  for (let j = 0; j < d; j++) for (let k = 0; k < j; k++) cov[j * d + k] = cov[k * d + j]!;
  return { mean, cov };
}

/**
 * Fréchet distance between the Gaussians fitted to two sets of feature rows (n·d and m·d values):
 * |μa − μb|² + tr(Σa + Σb − 2(Σa^½ Σb Σa^½)^½). Computed in float64 through two symmetric
 * eigen-decompositions, so it is symmetric in its arguments up to rounding and never complex.
 * @example const fd = frechetDistance(judgeFeatures(judge, samples), judgeFeatures(judge, real), 64);
 */
export function frechetDistance(a: ArrayLike<number>, b: ArrayLike<number>, d: number): number {
  const A = featureMoments(a, d);
  const B = featureMoments(b, d);
  let dist = 0;
  for (let j = 0; j < d; j++) dist += (A.mean[j]! - B.mean[j]!) ** 2;
  // Σa^½ = V·diag(√λ)·Vᵀ (negative rounding noise clipped at 0)
  const ea = symmetricEigen(A.cov, d);
  const root = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < d; j++) {
      let s = 0;
      for (let k = 0; k < d; k++) s += ea.vectors[i * d + k]! * Math.sqrt(Math.max(ea.values[k]!, 0)) * ea.vectors[j * d + k]!;
      root[i * d + j] = s;
    }
  }
  const mul = (x: Float64Array, y: Float64Array) => {
    const z = new Float64Array(d * d);
    for (let i = 0; i < d; i++) for (let k = 0; k < d; k++) {
      const xik = x[i * d + k]!;
      if (xik !== 0) for (let j = 0; j < d; j++) z[i * d + j]! += xik * y[k * d + j]!;
    }
    return z;
  };
  const inner = mul(mul(root, B.cov), root);
  // symmetrise away rounding so the Jacobi method sees an exactly symmetric matrix
  for (let i = 0; i < d; i++) for (let j = 0; j < i; j++) inner[i * d + j] = inner[j * d + i] = (inner[i * d + j]! + inner[j * d + i]!) / 2;
  let trRoot = 0;
  for (const l of symmetricEigen(inner, d).values) trRoot += Math.sqrt(Math.max(l, 0));
  for (let j = 0; j < d; j++) dist += A.cov[j * d + j]! + B.cov[j * d + j]!;
  return Math.max(dist - 2 * trRoot, 0);
}
