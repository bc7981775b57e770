/**
 * @file The LoRA entry points: `loraQuant(model, config)` swaps the matched Linear layers for a
 * method's adapter layer over a frozen quantized base and freezes everything else;
 * `loraParameters` lists what the optimizer trains; `merge` swaps each adapter layer for a layer
 * without adapters that gives the same outputs.
 */
import { scoped, type Generator, type Tensor } from '@qgrad/core';
import { Linear, type Module } from '@qgrad/nn';
import { matchesName, replaceSubmodule, type LayerType, type NamePattern } from '../qat/prepare.js';
import type { WeightQuantConfig } from '../qat/quantizers.js';
import { initLowRankQuant, type LoraInit, type LoraInitStats } from './init.js';
import { L4QLinear } from './l4q.js';
import { LoraLayer, type LoraLayerOptions, type LoraMethod } from './layer.js';
import { LoqtLinear } from './loqt.js';
import { LrQatLinear } from './lr-qat.js';
import { QALoraLinear } from './qa-lora.js';
import { QLoraLinear } from './qlora.js';

/** Each method's layer class and its default base quantizer. */
export const LORA_METHODS: Record<LoraMethod, { make: new (src: Linear, o: LoraLayerOptions) => LoraLayer; quant: WeightQuantConfig }> = {
  qlora: { make: QLoraLinear, quant: { grid: 'nf4', scale: { double: true } } },
  'qa-lora': { make: QALoraLinear, quant: { grid: 'int', bits: 4, asymmetric: true, granularity: { group: 32 } } },
  l4q: { make: L4QLinear, quant: { grid: 'int', bits: 4, scale: 'learned' } },
  'lr-qat': { make: LrQatLinear, quant: { grid: 'int', bits: 4 } },
  loqt: { make: LoqtLinear, quant: { grid: 'nf4', scale: { double: true } } },
};

/** Which layers `loraQuant` adapts: by dotted name and type. */
export interface LoraTargets {
  /** Dotted module names (globs as prepareQAT's: `*` within a part, `**` across, `?` one char; or RegExps). Default: every Linear. */
  match?: NamePattern | NamePattern[];
  /** Layer types: LoRA here covers 'Linear'. */
  types?: LayerType[];
  /** Names never adapted. */
  skip?: NamePattern[];
}

/** What `loraQuant` takes: the method, rank and α, the base's quantizer, the targets and the initialisation. */
export interface LoraQuantConfig {
  method: LoraMethod;
  /** r, 1 ≤ r < min(in, out) (QA-LoRA: < min(in/L, out)). */
  rank: number;
  /** α: the adapter is scaled by α/r (LoQT: by α). */
  alpha: number;
  /** Dropout on the adapter's input (qlora, qa-lora, loqt). */
  dropout?: number;
  /** Which layers: a name pattern, a list of them, or { match, types, skip }. */
  targets: NamePattern | NamePattern[] | LoraTargets;
  /** The base quantizer (default per method: NF4 with double-quantized absmaxes for qlora/loqt, int4 asymmetric groups of 32 for qa-lora, int4 per channel for l4q/lr-qat). */
  quant?: WeightQuantConfig;
  /** Per-layer quantizers (first match wins; e.g. from allocateBits), else `quant`. */
  rules?: { match: NamePattern | NamePattern[]; quant: WeightQuantConfig }[];
  /** LoftQ / LQ-LoRA initialisation of base and adapters (default: B = 0, A Kaiming-uniform). */
  init?: LoraInit;
  /** Random source of the adapter init and dropout. */
  generator?: Generator;
}

const normTargets = (t: LoraQuantConfig['targets']): LoraTargets =>
  typeof t === 'string' || t instanceof RegExp || Array.isArray(t) ? { match: t } : t;

/**
 * Installs `config.method`'s adapters on the matched Linear layers of `model` (in place), with
 * each base frozen in its quantized form, and freezes every other parameter; returns the model.
 * Init statistics (LoftQ / LQ-LoRA) are on `loraInitStats(model)`.
 * @example
 * loraQuant(model, { method: 'qlora', rank: 8, alpha: 16, targets: ['**.q_proj', '**.v_proj'] });
 * const opt = new AdamW(loraParameters(model), { lr: 2e-4 });
 */
export function loraQuant<M extends Module>(model: M, config: LoraQuantConfig): M {
  const method = LORA_METHODS[config.method];
  if (!method) throw new Error(`loraQuant: unknown method ${JSON.stringify(config.method)}; methods are ${Object.keys(LORA_METHODS).join(', ')}`);
  const t = normTargets(config.targets);
  for (const ty of t.types ?? []) if (ty !== 'Linear') throw new Error(`loraQuant: layer type '${ty}' is not supported; LoRA on quantized weights adapts Linear layers`);
  const linears = [...model.namedModules()].filter((e): e is [string, Linear] => e[0] !== '' && e[1] instanceof Linear);
  if ([...model.modules()].some((m) => m instanceof LoraLayer)) throw new Error('loraQuant: the model already has LoRA layers (merge it first, or load adapters into it)');
  const patterns = t.match === undefined ? [] : Array.isArray(t.match) ? t.match : [t.match];
  const names = linears.map(([n]) => n);
  for (const p of patterns) {
    if (!names.some((n) => matchesName(n, p))) throw new Error(`loraQuant: target ${p instanceof RegExp ? String(p) : `'${p}'`} matches no Linear layer; the Linear layers are ${names.join(', ') || '(none)'}`);
  }
  const chosen = linears.filter(([n]) => (t.match === undefined || matchesName(n, t.match)) && !(t.skip && matchesName(n, t.skip)));
  if (!chosen.length) throw new Error(`loraQuant: the targets leave no Linear layer to adapt (skip removed them all)`);
  for (const p of model.parameters()) p.requiresGrad = false;
  const stats: Record<string, LoraInitStats> = {};
  for (const [name, lin] of chosen) {
    const rule = config.rules?.find((r) => matchesName(name, r.match));
    const who = `loraQuant: layer '${name}' (${config.method})`;
    // one scope per layer: quantizing the base makes temporaries several times the weight's size,
    // which the garbage collector would return only long after the backend memory ran out
    const layer = scoped(() => {
      const l = new method.make(lin, { rank: config.rank, alpha: config.alpha, dropout: config.dropout, quant: rule?.quant ?? config.quant ?? method.quant, generator: config.generator, who });
      if (config.init) stats[name] = initLowRankQuant(l, lin.weight.detach(), config.init);
      return l;
    }, (l) => [...l.parameters(), ...l.buffers()], `loraQuant: layer '${name}'`);
    layer.train(lin.training);
    replaceSubmodule(model, name, layer);
  }
  initStats.set(model, stats);
  return model;
}

const initStats = new WeakMap<Module, Record<string, LoraInitStats>>();
/**
 * The LoftQ / LQ-LoRA errors per layer of the last loraQuant on `model` (empty without init).
 * @example loraQuant(model, { method: 'qlora', rank: 8, alpha: 16, targets: ['**.q_proj'], init: 'loftq' });
 * console.log(loraInitStats(model));
 */
export function loraInitStats(model: Module): Record<string, LoraInitStats> {
  return initStats.get(model) ?? {};
}

/**
 * The LoRA layers of a model with their dotted names.
 * @example for (const [name, layer] of loraLayers(model)) console.log(name, layer.method);
 */
export function loraLayers(model: Module): [string, LoraLayer][] {
  return [...model.namedModules()].filter((e): e is [string, LoraLayer] => e[1] instanceof LoraLayer);
}

/**
 * What the optimizer trains: every adapter factor (LoQT: B only) and, for l4q and lr-qat, the
 * learned quantizer scales.
 * @example new AdamW(loraParameters(model), { lr: 1e-3 });
 */
export function loraParameters(model: Module): Tensor[] {
  const out = loraLayers(model).flatMap(([, l]) => l.trainable());
  if (!out.length) throw new Error('loraParameters: the model has no LoRA layers (call loraQuant first)');
  return out;
}

/** One layer `merge` folded: its method and whether it became a float Linear or a QuantizedLinear. */
export interface MergeRow {
  name: string;
  method: LoraMethod;
  /** 'float': a Linear with W0 + ΔW; 'quantized': a QuantizedLinear (qa-lora, l4q, lr-qat, or requantize). */
  kind: 'float' | 'quantized';
  /** requantize: SQNR (dB) of the requantized weight against the exact float merge — what requantizing cost. */
  sqnrDb?: number;
}

/** What `merge` returns: the model without adapters and a row per merged layer. */
export interface MergeResult<M extends Module> {
  /** The same model object, now without adapters. */
  model: M;
  layers: MergeRow[];
}

/**
 * Replaces every LoRA layer by a layer without adapters whose (eval) output is the adapter
 * model's, in place. qlora and loqt give float Linears (dequantized W0 + ΔW), or with
 * `requantize` QuantizedLinears back on the base's grid (the SQNR lost per layer in the result);
 * qa-lora, l4q and lr-qat give QuantizedLinears on the grid they trained on.
 * @example const { model: plain, layers } = merge(model, { requantize: true });
 */
export function merge<M extends Module>(model: M, opts: { requantize?: boolean } = {}): MergeResult<M> {
  const layers = loraLayers(model);
  if (!layers.length) throw new Error('merge: the model has no LoRA layers');
  const rows: MergeRow[] = [];
  for (const [name, l] of layers) {
    const m = l.merged(opts);
    m.layer.train(l.training);
    replaceSubmodule(model, name, m.layer);
    rows.push({ name, method: l.method, kind: m.kind, ...(m.sqnrDb !== undefined && { sqnrDb: m.sqnrDb }) });
  }
  return { model, layers: rows };
}
