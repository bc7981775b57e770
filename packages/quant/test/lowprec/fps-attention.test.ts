/**
 * @file FPSAttention: the E4M3 tile casts keep their invariants (grid values, absmax on 448, error
 * ≤ half an E4M3 step); dense, the FP8 attention equals float attention within a bound derived from
 * the casts of Q, K, V and P, and its forward is exactly the composition of those casts; unrounded
 * and dense it is scaledDotProductAttention bit for bit, and with a window it passes a float64
 * gradcheck; the block mask keeps exactly the chosen tiles per head (window and top-k); a DiT with
 * it trains; a denoising-step schedule gives each sample its timestep's phase; bad options are
 * errors naming the option.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { abs, amax, Generator, matmul, noGrad, rand, randn, softmax, tensor, type Tensor } from '@qgrad/core';
import { gradcheck } from '@qgrad/core/testing';
import { AdamW, DiT, Diffusion, MultiHeadAttention, scaledDotProductAttention } from '@qgrad/nn';
import { e4m3Tiles, FpsAttention, fpsAttention, fpsBlockMask, fpValues, prepareFpsAttention, prepareQAT, QuantLinear, roundToFp, TimestepContext, type FpsAttentionOptions, type FpsPhaseOptions } from '@qgrad/quant';

const f64 = (t: Tensor) => Float64Array.from(t.dataSync());
const E4M3 = new Set(fpValues('e4m3fn'));

/** A token grid of 1–3 dims cut into tiles, with batch, heads and head dim. */
const layoutArb = fc
  .integer({ min: 1, max: 3 })
  .chain((nd) =>
    fc.record({
      tiles: fc.array(fc.integer({ min: 1, max: nd === 1 ? 5 : 3 }), { minLength: nd, maxLength: nd }),
      tile: fc.array(fc.integer({ min: 1, max: nd === 3 ? 2 : 3 }), { minLength: nd, maxLength: nd }),
      b: fc.integer({ min: 1, max: 2 }),
      h: fc.integer({ min: 1, max: 3 }),
      d: fc.integer({ min: 1, max: 4 }),
      seed: fc.nat(),
    }),
  )
  .map((c) => ({ ...c, grid: c.tiles.map((n, i) => n * c.tile[i]!), tokens: c.tiles.reduce((a, n, i) => a * n * c.tile[i]!, 1), count: c.tiles.reduce((a, n) => a * n, 1) }));

/** Oracle: each token's tile coordinate (token row-major in the grid). */
function tileCoords(grid: readonly number[], tile: readonly number[]): number[][] {
  const T = grid.reduce((a, b) => a * b, 1);
  return Array.from({ length: T }, (_, tok) => {
    const c: number[] = [];
    for (let d = grid.length - 1; d >= 0; d--) {
      c.unshift(Math.floor((tok % grid[d]!) / tile[d]!));
      tok = Math.floor(tok / grid[d]!);
    }
    return c;
  });
}

/** Oracle: tile index of each token, row-major over the tile grid. */
function tileIndex(grid: readonly number[], tile: readonly number[]): number[] {
  const tiles = grid.map((g, d) => g / tile[d]!);
  return tileCoords(grid, tile).map((c) => c.reduce((a, x, d) => a * tiles[d]! + x, 0));
}

/** A uint8 token mask [Bm, H, T, T] from a tile mask [Bm, H, n, n] (the sdpa reference's mask). */
function tokenMask(tm: Tensor, grid: readonly number[], tile: readonly number[]): Tensor {
  const [bm, h, n] = tm.shape as [number, number, number];
  const of = tileIndex(grid, tile);
  const T = of.length;
  const src = tm.dataSync();
  const m = new Uint8Array(bm * h * T * T);
  for (let bh = 0; bh < bm * h; bh++) for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) m[(bh * T + i) * T + j] = src[(bh * n + of[i]!) * n + of[j]!]!;
  return tensor(m, { shape: [bm, h, T, T] });
}

describe('e4m3Tiles', () => {
  for (const dtype of ['float32', 'float64'] as const) {
    it(`puts values on the E4M3 grid, each tile's absmax on 448, within half an E4M3 step of x (${dtype})`, () => {
      fc.assert(
        fc.property(layoutArb, fc.boolean(), ({ grid, tile, b, h, d, seed }, zeroTile) => {
          const T = grid.reduce((a, c) => a * c, 1);
          const g = new Generator(seed);
          // a spread of magnitudes, so E4M3's subnormals (below 2⁻⁶ of a tile's top) occur
          let x = randn([b, h, T, d], { dtype, generator: g }).mul(rand([b, h, T, d], { dtype, generator: g }).mul(12).sub(10).exp());
          const of = tileIndex(grid, tile);
          if (zeroTile) x = x.mul(tensor(of.map((u) => (u === 0 ? 0 : 1)), { dtype }).reshape([1, 1, T, 1]));
          const { values, scales } = e4m3Tiles(x, grid, tile);
          const [xs, vs, ss] = [f64(x), f64(values), f64(scales)];
          const top = new Map<string, number>(); // (batch·head, tile) → largest |value|
          const scaleOf = new Map<string, number>(); // and its scale
          for (let i = 0; i < xs.length; i++) {
            const tok = Math.floor(i / d) % T;
            const bh = Math.floor(i / (d * T));
            const s = ss[bh * T + tok]!;
            if (!E4M3.has(vs[i]!)) return false;
            // half a step: 2⁻⁴ of the magnitude (3 mantissa bits) or 2⁻¹⁰ (half the subnormal step), times the scale; plus x/s's float rounding
            if (!(Math.abs(vs[i]! * s - xs[i]!) <= 2 ** -4 * Math.abs(xs[i]!) + 2 ** -10 * s + 1e-6 * Math.abs(xs[i]!))) return false;
            const key = `${bh}:${of[tok]}`;
            top.set(key, Math.max(top.get(key) ?? 0, Math.abs(vs[i]!)));
            if ((scaleOf.get(key) ?? s) !== s) return false; // one scale per tile
            scaleOf.set(key, s);
          }
          // every tile's largest magnitude is 448; an all-zero tile has scale 1 and zero values
          for (const [key, m] of top) if (m !== 448 && !(m === 0 && scaleOf.get(key) === 1)) return false;
          return true;
        }),
        { numRuns: 40 },
      );
    });
  }
});

/**
 * The derived bound of FP8 attention against float attention, per output [B, H, T, dv], with
 * sparsity off. All in float64 on the same inputs. With qs = q·c (c the score scale) and per-tile
 * scales sQ = absmax/448 (likewise sK), per-channel sV: E4M3 keeps 3 mantissa bits, so rounding
 * moves an element by at most δ = 2⁻⁴|x| + 2⁻¹⁰·s (half a normal step, or half the subnormal step
 * in the scale's units). Then:
 * - each score moves by Δᵢⱼ ≤ Σₑ δqₑ|kⱼₑ| + |qₑ|δkⱼₑ + δqₑδkⱼₑ;
 * - logits moved by εⱼ, |εⱼ| ≤ Δⱼ, give p̃ⱼ = pⱼe^{εⱼ}/Σₗpₗe^{εₗ}, and the normaliser lies in
 *   [Z₋, Z₊] = [Σₗpₗe^{−Δₗ}, Σₗpₗe^{Δₗ}] (weighted by p, so keys the query barely attends hardly
 *   count), so p̃ⱼ/pⱼ ∈ [e^{−Δⱼ}/Z₊, e^{Δⱼ}/Z₋] and |p̃ⱼ − pⱼ| ≤ pⱼγⱼ, γⱼ = max(e^{Δⱼ}/Z₋ − 1, 1 − e^{−Δⱼ}/Z₊);
 * - P's cast (scale 1/448) adds ≤ 2⁻⁴p̃ⱼ + 2⁻¹⁰/448, so |p̂ⱼ − pⱼ| ≤ ρⱼ = pⱼγⱼ + 2⁻⁴pⱼ(1 + γⱼ) + 2⁻¹⁰/448;
 * - ôₑ − oₑ = Σⱼ (p̂ⱼ − pⱼ)v̂ⱼₑ + pⱼ(v̂ⱼₑ − vⱼₑ), so |ôₑ − oₑ| ≤ Σⱼ ρⱼ(|vⱼₑ| + δvⱼₑ) + pⱼδvⱼₑ.
 * `slack` covers the float arithmetic: relative to Σ|q||k| on scores and Σp|v| on outputs.
 */
function fp8Bound(q: Tensor, k: Tensor, v: Tensor, grid: number[], tile: number[], slack: number): Float64Array {
  const [B, H, T, D] = q.shape as [number, number, number, number];
  const Dv = v.shape[3]!;
  const c = 1 / Math.sqrt(D);
  const [qs, ks, vs] = [f64(q).map((x) => x * c), f64(k), f64(v)];
  const of = tileIndex(grid, tile);
  const n = Math.max(...of) + 1;
  const tileScales = (x: Float64Array, bh: number) => {
    const m = new Float64Array(n);
    for (let i = 0; i < T; i++) for (let e = 0; e < D; e++) m[of[i]!] = Math.max(m[of[i]!]!, Math.abs(x[(bh * T + i) * D + e]!));
    return m.map((a) => (a === 0 ? 1 : a / 448));
  };
  const delta = (x: number, s: number) => 2 ** -4 * Math.abs(x) + 2 ** -10 * s;
  const out = new Float64Array(B * H * T * Dv);
  for (let bh = 0; bh < B * H; bh++) {
    const [sq, sk] = [tileScales(qs, bh), tileScales(ks, bh)];
    const sv = Array.from({ length: Dv }, (_, e) => {
      let m = 0;
      for (let j = 0; j < T; j++) m = Math.max(m, Math.abs(vs[(bh * T + j) * Dv + e]!));
      return m === 0 ? 1 : m / 448;
    });
    for (let i = 0; i < T; i++) {
      const logits = new Float64Array(T);
      const dl = new Float64Array(T); // Δᵢⱼ
      for (let j = 0; j < T; j++) {
        let mag = 0;
        for (let e = 0; e < D; e++) {
          const [a, bb] = [qs[(bh * T + i) * D + e]!, ks[(bh * T + j) * D + e]!];
          const [da, db] = [delta(a, sq[of[i]!]!), delta(bb, sk[of[j]!]!)];
          dl[j]! += da * Math.abs(bb) + Math.abs(a) * db + da * db;
          mag += Math.abs(a * bb);
          logits[j]! += a * bb;
        }
        dl[j]! += slack * mag;
      }
      const top = Math.max(...logits);
      const ex = logits.map((l) => Math.exp(l - top));
      const z = ex.reduce((a, b) => a + b, 0);
      const p = ex.map((e) => e / z);
      const [zLo, zHi] = [p.reduce((a, pj, j) => a + pj * Math.exp(-dl[j]!), 0), p.reduce((a, pj, j) => a + pj * Math.exp(dl[j]!), 0)];
      const gamma = dl.map((x) => Math.max(Math.exp(x) / zLo - 1, 1 - Math.exp(-x) / zHi));
      for (let e = 0; e < Dv; e++) {
        let [err, mag] = [0, 0];
        for (let j = 0; j < T; j++) {
          const vj = vs[(bh * T + j) * Dv + e]!;
          const dv = delta(vj, sv[e]!);
          const rho = p[j]! * gamma[j]! + 2 ** -4 * p[j]! * (1 + gamma[j]!) + 2 ** -10 / 448;
          err += rho * (Math.abs(vj) + dv) + p[j]! * dv;
          mag += p[j]! * Math.abs(vj);
        }
        out[(bh * T + i) * Dv + e] = err + slack * mag;
      }
    }
  }
  return out;
}

describe('fpsAttention, dense', () => {
  for (const dtype of ['float64', 'float32'] as const) {
    it(`equals float attention within the derived E4M3 bound (${dtype})`, () => {
      const g = new Generator(21);
      const [grid, tile] = [[4, 6], [2, 3]];
      // one channel 2.5× the others and one 20× smaller: the scales see uneven ranges and E4M3's subnormals occur
      const spread = tensor([0.6, 0.6, 1.5, 0.6, 0.03, 0.6, 0.6, 0.6], { dtype }).reshape([1, 1, 1, 8]);
      const q = randn([2, 3, 24, 8], { dtype, generator: g }).mul(spread);
      const k = randn([2, 3, 24, 8], { dtype, generator: g }).mul(spread);
      const v = randn([2, 3, 24, 8], { dtype, generator: g }).mul(spread);
      const y = f64(fpsAttention(q, k, v, { grid, tile }));
      const ref = f64(scaledDotProductAttention(q.to('float64'), k.to('float64'), v.to('float64')));
      const bound = fp8Bound(q, k, v, grid, tile, dtype === 'float64' ? 1e-12 : 1e-5);
      let [worst, quantized] = [0, false];
      for (let i = 0; i < y.length; i++) {
        expect(Math.abs(y[i]! - ref[i]!), `output ${i}`).toBeLessThanOrEqual(bound[i]!);
        worst = Math.max(worst, Math.abs(y[i]! - ref[i]!) / bound[i]!);
        quantized ||= Math.abs(y[i]! - ref[i]!) > 1e-4;
      }
      expect(quantized).toBe(true); // it is FP8 attention, not the float one
      // and the bound is attained to within ~11× (worst case 0.089 here: it is a worst case over every rounding)
      expect(worst).toBeGreaterThan(0.05);
    });
  }

  it('is exactly the composition of its casts: Q̂, K̂ per tile, V̂ per channel, P̂ = E4M3(448·P)/448', () => {
    fc.assert(
      fc.property(layoutArb, ({ grid, tile, b, h, d, tokens, seed }) => {
        const g = new Generator(seed);
        const [q, k, v] = [0, 1, 2].map(() => randn([b, h, tokens, d], { dtype: 'float64', generator: g })) as [Tensor, Tensor, Tensor];
        const cast = (x: Tensor) => {
          const { values, scales } = e4m3Tiles(x, grid, tile);
          return values.mul(scales);
        };
        const sv = amax(abs(v), 2, true).div(448);
        const vq = roundToFp(v.div(sv), 'e4m3fn').mul(sv);
        const p = softmax(matmul(cast(q.mul(1 / Math.sqrt(d))), cast(k).transpose(-2, -1)), -1);
        const want = matmul(roundToFp(p.mul(448), 'e4m3fn').div(448), vq);
        const got = fpsAttention(q, k, v, { grid, tile });
        return got.sub(want).abs().max().item() <= 1e-14;
      }),
      { numRuns: 25 },
    );
  });

  it('without rounding is scaledDotProductAttention bit for bit (fast-check shapes, float64)', () => {
    fc.assert(
      fc.property(layoutArb, fc.boolean(), ({ grid, tile, b, h, d, tokens, seed }, scaled) => {
        const g = new Generator(seed);
        const [q, k, v] = [0, 1, 2].map(() => randn([b, h, tokens, d], { dtype: 'float64', generator: g })) as [Tensor, Tensor, Tensor];
        const scale = scaled ? 0.3 : undefined;
        const got = f64(fpsAttention(q, k, v, { grid, tile, round: false, ...(scale && { scale }) }));
        expect(got).toEqual(f64(scaledDotProductAttention(q, k, v, scale ? { scale } : {})));
      }),
      { numRuns: 30 },
    );
  });

  it('passes a float64 gradcheck without rounding, dense and with a window per head (fast-check shapes)', () => {
    fc.assert(
      fc.property(layoutArb, fc.boolean(), fc.array(fc.array(fc.nat({ max: 2 }), { minLength: 3, maxLength: 3 }), { minLength: 3, maxLength: 3 }), ({ grid, tile, b, h, d, tokens, seed }, sparse, reach) => {
        if (tokens > 16) return; // finite differences cost 2·numel forwards per input
        const g = new Generator(seed);
        const [q, k, v] = [0, 1, 2].map(() => randn([b, h, tokens, d], { dtype: 'float64', generator: g })) as [Tensor, Tensor, Tensor];
        const opts: FpsAttentionOptions = { grid, tile, round: false, sparsity: sparse ? { kind: 'window', reach: reach.slice(0, h).map((r) => r.slice(0, grid.length)) } : null };
        expect(gradcheck((a, bb, c) => fpsAttention(a, bb, c, opts), [q, k, v]).ok).toBe(true);
      }),
      { numRuns: 12 },
    );
  });

  it('passes the gradient straight through the casts: close to float attention\'s, not equal', () => {
    const g = new Generator(4);
    const [q1, k1, v1] = [0, 1, 2].map(() => randn([1, 2, 16, 8], { dtype: 'float64', generator: g }).requiresGrad_()) as [Tensor, Tensor, Tensor];
    const [q2, k2, v2] = [q1, k1, v1].map((t) => t.detach().clone().requiresGrad_()) as [Tensor, Tensor, Tensor];
    const up = randn([1, 2, 16, 8], { dtype: 'float64', generator: g });
    fpsAttention(q1, k1, v1, { grid: [4, 4], tile: [2, 2] }).mul(up).sum().backward();
    scaledDotProductAttention(q2, k2, v2).mul(up).sum().backward();
    for (const [a, b] of [[q1, q2], [k1, k2], [v1, v2]] as const) {
      const rel = a.grad!.sub(b.grad!).abs().max().item() / b.grad!.abs().max().item();
      expect(rel).toBeGreaterThan(1e-6);
      expect(rel).toBeLessThan(0.2);
    }
  });
});

describe('fpsAttention, block-sparse', () => {
  it('window: the mask keeps exactly the key tiles within each head\'s reach, and attention is float attention under that mask', () => {
    fc.assert(
      fc.property(layoutArb, fc.array(fc.array(fc.nat({ max: 2 }), { minLength: 3, maxLength: 3 }), { minLength: 3, maxLength: 3 }), ({ grid, tile, b, h, d, tokens, count, seed }, reaches) => {
        const reach = reaches.slice(0, h).map((r) => r.slice(0, grid.length));
        const g = new Generator(seed);
        const [q, k, v] = [0, 1, 2].map(() => randn([b, h, tokens, d], { dtype: 'float64', generator: g })) as [Tensor, Tensor, Tensor];
        const opts: FpsAttentionOptions = { grid, tile, sparsity: { kind: 'window', reach } };
        const mask = fpsBlockMask(q, k, opts);
        expect(mask.shape).toEqual([1, h, count, count]);
        // oracle: tile coordinates from the token grid
        const [coords, coordOf] = [tileCoords(grid, tile), new Map<number, number[]>()];
        tileIndex(grid, tile).forEach((u, tok) => coordOf.set(u, coords[tok]!));
        const m = mask.dataSync();
        for (let hh = 0; hh < h; hh++) for (let u = 0; u < count; u++) for (let w = 0; w < count; w++) {
          const near = coordOf.get(u)!.every((c, dd) => Math.abs(c - coordOf.get(w)![dd]!) <= reach[hh]![dd]!);
          expect(m[(hh * count + u) * count + w], `head ${hh}, tiles ${u}→${w}`).toBe(near ? 1 : 0);
        }
        const got = f64(fpsAttention(q, k, v, { ...opts, round: false }));
        expect(got).toEqual(f64(scaledDotProductAttention(q, k, v, { attnMask: tokenMask(mask, grid, tile) })));
      }),
      { numRuns: 30 },
    );
  });

  it('topk: each (batch, head, query tile) keeps exactly k key tiles, those with the largest pooled scores', () => {
    fc.assert(
      fc.property(layoutArb, fc.array(fc.integer({ min: 1, max: 27 }), { minLength: 3, maxLength: 3 }), ({ grid, tile, b, h, d, tokens, count, seed }, kRaw) => {
        const ks = kRaw.slice(0, h).map((x) => 1 + (x % count));
        const g = new Generator(seed);
        const [q, k, v] = [0, 1, 2].map(() => randn([b, h, tokens, d], { dtype: 'float64', generator: g })) as [Tensor, Tensor, Tensor];
        const opts: FpsAttentionOptions = { grid, tile, sparsity: { kind: 'topk', k: ks } };
        const mask = fpsBlockMask(q, k, opts);
        expect(mask.shape).toEqual([b, h, count, count]);
        // oracle: mean of each tile's q (k) rows, their dot products
        const of = tileIndex(grid, tile);
        const pooled = (x: Float64Array, bh: number) =>
          Array.from({ length: count }, (_, u) => {
            const rows = of.flatMap((w, tok) => (w === u ? [tok] : []));
            return Array.from({ length: d }, (_, e) => rows.reduce((a, tok) => a + x[(bh * tokens + tok) * d + e]!, 0) / rows.length);
          });
        const [qs, kks, m] = [f64(q), f64(k), mask.dataSync()];
        for (let bh = 0; bh < b * h; bh++) {
          const [pq, pk] = [pooled(qs, bh), pooled(kks, bh)];
          for (let u = 0; u < count; u++) {
            const row = Array.from({ length: count }, (_, w) => m[(bh * count + u) * count + w]!);
            expect(row.reduce((a, x) => a + x, 0)).toBe(ks[bh % h]);
            const score = (w: number) => pq[u]!.reduce((a, x, e) => a + x * pk[w]![e]!, 0);
            const kept = Math.min(...row.flatMap((x, w) => (x ? [score(w)] : [])));
            const dropped = Math.max(-Infinity, ...row.flatMap((x, w) => (x ? [] : [score(w)])));
            expect(kept).toBeGreaterThanOrEqual(dropped - 1e-12);
          }
        }
        const got = f64(fpsAttention(q, k, v, { ...opts, round: false }));
        expect(got).toEqual(f64(scaledDotProductAttention(q, k, v, { attnMask: tokenMask(mask, grid, tile) })));
      }),
      { numRuns: 30 },
    );
  });

  it('a window covering the whole grid, or top-k of all tiles, is dense attention', () => {
    const g = new Generator(2);
    const [q, k, v] = [0, 1, 2].map(() => randn([2, 2, 24, 4], { generator: g })) as [Tensor, Tensor, Tensor];
    const dense = f64(fpsAttention(q, k, v, { grid: [4, 6], tile: [2, 2] }));
    expect(f64(fpsAttention(q, k, v, { grid: [4, 6], tile: [2, 2], sparsity: { kind: 'window', reach: [1, 2] } }))).toEqual(dense);
    expect(f64(fpsAttention(q, k, v, { grid: [4, 6], tile: [2, 2], sparsity: { kind: 'topk', k: 6 } }))).toEqual(dense);
    // and a narrower window is not
    expect(f64(fpsAttention(q, k, v, { grid: [4, 6], tile: [2, 2], sparsity: { kind: 'window', reach: [1, 1] } }))).not.toEqual(dense);
  });
});

describe('FpsAttention in a DiT', () => {
  const cfg = { imageSize: 8, patchSize: 2, inChannels: 1, dim: 16, depth: 2, numHeads: 2 };

  it('keeps the state-dict names, gives the float model back bit for bit when disabled, and trains (loss decreases)', () => {
    const dit = new DiT(cfg, { generator: new Generator(0) });
    const ref = new DiT(cfg, { generator: new Generator(0) });
    const keys = Object.keys(dit.stateDict());
    const opts: FpsAttentionOptions = { grid: [dit.grid, dit.grid], tile: [2, 2], sparsity: { kind: 'window', reach: [[0, 1], [1, 0]] } };
    expect(prepareFpsAttention(dit, opts)).toEqual(['blocks.0.attn', 'blocks.1.attn']);
    expect(dit.blocks.at(0).attn).toBeInstanceOf(FpsAttention);
    expect(Object.keys(dit.stateDict())).toEqual(keys);
    const d = new Diffusion({ timesteps: 50 });
    // one image four times per batch (as nn's DiT overfitting test): the ideal ε̂ is then linear in x_t for each t
    const x0 = rand([1, 1, 8, 8], { generator: new Generator(7) }).mul(2).sub(1).expand(4, 1, 8, 8).contiguous();
    const opt = new AdamW(dit.parameters(), { lr: 1e-2, weightDecay: 0 });
    const evalLoss = () => noGrad(() => d.loss((x, t) => dit.forward(x, t), x0, { generator: new Generator(99) }).item());
    const before = evalLoss();
    for (let i = 0; i < 40; i++) {
      const l = d.loss((x, t) => dit.forward(x, t), x0, { generator: new Generator(i) });
      opt.zeroGrad();
      l.backward();
      opt.step();
    }
    const after = evalLoss();
    expect(before).toBeGreaterThan(0.8); // ε̂ = 0 at init (adaLN-Zero): the MSE is E[ε²] ≈ 1
    expect(after).toBeLessThan(0.3); // 0.11 here (seed 0)
    // gradients reached the attention's projections through the FP8, sparse attention
    const attn = dit.blocks.at(0).attn;
    expect(attn.qProj.weight.grad!.abs().max().item()).toBeGreaterThan(0);
    expect(attn.vProj.weight.grad!.abs().max().item()).toBeGreaterThan(0);
    // with every layer disabled the model is the float DiT with the same weights
    ref.loadStateDict(dit.stateDict());
    for (const b of dit.blocks) (b.attn as FpsAttention).enabled = false;
    const x = randn([2, 1, 8, 8], { generator: new Generator(3) });
    expect(f64(dit.forward(x, [3, 40]))).toEqual(f64(ref.forward(x, [3, 40])));
  });
  it('wraps attention whose projections are already quantized (QAT first, then FPS), keeping them', () => {
    const dit = new DiT(cfg, { generator: new Generator(1) });
    prepareQAT(dit, { default: { weight: { grid: 'int', bits: 4 } } });
    const qProj = dit.blocks.at(1).attn.qProj;
    expect(qProj).toBeInstanceOf(QuantLinear);
    const keys = Object.keys(dit.stateDict());
    prepareFpsAttention(dit, { grid: [4, 4], tile: [2, 2], sparsity: { kind: 'topk', k: 1 } }, { match: 'blocks.1.**' });
    expect(dit.blocks.at(0).attn).not.toBeInstanceOf(FpsAttention);
    expect(dit.blocks.at(1).attn.qProj).toBe(qProj);
    expect(Object.keys(dit.stateDict())).toEqual(keys);
    expect(dit.forward(randn([2, 1, 8, 8], { generator: new Generator(2) }), [1, 30]).shape).toEqual([2, 1, 8, 8]);
  });
});

describe('FpsAttention with a denoising-step schedule', () => {
  const phases = [
    { from: 0, options: { round: false } },
    { from: 300, options: {} },
    { from: 700, options: { tile: [1, 4], sparsity: { kind: 'window', reach: [1, 0] } } },
  ] as const;

  it('gives each sample its timestep\'s phase: a mixed batch equals each sample alone with that phase\'s options, and trains', () => {
    const mha = new MultiHeadAttention(8, 2, { bias: true, dtype: 'float64', generator: new Generator(3) });
    const context = new TimestepContext();
    const layer = FpsAttention.from(mha, { grid: [4, 4], tile: [2, 2], schedule: { context, phases } });
    const x = randn([4, 16, 8], { dtype: 'float64', generator: new Generator(5) });
    const ts = [800, 10, 400, 699];
    const y = context.run(ts, () => layer.forward(x));
    const fixed = phases.map((p) => FpsAttention.from(mha, { grid: [4, 4], tile: [2, 2], ...p.options }));
    const phaseOf = [2, 0, 1, 1];
    for (let i = 0; i < 4; i++) {
      const alone = fixed[phaseOf[i]!]!.forward(x.narrow(0, i, 1));
      expect(y.narrow(0, i, 1).sub(alone).abs().max().item(), `sample ${i} (t = ${ts[i]})`).toBeLessThan(1e-12);
    }
    // the phases differ from each other, so the choice matters
    const one = x.narrow(0, 0, 1);
    const outs = fixed.map((f) => f.forward(one));
    expect(outs[0]!.sub(outs[1]!).abs().max().item()).toBeGreaterThan(1e-6);
    expect(outs[1]!.sub(outs[2]!).abs().max().item()).toBeGreaterThan(1e-6);
    // gradients reach the shared projections through every phase's branch
    y.square().sum().backward();
    expect(mha.qProj.weight.grad!.abs().max().item()).toBeGreaterThan(0);
  });

  it('rejects phases that do not start at 0 and increase, set other options, or a forward without timesteps', () => {
    const mha = new MultiHeadAttention(8, 2);
    const context = new TimestepContext();
    const base = { grid: [4, 4], tile: [2, 2] };
    expect(() => FpsAttention.from(mha, { ...base, schedule: { context, phases: [{ from: 100, options: {} }] } })).toThrow(/FpsAttention: schedule phase 0 starts at 100; phases start at 0 and increase/);
    expect(() => FpsAttention.from(mha, { ...base, schedule: { context, phases: [{ from: 0, options: {} }, { from: 0, options: {} }] } })).toThrow(/FpsAttention: schedule phase 1 starts at 0/);
    expect(() => FpsAttention.from(mha, { ...base, schedule: { context, phases: [{ from: 0, options: { grid: [2, 8] } as FpsPhaseOptions }] } })).toThrow(/FpsAttention: schedule phase 0 may set tile, sparsity and round, not grid/);
    expect(() => FpsAttention.from(mha, { ...base, schedule: { context, phases: [{ from: 0, options: { tile: [3, 1] } }] } })).toThrow(/FpsAttention \(schedule phase 0\): tile \[3, 1\] does not divide grid \[4, 4\]/);
    const layer = FpsAttention.from(mha, { ...base, schedule: { context, phases: [{ from: 0, options: {} }] } });
    expect(() => layer.forward(randn([2, 16, 8]))).toThrow(/FpsAttention: the schedule needs one timestep per sample from its context \(run the model through TimestepModule\); got none/);
    expect(() => context.run([1], () => layer.forward(randn([2, 16, 8])))).toThrow(/got 1 for 2 samples/);
  });
});

describe('fpsAttention options', () => {
  const q = randn([1, 2, 16, 4]);
  it('are errors naming the option, the shapes or the dtype', () => {
    const base = { grid: [4, 4], tile: [2, 2] };
    expect(() => fpsAttention(q, q, q, { ...base, blocks: 2 } as unknown as FpsAttentionOptions)).toThrow(/fpsAttention: unknown option 'blocks'; known: grid, tile, round, sparsity, scale/);
    expect(() => fpsAttention(q, q, q, { grid: [4, 4], tile: [3, 2] })).toThrow(/fpsAttention: tile \[3, 2\] does not divide grid \[4, 4\] \(dim 0: 4 % 3 ≠ 0\)/);
    expect(() => fpsAttention(q, q, q, { grid: [4, 4], tile: [2] })).toThrow(/fpsAttention: tile must have one positive integer per grid dim \(2\)/);
    expect(() => fpsAttention(q, q, q, { grid: [5, 4], tile: [1, 2] })).toThrow(/fpsAttention: 16 tokens do not fill grid \[5, 4\] \(20 tokens\)/);
    expect(() => fpsAttention(q, q, q, { ...base, round: 1 } as unknown as FpsAttentionOptions)).toThrow(/fpsAttention: round must be true or false, got 1/);
    expect(() => fpsAttention(q, q, q, { ...base, scale: -1 })).toThrow(/fpsAttention: scale must be a positive finite number, got -1/);
    expect(() => fpsAttention(q, q, q, { ...base, sparsity: { kind: 'window', reach: [1] } })).toThrow(/fpsAttention: sparsity window reach must have 2 non-negative integers \(one per grid dim\)/);
    expect(() => fpsAttention(q, q, q, { ...base, sparsity: { kind: 'window', reach: [[1, 1], [0, 0], [1, 0]] } })).toThrow(/fpsAttention: window reach has 3 entries but there are 2 heads/);
    expect(() => fpsAttention(q, q, q, { ...base, sparsity: { kind: 'topk', k: 5 } })).toThrow(/fpsAttention: topk k = 5 exceeds the 4 tiles of grid \[4, 4\] with tile \[2, 2\]/);
    expect(() => fpsAttention(q, q, q, { ...base, sparsity: { kind: 'topk', k: 0 } })).toThrow(/fpsAttention: sparsity topk k must be a positive integer, or one per head/);
    expect(() => fpsAttention(q, q, q, { ...base, sparsity: { kind: 'dense' } } as unknown as FpsAttentionOptions)).toThrow(/fpsAttention: sparsity kind must be 'window' or 'topk'/);
    expect(() => fpsAttention(q, randn([1, 2, 15, 4]), q, base)).toThrow(/fpsAttention: expected q, k \[B, H, T, d\] and v \[B, H, T, dv\].*got q \[1, 2, 16, 4\], k \[1, 2, 15, 4\]/);
    expect(() => fpsAttention(q, q.to('float64'), q, base)).toThrow(/fpsAttention: q, k, v dtypes differ \(float32, float64, float32\)/);
    expect(() => FpsAttention.from(new MultiHeadAttention(8, 2, { causal: true }), base)).toThrow(/FpsAttention: the source attention is causal/);
    expect(() => FpsAttention.from(new MultiHeadAttention(8, 2), { ...base, sparsity: { kind: 'window', reach: [[0, 0], [0, 0], [0, 0]] } })).toThrow(/FpsAttention: window reach has 3 entries but the layer has 2 heads/);
  });
});
