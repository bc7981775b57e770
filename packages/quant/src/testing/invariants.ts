/**
 * @file Invariant checkers for quantizers, for users' quantizers as much as qgrad's: output on the
 * grid, idempotence, error within half a step inside the range, monotonicity, estimator gradient
 * semantics, and the scale gradient against finite differences away from rounding ties. Each
 * throws an Error naming the first offending element.
 */
import { gradOf, noGrad, type Tensor } from '@qgrad/core';

type Quantizer = (x: Tensor) => Tensor;
const vals = (t: Tensor) => Array.from(t.dataSync());

/**
 * Every output is one of `levels` (within `tol`), or satisfies the predicate.
 * @example assertOnGrid(myTernary(x), [-s, 0, s]);
 */
export function assertOnGrid(y: Tensor, levels: number[] | ((v: number) => boolean), tol = 1e-9): void {
  const ok = typeof levels === 'function' ? levels : (v: number) => levels.some((l) => Math.abs(l - v) <= tol * Math.max(1, Math.abs(l)));
  vals(y).forEach((v, i) => {
    if (!ok(v)) throw new Error(`assertOnGrid: element ${i} = ${v} is not on the grid`);
  });
}

/**
 * Q(Q(x)) = Q(x) exactly (use a quantizer with fixed scales).
 * @example checkIdempotent((x) => myQuantizer(x, fixedScale), randn([64]));
 */
export function checkIdempotent(q: Quantizer, x: Tensor): void {
  const y = noGrad(() => q(x));
  const yy = noGrad(() => q(y));
  const a = vals(y);
  vals(yy).forEach((v, i) => {
    if (!Object.is(v, a[i]) && v !== a[i]) throw new Error(`checkIdempotent: element ${i}: Q(x) = ${a[i]} but Q(Q(x)) = ${v}`);
  });
}

/**
 * |x − Q(x)| ≤ step/2 wherever lo ≤ x ≤ hi (step, lo, hi per element or scalar).
 * @example checkHalfStepError((x) => myQuantizer(x, 0.1), randn([64]), 0.1, -0.8, 0.7);
 */
export function checkHalfStepError(q: Quantizer, x: Tensor, step: number | ((i: number, x: number) => number), lo = -Infinity, hi = Infinity, tol = 1e-9): void {
  const xs = vals(x);
  const ys = vals(noGrad(() => q(x)));
  xs.forEach((v, i) => {
    if (v < lo || v > hi) return;
    const s = typeof step === 'number' ? step : step(i, v);
    if (Math.abs(v - ys[i]!) > s / 2 + tol * Math.max(1, Math.abs(v))) throw new Error(`checkHalfStepError: element ${i}: |x − Q(x)| = |${v} − ${ys[i]}| exceeds half a step (${s / 2})`);
  });
}

/**
 * Q is non-decreasing: x_i ≤ x_j ⇒ Q(x)_i ≤ Q(x)_j (an elementwise quantizer with one scale).
 * @example checkMonotone((x) => myQuantizer(x, 0.1), randn([64]));
 */
export function checkMonotone(q: Quantizer, x: Tensor): void {
  const xs = vals(x);
  const ys = vals(noGrad(() => q(x)));
  const order = xs.map((_, i) => i).sort((a, b) => xs[a]! - xs[b]!);
  for (let k = 1; k < order.length; k++) {
    const [i, j] = [order[k - 1]!, order[k]!];
    if (ys[j]! < ys[i]!) throw new Error(`checkMonotone: x = ${xs[i]} ≤ ${xs[j]} but Q gives ${ys[i]} > ${ys[j]}`);
  }
}

/**
 * The x-gradient of Σ v·Q(x) equals v·M for the estimator's mask M: 'ste' (M = 1),
 * 'clipped-ste' (M = 1[lo ≤ x ≤ hi]) or 'trust' (M = 1[|Q(x) − x| ≤ radius]).
 * @example checkEstimatorGradient((x) => myQuantizer(x, 0.1), x, randn([64]), 'clipped-ste', { lo: -0.8, hi: 0.7 });
 */
export function checkEstimatorGradient(q: Quantizer, x: Tensor, v: Tensor, kind: 'ste' | 'clipped-ste' | 'trust', opts: { lo?: number; hi?: number; radius?: number } = {}): void {
  const leaf = x.detach().requiresGrad_();
  const y = q(leaf);
  const [g] = gradOf([y.mul(v).sum()], [leaf]);
  const xs = vals(x);
  const ys = vals(y);
  const vs = vals(v);
  vals(g!).forEach((gv, i) => {
    const m = kind === 'ste' ? 1 : kind === 'clipped-ste' ? +(xs[i]! >= (opts.lo ?? -Infinity) && xs[i]! <= (opts.hi ?? Infinity)) : +(Math.abs(ys[i]! - xs[i]!) <= (opts.radius ?? Infinity));
    if (gv !== vs[i]! * m) throw new Error(`checkEstimatorGradient(${kind}): element ${i} (x = ${xs[i]}): gradient ${gv}, expected ${vs[i]! * m}`);
  });
}

/**
 * The scale gradient of Σ v·fq(x, s) against central differences in s. 'exact' compares with the
 * difference quotient itself (quantizers that differentiate their forward); 'lsq' with the
 * difference quotient minus the straight-through term Σ_inside v·x/s (LSQ's R(u) − u =
 * (R(u) − z) − x/s), `inside` meaning |x − x̂| ≤ step/2. Elements within `eps`-perturbation of a
 * rounding tie make the finite difference meaningless: then the check is skipped (returns false).
 * @example checkScaleGradient((x, s) => myLsqQuantizer(x, s), x, scale, randn(x.shape), 'exact');
 */
export function checkScaleGradient(fq: (x: Tensor, s: Tensor) => Tensor, x: Tensor, s: Tensor, v: Tensor, mode: 'exact' | 'lsq', opts: { eps?: number; rtol?: number; atol?: number } = {}): boolean {
  const eps = opts.eps ?? 1e-7;
  const sl = s.detach().requiresGrad_();
  const y = fq(x, sl);
  const [gs] = gradOf([y.mul(v).sum()], [sl]);
  const f = (d: number) => noGrad(() => fq(x, s.detach().add(d)).mul(v).sum().item());
  const yp = vals(noGrad(() => fq(x, s.detach().add(eps))));
  const ym = vals(noGrad(() => fq(x, s.detach().sub(eps))));
  const y0 = vals(y);
  // a jump between s − eps and s + eps much larger than the smooth change means a tie was crossed
  const sv = s.numel() === 1 ? s.item() : NaN;
  for (let i = 0; i < y0.length; i++) if (Math.abs(yp[i]! - ym[i]!) > 1e3 * eps * Math.max(1, Math.abs(y0[i]!) / (sv || 1))) return false;
  let numeric = (f(eps) - f(-eps)) / (2 * eps);
  if (mode === 'lsq') {
    if (s.numel() !== 1) throw new Error('checkScaleGradient: lsq mode needs a single (per-tensor) scale');
    const xs = vals(x);
    const vs = vals(v);
    xs.forEach((xv, i) => {
      if (Math.abs(xv - y0[i]!) <= sv / 2 + 1e-12) numeric -= (vs[i]! * xv) / sv;
    });
  }
  const analytic = gs!.sum().item();
  const tol = (opts.atol ?? 1e-5) + (opts.rtol ?? 1e-4) * Math.abs(numeric);
  if (!(Math.abs(analytic - numeric) <= tol)) throw new Error(`checkScaleGradient(${mode}): analytic ${analytic}, finite differences ${numeric}`);
  return true;
}

/**
 * |x − Q(x)| ≤ half the gap between the two levels around x (times its scale), for x within the
 * outer levels: the nearest-level property of any grid. `levels` are sorted, in x units (scale
 * already applied), one set for all elements or one per element (`levelsAt(i)`).
 * @example checkLocalGapError((x) => myNf4(x, 1), randn([64]), NF4_LEVELS);
 */
export function checkLocalGapError(q: Quantizer, x: Tensor, levels: ArrayLike<number> | ((i: number) => ArrayLike<number>), tol = 1e-9): void {
  const xs = vals(x);
  const ys = vals(noGrad(() => q(x)));
  xs.forEach((v, i) => {
    const l = typeof levels === 'function' ? levels(i) : levels;
    if (!(v >= l[0]! && v <= l[l.length - 1]!)) return;
    let k = 0;
    while (k < l.length - 2 && l[k + 1]! <= v) k++;
    const half = (l[k + 1]! - l[k]!) / 2;
    if (Math.abs(v - ys[i]!) > half + tol * Math.max(1, Math.abs(v))) throw new Error(`checkLocalGapError: element ${i}: |x − Q(x)| = |${v} − ${ys[i]}| exceeds half the local gap ${half}`);
  });
}

/**
 * decode(encode(v)) = v for on-grid values (a grid's code round trip), and codes are integers in range.
 * @example checkCodeRoundTrip(myEncode, myDecode, onGridValues, [-8, 7]);
 */
export function checkCodeRoundTrip(encode: (v: Tensor) => Tensor, decode: (c: Tensor) => Tensor, v: Tensor, range?: [number, number]): void {
  const c = encode(v);
  const back = vals(decode(c));
  const cs = vals(c);
  vals(v).forEach((x, i) => {
    if (!Number.isInteger(cs[i]!) || (range && (cs[i]! < range[0] || cs[i]! > range[1]))) throw new Error(`checkCodeRoundTrip: element ${i}: code ${cs[i]} is not an integer in ${range?.join('…') ?? 'range'}`);
    if (back[i] !== x && !(x === 0 && back[i] === 0)) throw new Error(`checkCodeRoundTrip: element ${i}: ${x} encodes to ${cs[i]}, which decodes to ${back[i]}`);
  });
}
