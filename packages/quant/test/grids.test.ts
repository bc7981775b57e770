import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import type { Tensor } from '@qgrad/core';
import * as Q from '@qgrad/quant';
import { arbQuant, assertOnGrid, checkEstimatorGradient, checkHalfStepError, checkIdempotent, checkMonotone, checkScaleGradient } from '@qgrad/quant/testing';
import { assertAllclose, gradcheck } from '@qgrad/core/testing';

const f64 = (s: number[], seed = 1, scale = 1) => q.randn(s, { dtype: 'float64', generator: new q.Generator(seed) }).mul(scale);

describe('integer grids through the testing kit', () => {
  it('fake quantization is on the grid, idempotent, monotone, within half a step, with ste/clipped-ste/trust semantics', () => {
    fc.assert(
      fc.property(arbQuant.intGrid(), fc.integer({ min: 1, max: 999 }), (grid, seed) => {
        const { qmin, qmax } = Q.intRange(grid.bits!, grid);
        const s = 0.11;
        const x = f64([40], seed, 1.5);
        const v = f64([40], seed + 1);
        const fq = (est: string) => (t: Tensor) => q.fakeQuantize(t, s, 0, { qmin, qmax, estimator: est });
        assertOnGrid(fq('ste')(x), (y) => Number.isInteger(Math.round(y / s * 1e9) / 1e9) && y / s >= qmin - 1e-9 && y / s <= qmax + 1e-9);
        checkIdempotent(fq('ste'), x);
        checkMonotone(fq('ste'), x);
        checkHalfStepError(fq('ste'), x, s, qmin * s, qmax * s);
        checkEstimatorGradient(fq('ste'), x, v, 'ste');
        checkEstimatorGradient(fq('clipped-ste'), x, v, 'clipped-ste', { lo: qmin * s, hi: qmax * s });
        checkEstimatorGradient(fq('trust'), x, v, 'trust', { radius: s / 2 });
      }),
      { numRuns: 15 },
    );
  });

  it('the LSQ scale gradient equals finite differences minus the straight-through x/s term, away from ties', () => {
    let checked = 0;
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 999 }), fc.integer({ min: 2, max: 6 }), (seed, bits) => {
        const { qmin, qmax } = Q.intRange(bits);
        const x = f64([16], seed);
        const v = f64([16], seed + 7);
        const fq = (t: Tensor, s: Tensor) => q.fakeQuantize(t, s, 0, { qmin, qmax, estimator: 'lsq' });
        if (checkScaleGradient(fq, x, q.tensor([0.3], { dtype: 'float64' }), v, 'lsq')) checked++;
      }),
      { numRuns: 15 },
    );
    expect(checked).toBeGreaterThan(10);
  });

  it('intRange gives signed, narrow and unsigned ranges at 1–16 bits and names bad widths', () => {
    expect(Q.intRange(1, { signed: false })).toEqual({ qmin: 0, qmax: 1 });
    expect(() => Q.intRange(1)).toThrow(/2…16 for a signed int grid, got 1 \(the signed 1-bit grid \{−1, \+1\} is grid 'binary'\)/);
    expect(Q.intRange(8)).toEqual({ qmin: -128, qmax: 127 });
    expect(Q.intRange(8, { narrow: true })).toEqual({ qmin: -127, qmax: 127 });
    expect(Q.intRange(4, { signed: false })).toEqual({ qmin: 0, qmax: 15 });
    expect(Q.intRange(16)).toEqual({ qmin: -32768, qmax: 32767 });
    expect(() => Q.intRange(17)).toThrow(/bits must be an integer in 2…16 for a signed int grid, got 17/);
  });

  it('ternary values are in {−s, 0, s} and binary values in {−s, s}', () => {
    const x = f64([50], 3);
    const s = 0.8;
    const at = (v: number) => ({ scale: q.tensor([[v]], { dtype: 'float64' }) });
    assertOnGrid(Q.fakeQuant(x, { grid: 'ternary' }, at(s)), [-s, 0, s]);
    assertOnGrid(Q.fakeQuant(x, { grid: 'binary' }, at(s)), [-s, s]);
    // BitNet: W̃ = 0 ⇔ |W| < γ/2 (half-even at the tie)
    expect(Array.from(Q.fakeQuant(q.tensor([0.4, 0.5, 0.6, -0.5], { dtype: 'float64' }), { grid: 'ternary' }, at(1)).dataSync())).toEqual([0, 0, 1, 0]); // integer codes carry no −0
    expect(Array.from(Q.fakeQuant(q.tensor([0, -0.1, 0.1], { dtype: 'float64' }), { grid: 'binary' }, at(1)).dataSync())).toEqual([1, -1, 1]); // zero maps to +s
    const xb = x.detach().requiresGrad_();
    Q.fakeQuant(xb, { grid: 'binary', estimator: 'clipped-ste' }, at(s)).sum().backward();
    Array.from(xb.grad!.dataSync()).forEach((g, i) => expect(g).toBe(Math.abs(x.dataSync()[i]!) <= s ? 1 : 0));
  });
});

describe('FP ExMy grids', () => {
  it('contain exactly the representable values: E4M3fn 253 (±0 collapsed), E5M2 247, E2M1 15', () => {
    expect(Q.fpValues('e4m3fn').length).toBe(253);
    expect(Q.fpValues('e5m2').length).toBe(247);
    expect(Q.fpValues('e2m1')).toEqual([-6, -4, -3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4, 6]);
    expect(Q.fpLimits('e4m3fn').max).toBe(448);
    expect(Q.fpLimits('e5m2').max).toBe(57344);
    expect(Q.fpLimits('e3m2').max).toBe(28);
    expect(Q.fpLimits('e2m3').max).toBe(7.5);
    expect(Math.min(...Q.fpValues('e4m3fn').filter((v) => v > 0))).toBe(2 ** -9);
  });

  it('E4M3fn decodes all 256 codes like a bit-level reference (NaN only at S.1111.111)', () => {
    for (let code = 0; code < 256; code++) {
      const s = code >> 7;
      const e = (code >> 3) & 15;
      const m = code & 7;
      const ref = (e & 15) === 15 && m === 7 ? NaN : (s ? -1 : 1) * (e === 0 ? (m / 8) * 2 ** -6 : (1 + m / 8) * 2 ** (e - 7));
      expect(Object.is(Q.decodeFp(Q.FP_FORMATS.e4m3fn, s, e, m), ref) || Q.decodeFp(Q.FP_FORMATS.e4m3fn, s, e, m) === ref).toBe(true);
    }
  });

  it('rounds to the nearest representable value (half-even), saturates, and is idempotent and monotone', () => {
    fc.assert(
      fc.property(fc.constantFrom<Q.FpFormatName>('e4m3fn', 'e5m2', 'e2m1', 'e3m2', 'e2m3'), fc.integer({ min: 1, max: 999 }), (fmt, seed) => {
        const vals = Q.fpValues(fmt);
        const max = Q.fpLimits(fmt).max;
        const x = f64([30], seed, max / 3);
        const y = Q.roundToFp(x, fmt);
        assertOnGrid(y, vals, 0);
        checkIdempotent((t) => Q.roundToFp(t, fmt), x);
        checkMonotone((t) => Q.roundToFp(t, fmt), x);
        Array.from(x.dataSync()).forEach((xv, i) => {
          const c = Math.max(-max, Math.min(max, xv));
          const best = Math.min(...vals.map((l) => Math.abs(l - c)));
          expect(Math.abs(y.dataSync()[i]! - c)).toBeCloseTo(best, 12); // nearest
        });
      }),
      { numRuns: 15 },
    );
  });

  it('breaks ties half-even by default and half away on request (E2M1 0.25 → 0 vs 0.5)', () => {
    const t = q.tensor([0.25, 0.75, 2.5, 5, -0.25], { dtype: 'float64' });
    expect(Array.from(Q.roundToFp(t, 'e2m1').dataSync())).toEqual([0, 1, 2, 4, -0]);
    expect(Array.from(Q.roundToFp(t, 'e2m1', 'halfAway').dataSync())).toEqual([0.5, 1, 3, 6, -0.5]);
    expect(Array.from(Q.roundToFp(q.tensor([464, 470, 1e6]), 'e4m3fn').dataSync())).toEqual([448, 448, 448]);
  });
});

describe('MX block formats', () => {
  it('share a power-of-two scale per block of 32, stay within 2^X·max, and treat blocks independently', () => {
    const x = f64([2, 64], 5).mul(q.tensor([[1], [30]], { dtype: 'float64' }));
    const X = Q.mxSharedExponent(x.reshape([2, 2, 32]), Q.fpLimits('e2m1').emax);
    expect(X.shape).toEqual([2, 2, 1]);
    for (const v of X.dataSync()) expect(Number.isInteger(v)).toBe(true);
    const y = Q.fakeQuant(x, { grid: 'mxfp4' });
    const yb = y.reshape([2, 2, 32]);
    const lim = q.pow(2, X).mul(6);
    expect(yb.abs().le(lim).to('int32').sum().item()).toBe(128);
    // changing one block does not change another
    const x2 = x.clone();
    q.noGrad(() => x2.narrow(1, 0, 32).mul_(100));
    const y2 = Q.fakeQuant(x2, { grid: 'mxfp4' });
    assertAllclose(y2.narrow(1, 32, 32), y.narrow(1, 32, 32), { rtol: 0, atol: 0 });
    // each element is 2^X times an E2M1 value
    const vals = Q.fpValues('e2m1');
    assertOnGrid(yb.div(q.pow(2, X)), vals);
    expect(() => Q.fakeQuant(q.zeros([2, 20]), { grid: 'mxfp4' })).toThrow(/fakeQuant: axis 1 of size 20 \(shape \[2, 20\]\) does not split into groups of 32/);
    expect(() => Q.fakeQuant(x, { grid: 'mxfp4', granularity: 'channel' })).toThrow(/grid 'mxfp4' shares a power-of-two scale per block of 32 along the last axis; granularity channel does not apply/);
  });
});

describe('NF4, codebooks and the relaxed quantizer on level grids', () => {
  it('NF4 has 16 levels from −1 to 1 with a 0, and block absmax elements are reconstructed exactly', () => {
    expect(Q.NF4_LEVELS.length).toBe(16);
    expect(Q.NF4_LEVELS[0]).toBe(-1);
    expect(Q.NF4_LEVELS[15]).toBe(1);
    expect(Q.NF4_LEVELS).toContain(0);
    const x = f64([4, 64], 9);
    const y = Q.fakeQuant(x, { grid: 'nf4' });
    const blocks = x.reshape([-1, 64]);
    const c = blocks.abs().amax(-1, true);
    assertOnGrid(y.reshape([-1, 64]).div(c), [...Q.NF4_LEVELS], 1e-12);
    const iMax = blocks.abs().argmax(-1).dataSync();
    Array.from(iMax).forEach((j, b) => expect(y.reshape([-1, 64]).dataSync()[b * 64 + j]).toBeCloseTo(blocks.dataSync()[b * 64 + j]!, 12));
  });

  it('a learned codebook snaps to the nearest entry, passes x straight through and sends gradients to the chosen entries', () => {
    const levels = q.tensor([-1, 0.2, 0.9], { dtype: 'float64', requiresGrad: true });
    const x = q.tensor([-0.7, 0.1, 0.5, 0.6, 3], { dtype: 'float64', requiresGrad: true });
    const y = Q.quantizeToLevels(x, levels);
    expect(Array.from(y.dataSync())).toEqual([-1, 0.2, 0.2, 0.9, 0.9]);
    y.mul(q.tensor([1, 2, 3, 4, 5], { dtype: 'float64' })).sum().backward();
    expect(Array.from(x.grad!.dataSync())).toEqual([1, 2, 3, 4, 5]);
    expect(Array.from(levels.grad!.dataSync())).toEqual([1, 5, 9]);
  });

  it('relaxed estimator on a level grid has nonzero slope for τ > 0 and the soft quantizer hardens as τ → 0', () => {
    const x = q.tensor([-0.3, 0.1, 0.55], { dtype: 'float64', requiresGrad: true });
    Q.quantizeToLevels(x, [-1, 0, 1], { estimator: 'relaxed', temperature: 0.3 }).sum().backward();
    for (const g of x.grad!.dataSync()) expect(g).toBeGreaterThan(0);
    assertAllclose(q.softQuantize(x.detach(), [-1, 0, 1], 1e-4), Q.quantizeToLevels(x.detach(), [-1, 0, 1]), { atol: 1e-9 });
    gradcheck((t) => q.softQuantize(t, Q.NF4_LEVELS as number[], 0.05), [f64([6], 2, 0.5)]);
  });
});

describe('scale initialisers and granularity', () => {
  it('absmean, median, LSQ and Gaussian-MSE inits follow their formulas', () => {
    const x = q.tensor([[-2, 1, 0.5, -0.5]], { dtype: 'float64' });
    const int4 = Q.intGrid({ bits: 4 });
    expect(Q.initScale(x, 'absmean', int4).scale.item()).toBe(1);
    expect(Q.initScale(x, 'median', int4).scale.item()).toBe(0.75);
    expect(Q.initScale(x, 'lsq', int4).scale.item()).toBeCloseTo(2 / Math.sqrt(7), 12);
    expect(Q.initScale(x, 'absmax', int4).scale.item()).toBe(2 / 7); // max|x| lands on the top level
    expect(Q.initScale(x, 'absmax', Q.makeGrid({ grid: 'e4m3' })).scale.item()).toBe(2 / 448);
    const rms = Math.sqrt((4 + 1 + 0.25 + 0.25) / 4);
    expect(Q.initScale(x, 'gaussian', int4).scale.item()).toBeCloseTo((2 * 2.51393 * rms) / 15, 12);
    const asym = Q.initScale(q.tensor([[0.5, 2, 3.5]], { dtype: 'float64' }), 'minmax', Q.intGrid({ bits: 4, asymmetric: true }), { zeroPoint: true });
    expect(asym.scale.item()).toBeCloseTo(3.5 / 15, 12);
    expect(asym.zeroPoint.item()).toBe(0);
    expect(() => Q.initScale(x, 'gaussian', Q.intGrid({ bits: 9 }))).toThrow(/'gaussian' needs bits in/);
  });

  it('the MSE-optimal scale never has more error than absmax, and percentile clips outliers', () => {
    const x = f64([1, 200], 11);
    const spec = (rule: Q.ScaleRule): Q.FakeQuantConfig => ({ grid: 'int', bits: 3, scale: { rule } });
    const err = (s: Q.FakeQuantConfig) => Q.fakeQuant(x, s).sub(x).square().sum().item();
    expect(err(spec('mse'))).toBeLessThanOrEqual(err(spec('absmax')) + 1e-12);
    expect(Q.initQuantParams(x, spec({ percentile: 90 })).scale.item()).toBeLessThan(Q.initQuantParams(x, spec('absmax')).scale.item());
  });

  it('per-group (any size), per-channel and per-token quantization equal quantizing each group as its own tensor', () => {
    fc.assert(
      fc.property(fc.constantFrom(1, 2, 3, 6), fc.integer({ min: 1, max: 99 }), (g, seed) => {
        const x = f64([3, 6], seed);
        const grid: Q.FakeQuantConfig = { grid: 'int', bits: 4 };
        const y = Q.fakeQuant(x, { ...grid, granularity: { group: g } });
        for (let r = 0; r < 3; r++) for (let k = 0; k < 6 / g; k++) {
          const part = x.select(0, r).narrow(0, k * g, g);
          assertAllclose(y.select(0, r).narrow(0, k * g, g), Q.fakeQuant(part, grid), { rtol: 0, atol: 1e-15 });
        }
        const yc = Q.fakeQuant(x, { ...grid, granularity: { channel: 1 } });
        for (let c = 0; c < 6; c++) assertAllclose(yc.select(1, c), Q.fakeQuant(x.select(1, c), grid), { rtol: 0, atol: 1e-15 });
        const yt = Q.fakeQuant(x, { ...grid, granularity: 'token' });
        for (let r = 0; r < 3; r++) assertAllclose(yt.select(0, r), Q.fakeQuant(x.select(0, r), grid), { rtol: 0, atol: 1e-15 });
      }),
      { numRuns: 10 },
    );
    expect(() => Q.toGroups(q.zeros([2, 6]), { group: 4 })).toThrow(/axis 1 of size 6 \(shape \[2, 6\]\) does not split into groups of 4/);
  });
});

describe('the functional API: fakeQuant and quantize', () => {
  it('every generated config runs, keeps the shape, and quantize().dequantize() equals fakeQuant', () => {
    fc.assert(
      fc.property(arbQuant.quantizerCase(), fc.integer({ min: 1, max: 99 }), ({ config, shape }, seed) => {
        const x = f64(shape, seed);
        const y = Q.fakeQuant(x, config);
        expect(y.shape).toEqual(shape);
        assertAllclose(Q.quantize(x, config).dequantize(), y, { rtol: 0, atol: 0 });
      }),
      { numRuns: 25 },
    );
  });

  it('learnable scales are tensors the caller owns: LSQ gradients reach them through the spec', () => {
    const w = f64([4, 8], 4);
    const spec: Q.FakeQuantConfig = { grid: 'int', bits: 3, granularity: { channel: 0 }, scale: 'learned' };
    const p = Q.initQuantParams(w, spec);
    expect(p.scale.shape).toEqual([4, 1]);
    p.scale.requiresGrad_();
    Q.fakeQuant(w, spec, p).square().sum().backward();
    expect(p.scale.grad!.shape).toEqual([4, 1]);
    expect(p.scale.grad!.abs().sum().item()).toBeGreaterThan(0);
    expect(() => Q.fakeQuant(w, spec, { scale: q.ones([3, 1], { dtype: 'float64' }) })).toThrow(/do not fit the grouped view \[4, 8\]; expected \[4, 1\]/);
  });

  it('a Hadamard-rotated spec quantizes in the rotated basis and rotates back; int codes are integers in range', () => {
    const x = f64([2, 16], 8);
    const spec: Q.FakeQuantConfig = { grid: 'int', bits: 4, granularity: 'token', scale: 'gaussian', hadamard: { blockSize: 16 } };
    const y = Q.fakeQuant(x, spec);
    const inner = Q.fakeQuant(q.hadamard(x), { ...spec, hadamard: undefined });
    assertAllclose(q.hadamard(y), inner, { rtol: 1e-10, atol: 1e-12 });
    const c = Q.quantize(x, spec).codes;
    expect(c.dtype).toBe('int32');
    for (const v of c.dataSync()) expect(v >= -8 && v <= 7).toBe(true);
  });
});
