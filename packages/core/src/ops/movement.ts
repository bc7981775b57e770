/**
 * @file Views and layout: reshape/view/flatten/squeeze/unsqueeze, permute/transpose, expand,
 * narrow/slice/select (all sharing storage), contiguous and clone. Copying shape ops (cat,
 * pad, flip …) live in shape.ts.
 */
import { contiguousStrides, isContiguous, numel } from '@qgrad/kernels';
import { normDim, runKernel, runKernelInto } from '../dispatch.js';
import { defineFunction } from '../function.js';
import { Tensor } from '../tensor.js';
import { zeros } from './creation.js';

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/**
 * A stride-0 broadcast view of `t` to `shape` (no autograd; `shape` must be broadcast-compatible).
 * @internal plumbing for @qgrad/nn and @qgrad/quant, left off the API site
 */
export function expandView(t: Tensor, shape: number[]): Tensor {
  if (t.shape.length === shape.length && t.shape.every((d, i) => d === shape[i])) return t;
  const lead = shape.length - t.ndim;
  if (lead < 0) throw new Error(`expand: cannot expand shape ${fmt(t.shape)} to fewer dims ${fmt(shape)}`);
  const strides = shape.map((d, i) => {
    if (i < lead) return 0;
    const s = t.shape[i - lead]!;
    if (s === d) return t.strides[i - lead]!;
    if (s === 1) return 0;
    throw new Error(`expand: the expanded size ${d} must match the existing size ${s} at dim ${i} (shape ${fmt(t.shape)} → ${fmt(shape)})`);
  });
  return new Tensor(t.storage, [...shape], strides, t.offset);
}

/**
 * A contiguous copy (or `t` itself), without recording.
 * @internal plumbing for @qgrad/nn and @qgrad/quant, left off the API site
 */
export function contiguousNoGrad(t: Tensor): Tensor {
  return t.isContiguous() ? t : runKernel('copy', [t], [...t.shape], t.dtype, {});
}

/**
 * Resolves one -1 in `shape` and checks every size and the element count; errors quote the shape
 * as the caller wrote it, with the input's.
 */
/**
 * inferShape's error. Module-level rather than a closure in it: tsx (keepNames) wraps every named
 * closure in a __name call that redefines the function's name each time it is created, and
 * reshape runs that ~150 times a tiny-Llama step (≈ 2 ms of sampled JS per step).
 */
function invalidShape(op: string, from: readonly number[], shape: readonly number[], n: number, why: string): Error {
  return new Error(`${op}: shape ${fmt(shape)} is invalid for input of shape ${fmt(from)} (${n} elements): ${why}`);
}

function inferShape(op: string, from: readonly number[], shape: readonly number[]): number[] {
  const n = numel(from);
  let inferred = -1;
  let known = 1;
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i]!;
    if (d === -1) {
      if (inferred >= 0) throw invalidShape(op, from, shape, n, `only one dim may be -1 (dims ${inferred} and ${i} are)`);
      inferred = i;
    } else if (!Number.isInteger(d) || d < 0) {
      throw invalidShape(op, from, shape, n, `size ${d} at dim ${i} is not a non-negative integer (or -1, inferred)`);
    } else {
      known *= d;
    }
  }
  if (inferred < 0) {
    if (known !== n) throw invalidShape(op, from, shape, n, `that shape holds ${known} elements`);
    return [...shape];
  }
  // PyTorch refuses -1 next to a 0 size too: any value would fit when n is 0
  if (known === 0) throw invalidShape(op, from, shape, n, `the -1 cannot be inferred when the other sizes multiply to 0`);
  if (n % known !== 0) throw invalidShape(op, from, shape, n, `${n} elements do not split into a whole number of blocks of ${known}`);
  return shape.map((d, i) => (i === inferred ? n / known : d));
}

/**
 * Strides that let `shape` view a tensor of (from, strides) without copying, or null when the
 * memory layout does not allow it (PyTorch's computeStride: each run of merged dims must be
 * contiguous within itself).
 * @internal plumbing for @qgrad/nn and @qgrad/quant, left off the API site
 */
export function viewStrides(from: readonly number[], strides: readonly number[], shape: readonly number[]): number[] | null {
  const out = new Array<number>(shape.length);
  if (numel(from) === 0) return contiguousStrides(shape);
  let viewD = shape.length - 1;
  let chunkBase = strides[from.length - 1] ?? 1;
  let tensorNumel = 1;
  let viewNumel = 1;
  for (let d = from.length - 1; d >= 0; d--) {
    tensorNumel *= from[d]!;
    // a chunk ends where the next-outer dim is not laid out right after this one
    if (d === 0 || (from[d - 1] !== 1 && strides[d - 1] !== tensorNumel * chunkBase)) {
      while (viewD >= 0 && (viewNumel < tensorNumel || shape[viewD] === 1)) {
        out[viewD] = viewNumel * chunkBase;
        viewNumel *= shape[viewD]!;
        viewD--;
      }
      if (viewNumel !== tensorNumel) return null;
      if (d > 0) {
        chunkBase = strides[d - 1]!;
        tensorNumel = 1;
        viewNumel = 1;
      }
    }
  }
  if (viewD !== -1) {
    // leftover leading size-1 dims
    for (; viewD >= 0; viewD--) out[viewD] = 1;
  }
  return out;
}

const reshapeFn = defineFunction({
  name: 'reshape',
  forward(ctx, x: Tensor, shape: number[]) {
    ctx.state = { from: x.shape };
    const vs = viewStrides(x.shape, x.strides, shape);
    if (vs) return new Tensor(x.storage, shape, vs, x.offset);
    const c = contiguousNoGrad(x);
    return new Tensor(c.storage, shape, contiguousStrides(shape), c.offset);
  },
  backward: (ctx, g) => [reshape(g, ctx.state.from as number[]), null], // reshape is a bijection
});

/**
 * Same data in a new shape (one dim may be -1); a view when `x` is contiguous, else a copy.
 * @example reshape(arange(6), [2, 3]).shape; // [2, 3]
 */
export function reshape(x: Tensor, shape: number[]): Tensor {
  const s = inferShape('reshape', x.shape, shape);
  if (s.length === x.ndim && s.every((d, i) => d === x.shape[i])) return x;
  return reshapeFn(x, s);
}

/**
 * Like reshape, but errors instead of copying a non-contiguous tensor.
 * @example view(arange(6), [3, -1]).shape; // [3, 2]
 */
export function view(x: Tensor, shape: number[]): Tensor {
  const s = inferShape('view', x.shape, shape);
  if (!viewStrides(x.shape, x.strides, s)) throw new Error(`view: tensor of shape ${fmt(x.shape)} with strides ${fmt(x.strides)} is not contiguous enough to view as ${fmt(s)}; use reshape() or contiguous() first`);
  return reshape(x, s);
}

/**
 * Merges dims `startDim`…`endDim` into one (a view when the memory allows).
 * @example flatten(zeros([2, 3, 4]), 1).shape; // [2, 12]
 */
export function flatten(x: Tensor, startDim = 0, endDim = -1): Tensor {
  if (x.ndim === 0) return reshape(x, [1]);
  const s = normDim('flatten', startDim, x.ndim);
  const e = normDim('flatten', endDim, x.ndim);
  return reshape(x, [...x.shape.slice(0, s), numel(x.shape.slice(s, e + 1)), ...x.shape.slice(e + 1)]);
}

/**
 * Removes size-1 dims (only `dim` when given).
 * @example squeeze(zeros([1, 3, 1])).shape; // [3]
 */
export function squeeze(x: Tensor, dim?: number | number[]): Tensor {
  const dims = dim === undefined ? x.shape.map((_, i) => i) : (Array.isArray(dim) ? dim : [dim]).map((d) => normDim('squeeze', d, x.ndim));
  return reshape(x, x.shape.filter((d, i) => !(d === 1 && dims.includes(i))));
}

/**
 * Inserts a size-1 dim at `dim` (a view).
 * @example unsqueeze(zeros([3]), 0).shape; // [1, 3]
 */
export function unsqueeze(x: Tensor, dim: number): Tensor {
  const d = normDim('unsqueeze', dim, x.ndim + 1);
  const s = [...x.shape];
  s.splice(d, 0, 1);
  return reshape(x, s);
}

const permuteFn = defineFunction({
  name: 'permute',
  forward(ctx, x: Tensor, dims: number[]) {
    ctx.state = { dims };
    return new Tensor(x.storage, dims.map((d) => x.shape[d]!), dims.map((d) => x.strides[d]!), x.offset);
  },
  backward(ctx, g) {
    const dims = ctx.state.dims as number[];
    const inv = dims.map((_, i) => dims.indexOf(i));
    return [permute(g, inv), null]; // the inverse permutation
  },
});

/** Reorders dims (a view). @example randn([2, 3, 4]).permute(2, 0, 1).shape; // [4, 2, 3] */
export function permute(x: Tensor, dims: number[]): Tensor {
  if (dims.length !== x.ndim) throw new Error(`permute: ${dims.length} dims given for a tensor of ${x.ndim} dims (shape ${fmt(x.shape)})`);
  const d = dims.map((v) => normDim('permute', v, x.ndim));
  if (new Set(d).size !== d.length) throw new Error(`permute: repeated dim in ${fmt(dims)}`);
  if (d.every((v, i) => v === i)) return x;
  return permuteFn(x, d);
}

/**
 * Swaps two dims (a view, no copy).
 * @example transpose(zeros([2, 3, 4]), 0, 2).shape; // [4, 3, 2]
 */
export function transpose(x: Tensor, dim0: number, dim1: number): Tensor {
  const a = normDim('transpose', dim0, x.ndim);
  const b = normDim('transpose', dim1, x.ndim);
  const dims = x.shape.map((_, i) => i);
  [dims[a], dims[b]] = [b, a];
  return permute(x, dims);
}

/**
 * The transpose of a matrix (a 0-D or 1-D tensor is returned as is), as PyTorch `t`.
 * @example t(zeros([2, 3])).shape; // [3, 2]
 */
export function t(x: Tensor): Tensor {
  if (x.ndim > 2) throw new Error(`t: expects a tensor with <= 2 dims, got shape ${fmt(x.shape)}`);
  return x.ndim < 2 ? x : transpose(x, 0, 1);
}

const expandFn = defineFunction({
  name: 'expand',
  forward: (_ctx, x: Tensor, shape: number[]) => expandView(x, shape),
  backward: (_ctx, g) => [g, null], // the engine sums g over the broadcast dims
});

/**
 * Broadcasts to `shape` without copying (-1 keeps a dim).
 * @example expand(tensor([[1], [2]]), [2, 3]).shape; // [2, 3], no copy
 */
export function expand(x: Tensor, shape: number[]): Tensor {
  const lead = shape.length - x.ndim;
  const s = shape.map((d, i) => (d === -1 ? x.shape[i - lead]! : d));
  if (s.length === x.ndim && s.every((d, i) => d === x.shape[i])) return x;
  return expandFn(x, s);
}

/**
 * `x` expanded to `shape` under broadcasting rules (a view; the gradient is summed back).
 * @example broadcastTo(tensor([1, 2]), [3, 2]).shape; // [3, 2]
 */
export function broadcastTo(x: Tensor, shape: number[]): Tensor {
  return expand(x, shape);
}

interface SliceSpec {
  dim: number;
  start: number;
  length: number;
  step: number;
}

function sliceView(x: Tensor, s: SliceSpec): Tensor {
  const shape = [...x.shape];
  const strides = [...x.strides];
  shape[s.dim] = s.length;
  strides[s.dim] = x.strides[s.dim]! * s.step;
  return new Tensor(x.storage, shape, strides, x.offset + s.start * x.strides[s.dim]!);
}

const sliceFn = defineFunction({
  name: 'slice',
  forward(ctx, x: Tensor, s: SliceSpec) {
    ctx.state = { s, from: x.shape };
    return sliceView(x, s);
  },
  backward: (ctx, g) => [embedSlice(g, ctx.state.from as number[], ctx.state.s as SliceSpec), null], // scatter g back into zeros
});

const embedFn = defineFunction({
  name: 'sliceBackward',
  forward(ctx, g: Tensor, shape: number[], s: SliceSpec) {
    ctx.state = { s };
    const z = zeros(shape, { dtype: g.dtype });
    runKernelInto('copy', [g], sliceView(z, s), {});
    return z;
  },
  backward: (ctx, gg) => [sliceView(contiguousNoGrad(gg), ctx.state.s as SliceSpec), null, null], // adjoint of embedding is slicing
});

function embedSlice(g: Tensor, shape: number[], s: SliceSpec): Tensor {
  return embedFn(g, shape, s);
}

/**
 * `x[start:end:step]` along `dim` as a view (Python slice semantics, negative indices allowed).
 * @example slice(arange(10), 0, 2, 8, 2); // [2, 4, 6]
 */
export function slice(x: Tensor, dim: number, start?: number | null, end?: number | null, step = 1): Tensor {
  const d = normDim('slice', dim, x.ndim);
  if (!(step > 0) || !Number.isInteger(step)) throw new Error(`slice: step must be a positive integer, got ${step}`);
  const n = x.shape[d]!;
  const clampIdx = (i: number) => Math.min(Math.max(i < 0 ? i + n : i, 0), n);
  const s = clampIdx(start ?? 0);
  const e = clampIdx(end ?? n);
  const length = Math.max(0, Math.ceil((e - s) / step));
  if (s === 0 && length === n && step === 1) return x;
  return sliceFn(x, { dim: d, start: s, length, step });
}

/**
 * `length` elements from `start` along `dim` (a view).
 * @example narrow(arange(10), 0, 3, 2); // [3, 4]
 */
export function narrow(x: Tensor, dim: number, start: number, length: number): Tensor {
  const d = normDim('narrow', dim, x.ndim);
  const n = x.shape[d]!;
  const s = start < 0 ? start + n : start;
  if (s < 0 || length < 0 || s + length > n) throw new RangeError(`narrow: start ${start} + length ${length} exceeds dimension ${d} of size ${n} (shape ${fmt(x.shape)})`);
  if (s === 0 && length === n) return x;
  return sliceFn(x, { dim: d, start: s, length, step: 1 });
}

/**
 * Index `index` of `dim`, removing that dim (a view).
 * @example select(tensor([[1, 2], [3, 4]]), 0, 1); // [3, 4]
 */
export function select(x: Tensor, dim: number, index: number): Tensor {
  const d = normDim('select', dim, x.ndim);
  const n = x.shape[d]!;
  if (index < -n || index >= n) throw new RangeError(`select: index ${index} is out of range for dim ${d} of size ${n} (shape ${fmt(x.shape)})`);
  const i = index < 0 ? index + n : index;
  return squeeze(sliceFn(x, { dim: d, start: i, length: 1, step: 1 }), d);
}

const copyFn = defineFunction({
  name: 'clone',
  forward: (_ctx, x: Tensor) => runKernel('copy', [x], [...x.shape], x.dtype, {}),
  backward: (_ctx, g) => [g], // identity
});

/**
 * A contiguous tensor with the same values (the tensor itself when already contiguous).
 * @example contiguous(transpose(x, 0, 1)).isContiguous(); // true
 */
export function contiguous(x: Tensor): Tensor {
  return isContiguous(x.shape, x.strides) ? x : copyFn(x);
}

/**
 * A copy with its own storage (differentiable).
 * @example const copy = clone(x); // own storage, gradient flows back to x
 */
export function clone(x: Tensor): Tensor {
  return copyFn(x);
}
