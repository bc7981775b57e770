/**
 * @file Truncated SVD for LoRA initialisation (LoftQ / LQ-LoRA, LoQT's projections): the top-r
 * singular triplets of a small dense matrix in float64 on the CPU, via the Gram matrix of its
 * shorter side and cyclic Jacobi. Not a general linear-algebra routine (core has none, by design).
 */

/** A truncated SVD u·diag(s)·vᵀ of rank r, row-major. */
export interface LowRank {
  /** rows × r, row-major. */
  u: Float64Array;
  /** r singular values, descending. */
  s: Float64Array;
  /** cols × r, row-major (the right singular vectors as columns). */
  v: Float64Array;
  rank: number;
}

/** Eigen-decomposition of a symmetric n×n matrix (row-major, overwritten) by cyclic Jacobi: eigenvalues and eigenvectors as columns of `vecs`. */
function jacobiEigen(a: Float64Array, n: number): { values: Float64Array; vecs: Float64Array } {
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
  return { values, vecs: v };
}

/**
 * The top-`r` singular triplets of the rows × cols matrix `m` (row-major): m ≈ U·diag(s)·Vᵀ.
 * Directions with a zero singular value come back as zero vectors.
 * @example const { u, s, v } = truncatedSvd(w, 16, 32, 4);
 */
export function truncatedSvd(m: ArrayLike<number>, rows: number, cols: number, r: number): LowRank {
  const rank = Math.min(r, rows, cols);
  const tall = rows > cols; // decompose the Gram matrix of the shorter side
  const n = tall ? cols : rows;
  const g = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      let acc = 0;
      if (tall) for (let k = 0; k < rows; k++) acc += m[k * cols + i]! * m[k * cols + j]!;
      else for (let k = 0; k < cols; k++) acc += m[i * cols + k]! * m[j * cols + k]!;
      g[i * n + j] = acc;
      g[j * n + i] = acc;
    }
  }
  const { values, vecs } = jacobiEigen(g, n);
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => values[b]! - values[a]!);
  const u = new Float64Array(rows * rank);
  const v = new Float64Array(cols * rank);
  const s = new Float64Array(rank);
  const top = Math.sqrt(Math.max(values[order[0]!]!, 0));
  for (let k = 0; k < rank; k++) {
    const e = order[k]!;
    const sigma = Math.sqrt(Math.max(values[e]!, 0));
    if (!(sigma > 1e-12 * top)) continue; // beyond the numerical rank: leave zeros
    s[k] = sigma;
    // the eigenvector is one side's singular vector; the other side is m (or mᵀ) times it over σ
    const [known, kLen, other, oLen] = tall ? [v, cols, u, rows] : [u, rows, v, cols];
    for (let i = 0; i < kLen; i++) known[i * rank + k] = vecs[i * n + e]!;
    for (let i = 0; i < oLen; i++) {
      let acc = 0;
      if (tall) for (let j = 0; j < cols; j++) acc += m[i * cols + j]! * vecs[j * n + e]!;
      else for (let j = 0; j < rows; j++) acc += m[j * cols + i]! * vecs[j * n + e]!;
      other[i * rank + k] = acc / sigma;
    }
  }
  return { u, s, v, rank };
}
