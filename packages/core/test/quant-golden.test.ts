import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { roundHalfEven } from '@qgrad/kernels';
import { assertAllclose } from '@qgrad/core/testing';

interface Case {
  name: string; shape: number[]; axis: number | null; qmin: number; qmax: number; gradFactor: number;
  x: number[]; scale: number[]; zeroPoint: number[]; v: number[];
  y: number[]; dx: number[]; dscale: number[]; dzeroPoint: number[]; note?: string;
}
const fixture = JSON.parse(readFileSync(new URL('./fixtures/fake_quantize.json', import.meta.url), 'utf8')) as { torch: string; cases: Case[] };

describe('fakeQuantize with the lsq estimator against PyTorch learnable fake-quant (float32 fixture)', () => {
  for (const c of fixture.cases) {
    it(`matches torch on: ${c.name}`, () => {
      const x = q.tensor(Float32Array.from(c.x), { shape: c.shape, requiresGrad: true });
      const s = q.tensor(Float32Array.from(c.scale), { requiresGrad: true });
      const z = q.tensor(Float32Array.from(c.zeroPoint), { requiresGrad: true });
      const y = q.fakeQuantize(x, s, z, { qmin: c.qmin, qmax: c.qmax, estimator: 'lsq', gradScale: c.gradFactor, ...(c.axis === null ? {} : { axis: c.axis }) });
      // forward and dx are elementwise float32 arithmetic: bit-exact
      expect(Array.from(y.dataSync())).toEqual(c.y);
      y.backward(q.tensor(Float32Array.from(c.v), { shape: c.shape }));
      if (c.note) {
        // documented divergence: torch's per-tensor backward takes z as (int)(z + 0.5) = 3 while its
        // forward (and qgrad, in both passes) uses nearbyint(z) = 2. Pin both masks.
        const mask = (z: number) => c.x.map((xv, i) => {
          const qv = roundHalfEven(Math.fround(xv * Math.fround(1 / c.scale[0]!))) + z;
          return c.v[i]! * (qv >= c.qmin && qv <= c.qmax ? 1 : 0);
        });
        expect(Array.from(x.grad!.dataSync())).toEqual(mask(2));
        expect(c.dx).toEqual(mask(3));
        return;
      }
      expect(Array.from(x.grad!.dataSync())).toEqual(c.dx);
      // scale / zero-point gradients are sums; the summation order differs from torch's
      assertAllclose(s.grad!, c.dscale, { rtol: 1e-5, atol: 1e-5 }, 'dscale');
      assertAllclose(z.grad!, c.dzeroPoint, { rtol: 1e-5, atol: 1e-5 }, 'dzeroPoint');
    });
  }
});
