/**
 * @file js reference kernels for fake quantization onto an integer grid: the forward
 * (`fakeQuantize`) and its fused backward (`fakeQuantizeBackward`, dx and the per-element
 * dscale/dzeroPoint contributions that core reduces, or with `rowSums` their sums per row of the
 * last axis). The Hadamard transform is in hadamard.ts.
 */
import type { Kernel, KernelArg } from '../backend.js';
import type { FakeQuantizeParams, RoundingMode, TypedArray } from '../names.js';
import { roundHalfAway, roundHalfEven } from './elementwise.js';
import { contiguousStrides, isContiguous, numel, offsets } from '../layout.js';

type Arg = KernelArg<TypedArray>;

const ROUND: Record<Exclude<RoundingMode, 'stochastic'>, (u: number) => number> = {
  halfEven: roundHalfEven,
  halfAway: roundHalfAway,
  floor: Math.floor,
};

// The loops below are written out without per-element closures or objects: they run once per
// weight and activation every training step, and allocation there dominated QAT step time.

/**
 * Float32 tensors are computed with float32 rounding at every step, the way PyTorch's float
 * kernel does (`inv_scale = 1.0f / scale`, then `x * inv_scale`), so results match it bit for bit.
 */
const identityRound = (v: number) => v;

/** Rounds u (stochastic: floor(u + noise)), in float32 arithmetic when `fr` is Math.fround. */
function roundU(_p: FakeQuantizeParams, round: ((u: number) => number) | null, fr: (v: number) => number, u: number, noise: number): number {
  return round ? round(u) : Math.floor(fr(u + noise));
}

/** The dequantized value of a clamped integer q. */
function decode(beta: boolean, q: number, s: number, z: number, fr: (v: number) => number): number {
  return beta ? fr(fr(q * s) + z) : fr(fr(q - z) * s);
}

function idx(a: Arg, shape: readonly number[]): Int32Array {
  return offsets({ shape, strides: a.strides, offset: a.offset });
}

/**
 * Writes, for element x with scale s, offset z0 and noise, the unclamped integer code into
 * scratch[0] and the zero point actually used into scratch[1] (rounded and clamped in
 * `roundedZeroPoint` mode, as PyTorch: z = clamp(nearbyint(z), qmin, qmax); q = z + R(x·inv)).
 */
function code(p: FakeQuantizeParams, round: ((u: number) => number) | null, fr: (v: number) => number, x: number, inv: number, z0: number, noise: number, scratch: Float64Array): void {
  if (p.offset === 'beta') {
    scratch[0] = roundU(p, round, fr, fr(fr(x - z0) * inv), noise);
    scratch[1] = z0;
  } else if (p.offset === 'roundedZeroPoint') {
    const z = Math.min(Math.max(roundHalfEven(z0), p.qmin), p.qmax);
    scratch[0] = roundU(p, round, fr, fr(x * inv), noise) + z;
    scratch[1] = z;
  } else {
    scratch[0] = roundU(p, round, fr, fr(fr(x * inv) + z0), noise);
    scratch[1] = z0;
  }
}

/** 1.5·2⁵²: adding and subtracting it rounds a double to an integer, ties to even, for |u| < 2⁵¹. */
const RNE = 6755399441055744;

/** Rounds to float32 when computing in float32 (a direct call V8 inlines, unlike a function variable). */
function r32(v: number, f32: boolean): number {
  return f32 ? Math.fround(v) : v;
}

/** Half-to-even rounding keeping the sign of zero, exactly as `roundHalfEven`, without a call chain. */
function rne(u: number): number {
  const r = u + RNE - RNE;
  return r === 0 && (u < 0 || 1 / u < 0) ? -0 : r;
}

/**
 * A broadcast operand (scale, zero point, grad) walked row by row: `rows[r]` is its offset at
 * the start of row r of x (rows = all dims but the last), `step` its stride along the last dim.
 * Per-tensor, per-token, per-channel and per-group scales are all this shape, and it costs
 * one Int32 per row instead of one per element.
 */
function rowWalk(a: Arg, shape: readonly number[]): { rows: Int32Array; step: number } {
  const last = shape.length - 1;
  if (last < 0) return { rows: Int32Array.of(a.offset), step: 0 };
  const rows = offsets({ shape: shape.slice(0, last), strides: a.strides.slice(0, last), offset: a.offset });
  return { rows, step: shape[last] === 1 ? 0 : a.strides[last]! };
}

/**
 * The common case, written out inline: half-even rounding without noise, x contiguous. Same
 * arithmetic as `code`/`decode` above (the golden tests pin both paths to PyTorch); the f32
 * branches are per operation so V8 inlines Math.fround instead of calling through a variable.
 */
function fastForward(x: Arg, s: Arg, z: Arg, out: Arg, p: FakeQuantizeParams): void {
  const shape = out.shape;
  const L = shape.length ? shape[shape.length - 1]! : 1;
  const f32 = out.dtype === 'float32';
  const sw = rowWalk(s, shape);
  const zw = rowWalk(z, shape);
  const [xd, sd, zd, od] = [x.data, s.data, z.data, out.data];
  const { qmin, qmax } = p;
  const mode = p.offset === 'beta' ? 2 : p.offset === 'roundedZeroPoint' ? 1 : 0;
  const nRows = sw.rows.length;
  for (let r = 0; r < nRows; r++) {
    const base = r * L;
    let so = sw.rows[r]!;
    let zo = zw.rows[r]!;
    for (let j = 0; j < L; j++, so += sw.step, zo += zw.step) {
      const sv = sd[so]!;
      let zv = zd[zo]!;
      const inv = f32 ? Math.fround(1 / sv) : 1 / sv;
      const xv = xd[x.offset + base + j]!;
      let q: number;
      if (mode === 0) {
        const t = f32 ? Math.fround(xv * inv) : xv * inv;
        q = rne(f32 ? Math.fround(t + zv) : t + zv);
      } else if (mode === 1) {
        zv = Math.min(Math.max(rne(zv), qmin), qmax);
        q = rne(f32 ? Math.fround(xv * inv) : xv * inv) + zv;
      } else {
        const t = f32 ? Math.fround(xv - zv) : xv - zv;
        q = rne(f32 ? Math.fround(t * inv) : t * inv);
      }
      q = q < qmin ? qmin : q > qmax ? qmax : q;
      let y: number;
      if (mode === 2) {
        const t = f32 ? Math.fround(q * sv) : q * sv;
        y = t + zv;
      } else {
        const t = f32 ? Math.fround(q - zv) : q - zv;
        y = t * sv;
      }
      od[out.offset + base + j] = f32 ? Math.fround(y) : y;
    }
  }
}

function fastBackward(x: Arg, s: Arg, z: Arg, g: Arg, out: Arg, p: FakeQuantizeParams & { gradFactor: number }): void {
  const shape = out.shape.slice(1);
  const n = numel(shape);
  const L = shape.length ? shape[shape.length - 1]! : 1;
  const f32 = out.dtype === 'float32';
  const sw = rowWalk(s, shape);
  const zw = rowWalk(z, shape);
  const gw = rowWalk(g, shape);
  const [xd, sd, zd, gd, od] = [x.data, s.data, z.data, g.data, out.data];
  const { qmin, qmax, gradFactor: gf } = p;
  const mode = p.offset === 'beta' ? 2 : p.offset === 'roundedZeroPoint' ? 1 : 0;
  const o0 = out.offset;
  const nRows = sw.rows.length;
  for (let r = 0; r < nRows; r++) {
    const base = r * L;
    let so = sw.rows[r]!;
    let zo = zw.rows[r]!;
    let go = gw.rows[r]!;
    for (let j = 0; j < L; j++, so += sw.step, zo += zw.step, go += gw.step) {
      const i = base + j;
      const sv = sd[so]!;
      let zv = zd[zo]!;
      const inv = r32(1 / sv, f32);
      const xv = xd[x.offset + i]!;
      const gv = gd[go]!;
      let q: number;
      if (mode === 0) q = rne(r32(r32(xv * inv, f32) + zv, f32));
      else if (mode === 1) {
        zv = Math.min(Math.max(rne(zv), qmin), qmax);
        q = rne(r32(xv * inv, f32)) + zv;
      } else q = rne(r32(r32(xv - zv, f32) * inv, f32));
      let ds: number;
      let dz: number;
      const inside = q >= qmin && q <= qmax;
      if (inside) {
        const xq = mode === 2 ? r32(r32(q * sv, f32) + zv, f32) : r32(r32(q - zv, f32) * sv, f32);
        ds = r32(r32(gv * r32(xq - xv, f32), f32) * inv, f32);
        dz = 0;
      } else {
        const bound = q < qmin ? qmin : qmax;
        ds = r32(gv * (mode === 2 ? bound : bound - zv), f32);
        dz = mode === 2 ? gv : r32(r32(-gv, f32) * sv, f32);
      }
      od[o0 + i] = gv * (inside ? 1 : 0);
      od[o0 + n + i] = r32(ds * gf, f32);
      od[o0 + 2 * n + i] = r32(dz * gf, f32);
    }
  }
}

/** Whether the inline fast path applies (it does not handle NaN scale/zero point specially either way). */
function fast(p: FakeQuantizeParams, x: Arg, noise: Arg | undefined): boolean {
  return p.rounding === 'halfEven' && !noise && isContiguous(x.shape, x.strides);
}

/**
 * `absmaxScale`: writes s = max(max|x|, min)/divisor per row of the last axis into the scale input
 * (as the absmax reduction, a maximum and a division compute it: NaN propagates, each step rounded
 * to the dtype), before the row is quantized with it.
 */
function absmaxScales(x: Arg, s: Arg, shape: readonly number[], f32: boolean, p: { divisor: number; min: number }): void {
  const n = numel(shape);
  const L = shape.length ? shape[shape.length - 1]! : 1;
  const R = L ? n / L : 0;
  if (L > 1 && s.strides[s.strides.length - 1] !== 0) throw new Error('fakeQuantize: absmaxScale needs a scale broadcast along the last axis of x, one per row');
  const ix = idx(x, shape);
  const lo = r32(p.min, f32);
  const div = r32(p.divisor, f32);
  const rows = rowWalk(s, shape).rows;
  if (R > 1 && rows[0] === rows[1]) throw new Error('fakeQuantize: absmaxScale writes one scale per row of x; the scale input is shared between rows');
  for (let r = 0; r < R; r++) {
    let m = 0;
    for (let j = 0; j < L; j++) {
      const v = Math.abs(x.data[ix[r * L + j]!]!);
      if (v !== v) {
        m = NaN;
        break;
      }
      if (v > m) m = v;
    }
    s.data[rows[r]!] = r32((m !== m ? NaN : m > lo ? m : lo) / div, f32);
  }
}

export const fakeQuantize: Kernel<'fakeQuantize', TypedArray> = (inputs, out, p) => {
  const [x, s, z, noise] = inputs as Arg[];
  if (p.absmaxScale) absmaxScales(x!, s!, out.shape, out.dtype === 'float32', p.absmaxScale);
  if (fast(p, x!, noise)) return fastForward(x!, s!, z!, out, p);
  const n = numel(out.shape);
  const fr = out.dtype === 'float32' ? Math.fround : identityRound;
  const round = p.rounding === 'stochastic' ? null : ROUND[p.rounding];
  const beta = p.offset === 'beta';
  const [ix, is, iz] = [idx(x!, out.shape), idx(s!, out.shape), idx(z!, out.shape)];
  const inz = noise ? idx(noise, out.shape) : null;
  const [xd, sd, zd, od] = [x!.data, s!.data, z!.data, out.data];
  const scratch = new Float64Array(2);
  for (let i = 0; i < n; i++) {
    const sv = sd[is[i]!]!;
    code(p, round, fr, xd[ix[i]!]!, fr(1 / sv), zd[iz[i]!]!, inz ? noise!.data[inz[i]!]! : 0, scratch);
    const q = Math.min(Math.max(scratch[0]!, p.qmin), p.qmax);
    od[out.offset + i] = decode(beta, q, sv, scratch[1]!, fr);
  }
};

/**
 * The one summation order of `rowSums` (wasm sums the same way in f32x4 / f64x2 lanes): the row's
 * first ⌊L/W⌋·W terms into W running sums by j mod W (W = 4 for float32, 2 for float64), those
 * combined as (a0 + a2) + (a1 + a3) (or a0 + a1), then the tail terms in order, every add rounded
 * to the dtype; the total times the grad factor is rounded once.
 */
function rowSum(d: ArrayLike<number>, at: number, L: number, f32: boolean, gradFactor: number): number {
  const W = f32 ? 4 : 2;
  const m = L - (L % W);
  const acc = [0, 0, 0, 0];
  for (let j = 0; j < m; j++) acc[j % W] = r32(acc[j % W]! + d[at + j]!, f32);
  let sum = f32 ? r32(r32(acc[0]! + acc[2]!, true) + r32(acc[1]! + acc[3]!, true), true) : acc[0]! + acc[1]!;
  for (let j = m; j < L; j++) sum = r32(sum + d[at + j]!, f32);
  return r32(sum * gradFactor, f32);
}

/**
 * `rowSums`: the [3, …] form computed at grad factor 1 (the same per-element terms, unscaled), dx
 * copied into out (x's shape) and each row's dscale and dzeroPoint terms summed by `rowSum` into
 * sums [2, rows].
 */
function rowSumsBackward(inputs: readonly Arg[], out: Arg, p: FakeQuantizeParams & { gradFactor: number }): void {
  const [x, s, z, g, sums] = inputs as Arg[];
  if (inputs.length !== 5 || p.rounding === 'stochastic') throw new Error('fakeQuantizeBackward: rowSums takes inputs [x, scale, zeroPoint, grad, sums] and deterministic rounding');
  const shape = out.shape;
  const n = numel(shape);
  const L = shape.length ? shape[shape.length - 1]! : 1;
  const R = L ? n / L : 0;
  if (numel(sums!.shape) !== 2 * R || !isContiguous(sums!.shape, sums!.strides)) throw new Error(`fakeQuantizeBackward: rowSums needs contiguous sums of 2·${R} elements, got shape [${sums!.shape.join(', ')}]`);
  const f32 = out.dtype === 'float32';
  const planes: Arg = { data: f32 ? new Float32Array(3 * n) : new Float64Array(3 * n), dtype: out.dtype, shape: [3, ...shape], strides: [n, ...contiguousStrides(shape)], offset: 0 };
  fakeQuantizeBackward([x!, s!, z!, g!], planes, { ...p, gradFactor: 1, rowSums: false });
  const io = idx(out, shape);
  const d = planes.data;
  for (let i = 0; i < n; i++) out.data[io[i]!] = d[i]!;
  for (let r = 0; r < R; r++) {
    sums!.data[sums!.offset + r] = rowSum(d, n + r * L, L, f32, p.gradFactor);
    sums!.data[sums!.offset + R + r] = rowSum(d, 2 * n + r * L, L, f32, p.gradFactor);
  }
}

export const fakeQuantizeBackward: Kernel<'fakeQuantizeBackward', TypedArray> = (inputs, out, p) => {
  if (p.rowSums) return rowSumsBackward(inputs as Arg[], out, p);
  const [x, s, z, g, noise] = inputs as Arg[];
  if (fast(p, x!, noise)) return fastBackward(x!, s!, z!, g!, out, p);
  const shape = out.shape.slice(1);
  const n = numel(shape);
  const fr = out.dtype === 'float32' ? Math.fround : identityRound;
  const round = p.rounding === 'stochastic' ? null : ROUND[p.rounding];
  const [ix, is, iz, ig] = [idx(x!, shape), idx(s!, shape), idx(z!, shape), idx(g!, shape)];
  const inz = noise ? idx(noise, shape) : null;
  const [xd, sd, zd, gd, od] = [x!.data, s!.data, z!.data, g!.data, out.data];
  const gf = p.gradFactor;
  const beta = p.offset === 'beta';
  const scratch = new Float64Array(2);
  for (let i = 0; i < n; i++) {
    const xv = xd[ix[i]!]!;
    const sv = sd[is[i]!]!;
    const gv = gd[ig[i]!]!;
    const inv = fr(1 / sv);
    code(p, round, fr, xv, inv, zd[iz[i]!]!, inz ? noise!.data[inz[i]!]! : 0, scratch);
    const q = scratch[0]!;
    const zu = scratch[1]!;
    const inside = q >= p.qmin && q <= p.qmax;
    let ds: number;
    let dz: number;
    if (inside) {
      // ∂x̂/∂s = (x̂ − x)/s = R(u) − u; the offset has no effect inside (STE through R)
      ds = fr(fr(gv * fr(decode(beta, q, sv, zu, fr) - xv)) * inv);
      dz = 0;
    } else {
      // clamped: x̂ = s·(bound − z) (or s·bound + β), so ∂x̂/∂s = bound − z and ∂x̂/∂z = −s (∂x̂/∂β = 1)
      const bound = q < p.qmin ? p.qmin : p.qmax;
      ds = fr(gv * (beta ? bound : bound - zu));
      dz = beta ? gv : fr(fr(-gv) * sv);
    }
    od[out.offset + i] = gv * (inside ? 1 : 0); // −0 where masked, as torch's dy·mask
    od[out.offset + n + i] = fr(ds * gf);
    od[out.offset + 2 * n + i] = fr(dz * gf);
  }
};
