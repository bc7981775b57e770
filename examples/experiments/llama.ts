/**
 * @file Tiny-Llama QAT grid on Moby-Dick (examples/lib/qat-llama.ts configs × seeds): validation
 * bits per byte, mean ± std; writes runs/experiments/llama/results.{md,json,svg} and prints the
 * table. The core comparison (fp, w4a4-{ste,quest,lsq}) gets --core-seeds, the rest --seeds.
 * Finished runs are kept in runs.jsonl, so an interrupted grid resumes where it stopped.
 * Run: npx tsx examples/experiments/llama.ts [--steps 200 --batch-size 8 --seq-len 64] [--only fp,w4a4-lsq]
 */
import { appendFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { CliError, cli } from '../lib/args.js';
import { writeResults, type ConfigResult } from '../lib/experiments.js';
import { encodeRecord, readMetrics } from '@qgrad/nn';
import { QAT_LLAMA_CONFIGS, runQatLlama, type QatLlamaResult } from '../lib/qat-llama.js';
import { SEED_MAX, commonOptions, useBackend } from '../lib/train.js';

const args = cli('experiments/llama', 'Tiny-Llama QAT grid on Moby-Dick → validation bits/byte table (mean ± std over seeds), JSON and SVG.', {
  steps: { type: 'int', default: 200, min: 1, help: 'optimizer steps per run' },
  batchSize: { type: 'int', default: 8, min: 1, help: 'sequences per step' },
  seqLen: { type: 'int', default: 64, min: 2, help: 'bytes per sequence' },
  lr: { type: 'number', default: 3e-3, exclusiveMin: 0, help: 'peak LR' },
  valBlocks: { type: 'int', default: 64, min: 1, help: 'validation sequences' },
  coreSeeds: { type: 'ints', default: [0, 1, 2], min: 0, max: SEED_MAX, help: 'seeds for fp and w4a4-{ste,quest,lsq}' },
  seeds: { type: 'ints', default: [0], min: 0, max: SEED_MAX, help: 'seeds for every other config' },
  only: { type: 'string', default: '', help: 'comma-separated config names (default all)' },
  allowNonfinite: commonOptions.allowNonfinite,
  backend: { type: 'string', default: 'wasm', help: "'wasm' or 'js'" },
  runDir: { type: 'string', default: 'runs/experiments/llama', help: 'output directory' },
});
useBackend(args.backend);

const CORE = ['fp', 'w4a4-ste', 'w4a4-quest', 'w4a4-lsq'];
const family = (n: string) => (CORE.includes(n) ? 'W4A4 core' : n === 'w2-lsq' ? 'W2' : n.startsWith('w2') ? 'W2A4' : n.startsWith('w4-') ? 'W4 grids' : n.startsWith('ternary') ? 'ternary'
  : n.startsWith('halo') ? 'HALO' : /^(cast|mag)24/.test(n) ? '2:4 sparsity' : 'compute split');
const only = args.only ? args.only.split(',').map((s) => s.trim()) : null;
const unknown = (only ?? []).filter((n) => !QAT_LLAMA_CONFIGS.some((c) => c.name === n));
if (unknown.length) throw new CliError(`unknown --only config(s) ${unknown.join(', ')}; known: ${QAT_LLAMA_CONFIGS.map((c) => c.name).join(', ')}`);
const configs = QAT_LLAMA_CONFIGS.filter((c) => !only || only.includes(c.name));
mkdirSync(args.runDir, { recursive: true });
const log = join(args.runDir, 'runs.jsonl');
const scale = { steps: args.steps, batchSize: args.batchSize, seqLen: args.seqLen, lr: args.lr, valBlocks: args.valBlocks };
const key = (c: string, s: number) => `${c}/${s}/${args.steps}x${args.batchSize}x${args.seqLen}`;
const done = new Map<string, QatLlamaResult>();
if (existsSync(log)) for (const r of readMetrics(log) as unknown as (QatLlamaResult & { key: string })[]) done.set(r.key, r);

const t0 = performance.now();
// seed-major order: every config gets its first seed before any gets its second
const maxSeeds = Math.max(args.coreSeeds.length, args.seeds.length);
for (let k = 0; k < maxSeeds; k++) {
  for (const c of configs) {
    const seed = (CORE.includes(c.name) ? args.coreSeeds : args.seeds)[k];
    if (seed === undefined || done.has(key(c.name, seed))) continue;
    const r = await runQatLlama({ ...scale, config: c.name, seed, dir: join(args.runDir, c.name, `seed${seed}`), allowNonfinite: args.allowNonfinite });
    done.set(key(c.name, seed), r);
    appendFileSync(log, encodeRecord({ step: 0, key: key(c.name, seed), ...r }));
    console.log(`${c.name} seed ${seed}: val ${r.valBpb.toFixed(4)} bits/byte, ${r.msPerStep.toFixed(0)} ms/step, ${((performance.now() - t0) / 60000).toFixed(1)} min elapsed`);
  }
}

const rows: ConfigResult[] = configs.map((c) => {
  const seeds = CORE.includes(c.name) ? args.coreSeeds : args.seeds;
  const runs = seeds.map((s) => done.get(key(c.name, s))).filter((r): r is QatLlamaResult => !!r);
  const avg = (f: (r: QatLlamaResult) => number) => runs.reduce((a, r) => a + f(r), 0) / runs.length;
  const sparse = runs.filter((r) => r.sparsity);
  const cast = sparse.filter((r) => r.sparsity!.denseValBpb !== undefined);
  return {
    config: c.name, group: family(c.name), seeds: runs.map((r) => r.seed), values: runs.map((r) => r.valBpb),
    extra: {
      'train bpb (last 10 %)': avg((r) => r.trainBpb), 'ms/step': Math.round(avg((r) => r.msPerStep)),
      // runs logged before CPU time was recorded have none
      'CPU ms/step': runs.every((r) => r.cpuMsPerStep !== undefined) ? Math.round(avg((r) => r.cpuMsPerStep)) : '',
      ...(sparse.length && { 'zeros %': (100 * sparse.reduce((a, r) => a + r.sparsity!.zeroFraction, 0)) / sparse.length }),
      ...(cast.length && { 'dense val bpb (before hardening)': cast.reduce((a, r) => a + r.sparsity!.denseValBpb!, 0) / cast.length, 'pruned norm %': cast.reduce((a, r) => a + r.sparsity!.prunedNormPct!, 0) / cast.length }),
      what: c.about,
    },
  };
});
const md = await writeResults(args.runDir, {
  title: 'Tiny Llama on Moby-Dick: validation bits per byte (lower is better)',
  metric: 'val bits/byte',
  rows,
  digits: 4,
  notes: `Model dim 128, 4 layers, 4 heads / 2 KV heads, SwiGLU 384, vocab 256 (maxSeqLen = ${args.seqLen}); ${args.steps} steps × batch ${args.batchSize} × ${args.seqLen} bytes ` +
    `= ${((args.steps * args.batchSize * args.seqLen) / 1e6).toFixed(2)} M training bytes; AdamW lr ${args.lr}; validation on ${args.valBlocks} fixed ${args.seqLen}-byte blocks of the held-out 10 %. ` +
    'Quantized: every Linear in the decoder layers (embedding and lm_head stay float).',
  meta: { ...scale, coreSeeds: args.coreSeeds, seeds: args.seeds },
});
console.log(`\n${md}\nwrote ${args.runDir}/results.{md,json,svg} (${((performance.now() - t0) / 60000).toFixed(1)} min)`);
