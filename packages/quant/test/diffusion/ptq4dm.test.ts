/**
 * @file PTQ4DM (methods-2.md §11): the NDTC timestep histogram follows the clamped normal it is
 * drawn from (property), uniform and single modes cover what they say, each calibration input is the
 * float sampler's own state at its recorded (true) timestep, and on a small DiT the W8A8 model
 * calibrated across timesteps predicts the float model's noise better than one calibrated at a
 * single timestep. Against pure-noise calibration the comparison is measured and printed, not
 * asserted: on this random-weight model noise calibration does as well or better (see the test).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Generator, noGrad, type Tensor } from '@qgrad/core';
import { Diffusion } from '@qgrad/nn';
import * as Q from '@qgrad/quant';
import { tinyDiT } from './tiny-dit.js';

/** Φ by the Abramowitz–Stegun 7.1.26 erf (|error| < 1.5e-7). */
function normalCdf(z: number): number {
  const x = Math.abs(z) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * x);
  const erf = 1 - (((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t) * Math.exp(-x * x);
  return z >= 0 ? (1 + erf) / 2 : (1 - erf) / 2;
}

describe('timestep sampling (NDTC)', () => {
  it('draws step indices whose histogram matches trunc(N(mean, std)·K) clamped to [0, K−1] (Kolmogorov distance < 0.05 on 3,000 draws)', () => {
    fc.assert(
      fc.property(
        fc.record({ mean: fc.double({ min: 0.1, max: 0.9, noNaN: true }), std: fc.double({ min: 0.05, max: 0.6, noNaN: true }), steps: fc.integer({ min: 5, max: 250 }), seed: fc.integer({ min: 0, max: 1e6 }) }),
        ({ mean, std, steps, seed }) => {
          const n = 3000;
          const j = Q.sampleTimestepIndices(n, steps, { kind: 'ndtc', mean, std }, new Generator(seed));
          expect(j.every((v) => Number.isInteger(v) && v >= 0 && v < steps)).toBe(true);
          const counts = new Array<number>(steps).fill(0);
          for (const v of j) counts[v]!++;
          let cum = 0;
          let ks = 0;
          for (let m = 0; m < steps; m++) {
            cum += counts[m]! / n;
            // j ≤ m ⟺ (mean + std·Z)·K < m + 1 (trunc of negatives is ≤ 0 too); the last index takes the upper tail
            const want = m === steps - 1 ? 1 : normalCdf(((m + 1) / steps - mean) / std);
            ks = Math.max(ks, Math.abs(cum - want));
          }
          expect(ks).toBeLessThan(0.05);
        },
      ),
      { numRuns: 25 },
    );
  });

  it('uniform mode hits every index below ⌈upTo·K⌉ and none above; single mode puts every sample at its index', () => {
    const j = Q.sampleTimestepIndices(4000, 50, { kind: 'uniform', upTo: 0.8 }, new Generator(3));
    expect(new Set(j).size).toBe(40);
    expect(Math.max(...j)).toBe(39);
    expect(Q.sampleTimestepIndices(5, 50, { kind: 'single', index: 7 }, new Generator(0))).toEqual([7, 7, 7, 7, 7]);
    expect(() => Q.sampleTimestepIndices(5, 50, { kind: 'single', index: 50 }, new Generator(0))).toThrow(/single index must be an integer in \[0, 50\)/);
  });

  it('maps step indices to real timesteps as sampleDdim spaces them', () => {
    expect(Q.ddimTimestep(20, 50, 1000)).toBe(400);
    expect(Q.ddimTimestep(9, 10, 100)).toBe(90);
  });
});

describe('collectCalibration', () => {
  it('keeps, for each sample, the float sampler state handed to the model at its recorded true timestep, with its label', () => {
    const model = tinyDiT(1);
    const diffusion = new Diffusion({ timesteps: 100 });
    const [n, K, seed] = [12, 10, 42];
    const labels = Array.from({ length: n }, (_, i) => i % 4);
    const cal = Q.collectCalibration(diffusion, model, { samples: n, shape: [1, 8, 8], steps: K, labels, batchSize: n, generator: new Generator(seed) });
    expect(cal.x.shape).toEqual([n, 1, 8, 8]);
    expect(cal.t).toEqual(cal.index.map((j) => j * 10));
    expect(cal.labels).toEqual(labels);
    // the same draws, then the whole trajectory recorded
    const g = new Generator(seed);
    const idx = Q.sampleTimestepIndices(n, K, { kind: 'ndtc' }, g);
    expect(idx).toEqual(cal.index);
    const states = new Map<number, Tensor>();
    diffusion.sampleDdim((x, t) => (states.set(t[0]!, x.clone()), model.forward(x, t, labels)), [n, 1, 8, 8], K, { generator: g });
    expect([...states.keys()]).toEqual([90, 80, 70, 60, 50, 40, 30, 20, 10, 0]);
    for (let i = 0; i < n; i++) expect(Array.from(cal.x.narrow(0, i, 1).dataSync())).toEqual(Array.from(states.get(cal.t[i]!)!.narrow(0, i, 1).dataSync()));
  });

  it('calibrationBatches carries x_t, t and labels as int32 tensors for ptq', () => {
    const model = tinyDiT(2);
    const cal = Q.collectCalibration(new Diffusion({ timesteps: 100 }), model, { samples: 5, shape: [1, 8, 8], steps: 10, labels: [0, 1, 2, 3, 0], generator: new Generator(1) });
    const b = Q.calibrationBatches(cal, 2);
    expect(b.map((x) => x[0]!.shape[0])).toEqual([2, 2, 1]);
    expect(Array.from(b[1]![1]!.dataSync())).toEqual(cal.t.slice(2, 4));
    expect(b[2]![2]!.dtype).toBe('int32');
  });
});

describe('PTQ4DM vs single-timestep and pure-noise calibration (W8A8 RTN, small DiT)', () => {
  it('timestep-aware calibration gives a lower noise-prediction MSE vs float on held-out (x_t, t) than calibration at one timestep; noise calibration is measured', () => {
    const diffusion = new Diffusion({ timesteps: 100 });
    const [n, K] = [64, 10];
    const labels = Array.from({ length: n }, (_, i) => i % 4);
    const float = tinyDiT(1);
    const shape = [1, 8, 8];
    const held = Q.collectCalibration(diffusion, float, { samples: n, shape, steps: K, sampling: { kind: 'uniform' }, labels, generator: new Generator(99) });
    const ref = noGrad(() => float.forward(held.x, held.t, held.labels));
    const A8: Q.ActQuantConfig = { grid: 'int', bits: 8, scale: { mode: 'fixed', rule: 'mse' } };
    const mse = (cal: Q.CalibrationSet) => {
      const m = tinyDiT(1);
      Q.ptq4dm(m, cal, { method: 'rtn', default: { weight: { grid: 'int', bits: 8 }, input: A8 }, skip: ['**.y_embed'] });
      return noGrad(() => m.forward(held.x, held.t, held.labels).sub(ref).square().mean().item());
    };
    const cal = (sampling: Q.TimestepSampling) => Q.collectCalibration(diffusion, float, { samples: n, shape, steps: K, sampling, labels, generator: new Generator(5) });
    const r = {
      ndtc: mse(cal({ kind: 'ndtc' })),
      uniform: mse(cal({ kind: 'uniform' })),
      firstStep: mse(cal({ kind: 'single', index: K - 1 })),
      lastStep: mse(cal({ kind: 'single', index: 0 })),
      noise: mse(Q.noiseCalibration(diffusion, n, shape, { labels, generator: new Generator(5) })),
    };
    console.log('W8A8 RTN held-out MSE vs float by calibration:', Object.entries(r).map(([k, v]) => `${k} ${v.toExponential(3)}`).join(', '));
    expect(r.ndtc).toBeLessThan(r.firstStep);
    expect(r.ndtc).toBeLessThan(r.lastStep);
    expect(r.uniform).toBeLessThan(Math.min(r.firstStep, r.lastStep));
    // measured, not a claim: with these random weights pure noise at uniform t calibrates as well (measured
    // 9.2e-4 vs NDTC 2.6e-3 when written); both stay far below the single-timestep errors
    expect(r.noise).toBeLessThan(Math.min(r.firstStep, r.lastStep));
  });
});
