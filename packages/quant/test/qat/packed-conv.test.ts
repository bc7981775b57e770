/**
 * @file QuantizedConv2d on packed codes (im2col + packedLinear per conv group) and
 * QuantizedEmbedding on packed rows (packedEmbedding), on js and wasm: conv within float32
 * summation error of the QAT model's eval output over random geometry × grid × granularity
 * (fast-check), embedding bit for bit the dequantized lookup; the fallbacks and errors.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Generator, noGrad, randint, randn, tensor, withBackend, type Tensor } from '@qgrad/core';
import { Conv2d, Embedding, Sequential } from '@qgrad/nn';
import * as Q from '@qgrad/quant';
import { arbQuant } from '@qgrad/quant/testing';

const BACKENDS = ['js', 'wasm'] as const;
const GRIDS = Q.GRID_NAMES.filter((n) => n !== 'mxfp4' && n !== 'mxfp8');

/** Largest |a − b| over the largest |b| (QuantizedLinear's packed tests state the bound so). */
function relError(a: Tensor, b: Tensor): number {
  const [x, y] = [a.dataSync(), b.dataSync()];
  const scale = Math.max(...Array.from(y, Math.abs), 1e-30);
  return Math.max(0, ...Array.from(x, (v, i) => Math.abs(v - y[i]!))) / scale;
}

const bitsOf = (t: Tensor) => Array.from(new Uint32Array(Float32Array.from(t.dataSync()).buffer));

/** A conv geometry: channels divisible by groups, a kernel that fits the padded input. */
const geometry = fc
  .record({
    groups: fc.integer({ min: 1, max: 3 }), cg: fc.integer({ min: 1, max: 3 }), og: fc.integer({ min: 1, max: 3 }),
    kh: fc.integer({ min: 1, max: 3 }), kw: fc.integer({ min: 1, max: 3 }), stride: fc.integer({ min: 1, max: 2 }),
    pad: fc.oneof(fc.integer({ min: 0, max: 2 }), fc.constant('same' as const)), dilation: fc.integer({ min: 1, max: 2 }),
    n: fc.integer({ min: 1, max: 2 }), h: fc.integer({ min: 4, max: 7 }), w: fc.integer({ min: 4, max: 7 }), bias: fc.boolean(),
  })
  .map((g) => ({ ...g, stride: g.pad === 'same' ? 1 : g.stride }));

/** A weight config fitting the conv's matrix [O, C/g·kh·kw], as the convert property draws them. */
function weightFor(O: number, K: number): fc.Arbitrary<Q.WeightQuantConfig> {
  const divisors = (n: number) => Array.from({ length: n }, (_, i) => i + 1).filter((d) => n % d === 0);
  const gran: fc.Arbitrary<Q.Granularity> = fc.oneof(
    fc.constant('tensor' as const), fc.constant('channel' as const),
    fc.constantFrom(...divisors(K)).map((group) => ({ group })), fc.constantFrom(...divisors(O * K)).map((block) => ({ block })),
  );
  // LSQ+ (a β offset per scale) on an unsigned int grid of the drawn width
  return fc.tuple(arbQuant.gridConfig(GRIDS), gran, fc.boolean()).map(([grid, granularity, beta]): Q.WeightQuantConfig =>
    beta && grid.grid === 'int' ? { grid: 'int', bits: grid.bits, signed: false, estimator: 'lsq+', granularity } : { ...grid, granularity },
  );
}

describe('QuantizedConv2d on the packed kernel', () => {
  for (const backend of BACKENDS) {
    it(`${backend}: equals the QAT eval output within float32 summation error over random geometry, groups, grids and granularities`, () => {
      let packed = 0;
      const cases = geometry.chain((g) => fc.record({ g: fc.constant(g), weight: weightFor(g.og * g.groups, g.cg * g.kh * g.kw), input: fc.constantFrom<Q.ActQuantConfig | null>(null, { bits: 8 }, { bits: 4, granularity: 'token' }), seed: fc.integer({ min: 1, max: 1e6 }) }));
      fc.assert(
        fc.property(cases, ({ g, weight, input, seed }) =>
          withBackend(backend, () => {
            const gen = new Generator(seed);
            const conv = new Conv2d(g.cg * g.groups, g.og * g.groups, [g.kh, g.kw], { stride: g.stride, padding: g.pad, dilation: g.dilation, groups: g.groups, bias: g.bias, generator: gen });
            const m = new Sequential(Q.QuantConv2d.from(conv, { weight, input }));
            m.eval();
            const x = randn([g.n, g.cg * g.groups, g.h, g.w], { generator: gen });
            let want: Tensor;
            try {
              want = noGrad(() => m.forward(x));
            } catch (e) {
              // a dilated kernel larger than the padded input: conv2d's own error, not this test's
              if (String(e).includes('is larger than the padded input')) return;
              throw e;
            }
            Q.convert(m);
            const layer = m.at(0) as Q.QuantizedConv2d;
            expect(layer.kernel).toBe('packed');
            const got = noGrad(() => m.forward(x));
            expect(got.shape).toEqual(want.shape);
            if (layer.packedWeights()) {
              packed++;
              expect(layer.packedWeights()!.length).toBe(g.groups);
            }
            expect(relError(got, want)).toBeLessThanOrEqual(1e-5);
            expect(bitsOf(layer.dequantizedForward(x))).toEqual(bitsOf(want));
          }),
        ),
        { numRuns: 60 },
      );
      // most drawn layouts run along rows (per tensor, channel, group along C·kh·kw, whole-row blocks)
      expect(packed).toBeGreaterThan(20);
    });
  }

  it('splits groups whose codes do not start on a byte (4-bit, one 3-input filter a group), and reads MX blocks of 32 inputs', () => {
    for (const backend of BACKENDS) {
      withBackend(backend, () => {
        for (const [conv, weight] of [
          [new Conv2d(9, 3, [3, 1], { groups: 3, generator: new Generator(1) }), { bits: 4, granularity: 'channel' }],
          [new Conv2d(9, 6, [1, 1], { groups: 3, generator: new Generator(2) }), { bits: 2, asymmetric: true, granularity: 'channel' }],
          [new Conv2d(8, 4, 2, { padding: 1, generator: new Generator(3) }), { grid: 'mxfp4' }],
          [new Conv2d(8, 4, 2, { padding: 1, generator: new Generator(3) }), { grid: 'nf4', scale: { double: true }, granularity: { block: 32 } }],
        ] as [Conv2d, Q.WeightQuantConfig][]) {
          const m = new Sequential(Q.QuantConv2d.from(conv, { weight }));
          m.eval();
          const x = randn([2, conv.inChannels, 5, 6], { generator: new Generator(4) });
          const want = noGrad(() => m.forward(x));
          Q.convert(m);
          const layer = m.at(0) as Q.QuantizedConv2d;
          expect(layer.packedWeights()).not.toBeNull();
          expect(relError(noGrad(() => m.forward(x)), want)).toBeLessThanOrEqual(1e-5);
        }
      });
    }
  });

  it("keeps bit identity with kernel 'dequantize', and falls back to it where the kernel cannot read the scales", () => {
    const x = randn([2, 4, 6, 6], { generator: new Generator(5) });
    for (const [weight, kernel] of [[{ bits: 4, granularity: { group: 9 } }, 'dequantize'], [{ bits: 4, granularity: { channel: 1 } }, undefined]] as const) {
      const m = new Sequential(Q.QuantConv2d.from(new Conv2d(4, 6, 3, { padding: 1, generator: new Generator(6) }), { weight }));
      m.eval();
      const want = noGrad(() => m.forward(x));
      Q.convert(m, kernel ? { kernel } : {});
      const layer = m.at(0) as Q.QuantizedConv2d;
      expect(layer.kernel).toBe(kernel ?? 'packed');
      if (!kernel) expect(layer.packedWeights()).toBeNull();
      expect(bitsOf(noGrad(() => m.forward(x)))).toEqual(bitsOf(want));
    }
  });
});

describe('QuantizedEmbedding on packed rows', () => {
  const CASES: [string, Q.WeightQuantConfig][] = [
    ['int4 per row', { bits: 4, granularity: 'channel' }],
    ['int3 asymmetric g8', { bits: 3, asymmetric: true, granularity: { group: 8 } }],
    ['uint4 lsq+ (β offsets)', { bits: 4, signed: false, estimator: 'lsq+', granularity: 'channel' }],
    ['int8 per tensor', { bits: 8, granularity: 'tensor' }],
    ['int2 g4', { bits: 2, granularity: { group: 4 } }],
    ['binary per row', { grid: 'binary', granularity: 'channel' }],
    ['ternary', { grid: 'ternary', granularity: 'channel' }],
    ['nf4 double-quantized', { grid: 'nf4', scale: { double: true }, granularity: { block: 32 } }],
    ['mxfp4', { grid: 'mxfp4' }],
    ['e4m3 g16', { grid: 'e4m3', granularity: { group: 16 } }],
    ['codebook', { grid: 'codebook', levels: [-1, -0.2, 0, 0.4, 1], granularity: 'channel' }],
  ];
  for (const backend of BACKENDS) {
    it.each(CASES)(`${backend}: %s — looks up bit for bit the dequantized table's rows, repeated indices included`, (_, weight) => {
      withBackend(backend, () => {
        const g = new Generator(11);
        const m = new Sequential(Q.QuantEmbedding.from(new Embedding(37, 32, { generator: g }), { weight }));
        m.eval();
        const ids = tensor([[0, 36, 5, 5], [36, 0, 12, 5]], { dtype: 'int32' });
        const want = noGrad(() => m.forward(ids));
        Q.convert(m);
        const layer = m.at(0) as Q.QuantizedEmbedding;
        expect(layer.kernel).toBe('packed');
        expect(layer.packedWeight()).not.toBeNull();
        const got = noGrad(() => m.forward(ids));
        expect(got.shape).toEqual([2, 4, 32]);
        expect(bitsOf(got)).toEqual(bitsOf(want));
        expect(bitsOf(got)).toEqual(bitsOf(layer.dequantizedForward(ids)));
        const many = randint(0, 37, [3, 50], { generator: g, dtype: 'int32' });
        expect(bitsOf(noGrad(() => m.forward(many)))).toEqual(bitsOf(layer.dequantizedForward(many)));
      });
    });
  }

  it('names an out-of-range index (and its position) in the error; negative ones too', () => {
    const m = new Sequential(Q.QuantEmbedding.from(new Embedding(10, 8, { generator: new Generator(1) }), { weight: { bits: 4 } }));
    Q.convert(m);
    for (const backend of BACKENDS) {
      withBackend(backend, () => {
        expect(() => m.forward(tensor([1, 2, 10], { dtype: 'int32' }))).toThrow(/packedEmbedding: index 10 \(at position 2\) is out of range \[0, 10\)/);
        expect(() => m.forward(tensor([[-1]], { dtype: 'int32' }))).toThrow(/index -1 \(at position 0\) is out of range/);
        expect(() => m.forward(tensor([1.5]))).toThrow(/integer tensor/);
      });
    }
  });

  it("dequantizes the table with kernel 'dequantize' and for float64 tables", () => {
    const ids = tensor([3, 1, 3], { dtype: 'int32' });
    for (const [dtype, kernel] of [['float32', 'dequantize'], ['float64', undefined]] as const) {
      const m = new Sequential(Q.QuantEmbedding.from(new Embedding(6, 8, { generator: new Generator(2), dtype }), { weight: { bits: 4 } }));
      m.eval();
      const want = noGrad(() => m.forward(ids));
      Q.convert(m, kernel ? { kernel } : {});
      const layer = m.at(0) as Q.QuantizedEmbedding;
      expect(layer.kernel).toBe(kernel ?? 'packed');
      expect(Array.from(noGrad(() => m.forward(ids)).dataSync())).toEqual(Array.from(want.dataSync()));
    }
  });
});
