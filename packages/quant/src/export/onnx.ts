/**
 * @file `exportOnnx(model, path, { inputShape })`: a Sequential MLP or CNN (float, or after
 * `convert`) as an ONNX model with QDQ — DequantizeLinear on integer weight codes (per tensor,
 * per channel, or blockwise per group), QuantizeLinear/DequantizeLinear on 8-bit inputs with
 * stored scales — opset 21; and `readOnnx(bytes)`, the validating reader.
 */
import { noGrad, zeros, type Tensor } from '@qgrad/core';
import { Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential, Sigmoid, Tanh, type Module } from '@qgrad/nn';
import { QuantizedConv2d, QuantizedLinear } from '../qat/convert.js';
import { ByteReader, nodeFs } from './bytes.js';
import { ProtoWriter, readFields, type ProtoField } from './protobuf.js';

/** ONNX TensorProto data types used here. */
const DT = { float: 1, uint8: 2, int8: 3, int32: 6, int64: 7 } as const;
const DT_BYTES: Record<number, number> = { 1: 4, 2: 1, 3: 1, 6: 4, 7: 8, 11: 8, 10: 2, 16: 2 };
const OPSET = 21;
const IR_VERSION = 10;

/** Options of `exportOnnx`: the input's shape (its first extent becomes the symbolic batch dim). */
export interface OnnxExportOptions {
  /** The input's shape; its first extent is the batch and is written as a symbolic dim 'N'. */
  inputShape: number[];
}

/** What `exportOnnx` returns: the model's bytes and how each layer's weight and input went out. */
export interface OnnxExportResult {
  bytes: Uint8Array;
  /** Per layer, how its weight went out: 'qdq' (integer codes + DequantizeLinear) or 'float' (dequantized values). */
  layers: { name: string; op: string; weight?: 'qdq' | 'float'; input?: 'qdq' | 'float' }[];
}

type Attr = { name: string; i?: number; ints?: number[]; f?: number };
interface Node { op: string; inputs: string[]; outputs: string[]; attrs?: Attr[] }
interface Init { name: string; dtype: number; dims: number[]; data: Uint8Array }

const raw = (a: ArrayBufferView) => new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
const f32 = (t: Tensor | Float32Array | number[]) => raw(t instanceof Float32Array ? t : Float32Array.from(Array.isArray(t) ? t : t.contiguous().dataSync()));

/**
 * The ONNX bytes of a Sequential model (see `exportOnnx`).
 * @example const { bytes } = modelToOnnx(model, { inputShape: [1, 784] });
 */
export function modelToOnnx(model: Module, opts: OnnxExportOptions): OnnxExportResult {
  if (!(model instanceof Sequential)) throw new Error(`exportOnnx: exports a Sequential of layers (Linear, Conv2d, converted ones, ReLU, Sigmoid, Tanh, Flatten, MaxPool2d); got ${model.constructor.name}`);
  const nodes: Node[] = [];
  const inits: Init[] = [];
  const layers: OnnxExportResult['layers'] = [];
  let cur = 'input';
  let k = 0;
  const fresh = (s: string) => `${s}_${k++}`;
  const add = (op: string, inputs: string[], attrs?: Attr[]): string => {
    const out = fresh(op.toLowerCase());
    nodes.push({ op, inputs, outputs: [out], attrs });
    return out;
  };
  const init = (name: string, dtype: number, dims: number[], data: Uint8Array) => {
    inits.push({ name, dtype, dims, data });
    return name;
  };
  let i = 0;
  for (const m of model) {
    const name = String(i++);
    const who = `exportOnnx: layer ${name} (${m.constructor.name})`;
    if (m instanceof ReLU || m instanceof Sigmoid || m instanceof Tanh) {
      cur = add(m instanceof ReLU ? 'Relu' : m instanceof Sigmoid ? 'Sigmoid' : 'Tanh', [cur]);
      layers.push({ name, op: m.constructor.name });
    } else if (m instanceof Flatten) {
      if (m.startDim !== 1 || m.endDim !== -1) throw new Error(`${who}: only Flatten(1, -1) maps to ONNX Flatten`);
      cur = add('Flatten', [cur], [{ name: 'axis', i: 1 }]);
      layers.push({ name, op: 'Flatten' });
    } else if (m instanceof MaxPool2d) {
      const pair = (p: number | [number, number] | null | undefined, d: number) => (p == null ? [d, d] : typeof p === 'number' ? [p, p] : p);
      const ks = pair(m.kernelSize as number | [number, number], 1);
      const st = pair(m.opts.stride as number | [number, number] | null, 0);
      const pd = pair(m.opts.padding as number | [number, number] | undefined, 0);
      if (m.opts.ceilMode || (m.opts.dilation !== undefined && pair(m.opts.dilation as number, 1).some((d) => d !== 1))) throw new Error(`${who}: ceilMode and dilation are not exported`);
      cur = add('MaxPool', [cur], [{ name: 'kernel_shape', ints: ks }, { name: 'strides', ints: m.opts.stride == null ? ks : st }, { name: 'pads', ints: [pd[0]!, pd[1]!, pd[0]!, pd[1]!] }]);
      layers.push({ name, op: 'MaxPool' });
    } else if (m instanceof Linear || m instanceof QuantizedLinear || m instanceof Conv2d || m instanceof QuantizedConv2d) {
      const conv = m instanceof Conv2d || m instanceof QuantizedConv2d;
      const row: OnnxExportResult['layers'][number] = { name, op: conv ? 'Conv' : 'Gemm', weight: 'float', input: 'float' };
      let x = cur;
      if ((m instanceof QuantizedLinear || m instanceof QuantizedConv2d) && m.inputPlan) {
        const p = m.inputPlan;
        const q = p.grid.integer;
        const full = q && ((q.qmin === -128 && q.qmax === 127) || (q.qmin === 0 && q.qmax === 255));
        if (!full || !m.inputScale || m.inputScale.numel() !== 1 || p.offset === 'beta') {
          throw new Error(`${who}: inputs are exported as QuantizeLinear/DequantizeLinear with a stored per-tensor scale on a full 8-bit integer grid; this layer's input is ${p.grid.label} ${p.mode}`);
        }
        const z = m.inputZeroPoint ? Math.round(m.inputZeroPoint.item()) : 0;
        const zt = q.qmin < 0 ? DT.int8 : DT.uint8;
        const s = init(`${name}.input_scale`, DT.float, [], f32(m.inputScale));
        const zp = init(`${name}.input_zero_point`, zt, [], zt === DT.int8 ? raw(Int8Array.of(z)) : Uint8Array.of(z));
        x = add('DequantizeLinear', [add('QuantizeLinear', [x, s, zp]), s, zp]);
        row.input = 'qdq';
      }
      let w: string;
      if (m instanceof QuantizedLinear || m instanceof QuantizedConv2d) {
        const p = m.weightPlan;
        const q = p.grid.integer;
        const g = p.granularity;
        const rows = m.weightShape[0]!;
        const cols = m.matrixShape[m.matrixShape.length - 1]!;
        const group = g === 'tensor' ? -1 : g === 'channel' ? cols : typeof g === 'object' && 'group' in g && (g.axis ?? -1) === -1 && !conv ? g.group : 0;
        if (q && q.qmin >= -128 && q.qmax <= 127 && !m.weightZeroPoint && group !== 0 && m.weightDType === 'float32') {
          // integer codes as INT8 and one DequantizeLinear: per tensor, per output channel (axis 0) or blockwise along the inputs
          const codes = Int8Array.from(m.codes().dataSync());
          const scales = f32(noGrad(() => m.scales()));
          const wq = init(`${name}.weight_quantized`, DT.int8, m.weightShape, raw(codes));
          const attrs: Attr[] = [];
          let sDims: number[];
          if (group === -1) sDims = [];
          else if (group === cols) {
            sDims = [rows];
            attrs.push({ name: 'axis', i: 0 });
          } else {
            sDims = [rows, cols / group];
            attrs.push({ name: 'axis', i: 1 }, { name: 'block_size', i: group });
          }
          const s = init(`${name}.weight_scale`, DT.float, sDims, scales);
          w = add('DequantizeLinear', [wq, s], attrs);
          row.weight = 'qdq';
        } else w = init(`${name}.weight`, DT.float, m.weightShape, f32(m.dequantizedWeight()));
      } else w = init(`${name}.weight`, DT.float, [...m.weight.shape], f32(m.weight));
      const inputs = [x, w];
      if (m.bias) inputs.push(init(`${name}.bias`, DT.float, [...m.bias.shape], f32(m.bias)));
      if (conv) {
        const c = (m as Conv2d | QuantizedConv2d).conv;
        const pair = (p: unknown, d: number): [number, number] => (p === undefined ? [d, d] : typeof p === 'number' ? [p, p] : (p as [number, number]));
        if (typeof c.padding === 'string') throw new Error(`${who}: padding '${c.padding}' is not exported; give numbers`);
        const pd = pair(c.padding, 0);
        cur = add('Conv', inputs, [{ name: 'strides', ints: pair(c.stride, 1) }, { name: 'pads', ints: [pd[0], pd[1], pd[0], pd[1]] }, { name: 'dilations', ints: pair(c.dilation, 1) }, { name: 'group', i: c.groups ?? 1 }]);
      } else cur = add('Gemm', inputs, [{ name: 'transB', i: 1 }]);
      layers.push(row);
    } else throw new Error(`${who}: no ONNX mapping (Linear, Conv2d, their converted forms, ReLU, Sigmoid, Tanh, Flatten, MaxPool2d are)`);
  }
  const outShape = noGrad(() => model.forward(zeros(opts.inputShape))).shape;
  if (!nodes.length) throw new Error('exportOnnx: the model has no layers');
  nodes.at(-1)!.outputs[0] = 'output';
  const pm = new ProtoWriter();
  pm.int(1, IR_VERSION).string(2, 'qgrad').message(8, (o) => o.string(1, '').int(2, OPSET));
  pm.message(7, (g) => {
    for (const n of nodes) {
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
            else ab.int(3, a.i!).int(20, 2);
          });
        }
      });
    }
    g.string(2, 'qgrad');
    for (const t of inits) g.message(5, (tb) => {
      for (const d of t.dims) tb.int(1, d);
      tb.int(2, t.dtype).string(8, t.name).bytes(9, t.data);
    });
    const value = (field: number, name: string, shape: readonly number[]) =>
      g.message(field, (v) => v.string(1, name).message(2, (tp) => tp.message(1, (tt) => tt.int(1, DT.float).message(2, (sh) => {
        shape.forEach((d, j) => sh.message(1, (dim) => (j === 0 ? dim.string(2, 'N') : dim.int(1, d))));
      }))));
    value(11, 'input', opts.inputShape);
    value(12, 'output', outShape);
  });
  return { bytes: pm.finish(), layers };
}


/**
 * Writes a Sequential MLP or CNN as ONNX (opset 21, QDQ). Converted layers with symmetric integer
 * weight codes of ≤ 8 bits per tensor, per channel or (Linear) per group become INT8 initializers
 * behind DequantizeLinear; other grids go out as their dequantized values. 8-bit inputs with a
 * stored scale become QuantizeLinear → DequantizeLinear. onnxruntime reproduces qgrad's eval output
 * within float32 summation error.
 * @example convert(model); exportOnnx(model, 'mlp.onnx', { inputShape: [1, 784] });
 */
export function exportOnnx(model: Module, path: string, opts: OnnxExportOptions): OnnxExportResult {
  const r = modelToOnnx(model, opts);
  nodeFs('exportOnnx', 'use modelToOnnx for the bytes').writeFileSync(path, r.bytes);
  return r;
}

// ---------------------------------------------------------------- reading

/** A parsed ONNX model (what `readOnnx` returns): IR version, opsets, nodes, initializers and graph inputs/outputs. */
export interface OnnxFile {
  irVersion: number;
  opsets: { domain: string; version: number }[];
  nodes: { op: string; inputs: string[]; outputs: string[] }[];
  initializers: { name: string; dtype: number; dims: number[]; bytes: Uint8Array }[];
  inputs: string[];
  outputs: string[];
}

/**
 * Parses and checks an ONNX model: the protobuf structure (tags, varints, lengths inside their
 * message), the graph, every initializer's raw bytes against its dtype and dims (external data
 * refused), and that each node input is a graph input, an initializer or an earlier output.
 * Errors are FormatErrors naming the byte offset.
 * @example readOnnx(readFileSync('mlp.onnx')).nodes.map((n) => n.op);
 */
export function readOnnx(bytes: Uint8Array): OnnxFile {
  const r = new ByteReader(bytes, 'onnx');
  const text = (f: ProtoField) => {
    if (f.wire !== 2) r.fail(`field ${f.field} should be a string`, f.at);
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(f.start, f.start + f.length));
    } catch {
      return r.fail(`field ${f.field} is not UTF-8`, f.at);
    }
  };
  const sub = (f: ProtoField) => {
    if (f.wire !== 2) r.fail(`field ${f.field} should be a message`, f.at);
    return readFields(r, f.start, f.start + f.length);
  };
  const int = (f: ProtoField) => {
    if (f.wire !== 0) r.fail(`field ${f.field} should be a varint`, f.at);
    return f.value;
  };
  const model = readFields(r, 0, bytes.length);
  const out: OnnxFile = { irVersion: 0, opsets: [], nodes: [], initializers: [], inputs: [], outputs: [] };
  let graph: ProtoField | undefined;
  for (const f of model) {
    if (f.field === 1) out.irVersion = int(f);
    else if (f.field === 8) {
      const o = { domain: '', version: 0 };
      for (const g of sub(f)) if (g.field === 1) o.domain = text(g); else if (g.field === 2) o.version = int(g);
      out.opsets.push(o);
    } else if (f.field === 7) graph = f;
  }
  if (!graph) r.fail('the model has no graph (field 7)', 0);
  const known = new Set<string>();
  const pendingNodes: { op: string; inputs: string[]; outputs: string[]; at: number }[] = [];
  for (const f of sub(graph!)) {
    if (f.field === 1) {
      const n = { op: '', inputs: [] as string[], outputs: [] as string[], at: f.at };
      for (const g of sub(f)) {
        if (g.field === 1) n.inputs.push(text(g));
        else if (g.field === 2) n.outputs.push(text(g));
        else if (g.field === 4) n.op = text(g);
        else if (g.field === 5) sub(g); // attributes: structure checked, values not needed
      }
      if (!n.op) r.fail('a node has no op_type', f.at);
      pendingNodes.push(n);
    } else if (f.field === 5) {
      const t = { name: '', dtype: 0, dims: [] as number[], bytes: new Uint8Array(0) as Uint8Array };
      let hasRaw = false;
      for (const g of sub(f)) {
        if (g.field === 1) {
          const d = int(g);
          if (d < 0 || d > bytes.length * 8) r.fail(`initializer dim ${d} is impossible`, g.at);
          t.dims.push(d);
        } else if (g.field === 2) t.dtype = int(g);
        else if (g.field === 8) t.name = text(g);
        else if (g.field === 9) {
          t.bytes = bytes.subarray(g.start, g.start + g.length);
          hasRaw = true;
        } else if (g.field === 13 || g.field === 14) r.fail(`initializer uses external data, which qgrad does not read`, g.at);
      }
      const size = DT_BYTES[t.dtype];
      if (!size) r.fail(`initializer '${t.name}' has data type ${t.dtype}, which qgrad does not read`, f.at);
      const n = t.dims.reduce((a, b) => a * b, 1);
      if (!hasRaw || t.bytes.length !== n * size!) r.fail(`initializer '${t.name}' holds ${t.bytes.length} raw bytes; dims [${t.dims.join(', ')}] of type ${t.dtype} need ${n * size!}`, f.at);
      out.initializers.push(t);
      known.add(t.name);
    } else if (f.field === 11 || f.field === 12) {
      let name = '';
      for (const g of sub(f)) if (g.field === 1) name = text(g); else if (g.field === 2) sub(g);
      (f.field === 11 ? out.inputs : out.outputs).push(name);
      if (f.field === 11) known.add(name);
    }
  }
  for (const n of pendingNodes) {
    for (const s of n.inputs) if (s !== '' && !known.has(s)) r.fail(`node ${n.op} reads '${s}', which nothing before it produces`, n.at);
    for (const s of n.outputs) known.add(s);
    out.nodes.push({ op: n.op, inputs: n.inputs, outputs: n.outputs });
  }
  for (const s of out.outputs) if (!known.has(s)) r.fail(`graph output '${s}' is produced by no node`, graph!.at);
  return out;
}
