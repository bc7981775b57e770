/**
 * @file Adapters in PEFT's on-disk layout: a directory with `adapter_model.safetensors` (keys
 * `base_model.model.<module path>.lora_A.weight` [r, in] and `.lora_B.weight` [out, r]) and
 * `adapter_config.json` (`peft_type` LORA, `r`, `lora_alpha`, `target_modules`, …). qgrad's
 * additions ride along where PEFT has no field: the method and base quantizer under the config's
 * `qgrad` key, and l4q / lr-qat's learned scales as `<path>.weight_quantizer.scale` tensors.
 */
import { loadSafetensors, noGrad, saveSafetensors, type Tensor } from '@qgrad/core';
import type { Module } from '@qgrad/nn';
import { loraLayers } from './apply.js';
import type { LoraLayer } from './layer.js';
import { L4QLinear } from './l4q.js';
import { LrQatLinear } from './lr-qat.js';

/** File name of the adapter weights in a PEFT adapter directory. */
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';
/** File name of the adapter config in a PEFT adapter directory. */
export const ADAPTER_CONFIG = 'adapter_config.json';
const PREFIX = 'base_model.model.';

/** The fields of PEFT's adapter_config.json that qgrad reads and writes. */
export interface AdapterConfig {
  peft_type: 'LORA';
  r: number;
  lora_alpha: number;
  lora_dropout: number;
  target_modules: string[];
  bias: 'none';
  fan_in_fan_out: boolean;
  init_lora_weights: boolean | string;
  task_type: string | null;
  base_model_name_or_path: string | null;
  inference_mode: boolean;
  [extra: string]: unknown;
}

/** A learned scale tensor of a layer (l4q, lr-qat), or null. */
function scaleOf(l: LoraLayer): Tensor | null {
  if (l instanceof L4QLinear) return l.weightQuantizer.scale;
  if (l instanceof LrQatLinear) return l.scale;
  return null;
}

/** PEFT's lora_alpha for a layer: LoQT scales by α itself, so lora_alpha/r = α. */
const peftAlpha = (l: LoraLayer) => (l.method === 'loqt' ? l.alpha * l.rank : l.alpha);

/**
 * Writes the adapters of `model` to directory `dir` (created) in PEFT's layout.
 * @example saveAdapters(model, 'out/adapter'); // out/adapter/adapter_model.safetensors + adapter_config.json
 */
export function saveAdapters(model: Module, dir: string): void {
  const layers = loraLayers(model);
  if (!layers.length) throw new Error('saveAdapters: the model has no LoRA layers');
  const [, first] = layers[0]!;
  const tensors: Record<string, Tensor> = {};
  for (const [name, l] of layers) {
    if (l.rank !== first.rank || peftAlpha(l) !== peftAlpha(first) || l.method !== first.method) {
      throw new Error(`saveAdapters: layer '${name}' has method ${l.method}, r ${l.rank}, lora_alpha ${peftAlpha(l)} but '${layers[0]![0]}' has ${first.method}, ${first.rank}, ${peftAlpha(first)}; one adapter_config.json holds one of each`);
    }
    tensors[`${PREFIX}${name}.lora_A.weight`] = noGrad(() => l.loraA.detach().contiguous());
    tensors[`${PREFIX}${name}.lora_B.weight`] = noGrad(() => l.loraB.detach().contiguous());
    const s = scaleOf(l);
    if (s) tensors[`${PREFIX}${name}.weight_quantizer.scale`] = noGrad(() => s.detach().contiguous());
  }
  const config: AdapterConfig = {
    peft_type: 'LORA', r: first.rank, lora_alpha: peftAlpha(first), lora_dropout: first.dropoutP,
    target_modules: layers.map(([n]) => n), bias: 'none', fan_in_fan_out: false, init_lora_weights: true, task_type: null,
    base_model_name_or_path: null, inference_mode: false, qgrad: { method: first.method, quant: first.quant },
  };
  const { mkdirSync, writeFileSync } = nodeFs('saveAdapters');
  mkdirSync(dir, { recursive: true });
  saveSafetensors(join(dir, ADAPTER_WEIGHTS), tensors, { format: 'pt' });
  writeFileSync(join(dir, ADAPTER_CONFIG), `${JSON.stringify(config, null, 2)}\n`);
}

/**
 * Reads `dir`/adapter_config.json, checking the fields qgrad needs.
 * @example readAdapterConfig('runs/adapter').r; // the adapter's rank
 */
export function readAdapterConfig(dir: string): AdapterConfig {
  const path = join(dir, ADAPTER_CONFIG);
  let c: AdapterConfig;
  try {
    c = JSON.parse(nodeFs('loadAdapters').readFileSync(path, 'utf8')) as AdapterConfig;
  } catch (e) {
    throw new Error(`loadAdapters: cannot read ${path}: ${(e as Error).message}`);
  }
  if (c.peft_type !== undefined && c.peft_type !== 'LORA') throw new Error(`loadAdapters: ${path} has peft_type ${JSON.stringify(c.peft_type)}; only LORA adapters load`);
  if (!Number.isInteger(c.r) || c.r < 1) throw new Error(`loadAdapters: ${path} has r ${JSON.stringify(c.r)}; a positive integer is needed`);
  if (!(typeof c.lora_alpha === 'number' && c.lora_alpha > 0)) throw new Error(`loadAdapters: ${path} has lora_alpha ${JSON.stringify(c.lora_alpha)}; a positive number is needed`);
  return c;
}

/**
 * Loads a PEFT-layout adapter from `dir` into a model that already has LoRA layers (loraQuant
 * with the same targets and rank), in place; α comes from the file's lora_alpha. Every tensor is
 * checked first: a key naming a layer the model lacks, a missing layer, an r or a shape that do
 * not fit are errors naming the layer.
 * @example loraQuant(model, { method: 'qlora', rank: 8, alpha: 16, targets: '**' }); loadAdapters(model, 'out/adapter');
 */
export function loadAdapters(model: Module, dir: string): void {
  const config = readAdapterConfig(dir);
  const layers = new Map(loraLayers(model));
  if (!layers.size) throw new Error('loadAdapters: the model has no LoRA layers (call loraQuant with the adapter\'s targets and rank first)');
  const tensors = loadSafetensors(join(dir, ADAPTER_WEIGHTS));
  const names = [...layers.keys()].join(', ');
  const found = new Map<string, Record<string, Tensor>>();
  for (const [key, t] of Object.entries(tensors)) {
    const m = /^(?:base_model\.model\.)?(.+)\.(lora_A\.weight|lora_B\.weight|weight_quantizer\.scale)$/.exec(key);
    const path = m?.[1]?.replace(/\.(lora_A|lora_B)\.default$/, '');
    if (!m || !path) throw new Error(`loadAdapters: tensor '${key}' is not a LoRA tensor (<module path>.lora_A.weight / lora_B.weight)`);
    if (!layers.has(path)) throw new Error(`loadAdapters: tensor '${key}' names layer '${path}', which has no adapter in this model (LoRA layers: ${names})`);
    (found.get(path) ?? found.set(path, {}).get(path)!)[m[2]!] = t;
  }
  for (const [name, l] of layers) {
    const f = found.get(name);
    if (!f?.['lora_A.weight'] || !f['lora_B.weight']) throw new Error(`loadAdapters: layer '${name}' has no ${!f?.['lora_A.weight'] ? 'lora_A' : 'lora_B'}.weight in ${join(dir, ADAPTER_WEIGHTS)}`);
    if (config.r !== l.rank) throw new Error(`loadAdapters: adapter r ${config.r} does not fit layer '${name}' of rank ${l.rank}`);
    const check = (what: string, t: Tensor, want: Tensor) => {
      if (t.shape.join() !== want.shape.join()) throw new Error(`loadAdapters: ${what} of layer '${name}' has shape [${t.shape.join(', ')}] in the file, the model needs [${want.shape.join(', ')}]`);
    };
    check('lora_A.weight', f['lora_A.weight'], l.loraA);
    check('lora_B.weight', f['lora_B.weight'], l.loraB);
    const s = scaleOf(l);
    if (f['weight_quantizer.scale'] && !s) throw new Error(`loadAdapters: layer '${name}' (${l.method}) learns no scale, but the file has weight_quantizer.scale`);
    if (s && f['weight_quantizer.scale']) check('weight_quantizer.scale', f['weight_quantizer.scale'], s);
  }
  noGrad(() => {
    for (const [name, l] of layers) {
      const f = found.get(name)!;
      l.loraA.copy_(f['lora_A.weight']!);
      l.loraB.copy_(f['lora_B.weight']!);
      const s = scaleOf(l);
      if (s && f['weight_quantizer.scale']) s.copy_(f['weight_quantizer.scale']);
      l.alpha = l.method === 'loqt' ? config.lora_alpha / config.r : config.lora_alpha;
    }
  });
}

interface Fs {
  mkdirSync(path: string, o: { recursive: boolean }): unknown;
  readFileSync(path: string, enc: 'utf8'): string;
  writeFileSync(path: string, data: string): void;
}

// node:fs is reached lazily (as core's safetensors I/O does), so bundling @qgrad/quant for the
// browser pulls in no Node built-in; only saveAdapters/loadAdapters need a file system.
function nodeFs(who: string): Fs {
  const fs = (globalThis as { process?: { getBuiltinModule?: (m: string) => unknown } }).process?.getBuiltinModule?.('node:fs') as Fs | undefined;
  if (!fs) throw new Error(`${who}: reading and writing adapter directories needs Node.js ≥ 20.16 (node:fs)`);
  return fs;
}

/** Joins path segments with '/', which Node's fs accepts on every platform. */
function join(dir: string, name: string): string {
  return dir.endsWith('/') || dir.endsWith('\\') ? dir + name : `${dir}/${name}`;
}
