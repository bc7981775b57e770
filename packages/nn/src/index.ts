/**
 * @file @qgrad/nn: Module and containers, layers, losses, initialisers, optimizers, LR schedules
 * and data loading.
 * @example
 * import { Linear, ReLU, Sequential, AdamW, crossEntropy } from '@qgrad/nn';
 * const model = new Sequential(new Linear(784, 128), new ReLU(), new Linear(128, 10));
 * const opt = new AdamW(model.parameters(), { lr: 1e-3 });
 * const loss = crossEntropy(model.forward(x), y);
 * loss.backward(); opt.step(); opt.zeroGrad();
 * @module @qgrad/nn
 */
export { Module, Parameter, type LoadStateDictOptions, type LoadStateDictResult } from './module.js';
export { Sequential, ModuleList, ModuleDict, type TensorModule } from './containers.js';
export * as init from './init.js';
export { Linear, Identity, Embedding, type LayerOptions } from './layers/linear.js';
export { Conv2d, MaxPool2d, AvgPool2d, Flatten, type Conv2dLayerOptions } from './layers/conv.js';
export { LayerNorm, RMSNorm, GroupNorm } from './layers/norm.js';
export { ReLU, GELU, SiLU, Tanh, Sigmoid, LeakyReLU, Softmax, Dropout, activationModule, type Activation } from './layers/activation.js';
export { MLP, SwiGLU, type MLPOptions } from './layers/mlp.js';
export {
  MultiHeadAttention, RotaryEmbedding, KVCache, scaledDotProductAttention, causalMask, causalBias, sharedCausalBias, rotateHalf, applyRotaryEmb, repeatKv,
  type AttentionOptions, type SdpaOptions,
} from './layers/attention.js';
export * from './loss.js';
export { Optimizer, clipGradNorm, clipGradValue, type ParamGroup, type ParamGroupSpec, type ParamState, type OptimizerStateDict } from './optim/optimizer.js';
export { SGD, type SGDOptions } from './optim/sgd.js';
export { Adam, AdamW, type AdamOptions } from './optim/adam.js';
export { Muon, zeropowerViaNewtonSchulz5, NS_COEFFICIENTS, type MuonOptions } from './optim/muon.js';
export { AuON, auonDirection, type AuONOptions } from './optim/auon.js';
export { ZeroQAT, type ZeroQATOptions, type LossClosure } from './optim/zeroqat.js';
export { modelBytes, optimizerStateBytes, tensorBytes } from './optim/memory.js';
export {
  LambdaLR, linearWarmup, cosineSchedule, wsdSchedule, constantSchedule, multiplySchedules, chainSchedules,
  type LrLambda, type CosineOptions, type WsdOptions,
} from './optim/schedule.js';
export { EMA, type EMAOptions } from './optim/ema.js';
export { trainStep } from './optim/train-step.js';
export * from './models/index.js';
export { TensorDataset, DataLoader, defaultCollate, randperm, type Dataset, type DataLoaderOptions } from './data/dataset.js';
export { loadMnist, MNIST_SIZE, MNIST_TRAIN_SIZE, MNIST_SPLIT_SEED, type MnistOptions, type MnistSplit } from './data/mnist.js';
export { ByteTokenizer, ByteDataset, loadMobyDick, mobyDickText, type MobyDickOptions } from './data/text.js';
export * from './train/index.js';
