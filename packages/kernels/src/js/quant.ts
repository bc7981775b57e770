/**
 * @file js reference kernels for fake quantization onto an integer grid: the forward
 * (`fakeQuantize`) and its fused backward (`fakeQuantizeBackward`, dx and the per-element
 * dscale/dzeroPoint contributions that core reduces). The Hadamard transform is in hadamard.ts.
 */
import type { Kernel, KernelArg } from '../backend.js';
import type { FakeQuantizeParams, RoundingMode, TypedArray } from '../names.js';
import { roundHalfAway, roundHalfEven } from './elementwise.js';
import { numel, offsets } from './layout.js';

type Arg = KernelArg<TypedArray>;

const ROUND: Record<Exclude<RoundingMode, 'stochastic'>, (u: number) => number> = {
  halfEven: roundHalfEven,
  halfAway: roundHalfAway,
  floor: Math.floor,
};

/** One element's grid coordinates: the integer q before clamping and what maps it back. */
interface Coded {
  /** q = R(u), not yet clamped. */
  q: number;
  /** u = x/s + z (or (x − β)/s): what was rounded. */
  u: number;
  /** The zero point actually used (rounded and clamped in `roundedZeroPoint` mode). */
  z: number;
  /** 1/s as the arithmetic sees it. */
  inv: number;
}

/**
 * Float32 tensors are computed with float32 rounding at every step, the way PyTorch's float
 * kernel does (`inv_scale = 1.0f / scale`, then `x * inv_scale`), so results match it bit for bit.
 */
function coder(p: FakeQuantizeParams, f32: boolean) {
  const fr = f32 ? Math.fround : (v: number) => v;
  const round = p.rounding === 'stochastic' ? null : ROUND[p.rounding];
  return (x: number, s: number, z0: number, noise: number): Coded => {
    const inv = fr(1 / s);
    const r = (u: number) => (round ? round(u) : Math.floor(fr(u + noise)));
    if (p.offset === 'beta') {
      const u = fr(fr(x - z0) * inv);
      return { q: r(u), u, z: z0, inv };
    }
    if (p.offset === 'roundedZeroPoint') {
      // PyTorch: z = clamp(nearbyint(z), qmin, qmax); q = z + nearbyint(x · inv_scale)
      const z = Math.min(Math.max(roundHalfEven(z0), p.qmin), p.qmax);
      const v = fr(x * inv);
      return { q: r(v) + z, u: fr(v + z), z, inv };
    }
    const u = fr(fr(x * inv) + z0);
    return { q: r(u), u, z: z0, inv };
  };
}

/** The dequantized value of a clamped integer q. */
function decode(p: FakeQuantizeParams, q: number, s: number, z: number, f32: boolean): number {
  const fr = f32 ? Math.fround : (v: number) => v;
  return p.offset === 'beta' ? fr(fr(q * s) + z) : fr(fr(q - z) * s);
}

function idx(a: Arg, shape: readonly number[]): Int32Array {
  return offsets({ shape, strides: a.strides, offset: a.offset });
}

export const fakeQuantize: Kernel<'fakeQuantize', TypedArray> = (inputs, out, p) => {
  const [x, s, z, noise] = inputs as Arg[];
  const n = numel(out.shape);
  const f32 = out.dtype === 'float32';
  const code = coder(p, f32);
  const [ix, is, iz] = [idx(x!, out.shape), idx(s!, out.shape), idx(z!, out.shape)];
  const inz = noise ? idx(noise, out.shape) : null;
  const od = out.data;
  for (let i = 0; i < n; i++) {
    const sv = s!.data[is[i]!]!;
    const c = code(x!.data[ix[i]!]!, sv, z!.data[iz[i]!]!, inz ? noise!.data[inz[i]!]! : 0);
    const q = Math.min(Math.max(c.q, p.qmin), p.qmax);
    od[out.offset + i] = decode(p, q, sv, c.z, f32);
  }
};

export const fakeQuantizeBackward: Kernel<'fakeQuantizeBackward', TypedArray> = (inputs, out, p) => {
  const [x, s, z, g, noise] = inputs as Arg[];
  const shape = out.shape.slice(1);
  const n = numel(shape);
  const f32 = out.dtype === 'float32';
  const fr = f32 ? Math.fround : (v: number) => v;
  const code = coder(p, f32);
  const [ix, is, iz, ig] = [idx(x!, shape), idx(s!, shape), idx(z!, shape), idx(g!, shape)];
  const inz = noise ? idx(noise, shape) : null;
  const od = out.data;
  const gf = p.gradFactor;
  const beta = p.offset === 'beta';
  for (let i = 0; i < n; i++) {
    const xv = x!.data[ix[i]!]!;
    const sv = s!.data[is[i]!]!;
    const gv = g!.data[ig[i]!]!;
    const c = code(xv, sv, z!.data[iz[i]!]!, inz ? noise!.data[inz[i]!]! : 0);
    const inside = c.q >= p.qmin && c.q <= p.qmax;
    let ds: number;
    let dz: number;
    if (inside) {
      // ∂x̂/∂s = (x̂ − x)/s = R(u) − u; the offset has no effect inside (STE through R)
      ds = fr(fr(gv * fr(decode(p, c.q, sv, c.z, f32) - xv)) * c.inv);
      dz = 0;
    } else {
      // clamped: x̂ = s·(bound − z) (or s·bound + β), so ∂x̂/∂s = bound − z and ∂x̂/∂z = −s (∂x̂/∂β = 1)
      const bound = c.q < p.qmin ? p.qmin : p.qmax;
      ds = fr(gv * (beta ? bound : bound - c.z));
      dz = beta ? gv : fr(fr(-gv) * sv);
    }
    od[out.offset + i] = gv * (inside ? 1 : 0); // −0 where masked, as torch's dy·mask
    od[out.offset + n + i] = fr(ds * gf);
    od[out.offset + 2 * n + i] = fr(dz * gf);
  }
};
