/**
 * @file Sorting, scans and boolean reductions: sort, argsort, topk, cumsum, prod, any, all,
 * isclose/allclose, multinomial. All composites: orders are found on the host and applied with
 * gather (whose backward scatters the gradient back); no new kernel, no hand-written backward.
 */
import type { Tensor } from '../tensor.js';
import { normDim } from '../dispatch.js';
import { defaultGenerator, type Generator } from '../random.js';
import { tensor, ones } from './creation.js';
import { gather } from './indexing.js';
import { narrow, reshape, transpose } from './movement.js';
import { cat, triu } from './shape.js';
import { abs, add, isfinite, mul, sub, where } from './elementwise.js';
import { sum } from './reduce.js';

/** Values and the int32 positions they came from, as `torch.sort` and `torch.topk` return them. */
export interface SortResult {
  values: Tensor;
  indices: Tensor;
}

/** Per row along `dim`: the int32 order of the row's elements (stable; NaN sorts as largest). */
function order(x: Tensor, dim: number, descending: boolean, k?: number): Tensor {
  const last = x.ndim - 1;
  const moved = dim === last ? x : transpose(x, dim, last);
  const n = x.shape[dim]!;
  const take = k ?? n;
  const data = moved.detach().contiguous().dataSync();
  const rows = n === 0 ? 0 : data.length / n;
  const out = new Int32Array(rows * take);
  const idx = Array.from({ length: n }, (_, i) => i);
  const key = (v: number): number => (Number.isNaN(v) ? Infinity : v);
  for (let r = 0; r < rows; r++) {
    const base = r * n;
    idx.sort((a, b) => {
      const va = Number(data[base + a]!);
      const vb = Number(data[base + b]!);
      // NaN after +Inf ascending, first descending (PyTorch); ties keep their order
      const c = key(va) - key(vb) || (Number.isNaN(va) ? 1 : 0) - (Number.isNaN(vb) ? 1 : 0);
      return (descending ? -c : c) || a - b;
    });
    for (let j = 0; j < take; j++) out[r * take + j] = idx[j]!;
    for (let j = 0; j < n; j++) idx[j] = j;
  }
  const shape = [...moved.shape.slice(0, last), take];
  const t = tensor(out, { dtype: 'int32', shape });
  return dim === last ? t : transpose(t, dim, last).contiguous();
}

/**
 * Sorts along `dim` (default last), stably; values keep their gradient (it flows back through the
 * permutation), indices are int32.
 * @example sort(tensor([3, 1, 2])).values.toArray(); // [1, 2, 3]
 */
export function sort(x: Tensor, dim = -1, descending = false): SortResult {
  if (x.ndim === 0) return { values: x, indices: tensor(new Int32Array([0]), { dtype: 'int32', shape: [] }) };
  const d = normDim('sort', dim, x.ndim);
  const indices = order(x, d, descending);
  return { values: gather(x, d, indices), indices };
}

/**
 * The int32 positions that sort `x` along `dim`.
 * @example argsort(tensor([3, 1, 2])).toArray(); // [1, 2, 0]
 */
export function argsort(x: Tensor, dim = -1, descending = false): Tensor {
  return sort(x, dim, descending).indices;
}

/**
 * The `k` largest (or smallest) elements along `dim`, sorted, with their int32 positions; the
 * gradient reaches only the chosen elements.
 * @example topk(tensor([1, 5, 3]), 2).values.toArray(); // [5, 3]
 */
export function topk(x: Tensor, k: number, dim = -1, largest = true): SortResult {
  const d = normDim('topk', dim, Math.max(1, x.ndim));
  const n = x.ndim === 0 ? 1 : x.shape[d]!;
  if (!Number.isInteger(k) || k < 0 || k > n) throw new RangeError(`topk: k = ${k} is out of range for dim ${dim} of size ${n} (shape [${x.shape.join(', ')}])`);
  if (x.ndim === 0) return sort(x);
  const indices = order(x, d, largest, k);
  return { values: gather(x, d, indices), indices };
}

/**
 * Running sum along `dim`: `y[..., j] = Σ_{i ≤ j} x[..., i]`. Written as a product with an upper
 * triangular matrix of ones, so its gradient (the reversed running sum) comes from matmul.
 * @example cumsum(tensor([1, 2, 3]), 0).toArray(); // [1, 3, 6]
 */
export function cumsum(x: Tensor, dim: number): Tensor {
  if (x.ndim === 0) return x.mul(1);
  const d = normDim('cumsum', dim, x.ndim);
  const last = x.ndim - 1;
  const floating = x.dtype === 'float32' || x.dtype === 'float64';
  const xf = floating ? x : x.to('float64');
  const n = x.shape[d]!;
  const u = triu(ones([n, n], { dtype: xf.dtype }));
  const moved = d === last ? xf : transpose(xf, d, last);
  const y = moved.matmul(u);
  const back = d === last ? y : transpose(y, d, last);
  return floating ? back : back.to(x.dtype);
}

/**
 * Product of all elements, or along `dim`. Multiplies halves pairwise (log₂ n products), so the
 * gradient `∂/∂xᵢ = Π_{j≠i} xⱼ` is exact with zeros present, as in PyTorch.
 * @example prod(tensor([[1, 2], [3, 4]]), 1).toArray(); // [2, 12]
 */
export function prod(x: Tensor, dim?: number | null, keepdim = false): Tensor {
  if (dim === undefined || dim === null) {
    const flat = reshape(x, [x.numel()]);
    return reshape(prod(flat, 0), keepdim ? x.shape.map(() => 1) : []);
  }
  if (x.ndim === 0) return x;
  const d = normDim('prod', dim, x.ndim);
  let t = x;
  let n = x.shape[d]!;
  if (n === 0) {
    const shape = x.shape.map((s, i) => (i === d ? 1 : s));
    const one = ones(shape, { dtype: x.dtype });
    return keepdim ? one : reshape(one, x.shape.filter((_, i) => i !== d));
  }
  while (n > 1) {
    const half = n >> 1;
    const paired = mul(narrow(t, d, 0, half), narrow(t, d, half, half));
    // an odd element waits for the next round
    t = n % 2 ? cat([paired, narrow(t, d, n - 1, 1)], d) : paired;
    n = half + (n % 2);
  }
  return keepdim ? t : reshape(t, x.shape.filter((_, i) => i !== d));
}

/**
 * True (uint8 1) where any element is non-zero, over everything or along `dim`.
 * @example any(tensor([0, 0, 3])).item(); // 1
 */
export function any(x: Tensor, dim?: number | null, keepdim = false): Tensor {
  return sum(x.ne(0), dim ?? null, keepdim).gt(0);
}

/**
 * True (uint8 1) where every element is non-zero, over everything or along `dim`.
 * @example all(tensor([1, 0, 3])).item(); // 0
 */
export function all(x: Tensor, dim?: number | null, keepdim = false): Tensor {
  return sum(x.eq(0), dim ?? null, keepdim).eq(0);
}

/** Tolerances of isclose/allclose (PyTorch's defaults). */
export interface CloseOptions {
  /** Relative tolerance, scaled by |b| (default 1e-5). */
  rtol?: number;
  /** Absolute tolerance (default 1e-8). */
  atol?: number;
  /** NaN equals NaN (default false). */
  equalNan?: boolean;
}

/**
 * Elementwise `|a − b| ≤ atol + rtol·|b|` (uint8), with equal infinities close and NaN close to
 * NaN only under `equalNan`; broadcasts like PyTorch.
 * @example isclose(tensor([1, 2]), tensor([1 + 1e-9, 2.1])).toArray(); // [1, 0]
 */
export function isclose(a: Tensor, b: Tensor, o: CloseOptions = {}): Tensor {
  const rtol = o.rtol ?? 1e-5;
  const atol = o.atol ?? 1e-8;
  const [x, y] = [a.detach(), b.detach()];
  // an infinity is close only to itself: |∞ − (−∞)| ≤ rtol·∞ must not count
  const within = abs(sub(x, y)).le(add(mul(abs(y), rtol), atol)).mul(isfinite(x)).mul(isfinite(y));
  // equal values (infinities included) are close even where the difference is NaN
  let close = where(x.eq(y), 1, within.to('float32')).ne(0);
  if (o.equalNan) close = where(x.ne(x).mul(y.ne(y)).ne(0), 1, close.to('float32')).ne(0);
  return close;
}

/**
 * Whether every element of `a` is close to `b` (see isclose).
 * @example allclose(tensor([1, 2]), tensor([1, 2 + 1e-7])); // true
 */
export function allclose(a: Tensor, b: Tensor, o: CloseOptions = {}): boolean {
  return all(isclose(a, b, o)).dataSync()[0] !== 0;
}

/**
 * Draws `numSamples` int32 category indices per row of non-negative weights `probs` ([n] or
 * [rows, n], not necessarily normalised), with or without replacement, from the seeded generator.
 * @example multinomial(tensor([0, 1, 0]), 2, true).toArray(); // [1, 1]
 */
export function multinomial(probs: Tensor, numSamples: number, replacement = false, generator: Generator = defaultGenerator): Tensor {
  if (probs.ndim !== 1 && probs.ndim !== 2) throw new Error(`multinomial: probs must be 1-D or 2-D, got shape [${probs.shape.join(', ')}]`);
  const n = probs.shape[probs.ndim - 1]!;
  const rows = probs.ndim === 1 ? 1 : probs.shape[0]!;
  if (!replacement && numSamples > n) throw new RangeError(`multinomial: cannot draw ${numSamples} samples without replacement from ${n} categories`);
  const p = probs.detach().contiguous().dataSync();
  const out = new Int32Array(rows * numSamples);
  for (let r = 0; r < rows; r++) {
    const w = Array.from({ length: n }, (_, i) => Number(p[r * n + i]!));
    if (w.some((v) => !(v >= 0) || !Number.isFinite(v))) throw new Error(`multinomial: row ${r} has a negative, NaN or infinite weight`);
    for (let s = 0; s < numSamples; s++) {
      const total = w.reduce((t, v) => t + v, 0);
      if (total <= 0) throw new Error(`multinomial: row ${r} has no positive weight left for sample ${s}`);
      let u = generator.random() * total;
      let i = 0;
      for (; i < n; i++) {
        if (w[i]! === 0) continue;
        if (u < w[i]!) break;
        u -= w[i]!;
      }
      // rounding can walk past the end: take the last category with weight left
      if (i === n) while (w[--i]! === 0);
      out[r * numSamples + s] = i;
      if (!replacement) w[i] = 0;
    }
  }
  return tensor(out, { dtype: 'int32', shape: probs.ndim === 1 ? [numSamples] : [rows, numSamples] });
}
