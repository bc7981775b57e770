/**
 * @file The sample-quality judge of the diffusion experiment: the
 * Fréchet distance against its closed form where the covariances commute, and the judge itself on
 * real digits (high class accuracy, a small distance between two halves of the test set, a large
 * one to noise).
 */
import fc from 'fast-check';
import { Generator, randn } from '@qgrad/core';
import { describe, expect, it } from 'vitest';
import { classAccuracy, featureMoments, frechetDistance, judgeFeatures, JUDGE_FEATURES, mnistJudge, realDigits } from './sample-quality.js';

/** A random orthogonal d×d matrix (Gram–Schmidt on Gaussian columns), row-major. */
function orthogonal(d: number, g: Generator): Float64Array {
  const q = Float64Array.from(randn([d, d], { generator: g, dtype: 'float64' }).dataSync());
  for (let j = 0; j < d; j++) {
    for (let k = 0; k < j; k++) {
      let dot = 0;
      for (let i = 0; i < d; i++) dot += q[i * d + j]! * q[i * d + k]!;
      for (let i = 0; i < d; i++) q[i * d + j]! -= dot * q[i * d + k]!;
    }
    let norm = 0;
    for (let i = 0; i < d; i++) norm += q[i * d + j]! ** 2;
    for (let i = 0; i < d; i++) q[i * d + j]! /= Math.sqrt(norm);
  }
  return q;
}

/** n rows x = μ + R·diag(σ)·z, z standard normal: covariance R·diag(σ²)·Rᵀ. */
function gaussianRows(n: number, mu: number[], sigma: number[], r: Float64Array, g: Generator): Float64Array {
  const d = mu.length;
  const z = randn([n, d], { generator: g, dtype: 'float64' }).dataSync();
  const out = new Float64Array(n * d);
  for (let i = 0; i < n; i++) for (let a = 0; a < d; a++) {
    let s = mu[a]!;
    for (let b = 0; b < d; b++) s += r[a * d + b]! * sigma[b]! * Number(z[i * d + b]);
    out[i * d + a] = s;
  }
  return out;
}

describe('frechetDistance', () => {
  it('is the closed form |Δμ|² + Σ(σa − σb)² when both covariances share their eigenvectors', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 0, max: 2 ** 31 - 1 }), (d, seed) => {
        const g = new Generator(seed);
        const r = orthogonal(d, g);
        const draw = () => Array.from({ length: d }, () => 0.2 + 2 * g.random());
        const [sa, sb] = [draw(), draw()];
        const [ma, mb] = [draw().map((v) => v - 1), draw()];
        const a = gaussianRows(400, ma, sa, r, g);
        const b = gaussianRows(300, mb, sb, r, g);
        // the closed form on the sample moments: their covariances commute only approximately, so
        // compare with the formula on the exact moments within the sampling error of 400/300 rows
        const Ma = featureMoments(a, d);
        const Mb = featureMoments(b, d);
        let mean = 0;
        for (let j = 0; j < d; j++) mean += (Ma.mean[j]! - Mb.mean[j]!) ** 2;
        let exact = 0;
        for (let j = 0; j < d; j++) exact += (sa[j]! - sb[j]!) ** 2;
        const fd = frechetDistance(a, b, d);
        expect(fd).toBeGreaterThanOrEqual(mean * (1 - 1e-9));
        // the mean term from the sample means; the covariance term against the population σ within sampling error
        expect(Math.abs(fd - mean - exact)).toBeLessThan(0.35 * d + 0.1 * exact);
        // symmetric, and zero against itself
        expect(Math.abs(frechetDistance(b, a, d) - fd)).toBeLessThan(1e-8 * (1 + fd));
        expect(frechetDistance(a, a, d)).toBeLessThan(1e-8 * d);
      }),
      { numRuns: 25 },
    );
  });

  it('is exact on moments built to commute: two rows sets with the same covariance differ only by the mean shift', () => {
    const g = new Generator(3);
    const a = gaussianRows(200, [0, 0, 0], [1, 2, 0.5], orthogonal(3, g), g);
    const shift = [0.5, -1, 2];
    const b = a.map((v, i) => v + shift[i % 3]!);
    expect(frechetDistance(a, b, 3)).toBeCloseTo(0.25 + 1 + 4, 8);
  });

  it('names what it cannot take', () => {
    expect(() => frechetDistance([1, 2, 3], [1, 2, 3, 4], 3)).toThrow(/at least 2 rows of 3 features/);
  });
});

describe('the MNIST judge', () => {
  it('classifies real digits, puts two halves of the test set close and noise far', () => {
    const judge = mnistJudge({ steps: 250 });
    expect(judge.testAcc).toBeGreaterThan(0.9);
    const { images, labels } = realDigits(1000);
    expect(classAccuracy(judge, images, labels)).toBeCloseTo(judge.testAcc, 1);
    const f = judgeFeatures(judge, images);
    expect(f.length).toBe(1000 * JUDGE_FEATURES);
    const half = 500 * JUDGE_FEATURES;
    const same = frechetDistance(f.subarray(0, half), f.subarray(half), JUDGE_FEATURES);
    const noise = judgeFeatures(judge, randn([500, 1, 28, 28], { generator: new Generator(1) }).clamp(-1, 1));
    const far = frechetDistance(f.subarray(0, half), noise, JUDGE_FEATURES);
    expect(far).toBeGreaterThan(10 * same);
    expect(classAccuracy(judge, images.narrow(0, 0, 10), labels.slice(0, 10).map((l) => (l + 1) % 10))).toBeLessThan(0.5);
    expect(() => classAccuracy(judge, images.narrow(0, 0, 3), [1, 2])).toThrow(/2 labels for 3 images/);
  }, 120_000);
});
