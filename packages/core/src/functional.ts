/**
 * @file The `functional` namespace, like `torch.nn.functional`: layer-style ops re-exported
 * from their op families under one name.
 */
export { relu, gelu, silu, sigmoid, tanh, softplus, leakyRelu, elu } from './ops/elementwise.js';
