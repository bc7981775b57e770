/**
 * @file `saveQuantized` / `loadQuantized`: a converted model as one safetensors file holding the
 * packed codes, scales and zero points under compressed-tensors names (`weight_packed`,
 * `weight_scale`, `weight_zero_point`, `weight_shape`, `input_scale` …) and a `__metadata__` that
 * says grid, bits, granularity and packing per layer. Reading goes through core's validating
 * safetensors reader; this file checks what the metadata claims against what the tensors hold.
 * PTQTP's TritPlaneLinear layers go in the same file, as their two packed planes and scales, with a
 * metadata entry of their own (`qgrad.trit_planes`).
 */
import { base3RowBytes, pack24, deserializeSafetensors, fromTypedArray, loadSafetensorsWithMetadata, saveSafetensors, serializeSafetensors, type Tensor } from '@qgrad/core';
import { Conv2d, Embedding, Linear, type Module } from '@qgrad/nn';
import { granularityName, type Granularity } from '../grids/granularity.js';
import type { GridName } from '../grids/table.js';
import type { QuantizerConfig, QuantizerPlan } from '../quantizer/config.js';
import { QuantizedConv2d, QuantizedEmbedding, QuantizedLinear } from '../qat/convert.js';
import { TimestepContext } from '../diffusion/calibration.js';
import { TimestepBuckets } from '../diffusion/talsq.js';
import { QuantConv2d, QuantEmbedding, QuantLinear } from '../qat/modules.js';
import { replaceSubmodule } from '../qat/prepare.js';
import { TritPlaneLinear } from '../ptq/ptqtp.js';
import { isRecord } from './bytes.js';

/** The `format` metadata value this writer emits and the reader accepts. */
export const QUANTIZED_FORMAT = 'qgrad.quantized/1';

type Quantized = QuantizedLinear | QuantizedConv2d | QuantizedEmbedding;
type Kind = 'Linear' | 'Conv2d' | 'Embedding';

/** What the metadata says about one converted layer (JSON in `__metadata__['qgrad.layers']`). */
export interface QuantizedLayerInfo {
  kind: Kind;
  /** The weight quantizer's config, rebuilt from its plan (enough to rebuild the same plan). */
  weight: QuantizerConfig;
  /** The input quantizer's config, or null for float inputs. */
  input: QuantizerConfig | null;
  /** 'int4', 'nf4', 'e4m3' … */
  grid: string;
  /** Bits per stored code field (1, 2, 4 packed; 8, 16, 32 plain). */
  bits: number;
  granularity: string;
  /**
   * How codes sit in `weight_packed` / `weight`: fields low bits first, or ('base3-tq1', uint8
   * [rows, bytes a row]) code − offset as base-3 digits five per byte in TQ1_0's order.
   */
  packing: { fieldBits: number; order: 'lsb-first' | 'base3-tq1'; container: 'int32' | 'uint8' | 'int8' | 'int32-plain'; offset: number };
  weightShape: number[];
  matrixShape: number[];
  dtype: 'float32' | 'float64';
  /**
   * A Linear pruned to 2:4 (`sparsify`): the pattern, and the tensor holding the 2-bit position of
   * each kept entry within its group of four (uint8, four per byte low bits first, row-major over
   * `[rows, cols / 2]`, as NVIDIA's 2:4 metadata). Absent for dense layers.
   */
  sparsity?: { pattern: '2:4'; indices: 'weight_sparse_indices' };
  /**
   * An input step per timestep bucket (EfficientDM's TALSQ, converted): `input_scale` (and
   * `input_zero_point`) are [buckets, 1], row ⌊t·buckets/timesteps⌋ quantizing the samples at
   * timestep t. Absent for one stored step.
   */
  inputTimesteps?: { timesteps: number; buckets: number };
}

/** The `format` of a TritPlaneLinear layer in `qgrad.trit_planes`. */
export const TRIT_PLANES_FORMAT = 'qgrad.ptqtp/2x-ternary';

/**
 * What the metadata says about one PTQTP layer (JSON in `__metadata__['qgrad.trit_planes']`):
 * Ŵ[r, j] = α¹[r, g]·T¹[r, j] + α²[r, g]·T²[r, j], g = ⌊j / groupSize⌋, T in {−1, 0, 1}. Tensors:
 * `weight_plane1_packed`, `weight_plane2_packed` (uint8, code + 1 in 2-bit fields, four per byte,
 * low bits first, row-major over the whole matrix: [rows, cols / 4] when rows fill whole bytes,
 * else flat), `weight_plane1_scale`, `weight_plane2_scale` ([rows, cols / groupSize], `dtype`),
 * `weight_shape` and, where the layer has one, `bias`.
 */
export interface TritPlaneLayerInfo {
  format: typeof TRIT_PLANES_FORMAT;
  weightShape: [number, number];
  groupSize: number;
  packing: { fieldBits: 2; order: 'lsb-first'; container: 'uint8'; offset: -1 };
  dtype: 'float32' | 'float64';
  bias: boolean;
}

/** The parsed file: tensors by name, the per-layer metadata (converted and PTQTP layers) and the remaining metadata. */
export interface QuantizedCheckpoint {
  tensors: Record<string, Tensor>;
  layers: Record<string, QuantizedLayerInfo>;
  tritPlanes: Record<string, TritPlaneLayerInfo>;
  metadata: Record<string, string>;
}

const isQuantized = (m: Module): m is Quantized => m instanceof QuantizedLinear || m instanceof QuantizedConv2d || m instanceof QuantizedEmbedding;
const kindOf = (m: Quantized): Kind => (m instanceof QuantizedLinear ? 'Linear' : m instanceof QuantizedConv2d ? 'Conv2d' : 'Embedding');

/** Grid options back from a grid (the plan keeps the grid, not the config that made it). */
function gridOptions(plan: QuantizerPlan): QuantizerConfig {
  const g = plan.grid;
  const name = g.name as GridName;
  if (name === 'int') {
    const m = /^(u?)int(\d+)(n?)(a?)$/.exec(g.label);
    if (!m) throw new Error(`saveQuantized: cannot read int grid label '${g.label}'`);
    return { grid: name, bits: Number(m[2]), ...(m[1] && !m[4] && { signed: false }), ...(m[3] && { narrow: true }), ...(m[4] && { asymmetric: true }) };
  }
  if (name === 'codebook') return { grid: name, levels: Array.from(g.levels('float64')) };
  if (name === 'centered') return { grid: name, bits: Number(g.label.slice('centered'.length)) };
  return { grid: name };
}

/**
 * A config that resolves to the same plan (what the forward of a converted layer reads).
 * @internal plumbing between the quantizer, QAT, LoRA and export code of @qgrad/quant, left off the API site
 */
export function configOfPlan(plan: QuantizerPlan): QuantizerConfig {
  const c: QuantizerConfig = { ...gridOptions(plan), granularity: plan.granularity, estimator: plan.estimator.name, rounding: plan.rounding };
  if (plan.grid.scale.kind === 'real') c.scale = { mode: plan.mode, rule: plan.rule, ...(plan.doubleScale && { double: true }) };
  return c;
}

/** compressed-tensors' description of one quantizer (its `QuantizationArgs`), where it fits. */
function ctArgs(plan: QuantizerPlan, bits: number): Record<string, unknown> {
  const g: Granularity = plan.granularity;
  const strategy = g === 'tensor' ? 'tensor' : g === 'channel' || (typeof g === 'object' && 'channel' in g) ? 'channel' : g === 'token' ? 'token' : 'block' in g ? 'block' : 'group';
  return {
    num_bits: plan.grid.integer ? Math.ceil(Math.log2(plan.grid.integer.qmax - plan.grid.integer.qmin + 1)) : bits,
    type: plan.grid.integer ? 'int' : 'float',
    symmetric: !plan.hasZeroPoint,
    strategy,
    group_size: typeof g === 'object' && 'group' in g ? g.group : typeof g === 'object' && 'block' in g ? g.block : null,
    dynamic: plan.mode === 'dynamic',
    observer: typeof plan.rule === 'string' ? plan.rule : 'percentile',
    // qgrad's name for the grid, for readers that know more than int/float
    qgrad_grid: plan.grid.label,
  };
}

/**
 * The tensors and metadata of a converted model as compressed-tensors-style entries. Layers that
 * are not converted keep their state-dict names (norms, biases, float layers).
 * @example const { tensors, metadata } = quantizedEntries(model);
 */
export function quantizedEntries(model: Module): { tensors: Record<string, Tensor>; metadata: Record<string, string> } {
  const tensors: Record<string, Tensor> = Object.create(null);
  const layers: Record<string, QuantizedLayerInfo> = Object.create(null);
  const groups: Record<string, { targets: string[]; weights: unknown; input_activations: unknown }> = Object.create(null);
  const handled = new Set<string>();
  const trit: Record<string, TritPlaneLayerInfo> = Object.create(null);
  for (const [name, m] of model.namedModules()) {
    if (m instanceof TritPlaneLinear) {
      const p = name ? `${name}.` : '';
      const [rows, cols] = [m.outFeatures, m.inFeatures];
      // rows of whole bytes read as a matrix; otherwise the fields run on across rows, as stored
      const plane = (t: Tensor) => ((cols * 2) % 8 === 0 ? t.reshape([rows, (cols * 2) / 8]) : t);
      tensors[`${p}weight_plane1_packed`] = plane(m.plane1);
      tensors[`${p}weight_plane2_packed`] = plane(m.plane2);
      tensors[`${p}weight_plane1_scale`] = m.scale1;
      tensors[`${p}weight_plane2_scale`] = m.scale2;
      tensors[`${p}weight_shape`] = fromTypedArray(Int32Array.of(rows, cols), [2], 'int32');
      for (const k of ['plane1', 'plane2', 'scale1', 'scale2']) handled.add(p + k);
      trit[name] = {
        format: TRIT_PLANES_FORMAT, weightShape: [rows, cols], groupSize: m.groupSize, packing: { fieldBits: 2, order: 'lsb-first', container: 'uint8', offset: -1 },
        dtype: m.scale1.dtype === 'float64' ? 'float64' : 'float32', bias: m.bias !== null,
      };
      continue;
    }
    if (!isQuantized(m)) continue;
    const p = name ? `${name}.` : '';
    const bits = m.codeBits;
    const cols = m.matrixShape[m.matrixShape.length - 1]!;
    const rows = m.matrixShape.reduce((a, b) => a * b, 1) / cols;
    let container: QuantizedLayerInfo['packing']['container'];
    const base3 = m.codePacking === 'base3';
    if (base3) {
      // not compressed-tensors' packing: named by the order in qgrad.layers and the format below
      tensors[`${p}weight_packed`] = m.weightCodes.reshape([rows, base3RowBytes(cols)]);
      container = 'uint8';
    } else if (bits <= 4) {
      // compressed-tensors packs fields into int32 words per row, low bits first: the same bytes
      // as qgrad's packing when a row fills whole words (little-endian)
      const raw = m.weightCodes.contiguous().dataSync() as Uint8Array;
      if ((cols * bits) % 32 === 0) {
        const words = new Int32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
        tensors[`${p}weight_packed`] = fromTypedArray(words, [rows, (cols * bits) / 32], 'int32');
        container = 'int32';
      } else {
        tensors[`${p}weight_packed`] = m.weightCodes;
        container = 'uint8';
      }
    } else {
      tensors[`${p}weight`] = m.weightCodes.reshape(m.weightShape);
      container = m.weightCodes.dtype === 'int32' ? 'int32-plain' : (m.weightCodes.dtype as 'int8' | 'uint8');
    }
    tensors[`${p}weight_shape`] = fromTypedArray(Int32Array.from(m.weightShape), [m.weightShape.length], 'int32');
    tensors[`${p}weight_scale`] = m.weightScale;
    if (m.weightZeroPoint) tensors[`${p}weight_zero_point`] = m.weightZeroPoint;
    if (m.weightScaleSecond) tensors[`${p}weight_scale_second`] = m.weightScaleSecond;
    if (m.weightScaleMean) tensors[`${p}weight_scale_mean`] = m.weightScaleMean;
    if (m.inputScale) tensors[`${p}input_scale`] = m.inputScale;
    if (m.inputZeroPoint) tensors[`${p}input_zero_point`] = m.inputZeroPoint;
    for (const k of ['weightCodes', 'weightScale', 'weightZeroPoint', 'weightScaleSecond', 'weightScaleMean', 'inputScale', 'inputZeroPoint']) handled.add(p + k);
    const plan = m.weightPlan;
    const info: QuantizedLayerInfo = {
      kind: kindOf(m), weight: configOfPlan(plan), input: m.inputPlan ? configOfPlan(m.inputPlan) : null, grid: plan.grid.label, bits,
      granularity: granularityName(plan.granularity), packing: { fieldBits: bits, order: base3 ? 'base3-tq1' : 'lsb-first', container, offset: plan.grid.codeMin },
      weightShape: [...m.weightShape], matrixShape: [...m.matrixShape], dtype: m.weightDType,
    };
    const ts = m.inputTimesteps;
    if (ts) info.inputTimesteps = { timesteps: ts.buckets.timesteps, buckets: ts.buckets.count };
    if (m instanceof QuantizedLinear && m.sparsity) {
      const w = m.dequantizedWeight();
      tensors[`${p}weight_sparse_indices`] = fromTypedArray(pack24(w.contiguous().dataSync() as Float32Array, m.outFeatures, m.inFeatures).indices, [Math.ceil((m.outFeatures * m.inFeatures) / 8)], 'uint8');
      info.sparsity = { pattern: m.sparsity, indices: 'weight_sparse_indices' };
    }
    layers[name] = info;
    // a step table by timestep is no compressed-tensors strategy: an unknown name keeps its readers from taking row 0 as the tensor's step
    const inputArgs = m.inputPlan ? { ...ctArgs(m.inputPlan, 8), ...(info.inputTimesteps && { strategy: 'qgrad-timestep-buckets', qgrad_timestep_buckets: info.inputTimesteps }) } : null;
    (groups[JSON.stringify([info.weight, info.input, info.inputTimesteps ?? null])] ??= { targets: [], weights: ctArgs(plan, bits), input_activations: inputArgs }).targets.push(name);
  }
  for (const [k, t] of Object.entries(model.stateDict())) if (!handled.has(k)) tensors[k] = t;
  const configGroups = Object.fromEntries(Object.values(groups).map((g, i) => [`group_${i}`, g]));
  const packed = Object.values(layers).some((l) => l.bits <= 4);
  // compressed-tensors has no base-3 format: an unknown name keeps its readers from misreading the bytes
  const base3 = Object.values(layers).some((l) => l.packing.order === 'base3-tq1');
  // compressed-tensors has no two-plane format either: the planes' own name, for the same reason
  const planes = Object.keys(trit).length > 0;
  const quantizationConfig = { quant_method: 'compressed-tensors', format: planes ? 'qgrad-ptqtp' : base3 ? 'qgrad-base3-tq1' : packed ? 'pack-quantized' : 'int-quantized', quantization_status: 'compressed', config_groups: configGroups };
  return { tensors, metadata: { format: QUANTIZED_FORMAT, quantization_config: JSON.stringify(quantizationConfig), 'qgrad.layers': JSON.stringify(layers), ...(planes && { 'qgrad.trit_planes': JSON.stringify(trit) }) } };
}

/**
 * The safetensors bytes of a converted model (see `saveQuantized`).
 * @example const bytes = serializeQuantized(model); deserializeQuantized(bytes).layers['0'].grid; // 'int4'
 */
export function serializeQuantized(model: Module): Uint8Array {
  const { tensors, metadata } = quantizedEntries(model);
  return serializeSafetensors(tensors, metadata);
}

/**
 * Writes a model after `convert(model)` to `path`: packed codes, scales and zero points, with the
 * grid, bits, granularity and packing of every layer in the header (atomic write).
 * @example
 * convert(model); saveQuantized(model, 'model.safetensors');
 * const again = loadQuantized('model.safetensors', makeModel()); // same outputs, bit for bit
 */
export function saveQuantized(model: Module, path: string): void {
  const { tensors, metadata } = quantizedEntries(model);
  saveSafetensors(path, tensors, metadata);
}

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/**
 * Checks the metadata of a decoded file and returns it parsed; errors name the header (byte 8).
 * @internal plumbing between the quantizer, QAT, LoRA and export code of @qgrad/quant, left off the API site
 */
export function checkQuantized(tensors: Record<string, Tensor>, metadata: Record<string, string>): QuantizedCheckpoint {
  const bad = (what: string): never => {
    throw new Error(`loadQuantized: ${what} (header at byte 8)`);
  };
  if (metadata.format !== QUANTIZED_FORMAT) bad(`__metadata__.format is ${JSON.stringify(metadata.format)}, expected '${QUANTIZED_FORMAT}'`);
  let layers: unknown;
  try {
    layers = JSON.parse(metadata['qgrad.layers'] ?? '');
  } catch {
    bad("__metadata__['qgrad.layers'] is not JSON");
  }
  if (!isRecord(layers)) return bad("__metadata__['qgrad.layers'] is not an object");
  const out: Record<string, QuantizedLayerInfo> = Object.create(null);
  for (const [name, raw] of Object.entries(layers)) {
    const p = name ? `${name}.` : '';
    const l = raw as QuantizedLayerInfo;
    const where = `layer '${name}'`;
    if (!isRecord(raw) || !['Linear', 'Conv2d', 'Embedding'].includes(l.kind)) bad(`${where} has no kind Linear, Conv2d or Embedding`);
    if (!isRecord(l.weight) || (l.input !== null && !isRecord(l.input))) bad(`${where} has no weight config`);
    const shapeOk = (s: unknown): s is number[] => Array.isArray(s) && s.length >= 1 && s.length <= 8 && s.every((d) => Number.isSafeInteger(d) && d >= 1);
    if (!shapeOk(l.weightShape) || !shapeOk(l.matrixShape)) bad(`${where} has invalid shapes`);
    const n = l.weightShape.reduce((a, b) => a * b, 1);
    if (l.matrixShape.reduce((a, b) => a * b, 1) !== n) bad(`${where}: matrix shape ${fmt(l.matrixShape)} does not hold weight shape ${fmt(l.weightShape)}`);
    if (l.dtype !== 'float32' && l.dtype !== 'float64') bad(`${where} has dtype ${JSON.stringify(l.dtype)}`);
    const pk = l.packing;
    if (!isRecord(pk) || ![1, 2, 4, 8, 16, 32].includes(pk.fieldBits) || pk.fieldBits !== l.bits || !Number.isSafeInteger(pk.offset)) bad(`${where} has invalid packing ${JSON.stringify(pk)}`);
    const base3 = pk.order === 'base3-tq1';
    if ((pk.order !== 'lsb-first' && !base3) || (base3 && (l.kind !== 'Linear' || l.bits !== 2 || pk.container !== 'uint8' || l.matrixShape.length !== 2))) {
      bad(`${where} has invalid packing ${JSON.stringify(pk)} (order 'lsb-first', or 'base3-tq1' for a 2-bit Linear in uint8)`);
    }
    const ws = tensors[`${p}weight_shape`];
    if (!ws || ws.dtype !== 'int32' || Array.from(ws.dataSync()).join() !== l.weightShape.join()) bad(`${where}: tensor '${p}weight_shape' is missing or disagrees with ${fmt(l.weightShape)}`);
    if (!tensors[`${p}weight_scale`]) bad(`${where}: tensor '${p}weight_scale' is missing`);
    const codes = tensors[l.bits <= 4 ? `${p}weight_packed` : `${p}weight`];
    if (!codes) bad(`${where}: its codes ('${p}${l.bits <= 4 ? 'weight_packed' : 'weight'}') are missing`);
    const [rows, cols] = l.matrixShape as [number, number];
    const want = base3 ? rows * base3RowBytes(cols) : l.bits <= 4 ? Math.ceil((n * l.bits) / 8) : n * (codes!.dtype === 'int32' ? 4 : 1);
    const have = codes!.numel() * (codes!.dtype === 'int32' ? 4 : 1);
    const dtypeOk = l.bits <= 4 ? pk.container === 'int32' ? codes!.dtype === 'int32' : codes!.dtype === 'uint8' : ['int8', 'uint8', 'int32'].includes(codes!.dtype);
    if (!dtypeOk || have !== want) bad(`${where}: codes ${codes!.dtype} ${fmt(codes!.shape)} hold ${have} bytes; ${n} codes of ${base3 ? 'base-3 digits' : `${l.bits} bits`} need ${want} (${pk.container})`);
    if (l.sparsity !== undefined) {
      const si = tensors[`${p}weight_sparse_indices`];
      if (!isRecord(l.sparsity) || l.sparsity.pattern !== '2:4' || l.kind !== 'Linear' || l.matrixShape.length !== 2 || cols % 4 !== 0) bad(`${where} has invalid sparsity ${JSON.stringify(l.sparsity)} (pattern '2:4' on a Linear whose inputs group in fours)`);
      if (!si || si.dtype !== 'uint8' || si.numel() !== Math.ceil((rows * cols) / 8)) bad(`${where}: tensor '${p}weight_sparse_indices' is missing or not ${Math.ceil((rows * cols) / 8)} uint8 bytes`);
    }
    if (l.inputTimesteps !== undefined) {
      const it = l.inputTimesteps;
      if (!isRecord(it) || !Number.isSafeInteger(it.timesteps) || !Number.isSafeInteger(it.buckets) || it.buckets < 1 || it.buckets > it.timesteps || l.input === null) {
        bad(`${where} has invalid inputTimesteps ${JSON.stringify(it)} (integers 1 ≤ buckets ≤ timesteps, on a quantized input)`);
      }
      for (const k of ['input_scale', 'input_zero_point']) {
        const t = tensors[p + k];
        if ((t || k === 'input_scale') && (!t || t.shape.join() !== `${it.buckets},1`)) bad(`${where}: tensor '${p}${k}' must be [${it.buckets}, 1], one row per timestep bucket; it is ${t ? fmt(t.shape) : 'missing'}`);
      }
    }
    out[name] = l;
  }
  return { tensors, layers: out, tritPlanes: checkTritPlanes(tensors, metadata, bad), metadata };
}

/** The `qgrad.trit_planes` entries of a decoded file, checked against the tensors they name. */
function checkTritPlanes(tensors: Record<string, Tensor>, metadata: Record<string, string>, bad: (what: string) => never): Record<string, TritPlaneLayerInfo> {
  const out: Record<string, TritPlaneLayerInfo> = Object.create(null);
  const text = metadata['qgrad.trit_planes'];
  if (text === undefined) return out;
  let layers: unknown;
  try {
    layers = JSON.parse(text);
  } catch {
    bad("__metadata__['qgrad.trit_planes'] is not JSON");
  }
  if (!isRecord(layers)) return bad("__metadata__['qgrad.trit_planes'] is not an object");
  for (const [name, raw] of Object.entries(layers)) {
    const p = name ? `${name}.` : '';
    const where = `trit-plane layer '${name}'`;
    const l = raw as TritPlaneLayerInfo;
    if (!isRecord(raw) || l.format !== TRIT_PLANES_FORMAT) bad(`${where} has format ${JSON.stringify(isRecord(raw) ? l.format : raw)}, expected '${TRIT_PLANES_FORMAT}'`);
    const ws = l.weightShape;
    if (!Array.isArray(ws) || ws.length !== 2 || !ws.every((d) => Number.isSafeInteger(d) && d >= 1)) bad(`${where} has invalid weightShape ${JSON.stringify(ws)}`);
    const [rows, cols] = ws;
    if (!Number.isSafeInteger(l.groupSize) || l.groupSize < 1 || cols % l.groupSize) bad(`${where}: groupSize ${JSON.stringify(l.groupSize)} must divide the ${cols} inputs`);
    const pk = l.packing;
    if (!isRecord(pk) || pk.fieldBits !== 2 || pk.order !== 'lsb-first' || pk.container !== 'uint8' || pk.offset !== -1) bad(`${where} has invalid packing ${JSON.stringify(pk)} (2-bit fields, lsb-first, uint8, offset −1)`);
    if (l.dtype !== 'float32' && l.dtype !== 'float64') bad(`${where} has dtype ${JSON.stringify(l.dtype)}`);
    if (typeof l.bias !== 'boolean') bad(`${where} has no bias flag`);
    const shape = tensors[`${p}weight_shape`];
    if (!shape || shape.dtype !== 'int32' || Array.from(shape.dataSync()).join() !== ws.join()) bad(`${where}: tensor '${p}weight_shape' is missing or disagrees with ${fmt(ws)}`);
    const bytes = Math.ceil((rows * cols * 2) / 8);
    const scaleShape = [rows, cols / l.groupSize];
    for (const i of [1, 2]) {
      const codes = tensors[`${p}weight_plane${i}_packed`];
      if (!codes || codes.dtype !== 'uint8' || codes.numel() !== bytes) bad(`${where}: tensor '${p}weight_plane${i}_packed' must be ${bytes} uint8 bytes (${rows}·${cols} 2-bit fields); it is ${codes ? `${codes.dtype} ${fmt(codes.shape)}` : 'missing'}`);
      const scale = tensors[`${p}weight_plane${i}_scale`];
      if (!scale || scale.dtype !== l.dtype || scale.shape.join() !== scaleShape.join()) bad(`${where}: tensor '${p}weight_plane${i}_scale' must be ${l.dtype} ${fmt(scaleShape)}; it is ${scale ? `${scale.dtype} ${fmt(scale.shape)}` : 'missing'}`);
    }
    if (l.bias !== (tensors[`${p}bias`] !== undefined)) bad(`${where}: the metadata says bias ${l.bias}, the file ${l.bias ? 'has no' : 'has a'} tensor '${p}bias'`);
    out[name] = l;
  }
  return out;
}

/**
 * Parses bytes written by `serializeQuantized`, checking header, tensors and metadata agree.
 * @example const { layers } = deserializeQuantized(bytes);
 */
export function deserializeQuantized(bytes: Uint8Array): QuantizedCheckpoint {
  const { tensors, metadata } = deserializeSafetensors(bytes);
  return checkQuantized(tensors, metadata);
}

/** The TimestepContext of the innermost TimestepModule holding layer `name` (whose forward announces the timesteps). */
function timestepContextOf(template: Module, name: string, who: string): TimestepContext {
  const parts = name.split('.');
  for (let i = parts.length - 1; i >= 0; i--) {
    const m = template.getSubmodule(parts.slice(0, i).join('.')) as Module & { context?: unknown };
    if (m.context instanceof TimestepContext) return m.context;
  }
  throw new Error(`${who}: the file keeps one input step per timestep bucket (TALSQ), read by the t of the running forward, but no module of the template above the layer has a TimestepContext; wrap the model in a TimestepModule as when it was saved`);
}

/**
 * Rebuilds the converted layers of `template` (a fresh model of the same architecture, float
 * layers where the saved one had converted ones) from a checkpoint and loads every tensor, in
 * place. Returns the template, now in eval mode.
 * @internal plumbing between the quantizer, QAT, LoRA and export code of @qgrad/quant, left off the API site
 */
export function applyQuantized<M extends Module>(template: M, ckpt: QuantizedCheckpoint): M {
  const state: Record<string, Tensor> = Object.create(null);
  const taken = new Set<string>();
  for (const [name, info] of Object.entries(ckpt.layers)) {
    const m = template.getSubmodule(name);
    const who = `loadQuantized: layer '${name}'`;
    const want = info.kind === 'Linear' ? Linear : info.kind === 'Conv2d' ? Conv2d : Embedding;
    if (!(m instanceof want)) throw new Error(`${who} is a ${info.kind} in the file but a ${m.constructor.name} in the template`);
    const w = (m as Linear).weight;
    if (w.shape.join() !== info.weightShape.join() || w.dtype !== info.dtype) throw new Error(`${who}: file weight ${info.dtype} ${fmt(info.weightShape)}, template ${w.dtype} ${fmt(w.shape)}`);
    const cfg = { weight: info.weight, input: info.input };
    const qat = m instanceof Linear ? QuantLinear.from(m, cfg, who) : m instanceof Conv2d ? QuantConv2d.from(m, cfg, who) : QuantEmbedding.from(m as Embedding, cfg, who);
    const q = qat instanceof QuantLinear ? new QuantizedLinear(qat) : qat instanceof QuantConv2d ? new QuantizedConv2d(qat) : new QuantizedEmbedding(qat);
    if (q.codeBits !== info.bits) throw new Error(`${who}: the file stores ${info.bits}-bit codes, grid ${q.weightPlan.grid.label} needs ${q.codeBits}`);
    if (info.packing.order === 'base3-tq1') {
      if (!(q instanceof QuantizedLinear) || !q.ternary) throw new Error(`${who}: the file stores base-3 codes, grid ${q.weightPlan.grid.label} is not ternary`);
      q.repackBase3();
    }
    if (info.inputTimesteps) q.useInputTimesteps(new TimestepBuckets(info.inputTimesteps.timesteps, info.inputTimesteps.buckets), timestepContextOf(template, name, who));
    if (info.sparsity && q instanceof QuantizedLinear) {
      q.sparsity = info.sparsity.pattern;
      // as convert does: a 2:4 layer runs on the kept half of its weight
      if (q.kernel === 'packed') q.kernel = 'sparse24';
    }
    replaceSubmodule(template, name, q);
    const p = name ? `${name}.` : '';
    const codes = ckpt.tensors[info.bits <= 4 ? `${p}weight_packed` : `${p}weight`]!;
    const rename: [string, Tensor | undefined][] = [
      ['weightCodes', codes.dtype === 'int32' && info.bits <= 4 ? fromTypedArray(new Uint8Array(Int32Array.from(codes.dataSync()).buffer), [q.weightCodes.numel()], 'uint8') : codes.reshape([codes.numel()])],
      ['weightScale', ckpt.tensors[`${p}weight_scale`]], ['weightZeroPoint', ckpt.tensors[`${p}weight_zero_point`]],
      ['weightScaleSecond', ckpt.tensors[`${p}weight_scale_second`]], ['weightScaleMean', ckpt.tensors[`${p}weight_scale_mean`]],
      ['inputScale', ckpt.tensors[`${p}input_scale`]], ['inputZeroPoint', ckpt.tensors[`${p}input_zero_point`]],
    ];
    for (const [k, t] of rename) if (t) state[p + k] = t;
    for (const k of ['weight_sparse_indices', 'weight_packed', 'weight', 'weight_shape', 'weight_scale', 'weight_zero_point', 'weight_scale_second', 'weight_scale_mean', 'input_scale', 'input_zero_point']) taken.add(p + k);
  }
  for (const [name, info] of Object.entries(ckpt.tritPlanes)) {
    const m = template.getSubmodule(name);
    const who = `loadQuantized: trit-plane layer '${name}'`;
    if (!(m instanceof Linear)) throw new Error(`${who} is a Linear in the file but a ${m.constructor.name} in the template`);
    const [rows, cols] = info.weightShape;
    if (m.weight.shape.join() !== `${rows},${cols}` || m.weight.dtype !== info.dtype || (m.bias !== null) !== info.bias) {
      throw new Error(`${who}: file weight ${info.dtype} ${fmt(info.weightShape)}${info.bias ? ' with bias' : ''}, template ${m.weight.dtype} ${fmt(m.weight.shape)}${m.bias ? ' with bias' : ''}`);
    }
    // an empty layer of the right shapes, filled from the file below
    const n = rows * cols, g = n / info.groupSize;
    const empty = { outFeatures: rows, inFeatures: cols, groupSize: info.groupSize, t1: new Int8Array(n), t2: new Int8Array(n), scale1: new Float64Array(g), scale2: new Float64Array(g), errors: [], objectives: [] };
    replaceSubmodule(template, name, new TritPlaneLinear(empty, m.bias, info.dtype));
    const p = name ? `${name}.` : '';
    for (const i of [1, 2]) {
      const codes = ckpt.tensors[`${p}weight_plane${i}_packed`]!;
      state[`${p}plane${i}`] = codes.reshape([codes.numel()]);
      state[`${p}scale${i}`] = ckpt.tensors[`${p}weight_plane${i}_scale`]!;
      taken.add(`${p}weight_plane${i}_packed`).add(`${p}weight_plane${i}_scale`);
    }
    taken.add(`${p}weight_shape`);
  }
  for (const [k, t] of Object.entries(ckpt.tensors)) if (!taken.has(k)) state[k] = t;
  const own = template.stateDict();
  for (const [k, t] of Object.entries(state)) {
    const o = own[k];
    if (o && o.dtype !== t.dtype) throw new Error(`loadQuantized: tensor '${k}' is ${t.dtype} in the file, ${o.dtype} in the model`);
  }
  template.loadStateDict(state);
  template.eval();
  return template;
}

/**
 * Reads a file written by `saveQuantized` into `template`, a fresh model of the same
 * architecture (its float layers are replaced by the converted layers the file describes).
 * @example const model = loadQuantized('mlp.safetensors', new Sequential(new Linear(784, 10)));
 */
export function loadQuantized<M extends Module>(path: string, template: M): M {
  const { tensors, metadata } = loadSafetensorsWithMetadata(path);
  try {
    return applyQuantized(template, checkQuantized(tensors, metadata));
  } catch (e) {
    (e as Error).message = `${(e as Error).message} (in ${path})`;
    throw e;
  }
}
