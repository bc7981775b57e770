/**
 * @file QuantizerSpec: grid + granularity + scale init + learnable + estimator + optional
 * Hadamard rotation, and the functions that apply one: `initQuantParams`, `fakeQuant` (QAT
 * forward with gradients) and `quantize` (integer codes and scales for export).
 */
import { fakeQuantize, hadamard, noGrad, tensor, type EstimatorOptions, type Tensor } from '@qgrad/core';
import { fpLimits, fpValues, roundToFp, type FpFormat, type FpFormatName } from './fp.js';
import { toGroups, type Granularity } from './granularity.js';
import { binary, intRange } from './int.js';
import { nearestIndex, quantizeToLevels, topHalfGap, withEstimator } from './levels.js';
import { mxQuantize } from './mx.js';
import { NF4_LEVELS } from './nf4.js';
import { initScale, rne, type GridExtent, type ScaleInit } from './scale-init.js';

export type GridSpec =
  | { kind: 'int'; bits: number; signed?: boolean; narrow?: boolean }
  | { kind: 'fp'; format: FpFormatName | FpFormat }
  | { kind: 'mx'; element?: FpFormatName | FpFormat | 'int8'; blockSize?: number }
  | { kind: 'nf4'; blockSize?: number }
  | { kind: 'ternary' }
  | { kind: 'binary' }
  | { kind: 'codebook'; levels: number[] | Tensor };

export interface QuantizerSpec {
  grid: GridSpec;
  /** Which elements share a scale (default 'tensor'; NF4 defaults to groups of 64). */
  granularity?: Granularity;
  /** How scales are initialised from data (default per grid: absmax, minmax for unsigned, absmean for ternary/binary). */
  scaleInit?: ScaleInit;
  /** The caller owns learnable scale tensors (pass them as `params`); switches the default estimator to 'lsq'. */
  learnable?: boolean;
  /** Gradient estimator name (default 'lsq' when learnable, else 'ste'). */
  estimator?: string;
  estimatorOptions?: EstimatorOptions;
  /** Scale-gradient factor for learnable scales: a number or 'lsq' (1/√(N·Qp)). */
  gradScale?: number | 'lsq';
  rounding?: 'halfEven' | 'halfAway';
  /** Rotate by a block Hadamard transform along the last axis first (QuEST); rotate back after (default). */
  hadamard?: { blockSize?: number; rotateBack?: boolean };
}

export interface QuantParams {
  /** Shaped like the grouped view with its last dim 1 (see granularity.ts). */
  scale: Tensor;
  zeroPoint?: Tensor;
}

/** Grid facts the initialisers and quantizers need. */
function extent(grid: GridSpec, rounding: 'halfEven' | 'halfAway' = 'halfEven'): GridExtent & { levels?: number[] } {
  const R = (v: number) => (rounding === 'halfAway' ? Math.sign(v) * Math.floor(Math.abs(v) + 0.5) : rne(v));
  switch (grid.kind) {
    case 'int': {
      const { qmin, qmax } = intRange(grid.bits, grid);
      return { qmin, qmax, bits: grid.bits, affine: true, snap: (u) => Math.min(Math.max(R(u), qmin), qmax) };
    }
    case 'ternary':
      return { qmin: -1, qmax: 1, bits: 1.585, affine: true, snap: (u) => Math.min(Math.max(R(u), -1), 1) };
    case 'binary':
      return { qmin: -1, qmax: 1, bits: 1, affine: false, snap: (u) => (u >= 0 ? 1 : -1) };
    case 'fp': {
      const v = fpValues(grid.format);
      return { qmin: v[0]!, qmax: v[v.length - 1]!, affine: false, levels: v, snap: (u) => nearest(v, u) };
    }
    case 'nf4':
    case 'codebook': {
      const v = grid.kind === 'nf4' ? [...NF4_LEVELS] : Array.isArray(grid.levels) ? grid.levels : Array.from(grid.levels.data);
      return { qmin: Math.min(...v), qmax: Math.max(...v), affine: false, levels: v, snap: (u) => nearest(v, u) };
    }
    case 'mx':
      throw new Error('mx grids carry their own power-of-two block scales; they take no scale init');
    default: {
      const never: never = grid;
      throw new Error(`unknown grid ${JSON.stringify(never)}`);
    }
  }
}

function nearest(levels: number[], u: number): number {
  let best = levels[0]!;
  for (const l of levels) if (Math.abs(l - u) < Math.abs(best - u)) best = l;
  return best;
}

function defaultInit(grid: GridSpec): ScaleInit {
  if (grid.kind === 'int') return grid.signed === false ? 'minmax' : 'absmax';
  if (grid.kind === 'ternary' || grid.kind === 'binary') return 'absmean';
  return 'absmax';
}

function granularityOf(spec: QuantizerSpec): Granularity {
  return spec.granularity ?? (spec.grid.kind === 'nf4' ? { group: spec.grid.blockSize ?? 64 } : 'tensor');
}

function rotate(x: Tensor, spec: QuantizerSpec): Tensor {
  return spec.hadamard ? hadamard(x, { blockSize: spec.hadamard.blockSize }) : x;
}

/**
 * Data-derived scale (and zero point) for x under `spec`, detached; make them learnable with
 * `.requiresGrad_()` and pass them back to `fakeQuant` as `params`.
 */
export function initQuantParams(x: Tensor, spec: QuantizerSpec): QuantParams {
  if (spec.grid.kind === 'mx') throw new Error('initQuantParams: mx grids carry their own power-of-two block scales');
  return noGrad(() => initScale(toGroups(rotate(x, spec), granularityOf(spec)).view, spec.scaleInit ?? defaultInit(spec.grid), extent(spec.grid, spec.rounding)));
}

function checkParams(view: Tensor, p: QuantParams): void {
  const want = [...view.shape.slice(0, -1), 1];
  const ok = (t: Tensor) => t.numel() === 1 || t.shape.join() === want.join();
  if (!ok(p.scale) || (p.zeroPoint && !ok(p.zeroPoint))) {
    throw new Error(`fakeQuant: params of shape [${p.scale.shape.join(', ')}] do not fit the grouped view [${view.shape.join(', ')}]; expected [${want.join(', ')}] (initQuantParams makes them)`);
  }
}

/**
 * Fake-quantizes x under `spec` (QAT forward): rotation, grouping, scales (from `params`, else
 * initialised from x and detached), the grid, the estimator's gradients, and back.
 * @example fakeQuant(w, { grid: { kind: 'int', bits: 4 }, granularity: { channel: 0 } });
 */
export function fakeQuant(x: Tensor, spec: QuantizerSpec, params?: QuantParams): Tensor {
  const grid = spec.grid;
  const estimator = spec.estimator ?? (spec.learnable ? 'lsq' : 'ste');
  const eo = spec.estimatorOptions ?? {};
  const xr = rotate(x, spec);
  let out: Tensor;
  if (grid.kind === 'mx') {
    out = mxQuantize(xr, { element: grid.element, blockSize: grid.blockSize, rounding: spec.rounding, estimator });
  } else {
    const g = toGroups(xr, granularityOf(spec));
    const p = params ?? initQuantParams(x, spec);
    checkParams(g.view, p);
    const ext = extent(grid, spec.rounding);
    const s = p.scale;
    let y: Tensor;
    if (grid.kind === 'int' || grid.kind === 'ternary') {
      y = fakeQuantize(g.view, s, p.zeroPoint ?? 0, { qmin: ext.qmin, qmax: ext.qmax, estimator, rounding: spec.rounding, gradScale: spec.gradScale, ...eo });
    } else if (grid.kind === 'binary') {
      y = binary(g.view, s, { estimator: spec.estimator, ...eo });
    } else if (grid.kind === 'fp') {
      const { max } = fpLimits(grid.format);
      const sd = s.detach();
      const hard = roundToFp(g.view.div(sd), grid.format, spec.rounding).mul(sd);
      y = withEstimator(g.view, hard, { lo: sd.mul(-max), hi: sd.mul(max), radius: sd.mul(topHalfGap(ext.levels!)), levels: undefined }, estimator, eo);
    } else {
      y = quantizeToLevels(g.view.div(s), tensor(ext.levels!, { dtype: x.dtype }), { estimator, ...eo }).mul(s);
    }
    out = g.restore(y);
  }
  return spec.hadamard && spec.hadamard.rotateBack !== false ? hadamard(out, { blockSize: spec.hadamard.blockSize }) : out;
}

export interface Quantized {
  /** int32 integer codes (int/ternary/binary), level indices (nf4/codebook) or element values in scale units (fp). */
  codes: Tensor;
  scale: Tensor;
  zeroPoint: Tensor;
  /** Back to real values (in the rotated basis when the spec rotates). */
  dequantize(): Tensor;
}

/**
 * Quantizes x for storage/export under `spec` (no gradient): codes plus the scales that map them
 * back; `dequantize()` equals `fakeQuant`'s forward (before any rotation back).
 */
export function quantize(x: Tensor, spec: QuantizerSpec, params?: QuantParams): Quantized {
  const grid = spec.grid;
  if (grid.kind === 'mx') throw new Error('quantize: mx grids are fake-quantized with mxQuantize (their block exponents come from mxSharedExponent)');
  return noGrad(() => {
    const g = toGroups(rotate(x, spec), granularityOf(spec));
    const p = params ?? initQuantParams(x, spec);
    checkParams(g.view, p);
    const s = p.scale.detach();
    const z = (p.zeroPoint ?? s.mul(0)).detach();
    const ext = extent(grid, spec.rounding);
    let codes: Tensor;
    let deq: (c: Tensor) => Tensor;
    if (grid.kind === 'int' || grid.kind === 'ternary') {
      const u = g.view.div(s).add(z.round().clamp(ext.qmin, ext.qmax));
      const r = spec.rounding === 'halfAway' ? u.sign().mul(u.abs().add(0.5).floor()) : u.round();
      codes = r.clamp(ext.qmin, ext.qmax).to('int32');
      deq = (c) => c.to(s.dtype).sub(z.round().clamp(ext.qmin, ext.qmax)).mul(s);
    } else if (grid.kind === 'binary') {
      codes = g.view.ge(0).to('int32').mul(2).sub(1);
      deq = (c) => c.to(s.dtype).mul(s);
    } else if (grid.kind === 'fp') {
      codes = roundToFp(g.view.div(s), grid.format, spec.rounding);
      deq = (c) => c.mul(s);
    } else {
      const lv = tensor(ext.levels!, { dtype: s.dtype });
      codes = nearestIndex(g.view.div(s), lv);
      deq = (c) => lv.reshape([1, -1]).expand([c.numel(), lv.numel()]).gather(1, c.reshape([-1, 1]).to('int32')).reshape(c.shape).mul(s);
    }
    return { codes: g.restore(codes), scale: s, zeroPoint: z, dequantize: () => g.restore(deq(codes)) };
  });
}
