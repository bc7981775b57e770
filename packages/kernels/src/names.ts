/**
 * @file The closed kernel set: every kernel name, its parameter type, and the dtypes.
 * Adding a name here fails to compile until the `js` oracle implements it (see js/index.ts).
 * Autograd, tensors and broadcasting rules live in @qgrad/core, not here.
 */

/** The element types of tensors and kernel buffers (PyTorch's names, without the `torch.` prefix). */
export type DType = 'float32' | 'float64' | 'int32' | 'int8' | 'uint8';

/** A buffer of host memory for one of the dtypes (`ARRAY_TYPES[dtype]`). */
export type TypedArray = Float32Array | Float64Array | Int32Array | Int8Array | Uint8Array;

/** Every dtype, in the order backends list what they support. */
export const DTYPES: readonly DType[] = ['float32', 'float64', 'int32', 'int8', 'uint8'];

/** Typed-array constructor for each dtype. */
export const ARRAY_TYPES = {
  float32: Float32Array,
  float64: Float64Array,
  int32: Int32Array,
  int8: Int8Array,
  uint8: Uint8Array,
} as const;

/**
 * Whether `dtype` is a floating-point type (the ones autograd differentiates).
 * @example [isFloat('float32'), isFloat('int8')]; // [true, false]
 */
export function isFloat(dtype: DType): boolean {
  return dtype === 'float32' || dtype === 'float64';
}

// ---------------------------------------------------------------- elementwise
/** The ops of the `unary` kernel (`siluGrad`/`reluGrad`: the derivatives their backward uses). */
export type UnaryOp =
  | 'neg' | 'exp' | 'log' | 'log1p' | 'expm1' | 'sqrt' | 'rsqrt' | 'abs' | 'sign'
  | 'sin' | 'cos' | 'tanh' | 'sigmoid' | 'relu' | 'erf' | 'floor' | 'ceil' | 'trunc'
  | 'roundHalfEven' | 'roundHalfAway' | 'reciprocal' | 'square' | 'isfinite' | 'isnan'
  | 'softplus' | 'logicalNot' | 'silu' | 'siluGrad' | 'reluGrad';

/** The ops of the `binary` kernel; comparisons and logical ops write uint8 0/1. */
export type BinaryOp =
  | 'add' | 'sub' | 'mul' | 'div' | 'pow' | 'maximum' | 'minimum' | 'atan2' | 'fmod'
  | 'eq' | 'ne' | 'lt' | 'le' | 'gt' | 'ge' | 'logicalAnd' | 'logicalOr'
  /** relu's backward (g, x) → x ≤ 0 ? 0 : g, as PyTorch's threshold_backward (NaN x passes g). */
  | 'reluBackward'
  /** silu's backward (g, x) → g·σ(x)·(1 + x·(1 − σ(x))), as PyTorch's silu_backward (one pass where siluGrad then mul took two). */
  | 'siluBackward'
  /** SwiGLU's forward (gate, up) → silu(gate)·up, rounded as the silu map then the mul map round it (one pass for two). */
  | 'siluMul';

// ---------------------------------------------------------------- reductions
/** absmax: max |x| (the ∞-norm), NaN-propagating like max. */
export type ReduceOp = 'sum' | 'max' | 'min' | 'prod' | 'absmax';
/** The ops of the `argReduce` kernel: the index (int32) of the first max / min along an axis. */
export type ArgReduceOp = 'argmax' | 'argmin';

// ---------------------------------------------------------------- conv
/** The window of `im2col`/`col2im` (conv and pooling as matmul): kernel, stride, padding and dilation per spatial axis. */
export interface Im2colParams {
  kernel: [number, number];
  stride: [number, number];
  padding: [number, number];
  dilation: [number, number];
  /** Value read outside the input (0 for conv, -Infinity for max pooling). */
  padValue: number;
}

/**
 * Parameters of each kernel, keyed by name. Inputs arrive as strided views (see `KernelArg`);
 * the output is always a fresh contiguous buffer unless a kernel says otherwise.
 */
export interface KernelParams {
  /** out = op(x), out dtype may differ (comparisons/isfinite give uint8). */
  unary: { op: UnaryOp; alpha?: number };
  /** out = op(a, b); a and b arrive already broadcast to out's shape (stride 0 on broadcast dims). */
  binary: { op: BinaryOp };
  /**
   * SwiGLU's backward: inputs [g, gate, up] (g the gradient of silu(gate)·up, all of out's shape
   * without its leading 2); out [2, ...] holds d gate = (g·up)·siluGrad(gate) then d up =
   * g·silu(gate), each product rounded as the separate maps round it (`binary` mul and
   * siluBackward, `unary` silu), in one pass over the three where they took three.
   */
  swigluBackward: Record<string, never>;
  /** out = cond ? a : b, all broadcast to out's shape. */
  where: Record<string, never>;
  /** Strided copy with dtype conversion: makes views contiguous and casts; `out` may be a strided view. */
  copy: Record<string, never>;
  /** out[:] = value. */
  fill: { value: number };
  /** Reduce over `axes` of the input; out has the input's rank with those axes of size 1. */
  reduce: { op: ReduceOp; axes: number[] };
  /** Index (int32) of the max/min along `axis` (first occurrence); out keeps the axis with size 1. */
  argReduce: { op: ArgReduceOp; axis: number };
  /** Batched matmul: a [..., M, K] · b [..., K, N] → out [..., M, N]; batch dims already broadcast. */
  matmul: Record<string, never>;
  /**
   * A LoRA adapter's weight gradients in one pass over the activations (`y = x·(W + s·B·A)ᵀ`):
   * inputs [x [n, in], g [n, out] (dL/dy), a [r, in], b [out, r], gradB [out, r] (contiguous,
   * written)]; out is dA = s·(g·B)ᵀ·x [r, in], and gradB receives dB = s·gᵀ·(x·Aᵀ). Each product
   * is summed in out's dtype, s (rounded to out's dtype) multiplied last. The four separate
   * products read x and g twice each.
   */
  loraBackward: { scale: number };
  /**
   * A LoRA layer's merged weight: inputs [w0 [out, in], a [r, in], b [out, r]]; out [out, in] =
   * w0 + b·(s·a), rounded as `add(w0, matmul(b, mul(a, s)))` rounds it (s and s·a to out's dtype, the
   * product summed as `matmul` sums it, one rounding for the sum with w0): one call for four.
   */
  loraMerge: { scale: number };
  /**
   * `loraMerge` on a packed base: inputs [a [r, D], b [rows, r], codes, levels, scales(, zero
   * points)], the base as `packedGather` reads it; out [rows, D] = W0 + b·(s·a) with W0 every row
   * of the table decoded, bit for bit `loraMerge(packedGather(0 … rows − 1), a, b)`, without W0
   * written out.
   */
  loraMergePacked: LoraMergePackedParams;
  /** x [N, C, H, W] → cols [N, C·kh·kw, outH·outW]. */
  im2col: Im2colParams;
  /** Adjoint of im2col: cols [N, C·kh·kw, L] → out [N, C, H, W] (out shape given), summing overlaps. */
  col2im: Im2colParams;
  /** out = x.gather(dim, index): out shape = index shape. */
  gather: { dim: number };
  /** out = base.clone(); out.scatter_add_(dim, index, src). Inputs: [base, index, src]. */
  scatterAdd: { dim: number };
  /** out = x.index_select(dim, index) with 1-D int32 index. */
  indexSelect: { dim: number };
  /** out = base.clone(); out.index_add_(dim, index, src). Inputs: [base, index, src]. */
  indexAdd: { dim: number };
  // ---- norm (js/norm.ts): fused row-wise primitives (one pass per row instead of a chain of kernels)
  /** Softmax (or log-softmax) of x (+ an optional second input, a bias broadcast to x) along `axis`; out has x's shape. */
  softmax: SoftmaxParams;
  /** Inputs [y, g] (y the softmax/log-softmax output, g its gradient): dx = y ⊙ (g − Σ g·y), or g − exp(y)·Σ g for log. */
  softmaxBackward: SoftmaxParams;
  /**
   * Normalises each row of the last axis: y = x·rstd (rms) or (x − mean)·rstd (layer), rstd =
   * 1/√(mean of squares + eps). An optional second input, a weight [n], gives y·w, with y rounded
   * to the dtype first (as the norm then an affine mul).
   */
  norm: NormParams;
  /**
   * Inputs [x, g] (g the gradient of the normalised output): dx, with the row statistics
   * recomputed from x. With a third input, the weight w [n] (g then the gradient of y·w), out is
   * [rows + 1, n]: dx from g·w, then the weight gradient Σ over rows of g·y, each product rounded
   * to the dtype and summed in float64 in row order (as the affine mul's backward and a sum would).
   */
  normBackward: NormParams;
  /**
   * Rotary embedding in the rotate-half layout along the last axis (size D, halves h = D/2):
   * inputs [x, cos, sin] (tables broadcast to x); out = x·cos + rotateHalf(x)·sin, rotateHalf(x) =
   * [−x₂, x₁]. `transpose` applies the adjoint, x·cos + rotateHalfᵀ(x·sin) = [x₁c₁ + x₂s₂, x₂c₂ − x₁s₁]
   * (the backward, so either form is the other's derivative). `scale` (default 1) multiplies the
   * rotated value after it is rounded (forward), or the incoming x before the adjoint (transpose):
   * attention's q·(1/√d) folded into the pass that writes q, rounded as the mul after it rounds.
   */
  rope: { transpose: boolean; scale?: number };
  // ---- optim (js/optim.ts)
  /**
   * One Adam/AdamW step in place: inputs [param, grad, expAvg, expAvgSq]; `out` is the param
   * itself, and expAvg/expAvgSq are updated too (the one kernel that writes its inputs, as
   * PyTorch's fused optimizers do: a step is then one pass instead of ~20 kernels per tensor).
   */
  adamStep: AdamStepParams;
  // ---- quant (js/quant.ts, js/hadamard.ts)
  /**
   * Fake quantization onto an integer grid. Inputs [x, scale, zeroPoint(, noise)], all broadcast to x.
   * With `absmaxScale` the scale input (one per row of x's last axis, contiguous) is written first:
   * s = max(max|x_row|, min)/divisor in out's dtype (NaN rows give NaN), then used as given.
   */
  fakeQuantize: FakeQuantizeParams & { absmaxScale?: { divisor: number; min: number } };
  /**
   * The fused backward of fakeQuantize. Inputs [x, scale, zeroPoint, grad(, noise)] broadcast to x;
   * out has shape [3, ...x.shape]: per element dx, the dscale contribution, the dzeroPoint contribution.
   * With `rowSums` (no noise), out is dx in x's shape and a fifth input `sums` [2, rows] (rows =
   * all dims of x but the last) is written: row r's dscale and dzeroPoint contributions summed, for
   * scales shared along the last axis (per group, channel, token or tensor). js/quant.ts
   * `rowSum` fixes the summation order.
   */
  fakeQuantizeBackward: FakeQuantizeParams & { gradFactor: number; rowSums?: boolean };
  /**
   * Fast Walsh–Hadamard transform along the last dim in independent blocks of `blockSize` (a power
   * of two), computed in out's dtype: float32 rounds every butterfly stage to float32 (js/hadamard.ts).
   */
  fwht: FwhtParams;
  /**
   * Rounding onto a minifloat (FP ExMy) grid in one pass: out = clamp(R(v / step)·step, ±max)
   * with v = x (or x / s, rounded to out's dtype, with a `scale` input s broadcast to x), step =
   * 2^(max(⌊log2|v|⌋, minExponent) − mantissaBits), R the rounding. NaN stays NaN, ±∞ saturate
   * to ±max, a zero result keeps v's sign (half away: +0 for −0, as `roundHalfAway`). Inputs
   * [x(, scale)]; out has x's shape and dtype (js/fp-round.ts).
   */
  fpRound: FpRoundParams;
  // ---- packed (js/packed.ts, wasm/packed.ts)
  /**
   * Matmul against a packed low-bit weight, y = x·Ŵᵀ (+ bias), reading the packed bytes directly:
   * y[n, o] = Σ_g s[o, g]·Σ_{k∈g} x[n, k]·(L[q[o, k]] − z[o, g]) (+ b[o]). Inputs [x [N, K],
   * codes, levels L, scales s [O·K/groupSize], then zero points z and bias b [O] when present];
   * out [N, O].
   */
  packedMatmul: PackedMatmulParams;
  /**
   * Rows of a packed low-bit table, decoded: out[n, k] = s[r, g]·(L[q[r, k]] − z[r, g]) (or
   * s·L + z with offset 'beta'), r = idx[n], g = ⌊k / groupSize⌋, each step rounded to out's dtype
   * as the dequantizing tensor ops round it. Inputs [idx (int32, contiguous, any shape: n =
   * numel), codes, levels L, scales s [rows·D/groupSize], then zero points z when present] in
   * `packedMatmul`'s layout over the table [rows, D]; out [n, D]. Only the rows looked up are read.
   */
  packedGather: PackedGatherParams;
  /**
   * Matmul against a 2:4 semi-structured sparse weight, y = x·Wᵀ (+ bias), touching only the kept
   * entries: y[n, o] = Σ_e v[o, e]·x[n, 4·⌊e/2⌋ + i(o, e)] (+ b[o]). Inputs [x [N, K], values v
   * [O, K/2] (x's dtype), indices (uint8: the 2-bit position i within its group of four of each
   * kept entry, row-major over [O, K/2], four per byte low bits first — NVIDIA's 2:4 metadata),
   * then bias b [O] when present]; out [N, O].
   */
  sparse24Matmul: Sparse24MatmulParams;
  // ---- int8 (js/int8-matmul.ts, wasm/int8-matmul.ts)
  /**
   * A real low-precision product: int8 a [M, K] · int8 b [K, N] (any strides, so transposes are
   * views) accumulated exactly in int32. With an int32 out, the inputs are [a, b] and out is the
   * accumulator itself; with a float out, the inputs are [a, b, scaleA [M], scaleB [N]] (out's
   * dtype) and out[m, n] = float(acc)·(scaleA[m]·scaleB[n]), each step rounded to out's dtype
   * (per-row × per-column scales: per-token activations times per-channel weights). With a float
   * out, a and b may instead be float of out's dtype: each entry is quantized while packing to
   * clamp(round½even(x / s), −127, 127) with its line's scale (sᵢ for row i of a, tⱼ for column j
   * of b), the code then multiplied as above. K ≤ 131071, where 128²·K still fits an int32.
   */
  int8Matmul: Record<string, never>;
}

/** Every kernel a backend may implement; the js oracle implements them all. */
export type KernelName = keyof KernelParams;

// ---- norm
/** `softmax`/`softmaxBackward` along one axis, or log-softmax. */
export interface SoftmaxParams {
  axis: number;
  /** log-softmax: (x − max) − log Σ exp(x − max). */
  log: boolean;
}
/** One fused Adam/AdamW update (`adamStep` updates the parameter and both moments in place). */
export interface AdamStepParams {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** AdamW: p ← p·(1 − lr·wd) instead of adding wd·p to the gradient. */
  decoupled: boolean;
  maximize: boolean;
  /** The step number after this update (1 for the first), for the bias corrections. */
  step: number;
}
/** RMS norm or layer norm over the last axis (`norm`/`normBackward`). */
export interface NormParams {
  kind: 'rms' | 'layer';
  eps: number;
}

// ---- quant
/**
 * How u = x/s (+ z) becomes an integer: half to even (`torch.round`, nearbyint), half away from
 * zero, floor, or stochastic (⌊u + ξ⌋ with ξ ~ U[0, 1) given as an extra `noise` input).
 */
export type RoundingMode = 'halfEven' | 'halfAway' | 'floor' | 'stochastic';
/**
 * What the third input of fakeQuantize means: an integer-domain zero point z rounded half-even and
 * clamped to [qmin, qmax] as PyTorch's fake-quant does (`roundedZeroPoint`), the same z used as
 * given (`zeroPoint`), or a real-domain offset β (LSQ+: x̂ = s·clamp(R((x − β)/s)) + β).
 */
export type QuantOffset = 'roundedZeroPoint' | 'zeroPoint' | 'beta';
/** `fakeQuantize`/`fakeQuantizeBackward`: the integer range, the rounding and what the offset input means. */
export interface FakeQuantizeParams {
  qmin: number;
  qmax: number;
  rounding: RoundingMode;
  offset: QuantOffset;
}
/**
 * The grid of `fpRound`: a sign, `mantissaBits` fraction bits, normals down to 2^minExponent and
 * subnormals below, saturating at `max` (a grid value). The exponent bits only fix minExponent and
 * max (with the bias and the special codes), so they are not a parameter of their own.
 */
export interface FpRoundParams {
  mantissaBits: number;
  /** emin = 1 − bias: the exponent of the smallest normal, and of the uniform subnormal step 2^(emin − M). */
  minExponent: number;
  /** Largest finite magnitude (E4M3fn 448, E5M2 57344, E2M1 6); results are clamped to ±max. */
  max: number;
  rounding: Exclude<RoundingMode, 'stochastic'>;
  /** Whether a second input holds scales s broadcast to x (the kernel rounds x / s). */
  scale: boolean;
}
/** The fast Walsh–Hadamard transform `fwht` over independent blocks of `blockSize` along the last axis. */
export interface FwhtParams {
  blockSize: number;
  /** Multiply by 1/√blockSize, making the transform orthonormal. */
  normalize: boolean;
}

// ---- sparse 2:4
/** `sparse24Matmul`: x times a 2:4-compressed weight (two kept values and their 2-bit positions per four inputs). */
export interface Sparse24MatmulParams {
  /** Rows of the weight (O). */
  outFeatures: number;
  /** Whether a bias input comes last. */
  bias: boolean;
}

// ---- packed
/**
 * The layout of a packed weight W [O, K] for `packedMatmul`. Codes are `bits`-bit unsigned fields
 * of a byte buffer (uint8, or int8 read as its bytes), row-major over [O, K], little end first
 * (field i in bits (i·bits) mod 8 of byte ⌊i·bits/8⌋; rows need not start on a byte). A field f
 * means the level L[f] of the float table (≥ 2^bits entries), so one kernel serves every grid:
 * int grids L[f] = f + codeMin, level grids (NF4, FP, codebook) their levels. Scales (and zero
 * points, in level units) are float, one per (row, group of `groupSize` along K), row-major.
 */
export interface PackedMatmulParams {
  /** Bits per code field: 1, 2, 4 or 8. */
  bits: number;
  /** Rows of the weight (O). */
  outFeatures: number;
  /** Fields of a row sharing one scale; divides K (K itself: per channel). */
  groupSize: number;
  /** Whether a zero-point input follows the scales. */
  zeroPoint: boolean;
  /** Whether a bias input comes last. */
  bias: boolean;
  /**
   * 'fields' (the default): `bits`-bit fields as above. 'base3': ternary digits (fields 0, 1, 2
   * with bits 2 and a table of ≥ 3 levels) five per byte in TQ1_0's order, each row starting on
   * a byte (layout in js/base3.ts: a row of whole 256-blocks is TQ1_0's qs/qh bytes).
   */
  packing?: 'fields' | 'base3';
}

/** `loraMergePacked`: the packed table's layout (as `packedGather`'s) and the adapter's s. */
export interface LoraMergePackedParams extends PackedGatherParams {
  scale: number;
}

/** `packedGather` over a packed table [rows, D] (D = out's last dim), laid out as for `packedMatmul`. */
export interface PackedGatherParams {
  /** Bits per code field: 1, 2, 4 or 8. */
  bits: number;
  /** Rows of the table: indices lie in [0, rows). */
  rows: number;
  /** Fields of a row sharing one scale; divides D. */
  groupSize: number;
  /** Whether a zero-point input follows the scales. */
  zeroPoint: boolean;
  /** 'zeroPoint' (the default): s·(L − z). 'beta': s·L + z (LSQ+'s offset β). */
  offset?: 'zeroPoint' | 'beta';
}
