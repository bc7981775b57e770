/**
 * @file MNIST with a tiny Vision Transformer: 7×7 patches (16 tokens + a class token), learned
 * position embeddings, pre-norm blocks with GELU MLPs, AdamW with warmup and cosine decay.
 * Reports test accuracy; writes runs/vit-mnist/.
 * Run: npx tsx examples/vit-mnist.ts [--steps 400] [--depth 2] [--resume]
 */
import { Generator } from '@qgrad/core';
import { AdamW, LambdaLR, ViT, cosineSchedule, mnistViTConfig, type ViTConfig } from '@qgrad/nn';
import { CliError, cli } from './lib/args.js';
import { checkBatchSize, mnistData, trainMnistClassifier } from './lib/mnist.js';
import { commonOptions, useBackend } from './lib/train.js';

const args = cli('vit-mnist', 'Trains a Vision Transformer (7×7 patches, class token, pre-norm blocks) on MNIST with AdamW.', {
  steps: { type: 'int', default: 400, min: 1, help: 'training steps' },
  batchSize: { type: 'int', default: 64, min: 1, help: 'images per step, at most the 8,000 training digits' },
  dim: { type: 'int', default: mnistViTConfig.dim, min: 1, help: 'token width (a multiple of --heads)' },
  depth: { type: 'int', default: mnistViTConfig.depth, min: 1, help: 'transformer blocks' },
  heads: { type: 'int', default: mnistViTConfig.numHeads, min: 1, help: 'attention heads' },
  patch: { type: 'int', default: mnistViTConfig.patchSize, min: 1, max: 28, help: 'patch size (divides 28)' },
  lr: { type: 'number', default: 3e-3, exclusiveMin: 0, help: 'peak learning rate' },
  ...commonOptions,
});
useBackend(args.backend);
if (28 % args.patch) throw new CliError(`--patch must divide 28 (the image size), got ${args.patch}`);
if (args.dim % args.heads) throw new CliError(`--dim must be a multiple of --heads (${args.heads}), got ${args.dim}`);

const config: ViTConfig = { ...mnistViTConfig, dim: args.dim, depth: args.depth, numHeads: args.heads, mlpDim: 2 * args.dim, patchSize: args.patch };
const model = new ViT(config, { generator: new Generator(args.seed) });
const data = mnistData();
checkBatchSize(data, args.batchSize);
// no weight decay on norms, biases, the class token and position embeddings (1-D or embedding tables)
const decay = [...model.namedParameters()].filter(([n, p]) => p.ndim >= 2 && !n.includes('embed') && !n.includes('token')).map(([, p]) => p);
const noDecay = model.parameters().filter((p) => !decay.includes(p));
const optimizer = new AdamW([{ params: decay, weightDecay: 0.05 }, { params: noDecay, weightDecay: 0 }], { lr: args.lr });
const scheduler = new LambdaLR(optimizer, cosineSchedule({ warmupSteps: Math.min(40, args.steps / 10), totalSteps: args.steps, minLrRatio: 0.05 }));
console.log(`ViT: ${model.numParameters()} parameters, ${(28 / args.patch) ** 2} patches`);

await trainMnistClassifier('vit-mnist', model, data, { optimizer, scheduler }, args, { ...config, lr: args.lr });
