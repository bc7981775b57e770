/**
 * @file js kernel for fused optimizer steps: Adam/AdamW over contiguous parameter, state and any
 * strided gradient, in one loop, written in place. The arithmetic follows PyTorch's (non-fused)
 * Adam op by op; intermediates stay in float64 and each tensor rounds once on store.
 */
import type { Kernel } from '../backend.js';
import type { TypedArray } from '../names.js';
import { isContiguous, numel, offsetsOrNull } from '../layout.js';

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
  const { lr, beta1, beta2, eps, weightDecay: wd, decoupled, maximize, step } = o;
  const bc1 = 1 - beta1 ** step;
  const bc2Sqrt = Math.sqrt(1 - beta2 ** step);
  const decay = decoupled ? 1 - lr * wd : 1;
  const l2 = decoupled ? 0 : wd;
  const stepSize = lr / bc1;
  const w = 1 - beta1;
  // a 2-D strided gradient (a weight's, often transposed) is walked by its strides directly
  const two = go !== null && g!.shape.length === 2;
  const cols = two ? g!.shape[1]! : 1;
  const [sr, sc] = two ? [g!.strides[0]!, g!.strides[1]!] : [0, 0];
  adamLoop(n, pd, p0, gd, g0, go, two, cols, sr, sc, md, m0, vd, v0, beta2, eps, maximize, l2, decoupled, decay, w, stepSize, bc2Sqrt);
};

/**
 * The update loop on its own, over primitives and typed arrays. Inside the kernel above it ran at
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
