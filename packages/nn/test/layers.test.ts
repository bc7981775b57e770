import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import type { Tensor } from '@qgrad/core';
import { assertAllclose } from '@qgrad/core/testing';
import {
  Conv2d, Dropout, Embedding, GELU, GroupNorm, KVCache, LayerNorm, Linear, MLP, MultiHeadAttention, RMSNorm, ReLU,
  RotaryEmbedding, SiLU, SwiGLU, Tanh, causalBias, causalMask, sharedCausalBias, repeatKv, scaledDotProductAttention, SGD, trainStep, type Module,
} from '@qgrad/nn';
import { gradcheckModule, paramsWithoutGrad, setParameter } from './helpers.js';

const f64 = (s: number[]) => q.randn(s, { dtype: 'float64' });
const maxDiff = (a: Tensor, b: Tensor) => a.sub(b).abs().amax().item();

describe('Linear', () => {
  it('maps [..., in] to [..., out] and gradients reach weight and bias', () => {
    const l = new Linear(3, 5);
    const y = l.forward(q.randn([2, 4, 3]));
    expect(y.shape).toEqual([2, 4, 5]);
    expect(paramsWithoutGrad(l, y)).toEqual([]);
  });

  it('passes gradcheck in float64 over input, weight and bias', () => {
    const l = new Linear(3, 2).double();
    gradcheckModule(l, (x) => l.forward(x), [f64([2, 3])]);
  });

  it('initialises like PyTorch: weight and bias within ±1/√inFeatures, reproducible from a generator', () => {
    const a = new Linear(16, 64, { generator: new q.Generator(3) });
    const b = new Linear(16, 64, { generator: new q.Generator(3) });
    expect(Array.from(a.weight.dataSync())).toEqual(Array.from(b.weight.dataSync()));
    expect(a.weight.abs().amax().item()).toBeLessThanOrEqual(0.25);
    expect(a.weight.abs().amax().item()).toBeGreaterThan(0.24);
    expect(a.bias!.abs().amax().item()).toBeLessThanOrEqual(0.25);
    // U(−b, b) has variance b²/3
    expect(a.weight.var().item()).toBeCloseTo(0.0625 / 3, 2);
  });

  it('manualSeed makes default-generator initialisation reproducible', () => {
    q.manualSeed(11);
    const a = new Linear(4, 4);
    q.manualSeed(11);
    const b = new Linear(4, 4);
    expect(Array.from(a.weight.dataSync())).toEqual(Array.from(b.weight.dataSync()));
  });

  it('names both shapes when the input has the wrong number of features', () => {
    expect(() => new Linear(3, 2).forward(q.randn([4, 5]))).toThrow('linear: input of shape [4, 5] has 5 features but weight [2, 3] expects 3');
  });
});

describe('Embedding', () => {
  it('looks up rows N(0, 1) with the padding row zero and without gradient', () => {
    const e = new Embedding(200, 8, { paddingIdx: 0 });
    expect(e.weight.select(0, 0).abs().sum().item()).toBe(0);
    const w = e.weight.narrow(0, 1, 199);
    expect(Math.abs(w.mean().item())).toBeLessThan(0.1);
    expect(Math.abs(w.std().item() - 1)).toBeLessThan(0.1);
    const idx = q.tensor([[0, 3], [3, 5]], { dtype: 'int32' });
    const y = e.forward(idx);
    expect(y.shape).toEqual([2, 2, 8]);
    y.sum().backward();
    const g = e.weight.grad!;
    expect(g.select(0, 0).abs().sum().item()).toBe(0);
    expect(g.select(0, 3).toArray()).toEqual(Array(8).fill(2));
  });

  it('passes gradcheck in float64 for its weight', () => {
    const e = new Embedding(4, 3).double();
    gradcheckModule(e, () => e.forward(q.tensor([1, 3, 1], { dtype: 'int32' })), []);
  });
});

describe('Conv2d', () => {
  it('gives [N, out, H′, W′] with stride, padding and groups, and gradients reach weight and bias', () => {
    const c = new Conv2d(4, 6, 3, { stride: 2, padding: 1, groups: 2 });
    expect(c.weight.shape).toEqual([6, 2, 3, 3]);
    const y = c.forward(q.randn([2, 4, 7, 7]));
    expect(y.shape).toEqual([2, 6, 4, 4]);
    expect(paramsWithoutGrad(c, y)).toEqual([]);
    expect(c.toString()).toBe('Conv2d(4, 6, kernelSize=(3, 3), stride=2, padding=1, groups=2)');
  });

  it('initialises within ±1/√(in/groups·kh·kw)', () => {
    const c = new Conv2d(2, 32, 3);
    const bound = 1 / Math.sqrt(18);
    expect(c.weight.abs().amax().item()).toBeLessThanOrEqual(bound);
    expect(c.bias!.abs().amax().item()).toBeLessThanOrEqual(bound);
  });

  it('passes gradcheck in float64', () => {
    const c = new Conv2d(2, 2, 2, { padding: 1 }).double();
    gradcheckModule(c, (x) => c.forward(x), [f64([1, 2, 3, 3])]);
  });

  it('rejects channel counts not divisible by groups', () => {
    expect(() => new Conv2d(3, 4, 3, { groups: 2 })).toThrow('Conv2d: inChannels 3 and outChannels 4 must both be divisible by groups 2');
  });
});

describe('normalisation layers', () => {
  it('LayerNorm starts as the identity affine and normalises the last dims', () => {
    const ln = new LayerNorm(6);
    expect(ln.weight!.toArray()).toEqual(Array(6).fill(1));
    expect(ln.bias!.toArray()).toEqual(Array(6).fill(0));
    const y = ln.forward(q.randn([3, 6]).mul(5).add(2));
    expect(y.mean(-1).abs().amax().item()).toBeLessThan(1e-5);
    expect(paramsWithoutGrad(ln, y.mul(q.randn([3, 6])))).toEqual([]);
  });

  it('LayerNorm, RMSNorm and GroupNorm pass gradcheck in float64', () => {
    const ln = new LayerNorm(4).double();
    gradcheckModule(ln, (x) => ln.forward(x), [f64([2, 4])]);
    const rms = new RMSNorm(4, { eps: 1e-6 }).double();
    gradcheckModule(rms, (x) => rms.forward(x), [f64([2, 4])]);
    const gn = new GroupNorm(2, 4).double();
    gradcheckModule(gn, (x) => gn.forward(x), [f64([2, 4, 2])]);
  });

  it('RMSNorm without affine divides by the root mean square', () => {
    const y = new RMSNorm(2, { elementwiseAffine: false, eps: 0 }).forward(q.tensor([[3, 4]]));
    assertAllclose(y.dataSync(), [3 / Math.sqrt(12.5), 4 / Math.sqrt(12.5)], { rtol: 1e-6 });
  });

  it('GroupNorm rejects channels not divisible by the groups', () => {
    expect(() => new GroupNorm(3, 8)).toThrow('GroupNorm: numChannels 8 must be divisible by numGroups 3');
  });
});

describe('activations and dropout', () => {
  it('activation modules apply their function', () => {
    const x = q.tensor([-1, 0, 2]);
    expect(new ReLU().forward(x).toArray()).toEqual([0, 0, 2]);
    assertAllclose(new Tanh().forward(x).dataSync(), [Math.tanh(-1), 0, Math.tanh(2)], { rtol: 1e-6 });
    assertAllclose(new SiLU().forward(x).dataSync(), [-1 / (1 + Math.E), 0, 2 / (1 + Math.exp(-2))], { rtol: 1e-6 });
    expect(new GELU('tanh').toString()).toBe("GELU(approximate='tanh')");
  });

  it('Dropout zeroes and rescales in training and is the identity in eval mode', () => {
    const d = new Dropout(0.5, { generator: new q.Generator(0) });
    const y = d.forward(q.ones([1000]));
    const vals = new Set(Array.from(y.dataSync()));
    expect([...vals].sort()).toEqual([0, 2]);
    expect(Math.abs(y.mean().item() - 1)).toBeLessThan(0.1);
    d.eval();
    const x = q.randn([5]);
    expect(d.forward(x)).toBe(x);
  });
});

describe('MLP and SwiGLU', () => {
  it('MLP keeps the feature size by default, every parameter gets a gradient, and it passes gradcheck', () => {
    const m = new MLP(6, 12, { activation: 'relu' });
    const y = m.forward(q.randn([2, 3, 6]));
    expect(y.shape).toEqual([2, 3, 6]);
    expect(paramsWithoutGrad(m, y)).toEqual([]);
    const tiny = new MLP(2, 3, { outFeatures: 1 }).double();
    gradcheckModule(tiny, (x) => tiny.forward(x), [f64([2, 2])]);
  });

  it('SwiGLU runs the fused swiglu op: float32 values and gradients bit for bit equal to silu(gate x) ⊙ up x', () => {
    const s = new SwiGLU(16, 24, { generator: new q.Generator(3) });
    const x = q.randn([4, 5, 16], { generator: new q.Generator(4) });
    const ref = (x: Tensor) => s.downProj.forward(q.silu(s.gateProj.forward(x)).mul(s.upProj.forward(x)));
    const w = q.randn([4, 5, 16], { generator: new q.Generator(6) });
    const ps = s.parameters();
    const [y, yr] = [s.forward(x), ref(x)];
    expect(y.toArray()).toEqual(yr.toArray());
    const [ga, gb] = [q.gradOf([y.mul(w).sum()], ps), q.gradOf([yr.mul(w).sum()], ps)];
    ga.forEach((g, i) => expect(g!.toArray()).toEqual(gb[i]!.toArray()));
  });

  it('SwiGLU computes down(silu(gate x) ⊙ up x) and passes gradcheck', () => {
    const s = new SwiGLU(3, 4).double();
    const x = f64([2, 3]);
    const ref = q.linear(q.silu(q.linear(x, s.gateProj.weight)).mul(q.linear(x, s.upProj.weight)), s.downProj.weight);
    expect(maxDiff(s.forward(x), ref)).toBe(0);
    gradcheckModule(s, (x) => s.forward(x), [x]);
  });
});

describe('rotary embeddings', () => {
  it('rotate each (i, i + D/2) pair by pos·θ^(−2i/D), Llama rotate-half layout', () => {
    const rope = new RotaryEmbedding(4, { theta: 100, maxSeqLen: 8 });
    const x = q.tensor([[1, 2, 3, 4]]).expand(3, 4).contiguous(); // positions 0..2
    const y = rope.forward(x.unsqueeze(0), 0).squeeze(0);
    const got = y.toArray() as number[][];
    for (let p = 0; p < 3; p++) {
      const a0 = p; // θ^0
      const a1 = p / 10; // 100^(−1/2)
      const want = [1 * Math.cos(a0) - 3 * Math.sin(a0), 2 * Math.cos(a1) - 4 * Math.sin(a1), 3 * Math.cos(a0) + 1 * Math.sin(a0), 4 * Math.cos(a1) + 2 * Math.sin(a1)];
      assertAllclose(got[p]!, want, { rtol: 1e-5, atol: 1e-6 });
    }
  });

  it('make q·k depend only on the relative position, and grow their tables on demand', () => {
    const rope = new RotaryEmbedding(8, { maxSeqLen: 4 }).double();
    const qv = f64([1, 8]);
    const kv = f64([1, 8]);
    const dotAt = (pq: number, pk: number) => rope.forward(qv, pq).mul(rope.forward(kv, pk)).sum().item();
    // the tables are computed in float32 arithmetic, as Hugging Face does
    expect(dotAt(5, 2)).toBeCloseTo(dotAt(3, 0), 5);
    expect(dotAt(9, 7)).toBeCloseTo(dotAt(2, 0), 5);
    expect(rope.cos.shape[0]).toBeGreaterThanOrEqual(10);
    expect(rope.stateDict()).toEqual({});
  });
});

describe('attention', () => {
  const tiny = (opts: ConstructorParameters<typeof MultiHeadAttention>[2] = {}) => new MultiHeadAttention(8, 4, { generator: new q.Generator(5), ...opts });

  it('scaledDotProductAttention equals softmax(q kᵀ/√d) v with a causal mask', () => {
    const [qq, k, v] = [f64([2, 3, 4]), f64([2, 3, 4]), f64([2, 3, 2])];
    const s = qq.matmul(k.transpose(1, 2)).div(2).add(q.tensor([[0, -Infinity, -Infinity], [0, 0, -Infinity], [0, 0, 0]], { dtype: 'float64' }));
    expect(maxDiff(scaledDotProductAttention(qq, k, v, { isCausal: true }), q.softmax(s, -1).matmul(v))).toBeLessThan(1e-12);
    expect(causalMask(2, 3, 1).toArray()).toEqual([[1, 1, 0], [1, 1, 1]]);
    for (const [tq, tk, off] of [[2, 3, 1], [4, 4, 0], [3, 7, 4], [5, 2, 0]] as const) {
      const m = causalMask(tq, tk, off).toArray() as number[][];
      expect(causalBias(tq, tk, off).toArray()).toEqual(m.map((r) => r.map((v) => (v ? 0 : -Infinity))));
    }
  });

  it('the causal mask attention builds itself is made once per backend, dtype, shape and offset, and outlives scopes', () => {
    const a = sharedCausalBias(4, 6, 2, 'float32');
    expect(a.toArray()).toEqual(causalBias(4, 6, 2).toArray());
    expect(q.tidy(() => sharedCausalBias(4, 6, 2, 'float32'))).toBe(a);
    // one first made inside a training step or a tidy is not released by its scope
    const lin = new Linear(2, 1);
    const opt = new SGD(lin.parameters(), { lr: 0.1 });
    let made: Tensor | null = null;
    trainStep(lin, opt, () => (made = sharedCausalBias(3, 9, 5, 'float32')).sum().item());
    q.tidy(() => void sharedCausalBias(5, 5, 0, 'float64'));
    expect(made!.storage.released).toBeFalsy();
    expect(sharedCausalBias(3, 9, 5, 'float32')).toBe(made);
    expect(sharedCausalBias(5, 5, 0, 'float64').toArray()).toEqual(causalBias(5, 5, 0, 'float64').toArray());
    for (const other of [sharedCausalBias(4, 6, 2, 'float64'), sharedCausalBias(4, 6, 1, 'float32'), sharedCausalBias(4, 5, 2, 'float32'), q.withBackend('js', () => sharedCausalBias(4, 6, 2, 'float32'))]) expect(other).not.toBe(a);
    expect(q.withBackend('js', () => sharedCausalBias(4, 6, 2, 'float32')).device).toBe('js');
    // one released by an explicit dispose is made again
    q.dispose(a);
    const b = sharedCausalBias(4, 6, 2, 'float32');
    expect(b).not.toBe(a);
    expect(b.toArray()).toEqual(causalBias(4, 6, 2).toArray());
  });

  it('enableGqa equals attention over keys and values repeated per query head, values and gradients, for every mask shape', () => {
    const [B, H, Hkv, T, D] = [2, 6, 2, 5, 4];
    const masks: (Tensor | null)[] = [
      null,
      causalBias(T, T, 0, 'float64'), // [T, T]
      q.maximum(q.rand([B, H, T, T]).gt(0.3), causalMask(T, T)), // per query head, uint8 (the diagonal always visible)
      q.randn([B, 1, T, T], { dtype: 'float64' }), // shared by the heads
    ];
    for (const attnMask of masks) {
      const leaves = [f64([B, H, T, D]), f64([B, Hkv, T, D]), f64([B, Hkv, T, 3])].map((t) => t.requiresGrad_());
      const [qq, k, v] = leaves as [Tensor, Tensor, Tensor];
      const grouped = scaledDotProductAttention(qq, k, v, { attnMask, enableGqa: true });
      const repeated = scaledDotProductAttention(qq, repeatKv(k, H / Hkv), repeatKv(v, H / Hkv), { attnMask });
      expect(grouped.shape).toEqual([B, H, T, 3]);
      expect(maxDiff(grouped, repeated)).toBeLessThan(1e-12);
      const w = f64([B, H, T, 3]);
      const ga = q.gradOf([grouped.mul(w).sum()], leaves);
      const gb = q.gradOf([repeated.mul(w).sum()], leaves);
      ga.forEach((g, i) => expect(maxDiff(g!, gb[i]!)).toBeLessThan(1e-12));
    }
    expect(() => scaledDotProductAttention(f64([1, 5, 3, 4]), f64([1, 2, 3, 4]), f64([1, 2, 3, 4]), { enableGqa: true })).toThrow(/enableGqa.*divide the query heads \(5\)/);
  });

  it('gives [B, T, dim], reaches every parameter and passes gradcheck with RoPE and GQA', () => {
    const a = tiny({ numKvHeads: 2, causal: true, rope: true, bias: true });
    const y = a.forward(q.randn([2, 5, 8]));
    expect(y.shape).toEqual([2, 5, 8]);
    expect(paramsWithoutGrad(a, y)).toEqual([]);
    const small = new MultiHeadAttention(4, 2, { numKvHeads: 1, causal: true, rope: true }).double();
    gradcheckModule(small, (x) => small.forward(x), [f64([1, 3, 4])]);
  });

  it('the causal mask keeps outputs at earlier positions independent of later tokens', () => {
    const a = tiny({ causal: true, rope: true });
    const x = q.randn([1, 6, 8]);
    const x2 = q.cat([x.narrow(1, 0, 4), q.randn([1, 2, 8])], 1);
    expect(maxDiff(a.forward(x).narrow(1, 0, 4), a.forward(x2).narrow(1, 0, 4))).toBeLessThan(1e-6);
    const open = tiny({ causal: false });
    expect(maxDiff(open.forward(x).narrow(1, 0, 4), open.forward(x2).narrow(1, 0, 4))).toBeGreaterThan(1e-4);
  });

  it('decoding token by token with a KV cache reproduces the full causal forward', () => {
    const a = tiny({ numKvHeads: 2, causal: true, rope: { theta: 500 } });
    const x = q.randn([2, 7, 8]);
    const full = a.forward(x);
    const cache = new KVCache(16);
    const steps = q.noGrad(() => [a.forward(x.narrow(1, 0, 3), { cache }), ...[3, 4, 5, 6].map((t) => a.forward(x.narrow(1, t, 1), { cache }))]);
    expect(cache.length).toBe(7);
    expect(maxDiff(q.cat(steps, 1), full)).toBeLessThan(1e-5);
    cache.reset();
    expect(() => q.noGrad(() => a.forward(q.randn([1, 2, 8]), { cache }))).toThrow(/KVCache.update: keys \[1, 2, 2, 2\] .* must both be \[2, 2, 2, 2\]/);
  });

  it('grouped-query attention equals full multi-head attention with each KV head repeated', () => {
    const gqa = tiny({ numKvHeads: 2, causal: true });
    const mha = tiny({ numKvHeads: 4, causal: true });
    const rep = (w: Tensor) => w.view(2, 1, 2, 8).expand(2, 2, 2, 8).reshape(8, 8); // [Hkv·hd, dim] → [H·hd, dim]
    q.noGrad(() => {
      mha.qProj.weight.copy_(gqa.qProj.weight);
      mha.oProj.weight.copy_(gqa.oProj.weight);
      mha.kProj.weight.copy_(rep(gqa.kProj.weight));
      mha.vProj.weight.copy_(rep(gqa.vProj.weight));
    });
    const x = q.randn([2, 4, 8]);
    expect(maxDiff(gqa.forward(x), mha.forward(x))).toBeLessThan(1e-6);
  });

  it('rejects head counts that do not divide', () => {
    expect(() => new MultiHeadAttention(8, 3)).toThrow('MultiHeadAttention: dim 8 must be divisible by numHeads 3');
    expect(() => new MultiHeadAttention(8, 4, { numKvHeads: 3 })).toThrow('numHeads 4 must be divisible by numKvHeads 3');
    expect(() => tiny().forward(q.randn([4, 8]))).toThrow('MultiHeadAttention: expected input [B, T, 8], got [4, 8]');
  });
});

describe('setParameter helper', () => {
  it('swaps a nested parameter through its field', () => {
    const m: Module = new MLP(2, 3);
    const w = q.zeros([3, 2]);
    setParameter(m, 'fc1.weight', w);
    expect(m.parameters()[0]).toBe(w);
  });
});
