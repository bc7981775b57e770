/**
 * @file The float models and calibration samples of the post-training experiments (experiments/ptq.ts,
 * experiments/mixed.ts): examples/mnist-cnn.ts's CNN trained once per seed and cached in a directory,
 * and seeded calibration draws of training windows or digits from a stream that training never reads.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Generator, crossEntropy, dispose, loadSafetensors, saveSafetensors, tensor, type Tensor } from '@qgrad/core';
import { AdamW, Conv2d, Flatten, LambdaLR, Linear, MaxPool2d, ReLU, Sequential, cosineSchedule, fit, type ByteDataset, type Module } from '@qgrad/nn';
import { CliError } from './args.js';
import { evaluateClassifier, mnistBatch, type MnistData } from './mnist.js';
import { NONFINITE_HINT, stepGenerator } from './train.js';

/**
 * examples/mnist-cnn.ts's network: conv 3×3 `channels` → pool → conv 2·channels → pool → Linear → 10.
 * @example const m = cnnModel(0, 8); m.forward(x); // x [B, 1, 28, 28] → [B, 10]
 */
export function cnnModel(seed: number, channels: number): Sequential {
  const c = channels;
  const g = new Generator(seed);
  return new Sequential(
    new Conv2d(1, c, 3, { padding: 1, generator: g }), new ReLU(), new MaxPool2d(2), // [B, c, 14, 14]
    new Conv2d(c, 2 * c, 3, { padding: 1, generator: g }), new ReLU(), new MaxPool2d(2), // [B, 2c, 7, 7]
    new Flatten(), // [B, 2c·49]
    new Linear(2 * c * 49, 10, { generator: g }),
  );
}

/**
 * Test accuracy in % of a classifier on the 2,000 test digits (eval mode).
 * @example cnnAccuracy(model, mnistData()); // 97.2
 */
export function cnnAccuracy(m: Module, d: MnistData): number {
  m.eval();
  return evaluateClassifier((x) => (m as Sequential).forward(x), d.testX, d.testY).test_acc * 100;
}

/** How the CNN of a seed is trained (AdamW, cosine) and where it is cached. */
export interface CnnTrainOptions {
  /** Cache directory: model.safetensors and cnn.json (written last, so its presence marks a complete model). */
  dir: string;
  seed: number;
  steps: number;
  batchSize: number;
  channels: number;
  lr: number;
}

/**
 * The float CNN of a seed, trained once and cached in `dir`; a cache trained with other settings is
 * a CliError naming the differences. Returns its test accuracy and a loader of fresh copies.
 * @example const { floatAcc, fresh } = await trainedCnn(data, { dir: 'runs/cnn-seed0', seed: 0, steps: 500, batchSize: 64, channels: 8, lr: 3e-3 });
 */
export async function trainedCnn(data: MnistData, o: CnnTrainOptions): Promise<{ floatAcc: number; fresh: () => Sequential }> {
  const weights = join(o.dir, 'model.safetensors');
  const infoPath = join(o.dir, 'cnn.json');
  const want = { steps: o.steps, batchSize: o.batchSize, channels: o.channels, lr: o.lr, seed: o.seed };
  let floatAcc: number;
  if (existsSync(infoPath)) {
    const saved = JSON.parse(readFileSync(infoPath, 'utf8')) as typeof want & { testAcc: number };
    const differ = (Object.keys(want) as (keyof typeof want)[]).filter((k) => saved[k] !== want[k]);
    if (differ.length) throw new CliError(`${o.dir} holds a CNN trained with other settings (${differ.map((k) => `${k} ${saved[k]}, asked ${want[k]}`).join('; ')}): pass the same flags, another --run-dir, or delete ${o.dir}`);
    floatAcc = saved.testAcc;
  } else {
    const model = cnnModel(o.seed, o.channels);
    const optimizer = new AdamW(model.parameters(), { lr: o.lr, weightDecay: 1e-4 });
    const scheduler = new LambdaLR(optimizer, cosineSchedule({ warmupSteps: Math.min(30, Math.floor(o.steps / 10)), totalSteps: o.steps, minLrRatio: 0.05 }));
    // fit without a run directory: its progress bar and NaN stop; the weights are saved below, once trained
    await fit({
      name: `cnn float seed ${o.seed}`, model, optimizer, scheduler, steps: o.steps, seed: o.seed, evalEvery: o.steps, evalAtStart: false, nonFiniteHint: NONFINITE_HINT,
      loss: ({ index }) => {
        const [x, y] = mnistBatch(data, o.batchSize, index, o.seed); // [B, 1, 28, 28], [B]
        return crossEntropy(model.forward(x), y);
      },
      evaluate: () => ({}),
    });
    floatAcc = cnnAccuracy(model, data);
    mkdirSync(o.dir, { recursive: true });
    saveSafetensors(weights, model.stateDict());
    writeFileSync(infoPath, `${JSON.stringify({ ...want, testAcc: floatAcc }, null, 1)}\n`);
    dispose([...model.parameters(), ...model.buffers()]);
  }
  const fresh = () => {
    const m = cnnModel(o.seed, o.channels);
    m.loadStateDict(loadSafetensors(weights));
    return m;
  };
  return { floatAcc, fresh };
}

/**
 * `n` training windows drawn by `seed` (with replacement) from a stream the training batches never
 * use, as [input, target] batches of at most 16 (ptq takes the inputs; a sensitivity loss both).
 * @example const calibration = calibrationWindows(mobyDickWindows(128, 1).train, 8, 0); // [[[8, 128], [8, 128]]]
 */
export function calibrationWindows(train: ByteDataset, n: number, seed: number): [Tensor, Tensor][] {
  const g = stepGenerator(seed, -1, 5);
  const idx = Array.from({ length: n }, () => g.randint(0, train.length));
  const out: [Tensor, Tensor][] = [];
  for (let s = 0; s < idx.length; s += 16) out.push(train.getBatch(idx.slice(s, s + 16))); // [≤16, T] bytes, next bytes
  return out;
}

/**
 * `n` training digits (at most all of them) drawn by `seed` from the same unused stream, as
 * [images, labels] batches of at most 128.
 * @example const calibration = calibrationImages(mnistData(), 512, 0); // 4 × [[128, 1, 28, 28], [128]]
 */
export function calibrationImages(data: MnistData, n: number, seed: number): [Tensor, Tensor][] {
  const g = stepGenerator(seed, -1, 5);
  const total = data.trainX.shape[0]!;
  const idx = Array.from({ length: Math.min(n, total) }, () => g.randint(0, total));
  const out: [Tensor, Tensor][] = [];
  for (let s = 0; s < idx.length; s += 128) {
    const at = tensor(Int32Array.from(idx.slice(s, s + 128)));
    out.push([data.trainX.indexSelect(0, at), data.trainY.indexSelect(0, at)]); // [≤128, 1, 28, 28], [≤128]
  }
  return out;
}
