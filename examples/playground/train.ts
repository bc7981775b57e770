/**
 * @file The playground's training, shared by the page (main.ts) and the Node side of its test so
 * that both run the same code: a 784-h-10 MLP made a QAT model by prepareQAT with the chosen grid,
 * bits and estimator, seeded init and batches, Adam; accuracy, a layer's weight histogram, and the
 * converted model's safetensors bytes. No DOM and no Node here.
 */
import { crossEntropy, Generator, noGrad, tensor, type Tensor } from '@qgrad/core';
import { Adam, epochBatch, Linear, ReLU, Sequential, trainStep } from '@qgrad/nn';
import { convert, prepareQAT, serializeQuantized, weightHistogram, type GridName, type QATConfig, type QuantLinear, type WeightHistogram, type WeightQuantConfig } from '@qgrad/quant';
import type { Digits, MnistSlice } from './data.js';

/** What the page's controls choose. */
export interface PlaygroundOptions {
  grid: GridName;
  /** Weight bits, read by the grids that take bits ('int', 'centered'); the others fix their own. */
  bits: number;
  /** Bits of every layer's input (int, learned LSQ scale); 0 keeps inputs in float. */
  inputBits: number;
  /** Gradient estimator of the weights' rounding (and of the inputs' on the int grid), '' for the grid's default. */
  estimator: string;
  steps: number;
  seed: number;
  lr: number;
  batchSize: number;
  hidden: number;
}

/** The page's initial choice: W4A8 LSQ as in qat-mnist, 200 steps of 64. */
export const DEFAULTS: PlaygroundOptions = { grid: 'int', bits: 4, inputBits: 8, estimator: 'lsq', steps: 200, seed: 0, lr: 2e-3, batchSize: 64, hidden: 128 };

/** Grids whose weight bits the playground passes on (the others have a fixed level set). */
export const GRIDS_WITH_BITS: readonly GridName[] = ['int', 'centered'];

/**
 * The prepareQAT config of `o`: every Linear's weight on the grid, inputs as qat-mnist.ts does
 * them (the normalised pixels signed, the hidden layer's unsigned after its ReLU).
 * @example prepareQAT(model, qatConfig({ ...DEFAULTS, grid: 'nf4' }));
 */
export function qatConfig(o: PlaygroundOptions): QATConfig {
  const weight: WeightQuantConfig = {
    grid: o.grid,
    ...(GRIDS_WITH_BITS.includes(o.grid) && { bits: o.bits, ...(o.grid === 'int' && o.bits < 2 && { signed: false }) }),
    ...(o.estimator && { estimator: o.estimator }),
  };
  // an input quantizer is an int grid with an LSQ scale: lsq+ (which also learns an offset) and
  // the weight estimator of another grid do not carry over to it
  const actEstimator = o.estimator && o.estimator !== 'lsq+' && o.grid === 'int' ? { estimator: o.estimator } : {};
  const input = (signed: boolean) => (o.inputBits ? { bits: o.inputBits, signed, ...actEstimator } : null);
  return { rules: [{ match: '0', weight, input: input(true) }], default: { weight, input: input(false) } };
}

/**
 * One training run, a step at a time (the page draws between steps): build and prepare the model
 * from `o.seed`, then `step()` `o.steps` times; `exportBytes()` converts it and ends training.
 * @example
 * const t = new Training(decodeSlice(bytes), DEFAULTS);
 * while (t.losses.length < DEFAULTS.steps) t.step();
 * console.log(t.accuracy(), t.exportBytes().byteLength);
 */
export class Training {
  readonly losses: number[] = [];
  readonly model: Sequential;
  #optimizer: Adam;
  #x: Tensor;
  #y: Tensor;
  #n: number;
  #converted = false;

  constructor(
    readonly data: MnistSlice,
    readonly options: PlaygroundOptions,
  ) {
    const o = options;
    this.#n = data.train.labels.length;
    this.#x = tensor(data.train.images, { shape: [this.#n, 784] });
    this.#y = tensor(data.train.labels);
    const g = new Generator(o.seed);
    this.model = new Sequential(new Linear(784, o.hidden, { generator: g }), new ReLU(), new Linear(o.hidden, 10, { generator: g }));
    prepareQAT(this.model, qatConfig(o));
    // learned input scales initialise from the first batch they see: a training batch
    noGrad(() => this.model.forward(this.#batch(0)[0]));
    this.#optimizer = new Adam(this.model.parameters(), { lr: o.lr });
  }

  /** Batch `i` of the seeded epoch order, as [images, labels]. */
  #batch(i: number): [Tensor, Tensor] {
    const idx = tensor(Int32Array.from(epochBatch(this.#n, this.options.batchSize, i, this.options.seed)));
    return [this.#x.indexSelect(0, idx), this.#y.indexSelect(0, idx)];
  }

  /** Trains on the next batch; returns its loss (also appended to `losses`). */
  step(): number {
    if (this.#converted) throw new Error('Training.step: the model was converted by exportBytes(); start a new Training');
    const [bx, by] = this.#batch(this.losses.length);
    const opt = this.#optimizer;
    const loss = trainStep(this.model, opt, () => {
      const l = crossEntropy(this.model.forward(bx), by);
      opt.zeroGrad();
      l.backward();
      opt.step();
      return l.item();
    });
    this.losses.push(loss);
    return loss;
  }

  /** Fraction of `digits` (default the held-out part) the model classifies right, in eval mode. */
  accuracy(digits: Digits = this.data.test): number {
    const n = digits.labels.length;
    const wasTraining = this.model.training;
    this.model.eval();
    const predicted = noGrad(() => this.model.forward(tensor(digits.images, { shape: [n, 784] })).argmax(1).dataSync());
    if (wasTraining) this.model.train();
    let right = 0;
    for (let i = 0; i < n; i++) if (predicted[i] === digits.labels[i]) right++;
    return right / n;
  }

  /**
   * The weight histogram of layer `name` ('0' the first Linear, '2' the second) in grid units,
   * with the grid's levels; before `exportBytes` only.
   */
  histogram(name: '0' | '2', bins?: number): WeightHistogram {
    const layer = this.model.at(Number(name)) as unknown as QuantLinear;
    if (!layer.weightQuantizer) throw new Error(`Training.histogram: layer ${name} has no weight quantizer${this.#converted ? ' (the model was converted)' : ''}`);
    return weightHistogram(layer.weight, layer.weightQuantizer, bins === undefined ? {} : { bins });
  }

  /** Converts the model to integer storage (once) and returns its safetensors bytes, as saveQuantized writes them. */
  exportBytes(): Uint8Array {
    if (!this.#converted) convert(this.model);
    this.#converted = true;
    return serializeQuantized(this.model);
  }
}

/** What the page keeps in `globalThis.qgradPlayground` for tests: the phase, the losses so far, the accuracy and the error, if any. */
export interface PlaygroundState {
  phase: 'loading' | 'ready' | 'training' | 'done' | 'error';
  backend: string;
  options: PlaygroundOptions | null;
  losses: number[];
  accuracy: number | null;
  msPerStep: number | null;
  download: { name: string; bytes: number } | null;
  error: string | null;
}
