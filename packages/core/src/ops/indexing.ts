/**
 * @file Indexing ops over the gather kernels: gather/scatterAdd and indexSelect/indexAdd (each
 * pair the other's gradient), and composites on them: take, embedding, maskedFill, oneHot.
 * Views by integer/slice (select, narrow, slice) live in movement.ts. As in PyTorch, an index
 * outside [0, n) is an error (checked in the kernels), a negative one too; only take wraps it.
 */
import { isFloat, type DType, type KernelName, type KernelParams } from '@qgrad/kernels';
import { broadcastShapes, empty, normDim, runKernel, runKernelInto } from '../dispatch.js';
import { defineFunction } from '../function.js';
import { Tensor } from '../tensor.js';
import { arange, fromTypedArray, scalarLike } from './creation.js';
import { cast, eq, mul, where } from './elementwise.js';
import { flatten, reshape, unsqueeze } from './movement.js';

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/** Index tensors are int32; int8/uint8 are widened (cheap), floats are an error naming the op. */
function asIndex(op: string, index: Tensor): Tensor {
  if (!(index instanceof Tensor)) throw new TypeError(`${op}: index must be a Tensor of int32`);
  if (isFloat(index.dtype)) throw new TypeError(`${op}: index must be an integer tensor (int32), got ${index.dtype} of shape ${fmt(index.shape)}`);
  return index.dtype === 'int32' ? index : runKernel('copy', [index], [...index.shape], 'int32', {});
}

/** Runs a gather-family kernel, adding the op's shapes to an out-of-range error from the kernel. */
function indexKernel<K extends KernelName>(op: string, detail: string, kernel: K, inputs: Tensor[], shape: number[], dtype: DType, params: KernelParams[K]): Tensor {
  try {
    return runKernel(kernel, inputs, shape, dtype, params);
  } catch (e) {
    if (e instanceof RangeError) throw new RangeError(`${op}: ${e.message.replace(/^\w+: /, '')} (${detail})`);
    throw e;
  }
}

/** Zeros of `shape` on `like`'s backend. */
function zerosOn(shape: number[], dtype: DType, like: Tensor): Tensor {
  const z = empty(shape, dtype, like);
  runKernelInto('fill', [], z, { value: 0 });
  z.storage.version = 0;
  return z;
}

// ---------------------------------------------------------------- gather / scatterAdd
const gatherFn: (x: Tensor, dim: number, index: Tensor) => Tensor = defineFunction({
  name: 'gather',
  forward(ctx, x: Tensor, dim: number, index: Tensor) {
    ctx.save(index);
    ctx.state = { shape: x.shape, dim };
    return indexKernel('gather', `input ${fmt(x.shape)}, index ${fmt(index.shape)}, dim ${dim}`, 'gather', [x, index], [...index.shape], x.dtype, { dim });
  },
  backward(ctx, g) {
    const { shape, dim } = ctx.state as { shape: number[]; dim: number };
    return [scatterAddFn(zerosOn(shape, g.dtype, g), dim, ctx.saved[0]!, g), null, null]; // each gathered element sends g back to where it came from
  },
});

const scatterAddFn: (x: Tensor, dim: number, index: Tensor, src: Tensor) => Tensor = defineFunction({
  name: 'scatterAdd',
  forward(ctx, x: Tensor, dim: number, index: Tensor, src: Tensor) {
    ctx.save(index);
    ctx.state = { dim };
    const s = src.dtype === x.dtype ? src : runKernel('copy', [src], [...src.shape], x.dtype, {});
    return indexKernel('scatterAdd', `input ${fmt(x.shape)}, index ${fmt(index.shape)}, src ${fmt(src.shape)}, dim ${dim}`, 'scatterAdd', [x, index, s], [...x.shape], x.dtype, { dim });
  },
  backward(ctx, g) {
    const dim = ctx.state.dim as number;
    // d/dx = identity; d/dsrc[i] = g at the place src[i] was added to
    return [g, null, null, ctx.needsInputGrad[3] ? gatherFn(g, dim, ctx.saved[0]!) : null];
  },
});

/** Checks gather/scatter index shapes as PyTorch: same rank, no dim larger than in `x` (or `src`). */
function checkScatterShapes(op: string, x: Tensor, d: number, index: Tensor, src?: Tensor): void {
  if (index.ndim !== x.ndim || index.shape.some((n, i) => (i !== d && n > (x.shape[i] ?? 1)) || (src !== undefined && n > (src.shape[i] ?? 1)))) {
    throw new Error(`${op}: index of shape ${fmt(index.shape)} must have the same number of dims as input ${fmt(x.shape)}${src ? ` and src ${fmt(src.shape)}` : ''} and be no larger than ${src ? 'them' : 'it'} outside dim ${d}`);
  }
}

/**
 * `out[i][j] = x[index[i][j]][j]` for dim 0 (and so on): picks along `dim` by an int32 index of
 * the same rank; the output has the index's shape.
 * @example gather(tensor([[1, 2], [3, 4]]), 1, tensor([[1], [0]], { dtype: 'int32' })).toArray(); // [[2], [3]]
 */
export function gather(x: Tensor, dim: number, index: Tensor): Tensor {
  const d = normDim('gather', dim, x.ndim);
  const idx = asIndex('gather', index);
  if (x.ndim === 0) return reshape(gather(reshape(x, [1]), 0, reshape(idx, [1])), [...idx.shape]);
  checkScatterShapes('gather', x, d, idx);
  return gatherFn(x, d, idx);
}

/**
 * Out-of-place `torch.scatter_add`: a copy of `x` with `src[i][j]` added at
 * `[index[i][j]][j]` (dim 0), summing duplicates.
 * @example scatterAdd(zeros([3]), 0, tensor([0, 0, 2], { dtype: 'int32' }), ones([3])).toArray(); // [2, 0, 1]
 */
export function scatterAdd(x: Tensor, dim: number, index: Tensor, src: Tensor): Tensor {
  const d = normDim('scatterAdd', dim, x.ndim);
  const idx = asIndex('scatterAdd', index);
  if (x.ndim === 0) return reshape(scatterAdd(reshape(x, [1]), 0, reshape(idx, [1]), reshape(src, [1])), []);
  checkScatterShapes('scatterAdd', x, d, idx, src);
  return scatterAddFn(x, d, idx, src);
}

// ---------------------------------------------------------------- indexSelect / indexAdd
const indexSelectFn: (x: Tensor, dim: number, index: Tensor) => Tensor = defineFunction({
  name: 'indexSelect',
  forward(ctx, x: Tensor, dim: number, index: Tensor) {
    ctx.save(index);
    ctx.state = { shape: x.shape, dim };
    const shape = x.shape.map((n, i) => (i === dim ? index.shape[0]! : n));
    return indexKernel('indexSelect', `input ${fmt(x.shape)}, index ${fmt(index.shape)}, dim ${dim}`, 'indexSelect', [x, index], shape, x.dtype, { dim });
  },
  backward(ctx, g) {
    const { shape, dim } = ctx.state as { shape: number[]; dim: number };
    return [indexAddFn(zerosOn(shape, g.dtype, g), dim, ctx.saved[0]!, g), null, null]; // selected rows send g back, summing repeats
  },
});

const indexAddFn: (x: Tensor, dim: number, index: Tensor, src: Tensor) => Tensor = defineFunction({
  name: 'indexAdd',
  forward(ctx, x: Tensor, dim: number, index: Tensor, src: Tensor) {
    ctx.save(index);
    ctx.state = { dim };
    const s = src.dtype === x.dtype ? src : runKernel('copy', [src], [...src.shape], x.dtype, {});
    return indexKernel('indexAdd', `input ${fmt(x.shape)}, index ${fmt(index.shape)}, src ${fmt(src.shape)}, dim ${dim}`, 'indexAdd', [x, index, s], [...x.shape], x.dtype, { dim });
  },
  backward(ctx, g) {
    const dim = ctx.state.dim as number;
    // d/dx = identity; d/dsrc = the rows of g that src was added to
    return [g, null, null, ctx.needsInputGrad[3] ? indexSelectFn(g, dim, ctx.saved[0]!) : null];
  },
});

/**
 * Rows (slices along `dim`) of `x` picked by a 1-D int32 index, as `torch.index_select`.
 * @example indexSelect(tensor([[1, 2], [3, 4]]), 0, tensor([1, 1], { dtype: 'int32' })).toArray(); // [[3, 4], [3, 4]]
 */
export function indexSelect(x: Tensor, dim: number, index: Tensor): Tensor {
  const d = normDim('indexSelect', dim, x.ndim);
  let idx = asIndex('indexSelect', index);
  if (idx.ndim > 1) throw new Error(`indexSelect: index must be 1-D (or 0-D), got shape ${fmt(idx.shape)}`);
  if (idx.ndim === 0) idx = reshape(idx, [1]);
  if (x.ndim === 0) return reshape(indexSelectFn(reshape(x, [1]), 0, idx), []);
  return indexSelectFn(x, d, idx);
}

/**
 * Out-of-place `torch.index_add`: a copy of `x` with `alpha · src` added at the slices `index`
 * along `dim` (duplicates sum).
 * @example indexAdd(zeros([3]), 0, tensor([2, 2], { dtype: 'int32' }), ones([2])).toArray(); // [0, 0, 2]
 */
export function indexAdd(x: Tensor, dim: number, index: Tensor, src: Tensor, alpha = 1): Tensor {
  const d = normDim('indexAdd', dim, x.ndim);
  let idx = asIndex('indexAdd', index);
  if (idx.ndim > 1) throw new Error(`indexAdd: index must be 1-D (or 0-D), got shape ${fmt(idx.shape)}`);
  if (idx.ndim === 0) idx = reshape(idx, [1]);
  const want = x.shape.map((n, i) => (i === d ? idx.shape[0]! : n));
  if (x.ndim > 0 && src.shape.join() !== want.join()) throw new Error(`indexAdd: src of shape ${fmt(src.shape)} must have shape ${fmt(want)} (input ${fmt(x.shape)}, index ${fmt(idx.shape)}, dim ${d})`);
  const s = alpha === 1 ? src : mul(src, alpha);
  if (x.ndim === 0) return reshape(indexAddFn(reshape(x, [1]), 0, idx, reshape(s, [1])), []);
  return indexAddFn(x, d, idx, s);
}

/**
 * Elements of `x` as if flattened, at the positions in `index`; the output has the index's shape.
 * As `torch.take` (unlike gather, indexSelect and embedding), a negative index counts from the
 * end, so the valid range is [-n, n) for n elements.
 * @example take(tensor([[1, 2], [3, 4]]), tensor([0, -1], { dtype: 'int32' })).toArray(); // [1, 4]
 */
export function take(x: Tensor, index: Tensor): Tensor {
  let idx = asIndex('take', index);
  const n = x.numel();
  const values = idx.dataSync();
  let negative = false;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (!(v >= -n && v < n)) throw new RangeError(`take: index ${v} is out of range [${-n}, ${n}) (input ${fmt(x.shape)}, index ${fmt(index.shape)})`);
    if (v < 0) negative = true;
  }
  // indexSelect takes [0, n) only: wrap here, copying the index only when it has a negative
  if (negative) idx = fromTypedArray(Int32Array.from(values, (v) => (v < 0 ? v + n : v)), [...idx.shape], 'int32');
  return reshape(indexSelect(flatten(x), 0, flatten(idx)), [...idx.shape]);
}

// ---------------------------------------------------------------- composites
/** Options of `embedding`: the padding index, whose row gets no gradient. */
export interface EmbeddingOptions {
  /** Rows at this index get no gradient (negative counts from the end), as in PyTorch. */
  paddingIdx?: number;
}

/**
 * Looks up rows of `weight` [numEmbeddings, dim] for each int32 index: output shape is
 * `indices.shape + [dim]`.
 * @example embedding(tensor([[0, 2]], { dtype: 'int32' }), randn([3, 4])).shape; // [1, 2, 4]
 */
export function embedding(indices: Tensor, weight: Tensor, opts: EmbeddingOptions = {}): Tensor {
  if (weight.ndim !== 2) throw new Error(`embedding: weight must be 2-D [numEmbeddings, embeddingDim], got shape ${fmt(weight.shape)}`);
  const [n, dim] = weight.shape as [number, number];
  const idx = asIndex('embedding', indices);
  let out: Tensor;
  try {
    out = indexSelect(weight, 0, flatten(idx)); // [numel(indices), dim]
  } catch (e) {
    if (e instanceof RangeError) throw new RangeError(`embedding: ${e.message.replace(/^\w+: /, '').replace(/ \(.*\)$/, '')} (indices ${fmt(indices.shape)}, weight ${fmt(weight.shape)})`);
    throw e;
  }
  out = reshape(out, [...idx.shape, dim]); // [...indices.shape, dim]
  if (opts.paddingIdx !== undefined && out.requiresGrad) {
    const p = opts.paddingIdx;
    if (!Number.isInteger(p) || p < -n || p >= n) throw new RangeError(`embedding: paddingIdx ${p} must be within the ${n} embeddings`);
    // same values, but positions holding paddingIdx take their value from a detached copy: no gradient
    const isPad = unsqueeze(eq(idx, p < 0 ? p + n : p), -1);
    out = where(isPad, out.detach(), out);
  }
  return out;
}

/**
 * `x` with `value` wherever the uint8 `mask` (broadcast to x's shape) is nonzero; keeps x's dtype.
 * @example maskedFill(tensor([1, 2, 3]), tensor([1, 0, 1], { dtype: 'uint8' }), 0).toArray(); // [0, 2, 0]
 */
export function maskedFill(x: Tensor, mask: Tensor, value: number | Tensor): Tensor {
  const shape = broadcastShapes('maskedFill', x.shape, mask.shape);
  if (shape.join() !== x.shape.join()) throw new Error(`maskedFill: mask of shape ${fmt(mask.shape)} must broadcast to the input's shape ${fmt(x.shape)}`);
  if (isFloat(mask.dtype)) throw new TypeError(`maskedFill: mask must be a uint8 (boolean) tensor, got ${mask.dtype}`);
  if (value instanceof Tensor && value.ndim !== 0) throw new Error(`maskedFill: value must be a number or a 0-d tensor, got shape ${fmt(value.shape)}`);
  const v = value instanceof Tensor ? cast(value, x.dtype) : scalarLike(value, x.dtype, x);
  return where(mask, v, x);
}

/**
 * One-hot encoding of int32 class indices: shape `indices.shape + [numClasses]`, dtype int32
 * (PyTorch gives int64, which qgrad does not have). `numClasses = -1` uses max + 1.
 * @example oneHot(tensor([0, 2], { dtype: 'int32' }), 3).toArray(); // [[1, 0, 0], [0, 0, 1]]
 */
export function oneHot(indices: Tensor, numClasses = -1): Tensor {
  const idx = asIndex('oneHot', indices);
  const values = idx.dataSync();
  let max = -1;
  for (let i = 0; i < values.length; i++) {
    if (values[i]! < 0) throw new RangeError(`oneHot: class values must be non-negative, got ${values[i]} (indices ${fmt(indices.shape)})`);
    max = Math.max(max, values[i]!);
  }
  if (numClasses === -1) {
    if (values.length === 0) throw new Error('oneHot: can not infer the number of classes from an empty tensor; pass numClasses');
    numClasses = max + 1;
  }
  if (!Number.isInteger(numClasses) || numClasses < 0) throw new Error(`oneHot: numClasses must be a non-negative integer or -1, got ${numClasses}`);
  if (max >= numClasses) throw new RangeError(`oneHot: class values must be smaller than numClasses ${numClasses}, got ${max} (indices ${fmt(indices.shape)})`);
  return cast(eq(unsqueeze(idx, -1), arange(numClasses)), 'int32');
}
