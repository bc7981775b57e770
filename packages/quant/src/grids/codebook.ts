/**
 * @file Grid 'codebook': any finite set of levels in scale units (learned offline, e.g. by
 * `kmeansLevels`), nearest-level snapping; and `quantizeToLevels`, the op whose levels are
 * themselves trainable (VQ-style gradient to each chosen level).
 */
import { arange, cast, eq, getEstimator, scalarLike, sum, tensor, unsqueeze, type EstimatorOptions, type Tensor } from '@qgrad/core';
import { levelGrid, LevelSet, type Grid, type GridOptions } from './grid.js';

/**
 * `{ grid: 'codebook', levels }`; `bits`, if given, must equal log2 of the level count.
 * Levels that are duplicates or not finite are errors (in the tensor's dtype: at first use).
 * @example fakeQuant(w, { grid: 'codebook', levels: [-1, -0.3, 0, 0.3, 1] }); // the config form of this grid
 */
export function codebookGrid(o: GridOptions): Grid {
  const levels = o.levels;
  if (!levels || !levels.length) throw new Error("codebook grid: needs 'levels' (e.g. levels: kmeansLevels(w, 16))");
  if (levels.length > 65536) throw new Error(`codebook grid: at most 65536 levels, got ${levels.length}`);
  if (o.bits !== undefined && 2 ** o.bits < levels.length) throw new Error(`codebook grid: ${levels.length} levels do not fit in bits ${o.bits}`);
  const set = new LevelSet('codebook grid', levels);
  return levelGrid('codebook', `codebook${levels.length}`, set, { scaleRule: 'absmax', estimator: 'ste' });
}

/**
 * k levels fitted to the values of `x` by 1-D k-means (Lloyd, from quantiles), divided by the
 * largest |level| so they live in [−1, 1] like NF4's: a codebook for `{ grid: 'codebook' }`.
 * @example kmeansLevels(w, 16).length; // 16
 */
export function kmeansLevels(x: Tensor, k: number, iterations = 25): number[] {
  const v = Float64Array.from(x.contiguous().dataSync()).sort();
  if (v.length < k) throw new Error(`kmeansLevels: ${v.length} values cannot give ${k} distinct levels`);
  let c = Array.from({ length: k }, (_, i) => v[Math.min(v.length - 1, Math.floor(((i + 0.5) / k) * v.length))]!);
  for (let it = 0; it < iterations; it++) {
    const sums = new Float64Array(k);
    const counts = new Float64Array(k);
    let j = 0;
    for (const val of v) {
      while (j < k - 1 && Math.abs(c[j + 1]! - val) <= Math.abs(c[j]! - val)) j++;
      sums[j]! += val;
      counts[j]!++;
    }
    c = c.map((old, i) => (counts[i] ? sums[i]! / counts[i]! : old));
  }
  const m = Math.max(...c.map(Math.abs)) || 1;
  const out = [...new Set(c.map((l) => l / m))].sort((a, b) => a - b);
  if (out.length < k) throw new Error(`kmeansLevels: the values of x give only ${out.length} distinct levels, not ${k}`);
  return out;
}

/**
 * Snaps every element of x to the nearest entry of `levels` (1-D). The forward value is the
 * chosen level; x gets the estimator's gradient (default straight-through) and each level gets
 * the sum of the output gradients of the elements assigned to it (VQ-style codebook gradient).
 * @example quantizeToLevels(tensor([0.1, 0.7]), tensor([0, 0.5, 1])).toArray(); // [0, 0.5]
 */
export function quantizeToLevels(x: Tensor, levels: Tensor | number[], opts: EstimatorOptions & { estimator?: string } = {}): Tensor {
  const l = Array.isArray(levels) ? tensor(levels, { dtype: x.dtype }) : levels;
  if (l.ndim !== 1 || l.numel() === 0) throw new Error(`quantizeToLevels: levels must be a non-empty 1-D tensor, got shape [${l.shape.join(', ')}]`);
  const vals = Array.from(l.dataSync());
  const set = new LevelSet('quantizeToLevels', vals);
  const idx = set.index(x.detach()); // indices into the sorted levels
  const order = vals.map((_, i) => i).sort((a, b) => vals[a]! - vals[b]!);
  const k = vals.length;
  const sortedIdx = tensor(order, { dtype: 'int32' });
  const orig = sortedIdx.gather(0, idx.reshape([-1])).reshape(idx.shape);
  const onehot = cast(eq(unsqueeze(orig, -1), arange(0, k, 1, { dtype: 'int32' })), x.dtype); // [..., K]
  const y = sum(onehot.mul(l), -1); // differentiable in the levels
  const radius = set.topHalfGap;
  const xPart = getEstimator(opts.estimator ?? 'ste').apply(x, scalarLike(1, x.dtype, x), scalarLike(0, x.dtype, x), {
    qmin: -Infinity, qmax: Infinity, rounding: 'halfEven', offset: 'zeroPoint', options: opts, y: y.detach(),
    grid: { lo: set.values[0]!, hi: set.values[k - 1]!, radius, levels: tensor(set.values as number[], { dtype: x.dtype }) },
  });
  return l.requiresGrad ? xPart.add(y.sub(y.detach())) : xPart;
}
