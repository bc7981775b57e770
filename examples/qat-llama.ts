/**
 * @file QAT of the tiny byte-level Llama (dim 128, 4 layers, 4 heads, 2 KV heads, SwiGLU 384,
 * vocab 256; resizable with --dim/--layers/--heads/--kv-heads/--seq-len) on Moby-Dick: one
 * configuration × seeds, validation bits per byte (mean ± std). Each run goes through nn's `fit`:
 * a progress bar, <run-dir>/<config>/seed<N>/{metrics.jsonl, checkpoint.safetensors, curves.svg},
 * and --resume from that checkpoint.
 * Configurations (examples/lib/qat-llama.ts): fp; w4a4-{ste,quest,lsq}, w2a4-{ste,quest,lsq};
 * ternary-{ste,hestia}; split-{0,0.5,0.8} (FP phase then W4A8 QAT), split-1 (FP with the same WSD)
 * and fused (QAT in the cooldown).
 * The grid of all of them: examples/experiments/llama.ts.
 * Optimizers (--optimizer): AdamW, or Muon/AuON for the decoder matrices (docs/experiments/optimizers.md).
 * Distillation (--distill): a QAT fine-tune of a float run's checkpoint (--init) learns from that
 * float model as its teacher — (1 − α)·CE + α·τ²·KL on the logits (--kd-alpha, --kd-temperature),
 * + MSE of the decoder-layer outputs (--kd-hidden), and Teacher Intervention O→C→M over the first
 * --ti-steps steps.
 * Run: npx tsx examples/qat-llama.ts --config w4a4-quest --seeds 0,1,2 [--steps 200 --batch-size 8 --seq-len 64] [--dim 64 --layers 2] [--optimizer muon --lr 0.03] [--resume]
 *      npx tsx examples/qat-llama.ts --config ternary-ste --init runs/qat-llama/fp/seed0/checkpoint.safetensors --distill --kd-temperature 2 --ti-steps 30
 */
import { join } from 'node:path';
import { CliError, cli } from './lib/args.js';
import { mean, pm } from './lib/experiments.js';
import { LLAMA_OPTIMIZERS, QAT_LLAMA_CONFIGS, runQatLlama, type LlamaOptimizer } from './lib/qat-llama.js';
import { checkLlamaShape, llamaShapeOptions } from './lib/text.js';
import { SEED_MAX, commonOptions, useBackend } from './lib/train.js';

const args = cli('qat-llama', `QAT of the tiny byte Llama on Moby-Dick; validation bits/byte. Configs: ${QAT_LLAMA_CONFIGS.map((c) => c.name).join(', ')}.`, {
  config: { type: 'string', default: 'w4a4-quest', help: 'configuration name (see the list above)' },
  seeds: { type: 'ints', default: [0], min: 0, max: SEED_MAX, help: 'comma-separated seeds' },
  steps: { type: 'int', default: 200, min: 1, help: 'optimizer steps' },
  batchSize: { type: 'int', default: 8, min: 1, help: 'sequences per step' },
  seqLen: { type: 'int', default: 64, min: 2, help: 'bytes per sequence (the model is built with maxSeqLen = this)' },
  ...llamaShapeOptions,
  dim: { ...llamaShapeOptions.dim, help: 'model width (--heads × an even head width; SwiGLU width 3 × this)' },
  lr: { type: 'number', default: 3e-3, exclusiveMin: 0, help: 'peak LR (AdamW β = (0.9, 0.95), wd 0.1 on matrices; under muon/auon: of the decoder matrices)' },
  optimizer: { type: 'string', default: 'adamw', help: `${LLAMA_OPTIMIZERS.join(', ')}: muon/auon update the decoder matrices, an auxiliary AdamW the rest` },
  adamLr: { type: 'number', default: 3e-3, exclusiveMin: 0, help: 'peak LR of the auxiliary AdamW under muon/auon' },
  valBlocks: { type: 'int', default: 64, min: 1, help: 'validation sequences (evenly spread over the held-out 10 %)' },
  init: { type: 'string', default: '', help: "start from this training checkpoint's float weights (e.g. an fp run's checkpoint.safetensors): a QAT fine-tune" },
  distill: { type: 'boolean', help: 'distil from the float model the run starts from (use with --init) into the quantized student' },
  kdTemperature: { type: 'number', default: 1, exclusiveMin: 0, help: 'softmax temperature τ of the logit KD (the KL is scaled by τ²)' },
  kdAlpha: { type: 'number', default: 0.5, min: 0, max: 1, help: 'weight α of the KD term: (1 − α)·CE + α·τ²·KL' },
  kdHidden: { type: 'number', default: 0, min: 0, help: 'weight of Σ MSE(decoder-layer outputs, the teacher\'s) (0: off)' },
  tiSteps: { type: 'int', default: 0, min: 0, help: 'Teacher Intervention (TI-G: output → context → map) over the first N steps (0: off)' },
  resume: commonOptions.resume,
  ckptEvery: { type: 'int', default: 50, min: 1, help: 'save a checkpoint every N steps (and at the end)' },
  stopAt: commonOptions.stopAt,
  allowNonfinite: commonOptions.allowNonfinite,
  backend: { type: 'string', default: 'wasm', help: "'wasm' or 'js'" },
  runDir: { type: 'string', default: 'runs/qat-llama', help: 'writes <run-dir>/<config>/seed<N>/{metrics.jsonl, checkpoint.safetensors, curves.svg}' },
});
useBackend(args.backend);
checkLlamaShape(args);

const c = QAT_LLAMA_CONFIGS.find((k) => k.name === args.config);
if (!c) throw new CliError(`unknown --config '${args.config}'; known: ${QAT_LLAMA_CONFIGS.map((k) => k.name).join(', ')}`);
if (!(LLAMA_OPTIMIZERS as readonly string[]).includes(args.optimizer)) throw new CliError(`--optimizer must be one of ${LLAMA_OPTIMIZERS.join(', ')}, got '${args.optimizer}'`);
console.log(`${c.name}: ${c.about}`);
const results = [];
for (const seed of args.seeds) {
  const dir = join(args.runDir, c.name, `seed${seed}`);
  const distill = args.distill ? { temperature: args.kdTemperature, alpha: args.kdAlpha, hidden: args.kdHidden, tiSteps: args.tiSteps } : undefined;
  const r = await runQatLlama({ ...args, init: args.init || undefined, distill, optimizer: args.optimizer as LlamaOptimizer, config: c.name, seed, dir, log: console.log });
  if (r.steps < args.steps) {
    console.log(`seed ${seed}: stopped at step ${r.steps} of ${args.steps}; continue with --resume`);
    continue;
  }
  console.log(`seed ${seed}: val ${r.valBpb.toFixed(4)} bits/byte (train, last 10 %: ${r.trainBpb.toFixed(4)}), ${r.msPerStep.toFixed(0)} ms/step, ${r.params} parameters; wrote ${dir}/{metrics.jsonl, checkpoint.safetensors, curves.svg}`);
  results.push(r);
}
if (!results.length) process.exit(0);
console.log(`\n${c.name}: val bits/byte ${pm(results.map((r) => r.valBpb), 4)} over ${results.length} seed(s); ${args.steps} steps × ${args.batchSize} × ${args.seqLen} bytes, ${mean(results.map((r) => r.msPerStep)).toFixed(0)} ms/step`);
