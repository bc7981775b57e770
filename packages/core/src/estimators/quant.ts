/**
 * @file The quantizing ops that take a gradient estimator: `fakeQuantize` (one fused primitive
 * whose backward gives x, scale and zero-point gradients), and rounding / floor / sign / clamp
 * with a chosen estimator. They live beside the estimators (estimator.ts, the registry in
 * index.ts) so that ops/ never imports estimators/. `softQuantize` and `gradScale`, which take
 * no estimator, are ops/quant.ts; re-exported here so Tensor's methods need one import.
 */
import type { RoundingMode } from '@qgrad/kernels';
import { broadcastShapes, empty, normDim, runKernel } from '../dispatch.js';
import { Tensor } from '../tensor.js';
import { keep } from '../lifetime.js';
import { scalarLike } from '../ops/creation.js';
import { clamp, sign } from '../ops/elementwise.js';
import { expandView, reshape } from '../ops/movement.js';
import type { EstimatorOptions, QuantConfig } from './estimator.js';
import { getEstimator, type Estimator } from './index.js';
import { lsqGradScale } from './lsq.js';

export { softQuantize, gradScale } from '../ops/quant.js';

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/** Options of the rounding ops with a gradient estimator (`round`, `clamp`, … ): which estimator, by name or object, and its settings. */
export interface QuantOptions extends EstimatorOptions {
  /** A registered estimator name ('ste', 'clipped-ste', 'lsq', 'lsq+', 'trust', 'stochastic', 'relaxed', or your own). */
  estimator?: string | Estimator;
}

/** Options of `fakeQuantize`: the grid's integer range and the estimator. */
export interface FakeQuantizeOptions extends Omit<QuantOptions, 'gradScale'> {
  /** Integer range of the grid, inclusive (e.g. −128 … 127, or 0 … 255). */
  qmin: number;
  qmax: number;
  /** Rounding of x/s + z: 'halfEven' (default, like PyTorch), 'halfAway' or 'floor'. */
  rounding?: Exclude<RoundingMode, 'stochastic'>;
  /** Per-channel: scale and zeroPoint are 1-D of length x.shape[axis]. */
  axis?: number;
  /**
   * Factor on the scale/zero-point gradients: a number (PyTorch's `grad_factor`), or 'lsq' for
   * LSQ's 1/√(N·qmax) with N = the number of elements sharing one scale. Default 1.
   */
  gradScale?: number | 'lsq';
  /** Round (half-even) and clamp the zero point to [qmin, qmax] as PyTorch does (default true). */
  roundZeroPoint?: boolean;
}

/** The 0-d zeros a number zero point of 0 becomes, one per backend and dtype, kept (a QAT step then fills none per quantizer). */
const zeros = new WeakMap<object, Map<string, Tensor>>();
function zeroLike(x: Tensor): Tensor {
  let byDtype = zeros.get(x.storage.backend);
  if (!byDtype) zeros.set(x.storage.backend, (byDtype = new Map()));
  let t = byDtype.get(x.dtype);
  if (!t || t.storage.released) byDtype.set(x.dtype, (t = keep(scalarLike(0, x.dtype, x))));
  return t;
}

function asParam(name: string, v: Tensor | number, x: Tensor, axis: number | undefined): Tensor {
  let t = v instanceof Tensor ? v : Object.is(v, 0) ? zeroLike(x) : scalarLike(v, x.dtype, x);
  if (axis !== undefined && t.numel() !== 1) {
    const c = x.shape[axis]!;
    if (t.ndim !== 1 || t.shape[0] !== c) throw new Error(`fakeQuantize: per-channel ${name} must have shape [${c}] for axis ${axis} of input ${fmt(x.shape)}, got ${fmt(t.shape)}`);
    t = reshape(t, x.shape.map((d, i) => (i === axis ? d : 1)));
  }
  const b = broadcastShapes(`fakeQuantize (${name})`, x.shape, t.shape);
  if (b.length !== x.ndim || b.some((d, i) => d !== x.shape[i])) {
    throw new Error(`fakeQuantize: ${name} of shape ${fmt(t.shape)} must broadcast to the input's shape ${fmt(x.shape)} without enlarging it`);
  }
  return t;
}

function checkRange(op: string, qmin: number, qmax: number): void {
  if (!Number.isInteger(qmin) || !Number.isInteger(qmax) || qmin > qmax) throw new Error(`${op}: qmin and qmax must be integers with qmin ≤ qmax, got qmin ${qmin}, qmax ${qmax}`);
}

/**
 * Fake quantization x̂ = s·(clamp(R(x/s + z), qmin, qmax) − z) as one primitive: the forward is a
 * fused kernel and the estimator decides the gradients of x, scale and zero point. The default
 * estimator 'lsq' reproduces `torch._fake_quantize_learnable_per_tensor_affine` (and
 * `_per_channel_affine` with `axis`): outputs and gradients, with z rounded half-even and clamped,
 * gradients scaled by `gradScale` (torch's grad_factor). With 'lsq+' the third argument is a real
 * offset β: x̂ = s·clamp(R((x − β)/s), qmin, qmax) + β.
 * @example
 * const s = tensor([0.1], { requiresGrad: true });
 * const y = fakeQuantize(x, s, 0, { qmin: -8, qmax: 7 }); // 4-bit signed, LSQ gradients for s
 */
export function fakeQuantize(x: Tensor, scale: Tensor | number, zeroPoint: Tensor | number = 0, opts: FakeQuantizeOptions): Tensor {
  if (!opts || opts.qmin === undefined || opts.qmax === undefined) throw new Error('fakeQuantize: options { qmin, qmax } are required');
  checkRange('fakeQuantize', opts.qmin, opts.qmax);
  if (x.dtype !== 'float32' && x.dtype !== 'float64') throw new Error(`fakeQuantize: input must be float32 or float64, got ${x.dtype} of shape ${fmt(x.shape)}`);
  const axis = opts.axis === undefined ? undefined : normDim('fakeQuantize', opts.axis, x.ndim);
  const s = asParam('scale', scale, x, axis);
  const z = asParam('zeroPoint', zeroPoint, x, axis);
  const est = getEstimator(opts.estimator ?? 'lsq');
  let gradScale = opts.gradScale ?? 1;
  if (gradScale === 'lsq') {
    if (opts.qmax <= 0) throw new Error(`fakeQuantize: gradScale 'lsq' needs qmax > 0, got ${opts.qmax}`);
    gradScale = lsqGradScale(x.numel() / s.numel(), opts.qmax);
  }
  const offset = est.spec.offset === 'beta' ? 'beta' : opts.roundZeroPoint === false ? 'zeroPoint' : 'roundedZeroPoint';
  const config: QuantConfig = {
    qmin: opts.qmin, qmax: opts.qmax, rounding: opts.rounding ?? 'halfEven', offset,
    options: { gradScale, trust: opts.trust, temperature: opts.temperature, generator: opts.generator },
  };
  return est.apply(x, s, z, config);
}

/** Options of `fakeQuantizeAbsmax`: fakeQuantize's, and how each row's scale is made from its absmax. */
export interface FakeQuantizeAbsmaxOptions extends FakeQuantizeOptions {
  /** s = max(max|x_row|, minScale)/divisor: the grid's top level (127 for int8) … */
  divisor: number;
  /** … and the smallest scale (an all-zero row gets this one). */
  minScale: number;
}

/**
 * Fake quantization with a dynamic scale per row of x's last axis (a token of an activation, a
 * group of a grouped view), computed in the same kernel pass: s = max(max|x|, minScale)/divisor,
 * no zero point. Returns x̂ (with the estimator's gradients; the scales are constants to it) and
 * the scales [...rows, 1], detached. Equals `fakeQuantize(x, clamp(norm(x, Infinity, -1, true),
 * minScale).div(divisor), 0, opts)` bit for bit, without the reduction and the two scalar ops.
 * @example const { y, scale } = fakeQuantizeAbsmax(x, { qmin: -128, qmax: 127, divisor: 127, minScale: 1e-5, estimator: 'ste' });
 */
export function fakeQuantizeAbsmax(x: Tensor, opts: FakeQuantizeAbsmaxOptions): { y: Tensor; scale: Tensor } {
  if (!opts || opts.qmin === undefined || opts.qmax === undefined) throw new Error('fakeQuantizeAbsmax: options { qmin, qmax, divisor, minScale } are required');
  checkRange('fakeQuantizeAbsmax', opts.qmin, opts.qmax);
  if (x.dtype !== 'float32' && x.dtype !== 'float64') throw new Error(`fakeQuantizeAbsmax: input must be float32 or float64, got ${x.dtype} of shape ${fmt(x.shape)}`);
  if (x.ndim === 0) throw new Error('fakeQuantizeAbsmax: needs an input with at least one axis (its last axis holds the rows that share a scale)');
  if (!(opts.divisor > 0) || !(opts.minScale > 0)) throw new Error(`fakeQuantizeAbsmax: divisor and minScale must be > 0, got ${opts.divisor} and ${opts.minScale}`);
  const est = getEstimator(opts.estimator ?? 'ste');
  if (est.spec.forward || est.spec.offset === 'beta') throw new Error(`fakeQuantizeAbsmax: estimator '${est.name}' has a forward or offset of its own; use fakeQuantize with a computed scale`);
  const shape = [...x.shape];
  const scale = empty([...shape.slice(0, -1), 1], x.dtype, x, 'fakeQuantizeAbsmax');
  const z = zeroLike(x);
  const offset = opts.roundZeroPoint === false ? 'zeroPoint' : 'roundedZeroPoint';
  const rounding = opts.rounding ?? 'halfEven';
  const y = runKernel('fakeQuantize', [x, expandView(scale, shape), expandView(z, shape)], shape, x.dtype, {
    qmin: opts.qmin, qmax: opts.qmax, rounding, offset, absmaxScale: { divisor: opts.divisor, min: opts.minScale },
  });
  let gradScale = opts.gradScale ?? 1;
  if (gradScale === 'lsq') gradScale = lsqGradScale(shape[shape.length - 1]!, Math.max(opts.qmax, 1));
  const config: QuantConfig = {
    qmin: opts.qmin, qmax: opts.qmax, rounding, offset, y,
    options: { gradScale, trust: opts.trust, temperature: opts.temperature, generator: opts.generator },
  };
  return { y: est.apply(x, scale, z, config), scale };
}

function unbounded(x: Tensor, rounding: RoundingMode, opts: QuantOptions, fallback: string): Tensor {
  const est = getEstimator(opts.estimator ?? fallback);
  const one = scalarLike(1, x.dtype, x);
  const zero = scalarLike(0, x.dtype, x);
  return est.apply(x, one, zero, { qmin: -Infinity, qmax: Infinity, rounding, offset: 'zeroPoint', options: opts });
}

/**
 * Rounds half to even with a gradient estimator (plain `round` has zero gradient, as PyTorch's).
 * @example quantRound(x).sum().backward(); // x.grad is all ones (straight-through)
 */
export function quantRound(x: Tensor, opts: QuantOptions & { rounding?: 'halfEven' | 'halfAway' | 'stochastic' } = {}): Tensor {
  const rounding = opts.rounding ?? 'halfEven';
  return unbounded(x, rounding === 'stochastic' ? 'halfEven' : rounding, rounding === 'stochastic' ? { ...opts, estimator: 'stochastic' } : opts, 'ste');
}

/**
 * ⌊x⌋ with a gradient estimator (default straight-through).
 * @example quantFloor(x, { estimator: 'ste' }); // floor forward, identity gradient
 */
export function quantFloor(x: Tensor, opts: QuantOptions = {}): Tensor {
  return unbounded(x, 'floor', opts, 'ste');
}

/**
 * sign(x) with a gradient estimator: 'ste' (identity), 'clipped-ste' (1[|x| ≤ 1], the hardtanh
 * STE of BinaryConnect; the default), 'trust' (1[|sign(x) − x| ≤ 1]) or 'stochastic'
 * (P(+1) = (x + 1)/2). Seen as a grid with step 2 and levels ±1.
 * @example quantSign(x, { estimator: 'clipped-ste' }); // binary weights, gradient 0 outside [-1, 1]
 */
export function quantSign(x: Tensor, opts: QuantOptions = {}): Tensor {
  const est = getEstimator(opts.estimator ?? 'clipped-ste');
  const y = est.spec.forward ? undefined : sign(x.detach());
  const s = scalarLike(2, x.dtype, x);
  const z = scalarLike(0.5, x.dtype, x);
  return est.apply(x, s, z, { qmin: 0, qmax: 1, rounding: 'halfEven', offset: 'zeroPoint', options: opts, y });
}

/**
 * clamp(x, min, max) with a gradient estimator: 'clipped-ste' (the default, PyTorch's inclusive
 * mask) or 'ste' (gradient passes everywhere, also outside the range).
 * @example quantClamp(x, -1, 1, { estimator: 'ste' }); // clamp forward, identity gradient
 */
export function quantClamp(x: Tensor, min: number, max: number, opts: QuantOptions = {}): Tensor {
  if (!(min <= max)) throw new Error(`quantClamp: min ${min} must be ≤ max ${max}`);
  const est = getEstimator(opts.estimator ?? 'clipped-ste');
  const one = scalarLike(1, x.dtype, x);
  const zero = scalarLike(0, x.dtype, x);
  const y = clamp(x.detach(), min, max);
  return est.apply(x, one, zero, { qmin: -Infinity, qmax: Infinity, rounding: 'halfEven', offset: 'zeroPoint', options: opts, y, grid: { lo: min, hi: max, radius: Infinity } });
}
