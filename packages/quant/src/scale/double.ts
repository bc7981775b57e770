/**
 * @file QLoRA's double quantization of scales: the per-block scales (NF4's absmaxes, one per 64
 * weights) minus their mean, quantized in blocks of 256 to FP8 E4M3 with one float scale per
 * block — 8 + 32/256 bits per scale instead of 32 (≈ 0.127 bit per weight at blocks of 64).
 * The quantizer's forward and convert's layers both rebuild the scales with `doubleScaleValues`,
 * so they agree bit for bit.
 */
import { fromTypedArray, type Tensor } from '@qgrad/core';
import { fpGrid } from '../grids/fp.js';
import type { FloatDType } from '../grids/grid.js';
import { MIN_STEP } from './rules.js';

/** Scales per second-level block. */
export const DOUBLE_BLOCK = 256;
const E4M3 = fpGrid('e4m3', 'e4m3fn');

/** Scales quantized once more (QLoRA's double quantization): FP8 codes, one float scale per block of 256, and the mean. */
export interface DoubleScale {
  /** E4M3 codes of (scale − mean)/second, shaped like the scales (uint8). */
  codes: Tensor;
  /** One float scale per block of 256 scales (flattened order), [⌈n/256⌉]. */
  second: Tensor;
  /** The mean subtracted first, [1]. */
  mean: Tensor;
}

/**
 * The scales that `d` stands for: decode(code)·second + mean, at least MIN_STEP, shaped like `d.codes`, in `dtype`.
 * @example const scales = doubleScaleValues(doubleQuantizeScales(absmax), 'float32');
 */
export function doubleScaleValues(d: DoubleScale, dtype: FloatDType): Tensor {
  const v = E4M3.decode(d.codes.to('int32'), 'float64').dataSync();
  const ss = d.second.dataSync();
  const mean = d.mean.dataSync()[0]!;
  const out = dtype === 'float64' ? new Float64Array(v.length) : new Float32Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = Math.max(v[i]! * ss[Math.floor(i / DOUBLE_BLOCK)]! + mean, MIN_STEP);
  return fromTypedArray(out, [...d.codes.shape], dtype);
}

/**
 * Double-quantizes positive scales (any shape, flattened order): mean m, per block of 256 the
 * absmax of s − m over E4M3's 448 as the second-level scale, codes of the snapped quotients.
 * @example const d = doubleQuantizeScales(absmaxes); doubleScaleValues(d, 'float32'); // ≈ absmaxes
 */
export function doubleQuantizeScales(scale: Tensor): DoubleScale {
  const dtype = (scale.dtype === 'float64' ? 'float64' : 'float32') as FloatDType;
  const round = dtype === 'float32' ? Math.fround : (v: number) => v;
  const c = scale.dataSync();
  const n = c.length;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += c[i]!;
  const mean = round(sum / n);
  const blocks = Math.ceil(n / DOUBLE_BLOCK);
  const second = new Float64Array(blocks);
  for (let b = 0; b < blocks; b++) {
    let m = 0;
    for (let i = b * DOUBLE_BLOCK; i < Math.min(n, (b + 1) * DOUBLE_BLOCK); i++) m = Math.max(m, Math.abs(c[i]! - mean));
    second[b] = round(m > 0 ? m / E4M3.hi : 1);
  }
  const u = new Float64Array(n);
  for (let i = 0; i < n; i++) u[i] = (c[i]! - mean) / second[Math.floor(i / DOUBLE_BLOCK)]!;
  const codes = E4M3.encode(E4M3.snap(fromTypedArray(u, [...scale.shape], 'float64'))).to('uint8');
  const t = (a: Float64Array, shape: number[]) => fromTypedArray(dtype === 'float64' ? a : Float32Array.from(a), shape, dtype);
  return { codes, second: t(second, [blocks]), mean: t(Float64Array.of(mean), [1]) };
}
