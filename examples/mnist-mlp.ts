/**
 * @file MNIST with a two-layer perceptron (784 → 256 → 10, ReLU) and AdamW: the smallest end-to-end
 * example. Reports test accuracy; writes runs/mnist-mlp/{metrics.jsonl, curves.svg, checkpoint.safetensors}
 * and the checkpoint directory runs/mnist-mlp/model/ that `qgrad export` reads.
 * Run: npx tsx examples/mnist-mlp.ts [--steps 1500] [--resume]
 */
import { Generator } from '@qgrad/core';
import { AdamW, LambdaLR, Linear, ReLU, Sequential, cosineSchedule } from '@qgrad/nn';
import { saveSequentialCheckpoint } from '@qgrad/quant';
import { cli } from './lib/args.js';
import { checkBatchSize, mnistData, trainMnistClassifier } from './lib/mnist.js';
import { commonOptions, useBackend } from './lib/train.js';

const args = cli('mnist-mlp', 'Trains a 784-256-10 MLP on MNIST (8,000 train / 2,000 test digits) with AdamW and a cosine schedule.', {
  steps: { type: 'int', default: 1500, min: 1, help: 'training steps' },
  batchSize: { type: 'int', default: 64, min: 1, help: 'images per step, at most the 8,000 training digits' },
  hidden: { type: 'int', default: 256, min: 1, help: 'hidden units' },
  lr: { type: 'number', default: 2e-3, exclusiveMin: 0, help: 'peak learning rate' },
  ...commonOptions,
});
useBackend(args.backend);

const data = mnistData({ flatten: true });
checkBatchSize(data, args.batchSize);
const model = new Sequential(new Linear(784, args.hidden, { generator: new Generator(args.seed) }), new ReLU(), new Linear(args.hidden, 10, { generator: new Generator(args.seed + 1) }));
const optimizer = new AdamW(model.parameters(), { lr: args.lr, weightDecay: 1e-4 });
const scheduler = new LambdaLR(optimizer, cosineSchedule({ warmupSteps: Math.min(50, args.steps / 10), totalSteps: args.steps, minLrRatio: 0.05 }));

const result = await trainMnistClassifier('mnist-mlp', model, data, { optimizer, scheduler }, args, { hidden: args.hidden, lr: args.lr });
// the float model as a checkpoint directory (config.json records the layers) that
// `npx qgrad export --format onnx|safetensors` and `npx qgrad convert` read
if (result.dir) {
  saveSequentialCheckpoint(model, `${result.dir}/model`, [1, 784]);
  console.log(`wrote ${result.dir}/model/{config.json, model.safetensors} (npx qgrad export --format onnx ${result.dir}/model mnist-mlp.onnx)`);
}
