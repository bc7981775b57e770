import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { arb, assertAllclose, checkOp, gradcheck, gradgradcheck } from '@qgrad/core/testing';
import type { Tensor } from '@qgrad/core';

const f64 = (s: number[], lo = -2, hi = 2) => q.rand(s, { dtype: 'float64' }).mul(hi - lo).add(lo);
/** A dim of a rank-r tensor from a natural number, negative half the time. */
const pickDim = (n: number, rank: number) => (n % (2 * Math.max(rank, 1))) - Math.max(rank, 1);
const flat = (t: Tensor) => Array.from(t.dataSync());

describe('softmax and logSoftmax', () => {
  it('softmax passes gradcheck along any dim of random shapes, contiguous and strided', () => {
    fc.assert(
      fc.property(arb.shape({ maxRank: 3 }), fc.nat(), fc.boolean(), (s, d, nonContiguous) => {
        gradcheck((x) => q.softmax(x, pickDim(d, s.length)), [f64(s, -3, 3)], { nonContiguous });
      }),
      { numRuns: 20 },
    );
    checkOp((x) => q.softmax(x, 1), [[3, 5]], { range: [-3, 3] });
  });

  it('logSoftmax passes gradcheck along any dim of random shapes, contiguous and strided', () => {
    fc.assert(
      fc.property(arb.shape({ maxRank: 3 }), fc.nat(), fc.boolean(), (s, d, nonContiguous) => {
        gradcheck((x) => x.logSoftmax(pickDim(d, s.length)), [f64(s, -3, 3)], { nonContiguous });
      }),
      { numRuns: 20 },
    );
    checkOp((x) => q.logSoftmax(x, -1), [[3, 5]], { range: [-3, 3] });
  });

  it('softmax rows sum to one and logSoftmax equals the log of softmax', () => {
    fc.assert(
      fc.property(arb.shape({ minRank: 1, maxRank: 3 }), fc.nat(), (s, d) => {
        const dim = pickDim(d, s.length);
        const x = f64(s, -5, 5);
        const y = q.softmax(x, dim);
        assertAllclose(y.sum(dim), q.onesLike(y.sum(dim)), { atol: 1e-12 });
        assertAllclose(x.logSoftmax(dim), y.log(), { atol: 1e-12 });
      }),
      { numRuns: 15 },
    );
  });

  it('is stable for huge logits where a naive exp overflows', () => {
    const x = q.tensor([[1000, 1001, 1002], [-1000, -1000, -1000]], { dtype: 'float32' });
    const y = x.softmax(1);
    expect(y.hasNonFinite()).toBe(false);
    assertAllclose(y.select(0, 0), q.tensor([0.09003057, 0.24472847, 0.66524096]), { atol: 1e-6 });
    assertAllclose(x.logSoftmax(1).select(0, 0), q.tensor([-2.40760596, -1.40760596, -0.40760596]), { atol: 1e-5 });
  });

  it('a 0-d tensor has softmax 1 and logSoftmax 0, like PyTorch', () => {
    expect(q.softmax(q.tensor(3), 0).item()).toBe(1);
    expect(q.logSoftmax(q.tensor(3), -1).item()).toBe(0);
  });

  it('integer inputs are computed in float32 and softmin is softmax of −x', () => {
    const y = q.softmax(q.tensor([0, 1], { dtype: 'int32' }), 0);
    expect(y.dtype).toBe('float32');
    assertAllclose(q.functional.softmin(q.tensor([0, 1]), 0), q.softmax(q.tensor([0, -1]), 0));
  });

  it('names the op when dim is out of range', () => {
    expect(() => q.softmax(q.zeros([2, 3]), 2)).toThrow(/softmax: dim 2 is out of range/);
    expect(() => q.logSoftmax(q.zeros([2, 3]), -3)).toThrow(/logSoftmax: dim -3 is out of range/);
  });
});

describe('layerNorm', () => {
  it('passes gradcheck with and without affine parameters over random normalized shapes', () => {
    fc.assert(
      fc.property(arb.shape({ minRank: 1, maxRank: 3, minDim: 2 }), fc.nat(), fc.boolean(), fc.boolean(), (s, k, affine, nonContiguous) => {
        const ns = s.slice(s.length - 1 - (k % s.length));
        const inputs = affine ? [f64(s), f64(ns), f64(ns)] : [f64(s)];
        gradcheck((x, w, b) => q.layerNorm(x, ns, w, b), inputs, { nonContiguous });
      }),
      { numRuns: 15 },
    );
    checkOp((x, w, b) => q.layerNorm(x, [4], w, b), [[3, 4], [4], [4]]);
  });

  it('normalises each row to mean 0 and biased variance 1 (up to eps)', () => {
    const x = f64([3, 4, 5], -3, 3);
    const y = q.layerNorm(x, [4, 5], null, null, 0);
    assertAllclose(y.mean([1, 2]), q.zeros([3], { dtype: 'float64' }), { atol: 1e-12 });
    assertAllclose(y.var([1, 2], { correction: 0 }), q.ones([3], { dtype: 'float64' }), { atol: 1e-12 });
    expect(q.layerNorm(x, 5).shape).toEqual([3, 4, 5]);
  });

  it('names both shapes when normalizedShape or weight do not fit', () => {
    expect(() => q.layerNorm(q.zeros([2, 3]), [4])).toThrow(/layerNorm: normalizedShape \[4\] does not match the trailing dims of input of shape \[2, 3\]/);
    expect(() => q.layerNorm(q.zeros([2, 3]), [3], q.zeros([2]))).toThrow(/layerNorm: weight of shape \[2\] does not match the expected shape \[3\]/);
  });
});

describe('rmsNorm', () => {
  it('passes gradcheck with and without weight over random normalized shapes', () => {
    fc.assert(
      fc.property(arb.shape({ minRank: 1, maxRank: 3 }), fc.nat(), fc.boolean(), fc.boolean(), (s, k, affine, nonContiguous) => {
        const ns = s.slice(s.length - 1 - (k % s.length));
        const inputs = affine ? [f64(s), f64(ns)] : [f64(s)];
        gradcheck((x, w) => q.rmsNorm(x, ns, w, 1e-6), inputs, { nonContiguous });
      }),
      { numRuns: 15 },
    );
    checkOp((x, w) => q.rmsNorm(x, [4], w), [[3, 4], [4]]);
  });

  it('with a weight (the fused norm·w) gives rmsNorm(x).mul(w) bit for bit, output and both gradients, in float32 on js and wasm (a 2-d normalized shape, a strided x, a frozen weight), and passes gradgradcheck', () => {
    const bits = (t: Tensor | null | undefined) => Array.from(new Uint32Array(Float32Array.from(t!.dataSync()).buffer));
    for (const backend of ['js', 'wasm'] as const) {
      q.withBackend(backend, () => {
        const gen = new q.Generator(5);
        // 6·37 rows of 128 and of 4×8: past the size where the wasm row kernels run
        for (const [shape, ns] of [[[6, 37, 128], [128]], [[6, 37, 4, 8], [4, 8]]] as [number[], number[]][]) {
          const x0 = q.randn([...shape].reverse(), { generator: gen }).permute(shape.map((_, i) => shape.length - 1 - i)).mul(3);
          const w0 = q.randn(ns, { generator: gen });
          const dy = q.randn(shape, { generator: gen });
          for (const frozen of [false, true]) {
            const run = (f: (x: Tensor, w: Tensor) => Tensor) => {
              const [x, w] = [x0.detach().requiresGrad_(), w0.detach().requiresGrad_(!frozen)];
              const y = f(x, w);
              y.backward(dy);
              return [y, x.grad, w.grad];
            };
            const fused = run((x, w) => q.rmsNorm(x, ns, w, 1e-5));
            const composite = run((x, w) => q.rmsNorm(x, ns, null, 1e-5).mul(w));
            for (let i = 0; i < 3; i++) {
              if (frozen && i === 2) expect(fused[i] ?? null).toBeNull();
              else expect(bits(fused[i]), `${backend} ${shape} output ${i}`).toEqual(bits(composite[i]));
            }
          }
        }
      });
    }
    gradgradcheck((x, w) => q.rmsNorm(x, [4], w, 1e-6), [f64([3, 4]), f64([4])]);
  });

  it('divides by the root mean square: [3, 4] → [3, 4]/√12.5', () => {
    assertAllclose(q.rmsNorm(q.tensor([[3, 4]], { dtype: 'float64' }), [2], null, 0), q.tensor([[3 / Math.sqrt(12.5), 4 / Math.sqrt(12.5)]], { dtype: 'float64' }), { atol: 1e-15 });
  });

  it('defaults eps to the machine epsilon of the dtype, as torch.nn.functional.rms_norm', () => {
    const tiny = 1e-9;
    const x64 = q.full([1, 2], tiny, { dtype: 'float64' });
    assertAllclose(q.rmsNorm(x64, [2]), q.rmsNorm(x64, [2], null, 2 ** -52), { atol: 0, rtol: 1e-15 });
    const x32 = q.full([1, 2], 1e-4);
    assertAllclose(q.rmsNorm(x32, [2]), q.rmsNorm(x32, [2], null, 2 ** -23), { atol: 0, rtol: 1e-6 });
    expect(Math.abs(q.rmsNorm(x32, [2]).dataSync()[0]! - 1)).toBeGreaterThan(1e-3); // eps 2⁻²³ is visible at x = 1e-4
  });
});

describe('groupNorm', () => {
  it('passes gradcheck over random batch, group, channel and spatial sizes', () => {
    const cfg = fc.record({
      n: fc.integer({ min: 1, max: 2 }),
      g: fc.integer({ min: 1, max: 3 }),
      perGroup: fc.integer({ min: 1, max: 2 }),
      spatial: arb.shape({ maxRank: 2, maxDim: 3 }),
      affine: fc.boolean(),
      nonContiguous: fc.boolean(),
    });
    fc.assert(
      fc.property(cfg, ({ n, g, perGroup, spatial, affine, nonContiguous }) => {
        const c = g * perGroup;
        if (perGroup * spatial.reduce((a, b) => a * b, 1) < 2) return; // a group of one element has zero variance
        const inputs = affine ? [f64([n, c, ...spatial]), f64([c]), f64([c])] : [f64([n, c, ...spatial])];
        gradcheck((x, w, b) => q.groupNorm(x, g, w, b), inputs, { nonContiguous });
      }),
      { numRuns: 15 },
    );
    checkOp((x, w, b) => q.groupNorm(x, 2, w, b), [[2, 4, 3], [4], [4]]);
  });

  it('with one group per channel equals normalising each channel over its spatial dims', () => {
    const x = f64([2, 3, 4]);
    const ref = x.sub(x.mean(2, true)).div(x.var(2, { correction: 0, keepdim: true }).add(1e-5).sqrt());
    assertAllclose(q.groupNorm(x, 3), ref, { atol: 1e-12 });
  });

  it('names the shapes when channels do not split into groups', () => {
    expect(() => q.groupNorm(q.zeros([2, 6, 4]), 4)).toThrow(/groupNorm: 6 channels of input of shape \[2, 6, 4\] cannot be split into 4 groups/);
    expect(() => q.groupNorm(q.zeros([6]), 2)).toThrow(/groupNorm: expected input of shape \[N, C, \*\], got \[6\]/);
    expect(() => q.groupNorm(q.zeros([2, 6]), 2, q.zeros([3]))).toThrow(/groupNorm: weight of shape \[3\] does not match the expected shape \[6\]/);
  });
});

describe('dropout', () => {
  it('is reproducible after manualSeed and with an explicit generator', () => {
    const x = q.ones([64]);
    q.manualSeed(42);
    const a = flat(q.dropout(x, 0.3));
    q.manualSeed(42);
    expect(flat(q.dropout(x, 0.3))).toEqual(a);
    const b = flat(q.dropout(x, 0.3, true, { generator: new q.Generator(7) }));
    expect(flat(q.dropout(x, 0.3, true, { generator: new q.Generator(7) }))).toEqual(b);
  });

  it('zeroes elements or scales them by 1/(1−p), preserving the mean in expectation', () => {
    fc.assert(
      fc.property(fc.double({ min: 0.05, max: 0.9, noNaN: true }), arb.seed(), (p, seed) => {
        const n = 4000;
        const y = flat(q.dropout(q.ones([n], { dtype: 'float64' }), p, true, { generator: new q.Generator(seed) }));
        for (const v of y) expect(v === 0 || Math.abs(v - 1 / (1 - p)) < 1e-12).toBe(true);
        const keep = y.filter((v) => v !== 0).length / n;
        const sd = Math.sqrt(p * (1 - p) / n);
        expect(Math.abs(keep - (1 - p))).toBeLessThan(5 * sd);
        const m = y.reduce((a, b) => a + b, 0) / n;
        expect(Math.abs(m - 1)).toBeLessThan((5 * sd) / (1 - p));
      }),
      { numRuns: 10 },
    );
  });

  it('is the identity for p = 0 and in eval mode, and all zeros for p = 1', () => {
    const x = f64([3, 4]);
    expect(flat(q.dropout(x, 0))).toEqual(flat(x));
    expect(flat(q.dropout(x, 0.7, false))).toEqual(flat(x));
    const z = q.dropout(x.detach().requiresGrad_(), 1);
    expect(flat(z).every((v) => v === 0)).toBe(true);
  });

  it('routes the gradient through the kept elements with the same scale (gradcheck with a fixed seed)', () => {
    fc.assert(
      fc.property(arb.shape({ minRank: 1, maxRank: 3 }), arb.seed(), fc.double({ min: 0.1, max: 0.8, noNaN: true }), (s, seed, p) => {
        gradcheck((x) => q.dropout(x, p, true, { generator: new q.Generator(seed) }), [f64(s)]);
      }),
      { numRuns: 10 },
    );
    checkOp((x) => q.dropout(x, 0.3, true, { generator: new q.Generator(5) }), [[3, 4]]);
    const x = q.ones([50], { dtype: 'float64', requiresGrad: true });
    const y = q.dropout(x, 0.5, true, { generator: new q.Generator(3) });
    y.sum().backward();
    expect(flat(x.grad!)).toEqual(flat(y.detach()));
  });

  it('rejects probabilities outside [0, 1]', () => {
    expect(() => q.dropout(q.ones([2]), 1.5)).toThrow(/dropout: probability has to be between 0 and 1, but got 1.5/);
    expect(() => q.dropout(q.ones([2]), -0.1)).toThrow(/dropout/);
  });
});

describe('applyRotary (fused rotary embedding)', () => {
  /** x [..., T, D] with tables [T, D] (D even), as RoPE uses them. */
  const problem = fc.record({ lead: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 2 }), t: fc.integer({ min: 1, max: 5 }), h: fc.integer({ min: 1, max: 6 }) });
  const composite = (x: Tensor, c: Tensor, s: Tensor) => {
    const h = x.shape[x.ndim - 1]! / 2;
    return x.mul(c).add(q.cat([x.narrow(-1, h, h).neg(), x.narrow(-1, 0, h)], -1).mul(s));
  };

  it('equals x·cos + rotateHalf(x)·sin and passes gradcheck and gradgradcheck in x', () => {
    fc.assert(
      fc.property(problem, fc.boolean(), ({ lead, t, h }, nonContiguous) => {
        const x = f64([...lead, t, 2 * h]);
        const [c, s] = [f64([t, 2 * h]), f64([t, 2 * h])];
        assertAllclose(q.applyRotary(x, c, s), composite(x, c, s), { atol: 1e-14 });
        gradcheck((y) => q.applyRotary(y, c, s), [x], { nonContiguous });
        gradgradcheck((y) => q.applyRotary(y, c, s).pow(2), [x]);
      }),
      { numRuns: 20 },
    );
  });

  it('with a scale: gradcheck and gradgradcheck in x, and the bits of applyRotary(x).mul(scale) forward and backward on js and wasm (float32, q as heads split off a projection)', () => {
    const [c, s] = [f64([3, 4]), f64([3, 4])];
    const x64 = f64([2, 3, 4]);
    gradcheck((y) => q.applyRotary(y, c, s, { scale: 0.3 }), [x64]);
    gradgradcheck((y) => q.applyRotary(y, c, s, { scale: 0.3 }).pow(2), [x64]);
    for (const backend of ['js', 'wasm'] as const) {
      q.withBackend(backend, () => {
        const [B, T, H, D] = [2, 16, 4, 32];
        const g = new q.Generator(7);
        const proj = q.randn([B, T, H * D], { generator: g });
        const [cos, sin] = [q.randn([T, D], { generator: g }), q.randn([T, D], { generator: g })];
        const w = q.randn([B, H, T, D], { generator: g });
        const scale = 1 / Math.sqrt(D);
        const run = (fused: boolean) => {
          const p = proj.detach().requiresGrad_();
          const x = p.view(B, T, H, D).transpose(1, 2);
          const y = fused ? q.applyRotary(x, cos, sin, { scale }) : q.applyRotary(x, cos, sin).mul(scale);
          y.mul(w).sum().backward();
          return [y.toArray(), p.grad!.toArray()];
        };
        expect(run(true)).toEqual(run(false));
        // the gradient w.r.t. the rotated heads comes back in their layout (a view of [B, T, H, D]),
        // with the bits of the gradient through a contiguous copy of them
        const x = proj.view(B, T, H, D).transpose(1, 2).requiresGrad_();
        const [gx] = q.gradOf([q.applyRotary(x, cos, sin, { scale }).mul(w).sum()], [x]);
        expect(gx!.strides).toEqual(x.strides);
        const xc = x.detach().contiguous().requiresGrad_();
        const [gc] = q.gradOf([q.applyRotary(xc, cos, sin, { scale }).mul(w).sum()], [xc]);
        expect(gc!.isContiguous()).toBe(true);
        expect(gx!.toArray()).toEqual(gc!.toArray());
      });
    }
    // the op-by-op path (tables that require grad) scales too
    const ct = c.detach().requiresGrad_(true);
    assertAllclose(q.applyRotary(x64, ct, s, { scale: 0.3 }), q.applyRotary(x64, c, s).mul(0.3), { atol: 1e-14 });
  });

  it('takes the op-by-op path when the tables require grad, with the same values', () => {
    const x = f64([2, 3, 4]);
    const c = f64([3, 4]).requiresGrad_(true);
    const s = f64([3, 4]).requiresGrad_(true);
    gradcheck((y, cc, ss) => q.applyRotary(y, cc, ss), [x, c, s]);
    assertAllclose(q.applyRotary(x, c, s), composite(x, c, s), { atol: 1e-14 });
  });

  it('matches js on every backend, and names odd or mismatched shapes', () => {
    const c = q.rand([8, 16]).mul(2).sub(1);
    const s = q.rand([8, 16]).mul(2).sub(1);
    checkOp((x) => q.applyRotary(x, c, s), [[4, 8, 16]]);
    checkOp((x) => q.applyRotary(x, c, s), [[2, 8, 16]], { backendTol: { rtol: 1e-5, atol: 1e-6 }, forwardOnly: true });
    expect(() => q.applyRotary(q.zeros([2, 3]), q.zeros([2, 3]), q.zeros([2, 3]))).toThrow('applyRotary: the last dim of x must be even, got shape [2, 3]');
    expect(() => q.applyRotary(q.zeros([2, 4]), q.zeros([3, 4]), q.zeros([2, 4]))).toThrow('applyRotary: cos of shape [3, 4] does not broadcast to x of shape [2, 4]');
  });
});

describe('softmax with a fused bias', () => {
  it('equals softmax(x + bias) and passes gradcheck in x and in the broadcast bias', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 6 }), fc.boolean(), (b, t, n, log) => {
        const x = f64([b, t, n], -3, 3);
        const bias = f64([t, n], -2, 2);
        const f = log ? q.logSoftmax : q.softmax;
        assertAllclose(f(x, -1, { bias }), f(x.add(bias), -1), { atol: 1e-14 });
        gradcheck((xx, bb) => f(xx, -1, { bias: bb }), [x, bias]);
      }),
      { numRuns: 20 },
    );
  });

  it('gives zero weight where the bias is −∞ (a causal mask), matches js on every backend, and names a bad bias', () => {
    const mask = q.tensor([[0, -Infinity, -Infinity], [0, 0, -Infinity], [0, 0, 0]]);
    const y = q.softmax(q.zeros([2, 3, 3]), -1, { bias: mask });
    expect(y.toArray()).toEqual([0, 1].map(() => [[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]].map((r) => r.map((v) => Math.fround(v)))));
    const bias = q.rand([16, 64]).mul(4).sub(2);
    checkOp((x) => q.softmax(x, -1, { bias }), [[4, 16, 64]], { range: [-3, 3] });
    expect(() => q.softmax(q.zeros([2, 3]), -1, { bias: q.zeros([4]) })).toThrow("softmax: bias of shape [4] does not broadcast to the input's shape [2, 3]");
  });
});

describe('swiglu (fused silu(gate)·up)', () => {
  it('passes gradcheck and gradgradcheck in both inputs over random shapes, contiguous and strided', () => {
    fc.assert(
      fc.property(arb.shape({ maxRank: 3 }), fc.boolean(), (s, nonContiguous) => {
        gradcheck((g, u) => q.swiglu(g, u), [f64(s, -4, 4), f64(s)], { nonContiguous });
      }),
      { numRuns: 15 },
    );
    gradgradcheck((g, u) => q.swiglu(g, u), [f64([3, 4], -4, 4), f64([3, 4])]);
    checkOp((g, u) => q.swiglu(g, u), [[3, 5], [3, 5]], { range: [-4, 4] });
  });

  it('gives silu(gate).mul(up) bit for bit, values and both gradients, in float32 on js and wasm (strided inputs, one input frozen)', () => {
    const bits = (t: Tensor | null | undefined) => Array.from(new Uint32Array(Float32Array.from(t!.dataSync()).buffer));
    for (const backend of ['js', 'wasm'] as const) {
      q.withBackend(backend, () => {
        const gen = new q.Generator(3);
        // 4·37·65 elements: past the size where wasm maps run, with a vector tail
        const g0 = q.randn([4, 37, 65], { generator: gen }).mul(3);
        const u0 = q.randn([4, 65, 37], { generator: gen }).transpose(1, 2);
        const dy = q.randn([4, 37, 65], { generator: gen });
        for (const frozen of [-1, 0, 1]) {
          const run = (f: (g: Tensor, u: Tensor) => Tensor) => {
            const [g, u] = [g0.detach().requiresGrad_(frozen !== 0), u0.detach().requiresGrad_(frozen !== 1)];
            const y = f(g, u);
            y.backward(dy);
            return [y, g.grad, u.grad];
          };
          const fused = run((g, u) => q.swiglu(g, u));
          const composite = run((g, u) => q.silu(g).mul(u));
          for (let i = 0; i < 3; i++) {
            if (frozen >= 0 && i === frozen + 1) expect(fused[i] ?? null).toBeNull();
            else expect(bits(fused[i]), `${backend} output ${i}, frozen ${frozen}`).toEqual(bits(composite[i]));
          }
        }
      });
    }
  });

  it('takes the composite for broadcast shapes or mixed dtypes, with the same values and gradients', () => {
    const g = f64([2, 3, 4], -3, 3).requiresGrad_();
    const u = f64([3, 1]).requiresGrad_();
    const y = q.swiglu(g, u);
    expect(y.shape).toEqual([2, 3, 4]);
    y.sum().backward();
    assertAllclose(y, q.silu(g).mul(u));
    gradcheck((a, b) => q.swiglu(a, b), [g.detach(), u.detach()]);
    expect(q.swiglu(q.ones([2]), q.ones([2], { dtype: 'float64' })).dtype).toBe('float64');
  });
});
