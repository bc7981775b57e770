/**
 * @file convert(model, { kernel: 'packedBase3' }): ternary Linear weights stored five codes per
 * byte (TQ1_0's order) run on the base-3 packed kernel, equal to the 2-bit packed layer bit for
 * bit and to the dequantizing forward within float32 summation error; other grids stay 2-bit or
 * wider; saveQuantized / loadQuantized keep the bytes and say 'base3-tq1'.
 */
import { describe, expect, it } from 'vitest';
import { base3RowBytes, Generator, noGrad, randn, type Tensor } from '@qgrad/core';
import { Linear, Sequential } from '@qgrad/nn';
import * as Q from '@qgrad/quant';

const TERNARY: [string, Q.WeightQuantConfig, number][] = [
  ['ternary per channel, K = 192 (no whole block)', { grid: 'ternary', granularity: 'channel' }, 192],
  ['ternary per tensor, K = 512 (two blocks)', { grid: 'ternary', granularity: 'tensor' }, 512],
  ['ternary groups of 256, K = 768 (fused decode)', { grid: 'ternary', granularity: { group: 256 } }, 768],
  ['ternary groups of 48, K = 336', { grid: 'ternary', granularity: { group: 48 } }, 336],
  ['int2 narrow (codes −1…1) per channel, K = 300', { grid: 'int', bits: 2, narrow: true, granularity: 'channel' }, 300],
];

function twins(weight: Q.WeightQuantConfig, K: number, seed: number): { a: Sequential; b: Sequential; x: Tensor } {
  const make = () => {
    const g = new Generator(seed);
    const m = new Sequential(Q.QuantLinear.from(new Linear(K, 24, { generator: g }), { weight }), Q.QuantLinear.from(new Linear(24, 16, { generator: g }), { weight: { bits: 4, granularity: 'channel' } }));
    m.eval();
    noGrad(() => m.forward(randn([2, K], { generator: g })));
    return m;
  };
  const [a, b] = [make(), make()];
  Q.convert(a, { kernel: 'packedBase3' });
  Q.convert(b);
  return { a, b, x: randn([3, K], { generator: new Generator(seed + 1) }) };
}

const relError = (a: Tensor, b: Tensor) => {
  const [x, y] = [a.dataSync(), b.dataSync()];
  return Math.max(...Array.from(x, (v, i) => Math.abs(v - y[i]!))) / Math.max(...Array.from(y, Math.abs));
};

describe("convert(model, { kernel: 'packedBase3' })", () => {
  it.each(TERNARY)('%s: five codes a byte, the same codes, bit for bit the 2-bit packed forward', (_, weight, K) => {
    const { a, b, x } = twins(weight, K, 5);
    const [la, lb] = [a.at(0) as Q.QuantizedLinear, b.at(0) as Q.QuantizedLinear];
    expect(la.codePacking).toBe('base3');
    expect(la.kernel).toBe('packedBase3');
    expect(la.packedWeight()!.packing).toBe('base3');
    expect(la.weightCodes.numel()).toBe(24 * base3RowBytes(K));
    expect(la.weightCodes.numel()).toBeLessThan(lb.weightCodes.numel());
    expect(Array.from(la.codes().dataSync())).toEqual(Array.from(lb.codes().dataSync()));
    for (const shape of [[1, K], [3, K]]) {
      const xs = x.reshape([3, K]).narrow(0, 0, shape[0]!);
      expect(Array.from(noGrad(() => la.forward(xs)).dataSync())).toEqual(Array.from(noGrad(() => lb.forward(xs)).dataSync()));
      expect(relError(noGrad(() => la.forward(xs)), la.dequantizedForward(xs))).toBeLessThanOrEqual(1e-5);
    }
    // the int4 layer is not ternary: stored and run as with 'packed'
    const second = a.at(1) as Q.QuantizedLinear;
    expect([second.codePacking, second.kernel]).toEqual(['fields', 'packed']);
  });

  it("with kernel 'dequantize' reads the base-3 codes back for the reference forward", () => {
    const { a, x } = twins(TERNARY[0]![1], 192, 6);
    const la = a.at(0) as Q.QuantizedLinear;
    la.kernel = 'dequantize';
    expect(Array.from(noGrad(() => la.forward(x)).dataSync())).toEqual(Array.from(la.dequantizedForward(x).dataSync()));
  });

  it('repackBase3 refuses a grid of more than three codes', () => {
    const { b } = twins(TERNARY[0]![1], 192, 7);
    expect(() => (b.at(1) as Q.QuantizedLinear).repackBase3()).toThrow(/repackBase3: needs a grid of three codes \(ternary\), got int4 with codes -8…7/);
  });

  it("saveQuantized / loadQuantized keep the base-3 bytes and name the packing 'base3-tq1'", () => {
    for (const [, weight, K] of TERNARY) {
      const { a, x } = twins(weight, K, 8);
      const want = noGrad(() => a.forward(x)).dataSync();
      const ck = Q.deserializeQuantized(Q.serializeQuantized(a));
      expect(ck.layers['0']!.packing).toEqual({ fieldBits: 2, order: 'base3-tq1', container: 'uint8', offset: -1 });
      expect(ck.layers['1']!.packing.order).toBe('lsb-first');
      expect(JSON.parse(ck.metadata.quantization_config!).format).toBe('qgrad-base3-tq1');
      expect(ck.tensors['0.weight_packed']!.shape).toEqual([24, base3RowBytes(K)]);
      const template = new Sequential(new Linear(K, 24), new Linear(24, 16));
      const back = Q.applyQuantized(template, ck);
      const l0 = back.at(0) as Q.QuantizedLinear;
      expect(l0.codePacking).toBe('base3');
      expect(Array.from(l0.weightCodes.dataSync())).toEqual(Array.from((a.at(0) as Q.QuantizedLinear).weightCodes.dataSync()));
      expect(Array.from(noGrad(() => back.forward(x)).dataSync())).toEqual(Array.from(want));
    }
  });

  it('refuses a base-3 file whose codes are short, or whose grid is not ternary', () => {
    const { a } = twins(TERNARY[0]![1], 192, 9);
    const { tensors, metadata } = Q.quantizedEntries(a);
    const short = { ...tensors, '0.weight_packed': tensors['0.weight_packed']!.narrow(1, 0, 30) };
    expect(() => Q.checkQuantized(short, metadata)).toThrow(/layer '0': codes uint8 \[24, 30\] hold 720 bytes; 4608 codes of base-3 digits need 936/);
    const layers = JSON.parse(metadata['qgrad.layers']!);
    layers['1'].packing.order = 'base3-tq1';
    expect(() => Q.checkQuantized(tensors, { ...metadata, 'qgrad.layers': JSON.stringify(layers) })).toThrow(/layer '1' has invalid packing .*'base3-tq1' for a 2-bit Linear/);
  });
});
