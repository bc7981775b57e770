/**
 * @file fast-check arbitraries for property tests of ops and quantizers: shapes, broadcast-
 * compatible shape pairs, tensors of a dtype and value range, and seeds.
 */
import fc from 'fast-check';
import type { DType } from '@qgrad/kernels';
import { ARRAY_TYPES, isFloat } from '@qgrad/kernels';
import { fromTypedArray } from '../ops/creation.js';
import type { Tensor } from '../tensor.js';

/** Bounds on the shapes `arb.shape` draws: rank and the size of each dim. */
export interface ShapeConstraints {
  minRank?: number;
  maxRank?: number;
  minDim?: number;
  maxDim?: number;
}

/**
 * Shapes with rank in [minRank, maxRank] (default 0–3) and dims in [minDim, maxDim] (default 1–4).
 * @example fc.assert(fc.property(arb.shape({ minRank: 1, maxRank: 3 }), (s) => zeros(s).numel() >= 0));
 */
export function shape(c: ShapeConstraints = {}): fc.Arbitrary<number[]> {
  return fc.array(fc.integer({ min: c.minDim ?? 1, max: c.maxDim ?? 4 }), { minLength: c.minRank ?? 0, maxLength: c.maxRank ?? 3 });
}

/**
 * Two shapes that broadcast together: a base shape, with some dims of each side set to 1 and
 * some leading dims dropped.
 * @example fc.assert(fc.property(arb.broadcastShapes(), ([a, b]) => { add(zeros(a), zeros(b)); }));
 */
export function broadcastShapes(c: ShapeConstraints = {}): fc.Arbitrary<[number[], number[]]> {
  return shape(c).chain((base) =>
    fc.tuple(
      fc.array(fc.boolean(), { minLength: base.length, maxLength: base.length }),
      fc.array(fc.boolean(), { minLength: base.length, maxLength: base.length }),
      fc.nat({ max: base.length }),
      fc.nat({ max: base.length }),
    ).map(([ma, mb, da, db]) => {
      const a = base.map((d, i) => (ma[i] ? 1 : d)).slice(da);
      const b = base.map((d, i) => (mb[i] && !ma[i] ? 1 : d)).slice(db);
      return [a, b] as [number[], number[]];
    }),
  );
}

/** What `arb.tensor` draws: the dtype, the value range and whether the tensor requires grad. */
export interface TensorConstraints {
  dtype?: DType;
  min?: number;
  max?: number;
  requiresGrad?: boolean;
}

/**
 * Values for a tensor of `shape`: floats in [min, max] (default [-2, 2]) or integers.
 * @example arb.values(6, { min: 0, max: 1 }); // six floats in [0, 1]
 */
export function values(n: number, c: TensorConstraints = {}): fc.Arbitrary<number[]> {
  const dtype = c.dtype ?? 'float32';
  const min = c.min ?? -2;
  const max = c.max ?? 2;
  const el = isFloat(dtype)
    ? fc.double({ min, max, noNaN: true, noDefaultInfinity: true })
    : fc.integer({ min: Math.ceil(min), max: Math.floor(max) });
  return fc.array(el, { minLength: n, maxLength: n });
}

/**
 * A tensor of the given shape (or a random one) with values in range.
 * @example fc.assert(fc.property(arb.tensorOf([4, 4], { dtype: 'float64' }), (x) => { gradcheck((t) => t.tanh(), [x]); }));
 */
export function tensorOf(shapeArb: number[] | fc.Arbitrary<number[]>, c: TensorConstraints = {}): fc.Arbitrary<Tensor> {
  const sa = Array.isArray(shapeArb) ? fc.constant(shapeArb) : shapeArb;
  const dtype = c.dtype ?? 'float32';
  return sa.chain((s) =>
    values(s.reduce((a, b) => a * b, 1), c).map((v) => fromTypedArray(ARRAY_TYPES[dtype].from(v), s, dtype, c.requiresGrad ?? false)),
  );
}

/**
 * 32-bit seeds for generators.
 * @example fc.assert(fc.property(arb.seed(), (s) => { randn([8], { generator: new Generator(s) }); }));
 */
export function seed(): fc.Arbitrary<number> {
  return fc.integer({ min: 0, max: 0x7fffffff });
}
