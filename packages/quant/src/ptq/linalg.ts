/**
 * @file Small dense float64 linear algebra on row-major arrays for PTQ: Cholesky factors and the
 * upper Cholesky factor of an inverse (GPTQ's `chol(H⁻¹)`). Not a tensor library: n ≤ a few thousand.
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
