/**
 * @file Property tests of every grid of the table, in float32 and float64, through the testing
 * kit: values on the grid, idempotence, monotonicity, the code round trip, and error within half
 * the local level gap times the scale; plus the validation errors of grids and scales.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Generator, randn, tensor, type Tensor } from '@qgrad/core';
import * as Q from '@qgrad/quant';
import { arbQuant, checkCodeRoundTrip, checkIdempotent, checkLocalGapError, checkMonotone } from '@qgrad/quant/testing';

type Dt = 'float32' | 'float64';

/** Per-element scale and zero point of a quantization (the grouped-view values spread back onto x). */
function perElement(q: Q.Quantized, x: Tensor): { s: Float64Array; z: Float64Array } {
  const g = Q.toGroups(x, q.plan.granularity);
  const spread = (t: Tensor | number) => Float64Array.from(g.restore((typeof t === 'number' ? q.scale.mul(0).add(t) : t).expand(g.view.shape)).contiguous().dataSync());
  return { s: spread(q.scale), z: spread(q.zeroPoint) };
}

/** The configs under test: every grid of the table, int in its variants. */
const CASES: [string, fc.Arbitrary<arbQuant.GridConfig>][] = [
  ...Q.GRID_NAMES.filter((n) => n !== 'int').map((n): [string, fc.Arbitrary<arbQuant.GridConfig>] => [n, arbQuant.gridOf(n)]),
  ['int (signed, narrow, unsigned)', arbQuant.intGrid({ minBits: 2, maxBits: 8 })],
  ['int asymmetric', fc.integer({ min: 2, max: 8 }).map((bits) => ({ grid: 'int' as const, bits, asymmetric: true }))],
];

describe.each(['float32', 'float64'] as Dt[])('every grid in %s', (dtype) => {
  for (const [name, arb] of CASES) {
    it(`${name}: on the grid, idempotent, monotone, codes round-trip, error ≤ half the local gap × scale`, () => {
      fc.assert(
        fc.property(arb, fc.integer({ min: 1, max: 1e6 }), fc.double({ min: 0.05, max: 4, noNaN: true }), (grid, seed, spread) => {
          const cfg: Q.FakeQuantConfig = { ...grid, granularity: grid.grid === 'mxfp4' || grid.grid === 'mxfp8' ? undefined : grid.grid === 'nf4' ? { block: 64 } : 'channel' };
          const x = randn([4, 64], { dtype, generator: new Generator(seed) }).mul(spread);
          const plan = Q.resolveQuantizer(cfg, 'tensor', name);
          const params = plan.grid.scale.kind === 'pow2' ? undefined : Q.initQuantParams(x, cfg);
          const fq = (t: Tensor) => Q.fakeQuant(t, cfg, params);
          const y = fq(x);
          const q = Q.quantize(x, cfg, params);
          const { s, z } = perElement(q, x);
          const levels = Array.from(plan.grid.levels(dtype));
          const tol = dtype === 'float32' ? 2e-6 : 1e-12;
          // on the grid: y/s + z is a level
          const ys = y.dataSync();
          for (let i = 0; i < ys.length; i++) {
            const u = ys[i]! / s[i]! + z[i]!;
            if (!levels.some((l) => Math.abs(l - u) <= tol * (1 + Math.abs(l) + Math.abs(z[i]!)))) throw new Error(`element ${i}: ${ys[i]} / ${s[i]} + ${z[i]} = ${u} is not a level of ${plan.grid.label}`);
          }
          checkIdempotent(fq, x);
          // codes: decode(encode(level)) = level for every level, and dequantize() is fakeQuant bit for bit
          const lv = tensor(levels, { dtype });
          checkCodeRoundTrip((v) => plan.grid.encode(v), (c) => plan.grid.decode(c, dtype), lv, [plan.grid.codeMin, plan.grid.codeMax]);
          expect(Array.from(q.dequantize().dataSync())).toEqual(Array.from(ys));
          // nearest level: |x − x̂| ≤ half the gap around x, in x units
          checkLocalGapError(fq, x, (i) => levels.map((l) => (l - z[i]!) * s[i]!), tol);
          // monotone where one scale is shared: the first group alone
          const first = plan.grid.scale.kind === 'pow2' ? x.narrow(0, 0, 1).narrow(1, 0, 32).reshape([1, 32]) : x.narrow(0, 0, 1).reshape([1, 64]);
          const one = { ...cfg, granularity: plan.grid.scale.kind === 'pow2' ? undefined : 'tensor' } as Q.FakeQuantConfig;
          const p1 = plan.grid.scale.kind === 'pow2' ? undefined : Q.initQuantParams(first, one);
          checkMonotone((t) => Q.fakeQuant(t, one, p1), first);
        }),
        { numRuns: 6 },
      );
    });
  }
});

describe('grid and scale validation', () => {
  it('codebook levels that collide or are not finite in the tensor dtype are errors naming the layer and the values', () => {
    // [0, 1e-300] is two levels in float64 but one in float32 (this used to give all-NaN)
    const cfg: Q.FakeQuantConfig = { grid: 'codebook', levels: [0, 1e-300] };
    expect(() => Q.fakeQuant(randn([8]), cfg)).toThrow(/fakeQuant: codebook grid: levels 0 and 1e-300 are the same value in float32/);
    expect(Q.fakeQuant(randn([8], { dtype: 'float64' }), cfg).shape).toEqual([8]);
    expect(() => Q.makeGrid({ grid: 'codebook', levels: [0, 0.5, 0.5] }, 'layer fc1')).toThrow(/layer fc1: codebook grid: level 0.5 appears twice/);
    expect(() => Q.makeGrid({ grid: 'codebook', levels: [0, Infinity] }, 'layer fc1')).toThrow(/layer fc1: codebook grid: level Infinity is not finite/);
    expect(() => Q.makeGrid({ grid: 'codebook', levels: [0, NaN] }, 'x')).toThrow(/level NaN is not finite/);
    expect(() => new Q.WeightQuantizer([4, 4], { grid: 'codebook', levels: [-1, 1e-46, 0, 1] }, 'fc1 weight').forward(randn([4, 4]))).toThrow(/fc1 weight: codebook grid: levels 0 and 1e-46 are the same value in float32/);
  });

  it('bad scales, group sizes and bit widths are errors naming the layer and the value', () => {
    const w = randn([4, 8]);
    const s = (v: number[]) => ({ scale: tensor(v).reshape([4, 1]) });
    expect(() => Q.fakeQuant(w, { grid: 'int', bits: 4, granularity: 'channel' }, s([1, 0, 1, 1]))).toThrow(/fakeQuant: scale 0 at index 1 \(of shape \[4, 1\]\) must be finite and > 0/);
    expect(() => Q.fakeQuant(w, { grid: 'nf4', granularity: 'channel' }, s([1, -1, 1, 1]))).toThrow(/scale -1 at index 1/);
    expect(() => Q.fakeQuant(w, { grid: 'e4m3', granularity: 'channel' }, s([1, 1, NaN, 1]))).toThrow(/scale NaN at index 2/);
    expect(() => new Q.WeightQuantizer([4, 6], { grid: 'int', granularity: { group: 4 } }, 'layer fc1 weight')).toThrow(/layer fc1 weight: axis 1 of size 6 \(shape \[4, 6\]\) does not split into groups of 4/);
    expect(() => new Q.WeightQuantizer([4, 6], { grid: 'nf4' }, 'fc1')).toThrow(/fc1: 24 elements \(shape \[4, 6\]\) do not split into blocks of 64/);
    expect(() => new Q.WeightQuantizer([4, 8], { grid: 'int', bits: 17 }, 'fc1')).toThrow(/fc1: intRange: bits must be an integer in 2…16 for a signed int grid, got 17/);
    expect(() => new Q.WeightQuantizer([4, 8], { grid: 'int', bits: 0, signed: false }, 'fc1')).toThrow(/1…16 for an unsigned int grid, got 0/);
    expect(() => Q.makeGrid({ grid: 'codebook', levels: [0, 1, 2, 3, 4], bits: 2 }, 'fc1')).toThrow(/fc1: codebook grid: 5 levels do not fit in bits 2/);
  });

  it('a combination that makes no sense is an error naming the layer, the grid and the option, never a fallback', () => {
    const W = (c: Q.WeightQuantConfig) => () => new Q.WeightQuantizer([4, 64], c, "prepareQAT: layer 'fc1' (Linear) weight");
    expect(W({ grid: 'fp' as Q.GridName })).toThrow(/layer 'fc1' \(Linear\) weight: unknown grid "fp"; grids are int, e4m3/);
    expect(W({ grid: 'nf4', bits: 4 })).toThrow(/grid 'nf4' takes no option 'bits' \(it reads none\)/);
    expect(W({ grid: 'ternary', asymmetric: true })).toThrow(/grid 'ternary' takes no option 'asymmetric'/);
    expect(W({ grid: 'e4m3', estimator: 'lsq+' })).toThrow(/estimator 'lsq\+' learns an offset on an integer grid; grid 'e4m3' is not one/);
    expect(W({ grid: 'int', scale: 'dynamic', estimator: 'lsq' })).toThrow(/estimator 'lsq' learns the scale, but scale "dynamic" is dynamic/);
    expect(W({ grid: 'int', scale: 'learned', estimator: 'ste' })).toThrow(/a learned scale needs an estimator that gives it a gradient .* 'ste' gives none/);
    expect(W({ grid: 'mxfp4', granularity: 'channel' })).toThrow(/grid 'mxfp4' shares a power-of-two scale per block of 32 .* granularity channel does not apply/);
    expect(W({ grid: 'mxfp8', scale: 'learned' })).toThrow(/grid 'mxfp8' computes its own power-of-two block scales .* option scale "learned" does not apply/);
    expect(W({ grid: 'nf4', estimator: 'stochastic' })).toThrow(/estimator 'stochastic' rounds onto an integer grid; grid 'nf4' is not one/);
    expect(W({ grid: 'int', bits: 12, soft: {} })).toThrow(/option soft \(HESTIA\) relaxes over the grid's levels; grid 'int12' has 4096/);
    expect(W({ grid: 'int', scale: 'sometimes' as Q.ScaleMode })).toThrow(/unknown scale "sometimes"/);
    expect(() => new Q.ActQuantizer({ grid: 'int', granularity: 'token', scale: 'learned' }, 'fc1 input')).toThrow(/fc1 input: per-token scales are dynamic/);
    expect(() => new Q.ActQuantizer({ grid: 'e4m3', granularity: 'token', scale: 'fixed' }, 'fc1 input')).toThrow(/fc1 input: an input's fixed scale must be per tensor/);
    // and the defaults just work
    expect(new Q.WeightQuantizer([4, 64], { grid: 'nf4' }).extraRepr()).toBe('nf4 block64 ste dynamic/absmax');
    expect(new Q.WeightQuantizer([4, 64], { grid: 'mxfp4' }).extraRepr()).toBe('mxfp4 group32 ste dynamic/absmax');
    expect(new Q.WeightQuantizer([4, 64], { grid: 'e4m3', scale: 'learned' }).extraRepr()).toBe('e4m3 channel lsq learned');
  });
});
