/**
 * @file Small dense float64 linear algebra on row-major arrays for PTQ: Cholesky factors and the
 * upper Cholesky factor of an inverse (GPTQ's `chol(H⁻¹)`), and symmetric eigen-decomposition (LoRA's
 * truncated SVD). Not a tensor library: n ≤ a few thousand.
 */

/**
 * Lower Cholesky factor L of a symmetric positive definite n×n matrix (LLᵀ = A); throws naming the pivot otherwise.
 * @example cholesky([4, 2, 2, 3], 2); // [2, 0, 1, √2]
 */
export function cholesky(a: ArrayLike<number>, n: number, who = 'cholesky'): Float64Array {
  const l = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    let d = a[j * n + j]!;
    for (let k = 0; k < j; k++) d -= l[j * n + k]! ** 2;
    if (!(d > 0)) throw new Error(`${who}: matrix is not positive definite (pivot ${j} is ${d}); raise the damping`);
    const ljj = Math.sqrt(d);
    l[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let s = a[i * n + j]!;
      for (let k = 0; k < j; k++) s -= l[i * n + k]! * l[j * n + k]!;
      l[i * n + j] = s / ljj;
    }
  }
  return l;
}

/**
 * A⁻¹ from A's lower Cholesky factor: (LLᵀ)⁻¹ = L⁻ᵀL⁻¹.
 * @example const aInv = choleskyInverse(cholesky(a, n), n);
 */
export function choleskyInverse(l: Float64Array, n: number): Float64Array {
  // M = L⁻¹ by forward substitution, column by column (M is lower triangular)
  const m = new Float64Array(n * n);
  for (let c = 0; c < n; c++) {
    m[c * n + c] = 1 / l[c * n + c]!;
    for (let i = c + 1; i < n; i++) {
      let s = 0;
      for (let k = c; k < i; k++) s += l[i * n + k]! * m[k * n + c]!;
      m[i * n + c] = -s / l[i * n + i]!;
    }
  }
  const inv = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let k = i; k < n; k++) s += m[k * n + i]! * m[k * n + j]!; // (MᵀM)_ij, M lower: k ≥ max(i, j)
      inv[i * n + j] = s;
      inv[j * n + i] = s;
    }
  }
  return inv;
}

/**
 * Upper factor U with UᵀU = A (the transpose of A's lower Cholesky factor).
 * @example const u = upperCholesky(hessian, n); // GPTQ works down the rows of U
 */
export function upperCholesky(a: ArrayLike<number>, n: number, who?: string): Float64Array {
  const l = cholesky(a, n, who);
  const u = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) u[j * n + i] = l[i * n + j]!;
  return u;
}

/**
 * Eigen-decomposition of a symmetric n×n matrix (row-major) by cyclic Jacobi rotations: the
 * eigenvalues (unsorted) and the eigenvectors as the columns of `vectors`, A = V·diag(λ)·Vᵀ.
 * For small n (LoRA's SVD Gram matrices, a few dozen features); the input is not modified.
 * @example const { values, vectors } = symmetricEigen([2, 1, 1, 2], 2); // values 1 and 3
 */
export function symmetricEigen(input: ArrayLike<number>, n: number): { values: Float64Array; vectors: Float64Array } {
  if (input.length !== n * n) throw new Error(`symmetricEigen: ${input.length} values for a ${n}×${n} matrix`);
  const a = Float64Array.from(input);
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    let diag = 0;
    for (let i = 0; i < n; i++) {
      diag += a[i * n + i]! ** 2;
      for (let j = i + 1; j < n; j++) off += a[i * n + j]! ** 2;
    }
    if (off <= 1e-30 * Math.max(diag, 1e-300)) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q]!;
        if (Math.abs(apq) < 1e-300) continue;
        const app = a[p * n + p]!;
        const aqq = a[q * n + q]!;
        const theta = (aqq - app) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p]!;
          const akq = a[k * n + q]!;
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k]!;
          const aqk = a[q * n + k]!;
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p]!;
          const vkq = v[k * n + q]!;
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) values[i] = a[i * n + i]!;
  return { values, vectors: v };
}
