/**
 * @file js kernel for fused optimizer steps: Adam/AdamW over contiguous parameter, state and any
 * strided gradient, in one loop, written in place. The arithmetic follows PyTorch's single-tensor
 * Adam op by op, in the tensors' precision: on float32 every operation rounds to float32 as each
 * of PyTorch's float32 tensor ops does (its scalars rounded to float32 once, as PyTorch casts a
 * Python float to the op's compute type); on float64 it is float64 throughout.
 */
import type { Kernel } from '../backend.js';
import type { AdamStepParams, TypedArray } from '../names.js';
import { isContiguous, numel, offsetsOrNull } from '../layout.js';

/**
 * The per-call scalars of an Adam step as PyTorch forms them, in float64: the decoupled decay
 * factor, the L2 coefficient, lr / (1 − β₁ᵗ), 1 − β₁ (the lerp weight) and √(1 − β₂ᵗ).
 */
function adamScalars(o: AdamStepParams): { decay: number; l2: number; stepSize: number; w: number; bc2Sqrt: number } {
  const { lr, beta1, beta2, weightDecay: wd, decoupled, step } = o;
  return { decay: decoupled ? 1 - lr * wd : 1, l2: decoupled ? 0 : wd, stepSize: lr / (1 - beta1 ** step), w: 1 - beta1, bc2Sqrt: Math.sqrt(1 - beta2 ** step) };
}

/**
 * The float32 kernels' scalars, each rounded to float32 once as PyTorch casts a Python float to
 * the op's compute type, in their parameter order: β₂, 1 − β₂, eps, decay, l2, w, 1 − w, stepSize,
 * √(1 − β₂ᵗ) (the js loop and the wasm export take the same list).
 *
 * @example
 * const s = adamScalars32({ lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, decoupled: false, maximize: false, step: 1 });
 * s[7]; // Math.fround(1e-3 / (1 - 0.9))
 */
export function adamScalars32(o: AdamStepParams): [number, number, number, number, number, number, number, number, number] {
  const f = Math.fround;
  const { decay, l2, stepSize, w, bc2Sqrt } = adamScalars(o);
  return [f(o.beta2), f(1 - o.beta2), f(o.eps), f(decay), f(l2), f(w), f(1 - f(w)), f(stepSize), f(bc2Sqrt)];
}

export const adamStep: Kernel<'adamStep', TypedArray> = ([, g, m, v], p, o) => {
  const n = numel(p.shape);
  for (const t of [p, m!, v!]) {
    if (!isContiguous(t.shape, t.strides)) throw new Error('adamStep: parameter and state must be contiguous');
  }
  const pd = p.data;
  const gd = g!.data;
  const md = m!.data;
  const vd = v!.data;
  const [p0, m0, v0] = [p.offset, m!.offset, v!.offset];
  const go = isContiguous(g!.shape, g!.strides) ? null : g!.shape.length === 2 ? new Int32Array(0) : offsetsOrNull(g!);
  const g0 = g!.offset;
  const { beta2, eps, decoupled, maximize } = o;
  const { decay, l2, stepSize, w, bc2Sqrt } = adamScalars(o);
  // a 2-D strided gradient (a weight's, often transposed) is walked by its strides directly
  const two = go !== null && g!.shape.length === 2;
  const cols = two ? g!.shape[1]! : 1;
  const [sr, sc] = two ? [g!.strides[0]!, g!.strides[1]!] : [0, 0];
  if (p.dtype === 'float32') {
    // PyTorch gates the L2 term on the unrounded weight decay, then adds g + f32(wd)·p
    adamLoop32(n, pd, p0, gd, g0, go, two, cols, sr, sc, md, m0, vd, v0, maximize, l2 !== 0, decoupled, ...adamScalars32(o));
    return;
  }
  adamLoop(n, pd, p0, gd, g0, go, two, cols, sr, sc, md, m0, vd, v0, beta2, eps, maximize, l2, decoupled, decay, w, stepSize, bc2Sqrt);
};

/**
 * The float64 update loop on its own, over primitives and typed arrays. Inside the kernel above it ran at
 * up to ~90 ns/element in a QAT training step, whose optimizer mixes 2-D weights with 3-D per-group
 * scales (the kernel's optimized code kept being thrown away): tiny-Llama QAT step, 68 Adam calls,
 * 115 → 16 ms (per-kernel timing of that step; the step itself: npm run bench -- --sections llama).
 */
function adamLoop(
  n: number, pd: TypedArray, p0: number, gd: TypedArray, g0: number, go: Int32Array | null, two: boolean, cols: number, sr: number, sc: number,
  md: TypedArray, m0: number, vd: TypedArray, v0: number, beta2: number, eps: number, maximize: boolean, l2: number, decoupled: boolean, decay: number,
  w: number, stepSize: number, bc2Sqrt: number,
): void {
  for (let i = 0, r = 0, c = 0; i < n; i++) {
    let gi = gd[go === null ? g0 + i : two ? g0 + r * sr + c * sc : go[i]!]!;
    if (two && ++c === cols) {
      c = 0;
      r++;
    }
    if (maximize) gi = -gi;
    let pi = pd[p0 + i]!;
    if (l2) gi += l2 * pi;
    if (decoupled) pi *= decay;
    // m ← lerp(m, g, 1 − β₁), evaluated as PyTorch's lerp does for either side of w = 0.5
    const mi = w < 0.5 ? md[m0 + i]! + (gi - md[m0 + i]!) * w : gi - (gi - md[m0 + i]!) * (1 - w);
    const vi = vd[v0 + i]! * beta2 + (1 - beta2) * gi * gi;
    md[m0 + i] = mi;
    vd[v0 + i] = vi;
    pd[p0 + i] = pi - (stepSize * md[m0 + i]!) / (Math.sqrt(vd[v0 + i]!) / bc2Sqrt + eps);
  }
}

/**
 * The float32 update loop: adamLoop's operations in its order, each rounded to float32 (an f64
 * operation on float32 operands rounded once is the float32 operation for + − × ÷ √). No fused
 * multiply-add: PyTorch's vectorized CPU loops fuse the L2 add and lerp (vec::fmadd), its scalar
 * loops do not, so PyTorch itself may differ from this by an ulp there. The scalars arrive rounded.
 * A separate function from adamLoop so that each stays monomorphic in its array types.
 */
function adamLoop32(
  n: number, pd: TypedArray, p0: number, gd: TypedArray, g0: number, go: Int32Array | null, two: boolean, cols: number, sr: number, sc: number,
  md: TypedArray, m0: number, vd: TypedArray, v0: number, maximize: boolean, useL2: boolean, decoupled: boolean,
  beta2: number, oneMinusBeta2: number, eps: number, decay: number, l2: number, w: number, oneMinusW: number, stepSize: number, bc2Sqrt: number,
): void {
  const f = Math.fround;
  const low = w < 0.5;
  for (let i = 0, r = 0, c = 0; i < n; i++) {
    let gi = gd[go === null ? g0 + i : two ? g0 + r * sr + c * sc : go[i]!]!;
    if (two && ++c === cols) {
      c = 0;
      r++;
    }
    if (maximize) gi = -gi;
    let pi = pd[p0 + i]!;
    if (useL2) gi = f(gi + f(l2 * pi));
    if (decoupled) pi = f(pi * decay);
    const mo = md[m0 + i]!;
    const mi = low ? f(mo + f(f(gi - mo) * w)) : f(gi - f(f(gi - mo) * oneMinusW));
    // addcmul: v·β₂ + ((1 − β₂)·g)·g
    const vi = f(f(vd[v0 + i]! * beta2) + f(f(oneMinusBeta2 * gi) * gi));
    md[m0 + i] = mi;
    vd[v0 + i] = vi;
    // addcdiv with value −stepSize: p + ((−stepSize)·m)/denom, which is p − (stepSize·m)/denom exactly
    pd[p0 + i] = f(pi - f(f(stepSize * mi) / f(f(f(Math.sqrt(vi)) / bc2Sqrt) + eps)));
  }
}
