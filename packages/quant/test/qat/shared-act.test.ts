/**
 * @file Sharing of dynamic activation quantizations between layers that read one tensor (q/k/v,
 * gate/up), the max/min form of the absmax scale, and the cached `initialized` flag.
 */
import fc from 'fast-check';
import { abs, amax, clamp, div, Generator, linear, noGrad, randint, randn, tensor, type Tensor } from '@qgrad/core';
import { arb } from '@qgrad/core/testing';
import { AdamW, Linear, Llama, Sequential, trainStep, type LlamaConfig } from '@qgrad/nn';
import { ActQuantizer, dataScale, MIN_STEP, prepareQAT, QuantLinear, resolveQuantizer, WeightQuantizer, type ActQuantConfig } from '@qgrad/quant';
import { describe, expect, it } from 'vitest';

const bits = (t: Tensor) => Array.from(new Uint32Array(Float32Array.from(t.dataSync()).buffer));
const A8: ActQuantConfig = { bits: 8, granularity: 'token' };

const cfg: LlamaConfig = { vocabSize: 32, dim: 16, nLayers: 2, nHeads: 2, nKvHeads: 1, hiddenDim: 48, maxSeqLen: 8, normEps: 1e-5, ropeTheta: 10000, tieWordEmbeddings: false };

/** One QAT training step of a small Llama: its loss and every parameter gradient, as bit patterns. */
function llamaStep(share: boolean): { loss: number[]; grads: Map<string, number[]>; quantizers: ActQuantizer[] } {
  const g = new Generator(3);
  const model = new Llama(cfg, { generator: g });
  prepareQAT(model, { default: { weight: { bits: 4, granularity: { group: 8 } }, input: { ...A8, share } }, types: ['Linear'] });
  const idx = randint(0, cfg.vocabSize, [2, 8], { generator: g });
  const loss = model.loss(idx.narrow(1, 0, 7).contiguous(), idx.narrow(1, 1, 7).contiguous());
  loss.backward();
  const grads = new Map<string, number[]>();
  for (const [name, p] of model.namedParameters()) grads.set(name, bits(p.grad!));
  const quantizers = [...model.modules()].filter((m): m is ActQuantizer => m instanceof ActQuantizer);
  return { loss: bits(loss), grads, quantizers };
}

describe('shared dynamic activation quantization', () => {
  it('retires a shared result whose buffer trainStep recycled: one input reused across steps trains as without sharing', () => {
    const run = (share: boolean) => {
      const g = new Generator(5);
      const model = new Sequential(new Linear(64, 64, { generator: g }), new Linear(64, 8, { generator: g }));
      prepareQAT(model, { default: { weight: { bits: 4 }, input: { ...A8, share } }, types: ['Linear'] });
      const opt = new AdamW(model.parameters(), { lr: 1e-2 });
      const x = randn([64, 64], { generator: g }); // the same batch every step (no grad: memoised by version only)
      return [0, 1, 2].map(() => trainStep(model, opt, () => {
        const l = model.forward(x).square().mean();
        opt.zeroGrad();
        l.backward();
        opt.step();
        return l.item();
      }));
    };
    expect(run(true)).toEqual(run(false));
  });

  it('gives a Llama the same loss and gradients, bit for bit, as quantizing each projection input separately', () => {
    const shared = llamaStep(true);
    const separate = llamaStep(false);
    expect(shared.quantizers.every((q) => q.share)).toBe(true);
    expect(separate.quantizers.every((q) => !q.share)).toBe(true);
    expect(shared.loss).toEqual(separate.loss);
    expect([...shared.grads.keys()]).toEqual([...separate.grads.keys()]);
    for (const [name, g] of shared.grads) expect(g, name).toEqual(separate.grads.get(name));
  });

  it('hands the q/k/v-style readers of one tensor the same quantized tensor, and sums their gradients into it', () => {
    const g = new Generator(5);
    const x = randn([3, 4, 8], { generator: g }).requiresGrad_();
    const layers = [0, 1, 2].map(() => QuantLinear.from(new Linear(8, 6, { generator: g }), { input: A8 }));
    const xq = layers.map((l) => l.inputQuantizer!.forward(x));
    expect(xq[1]).toBe(xq[0]);
    expect(xq[2]).toBe(xq[0]);
    const loss = layers.map((l) => l.forward(x).square().sum()).reduce((a, b) => a.add(b));
    loss.backward();
    // reference: three unshared quantizations of a copy of x
    const x2 = x.detach().clone().requiresGrad_();
    const ref = layers.map((l) => linear(new ActQuantizer({ ...A8, share: false }).forward(x2), l.weight, l.bias).square().sum()).reduce((a, b) => a.add(b));
    ref.backward();
    expect(bits(loss)).toEqual(bits(ref));
    expect(bits(x.grad!)).toEqual(bits(x2.grad!));
  });

  it('does not share between different grids, estimators or train/eval states', () => {
    const x = randn([4, 8], { generator: new Generator(6) });
    const base = new ActQuantizer(A8);
    const out = base.forward(x);
    for (const other of [
      new ActQuantizer({ ...A8, bits: 4 }), new ActQuantizer({ ...A8, signed: false }), new ActQuantizer({ bits: 8, scale: 'dynamic' }),
      new ActQuantizer({ ...A8, estimator: 'clipped-ste' }), new ActQuantizer({ ...A8, rounding: 'halfAway' }), new ActQuantizer(A8).eval(),
    ]) {
      expect(other.forward(x)).not.toBe(out);
    }
    expect(new ActQuantizer(A8).forward(x)).toBe(out);
  });

  it('recomputes after an in-place write to the input or to the shared output', () => {
    const x = randn([4, 8], { generator: new Generator(7) });
    const a = new ActQuantizer(A8);
    const b = new ActQuantizer(A8);
    const first = a.forward(x);
    noGrad(() => x.mul_(3));
    const second = b.forward(x);
    expect(second).not.toBe(first);
    expect(bits(second)).toEqual(bits(new ActQuantizer({ ...A8, share: false }).forward(x)));
    noGrad(() => second.add_(1));
    const third = a.forward(x);
    expect(third).not.toBe(second);
    expect(bits(third)).toEqual(bits(new ActQuantizer({ ...A8, share: false }).forward(x)));
  });

  it('records a new node when the earlier result was made without grad or was freed by a backward', () => {
    const x = randn([4, 8], { generator: new Generator(8) }).requiresGrad_();
    const a = new ActQuantizer(A8);
    const untracked = noGrad(() => a.forward(x));
    expect(untracked.requiresGrad).toBe(false);
    const tracked = a.forward(x);
    expect(tracked).not.toBe(untracked);
    expect(tracked.requiresGrad).toBe(true);
    expect(a.forward(x)).toBe(tracked);
    tracked.sum().backward(); // frees tracked's node
    const again = a.forward(x);
    expect(again).not.toBe(tracked);
    again.mul(2).sum().backward();
    expect(Array.from(x.grad!.dataSync())).toEqual(new Array(32).fill(3)); // 1 + 2: straight-through both times
  });

  it('never shares stochastic rounding (each call draws its own noise)', () => {
    const x = randn([4, 8], { generator: new Generator(9) });
    const a = new ActQuantizer({ ...A8, estimator: 'stochastic' });
    expect(a.forward(x)).not.toBe(a.forward(x));
  });

  it('equals a fresh unshared quantization after any sequence of reads and in-place writes', () => {
    const configs: ActQuantConfig[] = [A8, { bits: 4, granularity: 'token' }, { bits: 8, scale: 'dynamic' }, { bits: 4, granularity: 'token', signed: false }];
    fc.assert(
      fc.property(
        arb.tensorOf(arb.shape({ minRank: 1, maxRank: 3, maxDim: 6 })),
        fc.array(fc.record({ q: fc.nat(configs.length - 1), write: fc.boolean() }), { minLength: 1, maxLength: 8 }),
        (x0, steps) => {
          const x = x0.clone(); // written in place below
          const qs = configs.map((c) => [new ActQuantizer(c), new ActQuantizer(c)] as const);
          steps.forEach(({ q, write }, i) => {
            if (write) noGrad(() => x.add_(0.25 * (i + 1)));
            const got = qs[q]![i % 2]!.forward(x);
            expect(bits(got)).toEqual(bits(new ActQuantizer({ ...configs[q]!, share: false }).forward(x)));
          });
        },
      ),
      { numRuns: 60 },
    );
  });
});

/** The dynamic absmax scale of an int grid, per token or per tensor. */
const dynamicScale = (x: Tensor, granularity: 'token' | 'tensor', signed: boolean, bits: number) => {
  const plan = resolveQuantizer({ bits, signed, granularity, scale: 'dynamic' }, 'input', 'test');
  return dataScale(plan, granularity === 'token' ? x.reshape([-1, x.shape[x.ndim - 1]!]) : x.reshape([1, -1])).scale;
};

describe('dynamic absmax scales', () => {
  it('equal max(|x|, 1e-5)/qmax per token and per tensor, bit for bit', () => {
    fc.assert(
      fc.property(arb.tensorOf(arb.shape({ minRank: 1, maxRank: 3, maxDim: 7 })), fc.boolean(), fc.integer({ min: 2, max: 8 }), (x, signed, b) => {
        const qmax = signed ? 2 ** (b - 1) - 1 : 2 ** b - 1;
        const a = signed ? abs(x) : x;
        expect(bits(dynamicScale(x, 'token', signed, b))).toEqual(bits(div(clamp(amax(a, -1, true), MIN_STEP), qmax)));
        expect(bits(dynamicScale(x, 'tensor', signed, b))).toEqual(bits(div(clamp(amax(a).reshape([1]), MIN_STEP), qmax)));
      }),
      { numRuns: 80 },
    );
  });

  it('clamps all-zero rows (either sign of zero) to the smallest step', () => {
    const s = dynamicScale(tensor([[0, -0], [-0, -0], [0, 2.54]]), 'token', true, 8);
    expect(Array.from(s.dataSync())).toEqual([MIN_STEP / 127, MIN_STEP / 127, 2.54 / 127].map(Math.fround));
  });
});

describe('the initialized flag', () => {
  it('is read again after it is cleared, so scales re-initialise (weights and learned inputs)', () => {
    const w = randn([4, 8], { generator: new Generator(10) });
    const wq = new WeightQuantizer(w.shape, { bits: 4 });
    wq.forward(w);
    wq.forward(w); // now seen set
    const before = bits(wq.scale!);
    noGrad(() => {
      w.mul_(4);
      wq.initialized.fill_(0);
    });
    wq.forward(w);
    expect(bits(wq.scale!)).not.toEqual(before);
    expect(wq.isInitialized).toBe(true);

    const aq = new ActQuantizer({ bits: 8 });
    const x = randn([4, 8], { generator: new Generator(11) });
    aq.forward(x);
    aq.forward(x); // now seen set
    const s0 = aq.scale!.item();
    aq.loadStateDict({ ...aq.stateDict(), initialized: tensor([0]) });
    expect(aq.isInitialized).toBe(false);
    aq.forward(x.mul(10));
    expect(aq.scale!.item()).toBeCloseTo(s0 * 10, 4);
  });
});
