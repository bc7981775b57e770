/**
 * @file savePretrained / fromPretrained: Llama (untied and tied head) and ViT round-trip through a
 * Hugging Face directory bit for bit (same weights, same outputs); the files carry transformers'
 * names and config keys; unknown model types and tensors are errors naming them.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { Llama, ViT, fromPretrained, savePretrained, type LlamaConfig, type ViTConfig } from '@qgrad/nn';

const root = mkdtempSync(join(tmpdir(), 'qgrad-pretrained-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const llamaCfg: LlamaConfig = { vocabSize: 32, dim: 16, nLayers: 2, nHeads: 2, nKvHeads: 1, hiddenDim: 24, maxSeqLen: 8, normEps: 1e-5, ropeTheta: 10000, tieWordEmbeddings: false };
const vitCfg: ViTConfig = { imageSize: 8, patchSize: 4, inChannels: 1, numClasses: 3, dim: 16, depth: 2, numHeads: 2, mlpDim: 32 };
const values = (m: { stateDict(): Record<string, q.Tensor> }) => Object.fromEntries(Object.entries(m.stateDict()).map(([k, t]) => [k, Array.from(t.dataSync())]));

describe('savePretrained / fromPretrained', () => {
  it.each([false, true])('round-trips a Llama (tied head: %s) with HF names and config', (tied) => {
    const dir = join(root, `llama-${tied}`);
    const model = new Llama({ ...llamaCfg, tieWordEmbeddings: tied }, { generator: new q.Generator(1) });
    savePretrained(model, dir);
    const names = Object.keys(q.loadSafetensors(join(dir, 'model.safetensors')));
    expect(names).toContain('model.layers.1.self_attn.q_proj.weight');
    expect(names.includes('lm_head.weight')).toBe(!tied);
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    expect(config).toMatchObject({ model_type: 'llama', hidden_size: 16, num_key_value_heads: 1, tie_word_embeddings: tied });
    const back = fromPretrained(dir);
    expect(back).toBeInstanceOf(Llama);
    expect((back as Llama).config).toMatchObject({ ...llamaCfg, tieWordEmbeddings: tied });
    expect(values(back)).toEqual(values(model));
    const x = q.tensor([[1, 5, 9, 2]], { dtype: 'int32' });
    expect(Array.from((back as Llama).forward(x).dataSync())).toEqual(Array.from(model.forward(x).dataSync()));
  });

  it('round-trips a ViT under ViTForImageClassification names', () => {
    const dir = join(root, 'vit');
    const model = new ViT(vitCfg, { generator: new q.Generator(2) });
    savePretrained(model, dir);
    const names = Object.keys(q.loadSafetensors(join(dir, 'model.safetensors'))).sort();
    expect(names).toContain('vit.embeddings.patch_embeddings.projection.weight');
    expect(names).toContain('vit.encoder.layer.1.attention.attention.query.bias');
    expect(names).toContain('vit.encoder.layer.0.intermediate.dense.weight');
    expect(names).toContain('classifier.weight');
    expect(names.filter((n) => !n.startsWith('vit.') && !n.startsWith('classifier.'))).toEqual([]);
    expect(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'))).toMatchObject({ model_type: 'vit', image_size: 8, patch_size: 4, num_channels: 1, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2 });
    const back = fromPretrained(dir) as ViT;
    expect(back).toBeInstanceOf(ViT);
    expect(back.config).toEqual({ ...vitCfg, normEps: 1e-6 });
    expect(values(back)).toEqual(values(model));
    const x = q.randn([2, 1, 8, 8], { generator: new q.Generator(3) });
    expect(Array.from(back.forward(x).dataSync())).toEqual(Array.from(model.forward(x).dataSync()));
  });

  it('names what it cannot read: a missing config, an unknown model_type, an unexpected tensor', () => {
    expect(() => fromPretrained(join(root, 'nothing'))).toThrow(/nothing\/config\.json does not exist/);
    const dir = join(root, 'odd');
    savePretrained(new ViT(vitCfg), dir);
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'bert' }));
    expect(() => fromPretrained(dir)).toThrow(/model_type 'bert'; known: llama, vit/);
    writeFileSync(join(dir, 'config.json'), `${JSON.stringify({ model_type: 'vit', image_size: 8, patch_size: 4, num_channels: 1, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32, num_labels: 3 })}`);
    const t = q.loadSafetensors(join(dir, 'model.safetensors'));
    q.saveSafetensors(join(dir, 'model.safetensors'), { ...t, 'vit.pooler.dense.weight': q.zeros([2]) });
    expect(() => fromPretrained(dir)).toThrow(/unexpected tensor 'vit\.pooler\.dense\.weight'/);
  });
});
