/**
 * @file Adam/AdamW step: the js kernel on float32 against a reference that rounds each of
 * PyTorch's tensor ops to float32; wasm against the js kernel bit for bit on float32 for every
 * flag combination, odd lengths and offsets; the js kernel keeps strided gradients and float64.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsKernels, type AdamStepParams, type Backend } from '@qgrad/kernels';
import { type Arg, contiguous, randomArray, NATIVE } from './helpers.js';

/** The backend under test (each of NATIVE in turn). */
let backend!: Backend;

const seed = fc.integer({ min: 1, max: 2 ** 31 - 1 });

/** p, g, m, v of n float32 values each, at `offset` in their buffers; v ≥ 0 as Adam keeps it. */
function state(n: number, offset: number, s: number): Arg[] {
  const make = (j: number, f: (x: number) => number): Arg => {
    const d = new Float32Array(offset + n);
    d.set(randomArray('float32', n, s + j).map(f), offset);
    return contiguous(d, [n], 'float32', offset);
  };
  return [make(0, (x) => x), make(1, (x) => x * 1e-2), make(2, (x) => x * 1e-3), make(3, (x) => x * x * 1e-5)];
}

const clone = (t: Arg): Arg => ({ ...t, data: t.data.slice() });

/**
 * PyTorch's single-tensor Adam (torch/optim/adam.py, non-amsgrad) as a sequence of whole-tensor
 * float32 ops, each element of each op rounded to float32 and each Python-float scalar rounded to
 * float32 where an op takes it; `g` in logical order. Returns the new p, m, v.
 */
function torchAdam32(p: number[], g: number[], m: number[], v: number[], o: AdamStepParams): [number[], number[], number[]] {
  const f = Math.fround;
  let grad = o.maximize ? g.map((x) => -x) : g;
  if (o.weightDecay !== 0) {
    if (o.decoupled) p = p.map((x) => f(x * f(1 - o.lr * o.weightDecay))); // param.mul_(1 − lr·wd)
    else grad = grad.map((x, i) => f(x + f(f(o.weightDecay) * p[i]!))); // grad.add(param, alpha=wd)
  }
  // exp_avg.lerp_(grad, 1 − β₁): at::lerp's two formulas, chosen by the float weight
  const w = f(1 - o.beta1);
  m = m.map((x, i) => (w < 0.5 ? f(x + f(w * f(grad[i]! - x))) : f(grad[i]! - f(f(grad[i]! - x) * f(1 - w)))));
  // exp_avg_sq.mul_(β₂).addcmul_(grad, grad, value=1 − β₂): self + value·t1·t2, left to right
  v = v.map((x) => f(x * f(o.beta2)));
  v = v.map((x, i) => f(x + f(f(f(1 - o.beta2) * grad[i]!) * grad[i]!)));
  const stepSize = o.lr / (1 - o.beta1 ** o.step);
  const bc2Sqrt = Math.sqrt(1 - o.beta2 ** o.step);
  // denom = (exp_avg_sq.sqrt() / bc2Sqrt).add_(eps)
  const denom = v.map((x) => f(f(f(Math.sqrt(x)) / f(bc2Sqrt)) + f(o.eps)));
  // param.addcdiv_(exp_avg, denom, value=−stepSize): self + value·t1/t2
  p = p.map((x, i) => f(x + f(f(f(-stepSize) * m[i]!) / denom[i]!)));
  return [p, m, v];
}

const adamOpts = fc.record({
  lr: fc.double({ min: 1e-5, max: 0.1, noNaN: true }),
  beta1: fc.constantFrom(0.9, 0.5, 0.3, 0),
  beta2: fc.constantFrom(0.999, 0.99, 0.9),
  eps: fc.constantFrom(1e-8, 1e-6),
  weightDecay: fc.constantFrom(0, 0.01, 0.1),
  decoupled: fc.boolean(),
  maximize: fc.boolean(),
  step: fc.integer({ min: 1, max: 1000 }),
});

describe('js adamStep', () => {
  it('rounds each of PyTorch float32 Adam ops to float32 (contiguous, transposed and strided gradients)', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.integer({ min: 1, max: 70 }), fc.integer({ min: 2040, max: 2100 })),
        fc.constantFrom('contiguous', 'transposed', 'strided'),
        fc.integer({ min: 0, max: 3 }),
        adamOpts,
        seed,
        (n, layout, offset, o, s) => {
          const [p, g, m, v] = state(n, offset, s);
          // some exact zeros: g = 0 with m = v = 0 gives denom = eps
          for (let i = offset; i < offset + n; i += 7) g!.data[i] = m!.data[i] = v!.data[i] = 0;
          const want = torchAdam32(...([p, g, m, v].map((t) => [...t!.data.subarray(offset)]) as [number[], number[], number[], number[]]), o);
          let grad = g!;
          if (layout === 'transposed') {
            // the same logical gradient, [rows, cols] read from a column-major buffer
            const cols = [1, 2, 3, 5].find((c) => n % c === 0 && n / c > 1) ?? 1;
            const rows = n / cols;
            const t = new Float32Array(offset + n);
            for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[offset + c * rows + r] = g!.data[offset + r * cols + c]!;
            grad = { data: t, dtype: 'float32', shape: [rows, cols], strides: [1, rows], offset };
          } else if (layout === 'strided') {
            const t = new Float32Array(offset + 2 * n);
            for (let i = 0; i < n; i++) t[offset + 2 * i] = g!.data[offset + i]!;
            grad = { data: t, dtype: 'float32', shape: [n], strides: [2], offset };
          }
          const shaped = (t: Arg): Arg => ({ ...t, shape: grad.shape, strides: grad.shape.length === 2 ? [grad.shape[1]!, 1] : [1] });
          const [p2, m2, v2] = [p!, m!, v!].map(shaped);
          jsKernels.adamStep([p2, grad, m2, v2] as never, p2 as never, o);
          [p2, m2, v2].forEach((t, j) => expect([...t!.data.subarray(offset)]).toEqual(want[j]));
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe.each(NATIVE)('$label adamStep', (entry) => {
  beforeAll(() => {
    backend = entry.create({ threads: 2 });
  });
  afterAll(() => {
    backend.dispose();
  });

  it('equals the js kernel bit for bit in float32 (Adam, AdamW, L2, maximize, either lerp side)', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.integer({ min: 64, max: 200 }), fc.integer({ min: 2048, max: 6000 })),
        fc.integer({ min: 0, max: 3 }),
        adamOpts,
        seed,
        (n, offset, o, s) => {
          const a = state(n, offset, s);
          const b = a.map(clone);
          jsKernels.adamStep(a as never, a[0] as never, o);
          backend.run('adamStep', b as never, b[0] as never, o);
          for (const j of [0, 2, 3]) expect([...b[j]!.data]).toEqual([...a[j]!.data]);
        },
      ),
      { numRuns: 40 },
    );
    expect(backend.stats!().find((s) => s.kernel === 'adamStep')?.native).toBeGreaterThanOrEqual(40);
  });

  it('splits large tensors over the pool with the same bits as the js kernel', () => {
    const stat = () => backend.stats!().find((s) => s.kernel === 'adamStep')!;
    const pooled = stat().pooled;
    for (const [n, offset, decoupled, beta1] of [[1 << 17, 0, true, 0.9], [(1 << 17) + 4099, 3, false, 0.3]] as const) {
      const o = { lr: 3e-3, beta1, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, decoupled, maximize: false, step: 7 };
      const a = state(n, offset, n);
      const b = a.map(clone);
      jsKernels.adamStep(a as never, a[0] as never, o);
      backend.run('adamStep', b as never, b[0] as never, o);
      // bit for bit, compared as bytes (toEqual on 131K-element arrays takes seconds)
      const bytes = (t: Arg) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      for (const j of [0, 2, 3]) expect(Buffer.compare(bytes(b[j]!), bytes(a[j]!))).toBe(0);
    }
    expect(stat().pooled).toBe(pooled + 2);
  });

  it('leaves strided gradients, float64 and small tensors to the js kernel', () => {
    const o = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, decoupled: true, maximize: false, step: 3 };
    const ranJs = (dtype: string) => backend.stats!().find((s) => s.kernel === 'adamStep' && s.dtype === dtype)?.js ?? 0;
    const [before, before64] = [ranJs('float32'), ranJs('float64')];
    const [p, g, m, v] = state(64 * 64, 0, 5);
    const gT = { ...g!, shape: [64, 64], strides: [1, 64] };
    const p2 = { ...p!, shape: [64, 64], strides: [64, 1] };
    const m2 = { ...m!, shape: [64, 64], strides: [64, 1] };
    const v2 = { ...v!, shape: [64, 64], strides: [64, 1] };
    const ref = [p2, gT, m2, v2].map(clone);
    jsKernels.adamStep(ref as never, ref[0] as never, o);
    backend.run('adamStep', [p2, gT, m2, v2] as never, p2 as never, o);
    expect([...p2.data]).toEqual([...ref[0]!.data]);
    const small = state(12, 0, 6);
    backend.run('adamStep', small as never, small[0] as never, o);
    const f64 = state(4099, 1, 7).map((t) => ({ ...t, data: Float64Array.from(t.data), dtype: 'float64' as const }));
    const f64Ref = f64.map(clone);
    jsKernels.adamStep(f64Ref as never, f64Ref[0] as never, o);
    backend.run('adamStep', f64 as never, f64[0] as never, o);
    for (const j of [0, 2, 3]) expect([...f64[j]!.data]).toEqual([...f64Ref[j]!.data]);
    expect([ranJs('float32'), ranJs('float64')]).toEqual([before + 2, before64 + 1]);
  });
});
