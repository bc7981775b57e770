/**
 * @file dtype rules: type promotion between tensors and scalars (PyTorch's, restricted to the
 * dtypes qgrad has) and the result dtypes of each op family.
 */
import { DTYPES, isFloat, type DType } from '@qgrad/kernels';

// PyTorch spellings a user may reach for, with what to use here instead
const NEAREST: Record<string, string> = {
  float16: 'no half precision: use float32', half: 'no half precision: use float32', bfloat16: 'no half precision: use float32',
  float: "use 'float32'", double: "use 'float64'", int64: 'use int32', long: 'use int32', int: "use 'int32'", int16: 'use int32', bool: 'use uint8',
};

/**
 * Throws a TypeError naming `op`, the value given and the supported dtypes unless `dtype` is
 * one of qgrad's (an unknown one would otherwise fail deep in a kernel or typed-array lookup).
 * @example checkDType('zeros', 'float16'); // TypeError: zeros: unsupported dtype 'float16' …
 */
export function checkDType(op: string, dtype: unknown): asserts dtype is DType {
  if ((DTYPES as readonly unknown[]).includes(dtype)) return;
  const given = typeof dtype === 'string' ? `'${dtype}'` : String(dtype);
  const hint = typeof dtype === 'string' && Object.hasOwn(NEAREST, dtype) ? ` (${NEAREST[dtype]})` : '';
  throw new TypeError(`${op}: unsupported dtype ${given}${hint}; supported dtypes are ${DTYPES.join(', ')}`);
}

const RANK: Record<DType, number> = { uint8: 0, int8: 0, int32: 1, float32: 2, float64: 3 };

/**
 * Result dtype of a binary op between two tensors. int8 ⊕ uint8 gives int32 (PyTorch: int16).
 * @example promoteTypes('int32', 'float32'); // 'float32'
 */
export function promoteTypes(a: DType, b: DType): DType {
  if (a === b) return a;
  const r = Math.max(RANK[a], RANK[b]);
  return r === 3 ? 'float64' : r === 2 ? 'float32' : 'int32';
}

/** dtype a JS number takes next to a tensor of dtype `other` (scalars do not widen tensors). */
export function scalarType(value: number, other: DType): DType {
  if (isFloat(other)) return other;
  return Number.isInteger(value) ? other : 'float32';
}

/** Floating dtype for ops that always produce floats (div, exp, mean …) from `dtype`. */
export function floatType(dtype: DType): DType {
  return isFloat(dtype) ? dtype : 'float32';
}

export { isFloat };
export type { DType };
