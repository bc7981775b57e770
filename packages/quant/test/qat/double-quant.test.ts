/**
 * @file QLoRA's double quantization of NF4's absmax scales (scale option double): the scales it
 * reconstructs, what it saves in bits per parameter, and convert's bit identity with it.
 */
import { describe, expect, it } from 'vitest';
import { Generator, noGrad, randn } from '@qgrad/core';
import { Linear, Sequential } from '@qgrad/nn';
import * as Q from '@qgrad/quant';

describe('double quantization of scales (QLoRA)', () => {
  it('stores NF4 absmaxes as E4M3 codes per block of 256 after the mean, close to the plain ones, at ≈ 4.127 bits per weight', () => {
    const g = new Generator(5);
    const m = new Sequential(new Linear(1024, 64, { generator: g, bias: false }));
    Q.prepareQAT(m, { default: { weight: { grid: 'nf4', scale: { double: true } } } });
    const wq = (m.at(0) as Q.QuantLinear).weightQuantizer!;
    expect(wq.extraRepr()).toBe('nf4 block64 ste dynamic/double/absmax');
    const w = (m.at(0) as Q.QuantLinear).weight;
    const plain = w.reshape([-1, 64]).abs().amax(-1, true); // [1024, 1]
    const gp = wq.gridParams(w);
    expect(gp.double!.codes.dtype).toBe('uint8');
    expect(gp.double!.second.shape).toEqual([4]); // 1024 scales in blocks of 256
    const c = plain.dataSync();
    const d = gp.scale.dataSync();
    const spread = Math.max(...Array.from(c, (v) => Math.abs(v - gp.double!.mean.item())));
    for (let i = 0; i < c.length; i++) expect(Math.abs(d[i]! - c[i]!)).toBeLessThanOrEqual(spread / 16 + 1e-7); // E4M3 keeps 3 mantissa bits
    const bits = Q.bitsPerParameter(m);
    const want = 65536 * 4 + 1024 * 8 + (4 + 1) * 32;
    expect(bits.totalBits).toBe(want);
    expect(bits.bitsPerParameter).toBeCloseTo(4.127, 3); // vs 4.5 with float32 absmaxes
    const x = randn([3, 1024], { generator: g });
    m.eval();
    const yFake = noGrad(() => m.forward(x));
    Q.convert(m, { kernel: 'dequantize' });
    const qz = m.at(0) as Q.QuantizedLinear;
    expect(qz.weightScale.dtype).toBe('uint8');
    expect(Array.from(noGrad(() => m.forward(x)).dataSync())).toEqual(Array.from(yFake.dataSync()));
    expect(Q.bitsPerParameter(m).totalBits).toBe(want);
  });

  it('applies to dynamic symmetric scales only, and says so', () => {
    expect(() => new Q.WeightQuantizer([4, 64], { grid: 'int', bits: 4, scale: { mode: 'learned', double: true } }, 'fc1')).toThrow(/fc1: scale option double .* applies to dynamic symmetric scales; grid 'int4' has a learned scale/);
    expect(() => new Q.WeightQuantizer([4, 64], { grid: 'mxfp4', scale: { double: true } }, 'fc1')).toThrow(/fc1: scale option double .* grid 'mxfp4' has a power-of-two scale/);
  });
});
