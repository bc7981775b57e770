/**
 * @file MNIST helpers shared by the classification examples: normalised splits, seeded batches
 * by step, and test-set accuracy/loss evaluated in chunks without gradients.
 */
import { crossEntropy, noGrad, tensor, type Tensor } from '@qgrad/core';
import { loadMnist } from '@qgrad/nn';
import { epochBatch } from './train.js';

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
      const logits = logitsOf(x.narrow(0, s, len));
      const labels = y.narrow(0, s, len);
      correct += logits.argmax(-1).eq(labels).sum().item();
      loss += crossEntropy(logits, labels).item() * len;
    }
    return { test_acc: correct / n, test_loss: loss / n };
  });
}
