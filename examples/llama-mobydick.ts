/**
 * @file A byte-level Llama (RMSNorm, RoPE, grouped-query attention, SwiGLU) trained on
 * Moby-Dick: reports validation loss and bits per byte, prints a sample generated with the KV
 * cache, and saves the weights as a Hugging Face directory (config.json + model.safetensors)
 * that `fromPretrained` reads back (`savePretrained`). Writes runs/llama-mobydick/.
 * Run: npx tsx examples/llama-mobydick.ts [--steps 150] [--dim 128 --layers 4] [--resume]
 */
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { Generator, noGrad, tensor } from '@qgrad/core';
import { AdamW, LambdaLR, Llama, cosineSchedule, fit, savePretrained, tinyLlamaConfig, type LlamaConfig } from '@qgrad/nn';
import { cli } from './lib/args.js';
import { checkLlamaShape, llamaShapeOptions, mobyDickWindows } from './lib/text.js';
import { commonOptions, runFlags, summary, useBackend } from './lib/train.js';

const args = cli('llama-mobydick', 'Trains a byte-level Llama on Moby-Dick (90% train / 10% validation by position) and samples from it.', {
  steps: { type: 'int', default: 150, min: 1, help: 'training steps' },
  batchSize: { type: 'int', default: 8, min: 1, help: 'sequences per step' },
  // the sampler's sliding window keeps maxSeqLen − 1 bytes of context, so at least one
  seqLen: { type: 'int', default: tinyLlamaConfig.maxSeqLen, min: 2, help: 'bytes per sequence' },
  ...llamaShapeOptions,
  hidden: { type: 'int', default: tinyLlamaConfig.hiddenDim, min: 1, help: 'SwiGLU hidden width' },
  lr: { type: 'number', default: 3e-3, exclusiveMin: 0, help: 'peak learning rate' },
  valBlocks: { type: 'int', default: 32, min: 1, help: 'validation sequences per evaluation (evenly spread over the validation text)' },
  sampleBytes: { type: 'int', default: 300, min: 1, help: 'bytes to generate at the end' },
  temperature: { type: 'number', default: 0.8, min: 0, help: 'sampling temperature (0: always the most likely byte)' },
  topK: { type: 'int', default: 40, min: 1, max: tinyLlamaConfig.vocabSize, help: 'sample among the k most likely bytes' },
  prompt: { type: 'string', default: 'Call me Ishmael. ', help: 'text the sample continues' },
  ...commonOptions,
  evalEvery: { type: 'int', default: 50, min: 1, help: 'evaluate every N steps (and at the end)' },
  ckptEvery: { type: 'int', default: 50, min: 1, help: 'save a checkpoint every N steps (and at the end)' },
});
useBackend(args.backend);
checkLlamaShape(args);

const config: LlamaConfig = {
  ...tinyLlamaConfig, dim: args.dim, nLayers: args.layers, nHeads: args.heads, nKvHeads: args.kvHeads, hiddenDim: args.hidden, maxSeqLen: args.seqLen,
};
const { train: trainSet, val, tokenizer } = mobyDickWindows(args.seqLen, args.batchSize);
const model = new Llama(config, { generator: new Generator(args.seed) });
// weight decay on matrices only (not on RMSNorm gains), as in nanoGPT
const params = [...model.namedParameters()];
const optimizer = new AdamW(
  [{ params: params.filter(([, p]) => p.ndim >= 2).map(([, p]) => p), weightDecay: 0.1 }, { params: params.filter(([, p]) => p.ndim < 2).map(([, p]) => p), weightDecay: 0 }],
  { lr: args.lr, betas: [0.9, 0.95] },
);
const scheduler = new LambdaLR(optimizer, cosineSchedule({ warmupSteps: Math.min(20, args.steps / 10), totalSteps: args.steps, minLrRatio: 0.1 }));
console.log(`Llama: ${model.numParameters()} parameters; ${trainSet.bytes.length} train / ${val.bytes.length} validation bytes`);

// fixed validation blocks, evenly spaced, non-overlapping where the text allows
const valIdx = Array.from({ length: Math.min(args.valBlocks, val.length) }, (_, i) => Math.floor((i * (val.length - 1)) / Math.max(1, args.valBlocks - 1)));
const evaluate = () =>
  noGrad(() => {
    let nats = 0;
    for (let s = 0; s < valIdx.length; s += args.batchSize) {
      const idx = valIdx.slice(s, s + args.batchSize);
      const [x, y] = val.getBatch(idx); // [b, T] each
      nats += model.loss(x, y).item() * idx.length;
    }
    const valLoss = nats / valIdx.length;
    return { val_loss: valLoss, val_bpb: valLoss / Math.LN2 };
  });

const result = await fit({
  ...runFlags('llama-mobydick', args),
  model, optimizer, scheduler,
  config: { ...config, batchSize: args.batchSize, lr: args.lr, seed: args.seed, steps: args.steps },
  loss: ({ generator }) => {
    // nanoGPT-style random windows, drawn from a generator seeded by the step
    const g = generator(2);
    const [x, y] = trainSet.getBatch(Array.from({ length: args.batchSize }, () => g.randint(0, trainSet.length))); // [B, T] each
    return model.loss(x, y);
  },
  evaluate,
  panels: { 'loss (nats/byte)': ['loss', 'val_loss'], 'bits per byte': ['val_bpb'] },
});

// a Hugging Face directory: config.json + model.safetensors, loadable with fromPretrained
const hfDir = join(result.dir!, 'hf');
savePretrained(model, hfDir);

const prompt = tensor([Array.from(tokenizer.encode(args.prompt))], { dtype: 'int32' }); // [1, P]
const t0 = performance.now();
const out = model.generate(prompt, args.sampleBytes, { temperature: args.temperature, topK: args.topK, generator: new Generator(args.seed) });
const genMs = (performance.now() - t0) / args.sampleBytes;
console.log(`\n--- sample (temperature ${args.temperature}, top-k ${args.topK}, ${genMs.toFixed(0)} ms/byte with the KV cache) ---\n${tokenizer.decode(out.select(0, 0))}\n---`);
writeFileSync(join(result.dir!, 'sample.txt'), tokenizer.decode(out.select(0, 0)));
console.log(summary(result, { 'val loss': result.lastEval.val_loss!, 'val bits/byte': result.lastEval.val_bpb! }));
console.log(`wrote ${hfDir}/{config.json, model.safetensors} (fromPretrained) and ${result.dir}/sample.txt`);
