/**
 * @file Truncated SVD for LoRA initialisation (LoftQ / LQ-LoRA, LoQT's projections): the top-r
 * singular triplets of a small dense matrix in float64 on the CPU, via the Gram matrix of its
 * shorter side and cyclic Jacobi. Not a general linear-algebra routine (core has none, by design).
 */
import { symmetricEigen } from '../ptq/linalg.js';

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
  const { values, vectors: vecs } = symmetricEigen(g, n);
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
