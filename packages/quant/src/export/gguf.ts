/**
 * @file GGUF v3 for llama.cpp: `exportGguf(llama, path, { type })` writes a qgrad `Llama` (float,
 * QAT or converted) with llama-architecture keys, llama.cpp tensor names, the Q/K row permutation
 * that turns HF's rotate-half RoPE into ggml's adjacent pairs, and a byte-level tokenizer entry;
 * `readGguf(bytes)` is the validating reader. Block encodings live in ggml.ts.
 */
import { noGrad, type Tensor } from '@qgrad/core';
import { Embedding, Linear, RMSNorm, type Llama, type Module } from '@qgrad/nn';
import { QuantizedEmbedding, QuantizedLinear } from '../qat/convert.js';
import { isQuantLayer } from '../qat/modules.js';
import { TritPlaneLinear } from '../ptq/ptqtp.js';
import { ByteReader, ByteWriter, nodeFs } from './bytes.js';
import { decodeBlocks, dequantizeGgml, encodeBlocks, encodePlain, GGML_TYPES, ggmlBytes, ggmlQuantize, ggmlTypeOfId, type Blocks, type GgmlTypeName } from './ggml.js';

/** GGUF value types (interop.md 1.3). */
export const GGUF_VALUE = { u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12 } as const;
type ValueType = keyof typeof GGUF_VALUE;

/** A typed metadata value: scalars, strings and arrays of one element type. */
export type GgufValue = { type: Exclude<ValueType, 'array'>; value: number | string | boolean } | { type: 'array'; of: Exclude<ValueType, 'array'>; value: (number | string | boolean)[] };

/** One tensor in a GGUF file's header: name, dims (innermost first), block type and data offset. */
export interface GgufTensorInfo {
  name: string;
  /** Extents innermost first (ggml's ne): an [out, in] matrix is [in, out]. */
  dims: number[];
  type: GgmlTypeName;
  /** Relative to the data section. */
  offset: number;
}

/** A parsed GGUF file: version, metadata, tensor infos and where the data starts. */
export interface GgufFile {
  version: number;
  metadata: Map<string, GgufValue>;
  tensors: GgufTensorInfo[];
  /** Byte where the data section starts. */
  dataOffset: number;
  alignment: number;
}

// ---------------------------------------------------------------- writing

function writeString(w: ByteWriter, s: string): void {
  const b = new TextEncoder().encode(s);
  w.u64(b.length).bytes(b);
}

function writeScalar(w: ByteWriter, type: Exclude<ValueType, 'array'>, v: number | string | boolean): void {
  if (type === 'string') return writeString(w, v as string);
  if (type === 'bool') return void w.u8(v ? 1 : 0);
  if (type === 'u32') return void w.u32(v as number);
  if (type === 'i32') return void w.i32(v as number);
  if (type === 'f32') return void w.f32(v as number);
  if (type === 'u64') return void w.u64(v as number);
  throw new Error(`gguf: writing value type ${type} is not supported`);
}

/**
 * GGUF bytes from metadata and tensors (data in header order, each padded to `alignment`).
 * @example serializeGguf(new Map([['general.architecture', { type: 'string', value: 'llama' }]]), []);
 */
export function serializeGguf(metadata: Map<string, GgufValue>, tensors: { name: string; dims: number[]; type: GgmlTypeName; data: Uint8Array }[], alignment = 32): Uint8Array {
  const w = new ByteWriter();
  w.bytes(new TextEncoder().encode('GGUF')).u32(3).u64(tensors.length).u64(metadata.size);
  for (const [k, v] of metadata) {
    writeString(w, k);
    w.u32(GGUF_VALUE[v.type]);
    if (v.type === 'array') {
      w.u32(GGUF_VALUE[v.of]).u64(v.value.length);
      for (const e of v.value) writeScalar(w, v.of, e);
    } else writeScalar(w, v.type, v.value);
  }
  let offset = 0;
  for (const t of tensors) {
    writeString(w, t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(GGML_TYPES[t.type].id).u64(offset);
    offset += Math.ceil(t.data.length / alignment) * alignment;
  }
  w.pad(alignment);
  for (const t of tensors) w.bytes(t.data).pad(alignment);
  return w.finish();
}

/** What happened to one tensor on export. */
export interface GgufTensorReport {
  name: string;
  type: GgmlTypeName;
  /** 'codes': the QAT codes became the blocks' integers; 'requantized': ggml's rounding of the weights; 'float'. */
  source: 'codes' | 'requantized' | 'float';
  /** Largest |exported value − qgrad's value| over the tensor (0 when the codes and scales map exactly). */
  maxAbsError: number;
}

/** Options of `exportGguf`: the block type of the weights, the tokenizer to write and the model's name. */
export interface GgufExportOptions {
  type: GgmlTypeName;
  /** 'auto' (default): the SentencePiece byte vocab when vocabSize is 259, else none (ids are bytes; `llama.vocab_size`). */
  tokenizer?: 'auto' | 'spm-bytes' | 'none';
  name?: string;
}

/** What `exportGguf` returns: the file's bytes and a report per tensor. */
export interface GgufExportResult {
  bytes: Uint8Array;
  tensors: GgufTensorReport[];
}

/** A weight matrix in weight order: qgrad's values and, where stored, codes and float scales per group. */
interface Source {
  rows: number;
  cols: number;
  values: Float32Array;
  /** Codes with one scale per run of `group` along each row (symmetric integer grids). */
  codes?: { codes: Int32Array; scales: Float32Array; group: number };
}

function sourceOf(m: Module, who: string): Source {
  const w = noGrad((): Tensor => {
    if (m instanceof QuantizedLinear || m instanceof QuantizedEmbedding) return m.dequantizedWeight();
    if (isQuantLayer(m)) return m.quantizedWeight();
    if (m instanceof TritPlaneLinear) return m.weight(); // Ŵ = α¹T¹ + α²T², dense (the caller allows only float types)
    if (m instanceof Linear || m instanceof Embedding) return m.weight;
    throw new Error(`exportGguf: ${who} is a ${m.constructor.name}, not a Linear or Embedding`);
  });
  const [rows, cols] = w.shape as [number, number];
  const s: Source = { rows, cols, values: Float32Array.from(w.contiguous().dataSync()) };
  if ((m instanceof QuantizedLinear || m instanceof QuantizedEmbedding) && m.weightPlan.grid.integer && !m.weightZeroPoint) {
    const g = m.weightPlan.granularity;
    const group = typeof g === 'object' && 'group' in g && (g.axis ?? -1) === -1 ? g.group : typeof g === 'object' && 'block' in g && cols % g.block === 0 ? g.block : g === 'channel' ? cols : 0;
    if (group) s.codes = { codes: m.codes().contiguous().dataSync() as Int32Array, scales: Float32Array.from(m.scales().contiguous().dataSync()), group };
  }
  return s;
}

/** llama.cpp's row order for Wq/Wk: per head, rows (i, i + hd/2) become (2i, 2i + 1). */
function permuteRows(s: Source, heads: number): Source {
  const hd = s.rows / heads;
  const from = new Int32Array(s.rows);
  for (let h = 0; h < heads; h++) for (let i = 0; i < hd / 2; i++) for (let j = 0; j < 2; j++) from[h * hd + 2 * i + j] = h * hd + j * (hd / 2) + i;
  const take = <T extends Float32Array | Int32Array>(a: T, width: number): T => {
    const out = new (a.constructor as new (n: number) => T)(a.length);
    for (let r = 0; r < s.rows; r++) out.set(a.subarray(from[r]! * width, (from[r]! + 1) * width), r * width);
    return out;
  };
  const c = s.codes;
  return { ...s, values: take(s.values, s.cols), codes: c && { ...c, codes: take(c.codes, s.cols), scales: take(c.scales, s.cols / c.group) } };
}

/** The blocks of one matrix: its codes where the grid agrees with the type, else ggml's rounding. */
function encodeMatrix(name: string, s: Source, type: GgmlTypeName): { type: GgmlTypeName; data: Uint8Array; report: GgufTensorReport } {
  const n = s.values.length;
  const finish = (t: GgmlTypeName, data: Uint8Array, source: GgufTensorReport['source']) => {
    const back = dequantizeGgml(t, data, n);
    let err = 0;
    for (let i = 0; i < n; i++) err = Math.max(err, Math.abs(back[i]! - s.values[i]!));
    return { type: t, data, report: { name, type: t, source, maxAbsError: err } };
  };
  if (type === 'F32' || type === 'F16') return finish(type, encodePlain(type, s.values), 'float');
  const { block: B, codes: range } = GGML_TYPES[type];
  // a row that does not split into blocks cannot take this type (llama.cpp would refuse the file)
  if (s.cols % B) return finish('F32', encodePlain('F32', s.values), 'float');
  const c = s.codes;
  if (c && c.group % B === 0) {
    let fits = true;
    for (const v of c.codes) if (v < range![0] || v > range![1]) fits = false;
    if (fits && (type.startsWith('TQ') ? c.codes.every((v) => Math.abs(v) <= 1) : true)) {
      const scales = new Float32Array(n / B);
      for (let b = 0; b < scales.length; b++) scales[b] = c.scales[Math.floor((b * B) / c.group)]!;
      const blk: Blocks = { codes: c.codes, scales };
      return finish(type, encodeBlocks(type, blk), 'codes');
    }
  }
  return finish(type, encodeBlocks(type, ggmlQuantize(type, s.values)), 'requantized');
}

const FILE_TYPE: Record<GgmlTypeName, number> = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 7, TQ1_0: 36, TQ2_0: 37 };

/**
 * The GGUF bytes of a Llama and what became of each tensor (see `exportGguf`).
 * @example const { bytes, tensors } = llamaToGguf(llama, { type: 'Q8_0' });
 */
export function llamaToGguf(llama: Llama, opts: GgufExportOptions): GgufExportResult {
  const cfg = llama.config;
  const type = opts.type;
  if (!(type in GGML_TYPES)) throw new Error(`exportGguf: type ${JSON.stringify(type)} is not one of ${Object.keys(GGML_TYPES).join(', ')}`);
  const hd = cfg.headDim ?? cfg.dim / cfg.nHeads;
  const meta = new Map<string, GgufValue>();
  const u32 = (v: number): GgufValue => ({ type: 'u32', value: v });
  const f32 = (v: number): GgufValue => ({ type: 'f32', value: v });
  const str = (v: string): GgufValue => ({ type: 'string', value: v });
  meta.set('general.architecture', str('llama'));
  meta.set('general.name', str(opts.name ?? 'qgrad-llama'));
  meta.set('general.file_type', u32(FILE_TYPE[type]));
  meta.set('general.alignment', u32(32));
  meta.set('llama.context_length', u32(cfg.maxSeqLen));
  meta.set('llama.embedding_length', u32(cfg.dim));
  meta.set('llama.block_count', u32(cfg.nLayers));
  meta.set('llama.feed_forward_length', u32(cfg.hiddenDim));
  meta.set('llama.attention.head_count', u32(cfg.nHeads));
  meta.set('llama.attention.head_count_kv', u32(cfg.nKvHeads));
  meta.set('llama.attention.layer_norm_rms_epsilon', f32(cfg.normEps));
  meta.set('llama.rope.freq_base', f32(cfg.ropeTheta));
  meta.set('llama.rope.dimension_count', u32(hd));
  meta.set('llama.attention.key_length', u32(hd));
  meta.set('llama.attention.value_length', u32(hd));
  meta.set('llama.vocab_size', u32(cfg.vocabSize));
  const tok = opts.tokenizer ?? 'auto';
  const spm = tok === 'spm-bytes' || (tok === 'auto' && cfg.vocabSize === 259);
  if (spm) {
    if (cfg.vocabSize !== 259) throw new Error(`exportGguf: tokenizer 'spm-bytes' has 259 tokens (<unk>, <s>, </s>, 256 bytes); the model's vocabSize is ${cfg.vocabSize}`);
    const tokens = ['<unk>', '<s>', '</s>', ...Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)];
    meta.set('tokenizer.ggml.model', str('llama'));
    meta.set('tokenizer.ggml.tokens', { type: 'array', of: 'string', value: tokens });
    meta.set('tokenizer.ggml.scores', { type: 'array', of: 'f32', value: tokens.map(() => 0) });
    meta.set('tokenizer.ggml.token_type', { type: 'array', of: 'i32', value: [2, 3, 3, ...Array<number>(256).fill(6)] });
    meta.set('tokenizer.ggml.add_space_prefix', { type: 'bool', value: false });
    meta.set('tokenizer.ggml.unknown_token_id', u32(0));
    meta.set('tokenizer.ggml.bos_token_id', u32(1));
    meta.set('tokenizer.ggml.eos_token_id', u32(2));
  } else {
    // token ids are the model's own (bytes for the 256-token models); llama.cpp runs on ids
    meta.set('tokenizer.ggml.model', str('none'));
  }
  meta.set('qgrad.tokenizer', str(spm ? 'spm-bytes: id = byte + 3' : cfg.vocabSize === 256 ? 'bytes: id = byte' : 'none'));

  const out: { name: string; dims: number[]; type: GgmlTypeName; data: Uint8Array }[] = [];
  const reports: GgufTensorReport[] = [];
  const matrix = (name: string, path: string, heads?: number) => {
    const m = llama.getSubmodule(path);
    // PTQTP's planes: no GGUF type holds two ternary planes with per-group (α¹, α²) (TQ1_0/TQ2_0
    // are one plane with one scale per 256 weights, and llama.cpp's llama graph multiplies by one
    // tensor per weight); rounding Ŵ into a block type would be another quantization, not this
    // model, so only the float types, which hold Ŵ itself, are written
    if (m instanceof TritPlaneLinear && type !== 'F32' && type !== 'F16') {
      throw new Error(`exportGguf: ${path} is a TritPlaneLinear (PTQTP: two ternary planes, Ŵ = α¹T¹ + α²T² with (α¹, α²) per ${m.groupSize} inputs of a row), which GGUF type ${type} cannot hold: llama.cpp's ternary types (TQ1_0, TQ2_0) store one plane with one scale per 256 weights, and re-rounding Ŵ to ${type} would be a different quantization. Export with type 'F32' (Ŵ exactly) or 'F16', or keep the planes with saveQuantized`);
    }
    let s = sourceOf(m, path);
    if (heads) s = permuteRows(s, heads);
    const e = encodeMatrix(name, s, type);
    out.push({ name, dims: [s.cols, s.rows], type: e.type, data: e.data });
    reports.push(e.report);
  };
  const vector = (name: string, t: Tensor | null, who: string, heads?: number) => {
    if (!t) throw new Error(`exportGguf: ${who} has no weight`);
    let v: Float32Array = Float32Array.from(t.contiguous().dataSync());
    if (heads) v = permuteRows({ rows: v.length, cols: 1, values: v }, heads).values;
    out.push({ name, dims: [v.length], type: 'F32', data: encodePlain('F32', v) });
    reports.push({ name, type: 'F32', source: 'float', maxAbsError: 0 });
  };
  const norm = (name: string, path: string) => {
    const m = llama.getSubmodule(path);
    if (!(m instanceof RMSNorm)) throw new Error(`exportGguf: ${path} is a ${m.constructor.name}, not an RMSNorm`);
    vector(name, m.weight, path);
  };
  const bias = (name: string, path: string, heads?: number) => {
    const b = (llama.getSubmodule(path) as unknown as { bias?: Tensor | null }).bias;
    if (b) vector(name, b, path, heads);
  };
  matrix('token_embd.weight', 'model.embed_tokens');
  for (let i = 0; i < cfg.nLayers; i++) {
    const p = `model.layers.${i}`;
    norm(`blk.${i}.attn_norm.weight`, `${p}.input_layernorm`);
    matrix(`blk.${i}.attn_q.weight`, `${p}.self_attn.q_proj`, cfg.nHeads);
    matrix(`blk.${i}.attn_k.weight`, `${p}.self_attn.k_proj`, cfg.nKvHeads);
    matrix(`blk.${i}.attn_v.weight`, `${p}.self_attn.v_proj`);
    matrix(`blk.${i}.attn_output.weight`, `${p}.self_attn.o_proj`);
    bias(`blk.${i}.attn_q.bias`, `${p}.self_attn.q_proj`, cfg.nHeads);
    bias(`blk.${i}.attn_k.bias`, `${p}.self_attn.k_proj`, cfg.nKvHeads);
    bias(`blk.${i}.attn_v.bias`, `${p}.self_attn.v_proj`);
    bias(`blk.${i}.attn_output.bias`, `${p}.self_attn.o_proj`);
    norm(`blk.${i}.ffn_norm.weight`, `${p}.post_attention_layernorm`);
    matrix(`blk.${i}.ffn_gate.weight`, `${p}.mlp.gate_proj`);
    matrix(`blk.${i}.ffn_up.weight`, `${p}.mlp.up_proj`);
    matrix(`blk.${i}.ffn_down.weight`, `${p}.mlp.down_proj`);
    bias(`blk.${i}.ffn_gate.bias`, `${p}.mlp.gate_proj`);
    bias(`blk.${i}.ffn_up.bias`, `${p}.mlp.up_proj`);
    bias(`blk.${i}.ffn_down.bias`, `${p}.mlp.down_proj`);
  }
  norm('output_norm.weight', 'model.norm');
  // a tied head is llama.cpp's default when output.weight is absent
  if (!cfg.tieWordEmbeddings) matrix('output.weight', 'lm_head');
  const exact = reports.filter((r) => r.source === 'codes').length;
  meta.set('qgrad.export.tensors_from_codes', u32(exact));
  return { bytes: serializeGguf(meta, out), tensors: reports };
}

/**
 * Writes a qgrad Llama as a GGUF v3 file llama.cpp loads. Q8_0/Q4_0/TQ* take the converted
 * layers' codes where the grid agrees (a symmetric integer grid in groups that are a multiple of
 * the block, codes in the block's range; ternary → TQ), else ggml's own rounding; the report says
 * which, with the largest difference from qgrad's weights. Rows that do not split into blocks stay F32.
 * PTQTP's TritPlaneLinear layers go out as their dense Ŵ with type F32 or F16 and are refused with
 * the block types (no GGUF type holds two ternary planes).
 * @example
 * convert(llama); // int4 weights in groups of 32
 * exportGguf(llama, 'tiny.gguf', { type: 'Q4_0' }).tensors.every((t) => t.maxAbsError === 0 || t.source !== 'codes');
 */
export function exportGguf(llama: Llama, path: string, opts: GgufExportOptions): GgufExportResult {
  const r = llamaToGguf(llama, opts);
  nodeFs('exportGguf', 'use llamaToGguf for the bytes').writeFileSync(path, r.bytes);
  return r;
}

// ---------------------------------------------------------------- reading

const MAX_STRING = 1 << 20;
const MAX_ARRAY = 1 << 24;
const SCALAR_BYTES: Partial<Record<ValueType, number>> = { u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, bool: 1, u64: 8, i64: 8, f64: 8 };
const TYPE_NAME = Object.fromEntries(Object.entries(GGUF_VALUE).map(([k, v]) => [v, k])) as Record<number, ValueType>;

function readString(r: ByteReader, what: string): string {
  const at = r.pos;
  const n = r.u64(`length of ${what}`);
  if (n > MAX_STRING) r.fail(`${what} declares ${n} bytes (limit ${MAX_STRING})`, at);
  const b = r.take(n, what);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(b);
  } catch {
    return r.fail(`${what} is not valid UTF-8`, at + 8);
  }
}

function readScalar(r: ByteReader, type: ValueType, what: string): number | string | boolean {
  const v = r.view;
  const at = r.pos;
  switch (type) {
    case 'string': return readString(r, what);
    case 'u8': return r.u8(what);
    case 'i8': r.need(1, what); r.pos += 1; return v.getInt8(at);
    case 'u16': return r.u16(what);
    case 'i16': r.need(2, what); r.pos += 2; return v.getInt16(at, true);
    case 'u32': return r.u32(what);
    case 'i32': return r.i32(what);
    case 'f32': return r.f32(what);
    case 'bool': {
      const b = r.u8(what);
      if (b > 1) r.fail(`${what} is a bool of value ${b}`, at);
      return b === 1;
    }
    case 'u64': return r.u64(what);
    case 'i64': r.need(8, what); r.pos += 8; return Number(v.getBigInt64(at, true));
    case 'f64': r.need(8, what); r.pos += 8; return v.getFloat64(at, true);
    default: return r.fail(`${what} has value type ${type} where a scalar belongs`, at);
  }
}

/**
 * Parses and checks GGUF bytes: magic and version 3, counts that the file can hold before
 * anything is allocated, bounded strings and arrays, no duplicate keys or tensor names, known
 * types, extents whose innermost dim splits into blocks, and tensor data contiguous, aligned and
 * inside the file, as ggml's own loader insists. Errors are FormatErrors naming the byte offset.
 * @example const { metadata, tensors } = readGguf(readFileSync('tiny.gguf'));
 */
export function readGguf(bytes: Uint8Array): GgufFile {
  const r = new ByteReader(bytes, 'gguf');
  const magic = r.take(4, 'magic');
  if (String.fromCharCode(...magic) !== 'GGUF') r.fail(`magic is not 'GGUF'`, 0);
  const version = r.u32('version');
  if (version !== 3) r.fail(`version ${version} is not 3`, 4);
  const nTensors = r.u64('tensor count');
  const nKv = r.u64('metadata count');
  // each KV takes ≥ 13 bytes and each tensor info ≥ 28: counts beyond that are lies
  if (nKv * 13 > bytes.length - r.pos) r.fail(`metadata count ${nKv} cannot fit in ${bytes.length} bytes`, 16);
  if (nTensors * 28 > bytes.length - r.pos) r.fail(`tensor count ${nTensors} cannot fit in ${bytes.length} bytes`, 8);
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < nKv; i++) {
    const at = r.pos;
    const key = readString(r, `key ${i}`);
    if (metadata.has(key)) r.fail(`key '${key}' appears twice`, at);
    const tAt = r.pos;
    const type = TYPE_NAME[r.u32(`value type of '${key}'`)];
    if (!type) r.fail(`key '${key}' has an unknown value type`, tAt);
    if (type === 'array') {
      const eAt = r.pos;
      const of = TYPE_NAME[r.u32(`element type of '${key}'`)];
      if (!of || of === 'array') r.fail(`array '${key}' has element type ${of ?? 'unknown'}`, eAt);
      const n = r.u64(`length of '${key}'`);
      const min = SCALAR_BYTES[of!] ?? 8;
      if (n > MAX_ARRAY || n * min > bytes.length - r.pos) r.fail(`array '${key}' declares ${n} elements, more than the file holds`, eAt + 4);
      const value: (number | string | boolean)[] = [];
      for (let j = 0; j < n; j++) value.push(readScalar(r, of!, `element ${j} of '${key}'`));
      metadata.set(key, { type: 'array', of: of as Exclude<ValueType, 'array'>, value });
    } else metadata.set(key, { type, value: readScalar(r, type!, `value of '${key}'`) } as GgufValue);
  }
  let alignment = 32;
  const al = metadata.get('general.alignment');
  if (al) {
    if (al.type !== 'u32' || !((al.value as number) > 0) || ((al.value as number) & ((al.value as number) - 1)) !== 0 || (al.value as number) > 1 << 16) r.fail(`general.alignment must be a u32 power of two, got ${JSON.stringify(al.value)}`, 24);
    alignment = al.value as number;
  }
  const tensors: GgufTensorInfo[] = [];
  const names = new Set<string>();
  const infoAt: number[] = [];
  for (let i = 0; i < nTensors; i++) {
    const at = r.pos;
    infoAt.push(at);
    const name = readString(r, `name of tensor ${i}`);
    if (new TextEncoder().encode(name).length > 63) r.fail(`tensor name '${name.slice(0, 70)}' is longer than 63 bytes`, at);
    if (names.has(name)) r.fail(`tensor '${name}' appears twice`, at);
    names.add(name);
    const nAt = r.pos;
    const nd = r.u32(`dims of '${name}'`);
    if (nd < 1 || nd > 4) r.fail(`tensor '${name}' has ${nd} dims (1 to 4)`, nAt);
    const dims: number[] = [];
    let count = 1;
    for (let d = 0; d < nd; d++) {
      const e = r.u64(`extent ${d} of '${name}'`);
      if (e < 1) r.fail(`tensor '${name}' has extent ${e}`, r.pos - 8);
      count *= e;
      if (count > bytes.length * 8) r.fail(`tensor '${name}' has more elements than the file can hold`, r.pos - 8);
      dims.push(e);
    }
    const tAt = r.pos;
    const id = r.u32(`type of '${name}'`);
    const type = ggmlTypeOfId(id);
    if (!type) r.fail(`tensor '${name}' has ggml type ${id}, which qgrad does not read`, tAt);
    if (dims[0]! % GGML_TYPES[type!].block) r.fail(`tensor '${name}' has ne[0] = ${dims[0]}, not a multiple of ${type}'s block of ${GGML_TYPES[type!].block}`, nAt + 4);
    const offset = r.u64(`offset of '${name}'`);
    tensors.push({ name, dims, type: type!, offset });
  }
  const dataOffset = Math.ceil(r.pos / alignment) * alignment;
  if (dataOffset > bytes.length) r.fail(`the data section (aligned to ${alignment}) starts past the end of the file`, r.pos);
  let expected = 0;
  tensors.forEach((t, i) => {
    const size = ggmlBytes(t.type, t.dims.reduce((a, b) => a * b, 1));
    const at = infoAt[i]!;
    if (t.offset !== expected) r.fail(`tensor '${t.name}' has offset ${t.offset}, expected ${expected} (data must be contiguous in header order, each padded to ${alignment})`, at);
    if (dataOffset + t.offset + size > bytes.length) r.fail(`tensor '${t.name}' (${size} bytes at data offset ${t.offset}) runs past the end of the file (byte ${bytes.length})`, at);
    expected += Math.ceil(size / alignment) * alignment;
  });
  return { version, metadata, tensors, dataOffset, alignment };
}

/**
 * A tensor's bytes inside a checked file.
 * @example const raw = ggufTensorBytes(file, bytes, file.tensors[0]!);
 */
export function ggufTensorBytes(file: GgufFile, bytes: Uint8Array, t: GgufTensorInfo): Uint8Array {
  const n = t.dims.reduce((a, b) => a * b, 1);
  return bytes.subarray(file.dataOffset + t.offset, file.dataOffset + t.offset + ggmlBytes(t.type, n));
}

/**
 * A tensor's codes and scales (block types) or values, from a checked file.
 * @example const { values } = ggufTensorData(file, bytes, file.tensors.find((t) => t.name === 'output_norm.weight')!);
 */
export function ggufTensorData(file: GgufFile, bytes: Uint8Array, t: GgufTensorInfo): { values: Float32Array; blocks: Blocks | null } {
  const b = ggufTensorBytes(file, bytes, t);
  const n = t.dims.reduce((a, c) => a * c, 1);
  return { values: dequantizeGgml(t.type, b, n), blocks: t.type === 'F32' || t.type === 'F16' ? null : decodeBlocks(t.type, b, n) };
}
