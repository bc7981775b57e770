/**
 * @file Neural-network ops: softmax/logSoftmax, the row normalisation under layerNorm, rmsNorm
 * and groupNorm, rotary embeddings and SwiGLU are fused primitives (one kernel pass forward and
 * backward; a benchmark showed the chains of maps and reductions dominating the tiny-Llama step),
 * with the affine parts and dropout written as composites. Losses live in loss.ts.
 */
import { contiguousStrides } from '@qgrad/kernels';
import { broadcastShapes, empty, normDim, runKernel, runKernelInto } from '../dispatch.js';
import { isGradEnabled, sameShape } from '../tape.js';
import { floatType } from '../dtype.js';
import { defineFunction } from '../function.js';
import { defaultGenerator, type Generator } from '../random.js';
import { Tensor } from '../tensor.js';
import { rand } from './creation.js';
import { add, cast, exp, ge, mul, neg, rsqrt, sigmoid, silu, siluGrad, sub } from './elementwise.js';
import { mean, sum } from './reduce.js';
import { expandView, reshape } from './movement.js';
import { cat } from './shape.js';

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

function asFloat(x: Tensor): Tensor {
  return cast(x, floatType(x.dtype));
}

// ---------------------------------------------------------------- softmax family (fused primitives)
// Forward is one kernel pass per row. Backward runs the fused kernel too, unless a graph of the
// backward is being recorded (createGraph): then it is written in tensor ops, so it has a
// backward of its own (double backward, Hessian-vector products).
const softmaxFns = [false, true].map((log) => defineFunction({
  name: log ? 'logSoftmax' : 'softmax',
  forward(ctx, x: Tensor, dim: number, bias: Tensor | null) {
    const xf = asFloat(x);
    const shape = [...xf.shape];
    const y = runKernel('softmax', bias ? [xf, expandView(cast(bias, xf.dtype), shape)] : [xf], shape, xf.dtype, { axis: dim, log });
    ctx.save(y);
    ctx.state = { dim };
    return y;
  },
  backward(ctx, g) {
    const y = ctx.saved[0]!;
    const { dim } = ctx.state as { dim: number };
    // softmax: dx = y ⊙ (g − Σ g·y); log-softmax: dx = g − softmax(x)·Σ g; the bias gets dx too
    // (the engine sums it over the dims it was broadcast along)
    const dx = !isGradEnabled()
      ? runKernel('softmaxBackward', [y, g], [...y.shape], y.dtype, { axis: dim, log })
      : log ? sub(g, mul(exp(y), sum(g, dim, true))) : mul(y, sub(g, sum(mul(g, y), dim, true)));
    return [dx, null, ctx.needsInputGrad[2] ? dx : null];
  },
})) as [SoftmaxFn, SoftmaxFn];
type SoftmaxFn = (x: Tensor, dim: number, bias: Tensor | null) => Tensor;

/** Options of the fused softmax: a bias (an attention mask) added to x in the same pass. */
export interface SoftmaxOptions {
  /** Added to x before the softmax, broadcast to x's shape (an attention mask as 0 / −∞), in the same pass. */
  bias?: Tensor | null;
}

function checkBias(op: string, x: Tensor, bias?: Tensor | null): Tensor | null {
  if (!bias) return null;
  let ok = true;
  try {
    ok = broadcastShapes(op, x.shape, bias.shape).join() === x.shape.join();
  } catch {
    ok = false;
  }
  if (!ok) throw new Error(`${op}: bias of shape ${fmt(bias.shape)} does not broadcast to the input's shape ${fmt(x.shape)}`);
  return bias;
}

/**
 * Normalises the rows of x [rows, n] (no affine): rms x·r or layer (x − μ)·r with
 * r = 1/√(mean of squares of x or x − μ, + eps). Fused like softmax.
 */
const normFn = defineFunction({
  name: 'norm',
  forward(ctx, x: Tensor, kind: 'rms' | 'layer', eps: number) {
    ctx.save(x);
    ctx.state = { kind, eps };
    return runKernel('norm', [x], [...x.shape], x.dtype, { kind, eps });
  },
  backward(ctx, g) {
    const x = ctx.saved[0]!;
    const { kind, eps } = ctx.state as { kind: 'rms' | 'layer'; eps: number };
    if (!isGradEnabled()) return [runKernel('normBackward', [x, g], [...x.shape], x.dtype, { kind, eps }), null, null];
    return [normGrad(x, g, kind, eps), null, null];
  },
});

/** normFn's dx in tensor ops (a recorded backward): y = (x − μ)·r, dx = r·(g − mean(g) − y·mean(g·y)), no mean(g) term for rms (μ = 0). */
function normGrad(x: Tensor, g: Tensor, kind: 'rms' | 'layer', eps: number): Tensor {
  const c = kind === 'layer' ? sub(x, mean(x, -1, true)) : x;
  const r = rsqrt(add(mean(mul(c, c), -1, true), eps));
  const y = mul(c, r);
  const gc = kind === 'layer' ? sub(g, mean(g, -1, true)) : g;
  return mul(r, sub(gc, mul(y, mean(mul(g, y), -1, true))));
}

/**
 * normFn followed by the affine weight w [n] (y·w), fused: the forward multiplies in the norm's
 * pass, the backward gives dx and dw from one pass over x and g (out [rows + 1, n]: dx rows, then
 * dw), where the mul's backward took two maps and a column sum, and the norm's backward a third
 * pass. The same roundings as norm then mul, so the same bits.
 */
const normAffineFn = defineFunction({
  name: 'normAffine',
  forward(ctx, x: Tensor, w: Tensor, kind: 'rms' | 'layer', eps: number) {
    ctx.save(x, w);
    ctx.state = { kind, eps };
    return runKernel('norm', [x, w], [...x.shape], x.dtype, { kind, eps });
  },
  backward(ctx, g) {
    const [x, w] = ctx.saved as [Tensor, Tensor];
    const { kind, eps } = ctx.state as { kind: 'rms' | 'layer'; eps: number };
    // d(y·w) = w·dy, dy → dx as normFn's; dw = Σ_rows g·y
    if (isGradEnabled()) return [normGrad(x, mul(g, w), kind, eps), sum(mul(g, normFn(x, kind, eps)), 0), null, null];
    const [rows, n] = x.shape as [number, number];
    const both = runKernel('normBackward', [x, g, w], [rows + 1, n], x.dtype, { kind, eps });
    return [new Tensor(both.storage, [rows, n], [n, 1], 0), new Tensor(both.storage, [n], [1], rows * n), null, null];
  },
});

/** Runs normFn over the trailing `count` dims of x (flattened into one row each). */
function normalizeTrailing(x: Tensor, count: number, kind: 'rms' | 'layer', eps: number): Tensor {
  const n = x.shape.slice(x.ndim - count).reduce((a, b) => a * b, 1);
  return reshape(normFn(reshape(x, [-1, n]), kind, eps), x.shape);
}

/**
 * Softmax along `dim`, computed stably (the row max is subtracted first), like
 * `torch.softmax(x, dim)`. Integer inputs are computed in float32.
 * @example softmax(tensor([[1, 2, 3]]), -1).sum(-1).item(); // 1
 */
export function softmax(x: Tensor, dim: number, opts: SoftmaxOptions = {}): Tensor {
  return softmaxFns[0](x, normDim('softmax', dim, x.ndim), checkBias('softmax', x, opts.bias));
}

/**
 * log(softmax(x)) along `dim`, computed as (x − max) − log Σ exp(x − max), so it stays finite
 * where softmax underflows.
 * @example logSoftmax(tensor([0, 0]), 0).toArray(); // [-0.6931, -0.6931]
 */
export function logSoftmax(x: Tensor, dim: number, opts: SoftmaxOptions = {}): Tensor {
  return softmaxFns[1](x, normDim('logSoftmax', dim, x.ndim), checkBias('logSoftmax', x, opts.bias));
}

/**
 * Softmax of −x (`torch.nn.functional.softmin`).
 * @example softmin(tensor([1, 2]), 0); // [0.7311, 0.2689]
 */
export function softmin(x: Tensor, dim: number): Tensor {
  return softmax(x.neg(), dim);
}

// ---------------------------------------------------------------- rotary embeddings (fused primitive)
// x·cos + rotateHalf(x)·sin is linear in x: its backward is the adjoint kernel, whose backward is
// the forward again, so every order of derivative w.r.t. x is one kernel pass.
// A scale k multiplies the rotated value (the adjoint: its input), so d/dx (k·rope(x)) = k·ropeᵀ.
// The gradient is written in x's memory layout where x is a permuted dense block (q and k: heads
// split off a projection, [B, H, T, D] views of [B, T, H, D]): the transposes and the reshape back
// to the projection's output are then views instead of a copy.
const ropeFns: [RopeFn, RopeFn] = [false, true].map((transpose) =>
  defineFunction({
    name: transpose ? 'applyRotaryAdjoint' : 'applyRotary',
    forward(ctx, x: Tensor, cos: Tensor, sin: Tensor, scale: number, layout: number[] | null = null) {
      ctx.save(cos, sin);
      ctx.state = { scale, layout: permutedLayout(x) };
      const shape = [...x.shape];
      const inputs = [x, expandView(cast(cos, x.dtype), shape), expandView(cast(sin, x.dtype), shape)];
      if (!layout) return runKernel('rope', inputs, shape, x.dtype, { transpose, scale });
      const out = emptyInLayout(shape, layout, x);
      runKernelInto('rope', inputs, out, { transpose, scale });
      return out;
    },
    backward(ctx, g) {
      const [c, s] = ctx.saved as [Tensor, Tensor];
      const { scale, layout } = ctx.state as { scale: number; layout: number[] | null };
      return [ropeFns[transpose ? 0 : 1](g, c, s, scale, layout), null, null, null, null]; // d/dx k·(x·c + R(x)·s) = k·(c + Rᵀ(·s))
    },
  }),
) as [RopeFn, RopeFn];
type RopeFn = (x: Tensor, cos: Tensor, sin: Tensor, scale: number, layout?: number[] | null) => Tensor;

/**
 * x's dims from outermost to innermost in memory when x is a permutation of a dense block with
 * its last dim innermost and is not contiguous (heads split off a projection); else null.
 */
function permutedLayout(x: Tensor): number[] | null {
  const r = x.ndim;
  if (r < 2 || x.strides[r - 1] !== 1 || x.isContiguous()) return null;
  const order = [...x.shape.keys()].sort((a, b) => x.strides[b]! - x.strides[a]! || a - b);
  if (order[r - 1] !== r - 1) return null;
  let step = 1;
  for (let i = r - 1; i >= 0; i--) {
    const d = order[i]!;
    if (x.shape[d] === 1) continue;
    if (x.strides[d] !== step) return null;
    step *= x.shape[d]!;
  }
  return order;
}

/** A fresh tensor of `shape` laid out in memory with its dims in `order`, outermost first. */
function emptyInLayout(shape: number[], order: number[], like: Tensor): Tensor {
  const block = empty(order.map((d) => shape[d]!), like.dtype, like, 'rope');
  const inner = contiguousStrides(block.shape);
  const strides = new Array<number>(shape.length);
  order.forEach((d, i) => (strides[d] = inner[i]!));
  return new Tensor(block.storage, shape, strides, 0);
}

/**
 * Rotary position embedding in the rotate-half layout (Hugging Face Llama's): x·cos + [−x₂, x₁]·sin
 * along the last dim, with cos/sin tables broadcast to x ([T, D] for x [..., T, D]). One fused
 * kernel pass forward and backward; tables that require grad take the op-by-op path.
 * `opts.scale` multiplies the result in the same pass, with the bits of `applyRotary(x, cos, sin).mul(scale)`
 * (attention's 1/√d on q, without a pass of its own).
 * @example applyRotary(q, cos.narrow(0, start, t), sin.narrow(0, start, t), { scale: 1 / Math.sqrt(hd) });
 */
export function applyRotary(x: Tensor, cos: Tensor, sin: Tensor, opts: { scale?: number } = {}): Tensor {
  const scale = opts.scale ?? 1;
  const d = x.shape[x.ndim - 1] ?? 0;
  if (x.ndim === 0 || d % 2) throw new Error(`applyRotary: the last dim of x must be even, got shape ${fmt(x.shape)}`);
  for (const [name, t] of [['cos', cos], ['sin', sin]] as const) {
    try {
      if (broadcastShapes('applyRotary', x.shape, t.shape).join() !== x.shape.join()) throw new Error();
    } catch {
      throw new Error(`applyRotary: ${name} of shape ${fmt(t.shape)} does not broadcast to x of shape ${fmt(x.shape)}`);
    }
  }
  const xf = asFloat(x);
  if ((cos.requiresGrad || sin.requiresGrad) && isGradEnabled()) {
    const h = d / 2;
    const y = add(mul(xf, cos), mul(cat([neg(xf.narrow(-1, h, h)), xf.narrow(-1, 0, h)], -1), sin));
    return scale === 1 ? y : mul(y, scale);
  }
  return ropeFns[0](xf, cos, sin, scale);
}

// ---------------------------------------------------------------- SwiGLU (fused primitive)
// silu(gate)·up as one map forward (the silu and mul maps' roundings, so the same bits), and one
// pass backward writing both gradients into one [2, ...] buffer: the three maps it replaces (g·up,
// its siluBackward, g·silu(gate)) read g twice and a saved silu(gate) besides.
const swigluFn = defineFunction({
  name: 'swiglu',
  forward(ctx, gate: Tensor, up: Tensor) {
    ctx.save(gate, up);
    return runKernel('binary', [gate, up], [...gate.shape], gate.dtype, { op: 'siluMul' });
  },
  backward(ctx, g) {
    const [gate, up] = ctx.saved as [Tensor, Tensor];
    if (isGradEnabled()) {
      // a recorded backward must be differentiable again: the same derivative in tensor ops
      return [ctx.needsInputGrad[0] ? siluGrad(mul(g, up), gate) : null, ctx.needsInputGrad[1] ? mul(g, mul(gate, sigmoid(gate))) : null];
    }
    // d gate = g·up·σ·(1 + gate·(1 − σ)), d up = g·silu(gate): halves of one buffer, as views
    const shape = [...gate.shape];
    const both = runKernel('swigluBackward', [g, gate, up], [2, ...shape], gate.dtype, {});
    const half = (i: number) => new Tensor(both.storage, shape, contiguousStrides(shape), i * both.storage.size / 2);
    return [ctx.needsInputGrad[0] ? half(0) : null, ctx.needsInputGrad[1] ? half(1) : null];
  },
});

/**
 * silu(gate)·up, the gated unit of Llama's MLP (SwiGLU), in one kernel pass forward and one
 * backward; the same values as `silu(gate).mul(up)`, bit for bit. Inputs of different shapes
 * (broadcast) or dtypes take that composite.
 * @example swiglu(gateProj.forward(x), upProj.forward(x)); // [B, T, hidden]
 */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  const same = gate.dtype === up.dtype && (gate.dtype === 'float32' || gate.dtype === 'float64') && sameShape(gate.shape, up.shape);
  return same ? swigluFn(gate, up) : mul(silu(gate), up);
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
  return affine(normalizeTrailing(asFloat(x), dims.length, 'layer', eps), weight, bias);
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
  const e = eps ?? machineEps(xf);
  if (weight && weight.dtype === xf.dtype) {
    // weight has the trailing dims' shape: both flattened to rows of n
    const n = weight.shape.reduce((a, b) => a * b, 1);
    return reshape(normAffineFn(reshape(xf, [-1, n]), reshape(weight, [n]), 'rms', e), xf.shape);
  }
  return affine(normalizeTrailing(xf, dims.length, 'rms', e), weight);
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
  const g = reshape(asFloat(x), [n, numGroups, -1]); // [N, G, C/G·spatial]
  const y = reshape(normalizeTrailing(g, 1, 'layer', eps), x.shape);
  const perChannel = (t?: Tensor | null) => (t ? reshape(t, [c, ...x.shape.slice(2).map(() => 1)]) : t); // [C, 1, …]
  return affine(y, perChannel(weight), perChannel(bias));
}

// ---------------------------------------------------------------- dropout (composite)
/** Options of `dropout`: the generator the mask is drawn from. */
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
