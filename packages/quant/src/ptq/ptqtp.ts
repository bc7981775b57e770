/**
 * @file PTQTP (methods-2.md §13): a weight as two ternary planes, Ŵ = diag(α¹)T¹ + diag(α²)T²
 * with one (α¹, α²) per row and group of inputs, fitted without data by alternating exact
 * minimisation of ‖w − α₁t¹ − α₂t²‖² + λ‖α‖² per row-group: α by the 2×2 ridge system, then each
 * element's (t¹, t²) among the 9 pairs. Init, λ, group and stopping are the note's proposal (the
 * paper's code is unreleased). `TritPlaneLinear` stores the planes packed and runs them through
 * the packed kernel; `ptq(…, { method: 'ptqtp' })` installs it (ptq.ts).
 */
import { fromTypedArray, isGradEnabled, keep, linear, noGrad, packedLinear, tensor, type PackedWeight, type Tensor } from '@qgrad/core';
import { Module } from '@qgrad/nn';
import { packCodes, unpackCodes } from '../qat/pack.js';

/** Options of `tritPlanes`. */
export interface TritPlaneOptions {
  /** Inputs per (α¹, α²) pair along each row (default 128, or the row length when shorter); must divide it. */
  groupSize?: number;
  /** Ridge weight as a fraction of trace(AᵀA) of each row-group's initial planes, then fixed (default 1e−6; 0: plain least squares). */
  lambda?: number;
  /** At most this many alternations (default 50). */
  maxIters?: number;
  /** A row-group stops once its objective improves by less than this fraction (default 1e−4). */
  tol?: number;
}

/** Two ternary planes with their scales: Ŵ[r, j] = scale1[r, g]·t1[r, j] + scale2[r, g]·t2[r, j], g = ⌊j / groupSize⌋. */
export interface TritPlanes {
  outFeatures: number;
  inFeatures: number;
  groupSize: number;
  /** Codes in {−1, 0, 1}, row-major [out, in]. */
  t1: Int8Array;
  t2: Int8Array;
  /** Row-major [out, in / groupSize]. */
  scale1: Float64Array;
  scale2: Float64Array;
  /** ‖W − Ŵ‖²_F after the initialisation and after each alternation (non-increasing when λ = 0). */
  errors: number[];
  /** The regularised objective Σ‖w − Aα‖² + λ‖α‖² at the same points (non-increasing for any λ). */
  objectives: number[];
}

/** The 9 (t¹, t²) pairs. */
const PAIRS: readonly [number, number][] = [-1, 0, 1].flatMap((a) => [-1, 0, 1].map((b): [number, number] => [a, b]));

/**
 * argmin over α of ‖w − t1·α1 − t2·α2‖² + λ‖α‖² (a pseudo-inverse where AᵀA + λI is singular);
 * also returns trace(AᵀA). λ = null: λ_rel·trace, fixed by the caller from then on (a λ that
 * followed the planes would let the objective rise when they change).
 */
function solveScales(w: Float64Array, t1: Int8Array, t2: Int8Array, lo: number, hi: number, lambda: number): [number, number, number] {
  let m11 = 0, m12 = 0, m22 = 0, b1 = 0, b2 = 0;
  for (let j = lo; j < hi; j++) {
    m11 += t1[j]! * t1[j]!;
    m12 += t1[j]! * t2[j]!;
    m22 += t2[j]! * t2[j]!;
    b1 += t1[j]! * w[j]!;
    b2 += t2[j]! * w[j]!;
  }
  const a = m11 + lambda, d = m22 + lambda;
  const tr = a + d;
  const det = a * d - m12 * m12;
  if (tr === 0) return [0, 0, 0];
  if (det > 1e-12 * tr * tr) return [(d * b1 - m12 * b2) / det, (a * b2 - m12 * b1) / det, m11 + m22];
  // rank one: M = s·uuᵀ, pinv(M) = M / s², with s = tr(M)
  return [(a * b1 + m12 * b2) / (tr * tr), (m12 * b1 + d * b2) / (tr * tr), m11 + m22];
}

/** Absmean ternarisation (BitNet b1.58) of w[lo, hi) into t: γ = mean|w|, t = clamp(round(w/γ), −1, 1). */
function absmeanTernary(w: ArrayLike<number>, t: Int8Array, lo: number, hi: number): number {
  let s = 0;
  for (let j = lo; j < hi; j++) s += Math.abs(w[j]!);
  const gamma = s / (hi - lo);
  for (let j = lo; j < hi; j++) t[j] = gamma === 0 ? 0 : Math.max(-1, Math.min(1, Math.round(w[j]! / gamma)));
  return gamma;
}

/**
 * Fits two trit-planes to W [out, in] (float; computed in float64): per row-group, T¹ is the absmean
 * ternarisation of w and T² that of the residual w − γT¹; then α ← ridge solve and (t¹, t²) ←
 * the nearest of the 9 pairs, alternately, until the objective stops improving. Each half-step
 * minimises the objective exactly, so it never increases.
 * @example const p = tritPlanes(layer.weight, { groupSize: 64 }); p.errors; // non-increasing
 */
export function tritPlanes(weight: Tensor, o: TritPlaneOptions = {}): TritPlanes {
  if (weight.ndim !== 2) throw new Error(`tritPlanes: expected a weight matrix [out, in], got shape [${weight.shape.join(', ')}]`);
  const [rows, cols] = weight.shape as [number, number];
  const g = o.groupSize ?? (cols % 128 === 0 ? 128 : cols < 128 ? cols : 0);
  if (!(Number.isInteger(g) && g >= 1 && cols % g === 0)) throw new Error(`tritPlanes: group size ${o.groupSize ?? 128} must divide the ${cols} inputs of the weight [${rows}, ${cols}]; pass groupSize`);
  const lambda = o.lambda ?? 1e-6;
  const maxIters = o.maxIters ?? 50;
  const tol = o.tol ?? 1e-4;
  const w = Float64Array.from(noGrad(() => weight.to('float64').contiguous().dataSync()));
  const n = rows * cols;
  const t1 = new Int8Array(n), t2 = new Int8Array(n);
  const groups = n / g;
  const s1 = new Float64Array(groups), s2 = new Float64Array(groups);
  const err = new Float64Array(groups), obj = new Float64Array(groups);
  const lam = new Float64Array(groups);
  const residual = new Float64Array(g);
  const measure = (k: number) => {
    let e = 0;
    for (let j = k * g; j < (k + 1) * g; j++) e += (w[j]! - s1[k]! * t1[j]! - s2[k]! * t2[j]!) ** 2;
    err[k] = e;
    obj[k] = e + lam[k]! * (s1[k]! ** 2 + s2[k]! ** 2);
  };
  const scales = (k: number) => {
    [s1[k], s2[k]] = solveScales(w, t1, t2, k * g, (k + 1) * g, lam[k]!);
  };
  for (let k = 0; k < groups; k++) {
    const gamma = absmeanTernary(w, t1, k * g, (k + 1) * g);
    for (let j = 0; j < g; j++) residual[j] = w[k * g + j]! - gamma * t1[k * g + j]!;
    absmeanTernary(residual, t2.subarray(k * g, (k + 1) * g), 0, g);
    lam[k] = lambda * solveScales(w, t1, t2, k * g, (k + 1) * g, 0)[2];
    scales(k);
    measure(k);
  }
  const sum = (a: Float64Array) => a.reduce((x, y) => x + y, 0);
  const errors = [sum(err)], objectives = [sum(obj)];
  const active = new Uint8Array(groups).fill(1);
  for (let it = 0; it < maxIters && active.some((x) => x); it++) {
    for (let k = 0; k < groups; k++) {
      if (!active[k]) continue;
      const before = obj[k]!;
      const [a1, a2] = [s1[k]!, s2[k]!];
      for (let j = k * g; j < (k + 1) * g; j++) {
        let best = Infinity;
        for (const [p, q] of PAIRS) {
          const e = Math.abs(w[j]! - a1 * p - a2 * q);
          if (e < best) [best, t1[j], t2[j]] = [e, p, q];
        }
      }
      scales(k);
      measure(k);
      if (before - obj[k]! <= tol * before) active[k] = 0;
    }
    errors.push(sum(err));
    objectives.push(sum(obj));
  }
  return { outFeatures: rows, inFeatures: cols, groupSize: g, t1, t2, scale1: s1, scale2: s2, errors, objectives };
}

/**
 * The dense Ŵ [out, in] of two trit-planes, in `dtype`.
 * @example const w = tritPlaneWeight(tritPlanes(layer.weight)); // ≈ layer.weight
 */
export function tritPlaneWeight(p: TritPlanes, dtype: 'float32' | 'float64' = 'float32'): Tensor {
  const n = p.outFeatures * p.inFeatures;
  const out = dtype === 'float64' ? new Float64Array(n) : new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const k = Math.floor(i / p.groupSize);
    out[i] = p.scale1[k]! * p.t1[i]! + p.scale2[k]! * p.t2[i]!;
  }
  return fromTypedArray(out, [p.outFeatures, p.inFeatures], dtype);
}

/**
 * A Linear whose weight is two packed ternary planes (2-bit fields, four per byte) with float
 * scales per row-group: y = packed(x; T¹, α¹) + packed(x; T², α²) + b, two calls of the packed
 * kernel (additions inside each plane). Under grad (an input that requires it) it runs the dense
 * Ŵ instead, since the packed kernel has no backward. Buffers: plane1, plane2 (uint8), scale1,
 * scale2 ([out, in / groupSize], the weight's dtype), bias.
 * @example const l = new TritPlaneLinear(tritPlanes(linear.weight), linear.bias); l.forward(x);
 */
export class TritPlaneLinear extends Module {
  plane1: Tensor;
  plane2: Tensor;
  scale1: Tensor;
  scale2: Tensor;
  bias: Tensor | null;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly groupSize: number;
  #packed: [PackedWeight, PackedWeight] | null = null;

  constructor(p: TritPlanes, bias: Tensor | null = null, dtype: 'float32' | 'float64' = 'float32') {
    super();
    [this.outFeatures, this.inFeatures, this.groupSize] = [p.outFeatures, p.inFeatures, p.groupSize];
    const shape = [p.outFeatures, p.inFeatures / p.groupSize];
    const codes = (t: Int8Array) => keep(packCodes(fromTypedArray(Int32Array.from(t), [t.length], 'int32'), -1, 2));
    const scale = (s: Float64Array) => keep(fromTypedArray(dtype === 'float64' ? Float64Array.from(s) : Float32Array.from(s), shape, dtype));
    this.plane1 = this.registerBuffer('plane1', codes(p.t1));
    this.plane2 = this.registerBuffer('plane2', codes(p.t2));
    this.scale1 = this.registerBuffer('scale1', scale(p.scale1));
    this.scale2 = this.registerBuffer('scale2', scale(p.scale2));
    this.bias = this.registerBuffer('bias', bias ? keep(noGrad(() => bias.detach().clone())) : null);
  }

  /** The planes' codes back as int8 [out, in] each. */
  planes(): [Int8Array, Int8Array] {
    const n = this.outFeatures * this.inFeatures;
    return [Int8Array.from(unpackCodes(this.plane1, n, -1, 2)), Int8Array.from(unpackCodes(this.plane2, n, -1, 2))];
  }

  /** The dense Ŵ [out, in] in the scales' dtype. */
  weight(): Tensor {
    const [t1, t2] = this.planes();
    const dtype = this.scale1.dtype === 'float64' ? 'float64' : 'float32';
    return tritPlaneWeight({ outFeatures: this.outFeatures, inFeatures: this.inFeatures, groupSize: this.groupSize, t1, t2, scale1: Float64Array.from(this.scale1.dataSync()), scale2: Float64Array.from(this.scale2.dataSync()), errors: [], objectives: [] }, dtype);
  }

  forward(x: Tensor): Tensor {
    if (isGradEnabled() && x.requiresGrad) return linear(x, this.weight().to(x.dtype), this.bias);
    const [p1, p2] = this.#weights(x.dtype);
    return noGrad(() => packedLinear(x, p1).add(packedLinear(x, p2, this.bias)));
  }

  #weights(dtype: Tensor['dtype']): [PackedWeight, PackedWeight] {
    if (this.#packed && this.#packed[0].levels.dtype === dtype) return this.#packed;
    // field f holds code f − 1: levels −1, 0, 1 and an unused 2
    const levels = keep(tensor([-1, 0, 1, 2], { dtype }));
    const make = (codes: Tensor, scale: Tensor): PackedWeight => ({
      codes, bits: 2, levels, scale: keep(scale.reshape([-1]).to(dtype)), zeroPoint: null, outFeatures: this.outFeatures, inFeatures: this.inFeatures, groupSize: this.groupSize,
    });
    this.#packed = [make(this.plane1, this.scale1), make(this.plane2, this.scale2)];
    return this.#packed;
  }

  override extraRepr(): string {
    return `inFeatures=${this.inFeatures}, outFeatures=${this.outFeatures}, groupSize=${this.groupSize}, planes=2, bias=${this.bias !== null}`;
  }
}
