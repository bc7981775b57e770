/**
 * @file A converted tiny Llama generates on the packed kernel: W4 g32 greedy decoding with the KV
 * cache gives the same tokens as the fake-quant eval model it came from; so does a ternary one
 * whose weights are stored five per byte (kernel 'packedBase3').
 */
import { describe, expect, it } from 'vitest';
import { Generator, noGrad, tensor } from '@qgrad/core';
import { Llama, tinyLlamaConfig } from '@qgrad/nn';
import * as Q from '@qgrad/quant';

describe('converted tiny Llama generate()', () => {
  it('W4 g32: greedy tokens equal the fake-quant eval model, every Linear on the packed kernel', () => {
    const llama = new Llama(tinyLlamaConfig, { generator: new Generator(21) });
    Q.prepareQAT(llama, { default: { weight: { grid: 'int', bits: 4, granularity: { group: 32 } } }, types: ['Linear'] });
    llama.eval();
    const prompt = tensor([[72, 101, 108, 108, 111]], { dtype: 'int32' });
    const fake = llama.generate(prompt, 8, { temperature: 0 });
    const fakeLogits = noGrad(() => llama.forward(fake));
    const { converted } = Q.convert(llama);
    expect(converted.length).toBe(4 * 7 + 1); // q, k, v, o, gate, up, down per layer, and the head
    for (const name of converted) expect((llama.getSubmodule(name) as Q.QuantizedLinear).packedWeight(), name).not.toBeNull();
    const packed = llama.generate(prompt, 8, { temperature: 0 });
    expect(Array.from(packed.dataSync())).toEqual(Array.from(fake.dataSync()));
    // the logits behind those choices, within float32 summation error of the fake-quant ones
    const [a, b] = [noGrad(() => llama.forward(fake)).dataSync(), fakeLogits.dataSync()];
    const scale = Math.max(...Array.from(b, Math.abs));
    expect(Math.max(...Array.from(a, (v, i) => Math.abs(v - b[i]!)))).toBeLessThanOrEqual(1e-4 * scale);
  });

  it("ternary per channel, kernel 'packedBase3': greedy tokens equal the fake-quant eval model, every Linear on base-3 codes", () => {
    const llama = new Llama(tinyLlamaConfig, { generator: new Generator(22) });
    Q.prepareQAT(llama, { default: { weight: { grid: 'ternary', granularity: 'channel' } }, types: ['Linear'] });
    llama.eval();
    const prompt = tensor([[72, 101, 108, 108, 111]], { dtype: 'int32' });
    const fake = llama.generate(prompt, 8, { temperature: 0 });
    const fakeLogits = noGrad(() => llama.forward(fake));
    const { converted } = Q.convert(llama, { kernel: 'packedBase3' });
    expect(converted.length).toBe(4 * 7 + 1);
    for (const name of converted) {
      const layer = llama.getSubmodule(name) as Q.QuantizedLinear;
      expect([layer.codePacking, layer.packedWeight()?.packing], name).toEqual(['base3', 'base3']);
    }
    const packed = llama.generate(prompt, 8, { temperature: 0 });
    expect(Array.from(packed.dataSync())).toEqual(Array.from(fake.dataSync()));
    const [a, b] = [noGrad(() => llama.forward(fake)).dataSync(), fakeLogits.dataSync()];
    const scale = Math.max(...Array.from(b, Math.abs));
    expect(Math.max(...Array.from(a, (v, i) => Math.abs(v - b[i]!)))).toBeLessThanOrEqual(1e-4 * scale);
  });
});
