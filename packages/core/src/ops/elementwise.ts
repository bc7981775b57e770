/**
 * @file Elementwise ops: arithmetic with broadcasting and type promotion, unary math and
 * activations, where/clamp/maximum/minimum, comparisons, casts and the in-place writers.
 * Each primitive sits next to its derivative; composites (gelu, silu, leakyRelu …) have none.
 */
import { isFloat, type BinaryOp, type DType, type UnaryOp } from '@qgrad/kernels';
import { broadcastShapes, runKernel, runKernelInto } from '../dispatch.js';
import { checkDType, floatType, promoteTypes, scalarType } from '../dtype.js';
import { defineFunction } from '../function.js';
import { isGradEnabled } from '../tape.js';
import { Tensor } from '../tensor.js';
import { scalarLike, zerosLike } from './creation.js';
import { expandView } from './movement.js';

/** An op operand: a tensor, or a number broadcast as a scalar of the other operand's dtype. */
export type TensorLike = Tensor | number;

/**
 * Turns a number into a 0-d tensor next to `like` (numbers never widen a tensor's dtype).
 * @internal plumbing for @qgrad/nn and @qgrad/quant, left off the API site
 */
export function asTensor(v: TensorLike, like: Tensor): Tensor {
  return v instanceof Tensor ? v : scalarLike(v, scalarType(v, like.dtype), like);
}

/** A cast that is free when the dtype already matches (forward-only helper). */
function castNoGrad(t: Tensor, dtype: DType): Tensor {
  return t.dtype === dtype ? t : runKernel('copy', [t], [...t.shape], dtype, {});
}

function unaryKernel(x: Tensor, op: UnaryOp, outDtype: DType, alpha?: number): Tensor {
  return runKernel('unary', [castNoGrad(x, outDtype === 'uint8' ? x.dtype : outDtype)], [...x.shape], outDtype, alpha === undefined ? { op } : { op, alpha });
}

/** Broadcasts, casts both sides to `compute`, and runs a binary kernel producing `outDtype`. */
function binaryKernel(op: BinaryOp, a: Tensor, b: Tensor, compute: DType, outDtype: DType = compute): Tensor {
  const shape = broadcastShapes(op, a.shape, b.shape);
  return runKernel('binary', [expandView(castNoGrad(a, compute), shape), expandView(castNoGrad(b, compute), shape)], shape, outDtype, { op });
}

function pair(a: TensorLike, b: TensorLike): [Tensor, Tensor] {
  if (a instanceof Tensor) return [a, asTensor(b, a)];
  if (b instanceof Tensor) return [asTensor(a, b), b];
  throw new Error('elementwise op: at least one argument must be a Tensor');
}

// ---------------------------------------------------------------- arithmetic
const addFn = defineFunction({
  name: 'add',
  forward: (_ctx, a: Tensor, b: Tensor) => binaryKernel('add', a, b, promoteTypes(a.dtype, b.dtype)),
  backward: (_ctx, g) => [g, g], // d(a+b) = da + db
});
const subFn = defineFunction({
  name: 'sub',
  forward: (_ctx, a: Tensor, b: Tensor) => binaryKernel('sub', a, b, promoteTypes(a.dtype, b.dtype)),
  backward: (_ctx, g) => [g, neg(g)], // d(a-b) = da - db
});
const mulFn = defineFunction({
  name: 'mul',
  forward(ctx, a: Tensor, b: Tensor) {
    ctx.save(a, b);
    return binaryKernel('mul', a, b, promoteTypes(a.dtype, b.dtype));
  },
  backward(ctx, g) {
    const [a, b] = ctx.saved as [Tensor, Tensor];
    return [ctx.needsInputGrad[0] ? mul(g, b) : null, ctx.needsInputGrad[1] ? mul(g, a) : null]; // d(ab) = b da + a db
  },
});
const divFn = defineFunction({
  name: 'div',
  forward(ctx, a: Tensor, b: Tensor) {
    ctx.save(a, b);
    return binaryKernel('div', a, b, floatType(promoteTypes(a.dtype, b.dtype)));
  },
  backward(ctx, g) {
    const [a, b] = ctx.saved as [Tensor, Tensor];
    const gb = div(g, b);
    return [gb, ctx.needsInputGrad[1] ? neg(mul(gb, div(a, b))) : null]; // d(a/b) = da/b - a db/b²
  },
});
const powFn = defineFunction({
  name: 'pow',
  forward(ctx, a: Tensor, b: Tensor) {
    const y = binaryKernel('pow', a, b, promoteTypes(a.dtype, b.dtype));
    ctx.save(a, b, y);
    return y;
  },
  backward(ctx, g) {
    const [a, b, y] = ctx.saved as [Tensor, Tensor, Tensor];
    // d(aᵇ) = b aᵇ⁻¹ da + aᵇ ln a db   (the db term is 0 where a = 0, as in PyTorch)
    const ga = ctx.needsInputGrad[0] ? mul(g, mul(b, pow(a, sub(b, 1)))) : null;
    const gb = ctx.needsInputGrad[1] ? where(eq(a, 0), 0, mul(g, mul(y, log(a)))) : null;
    return [ga, gb];
  },
});

/** a + alpha·b with broadcasting. @example add(tensor([1, 2]), 1).toArray(); // [2, 3] */
export function add(a: TensorLike, b: TensorLike, alpha = 1): Tensor {
  const [x, y] = pair(a, alpha === 1 ? b : mul(b, alpha));
  return addFn(x, y);
}
/**
 * a - alpha·b with broadcasting.
 * @example sub(tensor([5, 7]), 2); // [3, 5]
 */
export function sub(a: TensorLike, b: TensorLike, alpha = 1): Tensor {
  const [x, y] = pair(a, alpha === 1 ? b : mul(b, alpha));
  return subFn(x, y);
}
/**
 * a · b with broadcasting.
 * @example mul(tensor([[1], [2]]), tensor([3, 4])); // [[3, 4], [6, 8]] (broadcast)
 */
export function mul(a: TensorLike, b: TensorLike): Tensor {
  return mulFn(...pair(a, b));
}
/**
 * a / b with broadcasting (true division: integer inputs give float32).
 * @example div(tensor([1, 2]), 4); // [0.25, 0.5]
 */
export function div(a: TensorLike, b: TensorLike): Tensor {
  return divFn(...pair(a, b));
}
/** aᵇ with broadcasting. @example pow(tensor([2, 3]), 2).toArray(); // [4, 9] */
export function pow(a: TensorLike, b: TensorLike): Tensor {
  return powFn(...pair(a, b));
}

// ---------------------------------------------------------------- unary primitives
type Saves = 'x' | 'y' | 'none';

/** A float unary primitive whose derivative is `grad(g, x, y)` (x/y null unless saved). */
function unaryOp(name: UnaryOp, saves: Saves, grad: (g: Tensor, x: Tensor, y: Tensor) => Tensor): (x: Tensor) => Tensor {
  return defineFunction({
    name,
    forward(ctx, x: Tensor) {
      const y = unaryKernel(x, name, floatType(x.dtype));
      if (saves === 'x') ctx.save(x);
      else if (saves === 'y') ctx.save(y);
      return y;
    },
    backward(ctx, g) {
      const s = ctx.saved[0]!;
      return [grad(g, s, s)];
    },
  });
}

/** A unary op with zero gradient almost everywhere (sign, floor, ceil, round, trunc); keeps dtype. */
function steppedOp(name: UnaryOp): (x: Tensor) => Tensor {
  return defineFunction({
    name,
    forward: (_ctx, x: Tensor) => unaryKernel(x, name, x.dtype),
    backward: (_ctx, g) => [zerosLike(g)], // piecewise constant
  });
}

/**
 * −x, elementwise.
 * @example neg(tensor([1, -2])); // [-1, 2]
 */
export const neg: (x: Tensor) => Tensor = defineFunction({
  name: 'neg',
  forward: (_ctx, x: Tensor) => unaryKernel(x, 'neg', x.dtype),
  backward: (_ctx, g) => [neg(g)], // d(-x) = -dx
});
/**
 * eˣ, elementwise.
 * @example exp(tensor([0, 1])); // [1, 2.718]
 */
export const exp = unaryOp('exp', 'y', (g, _x, y) => mul(g, y)); // d eˣ = eˣ
/**
 * Natural logarithm, elementwise.
 * @example log(tensor([1, Math.E])); // [0, 1]
 */
export const log = unaryOp('log', 'x', (g, x) => div(g, x)); // d ln x = 1/x
/**
 * ln(1 + x), accurate for small x.
 * @example log1p(tensor([1e-10])); // [1e-10]
 */
export const log1p = unaryOp('log1p', 'x', (g, x) => div(g, add(x, 1))); // d ln(1+x) = 1/(1+x)
/**
 * eˣ − 1, accurate for small x.
 * @example expm1(tensor([1e-10])); // [1e-10]
 */
export const expm1 = unaryOp('expm1', 'y', (g, _x, y) => mul(g, add(y, 1))); // d (eˣ-1) = eˣ
/**
 * Square root, elementwise.
 * @example sqrt(tensor([4, 9])); // [2, 3]
 */
export const sqrt = unaryOp('sqrt', 'y', (g, _x, y) => div(g, mul(y, 2))); // d √x = 1/(2√x)
/**
 * 1 / √x, elementwise.
 * @example rsqrt(tensor([4])); // [0.5]
 */
export const rsqrt = unaryOp('rsqrt', 'y', (g, _x, y) => mul(g, mul(pow(y, 3), -0.5))); // d x^-½ = -½ x^-3/2
/**
 * |x|, elementwise.
 * @example abs(tensor([-2, 3])); // [2, 3]
 */
export const abs = defineFunction({
  name: 'abs',
  forward(ctx, x: Tensor) {
    ctx.save(x);
    return unaryKernel(x, 'abs', x.dtype);
  },
  backward: (ctx, g) => [mul(g, sign(ctx.saved[0]!))], // d|x| = sign(x)
});
/**
 * Sine, elementwise.
 * @example sin(tensor([0])); // [0]
 */
export const sin = unaryOp('sin', 'x', (g, x) => mul(g, cos(x))); // d sin = cos
/**
 * Cosine, elementwise.
 * @example cos(tensor([0])); // [1]
 */
export const cos = unaryOp('cos', 'x', (g, x) => neg(mul(g, sin(x)))); // d cos = -sin
/**
 * Hyperbolic tangent, elementwise.
 * @example tanh(tensor([0, 1])); // [0, 0.7616]
 */
export const tanh = unaryOp('tanh', 'y', (g, _x, y) => mul(g, sub(1, mul(y, y)))); // d tanh = 1 - tanh²
/**
 * 1 / (1 + e^-x), elementwise.
 * @example sigmoid(tensor([0])); // [0.5]
 */
export const sigmoid = unaryOp('sigmoid', 'y', (g, _x, y) => mul(g, mul(y, sub(1, y)))); // dσ = σ(1-σ)
// d relu = [x > 0]: PyTorch's threshold_backward in one kernel (x ≤ 0 ? 0 : g); when a graph of the
// backward is recorded, g times a float mask (differentiable in g; constant in x almost everywhere)
/**
 * max(x, 0), elementwise.
 * @example relu(tensor([-1, 2])); // [0, 2]
 */
export const relu = unaryOp('relu', 'x', (g, x) =>
  isGradEnabled() ? mul(g, unaryKernel(x, 'reluGrad', floatType(x.dtype))) : binaryKernel('reluBackward', g, x, g.dtype),
);
/**
 * The error function, elementwise.
 * @example erf(tensor([0, 1])); // [0, 0.8427]
 */
export const erf = unaryOp('erf', 'x', (g, x) => mul(g, mul(exp(neg(mul(x, x))), 2 / Math.sqrt(Math.PI)))); // d erf = 2/√π e^{-x²}
/**
 * 1 / x, elementwise.
 * @example reciprocal(tensor([2, 4])); // [0.5, 0.25]
 */
export const reciprocal = unaryOp('reciprocal', 'y', (g, _x, y) => neg(mul(g, mul(y, y)))); // d 1/x = -1/x²
/**
 * −1, 0 or 1 by the sign of x; zero gradient (`quantSign` takes a gradient estimator).
 * @example sign(tensor([-2, 0, 3])); // [-1, 0, 1]
 */
export const sign = steppedOp('sign');
/**
 * Rounds down, keeping the dtype; zero gradient (`quantFloor` takes a gradient estimator).
 * @example floor(tensor([1.7, -1.2])); // [1, -2]
 */
export const floor = steppedOp('floor');
/**
 * Rounds up, keeping the dtype; zero gradient.
 * @example ceil(tensor([1.2, -1.7])); // [2, -1]
 */
export const ceil = steppedOp('ceil');
/**
 * Rounds toward zero, keeping the dtype; zero gradient.
 * @example trunc(tensor([1.7, -1.7])); // [1, -1]
 */
export const trunc = steppedOp('trunc');
/** Rounds half to even, as `torch.round`; zero gradient (see the quantization estimators for STE). */
export const round = steppedOp('roundHalfEven');

const softplusFn = defineFunction({
  name: 'softplus',
  forward(ctx, x: Tensor, beta: number) {
    ctx.save(x);
    ctx.state = { beta };
    return unaryKernel(x, 'softplus', floatType(x.dtype), beta);
  },
  backward(ctx, g) {
    const x = ctx.saved[0]!;
    const bx = mul(x, ctx.state.beta as number);
    return [where(gt(bx, 20), g, mul(g, sigmoid(bx))), null]; // d softplus = σ(βx), linear above the threshold
  },
});
/**
 * log(1 + e^{βx})/β, linear where βx > 20 (PyTorch's default threshold).
 * @example softplus(tensor([0])); // [0.6931]
 */
export function softplus(x: Tensor, beta = 1): Tensor {
  return softplusFn(x, beta);
}

/**
 * x², elementwise.
 * @example square(tensor([-3, 2])); // [9, 4]
 */
export function square(x: Tensor): Tensor {
  return mul(x, x);
}

// ---------------------------------------------------------------- selection
const whereFn = defineFunction({
  name: 'where',
  forward(ctx, cond: Tensor, a: Tensor, b: Tensor) {
    ctx.save(cond);
    const shape = broadcastShapes('where', broadcastShapes('where', cond.shape, a.shape), b.shape);
    const dt = promoteTypes(a.dtype, b.dtype);
    return runKernel('where', [expandView(cond, shape), expandView(castNoGrad(a, dt), shape), expandView(castNoGrad(b, dt), shape)], shape, dt, {});
  },
  backward(ctx, g) {
    const c = ctx.saved[0]!;
    const z = zerosLike(g);
    return [null, ctx.needsInputGrad[1] ? where(c, g, z) : null, ctx.needsInputGrad[2] ? where(c, z, g) : null]; // routes g by the condition
  },
});
/**
 * Elementwise `cond ? a : b` with broadcasting.
 * @example where(gt(x, 0), x, 0); // relu
 */
export function where(cond: Tensor, a: TensorLike, b: TensorLike): Tensor {
  const like = a instanceof Tensor ? a : b instanceof Tensor ? b : cond;
  const ta = a instanceof Tensor ? a : scalarLike(a, scalarType(a, b instanceof Tensor ? b.dtype : floatType(like.dtype)), like);
  const tb = b instanceof Tensor ? b : scalarLike(b, scalarType(b, ta.dtype), like);
  return whereFn(cond, ta, tb);
}

function extremum(name: 'maximum' | 'minimum') {
  return defineFunction({
    name,
    forward(ctx, a: Tensor, b: Tensor) {
      ctx.save(a, b);
      return binaryKernel(name, a, b, promoteTypes(a.dtype, b.dtype));
    },
    backward(ctx, g) {
      const [a, b] = ctx.saved as [Tensor, Tensor];
      // the winner takes g; on ties each side gets g/2, as PyTorch does
      const wa = name === 'maximum' ? gt(a, b) : lt(a, b);
      const tie = mul(eq(a, b), 0.5);
      return [mul(g, add(wa, tie)), mul(g, add(name === 'maximum' ? lt(a, b) : gt(a, b), tie))];
    },
  });
}
const maximumFn = extremum('maximum');
const minimumFn = extremum('minimum');
/**
 * The larger of `a` and `b` elementwise, with broadcasting (PyTorch `maximum`).
 * @example maximum(tensor([1, 5]), 3); // [3, 5]
 */
export function maximum(a: TensorLike, b: TensorLike): Tensor {
  return maximumFn(...pair(a, b));
}
/**
 * The smaller of `a` and `b` elementwise, with broadcasting (PyTorch `minimum`).
 * @example minimum(tensor([1, 5]), 3); // [1, 3]
 */
export function minimum(a: TensorLike, b: TensorLike): Tensor {
  return minimumFn(...pair(a, b));
}

const clampFn = defineFunction({
  name: 'clamp',
  forward(ctx, x: Tensor, lo: number | null, hi: number | null) {
    ctx.save(x);
    ctx.state = { lo, hi };
    let y = x;
    if (lo !== null) y = binaryKernel('maximum', y, scalarLike(lo, x.dtype, x), x.dtype);
    if (hi !== null) y = binaryKernel('minimum', y, scalarLike(hi, x.dtype, x), x.dtype);
    return y === x ? x.alias() : y;
  },
  backward(ctx, g) {
    const x = ctx.saved[0]!;
    const { lo, hi } = ctx.state as { lo: number | null; hi: number | null };
    // gradient passes where lo ≤ x ≤ hi (inclusive, as PyTorch)
    let m: Tensor = g;
    if (lo !== null) m = mul(m, ge(x, lo));
    if (hi !== null) m = mul(m, le(x, hi));
    return [m, null, null];
  },
});
/**
 * Clamps into [min, max]; either bound may be omitted.
 * @example clamp(tensor([-2, 0.5, 3]), -1, 1); // [-1, 0.5, 1]
 */
export function clamp(x: Tensor, min?: number | null, max?: number | null): Tensor {
  if ((min ?? null) === null && (max ?? null) === null) throw new Error('clamp: at least one of min and max must be given');
  return clampFn(x, min ?? null, max ?? null);
}

// ---------------------------------------------------------------- activations (composites)
/**
 * x where x > 0, else `negativeSlope`·x (PyTorch `leaky_relu`).
 * @example leakyRelu(tensor([-2, 3]), 0.1); // [-0.2, 3]
 */
export function leakyRelu(x: Tensor, negativeSlope = 0.01): Tensor {
  return where(gt(x, 0), x, mul(x, negativeSlope));
}
/**
 * GELU: exact (erf) by default, or the tanh approximation with `approximate: 'tanh'`.
 * @example gelu(x); gelu(x, 'tanh'); // exact erf form, or the tanh approximation
 */
export function gelu(x: Tensor, approximate: 'none' | 'tanh' = 'none'): Tensor {
  if (approximate === 'tanh') {
    // ½x(1 + tanh(√(2/π)(x + 0.044715x³)))
    const inner = mul(add(x, mul(pow(x, 3), 0.044715)), Math.sqrt(2 / Math.PI));
    return mul(mul(x, 0.5), add(tanh(inner), 1));
  }
  return mul(mul(x, 0.5), add(erf(mul(x, Math.SQRT1_2)), 1)); // ½x(1 + erf(x/√2))
}
/**
 * x·σ(x) (`F.silu`), one fused pass forward; the backward uses the fused derivative kernel unless
 * a graph of it is being recorded.
 * @example silu(tensor([0, 1])).toArray(); // [0, 0.7311]
 */
export const silu = unaryOp('silu', 'x', (g, x) => siluGrad(g, x));

/**
 * g·silu′(x): the fused derivative kernel, or in tensor ops where a graph of it is being recorded
 * (silu's backward, and swiglu's recorded backward with g·up for g).
 * @example siluGrad(ones([2]), tensor([0, 1])).toArray(); // [0.5, 0.9277]
 */
export function siluGrad(g: Tensor, x: Tensor): Tensor {
  if (!isGradEnabled()) return binaryKernel('siluBackward', g, x, floatType(x.dtype));
  const s = sigmoid(x);
  return mul(g, mul(s, add(1, mul(x, sub(1, s))))); // d silu = σ·(1 + x·(1 − σ))
}
/**
 * x where x > 0, else α(eˣ − 1) (PyTorch `elu`).
 * @example elu(tensor([-1, 1])); // [-0.632, 1]
 */
export function elu(x: Tensor, alpha = 1): Tensor {
  return where(gt(x, 0), x, mul(expm1(x), alpha));
}

// ---------------------------------------------------------------- comparisons (no gradient, uint8 out)
function compare(op: BinaryOp) {
  return (a: TensorLike, b: TensorLike): Tensor => {
    const [x, y] = pair(a, b);
    return binaryKernel(op, x, y, promoteTypes(x.dtype, y.dtype), 'uint8');
  };
}
/**
 * a == b elementwise with broadcasting, as a uint8 mask (no gradient).
 * @example eq(tensor([1, 2]), 2); // [0, 1]
 */
export const eq = compare('eq');
/**
 * a != b elementwise with broadcasting, as a uint8 mask.
 * @example ne(tensor([1, 2]), 2); // [1, 0]
 */
export const ne = compare('ne');
/**
 * a < b elementwise with broadcasting, as a uint8 mask.
 * @example lt(tensor([1, 2]), 2); // [1, 0]
 */
export const lt = compare('lt');
/**
 * a ≤ b elementwise with broadcasting, as a uint8 mask.
 * @example le(tensor([1, 3]), 2); // [1, 0]
 */
export const le = compare('le');
/**
 * a > b elementwise with broadcasting, as a uint8 mask.
 * @example gt(tensor([1, 3]), 2); // [0, 1]
 */
export const gt = compare('gt');
/**
 * a ≥ b elementwise with broadcasting, as a uint8 mask.
 * @example ge(tensor([1, 2]), 2); // [0, 1]
 */
export const ge = compare('ge');
/**
 * Both nonzero, elementwise with broadcasting, as a uint8 mask.
 * @example logicalAnd(tensor([0, 1, 1]), tensor([1, 0, 1])); // [0, 0, 1]
 */
export const logicalAnd = compare('logicalAnd');
/**
 * Either nonzero, elementwise with broadcasting, as a uint8 mask.
 * @example logicalOr(tensor([0, 1, 0]), tensor([0, 0, 1])); // [0, 1, 1]
 */
export const logicalOr = compare('logicalOr');
/**
 * A uint8 mask: 1 where x is neither infinite nor NaN.
 * @example isfinite(tensor([1, Infinity, NaN])); // [1, 0, 0]
 */
export function isfinite(x: Tensor): Tensor {
  return unaryKernel(x, 'isfinite', 'uint8');
}
/**
 * A uint8 mask: 1 where x is NaN.
 * @example isnan(tensor([1, NaN])); // [0, 1]
 */
export function isnan(x: Tensor): Tensor {
  return unaryKernel(x, 'isnan', 'uint8');
}
/**
 * A uint8 mask: 1 where x is zero.
 * @example logicalNot(tensor([0, 2])); // [1, 0]
 */
export function logicalNot(x: Tensor): Tensor {
  return unaryKernel(x, 'logicalNot', 'uint8');
}

// ---------------------------------------------------------------- casts and in-place writers
const castFn = defineFunction({
  name: 'cast',
  forward: (_ctx, x: Tensor, dtype: DType) => runKernel('copy', [x], [...x.shape], dtype, {}),
  backward: (_ctx, g) => [g, null], // the engine casts g back to the input's dtype
});
/**
 * Converts to `dtype` (float → int truncates); differentiable between float dtypes.
 * @example cast(tensor([1.7, -1.7]), 'int32'); // [1, -1]
 */
export function cast(x: Tensor, dtype: DType): Tensor {
  if (x.dtype === dtype) return x;
  checkDType('cast', dtype);
  return castFn(x, dtype);
}

function checkInplace(op: string, dst: Tensor): void {
  if (isGradEnabled() && dst.requiresGrad) {
    throw new Error(`${op}: in-place write to a tensor of shape [${dst.shape.join(', ')}] that requires grad; wrap it in noGrad() (as optimizers do) or use the out-of-place op`);
  }
}

// An in-place op must not need memory on the scale of the tensor it writes: a fill_ of a 6.4 GB
// tensor peaked at 3× its size, because the js kernels index broadcast and strided operands
// through tables of one int32 per element, and wasm stages every operand in its own memory. So a
// scalar fill of a dense tensor is one 'fill' kernel (no operand at all), and the other writers
// run over blocks of dst of at most INPLACE_BLOCK elements, which bounds any kernel's scratch by
// the block. 2^16 elements keeps that scratch under a megabyte while each kernel call still has
// enough work to hide its overhead.
const INPLACE_BLOCK = 1 << 16;

/** Rows [start, start + count) along dim 0, as a raw view (nothing recorded). */
function rowsView(t: Tensor, start: number, count: number): Tensor {
  return new Tensor(t.storage, [count, ...t.shape.slice(1)], t.strides, t.offset + start * t.strides[0]!);
}

/** Row `i` along dim 0, as a raw view (nothing recorded). */
function rowView(t: Tensor, i: number): Tensor {
  return new Tensor(t.storage, t.shape.slice(1), t.strides.slice(1), t.offset + i * t.strides[0]!);
}

/**
 * Calls `write` on matching blocks of `dst` and `src` (already broadcast to dst's shape), in
 * order, each of at most INPLACE_BLOCK elements; `split` false calls it once on the whole.
 */
function forBlocks(dst: Tensor, src: Tensor, split: boolean, write: (d: Tensor, s: Tensor) => void): void {
  const n = dst.numel();
  if (!split || n <= INPLACE_BLOCK) return write(dst, src);
  const outer = dst.shape[0]!;
  const inner = n / outer;
  if (inner > INPLACE_BLOCK) {
    for (let i = 0; i < outer; i++) forBlocks(rowView(dst, i), rowView(src, i), true, write);
    return;
  }
  const step = Math.floor(INPLACE_BLOCK / inner);
  for (let r = 0; r < outer; r += step) {
    const count = Math.min(step, outer - r);
    write(rowsView(dst, r, count), rowsView(src, r, count));
  }
}

/**
 * `t` as one contiguous 1-D run when its elements fill one exactly in some order (contiguous, or
 * a transpose or permutation of a contiguous tensor), else null. Order is irrelevant to a fill.
 */
function denseRun(t: Tensor): Tensor | null {
  if (t.isContiguous()) return t;
  const dims: number[] = [];
  for (let i = 0; i < t.ndim; i++) if (t.shape[i] !== 1) dims.push(i);
  dims.sort((a, b) => t.strides[b]! - t.strides[a]!);
  let expected = 1;
  for (let k = dims.length - 1; k >= 0; k--) {
    if (t.strides[dims[k]!] !== expected) return null;
    expected *= t.shape[dims[k]!]!;
  }
  return new Tensor(t.storage, [expected], [1], t.offset);
}

/**
 * dst[...] = src (broadcast, cast), in place.
 * @internal plumbing for @qgrad/nn and @qgrad/quant, left off the API site
 */
export function copyInto(dst: Tensor, src: TensorLike): void {
  checkInplace('copy_', dst);
  const run = typeof src === 'number' ? denseRun(dst) : null;
  if (run !== null) {
    // the kernel stores through dst's typed array, which rounds and wraps as a cast would
    runKernelInto('fill', [], run, { value: src as number });
    return;
  }
  const s = asTensor(src, dst);
  const version = dst.version;
  // a source sharing dst's memory is copied in one call, so no block reads what another wrote
  forBlocks(dst, expandView(s, dst.shape), s.storage !== dst.storage, (d, b) => runKernelInto('copy', [b], d, {}));
  dst.storage.version = version + 1;
}

/**
 * dst = dst ∘ other, in place (used by optimizers under noGrad).
 * @internal plumbing for @qgrad/nn and @qgrad/quant, left off the API site
 */
export function inplaceBinary(dst: Tensor, op: BinaryOp, other: TensorLike, alpha = 1): void {
  checkInplace(`${op}_`, dst);
  // add_(other, alpha): a number folds alpha in; a tensor is scaled block by block below
  if (typeof other === 'number') (other *= alpha), (alpha = 1);
  let o = asTensor(other, dst);
  const shape = broadcastShapes(op, dst.shape, o.shape);
  if (shape.join() !== dst.shape.join()) throw new Error(`${op}_: result shape [${shape.join(', ')}] does not match the in-place tensor's shape [${dst.shape.join(', ')}]`);
  // a small operand is cast once; a large one block by block, so the cast is never tensor-sized
  if (o.numel() <= INPLACE_BLOCK) o = castNoGrad(o, dst.dtype);
  const scale = alpha !== 1 ? scalarLike(alpha, dst.dtype, dst) : null;
  const version = dst.version;
  forBlocks(dst, expandView(o, dst.shape), o.storage !== dst.storage, (d, b) => {
    if (scale) b = binaryKernel('mul', b, scale, dst.dtype);
    if (d.isContiguous()) {
      runKernelInto('binary', [d, castNoGrad(b, dst.dtype)], d, { op });
    } else {
      // js and wasm binary kernels write contiguous outputs only: compute the block, then copy it
      runKernelInto('copy', [binaryKernel(op, d, b, dst.dtype)], d, {});
    }
  });
  dst.storage.version = version + 1;
}

export { isFloat };
