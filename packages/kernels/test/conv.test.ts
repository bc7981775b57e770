/**
 * @file wasm im2col/col2im against the js oracle for random conv geometries and layouts.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsKernels, type Im2colParams, type Backend } from '@qgrad/kernels';
import { type FloatDType, convGeometry as geometry, mismatch, out, view, NATIVE } from './helpers.js';

/** The backend under test (each of NATIVE in turn). */
let backend!: Backend;

describe.each(NATIVE)('$label im2col / col2im', (entry) => {
  beforeAll(() => {
    backend = entry.create({ threads: 1 });
  });
  afterAll(() => {
    backend.dispose();
  });

  for (const dtype of ['float32', 'float64'] as FloatDType[]) {
    it(`im2col equals the js kernel in ${dtype} for any geometry and input layout`, () => {
      fc.assert(
        fc.property(geometry, (g) => {
          const p: Im2colParams = { kernel: g.kernel, stride: g.stride, padding: g.padding, dilation: g.dilation, padValue: g.padValue };
          const x = view(dtype, [g.N, g.C, g.H, g.W], g.order, 1, [], g.seed);
          const shape = [g.N, g.C * g.kernel[0] * g.kernel[1], g.oh * g.ow];
          const ref = out(dtype, shape);
          const got = out(dtype, shape);
          jsKernels.im2col([x], ref, p);
          backend.run('im2col', [x], got, p);
          expect(mismatch(got.data, ref.data, 0)).toBe(-1);
        }),
        { numRuns: 80 },
      );
      expect(backend.stats!().find((s) => s.kernel === 'im2col' && s.dtype === dtype)?.native).toBeGreaterThan(10);
    });

    it(`col2im is bit-identical to the js kernel in ${dtype} (same summation order)`, () => {
      fc.assert(
        fc.property(geometry, fc.boolean(), (g, transposed) => {
          const p: Im2colParams = { kernel: g.kernel, stride: g.stride, padding: g.padding, dilation: g.dilation, padValue: 0 };
          const shape = [g.N, g.C * g.kernel[0] * g.kernel[1], g.oh * g.ow];
          const cols = view(dtype, shape, transposed ? [0, 2, 1] : [0, 1, 2], 2, [], g.seed);
          const ref = out(dtype, [g.N, g.C, g.H, g.W]);
          const got = out(dtype, [g.N, g.C, g.H, g.W]);
          jsKernels.col2im([cols], ref, p);
          backend.run('col2im', [cols], got, p);
          expect(mismatch(got.data, ref.data, 0)).toBe(-1);
        }),
        { numRuns: 80 },
      );
      expect(backend.stats!().find((s) => s.kernel === 'col2im' && s.dtype === dtype)?.native).toBeGreaterThan(5);
    });
  }
});
