/**
 * @file `savePretrained` / `fromPretrained` for the zoo models in the Hugging Face directory
 * layout: `config.json` (transformers' keys and `model_type`) + `model.safetensors` under
 * transformers' parameter names, so a directory opens with `LlamaForCausalLM` /
 * `ViTForImageClassification.from_pretrained` and back. Llama's module names already are HF's;
 * ViT's (timm-style) are renamed by the table below.
 */
import { loadSafetensors, saveSafetensors, type Tensor } from '@qgrad/core';
import { Llama, configToHf } from '../models/llama.js';
import { ViT, type ViTConfig } from '../models/vit.js';
import { joinPath, nodeFs } from './node.js';

/** A model `savePretrained` writes and `fromPretrained` builds. */
export type PretrainedModel = Llama | ViT;

/**
 * qgrad ViT name ↔ HF ViTForImageClassification name, as templates: `{i}` is a block index and
 * `{p}` weight or bias, in the same order on both sides.
 */
const VIT_NAMES: [string, string][] = [
  ['patch_embed.proj.{p}', 'vit.embeddings.patch_embeddings.projection.{p}'],
  ['cls_token', 'vit.embeddings.cls_token'],
  ['pos_embed', 'vit.embeddings.position_embeddings'],
  ['blocks.{i}.norm1.{p}', 'vit.encoder.layer.{i}.layernorm_before.{p}'],
  ['blocks.{i}.attn.qProj.{p}', 'vit.encoder.layer.{i}.attention.attention.query.{p}'],
  ['blocks.{i}.attn.kProj.{p}', 'vit.encoder.layer.{i}.attention.attention.key.{p}'],
  ['blocks.{i}.attn.vProj.{p}', 'vit.encoder.layer.{i}.attention.attention.value.{p}'],
  ['blocks.{i}.attn.oProj.{p}', 'vit.encoder.layer.{i}.attention.output.dense.{p}'],
  ['blocks.{i}.norm2.{p}', 'vit.encoder.layer.{i}.layernorm_after.{p}'],
  ['blocks.{i}.mlp.fc1.{p}', 'vit.encoder.layer.{i}.intermediate.dense.{p}'],
  ['blocks.{i}.mlp.fc2.{p}', 'vit.encoder.layer.{i}.output.dense.{p}'],
  ['norm.{p}', 'vit.layernorm.{p}'],
  ['head.{p}', 'classifier.{p}'],
];
const asPattern = (t: string) => new RegExp(`^${t.replace(/\./g, '\\.').replace('{i}', '(\\d+)').replace('{p}', '(weight|bias)')}$`);
const asReplacement = (t: string) => {
  let k = 0;
  return t.replace(/\{[ip]\}/g, () => `$${++k}`);
};

/** The HF name of a qgrad ViT tensor (or, `toQgrad`, the qgrad name of an HF one). */
function renameVit(name: string, toQgrad = false): string {
  for (const pair of VIT_NAMES) {
    const [from, to] = toQgrad ? [pair[1], pair[0]] : pair;
    const pattern = asPattern(from);
    if (pattern.test(name)) return name.replace(pattern, asReplacement(to));
  }
  throw new Error(`${toQgrad ? 'fromPretrained: unexpected tensor' : 'savePretrained: no Hugging Face ViT name for'} '${name}'`);
}

/**
 * The HF `config.json` object of a ViTConfig (ViTForImageClassification).
 * @example vitConfigToHf(mnistViTConfig).model_type; // 'vit'
 */
export function vitConfigToHf(c: ViTConfig): Record<string, unknown> {
  return {
    architectures: ['ViTForImageClassification'], model_type: 'vit', hidden_act: 'gelu', qkv_bias: true,
    image_size: c.imageSize, patch_size: c.patchSize, num_channels: c.inChannels, hidden_size: c.dim, num_hidden_layers: c.depth,
    num_attention_heads: c.numHeads, intermediate_size: c.mlpDim, layer_norm_eps: c.normEps ?? 1e-6,
    id2label: Object.fromEntries(Array.from({ length: c.numClasses }, (_, i) => [String(i), `LABEL_${i}`])), torch_dtype: 'float32',
  };
}

/**
 * A ViTConfig from an HF ViT `config.json` object (erf GELU and biased q/k/v only, as qgrad's ViT).
 * @example const cfg = vitConfigFromHf(JSON.parse(readFileSync('hf/config.json', 'utf8')));
 */
export function vitConfigFromHf(c: Record<string, unknown>): ViTConfig {
  const num = (k: string, dflt?: number): number => {
    const v = c[k] ?? dflt;
    if (typeof v !== 'number') throw new Error(`fromPretrained: the ViT config.json needs a number '${k}'`);
    return v;
  };
  if (c.hidden_act !== undefined && c.hidden_act !== 'gelu') throw new Error(`fromPretrained: ViT hidden_act '${String(c.hidden_act)}' is not supported (only 'gelu')`);
  if (c.qkv_bias === false) throw new Error('fromPretrained: ViT without q/k/v biases (qkv_bias false) is not supported');
  const labels = c.id2label && typeof c.id2label === 'object' ? Object.keys(c.id2label).length : undefined;
  return {
    imageSize: num('image_size'), patchSize: num('patch_size'), inChannels: num('num_channels', 3), numClasses: num('num_labels', labels ?? 2),
    dim: num('hidden_size'), depth: num('num_hidden_layers'), numHeads: num('num_attention_heads'), mlpDim: num('intermediate_size'), normEps: num('layer_norm_eps', 1e-12),
  };
}

/**
 * Writes `model` to `dir` as a Hugging Face directory: config.json and model.safetensors (float32,
 * transformers' names; a tied Llama head is left out, as transformers does).
 * @example savePretrained(llama, 'runs/llama/hf'); const again = fromPretrained('runs/llama/hf');
 */
export function savePretrained(model: PretrainedModel, dir: string): void {
  const fs = nodeFs('savePretrained');
  fs.mkdirSync(dir, { recursive: true });
  let config: Record<string, unknown>;
  const tensors: Record<string, Tensor> = {};
  if (model instanceof Llama) {
    config = configToHf(model.config);
    for (const [k, t] of Object.entries(model.stateDict())) if (!(model.config.tieWordEmbeddings && k === 'lm_head.weight')) tensors[k] = t;
  } else if (model instanceof ViT) {
    config = vitConfigToHf(model.config);
    for (const [k, t] of Object.entries(model.stateDict())) tensors[renameVit(k)] = t;
  } else throw new Error(`savePretrained: expected a Llama or a ViT, got ${(model as object).constructor.name}`);
  // the weights first: a directory whose config.json exists is then complete
  saveSafetensors(joinPath(dir, 'model.safetensors'), tensors, { format: 'pt' });
  fs.writeFileSync(joinPath(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
}

/**
 * Builds the model a Hugging Face directory holds (`model_type` 'llama' or 'vit' in config.json)
 * and loads its weights; a missing or unexpected tensor is an error naming it.
 * @example const vit = fromPretrained('runs/vit-mnist/hf') as ViT;
 */
export function fromPretrained(dir: string): PretrainedModel {
  const fs = nodeFs('fromPretrained');
  const path = joinPath(dir, 'config.json');
  if (!fs.existsSync(path)) throw new Error(`fromPretrained: ${path} does not exist`);
  const raw = JSON.parse(fs.readFileSync(path, 'utf8')) as Record<string, unknown>;
  if (raw.model_type === 'llama') return Llama.fromPretrained(dir);
  if (raw.model_type !== 'vit') throw new Error(`fromPretrained: ${path} has model_type '${String(raw.model_type)}'; known: llama, vit`);
  const weights = loadSafetensors(joinPath(dir, 'model.safetensors'));
  const model = new ViT(vitConfigFromHf(raw));
  model.loadStateDict(Object.fromEntries(Object.entries(weights).map(([k, t]) => [renameVit(k, true), t])));
  return model;
}
