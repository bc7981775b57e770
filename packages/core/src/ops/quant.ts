/**
 * @file Quantization ops that take no gradient estimator: the soft quantizer `softQuantize`
 * (HESTIA's forward) and `gradScale`. `fakeQuantize` and rounding with an estimator live beside
 * the estimators in ../estimators/quant.ts; grids and quantizers in @qgrad/quant.
 */
import { defineFunction } from '../function.js';
import { Tensor } from '../tensor.js';
import { tensor } from './creation.js';
import { div, exp, mul, neg, square, sub } from './elementwise.js';
import { unsqueeze } from './movement.js';
import { logsumexp, sum } from './reduce.js';

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/**
 * The relaxed quantizer: softmax over grid levels of −(x − ℓ)²/τ, returning the expected level
 * Σ_k p_k ℓ_k. Differentiable in x, the levels and τ; hardens to the nearest level as τ → 0.
 * @example softQuantize(tensor([0.4]), [-1, 0, 1], 0.01).item(); // ≈ 0
 */
export function softQuantize(x: Tensor, levels: Tensor | number[], temperature: Tensor | number): Tensor {
  const l = levels instanceof Tensor ? levels : tensor(levels, { dtype: x.dtype });
  if (l.ndim !== 1 || l.numel() === 0) throw new Error(`softQuantize: levels must be a non-empty 1-D tensor, got shape ${fmt(l.shape)}`);
  if (typeof temperature === 'number' && !(temperature > 0)) throw new Error(`softQuantize: temperature must be > 0, got ${temperature}`);
  const xe = unsqueeze(x, -1); // [..., 1] against levels [K]
  const logits = div(neg(square(sub(xe, l))), temperature instanceof Tensor ? unsqueeze(temperature, -1) : temperature);
  const p = exp(sub(logits, logsumexp(logits, -1, true)));
  return sum(mul(p, l), -1);
}

const gradScaleFn = defineFunction({
  name: 'gradScale',
  forward(ctx, x: Tensor, factor: number) {
    ctx.state = { factor };
    return x.alias();
  },
  backward: (ctx, g) => [mul(g, ctx.state.factor as number), null], // d(identity)·factor
});

/**
 * Identity forward, gradient multiplied by `factor` (LSQ's gradient scaling, methods.md §0.3).
 * @example const s2 = gradScale(s, 1 / Math.sqrt(n * qmax));
 */
export function gradScale(x: Tensor, factor: number): Tensor {
  return gradScaleFn(x, factor);
}
