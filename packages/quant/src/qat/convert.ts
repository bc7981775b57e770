/**
 * @file `convert(model)`: replaces each QAT layer by an inference layer that stores the weight as
 * integer codes (int8 / uint8 / int32 tensors) plus scales and zero points, and the input
 * quantizer's frozen grid. Its forward reproduces the fake-quantized eval output bit for bit;
 * `QuantizedLinear.integerForward` is the int-accumulation path (equal up to float rounding).
 */
import { conv2d, embedding, fakeQuantize, fromTypedArray, linear, noGrad, type Conv2dOptions, type DType, type Tensor } from '@qgrad/core';
import { Module } from '@qgrad/nn';
import { isQuantLayer, QuantConv2d, QuantEmbedding, QuantLinear, type QuantLayer } from './modules.js';
import { replaceSubmodule } from './prepare.js';
import { ActQuantizer, codesOf, dequantize, dynamicScale, type GridParams } from './quantizers.js';

/** Smallest integer dtype holding [qmin, qmax]. */
export function codeDType(qmin: number, qmax: number): DType {
  if (qmin >= -128 && qmax <= 127) return 'int8';
  if (qmin >= 0 && qmax <= 255) return 'uint8';
  return 'int32';
}

/** The frozen input quantizer of a converted layer: a stored grid, or dynamic absmax steps. */
interface InputSpec {
  qmin: number;
  qmax: number;
  offset: 'zeroPoint' | 'beta';
  rounding: 'halfEven' | 'halfAway' | 'floor';
  dynamic: 'tensor' | 'token' | null;
  signed: boolean;
}

/**
 * The parts every converted layer shares: integer weight codes with their grid, and the input
 * grid. Buffers: weightCodes (weight shape, integer dtype), weightScale, weightZeroPoint,
 * inputScale, inputZeroPoint (absent where not used).
 */
abstract class QuantizedBase extends Module {
  weightCodes: Tensor;
  weightScale: Tensor;
  weightZeroPoint: Tensor | null;
  inputScale: Tensor | null;
  inputZeroPoint: Tensor | null;
  readonly weightShape: number[];
  readonly view: [number, number, number];
  readonly weightGrid: { qmin: number; qmax: number; offset: 'zeroPoint' | 'beta' };
  readonly input: InputSpec | null;

  constructor(src: QuantLayer) {
    super();
    const w = src.weight;
    this.weightShape = [...w.shape];
    const wq = src.weightQuantizer;
    if (!wq) throw new Error(`convert: ${src.constructor.name} has no weight quantizer; nothing to convert`);
    this.view = [...wq.view];
    const g = wq.gridParams(w);
    this.weightGrid = { qmin: g.qmin, qmax: g.qmax, offset: g.offset };
    const codes = wq.codes(w);
    this.weightCodes = this.registerBuffer('weightCodes', noGrad(() => codes.reshape(this.weightShape).to(codeDType(g.qmin, g.qmax))));
    this.weightScale = this.registerBuffer('weightScale', g.scale.clone());
    this.weightZeroPoint = this.registerBuffer('weightZeroPoint', typeof g.zeroPoint === 'number' ? (g.zeroPoint === 0 ? null : g.scale.mul(0).add(g.zeroPoint)) : g.zeroPoint.clone());
    const aq = src.inputQuantizer?.enabled ? src.inputQuantizer : null;
    this.input = aq ? inputSpec(aq) : null;
    this.inputScale = this.registerBuffer('inputScale', aq?.scale ? aq.scale.detach().clone() : null);
    this.inputZeroPoint = this.registerBuffer('inputZeroPoint', aq?.zeroPoint ? aq.zeroPoint.detach().clone() : null);
  }

  /** The weight's grid as stored. */
  weightGridParams(): GridParams {
    return { ...this.weightGrid, scale: this.weightScale, zeroPoint: this.weightZeroPoint ?? 0 };
  }
  /** The dequantized weight (q − z)·s, in the float dtype of the scales. */
  dequantizedWeight(): Tensor {
    return noGrad(() => dequantize(this.weightCodes.reshape(this.view).to(this.weightScale.dtype), this.weightGridParams()).reshape(this.weightShape));
  }
  /** The input's grid for batch `x` (dynamic steps computed from it), or null when inputs stay float. */
  inputGridParams(x: Tensor): GridParams | null {
    const s = this.input;
    if (!s) return null;
    const scale = s.dynamic ? dynamicScale(x, s.dynamic, s.signed, s.qmax) : this.inputScale!;
    return { qmin: s.qmin, qmax: s.qmax, offset: s.offset, scale, zeroPoint: this.inputZeroPoint ?? 0 };
  }
  /** Quantize–dequantize of the input with the stored grid (the fused kernel, deterministic rounding). */
  quantizeInput(x: Tensor): Tensor {
    const g = this.inputGridParams(x);
    if (!g) return x;
    return noGrad(() => fakeQuantize(x, g.scale, g.zeroPoint, { qmin: g.qmin, qmax: g.qmax, rounding: this.input!.rounding, estimator: g.offset === 'beta' ? 'lsq+' : 'ste' }));
  }
  /** Integer codes of the input (float tensor of integers) and the grid they live on. */
  inputCodes(x: Tensor): { codes: Tensor; grid: GridParams } | null {
    const g = this.inputGridParams(x);
    return g ? { codes: codesOf(this.quantizeInput(x), g), grid: g } : null;
  }
}

function inputSpec(aq: ActQuantizer): InputSpec {
  return { qmin: aq.qmin, qmax: aq.qmax, offset: aq.offset, rounding: aq.rounding, dynamic: aq.scale ? null : aq.granularity, signed: aq.signed };
}

/** Inference Linear over integer weight codes (see `convert`). */
export class QuantizedLinear extends QuantizedBase {
  bias: Tensor | null;
  readonly inFeatures: number;
  readonly outFeatures: number;
  constructor(src: QuantLinear) {
    super(src);
    this.inFeatures = src.inFeatures;
    this.outFeatures = src.outFeatures;
    this.bias = this.registerBuffer('bias', src.bias ? src.bias.detach().clone() : null);
  }
  forward(x: Tensor): Tensor {
    return noGrad(() => linear(this.quantizeInput(x), this.dequantizedWeight(), this.bias));
  }
  /**
   * y = s_x·Σ_g s_w[o, g]·Σ_{k∈g} (q_x − z_x)(q_w − z_w) + b with exact integer accumulation (the
   * arithmetic of an int8 GEMM), in float64, rounded once to the output dtype. Equals `forward`
   * up to float32 summation error, and bit for bit when all scales are powers of two.
   */
  integerForward(x: Tensor): Tensor {
    const ic = this.inputCodes(x);
    if (!ic || ic.grid.offset === 'beta' || this.weightGrid.offset === 'beta') throw new Error('QuantizedLinear.integerForward: needs a quantized input and zero-point (not β-offset) grids on both operands');
    const [A, B, C] = this.view;
    if (A !== this.outFeatures) throw new Error('QuantizedLinear.integerForward: needs per-channel or per-group weight scales (or per-tensor)');
    const K = this.inFeatures;
    const rows = x.numel() / K;
    const qx = ic.codes.contiguous().data;
    const sxT = ic.grid.scale;
    const sx = sxT.contiguous().data;
    const zx = typeof ic.grid.zeroPoint === 'number' ? ic.grid.zeroPoint : ic.grid.zeroPoint.item();
    const qw = this.weightCodes.contiguous().data;
    const sw = this.weightScale.contiguous().data;
    const zwT = this.weightZeroPoint;
    const zw = zwT ? zwT.contiguous().data : null;
    const b = this.bias?.contiguous().data;
    const out = new Float64Array(rows * this.outFeatures);
    const perGroupScale = A * B > 1;
    for (let n = 0; n < rows; n++) {
      const sxn = sx.length === 1 ? sx[0]! : sx[n]!;
      for (let o = 0; o < this.outFeatures; o++) {
        let y = 0;
        for (let gi = 0; gi < B; gi++) {
          const gIdx = perGroupScale ? o * B + gi : 0;
          const z = zw ? (zw.length === 1 ? zw[0]! : zw[gIdx]!) : 0;
          let acc = 0; // exact: |acc| ≤ K·2^16 ≪ 2^53
          for (let k = gi * C; k < (gi + 1) * C; k++) acc += (qx[n * K + k]! - zx) * (qw[o * K + k]! - z);
          y += acc * sw[gIdx]!;
        }
        out[n * this.outFeatures + o] = y * sxn + (b ? b[o]! : 0);
      }
    }
    const dtype = this.weightScale.dtype;
    return fromTypedArray(dtype === 'float64' ? out : Float32Array.from(out), [...x.shape.slice(0, -1), this.outFeatures], dtype);
  }
}

/** Inference Conv2d over integer weight codes. */
export class QuantizedConv2d extends QuantizedBase {
  bias: Tensor | null;
  readonly conv: Conv2dOptions;
  constructor(src: QuantConv2d) {
    super(src);
    this.conv = { ...src.conv };
    this.bias = this.registerBuffer('bias', src.bias ? src.bias.detach().clone() : null);
  }
  forward(x: Tensor): Tensor {
    return noGrad(() => conv2d(this.quantizeInput(x), this.dequantizedWeight(), this.bias, this.conv));
  }
}

/** Inference Embedding over integer codes (rows dequantized as looked up). */
export class QuantizedEmbedding extends QuantizedBase {
  readonly paddingIdx: number | undefined;
  constructor(src: QuantEmbedding) {
    super(src);
    this.paddingIdx = src.paddingIdx;
  }
  forward(indices: Tensor): Tensor {
    return noGrad(() => embedding(indices, this.dequantizedWeight(), { paddingIdx: this.paddingIdx }));
  }
}

export interface ConvertResult {
  /** Dotted names of the layers converted. */
  converted: string[];
}

/**
 * Replaces every QAT layer with a weight quantizer by its integer-storage inference layer, in
 * place, and puts the model in eval mode. The converted model's output equals the QAT model's
 * eval output bit for bit (deterministic rounding; HESTIA layers at temperature 0, pressure 1).
 * @example
 * model.eval(); const yFake = model.forward(x);
 * convert(model); model.forward(x); // identical to yFake
 */
export function convert(model: Module): ConvertResult {
  const converted: string[] = [];
  const targets = [...model.namedModules()].filter(([name, m]) => name !== '' && isQuantLayer(m) && m.weightQuantizer?.enabled);
  for (const [name, m] of targets) {
    const q = m instanceof QuantLinear ? new QuantizedLinear(m) : m instanceof QuantConv2d ? new QuantizedConv2d(m) : new QuantizedEmbedding(m as QuantEmbedding);
    replaceSubmodule(model, name, q);
    converted.push(name);
  }
  model.eval();
  return { converted };
}
