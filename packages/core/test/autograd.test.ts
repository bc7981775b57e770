import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { AnomalyError, defineFunction, detectAnomaly, grad, gradOf, noGrad, tensor, Tensor, valueAndGrad } from '@qgrad/core';
import { assertAllclose, gradcheck, gradgradcheck } from '@qgrad/core/testing';

describe('backward', () => {
  it('accumulates leaf gradients across calls', () => {
    const x = tensor([1, 2, 3], { requiresGrad: true });
    x.mul(x).sum().backward();
    x.mul(3).sum().backward();
    expect(x.grad!.toArray()).toEqual([5, 7, 9]);
  });

  it('sums gradients of a tensor used twice and of diamond graphs', () => {
    const x = tensor([2], { requiresGrad: true, dtype: 'float64' });
    const y = x.exp();
    y.mul(y).add(y.sin()).sum().backward(); // d/dx (e^{2x} + sin e^x) = 2e^{2x} + cos(e^x) e^x
    const e = Math.exp(2);
    expect(x.grad!.item()).toBeCloseTo(2 * e * e + Math.cos(e) * e, 10);
  });

  it('names the shape when backward is called on a non-scalar without a gradient', () => {
    const x = tensor([[1, 2]], { requiresGrad: true });
    expect(() => x.mul(2).backward()).toThrow(/backward: grad can be implicitly created only for scalar outputs; this tensor has shape \[1, 2\]/);
    x.mul(2).backward(tensor([[1, 1]]));
    expect(x.grad!.toArray()).toEqual([[2, 2]]);
  });

  it('refuses a second backward through freed saved tensors unless retainGraph', () => {
    const x = tensor([1, 2], { requiresGrad: true });
    const y = x.mul(x).sum();
    y.backward(undefined, { retainGraph: true });
    y.backward();
    expect(x.grad!.toArray()).toEqual([4, 8]);
    expect(() => y.backward()).toThrow(/second time/);
  });

  it('detach, noGrad and requiresGrad cut the tape', () => {
    const x = tensor([1, 2], { requiresGrad: true });
    expect(x.detach().mul(2).requiresGrad).toBe(false);
    expect(noGrad(() => x.mul(2)).requiresGrad).toBe(false);
    expect(x.mul(2).requiresGrad).toBe(true);
    expect(x.mul(2).isLeaf).toBe(false);
    expect(() => tensor([1], { dtype: 'int32', requiresGrad: true })).toThrow(/only floating-point/);
  });

  it('integer outputs never require grad', () => {
    const x = tensor([1.5, 2.5], { requiresGrad: true });
    expect(x.to('int32').requiresGrad).toBe(false);
    expect(x.argmax().requiresGrad).toBe(false);
  });
});

describe('functional grad', () => {
  it('grad and valueAndGrad differentiate a function of several tensors', () => {
    const f = (a: Tensor, b: Tensor) => a.mul(b).add(a.pow(2)).sum();
    const [ga, gb] = grad(f)(tensor([1, 2]), tensor([3, 4]));
    expect(ga!.toArray()).toEqual([5, 8]);
    expect(gb!.toArray()).toEqual([1, 2]);
    const [v] = valueAndGrad(f)(tensor([1, 2]), tensor([3, 4]));
    expect(v.item()).toBe(16);
  });

  it('gradOf leaves .grad untouched and reaches non-leaf tensors', () => {
    const x = tensor([1, 2], { requiresGrad: true });
    const h = x.mul(3);
    const [gh, gx] = gradOf([h.pow(2).sum()], [h, x]);
    expect(gh!.toArray()).toEqual([6, 12]);
    expect(gx!.toArray()).toEqual([18, 36]);
    expect(x.grad).toBeNull();
  });

  it('createGraph gives second derivatives (Hessian-vector products)', () => {
    const x = tensor([0.5, -1, 2], { requiresGrad: true, dtype: 'float64' });
    const v = tensor([1, 2, 3], { dtype: 'float64' });
    const y = x.pow(3).mul(x.sin()).sum();
    const [g] = gradOf([y], [x], { createGraph: true });
    const [hv] = gradOf([g!.mul(v).sum()], [x]);
    // y = Σ x³ sin x is separable: H is diagonal with 6x sin x + 6x² cos x − x³ sin x
    const xs = [0.5, -1, 2];
    const expected = xs.map((t, i) => (6 * t * Math.sin(t) + 6 * t * t * Math.cos(t) - t ** 3 * Math.sin(t)) * [1, 2, 3][i]!);
    assertAllclose(hv!, expected, { rtol: 1e-12 });
  });
});

describe('hooks', () => {
  it('leaf and non-leaf hooks see and may replace gradients; remove() unregisters', () => {
    const x = tensor([1, 2], { requiresGrad: true });
    const seen: number[][] = [];
    const h = x.registerHook((g) => void seen.push(g.toArray() as number[]));
    const y = x.mul(2);
    y.registerHook((g) => g.mul(10));
    y.sum().backward();
    expect(seen).toEqual([[20, 20]]);
    expect(x.grad!.toArray()).toEqual([20, 20]);
    h.remove();
    x.mul(2).sum().backward();
    expect(seen.length).toBe(1);
  });

  it('retainGrad keeps a non-leaf gradient', () => {
    const x = tensor([1, 2], { requiresGrad: true });
    const y = x.mul(3);
    y.retainGrad();
    y.pow(2).sum().backward();
    expect(y.grad!.toArray()).toEqual([6, 12]);
  });
});

describe('in-place changes of saved tensors', () => {
  it('are detected at backward with a message naming the op', () => {
    const x = tensor([1, 2], { requiresGrad: true });
    const y = x.exp(); // exp saves its output
    noGrad(() => y.add_(1));
    expect(() => y.sum().backward()).toThrow(/exp: a tensor of shape \[2\] needed for its gradient was modified by an in-place operation \(version 1, expected 0\)/);
  });

  it('in-place writes to tensors that require grad are refused outside noGrad', () => {
    const w = tensor([1, 2], { requiresGrad: true });
    expect(() => w.add_(1)).toThrow(/add_: in-place write .* requires grad/);
    noGrad(() => w.sub_(tensor([1, 1]), 0.5));
    expect(w.toArray()).toEqual([0.5, 1.5]);
    expect(w.version).toBe(1);
  });
});

describe('defineFunction', () => {
  const cube = defineFunction({
    name: 'cube',
    forward(ctx, x: Tensor) {
      ctx.save(x);
      return x.mul(x).mul(x);
    },
    backward(ctx, g) {
      const [x] = ctx.saved;
      return [g.mul(x!.mul(x!)).mul(3)]; // d x³ = 3x²
    },
  });

  it('computes forward and a gradient that passes gradcheck, and double backward', () => {
    gradcheck((x) => cube(x).sum(), [tensor([0.3, -1.2, 2], { dtype: 'float64' })]);
    const x = tensor([2], { requiresGrad: true, dtype: 'float64' });
    const [g] = gradOf([cube(x).sum()], [x], { createGraph: true });
    const [gg] = gradOf([g!.sum()], [x]);
    expect(gg!.item()).toBeCloseTo(12, 12);
  });

  it('passes needsInputGrad and non-tensor arguments, and records non-differentiable outputs', () => {
    let mask: boolean[] = [];
    const scaledArgmax = defineFunction({
      name: 'scaledWithIndex',
      forward(ctx, x: Tensor, k: number, y: Tensor) {
        mask = ctx.needsInputGrad;
        ctx.state = { k };
        const idx = x.argmax();
        ctx.markNonDifferentiable(idx);
        return [x.mul(k).add(y), idx];
      },
      backward: (ctx, g) => [g.mul(ctx.state.k as number), null, g],
    });
    const x = tensor([1, 3], { requiresGrad: true });
    const [out, idx] = scaledArgmax(x, 5, tensor([0, 0]));
    expect(mask).toEqual([true, false, false]);
    expect(idx!.requiresGrad).toBe(false);
    out!.sum().backward();
    expect(x.grad!.toArray()).toEqual([5, 5]);
  });

  it('onceDifferentiable makes double backward a clear error', () => {
    const once = defineFunction({
      name: 'once',
      onceDifferentiable: true,
      forward: (ctx, x: Tensor) => (ctx.save(x), x.mul(x)),
      backward: (ctx, g) => [g.mul(ctx.saved[0]!).mul(2)],
    });
    const x = tensor([3], { requiresGrad: true });
    const [g] = gradOf([once(x).sum()], [x], { createGraph: true });
    expect(g!.item()).toBe(6);
    expect(() => gradOf([g!.sum()], [x])).toThrow(/once: this function is marked onceDifferentiable/);
  });
});

describe('anomaly mode', () => {
  it('names the first op whose forward output is NaN and the call site', () => {
    const x = tensor([-1, 1], { requiresGrad: true });
    let err: unknown;
    try {
      detectAnomaly(() => x.mul(2).log());
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AnomalyError);
    expect(String(err)).toMatch(/forward of 'log' produced NaN or Inf/);
    expect(String(err)).toMatch(/autograd\.test\.ts/);
  });

  it('names the op whose backward gradient is not finite', () => {
    const x = tensor([0, 1], { requiresGrad: true });
    expect(() => detectAnomaly(() => x.sqrt().sum().backward())).toThrow(/backward of 'sqrt' returned NaN or Inf .*autograd\.test\.ts/);
  });

  it('is off by default, so NaN flows silently', () => {
    expect(q.isAnomalyEnabled()).toBe(false);
    expect(Number.isNaN(tensor([-1]).log().item())).toBe(true);
  });

  it('is switched on by QGRAD_DETECT_ANOMALY=1', () => {
    const script = fileURLToPath(new URL('./fixtures/anomaly-env.ts', import.meta.url));
    const out = execFileSync(process.execPath, ['--import', 'tsx', script], { env: { ...process.env, QGRAD_DETECT_ANOMALY: '1' }, encoding: 'utf8' });
    expect(out).toMatch(/AnomalyError: forward of 'log'/);
  });
});

describe('views', () => {
  it('share storage: writes through a view are visible in the base', () => {
    const base = q.zeros([3, 4]);
    const row = base.narrow(0, 1, 1);
    const col = base.transpose(0, 1).select(0, 2);
    row.copy_(7);
    expect(base.toArray()).toEqual([[0, 0, 0, 0], [7, 7, 7, 7], [0, 0, 0, 0]]);
    expect(col.toArray()).toEqual([0, 7, 0]);
    expect(col.storage).toBe(base.storage);
    expect(base.expand(2, 3, 4).strides).toEqual([0, 4, 1]);
    expect(base.reshape(12).storage).toBe(base.storage);
    expect(base.t().reshape(12).storage).not.toBe(base.storage); // non-contiguous reshape copies
  });

  it('slice follows Python semantics', () => {
    const x = q.arange(10);
    expect(x.slice(0, 2, 8, 3).toArray()).toEqual([2, 5]);
    expect(x.slice(0, -3).toArray()).toEqual([7, 8, 9]);
    expect(x.slice(0, null, null, 2).toArray()).toEqual([0, 2, 4, 6, 8]);
  });

  it('reshape errors name both shapes', () => {
    expect(() => q.zeros([2, 3]).reshape(4, 2)).toThrow(/reshape: shape \[4, 2\] is invalid for input of shape \[2, 3\]/);
    expect(() => q.zeros([2, 3]).t().view(6)).toThrow(/view: tensor of shape \[3, 2\] .* is not contiguous enough/);
  });
});

describe('printing', () => {
  it('prints like PyTorch', () => {
    expect(tensor([[1, 2], [3, 4]]).toString()).toBe('tensor([[1., 2.],\n        [3., 4.]])');
    expect(tensor([1.5], { requiresGrad: true }).toString()).toBe('tensor([1.5000], requires_grad=True)');
    expect(tensor([1, 2], { dtype: 'int32' }).toString()).toBe('tensor([1, 2], dtype=int32)');
    expect(tensor(3).toString()).toBe('tensor(3.)');
  });
});

describe('gradgradcheck (testing kit)', () => {
  it('passes for ops with double-differentiable backward rules', () => {
    gradgradcheck((x) => x.tanh().mul(x), [tensor([0.3, -1.2, 0.8], { dtype: 'float64' })]);
    gradgradcheck((a, b) => a.matmul(b), [q.randn([2, 3], { dtype: 'float64' }), q.randn([3, 2], { dtype: 'float64' })]);
  });

  it('catches a backward rule whose gradient is right but not itself differentiable', () => {
    const square = defineFunction({
      name: 'squareDetached',
      forward: (ctx, x: Tensor) => (ctx.save(x), x.mul(x)),
      backward: (ctx, g) => [g.mul(ctx.saved[0]!.detach()).mul(2)], // right value, cut from the graph
    });
    const x = [tensor([0.5, -1.5], { dtype: 'float64' })];
    gradcheck((t) => square(t), x);
    expect(() => gradgradcheck((t) => square(t), x)).toThrow(/gradcheck failed/);
  });
});
