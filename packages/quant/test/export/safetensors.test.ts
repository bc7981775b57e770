/**
 * @file saveQuantized / loadQuantized: a converted model written and read back gives the same
 * outputs bit for bit for every grid × granularity, with packed codes and the metadata saying
 * grid, bits, granularity and packing; the reader refuses files whose metadata and tensors disagree.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { deserializeSafetensors, Generator, noGrad, randn, serializeSafetensors, type Tensor } from '@qgrad/core';
import { Conv2d, Flatten, Linear, ReLU, Sequential } from '@qgrad/nn';
import * as Q from '@qgrad/quant';
import { arbQuant } from '@qgrad/quant/testing';

const dir = mkdtempSync(join(tmpdir(), 'qgrad-export-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const bits = (t: Tensor): string[] => (t.dtype === 'float64' ? Array.from(new BigUint64Array(Float64Array.from(t.dataSync()).buffer), String) : Array.from(new Uint32Array(Float32Array.from(t.dataSync()).buffer), String));

function mlp(g: Generator, inF: number, dtype: 'float32' | 'float64' = 'float32') {
  return new Sequential(new Linear(inF, 16, { generator: g, dtype }), new ReLU(), new Linear(16, 4, { generator: g, dtype }));
}

describe('saveQuantized / loadQuantized', () => {
  it('reload gives the same outputs bit for bit for every grid and granularity', () => {
    let ran = 0;
    const cases = fc.record({
      grid: arbQuant.gridConfig(),
      gran: fc.constantFrom<Q.Granularity>('tensor', 'channel', { group: 8 }, { block: 16 }),
      seed: fc.integer({ min: 1, max: 1e6 }),
      dtype: fc.constantFrom<'float32' | 'float64'>('float32', 'float64'),
      input: fc.constantFrom<Q.ActQuantConfig | null>(null, { bits: 8 }, { bits: 4, granularity: 'token' }, { bits: 8, signed: false, estimator: 'lsq+' }),
    });
    fc.assert(
      fc.property(cases, ({ grid, gran, seed, dtype, input }) => {
        const weight: Q.WeightQuantConfig = grid.grid === 'mxfp4' || grid.grid === 'mxfp8' ? grid : { ...grid, granularity: gran };
        const m = mlp(new Generator(seed), 32, dtype);
        try {
          Q.prepareQAT(m, { default: { weight, input } });
        } catch {
          return; // combinations the vocabulary refuses are its own tests' business
        }
        const x = randn([3, 32], { generator: new Generator(seed + 1), dtype });
        m.train();
        m.forward(x);
        m.eval();
        Q.convert(m);
        const want = noGrad(() => m.forward(x));
        const bytes = Q.serializeQuantized(m);
        const ck = Q.deserializeQuantized(bytes);
        const back = Q.applyQuantized(mlp(new Generator(seed + 7), 32, dtype), ck);
        expect(bits(noGrad(() => back.forward(x)))).toEqual(bits(want));
        const l0 = ck.layers['0']!;
        expect(l0.grid).toBe((m.at(0) as Q.QuantizedLinear).weightPlan.grid.label);
        if (l0.bits <= 4) expect(Object.keys(ck.tensors)).toContain('0.weight_packed');
        ran++;
      }),
      { numRuns: 60 },
    );
    expect(ran).toBeGreaterThan(20);
  });

  it('writes compressed-tensors names and int32 words for packed int4 rows, and a CNN round trips through a file', () => {
    const g = new Generator(3);
    const make = () => new Sequential(new Conv2d(1, 4, 3, { generator: g }), new ReLU(), new Flatten(), new Linear(4 * 6 * 6, 5, { generator: g }));
    const m = make();
    Q.prepareQAT(m, { default: { weight: { grid: 'int', bits: 4, granularity: { group: 9 } }, input: { bits: 8 } } });
    const x = randn([2, 1, 8, 8], { generator: g });
    m.train();
    m.forward(x);
    m.eval();
    Q.convert(m);
    const want = noGrad(() => m.forward(x));
    const path = join(dir, 'cnn.safetensors');
    Q.saveQuantized(m, path);
    const back = Q.loadQuantized(path, make());
    expect(bits(noGrad(() => back.forward(x)))).toEqual(bits(want));
    const ck = Q.deserializeQuantized(Q.serializeQuantized(m));
    expect(ck.tensors['3.weight_packed']!.dtype).toBe('int32');
    expect(ck.tensors['3.weight_packed']!.shape).toEqual([5, (144 * 4) / 32]);
    expect(Array.from(ck.tensors['3.weight_shape']!.dataSync())).toEqual([5, 144]);
    expect(ck.layers['0']).toMatchObject({ kind: 'Conv2d', grid: 'int4', bits: 4, granularity: 'group9' });
    const qc = JSON.parse(ck.metadata.quantization_config!);
    expect(qc).toMatchObject({ quant_method: 'compressed-tensors', format: 'pack-quantized' });
    expect(qc.config_groups.group_0.weights).toMatchObject({ num_bits: 4, type: 'int', symmetric: true, strategy: 'group', group_size: 9 });
  });

  it('refuses files whose metadata and tensors disagree, naming the layer', () => {
    const m = mlp(new Generator(5), 32);
    Q.prepareQAT(m, { default: { weight: { grid: 'int', bits: 4 } } });
    Q.convert(m);
    const { tensors, metadata } = deserializeSafetensors(Q.serializeQuantized(m));
    const layers = JSON.parse(metadata['qgrad.layers']!);
    const tamper = (f: (l: any, t: Record<string, Tensor>) => void) => {
      const l = structuredClone(layers);
      const t = { ...tensors };
      f(l, t);
      return () => Q.deserializeQuantized(serializeSafetensors(t, { ...metadata, 'qgrad.layers': JSON.stringify(l) }));
    };
    expect(tamper((l) => (l['0'].weightShape = [16, 33]))).toThrow(/layer '0'.*(matrix shape|weight_shape)/);
    expect(tamper((l) => (l['0'].bits = 2))).toThrow(/layer '0' has invalid packing/);
    expect(tamper((_, t) => delete t['0.weight_scale'])).toThrow(/'0.weight_scale' is missing/);
    expect(tamper((_, t) => (t['0.weight_packed'] = t['2.weight_packed']!))).toThrow(/layer '0': codes/);
    expect(tamper((l) => (l['0'].kind = 'LSTM'))).toThrow(/layer '0' has no kind/);
    expect(() => Q.deserializeQuantized(serializeSafetensors(tensors, { ...metadata, format: 'other' }))).toThrow(/format/);
  });
});
