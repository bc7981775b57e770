/**
 * @file 2:4 sparsity-aware training: the mask keeps the two largest |w| of every group of four,
 * hardened layers hold at most two non-zeros per group, gradients flow (CAST's dense scaled
 * forward passes gradcheck in float64; magnitude is straight-through), CAST's decay touches only
 * pruned entries, and the mask composes with a W4 quantizer through prepareQAT and convert.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { currentBackend, fromTypedArray, keep, linear, sparse24Linear, sparse24Weight, tidy, unpack24, manualSeed, noGrad, randn, type Tensor } from '@qgrad/core';
import { gradcheck } from '@qgrad/core/testing';
import { Linear, ReLU, Sequential } from '@qgrad/nn';
import { convert, deserializeQuantized, hardMasks, nmMask, serializeQuantized, applyQuantized, prepareQAT, QuantizedLinear, QuantLinear, SemiStructuredMask, SparseLinear, sparsify } from '@qgrad/quant';

type Float = 'float32' | 'float64';

/** The largest number of non-zeros in any group of four consecutive entries of each row. */
function maxNonZerosPerGroup(w: Tensor): number {
  const d = w.contiguous().dataSync();
  let worst = 0;
  for (let g = 0; g < d.length; g += 4) {
    let nz = 0;
    for (let j = 0; j < 4; j++) if (d[g + j] !== 0) nz++;
    worst = Math.max(worst, nz);
  }
  return worst;
}

const mlp = (dtype: Float) => new Sequential(new Linear(16, 12, { dtype }), new ReLU(), new Linear(12, 8, { dtype }));

describe('nmMask', () => {
  it('keeps exactly the two largest magnitudes of every group of four', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 6 }), fc.array(fc.double({ min: -10, max: 10, noNaN: true }), { minLength: 24, maxLength: 24 }), (groups, vals) => {
      const w = vals.slice(0, groups * 4);
      const m = nmMask(w, 4);
      for (let g = 0; g < w.length; g += 4) {
        const kept = [0, 1, 2, 3].filter((j) => m[g + j] === 1);
        expect(kept.length).toBe(2);
        const minKept = Math.min(...kept.map((j) => Math.abs(w[g + j]!)));
        for (let j = 0; j < 4; j++) if (!m[g + j]) expect(Math.abs(w[g + j]!)).toBeLessThanOrEqual(minKept);
      }
    }));
  });

  it('breaks ties toward the lower index and names a row length that is not a multiple of four', () => {
    expect(Array.from(nmMask([1, 1, 1, 1], 4))).toEqual([1, 1, 0, 0]);
    expect(() => nmMask([1, 2, 3, 4, 5, 6], 6)).toThrow(/row length 6 is not a multiple of the group size 4/);
  });
});

describe.each(['float32', 'float64'] as const)('sparsify in %s', (dtype) => {
  it.each(['magnitude', 'cast'] as const)('%s: after training and hardening every group of four holds at most two non-zeros', (method) => {
    manualSeed(3);
    const model = mlp(dtype);
    const sp = sparsify(model, { pattern: '2:4', method, cast: { rampSteps: 5, decay: 50 } });
    expect([...sp.layers.keys()]).toEqual(['0', '2']);
    expect(model.getSubmodule('0')).toBeInstanceOf(SparseLinear);
    const x = randn([5, 16], { dtype });
    for (let s = 0; s < 30; s++) {
      for (const p of model.parameters()) p.grad = null;
      model.forward(x).square().mean().backward();
      noGrad(() => {
        for (const p of model.parameters()) if (p.grad) p.sub_(p.grad, 0.05);
      });
      sp.step(0.05);
    }
    const before = noGrad(() => model.forward(x));
    expect(hardMasks(model)).toEqual(['0', '2']);
    for (const l of sp.layers.values()) expect(maxNonZerosPerGroup(l.weight)).toBeLessThanOrEqual(2);
    expect(sp.zeroFraction()).toBeGreaterThanOrEqual(0.5);
    const after = noGrad(() => model.forward(x));
    // the hard mask is the same masked forward (magnitude) or removes only decayed entries (CAST)
    const diff = Math.max(...Array.from(after.sub(before).abs().dataSync()));
    expect(diff).toBeLessThan(method === 'magnitude' ? 1e-12 : 0.05);
    // frozen: the forward is linear with the masked weight
    const l0 = sp.layers.get('0')!;
    const y = noGrad(() => linear(x, l0.weight, l0.bias));
    expect(Array.from(noGrad(() => l0.forward(x)).dataSync())).toEqual(Array.from(y.dataSync()));
  });

  it('magnitude: the forward uses W ⊙ top2(|W|) and the weight gradient is the dense one (straight-through)', () => {
    manualSeed(4);
    const l = new Linear(8, 3, { dtype, bias: false });
    const model = new Sequential(l);
    sparsify(model, { pattern: '2:4', method: 'magnitude' });
    const s = model.getSubmodule('0') as SparseLinear;
    const x = randn([4, 8], { dtype });
    const m = fromTypedArray(nmMask(l.weight.dataSync(), 8), [3, 8], 'float32').to(dtype);
    expect(Array.from(s.forward(x).dataSync())).toEqual(Array.from(noGrad(() => linear(x, l.weight.mul(m))).dataSync()));
    const gy = randn([4, 3], { dtype });
    s.forward(x).mul(gy).sum().backward();
    const dense = noGrad(() => gy.t().matmul(x));
    expect(Array.from(l.weight.grad!.dataSync())).toEqual(Array.from(dense.dataSync()));
  });
});

describe('CAST', () => {
  it('the scaled dense forward passes gradcheck in float64 for the weight and the gain', () => {
    manualSeed(5);
    const mask = new SemiStructuredMask([3, 8], 'cast', 'float64');
    const x = randn([4, 8], { dtype: 'float64' });
    const w = randn([3, 8], { dtype: 'float64' }).requiresGrad_();
    const g = randn([3, 1], { dtype: 'float64' }).add(1).detach().requiresGrad_();
    gradcheck((wi, gi) => {
      mask.gain = gi!;
      return linear(x, mask.maskWeight(wi!)).square().sum();
    }, [w, g]);
  });

  it('decays only the pruned entries, by the proximal step, and with λ = 0 leaves the weight alone', () => {
    manualSeed(6);
    const mask = new SemiStructuredMask([4, 8], 'cast', 'float64', { decay: 3, rampSteps: 0 });
    const w = randn([4, 8], { dtype: 'float64' });
    const w0 = Array.from(w.dataSync());
    mask.step(w, 0.01);
    const m = Array.from(mask.mask.dataSync());
    const mean = w0.reduce((a, v) => a + Math.abs(v), 0) / w0.length;
    const t = 0.01 * 3 * mean;
    const w1 = Array.from(w.dataSync());
    for (let i = 0; i < w0.length; i++) {
      if (m[i]) expect(w1[i]).toBe(w0[i]);
      else expect(w1[i]).toBeCloseTo(Math.sign(w0[i]!) * Math.max(Math.abs(w0[i]!) - t, 0), 14);
    }
    const still = new SemiStructuredMask([4, 8], 'cast', 'float64', { decay: 0 });
    still.step(w, 0.01);
    expect(Array.from(w.dataSync())).toEqual(w1);
  });

  it('names a layer whose inputs do not group in fours', () => {
    expect(() => sparsify(new Sequential(new Linear(6, 4)), { pattern: '2:4', method: 'cast' })).toThrow(/layer '0'.*6 is not a multiple of 4/);
    expect(() => sparsify(new Sequential(new Linear(8, 4)), { pattern: '2:8' as '2:4', method: 'cast' })).toThrow(/pattern must be '2:4'/);
  });
});

describe('composition with a W4 quantizer', () => {
  it.each(['magnitude', 'cast'] as const)('%s: masks before quantizing, keeps the zeros through convert, and prepareQAT keeps a SparseLinear mask', (method) => {
    manualSeed(7);
    const model = mlp('float32');
    prepareQAT(model, { default: { weight: { grid: 'int', bits: 4, granularity: { group: 4 } } } });
    const sp = sparsify(model, { pattern: '2:4', method, targets: ['0', '2'] });
    const q = model.getSubmodule('0') as QuantLinear;
    expect(q).toBeInstanceOf(QuantLinear);
    if (method === 'magnitude') {
      expect(maxNonZerosPerGroup(noGrad(() => q.quantizedWeight()))).toBeLessThanOrEqual(2);
      const expected = noGrad(() => q.weightQuantizer!.forward(q.weight.mul(q.weightMask!.maskWeight(q.weight).ne(0).to('float32'))));
      expect(Array.from(noGrad(() => q.quantizedWeight()).dataSync())).toEqual(Array.from(expected.dataSync()));
    }
    const x = randn([3, 16]);
    model.forward(x).square().mean().backward();
    expect(Array.from(q.weight.grad!.dataSync()).some((v) => v !== 0)).toBe(true);
    expect(Array.from(q.weightQuantizer!.scale!.grad!.dataSync()).some((v) => v !== 0)).toBe(true);
    sp.harden();
    model.eval();
    const yFake = noGrad(() => model.forward(x));
    convert(model, { kernel: 'dequantize' });
    const c = model.getSubmodule('0') as QuantizedLinear;
    expect(maxNonZerosPerGroup(c.dequantizedWeight())).toBeLessThanOrEqual(2);
    expect(Array.from(model.forward(x).dataSync())).toEqual(Array.from(yFake.dataSync()));

    // the other order: sparsify the float model, then prepareQAT wraps the SparseLinear with its mask
    const m2 = mlp('float32');
    sparsify(m2, { pattern: '2:4', method });
    const mask = (m2.getSubmodule('0') as SparseLinear).weightMask;
    prepareQAT(m2, { default: { weight: { grid: 'int', bits: 4 } } });
    expect((m2.getSubmodule('0') as QuantLinear).weightMask).toBe(mask);
  });
});

describe('export of a 2:4 model', () => {
  it('saveQuantized writes pattern 2:4 with the kept positions, and loading keeps it; the sparse kernel equals the dense product', () => {
    manualSeed(8);
    const model = mlp('float32');
    prepareQAT(model, { default: { weight: { grid: 'int', bits: 4 } } });
    sparsify(model, { pattern: '2:4', method: 'cast' });
    convert(model, { kernel: 'dequantize' });
    const c = model.getSubmodule('0') as QuantizedLinear;
    expect(c.sparsity).toBe('2:4');
    const bytes = serializeQuantized(model);
    const ckpt = deserializeQuantized(bytes);
    expect(ckpt.layers['0']!.sparsity).toEqual({ pattern: '2:4', indices: 'weight_sparse_indices' });
    const w = c.dequantizedWeight();
    const sw = sparse24Weight(w);
    expect(Array.from(ckpt.tensors['0.weight_sparse_indices']!.dataSync())).toEqual(Array.from(sw.indices.dataSync()));
    expect(Array.from(unpack24({ values: sw.values.dataSync() as Float32Array, indices: sw.indices.dataSync() as Uint8Array }, 12, 16))).toEqual(Array.from(w.dataSync()));
    const x = randn([3, 16]);
    const dense = noGrad(() => linear(x, w, c.bias));
    const sparse = noGrad(() => sparse24Linear(x, sw, c.bias));
    expect(Math.max(...Array.from(sparse.sub(dense).abs().dataSync()))).toBeLessThan(1e-5);
    const loaded = applyQuantized(mlp('float32'), ckpt);
    expect((loaded.getSubmodule('0') as QuantizedLinear).sparsity).toBe('2:4');
    // the loaded layers run the 2:4 kernel, the saved ones the dequantizing forward: equal within float32 summation error
    expect((loaded.getSubmodule('0') as QuantizedLinear).kernel).toBe('sparse24');
    expect(Math.max(...Array.from(noGrad(() => loaded.forward(x).sub(model.forward(x))).abs().dataSync()))).toBeLessThan(1e-5);
  });
});

/** sparse24Matmul calls so far on the current backend (native and js fallback), or null where it keeps no stats. */
function sparseCalls(): number | null {
  const stats = (currentBackend() as { stats?: () => { kernel: string; native: number; js: number }[] }).stats?.();
  return stats ? stats.filter((s) => s.kernel === 'sparse24Matmul').reduce((n, s) => n + s.native + s.js, 0) : null;
}
const maxDiff = (a: Tensor, b: Tensor) => Math.max(...Array.from(a.sub(b).abs().dataSync()));

describe('2:4 inference on the sparse kernel', () => {
  it.each(['float32', 'float64'] as const)('SparseLinear in eval with a hardened mask multiplies by the kept half for few rows without grad (%s), else the dense product', (dtype) => {
    manualSeed(4);
    const model = mlp(dtype);
    const sp = sparsify(model, { pattern: '2:4', method: 'magnitude' });
    sp.harden();
    model.eval();
    const l0 = sp.layers.get('0') as SparseLinear;
    const x = randn([3, 16], { dtype });
    const dense = noGrad(() => linear(x, l0.maskedWeight(), l0.bias));
    const before = sparseCalls();
    // built inside a tidy, the compressed weight outlives it
    const y = tidy(() => keep(noGrad(() => l0.forward(x))));
    if (before !== null) expect(sparseCalls()).toBe(before + 1);
    const sw = l0.sparseWeight();
    expect(sw.values.shape).toEqual([12, 8]);
    expect(maxDiff(noGrad(() => l0.forward(x)), dense)).toBe(maxDiff(y, dense));
    // float64 sums in double like the dense product; float32 within summation error
    expect(maxDiff(y, dense)).toBeLessThan(dtype === 'float64' ? 1e-12 : 1e-5);
    // more rows than sparseMaxRows, or a gradient wanted: the dense product, bit for bit
    const xb = randn([l0.sparseMaxRows + 1, 16], { dtype });
    expect(Array.from(noGrad(() => l0.forward(xb)).dataSync())).toEqual(Array.from(noGrad(() => linear(xb, l0.maskedWeight(), l0.bias)).dataSync()));
    l0.forward(x).sum().backward();
    expect(l0.weight.grad).not.toBeNull();
    // a written weight is compressed again
    noGrad(() => l0.weight.mul_(2));
    expect(l0.sparseWeight()).not.toBe(sw);
    const m = new SemiStructuredMask([8, 16], 'magnitude', dtype);
    expect(() => SparseLinear.from(new Linear(16, 8, { dtype }), m).sparseWeight()).toThrow(/SparseLinear.sparseWeight: the mask is not hardened/);
  });

  it('convert runs a 2:4 QuantLinear on the kept half of its dequantized weight, within float32 summation error of the dequantizing forward', () => {
    const build = () => {
      manualSeed(9);
      const model = mlp('float32');
      prepareQAT(model, { default: { weight: { grid: 'int', bits: 4 } } });
      sparsify(model, { pattern: '2:4', method: 'magnitude' });
      return model;
    };
    const [a, b, c] = [build(), build(), build()];
    convert(a);
    convert(b, { kernel: 'dequantize' });
    convert(c, { kernel: 'packed' });
    for (const name of ['0', '2']) expect((a.getSubmodule(name) as QuantizedLinear).kernel).toBe('sparse24');
    expect((c.getSubmodule('0') as QuantizedLinear).kernel).toBe('packed');
    const x = randn([5, 16]);
    const before = sparseCalls();
    const ya = tidy(() => keep(a.forward(x)));
    if (before !== null) expect(sparseCalls()).toBe(before + 2);
    const yb = noGrad(() => b.forward(x));
    expect(maxDiff(ya, yb)).toBeLessThan(1e-5);
    expect(maxDiff(noGrad(() => a.forward(x)), ya)).toBe(0);
    expect(maxDiff(noGrad(() => c.forward(x)), yb)).toBeLessThan(1e-5);
  });
});
