import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { arb, checkOp, gradcheck } from '@qgrad/core/testing';
import type { Tensor } from '@qgrad/core';

const f64 = (s: number[], lo = -2, hi = 2) => q.rand(s, { dtype: 'float64' }).mul(hi - lo).add(lo);

// name, fn, input range: every differentiable unary op
const UNARY: [string, (x: Tensor) => Tensor, [number, number]][] = [
  ['neg', (x) => x.neg(), [-2, 2]],
  ['exp', (x) => x.exp(), [-2, 2]],
  ['log', (x) => x.log(), [0.2, 3]],
  ['log1p', (x) => x.log1p(), [-0.5, 3]],
  ['expm1', (x) => q.expm1(x), [-2, 2]],
  ['sqrt', (x) => x.sqrt(), [0.2, 3]],
  ['rsqrt', (x) => x.rsqrt(), [0.2, 3]],
  ['abs', (x) => x.abs(), [0.1, 2]],
  ['sin', (x) => x.sin(), [-3, 3]],
  ['cos', (x) => x.cos(), [-3, 3]],
  ['tanh', (x) => x.tanh(), [-3, 3]],
  ['sigmoid', (x) => x.sigmoid(), [-4, 4]],
  ['relu', (x) => x.relu(), [0.1, 2]],
  ['leakyRelu', (x) => q.leakyRelu(x, 0.1), [0.1, 2]],
  ['gelu', (x) => q.gelu(x), [-3, 3]],
  ['gelu tanh', (x) => q.gelu(x, 'tanh'), [-3, 3]],
  ['silu', (x) => q.silu(x), [-3, 3]],
  ['softplus', (x) => q.softplus(x, 2), [-3, 3]],
  ['erf', (x) => x.erf(), [-2, 2]],
  ['reciprocal', (x) => x.reciprocal(), [0.5, 2]],
  ['square', (x) => x.square(), [-2, 2]],
  ['pow scalar', (x) => x.pow(3), [-2, 2]],
  ['clamp', (x) => x.clamp(-0.5, 0.7), [-2, 2]],
];

describe('unary ops', () => {
  for (const [name, fn, range] of UNARY) {
    it(`${name} passes gradcheck on random shapes, contiguous and strided`, () => {
      fc.assert(
        fc.property(arb.shape({ maxRank: 3 }), fc.boolean(), (s, nonContiguous) => {
          gradcheck(fn, [f64(s, ...range)], { nonContiguous });
        }),
        { numRuns: 12 },
      );
      checkOp(fn, [[3, 5]], { range });
    });
  }
});

describe('relu backward', () => {
  it('passes gradcheck across both signs', () => {
    fc.assert(
      fc.property(arb.shape({ maxRank: 3 }), fc.boolean(), (s, nonContiguous) => {
        gradcheck((x) => x.relu(), [f64(s, -2, 2)], { nonContiguous });
      }),
      { numRuns: 12 },
    );
  });

  it("selects like PyTorch's threshold_backward: x ≤ 0 gives +0 whatever g is, a NaN x passes g (js and wasm)", () => {
    const xs = [NaN, -1, 0, -0, 2, Infinity, -Infinity, 1e-45];
    const gs = [5, Infinity, NaN, -3, 3, 7, -Infinity, -2];
    const want = [5, 0, 0, 0, 3, 7, 0, -2];
    const before = q.getBackend();
    try {
      for (const backend of ['js', 'wasm'] as const) {
        q.setBackend(backend);
        // 4099 elements: past the size where wasm maps run, with a scalar tail
        const n = 4099;
        const x = q.tensor(Array.from({ length: n }, (_, i) => xs[i % 8]!), { requiresGrad: true });
        x.relu().backward(q.tensor(Array.from({ length: n }, (_, i) => gs[i % 8]!)));
        const got = x.grad!.toArray() as number[];
        expect(got.every((v, i) => Object.is(v, want[i % 8]))).toBe(true);
      }
    } finally {
      q.setBackend(before);
    }
  });

  it('stays differentiable in the upstream gradient when a graph of the backward is recorded', () => {
    const x = q.tensor([-1, 2, 3], { dtype: 'float64', requiresGrad: true });
    const g = q.tensor([4, 5, 6], { dtype: 'float64', requiresGrad: true });
    const [dx] = q.gradOf([x.relu()], [x], { gradOutputs: [g], createGraph: true });
    expect(dx!.toArray()).toEqual([0, 5, 6]);
    dx!.mul(q.tensor([1, 10, 100], { dtype: 'float64' })).sum().backward();
    expect(g.grad!.toArray()).toEqual([0, 10, 100]);
  });
});

const BINARY: [string, (a: Tensor, b: Tensor) => Tensor, [number, number]][] = [
  ['add', (a, b) => a.add(b), [-2, 2]],
  ['add alpha', (a, b) => a.add(b, 0.5), [-2, 2]],
  ['sub', (a, b) => a.sub(b), [-2, 2]],
  ['mul', (a, b) => a.mul(b), [-2, 2]],
  ['div', (a, b) => a.div(b), [0.5, 2]],
  ['pow', (a, b) => a.pow(b), [0.5, 2]],
  ['maximum', (a, b) => a.maximum(b), [-2, 2]],
  ['minimum', (a, b) => a.minimum(b), [-2, 2]],
  ['where', (a, b) => q.where(a.gt(0), a, b), [-2, 2]],
];

describe('binary ops with broadcasting', () => {
  for (const [name, fn, range] of BINARY) {
    it(`${name} passes gradcheck on broadcast shape pairs`, () => {
      fc.assert(
        fc.property(arb.broadcastShapes({ maxRank: 3 }), fc.boolean(), ([sa, sb], nonContiguous) => {
          gradcheck(fn, [f64(sa, ...range), f64(sb, ...range)], { nonContiguous });
        }),
        { numRuns: 12 },
      );
      checkOp(fn, [[2, 3], [3]], { range });
    });
  }

  it('broadcast result shapes follow the NumPy rules', () => {
    fc.assert(
      fc.property(arb.broadcastShapes(), ([sa, sb]) => {
        const out = q.zeros(sa).add(q.zeros(sb)).shape;
        const n = Math.max(sa.length, sb.length);
        const expected = Array.from({ length: n }, (_, i) => Math.max(sa[sa.length - n + i] ?? 1, sb[sb.length - n + i] ?? 1));
        expect(out).toEqual(expected);
      }),
    );
  });

  it('names the op and both shapes when shapes do not broadcast', () => {
    expect(() => q.zeros([2, 3]).add(q.zeros([4]))).toThrow(/add: shapes \[2, 3\] and \[4\] cannot be broadcast/);
    expect(() => q.zeros([2, 3]).mul(q.zeros([3, 2]))).toThrow(/mul: shapes \[2, 3\] and \[3, 2\]/);
  });
});

describe('dtypes', () => {
  it('promotes like PyTorch: int + float → float, float32 + float64 → float64, numbers keep the tensor dtype', () => {
    const i = q.tensor([1, 2], { dtype: 'int32' });
    expect(i.add(q.tensor([0.5, 0.5])).dtype).toBe('float32');
    expect(q.tensor([1]).add(q.tensor([1], { dtype: 'float64' })).dtype).toBe('float64');
    expect(i.add(1).dtype).toBe('int32');
    expect(i.add(1.5).dtype).toBe('float32');
    expect(i.div(2).toArray()).toEqual([0.5, 1]);
    expect(q.tensor([1.7, -1.7]).to('int32').toArray()).toEqual([1, -1]);
  });

  it('comparisons give uint8 and no gradient', () => {
    const x = q.tensor([1, 2, 3], { requiresGrad: true });
    const m = x.gt(1.5);
    expect(m.dtype).toBe('uint8');
    expect(m.requiresGrad).toBe(false);
    expect(m.toArray()).toEqual([0, 1, 1]);
    expect(q.isfinite(q.tensor([1, Infinity, NaN])).toArray()).toEqual([1, 0, 0]);
  });

  it('round is half-to-even', () => {
    expect(q.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999]).round().toArray()).toEqual([0, 2, 2, -0, -2, 2]);
  });
});
