/**
 * @file `exportOnnx(model, path, { inputShape })`: a Sequential MLP or CNN, or the ViT of
 * @qgrad/nn (float, or after `convert`) as ONNX opset 21 — QDQ (DequantizeLinear on integer weight
 * codes, QuantizeLinear/DequantizeLinear on 8-bit inputs) and com.microsoft MatMulNBits for 4-bit
 * Linear weights — walked onto the one builder of onnx-graph.ts; and `readOnnx`, the validating reader.
 */
import { noGrad, zeros } from '@qgrad/core';
import { Conv2d, Dropout, Flatten, Linear, MaxPool2d, Sequential, ViT, type Module } from '@qgrad/nn';
import { QuantizedConv2d, QuantizedLinear } from '../qat/convert.js';
import { TritPlaneLinear } from '../ptq/ptqtp.js';
import { ByteReader, nodeFs } from './bytes.js';
import { DT, MS_DOMAIN, OnnxGraph, type Int4Export, type OnnxLayerRow } from './onnx-graph.js';
import { readFields, type ProtoField } from './protobuf.js';

export type { Int4Export, OnnxLayerRow } from './onnx-graph.js';

/** Bytes per element of the data types read; INT4/UINT4 (22/21) hold two per byte, the tensor padded to a whole byte. */
const DT_BYTES: Record<number, number> = { 1: 4, 2: 1, 3: 1, 6: 4, 7: 8, 11: 8, 10: 2, 16: 2, 21: 0.5, 22: 0.5 };

/** Options of `exportOnnx`: the input's shape (its first extent becomes the symbolic batch dim) and the 4-bit format. */
export interface OnnxExportOptions {
  /** The input's shape; its first extent is the batch and is written as a symbolic dim 'N'. */
  inputShape: number[];
  /**
   * 4-bit Linear weights in power-of-two groups ≥ 16 (or per channel with such a K): 'matmulnbits'
   * (default: onnxruntime's com.microsoft MatMulNBits, packed two codes per byte, what onnxruntime's
   * own 4-bit quantizer writes and its fast CPU/GPU kernels read, computed in float32 as written)
   * or 'qdq' (standard ONNX only: packed INT4/UINT4 codes behind DequantizeLinear; note that
   * onnxruntime at optimisation 'extended'/'all' fuses blockwise DequantizeLinear → MatMul into
   * MatMulNBits with int8-quantized activations unless the session sets
   * `session.qdq_matmulnbits_accuracy_level` to 0). Layers MatMulNBits cannot hold go out as QDQ either way.
   */
  int4?: Int4Export;
}

/** What `exportOnnx` returns: the model's bytes and how each layer's weight and input went out. */
export interface OnnxExportResult {
  bytes: Uint8Array;
  /** Per weight layer, how its weight and input went out; activations and pooling name only their op. */
  layers: OnnxLayerRow[];
}

/** A Sequential of layers, each onto the graph in turn. */
function sequential(g: OnnxGraph, model: Sequential): string {
  let cur = 'input';
  let i = 0;
  for (const m of model) {
    const name = String(i++);
    const who = `exportOnnx: layer ${name} (${m.constructor.name})`;
    const act = g.activation(m, cur);
    if (act) {
      cur = act;
      g.layers.push({ name, op: m.constructor.name });
    } else if (m instanceof Flatten) {
      if (m.startDim !== 1 || m.endDim !== -1) throw new Error(`${who}: only Flatten(1, -1) maps to ONNX Flatten`);
      cur = g.add('Flatten', [cur], [{ name: 'axis', i: 1 }]);
      g.layers.push({ name, op: 'Flatten' });
    } else if (m instanceof MaxPool2d) {
      const pair = (p: unknown, d: number): number[] => (p == null ? [d, d] : typeof p === 'number' ? [p, p] : (p as number[]));
      const ks = pair(m.kernelSize, 1);
      const pd = pair(m.opts.padding, 0);
      if (m.opts.ceilMode || pair(m.opts.dilation, 1).some((d) => d !== 1)) throw new Error(`${who}: ceilMode and dilation are not exported`);
      cur = g.add('MaxPool', [cur], [{ name: 'kernel_shape', ints: ks }, { name: 'strides', ints: m.opts.stride == null ? ks : pair(m.opts.stride, 0) }, { name: 'pads', ints: [pd[0]!, pd[1]!, pd[0]!, pd[1]!] }]);
      g.layers.push({ name, op: 'MaxPool' });
    } else if (m instanceof Linear || m instanceof QuantizedLinear || m instanceof TritPlaneLinear) cur = g.linear(name, m, cur, 2, who);
    else if (m instanceof Conv2d || m instanceof QuantizedConv2d) cur = g.conv(name, m, cur, who);
    else if (!(m instanceof Dropout)) throw new Error(`${who}: no ONNX mapping (Linear, Conv2d, their converted forms, PTQTP's TritPlaneLinear, ReLU, GELU, SiLU, LeakyReLU, Sigmoid, Tanh, Flatten, MaxPool2d, Dropout are)`);
  }
  return cur;
}

/**
 * The ViT of @qgrad/nn, following its forward: patch conv → [N, P, dim], class token expanded to
 * the batch and concatenated in front, + positions, pre-norm blocks (LayerNorm → multi-head
 * attention → residual, LayerNorm → MLP → residual), final LayerNorm, class token, head.
 */
function vit(g: OnnxGraph, model: ViT): string {
  const { dim } = model.config;
  const proj = model.patch_embed.proj as Module;
  if (!(proj instanceof Conv2d || proj instanceof QuantizedConv2d)) throw new Error(`exportOnnx: patch_embed.proj is a ${proj.constructor.name}, not a Conv2d`);
  const patches = g.transpose(g.reshape(g.conv('patch_embed.proj', proj, 'input'), [0, 0, -1]), [0, 2, 1]); // [N, dim, h, w] → [N, P, dim]
  const batch = g.add('Shape', ['input'], [{ name: 'end', i: 1 }]); // [N]
  const cls = g.add('Expand', [g.float('cls_token', model.cls_token, [1, 1, dim]), g.add('Concat', [batch, g.int64([1, dim])], [{ name: 'axis', i: 0 }])]);
  let h = g.add('Add', [g.add('Concat', [cls, patches], [{ name: 'axis', i: 1 }]), g.float('pos_embed', model.pos_embed, [...model.pos_embed.shape])]); // [N, P + 1, dim]
  const linear = (name: string, m: Module, x: string, rank = 3) => {
    if (!(m instanceof Linear || m instanceof QuantizedLinear || m instanceof TritPlaneLinear)) throw new Error(`exportOnnx: ${name} is a ${m.constructor.name}, not a Linear`);
    return g.linear(name, m, x, rank);
  };
  let b = 0;
  for (const block of model.blocks) {
    const p = `blocks.${b++}`;
    const a = block.attn;
    if (a.rope || a.causal || a.numKvHeads !== a.numHeads) throw new Error(`exportOnnx: ${p}.attn uses RoPE, a causal mask or grouped KV heads, which the ViT export does not map`);
    const x = g.layerNorm(`${p}.norm1`, block.norm1, h);
    const heads = (y: string) => g.transpose(g.reshape(y, [0, 0, a.numHeads, a.headDim]), [0, 2, 1, 3]); // [N, T, dim] → [N, H, T, hd]
    // as scaledDotProductAttention: q scaled before the product, then softmax over the keys
    const q = g.add('Mul', [heads(linear(`${p}.attn.qProj`, a.qProj, x)), g.float(`${p}.attn.scale`, Float32Array.of(1 / Math.sqrt(a.headDim)), [])]);
    const kT = g.transpose(g.reshape(linear(`${p}.attn.kProj`, a.kProj, x), [0, 0, a.numHeads, a.headDim]), [0, 2, 3, 1]); // [N, H, hd, T]
    const w = g.add('Softmax', [g.add('MatMul', [q, kT])], [{ name: 'axis', i: -1 }]);
    const y = g.reshape(g.transpose(g.add('MatMul', [w, heads(linear(`${p}.attn.vProj`, a.vProj, x))]), [0, 2, 1, 3]), [0, 0, dim]); // [N, T, dim]
    h = g.add('Add', [h, linear(`${p}.attn.oProj`, a.oProj, y)]);
    const mlp = block.mlp;
    const hidden = g.activation(mlp.act, linear(`${p}.mlp.fc1`, mlp.fc1, g.layerNorm(`${p}.norm2`, block.norm2, h)));
    if (!hidden) throw new Error(`exportOnnx: ${p}.mlp.act (${mlp.act.constructor.name}) has no ONNX mapping`);
    h = g.add('Add', [h, linear(`${p}.mlp.fc2`, mlp.fc2, hidden)]);
  }
  const first = g.add('Gather', [g.layerNorm('norm', model.norm, h), g.int64([0], [])], [{ name: 'axis', i: 1 }]); // [N, dim]
  return linear('head', model.head, first, 2);
}

/**
 * The ONNX bytes of a Sequential model or a ViT (see `exportOnnx`).
 * @example const { bytes } = modelToOnnx(model, { inputShape: [1, 784] });
 */
export function modelToOnnx(model: Module, opts: OnnxExportOptions): OnnxExportResult {
  const g = new OnnxGraph(opts.int4 ?? 'matmulnbits');
  let out: string;
  if (model instanceof Sequential) out = sequential(g, model);
  else if (model instanceof ViT) out = vit(g, model);
  else throw new Error(`exportOnnx: exports a Sequential of layers (Linear, Conv2d, converted ones, activations, Flatten, MaxPool2d) or a ViT; got ${model.constructor.name}`);
  const outShape = noGrad(() => model.forward(zeros(opts.inputShape))).shape;
  return { bytes: g.finish(out, opts.inputShape, outShape), layers: g.layers };
}

/**
 * Writes a Sequential MLP or CNN, or a ViT, as ONNX (opset 21). Converted layers with integer
 * weight codes of ≤ 8 bits per tensor, per channel or (Linear) per group become INT8 (UINT8 with
 * a zero point; INT4/UINT4 for ≤ 4 bits) initializers behind DequantizeLinear; 4-bit Linear codes in power-of-two groups
 * ≥ 16 become com.microsoft MatMulNBits unless `int4: 'qdq'`; other grids go out as their
 * dequantized values. 8-bit inputs with a stored scale become QuantizeLinear → DequantizeLinear.
 * PTQTP's TritPlaneLinear layers become two INT4 DequantizeLinear (codes in {−1, 0, 1}, α per
 * row-group) whose sum is the weight.
 * onnxruntime reproduces qgrad's eval output within float32 summation error.
 * @example convert(model); exportOnnx(model, 'mlp.onnx', { inputShape: [1, 784] });
 */
export function exportOnnx(model: Module, path: string, opts: OnnxExportOptions): OnnxExportResult {
  const r = modelToOnnx(model, opts);
  nodeFs('exportOnnx', 'use modelToOnnx for the bytes').writeFileSync(path, r.bytes);
  return r;
}

// ---------------------------------------------------------------- reading

/** A node as `readOnnx` reads it: op, domain ('' for the ONNX one), inputs, outputs, and its int, float, string and ints attributes by name. */
export interface OnnxNode {
  op: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  attrs: Record<string, number | string | number[]>;
}

/** A parsed ONNX model (what `readOnnx` returns): IR version, opsets, nodes, initializers and graph inputs/outputs. */
export interface OnnxFile {
  irVersion: number;
  opsets: { domain: string; version: number }[];
  nodes: OnnxNode[];
  initializers: { name: string; dtype: number; dims: number[]; bytes: Uint8Array }[];
  inputs: string[];
  outputs: string[];
}

/**
 * Parses and checks an ONNX model: the protobuf structure (tags, varints, lengths inside their
 * message), the graph, every initializer's raw bytes against its dtype and dims (external data
 * refused), that each node input is a graph input, an initializer or an earlier output, that
 * each node's domain has an opset import and each attribute holds the value its type names, and
 * for com.microsoft MatMulNBits that K, N, bits and block_size agree with its packed weight,
 * scales and zero points. Errors are FormatErrors naming the byte offset.
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
  // AttributeProto: name 1, type 20; FLOAT (1) in f 2, INT (2) in i 3, STRING (3) in s 4, INTS (7) in ints 8 (packed or not)
  const attribute = (f: ProtoField, into: OnnxNode['attrs']) => {
    let name = '';
    let type = 0;
    const ints: number[] = [];
    let value: number | string | undefined;
    for (const g of sub(f)) {
      if (g.field === 1) name = text(g);
      else if (g.field === 20) type = int(g);
      else if (g.field === 2 && g.wire === 5) value = g.value;
      else if (g.field === 3) value = int(g);
      else if (g.field === 4) value = text(g);
      else if (g.field === 8 && g.wire === 2) {
        const end = g.start + g.length;
        for (r.pos = g.start; r.pos < end;) { // r.pos is free: every readFields call sets its own
          let v = 0;
          let shift = 1;
          for (;;) {
            if (r.pos >= end) r.fail(`packed ints of attribute '${name}' run past their field`, g.at);
            const b = r.bytes[r.pos++]!;
            v += (b & 0x7f) * shift;
            shift *= 128;
            if (!(b & 0x80)) break;
          }
          ints.push(v);
        }
      } else if (g.field === 8) ints.push(int(g));
    }
    if (!name) r.fail('an attribute has no name', f.at);
    const want = ({ 1: 'number', 2: 'number', 3: 'string' } as Record<number, string>)[type];
    if (want && typeof value !== want) r.fail(`attribute '${name}' has type ${type} but no ${want === 'string' ? 'string (field 4)' : type === 1 ? 'float (field 2)' : 'int (field 3)'}`, f.at);
    if (type === 7) into[name] = ints;
    else if (want) into[name] = value!;
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
  const pendingNodes: (OnnxNode & { at: number })[] = [];
  for (const f of sub(graph!)) {
    if (f.field === 1) {
      const n = { op: '', domain: '', inputs: [] as string[], outputs: [] as string[], attrs: {} as OnnxNode['attrs'], at: f.at };
      for (const g of sub(f)) {
        if (g.field === 1) n.inputs.push(text(g));
        else if (g.field === 2) n.outputs.push(text(g));
        else if (g.field === 4) n.op = text(g);
        else if (g.field === 7) n.domain = text(g);
        else if (g.field === 5) attribute(g, n.attrs);
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
      const need = Math.ceil(n * size!);
      if (!hasRaw || t.bytes.length !== need) r.fail(`initializer '${t.name}' holds ${t.bytes.length} raw bytes; dims [${t.dims.join(', ')}] of type ${t.dtype} need ${need}`, f.at);
      out.initializers.push(t);
      known.add(t.name);
    } else if (f.field === 11 || f.field === 12) {
      let name = '';
      for (const g of sub(f)) if (g.field === 1) name = text(g); else if (g.field === 2) sub(g);
      (f.field === 11 ? out.inputs : out.outputs).push(name);
      if (f.field === 11) known.add(name);
    }
  }
  const domains = new Set(out.opsets.map((o) => (o.domain === 'ai.onnx' ? '' : o.domain)));
  const inits = new Map(out.initializers.map((t) => [t.name, t]));
  for (const { at, ...n } of pendingNodes) {
    for (const s of n.inputs) if (s !== '' && !known.has(s)) r.fail(`node ${n.op} reads '${s}', which nothing before it produces`, at);
    if (!domains.has(n.domain)) r.fail(`node ${n.op} is in domain '${n.domain}', which the model imports no opset of`, at);
    if (n.op === 'MatMulNBits' && n.domain === MS_DOMAIN) checkMatMulNBits(n, inits, (what) => r.fail(`MatMulNBits ${n.outputs[0] ?? ''}: ${what}`, at));
    for (const s of n.outputs) known.add(s);
    out.nodes.push(n);
  }
  for (const s of out.outputs) if (!known.has(s)) r.fail(`graph output '${s}' is produced by no node`, graph!.at);
  return out;
}

/** MatMulNBits' attributes against its initializers: B uint8 [N, ⌈K/bs⌉, bs·bits/8], scales N·⌈K/bs⌉, zero points (uint8) N·⌈⌈K/bs⌉·bits/8⌉. */
function checkMatMulNBits(n: OnnxNode, inits: Map<string, OnnxFile['initializers'][number]>, fail: (what: string) => never): void {
  const a = n.attrs;
  for (const k of ['K', 'N', 'block_size']) if (typeof a[k] !== 'number' || (a[k] as number) < 1) fail(`attribute ${k} is missing or not a positive int`);
  const [k, nOut, bs] = [a.K as number, a.N as number, a.block_size as number];
  const bits = a.bits === undefined ? 4 : (a.bits as number);
  if (bs < 16 || (bs & (bs - 1)) !== 0) fail(`block_size ${bs} is not a power of two ≥ 16`);
  if (![2, 4, 8].includes(bits)) fail(`bits ${bits} is not 2, 4 or 8`);
  const blocks = Math.ceil(k / bs);
  const numel = (t: { dims: number[] }) => t.dims.reduce((x, y) => x * y, 1);
  const b = inits.get(n.inputs[1] ?? '');
  if (b && (b.dtype !== DT.uint8 || b.dims.join() !== [nOut, blocks, (bs * bits) / 8].join())) fail(`B '${b.name}' is type ${b.dtype} [${b.dims.join(', ')}]; K ${k}, N ${nOut}, ${bits} bits in blocks of ${bs} need uint8 [${nOut}, ${blocks}, ${(bs * bits) / 8}]`);
  const s = inits.get(n.inputs[2] ?? '');
  if (s && numel(s) !== nOut * blocks) fail(`scales '${s.name}' hold ${numel(s)} values; N·blocks is ${nOut * blocks}`);
  const z = inits.get(n.inputs[3] ?? '');
  const zBytes = nOut * Math.ceil((blocks * bits) / 8);
  if (z && z.dtype === DT.uint8 && numel(z) !== zBytes) fail(`packed zero points '${z.name}' hold ${numel(z)} bytes; N·⌈blocks·bits/8⌉ is ${zBytes}`);
}
