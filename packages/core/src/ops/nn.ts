/**
 * @file Neural-network ops: softmax and logSoftmax (primitives, so their backward is one small
 * formula instead of a chain of reductions), and the composites layerNorm, rmsNorm, groupNorm
 * and dropout. Losses live in loss.ts.
 */
import { normDim } from '../dispatch.js';
import { floatType } from '../dtype.js';
import { defineFunction } from '../function.js';
import { defaultGenerator, type Generator } from '../random.js';
import { Tensor } from '../tensor.js';
import { rand } from './creation.js';
import { add, cast, div, exp, ge, log, mul, rsqrt, sub } from './elementwise.js';
import { amax, mean, sum, variance } from './reduce.js';
import { reshape } from './movement.js';

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/** x − max(x) along `dim`: exp of it cannot overflow (forward only; rows of all −∞ give NaN, as in PyTorch). */
function shifted(x: Tensor, dim: number): Tensor {
  return sub(x, amax(x, dim, true));
}

function asFloat(x: Tensor): Tensor {
  return cast(x, floatType(x.dtype));
}

// ---------------------------------------------------------------- softmax family (primitives)
const softmaxFn = defineFunction({
  name: 'softmax',
  forward(ctx, x: Tensor, dim: number) {
    const e = exp(shifted(asFloat(x), dim));
    const y = div(e, sum(e, dim, true));
    ctx.save(y);
    ctx.state = { dim };
    return y;
  },
  backward(ctx, g) {
    const y = ctx.saved[0]!;
    const dim = ctx.state.dim as number;
    return [mul(y, sub(g, sum(mul(g, y), dim, true))), null]; // dx = y ⊙ (g − Σ g·y)
  },
});

const logSoftmaxFn = defineFunction({
  name: 'logSoftmax',
  forward(ctx, x: Tensor, dim: number) {
    const z = shifted(asFloat(x), dim);
    const y = sub(z, log(sum(exp(z), dim, true)));
    ctx.save(y);
    ctx.state = { dim };
    return y;
  },
  backward(ctx, g) {
    const y = ctx.saved[0]!;
    const dim = ctx.state.dim as number;
    return [sub(g, mul(exp(y), sum(g, dim, true))), null]; // dx = g − softmax(x)·Σg
  },
});

/**
 * Softmax along `dim`, computed stably (the row max is subtracted first), like
 * `torch.softmax(x, dim)`. Integer inputs are computed in float32.
 * @example softmax(tensor([[1, 2, 3]]), -1).sum(-1).item(); // 1
 */
export function softmax(x: Tensor, dim: number): Tensor {
  return softmaxFn(x, normDim('softmax', dim, x.ndim));
}

/**
 * log(softmax(x)) along `dim`, computed as (x − max) − log Σ exp(x − max), so it stays finite
 * where softmax underflows.
 * @example logSoftmax(tensor([0, 0]), 0).toArray(); // [-0.6931, -0.6931]
 */
export function logSoftmax(x: Tensor, dim: number): Tensor {
  return logSoftmaxFn(x, normDim('logSoftmax', dim, x.ndim));
}

/** Softmax of −x (`torch.nn.functional.softmin`). */
export function softmin(x: Tensor, dim: number): Tensor {
  return softmax(x.neg(), dim);
}

// ---------------------------------------------------------------- normalisation (composites)
function lastDims(op: string, x: Tensor, normalizedShape: number[] | number): number[] {
  const ns = typeof normalizedShape === 'number' ? [normalizedShape] : normalizedShape;
  const tail = x.shape.slice(x.ndim - ns.length);
  if (ns.length === 0 || ns.length > x.ndim || tail.some((d, i) => d !== ns[i])) {
    throw new Error(`${op}: normalizedShape ${fmt(ns)} does not match the trailing dims of input of shape ${fmt(x.shape)}`);
  }
  return ns.map((_, i) => x.ndim - ns.length + i);
}

function checkAffine(op: string, name: string, t: Tensor | null | undefined, expected: number[]): void {
  if (t && t.shape.join() !== expected.join()) throw new Error(`${op}: ${name} of shape ${fmt(t.shape)} does not match the expected shape ${fmt(expected)}`);
}

function affine(y: Tensor, weight?: Tensor | null, bias?: Tensor | null): Tensor {
  const w = weight ? mul(y, weight) : y;
  return bias ? add(w, bias) : w;
}

/**
 * Layer normalisation over the trailing `normalizedShape` dims (`F.layer_norm`): biased
 * variance, then an optional elementwise affine with `weight`/`bias` of that shape.
 * @example layerNorm(randn([2, 5]), [5]).mean(-1); // ≈ [0, 0]
 */
export function layerNorm(x: Tensor, normalizedShape: number[] | number, weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  const dims = lastDims('layerNorm', x, normalizedShape);
  const ns = dims.map((d) => x.shape[d]!);
  checkAffine('layerNorm', 'weight', weight, ns);
  checkAffine('layerNorm', 'bias', bias, ns);
  const mu = mean(x, dims, true);
  const v = variance(x, dims, { correction: 0, keepdim: true });
  return affine(mul(sub(x, mu), rsqrt(add(v, eps))), weight, bias);
}

/** Machine epsilon of a float dtype (`torch.finfo(dtype).eps`). */
function machineEps(x: Tensor): number {
  return x.dtype === 'float64' ? Number.EPSILON : 2 ** -23;
}

/**
 * RMS normalisation over the trailing `normalizedShape` dims (`F.rms_norm`):
 * x / √(mean(x²) + eps) · weight. As in PyTorch, an omitted `eps` means the machine epsilon of
 * the input dtype (2⁻²³ for float32, 2⁻⁵² for float64).
 * @example rmsNorm(tensor([[3, 4]]), [2]).toArray(); // ≈ [[0.8485, 1.1314]]
 */
export function rmsNorm(x: Tensor, normalizedShape: number[] | number, weight?: Tensor | null, eps?: number | null): Tensor {
  const dims = lastDims('rmsNorm', x, normalizedShape);
  checkAffine('rmsNorm', 'weight', weight, dims.map((d) => x.shape[d]!));
  const xf = asFloat(x);
  const ms = mean(mul(xf, xf), dims, true);
  return affine(mul(xf, rsqrt(add(ms, eps ?? machineEps(xf)))), weight);
}

/**
 * Group normalisation (`F.group_norm`): channels of x [N, C, *] split into `numGroups` groups,
 * each normalised over its channels and spatial positions; `weight`/`bias` are per channel [C].
 * @example groupNorm(randn([2, 4, 3]), 2).shape; // [2, 4, 3]
 */
export function groupNorm(x: Tensor, numGroups: number, weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  if (x.ndim < 2) throw new Error(`groupNorm: expected input of shape [N, C, *], got ${fmt(x.shape)}`);
  const [n, c] = x.shape as [number, number];
  if (!Number.isInteger(numGroups) || numGroups <= 0 || c % numGroups !== 0) {
    throw new Error(`groupNorm: ${c} channels of input of shape ${fmt(x.shape)} cannot be split into ${numGroups} groups`);
  }
  checkAffine('groupNorm', 'weight', weight, [c]);
  checkAffine('groupNorm', 'bias', bias, [c]);
  const g = reshape(x, [n, numGroups, -1]); // [N, G, C/G·spatial]
  const mu = mean(g, 2, true);
  const v = variance(g, 2, { correction: 0, keepdim: true });
  const y = reshape(mul(sub(g, mu), rsqrt(add(v, eps))), x.shape);
  const perChannel = (t?: Tensor | null) => (t ? reshape(t, [c, ...x.shape.slice(2).map(() => 1)]) : t); // [C, 1, …]
  return affine(y, perChannel(weight), perChannel(bias));
}

// ---------------------------------------------------------------- dropout (composite)
export interface DropoutOptions {
  /** Source of randomness (default: the default generator, seeded by `manualSeed`). */
  generator?: Generator;
}

/**
 * Inverted dropout (`F.dropout`): in training, zeroes each element with probability `p` and
 * scales the survivors by 1/(1−p), so the expectation is unchanged; identity when
 * `training` is false or p = 0; all zeros when p = 1.
 * @example manualSeed(0); dropout(ones([4]), 0.5).toArray(); // e.g. [2, 0, 2, 2]
 */
export function dropout(x: Tensor, p = 0.5, training = true, opts: DropoutOptions = {}): Tensor {
  if (!(p >= 0 && p <= 1)) throw new RangeError(`dropout: probability has to be between 0 and 1, but got ${p}`);
  if (!training || p === 0) return x;
  if (p === 1) return mul(x, 0); // keeps the graph; every gradient is 0
  const u = rand([...x.shape], { dtype: floatType(x.dtype), generator: opts.generator ?? defaultGenerator });
  const mask = mul(cast(ge(u, p), u.dtype), 1 / (1 - p)); // P(keep) = 1 − p; survivors scaled
  return mul(x, mask);
}
