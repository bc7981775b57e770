/**
 * @file ZeroQAT: the mean SPSA estimate g·z over many seeds matches a quadratic's gradient, the
 * central difference is exact on a quadratic (g = zᵀ∇f), parameters are restored after the two
 * evaluations, seeds replay, and steps lower the loss of a quantized (non-differentiable) model.
 */
import { describe, expect, it } from 'vitest';
import { Generator, memory, randn, tensor, zeros, type Tensor } from '@qgrad/core';
import { ZeroQAT } from '@qgrad/nn';

function quadratic(d: number, seed: number) {
  const g = new Generator(seed);
  const m = randn([d, d], { generator: g, dtype: 'float64' });
  const A = m.matmul(m.t()).add(tensor(Array.from({ length: d * d }, (_, i) => (i % (d + 1) === 0 ? 1 : 0)), { dtype: 'float64' }).reshape([d, d]));
  const b = randn([d], { generator: g, dtype: 'float64' });
  const f = (t: Tensor) => t.matmul(A).mul(t).sum().mul(0.5).add(t.mul(b).sum());
  const grad = (t: Tensor) => t.matmul(A).add(b);
  return { f, grad };
}

describe('ZeroQAT', () => {
  it('the mean of g·z over many seeds matches the true gradient of a quadratic', () => {
    const d = 4;
    const { f, grad } = quadratic(d, 1);
    const theta = randn([d], { generator: new Generator(2), dtype: 'float64' });
    const opt = new ZeroQAT([theta], { eps: 1e-3 });
    const n = 3000;
    const mean = new Float64Array(d);
    for (let s = 0; s < n; s++) {
      const { projectedGrad } = opt.estimate(() => f(theta), s);
      const z = randn([d], { generator: new Generator(s), dtype: 'float64' }).dataSync();
      for (let i = 0; i < d; i++) mean[i]! += (projectedGrad * z[i]!) / n;
    }
    const truth = grad(theta).dataSync();
    const norm = Math.hypot(...truth);
    // standard error ≈ √((d + 1)/n)·‖∇f‖ ≈ 0.04‖∇f‖ per component
    for (let i = 0; i < d; i++) expect(Math.abs(mean[i]! - truth[i]!)).toBeLessThan(0.15 * norm);
  });

  it('is exact along z on a quadratic, restores θ, and replays its seed', () => {
    const { f, grad } = quadratic(5, 3);
    const theta = randn([5], { generator: new Generator(4), dtype: 'float64' });
    const before = theta.dataSync().slice();
    const opt = new ZeroQAT([theta], { eps: 1e-2 });
    const { projectedGrad } = opt.estimate(() => f(theta), 77);
    theta.dataSync().forEach((v, i) => expect(v).toBeCloseTo(before[i]!, 13));
    const z = randn([5], { generator: new Generator(77), dtype: 'float64' });
    expect(projectedGrad).toBeCloseTo(z.mul(grad(theta)).sum().item(), 8);
    expect(opt.estimate(() => f(theta), 77).projectedGrad).toBeCloseTo(projectedGrad, 10); // θ is restored to rounding only
    expect(opt.estimate(() => f(theta), 78).projectedGrad).not.toBe(projectedGrad);
  });

  it('releases each perturbation z as soon as it is added (no buffer outlives a perturb)', () => {
    const params = [randn([3, 4], { generator: new Generator(8) }), randn([5], { generator: new Generator(9) })];
    const opt = new ZeroQAT(params);
    const before = memory().buffers; // finalizers run between tasks, never inside this synchronous test
    opt.perturb(11, 0.5);
    expect(memory().buffers).toBe(before);
  });

  it('steps lower the loss of a model with rounded weights (no gradient anywhere)', () => {
    const w = randn([8], { generator: new Generator(5) }).mul(2);
    const target = randn([8], { generator: new Generator(6) });
    const loss = () => w.mul(8).round().div(8).sub(target).square().sum();
    const opt = new ZeroQAT([w], { lr: 0.02, eps: 0.05, seed: 1 });
    const start = loss().item();
    for (let i = 0; i < 300; i++) opt.step(loss);
    expect(loss().item()).toBeLessThan(0.5 * start);
    const mem = opt.memory();
    expect(mem.zeroQatExtraBytes).toBe(32);
    expect(mem.backpropAdamExtraBytes).toBe(96);
  });

  it('counts each parameter in its own width (int8: 1 byte, float64: 8), a repeated one once', () => {
    const codes = tensor(new Int8Array([1, -2, 3, 4, 5, 6]), { dtype: 'int8' }); // 6 B
    const w = zeros([2, 3], { dtype: 'float64' }); // 48 B
    const b = zeros([5]); // 20 B
    const mem = new ZeroQAT([codes, w, b, w]).memory();
    expect(mem).toEqual({ parameterBytes: 74, zeroQatExtraBytes: 48, backpropAdamExtraBytes: 222 });
  });
});
