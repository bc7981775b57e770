/**
 * @file One QAT run per grid family on a small MNIST MLP (784-64-10, 150 steps of 64 digits):
 * int4 LSQ, FP8 E4M3, MXFP4, NF4, ternary, binary and a 16-level codebook each train to near the
 * float model's accuracy, convert, and keep exactly that accuracy after conversion.
 */
import { describe, expect, it } from 'vitest';
import { argmax, crossEntropy, Generator, noGrad, randint, type Tensor } from '@qgrad/core';
import { Adam, Linear, loadMnist, ReLU, Sequential } from '@qgrad/nn';
import { bitsPerParameter, convert, kmeansLevels, prepareQAT, QuantizedLinear, type WeightQuantConfig } from '@qgrad/quant';

const { train, test } = loadMnist({ flatten: true });
const norm = (x: Tensor) => x.sub(0.1307).div(0.3081);
const trainX = norm(train.images);
const testX = norm(test.images.narrow(0, 0, 1000));
const testY = test.labels.narrow(0, 0, 1000);
const STEPS = 150;

const accuracy = (m: Sequential) => noGrad(() => argmax(m.forward(testX), 1).eq(testY).to('float32').mean().item());

/** Trains the MLP (quantized by `weight` when given) with the same data order; returns it in eval mode. */
function run(weight: WeightQuantConfig | null): Sequential {
  const g = new Generator(0);
  const m = new Sequential(new Linear(784, 64, { generator: g }), new ReLU(), new Linear(64, 10, { generator: g }));
  if (weight) prepareQAT(m, { default: { weight } });
  const opt = new Adam(m.parameters(), { lr: 3e-3 });
  const order = new Generator(1);
  for (let i = 0; i < STEPS; i++) {
    const idx = randint(0, trainX.shape[0]!, [64], { generator: order });
    opt.zeroGrad();
    crossEntropy(m.forward(trainX.indexSelect(0, idx)), train.labels.indexSelect(0, idx)).backward();
    opt.step();
  }
  m.eval();
  return m;
}

const fp = accuracy(run(null));

const GRIDS: [string, WeightQuantConfig, number][] = [
  // name, config, accuracy it may lose against float's 0.900 (measured at 150 steps: int4 +0.001, E4M3 −0.015, MXFP4 −0.012,
  // NF4 −0.002, ternary −0.016, binary −0.017, codebook16 +0.005 on the first 1,000 test digits)
  ['int4 (LSQ)', { grid: 'int', bits: 4 }, 0.03],
  ['FP8 E4M3', { grid: 'e4m3' }, 0.04],
  ['MXFP4', { grid: 'mxfp4', granularity: { block: 32 } }, 0.04], // 784 inputs are not a multiple of 32: blocks run over the flattened weight
  ['NF4', { grid: 'nf4' }, 0.04],
  ['ternary', { grid: 'ternary' }, 0.06],
  ['binary', { grid: 'binary' }, 0.06],
  ['codebook16 (k-means)', { grid: 'codebook', levels: kmeansLevels(new Linear(784, 64, { generator: new Generator(0) }).weight, 16) }, 0.04],
];

describe('QAT on an MNIST MLP, one run per grid family', () => {
  it('the float reference learns', () => expect(fp).toBeGreaterThan(0.85));
  for (const [name, weight, drop] of GRIDS) {
    it(`${name}: trains near float accuracy, converts, and keeps its accuracy after conversion`, () => {
      const m = run(weight);
      const acc = accuracy(m);
      const bits = bitsPerParameter(m);
      expect(acc).toBeGreaterThan(fp - drop);
      const before = noGrad(() => m.forward(testX)).dataSync();
      convert(m, { kernel: 'dequantize' });
      expect(m.at(0)).toBeInstanceOf(QuantizedLinear);
      expect(Array.from(noGrad(() => m.forward(testX)).dataSync())).toEqual(Array.from(before)); // so the accuracy is the same
      expect(accuracy(m)).toBe(acc);
      expect(bitsPerParameter(m).totalStoredBits).toBe(bits.totalStoredBits);
    });
  }
});
