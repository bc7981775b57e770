/**
 * @file MX-style block formats (OCP Microscaling): blocks of 32 along the last axis share a
 * power-of-two scale 2^X, X = ⌊log2 max|x|⌋ − emax_elem clamped to [−127, 127] (E8M0), and each
 * element is rounded onto an FP (E2M1, E4M3, E5M2 …) or MX-INT8 grid with saturation.
 */
import { amax, floor, log, noGrad, pow, where, eq, type Tensor } from '@qgrad/core';
import { fpFormat, fpLimits, roundToFp, type FpFormat, type FpFormatName } from './fp.js';
import { withEstimator } from './levels.js';

export interface MxOptions {
  /** Element format: an FP format or 'int8' (fixed point k/64, |k| ≤ 127). Default 'e2m1' (MXFP4). */
  element?: FpFormatName | FpFormat | 'int8';
  blockSize?: number;
  rounding?: 'halfEven' | 'halfAway';
  estimator?: string;
}

/** The shared block exponents X (shape [..., n/blockSize, 1]) of x's last axis. */
export function mxSharedExponent(x: Tensor, opts: MxOptions = {}): Tensor {
  const b = opts.blockSize ?? 32;
  const n = x.shape[x.ndim - 1]!;
  if (x.ndim === 0 || n % b !== 0) throw new Error(`mx: last dim of input [${x.shape.join(', ')}] is not a multiple of blockSize ${b}`);
  const emax = opts.element === 'int8' ? 0 : fpLimits(fpFormat(opts.element ?? 'e2m1')).emax;
  return noGrad(() => {
    const m = amax(x.reshape([...x.shape.slice(0, -1), n / b, b]).abs(), -1, true);
    const e = floor(log(m).div(Math.LN2));
    const p = pow(2, e);
    const fixed = e.add(m.ge(p.mul(2)).to(x.dtype)).sub(m.lt(p).to(x.dtype)); // exact at powers of two
    return where(eq(m, 0), 0, fixed.sub(emax)).clamp(-127, 127); // all-zero blocks: any scale
  });
}

/**
 * MX fake quantization: x̂ = 2^X·Q_elem(x/2^X) per block of 32 along the last axis. Gradient
 * straight-through by default (microxcaling's QAT behaviour).
 * @example mxQuantize(randn([2, 64]), { element: 'e4m3fn' }).shape; // [2, 64]
 */
export function mxQuantize(x: Tensor, opts: MxOptions = {}): Tensor {
  const b = opts.blockSize ?? 32;
  const n = x.shape[x.ndim - 1]!;
  const X = mxSharedExponent(x, opts);
  const y = noGrad(() => {
    const blocks = x.reshape([...x.shape.slice(0, -1), n / b, b]);
    const s = pow(2, X);
    const u = blocks.div(s);
    let q: Tensor;
    if (opts.element === 'int8') {
      const k = opts.rounding === 'halfAway' ? u.mul(64).sign().mul(u.mul(64).abs().add(0.5).floor()) : u.mul(64).round();
      q = k.clamp(-127, 127).div(64);
    } else q = roundToFp(u, fpFormat(opts.element ?? 'e2m1'), opts.rounding);
    return q.mul(s).reshape(x.shape);
  });
  return withEstimator(x, y, { lo: -Infinity, hi: Infinity, radius: Infinity }, opts.estimator ?? 'ste');
}
