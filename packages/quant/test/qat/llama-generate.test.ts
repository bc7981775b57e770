/**
 * @file A converted tiny Llama generates on the packed kernel: for every packed weight format (W8
 * per channel, W4 g32, NF4 with double-quantized absmax, MXFP4, ternary in 2-bit fields and five
 * per byte with kernel 'packedBase3'), greedy decoding with the KV cache gives the same tokens as
 * the fake-quant eval model it came from.
 */
import { describe, expect, it } from 'vitest';
import { Generator, noGrad, tensor } from '@qgrad/core';
import { Llama, tinyLlamaConfig } from '@qgrad/nn';
import * as Q from '@qgrad/quant';

const ternary: Q.WeightQuantConfig = { grid: 'ternary', granularity: 'channel' };
const cases: [string, Q.WeightQuantConfig, Q.QuantizedKernel, number][] = [
  ['W8 per channel', { grid: 'int', bits: 8, granularity: 'channel' }, 'packed', 23],
  ['W4 g32', { grid: 'int', bits: 4, granularity: { group: 32 } }, 'packed', 21],
  ['NF4 b64, double-quantized absmax', { grid: 'nf4', scale: { double: true } }, 'packed', 24],
  ['MXFP4', { grid: 'mxfp4' }, 'packed', 25],
  ['ternary per channel, 2-bit fields', ternary, 'packed', 26],
  ['ternary per channel, base 3', ternary, 'packedBase3', 22],
];

describe('converted tiny Llama generate()', () => {
  it.each(cases)('%s: greedy tokens equal the fake-quant eval model, every Linear on the packed kernel', (_, weight, kernel, seed) => {
    const llama = new Llama(tinyLlamaConfig, { generator: new Generator(seed) });
    Q.prepareQAT(llama, { default: { weight }, types: ['Linear'] });
    llama.eval();
    const prompt = tensor([[72, 101, 108, 108, 111]], { dtype: 'int32' });
    const fake = llama.generate(prompt, 8, { temperature: 0 });
    const fakeLogits = noGrad(() => llama.forward(fake));
    const { converted } = Q.convert(llama, { kernel });
    expect(converted.length).toBe(4 * 7 + 1); // q, k, v, o, gate, up, down per layer, and the head
    for (const name of converted) {
      const layer = llama.getSubmodule(name) as Q.QuantizedLinear;
      expect(layer.kernel, name).toBe(kernel);
      // a null packedWeight would send forward down the dequantize path, which equals the fake-quant model trivially
      expect(layer.packedWeight(), name).not.toBeNull();
      if (kernel === 'packedBase3') expect([layer.codePacking, layer.packedWeight()?.packing], name).toEqual(['base3', 'base3']);
    }
    const packed = llama.generate(prompt, 8, { temperature: 0 });
    expect(Array.from(packed.dataSync())).toEqual(Array.from(fake.dataSync()));
    // the logits behind those choices, within float32 summation error of the fake-quant ones: the
    // packed kernel sums the same products in another order (K ≤ 384 terms of |x·w| ≲ max|y|)
    const [a, b] = [noGrad(() => llama.forward(fake)).dataSync(), fakeLogits.dataSync()];
    const scale = Math.max(...Array.from(b, Math.abs));
    expect(Math.max(...Array.from(a, (v, i) => Math.abs(v - b[i]!)))).toBeLessThanOrEqual(1e-4 * scale);
  });
});
