/**
 * @file exportOnnx run by onnxruntime-node (a client nobody here wrote), with graph optimisation
 * off and on: converted MLPs (int8 per channel + QDQ int8 inputs, int4 blockwise per group, NF4
 * folded to float) and a CNN (per-channel int8 conv, max pool, flatten, linear) give qgrad's eval
 * output within float32 summation error; readOnnx agrees on the graph.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { Generator, noGrad, randn } from '@qgrad/core';
import { Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential } from '@qgrad/nn';
import * as Q from '@qgrad/quant';

const dir = mkdtempSync(join(tmpdir(), 'qgrad-onnx-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function check(model: Sequential, inputShape: number[], name: string, calib: number[]) {
  const g = new Generator(9);
  const x = randn(calib, { generator: g });
  model.train();
  model.forward(x); // initialises input scales
  model.eval();
  Q.convert(model);
  const path = join(dir, `${name}.onnx`);
  const res = Q.exportOnnx(model, path, { inputShape });
  const xs = randn(inputShape, { generator: g });
  const want = noGrad(() => model.forward(xs)).dataSync();
  const scale = Math.max(...Array.from(want, Math.abs));
  for (const level of ['disabled', 'all'] as const) {
    const session = await ort.InferenceSession.create(path, { graphOptimizationLevel: level });
    const out = await session.run({ input: new ort.Tensor('float32', Float32Array.from(xs.dataSync()), inputShape) });
    const got = out.output!.data as Float32Array;
    expect(got.length).toBe(want.length);
    let err = 0;
    for (let i = 0; i < got.length; i++) err = Math.max(err, Math.abs(got[i]! - want[i]!));
    expect(err, `${name} at ${level}`).toBeLessThanOrEqual(1e-5 * scale + 1e-6);
  }
  const file = Q.readOnnx(res.bytes);
  expect(file.opsets[0]!.version).toBe(21);
  return { res, file };
}

describe('exportOnnx, run by onnxruntime-node', () => {
  it('MLP: int8 per-channel weights behind DequantizeLinear, int8 inputs through QuantizeLinear/DequantizeLinear', async () => {
    const g = new Generator(1);
    const m = new Sequential(new Linear(20, 16, { generator: g }), new ReLU(), new Linear(16, 5, { generator: g }));
    Q.prepareQAT(m, { default: { weight: { grid: 'int', bits: 8 }, input: { bits: 8 } } });
    const { res, file } = await check(m, [4, 20], 'mlp-int8', [64, 20]);
    expect(res.layers.filter((l) => l.weight)).toEqual([expect.objectContaining({ weight: 'qdq', input: 'qdq' }), expect.objectContaining({ weight: 'qdq', input: 'qdq' })]);
    expect(file.nodes.map((n) => n.op)).toEqual(['QuantizeLinear', 'DequantizeLinear', 'DequantizeLinear', 'Gemm', 'Relu', 'QuantizeLinear', 'DequantizeLinear', 'DequantizeLinear', 'Gemm']);
    expect(file.initializers.find((t) => t.name === '0.weight_quantized')).toMatchObject({ dtype: 3, dims: [16, 20] });
  });

  it('MLP: int4 codes blockwise per group of 8, and NF4 going out as dequantized floats', async () => {
    const g = new Generator(2);
    const m = new Sequential(new Linear(32, 16, { generator: g }), new ReLU(), new Linear(16, 4, { generator: g }));
    Q.prepareQAT(m, { rules: [{ match: '0', weight: { grid: 'int', bits: 4, granularity: { group: 8 } } }], default: { weight: { grid: 'nf4' } } });
    const { res } = await check(m, [3, 32], 'mlp-int4-nf4', [8, 32]);
    expect(res.layers.filter((l) => l.weight).map((l) => l.weight)).toEqual(['qdq', 'float']);
  });

  it('CNN: per-channel int8 conv, max pool, flatten, linear', async () => {
    const g = new Generator(3);
    const m = new Sequential(new Conv2d(1, 4, 3, { generator: g, padding: 1 }), new ReLU(), new MaxPool2d(2), new Flatten(), new Linear(4 * 4 * 4, 3, { generator: g }));
    Q.prepareQAT(m, { default: { weight: { grid: 'int', bits: 8 }, input: { bits: 8 } } });
    const { file } = await check(m, [2, 1, 8, 8], 'cnn', [16, 1, 8, 8]);
    expect(file.nodes.map((n) => n.op)).toContain('Conv');
    expect(file.nodes.map((n) => n.op)).toContain('MaxPool');
  });

  it('refuses what it cannot map, naming the layer', () => {
    const m = new Sequential(new Linear(4, 4));
    Q.prepareQAT(m, { default: { weight: { grid: 'int', bits: 8 }, input: { bits: 4, granularity: 'token' } } });
    m.eval();
    Q.convert(m);
    expect(() => Q.modelToOnnx(m, { inputShape: [1, 4] })).toThrow(/layer 0 \(QuantizedLinear\).*int4/);
    expect(() => Q.modelToOnnx(new Linear(2, 2), { inputShape: [1, 2] })).toThrow(/Sequential/);
  });
});
