/** Llama: HF names, KV-cached decoding against the full forward pass, generate(), overfitting. */
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import { assertAllclose } from '@qgrad/core/testing';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdamW, KVCache, Llama, configToHf, sampleLogits, tinyLlamaConfig, type LlamaConfig } from '@qgrad/nn';

const tiny: LlamaConfig = { ...tinyLlamaConfig, vocabSize: 32, dim: 32, nLayers: 2, nHeads: 4, nKvHeads: 2, hiddenDim: 64, maxSeqLen: 24 };
const ids = (rows: number[][]) => q.tensor(rows, { dtype: 'int32' });

describe('Llama', () => {
  it('has Hugging Face LlamaForCausalLM parameter names and [out, in] layouts', () => {
    const m = new Llama(tinyLlamaConfig);
    const sd = m.stateDict();
    expect(Object.keys(sd).slice(0, 10)).toEqual([
      'model.embed_tokens.weight',
      'model.layers.0.self_attn.q_proj.weight', 'model.layers.0.self_attn.k_proj.weight',
      'model.layers.0.self_attn.v_proj.weight', 'model.layers.0.self_attn.o_proj.weight',
      'model.layers.0.mlp.gate_proj.weight', 'model.layers.0.mlp.up_proj.weight', 'model.layers.0.mlp.down_proj.weight',
      'model.layers.0.input_layernorm.weight', 'model.layers.0.post_attention_layernorm.weight',
    ]);
    expect(Object.keys(sd).slice(-2)).toEqual(['model.norm.weight', 'lm_head.weight']);
    expect(sd['model.layers.3.self_attn.k_proj.weight']!.shape).toEqual([64, 128]); // 2 KV heads × 32
    expect(sd['model.layers.3.mlp.gate_proj.weight']!.shape).toEqual([384, 128]);
    expect(sd['model.layers.3.mlp.down_proj.weight']!.shape).toEqual([128, 384]);
    expect(sd['lm_head.weight']!.shape).toEqual([256, 128]);
    expect(Object.keys(sd).some((k) => k.includes('rotary'))).toBe(false); // RoPE tables are not state
  });

  it('ties the head to the embedding when asked, counting the shared matrix once', () => {
    const untied = new Llama(tiny);
    const tied = new Llama({ ...tiny, tieWordEmbeddings: true });
    expect(tied.lm_head.weight).toBe(tied.model.embed_tokens.weight);
    expect(untied.numParameters() - tied.numParameters()).toBe(32 * 32);
  });

  it('decoding with the KV cache gives the logits of the full forward pass, position by position', () => {
    const m = new Llama(tiny, { generator: new q.Generator(1) });
    const seq = ids([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3], [2, 7, 1, 8, 2, 8, 1, 8, 2, 8]]);
    const full = m.forward(seq); // [2, 10, 32]
    const caches = m.newCaches();
    const parts = [m.forward(seq.narrow(1, 0, 4), caches)]; // prefill 4 positions
    for (let t = 4; t < 10; t++) parts.push(m.forward(seq.narrow(1, t, 1), caches));
    const inc = q.cat(parts, 1);
    expect(caches[0]!.length).toBe(10);
    assertAllclose(inc.dataSync(), full.dataSync(), { atol: 1e-5, rtol: 1e-5 }, 'cached vs full logits');
  });

  it('greedy generate() picks the argmax of the full forward pass at every step', () => {
    const m = new Llama(tiny, { generator: new q.Generator(2) });
    const out = m.generate(ids([[5, 6, 7]]), 8, { temperature: 0 });
    expect(out.shape).toEqual([1, 11]);
    const toks = Array.from(out.dataSync(), Number);
    for (let t = 3; t < 11; t++) {
      const logits = m.forward(ids([toks.slice(0, t)])).select(1, t - 1); // [1, V]
      expect(toks[t]).toBe(logits.argmax(-1).item());
    }
  });

  it('generate() slides its window past maxSeqLen and is reproducible from a generator', () => {
    const m = new Llama({ ...tiny, maxSeqLen: 8 }, { generator: new q.Generator(3) });
    const a = m.generate(ids([[1, 2], [3, 4]]), 12, { temperature: 0.9, topK: 5, generator: new q.Generator(7) });
    const b = m.generate(ids([[1, 2], [3, 4]]), 12, { temperature: 0.9, topK: 5, generator: new q.Generator(7) });
    expect(a.shape).toEqual([2, 14]);
    expect(Array.from(a.dataSync())).toEqual(Array.from(b.dataSync()));
    expect(Array.from(a.dataSync()).every((t) => t >= 0 && t < 32)).toBe(true);
  });

  it('overfits a tiny batch: next-token loss falls below 0.05 within 60 AdamW steps', () => {
    const m = new Llama(tiny, { generator: new q.Generator(4) });
    const opt = new AdamW(m.parameters(), { lr: 1e-2, weightDecay: 0 });
    const data = q.randint(0, 32, [2, 17], { generator: new q.Generator(5) });
    const x = data.narrow(1, 0, 16);
    const y = data.narrow(1, 1, 16);
    const first = m.loss(x, y).item();
    let loss = first;
    for (let i = 0; i < 60 && loss > 0.05; i++) {
      const l = m.loss(x, y);
      loss = l.item();
      l.backward();
      opt.step();
      opt.zeroGrad();
    }
    expect(first).toBeGreaterThan(3); // ≈ ln 32 at init
    expect(loss).toBeLessThan(0.05);
  });

  it('round-trips through a Hugging Face directory written with configToHf + safetensors', () => {
    const dir = mkdtempSync(join(tmpdir(), 'qgrad-hf-'));
    try {
      const m = new Llama({ ...tiny, tieWordEmbeddings: true, ropeTheta: 5e5 }, { generator: new q.Generator(6) });
      writeFileSync(join(dir, 'config.json'), JSON.stringify(configToHf(m.config)));
      const sd = m.stateDict();
      delete sd['lm_head.weight']; // as HF writes tied models
      q.saveSafetensors(join(dir, 'model.safetensors'), sd);
      const back = Llama.fromPretrained(dir);
      expect(back.config).toEqual({ ...m.config, attentionBias: false, mlpBias: false, headDim: undefined });
      const x = ids([[1, 2, 3, 4]]);
      expect(Array.from(back.forward(x).dataSync())).toEqual(Array.from(m.forward(x).dataSync()));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('names bad inputs and an overfull cache', () => {
    const m = new Llama(tiny);
    expect(() => m.forward(ids([[1, 2]]).reshape(2))).toThrow(/expected token ids \[B, T\], got shape \[2\]/);
    const caches = m.newCaches();
    m.forward(q.zeros([1, 20], { dtype: 'int32' }), caches);
    expect(() => m.forward(q.zeros([1, 5], { dtype: 'int32' }), caches)).toThrow(/20 cached \+ 5 new positions exceed maxSeqLen 24/);
    expect(() => new Llama({ ...tiny, nKvHeads: 3 })).toThrow(/nHeads 4 must be divisible by nKvHeads 3/);
    expect(caches[0]).toBeInstanceOf(KVCache);
  });
});

describe('sampleLogits', () => {
  it('is greedy at temperature 0 and never leaves the top k', () => {
    const logits = q.tensor([[0, 3, 1, 2.9], [5, -1, 4.5, 0]]);
    expect(sampleLogits(logits, { temperature: 0 })).toEqual([1, 0]);
    const g = new q.Generator(0);
    for (let i = 0; i < 50; i++) {
      const [a, b] = sampleLogits(logits, { topK: 2, generator: g });
      expect([1, 3]).toContain(a);
      expect([0, 2]).toContain(b);
    }
    expect(() => sampleLogits(logits, { temperature: -1 })).toThrow(/temperature must be ≥ 0/);
  });

  it('draws tokens in proportion to softmax(logits / temperature)', () => {
    const g = new q.Generator(1);
    const logits = q.tensor([[Math.log(1), Math.log(3)]]);
    let ones = 0;
    for (let i = 0; i < 2000; i++) ones += sampleLogits(logits, { generator: g })[0]!;
    expect(ones / 2000).toBeCloseTo(0.75, 1);
  });
});
