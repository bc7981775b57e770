/**
 * @file PTQTP's TritPlaneLinear leaving qgrad (issue 20): saveQuantized / loadQuantized round-trip
 * it bit for bit (both planes packed, 2 bits a weight each, beside converted layers; the metadata
 * names the format, and compressed-tensors readers get a format they refuse); the reader refuses
 * planes, scales or a template that disagree with the metadata. ONNX: two INT4 DequantizeLinear
 * whose sum is Ŵ (an MLP through Gemm, a ViT through MatMul), run by onnxruntime-node within
 * float32 summation error of qgrad. GGUF: Ŵ as F32
 * (exactly, read back by @huggingface/gguf's offsets) or F16; the block types are refused, naming
 * the layer and the type, since no GGUF type holds two ternary planes.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gguf } from '@huggingface/gguf';
import fc from 'fast-check';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { Generator, noGrad, randn, type Tensor } from '@qgrad/core';
import { Linear, ReLU, Sequential, ViT, type LlamaConfig, type ViTConfig } from '@qgrad/nn';
import * as Q from '@qgrad/quant';
import { seededLlama } from '../export/seeded-llama.js';

const dir = mkdtempSync(join(tmpdir(), 'qgrad-ptqtp-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const bits = (t: Tensor): string[] => (t.dtype === 'float64' ? Array.from(new BigUint64Array(Float64Array.from(t.dataSync()).buffer), String) : Array.from(new Uint32Array(Float32Array.from(t.dataSync()).buffer), String));

interface Shape { inF: number; hidden: number; groupSize: number; bias: boolean; dtype: 'float32' | 'float64'; seed: number }

/** Linear(inF, hidden) → ReLU → Linear(hidden, 4): the first two-plane (PTQTP), the last int4 converted, unless `mixed` is false. */
function model(s: Shape, mixed = true) {
  const g = new Generator(s.seed);
  const m = new Sequential(new Linear(s.inF, s.hidden, { generator: g, dtype: s.dtype, bias: s.bias }), new ReLU(), new Linear(s.hidden, 4, { generator: g, dtype: s.dtype }));
  return { m, g, quantize: () => {
    Q.ptq(m, [], { method: 'ptqtp', ptqtp: { groupSize: s.groupSize }, ...(mixed && { skip: ['2'] }) });
    if (mixed) {
      Q.prepareQAT(m, { default: { weight: { grid: 'int', bits: 4 } } });
      Q.convert(m);
    }
    m.eval();
    return m;
  } };
}

describe('saveQuantized / loadQuantized with PTQTP layers', () => {
  it('round-trips TritPlaneLinear bit for bit beside a converted layer: planes, α, bias and outputs (float32 and float64)', () => {
    const shapes = fc.record({
      inF: fc.constantFrom(8, 12, 30, 64),
      groups: fc.integer({ min: 1, max: 3 }),
      hidden: fc.integer({ min: 1, max: 9 }),
      bias: fc.boolean(),
      dtype: fc.constantFrom<'float32' | 'float64'>('float32', 'float64'),
      seed: fc.integer({ min: 0, max: 1e6 }),
    });
    fc.assert(
      fc.property(shapes, ({ inF, groups, hidden, bias, dtype, seed }) => {
        const groupSize = inF % groups === 0 ? inF / groups : inF;
        const s: Shape = { inF, hidden, groupSize, bias, dtype, seed };
        const { m, g, quantize } = model(s);
        quantize();
        const tp = m.at(0) as Q.TritPlaneLinear;
        expect(tp).toBeInstanceOf(Q.TritPlaneLinear);
        expect(m.at(2)).toBeInstanceOf(Q.QuantizedLinear);
        const x = randn([3, inF], { generator: g, dtype });
        const want = noGrad(() => m.forward(x));
        const ck = Q.deserializeQuantized(Q.serializeQuantized(m));
        const info = ck.tritPlanes['0']!;
        expect(info).toEqual({ format: Q.TRIT_PLANES_FORMAT, weightShape: [hidden, inF], groupSize, packing: { fieldBits: 2, order: 'lsb-first', container: 'uint8', offset: -1 }, dtype, bias });
        // both planes stored packed, 2 bits a weight each
        for (const i of [1, 2]) {
          const t = ck.tensors[`0.weight_plane${i}_packed`]!;
          expect(t.dtype).toBe('uint8');
          expect(t.numel()).toBe(Math.ceil((hidden * inF * 2) / 8));
          if ((inF * 2) % 8 === 0) expect(t.shape).toEqual([hidden, (inF * 2) / 8]);
        }
        expect(JSON.parse(ck.metadata.quantization_config!).format).toBe('qgrad-ptqtp');
        expect(Object.keys(ck.layers)).toEqual(['2']);
        const back = Q.applyQuantized(model({ ...s, seed: seed + 1 }).m, ck);
        const tb = back.at(0) as Q.TritPlaneLinear;
        expect(tb).toBeInstanceOf(Q.TritPlaneLinear);
        expect(tb.groupSize).toBe(groupSize);
        for (const k of ['plane1', 'plane2', 'scale1', 'scale2', 'bias'] as const) {
          if (tp[k] === null) expect(tb[k]).toBeNull();
          else {
            expect(tb[k]!.dtype, k).toBe(tp[k]!.dtype);
            expect(tb[k]!.shape, k).toEqual(tp[k]!.shape);
            expect(bits(tb[k]!.to(tb[k]!.dtype === 'uint8' ? 'float32' : tb[k]!.dtype)), k).toEqual(bits(tp[k]!.to(tp[k]!.dtype === 'uint8' ? 'float32' : tp[k]!.dtype)));
          }
        }
        expect(bits(noGrad(() => back.forward(x)))).toEqual(bits(want));
      }),
      { numRuns: 40 },
    );
  });

  it('goes through a file: saveQuantized, then loadQuantized into a fresh float model, same outputs bit for bit', () => {
    const s: Shape = { inF: 64, hidden: 32, groupSize: 32, bias: true, dtype: 'float32', seed: 3 };
    const { m, g, quantize } = model(s, false);
    quantize();
    const x = randn([5, 64], { generator: g });
    const path = join(dir, 'ptqtp.safetensors');
    Q.saveQuantized(m, path);
    const back = Q.loadQuantized(path, model({ ...s, seed: 4 }, false).m);
    expect(back.at(2)).toBeInstanceOf(Q.TritPlaneLinear);
    expect(bits(noGrad(() => back.forward(x)))).toEqual(bits(noGrad(() => m.forward(x))));
  });

  it('refuses planes, scales, metadata or a template that disagree, naming the layer (and the header offset)', () => {
    const s: Shape = { inF: 16, hidden: 4, groupSize: 8, bias: true, dtype: 'float32', seed: 5 };
    const { m, quantize } = model(s);
    quantize();
    const { tensors, metadata } = Q.quantizedEntries(m);
    const short = { ...tensors, '0.weight_plane2_packed': tensors['0.weight_plane2_packed']!.narrow(0, 0, 3).contiguous() };
    expect(() => Q.checkQuantized(short, metadata)).toThrow(/trit-plane layer '0': tensor '0\.weight_plane2_packed' must be 16 uint8 bytes \(4·16 2-bit fields\); it is uint8 \[3, 4\] \(header at byte 8\)/);
    const scale = { ...tensors, '0.weight_plane1_scale': tensors['0.weight_plane1_scale']!.to('float64') };
    expect(() => Q.checkQuantized(scale, metadata)).toThrow(/tensor '0\.weight_plane1_scale' must be float32 \[4, 2\]; it is float64 \[4, 2\]/);
    const noBias = { ...tensors };
    delete noBias['0.bias'];
    expect(() => Q.checkQuantized(noBias, metadata)).toThrow(/the metadata says bias true, the file has no tensor '0\.bias'/);
    const meta = JSON.parse(metadata['qgrad.trit_planes']!);
    expect(() => Q.checkQuantized(tensors, { ...metadata, 'qgrad.trit_planes': JSON.stringify({ 0: { ...meta['0'], format: 'ptqtp/3' } }) })).toThrow(/trit-plane layer '0' has format "ptqtp\/3", expected 'qgrad\.ptqtp\/2x-ternary'/);
    expect(() => Q.checkQuantized(tensors, { ...metadata, 'qgrad.trit_planes': JSON.stringify({ 0: { ...meta['0'], groupSize: 5 } }) })).toThrow(/groupSize 5 must divide the 16 inputs/);
    const ck = Q.deserializeQuantized(Q.serializeQuantized(m));
    expect(() => Q.applyQuantized(model({ ...s, inF: 24, groupSize: 8 }).m, ck)).toThrow(/loadQuantized: trit-plane layer '0': file weight float32 \[4, 16\] with bias, template float32 \[4, 24\] with bias/);
  });
});

describe('exportOnnx with PTQTP layers', () => {
  it('writes each TritPlaneLinear as two INT4 DequantizeLinear summed, and onnxruntime reproduces qgrad within float32 summation error', async () => {
    const g = new Generator(21);
    const m = new Sequential(new Linear(64, 32, { generator: g }), new ReLU(), new Linear(32, 10, { generator: g }));
    Q.ptq(m, [], { method: 'ptqtp', ptqtp: { groupSize: 32 } }); // layer 0 in two groups a row (blocked), layer 2 in one (per row)
    m.eval();
    const path = join(dir, 'ptqtp.onnx');
    const res = Q.exportOnnx(m, path, { inputShape: [1, 64] });
    expect(res.layers.filter((l) => l.planes === 2).map((l) => [l.name, l.op, l.weight])).toEqual([['0', 'Gemm', 'qdq'], ['2', 'Gemm', 'qdq']]);
    const file = Q.readOnnx(res.bytes);
    // INT4 (22) codes [N, K], α [N, K / 32] blocked or [N] per row
    expect(file.initializers.find((t) => t.name === '0.plane1.weight_quantized')).toMatchObject({ dtype: 22, dims: [32, 64] });
    expect(file.initializers.find((t) => t.name === '0.plane2.weight_scale')).toMatchObject({ dtype: 1, dims: [32, 2] });
    expect(file.initializers.find((t) => t.name === '2.plane2.weight_scale')).toMatchObject({ dtype: 1, dims: [10] });
    expect(file.nodes.filter((n) => n.op === 'DequantizeLinear')).toHaveLength(4);
    // the codes as written are the planes' codes
    const tp = m.at(0) as Q.TritPlaneLinear;
    const nib = file.initializers.find((t) => t.name === '0.plane1.weight_quantized')!.bytes;
    const codes = Array.from({ length: 32 * 64 }, (_, i) => (((nib[i >> 1]! >> ((i & 1) * 4)) & 15) << 28) >> 28);
    expect(codes).toEqual(Array.from(tp.planes()[0]));
    const xs = randn([7, 64], { generator: g });
    const want = noGrad(() => m.forward(xs)).dataSync();
    const scale = Math.max(...Array.from(want, Math.abs));
    for (const level of ['disabled', 'all'] as const) {
      const session = await ort.InferenceSession.create(path, { graphOptimizationLevel: level });
      const out = await session.run({ input: new ort.Tensor('float32', Float32Array.from(xs.dataSync()), [7, 64]) });
      const got = out.output!.data as Float32Array;
      expect(got.length).toBe(want.length);
      let err = 0;
      for (let i = 0; i < got.length; i++) err = Math.max(err, Math.abs(got[i]! - want[i]!));
      expect(err, level).toBeLessThanOrEqual(1e-5 * scale + 1e-6);
    }
  });

  it('on a ViT (MatMul on [N, T, dim] activations: planes written [K, N]) matches qgrad too', async () => {
    const cfg: ViTConfig = { imageSize: 8, patchSize: 4, inChannels: 1, numClasses: 5, dim: 32, depth: 1, numHeads: 4, mlpDim: 64 };
    const vit = new ViT(cfg, { generator: new Generator(7) });
    Q.ptq(vit, [], { method: 'ptqtp', ptqtp: { groupSize: 16 } }); // Linear layers two-plane; the patch conv RTN ternary
    Q.convert(vit);
    vit.eval();
    expect(vit.getSubmodule('blocks.0.mlp.fc1')).toBeInstanceOf(Q.TritPlaneLinear);
    const path = join(dir, 'ptqtp-vit.onnx');
    const res = Q.exportOnnx(vit, path, { inputShape: [2, 1, 8, 8] });
    expect(res.layers.find((l) => l.name === 'blocks.0.mlp.fc1')).toMatchObject({ op: 'MatMul', planes: 2 });
    expect(Q.readOnnx(res.bytes).initializers.find((t) => t.name === 'blocks.0.mlp.fc1.plane1.weight_scale')).toMatchObject({ dims: [32 / 16, 64] });
    const xs = randn([2, 1, 8, 8], { generator: new Generator(8) });
    const want = noGrad(() => vit.forward(xs)).dataSync();
    const scale = Math.max(...Array.from(want, Math.abs));
    const session = await ort.InferenceSession.create(path, { graphOptimizationLevel: 'disabled' });
    const got = (await session.run({ input: new ort.Tensor('float32', Float32Array.from(xs.dataSync()), [2, 1, 8, 8]) })).output!.data as Float32Array;
    let err = 0;
    for (let i = 0; i < got.length; i++) err = Math.max(err, Math.abs(got[i]! - want[i]!));
    expect(err).toBeLessThanOrEqual(1e-5 * scale + 1e-6);
  });

  it('refuses float64 α, naming the layer', () => {
    const m = new Sequential(new Linear(16, 4, { generator: new Generator(1), dtype: 'float64' }));
    Q.ptq(m, [], { method: 'ptqtp' });
    expect(() => Q.modelToOnnx(m, { inputShape: [1, 16] })).toThrow(/exportOnnx: layer 0 \(TritPlaneLinear\): its α scales are float64; ONNX export writes float32/);
  });
});

describe('exportGguf with PTQTP layers', () => {
  const cfg: LlamaConfig = { vocabSize: 256, dim: 64, nLayers: 1, nHeads: 4, nKvHeads: 2, hiddenDim: 128, maxSeqLen: 32, normEps: 1e-5, ropeTheta: 10000, tieWordEmbeddings: false };
  const llama = seededLlama(cfg, 7);
  Q.ptq(llama, [], { method: 'ptqtp', types: ['Linear'], ptqtp: { groupSize: 32 } });
  llama.eval();

  it('writes Ŵ = α¹T¹ + α²T² as F32 exactly (read at @huggingface/gguf\'s offsets) and as F16 rounded to half', async () => {
    const path = join(dir, 'ptqtp-f32.gguf');
    const res = Q.exportGguf(llama, path, { type: 'F32' });
    const bytes = new Uint8Array(readFileSync(path));
    const hf = await gguf(path, { allowLocalFile: true, typedMetadata: true });
    const ours = Q.readGguf(bytes);
    for (const [name, module] of [['blk.0.ffn_down.weight', 'model.layers.0.mlp.down_proj'], ['blk.0.attn_v.weight', 'model.layers.0.self_attn.v_proj'], ['output.weight', 'lm_head']] as const) {
      const tp = llama.getSubmodule(module) as Q.TritPlaneLinear;
      expect(tp).toBeInstanceOf(Q.TritPlaneLinear);
      const info = hf.tensorInfos.find((t) => t.name === name)!;
      const at = Number(hf.tensorDataOffset + info.offset);
      const values = new Float32Array(bytes.slice(at, at + tp.outFeatures * tp.inFeatures * 4).buffer);
      expect(Array.from(values), name).toEqual(Array.from(tp.weight().dataSync()));
      expect(res.tensors.find((t) => t.name === name)).toMatchObject({ type: 'F32', source: 'float', maxAbsError: 0 });
      expect(ours.tensors.find((t) => t.name === name)!.type).toBe('F32');
    }
    const half = Q.llamaToGguf(llama, { type: 'F16' });
    const down = llama.getSubmodule('model.layers.0.mlp.down_proj') as Q.TritPlaneLinear;
    const r = half.tensors.find((t) => t.name === 'blk.0.ffn_down.weight')!;
    expect(r.type).toBe('F16');
    const maxW = Math.max(...Array.from(down.weight().dataSync(), Math.abs));
    expect(r.maxAbsError).toBeLessThanOrEqual(maxW * 2 ** -11);
  });

  it('refuses the block types, naming the layer and the type', () => {
    for (const type of ['Q8_0', 'Q4_0', 'TQ1_0', 'TQ2_0'] as const) {
      expect(() => Q.llamaToGguf(llama, { type })).toThrow(new RegExp(`exportGguf: model\\.layers\\.0\\.self_attn\\.q_proj is a TritPlaneLinear .* which GGUF type ${type} cannot hold`));
    }
  });
});
