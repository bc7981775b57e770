/**
 * @file Copying shape ops: cat (a primitive), stack, split/chunk/unbind (views), pad (a primitive
 * for 'constant'; reflect/replicate/circular are composites), triu/tril, repeat, repeatInterleave,
 * flip (a primitive) and roll. Pure views (reshape, narrow, permute …) live in movement.ts.
 */
import { empty, mixedBackends, normDim, runKernel, runKernelInto } from '../dispatch.js';
import { promoteTypes } from '../dtype.js';
import { defineFunction } from '../function.js';
import { Tensor } from '../tensor.js';
import { arange, tensor } from './creation.js';
import { ge, le, sub, where } from './elementwise.js';
import { expand, flatten, narrow, reshape, select, unsqueeze } from './movement.js';
import { indexSelect } from './indexing.js';

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/** A no-grad view of `t` narrowed to `[start, start + length)` along `dim` (kernel output target). */
function narrowView(t: Tensor, dim: number, start: number, length: number): Tensor {
  const shape = [...t.shape];
  shape[dim] = length;
  return new Tensor(t.storage, shape, t.strides, t.offset + start * t.strides[dim]!);
}

// ---------------------------------------------------------------- cat / stack
const catFn = defineFunction({
  name: 'cat',
  forward(ctx, dim: number, ...xs: Tensor[]) {
    const sizes = xs.map((x) => x.shape[dim]!);
    ctx.state = { sizes, dim };
    const shape = [...xs[0]!.shape];
    shape[dim] = sizes.reduce((a, b) => a + b, 0);
    const out = empty(shape, xs.map((x) => x.dtype).reduce(promoteTypes), xs[0], 'cat');
    let at = 0;
    for (const x of xs) {
      if (x.storage.backend !== out.storage.backend) throw new Error(mixedBackends('cat', xs));
      if (x.numel() > 0) runKernelInto('copy', [x], narrowView(out, dim, at, x.shape[dim]!), {});
      at += x.shape[dim]!;
    }
    out.storage.version = 0;
    return out;
  },
  backward(ctx, g) {
    const sizes = ctx.state.sizes as number[];
    const dim = ctx.state.dim as number;
    let at = 0;
    // d cat(xs) / d xᵢ picks out xᵢ's slab of g
    return [null, ...sizes.map((n, i) => {
      const gi = ctx.needsInputGrad[i + 1] ? narrow(g, dim, at, n) : null;
      at += n;
      return gi;
    })];
  },
});

/**
 * Concatenates tensors along `dim` (negative counts from the end), promoting dtypes. Like
 * PyTorch, 1-D tensors of shape [0] are skipped whatever the other shapes are.
 * @example cat([tensor([[1, 2]]), tensor([[3, 4]])], 0).toArray(); // [[1, 2], [3, 4]]
 */
export function cat(tensors: Tensor[], dim = 0): Tensor {
  if (tensors.length === 0) throw new Error('cat: expected a non-empty list of tensors');
  const kept = tensors.filter((t) => !(t.ndim === 1 && t.shape[0] === 0));
  if (kept.length === 0) return catFn(0, tensors[0]!);
  const first = kept[0]!;
  if (first.ndim === 0) throw new Error('cat: zero-dimensional tensor (shape []) cannot be concatenated');
  const d = normDim('cat', dim, first.ndim);
  for (const t of kept) {
    if (t.ndim !== first.ndim || t.shape.some((s, j) => j !== d && s !== first.shape[j])) {
      throw new Error(`cat: sizes of tensors must match except in dim ${d}: tensor ${tensors.indexOf(t)} has shape ${fmt(t.shape)} but tensor ${tensors.indexOf(first)} has shape ${fmt(first.shape)}`);
    }
  }
  return catFn(d, ...kept);
}

/**
 * Stacks same-shaped tensors along a new dim `dim`.
 * @example stack([tensor([1, 2]), tensor([3, 4])], 1).toArray(); // [[1, 3], [2, 4]]
 */
export function stack(tensors: Tensor[], dim = 0): Tensor {
  if (tensors.length === 0) throw new Error('stack: expected a non-empty list of tensors');
  const first = tensors[0]!;
  tensors.forEach((t, i) => {
    if (t.shape.join() !== first.shape.join()) throw new Error(`stack: expects each tensor to be equal size, but got ${fmt(first.shape)} at entry 0 and ${fmt(t.shape)} at entry ${i}`);
  });
  const d = normDim('stack', dim, first.ndim + 1);
  return cat(tensors.map((t) => unsqueeze(t, d)), d);
}

// ---------------------------------------------------------------- split / chunk / unbind (views)
/**
 * Splits into views along `dim`: pieces of `splitSize` (the last may be smaller), or pieces of
 * the given section sizes, which must add up to the dim's size.
 * @example split(arange(5), 2).map((t) => t.toArray()); // [[0, 1], [2, 3], [4]]
 */
export function split(x: Tensor, splitSizeOrSections: number | number[], dim = 0): Tensor[] {
  const d = normDim('split', dim, x.ndim);
  const n = x.shape[d]!;
  let sizes: number[];
  if (Array.isArray(splitSizeOrSections)) {
    sizes = splitSizeOrSections;
    if (sizes.some((s) => !Number.isInteger(s) || s < 0) || sizes.reduce((a, b) => a + b, 0) !== n) {
      throw new Error(`split: split sizes ${fmt(sizes)} must be non-negative and sum to ${n}, the size of dim ${d} (shape ${fmt(x.shape)})`);
    }
  } else {
    const s = splitSizeOrSections;
    if (!Number.isInteger(s) || s < 0 || (s === 0 && n !== 0)) throw new Error(`split: split size ${s} must be a positive integer for dim ${d} of size ${n}`);
    sizes = n === 0 ? [0] : Array.from({ length: Math.ceil(n / s) }, (_, i) => Math.min(s, n - i * s));
  }
  let at = 0;
  return sizes.map((s) => {
    const piece = narrow(x, d, at, s);
    at += s;
    return piece;
  });
}

/**
 * Splits into `chunks` views of size ceil(n / chunks) along `dim` (fewer if that divides evenly
 * into fewer pieces), as `torch.chunk`.
 * @example chunk(arange(6), 4).map((t) => t.shape[0]); // [2, 2, 2]
 */
export function chunk(x: Tensor, chunks: number, dim = 0): Tensor[] {
  if (!Number.isInteger(chunks) || chunks <= 0) throw new Error(`chunk: number of chunks must be a positive integer, got ${chunks}`);
  const d = normDim('chunk', dim, x.ndim);
  const n = x.shape[d]!;
  if (n === 0) return split(x, new Array<number>(chunks).fill(0), d);
  return split(x, Math.ceil(n / chunks), d);
}

/** Removes `dim`, returning each slice along it as a view. @example unbind(eye(2)).length; // 2 */
export function unbind(x: Tensor, dim = 0): Tensor[] {
  const d = normDim('unbind', dim, x.ndim);
  return Array.from({ length: x.shape[d]! }, (_, i) => select(x, d, i));
}

// ---------------------------------------------------------------- pad
/** Per-dim [before, after] amounts from torch's last-dim-first flat pad list. */
function padPairs(op: string, x: Tensor, pad: number[]): [number, number][] {
  if (pad.length % 2 !== 0 || pad.length / 2 > x.ndim) throw new Error(`${op}: padding length ${pad.length} must be even and at most twice the number of dims (shape ${fmt(x.shape)})`);
  if (pad.some((p) => !Number.isInteger(p))) throw new Error(`${op}: padding ${fmt(pad)} must be integers`);
  const pairs = x.shape.map((): [number, number] => [0, 0]);
  for (let i = 0; i < pad.length / 2; i++) pairs[x.ndim - 1 - i] = [pad[2 * i]!, pad[2 * i + 1]!];
  return pairs;
}

const constantPadFn: (x: Tensor, pairs: [number, number][], value: number) => Tensor = defineFunction({
  name: 'pad',
  forward(ctx, x: Tensor, pairs: [number, number][], value: number) {
    ctx.state = { pairs };
    const shape = x.shape.map((n, d) => n + pairs[d]![0] + pairs[d]![1]);
    const out = empty(shape, x.dtype, x, 'pad');
    runKernelInto('fill', [], out, { value });
    out.storage.version = 0;
    // the part of x that survives cropping, and where it lands in the output
    let src = x;
    let dst = out;
    for (let d = 0; d < x.ndim; d++) {
      const [lo, hi] = pairs[d]!;
      const keep = x.shape[d]! + Math.min(lo, 0) + Math.min(hi, 0);
      if (keep <= 0) return out;
      src = narrowView(src, d, Math.max(-lo, 0), keep);
      dst = narrowView(dst, d, Math.max(lo, 0), keep);
    }
    if (src.numel() > 0) runKernelInto('copy', [src], dst, {});
    out.storage.version = 0;
    return out;
  },
  backward(ctx, g) {
    const pairs = ctx.state.pairs as [number, number][];
    return [constantPadFn(g, pairs.map(([a, b]): [number, number] => [-a, -b]), 0), null, null]; // adjoint of padding is cropping (pad by the negated amounts)
  },
});

/** How `pad` fills the border: a constant, or the edge reflected, replicated or wrapped around. */
export type PadMode = 'constant' | 'reflect' | 'replicate' | 'circular';

/**
 * Pads (or, with negative amounts, crops) like `torch.nn.functional.pad`: `pad` lists
 * [left, right] of the last dim first, then of the dim before it, and so on. Modes 'reflect',
 * 'replicate' and 'circular' take non-negative amounts and may pad any dims.
 * @example pad(tensor([[1, 2]]), [1, 0]).toArray(); // [[0, 1, 2]]
 */
export function pad(x: Tensor, padding: number[], mode: PadMode = 'constant', value = 0): Tensor {
  const pairs = padPairs('pad', x, padding);
  const shape = x.shape.map((n, d) => n + pairs[d]![0] + pairs[d]![1]);
  if (shape.some((n) => n < 0)) throw new Error(`pad: padding ${fmt(padding)} would make a negative size ${fmt(shape)} from shape ${fmt(x.shape)}`);
  if (mode === 'constant') return pairs.every(([a, b]) => a === 0 && b === 0) ? x : constantPadFn(x, pairs, value);
  let y = x;
  pairs.forEach(([lo, hi], d) => {
    if (lo === 0 && hi === 0) return;
    const n = x.shape[d]!;
    if (lo < 0 || hi < 0) throw new Error(`pad: mode '${mode}' needs non-negative padding, got ${fmt(padding)}`);
    let before: Tensor, after: Tensor;
    if (mode === 'reflect') {
      if (lo >= n || hi >= n) throw new Error(`pad: reflect padding (${lo}, ${hi}) must be smaller than the padded dim ${d} of size ${n} (shape ${fmt(x.shape)})`);
      before = flip(narrow(y, d, 1, lo), [d]);
      after = flip(narrow(y, d, n - 1 - hi, hi), [d]);
    } else if (mode === 'replicate') {
      if (n === 0) throw new Error(`pad: replicate padding of dim ${d} needs a non-empty dim (shape ${fmt(x.shape)})`);
      const edge = (i: number, k: number) => expand(narrow(y, d, i, 1), y.shape.map((s, j) => (j === d ? k : s)));
      before = edge(0, lo);
      after = edge(n - 1, hi);
    } else if (mode === 'circular') {
      if (lo > n || hi > n) throw new Error(`pad: circular padding (${lo}, ${hi}) must be at most the size ${n} of dim ${d} (shape ${fmt(x.shape)})`);
      before = narrow(y, d, n - lo, lo);
      after = narrow(y, d, 0, hi);
    } else {
      const bad: never = mode;
      throw new Error(`pad: unknown mode '${bad as string}'`);
    }
    y = cat([before, y, after], d);
  });
  return y;
}

// ---------------------------------------------------------------- triangles
/** uint8 mask over the last two dims of `x`: keep where (col - row) compares with `diagonal`. */
function triMask(op: string, x: Tensor, diagonal: number, upper: boolean): Tensor {
  if (x.ndim < 2) throw new Error(`${op}: input tensor must have at least 2 dimensions, got shape ${fmt(x.shape)}`);
  const [r, c] = x.shape.slice(-2) as [number, number];
  const diff = sub(reshape(arange(c), [1, c]), reshape(arange(r), [r, 1])); // [r, c]: col - row
  return upper ? ge(diff, diagonal) : le(diff, diagonal);
}

/**
 * Upper triangle of the last two dims (elements with col - row ≥ `diagonal`), zero elsewhere.
 * @example triu(ones([2, 2])).toArray(); // [[1, 1], [0, 1]]
 */
export function triu(x: Tensor, diagonal = 0): Tensor {
  return where(triMask('triu', x, diagonal, true), x, 0);
}

/** Lower triangle of the last two dims (col - row ≤ `diagonal`). @example tril(ones([2, 2])).toArray(); // [[1, 0], [1, 1]] */
export function tril(x: Tensor, diagonal = 0): Tensor {
  return where(triMask('tril', x, diagonal, false), x, 0);
}

// ---------------------------------------------------------------- repeat
/**
 * Tiles `x` `sizes[i]` times along each dim, as `torch.Tensor.repeat` (extra leading sizes add
 * dims).
 * @example repeat(tensor([1, 2]), [2, 2]).toArray(); // [[1, 2, 1, 2], [1, 2, 1, 2]]
 */
export function repeat(x: Tensor, sizes: number[]): Tensor {
  if (sizes.length < x.ndim) throw new Error(`repeat: number of repeat dims (${sizes.length}) can not be smaller than number of tensor dims (${x.ndim}, shape ${fmt(x.shape)})`);
  if (sizes.some((s) => !Number.isInteger(s) || s < 0)) throw new Error(`repeat: repeats ${fmt(sizes)} must be non-negative integers`);
  const shape = [...new Array<number>(sizes.length - x.ndim).fill(1), ...x.shape];
  // [1, d0, 1, d1, …] → expand to [s0, d0, s1, d1, …] → merge pairs to [s0·d0, s1·d1, …]
  const interleaved = shape.flatMap((d) => [1, d]);
  const expanded = expand(reshape(x, interleaved), shape.flatMap((d, i) => [sizes[i]!, d]));
  return reshape(expanded, shape.map((d, i) => d * sizes[i]!));
}

/**
 * Repeats each element `repeats` times along `dim` (over the flattened tensor when `dim` is
 * omitted), as `torch.repeat_interleave`. `repeats` may also be one count per element.
 * @example repeatInterleave(tensor([1, 2]), 2).toArray(); // [1, 1, 2, 2]
 */
export function repeatInterleave(x: Tensor, repeats: number | number[] | Tensor, dim?: number): Tensor {
  if (dim === undefined) return repeatInterleave(flatten(x), repeats, 0);
  const d = normDim('repeatInterleave', dim, x.ndim);
  const n = x.shape[d]!;
  const counts = repeats instanceof Tensor ? Array.from(repeats.dataSync()) : repeats;
  if (typeof counts === 'number') {
    if (!Number.isInteger(counts) || counts < 0) throw new Error(`repeatInterleave: repeats must be a non-negative integer, got ${counts}`);
    // [..., n, ...] → [..., n, 1, ...] → expand to r → merge
    const s = [...x.shape];
    s.splice(d + 1, 0, counts);
    const out = [...x.shape];
    out[d] = n * counts;
    return reshape(expand(unsqueeze(x, d + 1), s), out);
  }
  if (counts.length === 1) return repeatInterleave(x, counts[0]!, d);
  if (counts.length !== n || counts.some((c) => !Number.isInteger(c) || c < 0)) {
    throw new Error(`repeatInterleave: repeats must hold ${n} non-negative integers for dim ${d} of shape ${fmt(x.shape)}, got ${fmt(counts)}`);
  }
  const index = counts.flatMap((c, i) => new Array<number>(c).fill(i));
  return indexSelect(x, d, tensor(index, { dtype: 'int32' }));
}

// ---------------------------------------------------------------- flip / roll
const flipFn: (x: Tensor, dims: number[]) => Tensor = defineFunction({
  name: 'flip',
  forward(ctx, x: Tensor, dims: number[]) {
    ctx.state = { dims };
    // a negative-stride view starting at the last element of each flipped dim, copied out
    const strides = x.strides.map((s, d) => (dims.includes(d) ? -s : s));
    const offset = dims.reduce((o, d) => o + (x.shape[d]! > 0 ? (x.shape[d]! - 1) * x.strides[d]! : 0), x.offset);
    return runKernel('copy', [new Tensor(x.storage, x.shape, strides, offset)], [...x.shape], x.dtype, {});
  },
  backward: (ctx, g) => [flipFn(g, ctx.state.dims as number[]), null], // flipping is its own inverse
});

/**
 * Reverses the order of elements along `dims` (a copy, as in PyTorch).
 * @example flip(tensor([[1, 2], [3, 4]]), [1]).toArray(); // [[2, 1], [4, 3]]
 */
export function flip(x: Tensor, dims: number | number[]): Tensor {
  const ds = (Array.isArray(dims) ? dims : [dims]).map((d) => normDim('flip', d, x.ndim));
  if (new Set(ds).size !== ds.length) throw new Error(`flip: dim appears multiple times in ${fmt(Array.isArray(dims) ? dims : [dims])}`);
  return flipFn(x, x.ndim === 0 ? [] : ds);
}

/**
 * Rotates elements along `dims` by `shifts` (elements pushed off the end come back at the
 * start); without `dims` the tensor is rolled flattened and reshaped back, as `torch.roll`.
 * @example roll(tensor([1, 2, 3]), 1).toArray(); // [3, 1, 2]
 */
export function roll(x: Tensor, shifts: number | number[], dims?: number | number[]): Tensor {
  const sh = Array.isArray(shifts) ? shifts : [shifts];
  if (dims === undefined || (Array.isArray(dims) && dims.length === 0)) {
    if (sh.length !== 1) throw new Error(`roll: without dims, shifts must be a single number, got ${fmt(sh)}`);
    return reshape(roll(flatten(x), sh[0]!, 0), [...x.shape]);
  }
  const ds = Array.isArray(dims) ? dims : [dims];
  if (ds.length !== sh.length) throw new Error(`roll: shifts ${fmt(sh)} and dims ${fmt(ds)} must have the same length`);
  let y = x;
  ds.forEach((dim, i) => {
    const d = normDim('roll', dim, x.ndim);
    const n = x.shape[d]!;
    const s = n === 0 ? 0 : ((sh[i]! % n) + n) % n;
    if (s !== 0) y = cat([narrow(y, d, n - s, s), narrow(y, d, 0, n - s)], d);
  });
  return y === x ? x : y;
}
