/**
 * @file MNIST with a small convolutional network (two conv–ReLU–maxpool stages, then a linear
 * classifier) and AdamW. Reports test accuracy; writes runs/mnist-cnn/, with the checkpoint
 * directory runs/mnist-cnn/model/ that `qgrad export` reads.
 * Run: npx tsx examples/mnist-cnn.ts [--steps 500] [--resume]
 */
import { Generator } from '@qgrad/core';
import { AdamW, Conv2d, Flatten, LambdaLR, Linear, MaxPool2d, ReLU, Sequential, cosineSchedule } from '@qgrad/nn';
import { saveSequentialCheckpoint } from '@qgrad/quant';
import { cli } from './lib/args.js';
import { checkBatchSize, mnistData, trainMnistClassifier } from './lib/mnist.js';
import { commonOptions, useBackend } from './lib/train.js';

const args = cli('mnist-cnn', 'Trains a two-stage CNN (conv 3×3 → ReLU → maxpool 2, twice; then linear) on MNIST with AdamW.', {
  steps: { type: 'int', default: 500, min: 1, help: 'training steps' },
  batchSize: { type: 'int', default: 64, min: 1, help: 'images per step, at most the 8,000 training digits' },
  channels: { type: 'int', default: 8, min: 1, help: 'channels of the first conv (the second has twice as many)' },
  lr: { type: 'number', default: 3e-3, exclusiveMin: 0, help: 'peak learning rate' },
  ...commonOptions,
});
useBackend(args.backend);

const c = args.channels;
const g = new Generator(args.seed);
const model = new Sequential(
  new Conv2d(1, c, 3, { padding: 1, generator: g }), new ReLU(), new MaxPool2d(2), // [B, c, 14, 14]
  new Conv2d(c, 2 * c, 3, { padding: 1, generator: g }), new ReLU(), new MaxPool2d(2), // [B, 2c, 7, 7]
  new Flatten(), // [B, 2c·49]
  new Linear(2 * c * 49, 10, { generator: g }),
);
const data = mnistData();
checkBatchSize(data, args.batchSize);
const optimizer = new AdamW(model.parameters(), { lr: args.lr, weightDecay: 1e-4 });
const scheduler = new LambdaLR(optimizer, cosineSchedule({ warmupSteps: Math.min(30, args.steps / 10), totalSteps: args.steps, minLrRatio: 0.05 }));

const result = await trainMnistClassifier('mnist-cnn', model, data, { optimizer, scheduler }, args, { channels: c, lr: args.lr });
// the float model as a checkpoint directory (config.json records the layers) that
// `npx qgrad export --format onnx|safetensors` and `npx qgrad convert` read
if (result.dir) {
  saveSequentialCheckpoint(model, `${result.dir}/model`, [1, 1, 28, 28]);
  console.log(`wrote ${result.dir}/model/{config.json, model.safetensors} (npx qgrad export --format onnx ${result.dir}/model mnist-cnn.onnx)`);
}
