/**
 * @file HESTIA vs STE for ternary weights in HESTIA's own regime: QAT fine-tuning of a pretrained
 * float tiny Llama (docs/experiments/llama.md trains from scratch, where HESTIA fell far behind).
 * Per seed: the float model of that seed (trained here with the `fp` config unless its checkpoint
 * exists under --pretrain-dir, e.g. the llama grid's runs), then four runs from it on the same
 * batches — the float model trained on (the reference), ternary STE (BitNet b1.58), HESTIA with
 * Hutchinson temperature scales, and HESTIA with every scale 1 (the check of the Hessian
 * calibration) — validation bits per byte (hard ternary weights for the QAT runs), paired per-seed verdicts, results.{md,json,svg}. Finished runs are kept in
 * runs.jsonl, so re-running resumes.
 * Run: QGRAD_THREADS=1 npx tsx examples/experiments/hestia.ts [--steps 300 --seeds 0,1,2 --pretrain-dir runs/experiments/llama-1k]
 */
import { appendFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeRecord, readMetrics } from '@qgrad/nn';
import { cli } from '../lib/args.js';
import { mean, pairedDiffs, pairedTable, writeResults, type ConfigResult, type Paired } from '../lib/experiments.js';
import { runQatLlama, type QatLlamaResult } from '../lib/qat-llama.js';
import { SEED_MAX, useBackend } from '../lib/train.js';

const args = cli('experiments/hestia', 'Ternary QAT fine-tuning of a pretrained float tiny Llama: STE vs HESTIA (with and without Hessian temperature scales) → validation bits/byte, paired verdicts.', {
  steps: { type: 'int', default: 300, min: 1, help: 'fine-tuning steps per run' },
  lr: { type: 'number', default: 1e-3, exclusiveMin: 0, help: 'peak LR of the fine-tunes (cosine, floor 0.1×)' },
  pretrainSteps: { type: 'int', default: 1000, min: 1, help: 'steps of the float model each seed starts from' },
  pretrainLr: { type: 'number', default: 3e-3, exclusiveMin: 0, help: 'peak LR of the float pretraining' },
  batchSize: { type: 'int', default: 16, min: 1, help: 'sequences per step (pretraining and fine-tuning)' },
  seqLen: { type: 'int', default: 128, min: 2, help: 'bytes per sequence' },
  valBlocks: { type: 'int', default: 64, min: 1, help: 'validation sequences' },
  seeds: { type: 'ints', default: [0, 1, 2], min: 0, max: SEED_MAX, help: 'seeds: each its own float model and its fine-tunes' },
  pretrainDir: { type: 'string', default: 'runs/experiments/llama-1k', help: "where the float models are (<dir>/fp/seed<s>/checkpoint.safetensors, the llama grid's layout); trained there when absent" },
  backend: { type: 'string', default: 'wasm', help: "'wasm' or 'js'" },
  runDir: { type: 'string', default: 'runs/experiments/hestia', help: 'output directory' },
});
useBackend(args.backend);

const FINETUNES = [
  { name: 'float-continued', config: 'fp', calibrate: true, about: 'the float model trained on for the same steps and LR (the reference the ternary fine-tunes should approach)' },
  { name: 'ternary-ste', config: 'ternary-ste', calibrate: true, about: 'BitNet b1.58 absmean ternary, identity STE' },
  { name: 'ternary-hestia', config: 'ternary-hestia', calibrate: true, about: 'HESTIA: P ramp over 20 %, T₀ 0.351 cosine-annealed over the last 80 %, Hutchinson temperature scales (4 probes)' },
  { name: 'ternary-hestia-flat', config: 'ternary-hestia', calibrate: false, about: 'HESTIA as above, every temperature scale 1 (no Hessian calibration)' },
] as const;

mkdirSync(args.runDir, { recursive: true });
const log = join(args.runDir, 'runs.jsonl');
const scale = { batchSize: args.batchSize, seqLen: args.seqLen, valBlocks: args.valBlocks };
const pre = `${args.pretrainSteps}x${args.batchSize}x${args.seqLen}/lr${args.pretrainLr}`;
const key = (name: string, seed: number) => `${name}/${seed}/${args.steps}/lr${args.lr}/from-${pre}`;
const done = new Map<string, QatLlamaResult & { key: string }>();
if (existsSync(log)) for (const r of readMetrics(log) as unknown as (QatLlamaResult & { key: string })[]) done.set(r.key, r);
const t0 = performance.now();
const elapsed = () => `${((performance.now() - t0) / 60000).toFixed(1)} min`;

/** The float model's validation score for `seed` from the llama grid's log, if it has one. */
function gridRecord(seed: number): number | undefined {
  const gridLog = join(args.pretrainDir, 'runs.jsonl');
  const gridKey = `fp/${seed}/${args.pretrainSteps}x${args.batchSize}x${args.seqLen}`;
  return existsSync(gridLog) ? (readMetrics(gridLog) as unknown as (QatLlamaResult & { key: string })[]).find((r) => r.key === gridKey)?.valBpb : undefined;
}

/** The float model of `seed`: its checkpoint path, trained now when absent (the llama grid's `fp` run at the same budget). */
async function floatModel(seed: number): Promise<{ path: string; valBpb: number | undefined }> {
  const dir = join(args.pretrainDir, 'fp', `seed${seed}`);
  const path = join(dir, 'checkpoint.safetensors');
  const gridLog = join(args.pretrainDir, 'runs.jsonl');
  const gridKey = `fp/${seed}/${args.pretrainSteps}x${args.batchSize}x${args.seqLen}`;
  const known = () => gridRecord(seed);
  // a checkpoint without its grid record may be a run still in progress (or interrupted): resume it
  if (existsSync(path) && known() !== undefined) return { path, valBpb: known() };
  console.log(`float model, seed ${seed}: ${existsSync(path) ? 'resuming' : 'training'} ${gridKey} in ${dir}`);
  const r = await runQatLlama({ ...scale, config: 'fp', seed, steps: args.pretrainSteps, lr: args.pretrainLr, dir, resume: existsSync(path) });
  mkdirSync(args.pretrainDir, { recursive: true });
  appendFileSync(gridLog, encodeRecord({ step: 0, key: gridKey, ...r }));
  return { path, valBpb: r.valBpb };
}

const floats = new Map<number, number | undefined>();
for (const seed of args.seeds) {
  // a seed whose fine-tunes are all recorded needs only its float score, not the model (its checkpoint may be gone)
  if (FINETUNES.every((ft) => done.has(key(ft.name, seed)))) {
    floats.set(seed, gridRecord(seed));
    continue;
  }
  const f = await floatModel(seed);
  floats.set(seed, f.valBpb);
  for (const ft of FINETUNES) {
    const k = key(ft.name, seed);
    if (done.has(k)) continue;
    const r = await runQatLlama({
      ...scale, config: ft.config, seed, steps: args.steps, lr: args.lr, init: f.path, hestiaCalibrate: ft.calibrate,
      dir: join(args.runDir, ft.name, `seed${seed}`), log: (s) => console.log(`${ft.name} seed ${seed}: ${s}`),
    });
    const rec = { ...r, config: ft.name, key: k };
    done.set(k, rec);
    appendFileSync(log, encodeRecord({ step: 0, ...rec }));
    console.log(`${ft.name} seed ${seed}: val ${r.valBpb.toFixed(4)} bits/byte (float ${f.valBpb?.toFixed(4) ?? '?'}), ${r.msPerStep.toFixed(0)} ms/step, ${elapsed()}`);
  }
}

const runsOf = (name: string) => args.seeds.map((s) => done.get(key(name, s))).filter((r): r is QatLlamaResult & { key: string } => !!r);
const floatVals = args.seeds.map((s) => floats.get(s)).filter((v): v is number => v !== undefined);
const rows: ConfigResult[] = [
  ...(floatVals.length ? [{ config: 'float (start)', seeds: args.seeds.filter((s) => floats.get(s) !== undefined), values: floatVals, extra: { what: `the pretrained float model (${pre}), before fine-tuning` } }] : []),
  ...FINETUNES.map((ft) => {
    const rs = runsOf(ft.name);
    return { config: ft.name, seeds: rs.map((r) => r.seed), values: rs.map((r) => r.valBpb), extra: { 'train bpb (last 10 %)': mean(rs.map((r) => r.trainBpb)).toFixed(4), 'ms/step': Math.round(mean(rs.map((r) => r.msPerStep))), what: ft.about } };
  }),
];
const trainBytes = args.steps * args.batchSize * args.seqLen;
const notes = `Tiny Llama (dim 128, 4 layers, 4 heads / 2 KV heads, SwiGLU 384, vocab 256) on Moby-Dick. Each seed: a float model pretrained ${args.pretrainSteps} steps × ${args.batchSize} × ${args.seqLen} bytes (AdamW, cosine, lr ${args.pretrainLr}), ` +
  `then ternary QAT of every Linear in the decoder layers (or float training, float-continued) for ${args.steps} steps × ${args.batchSize} × ${args.seqLen} bytes (${(trainBytes / 1e6).toFixed(2)} M bytes; AdamW, cosine, peak lr ${args.lr}, fresh optimizer) on the same batches for every run. ` +
  `Validation on ${args.valBlocks} fixed ${args.seqLen}-byte blocks of the held-out 10 %, hard ternary weights (HESTIA at T = 0, P = 1); activations float.`;
let md = await writeResults(args.runDir, { title: 'Ternary QAT fine-tuning of a pretrained tiny Llama: validation bits per byte (lower is better)', metric: 'val bits/byte', rows, digits: 4, notes, meta: { ...scale, steps: args.steps, lr: args.lr, pretrain: pre, seeds: args.seeds } });
const val = (name: string) => (s: number) => done.get(key(name, s))?.valBpb;
const PAIRS: [string, string][] = [['ternary-hestia', 'ternary-ste'], ['ternary-hestia-flat', 'ternary-ste'], ['ternary-hestia', 'ternary-hestia-flat'], ['ternary-ste', 'float-continued'], ['ternary-hestia', 'float-continued']];
const pairs = PAIRS.map(([a, b]) => pairedDiffs(`${a} − ${b}`, args.seeds, val(a), val(b))).filter((p): p is Paired => p !== null);
md += `\n### Paired per seed: val bits/byte (same seed ⇒ same float model and batches)\n\n${pairedTable(pairs, { digits: 4 })}\n`;
writeFileSync(join(args.runDir, 'results.md'), md);
console.log(`\n${md}\nwrote ${args.runDir}/{runs.jsonl, results.{md,json,svg}} (${elapsed()})`);
