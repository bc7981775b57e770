/**
 * @file GPTQ's core (methods-2.md §1) on float64 arrays: the layer Hessian H = (2/n)·XᵀX from
 * calibration rows, and the column-by-column quantization with error feedback through the upper
 * Cholesky factor of H⁻¹ (dead inputs, damping, act-order). The grid is a callback, so every grid of
 * the vocabulary works; ptq.ts wires it to a layer's WeightQuantizer.
 */
import { choleskyInverse, cholesky, upperCholesky } from './linalg.js';

/**
 * Accumulates GPTQ's Hessian H = (2/n)·Σ x xᵀ over calibration rows, batch by batch, as the
 * reference does (H ← H·n/(n+m) + (2/(n+m))·XᵀX); its scale does not matter (damping is relative).
 * @example const h = new HessianAccumulator(64); h.add(x, 128); h.h; // Float64Array(64·64)
 */
export class HessianAccumulator {
  readonly h: Float64Array;
  rows = 0;
  constructor(readonly n: number) {
    this.h = new Float64Array(n * n);
  }
  /** Adds `m` rows of `n` features (row-major). */
  add(x: ArrayLike<number>, m: number): void {
    const { n, h } = this;
    const total = this.rows + m;
    const keep = this.rows / total;
    for (let i = 0; i < h.length; i++) h[i]! *= keep;
    const f = 2 / total;
    for (let r = 0; r < m; r++) {
      const o = r * n;
      for (let i = 0; i < n; i++) {
        const xi = x[o + i]! * f;
        if (xi === 0) continue;
        for (let j = 0; j <= i; j++) h[i * n + j]! += xi * x[o + j]!;
      }
    }
    this.rows = total;
  }
  /** The full symmetric matrix (add() fills the lower triangle). */
  symmetric(): Float64Array {
    const { n } = this;
    const s = Float64Array.from(this.h);
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) s[j * n + i] = s[i * n + j]!;
    return s;
  }
}

/** Options of GPTQ: the damping added to the Hessian's diagonal, act-order, and the layer's name for errors. */
export interface GptqOptions {
  /** Damping λ = percDamp·mean(diag H) added to the diagonal (default 0.01). */
  percDamp?: number;
  /** Quantize columns in order of decreasing diag(H) (default false). */
  actOrder?: boolean;
  /** Names the layer in errors. */
  who?: string;
}

/** What GPTQ did to one weight: the quantized weight and the bookkeeping loss Σ (w − q)²/U_ii²/2. */
export interface GptqResult {
  q: Float64Array;
  loss: number;
  /** Column order used (identity unless act-order). */
  order: number[];
}

/**
 * Quantizes W [rows, cols] (row-major) given its Hessian H [cols, cols]: for each column i (in
 * act-order if asked) q = Q(w_i, i), err = (w_i − q)/U_ii and the later columns move by
 * −err·U_i,k. `quantizeColumn(values, j)` rounds column j (original index) onto the grid. The
 * reference's lazy block update is the same arithmetic reordered, so columns are updated at once.
 * @example const { q } = gptq(w, out, inp, h.symmetric(), (c, j) => c.map(Math.round), { actOrder: true });
 */
export function gptq(w: ArrayLike<number>, rows: number, cols: number, hIn: ArrayLike<number>, quantizeColumn: (values: Float64Array, column: number) => ArrayLike<number>, o: GptqOptions = {}): GptqResult {
  const who = o.who ?? 'gptq';
  if (hIn.length !== cols * cols) throw new Error(`${who}: Hessian has ${hIn.length} entries, expected ${cols}² = ${cols * cols}`);
  const h = Float64Array.from(hIn);
  const wk = Float64Array.from(w);
  // dead inputs (never active in calibration): no information, so the column is zeroed
  for (let j = 0; j < cols; j++) {
    if (h[j * cols + j] === 0) {
      h[j * cols + j] = 1;
      for (let r = 0; r < rows; r++) wk[r * cols + j] = 0;
    }
  }
  const order = Array.from({ length: cols }, (_, j) => j);
  if (o.actOrder) order.sort((a, b) => h[b * cols + b]! - h[a * cols + a]! || a - b);
  // permuted copies: P W, P H Pᵀ
  const n = cols;
  const hp = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) hp[i * n + j] = h[order[i]! * n + order[j]!]!;
  let meanDiag = 0;
  for (let i = 0; i < n; i++) meanDiag += hp[i * n + i]!;
  meanDiag /= n;
  const damp = (o.percDamp ?? 0.01) * meanDiag;
  for (let i = 0; i < n; i++) hp[i * n + i]! += damp;
  const u = upperCholesky(choleskyInverse(cholesky(hp, n, who), n), n, who);
  // working copy in permuted column order, column-major for the per-column loop
  const wc = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++) for (let i = 0; i < n; i++) wc[i * rows + r] = wk[r * cols + order[i]!]!;
  const q = new Float64Array(rows * cols);
  const err = new Float64Array(rows);
  let loss = 0;
  for (let i = 0; i < n; i++) {
    const col = wc.subarray(i * rows, (i + 1) * rows);
    const qc = quantizeColumn(Float64Array.from(col), order[i]!);
    const d = u[i * n + i]!;
    for (let r = 0; r < rows; r++) {
      const e = col[r]! - qc[r]!;
      q[r * cols + order[i]!] = qc[r]!;
      loss += (e * e) / (d * d) / 2;
      err[r] = e / d;
    }
    for (let k = i + 1; k < n; k++) {
      const uik = u[i * n + k]!;
      if (uik === 0) continue;
      const ck = k * rows;
      for (let r = 0; r < rows; r++) wc[ck + r]! -= err[r]! * uik;
    }
  }
  return { q, loss, order };
}
