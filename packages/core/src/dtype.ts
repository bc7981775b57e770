/**
 * @file dtype rules: type promotion between tensors and scalars (PyTorch's, restricted to the
 * dtypes qgrad has) and the result dtypes of each op family.
 */
import { isFloat, type DType } from '@qgrad/kernels';

const RANK: Record<DType, number> = { uint8: 0, int8: 0, int32: 1, float32: 2, float64: 3 };

/** Result dtype of a binary op between two tensors. int8 ⊕ uint8 gives int32 (PyTorch: int16). */
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
