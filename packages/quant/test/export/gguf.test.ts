/**
 * @file exportGguf checked by a client nobody here wrote: `@huggingface/gguf` parses the file
 * (llama keys with their types, tensor infos in ne order, contiguous 32-aligned offsets, no extra
 * tensors) and our decoding of the blocks at its offsets gives back the converted layers' codes
 * (Q/K rows permuted as llama.cpp expects) and their scales rounded to half; ggml's reference
 * rounding where no codes map; readGguf agrees. Every tensor read back at the client's offsets into
 * a float qgrad Llama by llama.cpp's names gives the converted model's logits. llama.cpp itself runs
 * the files in gguf-llama-cpp.test.ts.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gguf, GGUFValueType } from '@huggingface/gguf';
import { afterAll, describe, expect, it } from 'vitest';
import { Generator, noGrad, randn, tensor } from '@qgrad/core';
import { Embedding, Linear, Llama, RMSNorm, type LlamaConfig } from '@qgrad/nn';
import * as Q from '@qgrad/quant';
import { seededLlama } from './seeded-llama.js';

const dir = mkdtempSync(join(tmpdir(), 'qgrad-gguf-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
/** The client's metadata as a plain record (its types list known architectures only). */
const meta = (hf: { metadata: object }) => hf.metadata as Record<string, unknown>;
const half = (v: number) => Q.halfToFloat(Q.floatToHalf(v));

const small: LlamaConfig = { vocabSize: 256, dim: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, hiddenDim: 128, maxSeqLen: 32, normEps: 1e-5, ropeTheta: 10000, tieWordEmbeddings: false };
const ternaryCfg: LlamaConfig = { ...small, dim: 256, hiddenDim: 512, nLayers: 1 };

function converted(cfg: LlamaConfig, weight: Q.WeightQuantConfig): Llama {
  const llama = new Llama(cfg, { generator: new Generator(11) });
  Q.prepareQAT(llama, { default: { weight }, types: ['Linear'] });
  llama.train();
  llama.forward(tensor([[1, 2, 3]], { dtype: 'int32' }));
  Q.convert(llama);
  return llama;
}

/** Rows of the HF layout in llama.cpp's order: per head, (i, i + hd/2) → (2i, 2i + 1). */
function permuted(rows: number, heads: number): number[] {
  const hd = rows / heads;
  const from: number[] = [];
  for (let h = 0; h < heads; h++) for (let i = 0; i < hd / 2; i++) for (let j = 0; j < 2; j++) from.push(h * hd + j * (hd / 2) + i);
  return from;
}

async function parsed(llama: Llama, type: Q.GgmlTypeName, name: string) {
  const path = join(dir, name);
  const res = Q.exportGguf(llama, path, { type });
  const bytes = new Uint8Array(readFileSync(path));
  const hf = await gguf(path, { allowLocalFile: true, typedMetadata: true });
  return { res, bytes, hf, ours: Q.readGguf(bytes) };
}

const LLAMA_KEYS: [string, GGUFValueType][] = [
  ['general.architecture', GGUFValueType.STRING], ['llama.context_length', GGUFValueType.UINT32], ['llama.embedding_length', GGUFValueType.UINT32],
  ['llama.block_count', GGUFValueType.UINT32], ['llama.feed_forward_length', GGUFValueType.UINT32], ['llama.attention.head_count', GGUFValueType.UINT32],
  ['llama.attention.head_count_kv', GGUFValueType.UINT32], ['llama.attention.layer_norm_rms_epsilon', GGUFValueType.FLOAT32],
  ['llama.rope.dimension_count', GGUFValueType.UINT32], ['tokenizer.ggml.model', GGUFValueType.STRING],
];

describe('exportGguf, read by @huggingface/gguf', () => {
  it('Q4_0 from int4 codes in groups of 32: keys, tensor infos, aligned contiguous offsets, codes and half scales back', async () => {
    const llama = converted(small, { grid: 'int', bits: 4, granularity: { group: 32 } });
    const { res, bytes, hf, ours } = await parsed(llama, 'Q4_0', 'q4.gguf');
    for (const [k, t] of LLAMA_KEYS) expect((hf.typedMetadata as Record<string, { type: number }>)[k]?.type, k).toBe(t);
    expect(meta(hf)['general.architecture']).toBe('llama');
    expect(meta(hf)['llama.attention.head_count_kv']).toBe(2);
    expect(meta(hf)['llama.rope.dimension_count']).toBe(16);
    // 1 embedding + 9 per layer + output norm + output: no extras (llama.cpp refuses those)
    expect(hf.tensorInfos.map((t) => t.name)).toEqual(ours.tensors.map((t) => t.name));
    expect(hf.tensorInfos).toHaveLength(1 + 9 * small.nLayers + 2);
    expect(Number(hf.tensorDataOffset) % 32).toBe(0);
    expect(Number(hf.tensorDataOffset)).toBe(ours.dataOffset);
    let expected = 0n;
    for (const t of hf.tensorInfos) {
      expect(t.offset).toBe(expected);
      const mine = ours.tensors.find((o) => o.name === t.name)!;
      expect(t.shape.map(Number)).toEqual(mine.dims);
      expect(t.dtype).toBe(Q.GGML_TYPES[mine.type].id);
      const n = mine.dims.reduce((a, b) => a * b, 1);
      expected += BigInt(Math.ceil(Q.ggmlBytes(mine.type, n) / 32) * 32);
    }
    const q = hf.tensorInfos.find((t) => t.name === 'blk.1.attn_q.weight')!;
    expect(q.shape.map(Number)).toEqual([64, 64]); // ne = [in, out]
    expect(q.dtype).toBe(2);
    for (const [name, path, heads] of [['blk.1.attn_q.weight', 'model.layers.1.self_attn.q_proj', 4], ['blk.0.attn_k.weight', 'model.layers.0.self_attn.k_proj', 2], ['blk.0.ffn_down.weight', 'model.layers.0.mlp.down_proj', 0]] as const) {
      const info = hf.tensorInfos.find((t) => t.name === name)!;
      const [cols, rows] = info.shape.map(Number) as [number, number];
      const at = Number(hf.tensorDataOffset + info.offset);
      const blk = Q.decodeBlocks('Q4_0', bytes.subarray(at, at + Q.ggmlBytes('Q4_0', rows * cols)), rows * cols);
      const layer = llama.getSubmodule(path) as Q.QuantizedLinear;
      const codes = layer.codes().dataSync();
      const scales = layer.scales().dataSync();
      const order = heads ? permuted(rows, heads) : Array.from({ length: rows }, (_, r) => r);
      const wantCodes: number[] = [];
      const wantScales: number[] = [];
      for (const r of order) {
        for (let c = 0; c < cols; c++) wantCodes.push(codes[r * cols + c]!);
        for (let g = 0; g < cols / 32; g++) wantScales.push(half(scales[r * (cols / 32) + g]!));
      }
      expect(Array.from(blk.codes)).toEqual(wantCodes);
      expect(Array.from(blk.scales)).toEqual(wantScales);
    }
    const fromCodes = res.tensors.filter((t) => t.source === 'codes');
    expect(fromCodes).toHaveLength(7 * small.nLayers + 1); // every projection and the head; the embedding stayed a float layer
    expect(fromCodes.every((t) => t.maxAbsError < 1e-3)).toBe(true); // only the half rounding of scales
    expect(res.tensors.find((t) => t.name === 'token_embd.weight')!.source).toBe('requantized');
  });

  it('Q8_0, F16, F32 and TQ1_0/TQ2_0 from ternary codes decode to what was written', async () => {
    const cases: [Q.GgmlTypeName, LlamaConfig, Q.WeightQuantConfig][] = [
      ['Q8_0', small, { grid: 'int', bits: 8, granularity: { group: 32 } }],
      ['F16', small, { grid: 'int', bits: 8 }],
      ['F32', small, { grid: 'nf4' }],
      ['TQ1_0', ternaryCfg, { grid: 'ternary', granularity: { group: 256 } }],
      ['TQ2_0', ternaryCfg, { grid: 'ternary', granularity: { group: 256 } }],
    ];
    for (const [type, cfg, weight] of cases) {
      const llama = converted(cfg, weight);
      const { res, bytes, hf, ours } = await parsed(llama, type, `${type}.gguf`);
      expect(hf.tensorInfos.length).toBe(1 + 9 * cfg.nLayers + 2);
      const up = ours.tensors.find((t) => t.name === 'blk.0.ffn_up.weight')!;
      expect(up.type).toBe(type);
      const { values, blocks } = Q.ggufTensorData(ours, bytes, up);
      const layer = llama.getSubmodule('model.layers.0.mlp.up_proj') as Q.QuantizedLinear;
      const w = layer.dequantizedWeight().dataSync();
      if (type === 'F32') expect(Array.from(values)).toEqual(Array.from(w));
      else if (type === 'F16') expect(Array.from(values)).toEqual(Array.from(w, half));
      else {
        expect(Array.from(blocks!.codes)).toEqual(Array.from(layer.codes().dataSync()));
        expect(res.tensors.find((t) => t.name === 'blk.0.ffn_up.weight')!.source).toBe('codes');
      }
      // the report's error is what the file holds against qgrad's weights
      let err = 0;
      for (let i = 0; i < w.length; i++) err = Math.max(err, Math.abs(values[i]! - w[i]!));
      expect(res.tensors.find((t) => t.name === 'blk.0.ffn_up.weight')!.maxAbsError).toBe(err);
    }
  });

  it("TQ1_0 of a ternary Llama converted with kernel 'packedBase3': each block's 52 code bytes are the layer's row bytes", async () => {
    const llama = new Llama(ternaryCfg, { generator: new Generator(12) });
    Q.prepareQAT(llama, { default: { weight: { grid: 'ternary', granularity: { group: 256 } } }, types: ['Linear'] });
    llama.train();
    llama.forward(tensor([[1, 2, 3]], { dtype: 'int32' }));
    Q.convert(llama, { kernel: 'packedBase3' });
    const { res, bytes, ours } = await parsed(llama, 'TQ1_0', 'base3.gguf');
    for (const [file, module] of [['blk.0.ffn_up.weight', 'model.layers.0.mlp.up_proj'], ['blk.0.ffn_down.weight', 'model.layers.0.mlp.down_proj'], ['output.weight', 'lm_head']]) {
      const info = ours.tensors.find((t) => t.name === file)!;
      expect(info.type).toBe('TQ1_0');
      expect(res.tensors.find((t) => t.name === file)!.source).toBe('codes');
      const layer = llama.getSubmodule(module) as Q.QuantizedLinear;
      expect(layer.codePacking).toBe('base3');
      const raw = Q.ggufTensorBytes(ours, bytes, info);
      const codes = layer.weightCodes.dataSync();
      const scales = layer.scales().dataSync();
      const blocks = raw.length / 54;
      expect(blocks).toBe(codes.length / 52);
      for (let b = 0; b < blocks; b++) {
        // qs and qh as the layer holds them, then the block's scale as f16
        expect(Array.from(raw.subarray(54 * b, 54 * b + 52))).toEqual(Array.from(codes.subarray(52 * b, 52 * b + 52)));
        expect(Q.halfToFloat(raw[54 * b + 52]! | (raw[54 * b + 53]! << 8))).toBe(half(scales[b]!));
      }
      expect(Array.from(Q.ggufTensorData(ours, bytes, info).blocks!.codes)).toEqual(Array.from(layer.codes().dataSync()));
    }
  });

  it("requantizes float weights with ggml's reference rounding and the byte-vocab tokenizer when vocabSize is 259", async () => {
    const llama = new Llama({ ...small, vocabSize: 259 }, { generator: new Generator(2) });
    const { res, hf } = await parsed(llama, 'Q8_0', 'spm.gguf');
    expect(meta(hf)['tokenizer.ggml.model']).toBe('llama');
    const tokens = meta(hf)['tokenizer.ggml.tokens'] as string[];
    expect(tokens).toHaveLength(259);
    expect(tokens.slice(0, 4)).toEqual(['<unk>', '<s>', '</s>', '<0x00>']);
    expect(res.tensors.every((t) => t.source !== 'codes')).toBe(true);
    // Q8_0 rounding error is at most half a step d = max|w|/127 per block (plus d's half rounding); |w| < 0.1 for N(0, 0.02²) here
    for (const t of res.tensors.filter((r) => r.type === 'Q8_0')) expect(t.maxAbsError).toBeLessThan((0.5 * 0.1) / 127);
    const x = Float32Array.from(randn([64], { generator: new Generator(4) }).dataSync());
    const blk = Q.ggmlQuantize('Q4_0', x);
    const back = Q.dequantizeGgml('Q4_0', Q.encodeBlocks('Q4_0', blk), 64);
    for (let b = 0; b < 2; b++) {
      const block = x.subarray(b * 32, b * 32 + 32);
      const i = block.reduce((best, v, j) => (Math.abs(v) > Math.abs(block[best]!) ? j : best), 0);
      expect(blk.codes[b * 32 + i]).toBe(-8); // the largest magnitude lands on −8
      for (let j = 0; j < 32; j++) expect(Math.abs(back[b * 32 + j]! - block[j]!)).toBeLessThanOrEqual(Math.abs(blk.scales[b]!) * 0.5 + 1e-3);
    }
  });
});

/** llama.cpp's tensor names → the qgrad module holding that weight, and the heads whose Q/K rows the file permutes. */
function modulesByName(cfg: LlamaConfig): Map<string, [string, number]> {
  const m = new Map<string, [string, number]>([['token_embd.weight', ['model.embed_tokens', 0]], ['output_norm.weight', ['model.norm', 0]], ['output.weight', ['lm_head', 0]]]);
  for (let i = 0; i < cfg.nLayers; i++) {
    const p = `model.layers.${i}`;
    for (const [file, path, heads] of [
      ['attn_norm', 'input_layernorm', 0], ['attn_q', 'self_attn.q_proj', cfg.nHeads], ['attn_k', 'self_attn.k_proj', cfg.nKvHeads], ['attn_v', 'self_attn.v_proj', 0],
      ['attn_output', 'self_attn.o_proj', 0], ['ffn_norm', 'post_attention_layernorm', 0], ['ffn_gate', 'mlp.gate_proj', 0], ['ffn_up', 'mlp.up_proj', 0], ['ffn_down', 'mlp.down_proj', 0],
    ] as const) m.set(`blk.${i}.${file}.weight`, [`${p}.${path}`, heads]);
  }
  return m;
}

/**
 * A float Llama holding the file's weights: each tensor found at @huggingface/gguf's offset,
 * decoded by its type, and (unless `keepOrder`) its Q/K rows put back in HF's rotate-half order.
 */
function loadBack(cfg: LlamaConfig, hf: Awaited<ReturnType<typeof gguf>>, bytes: Uint8Array, keepOrder = false): Llama {
  const llama = new Llama(cfg, { generator: new Generator(99) });
  const names = modulesByName(cfg);
  noGrad(() => {
    for (const t of hf.tensorInfos) {
      const [path, heads] = names.get(t.name) ?? [];
      if (!path) throw new Error(`no module for ${t.name}`);
      const type = Q.ggmlTypeOfId(t.dtype)!;
      const n = t.shape.reduce((a, b) => a * Number(b), 1);
      const at = Number(hf.tensorDataOffset + t.offset);
      const file = Q.dequantizeGgml(type, bytes.subarray(at, at + Q.ggmlBytes(type, n)), n);
      const w = (llama.getSubmodule(path) as Linear | Embedding | RMSNorm).weight!;
      const cols = Number(t.shape[0]);
      const rows = n / cols;
      const values = new Float32Array(n);
      const hd = heads ? rows / heads : 0;
      for (let r = 0; r < rows; r++) {
        // file row h·hd + 2i + j holds HF row h·hd + j·hd/2 + i
        const h = heads ? Math.floor(r / hd) : 0;
        const [i, j] = heads ? [(r % hd) % (hd / 2), Math.floor((r % hd) / (hd / 2))] : [0, 0];
        const from = heads && !keepOrder ? h * hd + 2 * i + j : r;
        values.set(file.subarray(from * cols, (from + 1) * cols), r * cols);
      }
      w.copy_(tensor(values, { shape: [...w.shape] }));
    }
  });
  return llama.eval();
}

/** A Llama whose logits have std ≈ 1 (HF's 0.02 init leaves them flat, where a wrong tensor hides), QAT on every Linear and the embedding, converted. */
function seededConverted(cfg: LlamaConfig, weight: Q.WeightQuantConfig | null, seed: number): Llama {
  const llama = seededLlama(cfg, seed);
  if (weight) {
    Q.prepareQAT(llama, { default: { weight }, types: ['Linear', 'Embedding'] });
    llama.train();
    llama.forward(tensor([[1, 2, 3]], { dtype: 'int32' }));
    Q.convert(llama, { kernel: 'dequantize' }); // the fake-quant eval output, bit for bit
  }
  return llama.eval();
}

describe('exportGguf read back into a qgrad Llama by llama.cpp tensor names', () => {
  const ids = tensor([Array.from({ length: 24 }, (_, i) => (i * 37 + 5) % 256)], { dtype: 'int32' });
  const maxDiff = (a: Llama, b: Llama) => {
    const [x, y] = [noGrad(() => a.forward(ids)).dataSync(), noGrad(() => b.forward(ids)).dataSync()];
    return { diff: Math.max(...Array.from(x, (v, i) => Math.abs(v - y[i]!))), scale: Math.max(...Array.from(y, Math.abs)) };
  };
  // the files' only change to qgrad's weights is the half rounding of block scales (F16: of every weight), a relative 2⁻¹¹ at most
  const cases: [Q.GgmlTypeName, LlamaConfig, Q.WeightQuantConfig | null, number][] = [
    ['F32', small, { grid: 'int', bits: 4, granularity: { group: 32 } }, 0],
    ['F16', small, null, 2e-3],
    ['Q8_0', small, { grid: 'int', bits: 8, granularity: { group: 32 } }, 2e-3],
    ['Q4_0', small, { grid: 'int', bits: 4, granularity: { group: 32 } }, 2e-3],
    ['TQ1_0', ternaryCfg, { grid: 'ternary', granularity: { group: 256 } }, 2e-3],
    ['TQ2_0', ternaryCfg, { grid: 'ternary', granularity: { group: 256 } }, 2e-3],
  ];
  it.each(cases)('%s: every tensor by its name and the Q/K rows un-permuted give the converted model\'s logits', async (type, cfg, weight, tol) => {
    const source = seededConverted(cfg, weight, 31);
    const { res, bytes, hf } = await parsed(source, type, `back-${type}.gguf`);
    if (weight && type !== 'F32') expect(res.tensors.filter((t) => t.type === type).every((t) => t.source === 'codes')).toBe(true);
    const { diff, scale } = maxDiff(loadBack(cfg, hf, bytes), source);
    if (tol === 0) expect(diff).toBe(0);
    else expect(diff).toBeLessThanOrEqual(tol * scale);
    // the rows left in llama.cpp's order are a different model: the check above can see a wrong layout
    const wrong = maxDiff(loadBack(cfg, hf, bytes, true), source);
    expect(wrong.diff).toBeGreaterThan(0.05 * wrong.scale);
  });
});

describe('readGguf on malformed files', () => {
  const llama = converted({ ...small, nLayers: 1 }, { grid: 'int', bits: 4, granularity: { group: 32 } });
  const valid = Q.llamaToGguf(llama, { type: 'Q4_0' }).bytes;
  const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
  /** Where tensor `name`'s info starts (its name's u64 length) and its fields: n_dims, ne[0], type, offset. */
  const info = (name: string) => {
    const key = new TextEncoder().encode(name);
    const at = valid.findIndex((_, i) => key.every((c, j) => valid[i + j] === c) && view(valid).getBigUint64(i - 8, true) === BigInt(key.length)) - 8;
    const nd = view(valid).getUint32(at + 8 + key.length, true);
    const dims = at + 12 + key.length;
    return { at, ne0: dims, type: dims + 8 * nd, offset: dims + 8 * nd + 4 };
  };
  const edit = (f: (b: Uint8Array, v: DataView) => void) => {
    const b = valid.slice();
    f(b, view(b));
    return () => Q.readGguf(b);
  };
  const throwsAt = (read: () => unknown, offset: number, message: RegExp) => {
    let error: unknown;
    try {
      read();
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(Q.FormatError);
    expect((error as Q.FormatError).offset).toBe(offset);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).toMatch(new RegExp(`at byte ${offset}$`));
  };

  it('names the byte of the magic, version, counts, tensor infos and data that are wrong', () => {
    expect(Q.readGguf(valid).tensors).toHaveLength(1 + 9 + 2);
    throwsAt(edit((b) => (b[0] = 0x58)), 0, /magic is not 'GGUF'/);
    throwsAt(edit((_, v) => v.setUint32(4, 2, true)), 4, /version 2 is not 3/);
    // counts that promise more than the file holds are refused before anything is allocated for them
    throwsAt(edit((_, v) => v.setBigUint64(8, 1n << 40n, true)), 8, /tensor count 1099511627776 cannot fit/);
    throwsAt(edit((_, v) => v.setBigUint64(16, 1n << 40n, true)), 16, /metadata count 1099511627776 cannot fit/);
    const q = info('blk.0.attn_q.weight');
    throwsAt(edit((_, v) => v.setUint32(q.type, 99, true)), q.type, /'blk.0.attn_q.weight' has ggml type 99, which qgrad does not read/);
    throwsAt(edit((_, v) => v.setBigUint64(q.ne0, 65n, true)), q.ne0, /ne\[0\] = 65, not a multiple of Q4_0's block of 32/);
    throwsAt(edit((_, v) => v.setBigUint64(q.offset, v.getBigUint64(q.offset, true) + 32n, true)), q.at, /'blk.0.attn_q.weight' has offset \d+, expected \d+/);
    const last = Q.readGguf(valid).tensors.at(-1)!;
    throwsAt(() => Q.readGguf(valid.subarray(0, valid.length - 1)), info(last.name).at, new RegExp(`'${last.name}' \\(\\d+ bytes at data offset \\d+\\) runs past the end of the file \\(byte ${valid.length - 1}\\)`));
  });
});
