/**
 * Diffusion: β schedules, the forward process, both samplers against an exact noise oracle, and
 * the UNet and DiT noise predictors (shapes, identity start, overfitting a tiny batch).
 */
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import type { Tensor } from '@qgrad/core';
import { AdamW, DiT, Diffusion, UNet, betaSchedule, timestepEmbedding, type NoisePredictor } from '@qgrad/nn';

describe('beta schedules', () => {
  it('linear runs from betaStart to betaEnd; cosine follows ᾱ(t) = cos²(…) and caps β at 0.999', () => {
    const lin = betaSchedule('linear', 1000);
    expect(lin[0]).toBeCloseTo(1e-4, 12);
    expect(lin[999]).toBeCloseTo(0.02, 12);
    const cos = betaSchedule('cosine', 1000);
    expect(cos[999]).toBe(0.999);
    expect(Array.from(cos).every((b) => b > 0 && b <= 0.999)).toBe(true);
    const d = new Diffusion({ timesteps: 1000, schedule: 'cosine' });
    const f = (t: number) => Math.cos(((t / 1000 + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
    expect(d.alphasCumprod[499]).toBeCloseTo(f(500) / f(0), 10);
  });
});

describe('Diffusion', () => {
  it('qSample mixes data and noise with √ᾱ_t and √(1 − ᾱ_t)', () => {
    const d = new Diffusion({ timesteps: 10 });
    const x0 = q.ones([2, 3]);
    const eps = q.full([2, 3], 2);
    const xt = d.qSample(x0, [0, 9], eps);
    const [a0, a9] = [d.alphasCumprod[0]!, d.alphasCumprod[9]!];
    expect(xt.select(0, 0).dataSync()[0]).toBeCloseTo(Math.sqrt(a0) + 2 * Math.sqrt(1 - a0), 5);
    expect(xt.select(0, 1).dataSync()[2]).toBeCloseTo(Math.sqrt(a9) + 2 * Math.sqrt(1 - a9), 5);
  });

  // with a single training point x*, the optimal ε̂(x_t, t) = (x_t − √ᾱ_t x*)/√(1 − ᾱ_t) is known in closed form
  const target = q.tensor([[[[0.5, -0.25], [0.75, -0.9]]]]); // [1, 1, 2, 2]
  const oracle = (d: Diffusion): NoisePredictor => (x, t) => {
    const ab = q.tensor(t.map((ti) => d.alphasCumprod[ti]!)).reshape(t.length, 1, 1, 1);
    return x.sub(target.mul(ab.sqrt())).div(ab.neg().add(1).sqrt());
  };

  it('DDIM (deterministic and with eta = 1) and DDPM recover the data point from an exact noise oracle', () => {
    for (const schedule of ['linear', 'cosine'] as const) {
      const d = new Diffusion({ timesteps: 100, schedule });
      const shape = [3, 1, 2, 2];
      for (const x of [
        d.sampleDdim(oracle(d), shape, 10, { generator: new q.Generator(0) }),
        d.sampleDdim(oracle(d), shape, 25, { eta: 1, generator: new q.Generator(1) }),
        d.sample(oracle(d), shape, { generator: new q.Generator(2) }),
      ]) {
        const err = x.sub(target).abs().amax().item();
        expect(err).toBeLessThan(1e-4);
      }
    }
  });

  it('DDIM and DDPM recover the data point from the same oracle predicting x₀ or v', () => {
    for (const prediction of ['x0', 'v'] as const) {
      const d = new Diffusion({ timesteps: 100, prediction });
      const asPrediction: NoisePredictor = (x, t) => d.target(target.expand(...x.shape), oracle(d)(x, t), t);
      for (const x of [
        d.sampleDdim(asPrediction, [3, 1, 2, 2], 10, { generator: new q.Generator(0) }),
        d.sampleDdim(asPrediction, [3, 1, 2, 2], 10, { generator: new q.Generator(0), clipDenoised: false }),
        d.sample(asPrediction, [3, 1, 2, 2], { generator: new q.Generator(2) }),
      ]) expect(x.sub(target).abs().amax().item()).toBeLessThan(1e-4);
    }
  });

  // target(x₀, ε, t) is what a perfect denoiser outputs at x_t = qSample(x₀, t, ε): reading it back must give ε and x₀
  it.each([['float32', 2e-4], ['float64', 1e-10]] as const)('ε, x₀ and v targets convert back to ε̂ and x̂₀ in %s', (dtype, tol) => {
    const d = new Diffusion({ timesteps: 1000 });
    const g = new q.Generator(11);
    const x0 = q.rand([4, 1, 3, 3], { dtype, generator: g }).mul(2).sub(1);
    const noise = q.randn([4, 1, 3, 3], { dtype, generator: g });
    for (const t of [[0, 1, 500, 999], [999, 999, 999, 999], [0, 0, 0, 0]]) {
      const xt = d.qSample(x0, t, noise);
      for (const prediction of ['epsilon', 'x0', 'v'] as const) {
        const dp = new Diffusion({ timesteps: 1000, prediction });
        const out = dp.target(x0, noise, t);
        expect(out.dtype).toBe(dtype);
        const eps = dp.epsilonOf(out, xt, t);
        const x0hat = dp.x0Of(out, xt, t);
        expect(eps.dtype).toBe(dtype);
        expect(eps.sub(noise).abs().amax().item(), `${prediction} ε̂ at t = ${t}`).toBeLessThan(prediction === 'epsilon' ? 1e-300 : tol);
        // x̂₀ from ε̂ divides by √ᾱ_t (≈ 0.0066 at t = 999): float32 rounding of x_t grows by 1/√ᾱ
        expect(x0hat.sub(x0).abs().amax().item(), `${prediction} x̂₀ at t = ${t}`).toBeLessThan(prediction === 'epsilon' && t.includes(999) && dtype === 'float32' ? 100 * tol : tol);
      }
    }
    // v = √ᾱ_t·ε − √(1 − ᾱ_t)·x₀, sample by sample
    const t = [3, 250, 700, 999];
    const v = new Diffusion({ timesteps: 1000, prediction: 'v' }).target(x0, noise, t);
    const [vd, ed, xd] = [v.dataSync(), noise.dataSync(), x0.dataSync()];
    for (let i = 0; i < vd.length; i++) {
      const ab = d.alphasCumprod[t[Math.floor(i / 9)]!]!;
      expect(Math.abs(vd[i]! - (Math.sqrt(ab) * ed[i]! - Math.sqrt(1 - ab) * xd[i]!))).toBeLessThan(dtype === 'float32' ? 1e-6 : 1e-14);
    }
  });

  it('the loss trains on the prediction type\'s target: a perfect x₀ or v denoiser has zero loss', () => {
    const x0 = q.rand([3, 1, 2, 2], { generator: new q.Generator(4) });
    for (const prediction of ['x0', 'v'] as const) {
      const d = new Diffusion({ timesteps: 50, prediction });
      // the denoiser sees x_t, so it cannot know ε; give it x₀ and recover ε from x_t
      const perfect: NoisePredictor = (xt, t) => {
        const ab = q.tensor(t.map((ti) => d.alphasCumprod[ti]!)).reshape(t.length, 1, 1, 1);
        const eps = xt.sub(x0.mul(ab.sqrt())).div(ab.neg().add(1).sqrt());
        return d.target(x0, eps, t);
      };
      expect(d.loss(perfect, x0, { generator: new q.Generator(1) }).item()).toBeLessThan(1e-10);
    }
    expect(() => new Diffusion({ prediction: 'sample' as 'x0' })).toThrow(/prediction must be 'epsilon', 'x0' or 'v'/);
  });

  it('deterministic DDIM is a function of its starting noise; the step callback counts the steps', () => {
    const d = new Diffusion({ timesteps: 50 });
    const model: NoisePredictor = (x) => x.mul(0.5);
    const seen: number[] = [];
    const a = d.sampleDdim(model, [2, 1, 2, 2], 7, { generator: new q.Generator(3), clipDenoised: false, onStep: (i) => seen.push(i) });
    const b = d.sampleDdim(model, [2, 1, 2, 2], 7, { generator: new q.Generator(3), clipDenoised: false });
    expect(Array.from(a.dataSync())).toEqual(Array.from(b.dataSync()));
    expect(seen).toEqual([1, 2, 3, 4, 5, 6, 7]);
  });

  it('loss draws t and ε from the generator: the same seed gives the same loss', () => {
    const d = new Diffusion({ timesteps: 20 });
    const model: NoisePredictor = (x) => x.mul(0.3);
    const x0 = q.randn([4, 1, 2, 2]);
    expect(d.loss(model, x0, { generator: new q.Generator(5) }).item()).toBe(d.loss(model, x0, { generator: new q.Generator(5) }).item());
  });
});

describe('noise predictors', () => {
  it('timestep embeddings are [sin, cos] of t·10000^(−i/half)', () => {
    const e = timestepEmbedding([0, 3], 4);
    expect(Array.from(e.select(0, 0).dataSync())).toEqual([0, 0, 1, 1]);
    expect(e.select(0, 1).dataSync()[1]).toBeCloseTo(Math.sin(3 * 0.01), 6);
    expect(e.select(0, 1).dataSync()[3]).toBeCloseTo(Math.cos(3 * 0.01), 6);
  });

  it('UNet and DiT map x_t to a tensor of its shape and start by predicting zero', () => {
    const unet = new UNet({ inChannels: 1, baseChannels: 8, channelMults: [1, 2], groups: 4 });
    const dit = new DiT({ imageSize: 8, patchSize: 2, inChannels: 1, dim: 16, depth: 1, numHeads: 2, numClasses: 3 });
    const x = q.randn([2, 1, 8, 8]);
    for (const y of [unet.forward(x, [1, 7]), dit.forward(x, [1, 7], [0, 3])]) {
      expect(y.shape).toEqual([2, 1, 8, 8]);
      expect(y.abs().amax().item()).toBe(0);
    }
    expect(() => unet.forward(q.randn([2, 1, 7, 7]), [1, 2])).toThrow(/H, W divisible by 2/);
    expect(() => dit.forward(x, [1])).toThrow(/DiT: expected x \[N, 1, 8, 8\] and N timesteps/);
  });

  it('DiT unpatchifies token (i, j) back to patch row i, column j', () => {
    const dit = new DiT({ imageSize: 4, patchSize: 2, inChannels: 1, dim: 8, depth: 0, numHeads: 2 });
    // make the output layer copy the token's first 4 features: tokens then carry patch pixels
    q.noGrad(() => {
      dit.out.weight.copy_(q.cat([q.eye(4), q.zeros([4, 4])], 1));
      dit.pos_embed.zero_();
      dit.x_embed.bias!.zero_();
      // x_embed maps each 2×2 patch (row-major pixels) to the same 4 numbers
      dit.x_embed.weight.copy_(q.cat([q.eye(4).reshape(4, 1, 2, 2), q.zeros([4, 1, 2, 2])], 0));
    });
    // the final LayerNorm standardises features, so compare after the same per-token standardisation
    const x = q.arange(16).reshape(1, 1, 4, 4).float();
    const y = dit.forward(x, [0]);
    const patches = x.reshape(1, 2, 2, 2, 2).permute(0, 1, 3, 2, 4).reshape(4, 4); // tokens × pixels
    const std = patches.sub(q.cat([patches, q.zeros([4, 4])], 1).mean(-1, true)).div(q.cat([patches, q.zeros([4, 4])], 1).var(-1, { correction: 0, keepdim: true }).add(1e-6).sqrt());
    const back = std.reshape(1, 2, 2, 2, 2).permute(0, 1, 3, 2, 4).reshape(1, 1, 4, 4);
    expect(y.sub(back).abs().amax().item()).toBeLessThan(1e-4);
  });

  // one 8×8 image, four times per batch: the ideal ε̂ is then linear in x_t for each t, so a
  // network that learns must get close to it
  const overfit = (name: string, predictor: (x: Tensor, t: number[]) => Tensor, params: Tensor[], threshold: number) => {
    const d = new Diffusion({ timesteps: 50 });
    const x0 = q.rand([1, 1, 8, 8], { generator: new q.Generator(7) }).mul(2).sub(1).expand(4, 1, 8, 8).contiguous();
    const opt = new AdamW(params, { lr: 1e-2, weightDecay: 0 });
    const evalLoss = () => q.noGrad(() => d.loss(predictor, x0, { generator: new q.Generator(99) }).item());
    const before = evalLoss();
    for (let i = 0; i < 40; i++) {
      const l = d.loss(predictor, x0, { generator: new q.Generator(i) });
      l.backward();
      opt.step();
      opt.zeroGrad();
    }
    const after = evalLoss();
    expect(before, name).toBeGreaterThan(0.8); // ε̂ = 0 at init: the MSE is E[ε²] ≈ 1
    expect(after, name).toBeLessThan(threshold);
  };

  it('a UNet overfits a tiny batch: the fixed-noise DDPM loss falls from ≈1 below 0.45 in 40 steps', () => {
    const unet = new UNet({ inChannels: 1, baseChannels: 8, channelMults: [1, 2], groups: 4 }, { generator: new q.Generator(0) });
    overfit('unet', (x, t) => unet.forward(x, t), unet.parameters(), 0.45);
  });

  it('a DiT overfits a tiny batch: the fixed-noise DDPM loss falls from ≈1 below 0.2 in 40 steps', () => {
    const dit = new DiT({ imageSize: 8, patchSize: 2, inChannels: 1, dim: 32, depth: 2, numHeads: 2 }, { generator: new q.Generator(0) });
    overfit('dit', (x, t) => dit.forward(x, t), dit.parameters(), 0.2);
  });
});
