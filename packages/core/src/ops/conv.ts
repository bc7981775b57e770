/**
 * @file Convolution family: `unfold`/`fold` (the two primitives, over the im2col/col2im kernels,
 * each the other's adjoint), and composites built on them — conv2d (unfold + matmul), packedConv2d
 * (unfold + packedLinear), max/avg pooling and nearest-neighbour `interpolate`. Dense matmul itself
 * lives in linalg.ts.
 */
import type { Im2colParams } from '@qgrad/kernels';
import { runKernel } from '../dispatch.js';
import { defineFunction } from '../function.js';
import { Tensor } from '../tensor.js';
import { arange, fromTypedArray } from './creation.js';
import { add, div, eq, where } from './elementwise.js';
import { matmul } from './linalg.js';
import { expand, reshape, select, slice, squeeze, transpose, unsqueeze } from './movement.js';
import { packedLinear, type PackedWeight } from './quant.js';
import { cat } from './shape.js';
import { argmax, sum } from './reduce.js';

/** A 2-D size: one number for both dims, or [height, width]. */
export type Pair = number | [number, number];
const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

function pair(op: string, name: string, v: Pair, min: number): [number, number] {
  const p: [number, number] = typeof v === 'number' ? [v, v] : [v[0], v[1]];
  if (p.length !== 2 || p.some((x) => !Number.isInteger(x) || x < min)) throw new Error(`${op}: ${name} must be an integer ≥ ${min} or a pair of them, got ${JSON.stringify(v)}`);
  return p;
}

/** Output length of a sliding window (PyTorch's formula, floor mode). */
const outSize = (size: number, k: number, s: number, p: number, d: number) => Math.floor((size + 2 * p - d * (k - 1) - 1) / s) + 1;

function geometry(op: string, h: number, w: number, p: Im2colParams): [number, number] {
  const oh = outSize(h, p.kernel[0], p.stride[0], p.padding[0], p.dilation[0]);
  const ow = outSize(w, p.kernel[1], p.stride[1], p.padding[1], p.dilation[1]);
  if (oh <= 0 || ow <= 0) {
    throw new Error(`${op}: kernel ${fmt(p.kernel)} (dilation ${fmt(p.dilation)}, padding ${fmt(p.padding)}) is larger than the padded input of spatial size ${fmt([h, w])}`);
  }
  return [oh, ow];
}

// x [N, C, H, W] → cols [N, C·kh·kw, L]
const unfoldFn: (x: Tensor, p: Im2colParams) => Tensor = defineFunction({
  name: 'unfold',
  forward(ctx, x: Tensor, p: Im2colParams) {
    const [n, c, h, w] = x.shape as [number, number, number, number];
    ctx.state = { p, size: [h, w] };
    const [oh, ow] = geometry('unfold', h, w, p);
    return runKernel('im2col', [x], [n, c * p.kernel[0] * p.kernel[1], oh * ow], x.dtype, p);
  },
  backward(ctx, g) {
    const { p, size } = ctx.state as { p: Im2colParams; size: [number, number] };
    return [foldFn(g, size, { ...p, padValue: 0 }), null]; // im2col is linear; its adjoint is col2im
  },
});

// cols [N, C·kh·kw, L] → [N, C, H, W], summing overlaps
const foldFn: (cols: Tensor, size: [number, number], p: Im2colParams) => Tensor = defineFunction({
  name: 'fold',
  forward(ctx, cols: Tensor, size: [number, number], p: Im2colParams) {
    ctx.state = { p };
    const c = cols.shape[1]! / (p.kernel[0] * p.kernel[1]);
    return runKernel('col2im', [cols], [cols.shape[0]!, c, size[0], size[1]], cols.dtype, p);
  },
  backward(ctx, g) {
    return [unfoldFn(g, ctx.state.p as Im2colParams), null, null]; // col2im is linear; its adjoint is im2col
  },
});

/** Options of `unfold` (im2col) besides the kernel size: dilation, padding and stride. */
export interface UnfoldOptions {
  dilation?: Pair;
  padding?: Pair;
  stride?: Pair;
}

function params(op: string, kernelSize: Pair, o: UnfoldOptions, padValue = 0): Im2colParams {
  return {
    kernel: pair(op, 'kernelSize', kernelSize, 1),
    stride: pair(op, 'stride', o.stride ?? 1, 1),
    padding: pair(op, 'padding', o.padding ?? 0, 0),
    dilation: pair(op, 'dilation', o.dilation ?? 1, 1),
    padValue,
  };
}

/** Runs `fn` on a batched view of an unbatched (C, H, W) input and drops the batch dim again. */
function batched(op: string, x: Tensor, fn: (x4: Tensor) => Tensor): Tensor {
  if (x.ndim === 3) return squeeze(fn(unsqueeze(x, 0)), 0);
  if (x.ndim !== 4) throw new Error(`${op}: expects a 3-D (C, H, W) or 4-D (N, C, H, W) input, got shape ${fmt(x.shape)}`);
  return fn(x);
}

/**
 * Sliding local blocks, as `torch.nn.functional.unfold`: [N, C, H, W] → [N, C·kh·kw, L].
 * @example unfold(ones([1, 2, 4, 4]), 2).shape; // [1, 8, 9]
 */
export function unfold(x: Tensor, kernelSize: Pair, opts: UnfoldOptions = {}): Tensor {
  const p = params('unfold', kernelSize, opts);
  return batched('unfold', x, (x4) => unfoldFn(x4, p));
}

/**
 * Sums sliding local blocks back into an image, as `torch.nn.functional.fold` (the adjoint of
 * `unfold`): [N, C·kh·kw, L] → [N, C, ...outputSize].
 * @example fold(ones([1, 8, 9]), [4, 4], 2).shape; // [1, 2, 4, 4]
 */
export function fold(x: Tensor, outputSize: Pair, kernelSize: Pair, opts: UnfoldOptions = {}): Tensor {
  const p = params('fold', kernelSize, opts);
  const size = pair('fold', 'outputSize', outputSize, 1);
  if (x.ndim === 2) return squeeze(fold(unsqueeze(x, 0), outputSize, kernelSize, opts), 0);
  if (x.ndim !== 3) throw new Error(`fold: expects a 2-D (C·kh·kw, L) or 3-D (N, C·kh·kw, L) input, got shape ${fmt(x.shape)}`);
  const kk = p.kernel[0] * p.kernel[1];
  if (x.shape[1]! % kk !== 0) throw new Error(`fold: dim 1 of input ${fmt(x.shape)} must be divisible by the kernel size ${fmt(p.kernel)} product ${kk}`);
  const [oh, ow] = geometry('fold', size[0], size[1], p);
  if (x.shape[2] !== oh * ow) throw new Error(`fold: input ${fmt(x.shape)} has ${x.shape[2]} blocks but output size ${fmt(size)} with kernel ${fmt(p.kernel)} gives ${oh}×${ow} = ${oh * ow}`);
  return foldFn(x, size, p);
}

// ---------------------------------------------------------------- conv2d
/** Options of `conv2d`: stride, padding, dilation and groups, as PyTorch. */
export interface Conv2dOptions {
  stride?: Pair;
  /** Ints or pairs, or 'valid' (no padding) / 'same' (output size = input size; stride 1 only). */
  padding?: Pair | 'same' | 'valid';
  dilation?: Pair;
  groups?: number;
}

/**
 * 2-D convolution (cross-correlation), as `torch.nn.functional.conv2d`: input [N, C, H, W] or
 * [C, H, W], weight [O, C/groups, kh, kw], optional bias [O]. Built as unfold + matmul, so its
 * gradients (and double gradients) come from those two.
 * @example conv2d(ones([1, 3, 8, 8]), ones([4, 3, 3, 3]), null, { padding: 1 }).shape; // [1, 4, 8, 8]
 */
export function conv2d(x: Tensor, weight: Tensor, bias?: Tensor | null, opts: Conv2dOptions = {}): Tensor {
  if (weight.ndim !== 4) throw new Error(`conv2d: weight must be 4-D [out, in/groups, kh, kw], got shape ${fmt(weight.shape)}`);
  return batched('conv2d', x, (x4) => conv2d4(x4, weight, bias ?? null, opts));
}

function conv2d4(x: Tensor, weight: Tensor, bias: Tensor | null, opts: Conv2dOptions): Tensor {
  if (x.dtype !== weight.dtype) throw new Error(`conv2d: input (${x.dtype}, shape ${fmt(x.shape)}) and weight (${weight.dtype}, shape ${fmt(weight.shape)}) must have the same dtype`);
  const g = convGeometry('conv2d', x, weight.shape as [number, number, number, number], bias, opts);
  const cols = reshape(unfoldFn(x, g.p), [g.n, g.groups, g.k, g.oh * g.ow]); // [N, g, C/g·kh·kw, L]
  const wg = reshape(weight, [g.groups, g.o / g.groups, g.k]); // [g, O/g, C/g·kh·kw]
  return convFinish(g, reshape(matmul(wg, cols), [g.n, g.o, g.oh, g.ow]), bias); // [N, g, O/g, L] → [N, O, oh, ow]
}

/** What conv2d and packedConv2d share: the checked sizes, the im2col params, and the 'same' trim. */
interface ConvGeometry {
  n: number;
  o: number;
  groups: number;
  /** Inputs of one output: C/groups·kh·kw. */
  k: number;
  oh: number;
  ow: number;
  p: Im2colParams;
  trim: [number, number];
}

function convGeometry(op: string, x: Tensor, [o, cg, kh, kw]: [number, number, number, number], bias: Tensor | null, opts: Conv2dOptions): ConvGeometry {
  const [n, c, h, w] = x.shape as [number, number, number, number];
  const ws = fmt([o, cg, kh, kw]);
  const groups = opts.groups ?? 1;
  if (!Number.isInteger(groups) || groups < 1) throw new Error(`${op}: groups must be a positive integer, got ${groups}`);
  if (c !== cg * groups) throw new Error(`${op}: input of shape ${fmt(x.shape)} has ${c} channels but weight ${ws} expects ${cg * groups} (groups ${groups})`);
  if (o % groups !== 0) throw new Error(`${op}: weight ${ws} has ${o} output channels, not divisible by groups ${groups}`);
  if (bias && (bias.ndim !== 1 || bias.shape[0] !== o)) throw new Error(`${op}: bias of shape ${fmt(bias.shape)} does not match weight ${ws} with ${o} output channels`);
  const stride = pair(op, 'stride', opts.stride ?? 1, 1);
  const dilation = pair(op, 'dilation', opts.dilation ?? 1, 1);
  let padding: [number, number];
  let trim: [number, number] = [0, 0];
  if (opts.padding === 'same') {
    if (stride[0] !== 1 || stride[1] !== 1) throw new Error(`${op}: padding='same' is not supported for strided convolutions (stride ${fmt(stride)})`);
    // PyTorch pads total = d·(k-1), the odd extra on the right/bottom; im2col pads symmetrically,
    // so pad the larger side on both and drop the first output row/column instead
    const total = [dilation[0] * (kh - 1), dilation[1] * (kw - 1)];
    padding = [Math.ceil(total[0]! / 2), Math.ceil(total[1]! / 2)];
    trim = [total[0]! % 2, total[1]! % 2];
  } else padding = opts.padding === 'valid' ? [0, 0] : pair(op, 'padding', opts.padding ?? 0, 0);
  const p: Im2colParams = { kernel: [kh, kw], stride, padding, dilation, padValue: 0 };
  const [oh, ow] = geometry(op, h, w, p);
  return { n, o, groups, k: cg * kh * kw, oh, ow, p, trim };
}

function convFinish(g: ConvGeometry, y: Tensor, bias: Tensor | null): Tensor {
  if (g.trim[0]) y = slice(y, 2, 1);
  if (g.trim[1]) y = slice(y, 3, 1);
  return bias ? add(y, reshape(bias, [g.o, 1, 1])) : y;
}

/**
 * conv2d with a packed low-bit weight (the quantized model's inference conv): im2col, then
 * `packedLinear` over the codes of each group's filters viewed as a matrix [O/groups, C/groups·kh·kw]
 * (weight order: channel, then kernel row, then column), so the weight is never unpacked to float.
 * `weight` is one PackedWeight (groups 1) or one per group, in order; `kernelSize` is [kh, kw].
 * Inference only, as packedLinear.
 * @example
 * // 2 filters over 1 channel, 2×2, 4-bit codes 0…15 meaning −8…7, one scale per filter
 * const w: PackedWeight = { codes: tensor([0x98, 0xba, 0x98, 0xba], { dtype: 'uint8' }), bits: 4,
 *   levels: arange(-8, 8, 1, { dtype: 'float32' }), scale: tensor([1, 0.5]), zeroPoint: null, outFeatures: 2, inFeatures: 4, groupSize: 4 };
 * packedConv2d(ones([1, 1, 3, 3]), w, 2).shape; // [1, 2, 2, 2]; every value 0+1+2+3 = 6, then 3
 */
export function packedConv2d(x: Tensor, weight: PackedWeight | readonly PackedWeight[], kernelSize: Pair, bias?: Tensor | null, opts: Conv2dOptions = {}): Tensor {
  const ws = Array.isArray(weight) ? (weight as readonly PackedWeight[]) : [weight as PackedWeight];
  const groups = opts.groups ?? 1;
  if (ws.length !== groups) throw new Error(`packedConv2d: got ${ws.length} packed weights for ${groups} groups (one per group)`);
  const [kh, kw] = pair('packedConv2d', 'kernelSize', kernelSize, 1);
  const og = ws[0]!.outFeatures;
  if (ws.some((w) => w.outFeatures !== og || w.inFeatures !== ws[0]!.inFeatures)) throw new Error('packedConv2d: the packed weights of the groups must have one shape');
  const cg = ws[0]!.inFeatures / (kh * kw);
  if (!Number.isInteger(cg)) throw new Error(`packedConv2d: a packed weight of ${ws[0]!.inFeatures} inputs is not channels × kernel ${fmt([kh, kw])}`);
  return batched('packedConv2d', x, (x4) => {
    const g = convGeometry('packedConv2d', x4, [og * groups, cg, kh, kw], bias ?? null, opts);
    const L = g.oh * g.ow;
    const cols = reshape(unfoldFn(x4, g.p), [g.n, groups, g.k, L]); // [N, g, C/g·kh·kw, L]
    // packedLinear reads rows of inputs: [N, L, k] per group → [N, L, O/g] → [N, O/g, L]
    const ys = ws.map((w, i) => transpose(packedLinear(transpose(select(cols, 1, i), 1, 2), w), 1, 2));
    const y = reshape(ys.length === 1 ? ys[0]! : cat(ys, 1), [g.n, g.o, g.oh, g.ow]); // [N, O, oh, ow]
    return convFinish(g, y, bias ?? null);
  });
}

// ---------------------------------------------------------------- pooling
interface PoolGeometry {
  k: [number, number];
  s: [number, number];
  p: [number, number];
  d: [number, number];
  ceilMode: boolean;
}

/** PyTorch's pooling output size, with ceil mode keeping the last window starting inside the input. */
function poolOut(size: number, k: number, s: number, p: number, d: number, ceilMode: boolean): number {
  const span = size + 2 * p - d * (k - 1) - 1;
  let out = Math.floor((span + (ceilMode ? s - 1 : 0)) / s) + 1;
  if (ceilMode && (out - 1) * s >= size + p) out--;
  return out;
}

/**
 * The pooling windows of x [N, C, H, W] as [N, C, kh·kw, oh, ow], reading `padValue` outside.
 * Ceil mode needs extra padding on the bottom/right only; im2col pads symmetrically, so pad a
 * multiple m of the stride more on both sides and drop the first m windows.
 */
function windows(op: string, x: Tensor, g: PoolGeometry, padValue: number): { cols: Tensor; oh: number; ow: number } {
  const [n, c, h, w] = x.shape as [number, number, number, number];
  const size = [h, w];
  const out = [0, 1].map((i) => poolOut(size[i]!, g.k[i]!, g.s[i]!, g.p[i]!, g.d[i]!, g.ceilMode)) as [number, number];
  if (out[0] <= 0 || out[1] <= 0) throw new Error(`${op}: kernel ${fmt(g.k)} (dilation ${fmt(g.d)}, padding ${fmt(g.p)}) is larger than the input of shape ${fmt(x.shape)}`);
  const extra = [0, 1].map((i) => {
    const need = (out[i]! - 1) * g.s[i]! + g.d[i]! * (g.k[i]! - 1) - (size[i]! + 2 * g.p[i]! - 1);
    return Math.max(0, Math.ceil(need / g.s[i]!));
  });
  const pad: [number, number] = [g.p[0] + extra[0]! * g.s[0], g.p[1] + extra[1]! * g.s[1]];
  const p: Im2colParams = { kernel: g.k, stride: g.s, padding: pad, dilation: g.d, padValue };
  const [fh, fw] = geometry(op, h, w, p);
  let cols = reshape(unfoldFn(x, p), [n, c, g.k[0] * g.k[1], fh, fw]);
  cols = slice(slice(cols, 3, extra[0], extra[0]! + out[0]), 4, extra[1], extra[1]! + out[1]);
  return { cols, oh: out[0], ow: out[1] };
}

function poolGeometry(op: string, kernelSize: Pair, o: { stride?: Pair | null; padding?: Pair; dilation?: Pair; ceilMode?: boolean }): PoolGeometry {
  const k = pair(op, 'kernelSize', kernelSize, 1);
  const g: PoolGeometry = {
    k,
    s: o.stride == null ? k : pair(op, 'stride', o.stride, 1),
    p: pair(op, 'padding', o.padding ?? 0, 0),
    d: pair(op, 'dilation', o.dilation ?? 1, 1),
    ceilMode: o.ceilMode ?? false,
  };
  for (const i of [0, 1]) {
    const half = Math.floor((g.d[i]! * (g.k[i]! - 1) + 1) / 2);
    if (g.p[i]! > half) throw new Error(`${op}: padding ${fmt(g.p)} should be at most half of the effective kernel size ${fmt(g.k)} (dilation ${fmt(g.d)})`);
  }
  return g;
}

/** Options of `maxPool2d` besides the kernel size: stride, padding, dilation and ceil mode, as PyTorch. */
export interface MaxPool2dOptions {
  /** Default: the kernel size. */
  stride?: Pair | null;
  padding?: Pair;
  dilation?: Pair;
  ceilMode?: boolean;
}

/**
 * 2-D max pooling, as `torch.nn.functional.max_pool2d`, on [N, C, H, W] or [C, H, W]. Padding
 * reads -Infinity; the gradient of each window goes to its first maximum only, as in PyTorch.
 * @example maxPool2d(randn([1, 3, 8, 8]), 2).shape; // [1, 3, 4, 4]
 */
export function maxPool2d(x: Tensor, kernelSize: Pair, opts: MaxPool2dOptions = {}): Tensor {
  const g = poolGeometry('maxPool2d', kernelSize, opts);
  return batched('maxPool2d', x, (x4) => {
    const { cols } = windows('maxPool2d', x4, g, -Infinity); // [N, C, kh·kw, oh, ow]
    const kk = cols.shape[2]!;
    const first = eq(reshape(arange(kk), [1, 1, kk, 1, 1]), argmax(cols, 2, true));
    // select rather than multiply by the mask: -Infinity padding times 0 would be NaN
    return sum(where(first, cols, 0), 2);
  });
}

/** Options of `avgPool2d` besides the kernel size: stride, padding, ceil mode and whether padding counts, as PyTorch. */
export interface AvgPool2dOptions {
  /** Default: the kernel size. */
  stride?: Pair | null;
  padding?: Pair;
  ceilMode?: boolean;
  /** Count the zero padding in the divisor (PyTorch's default true). */
  countIncludePad?: boolean;
  /** Divide by this instead of the window size. */
  divisorOverride?: number | null;
}

/**
 * 2-D average pooling, as `torch.nn.functional.avg_pool2d`, on [N, C, H, W] or [C, H, W].
 * @example avgPool2d(ones([1, 1, 4, 4]), 2).toArray(); // [[[[1, 1], [1, 1]]]]
 */
export function avgPool2d(x: Tensor, kernelSize: Pair, opts: AvgPool2dOptions = {}): Tensor {
  const g = poolGeometry('avgPool2d', kernelSize, { stride: opts.stride, padding: opts.padding, ceilMode: opts.ceilMode });
  return batched('avgPool2d', x, (x4) => {
    const { cols, oh, ow } = windows('avgPool2d', x4, g, 0);
    const total = sum(cols, 2); // [N, C, oh, ow]
    if (opts.divisorOverride) return div(total, opts.divisorOverride);
    const includePad = opts.countIncludePad ?? true;
    if (includePad && !g.ceilMode) return div(total, g.k[0] * g.k[1]);
    // PyTorch's per-window divisor: the window clipped to the padded input (countIncludePad) or to the input
    const [h, w] = [x4.shape[2]!, x4.shape[3]!];
    const span = (o: number, i: number, size: number) => {
      const start = o * g.s[i]! - g.p[i]!;
      const end = Math.min(start + g.k[i]!, size + g.p[i]!);
      return includePad ? end - start : Math.min(end, size) - Math.max(start, 0);
    };
    const v = new Float64Array(oh * ow);
    for (let a = 0; a < oh; a++) for (let b = 0; b < ow; b++) v[a * ow + b] = span(a, 0, h) * span(b, 1, w);
    return div(total, fromTypedArray(x4.dtype === 'float32' ? Float32Array.from(v) : v, [oh, ow], x4.dtype));
  });
}

// ---------------------------------------------------------------- interpolate
/** Options of `interpolate`: the output size or scale factor, and the mode. */
export interface InterpolateOptions {
  /** Output spatial size (one int for every spatial dim, or one per dim). */
  size?: number | number[];
  /** Multiplier of each spatial dim (output = floor(input · scale)). */
  scaleFactor?: number | number[];
  mode?: 'nearest' | 'nearest-exact';
}

/** The source index of every output index along one dim, with PyTorch's float32 arithmetic. */
function sourceIndices(mode: 'nearest' | 'nearest-exact', inSize: number, outSize: number, scaleFactor?: number): number[] {
  const f = Math.fround;
  const scale = scaleFactor !== undefined && scaleFactor > 0 ? f(1 / scaleFactor) : f(f(inSize) / f(outSize));
  return Array.from({ length: outSize }, (_, o) => {
    if (mode === 'nearest') {
      if (outSize === inSize) return o;
      if (outSize === 2 * inSize) return o >> 1;
      return Math.min(Math.floor(f(o * scale)), inSize - 1);
    }
    return Math.min(Math.floor(f((o + 0.5) * scale)), inSize - 1);
  });
}

/** y.select(dim, o) = x.select(dim, src[o]), from views where the map is a repeat or a stride. */
function resample(x: Tensor, dim: number, src: number[]): Tensor {
  const n = x.shape[dim]!;
  const m = src.length;
  if (m === n && src.every((s, o) => s === o)) return x;
  const r = Math.round(m / n);
  if (m === n * r && src.every((s, o) => s === Math.floor(o / r))) {
    // repeat each element r times: [..., n, ...] → [..., n, r, ...] → [..., n·r, ...]
    const s1 = [...x.shape.slice(0, dim + 1), 1, ...x.shape.slice(dim + 1)];
    const s2 = [...s1];
    s2[dim + 1] = r;
    const shape = [...x.shape];
    shape[dim] = n * r;
    return reshape(expand(reshape(x, s1), s2), shape);
  }
  const step = m > 1 ? src[1]! - src[0]! : 1;
  if (src[0] === 0 && step >= 1 && src.every((s, o) => s === o * step)) return slice(x, dim, 0, (m - 1) * step + 1, step);
  // general maps: multiply by the one-hot selection matrix S [m, n] along dim
  const v = new Float64Array(m * n);
  src.forEach((s, o) => (v[o * n + s] = 1));
  const sel = fromTypedArray(x.dtype === 'float32' ? Float32Array.from(v) : v, [m, n], x.dtype);
  const moved = transpose(x, dim, -2); // [..., n, last]
  return transpose(matmul(sel, moved), dim, -2);
}

/**
 * Resizes the spatial dims of [N, C, L], [N, C, H, W] or [N, C, D, H, W] by nearest-neighbour
 * sampling, as `torch.nn.functional.interpolate` with mode 'nearest' or 'nearest-exact'. Whole
 * up/down scale factors are views (expand/reshape, strided slice); other sizes multiply by a
 * one-hot selection matrix, so an Inf/NaN in the input spreads NaN along that dim there.
 * @example interpolate(ones([1, 3, 4, 4]), { scaleFactor: 2 }).shape; // [1, 3, 8, 8]
 */
export function interpolate(x: Tensor, opts: InterpolateOptions): Tensor {
  const mode = opts.mode ?? 'nearest';
  if (mode !== 'nearest' && mode !== 'nearest-exact') throw new Error(`interpolate: mode '${mode as string}' is not supported (only 'nearest' and 'nearest-exact')`);
  const nd = x.ndim - 2;
  if (nd < 1 || nd > 3) throw new Error(`interpolate: expects a 3-D, 4-D or 5-D input (N, C, spatial…), got shape ${fmt(x.shape)}`);
  if ((opts.size === undefined) === (opts.scaleFactor === undefined)) throw new Error('interpolate: give exactly one of size and scaleFactor');
  const perDim = (v: number | number[], name: string) => {
    const a = typeof v === 'number' ? new Array<number>(nd).fill(v) : v;
    if (a.length !== nd) throw new Error(`interpolate: ${name} ${JSON.stringify(v)} must have ${nd} entries for input of shape ${fmt(x.shape)}`);
    return a;
  };
  const scales = opts.scaleFactor === undefined ? undefined : perDim(opts.scaleFactor, 'scaleFactor');
  const sizes = opts.size !== undefined ? perDim(opts.size, 'size') : scales!.map((s, i) => Math.floor(x.shape[i + 2]! * s));
  if (sizes.some((s) => !Number.isInteger(s) || s < 1)) throw new Error(`interpolate: output size ${fmt(sizes)} must be positive integers (input ${fmt(x.shape)})`);
  let y = x;
  for (let i = 0; i < nd; i++) y = resample(y, i + 2, sourceIndices(mode, x.shape[i + 2]!, sizes[i]!, scales?.[i]));
  return y;
}

/**
 * Alias of `interpolate`, as the deprecated `torch.nn.functional.upsample`.
 * @example upsample(images, { scaleFactor: 2 }).shape; // [N, C, 2H, 2W]
 */
export function upsample(x: Tensor, opts: InterpolateOptions): Tensor {
  return interpolate(x, opts);
}
