/**
 * @file wasm loraBackward against the js oracle: float32 and float64, token counts and widths
 * around the micro-tile (staged tail groups), views with offsets and row gaps, 1 vs 2 threads;
 * loraMerge against the js oracle and bit for bit against the backend's own matmul and add;
 * loraMergePacked against the js oracle and bit for bit against the backend's own packedGather and
 * loraMerge.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsKernels, type Backend } from '@qgrad/kernels';
import { type Arg, type FloatDType, mismatch, NATIVE, out, randomArray, view } from './helpers.js';

let one!: Backend;
let two!: Backend;

const abs = (x: Arg): Arg => ({ ...x, data: x.data.map(Math.abs) });
const dim = () => fc.oneof(fc.constantFrom(1, 3, 4, 5, 8, 9, 16, 17, 33), fc.integer({ min: 1, max: 40 }));

/** x [n, in], g [n, out] (maybe with a gap between rows), a [r, in], b [out, r] (maybe transposed views). */
const operands = (dtype: FloatDType) =>
  fc
    .record({ n: fc.oneof(fc.constantFrom(1, 3, 4, 31, 32, 33, 64, 67), fc.integer({ min: 1, max: 80 })), inF: dim(), outF: dim(), r: fc.integer({ min: 1, max: 9 }), gap: fc.integer({ min: 0, max: 3 }), offset: fc.integer({ min: 0, max: 5 }), transA: fc.boolean(), transB: fc.boolean(), seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }), scale: fc.constantFrom(1, 2, 0.5, -3) })
    .map(({ n, inF, outF, r, gap, offset, transA, transB, seed, scale }) => {
      // rows `gap` elements apart beyond their length: a narrowed view
      const gapped = (rows: number, cols: number, s: number): Arg => {
        const v = view(dtype, [rows, cols + gap], [0, 1], offset, [], s);
        return { ...v, shape: [rows, cols] };
      };
      const x = gapped(n, inF, seed);
      const g = gapped(n, outF, seed + 1);
      const a = view(dtype, [r, inF], transA ? [1, 0] : [0, 1], 0, [], seed + 2);
      const b = view(dtype, [outF, r], transB ? [1, 0] : [0, 1], 0, [], seed + 3);
      return { x, g, a, b, n, inF, outF, r, scale };
    });

describe.each(NATIVE)('$label loraBackward', (entry) => {
  beforeAll(() => {
    one = entry.create({ threads: 1, eager: true });
    two = entry.create({ threads: 2, eager: true });
  });
  afterAll(() => {
    one.dispose();
    two.dispose();
  });

  for (const dtype of ['float32', 'float64'] as const) {
    it(`equals the js kernel in ${dtype} on offset, gapped and transposed views`, () => {
      const eps = dtype === 'float32' ? 2 ** -24 : 2 ** -53;
      fc.assert(
        fc.property(operands(dtype), ({ x, g, a, b, n, inF, outF, r, scale }) => {
          const [ref, bound, got] = [0, 1, 2].map(() => [out(dtype, [r, inF]), out(dtype, [outF, r])] as const);
          jsKernels.loraBackward([x, g, a, b, ref[1]], ref[0], { scale });
          jsKernels.loraBackward([abs(x), abs(g), abs(a), abs(b), bound[1]], bound[0], { scale: Math.abs(scale) });
          one.run('loraBackward', [x, g, a, b, got[1]], got[0], { scale });
          // two chained sums (the inner of length in or out, the outer of length n) each within
          // its length·eps·Σ|terms|, for both the oracle and the kernel
          for (const k of [0, 1]) {
            const atol = bound[k]!.data.map((v) => 4 * (n + inF + outF) * eps * v + 1e-30);
            expect(mismatch(got[k]!.data, ref[k]!.data, 0, atol)).toBe(-1);
          }
        }),
        { numRuns: 150 },
      );
      expect(one.ranOn!('loraBackward', dtype)).toBe(entry.name);
    });
  }

  it('gives bit-identical results with 1 and 2 threads', () => {
    for (const [n, inF, outF, r] of [[4096, 128, 384, 8], [3001, 96, 40, 5]] as const) {
      for (const dtype of ['float32', 'float64'] as const) {
        const x = view(dtype, [n, inF], [0, 1], 0, [], 11);
        const g = view(dtype, [n, outF], [0, 1], 0, [], 12);
        const a = view(dtype, [r, inF], [0, 1], 0, [], 13);
        const b = view(dtype, [outF, r], [0, 1], 0, [], 14);
        const [da1, db1, da2, db2] = [out(dtype, [r, inF]), out(dtype, [outF, r]), out(dtype, [r, inF]), out(dtype, [outF, r])];
        one.run('loraBackward', [x, g, a, b, db1], da1, { scale: 2 });
        two.run('loraBackward', [x, g, a, b, db2], da2, { scale: 2 });
        expect(mismatch(da2.data, da1.data, 0, 0)).toBe(-1);
        expect(mismatch(db2.data, db1.data, 0, 0)).toBe(-1);
      }
    }
  });

  for (const dtype of ['float32', 'float64'] as const) {
    it(`merges w0 + b·(s·a) as js does, and bit for bit as its own mul, matmul and add, in ${dtype}`, () => {
      const eps = dtype === 'float32' ? 2 ** -24 : 2 ** -53;
      fc.assert(
        fc.property(dim(), dim(), fc.integer({ min: 1, max: 9 }), fc.boolean(), fc.boolean(), fc.integer({ min: 0, max: 3 }), fc.integer({ min: 1, max: 2 ** 31 - 1 }), fc.constantFrom(1, 2, 0.3, -3), (outF, inF, r, transA, transB, offset, seed, scale) => {
          const w0 = view(dtype, [outF, inF], [0, 1], offset, [], seed);
          const a = view(dtype, [r, inF], transA ? [1, 0] : [0, 1], 0, [], seed + 1);
          const b = view(dtype, [outF, r], transB ? [1, 0] : [0, 1], offset, [], seed + 2);
          const [ref, bound, got] = [out(dtype, [outF, inF]), out(dtype, [outF, inF]), out(dtype, [outF, inF])];
          jsKernels.loraMerge([w0, a, b], ref, { scale });
          jsKernels.loraMerge([abs(w0), abs(a), abs(b)], bound, { scale: Math.abs(scale) });
          one.run('loraMerge', [w0, a, b], got, { scale });
          const atol = bound.data.map((v) => 2 * (r + 2) * eps * v + 1e-30);
          expect(mismatch(got.data, ref.data, 0, atol)).toBe(-1);
          // the composite on the same backend: s·a, the product, the sum with w0 (a product of a
          // few rows may take the matvec kernel, which sums in another order)
          if (outF <= 4) return;
          const as = out(dtype, [r, inF]);
          const s0: Arg = { data: dtype === 'float32' ? Float32Array.of(scale) : Float64Array.of(scale), dtype, shape: [r, inF], strides: [0, 0], offset: 0 };
          one.run('binary', [a, s0], as, { op: 'mul' });
          const ba = out(dtype, [outF, inF]);
          one.run('matmul', [b, as], ba, {});
          const sum = out(dtype, [outF, inF]);
          one.run('binary', [w0, ba], sum, { op: 'add' });
          expect(mismatch(got.data, sum.data, 0, 0)).toBe(-1);
        }),
        { numRuns: 100 },
      );
      expect(one.ranOn!('loraMerge', dtype)).toBe(entry.name);
    });
  }

  it('merges a packed base (1/2/4/8-bit fields, int8 codes, zero points, β, float32 and float64) as js does, and bit for bit as its own packedGather and loraMerge, on 1 and 2 threads', () => {
    const flat = (data: Arg['data'], dtype: Arg['dtype']): Arg => ({ data, dtype, shape: [data.length], strides: [1], offset: 0 });
    // `fast`: the f32 4-bit scales-only layout in groups of 16k (the kernel's swizzle path)
    const caseArb = fc.record({
      V: fc.integer({ min: 1, max: 40 }), groups: fc.integer({ min: 1, max: 4 }), groupSize: fc.constantFrom(1, 3, 8, 16, 17, 32, 64), bits: fc.constantFrom(1, 2, 4, 8),
      zeroPoint: fc.boolean(), beta: fc.boolean(), int8: fc.boolean(), dtype: fc.constantFrom<FloatDType>('float32', 'float64'), fast: fc.boolean(),
      r: fc.integer({ min: 1, max: 9 }), transA: fc.boolean(), transB: fc.boolean(), seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }), scale: fc.constantFrom(1, 2, 0.3, -3),
    });
    fc.assert(
      fc.property(caseArb, (c0) => {
        const c = c0.fast ? { ...c0, dtype: 'float32' as const, bits: 4, zeroPoint: false, groupSize: [16, 32, 64][c0.seed % 3]! } : c0;
        const D = c.groups * c.groupSize;
        const eps = c.dtype === 'float32' ? 2 ** -24 : 2 ** -53;
        const nBytes = Math.ceil((c.V * D * c.bits) / 8);
        const r = randomArray('float64', nBytes, c.seed);
        const bytes = Uint8Array.from({ length: nBytes }, (_, i) => Math.floor((r[i]! + 1) * 128) & 0xff);
        const codes = c.int8 ? flat(new Int8Array(bytes.buffer), 'int8') : flat(bytes, 'uint8');
        const table = flat(randomArray(c.dtype, 2 ** c.bits, c.seed ^ 0x77), c.dtype);
        const scales = flat(randomArray(c.dtype, c.V * c.groups, c.seed ^ 0x55).map((v) => 0.01 + Math.abs(v)), c.dtype);
        const zero = flat(randomArray(c.dtype, c.V * c.groups, c.seed ^ 0x99), c.dtype);
        const packed = [codes, table, scales, ...(c.zeroPoint ? [zero] : [])];
        const params = { bits: c.bits, rows: c.V, groupSize: c.groupSize, zeroPoint: c.zeroPoint, ...(c.beta && { offset: 'beta' as const }) };
        const a = view(c.dtype, [c.r, D], c.transA ? [1, 0] : [0, 1], 0, [], c.seed + 1);
        const b = view(c.dtype, [c.V, c.r], c.transB ? [1, 0] : [0, 1], 1, [], c.seed + 2);
        const [ref, got, got2, w0, bound, sum] = [0, 1, 2, 3, 4, 5].map(() => out(c.dtype, [c.V, D]));
        jsKernels.loraMergePacked([a, b, ...packed], ref, { ...params, scale: c.scale });
        one.run('loraMergePacked', [a, b, ...packed], got, { ...params, scale: c.scale });
        two.run('loraMergePacked', [a, b, ...packed], got2, { ...params, scale: c.scale });
        // the decode is exact in both; the merge's sums of r terms within their (r + 2)·eps·Σ|terms|
        const idx = flat(Int32Array.from({ length: c.V }, (_, i) => i), 'int32');
        jsKernels.packedGather([idx, ...packed], w0, params);
        jsKernels.loraMerge([abs(w0), abs(a), abs(b)], bound, { scale: Math.abs(c.scale) });
        const atol = bound.data.map((v) => 2 * (c.r + 2) * eps * v + 1e-30);
        expect(mismatch(got.data, ref.data, 0, atol)).toBe(-1);
        expect(mismatch(got2.data, got.data, 0, 0)).toBe(-1);
        // the two kernels it stands for, on the same backend
        const w0b = out(c.dtype, [c.V, D]);
        one.run('packedGather', [idx, ...packed], w0b, params);
        one.run('loraMerge', [w0b, a, b], sum, { scale: c.scale });
        expect(mismatch(got.data, sum.data, 0, 0)).toBe(-1);
      }),
      { numRuns: 200 },
    );
    for (const dtype of ['float32', 'float64'] as const) expect(one.ranOn!('loraMergePacked', dtype)).toBe(entry.name);
  });
});
