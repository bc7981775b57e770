/**
 * @file The one ONNX graph builder behind `exportOnnx`: nodes and initializers, the layers every
 * model walker shares (Linear/Conv2d float, QDQ or com.microsoft MatMulNBits; input QDQ;
 * activations; LayerNorm) and the ModelProto serialisation. Which layers a model has, and in
 * what order, is the walkers' business (onnx.ts).
 */
import { noGrad, type Tensor } from '@qgrad/core';
import { Conv2d, GELU, LayerNorm, LeakyReLU, Linear, ReLU, Sigmoid, SiLU, Tanh, type Module } from '@qgrad/nn';
import { QuantizedConv2d, QuantizedLinear } from '../qat/convert.js';
import { TritPlaneLinear } from '../ptq/ptqtp.js';
import { ProtoWriter } from './protobuf.js';

/** ONNX TensorProto data types used here. */
export const DT = { float: 1, uint8: 2, int8: 3, int32: 6, int64: 7, uint4: 21, int4: 22 } as const;
export const OPSET = 21;
const IR_VERSION = 10;
/** The contrib domain of MatMulNBits, at the only version onnxruntime defines. */
export const MS_DOMAIN = 'com.microsoft';

/** How 4-bit Linear weights go out: onnxruntime's MatMulNBits contrib op, or standard QDQ. */
export type Int4Export = 'matmulnbits' | 'qdq';

/** How one layer went out (see OnnxExportResult.layers). */
export interface OnnxLayerRow {
  name: string;
  op: string;
  /** 'qdq': integer codes + DequantizeLinear; 'matmulnbits': packed 4-bit codes in com.microsoft MatMulNBits; 'float': dequantized values. */
  weight?: 'qdq' | 'matmulnbits' | 'float';
  input?: 'qdq' | 'float';
  /** Weights written as a sum of dequantized planes (PTQTP: 2), where more than one. */
  planes?: number;
}

type Attr = { name: string; i?: number; ints?: number[]; f?: number; s?: string };
interface Node { op: string; inputs: string[]; outputs: string[]; attrs?: Attr[]; domain?: string }
interface Init { name: string; dtype: number; dims: number[]; data: Uint8Array }

const raw = (a: ArrayBufferView) => new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
const f32 = (t: Tensor | Float32Array) => raw(t instanceof Float32Array ? t : Float32Array.from(t.contiguous().dataSync()));
const pair = (p: unknown, d: number): [number, number] => (p == null ? [d, d] : typeof p === 'number' ? [p, p] : (p as [number, number]));

/** [rows, cols] row-major → [cols, rows]: MatMul reads weights as [K, N], qgrad stores [N, K]. */
function transpose<T extends Float32Array | Int32Array>(a: T, rows: number, cols: number): T {
  const out = new (a.constructor as new (n: number) => T)(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c]!;
  return out;
}

/**
 * A converted layer's weight as integer codes on a per-tensor, per-row or per-row-block scale
 * layout, or null where the grid or granularity has no such form (it then goes out as floats).
 * `block` is the number of inputs one scale covers (cols: per channel; 0: per tensor).
 */
interface Codes { codes: Int32Array; scales: Float32Array; zero: Int32Array | null; rows: number; cols: number; block: number; qmin: number; qmax: number }

function integerCodes(m: QuantizedLinear | QuantizedConv2d): Codes | null {
  const p = m.weightPlan;
  const q = p.grid.integer;
  const g = p.granularity;
  const conv = m instanceof QuantizedConv2d;
  const rows = m.weightShape[0]!;
  const cols = m.matrixShape[m.matrixShape.length - 1]!;
  const block = g === 'tensor' ? 0 : g === 'channel' ? cols : typeof g === 'object' && 'group' in g && (g.axis ?? -1) === -1 && !conv ? g.group : -1;
  if (!q || block < 0 || p.offset === 'beta' || m.weightDType !== 'float32' || m.weightScaleSecond) return null;
  // int8 codes without a zero point, uint8 codes with one: DequantizeLinear's two integer types
  if (m.weightZeroPoint ? q.qmin < 0 || q.qmax > 255 : q.qmin < -128 || q.qmax > 127) return null;
  const zero = m.weightZeroPoint ? Int32Array.from(m.weightZeroPoint.contiguous().dataSync(), Math.round) : null;
  return { codes: Int32Array.from(m.codes().dataSync()), scales: Float32Array.from(noGrad(() => m.scales()).contiguous().dataSync()), zero, rows, cols, block, qmin: q.qmin, qmax: q.qmax };
}

/**
 * The MatMulNBits form of 4-bit codes, or null where the op cannot hold them: B is uint8
 * [N, K/bs, bs/2] with input k of a block in the low nibble when even, the high one when odd;
 * weight = (code − zero point)·scale, the zero point 8 when absent — so signed codes q ∈ [−8, 7]
 * go out as q + 8 with no zero-point input, and unsigned codes with a zero point as themselves,
 * zero points packed two per byte, each row padded to whole bytes.
 */
function nbits(c: Codes): { b: Uint8Array; zero: Uint8Array | null; blocks: number } | null {
  const bs = c.block;
  const fits = c.zero ? c.qmin >= 0 && c.qmax <= 15 : c.qmin >= -8 && c.qmax <= 7;
  if (!fits || bs < 16 || (bs & (bs - 1)) !== 0 || c.cols % bs !== 0) return null;
  const blocks = c.cols / bs;
  const b = new Uint8Array((c.rows * c.cols) / 2);
  const shift = c.zero ? 0 : 8;
  c.codes.forEach((q, i) => (b[i >> 1]! |= (q + shift) << ((i & 1) * 4)));
  let zero: Uint8Array | null = null;
  if (c.zero) {
    const perRow = Math.ceil(blocks / 2);
    zero = new Uint8Array(c.rows * perRow);
    c.zero.forEach((z, i) => (zero![Math.floor(i / blocks) * perRow + ((i % blocks) >> 1)]! |= z << ((i % blocks & 1) * 4)));
  }
  return { b, zero, blocks };
}

/** Collects nodes and initializers, emits the layers models share, and serialises the ModelProto. */
export class OnnxGraph {
  readonly nodes: Node[] = [];
  readonly inits: Init[] = [];
  readonly layers: OnnxLayerRow[] = [];
  #k = 0;
  constructor(readonly int4: Int4Export = 'matmulnbits') {}

  /** Appends a node and returns the name of its (single) output. */
  add(op: string, inputs: string[], attrs?: Attr[], domain?: string): string {
    const out = `${op.toLowerCase()}_${this.#k++}`;
    this.nodes.push({ op, inputs, outputs: [out], attrs, domain });
    return out;
  }
  init(name: string, dtype: number, dims: number[], data: Uint8Array): string {
    this.inits.push({ name, dtype, dims, data });
    return name;
  }
  float(name: string, t: Tensor | Float32Array, dims: number[]): string {
    return this.init(name, DT.float, dims, f32(t));
  }
  /** An int64 vector constant (shapes, perms, indices), shared by name. */
  int64(values: number[], dims: number[] = [values.length]): string {
    const name = `const_i64_${dims.length ? '' : 's'}${values.join('_').replace(/-/g, 'm')}`;
    if (!this.inits.some((t) => t.name === name)) this.init(name, DT.int64, dims, raw(BigInt64Array.from(values, BigInt)));
    return name;
  }
  reshape(x: string, shape: number[]): string {
    return this.add('Reshape', [x, this.int64(shape)]);
  }
  transpose(x: string, perm: number[]): string {
    return this.add('Transpose', [x], [{ name: 'perm', ints: perm }]);
  }

  /** An activation module as its node(s), or null if `m` is none this builder maps. */
  activation(m: Module, x: string): string | null {
    if (m instanceof ReLU) return this.add('Relu', [x]);
    if (m instanceof Sigmoid) return this.add('Sigmoid', [x]);
    if (m instanceof Tanh) return this.add('Tanh', [x]);
    if (m instanceof SiLU) return this.add('Mul', [x, this.add('Sigmoid', [x])]); // opset 21 has no Swish
    if (m instanceof LeakyReLU) return this.add('LeakyRelu', [x], [{ name: 'alpha', f: m.negativeSlope }]);
    // Gelu is an operator since opset 20, exact (erf) or tanh, as qgrad's gelu
    if (m instanceof GELU) return this.add('Gelu', [x], [{ name: 'approximate', s: m.approximate }]);
    return null;
  }

  layerNorm(name: string, m: LayerNorm, x: string): string {
    const n = m.normalizedShape;
    const scale = m.weight ? this.float(`${name}.weight`, m.weight, n) : this.float(`${name}.weight`, new Float32Array(n.reduce((a, b) => a * b, 1)).fill(1), n);
    const inputs = [x, scale, ...(m.bias ? [this.float(`${name}.bias`, m.bias, n)] : [])];
    return this.add('LayerNormalization', inputs, [{ name: 'axis', i: -n.length }, { name: 'epsilon', f: m.eps }]);
  }

  /** QuantizeLinear → DequantizeLinear for a converted layer's 8-bit per-tensor stored input quantizer; x itself if it has none. */
  #input(name: string, m: Module, x: string, who: string, row: OnnxLayerRow): string {
    if (!(m instanceof QuantizedLinear || m instanceof QuantizedConv2d) || !m.inputPlan) return x;
    const p = m.inputPlan;
    // DequantizeLinear takes its scale as a tensor, not by the timestep of the run
    if (m.inputTimesteps) throw new Error(`${who}: its input steps are a table by timestep bucket (TALSQ, ${m.inputTimesteps.buckets.count} buckets), which a QuantizeLinear/DequantizeLinear pair cannot select`);
    const q = p.grid.integer;
    const full = q && ((q.qmin === -128 && q.qmax === 127) || (q.qmin === 0 && q.qmax === 255));
    if (!full || !m.inputScale || m.inputScale.numel() !== 1 || p.offset === 'beta') {
      throw new Error(`${who}: inputs are exported as QuantizeLinear/DequantizeLinear with a stored per-tensor scale on a full 8-bit integer grid; this layer's input is ${p.grid.label} ${p.mode}`);
    }
    const z = m.inputZeroPoint ? Math.round(m.inputZeroPoint.item()) : 0;
    const zt = q.qmin < 0 ? DT.int8 : DT.uint8;
    const s = this.float(`${name}.input_scale`, m.inputScale, []);
    const zp = this.init(`${name}.input_zero_point`, zt, [], zt === DT.int8 ? raw(Int8Array.of(z)) : Uint8Array.of(z));
    row.input = 'qdq';
    return this.add('DequantizeLinear', [this.add('QuantizeLinear', [x, s, zp]), s, zp]);
  }

  /**
   * The weight as an ONNX value: [N, K] for Gemm/Conv, or `[K, N]` (`kn`) for MatMul. Integer
   * codes go out behind one DequantizeLinear (scale axis and blocks moved with the layout).
   */
  #weight(name: string, m: Linear | Conv2d | QuantizedLinear | QuantizedConv2d, codes: Codes | null, kn: boolean, row: OnnxLayerRow): string {
    const shape = m instanceof QuantizedLinear || m instanceof QuantizedConv2d ? m.weightShape : [...m.weight.shape];
    const [rows, cols] = [shape[0]!, shape.slice(1).reduce((a, b) => a * b, 1)];
    if (!codes) {
      const w = Float32Array.from((m instanceof QuantizedLinear || m instanceof QuantizedConv2d ? m.dequantizedWeight() : m.weight).contiguous().dataSync());
      return kn ? this.float(`${name}.weight`, transpose(w, rows, cols), [cols, rows]) : this.float(`${name}.weight`, w, shape);
    }
    row.weight = 'qdq';
    return this.#codesWeight(name, shape, codes, kn);
  }

  /** Integer codes [rows, cols…] behind one DequantizeLinear, as `#weight` writes them; initializers named `${name}.weight_…`. */
  #codesWeight(name: string, shape: number[], codes: Codes, kn: boolean): string {
    const { rows, cols, block } = codes;
    const blocks = block ? cols / block : 1;
    // codes of ≤ 4 bits as opset 21's packed INT4/UINT4 (two per byte, first in the low nibble, the tensor padded at its end)
    const nibbles = codes.zero ? codes.qmax <= 15 : codes.qmin >= -8 && codes.qmax <= 7;
    const dt = codes.zero ? (nibbles ? DT.uint4 : DT.uint8) : nibbles ? DT.int4 : DT.int8;
    const bytes = (a: Int32Array) => {
      if (!nibbles) return dt === DT.int8 ? raw(Int8Array.from(a)) : Uint8Array.from(a);
      const out = new Uint8Array(Math.ceil(a.length / 2));
      a.forEach((q, i) => (out[i >> 1]! |= (q & 15) << ((i & 1) * 4)));
      return out;
    };
    const attrs: Attr[] = [];
    let sDims: number[] = [];
    let scales = codes.scales;
    let zero = codes.zero;
    if (block === cols) {
      sDims = [rows];
      attrs.push({ name: 'axis', i: kn ? 1 : 0 });
    } else if (block) {
      sDims = kn ? [blocks, rows] : [rows, blocks];
      if (kn) [scales, zero] = [transpose(scales, rows, blocks), zero && transpose(zero, rows, blocks)];
      attrs.push({ name: 'axis', i: kn ? 0 : 1 }, { name: 'block_size', i: block });
    }
    const wq = this.init(`${name}.weight_quantized`, dt, kn ? [cols, rows] : shape, bytes(kn ? transpose(codes.codes, rows, cols) : codes.codes));
    const inputs = [wq, this.float(`${name}.weight_scale`, scales, sDims)];
    if (zero) inputs.push(this.init(`${name}.weight_zero_point`, dt, sDims, bytes(zero)));
    return this.add('DequantizeLinear', inputs, attrs);
  }

  /**
   * A Linear (float or converted) applied to x of rank `rank`: Gemm for rank 2 (as torch.onnx),
   * MatMul + Add otherwise, or MatMulNBits for 4-bit codes in power-of-two blocks ≥ 16 when
   * `int4` is 'matmulnbits'. Returns the output's name.
   */
  linear(name: string, m: Linear | QuantizedLinear | TritPlaneLinear, x: string, rank: number, who = `exportOnnx: layer ${name} (${m.constructor.name})`): string {
    if (m instanceof TritPlaneLinear) return this.#tritPlanes(name, m, x, rank, who);
    const row: OnnxLayerRow = { name, op: rank === 2 ? 'Gemm' : 'MatMul', weight: 'float', input: 'float' };
    this.layers.push(row);
    x = this.#input(name, m, x, who, row);
    const codes = m instanceof QuantizedLinear ? integerCodes(m) : null;
    const [n, k] = m instanceof QuantizedLinear ? m.weightShape as [number, number] : m.weight.shape as [number, number];
    const packed = codes && this.int4 === 'matmulnbits' ? nbits(codes) : null;
    if (packed) {
      row.op = 'MatMulNBits';
      row.weight = 'matmulnbits';
      const bs = codes!.block;
      const b = this.init(`${name}.weight_packed`, DT.uint8, [n, packed.blocks, bs / 2], packed.b);
      const inputs = [x, b, this.float(`${name}.weight_scale`, codes!.scales, [n * packed.blocks])];
      inputs.push(packed.zero ? this.init(`${name}.weight_zero_point`, DT.uint8, [packed.zero.length], packed.zero) : '');
      if (m.bias) inputs.push('', this.float(`${name}.bias`, m.bias, [n]));
      while (inputs.at(-1) === '') inputs.pop();
      const attrs = [{ name: 'K', i: k }, { name: 'N', i: n }, { name: 'bits', i: 4 }, { name: 'block_size', i: bs }];
      return this.add('MatMulNBits', inputs, attrs, MS_DOMAIN);
    }
    const w = this.#weight(name, m, codes, rank !== 2, row);
    const bias = m.bias ? this.float(`${name}.bias`, m.bias, [n]) : null;
    if (rank === 2) return this.add('Gemm', bias ? [x, w, bias] : [x, w], [{ name: 'transB', i: 1 }]);
    const y = this.add('MatMul', [x, w]);
    return bias ? this.add('Add', [y, bias]) : y;
  }

  /**
   * PTQTP's two ternary planes as standard QDQ: each plane INT4 codes in {−1, 0, 1} behind a
   * DequantizeLinear with its α per row (or per row-group, blocked), the two dequantized weights
   * added (Ŵ = α¹T¹ + α²T²), then Gemm/MatMul. Neither ONNX nor onnxruntime has a two-plane
   * ternary operator, and MatMulNBits holds one plane only, so this is the form both read
   * exactly; ORT does not fuse it into MatMulNBits (the Add stands between the DequantizeLinear
   * and the MatMul), so it computes Ŵ in float32 once per run, as a torchao user's
   * dequantize-then-matmul would.
   */
  #tritPlanes(name: string, m: TritPlaneLinear, x: string, rank: number, who: string): string {
    const row: OnnxLayerRow = { name, op: rank === 2 ? 'Gemm' : 'MatMul', weight: 'qdq', input: 'float', planes: 2 };
    this.layers.push(row);
    if (m.scale1.dtype !== 'float32') throw new Error(`${who}: its α scales are ${m.scale1.dtype}; ONNX export writes float32 (build the PTQTP layer from a float32 model)`);
    const [n, k] = [m.outFeatures, m.inFeatures];
    const kn = rank !== 2;
    const block = m.groupSize === k ? k : m.groupSize;
    const [t1, t2] = m.planes();
    const plane = (i: number, t: Int8Array, scale: Tensor) =>
      this.#codesWeight(`${name}.plane${i}`, [n, k], { codes: Int32Array.from(t), scales: Float32Array.from(scale.contiguous().dataSync()), zero: null, rows: n, cols: k, block, qmin: -1, qmax: 1 }, kn);
    const w = this.add('Add', [plane(1, t1, m.scale1), plane(2, t2, m.scale2)]);
    const bias = m.bias ? this.float(`${name}.bias`, m.bias, [n]) : null;
    if (rank === 2) return this.add('Gemm', bias ? [x, w, bias] : [x, w], [{ name: 'transB', i: 1 }]);
    const y = this.add('MatMul', [x, w]);
    return bias ? this.add('Add', [y, bias]) : y;
  }

  /** A Conv2d (float or converted): integer codes per tensor or per output channel behind DequantizeLinear. */
  conv(name: string, m: Conv2d | QuantizedConv2d, x: string, who = `exportOnnx: layer ${name} (${m.constructor.name})`): string {
    const row: OnnxLayerRow = { name, op: 'Conv', weight: 'float', input: 'float' };
    this.layers.push(row);
    x = this.#input(name, m, x, who, row);
    const w = this.#weight(name, m, m instanceof QuantizedConv2d ? integerCodes(m) : null, false, row);
    const c = m.conv;
    if (typeof c.padding === 'string') throw new Error(`${who}: padding '${c.padding}' is not exported; give numbers`);
    const pd = pair(c.padding, 0);
    const inputs = [x, w, ...(m.bias ? [this.float(`${name}.bias`, m.bias, [...m.bias.shape])] : [])];
    return this.add('Conv', inputs, [{ name: 'strides', ints: pair(c.stride, 1) }, { name: 'pads', ints: [pd[0], pd[1], pd[0], pd[1]] }, { name: 'dilations', ints: pair(c.dilation, 1) }, { name: 'group', i: c.groups ?? 1 }]);
  }

  /** The ModelProto: opset 21 (plus com.microsoft 1 where used), input 'input' and output 'output', the first dim of each symbolic 'N'. */
  finish(out: string, inputShape: readonly number[], outShape: readonly number[]): Uint8Array {
    const last = [...this.nodes].reverse().find((n) => n.outputs[0] === out);
    if (!last) throw new Error('exportOnnx: the model has no layers');
    last.outputs[0] = 'output';
    const pm = new ProtoWriter();
    pm.int(1, IR_VERSION).string(2, 'qgrad').message(8, (o) => o.string(1, '').int(2, OPSET));
    if (this.nodes.some((n) => n.domain === MS_DOMAIN)) pm.message(8, (o) => o.string(1, MS_DOMAIN).int(2, 1));
    pm.message(7, (g) => {
      for (const n of this.nodes) {
        g.message(1, (nb) => {
          for (const s of n.inputs) nb.string(1, s);
          for (const s of n.outputs) nb.string(2, s);
          nb.string(3, n.outputs[0]!).string(4, n.op);
          for (const a of n.attrs ?? []) {
            nb.message(5, (ab) => {
              ab.string(1, a.name);
              if (a.ints) {
                for (const v of a.ints) ab.int(8, v);
                ab.int(20, 7);
              } else if (a.f !== undefined) ab.float(2, a.f).int(20, 1);
              else if (a.s !== undefined) ab.string(4, a.s).int(20, 3);
              else ab.int(3, a.i!).int(20, 2);
            });
          }
          if (n.domain) nb.string(7, n.domain);
        });
      }
      g.string(2, 'qgrad');
      for (const t of this.inits) g.message(5, (tb) => {
        for (const d of t.dims) tb.int(1, d);
        tb.int(2, t.dtype).string(8, t.name).bytes(9, t.data);
      });
      const value = (field: number, name: string, shape: readonly number[]) =>
        g.message(field, (v) => v.string(1, name).message(2, (tp) => tp.message(1, (tt) => tt.int(1, DT.float).message(2, (sh) => {
          shape.forEach((d, j) => sh.message(1, (dim) => (j === 0 ? dim.string(2, 'N') : dim.int(1, d))));
        }))));
      value(11, 'input', inputShape);
      value(12, 'output', outShape);
    });
    return pm.finish();
  }
}
