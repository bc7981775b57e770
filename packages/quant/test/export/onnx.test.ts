/**
 * @file exportOnnx run by onnxruntime-node (a client nobody here wrote), with graph optimisation
 * off and on: converted MLPs (int8 per channel + QDQ int8 inputs, int4 blockwise per group, NF4
 * folded to float, 4-bit as com.microsoft MatMulNBits or QDQ), a CNN (per-channel int8 conv, max
 * pool, flatten, linear) and a ViT (float, W8A8, W4 g16/g32) give qgrad's eval output within
 * float32 summation error; readOnnx agrees on the graph. The differences and file sizes are
 * printed at the end.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { Generator, noGrad, randn } from '@qgrad/core';
import { Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential, ViT, type ViTConfig } from '@qgrad/nn';
import * as Q from '@qgrad/quant';

const dir = mkdtempSync(join(tmpdir(), 'qgrad-onnx-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Per exported file: the largest |ORT − qgrad| at the asserted settings and at ORT's defaults with optimisation on, and the file's bytes. */
const table: { name: string; maxAbs: number; rel: number; defaults: number; bytes: number }[] = [];
afterAll(() => console.log(`exportOnnx vs qgrad eval (onnxruntime-node ${ort.env.versions.common}):\n${table.map((r) => `  ${r.name.padEnd(22)} max|Δ| ${r.maxAbs.toExponential(2)} (${r.rel.toExponential(2)} of max|y|), 'all' with ORT's defaults ${r.defaults.toExponential(2)}, ${r.bytes} bytes`).join('\n')}`));

/**
 * ORT at 'extended'/'all' fuses blockwise DequantizeLinear → MatMul into MatMulNBits computed
 * with int8-quantized activations (its accuracy level 4, ORT's own speed/accuracy trade); level 0
 * keeps float activations, which is what the file says.
 */
const FLOAT_FUSION = { session: { qdq_matmulnbits_accuracy_level: '0' } };

/**
 * Converts `model` (after one training forward on `calib` sets its input scales) unless it is
 * float, exports it, runs the file in onnxruntime with optimisation disabled and all and compares
 * with qgrad's eval output: max |Δ| ≤ tol·max|y| + 1e-6. ORT's default settings at 'all' are held
 * to the same bound, or to `fusedTol` where its int8-activation fusion applies.
 */
async function check(model: Sequential | ViT, inputShape: number[], name: string, calib: number[] | null, opts: { int4?: Q.Int4Export; tol?: number; fusedTol?: number } = {}) {
  const g = new Generator(9);
  if (calib) {
    const x = randn(calib, { generator: g });
    model.train();
    model.forward(x); // initialises input scales
    model.eval();
    Q.convert(model);
  } else model.eval();
  const path = join(dir, `${name}.onnx`);
  const res = Q.exportOnnx(model, path, { inputShape, int4: opts.int4 });
  const xs = randn(inputShape, { generator: g });
  const want = noGrad(() => model.forward(xs)).dataSync();
  const scale = Math.max(...Array.from(want, Math.abs));
  const errs: number[] = [];
  for (const [level, extra] of [['disabled', {}], ['all', FLOAT_FUSION], ['all', {}]] as const) {
    const session = await ort.InferenceSession.create(path, { graphOptimizationLevel: level, extra });
    const out = await session.run({ input: new ort.Tensor('float32', Float32Array.from(xs.dataSync()), inputShape) });
    const got = out.output!.data as Float32Array;
    expect(got.length).toBe(want.length);
    let err = 0;
    for (let i = 0; i < got.length; i++) err = Math.max(err, Math.abs(got[i]! - want[i]!));
    const tol = errs.length === 2 ? (opts.fusedTol ?? opts.tol ?? 1e-5) : (opts.tol ?? 1e-5);
    expect(err, `${name} at ${level}${errs.length === 2 ? " with ORT's defaults" : ''}`).toBeLessThanOrEqual(tol * scale + 1e-6);
    errs.push(err);
  }
  const worst = Math.max(errs[0]!, errs[1]!);
  table.push({ name, maxAbs: worst, rel: worst / scale, defaults: errs[2]!, bytes: res.bytes.length });
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

  it('MLP: uint8 inputs with their zero points (asymmetric, and unsigned after the ReLU) through QuantizeLinear/DequantizeLinear', async () => {
    const g = new Generator(8);
    const m = new Sequential(new Linear(20, 16, { generator: g }), new ReLU(), new Linear(16, 5, { generator: g }));
    Q.prepareQAT(m, { rules: [{ match: '2', weight: { grid: 'int', bits: 8 }, input: { bits: 8, signed: false } }], default: { weight: { grid: 'int', bits: 8 }, input: { bits: 8, signed: false, asymmetric: true } } });
    const { res, file } = await check(m, [4, 20], 'mlp-int8-uint8', [64, 20]);
    expect(res.layers.filter((l) => l.weight).every((l) => l.input === 'qdq')).toBe(true);
    const zero = (name: string) => file.initializers.find((t) => t.name === name)!;
    // randn inputs need the asymmetric grid's zero point near the middle of 0…255 to keep their negatives
    expect(zero('0.input_zero_point')).toMatchObject({ dtype: 2, dims: [] });
    expect(zero('0.input_zero_point').bytes[0]).toBeGreaterThan(64);
    expect(zero('2.input_zero_point')).toMatchObject({ dtype: 2, dims: [] });
    expect(zero('2.input_zero_point').bytes[0]).toBe(0);
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

const W4 = (group: number, asymmetric = false) => ({ weight: { grid: 'int' as const, bits: 4, granularity: { group }, ...(asymmetric && { asymmetric }) } });

describe('4-bit Linear weights as com.microsoft MatMulNBits', () => {
  const mlp = (seed: number) => {
    const g = new Generator(seed);
    return new Sequential(new Linear(128, 64, { generator: g }), new ReLU(), new Linear(64, 48, { generator: g }), new ReLU(), new Linear(48, 10, { generator: g }));
  };
  it('MLP, symmetric int4 in groups of 32 and 16: signed codes + 8 and no zero-point input; QDQ as packed INT4; both under a quarter of float32', async () => {
    const runs = [];
    for (const int4 of ['matmulnbits', 'qdq'] as const) {
      const m = mlp(4);
      Q.prepareQAT(m, { rules: [{ match: '0', ...W4(32) }], default: W4(16) });
      runs.push(await check(m, [5, 128], `mlp-w4-${int4}`, [32, 128], { int4 }));
    }
    const [nbits, qdq] = runs as [Awaited<ReturnType<typeof check>>, Awaited<ReturnType<typeof check>>];
    expect(nbits.res.layers.map((l) => l.weight).filter(Boolean)).toEqual(['matmulnbits', 'matmulnbits', 'matmulnbits']);
    expect(qdq.res.layers.map((l) => l.weight).filter(Boolean)).toEqual(['qdq', 'qdq', 'qdq']);
    const node = nbits.file.nodes.find((n) => n.op === 'MatMulNBits')!;
    expect(node).toMatchObject({ domain: 'com.microsoft', attrs: { K: 128, N: 64, bits: 4, block_size: 32 } });
    expect(nbits.file.opsets).toContainEqual({ domain: 'com.microsoft', version: 1 });
    expect(nbits.file.initializers.find((t) => t.name === '0.weight_packed')).toMatchObject({ dtype: 2, dims: [64, 4, 16] });
    const codes = qdq.file.initializers.find((t) => t.name === '0.weight_quantized')!;
    expect([codes.dtype, codes.dims, codes.bytes.length]).toEqual([22, [64, 128], 4096]);
    // 11,744 weights at half a byte in both files
    expect(Math.abs(qdq.res.bytes.length - nbits.res.bytes.length)).toBeLessThan(0.02 * nbits.res.bytes.length);
    const float = await check(mlp(4), [5, 128], 'mlp-float32', null);
    expect(float.res.bytes.length).toBeGreaterThan(4 * qdq.res.bytes.length);
  });

  it('MLP, asymmetric uint4 with zero points packed per row (three blocks a row: a padded nibble), and as UINT4 QDQ', async () => {
    const m = mlp(5);
    Q.prepareQAT(m, { default: W4(16, true) });
    const { res, file } = await check(m, [5, 128], 'mlp-w4a-g16', [32, 128]);
    expect(res.layers.filter((l) => l.weight).every((l) => l.weight === 'matmulnbits')).toBe(true);
    expect(file.initializers.find((t) => t.name === '4.weight_zero_point')).toMatchObject({ dtype: 2, dims: [10 * 2] });
    const again = mlp(5);
    Q.prepareQAT(again, { default: W4(16, true) });
    const qdq = await check(again, [5, 128], 'mlp-w4a-g16-qdq', [32, 128], { int4: 'qdq' });
    expect(qdq.file.initializers.find((t) => t.name === '4.weight_zero_point')).toMatchObject({ dtype: 21, dims: [10, 3] });
  });

  it('falls back to QDQ where MatMulNBits cannot hold the codes (groups of 8, int8)', async () => {
    const m = mlp(6);
    Q.prepareQAT(m, { rules: [{ match: '0', ...W4(8) }, { match: '2', weight: { grid: 'int', bits: 8, granularity: { group: 16 } } }], default: W4(16) });
    const { res } = await check(m, [2, 128], 'mlp-fallback', [32, 128]);
    expect(res.layers.filter((l) => l.weight).map((l) => l.weight)).toEqual(['qdq', 'qdq', 'matmulnbits']);
  });

  it('readOnnx refuses a contrib node whose domain has no opset import, and a K that disagrees with the packed weight', () => {
    const m = mlp(7);
    Q.prepareQAT(m, { default: W4(16), rules: [{ match: '0', ...W4(32) }] });
    m.eval();
    Q.convert(m);
    const bytes = Q.modelToOnnx(m, { inputShape: [1, 128] }).bytes;
    const at = (needle: number[]) => bytes.findIndex((_, i) => needle.every((b, j) => bytes[i + j] === b));
    // the opset import comes before the graph, so the first 'com.microsoft' is the import
    const renamed = bytes.slice();
    renamed[at([...new TextEncoder().encode('com.microsoft')]) + 12] = 0x78; // 'x'
    expect(() => Q.readOnnx(renamed)).toThrow(/MatMulNBits is in domain 'com.microsoft', which the model imports no opset of/);
    // attribute K = 128: name 'K' (0a 01 4b), then i = 128 (18 80 01); 129 needs 5 blocks of 32
    const k = bytes.slice();
    k[at([0x0a, 0x01, 0x4b, 0x18, 0x80, 0x01]) + 4] = 0x81;
    expect(() => Q.readOnnx(k)).toThrow(/K 129, N 64, 4 bits in blocks of 32 need uint8 \[64, 5, 16\]/);
  });
});

describe('ViT', () => {
  const cfg: ViTConfig = { imageSize: 8, patchSize: 4, inChannels: 1, numClasses: 5, dim: 32, depth: 2, numHeads: 4, mlpDim: 64 };
  const vit = () => new ViT(cfg, { generator: new Generator(7) });
  const input = [3, 1, 8, 8];
  const calib = [16, 1, 8, 8];

  it('float: patch conv, class token, positions, LayerNorm, attention (MatMul/Softmax), exact GELU, head', async () => {
    const m = vit();
    const { file } = await check(m, input, 'vit-float32', null);
    for (const op of ['Conv', 'Expand', 'Concat', 'LayerNormalization', 'Softmax', 'Gelu', 'Gather', 'Gemm']) expect(file.nodes.map((n) => n.op)).toContain(op);
    // the batch is symbolic: the class token follows the input's batch, not the exported one
    const x = randn([5, 1, 8, 8], { generator: new Generator(1) });
    const session = await ort.InferenceSession.create(join(dir, 'vit-float32.onnx'));
    const got = (await session.run({ input: new ort.Tensor('float32', Float32Array.from(x.dataSync()), [5, 1, 8, 8]) })).output!;
    const want = noGrad(() => m.forward(x)).dataSync();
    expect(got.dims).toEqual([5, 5]);
    expect(Math.max(...Array.from(got.data as Float32Array, (v, i) => Math.abs(v - want[i]!)))).toBeLessThan(1e-5);
  });

  it('W8A8: per-channel int8 weights and int8 inputs, QDQ on every Linear and the patch conv', async () => {
    const m = vit();
    Q.prepareQAT(m, { default: { weight: { grid: 'int', bits: 8 }, input: { bits: 8 } } });
    const { res } = await check(m, input, 'vit-w8a8', calib);
    expect(res.layers.every((l) => l.weight === 'qdq' && l.input === 'qdq')).toBe(true);
    expect(res.layers).toHaveLength(2 + 6 * cfg.depth);
  });

  for (const group of [16, 32]) {
    for (const int4 of ['matmulnbits', 'qdq'] as const) {
      it(`W4 g${group} as ${int4}`, async () => {
        const m = vit();
        Q.prepareQAT(m, { default: W4(group), types: ['Linear'] });
        const { res } = await check(m, input, `vit-w4-g${group}-${int4}`, calib, { int4, fusedTol: int4 === 'qdq' ? 3e-2 : undefined });
        expect(res.layers.filter((l) => l.op !== 'Conv').every((l) => l.weight === (int4 === 'qdq' ? 'qdq' : 'matmulnbits'))).toBe(true);
      });
    }
  }
});
