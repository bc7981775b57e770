/**
 * @file js reference kernels for the fused row-wise primitives: softmax / log-softmax along any
 * axis and their backward, RMS and layer normalisation over the last axis and their backward.
 * Row statistics accumulate in float64 (JS numbers); results round once on store.
 */
import type { Kernel, KernelArg } from '../backend.js';
import type { TypedArray } from '../names.js';
import { numel, offsets } from '../layout.js';

type Arg = KernelArg<TypedArray>;

/**
 * Start offsets of every line along `axis` (the axis dim set to size 1) for each argument, with
 * the element stride along the axis; `out` is contiguous.
 */
function lines(axis: number, args: readonly Arg[], out: Arg): { starts: Int32Array[]; steps: number[]; n: number } {
  const n = out.shape[axis] ?? 1;
  const shape = out.shape.map((s, d) => (d === axis ? 1 : s));
  const all = [...args, out];
  return {
    starts: all.map((a) => offsets({ shape, strides: a.strides, offset: a.offset })),
    steps: all.map((a) => (a.shape.length ? a.strides[axis]! : 0)),
    n,
  };
}

export const softmax: Kernel<'softmax', TypedArray> = ([x, bias], out, { axis, log }) => {
  if (numel(out.shape) === 0) return;
  // an optional bias (broadcast to x) is added first, rounded to x's dtype as a separate add would be
  const withBias = bias !== undefined;
  const { starts, steps, n } = lines(axis, withBias ? [x!, bias] : [x!], out);
  // lines lists the arguments first and out last
  const [xs, bs, os] = withBias ? starts : [starts[0], undefined, starts[1]];
  const [sx, sb, so] = withBias ? steps : [steps[0], 0, steps[1]];
  const xd = x!.data;
  const bd = withBias ? bias.data : xd;
  const od = out.data;
  const row = new Float64Array(n);
  const round = xd instanceof Float32Array ? Math.fround : (v: number) => v;
  for (let r = 0; r < xs!.length; r++) {
    const px = xs![r]!;
    const po = os![r]!;
    for (let i = 0; i < n; i++) row[i] = withBias ? round(xd[px + i * sx!]! + bd[bs![r]! + i * sb!]!) : xd[px + i * sx!]!;
    let m = -Infinity;
    for (let i = 0; i < n; i++) m = Math.max(m, row[i]!);
    let s = 0;
    for (let i = 0; i < n; i++) s += Math.exp(row[i]! - m);
    if (log) {
      const c = m + Math.log(s);
      for (let i = 0; i < n; i++) od[po + i * so!] = row[i]! - c;
    } else {
      for (let i = 0; i < n; i++) od[po + i * so!] = Math.exp(row[i]! - m) / s;
    }
  }
};

export const softmaxBackward: Kernel<'softmaxBackward', TypedArray> = ([y, g], out, { axis, log }) => {
  if (numel(out.shape) === 0) return;
  const { starts: [ys, gs, os], steps: [sy, sg, so], n } = lines(axis, [y!, g!], out);
  const yd = y!.data;
  const gd = g!.data;
  const od = out.data;
  for (let r = 0; r < ys!.length; r++) {
    const [py, pg, po] = [ys![r]!, gs![r]!, os![r]!];
    let s = 0;
    if (log) for (let i = 0; i < n; i++) s += gd[pg + i * sg!]!;
    else for (let i = 0; i < n; i++) s += gd[pg + i * sg!]! * yd[py + i * sy!]!;
    for (let i = 0; i < n; i++) {
      const yi = yd[py + i * sy!]!;
      const gi = gd[pg + i * sg!]!;
      od[po + i * so!] = log ? gi - Math.exp(yi) * s : yi * (gi - s);
    }
  }
};

/** Mean (0 for rms) and 1/√(variance or mean square + eps) of one row. */
function rowStats(d: TypedArray, p: number, step: number, n: number, layer: boolean, eps: number): [number, number] {
  let mu = 0;
  if (layer) {
    for (let i = 0; i < n; i++) mu += d[p + i * step]!;
    mu /= n;
  }
  let v = 0;
  for (let i = 0; i < n; i++) {
    const c = d[p + i * step]! - mu;
    v += c * c;
  }
  return [mu, 1 / Math.sqrt(v / n + eps)];
}

export const norm: Kernel<'norm', TypedArray> = ([x, w], out, { kind, eps }) => {
  if (numel(out.shape) === 0) return;
  const axis = out.shape.length - 1;
  const { starts: [xs, os], steps: [sx, so], n } = lines(axis, [x!], out);
  const xd = x!.data;
  const od = out.data;
  // an affine weight multiplies the normalised value rounded to the dtype, as a separate mul would
  const round = xd instanceof Float32Array ? Math.fround : (v: number) => v;
  for (let r = 0; r < xs!.length; r++) {
    const [px, po] = [xs![r]!, os![r]!];
    const [mu, rstd] = rowStats(xd, px, sx!, n, kind === 'layer', eps);
    if (w) for (let i = 0; i < n; i++) od[po + i * so!] = round((xd[px + i * sx!]! - mu) * rstd) * w.data[w.offset + i * w.strides[0]!]!;
    else for (let i = 0; i < n; i++) od[po + i * so!] = (xd[px + i * sx!]! - mu) * rstd;
  }
};

export const normBackward: Kernel<'normBackward', TypedArray> = ([x, g, w], out, { kind, eps }) => {
  if (numel(x!.shape) === 0) return;
  const axis = x!.shape.length - 1;
  const layer = kind === 'layer';
  // with a weight, out is [rows + 1, n]: the rows of dx, then the weight's gradient
  const { starts: [xs, gs, os], steps: [sx, sg, so], n } = lines(axis, [x!, g!], { ...out, shape: x!.shape });
  const xd = x!.data;
  const gd = g!.data;
  const od = out.data;
  const round = xd instanceof Float32Array ? Math.fround : (v: number) => v;
  const wAt = (i: number) => w!.data[w!.offset + i * w!.strides[0]!]!;
  // the gradient reaching the normalised value: g, or g·w rounded as the affine mul's backward rounds it
  const gn = (pg: number, i: number) => (w ? round(gd[pg + i * sg!]! * wAt(i)) : gd[pg + i * sg!]!);
  const dw = w ? new Float64Array(n) : null;
  for (let r = 0; r < xs!.length; r++) {
    const [px, pg, po] = [xs![r]!, gs![r]!, os![r]!];
    const [mu, rstd] = rowStats(xd, px, sx!, n, layer, eps);
    // y = (x − μ)·rstd; dx = rstd·(g − mean(g) − y·mean(g·y)), without the mean(g) term for rms
    let sgm = 0;
    let sgy = 0;
    for (let i = 0; i < n; i++) {
      const gi = gn(pg, i);
      sgm += gi;
      sgy += gi * (xd[px + i * sx!]! - mu) * rstd;
    }
    sgm = layer ? sgm / n : 0;
    sgy /= n;
    for (let i = 0; i < n; i++) {
      const y = (xd[px + i * sx!]! - mu) * rstd;
      od[po + i * so!] = rstd * (gn(pg, i) - sgm - y * sgy);
    }
    // Σ over rows of g·y, each product and y rounded as the mul map and the norm output were, in row order
    if (dw) for (let i = 0; i < n; i++) dw[i] = dw[i]! + round(gd[pg + i * sg!]! * round((xd[px + i * sx!]! - mu) * rstd));
  }
  if (dw) for (let i = 0; i < n; i++) od[out.offset + xs!.length * n + i] = dw[i]!;
};

export const rope: Kernel<'rope', TypedArray> = ([x, c, s], out, { transpose, scale = 1 }) => {
  if (numel(out.shape) === 0) return;
  // the scale as the mul map rounds its scalar and each product: in float32 for float32 data
  const f32 = out.dtype === 'float32';
  const k = f32 ? Math.fround(scale) : scale;
  const round = f32 ? Math.fround : (v: number) => v;
  const axis = out.shape.length - 1;
  const { starts: [xs, cs, ss, os], steps: [sx, sc, ssn, so], n } = lines(axis, [x!, c!, s!], out);
  if (n % 2) throw new Error(`rope: the last dim (${n}) must be even`);
  const h = n / 2;
  const [xd, cd, sd, od] = [x!.data, c!.data, s!.data, out.data];
  for (let r = 0; r < xs!.length; r++) {
    const [px, pc, ps, po] = [xs![r]!, cs![r]!, ss![r]!, os![r]!];
    for (let i = 0; i < h; i++) {
      let x1 = xd[px + i * sx!]!;
      let x2 = xd[px + (i + h) * sx!]!;
      const [c1, c2] = [cd[pc + i * sc!]!, cd[pc + (i + h) * sc!]!];
      const [s1, s2] = [sd[ps + i * ssn!]!, sd[ps + (i + h) * ssn!]!];
      if (k !== 1 && transpose) [x1, x2] = [round(x1 * k), round(x2 * k)];
      const [y1, y2] = transpose ? [x1 * c1 + x2 * s2, x2 * c2 - x1 * s1] : [x1 * c1 - x2 * s1, x2 * c2 + x1 * s2];
      od[po + i * so!] = k !== 1 && !transpose ? round(y1) * k : y1;
      od[po + (i + h) * so!] = k !== 1 && !transpose ? round(y2) * k : y2;
    }
  }
};
