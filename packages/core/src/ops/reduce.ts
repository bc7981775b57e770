/**
 * @file Reductions over any dims with keepdim: sum, mean, var, std, prod-free extrema (amax,
 * amin, max/min with indices), argmax/argmin, logsumexp, norm; and `sumToShape`, the one place
 * broadcast gradients are reduced back to their source shape.
 */
import { isFloat, numel } from '@qgrad/kernels';
import { normDim, runKernel } from '../dispatch.js';
import { floatType } from '../dtype.js';
import { defineFunction } from '../function.js';
import { isGradEnabled } from '../tape.js';
import { Tensor } from '../tensor.js';
import { arange } from './creation.js';
import { add, div, eq, log, mul, sqrt, sub, where, abs, pow, cast, isfinite } from './elementwise.js';
import { expand, reshape } from './movement.js';

/** The dims a reduction runs over: one dim, several, or all (null/undefined); negative dims count from the end. */
export type Dims = number | number[] | null | undefined;

/**
 * Normalised, sorted, de-duplicated reduction dims (all dims when `dim` is null/undefined).
 * @internal plumbing for @qgrad/nn and @qgrad/quant, left off the API site
 */
export function reduceDims(op: string, x: Tensor, dim: Dims): number[] {
  if (dim === null || dim === undefined) return x.shape.map((_, i) => i);
  const ds = (Array.isArray(dim) ? dim : [dim]).map((d) => normDim(op, d, x.ndim));
  return [...new Set(ds)].sort((a, b) => a - b).filter((d) => d < x.ndim);
}

function keptShape(x: Tensor, dims: number[]): number[] {
  return x.shape.map((d, i) => (dims.includes(i) ? 1 : d));
}

function dropDims(shape: number[], dims: number[]): number[] {
  return shape.filter((_, i) => !dims.includes(i));
}

const sumFn = defineFunction({
  name: 'sum',
  forward(ctx, x: Tensor, dims: number[], keepdim: boolean) {
    ctx.state = { shape: x.shape, kept: keptShape(x, dims) };
    const dtype = isFloat(x.dtype) ? x.dtype : 'int32';
    const y = runKernel('reduce', [x], keptShape(x, dims), dtype, { op: 'sum', axes: dims });
    return keepdim ? y : reshape(y, dropDims(y.shape, dims));
  },
  backward(ctx, g) {
    const { shape, kept } = ctx.state as { shape: number[]; kept: number[] };
    return [expand(reshape(g, kept), shape), null, null]; // d Σx = 1 for every summed element
  },
});

/** Sum over `dim` (all dims by default). @example tensor([[1, 2], [3, 4]]).sum(0).toArray(); // [4, 6] */
export function sum(x: Tensor, dim?: Dims, keepdim = false): Tensor {
  return sumFn(x, reduceDims('sum', x, dim), keepdim);
}

/**
 * The mean over `dim` (all elements when omitted), keeping reduced dims as size 1 if `keepdim`.
 * @example mean(tensor([[1, 2], [3, 4]]), 1); // [1.5, 3.5]
 */
export function mean(x: Tensor, dim?: Dims, keepdim = false): Tensor {
  const dims = reduceDims('mean', x, dim);
  const n = numel(dims.map((d) => x.shape[d]!));
  return div(sum(isFloat(x.dtype) ? x : cast(x, floatType(x.dtype)), dims, keepdim), n);
}

/** Options of `var` and `std`: Bessel's correction and keepdim. */
export interface VarOptions {
  /** Bessel's correction: divide by N - correction (PyTorch's default 1). */
  correction?: number;
  keepdim?: boolean;
}

/**
 * Variance over `dim` with Bessel's correction by default, as `torch.var`.
 * @example variance(tensor([1, 2, 3, 4])); // 1.6667 (correction 1)
 */
export function variance(x: Tensor, dim?: Dims, opts: VarOptions = {}): Tensor {
  const dims = reduceDims('var', x, dim);
  const n = numel(dims.map((d) => x.shape[d]!));
  const d = sub(x, mean(x, dims, true));
  return div(sum(mul(d, d), dims, opts.keepdim ?? false), Math.max(0, n - (opts.correction ?? 1)));
}

/**
 * The standard deviation over `dim` (√var; correction 1 by default, as PyTorch).
 * @example std(tensor([1, 2, 3, 4])); // 1.291
 */
export function std(x: Tensor, dim?: Dims, opts: VarOptions = {}): Tensor {
  return sqrt(variance(x, dim, opts));
}

function extremeFn(name: 'amax' | 'amin') {
  return defineFunction({
    name,
    forward(ctx, x: Tensor, dims: number[], keepdim: boolean) {
      const y = runKernel('reduce', [x], keptShape(x, dims), x.dtype, { op: name === 'amax' ? 'max' : 'min', axes: dims });
      ctx.save(x, y);
      ctx.state = { dims };
      return keepdim ? y : reshape(y, dropDims(y.shape, dims));
    },
    backward(ctx, g) {
      const [x, y] = ctx.saved as [Tensor, Tensor];
      const dims = ctx.state.dims as number[];
      // g is shared evenly among the elements that attain the extremum (PyTorch's amax rule)
      const hit = eq(x, y);
      const count = sum(hit, dims, true);
      return [div(mul(reshape(g, y.shape), hit), count), null, null];
    },
  });
}
const amaxFn = extremeFn('amax');
const aminFn = extremeFn('amin');

/**
 * The largest value over `dim` (all when omitted), without indices (PyTorch `amax`).
 * @example amax(tensor([[1, 5], [7, 2]]), 0); // [7, 5]
 */
export function amax(x: Tensor, dim?: Dims, keepdim = false): Tensor {
  return amaxFn(x, reduceDims('amax', x, dim), keepdim);
}
/**
 * The smallest value over `dim` (all when omitted), without indices (PyTorch `amin`).
 * @example amin(tensor([[1, 5], [7, 2]]), 1); // [1, 2]
 */
export function amin(x: Tensor, dim?: Dims, keepdim = false): Tensor {
  return aminFn(x, reduceDims('amin', x, dim), keepdim);
}

function argExtreme(op: 'argmax' | 'argmin', x: Tensor, dim?: number | null, keepdim = false): Tensor {
  if (dim === null || dim === undefined) {
    const r = argExtreme(op, reshape(x, [-1]), 0);
    return keepdim ? reshape(r, x.shape.map(() => 1)) : r;
  }
  const d = normDim(op, dim, x.ndim);
  if (x.shape[d] === 0) throw new Error(`${op}: cannot reduce an empty dim ${d} (shape [${x.shape.join(', ')}])`);
  const y = runKernel('argReduce', [x], keptShape(x, [d]), 'int32', { op, axis: d });
  return keepdim ? y : reshape(y, dropDims(y.shape, [d]));
}

/**
 * Index of the maximum (int32); over the flattened tensor when `dim` is omitted.
 * @example argmax(logits, 1); // predicted class per row
 */
export function argmax(x: Tensor, dim?: number | null, keepdim = false): Tensor {
  return argExtreme('argmax', x, dim, keepdim);
}
/**
 * The index of the smallest value over `dim` (of the flattened tensor when `dim` is null/omitted), as int32.
 * @example argmin(tensor([3, 1, 2])); // 1
 */
export function argmin(x: Tensor, dim?: number | null, keepdim = false): Tensor {
  return argExtreme('argmin', x, dim, keepdim);
}

/** What `max`/`min` over a dim return: the extreme values and their int32 indices. */
export interface ValuesIndices {
  values: Tensor;
  indices: Tensor;
}

function extremeWithIndices(op: 'argmax' | 'argmin', x: Tensor, dim: number, keepdim: boolean): ValuesIndices {
  const d = normDim(op === 'argmax' ? 'max' : 'min', dim, x.ndim);
  const idx = argExtreme(op, x, d, true);
  // the gradient goes to the selected index only: values = Σ x·[i = index] along dim
  const iota = reshape(arange(x.shape[d]!), x.shape.map((s, i) => (i === d ? s : 1)));
  const values = sum(mul(x, eq(iota, idx)), d, true);
  return keepdim ? { values, indices: idx } : { values: reshape(values, dropDims(values.shape, [d])), indices: reshape(idx, dropDims(idx.shape, [d])) };
}

/**
 * `max(x)` is the largest value; `max(x, dim)` gives `{ values, indices }` like `torch.max(x, dim)`.
 * @example max(x); const { values, indices } = max(x, 1);
 */
export function max(x: Tensor): Tensor;
export function max(x: Tensor, dim: number, keepdim?: boolean): ValuesIndices;
export function max(x: Tensor, dim?: number, keepdim = false): Tensor | ValuesIndices {
  return dim === undefined ? amax(x) : extremeWithIndices('argmax', x, dim, keepdim);
}
/**
 * The smallest element, or with `dim` the smallest values and their indices along it (PyTorch `min`).
 * @example const { values, indices } = min(x, 1);
 */
export function min(x: Tensor): Tensor;
export function min(x: Tensor, dim: number, keepdim?: boolean): ValuesIndices;
export function min(x: Tensor, dim?: number, keepdim = false): Tensor | ValuesIndices {
  return dim === undefined ? amin(x) : extremeWithIndices('argmin', x, dim, keepdim);
}

/**
 * log Σ exp(x) over `dim`, computed stably (shifted by the detached max).
 * @example logsumexp(tensor([1000, 1000])); // 1000.6931, no overflow
 */
export function logsumexp(x: Tensor, dim?: Dims, keepdim = false): Tensor {
  const dims = reduceDims('logsumexp', x, dim);
  const m0 = amax(x, dims, true).detach();
  const m = where(isfinite(m0), m0, 0); // all -inf rows give -inf, not NaN
  const s = log(sum(expShift(x, m), dims, true));
  const r = add(s, m);
  return keepdim ? r : reshape(r, dropDims(r.shape, dims));
}

function expShift(x: Tensor, m: Tensor): Tensor {
  return sub(x, m).exp();
}

/**
 * p-norm over `dim` (p = 2 by default; 1, Infinity and any p > 0 supported).
 * @example norm(tensor([3, 4])); // 5
 */
export function norm(x: Tensor, p: number = 2, dim?: Dims, keepdim = false): Tensor {
  if (p === Infinity) {
    // max|x| in one kernel pass when no gradient is needed (dynamic quantization scales)
    if (!(x.requiresGrad && isGradEnabled()) && isFloat(x.dtype) && x.numel() > 0) {
      const dims = reduceDims('norm', x, dim);
      const y = runKernel('reduce', [x], keptShape(x, dims), x.dtype, { op: 'absmax', axes: dims });
      return keepdim ? y : reshape(y, dropDims(y.shape, dims));
    }
    return amax(abs(x), dim, keepdim);
  }
  if (p === 1) return sum(abs(x), dim, keepdim);
  if (p === 2) return sqrt(sum(mul(x, x), dim, keepdim));
  if (!(p > 0)) throw new Error(`norm: p must be positive or Infinity, got ${p}`);
  return pow(sum(pow(abs(x), p), dim, keepdim), 1 / p);
}

/**
 * Sums a broadcast gradient back to `shape` (leading dims and size-1 dims).
 * @internal plumbing for @qgrad/nn and @qgrad/quant, left off the API site
 */
export function sumToShape(g: Tensor, shape: number[]): Tensor {
  const lead = g.ndim - shape.length;
  const dims: number[] = [];
  for (let i = 0; i < g.ndim; i++) if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) dims.push(i);
  const s = dims.length ? sum(g, dims, true) : g;
  return reshape(s, shape);
}

export { Tensor };
