/**
 * @file L4Q (methods.md §6.3): one LSQ quantizer on the merged weight, Ŵ = Q(W0 + (α/r)·B·A),
 * with the scales and the adapter trained jointly and W0 frozen in float. The deployable layer
 * is that quantized weight: merge hands the trained quantizer to convert's QuantizedLinear, whose
 * output equals the training layer's eval output bit for bit.
 */
import { linear, noGrad, zeros, type Tensor } from '@qgrad/core';
import { init, Parameter, type Linear } from '@qgrad/nn';
import { QuantizedLinear } from '../qat/convert.js';
import { QuantLinear } from '../qat/modules.js';
import { WeightQuantizer } from '../qat/quantizers.js';
import { floatLinear, LoraLayer, type LoraLayerOptions, type MergedLayer } from './layer.js';

/**
 * L4Q: the frozen float weight plus the adapter, quantized together by one LSQ quantizer trained with the adapter.
 * @example loraQuant(model, { method: 'l4q', rank: 8, alpha: 16, targets: ['**.q_proj', '**.v_proj'] });
 */
export class L4QLinear extends LoraLayer {
  readonly method = 'l4q' as const;
  /** W0, frozen in float (a buffer). */
  weight: Tensor;
  bias: Tensor | null;
  /** The learned-scale quantizer of W0 + (α/r)·B·A. */
  weightQuantizer: WeightQuantizer;

  constructor(src: Linear, o: LoraLayerOptions) {
    super(src, o);
    if (this.dropoutP) throw new Error(`${o.who}: dropout does not apply to 'l4q' (the adapter acts inside the quantized weight, not on the input)`);
    const dtype = src.weight.dtype;
    this.weight = this.registerBuffer('weight', noGrad(() => src.weight.detach().clone()));
    this.bias = this.registerBuffer('bias', src.bias ? noGrad(() => src.bias!.detach().clone()) : null);
    this.weightQuantizer = this.registerModule('weightQuantizer', new WeightQuantizer(this.weight.shape, o.quant, `${o.who} weight`, dtype === 'float64' ? 'float64' : 'float32'));
    if (this.weightQuantizer.plan.mode !== 'learned') {
      throw new Error(`${o.who}: method 'l4q' learns the quantizer's scales with the adapter (LSQ), so quant's scale must be 'learned' (the default on int grids); got ${this.weightQuantizer.plan.mode}`);
    }
    this.weightQuantizer.initFrom(this.weight);
    this.loraA = this.registerParameter('loraA', Parameter(zeros([o.rank, this.inFeatures], { dtype })));
    this.loraB = this.registerParameter('loraB', Parameter(zeros([this.outFeatures, o.rank], { dtype })));
    init.kaimingUniform_(this.loraA, { a: Math.sqrt(5), generator: o.generator });
  }
  /** W0 + (α/r)·B·A, differentiable in A and B. Dropout does not apply: the adapter acts inside the weight. */
  mergedFloat(): Tensor {
    return this.weight.add(this.loraB.matmul(this.loraA).mul(this.scaling));
  }
  quantizedWeight(): Tensor {
    return this.weightQuantizer.forward(this.mergedFloat());
  }
  forward(x: Tensor): Tensor {
    return linear(x, this.quantizedWeight(), this.bias);
  }
  override trainable(): Tensor[] {
    return [this.loraA, this.loraB, ...this.weightQuantizer.parameters()];
  }
  baseState(): Record<string, Tensor> {
    return { weight: this.weight };
  }
  merged(): MergedLayer {
    const q = QuantLinear.from(floatLinear(noGrad(() => this.mergedFloat()), this.bias), { weight: null }, this.who);
    q.weightQuantizer = this.weightQuantizer;
    return { layer: new QuantizedLinear(q), kind: 'quantized' };
  }
}
