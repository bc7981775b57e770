/**
 * @file `InputTransform`: what PTQ's equivalence transforms leave in front of a layer — an optional
 * block Hadamard rotation of the input (QuaRot style, undone by rotating the weight: (xH)(WH)ᵀ =
 * xWᵀ) and a per-input-channel multiplier 1/s (AWQ/SmoothQuant: (x/s)(W·s)ᵀ = xWᵀ). The wrapped
 * layer is an ordinary QAT layer, so `convert` replaces it inside the wrapper as anywhere else.
 */
import { hadamard, type Tensor } from '@qgrad/core';
import { Module, type TensorModule } from '@qgrad/nn';

/**
 * y = layer(rotate(x) ⊙ multiplier).
 * @example
 * const t = new InputTransform(quantLinear, { multiplier: invS, hadamardBlock: 64 });
 * t.forward(x); // = the float layer on x when quantization is off
 */
export class InputTransform extends Module {
  layer: Module & TensorModule;
  /** Per-input-channel factor [in] (1/s of the migration), or null. */
  multiplier: Tensor | null;
  /** Block size of the normalised Hadamard rotation of the input, or 0 for none. */
  readonly hadamardBlock: number;

  constructor(layer: Module & TensorModule, o: { multiplier?: Tensor | null; hadamardBlock?: number } = {}) {
    super();
    this.layer = this.registerModule('layer', layer);
    this.multiplier = this.registerBuffer('multiplier', o.multiplier ?? null);
    this.hadamardBlock = o.hadamardBlock ?? 0;
  }
  /** The input as the wrapped layer sees it. */
  transform(x: Tensor): Tensor {
    let y = this.hadamardBlock ? hadamard(x, { blockSize: this.hadamardBlock }) : x;
    if (this.multiplier) y = y.mul(this.multiplier);
    return y;
  }
  forward(x: Tensor): Tensor {
    return this.layer.forward(this.transform(x));
  }
  override extraRepr(): string {
    return [this.hadamardBlock ? `hadamard${this.hadamardBlock}` : '', this.multiplier ? 'scaled' : ''].filter(Boolean).join(', ');
  }
}
