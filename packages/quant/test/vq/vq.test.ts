/**
 * @file VQ layers: FSQ lands on its grid with the closed-form straight-through gradient and a
 * bijective implicit codebook; the VQ EMA step equals its closed form (and k-means at γ = 0);
 * VQ outputs are codebook rows with the encoder gradient passed through; dead codes are re-seeded;
 * residual VQ with one stage is VQ and adds codes; SimVQ trains the projection, never C.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Generator, randn, tensor } from '@qgrad/core';
import * as Q from '@qgrad/quant';

describe('FSQ', () => {
  it('outputs lie on the grid, each channel takes exactly L values, and the gradient is h(1 − tanh²)/⌊L/2⌋', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 2, max: 9 }), { minLength: 1, maxLength: 4 }), fc.integer({ min: 0, max: 1e6 }), (levels, seed) => {
        const fsq = new Q.FSQ(levels);
        const d = levels.length;
        const z = randn([400, d], { generator: new Generator(seed) }).mul(3).requiresGrad_();
        const { quantized, indices } = fsq.forward(z);
        const q = quantized.dataSync();
        const seen = levels.map(() => new Set<number>());
        for (let i = 0; i < q.length; i++) {
          const k = i % d;
          const w = Math.floor(levels[k]! / 2);
          const code = q[i]! * w;
          expect(Math.abs(code - Math.round(code))).toBeLessThan(1e-5);
          expect(Math.round(code)).toBeGreaterThanOrEqual(-w);
          expect(Math.round(code)).toBeLessThanOrEqual(Math.ceil(levels[k]! / 2) - 1);
          seen[k]!.add(Math.round(code));
        }
        seen.forEach((s, k) => expect(s.size).toBe(levels[k]));
        // implicit codebook round trip
        const back = fsq.indicesToCodes(indices).dataSync();
        for (let i = 0; i < q.length; i++) expect(back[i]).toBeCloseTo(q[i]!, 6);
        quantized.sum().backward();
        const g = z.grad!.dataSync();
        const zv = z.dataSync();
        for (let i = 0; i < g.length; i++) {
          const L = levels[i % d]!;
          const h = ((L - 1) * (1 + 1e-3)) / 2;
          const t = Math.atanh((L % 2 ? 0 : 0.5) / h);
          expect(g[i]).toBeCloseTo((h * (1 - Math.tanh(zv[i]! + t) ** 2)) / Math.floor(L / 2), 5);
        }
      }),
      { numRuns: 25 },
    );
  });

  it('maps zero to zero and every index to a distinct code', () => {
    const fsq = new Q.FSQ([8, 5, 3]);
    expect(Array.from(fsq.forward(tensor([[0, 0, 0]])).quantized.dataSync())).toEqual([0, 0, 0]);
    const all = fsq.indicesToCodes(tensor(Array.from({ length: 120 }, (_, i) => i), { dtype: 'int32' }));
    expect(Array.from(fsq.codesToIndices(all.mul(tensor([4, 2, 1]))).dataSync())).toEqual(Array.from({ length: 120 }, (_, i) => i));
    expect(() => new Q.FSQ([1, 4])).toThrow(/levels must be integers ≥ 2/);
  });
});

describe('VectorQuantizer', () => {
  it('EMA update equals its closed form', () => {
    const g = new Generator(4);
    const [K, d, n, decay, eps] = [5, 3, 40, 0.9, 1e-3];
    const vq = new Q.VectorQuantizer(K, d, { ema: { decay, eps }, generator: g });
    const N0 = Float64Array.from({ length: K }, (_, j) => j + 0.5);
    vq.emaCount!.copy_(tensor(Array.from(N0)));
    const m0 = vq.emaSum!.dataSync().slice();
    const z = randn([n, d], { generator: g });
    const idx = Q.nearestCode(z, vq.codebook);
    vq.emaUpdate(z, idx);
    const iv = idx.dataSync();
    const zv = z.dataSync();
    const N = Array.from(N0, (v) => v * decay);
    const m = Array.from(m0, (v) => v * decay);
    for (let i = 0; i < n; i++) {
      N[iv[i]!]! += 1 - decay;
      for (let k = 0; k < d; k++) m[iv[i]! * d + k]! += (1 - decay) * zv[i * d + k]!;
    }
    const total = N.reduce((a, b) => a + b);
    const cb = vq.codebook.dataSync();
    for (let j = 0; j < K; j++) {
      const s = ((N[j]! + eps) / (total + K * eps)) * total;
      for (let k = 0; k < d; k++) expect(cb[j * d + k]).toBeCloseTo(m[j * d + k]! / s, 5);
    }
  });

  it('with γ = 0 and no smoothing the EMA step is a k-means centroid step', () => {
    const g = new Generator(6);
    const vq = new Q.VectorQuantizer(3, 2, { ema: { decay: 0, eps: 0 }, generator: g });
    const z = randn([30, 2], { generator: g }).mul(2);
    const idx = Q.nearestCode(z, vq.codebook);
    const iv = idx.dataSync();
    vq.emaUpdate(z, idx);
    for (let j = 0; j < 3; j++) {
      const rows = Array.from(iv).flatMap((c, i) => (c === j ? [i] : []));
      if (!rows.length) continue;
      for (let k = 0; k < 2; k++) expect(vq.codebook.dataSync()[j * 2 + k]).toBeCloseTo(rows.reduce((a, i) => a + z.dataSync()[i * 2 + k]!, 0) / rows.length, 5);
    }
  });

  it('outputs codebook rows, passes the decoder gradient to the encoder, and reports perplexity in [1, K]', () => {
    const g = new Generator(7);
    const vq = new Q.VectorQuantizer(8, 4, { generator: g });
    const z = randn([2, 10, 4], { generator: g }).requiresGrad_();
    const out = vq.forward(z);
    const q = out.quantized.dataSync();
    const cb = vq.codebook.dataSync();
    const iv = out.indices.dataSync();
    expect(out.indices.shape).toEqual([2, 10]);
    for (let i = 0; i < 20; i++) for (let k = 0; k < 4; k++) expect(q[i * 4 + k]).toBeCloseTo(cb[iv[i]! * 4 + k]!, 6);
    out.quantized.mul(tensor([1, 2, 3, 4])).sum().backward();
    expect(Array.from(z.grad!.dataSync().slice(0, 4))).toEqual([1, 2, 3, 4]);
    expect(out.perplexity).toBeGreaterThanOrEqual(1);
    expect(out.perplexity).toBeLessThanOrEqual(8);
    out.loss.backward();
    expect(vq.codebook.grad).not.toBeNull(); // the codebook term trains the codes when not EMA
  });

  it('re-seeds dead codes from the batch', () => {
    const g = new Generator(9);
    const vq = new Q.VectorQuantizer(16, 2, { ema: { decay: 0.5 }, deadCodeThreshold: 0.5, generator: g });
    const z = randn([64, 2], { generator: g }).mul(0.01).add(100); // far from every initial code
    vq.forward(z);
    const cb = vq.codebook.dataSync();
    let near = 0;
    for (let j = 0; j < 16; j++) if (Math.abs(cb[j * 2]! - 100) < 1) near++;
    expect(near).toBe(16);
    expect(vq.forward(z).usage).toBeGreaterThan(1 / 16);
  });
});

describe('ResidualVQ and SimVQ', () => {
  it('residual VQ: one stage is VQ, more stages lower the error, decode(encode(z)) is the output, ∂ẑ/∂z = I', () => {
    const g = new Generator(11);
    const rvq = new Q.ResidualVQ(3, 32, 4, { generator: g });
    rvq.eval();
    const z = randn([50, 4], { generator: g }).requiresGrad_();
    const one = rvq.forward(z, 1);
    expect(Array.from(one.quantized.dataSync())).toEqual(Array.from(rvq.stages.at(0).forward(z).quantized.dataSync()));
    const errs = [1, 2, 3].map((l) => rvq.forward(z, l).quantized.sub(z).square().sum().item());
    expect(errs[2]!).toBeLessThan(errs[0]!);
    const full = rvq.forward(z);
    const dec = rvq.decode(full.indices).dataSync();
    full.quantized.dataSync().forEach((v, i) => expect(v).toBeCloseTo(dec[i]!, 5));
    full.quantized.sum().backward();
    expect(new Set(z.grad!.dataSync())).toEqual(new Set([1]));
  });

  it('SimVQ: outputs rows of P(C), C gets no gradient, P gets one', () => {
    const g = new Generator(12);
    const q = new Q.SimVQ(16, 4, { generator: g });
    const z = randn([20, 4], { generator: g });
    const out = q.forward(z);
    const e = q.codes().dataSync();
    const iv = out.indices.dataSync();
    for (let i = 0; i < 20; i++) for (let k = 0; k < 4; k++) expect(out.quantized.dataSync()[i * 4 + k]).toBeCloseTo(e[iv[i]! * 4 + k]!, 5);
    out.loss.backward();
    expect(q.frozen.requiresGrad).toBe(false);
    expect(q.projection.weight.grad!.abs().sum().item()).toBeGreaterThan(0);
  });
});
