/**
 * @file convert's contract as a property over grids × granularities × random shapes: the converted
 * layer's dequantizing forward equals the QAT layer's eval output bit for bit, its packed-kernel
 * forward equals it within float32 summation error, its codes are the quantizer's, and codes of
 * ≤ 4 bits are packed.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Generator, noGrad, randn, type Tensor } from '@qgrad/core';
import { Conv2d, Linear, Sequential } from '@qgrad/nn';
import * as Q from '@qgrad/quant';
import { arbQuant } from '@qgrad/quant/testing';

const bits = (t: Tensor): string[] => (t.dtype === 'float64' ? Array.from(new BigUint64Array(Float64Array.from(t.dataSync()).buffer), String) : Array.from(new Uint32Array(Float32Array.from(t.dataSync()).buffer), String));

/** A weight config for a [out, inF] matrix: any grid, a granularity that fits (MX: its blocks). */
function weightCase(out: number, inF: number): fc.Arbitrary<Q.WeightQuantConfig> {
  const divisors = (n: number) => Array.from({ length: n }, (_, i) => i + 1).filter((d) => n % d === 0);
  const gran: fc.Arbitrary<Q.Granularity> = fc.oneof(
    fc.constant('tensor' as const), fc.constant('channel' as const),
    fc.constantFrom(...divisors(inF)).map((group) => ({ group })), fc.constantFrom(...divisors(out * inF)).map((block) => ({ block })),
  );
  return fc.tuple(arbQuant.gridConfig(), gran, fc.constantFrom<Q.ScaleConfig | undefined>(undefined, 'fixed', 'learned', 'mse')).map(([grid, granularity, scale]) =>
    grid.grid === 'mxfp4' || grid.grid === 'mxfp8' ? { ...grid } : { ...grid, granularity, ...(scale && { scale }) },
  );
}

const INPUTS: (Q.ActQuantConfig | null)[] = [null, { bits: 8 }, { bits: 4, granularity: 'token' }, { grid: 'e4m3', granularity: 'token' }, { bits: 8, signed: false, estimator: 'lsq+' }];

describe('convert, as a property', () => {
  it('reproduces the eval output bit for bit (dequantizing) and within float32 error (packed kernel) for every grid × granularity × shape × dtype', () => {
    const cases = fc.tuple(fc.integer({ min: 1, max: 6 }), fc.constantFrom(32, 64, 96)).chain(([out, inF]) =>
      fc.record({ out: fc.constant(out), inF: fc.constant(inF), weight: weightCase(out, inF), seed: fc.integer({ min: 1, max: 1e6 }), dtype: fc.constantFrom<'float32' | 'float64'>('float32', 'float64'), input: fc.constantFrom(...INPUTS) }),
    );
    let ran = 0;
    let packed = 0;
    fc.assert(
      fc.property(cases, ({ out, inF, weight, seed, dtype, input }) => {
        const g = new Generator(seed);
        const lin = new Linear(inF, out, { generator: g, dtype });
        let q: Q.QuantLinear;
        try {
          q = Q.QuantLinear.from(lin, { weight, input });
        } catch (e) {
          // combinations the vocabulary refuses (a learned scale under lsq+ off an integer grid …) are named errors, never silent
          expect((e as Error).message).toMatch(/^QuantLinear (weight|input): /);
          return;
        }
        const m = new Sequential(q);
        const x = randn([3, inF], { generator: g, dtype });
        m.train();
        // one step so learned scales and weights move off their inits (the first forward initialises them)
        m.forward(x).square().mean().backward();
        noGrad(() => {
          for (const p of m.parameters()) if (p.grad) p.sub_(p.grad.mul(0.01));
        });
        m.eval();
        const want = noGrad(() => m.forward(x));
        const codes = q.weightQuantizer!.group(q.weight).restore(q.weightQuantizer!.codes(q.weight)).contiguous();
        Q.convert(m);
        const c = m.at(0) as Q.QuantizedLinear;
        expect(Array.from(c.codes().dataSync())).toEqual(Array.from(codes.dataSync()));
        const sb = Q.storedBits(c.weightPlan.grid);
        if (sb <= 4) expect(c.weightCodes.numel()).toBe(Math.ceil((out * inF * sb) / 8));
        // the packed kernel sums in another order: within 1e-5 of the output's scale
        const got = noGrad(() => m.forward(x)).dataSync();
        const ref = want.dataSync();
        const scale = Math.max(...Array.from(ref, Math.abs), 1e-30);
        const worst = Math.max(...Array.from(got, (v, i) => Math.abs(v - ref[i]!)));
        expect(worst, `packed forward off by ${worst} at output scale ${scale}`).toBeLessThanOrEqual(1e-5 * scale);
        if (c.packedWeight()) packed++;
        expect(bits(c.dequantizedForward(x))).toEqual(bits(want));
        c.kernel = 'dequantize';
        expect(bits(noGrad(() => m.forward(x)))).toEqual(bits(want));
        ran++;
      }),
      { numRuns: 120 },
    );
    expect(ran).toBeGreaterThan(60);
    // float32 layers of every grid whose scales run along rows take the kernel
    expect(packed).toBeGreaterThan(20);
  });

  it("converts a convolution on every grid family bit for bit (kernel 'dequantize'; the packed conv is packed-conv.test.ts)", () => {
    for (const weight of [{ grid: 'int', bits: 3 }, { grid: 'e2m1' }, { grid: 'mxfp4' }, { grid: 'nf4', granularity: { block: 32 } }, { grid: 'ternary' }, { grid: 'binary' }, { grid: 'codebook', levels: [-1, -0.25, 0, 0.5, 1] }] as Q.WeightQuantConfig[]) {
      const g = new Generator(3);
      const m = new Sequential(Q.QuantConv2d.from(new Conv2d(8, 4, 2, { padding: 1, generator: g }), { weight, input: { bits: 8, granularity: 'token' } })); // 32 inputs per filter
      m.eval();
      const x = randn([2, 8, 5, 5], { generator: g });
      const want = noGrad(() => m.forward(x));
      Q.convert(m, { kernel: 'dequantize' });
      expect(bits(noGrad(() => m.forward(x)))).toEqual(bits(want));
    }
  });
});
