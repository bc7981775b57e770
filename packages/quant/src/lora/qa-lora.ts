/**
 * @file QA-LoRA (methods.md §6.2): a frozen group-quantized integer base W = s·(q − z) with groups
 * of L along the inputs, and an adapter whose input is the mean of each group: A is [r, in/L]. The
 * adapter then adds (α/r)·(BA)[o, g]/L to every weight of group g in row o, so it merges exactly
 * into the zero points, z′ = z − (α/r)·(BA)/(L·s): the merged layer is a QuantizedLinear on the
 * same grid with the same codes.
 */
import { linear, noGrad, zeros, type Tensor } from '@qgrad/core';
import { init, Parameter, type Linear } from '@qgrad/nn';
import { granularityName } from '../grids/granularity.js';
import { QuantizedLinear } from '../qat/convert.js';
import { describePlan, resolveQuantizer } from '../quantizer/config.js';
import { frozenBase, frozenConfig, LoraLayer, type LoraLayerOptions, type MergedLayer } from './layer.js';

/**
 * The group size L of a QA-LoRA quant config, or an error naming the layer and what it needs.
 * @internal plumbing between the quantizer, QAT, LoRA and export code of @qgrad/quant, left off the API site
 */
export function qaLoraGroup(o: LoraLayerOptions, inFeatures: number): number {
  const plan = resolveQuantizer(frozenConfig(o.quant), 'weight', o.who);
  const g = plan.granularity;
  const grouped = typeof g === 'object' && 'group' in g && (g.axis === undefined || g.axis === -1 || g.axis === 1);
  if (!plan.grid.integer || !plan.hasZeroPoint || plan.offset !== 'zeroPoint' || !grouped) {
    throw new Error(`${o.who}: method 'qa-lora' merges the adapter into per-group zero points, so quant must be an asymmetric integer grid in groups along the inputs (e.g. { grid: 'int', bits: 4, asymmetric: true, granularity: { group: 32 } }); got ${describePlan(plan)}${plan.hasZeroPoint ? '' : ' (no zero point)'}`);
  }
  if (inFeatures % g.group !== 0) throw new Error(`${o.who}: ${inFeatures} inputs do not split into groups of ${g.group} (${granularityName(g)})`);
  return g.group;
}

/**
 * QA-LoRA: a frozen group-quantized base and an adapter over group means of the input, which merges exactly into the zero points.
 * @example loraQuant(model, { method: 'qa-lora', rank: 8, alpha: 16, targets: ['**.q_proj', '**.v_proj'] });
 */
export class QALoraLinear extends LoraLayer {
  readonly method = 'qa-lora' as const;
  /** The frozen group-quantized base. */
  baseLayer: QuantizedLinear;
  /** L, the inputs per quantization group (and per pooled adapter input). */
  readonly groupSize: number;

  constructor(src: Linear, o: LoraLayerOptions) {
    const L = qaLoraGroup(o, src.inFeatures);
    super(src, o, src.inFeatures / L);
    this.groupSize = L;
    const dtype = src.weight.dtype;
    this.baseLayer = this.registerModule('baseLayer', noGrad(() => frozenBase(src.weight, src.bias, o.quant, o.who)));
    this.loraA = this.registerParameter('loraA', Parameter(zeros([o.rank, this.inFeatures / L], { dtype })));
    this.loraB = this.registerParameter('loraB', Parameter(zeros([this.outFeatures, o.rank], { dtype })));
    init.kaimingUniform_(this.loraA, { a: Math.sqrt(5), generator: o.generator });
  }
  baseWeight(): Tensor {
    return this.baseLayer.dequantizedWeight();
  }
  /** Mean of each group of L consecutive inputs: [..., in] → [..., in/L]. */
  pool(x: Tensor): Tensor {
    const lead = x.shape.slice(0, -1);
    return x.reshape([...lead, this.inFeatures / this.groupSize, this.groupSize]).mean(-1); // [..., in/L, L] → [..., in/L]
  }
  forward(x: Tensor): Tensor {
    return linear(x, this.baseWeight(), this.baseLayer.bias).add(this.adapterOf(this.pool(this.adapterInput(x))));
  }
  baseState(): Record<string, Tensor> {
    return Object.fromEntries(this.baseLayer.namedBuffers());
  }
  /** The per-group weight shift (α/r)·(BA)/L, [out, in/L]. */
  groupShift(): Tensor {
    return noGrad(() => this.deltaWeight().div(this.groupSize));
  }
  /** The float weight the layer computes with: W0 plus each group's shift. */
  effectiveWeight(): Tensor {
    return noGrad(() => {
      const d = this.groupShift().unsqueeze(-1).expand([this.outFeatures, this.inFeatures / this.groupSize, this.groupSize]);
      return this.baseWeight().add(d.reshape([this.outFeatures, this.inFeatures]));
    });
  }
  /** Always a QuantizedLinear: the base's codes and scales with zero points z − shift/s (`requantize` changes nothing). */
  merged(): MergedLayer {
    const base = this.baseLayer;
    noGrad(() => {
      const s = base.scales(); // [out, in/L, 1]
      const z = base.weightZeroPoint!;
      base.weightZeroPoint = z.sub(this.groupShift().unsqueeze(-1).div(s));
    });
    return { layer: base, kind: 'quantized' };
  }
}
