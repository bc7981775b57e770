/**
 * @file MNIST helpers shared by the classification examples: normalised splits, seeded batches
 * by step, and test-set accuracy/loss evaluated in chunks without gradients.
 */
import { crossEntropy, noGrad, tensor, tidy, type Tensor } from '@qgrad/core';
import { epochBatch, fit, loadMnist, trainStep, type Module, type Optimizer, type RunResult, type TrainingState } from '@qgrad/nn';
import { checkFlag } from './args.js';
import { runFlags, summary } from './train.js';

/** Mean and standard deviation of MNIST pixels (the usual normalisation constants). */
const MEAN = 0.1307;
const STD = 0.3081;

export interface MnistData {
  trainX: Tensor;
  trainY: Tensor;
  testX: Tensor;
  testY: Tensor;
}

/** The 8,000/2,000 split with pixels normalised to zero mean, unit variance. */
export function mnistData(opts: { flatten?: boolean } = {}): MnistData {
  const { train, test } = loadMnist({ flatten: opts.flatten });
  const norm = (x: Tensor) => x.sub(MEAN).div(STD);
  return { trainX: norm(train.images), trainY: train.labels, testX: norm(test.images), testY: test.labels };
}

/** Throws a CliError for the --batch-size flag unless it is at most the number of training digits. */
export function checkBatchSize(d: MnistData, batchSize: number): void {
  checkFlag('batchSize', batchSize, { type: 'int', min: 1, max: d.trainX.shape[0]! }, `there are ${d.trainX.shape[0]!} training digits`);
}

/**
 * One cross-entropy training step on images x [B, …] and labels y [B]; returns the loss. It runs as
 * a `trainStep` scope, so the step's activations are recycled when it ends.
 */
export function classifierStep(model: Module & { forward(x: Tensor): Tensor }, optimizer: Optimizer<object>, x: Tensor, y: Tensor): number {
  return trainStep(model, optimizer, () => {
    const l = crossEntropy(model.forward(x), y);
    optimizer.zeroGrad();
    l.backward();
    optimizer.step();
    return l.item();
  });
}

/** Training batch `i` ([B, …] images, [B] labels): epochs reshuffled by a seeded generator. */
export function mnistBatch(d: MnistData, batchSize: number, i: number, seed: number): [Tensor, Tensor] {
  const idx = tensor(Int32Array.from(epochBatch(d.trainX.shape[0]!, batchSize, i, seed)));
  return [d.trainX.indexSelect(0, idx), d.trainY.indexSelect(0, idx)];
}

/** Accuracy and mean cross entropy of `logitsOf` on the test split. */
export function evaluateClassifier(logitsOf: (x: Tensor) => Tensor, x: Tensor, y: Tensor, chunk = 500): { test_acc: number; test_loss: number } {
  return noGrad(() => {
    let correct = 0;
    let loss = 0;
    const n = x.shape[0]!;
    for (let s = 0; s < n; s += chunk) {
      const len = Math.min(chunk, n - s);
      // each chunk's activations die with it: a synchronous loop never lets the garbage collector in
      tidy(() => {
        const logits = logitsOf(x.narrow(0, s, len));
        const labels = y.narrow(0, s, len);
        correct += logits.argmax(-1).eq(labels).sum().item();
        loss += crossEntropy(logits, labels).item() * len;
      });
    }
    return { test_acc: correct / n, test_loss: loss / n };
  });
}

/** The flags a classification example passes through (see `commonOptions` in train.ts); `runDir` '' means runs/<name>. */
export interface ClassifierRunArgs {
  steps: number;
  batchSize: number;
  seed: number;
  runDir: string;
  resume?: boolean;
  evalEvery: number;
  ckptEvery: number;
  stopAt: number;
  allowNonfinite?: boolean;
}

/**
 * The classification examples' training run (nn's `fit`): cross entropy on seeded MNIST batches,
 * one optimizer and scheduler step per batch, test accuracy at every evaluation; prints the summary.
 */
export async function trainMnistClassifier(
  name: string,
  model: TrainingState['model'] & { forward(x: Tensor): Tensor },
  data: MnistData,
  state: Omit<TrainingState, 'model'> & { scheduler: NonNullable<TrainingState['scheduler']> },
  args: ClassifierRunArgs,
  config: Record<string, unknown>,
): Promise<RunResult> {
  checkBatchSize(data, args.batchSize);
  const result = await fit({
    ...runFlags(name, args),
    model,
    ...state,
    config: { ...config, batchSize: args.batchSize, seed: args.seed, steps: args.steps },
    loss: ({ index }) => {
      const [x, y] = mnistBatch(data, args.batchSize, index, args.seed); // [B, …] images, [B] labels
      return crossEntropy(model.forward(x), y);
    },
    evaluate: () => {
      model.eval(); // dropout off, quantizers in eval mode
      const r = evaluateClassifier((x) => model.forward(x), data.testX, data.testY);
      model.train();
      return r;
    },
    panels: { loss: ['loss', 'test_loss'], accuracy: ['test_acc'] },
  });
  console.log(summary(result, { 'test accuracy': result.lastEval.test_acc! }));
  return result;
}
