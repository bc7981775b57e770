/**
 * @file QuantizedLinear on the packed kernel: over grids × granularities (zero points, LSQ+ offsets,
 * MX exponents and double-quantized NF4 scales included) the packed forward runs the kernel and
 * equals the dequantizing reference within float32 summation error, for one row and several;
 * layouts the kernel cannot read fall back to the reference; a rewritten buffer is seen.
 */
import { describe, expect, it } from 'vitest';
import { Generator, noGrad, randn, tidy, type Tensor } from '@qgrad/core';
import { Linear, Sequential } from '@qgrad/nn';
import * as Q from '@qgrad/quant';

const CASES: [string, Q.WeightQuantConfig][] = [
  ['int4 g32', { bits: 4, granularity: { group: 32 } }],
  ['int4 asymmetric g32', { bits: 4, asymmetric: true, granularity: { group: 32 } }],
  ['uint4 lsq+ per channel', { bits: 4, signed: false, estimator: 'lsq+', granularity: 'channel' }],
  ['int8 per channel', { bits: 8, granularity: 'channel' }],
  ['int8 asymmetric per channel', { bits: 8, asymmetric: true, granularity: 'channel' }],
  ['uint8 per tensor', { bits: 8, signed: false, granularity: 'tensor' }],
  ['int2 g16', { bits: 2, granularity: { group: 16 } }],
  ['int3 g24 (4-bit fields)', { bits: 3, granularity: { group: 24 } }],
  ['ternary per channel', { grid: 'ternary', granularity: 'channel' }],
  ['binary per channel', { grid: 'binary', granularity: 'channel' }],
  ['nf4 blocks of 64', { grid: 'nf4' }],
  ['nf4 double-quantized', { grid: 'nf4', scale: { double: true } }],
  ['mxfp4', { grid: 'mxfp4' }],
  ['mxfp8 (8-bit table)', { grid: 'mxfp8' }],
  ['e2m1 g32', { grid: 'e2m1', granularity: { group: 32 } }],
  ['e4m3 per channel', { grid: 'e4m3', granularity: 'channel' }],
  ['codebook g16', { grid: 'codebook', levels: [-1, -0.3, 0, 0.25, 0.9], granularity: { group: 16 } }],
  ['centered 3-bit g32', { grid: 'centered', bits: 3, granularity: { group: 32 } }],
  ['int4 blocks of two rows', { bits: 4, granularity: { block: 384 } }],
];

function converted(weight: Q.WeightQuantConfig, seed: number, input: Q.ActQuantConfig | null = null): { m: Sequential; layer: Q.QuantizedLinear; g: Generator } {
  const g = new Generator(seed);
  const m = new Sequential(Q.QuantLinear.from(new Linear(192, 40, { generator: g }), { weight, input }));
  m.eval();
  noGrad(() => m.forward(randn([2, 192], { generator: g }))); // initialises data-driven scales
  Q.convert(m);
  return { m, layer: m.at(0) as Q.QuantizedLinear, g };
}

/** Largest |a − b| over the largest |b|. */
function relError(a: Tensor, b: Tensor): number {
  const [x, y] = [a.dataSync(), b.dataSync()];
  const scale = Math.max(...Array.from(y, Math.abs));
  return Math.max(...Array.from(x, (v, i) => Math.abs(v - y[i]!))) / scale;
}

describe('QuantizedLinear on the packed kernel', () => {
  it.each(CASES)('%s: runs packed, within 1e-5 of the dequantizing forward for one row and several', (_, weight) => {
    const { m, layer, g } = converted(weight, 7);
    expect(layer.packedWeight()).not.toBeNull();
    for (const shape of [[1, 192], [5, 192], [2, 3, 192]]) {
      const x = randn(shape, { generator: g });
      const y = noGrad(() => m.forward(x));
      expect(y.shape).toEqual([...shape.slice(0, -1), 40]);
      expect(relError(y, layer.dequantizedForward(x))).toBeLessThanOrEqual(1e-5);
    }
  });

  it('quantizes the input first (W4A8 per token) as the reference does', () => {
    const { m, layer, g } = converted({ bits: 4, granularity: { group: 32 } }, 9, { bits: 8, granularity: 'token' });
    const x = randn([4, 192], { generator: g });
    expect(relError(noGrad(() => m.forward(x)), layer.dequantizedForward(x))).toBeLessThanOrEqual(1e-5);
  });

  it('falls back to the dequantizing forward for scales per input column and for float64 weights', () => {
    for (const [weight, dtype] of [[{ bits: 4, granularity: { channel: 1 } }, 'float32'], [{ bits: 4, granularity: { group: 32 } }, 'float64']] as const) {
      const g = new Generator(3);
      const m = new Sequential(Q.QuantLinear.from(new Linear(96, 8, { generator: g, dtype }), { weight }));
      m.eval();
      Q.convert(m);
      const layer = m.at(0) as Q.QuantizedLinear;
      expect(layer.packedWeight()).toBeNull();
      const x = randn([2, 96], { generator: g, dtype });
      expect(Array.from(noGrad(() => m.forward(x)).dataSync())).toEqual(Array.from(layer.dequantizedForward(x).dataSync()));
    }
  });

  it("convert(model, { kernel: 'dequantize' }) keeps the reference forward, and a bad kernel name is an error", () => {
    const g = new Generator(4);
    const m = new Sequential(Q.QuantLinear.from(new Linear(32, 8, { generator: g }), { weight: { bits: 4 } }));
    m.eval();
    Q.convert(m, { kernel: 'dequantize' });
    expect((m.at(0) as Q.QuantizedLinear).kernel).toBe('dequantize');
    expect(() => Q.convert(new Sequential(), { kernel: 'fast' as never })).toThrow(/convert: kernel must be 'packed', 'packedBase3', 'sparse24' or 'dequantize', got "fast"/);
  });

  it('rebuilds its float scale cache when a scale buffer is written', () => {
    const { m, layer, g } = converted({ bits: 4, granularity: { group: 32 } }, 11);
    const x = randn([1, 192], { generator: g });
    const before = noGrad(() => m.forward(x));
    noGrad(() => layer.weightScale.mul_(2));
    const after = noGrad(() => m.forward(x));
    expect(relError(after, before)).toBeGreaterThan(0.1);
    expect(relError(after, layer.dequantizedForward(x))).toBeLessThanOrEqual(1e-5);
  });

  it('keeps its float scale cache past the tidy of the forward that built it', () => {
    const { m, g } = converted({ grid: 'nf4', scale: { double: true } }, 12);
    const x = randn([1, 192], { generator: g });
    const first = tidy(() => noGrad(() => m.forward(x)).dataSync()); // an evaluation loop's scope builds the cache
    expect(Array.from(noGrad(() => m.forward(x)).dataSync())).toEqual(Array.from(first));
  });
});
