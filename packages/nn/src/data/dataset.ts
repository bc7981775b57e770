/**
 * @file Datasets and batching: the `Dataset` interface, `TensorDataset`, and `DataLoader`
 * (seeded shuffling with core's Generator, batching, dropLast, default collation by stacking).
 */
import { defaultGenerator, indexSelect, stack, tensor, type Generator, type Tensor } from '@qgrad/core';

/**
 * Anything indexable with a length. `getBatch`, when present, builds a whole batch at once
 * (DataLoader prefers it to collating single items).
 */
export interface Dataset<T> {
  readonly length: number;
  get(index: number): T;
  getBatch?(indices: number[]): T;
}

/**
 * Rows of tensors that share their first dim, like `torch.utils.data.TensorDataset`:
 * item i is `[t0[i], t1[i], …]`.
 * @example const ds = new TensorDataset(images, labels); const [x, y] = ds.get(0);
 */
export class TensorDataset implements Dataset<Tensor[]> {
  readonly tensors: Tensor[];
  constructor(...tensors: Tensor[]) {
    if (!tensors.length) throw new Error('TensorDataset: needs at least one tensor');
    const n = tensors[0]!.shape[0];
    for (const t of tensors) {
      if (t.ndim === 0 || t.shape[0] !== n) throw new Error(`TensorDataset: all tensors must share their first dim; got shapes ${tensors.map((x) => `[${x.shape.join(', ')}]`).join(', ')}`);
    }
    this.tensors = tensors;
  }
  get length(): number {
    return this.tensors[0]!.shape[0]!;
  }
  get(index: number): Tensor[] {
    if (!(index >= 0 && index < this.length)) throw new RangeError(`TensorDataset: index ${index} is out of range for ${this.length} items`);
    return this.tensors.map((t) => t.select(0, index));
  }
  getBatch(indices: number[]): Tensor[] {
    const idx = tensor(Int32Array.from(indices));
    return this.tensors.map((t) => indexSelect(t, 0, idx));
  }
}

/**
 * Stacks a list of items: tensors along a new dim 0, arrays element by element, numbers into a tensor.
 * @example defaultCollate([tensor([1, 2]), tensor([3, 4])]).shape; // [2, 2]
 */
export function defaultCollate<T>(items: T[]): T {
  const first = items[0] as unknown;
  if (Array.isArray(first)) return first.map((_, i) => defaultCollate(items.map((it) => (it as unknown[])[i]))) as T;
  if (typeof first === 'number') return tensor(items as number[]) as T;
  return stack(items as Tensor[]) as T;
}

/** Options of `DataLoader`: batch size, shuffling and its generator, dropping the last short batch, and how samples are collated. */
export interface DataLoaderOptions<T> {
  batchSize?: number;
  /** Reshuffle every epoch (default false). */
  shuffle?: boolean;
  /** Drop the last batch when it is smaller than batchSize (default false). */
  dropLast?: boolean;
  /** Source of the shuffles (default: core's default generator, seeded by `manualSeed`). */
  generator?: Generator;
  collate?: (items: T[]) => T;
}

/**
 * A permutation of 0..n-1 by Fisher–Yates with `g`.
 * @example randperm(5, new Generator(0)); // a permutation of 0..4
 */
export function randperm(n: number, g: Generator = defaultGenerator): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = g.randint(0, i + 1);
    const t = p[i]!;
    p[i] = p[j]!;
    p[j] = t;
  }
  return p;
}

/**
 * Iterates a dataset in batches; each `for…of` is one epoch. With `shuffle`, every epoch draws a
 * fresh permutation from the generator, so a loader with a seeded generator gives the same
 * sequence of epochs on every run.
 * @example
 * const loader = new DataLoader(train, { batchSize: 64, shuffle: true, generator: new Generator(0) });
 * for (const [x, y] of loader) { ... }
 */
export class DataLoader<T> implements Iterable<T> {
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly dropLast: boolean;
  readonly generator: Generator | undefined;
  readonly collate: (items: T[]) => T;
  constructor(readonly dataset: Dataset<T>, opts: DataLoaderOptions<T> = {}) {
    this.batchSize = opts.batchSize ?? 1;
    if (!Number.isInteger(this.batchSize) || this.batchSize < 1) throw new RangeError(`DataLoader: batchSize must be a positive integer, got ${this.batchSize}`);
    this.shuffle = opts.shuffle ?? false;
    this.dropLast = opts.dropLast ?? false;
    this.generator = opts.generator;
    this.collate = opts.collate ?? defaultCollate;
  }
  /** Number of batches per epoch. */
  get length(): number {
    const n = this.dataset.length;
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }
  /** The index lists of one epoch's batches (draws the shuffle). */
  batchIndices(): number[][] {
    const n = this.dataset.length;
    const order = this.shuffle ? randperm(n, this.generator ?? defaultGenerator) : null;
    const out: number[][] = [];
    for (let b = 0; b < this.length; b++) {
      const len = Math.min(this.batchSize, n - b * this.batchSize);
      out.push(Array.from({ length: len }, (_, i) => (order ? order[b * this.batchSize + i]! : b * this.batchSize + i)));
    }
    return out;
  }
  *[Symbol.iterator](): Iterator<T> {
    const ds = this.dataset;
    for (const idx of this.batchIndices()) {
      yield ds.getBatch ? ds.getBatch(idx) : this.collate(idx.map((i) => ds.get(i)));
    }
  }
}
