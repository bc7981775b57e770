/**
 * @file AWQ's clip search: it never raises a layer's calibration output error over AWQ without it,
 * picks a range in [1 − maxShrink, 1]·absmax from its grid, clips where an outlier weight costs the
 * other weights their resolution, and says which grids and layers it skips.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Generator, noGrad, randn, tensor, type Tensor } from '@qgrad/core';
import { Linear, Module, Sequential } from '@qgrad/nn';
import * as Q from '@qgrad/quant';

/** Inputs [n, d] with channel magnitudes spread over two decades, mixed so channels correlate. */
function inputs(g: Generator, n: number, d: number): Tensor {
  const mix = randn([d, d], { generator: g }).div(Math.sqrt(d));
  const scales = tensor(Array.from({ length: d }, (_, j) => 10 ** ((2 * j) / d - 1)));
  return randn([n, d], { generator: g }).matmul(mix).mul(scales);
}

type Gran = 'channel' | { group: number };

/** One Linear [out, in] with weights drawn by `seed`, quantized by AWQ with or without the clip search. */
function awqLayer(seed: number, out: number, inF: number, bits: number, granularity: Gran, asymmetric: boolean, awqClip: boolean) {
  const g = new Generator(seed);
  const model = new Sequential(new Linear(inF, out, { generator: g }));
  const batches = [inputs(g, 48, inF), inputs(g, 48, inF)];
  const { report } = Q.ptq(model, batches, { method: 'awq', default: { weight: { grid: 'int', bits, granularity, asymmetric } }, awqClip });
  return report.rows[0]!;
}

const quantizeRows = (bits: number, groupSize: number) => (w: Tensor) => {
  // symmetric absmax per row group, the grid ptq gives a fixed-scale int layer
  const [out, inF] = w.shape as [number, number];
  const v = w.reshape([out, inF / groupSize, groupSize]);
  const qmax = 2 ** (bits - 1) - 1;
  const s = v.abs().amax(-1, true).clamp(1e-12).div(qmax);
  return v.div(s).round().clamp(-qmax - 1, qmax).mul(s).reshape([out, inF]);
};
const outputMse = (x: Tensor, w: Tensor, q: Tensor) => x.matmul(q.sub(w).t()).square().mean().item();

const granularity = fc.oneof(fc.constant<Gran>('channel'), fc.constantFrom(4, 8).map((group): Gran => ({ group })));

describe('awq clip search', () => {
  it('never raises a layer calibration output MSE over AWQ without it (ratio 1 is a candidate)', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 1e6 }), fc.integer({ min: 2, max: 8 }), fc.constantFrom(8, 16, 32), fc.integer({ min: 2, max: 4 }), granularity, fc.boolean(), (seed, out, inF, bits, gran, asym) => {
      const off = awqLayer(seed, out, inF, bits, gran, asym, false);
      const on = awqLayer(seed, out, inF, bits, gran, asym, true);
      expect(on.alpha).toBe(off.alpha); // the clip search runs after the same scale search
      expect(on.clipped).toBeGreaterThanOrEqual(0);
      expect(off.clipped).toBeUndefined();
      // the search works in float64, the report runs the float32 layer: a few ulp of slack
      expect(on.mse).toBeLessThanOrEqual(off.mse * (1 + 1e-5) + 1e-12);
    }), { numRuns: 25 });
  });

  it('picks, per unit, a range absmax·(1 − i/grid) in [1 − maxShrink, 1]·absmax, clamps to it, and never loses to no clipping', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 1e6 }), fc.integer({ min: 1, max: 6 }), fc.constantFrom(8, 16), fc.constantFrom(2, 4, 8, 16), fc.integer({ min: 2, max: 4 }), fc.integer({ min: 4, max: 25 }), fc.double({ min: 0, max: 0.9, noNaN: true }), (seed, out, inF, group, bits, grid, maxShrink) => {
      const groupSize = Math.min(group, inF);
      const g = new Generator(seed);
      const x = inputs(g, 40, inF).to('float64');
      const w = randn([out, inF], { generator: g, dtype: 'float64' });
      const quantize = quantizeRows(bits, groupSize);
      const c = Q.awqClipSearch(w, x, quantize, groupSize, { grid, maxShrink });
      const [maxVal, absmax] = [c.maxVal.dataSync(), c.absmax.dataSync()];
      expect(c.maxVal.shape).toEqual([out, inF / groupSize]);
      let shrunk = 0;
      for (let u = 0; u < maxVal.length; u++) {
        const r = maxVal[u]! / absmax[u]!;
        expect(r).toBeGreaterThanOrEqual(1 - maxShrink - 1e-12);
        expect(r).toBeLessThanOrEqual(1);
        expect(Math.abs(grid * (1 - r) - Math.round(grid * (1 - r)))).toBeLessThan(1e-9); // on the grid
        if (r < 1) shrunk++;
      }
      expect(c.clipped).toBeCloseTo(shrunk / maxVal.length, 12);
      // the weight is clamped to ±maxVal, unit by unit
      const lim = c.maxVal.reshape([out, inF / groupSize, 1]);
      const clamped = w.reshape([out, inF / groupSize, groupSize]).minimum(lim).maximum(lim.neg()).reshape([out, inF]);
      expect(Array.from(c.weight.dataSync())).toEqual(Array.from(clamped.dataSync()));
      expect(outputMse(x, w, quantize(c.weight))).toBeLessThanOrEqual(outputMse(x, w, quantize(w)) * (1 + 1e-12));
    }), { numRuns: 40 });
  });

  it('keeps the full range when maxShrink is 0 (the only candidate is ratio 1)', () => {
    const g = new Generator(4);
    const w = randn([4, 16], { generator: g, dtype: 'float64' });
    const c = Q.awqClipSearch(w, inputs(g, 32, 16).to('float64'), quantizeRows(3, 16), 16, { maxShrink: 0 });
    expect(c.clipped).toBe(0);
    expect(Array.from(c.weight.dataSync())).toEqual(Array.from(w.dataSync()));
  });

  it.each<[Gran, number]>([['channel', 0.7], [{ group: 32 }, 0.85]])('clips where an outlier weight sets the range, and lowers the layer error (%o)', (gran, bound) => {
    // white inputs make AWQ's scales ≈ 1, so the clip search is what acts; at 3 bits a 6σ weight sets
    // a step of 2 that rounds most of its row's (group's) N(0, 1) weights to zero. Measured MSE ratios
    // (on / off): 0.56 per channel, 0.73 in groups of 32 (16: 0.82, the outlier's own error weighs more)
    const g = new Generator(9);
    const w = randn([6, 64], { generator: g }).dataSync().slice();
    for (let r = 0; r < 6; r++) w[r * 64 + 5 + 7 * r] = 6; // one per row, so every row (and one group of each) has one
    const batches = [randn([64, 64], { generator: g }), randn([64, 64], { generator: g })];
    const run = (awqClip: boolean) => {
      const model = new Sequential(new Linear(64, 6, { generator: new Generator(0) }));
      noGrad(() => (model.getSubmodule('0') as Linear).weight.copy_(tensor(w).reshape([6, 64])));
      return Q.ptq(model, batches, { method: 'awq', default: { weight: { grid: 'int', bits: 3, granularity: gran } }, awqClip }).report;
    };
    const [off, on] = [run(false).rows[0]!, run(true)];
    expect(on.rows[0]!.clipped).toBeGreaterThan(0);
    expect(on.rows[0]!.mse).toBeLessThan(bound * off.mse);
    expect(on.toString()).toMatch(/clip \d+%/);
  });

  it('skips q and k projections by default, as the reference, and names grids it cannot clip', () => {
    class Attn extends Module {
      constructor(g: Generator) {
        super();
        this.registerModule('q_proj', new Linear(16, 16, { generator: g }));
        this.registerModule('v_proj', new Linear(16, 16, { generator: g }));
      }
      forward(x: Tensor): Tensor {
        return (this.getSubmodule('v_proj') as Linear).forward((this.getSubmodule('q_proj') as Linear).forward(x));
      }
    }
    const g = new Generator(2);
    const batches = [inputs(g, 32, 16)];
    const grid = { weight: { grid: 'int' as const, bits: 4 } };
    const rows = Q.ptq(new Attn(g), batches, { method: 'awq', default: grid }).report.rows;
    expect(rows.map((r) => [r.name, r.clipped !== undefined])).toEqual([['q_proj', false], ['v_proj', true]]);
    const all = Q.ptq(new Attn(g), batches, { method: 'awq', default: grid, awqClip: { skip: [] } }).report.rows;
    expect(all.every((r) => r.clipped !== undefined)).toBe(true);
    const tensorGrid = { weight: { grid: 'int' as const, bits: 4, granularity: 'tensor' as const } };
    expect(() => Q.ptq(new Attn(g), batches, { method: 'awq', default: tensorGrid })).toThrow(/clip search clips per output row or per group of a row.*awqClip: false/);
    expect(() => Q.ptq(new Attn(g), batches, { method: 'awq', default: tensorGrid, awqClip: false })).not.toThrow();
    expect(() => Q.awqClipSearch(randn([2, 6]), randn([3, 6]), (v) => v, 4)).toThrow(/group size 4 must divide the 6 inputs/);
  });
});
