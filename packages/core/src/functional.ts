/**
 * @file The `functional` namespace, like `torch.nn.functional`: layer-style ops re-exported
 * from their op families under one name.
 */
export { relu, gelu, silu, sigmoid, tanh, softplus, leakyRelu, elu } from './ops/elementwise.js';
export { softmax, logSoftmax, softmin, layerNorm, rmsNorm, groupNorm, dropout } from './ops/nn.js';
export { crossEntropy, nllLoss, mseLoss, l1Loss, huberLoss, smoothL1Loss, klDiv, binaryCrossEntropy, binaryCrossEntropyWithLogits } from './ops/loss.js';
export { pad } from './ops/shape.js';
export { embedding, oneHot } from './ops/indexing.js';
export { linear } from './ops/linalg.js';
export { conv2d, maxPool2d, avgPool2d, interpolate, upsample, unfold, fold } from './ops/conv.js';
