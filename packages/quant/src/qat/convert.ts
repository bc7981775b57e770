/**
 * @file `convert(model)`: replaces each QAT layer by an inference layer that stores the weight as
 * codes on its grid — packed two 4-bit, four 2-bit or eight 1-bit per byte when they fit, else
 * int8/uint8/int32 — plus scales (MX: E8M0 exponent bytes), zero points and the grid's plan, and
 * the input quantizer's frozen grid. Linear layers run on the packed codes (`packedLinear`), or
 * those with a 2:4 mask on the kept half of the dequantized weight (`sparse24Linear`); the
 * dequantizing forward reproduces the fake-quantized eval output bit for bit, for every grid;
 * `QuantizedLinear.integerForward` is the int-accumulation path of int grids. EfficientDM layers
 * are merged first, and a TALSQ input quantizer becomes a table of steps, one row per timestep
 * bucket, read by the t of the running forward.
 */
import { arange, conv2d, embedding, fromTypedArray, keep, tensor, linear, narrow, noGrad, packedConv2d, packedEmbedding, packedLinear, pow, sparse24Linear, sparse24Weight, type Conv2dOptions, type PackedWeight, type Sparse24Weight, type Tensor } from '@qgrad/core';
import { Module } from '@qgrad/nn';
import type { FloatDType } from '../grids/grid.js';
import { storedBits } from '../grids/grid.js';
import { toGroups } from '../grids/granularity.js';
import { codesOfView, dataScale, dequantizeView, effectiveZero, fakeQuantView } from '../quantizer/apply.js';
import type { QuantizerPlan } from '../quantizer/config.js';
import { isQuantLayer, QuantConv2d, QuantEmbedding, QuantLinear, type QuantLayer } from './modules.js';
import { doubleScaleValues } from '../scale/double.js';
import { levelTable, packCodes, packTernaryBase3, rowGroups, unpackCodes, unpackTernaryBase3 } from './pack.js';
import { replaceSubmodule } from './prepare.js';
import type { TimestepContext } from '../diffusion/calibration.js';
import { EfficientDMLinear } from '../diffusion/efficientdm.js';
import { TemporalActQuantizer, TimestepBuckets } from '../diffusion/talsq.js';

/**
 * How a converted layer picks its input step by timestep (a converted TALSQ quantizer): inputScale
 * (and inputZeroPoint) hold one row per bucket, and each sample of a forward reads the row of its
 * t, announced on `context` by the TimestepModule the model runs in.
 */
export interface InputTimesteps {
  buckets: TimestepBuckets;
  context: TimestepContext;
}

/**
 * The parts every converted layer shares. Buffers: weightCodes (packed or integer, weight order),
 * weightScale (grouped-view layout; uint8 E8M0 exponents for MX grids), weightZeroPoint,
 * inputScale, inputZeroPoint (absent where not used).
 */
abstract class QuantizedBase extends Module {
  weightCodes: Tensor;
  weightScale: Tensor;
  /** Double-quantized scales (QLoRA): weightScale holds E4M3 codes, these the per-256 scales and the mean. */
  weightScaleSecond: Tensor | null;
  weightScaleMean: Tensor | null;
  weightZeroPoint: Tensor | null;
  inputScale: Tensor | null;
  inputZeroPoint: Tensor | null;
  readonly weightShape: number[];
  readonly matrixShape: number[];
  /** The weight's grid, granularity and scale plan (as the QAT layer had it). */
  readonly weightPlan: QuantizerPlan;
  /** Bits per stored code field (1, 2, 4 packed; 8, 16, 32). */
  readonly codeBits: number;
  /**
   * How weightCodes holds the codes: 'fields' of codeBits bits (`packCodes`), or 'base3' (a
   * ternary Linear converted with kernel 'packedBase3': five per byte, `packTernaryBase3`).
   */
  codePacking: 'fields' | 'base3' = 'fields';
  readonly weightDType: FloatDType;
  /** The input quantizer's plan (null: inputs stay float). */
  readonly inputPlan: QuantizerPlan | null;
  /** Per-timestep-bucket input steps (a converted TALSQ quantizer), or null for one stored step. */
  inputTimesteps: InputTimesteps | null = null;

  constructor(src: QuantLayer) {
    super();
    const w = src.weight;
    this.weightShape = [...w.shape];
    const wq = src.weightQuantizer;
    if (!wq) throw new Error(`convert: ${src.constructor.name} has no weight quantizer; nothing to convert`);
    this.matrixShape = [...wq.matrixShape];
    this.weightPlan = wq.plan;
    this.weightDType = w.dtype as FloatDType;
    const grid = wq.plan.grid;
    const g = wq.gridParams(w);
    const codes = noGrad(() => wq.group(w).restore(wq.codes(w)).contiguous());
    this.codeBits = storedBits(grid);
    this.weightCodes = this.registerBuffer('weightCodes', packCodes(codes, grid.codeMin, this.codeBits, grid.codeMax));
    const pow2 = grid.scale.kind === 'pow2';
    const d = g.double;
    this.weightScale = this.registerBuffer('weightScale', noGrad(() => (d ? d.codes.clone() : pow2 ? g.scale.log().div(Math.LN2).round().add(127).to('uint8') : g.scale.clone())));
    this.weightScaleSecond = this.registerBuffer('weightScaleSecond', d ? d.second.clone() : null);
    this.weightScaleMean = this.registerBuffer('weightScaleMean', d ? d.mean.clone() : null);
    this.weightZeroPoint = this.registerBuffer('weightZeroPoint', typeof g.zeroPoint === 'number' ? null : g.zeroPoint.clone());
    const aq = src.inputQuantizer?.enabled ? src.inputQuantizer : null;
    this.inputPlan = aq ? aq.plan : null;
    this.inputScale = this.registerBuffer('inputScale', aq?.scale ? aq.scale.detach().clone() : null);
    this.inputZeroPoint = this.registerBuffer('inputZeroPoint', aq?.zeroPoint ? aq.zeroPoint.detach().clone() : null);
    if (aq instanceof TemporalActQuantizer) this.inputTimesteps = { buckets: aq.buckets, context: aq.context };
  }

  /**
   * Makes the input steps a per-timestep-bucket table read through `context` (what a loader does
   * before it fills the buffers): inputScale (and inputZeroPoint, where the plan has one) become
   * zeros [buckets.count, 1].
   * @example q.useInputTimesteps(new TimestepBuckets(1000, 20), model.context); q.loadStateDict(state);
   */
  useInputTimesteps(buckets: TimestepBuckets, context: TimestepContext): void {
    const p = this.inputPlan;
    if (!p || p.mode === 'dynamic' || p.granularity !== 'tensor') throw new Error(`${this.constructor.name}.useInputTimesteps: per-timestep input steps need a stored per-tensor input quantizer; this layer's input is ${p ? `${p.grid.label} ${p.mode} ${JSON.stringify(p.granularity)}` : 'float'}`);
    const dtype = this.inputScale?.dtype ?? 'float32';
    const table = () => fromTypedArray(new (dtype === 'float64' ? Float64Array : Float32Array)(buckets.count), [buckets.count, 1], dtype);
    this.inputScale = table();
    this.inputZeroPoint = p.hasZeroPoint ? table() : null;
    this.inputTimesteps = { buckets, context };
  }
  /** Each sample's input step and zero point (rows of the bucket tables), for x with one sample per row of dim 0. */
  #timestepScales(x: Tensor, ts: InputTimesteps): { scale: Tensor; zeroPoint: Tensor | number } {
    const t = ts.context.current;
    const who = `${this.constructor.name} (TALSQ input)`;
    if (!t) throw new Error(`${who}: the input step is chosen by timestep, but no timesteps are set; run the model through TimestepModule.forward (or context.run)`);
    const n = x.shape[0]!;
    if (t.length !== n) throw new Error(`${who}: the input has ${n} rows in dim 0 but the forward runs ${t.length} timesteps (x [${x.shape.join(', ')}])`);
    const idx = tensor(t.map((ti) => ts.buckets.bucketOf(ti)), { dtype: 'int32' });
    // as TemporalActQuantizer.forward: the rows gathered, then cast to x's dtype
    return { scale: embedding(idx, this.inputScale!).to(x.dtype), zeroPoint: this.inputZeroPoint ? embedding(idx, this.inputZeroPoint).to(x.dtype) : 0 };
  }

  /** The weight's codes (int32, weight shape) unpacked. */
  codes(): Tensor {
    const n = this.weightShape.reduce((a, b) => a * b, 1);
    const lo = this.weightPlan.grid.codeMin;
    if (this.codePacking === 'base3') {
      const [O, K] = this.weightShape as [number, number];
      return fromTypedArray(unpackTernaryBase3(this.weightCodes, O, K, lo), this.weightShape, 'int32');
    }
    return fromTypedArray(unpackCodes(this.weightCodes, n, lo, this.codeBits), this.weightShape, 'int32');
  }
  /** Scales as floats (MX: 2^(e − 127); double-quantized: decode·second + mean). */
  scales(): Tensor {
    if (this.weightScaleSecond) return doubleScaleValues({ codes: this.weightScale, second: this.weightScaleSecond, mean: this.weightScaleMean! }, this.weightDType);
    return this.weightPlan.grid.scale.kind === 'pow2' ? noGrad(() => pow(2, this.weightScale.to(this.weightDType).sub(127))) : this.weightScale;
  }
  /** The dequantized weight, computed as the fake-quant forward computes it. */
  dequantizedWeight(): Tensor {
    return noGrad(() => {
      // the packed layout decodes in one gather kernel, bit for bit as below (packedGather rounds
      // as the tensor ops do); not for β offsets, which the packed form carries as −β/s. Built
      // fresh unless the packed forward's cache is current, so dequantizing holds no extra memory
      const packed = (this.weightPlan.offset === 'beta' && this.weightZeroPoint) || this.codePacking === 'base3' ? null : this.#currentPacked() ?? this.#buildPacked(false);
      if (packed) {
        const rows = arange(0, packed.outFeatures, 1, { dtype: 'int32' });
        return packedEmbedding(rows, packed).reshape(this.weightShape);
      }
      const g = toGroups(this.codes().reshape(this.matrixShape), this.weightPlan.granularity, this.weightPlan.who);
      const w = dequantizeView(this.weightPlan, g.view, this.scales(), this.weightZeroPoint ?? 0);
      return g.restore(w).reshape(this.weightShape);
    });
  }
  /** Quantize–dequantize of the input with the stored plan and scales (dynamic ones from x). */
  quantizeInput(x: Tensor): Tensor {
    const p = this.inputPlan;
    if (!p) return x;
    return noGrad(() => {
      if (this.inputTimesteps) {
        const sz = this.#timestepScales(x, this.inputTimesteps);
        return fakeQuantView(p, x.reshape([x.shape[0]!, x.numel() / x.shape[0]!]), sz.scale, sz.zeroPoint).reshape([...x.shape]);
      }
      if (this.inputScale) return fakeQuantView(p, x.reshape([1, x.numel()]), this.inputScale, this.inputZeroPoint ?? 0).reshape([...x.shape]);
      const g = toGroups(x, p.granularity, p.who);
      const sz = dataScale(p, g.view);
      return g.restore(fakeQuantView(p, g.view, sz.scale, sz.zeroPoint));
    });
  }
  /** How `packedWeight` carries an LSQ+ offset β: as the zero point −β/s, or as β itself. */
  protected packedOffset: 'zeroPoint' | 'beta' = 'zeroPoint';
  /** The packed kernel's operands, with the buffer versions they were built from. */
  #packed: { weight: PackedWeight | null; key: unknown[] } | null = null;
  /**
   * The packed kernel's view of the weight as its matrix [O, K] (`matrixShape`: a conv filter's
   * inputs in channel, row, column order): codes in place; float scales, zero points and level
   * table built once and rebuilt when a buffer is replaced or written. Null where the kernel
   * cannot read this layout: scales grouped across rows other than per tensor, channel, group along
   * the inputs or whole-row blocks (`rowGroups`), codes wider than 8 bits, float64 weights.
   */
  packedWeight(): PackedWeight | null {
    const current = this.#currentPacked();
    if (current !== undefined) return current;
    const weight = this.#buildPacked(true);
    this.#packed = { weight, key: this.bufferKey() };
    return weight;
  }
  /** The weight's buffers and their versions: a cache built from them is current while this is unchanged. */
  protected bufferKey(): unknown[] {
    const bufs = [this.weightCodes, this.weightScale, this.weightScaleSecond, this.weightScaleMean, this.weightZeroPoint];
    return bufs.flatMap((t) => [t, t?.version]);
  }
  /** The cached packed weight if it was built from the current buffers, else undefined. */
  #currentPacked(): PackedWeight | null | undefined {
    if (!this.#packed) return undefined;
    const key = this.bufferKey();
    return key.every((k, i) => k === this.#packed!.key[i]) ? this.#packed.weight : undefined;
  }
  /** The float value of every 2^bits-bit field (a few bytes, so kept: decoding it is a kernel call and a read). */
  #levels: { bits: number; dtype: string; table: Float32Array } | null = null;
  #levelTable(bits: number): Float32Array {
    const dtype = this.weightCodes.dtype;
    if (this.#levels?.bits !== bits || this.#levels.dtype !== dtype) this.#levels = { bits, dtype, table: levelTable(this.weightPlan.grid, bits, dtype) };
    return this.#levels.table;
  }
  #buildPacked(cache: boolean): PackedWeight | null {
    if (this.matrixShape.length !== 2) return null;
    const [O, K] = this.matrixShape as [number, number];
    const plan = this.weightPlan;
    const rows = rowGroups(plan.granularity, O, K);
    const bits = this.codeBits;
    if (!rows || this.weightDType !== 'float32' || ![1, 2, 4, 8].includes(bits) || !['uint8', 'int8'].includes(this.weightCodes.dtype)) return null;
    const G = K / rows.groupSize;
    const perRow = (t: Tensor): Float32Array => {
      const src = t.contiguous().dataSync();
      const out = new Float32Array(O * G);
      for (let o = 0; o < O; o++) for (let g = 0; g < G; g++) out[o * G + g] = src[Math.floor(o / rows.rowsPerScale) * G + g]!;
      return out;
    };
    const base3 = this.codePacking === 'base3';
    return noGrad(() => {
      const scale = perRow(this.scales());
      let zero: Float32Array | null = null;
      // level grids have no zero point; LSQ+'s β (x̂ = q·s + β) is the zero point −β/s
      const beta = plan.grid.integer && this.weightZeroPoint && plan.offset === 'beta';
      if (plan.grid.integer && this.weightZeroPoint) {
        zero = perRow(this.weightZeroPoint);
        if (beta && this.packedOffset === 'zeroPoint') zero = zero.map((b, i) => -b / scale[i]!);
      }
      // kept: the cache outlives the forward that builds it, often inside an eval loop's tidy; a replaced one goes to the garbage collector
      const keep_ = cache ? keep : <T extends Tensor>(t: T) => t;
      return {
        codes: this.weightCodes, bits, ...(base3 && { packing: 'base3' as const }), ...(beta && this.packedOffset === 'beta' && { offset: 'beta' as const }),
        // base-3 digits are code − codeMin, as 2-bit fields are: the same table
        levels: keep_(fromTypedArray(this.#levelTable(bits), [2 ** bits], 'float32')),
        scale: keep_(fromTypedArray(scale, [O * G], 'float32')),
        zeroPoint: zero && keep_(fromTypedArray(zero, [O * G], 'float32')),
        outFeatures: O, inFeatures: K, groupSize: rows.groupSize,
      };
    });
  }
  /** Integer codes of the input (rows × features, float) with one scale (and zero point) for all, per sample (timestep tables) or per row. */
  inputCodes(x: Tensor): { codes: Tensor; scale: Tensor; zeroPoint: Tensor | number; plan: QuantizerPlan } | null {
    const p = this.inputPlan;
    if (!p) return null;
    return noGrad(() => {
      const ts = this.inputTimesteps;
      // per timestep: one row of the view per sample, with that sample's step
      const g = ts ? { view: x.reshape([x.shape[0]!, x.numel() / x.shape[0]!]) } : this.inputScale ? { view: x.reshape([1, x.numel()]) } : toGroups(x, p.granularity, p.who);
      const sz = ts ? this.#timestepScales(x, ts) : this.inputScale ? { scale: this.inputScale, zeroPoint: this.inputZeroPoint ?? 0 } : dataScale(p, g.view);
      const z = effectiveZero(p, sz.zeroPoint);
      const xHat = fakeQuantView(p, g.view, sz.scale, sz.zeroPoint);
      return { codes: codesOfView(p, xHat, sz.scale, z).to(x.dtype).reshape([...x.shape]), scale: sz.scale, zeroPoint: z, plan: p };
    });
  }
}

/**
 * Which forward a converted Linear runs: `packed` reads the packed codes with the `packedMatmul`
 * kernel (within float32 summation error of the fake-quant eval output); `packedBase3` the same,
 * from ternary codes stored five per byte in TQ1_0's order (1.6 instead of 2 bits a weight; other
 * grids stay `packed`); `sparse24` (layers with a 2:4 mask; others stay `packed`) multiplies by
 * the kept half of the dequantized weight, compressed once into float values and 2-bit positions
 * (`sparse24Linear`: half the multiply-adds, within float32 summation error; it holds that float
 * cache, 2.125 bytes a weight, beside the codes); `dequantize` rebuilds the float weight and calls
 * `linear` (bit for bit the fake-quant eval output).
 */
export type QuantizedKernel = 'packed' | 'packedBase3' | 'sparse24' | 'dequantize';

/**
 * Inference Linear over integer weight codes (see `convert`).
 * @example convert(model); const q = model.getSubmodule('fc1') as QuantizedLinear; q.forward(x);
 */
export class QuantizedLinear extends QuantizedBase {
  bias: Tensor | null;
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** The forward `forward` runs (see QuantizedKernel); 'sparse24' for a 2:4 layer, else 'packed', unless convert was told otherwise. */
  kernel: QuantizedKernel = 'packed';
  /** Whether the weight has exactly three codes (ternary), so `repackBase3` can store it in base 3. */
  get ternary(): boolean {
    const g = this.weightPlan.grid;
    return g.codeMax - g.codeMin === 2 && this.weightShape.length === 2;
  }
  /**
   * Stores the codes five per byte in base 3 (TQ1_0's order) instead of 2-bit fields, and runs
   * the packed kernel on them (`kernel` 'packedBase3'). Only for ternary weights.
   * @example const up = model.getSubmodule('mlp.up') as QuantizedLinear; up.repackBase3();
   */
  repackBase3(): void {
    if (!this.ternary) throw new Error(`QuantizedLinear.repackBase3: needs a grid of three codes (ternary), got ${this.weightPlan.grid.label} with codes ${this.weightPlan.grid.codeMin}…${this.weightPlan.grid.codeMax}`);
    if (this.codePacking !== 'base3') {
      const codes = this.codes();
      this.weightCodes = packTernaryBase3(codes, this.weightPlan.grid.codeMin);
      this.codePacking = 'base3';
    }
    this.kernel = 'packedBase3';
  }
  #sparse: { weight: Sparse24Weight; key: unknown[] } | null = null;
  /**
   * The dequantized weight in 2:4 compressed form (kept values in the weight dtype, 2-bit
   * positions), built once and rebuilt when a buffer is replaced or written. Throws, naming the
   * group, when the weight has more than two non-zeros in a group of four.
   * @example const sw = (model.getSubmodule('mlp.up') as QuantizedLinear).sparseWeight(); // sw.values [O, K/2]
   */
  sparseWeight(): Sparse24Weight {
    const key = this.bufferKey();
    if (this.#sparse && key.every((k, i) => k === this.#sparse!.key[i])) return this.#sparse.weight;
    // kept past the tidy of the forward that builds it, as the packed cache is
    const sw = noGrad(() => sparse24Weight(this.dequantizedWeight()));
    const weight = { ...sw, values: keep(sw.values), indices: keep(sw.indices) };
    this.#sparse = { weight, key };
    return weight;
  }
  /**
   * The semi-structured sparsity pattern the weight keeps ('2:4' when the QAT layer had a hardened
   * mask: at most two non-zero codes' values per group of four inputs), or null. Exported as
   * metadata with the 2-bit positions of the kept entries (`saveQuantized`).
   */
  sparsity: '2:4' | null;
  constructor(src: QuantLinear) {
    super(src);
    this.inFeatures = src.inFeatures;
    this.outFeatures = src.outFeatures;
    this.sparsity = src.weightMask ? (src.weightMask.pattern as '2:4') : null;
    if (this.sparsity) this.kernel = 'sparse24';
    this.bias = this.registerBuffer('bias', src.bias ? src.bias.detach().clone() : null);
  }
  /**
   * y = x̂·Ŵᵀ + b. With `kernel` 'packed' (the default) it runs `packedLinear` on the stored codes,
   * for every grid whose scales are per tensor, per channel (rows), per group along the inputs, or
   * per block of whole rows or within rows (MX exponents and NF4's double-quantized scales are
   * decoded once into a float cache), in float32. Other layouts (per input column, groups along
   * the outputs, blocks straddling rows), 9–32-bit codes and float64 weights take
   * `dequantizedForward`, as does `kernel` 'dequantize'. With `kernel` 'sparse24' (a layer with a
   * 2:4 mask) it runs `sparse24Linear` on `sparseWeight()`.
   * @example convert(model); model.forward(x); // packed; convert(model, { kernel: 'dequantize' }) for bit identity
   */
  forward(x: Tensor): Tensor {
    if (this.kernel === 'sparse24' && this.sparsity) {
      const sw = this.sparseWeight();
      return noGrad(() => sparse24Linear(this.quantizeInput(x), sw, this.bias));
    }
    const w = this.kernel !== 'dequantize' ? this.packedWeight() : null;
    if (!w) return this.dequantizedForward(x);
    return noGrad(() => packedLinear(this.quantizeInput(x), w, this.bias));
  }
  /** The reference forward: the weight dequantized to float, then `linear`; bit for bit the fake-quant eval output. */
  dequantizedForward(x: Tensor): Tensor {
    return noGrad(() => linear(this.quantizeInput(x), this.dequantizedWeight(), this.bias));
  }
  /**
   * y = s_x·Σ_g s_w[o, g]·Σ_{k∈g} (q_x − z_x)(q_w − z_w) + b with exact integer accumulation (the
   * arithmetic of an int8 GEMM), in float64, rounded once to the output dtype. Equals `forward`
   * up to float32 summation error, and bit for bit when all scales are powers of two.
   */
  integerForward(x: Tensor): Tensor {
    const ic = this.inputCodes(x);
    const wp = this.weightPlan;
    if (!ic || !ic.plan.grid.integer || !wp.grid.integer || ic.plan.offset === 'beta' || wp.offset === 'beta') {
      throw new Error(`QuantizedLinear.integerForward: needs integer grids with zero points (not β offsets) on a quantized input and the weight; got input ${ic?.plan.grid.label ?? 'fp'}, weight ${wp.grid.label}`);
    }
    const gran = wp.granularity;
    if (typeof gran === 'object' && (('channel' in gran && gran.channel !== 0) || ('group' in gran && (gran.axis ?? -1) !== -1 && gran.axis !== 1))) {
      throw new Error('QuantizedLinear.integerForward: needs weight scales per tensor, channel (rows), group (along the inputs) or block');
    }
    const K = this.inFeatures;
    const rows = x.numel() / K;
    const qx = ic.codes.contiguous().dataSync();
    const sx = ic.scale.contiguous().dataSync();
    const zxs = typeof ic.zeroPoint === 'number' ? null : ic.zeroPoint.contiguous().dataSync();
    // input scales cover whole runs of rows: all (per tensor), one sample's tokens (per timestep) or one row (per token)
    const rowsPerScale = rows / sx.length;
    const qw = this.codes().dataSync();
    const sw = this.weightScale.contiguous().dataSync();
    const zw = this.weightZeroPoint ? this.weightZeroPoint.contiguous().dataSync() : null;
    const per = qw.length / sw.length; // weights per scale, in weight order (no permutation for these granularities)
    const b = this.bias?.contiguous().dataSync();
    const out = new Float64Array(rows * this.outFeatures);
    for (let n = 0; n < rows; n++) {
      const sxn = sx[Math.floor(n / rowsPerScale)]!;
      const zx = zxs ? zxs[zxs.length === 1 ? 0 : Math.floor(n / rowsPerScale)]! : (ic.zeroPoint as number);
      for (let o = 0; o < this.outFeatures; o++) {
        let y = 0;
        let acc = 0; // exact: |acc| ≤ K·2^16 ≪ 2^53
        for (let k = 0; k < K; k++) {
          const e = o * K + k;
          const gIdx = Math.floor(e / per);
          acc += (qx[n * K + k]! - zx) * (qw[e]! - (zw ? zw[gIdx]! : 0));
          if ((e + 1) % per === 0 || k === K - 1) {
            y += acc * sw[gIdx]!;
            acc = 0;
          }
        }
        out[n * this.outFeatures + o] = y * sxn + (b ? b[o]! : 0);
      }
    }
    const dtype = this.weightDType;
    return fromTypedArray(dtype === 'float64' ? out : Float32Array.from(out), [...x.shape.slice(0, -1), this.outFeatures], dtype);
  }
}

/** Which forward a converted conv or embedding runs: the packed codes (the default) or the dequantized weight. */
export type QuantizedReadKernel = 'packed' | 'dequantize';

/**
 * Inference Conv2d over integer weight codes. With `kernel` 'packed' (the default) it runs
 * `packedConv2d`: im2col, then the packed kernel over each group's filters as a matrix
 * [O/groups, C/groups·kh·kw] (the QAT quantizer's own matrix, so its scale groups along
 * C·kh·kw are the kernel's groups), within float32 summation error of the fake-quant eval output.
 * Layouts the kernel cannot read (`packedWeight` null: scales per input column, groups along the
 * outputs, blocks straddling filters, > 8-bit codes, float64) and `kernel` 'dequantize' take
 * `dequantizedForward`, bit for bit the eval output. Packed saves memory, not time, on small
 * filters: on qat-mnist's CNN (wasm, one thread, loaded 2-core machine) it ran at 0.92–1.06× the
 * dequantizing forward's speed at batch 1 and 0.68–0.95× at batch 64 (`npm run bench -- --sections
 * packed`), since rebuilding a 16 × 72 float weight costs little and the kernel's many-row path
 * dots each decoded weight row with every im2col row rather than running a register-blocked matmul.
 * @example convert(cnn); (cnn.getSubmodule('0') as QuantizedConv2d).forward(images);
 */
export class QuantizedConv2d extends QuantizedBase {
  bias: Tensor | null;
  readonly conv: Conv2dOptions;
  /** The forward `forward` runs (see QuantizedReadKernel). */
  kernel: QuantizedReadKernel = 'packed';
  #groups: { from: PackedWeight; weights: PackedWeight[] } | null = null;
  constructor(src: QuantConv2d) {
    super(src);
    this.conv = { ...src.conv };
    this.bias = this.registerBuffer('bias', src.bias ? src.bias.detach().clone() : null);
  }
  /**
   * One packed weight per conv group (`packedWeight`'s rows split; a group whose codes do not start
   * on a byte gets its fields copied into bytes of its own, once), or null as `packedWeight`.
   * @example const ws = (cnn.getSubmodule('0') as QuantizedConv2d).packedWeights(); // ws?.length === groups
   */
  packedWeights(): PackedWeight[] | null {
    const w = this.packedWeight();
    if (!w) return null;
    if (this.#groups?.from !== w) this.#groups = { from: w, weights: splitRows(w, this.conv.groups ?? 1) };
    return this.#groups.weights;
  }
  forward(x: Tensor): Tensor {
    const ws = this.kernel === 'packed' ? this.packedWeights() : null;
    if (!ws) return this.dequantizedForward(x);
    const [kh, kw] = this.weightShape.slice(2) as [number, number];
    return noGrad(() => packedConv2d(this.quantizeInput(x), ws, [kh, kw], this.bias, this.conv));
  }
  /** The reference forward: the weight dequantized to float, then `conv2d`; bit for bit the fake-quant eval output. */
  dequantizedForward(x: Tensor): Tensor {
    return noGrad(() => conv2d(this.quantizeInput(x), this.dequantizedWeight(), this.bias, this.conv));
  }
}

/** `w`'s rows in `parts` equal blocks, each a PackedWeight (views where a block starts on a byte). */
function splitRows(w: PackedWeight, parts: number): PackedWeight[] {
  if (parts === 1) return [w];
  const rows = w.outFeatures / parts;
  const K = w.inFeatures;
  const G = K / w.groupSize;
  const bits = w.bits;
  const bytes = Math.ceil((rows * K * bits) / 8);
  return Array.from({ length: parts }, (_, i) => {
    const start = i * rows * K * bits;
    let codes: Tensor;
    if (start % 8 === 0) codes = narrow(w.codes, 0, start / 8, Math.min(bytes, w.codes.numel() - start / 8));
    else {
      // a bit offset the kernel cannot start at: the group's fields, moved to start on a byte
      const src = w.codes.contiguous().dataSync();
      const out = new Uint8Array(bytes);
      const mask = 2 ** bits - 1;
      for (let j = 0; j < rows * K; j++) {
        const b = start + j * bits;
        out[(j * bits) >> 3]! |= (((src[b >> 3]! & 0xff) >> b % 8) & mask) << (j * bits) % 8;
      }
      codes = fromTypedArray(out, [bytes], 'uint8');
    }
    const part = (t: Tensor) => keep(narrow(t, 0, i * rows * G, rows * G));
    return { ...w, codes: keep(codes), scale: part(w.scale), zeroPoint: w.zeroPoint && part(w.zeroPoint), outFeatures: rows };
  });
}

/**
 * Inference Embedding over integer codes. With `kernel` 'packed' (the default) a lookup decodes
 * only the rows it reads (`packedEmbedding`), bit for bit the dequantized table's rows; layouts
 * `packedWeight` cannot give (and `kernel` 'dequantize') dequantize the whole table first.
 * @example convert(llama); llama.getSubmodule('model.embed_tokens').forward(tokens);
 */
export class QuantizedEmbedding extends QuantizedBase {
  readonly paddingIdx: number | undefined;
  /** The forward `forward` runs (see QuantizedReadKernel). */
  kernel: QuantizedReadKernel = 'packed';
  constructor(src: QuantEmbedding) {
    super(src);
    this.paddingIdx = src.paddingIdx;
    // a lookup adds β after scaling, as the dequantizing forward does (a matmul takes −β/s)
    this.packedOffset = 'beta';
  }
  forward(indices: Tensor): Tensor {
    const w = this.kernel === 'packed' ? this.packedWeight() : null;
    if (!w) return this.dequantizedForward(indices);
    return noGrad(() => packedEmbedding(indices, w));
  }
  /** The reference lookup: the whole table dequantized, then `embedding`. */
  dequantizedForward(indices: Tensor): Tensor {
    return noGrad(() => embedding(indices, this.dequantizedWeight(), { paddingIdx: this.paddingIdx }));
  }
}

/** Options of `convert`: which kernel the converted layers run on. */
export interface ConvertOptions {
  /**
   * The forward of converted layers (default 'sparse24' for Linear layers with a 2:4 mask, else
   * 'packed'; 'packedBase3' stores ternary Linear weights five per byte, TQ1_0's layout; 'sparse24'
   * on a layer without a mask is 'packed'; 'dequantize' keeps bit identity). Conv and embedding
   * layers run 'dequantize' when asked, else 'packed'.
   */
  kernel?: QuantizedKernel;
}

/** What `convert` reports: the layers it replaced by their integer versions. */
export interface ConvertResult {
  /** Dotted names of the layers converted. */
  converted: string[];
}

/**
 * Replaces every QAT layer with a weight quantizer by its integer-storage inference layer, in
 * place, and puts the model in eval mode. Linear and conv layers run on the packed codes
 * (`packedLinear`, `packedConv2d`): their output equals the QAT model's eval output within float32
 * summation error; embeddings decode only the rows they look up (`packedEmbedding`), bit for bit.
 * With `{ kernel: 'dequantize' }` every layer is bit for bit the eval output (deterministic
 * rounding; HESTIA layers at temperature 0, pressure 1). With
 * `{ kernel: 'packedBase3' }` ternary Linear weights are stored and read five per byte. A Linear
 * with a 2:4 mask (`sparsify`) has it hardened first, keeps `sparsity: '2:4'` and runs on the
 * kept half of its weight (`sparse24Linear`) unless another kernel is asked for. EfficientDM's
 * LoRA layers are merged (`EfficientDMLinear.merged`) and converted; a TALSQ input quantizer
 * becomes `inputTimesteps`: its step table [buckets, 1] kept as inputScale, each sample reading
 * the row of the timestep its TimestepModule forward announces.
 * @example
 * model.eval(); const yFake = model.forward(x);
 * convert(model, { kernel: 'dequantize' }); model.forward(x); // identical to yFake
 */
export function convert(model: Module, options: ConvertOptions = {}): ConvertResult {
  const kernel = options.kernel;
  if (kernel !== undefined && kernel !== 'packed' && kernel !== 'packedBase3' && kernel !== 'sparse24' && kernel !== 'dequantize') throw new Error(`convert: kernel must be 'packed', 'packedBase3', 'sparse24' or 'dequantize', got ${JSON.stringify(kernel)}`);
  const converted: string[] = [];
  // an EfficientDM layer is converted as its merge (bit for bit its output): Ŵ on the grid, no adapter
  for (const [name, m] of [...model.namedModules()]) {
    if (!(m instanceof EfficientDMLinear)) continue;
    const q = m.merged();
    q.train(m.training);
    replaceSubmodule(model, name, q);
  }
  const targets = [...model.namedModules()].filter(([name, m]) => name !== '' && isQuantLayer(m) && m.weightQuantizer?.enabled);
  for (const [name, m] of targets) {
    // a sparse layer is converted with its final mask: pruned entries become exact zeros first
    if (m instanceof QuantLinear && m.weightMask) m.weightMask.harden(m.weight);
    const q = m instanceof QuantLinear ? new QuantizedLinear(m) : m instanceof QuantConv2d ? new QuantizedConv2d(m) : new QuantizedEmbedding(m as QuantEmbedding);
    if (q instanceof QuantizedLinear) {
      if (kernel === 'packedBase3' && q.ternary) q.repackBase3();
      else if (kernel === undefined || kernel === 'sparse24') q.kernel = q.sparsity ? 'sparse24' : 'packed';
      else q.kernel = kernel === 'packedBase3' ? 'packed' : kernel;
    } else q.kernel = kernel === 'dequantize' ? 'dequantize' : 'packed';
    replaceSubmodule(model, name, q);
    converted.push(name);
  }
  model.eval();
  return { converted };
}
