/**
 * @file The MNIST MLP the browser gpu suite trains twice, in the page on the gpu backend and in
 * Node on a CPU backend: W4A8 LSQ QAT (prepareQAT as examples/qat-mnist.ts does it), seeded init
 * and batches, Adam. Plain arrays in, the loss per step out, so both sides run the same code.
 */
import { crossEntropy, Generator, noGrad, tensor, type Tensor } from '@qgrad/core';
import { Adam, epochBatch, Linear, ReLU, Sequential, trainStep } from '@qgrad/nn';
import { prepareQAT } from '@qgrad/quant';

/** Normalised training images [n, 784] and their digits. */
export interface MlpData {
  images: Float32Array;
  labels: Int32Array;
}

export interface MlpOptions {
  steps: number;
  batchSize: number;
  hidden: number;
  seed: number;
  lr: number;
}

/** Trains 784-hidden-10 with 4-bit weights and 8-bit inputs (LSQ scales) on the current backend; returns each step's loss. */
export function trainMlp(data: MlpData, o: MlpOptions): number[] {
  const n = data.labels.length;
  const x = tensor(data.images, { shape: [n, 784] });
  const y = tensor(data.labels);
  const batch = (i: number): [Tensor, Tensor] => {
    const idx = tensor(Int32Array.from(epochBatch(n, o.batchSize, i, o.seed)));
    return [x.indexSelect(0, idx), y.indexSelect(0, idx)];
  };
  const g = new Generator(o.seed);
  const model = new Sequential(new Linear(784, o.hidden, { generator: g }), new ReLU(), new Linear(o.hidden, 10, { generator: g }));
  // the pixels are signed after normalisation, the hidden layer's inputs follow a ReLU
  prepareQAT(model, { rules: [{ match: '0', weight: { bits: 4 }, input: { bits: 8, signed: true } }], default: { weight: { bits: 4 }, input: { bits: 8, signed: false } } });
  // learned activation scales initialise from the first batch they see (as in qat-mnist.ts)
  noGrad(() => model.forward(batch(0)[0]));
  const optimizer = new Adam(model.parameters(), { lr: o.lr });
  const losses: number[] = [];
  for (let i = 0; i < o.steps; i++) {
    const [bx, by] = batch(i);
    losses.push(
      trainStep(model, optimizer, () => {
        const l = crossEntropy(model.forward(bx), by);
        optimizer.zeroGrad();
        l.backward();
        optimizer.step();
        return l.item();
      }),
    );
  }
  return losses;
}
