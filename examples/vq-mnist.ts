/**
 * @file VQ-VAE / FSQ-VAE on MNIST: a small conv autoencoder with a 7×7 grid of quantized latent
 * vectors (VQ with EMA and dead-code re-seeding, FSQ, SimVQ or residual VQ). Reports test pixel
 * MSE, the fraction of codes used and their perplexity over the test digits; writes
 * runs/vq-mnist/ with reconstructions.png (rows of test digits, each above its reconstructions).
 * Run: npx tsx examples/vq-mnist.ts [--quantizer vq|fsq|simvq|rvq] [--steps 600] [--resume]
 */
import { join } from 'node:path';
import { cli } from './lib/args.js';
import { commonOptions, runFlags, summary, useBackend } from './lib/train.js';
import { checkSpec, parseLevels, quantizerShape, saveReconstructions, trainVq, VqAutoencoder, vqMnistData, type QuantizerSpec } from './lib/vq-mnist.js';

const args = cli('vq-mnist', 'Trains a conv VQ-VAE (or FSQ/SimVQ/residual-VQ autoencoder) on MNIST; reports test MSE, codebook usage and perplexity, and writes a PNG of reconstructions.', {
  quantizer: { type: 'string', default: 'vq', help: "'vq', 'fsq', 'simvq' or 'rvq' (residual VQ)" },
  codes: { type: 'int', default: 256, min: 2, help: 'codebook size of vq, simvq and each rvq stage' },
  dim: { type: 'int', default: 16, min: 1, help: 'latent vector size of vq, simvq and rvq (FSQ: one channel per level)' },
  levels: { type: 'string', default: '8,6,5', help: "FSQ levels per channel (8,6,5 = 240 codes, the FSQ paper's choice for 2^8)" },
  update: { type: 'string', default: 'ema', help: "vq/rvq codebook: 'ema' (decay 0.99) or 'grad' (codebook loss)" },
  deadCode: { type: 'number', default: 1, min: 0, help: 'vq/rvq with ema: re-seed codes whose EMA count (hits per batch) falls below this from the batch; 0 never' },
  stages: { type: 'int', default: 2, min: 1, help: 'rvq stages' },
  beta: { type: 'number', default: 0.25, min: 0, help: 'commitment weight' },
  channels: { type: 'int', default: 16, min: 1, help: 'channels of the first conv (the second has twice as many)' },
  steps: { type: 'int', default: 600, min: 1, help: 'training steps (125 = one epoch at batch 64)' },
  batchSize: { type: 'int', default: 64, min: 1, help: 'images per step, at most the 8,000 training digits' },
  lr: { type: 'number', default: 2e-3, exclusiveMin: 0, help: 'peak learning rate (AdamW, cosine)' },
  ...commonOptions,
});
useBackend(args.backend);
const spec: QuantizerSpec = {
  quantizer: args.quantizer as QuantizerSpec['quantizer'], codes: args.codes, dim: args.dim, levels: parseLevels(args.levels),
  update: args.update as QuantizerSpec['update'], deadCode: args.deadCode, stages: args.stages, beta: args.beta,
};
checkSpec(spec);

const data = vqMnistData();
const model = new VqAutoencoder(spec, args.channels, args.seed);
const { codes, stages } = quantizerShape(spec);
console.log(`${args.quantizer}: ${stages > 1 ? `${stages} × ` : ''}${codes} codes; ${model.numParameters()} parameters; 7×7 latent vectors per digit`);
const result = await trainVq(model, data, {
  steps: args.steps, batchSize: args.batchSize, lr: args.lr, seed: args.seed,
  fit: { ...runFlags('vq-mnist', args), config: { ...spec, channels: args.channels, batchSize: args.batchSize, lr: args.lr, seed: args.seed, steps: args.steps } },
});
const png = join(result.dir!, 'reconstructions.png');
saveReconstructions(png, model, data.testX);
const e = result.lastEval;
console.log(`test MSE ${e.test_mse!.toFixed(5)} | codes used ${(e.usage! * 100).toFixed(1)} % | perplexity ${e.perplexity!.toFixed(1)} of ${codes}`);
console.log(`${summary(result)}\nwrote ${png}`);
