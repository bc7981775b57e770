/**
 * @file HALO low-precision linear: each of its three int8 products (forward, dX, dW) equals the
 * float product within the bound derived from per-line int8 rounding of the rotated operands;
 * without rounding its gradient passes a float64 gradcheck and equals the float product's; the
 * rotation lowers the error on outlier inputs; the products run on the int8 kernel natively; the
 * module and prepareHalo swap Linear layers.
 */
import { describe, expect, it } from 'vitest';
import { currentBackend, Generator, linear, randn, tensor, type Tensor } from '@qgrad/core';
import { gradcheck } from '@qgrad/core/testing';
import { Linear, Sequential } from '@qgrad/nn';
import { haloBlock, haloLinear, HaloLinear, prepareHalo } from '@qgrad/quant';

/** Rows of a row-major [rows, n] array, each times the orthonormal Sylvester Hadamard of block b (an independent oracle for the rotation). */
function rotateRows(a: Float64Array, rows: number, n: number, b: number): Float64Array {
  const out = Float64Array.from(a);
  for (let r = 0; r < rows; r++) {
    for (let h = 1; h < b; h *= 2) {
      for (let i = 0; i < n; i += 2 * h) {
        for (let j = i; j < i + h; j++) {
          const [u, v] = [out[r * n + j]!, out[r * n + j + h]!];
          out[r * n + j] = u + v;
          out[r * n + j + h] = u - v;
        }
      }
    }
    for (let k = 0; k < n; k++) out[r * n + k]! /= Math.sqrt(b);
  }
  return out;
}

const transpose = (a: Float64Array, rows: number, cols: number) => Float64Array.from({ length: rows * cols }, (_, i) => a[(i % rows) * cols + Math.floor(i / rows)]!);

/**
 * The derived bound of the int8 product of a [M, K] and b [K, N] against the exact one, per
 * output. With α = aH rows and β = (Hᵀb)ᵀ rows (H orthonormal: ‖α‖ = ‖a row‖, α·β = a·b) and
 * per-row scales s = ‖α‖∞/127, t = ‖β‖∞/127, rounding moves each entry by ≤ s/2 (t/2), so
 * ‖α̂ − α‖ ≤ e = s√K/2, ‖β̂ − β‖ ≤ f = t√K/2 and |α̂·β̂ − α·β| ≤ e‖β‖ + (‖α‖ + e)·f; plus `slack`
 * of ‖α‖‖β‖ for float rounding (rotation, scaling, the float reference).
 */
function bound(a: Float64Array, b: Float64Array, M: number, K: number, N: number, slack: number): Float64Array {
  const blk = haloBlock(K);
  const al = rotateRows(a, M, K, blk);
  const be = rotateRows(transpose(b, K, N), N, K, blk);
  const stats = (x: Float64Array, rows: number) =>
    Array.from({ length: rows }, (_, r) => {
      let [inf, sq] = [0, 0];
      for (let k = 0; k < K; k++) {
        const v = x[r * K + k]!;
        inf = Math.max(inf, Math.abs(v));
        sq += v * v;
      }
      return { norm: Math.sqrt(sq), err: ((inf / 127) * Math.sqrt(K)) / 2 };
    });
  const [sa, sb] = [stats(al, M), stats(be, N)];
  return Float64Array.from({ length: M * N }, (_, i) => {
    const [p, q] = [sa[Math.floor(i / N)]!, sb[i % N]!];
    return p.err * q.norm + (p.norm + p.err) * q.err + slack * p.norm * q.norm;
  });
}

const f64 = (t: Tensor) => Float64Array.from(t.dataSync());

/** Index of the first |got − want| > tol, or −1. */
function beyond(got: Float64Array, want: Float64Array, tol: Float64Array): number {
  for (let i = 0; i < got.length; i++) if (!(Math.abs(got[i]! - want[i]!) <= tol[i]!)) return i;
  return -1;
}

const int8Calls = () => (currentBackend() as { stats?: () => { kernel: string; native: number }[] }).stats?.().filter((s) => s.kernel === 'int8Matmul').reduce((n, s) => n + s.native, 0) ?? null;

describe('haloLinear', () => {
  for (const dtype of ['float64', 'float32'] as const) {
    it(`equals the float product within the derived int8 bound, forward, dX and dW (${dtype})`, () => {
      const g = new Generator(7);
      const [T, I, O] = [96, 64, 48];
      const x = randn([T, I], { dtype, generator: g, requiresGrad: true });
      const w = randn([O, I], { dtype, generator: g, requiresGrad: true });
      const up = randn([T, O], { dtype, generator: g });
      const y = haloLinear(x, w);
      y.mul(up).sum().backward();
      const [xs, ws, gs] = [f64(x), f64(w), f64(up)];
      const slack = dtype === 'float64' ? 1e-12 : 1e-5;
      // forward: x [T, I] · wᵀ [I, O]
      const yRef = f64(linear(x.detach().to('float64'), w.detach().to('float64')));
      expect(beyond(f64(y), yRef, bound(xs, transpose(ws, O, I), T, I, O, slack))).toBe(-1);
      // dX = g [T, O] · w [O, I]
      const dxRef = f64(up.to('float64').matmul(w.detach().to('float64')));
      expect(beyond(f64(x.grad!), dxRef, bound(gs, ws, T, O, I, slack))).toBe(-1);
      // dW = gᵀ [O, T] · x [T, I]
      const dwRef = f64(up.to('float64').transpose(0, 1).matmul(x.detach().to('float64')));
      expect(beyond(f64(w.grad!), dwRef, bound(transpose(gs, T, O), xs, O, T, I, slack))).toBe(-1);
      // and it is a quantized product, not the float one
      expect(beyond(f64(y), yRef, new Float64Array(T * O).fill(1e-9))).toBeGreaterThanOrEqual(0);
    });
  }

  it('runs its three products on the int8 kernel natively (float32 on wasm)', () => {
    const before = int8Calls();
    if (before === null) return; // a backend without kernel statistics
    const x = randn([256, 128], { requiresGrad: true });
    const w = randn([64, 128], { requiresGrad: true });
    haloLinear(x, w).sum().backward();
    expect(int8Calls()).toBe(before + 3);
  });

  it('passes a float64 gradcheck with rounding off, and its gradient is the float product\'s', () => {
    const g = new Generator(3);
    const x = randn([2, 8, 16], { dtype: 'float64', generator: g });
    const w = randn([12, 16], { dtype: 'float64', generator: g });
    const b = randn([12], { dtype: 'float64', generator: g });
    const exact = (xx: Tensor, ww: Tensor, bb: Tensor) => haloLinear(xx, ww, bb, { round: false });
    expect(gradcheck(exact, [x, w, b]).ok).toBe(true);
    const [x1, w1, x2, w2] = [x, w, x, w].map((t) => t.clone().requiresGrad_());
    const up = randn([2, 8, 12], { dtype: 'float64', generator: g });
    haloLinear(x1!, w1!, null, { round: false }).mul(up).sum().backward();
    linear(x2!, w2!).mul(up).sum().backward();
    const close = (p: Tensor, q: Tensor) => expect(beyond(f64(p), f64(q), new Float64Array(p.numel()).fill(1e-12))).toBe(-1);
    close(x1!.grad!, x2!.grad!);
    close(w1!.grad!, w2!.grad!);
  });

  it('has a smaller error with the rotation than without on inputs with outlier features', () => {
    const g = new Generator(11);
    const x = randn([128, 128], { dtype: 'float64', generator: g });
    const outliers = tensor(Array.from({ length: 128 }, (_, k) => (k % 37 === 0 ? 40 : 1)), { dtype: 'float64' });
    const xo = x.mul(outliers);
    const w = randn([64, 128], { dtype: 'float64', generator: g });
    const ref = linear(xo, w);
    const err = (blockSize: number) => haloLinear(xo, w, null, { blockSize }).sub(ref).square().sum().item();
    expect(err(128)).toBeLessThan(err(1) / 4);
  });

  it('names both shapes when they do not match', () => {
    expect(() => haloLinear(randn([3, 5]), randn([4, 6]))).toThrow(/haloLinear: input of shape \[3, 5\] does not match weight \[4, 6\]/);
    expect(() => haloLinear(randn([3, 6]), randn([4, 6]), null, { blockSize: 3 })).toThrow(/haloLinear: blockSize must be a power of two, got 3/);
  });
});

describe('HaloLinear and prepareHalo', () => {
  it('swap the chosen Linear layers, train them in int8 and give the float layer back when disabled', () => {
    const g = new Generator(5);
    const model = new Sequential(new Linear(32, 64, { generator: g }), new Linear(64, 16, { generator: g }));
    const x = randn([20, 32], { generator: g });
    const ref = model.forward(x).detach();
    expect(prepareHalo(model, {}, { skip: ['1'] })).toEqual(['0']);
    const first = [...model.children()][0] as HaloLinear;
    expect(first).toBeInstanceOf(HaloLinear);
    const y = model.forward(x);
    y.square().mean().backward();
    expect(first.weight.grad!.shape).toEqual([64, 32]);
    expect(first.bias!.grad!.shape).toEqual([64]);
    expect(y.sub(ref).abs().max().item()).toBeLessThan(0.05 * ref.abs().max().item());
    first.enabled = false;
    expect(model.forward(x).sub(ref).abs().max().item()).toBeLessThan(1e-5);
  });
});
