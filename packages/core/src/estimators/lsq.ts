/**
 * @file LSQ and LSQ+ (learned step size and offset). Both backward passes run the fused
 * `fakeQuantizeBackward` kernel inside `fakeQuantizeGrad`, a primitive of its own whose backward
 * (the second derivative, in tensor ops) keeps double backward working.
 */
import type { QuantOffset, RoundingMode } from '@qgrad/kernels';
import { contiguousStrides } from '@qgrad/kernels';
import { empty, runKernel } from '../dispatch.js';
import { defineFunction } from '../function.js';
import { isGradEnabled } from '../tape.js';
import { Tensor } from '../tensor.js';
import { add, cast, div, floor, ge, gt, le, logicalAnd, lt, mul, neg, round, sub } from '../ops/elementwise.js';
import { expandView } from '../ops/movement.js';
import type { EstimatorSpec, QuantState } from './estimator.js';

interface GradConfig {
  qmin: number;
  qmax: number;
  rounding: RoundingMode;
  offset: QuantOffset;
  gradFactor: number;
}

/** A view of block `k` of a [3, ...shape] buffer. */
function part(t: Tensor, k: number, shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return new Tensor(t.storage, shape, t.strides.slice(1), t.offset + k * n);
}

/** u (what is rounded), the zero point used, and the in-range / below masks, in tensor ops. */
function regions(x: Tensor, s: Tensor, z: Tensor, c: GradConfig) {
  const zz = c.offset === 'roundedZeroPoint' ? round(z).clamp(c.qmin, c.qmax) : z;
  const u = c.offset === 'beta' ? div(sub(x, zz), s) : add(div(x, s), zz);
  const q = c.rounding === 'floor' ? floor(u) : c.rounding === 'halfAway' ? mul(floor(add(u.abs(), 0.5)), u.sign()) : round(u);
  const inside = cast(logicalAnd(ge(q, c.qmin), le(q, c.qmax)), x.dtype);
  return { u, q, zz, inside, below: cast(lt(q, c.qmin), x.dtype), above: cast(gt(q, c.qmax), x.dtype) };
}

/** Whether `t` (broadcast to x) is one value along x's last axis: a scale per group, channel, token or tensor. */
function sharedAlongLast(t: Tensor): boolean {
  return t.ndim === 0 || t.shape[t.ndim - 1] === 1;
}

/**
 * [dx, dscale, dzeroPoint] of fake quantization (PyTorch's learnable fake-quant formulas; `beta`
 * offsets follow LSQ+). When the scale and zero point are shared along x's last axis (per group,
 * channel, token or tensor) the kernel sums dscale and dzeroPoint per row of that axis as it goes
 * (shape [...rows, 1]); otherwise they come per element. The engine sums either to the scale's shape.
 */
export const fakeQuantizeGrad = defineFunction({
  name: 'fakeQuantizeBackward',
  forward(ctx, x: Tensor, s: Tensor, z: Tensor, g: Tensor, c: GradConfig) {
    ctx.save(x, s, z, g);
    ctx.state = { c };
    const shape = [...x.shape];
    const ins = [x, cast(s, x.dtype), cast(z, x.dtype), cast(g, x.dtype)].map((t) => expandView(t, shape));
    if (x.ndim > 0 && sharedAlongLast(s) && sharedAlongLast(z)) {
      // dx gets its own buffer (it becomes a weight's .grad); the row sums [2, rows] are written
      // into a second one, read through two [...rows, 1] views
      const rowShape = [...shape.slice(0, -1), 1];
      const rows = x.numel() / shape[shape.length - 1]!;
      const sums = empty([2, rows], x.dtype, x, 'fakeQuantizeBackward');
      const dx = runKernel('fakeQuantizeBackward', [...ins, sums], shape, x.dtype, { ...c, rowSums: true });
      const strides = contiguousStrides(rowShape);
      return [dx, new Tensor(sums.storage, rowShape, strides, 0), new Tensor(sums.storage, rowShape, strides, rows)];
    }
    const out = runKernel('fakeQuantizeBackward', ins, [3, ...shape], x.dtype, c);
    // dx of a weight becomes its .grad and outlives the pass: its own buffer lets the backward
    // pass recycle the three-part one (the dscale/dzero parts are summed away at once)
    const dx = part(out, 0, shape);
    return [isGradEnabled() ? dx : dx.clone(), part(out, 1, shape), part(out, 2, shape)];
  },
  // gds and gdz are per element or per row ([...rows, 1]); either broadcasts below
  backward(ctx, gdx, gds, gdz) {
    const [x, s, z, g] = ctx.saved as [Tensor, Tensor, Tensor, Tensor];
    const c = ctx.state.c as GradConfig;
    const { u, q, zz, inside, below, above } = regions(x, s, z, c);
    const beta = c.offset === 'beta';
    const f = c.gradFactor;
    const outside = sub(1, inside);
    // dscale coefficient: inside R(u) − u, below qmin − z (qmin for β), above qmax − z (qmax)
    const lowC = beta ? c.qmin : sub(c.qmin, zz);
    const highC = beta ? c.qmax : sub(c.qmax, zz);
    const coefS = add(mul(inside, sub(q, u)), add(mul(below, lowC), mul(above, highC)));
    const coefZ = mul(outside, beta ? 1 : neg(s));
    // d/dg: dx = g·m, ds = f·g·coefS, dz = f·g·coefZ
    const gg = add(mul(gdx, inside), mul(add(mul(gds, coefS), mul(gdz, coefZ)), f));
    // d/dx: only R(u) − u depends on x: ∂/∂x = −(1/s) inside
    const fg = mul(mul(gds, g), f);
    const gx = neg(div(mul(fg, inside), s));
    // d/ds: inside −∂u/∂s = (u − z)/s (u/s for β); outside dz = −s·g ⇒ −g
    const gs = add(mul(mul(fg, inside), div(beta ? u : sub(u, zz), s)), beta ? 0 : neg(mul(mul(mul(gdz, g), f), outside)));
    // d/dz: zero for a rounded zero point; −1 on the dscale coefficient for a raw one; 1/s inside for β
    let gz: Tensor | null = null;
    if (c.offset === 'zeroPoint') gz = neg(mul(fg, add(inside, add(below, above))));
    else if (beta) gz = div(mul(fg, inside), s);
    return [gx, gs, gz, gg, null];
  },
});

/**
 * LSQ's gradient scale g = 1/√(N·Q_P) for a scale shared by `n` elements on a grid with `qp`
 * positive levels (the one place it is computed; @qgrad/quant's quantizers call it too).
 * @example lsqGradScale(64, 7); // 1/√448
 */
export function lsqGradScale(n: number, qp: number): number {
  if (!(n > 0) || !(qp > 0)) throw new Error(`lsqGradScale: needs N > 0 elements per scale and Q_P > 0 positive levels, got N ${n}, Q_P ${qp}`);
  return 1 / Math.sqrt(n * qp);
}

function lsqBackward(st: QuantState, g: Tensor): [Tensor, Tensor, Tensor] {
  const c: GradConfig = { qmin: st.qmin, qmax: st.qmax, rounding: st.rounding, offset: st.offset, gradFactor: st.options.gradScale ?? 1 };
  if (st.rounding === 'stochastic') throw new Error(`quantize[lsq]: LSQ needs deterministic rounding, got 'stochastic'`);
  return fakeQuantizeGrad(st.x, st.scale, st.zeroPoint, g, c) as [Tensor, Tensor, Tensor];
}

export const lsq: EstimatorSpec = {
  description: "LSQ as torch._fake_quantize_learnable_*: dx = 1[qmin ≤ R(x/s + z) ≤ qmax]; dscale = R(u) − u inside, qmin − z / qmax − z outside; dzero = −s outside; ×gradScale",
  backward(st, g) {
    if (st.grid) throw new Error('quantize[lsq]: LSQ needs an affine integer grid (scale and zero point); this grid is not one');
    return lsqBackward(st, g); // ∂x̂/∂s = R(u) − u inside, bound − z outside; ∂x̂/∂z = −s outside
  },
};

export const lsqPlus: EstimatorSpec = {
  description: 'LSQ+ with a real offset β: x̂ = s·clamp(R((x − β)/s)) + β; dscale = R(u) − u inside, qmin/qmax outside; dβ = 1 outside; ×gradScale',
  offset: 'beta',
  backward(st, g) {
    if (st.grid) throw new Error('quantize[lsq+]: LSQ+ needs an affine integer grid (scale and offset); this grid is not one');
    return lsqBackward(st, g); // ∂x̂/∂s = R(u) − u inside, bound outside; ∂x̂/∂β = 1 outside
  },
};
