/**
 * @file LoQT (methods.md §6.5): a frozen quantized base (NF4 by default), a fixed projection
 * P = lora_A [r, in] with orthonormal rows and a trained B = lora_B [out, r]; ΔW = α·B·P (α, not
 * α/r). Every so often (gaps 100, 120, 144, … steps) `loqtMerge` folds B·P into the base —
 * W ← Q(deq(W_q) + α·B·P), computed exactly in float before the one requantization — takes a
 * new P from the top-r right singular vectors of the weight gradient, and resets B (to 0, or to
 * the projection of the requantization error onto P when that lowers it).
 */
import { fromTypedArray, gradOf, linear, noGrad, zeros, type Tensor } from '@qgrad/core';
import { Parameter, type Linear, type Module } from '@qgrad/nn';
import { frozenBase, type LoraLayerOptions } from './layer.js';
import { QLoraLinear } from './qlora.js';
import { truncatedSvd } from './svd.js';

/**
 * P [r, in]: the top-r right singular vectors of the [out, in] matrix `m`, as rows.
 * @example const p = topRightSingular(weightGradient, 8); // [8, in]: the new projection
 */
export function topRightSingular(m: Tensor, r: number): Tensor {
  const [rows, cols] = m.shape as [number, number];
  const { v, rank } = truncatedSvd(Float64Array.from(m.contiguous().dataSync()), rows, cols, r);
  const p = new Float64Array(r * cols);
  for (let k = 0; k < rank; k++) for (let j = 0; j < cols; j++) p[k * cols + j] = v[j * rank + k]!;
  return fromTypedArray(m.dtype === 'float64' ? p : Float32Array.from(p), [r, cols], m.dtype);
}

const frob = (t: Tensor) => Math.sqrt(t.square().sum().item());

/** What one `loqtMerge` of a layer reports: the merge's residual, with and without compensating the requantization error. */
export interface LoqtMergeStats {
  /** ‖W_fp − deq(Q) − α·B·P‖_F after the merge (the function's change at the merge point). */
  residual: number;
  /** The same with B reset to 0 (no compensation). */
  residualUncompensated: number;
}

/**
 * LoQT: a frozen quantized base, a fixed projection P and a trained B, folded into the base every so often by `loqtMerge`.
 * @example loraQuant(model, { method: 'loqt', rank: 8, alpha: 1, targets: ['**.q_proj', '**.v_proj'] });
 */
export class LoqtLinear extends QLoraLinear {
  override readonly method = 'loqt' as const;
  /** While loqtMerge takes the weight gradient: the float weight, a leaf the forward uses instead. */
  probe: Tensor | null = null;

  /** P = loraA a buffer, B = loraB the only parameter (0). */
  protected override initAdapter(src: Linear, o: LoraLayerOptions): void {
    // before any gradient is seen, P spans the weight's own top-r row space (data-free)
    this.loraA = this.registerBuffer('loraA', noGrad(() => topRightSingular(src.weight.detach(), o.rank)));
    this.loraB = this.registerParameter('loraB', Parameter(zeros([this.outFeatures, o.rank], { dtype: src.weight.dtype })));
  }
  /** LoQT scales B·P by α itself. */
  override get scaling(): number {
    return this.alpha;
  }
  override forward(x: Tensor): Tensor {
    return this.probe ? linear(x, this.probe, this.baseLayer.bias) : super.forward(x);
  }
  override trainable(): Tensor[] {
    return [this.loraB];
  }
  /**
   * Folds α·B·P into the base (one requantization of the exact float sum), sets P to the top-r
   * right singular vectors of `gradient` (when given), and resets B: to 0, or — with `compensate`
   * iterations — to the projection of the requantization error onto P where that lowers
   * ‖W_fp − deq(Q) − α·B·P‖ (B and P are written in place: optimizer references stay valid).
   */
  mergeAndReset(opts: { gradient?: Tensor; compensate?: number } = {}): LoqtMergeStats {
    return noGrad(() => {
      const wFp = this.baseWeight().add(this.deltaWeight());
      if (opts.gradient) this.loraA.copy_(topRightSingular(opts.gradient, this.rank));
      const p = this.loraA;
      let base = frozenBase(wFp, this.baseLayer.bias, this.quant, this.who);
      let b = zeros([this.outFeatures, this.rank], { dtype: this.dtype });
      const uncompensated = frob(wFp.sub(base.dequantizedWeight()));
      let best = uncompensated;
      let wCur = wFp;
      for (let i = 0; i < (opts.compensate ?? 0); i++) {
        const q = frozenBase(wCur, this.baseLayer.bias, this.quant, this.who);
        const bNew = wFp.sub(q.dequantizedWeight()).matmul(p.t()).div(this.alpha); // B = (R·Pᵀ)/α: R projected on P's rows
        const err = frob(wFp.sub(q.dequantizedWeight()).sub(bNew.matmul(p).mul(this.alpha)));
        if (err < best) [best, base, b] = [err, q, bNew];
        wCur = wFp.sub(bNew.matmul(p).mul(this.alpha));
      }
      this.baseLayer = base;
      this.loraB.copy_(b);
      return { residual: best, residualUncompensated: uncompensated };
    });
  }
}

/**
 * Steps at which LoQT merges: gaps first, first·factor, first·factor², … (rounded) up to `total`.
 * @example loqtMergeSteps(500); // [100, 220, 364]
 */
export function loqtMergeSteps(total: number, opts: { first?: number; factor?: number } = {}): number[] {
  const first = opts.first ?? 100;
  const factor = opts.factor ?? 1.2;
  const steps: number[] = [];
  let gap = first;
  for (let s = Math.round(gap); s <= total; gap *= factor, s += Math.round(gap)) steps.push(s);
  return steps;
}

/**
 * LoQT's periodic update on every LoQT layer of `model`: with `loss`, one forward/backward on
 * the float merged weights gives each layer's weight gradient for its new P; then each layer
 * merges and resets (`LoqtLinear.mergeAndReset`). Returns the per-layer residuals.
 * @example if (mergeSteps.includes(step)) loqtMerge(model, { loss: () => lossOf(batch) });
 */
export function loqtMerge(model: Module, opts: { loss?: () => Tensor; compensate?: number } = {}): Record<string, LoqtMergeStats> {
  const layers = [...model.namedModules()].filter((e): e is [string, LoqtLinear] => e[1] instanceof LoqtLinear);
  if (!layers.length) throw new Error('loqtMerge: the model has no LoQT layers (loraQuant with method: \'loqt\')');
  let grads: (Tensor | undefined)[] = layers.map(() => undefined);
  if (opts.loss) {
    for (const [, l] of layers) l.probe = noGrad(() => l.baseWeight().add(l.deltaWeight())).requiresGrad_();
    try {
      grads = gradOf([opts.loss()], layers.map(([, l]) => l.probe!), { allowUnused: true });
    } finally {
      for (const [, l] of layers) l.probe = null;
    }
  }
  const out: Record<string, LoqtMergeStats> = {};
  layers.forEach(([name, l], i) => (out[name] = l.mergeAndReset({ gradient: grads[i], compensate: opts.compensate })));
  return out;
}
