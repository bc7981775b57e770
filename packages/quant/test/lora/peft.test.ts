/**
 * @file Adapters in PEFT's layout: a round trip through saveAdapters / loadAdapters for every
 * method gives the same outputs bit for bit; an adapter written by plain torch
 * (scripts/golden/lora_peft.py) loads onto an NF4 base and gives torch's outputs and gradients; files whose
 * names, rank or shapes do not fit the model are errors naming the layer.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { Generator, loadSafetensors, noGrad, randn, saveSafetensors, type Tensor } from '@qgrad/core';
import { Linear, Module } from '@qgrad/nn';
import * as Q from '@qgrad/quant';

const FIXTURE = fileURLToPath(new URL('../fixtures/lora-peft', import.meta.url));
const bitsOf = (t: Tensor) => Array.from(t.dataSync());

class Mlp extends Module {
  fc1: Linear;
  fc2: Linear;
  constructor(g?: Generator) {
    super();
    this.fc1 = this.registerModule('fc1', new Linear(64, 16, { generator: g }));
    this.fc2 = this.registerModule('fc2', new Linear(16, 8, { generator: g }));
  }
  forward(x: Tensor): Tensor {
    return this.fc2.forward(this.fc1.forward(x).relu());
  }
}

const QUANT: Record<Q.LoraMethod, Q.WeightQuantConfig> = {
  qlora: { grid: 'nf4', scale: { double: true } },
  'qa-lora': { grid: 'int', bits: 4, asymmetric: true, granularity: { group: 2 } },
  l4q: { grid: 'int', bits: 3, scale: 'learned' },
  'lr-qat': { grid: 'int', bits: 4 },
  loqt: { grid: 'nf4' },
};

function adapted(method: Q.LoraMethod, seed: number): Mlp {
  const m = new Mlp(new Generator(seed));
  return Q.loraQuant(m, { method, rank: 3, alpha: 6, targets: ['fc1', 'fc2'], quant: QUANT[method], generator: new Generator(seed + 1) });
}

/** The torch fixture's model: its float base on NF4 under QLoRA, with the adapter torch wrote. */
function torchAdapted(): Mlp {
  const config = Q.readAdapterConfig(FIXTURE);
  const m = new Mlp();
  m.loadStateDict(loadSafetensors(join(FIXTURE, 'base.safetensors')));
  Q.loraQuant(m, { method: 'qlora', rank: config.r, alpha: config.lora_alpha, targets: config.target_modules, quant: { grid: 'nf4' } });
  Q.loadAdapters(m, FIXTURE);
  return m;
}

describe('PEFT-layout adapters', () => {
  it('round-trip through saveAdapters / loadAdapters for every method (outputs bit for bit, PEFT keys and config)', () => {
    for (const method of Object.keys(QUANT) as Q.LoraMethod[]) {
      const a = adapted(method, 1);
      const g = new Generator(9);
      for (const [, l] of Q.loraLayers(a)) noGrad(() => l.loraB.copy_(randn(l.loraB.shape, { generator: g }).mul(0.1)));
      const s = Q.loraParameters(a).find((p) => p.shape.length > 1 && p.shape[p.shape.length - 1] === 1);
      if (s) noGrad(() => s.mul_(1.1)); // a trained scale travels too (l4q, lr-qat)
      const dir = mkdtempSync(join(tmpdir(), `qgrad-lora-${method}-`));
      Q.saveAdapters(a, dir);
      const keys = Object.keys(loadSafetensors(join(dir, 'adapter_model.safetensors'))).sort();
      expect(keys.filter((k) => k.includes('lora_'))).toEqual(['base_model.model.fc1.lora_A.weight', 'base_model.model.fc1.lora_B.weight', 'base_model.model.fc2.lora_A.weight', 'base_model.model.fc2.lora_B.weight']);
      const config = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
      expect(config).toMatchObject({ peft_type: 'LORA', r: 3, lora_alpha: method === 'loqt' ? 18 : 6, target_modules: ['fc1', 'fc2'], qgrad: { method } });
      const b = adapted(method, 1); // same base, fresh adapters
      Q.loadAdapters(b, dir);
      a.eval();
      b.eval();
      const x = randn([4, 64], { generator: g });
      expect(bitsOf(noGrad(() => b.forward(x)))).toEqual(bitsOf(noGrad(() => a.forward(x))));
    }
  });

  it('loads an adapter written by plain torch onto an NF4 base and gives its outputs (max |Δ| ≤ 1e-5 relative)', () => {
    const m = torchAdapted();
    m.eval();
    const { x, y } = loadSafetensors(join(FIXTURE, 'expected.safetensors')) as { x: Tensor; y: Tensor };
    const got = noGrad(() => m.forward(x));
    const scale = Math.max(...Array.from(y.dataSync(), Math.abs));
    expect(noGrad(() => got.sub(y).abs().max().item())).toBeLessThanOrEqual(1e-5 * scale);
    // and after merging to float
    Q.merge(m);
    expect(noGrad(() => m.forward(x).sub(y).abs().max().item())).toBeLessThanOrEqual(1e-5 * scale);
  });

  it("gives torch's gradients in the adapters and the input, training through loraLinear (max |Δ| ≤ 1e-5 relative)", () => {
    const m = torchAdapted();
    const want = loadSafetensors(join(FIXTURE, 'expected.safetensors'));
    const x = want.x!.detach().requiresGrad_(true);
    m.forward(x).mul(want.proj!).sum().backward();
    const got: Record<string, Tensor> = { 'grad.x': x.grad! };
    for (const [name, l] of Q.loraLayers(m)) Object.assign(got, { [`grad.${name}.lora_A`]: l.loraA.grad!, [`grad.${name}.lora_B`]: l.loraB.grad! });
    expect(Object.keys(got).sort()).toEqual(Object.keys(want).filter((k) => k.startsWith('grad.')).sort());
    for (const [k, g] of Object.entries(got)) {
      const scale = Math.max(...Array.from(want[k]!.dataSync(), Math.abs));
      expect(noGrad(() => g.sub(want[k]!).abs().max().item()), k).toBeLessThanOrEqual(1e-5 * scale);
    }
  });

  it('refuses adapter files whose names, rank or shapes do not fit, naming the layer', () => {
    const a = adapted('qlora', 2);
    const dir = mkdtempSync(join(tmpdir(), 'qgrad-lora-bad-'));
    Q.saveAdapters(a, dir);
    const t = loadSafetensors(join(dir, 'adapter_model.safetensors'));
    const write = (tensors: Record<string, Tensor>, config?: object) => {
      const d = mkdtempSync(join(tmpdir(), 'qgrad-lora-bad-'));
      saveSafetensors(join(d, 'adapter_model.safetensors'), tensors);
      writeFileSync(join(d, 'adapter_config.json'), JSON.stringify({ ...JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')), ...config }));
      return d;
    };
    const renamed = { ...t, 'base_model.model.fc3.lora_A.weight': t['base_model.model.fc1.lora_A.weight']! };
    expect(() => Q.loadAdapters(adapted('qlora', 2), write(renamed))).toThrow(/tensor 'base_model\.model\.fc3\.lora_A\.weight' names layer 'fc3', which has no adapter in this model \(LoRA layers: fc1, fc2\)/);
    const missing = { ...t };
    delete missing['base_model.model.fc2.lora_B.weight'];
    expect(() => Q.loadAdapters(adapted('qlora', 2), write(missing))).toThrow(/layer 'fc2' has no lora_B\.weight/);
    const wrongShape = { ...t, 'base_model.model.fc1.lora_A.weight': randn([3, 32]) };
    expect(() => Q.loadAdapters(adapted('qlora', 2), write(wrongShape))).toThrow(/lora_A\.weight of layer 'fc1' has shape \[3, 32\] in the file, the model needs \[3, 64\]/);
    expect(() => Q.loadAdapters(adapted('qlora', 2), write(t, { r: 5 }))).toThrow(/adapter r 5 does not fit layer 'fc1' of rank 3/);
    expect(() => Q.loadAdapters(adapted('qlora', 2), write({ ...t, 'fc1.weight': randn([2]) }))).toThrow(/tensor 'fc1\.weight' is not a LoRA tensor/);
  });

  it('names the bad value in loraQuant errors: a target matching nothing, a rank ≥ min(in, out), an unknown method, a grid the method cannot merge into', () => {
    const lq = (c: Partial<Q.LoraQuantConfig>) => () => Q.loraQuant(new Mlp(), { method: 'qlora', rank: 2, alpha: 4, targets: ['fc1'], ...c } as Q.LoraQuantConfig);
    expect(lq({ targets: ['fc1', 'attn.*'] })).toThrow(/target 'attn\.\*' matches no Linear layer; the Linear layers are fc1, fc2/);
    expect(lq({ targets: ['fc2'], rank: 8 })).toThrow(/layer 'fc2' \(qlora\): rank 8 must be an integer in 1 … 7 \(below min\(in = 16, out = 8\)/);
    expect(lq({ method: 'dora' as Q.LoraMethod })).toThrow(/unknown method "dora"; methods are qlora, qa-lora, l4q, lr-qat, loqt/);
    expect(lq({ method: 'qa-lora', quant: { grid: 'int', bits: 4 } })).toThrow(/layer 'fc1' \(qa-lora\): method 'qa-lora' merges the adapter into per-group zero points/);
    expect(lq({ method: 'qa-lora', quant: { grid: 'int', bits: 4, asymmetric: true, granularity: { group: 32 } } })).toThrow(/rank 2 must be an integer in 1 … 1 \(below min\(in\/groupSize = 2/);
    expect(lq({ method: 'lr-qat', quant: { grid: 'nf4' } })).toThrow(/layer 'fc1' \(lr-qat\): method 'lr-qat' rounds Φ0 \+ B·A onto a symmetric signed integer grid/);
    expect(lq({ method: 'l4q', dropout: 0.1, quant: { grid: 'int', bits: 4 } })).toThrow(/layer 'fc1' \(l4q\): dropout does not apply to 'l4q'/);
    expect(lq({ targets: { match: 'fc1', types: ['Conv2d'] } })).toThrow(/layer type 'Conv2d' is not supported/);
  });
});
