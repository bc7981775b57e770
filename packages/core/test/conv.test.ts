import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { assertAllclose, checkOp, gradcheck } from '@qgrad/core/testing';
import type { Tensor } from '@qgrad/core';

const f64 = (s: number[]) => q.rand(s, { dtype: 'float64' }).mul(4).sub(2);
const small = (max: number, min = 1) => fc.integer({ min, max });
const outSize = (n: number, k: number, s: number, p: number, d: number) => Math.floor((n + 2 * p - d * (k - 1) - 1) / s) + 1;

interface Geo {
  s: [number, number];
  p: [number, number]; // top/left padding
  d: [number, number];
  out: [number, number];
}

/** Direct-loop conv2d reference (cross-correlation); padding is given by the top-left offset. */
function refConv(x: Tensor, w: Tensor, b: Tensor | null, g: Geo, groups: number): number[] {
  const [n, c, h, wd] = x.shape as [number, number, number, number];
  const [o, cg, kh, kw] = w.shape as [number, number, number, number];
  const [xd, wdat, bd] = [x.dataSync(), w.dataSync(), b?.dataSync()];
  const res: number[] = [];
  const og = o / groups;
  for (let bi = 0; bi < n; bi++)
    for (let oc = 0; oc < o; oc++)
      for (let y = 0; y < g.out[0]; y++)
        for (let z = 0; z < g.out[1]; z++) {
          let s = bd ? bd[oc]! : 0;
          const grp = Math.floor(oc / og);
          for (let ci = 0; ci < cg; ci++)
            for (let i = 0; i < kh; i++)
              for (let j = 0; j < kw; j++) {
                const hh = y * g.s[0] - g.p[0] + i * g.d[0];
                const ww = z * g.s[1] - g.p[1] + j * g.d[1];
                if (hh < 0 || hh >= h || ww < 0 || ww >= wd) continue;
                s += xd[((bi * c + grp * cg + ci) * h + hh) * wd + ww]! * wdat[((oc * cg + ci) * kh + i) * kw + j]!;
              }
          res.push(s);
        }
  void c;
  return res;
}

/** Direct-loop pooling reference over windows clipped to the input; `reduce` sees the in-range values. */
function refPool(x: Tensor, k: [number, number], g: Geo, reduce: (vals: number[], oy: number, ox: number) => number): number[] {
  const [n, c, h, w] = x.shape as [number, number, number, number];
  const xd = x.dataSync();
  const res: number[] = [];
  for (let p = 0; p < n * c; p++)
    for (let y = 0; y < g.out[0]; y++)
      for (let z = 0; z < g.out[1]; z++) {
        const vals: number[] = [];
        for (let i = 0; i < k[0]; i++)
          for (let j = 0; j < k[1]; j++) {
            const hh = y * g.s[0] - g.p[0] + i * g.d[0];
            const ww = z * g.s[1] - g.p[1] + j * g.d[1];
            if (hh >= 0 && hh < h && ww >= 0 && ww < w) vals.push(xd[(p * h + hh) * w + ww]!);
          }
        res.push(reduce(vals, y, z));
      }
  return res;
}

/** PyTorch's pooling output size (ceil mode: the last window must start inside the input or left padding). */
function poolOut(n: number, k: number, s: number, p: number, d: number, ceil: boolean): number {
  let o = Math.floor((n + 2 * p - d * (k - 1) - 1 + (ceil ? s - 1 : 0)) / s) + 1;
  if (ceil && (o - 1) * s >= n + p) o--;
  return o;
}

/** (x…) ↦ ∂(Σ f(x…)²)/∂x_i as a differentiable function, so gradcheck of it checks double backward. */
const gradOfSquare =
  (f: (...xs: Tensor[]) => Tensor, i: number) =>
  (...xs: Tensor[]): Tensor =>
    q.enableGrad(() => {
      const leaves = xs.map((x) => (x.requiresGrad ? x : x.detach().requiresGrad_()));
      return q.gradOf([f(...leaves).square().sum()], [leaves[i]!], { createGraph: true })[0]!;
    });

// random conv geometry: [k, stride, padding, dilation, input size] with a non-empty output
const convDim = fc.tuple(small(3), small(2), small(2, 0), small(2), small(5)).filter(([k, s, p, d, n]) => outSize(n, k, s, p, d) >= 1);

describe('unfold and fold', () => {
  it('are adjoint: <unfold(x), y> = <x, fold(y)> for random geometries', () => {
    fc.assert(
      fc.property(small(2), small(3), convDim, convDim, (n, c, [kh, sh, ph, dh, h], [kw, sw, pw, dw, w]) => {
        const opts = { stride: [sh, sw] as [number, number], padding: [ph, pw] as [number, number], dilation: [dh, dw] as [number, number] };
        const x = f64([n, c, h, w]);
        const u = q.unfold(x, [kh, kw], opts);
        expect(u.shape).toEqual([n, c * kh * kw, outSize(h, kh, sh, ph, dh) * outSize(w, kw, sw, pw, dw)]);
        const y = f64(u.shape);
        const lhs = u.mul(y).sum().item();
        const rhs = x.mul(q.fold(y, [h, w], [kh, kw], opts)).sum().item();
        expect(Math.abs(lhs - rhs)).toBeLessThan(1e-9 * (1 + Math.abs(lhs)));
      }),
      { numRuns: 20 },
    );
  });

  it('pass gradcheck on random geometries with strided inputs', () => {
    fc.assert(
      fc.property(convDim, convDim, (g1, g2) => {
        const [kh, sh, ph, dh, h] = g1;
        const [kw, sw, pw, dw, w] = g2;
        const opts = { stride: [sh, sw] as [number, number], padding: [ph, pw] as [number, number], dilation: [dh, dw] as [number, number] };
        gradcheck((x) => q.unfold(x, [kh, kw], opts), [f64([1, 2, h, w])], { nonContiguous: true });
        const L = outSize(h, kh, sh, ph, dh) * outSize(w, kw, sw, pw, dw);
        gradcheck((y) => q.fold(y, [h, w], [kh, kw], opts), [f64([1, 2 * kh * kw, L])], { nonContiguous: true });
      }),
      { numRuns: 10 },
    );
    checkOp((x) => q.unfold(x, 2, { padding: 1, stride: 2 }), [[2, 2, 5, 4]]);
    checkOp((y) => q.fold(y, [4, 4], 2), [[1, 8, 9]]);
  });

  it('unfold lays out rows as (channel, kernel row, kernel column) like PyTorch', () => {
    const x = q.arange(8, undefined, 1, { dtype: 'float64' }).reshape(1, 2, 2, 2);
    expect(q.unfold(x, 2).reshape(-1).toArray()).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(q.unfold(x.reshape(2, 2, 2), [1, 2]).shape).toEqual([4, 2]); // unbatched: [C·kh·kw, L]
    expect(q.fold(q.ones([4, 4], { dtype: 'float64' }), 3, 2).toArray()).toEqual([[[1, 2, 1], [2, 4, 2], [1, 2, 1]]]);
  });

  it('names the shapes when sizes do not fit', () => {
    expect(() => q.unfold(q.zeros([1, 1, 2, 2]), 3)).toThrow(/unfold: kernel \[3, 3\].*spatial size \[2, 2\]/);
    expect(() => q.fold(q.zeros([1, 8, 5]), [4, 4], 2)).toThrow(/fold: input \[1, 8, 5\] has 5 blocks but output size \[4, 4\] with kernel \[2, 2\] gives 3×3 = 9/);
    expect(() => q.fold(q.zeros([1, 7, 9]), [4, 4], 2)).toThrow(/fold: dim 1 of input \[1, 7, 9\] must be divisible/);
  });
});

describe('conv2d', () => {
  it('matches a direct-loop reference and passes gradcheck over stride/padding/dilation/groups', () => {
    fc.assert(
      fc.property(small(2), small(2), small(2), small(2), convDim, convDim, fc.boolean(), fc.boolean(), (n, groups, cg, og, [kh, sh, ph, dh, h], [kw, sw, pw, dw, w], withBias, nonContiguous) => {
        const [c, o] = [cg * groups, og * groups];
        const [x, wt, b] = [f64([n, c, h, w]), f64([o, cg, kh, kw]), f64([o])];
        const opts = { stride: [sh, sw] as [number, number], padding: [ph, pw] as [number, number], dilation: [dh, dw] as [number, number], groups };
        const y = q.conv2d(x, wt, withBias ? b : null, opts);
        const out: [number, number] = [outSize(h, kh, sh, ph, dh), outSize(w, kw, sw, pw, dw)];
        expect(y.shape).toEqual([n, o, ...out]);
        assertAllclose(y, refConv(x, wt, withBias ? b : null, { s: opts.stride, p: opts.padding, d: opts.dilation, out }, groups), { rtol: 1e-12, atol: 1e-12 });
        gradcheck((xx, ww, bb) => q.conv2d(xx, ww, withBias ? bb : null, opts), [x, wt, b], { nonContiguous });
      }),
      { numRuns: 20 },
    );
    checkOp((x, w, b) => q.conv2d(x, w, b, { stride: 2, padding: 1 }), [[2, 4, 5, 5], [6, 4, 3, 3], [6]]);
    checkOp((x, w) => q.functional.conv2d(x, w, null, { groups: 2, dilation: [2, 1] }), [[1, 4, 6, 5], [4, 2, 2, 3]]);
  });

  it('is twice differentiable: gradcheck of its input and weight gradients', () => {
    const conv = (x: Tensor, w: Tensor) => q.conv2d(x, w, null, { stride: 2, padding: 1, groups: 2 });
    const [x, w] = [f64([1, 4, 4, 5]), f64([2, 2, 3, 3])];
    gradcheck(gradOfSquare(conv, 0), [x, w]);
    gradcheck(gradOfSquare(conv, 1), [x, w]);
    gradcheck(gradOfSquare((y) => q.fold(y, [3, 3], 2), 0), [f64([1, 4, 4])]);
  });

  it("padding 'same' keeps the size, padding the odd extra on the bottom/right like PyTorch; 'valid' pads nothing", () => {
    fc.assert(
      fc.property(small(4), small(4), small(2), small(5, 2), small(5, 2), (kh, kw, d, h, w) => {
        const [x, wt] = [f64([1, 2, h, w]), f64([3, 2, kh, kw])];
        const y = q.conv2d(x, wt, null, { padding: 'same', dilation: d });
        expect(y.shape).toEqual([1, 3, h, w]);
        const top = Math.floor((d * (kh - 1)) / 2);
        const left = Math.floor((d * (kw - 1)) / 2);
        assertAllclose(y, refConv(x, wt, null, { s: [1, 1], p: [top, left], d: [d, d], out: [h, w] }, 1), { rtol: 1e-12, atol: 1e-12 });
        gradcheck((xx, ww) => q.conv2d(xx, ww, null, { padding: 'same', dilation: d }), [x, wt]);
      }),
      { numRuns: 10 },
    );
    assertAllclose(q.conv2d(q.ones([1, 1, 4, 4]), q.ones([1, 1, 3, 3]), null, { padding: 'valid' }), [9, 9, 9, 9]);
  });

  it('accepts an unbatched (C, H, W) input like PyTorch', () => {
    const [x, w, b] = [f64([2, 4, 4]), f64([3, 2, 3, 3]), f64([3])];
    const y = q.conv2d(x, w, b, { padding: 1 });
    expect(y.shape).toEqual([3, 4, 4]);
    assertAllclose(y, q.conv2d(x.unsqueeze(0), w, b, { padding: 1 }).squeeze(0));
  });

  it('names the input and weight shapes when channels or options do not fit', () => {
    expect(() => q.conv2d(q.zeros([2, 3, 8, 8]), q.zeros([4, 2, 3, 3]))).toThrow('conv2d: input of shape [2, 3, 8, 8] has 3 channels but weight [4, 2, 3, 3] expects 2 (groups 1)');
    expect(() => q.conv2d(q.zeros([2, 4, 8, 8]), q.zeros([3, 2, 3, 3]), null, { groups: 2 })).toThrow(/conv2d: weight \[3, 2, 3, 3\] has 3 output channels, not divisible by groups 2/);
    expect(() => q.conv2d(q.zeros([1, 1, 4, 4]), q.zeros([2, 1, 3, 3]), q.zeros([3]))).toThrow(/conv2d: bias of shape \[3\] does not match weight \[2, 1, 3, 3\]/);
    expect(() => q.conv2d(q.zeros([1, 1, 4, 4]), q.zeros([1, 1, 3, 3]), null, { padding: 'same', stride: 2 })).toThrow(/padding='same' is not supported for strided/);
    expect(() => q.conv2d(q.zeros([1, 1, 4, 4]), q.zeros([1, 1, 3, 3], { dtype: 'float64' }))).toThrow(/conv2d: input \(float32, shape \[1, 1, 4, 4\]\) and weight \(float64/);
    expect(() => q.conv2d(q.zeros([4, 4]), q.zeros([1, 1, 3, 3]))).toThrow(/conv2d: expects a 3-D \(C, H, W\) or 4-D \(N, C, H, W\) input, got shape \[4, 4\]/);
  });
});

// random pooling geometry, both dims sharing one ceil mode: [[k, stride, padding, dilation, size] × 2, ceil]
const poolDims = (dilated: boolean) =>
  fc.boolean().chain((ceil) => {
    const one = fc
      .tuple(small(3), small(3), small(1, 0), dilated ? small(2) : fc.constant(1), small(6, 2))
      .filter(([k, s, p, d, n]) => p <= Math.floor((d * (k - 1) + 1) / 2) && poolOut(n, k, s, p, d, ceil) >= 1);
    return fc.tuple(one, one, fc.constant(ceil));
  });

describe('pooling', () => {
  it('maxPool2d matches a direct-loop reference and passes gradcheck (padding, dilation, ceil mode)', () => {
    fc.assert(
      fc.property(poolDims(true), fc.boolean(), ([[kh, sh, ph, dh, h], [kw, sw, pw, dw, w], ceil], nonContiguous) => {
        const x = f64([1, 2, h, w]);
        const opts = { stride: [sh, sw] as [number, number], padding: [ph, pw] as [number, number], dilation: [dh, dw] as [number, number], ceilMode: ceil };
        const y = q.maxPool2d(x, [kh, kw], opts);
        const out: [number, number] = [poolOut(h, kh, sh, ph, dh, ceil), poolOut(w, kw, sw, pw, dw, ceil)];
        expect(y.shape).toEqual([1, 2, ...out]);
        assertAllclose(y, refPool(x, [kh, kw], { s: opts.stride, p: opts.padding, d: opts.dilation, out }, (v) => Math.max(...v)));
        gradcheck((xx) => q.maxPool2d(xx, [kh, kw], opts), [x], { nonContiguous });
      }),
      { numRuns: 20 },
    );
    checkOp((x) => q.maxPool2d(x, 3, { stride: 2, padding: 1 }), [[2, 3, 6, 6]]);
  });

  it('maxPool2d sends the gradient of a window to its first maximum only, not split among ties', () => {
    const x = q.ones([1, 1, 2, 4], { dtype: 'float64', requiresGrad: true });
    q.maxPool2d(x, 2).sum().backward();
    expect(x.grad!.toArray()).toEqual([[[[1, 0, 1, 0], [0, 0, 0, 0]]]]);
    // stride 1: overlapping windows each send 1 to their own first maximum
    const z = q.ones([1, 3, 3], { dtype: 'float64', requiresGrad: true }); // unbatched
    const y = q.maxPool2d(z, 2, { stride: 1 });
    expect(y.shape).toEqual([1, 2, 2]);
    y.sum().backward();
    expect(z.grad!.toArray()).toEqual([[[1, 1, 0], [1, 1, 0], [0, 0, 0]]]);
  });

  it('maxPool2d propagates NaN like PyTorch', () => {
    const y = q.maxPool2d(q.tensor([[[[1, NaN], [3, 2]]]], { dtype: 'float64' }), 2);
    expect(Number.isNaN(y.item())).toBe(true);
  });

  it('avgPool2d matches PyTorch divisors (countIncludePad, ceil mode, divisorOverride) and passes gradcheck', () => {
    fc.assert(
      fc.property(poolDims(false), fc.boolean(), fc.boolean(), ([[kh, sh, ph, , h], [kw, sw, pw, , w], ceil], includePad, override) => {
        const x = f64([1, 2, h, w]);
        const opts = { stride: [sh, sw] as [number, number], padding: [ph, pw] as [number, number], ceilMode: ceil, countIncludePad: includePad, divisorOverride: override ? 3 : null };
        const y = q.avgPool2d(x, [kh, kw], opts);
        const out: [number, number] = [poolOut(h, kh, sh, ph, 1, ceil), poolOut(w, kw, sw, pw, 1, ceil)];
        expect(y.shape).toEqual([1, 2, ...out]);
        // PyTorch: the window clipped to the padded input (include) or to the input (exclude)
        const span = (o: number, s: number, p: number, k: number, n: number) => {
          const start = o * s - p;
          const end = Math.min(start + k, n + p);
          return includePad ? end - start : Math.min(end, n) - Math.max(start, 0);
        };
        const ref = refPool(x, [kh, kw], { s: opts.stride, p: opts.padding, d: [1, 1], out }, (v, oy, ox) => {
          const total = v.reduce((a, b) => a + b, 0);
          return total / (override ? 3 : span(oy, sh, ph, kh, h) * span(ox, sw, pw, kw, w));
        });
        assertAllclose(y, ref, { rtol: 1e-12, atol: 1e-12 });
        gradcheck((xx) => q.avgPool2d(xx, [kh, kw], opts), [x], { nonContiguous: true });
      }),
      { numRuns: 20 },
    );
    checkOp((x) => q.functional.avgPool2d(x, 3, { stride: 2, padding: 1, countIncludePad: false, ceilMode: true }), [[2, 3, 6, 6]]);
  });

  it('are twice differentiable: gradcheck of their input gradients', () => {
    const x = f64([1, 2, 4, 4]);
    gradcheck(gradOfSquare((t) => q.maxPool2d(t, 2, { stride: 1, padding: 1 }), 0), [x]);
    gradcheck(gradOfSquare((t) => q.avgPool2d(t, 3, { stride: 2, padding: 1, ceilMode: true, countIncludePad: false }), 0), [x]);
  });

  it('reject padding larger than half the kernel, naming the sizes', () => {
    expect(() => q.maxPool2d(q.zeros([1, 1, 4, 4]), 2, { padding: 2 })).toThrow(/maxPool2d: padding \[2, 2\] should be at most half of the effective kernel size \[2, 2\]/);
    expect(() => q.avgPool2d(q.zeros([1, 1, 4, 4]), 3, { padding: 2 })).toThrow(/avgPool2d: padding \[2, 2\] should be at most half/);
    expect(() => q.maxPool2d(q.zeros([4, 4]), 2)).toThrow(/maxPool2d: expects a 3-D \(C, H, W\) or 4-D \(N, C, H, W\) input, got shape \[4, 4\]/);
  });
});

describe('interpolate (nearest)', () => {
  it('integer scale factors repeat each pixel, as PyTorch', () => {
    const x = q.tensor([[[[1, 2], [3, 4]]]], { dtype: 'float64' });
    expect(q.interpolate(x, { scaleFactor: 2 }).toArray()).toEqual([[[[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]]]);
    expect(q.upsample(x, { scaleFactor: [1, 3] }).toArray()).toEqual([[[[1, 1, 1, 2, 2, 2], [3, 3, 3, 4, 4, 4]]]]);
    expect(q.interpolate(q.arange(4, undefined, 1, { dtype: 'float64' }).reshape(1, 1, 4), { scaleFactor: 0.5 }).toArray()).toEqual([[[0, 2]]]);
  });

  it('general sizes pick floor(o·in/out) for nearest and floor((o+½)·in/out) for nearest-exact', () => {
    const x = q.arange(3, undefined, 1, { dtype: 'float64' }).reshape(1, 1, 3);
    expect(q.interpolate(x, { size: 5 }).toArray()).toEqual([[[0, 0, 1, 1, 2]]]);
    expect(q.interpolate(x, { size: 5, mode: 'nearest-exact' }).toArray()).toEqual([[[0, 0, 1, 2, 2]]]);
    expect(q.interpolate(x, { size: 2 }).toArray()).toEqual([[[0, 1]]]);
    expect(q.interpolate(x, { scaleFactor: 1.5 }).toArray()).toEqual([[[0, 0, 1, 2]]]); // floor(4.5) = 4 outputs, src floor(o/1.5)
  });

  it('matches an index-gather reference and passes gradcheck for random sizes', () => {
    fc.assert(
      fc.property(small(4), small(4), small(7), small(7), fc.constantFrom<'nearest' | 'nearest-exact'>('nearest', 'nearest-exact'), (h, w, oh, ow, mode) => {
        const x = f64([1, 2, h, w]);
        const y = q.interpolate(x, { size: [oh, ow], mode });
        expect(y.shape).toEqual([1, 2, oh, ow]);
        const src = (o: number, n: number, m: number) => Math.min(Math.floor(Math.fround((mode === 'nearest' ? o : o + 0.5) * Math.fround(n / m))), n - 1);
        const xd = x.dataSync();
        const ref: number[] = [];
        for (let c = 0; c < 2; c++) for (let i = 0; i < oh; i++) for (let j = 0; j < ow; j++) ref.push(xd[(c * h + src(i, h, oh)) * w + src(j, w, ow)]!);
        assertAllclose(y, ref, { rtol: 0, atol: 0 });
        gradcheck((xx) => q.interpolate(xx, { size: [oh, ow], mode }), [x], { nonContiguous: true });
      }),
      { numRuns: 15 },
    );
    checkOp((x) => q.functional.interpolate(x, { scaleFactor: 2 }), [[1, 2, 3, 3]]);
    checkOp((x) => q.functional.interpolate(x, { size: [5, 2] }), [[1, 2, 3, 3]]);
  });

  it('reports bad arguments with the input shape', () => {
    expect(() => q.interpolate(q.zeros([3, 3]), { scaleFactor: 2 })).toThrow(/interpolate: expects a 3-D, 4-D or 5-D input/);
    expect(() => q.interpolate(q.zeros([1, 1, 3, 3]), { size: [2, 2, 2] })).toThrow(/interpolate: size \[2,2,2\] must have 2 entries for input of shape \[1, 1, 3, 3\]/);
    expect(() => q.interpolate(q.zeros([1, 1, 3, 3]), {})).toThrow(/exactly one of size and scaleFactor/);
  });
});
