/**
 * @file wasm Adam/AdamW step against the js kernel: bit for bit on float32 for every flag
 * combination, odd lengths and offsets; the js kernel keeps strided gradients and float64.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsKernels, type Backend } from '@qgrad/kernels';
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
        fc.integer({ min: 2048, max: 6000 }),
        fc.integer({ min: 0, max: 3 }),
        fc.record({
          lr: fc.double({ min: 1e-5, max: 0.1, noNaN: true }),
          beta1: fc.constantFrom(0.9, 0.5, 0.3, 0),
          beta2: fc.constantFrom(0.999, 0.99, 0.9),
          eps: fc.constantFrom(1e-8, 1e-6),
          weightDecay: fc.constantFrom(0, 0.01, 0.1),
          decoupled: fc.boolean(),
          maximize: fc.boolean(),
          step: fc.integer({ min: 1, max: 1000 }),
        }),
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
    const before = backend.stats!().find((s) => s.kernel === 'adamStep')?.js ?? 0;
    const [p, g, m, v] = state(64 * 64, 0, 5);
    const gT = { ...g!, shape: [64, 64], strides: [1, 64] };
    const p2 = { ...p!, shape: [64, 64], strides: [64, 1] };
    const m2 = { ...m!, shape: [64, 64], strides: [64, 1] };
    const v2 = { ...v!, shape: [64, 64], strides: [64, 1] };
    const ref = [p2, gT, m2, v2].map(clone);
    jsKernels.adamStep(ref as never, ref[0] as never, o);
    backend.run('adamStep', [p2, gT, m2, v2] as never, p2 as never, o);
    expect([...p2.data]).toEqual([...ref[0]!.data]);
    const small = state(100, 0, 6);
    backend.run('adamStep', small as never, small[0] as never, o);
    expect(backend.stats!().find((s) => s.kernel === 'adamStep')?.js).toBe(before + 2);
  });
});
