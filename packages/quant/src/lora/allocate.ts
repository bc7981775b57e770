/**
 * @file Mixed precision from measured sensitivity: `measureSensitivity` gives, per Linear or Conv2d layer,
 * the Hutchinson Hessian trace of the loss in its weight, and for each bit width the SQNR of the
 * quantized weight and the loss change with that layer alone quantized; `allocateBits` spends an
 * average bits-per-parameter budget where it lowers the estimated damage most (greedy upgrades
 * by damage saved per bit, or the exact least-damage allocation) and returns rules for
 * `prepareQAT`, `ptq` and `loraQuant`.
 */
import { dispose, noGrad, tidy, type Generator, type Tensor } from '@qgrad/core';
import { Conv2d, Linear, type Module } from '@qgrad/nn';
import { tensorError } from '../inspect/error.js';
import { matchesName, type NamePattern, type QATRule } from '../qat/prepare.js';
import type { WeightQuantConfig } from '../qat/quantizers.js';
import { quantize } from '../quantizer/functional.js';
import { hutchinsonTrace } from '../schedules/hessian.js';

/** One layer's measured sensitivity to its bit width: its size and the loss increase at each width. */
export interface LayerSensitivity {
  name: string;
  /** Weight elements. */
  params: number;
  /** ‖W‖²_F. */
  weightNormSq: number;
  /** Hutchinson estimate of tr(∇²_W L). */
  hessianTrace: number;
  /** Per bit width: SQNR (dB) of the quantized weight. */
  sqnrDb: Record<number, number>;
  /** Per bit width: L(with this layer alone quantized) − L(float). */
  lossDelta: Record<number, number>;
}

/** Options of the sensitivity measurement: the calibration loss and the bit widths to try. */
export interface SensitivityOptions {
  /** The loss on a fixed calibration batch (called several times). */
  loss: () => Tensor;
  /**
   * The loss the Hutchinson probes differentiate twice (default `loss`). One that returns the next
   * of several calibration batches per call keeps each probe's double-backward graph to one batch
   * (a Llama's graph over 64 × 128 tokens outgrows the 2 GiB wasm heap); the trace stays unbiased.
   */
  hessianLoss?: () => Tensor;
  /** Bit widths to measure (default 2, 3, 4, 8). */
  choices?: number[];
  /** The quantizer of a layer at `bits` (default: int, per channel, MSE-fitted scale). */
  quant?: (bits: number) => WeightQuantConfig;
  /** Which Linear / Conv2d layers (default all). */
  targets?: NamePattern | NamePattern[];
  /** Hutchinson probes (default 8). */
  samples?: number;
  generator?: Generator;
}

const defaultQuant = (bits: number): WeightQuantConfig => ({ grid: 'int', bits, granularity: 'channel', scale: { mode: 'dynamic', rule: 'mse' } });

/**
 * Measures each target Linear or Conv2d layer of a float model: Hessian trace, and per bit width
 * the weight SQNR and the loss change with that layer alone quantized (weights restored after).
 * @example const sens = measureSensitivity(model, { loss: () => mseLoss(model.forward(x), y) });
 */
export function measureSensitivity(model: Module, opts: SensitivityOptions): LayerSensitivity[] {
  const choices = opts.choices ?? [2, 3, 4, 8];
  const quant = opts.quant ?? defaultQuant;
  const layers = [...model.namedModules()].filter((e): e is [string, Linear | Conv2d] => (e[1] instanceof Linear || e[1] instanceof Conv2d) && e[0] !== '' && (opts.targets === undefined || matchesName(e[0], opts.targets)));
  if (!layers.length) throw new Error(`measureSensitivity: no Linear or Conv2d layer matches ${JSON.stringify(String(opts.targets))}`);
  const weights = layers.map(([, l]) => l.weight);
  const was = weights.map((w) => w.requiresGrad);
  weights.forEach((w) => (w.requiresGrad = true));
  let traces: number[];
  try {
    traces = hutchinsonTrace(opts.hessianLoss ?? opts.loss, weights, { samples: opts.samples ?? 8, generator: opts.generator });
  } finally {
    weights.forEach((w, i) => (w.requiresGrad = was[i]!));
  }
  // a tidy per evaluation: this loop never yields to the garbage collector, and a Llama's
  // activations for each of its layers × widths would otherwise pile up in the wasm heap
  const lossNow = () => tidy(() => noGrad(() => opts.loss().item()));
  const base = lossNow();
  return layers.map(([name, l], i) => {
    const w = l.weight;
    const keep = noGrad(() => w.detach().clone());
    const row: LayerSensitivity = { name, params: w.numel(), weightNormSq: tidy(() => noGrad(() => keep.square().sum().item())), hessianTrace: traces[i]!, sqnrDb: {}, lossDelta: {} };
    try {
      for (const bits of choices) {
        tidy(() => {
          const wq = noGrad(() => quantize(keep, quant(bits)).dequantize());
          row.sqnrDb[bits] = tensorError(keep, wq).sqnrDb;
          noGrad(() => w.copy_(wq));
        });
        try {
          row.lossDelta[bits] = lossNow() - base;
        } finally {
          noGrad(() => w.copy_(keep));
        }
      }
    } finally {
      dispose(keep);
    }
    return row;
  });
}

/** What `allocateBits` takes: the average-bits budget and the widths a layer may take. */
export interface AllocateOptions {
  /** Average bits per weight parameter to meet (≤). */
  budget: number;
  /** Bit widths a layer may take. */
  choices: number[];
  /** Damage estimate: 'loss' (measured loss change, default), 'hessian' (tr(H)/n·‖W − Q(W)‖², HAWQ-style) or 'sqnr' (noise power). */
  score?: 'loss' | 'hessian' | 'sqnr';
  /** The quantizer config at `bits` the rules carry (default: int per channel, MSE-fitted scale). */
  quant?: (bits: number) => WeightQuantConfig;
  /**
   * 'greedy' (default): upgrades by damage saved per extra bit while they fit — it can stop with
   * budget left when the next upgrade is a large layer. 'exact': the allocation of least total
   * estimated damage within the budget (ties: the one using more bits), by dynamic programming
   * over bit costs in units of the layers' common size, rounded up where the table would be large.
   */
  solver?: 'greedy' | 'exact';
}

const gcd = (a: number, b: number): number => (b ? gcd(b, a % b) : a);

/**
 * Multiple-choice knapsack: one width per layer, Σ cost ≤ cap, least Σ damage. Costs are counted in
 * `unit`s of parameters (rounded up, so a rounded solution still meets the budget); the table has
 * layers × (cap + 1) cells, kept under ~4·10⁶ by the unit.
 */
function exactLevels(params: number[], choices: number[], cap: number, damage: (i: number, level: number) => number): number[] {
  const layers = params.length;
  const total = params.reduce((a, b) => a + b, 0);
  const common = params.reduce(gcd);
  const unit = Math.max(common, Math.ceil((cap * layers) / 4e6));
  const units = params.map((p) => Math.ceil(p / unit));
  const c = Math.floor((cap + 1e-9 * total) / unit);
  let best = new Float64Array(c + 1).fill(Infinity);
  best[0] = 0;
  const pick = new Int8Array(layers * (c + 1)).fill(-1);
  for (let i = 0; i < layers; i++) {
    const next = new Float64Array(c + 1).fill(Infinity);
    for (let used = 0; used <= c; used++) {
      if (best[used] === Infinity) continue;
      for (let l = 0; l < choices.length; l++) {
        const to = used + units[i]! * choices[l]!;
        if (to > c) break;
        const d = best[used]! + damage(i, l);
        if (d < next[to]!) [next[to], pick[i * (c + 1) + to]] = [d, l];
      }
    }
    best = next;
  }
  let end = -1;
  for (let used = 0; used <= c; used++) if (best[used]! < Infinity && (end < 0 || best[used]! <= best[end]! * (1 + 1e-12) + 1e-300)) end = used;
  const level = params.map(() => 0);
  for (let i = layers - 1; i >= 0; i--) {
    level[i] = pick[i * (c + 1) + end]!;
    end -= units[i]! * choices[level[i]!]!;
  }
  return level;
}

/** What `allocateBits` returns: bits per layer and the average reached. */
export interface BitAllocation {
  /** Bits per layer name. */
  bits: Record<string, number>;
  /** The parameter-weighted average reached (≤ budget). */
  averageBits: number;
  /** For prepareQAT's and ptq's `rules` (each names its layer's type, Linear or Conv2d). */
  qatRules: QATRule[];
  /** For loraQuant's `rules` (Linear layers only: LoRA adapts Linears). */
  loraRules: { match: NamePattern; quant: WeightQuantConfig }[];
}

/**
 * Chooses a bit width per layer so the parameter-weighted average meets `budget`: everyone starts
 * at the smallest choice, then the upgrade that saves the most estimated damage per extra bit is
 * taken while it fits (or, `solver: 'exact'`, the least total damage within the budget). A budget
 * below the smallest choice is an error naming both.
 * @example allocateBits(model, sens, { budget: 3, choices: [2, 3, 4, 8], solver: 'exact' }).qatRules;
 */
export function allocateBits(model: Module, sens: LayerSensitivity[], opts: AllocateOptions): BitAllocation {
  const choices = [...new Set(opts.choices)].sort((a, b) => a - b);
  if (!choices.length) throw new Error('allocateBits: choices is empty');
  if (!(opts.budget >= choices[0]!)) throw new Error(`allocateBits: budget ${opts.budget} bits per parameter is below the smallest choice ${choices[0]} (choices ${choices.join(', ')}); no allocation meets it`);
  const modules = new Map([...model.namedModules()]);
  for (const s of sens) {
    if (!modules.has(s.name)) throw new Error(`allocateBits: sensitivity for layer '${s.name}', which the model does not have`);
    for (const b of choices) if (s.sqnrDb[b] === undefined) throw new Error(`allocateBits: layer '${s.name}' was not measured at ${b} bits (measured: ${Object.keys(s.sqnrDb).join(', ')})`);
  }
  const score = opts.score ?? 'loss';
  const damage = (s: LayerSensitivity, b: number): number => {
    const noise = s.weightNormSq * 10 ** (-s.sqnrDb[b]! / 10); // ‖W − Q(W)‖²
    if (score === 'loss') return Math.max(s.lossDelta[b]!, 0);
    if (score === 'hessian') return (Math.abs(s.hessianTrace) / s.params) * noise;
    return noise;
  };
  const total = sens.reduce((n, s) => n + s.params, 0);
  const cap = opts.budget * total + 1e-9;
  const level = opts.solver === 'exact' ? exactLevels(sens.map((s) => s.params), choices, opts.budget * total, (i, l) => damage(sens[i]!, choices[l]!)) : sens.map(() => 0);
  let used = sens.reduce((n, s, i) => n + s.params * choices[level[i]!]!, 0);
  while (opts.solver !== 'exact') {
    let best = -1;
    let bestGain = -Infinity;
    sens.forEach((s, i) => {
      if (level[i]! + 1 >= choices.length) return;
      const extra = s.params * (choices[level[i]! + 1]! - choices[level[i]!]!);
      if (used + extra > cap) return;
      const gain = (damage(s, choices[level[i]!]!) - damage(s, choices[level[i]! + 1]!)) / extra;
      if (gain > bestGain) [best, bestGain] = [i, gain];
    });
    if (best < 0) break;
    used += sens[best]!.params * (choices[level[best]! + 1]! - choices[level[best]!]!);
    level[best]!++;
  }
  const quant = opts.quant ?? defaultQuant;
  const bits = Object.fromEntries(sens.map((s, i) => [s.name, choices[level[i]!]!]));
  const entries = Object.entries(bits);
  return {
    bits,
    averageBits: used / total,
    qatRules: entries.map(([match, b]) => ({ match, types: [modules.get(match) instanceof Conv2d ? 'Conv2d' : 'Linear'], weight: quant(b) })),
    loraRules: entries.filter(([match]) => !(modules.get(match) instanceof Conv2d)).map(([match, b]) => ({ match, quant: quant(b) })),
  };
}
