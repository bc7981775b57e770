/**
 * @file QLoRA (methods.md §6.1): a frozen NF4 base with double-quantized absmaxes (blocks of 64,
 * absmaxes as E4M3 in blocks of 256), dequantized on the fly in every forward (inside the kernel
 * that adds the adapter, `loraMergePacked`), plus a float adapter (B = 0, A Kaiming-uniform as
 * PEFT). Merge: dequantized W0 + (α/r)·B·A in float, or requantized onto the base's grid with the
 * SQNR that costs.
 */
import { linear, noGrad, zeros, type PackedWeight, type Tensor } from '@qgrad/core';
import { init, Parameter, type Linear } from '@qgrad/nn';
import { QuantizedLinear } from '../qat/convert.js';
import { tensorError } from '../inspect/error.js';
import { loraLinear, loraLinearPacked } from './fused.js';
import { floatLinear, frozenBase, LoraLayer, type LoraLayerOptions, type MergedLayer } from './layer.js';

/** QLoRA's base quantizer: NF4, absmax per block of 64, double-quantized absmaxes. */
export const QLORA_QUANT = { grid: 'nf4', scale: { double: true } } as const;

/**
 * A LoRA layer over a frozen convert-style base (QLoRA; LoQT extends it).
 * @example loraQuant(model, { method: 'qlora', rank: 8, alpha: 16, targets: ['**.q_proj', '**.v_proj'] });
 */
export class QLoraLinear extends LoraLayer {
  readonly method: 'qlora' | 'loqt' = 'qlora';
  /** The frozen quantized base (packed codes, scales, bias). */
  baseLayer: QuantizedLinear;

  constructor(src: Linear, o: LoraLayerOptions) {
    super(src, o);
    this.baseLayer = this.registerModule('baseLayer', noGrad(() => frozenBase(src.weight, src.bias, o.quant, o.who)));
    this.initAdapter(src, o);
  }
  /** Registers loraA and loraB: B = 0, A Kaiming-uniform (PEFT); LoQT overrides it (A a fixed projection). */
  protected initAdapter(src: Linear, o: LoraLayerOptions): void {
    const dtype = src.weight.dtype;
    this.loraA = this.registerParameter('loraA', Parameter(zeros([o.rank, this.inFeatures], { dtype })));
    this.loraB = this.registerParameter('loraB', Parameter(zeros([this.outFeatures, o.rank], { dtype })));
    init.kaimingUniform_(this.loraA, { a: Math.sqrt(5), generator: o.generator });
  }
  /**
   * The dequantized base weight W0 (no gradient), decoded from the codes on every call. The codes'
   * float scales (NF4: the double-quantized absmaxes decoded, one float per block of 64 weights)
   * are the base layer's packed cache, built on the first call and rebuilt only when a buffer of
   * the base is replaced or written; the float W0 itself is never kept (it would take 8× the codes'
   * memory).
   */
  baseWeight(): Tensor {
    this.baseLayer.packedWeight();
    return this.baseLayer.dequantizedWeight();
  }
  forward(x: Tensor): Tensor {
    // dropout gives the adapter another input than the base, so only then are they two branches
    if (this.training && this.dropoutP > 0) return linear(x, this.baseWeight(), this.baseLayer.bias).add(this.adapterOf(this.adapterInput(x)));
    // the merged weight straight from the codes where baseWeight decodes the packed layout (the
    // same bits), else from the decoded base
    const packed = this.#packedBase();
    if (packed) return loraLinearPacked(x, { weight: packed, w0: () => this.baseWeight() }, this.loraA, this.loraB, this.scaling, this.baseLayer.bias);
    return loraLinear(x, this.baseWeight(), this.loraA, this.loraB, this.scaling, this.baseLayer.bias);
  }
  /** The base's packed weight where `dequantizedWeight` decodes it with packedGather (and in the adapter's dtype), else null. */
  #packedBase(): PackedWeight | null {
    const base = this.baseLayer;
    if (base.codePacking === 'base3' || (base.weightPlan.offset === 'beta' && base.weightZeroPoint) || base.weightShape.length !== 2) return null;
    const packed = base.packedWeight();
    return packed && packed.scale.dtype === this.loraA.dtype && packed.packing !== 'base3' ? packed : null;
  }
  baseState(): Record<string, Tensor> {
    return Object.fromEntries(this.baseLayer.namedBuffers());
  }
  merged(opts: { requantize?: boolean }): MergedLayer {
    const w = noGrad(() => this.baseWeight().add(this.deltaWeight()));
    if (!opts.requantize) return { layer: floatLinear(w, this.baseLayer.bias), kind: 'float' };
    const layer = frozenBase(w, this.baseLayer.bias, this.quant, this.who);
    return { layer, kind: 'quantized', sqnrDb: tensorError(w, layer.dequantizedWeight()).sqnrDb };
  }
}
