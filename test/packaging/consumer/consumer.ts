// A user's TypeScript file, type-checked with their own strict settings against the installed
// packages' .d.ts (tsconfig.json beside it: strict, exactOptionalPropertyTypes,
// noPropertyAccessFromIndexSignature, NodeNext, no @types/node).
import { tensor, type Tensor } from '@qgrad/core';
import { arb, gradcheck } from '@qgrad/core/testing';
import { Linear, Module, Sequential, ReLU } from '@qgrad/nn';
import { prepareQAT, convert, type QuantizerConfig } from '@qgrad/quant';

class Net extends Module {
  readonly body = this.registerModule('body', new Sequential(new Linear(4, 8), new ReLU(), new Linear(8, 2)));
  forward(x: Tensor): Tensor {
    return this.body.forward(x);
  }
}
const net = new Net();
const cfg: QuantizerConfig = { grid: 'int', bits: 4 };
prepareQAT(net, { default: { weight: cfg } });
const out: Tensor = net.forward(tensor([[1, 2, 3, 4]]));
const shape: readonly number[] = out.shape;
convert(net);
gradcheck((x: Tensor) => x.mul(x), [tensor([1, 2], { dtype: 'float64' })]);
export const used = [shape, arb];
