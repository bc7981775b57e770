/**
 * Forward passes of Llama, ViT and MultiHeadAttention against PyTorch references on the same
 * weights: scripts/golden/models.py writes weights, inputs and expected outputs as safetensors.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadSafetensors, type Tensor } from '@qgrad/core';
import { assertAllclose } from '@qgrad/core/testing';
import { configFromHf, Llama, MultiHeadAttention, ViT, type ViTConfig } from '@qgrad/nn';

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));

/** Splits a fixture into model weights and the `_input.*` / `_expected.*` tensors. */
function load(name: string): { weights: Record<string, Tensor>; io: Record<string, Tensor> } {
  const all = loadSafetensors(fixture(name));
  const weights: Record<string, Tensor> = {};
  const io: Record<string, Tensor> = {};
  for (const [k, t] of Object.entries(all)) (k.startsWith('_') ? io : weights)[k] = t;
  return { weights, io };
}

describe('golden: model forward passes match PyTorch', () => {
  it('Llama (GQA 4/2, rope_theta 500000, untied head) gives the logits of the HF-style reference', () => {
    const { weights, io } = load('llama.safetensors');
    const cfg = configFromHf(JSON.parse(readFileSync(fixture('llama.config.json'), 'utf8')));
    const llama = new Llama(cfg);
    const res = llama.loadStateDict(weights);
    expect(res.missingKeys).toEqual([]);
    const logits = llama.forward(io['_input.ids']!);
    expect(logits.shape).toEqual(io['_expected.logits']!.shape);
    assertAllclose(logits.dataSync(), io['_expected.logits']!.dataSync(), { atol: 1e-4, rtol: 1e-4 }, 'llama logits');
  });

  it('ViT (conv patches, class token, pre-norm GELU blocks) gives the logits of the timm-style reference', () => {
    const { weights, io } = load('vit.safetensors');
    const cfg = JSON.parse(readFileSync(fixture('vit.config.json'), 'utf8')) as ViTConfig;
    const vit = new ViT(cfg);
    vit.loadStateDict(weights);
    const logits = vit.forward(io['_input.images']!);
    expect(logits.shape).toEqual([3, 5]);
    assertAllclose(logits.dataSync(), io['_expected.logits']!.dataSync(), { atol: 1e-4, rtol: 1e-4 }, 'vit logits');
  });

  it('MultiHeadAttention with GQA, RoPE, biases and a causal mask matches the reference', () => {
    const { weights, io } = load('attention.safetensors');
    const attn = new MultiHeadAttention(16, 4, { numKvHeads: 2, bias: true, causal: true, rope: { theta: 10000 } });
    attn.loadStateDict(weights);
    const y = attn.forward(io['_input.x']!);
    assertAllclose(y.dataSync(), io['_expected.y']!.dataSync(), { atol: 1e-5, rtol: 1e-4 }, 'attention output');
  });
});

describe('Llama.fromPretrained', () => {
  for (const [dir, what] of [['hf-llama-bf16', 'BF16 weights and a tied head absent from the file'], ['hf-llama-f16', 'F16 weights and an untied head']] as const) {
    it(`loads a Hugging Face directory with ${what} and reproduces its logits`, () => {
      const llama = Llama.fromPretrained(fixture(dir));
      const cfg = JSON.parse(readFileSync(fixture(`${dir}/config.json`), 'utf8'));
      expect(llama.config).toMatchObject({ dim: cfg.hidden_size, nLayers: cfg.num_hidden_layers, nHeads: cfg.num_attention_heads, nKvHeads: cfg.num_key_value_heads, hiddenDim: cfg.intermediate_size, vocabSize: cfg.vocab_size, normEps: cfg.rms_norm_eps, ropeTheta: cfg.rope_theta, tieWordEmbeddings: cfg.tie_word_embeddings });
      expect(llama.lm_head.weight === llama.model.embed_tokens.weight).toBe(cfg.tie_word_embeddings);
      const expected = loadSafetensors(fixture(`${dir}/expected.safetensors`));
      const logits = llama.forward(expected.ids!);
      assertAllclose(logits.dataSync(), expected.logits!.dataSync(), { atol: 1e-4, rtol: 1e-4 }, `${dir} logits`);
    });
  }

  it('names a missing config key and rejects rope_scaling', () => {
    expect(() => configFromHf({ hidden_size: 8 })).toThrow(/needs a number 'num_attention_heads'/);
    const base = JSON.parse(readFileSync(fixture('llama.config.json'), 'utf8'));
    expect(() => configFromHf({ ...base, rope_scaling: { type: 'linear', factor: 2 } })).toThrow(/rope_scaling .* is not supported/);
  });
});
