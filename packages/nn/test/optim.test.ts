import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import type { Tensor } from '@qgrad/core';
import { assertAllclose } from '@qgrad/core/testing';
import {
  Adam, AdamW, EMA, trainStep, LambdaLR, Linear, MLP, Muon, SGD, Sequential, clipGradNorm, clipGradValue, cosineSchedule, linearWarmup,
  wsdSchedule, chainSchedules, multiplySchedules, zeropowerViaNewtonSchulz5, type Optimizer,
} from '@qgrad/nn';

const P0 = [[0.5, -1.0, 2.0], [0.1, 0.3, -0.7]];
const GRADS = [
  [[0.2, -0.4, 1.0], [0.05, -0.3, 0.6]],
  [[-0.1, 0.5, 0.3], [0.2, 0.1, -0.2]],
  [[0.3, 0.3, -0.9], [-0.4, 0.0, 0.25]],
];
const f64 = (v: number[][]) => q.tensor(v, { dtype: 'float64' });

/** Runs three steps with the fixed gradients on a float64 copy of P0; returns the flat result. */
function trajectory(make: (p: Tensor[]) => Optimizer<object>, transpose = false): number[] {
  const p = (transpose ? f64(P0).t().contiguous() : f64(P0)).requiresGrad_();
  const opt = make([p]);
  for (const g of GRADS) {
    p.grad = transpose ? f64(g).t().contiguous() : f64(g);
    opt.step();
  }
  return Array.from(p.dataSync());
}

// ---------------------------------------------------------------- plain-number re-derivations
function sgdByHand(lr: number, mu: number, damp: number, wd: number, nesterov: boolean): number[] {
  const p = P0.flat();
  const buf: number[] = [];
  GRADS.forEach((gs, t) => {
    gs.flat().forEach((g0, i) => {
      let g = g0 + wd * p[i]!;
      buf[i] = t === 0 ? g : mu * buf[i]! + (1 - damp) * g;
      g = nesterov ? g + mu * buf[i]! : buf[i]!;
      p[i] = p[i]! - lr * g;
    });
  });
  return p;
}

function adamByHand(lr: number, b1: number, b2: number, eps: number, wd: number, decoupled: boolean): number[] {
  const p = P0.flat();
  const m = p.map(() => 0);
  const v = p.map(() => 0);
  GRADS.forEach((gs, t) => {
    gs.flat().forEach((g0, i) => {
      if (decoupled) p[i] = p[i]! * (1 - lr * wd);
      const g = decoupled ? g0 : g0 + wd * p[i]!;
      m[i] = b1 * m[i]! + (1 - b1) * g;
      v[i] = b2 * v[i]! + (1 - b2) * g * g;
      const mHat = m[i]! / (1 - b1 ** (t + 1));
      const denom = Math.sqrt(v[i]!) / Math.sqrt(1 - b2 ** (t + 1)) + eps;
      p[i] = p[i]! - (lr * mHat) / denom;
    });
  });
  return p;
}

// from scripts/golden/nn_optim_reference.py (torch 1.13, float64)
const TORCH = {
  sgd: [0.43330239839499995, -0.9988804967899999, 1.74843467738, 0.08775171886899999, 0.362510793057, -0.846990009033],
  nesterov: [0.3974721733905, -1.047136046781, 1.730867216382, 0.1039251458191, 0.37338683611229995, -0.8934701623387],
  adam: [0.4777410915837485, -0.9921991449339681, 1.9787237300419198, 0.0837551292064251, 0.31316555012849867, -0.7156124886217484],
  adamAms: [0.481380774189044, -0.9966885421049013, 1.9816798961758026, 0.08421245566482242, 0.31605879949818394, -0.7186740938386387],
  adamw: [0.4799044058572829, -0.9937093350781858, 1.9756719138163774, 0.0839416864362365, 0.3152716507934569, -0.7165526492274448],
  muonWide: [0.48068750389530707, -1.014119367651123, 1.9649698838882201, 0.10366025524124085, 0.3103891169074456, -0.715002546526644],
  muonTall: [0.4770200064859332, 0.10461745624347912, -1.0186383972058572, 0.31312774987703706, 1.9597885931235492, -0.7193163337778171],
};
const tight = { rtol: 1e-12, atol: 1e-14 };

describe('update formulas', () => {
  it('SGD with momentum, dampening and weight decay matches the hand-computed steps and PyTorch', () => {
    const got = trajectory((p) => new SGD(p, { lr: 0.1, momentum: 0.9, dampening: 0.1, weightDecay: 0.01 }));
    assertAllclose(got, sgdByHand(0.1, 0.9, 0.1, 0.01, false), tight);
    assertAllclose(got, TORCH.sgd, tight);
  });

  it('SGD with Nesterov momentum matches the hand-computed steps and PyTorch', () => {
    const got = trajectory((p) => new SGD(p, { lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 0.01 }));
    assertAllclose(got, sgdByHand(0.1, 0.9, 0, 0.01, true), tight);
    assertAllclose(got, TORCH.nesterov, tight);
  });

  it('plain SGD takes p − lr·g', () => {
    const p = q.tensor([1, 2], { dtype: 'float64', requiresGrad: true });
    p.grad = q.tensor([0.5, -1], { dtype: 'float64' });
    new SGD([p], { lr: 0.1 }).step();
    expect(Array.from(p.dataSync())).toEqual([1 - 0.05, 2 + 0.1]);
  });

  it('Adam with L2 weight decay matches the hand-computed steps and PyTorch', () => {
    const got = trajectory((p) => new Adam(p, { lr: 0.01, betas: [0.8, 0.9], eps: 1e-6, weightDecay: 0.1 }));
    assertAllclose(got, adamByHand(0.01, 0.8, 0.9, 1e-6, 0.1, false), tight);
    assertAllclose(got, TORCH.adam, tight);
  });

  it("Adam's first step moves every weight by about lr·sign(g)", () => {
    const p = q.tensor([1, 2, 3], { dtype: 'float64', requiresGrad: true });
    p.grad = q.tensor([0.5, -2, 1e-3], { dtype: 'float64' });
    new Adam([p], { lr: 0.1, eps: 1e-8 }).step();
    assertAllclose(p.dataSync(), [1 - 0.1 * (0.5 / (0.5 + 1e-8)), 2 + 0.1 * (2 / (2 + 1e-8)), 3 - 0.1 * (1e-3 / (1e-3 + 1e-8))], tight);
  });

  it('maximize ascends: the fused step (maximize: true) equals the step on the negated gradients, and the op-by-op AMSGrad path agrees with its own negation', () => {
    const negated = (make: (p: Tensor[]) => Optimizer<object>) => {
      const p = f64(P0).requiresGrad_();
      const opt = make([p]);
      for (const g of GRADS) {
        p.grad = f64(g).neg();
        opt.step();
      }
      return Array.from(p.dataSync());
    };
    for (const Opt of [Adam, AdamW])
      for (const amsgrad of [false, true]) {
        const opts = { lr: 0.1, weightDecay: 0.05, amsgrad };
        expect(trajectory((p) => new Opt(p, { ...opts, maximize: true }))).toEqual(negated((p) => new Opt(p, opts)));
      }
  });

  it('AMSGrad matches PyTorch', () => {
    assertAllclose(trajectory((p) => new Adam(p, { lr: 0.01, betas: [0.8, 0.9], eps: 1e-6, amsgrad: true })), TORCH.adamAms, tight);
  });

  it('AdamW decays decoupled from the gradient and matches the hand-computed steps and PyTorch', () => {
    const got = trajectory((p) => new AdamW(p, { lr: 0.01, betas: [0.8, 0.9], eps: 1e-6, weightDecay: 0.1 }));
    assertAllclose(got, adamByHand(0.01, 0.8, 0.9, 1e-6, 0.1, true), tight);
    assertAllclose(got, TORCH.adamw, tight);
    expect(new AdamW([q.zeros([1], { requiresGrad: true })]).defaults.weightDecay).toBe(0.01);
  });

  it('Muon matches the reference update on wide and tall matrices', () => {
    assertAllclose(trajectory((p) => new Muon(p, { lr: 0.02, weightDecay: 0.1 })), TORCH.muonWide, { rtol: 1e-10, atol: 1e-12 });
    assertAllclose(trajectory((p) => new Muon(p, { lr: 0.02, weightDecay: 0.1 }), true), TORCH.muonTall, { rtol: 1e-10, atol: 1e-12 });
  });

  it('Newton–Schulz pushes all singular values of the momentum near 1', () => {
    const g = q.randn([4, 8], { dtype: 'float64', generator: new q.Generator(2) });
    const x = zeropowerViaNewtonSchulz5(g);
    expect(x.shape).toEqual([4, 8]);
    // X Xᵀ = U Σ² Uᵀ: its diagonal lies within the squared singular-value band (~[0.5, 1.45])
    const d = (x.matmul(x.t()).toArray() as number[][]).map((r, i) => r[i]!);
    for (const v of d) expect(v).toBeGreaterThan(0.4), expect(v).toBeLessThan(1.5);
  });

  it("Muon's auxiliary Adam updates vectors: p − lr·m̂/(√v̂ + ε), with ε outside the bias correction", () => {
    const b = q.tensor([1, -1], { dtype: 'float64', requiresGrad: true });
    const opt = new Muon([b], { adamLr: 0.1, adamEps: 0.5 });
    b.grad = q.tensor([2, -4], { dtype: 'float64' });
    opt.step();
    assertAllclose(b.dataSync(), [1 - 0.1 * (2 / (2 + 0.5)), -1 + 0.1 * (4 / (4 + 0.5))], tight);
  });
  it('Muon flattens conv kernels to [out, in·kh·kw] and sends biases to the auxiliary Adam', () => {
    const w = q.randn([4, 2, 3, 3], { requiresGrad: true });
    const b = q.zeros([4], { requiresGrad: true });
    const opt = new Muon([w, b], { lr: 0.1 });
    const w0 = w.clone();
    w.grad = q.randn([4, 2, 3, 3]);
    b.grad = q.ones([4]);
    opt.step();
    const delta = w.sub(w0).reshape(4, 18).div(-0.1); // the orthogonalised update
    const gram = delta.matmul(delta.t());
    expect(gram.shape).toEqual([4, 4]);
    for (let i = 0; i < 4; i++) expect(gram.select(0, i).select(0, i).item()).toBeGreaterThan(0.4);
    expect(Array.from(b.dataSync()).every((v) => Math.abs(v + 3e-4) < 1e-9)).toBe(true);
    expect(() => new Muon([b], { useMuon: true }).step()).toThrow('Muon: parameter of shape [4] is not a matrix; put it in a group with useMuon: false');
  });
});

describe('parameter groups, zeroGrad and checks', () => {
  it('each group uses its own options, defaults filling the rest', () => {
    const a = q.tensor([1], { dtype: 'float64', requiresGrad: true });
    const b = q.tensor([1], { dtype: 'float64', requiresGrad: true });
    const opt = new SGD([{ params: [a] }, { params: [b], lr: 0.5 }], { lr: 0.1 });
    a.grad = q.tensor([1], { dtype: 'float64' });
    b.grad = q.tensor([1], { dtype: 'float64' });
    opt.step();
    expect(a.item()).toBeCloseTo(0.9, 12);
    expect(b.item()).toBeCloseTo(0.5, 12);
    opt.zeroGrad();
    expect(a.grad).toBeNull();
    expect(b.grad).toBeNull();
  });

  it('parameters without a gradient are left alone', () => {
    const a = q.tensor([1], { requiresGrad: true });
    new Adam([a]).step();
    expect(a.item()).toBe(1);
  });

  it('rejects duplicated parameters, non-leaves, and bad hyperparameters', () => {
    const a = q.tensor([1], { requiresGrad: true });
    expect(() => new SGD([{ params: [a] }, { params: [a] }])).toThrow('SGD: a parameter of shape [1] appears in more than one parameter group');
    expect(() => new SGD([a.mul(2)])).toThrow('SGD: can only optimize leaf tensors; got a non-leaf of shape [1]');
    expect(() => new Adam([a], { betas: [0.9, 1] })).toThrow('Adam: invalid beta parameter at index 1: 1');
    expect(() => new SGD([a], { nesterov: true })).toThrow('SGD: Nesterov momentum requires a momentum and zero dampening');
  });
});

describe('optimizer state save and restore', () => {
  const cases: [string, (ps: Tensor[]) => Optimizer<object>][] = [
    ['SGD', (ps) => new SGD(ps, { lr: 0.05, momentum: 0.9, nesterov: true })],
    ['Adam', (ps) => new Adam(ps, { lr: 1e-2, amsgrad: true })],
    ['AdamW', (ps) => new AdamW(ps, { lr: 1e-2 })],
    ['Muon', (ps) => new Muon(ps, { lr: 0.02, adamLr: 1e-2 })],
  ];
  for (const [name, make] of cases) {
    it(`${name} resumes from a checkpoint on exactly the trajectory it would have followed`, () => {
      const x = q.randn([8, 3], { generator: new q.Generator(1) });
      const y = q.randn([8, 2], { generator: new q.Generator(2) });
      const train = (model: MLP, opt: Optimizer<object>, sched: LambdaLR, n: number) => {
        for (let i = 0; i < n; i++) {
          opt.zeroGrad();
          model.forward(x).sub(y).square().mean().backward();
          opt.step();
          sched.step();
        }
      };
      const a = new MLP(3, 4, { outFeatures: 2, generator: new q.Generator(3) });
      const optA = make(a.parameters());
      const schedA = new LambdaLR(optA, cosineSchedule({ warmupSteps: 2, totalSteps: 8 }));
      train(a, optA, schedA, 3);
      const ckpt = { model: q.deserializeSafetensors(q.serializeSafetensors(a.stateDict())).tensors, opt: optA.stateDict(), sched: schedA.stateDict() };
      train(a, optA, schedA, 3);

      const b = new MLP(3, 4, { outFeatures: 2, generator: new q.Generator(99) });
      const optB = make(b.parameters());
      const schedB = new LambdaLR(optB, cosineSchedule({ warmupSteps: 2, totalSteps: 8 }));
      b.loadStateDict(ckpt.model);
      optB.loadStateDict(ckpt.opt);
      schedB.loadStateDict(ckpt.sched);
      train(b, optB, schedB, 3);
      for (const [k, t] of Object.entries(a.stateDict())) expect(Array.from(b.stateDict()[k]!.dataSync()), k).toEqual(Array.from(t.dataSync()));
      expect(schedB.getLastLr()).toEqual(schedA.getLastLr());
    });
  }

  it('a state dict is a snapshot: later steps do not change it', () => {
    const p = q.tensor([1, 2], { requiresGrad: true });
    const opt = new Adam([p]);
    p.grad = q.tensor([1, 1]);
    opt.step();
    const sd = opt.stateDict();
    const before = Array.from((sd.state[0]!.expAvg as Tensor).dataSync());
    opt.step();
    expect(Array.from((sd.state[0]!.expAvg as Tensor).dataSync())).toEqual(before);
    expect(sd.state[0]!.step).toBe(1);
    expect(sd.paramGroups[0]!.params).toEqual([0]);
  });

  it('loading a state dict for different parameters fails with a clear message', () => {
    const opt = new Adam([q.zeros([2], { requiresGrad: true })]);
    const other = new Adam([q.zeros([3], { requiresGrad: true }), q.zeros([1], { requiresGrad: true })]);
    expect(() => opt.loadStateDict(other.stateDict())).toThrow('Adam.loadStateDict: group 0 has 2 parameters in the checkpoint but 1 here');
  });
});

describe('gradient clipping', () => {
  it('clipGradNorm returns the total norm and scales gradients down to maxNorm', () => {
    const a = q.zeros([2], { dtype: 'float64', requiresGrad: true });
    const b = q.zeros([1], { dtype: 'float64', requiresGrad: true });
    a.grad = q.tensor([3, 0], { dtype: 'float64' });
    b.grad = q.tensor([4], { dtype: 'float64' });
    expect(clipGradNorm([a, b], 1)).toBeCloseTo(5, 12);
    assertAllclose([...a.grad.dataSync(), ...b.grad.dataSync()], [3 / (5 + 1e-6), 0, 4 / (5 + 1e-6)], tight);
    expect(clipGradNorm([a, b], 10)).toBeCloseTo(1, 5);
    assertAllclose([...a.grad.dataSync(), ...b.grad.dataSync()], [3 / (5 + 1e-6), 0, 4 / (5 + 1e-6)], tight);
  });

  it('clipGradNorm with the infinity norm and the non-finite check', () => {
    const a = q.zeros([3], { requiresGrad: true });
    a.grad = q.tensor([1, -7, 2]);
    expect(clipGradNorm([a], 100, { normType: Infinity })).toBe(7);
    a.grad = q.tensor([1, NaN, 2]);
    expect(() => clipGradNorm([a], 1, { errorIfNonfinite: true })).toThrow(/clipGradNorm: the total norm of order 2 of the gradients is non-finite \(NaN\)/);
  });

  it('clipGradValue clamps each element', () => {
    const a = q.zeros([3], { requiresGrad: true });
    a.grad = q.tensor([1, -7, 0.5]);
    clipGradValue([a], 0.8);
    expect(Array.from(a.grad.dataSync())).toEqual([Math.fround(0.8), -Math.fround(0.8), 0.5]);
  });
});

describe('learning-rate schedules', () => {
  it('linear warmup rises from 0 to 1 and stays', () => {
    const f = linearWarmup(4);
    expect([0, 1, 2, 4, 10].map(f)).toEqual([0, 0.25, 0.5, 1, 1]);
  });

  it('cosine reaches half at mid-decay and its floor at totalSteps', () => {
    const f = cosineSchedule({ warmupSteps: 10, totalSteps: 110, minLrRatio: 0.1 });
    expect(f(5)).toBe(0.5);
    expect(f(10)).toBe(1);
    expect(f(60)).toBeCloseTo(0.55, 12);
    expect(f(110)).toBeCloseTo(0.1, 12);
    expect(f(500)).toBeCloseTo(0.1, 12);
  });

  it('warmup-stable-decay holds 1 then cools down linearly', () => {
    const f = wsdSchedule({ warmupSteps: 10, totalSteps: 100, decaySteps: 20 });
    expect([0, 5, 10, 50, 79, 80, 90, 100, 120].map(f)).toEqual([0, 0.5, 1, 1, 1, 1, 0.5, 0, 0]);
    expect(() => wsdSchedule({ warmupSteps: 50, totalSteps: 60, decaySteps: 20 })).toThrow(/do not fit/);
  });

  it('schedules compose by product and by chaining', () => {
    const f = chainSchedules([linearWarmup(2), () => 0.5], [2]);
    expect([0, 1, 2, 3].map(f)).toEqual([0, 0.5, 0.5, 0.5]);
    expect(multiplySchedules(() => 0.5, linearWarmup(2))(1)).toBe(0.25);
  });

  it("LambdaLR scales each group's base rate (and Muon's adamLr) at every step", () => {
    const a = q.zeros([2, 2], { requiresGrad: true });
    const b = q.zeros([2], { requiresGrad: true });
    const opt = new Muon([{ params: [a] }, { params: [b], lr: 0.2 }], { lr: 0.1, adamLr: 0.01 });
    const sched = new LambdaLR(opt, linearWarmup(4));
    expect(sched.getLastLr()).toEqual([0, 0]);
    sched.step();
    sched.step();
    expect(sched.getLastLr()).toEqual([0.05, 0.1]);
    expect(opt.paramGroups[0]!.adamLr).toBe(0.005);
    expect(() => new LambdaLR(opt, [linearWarmup(1)])).toThrow('LambdaLR: expected 2 lr lambdas (one per group), got 1');
  });
});

describe('EMA of weights', () => {
  it('tracks decay·shadow + (1 − decay)·param and swaps in and out', () => {
    const p = q.tensor([0, 10], { dtype: 'float64', requiresGrad: true });
    const ema = new EMA([p], { decay: 0.9 });
    q.noGrad(() => p.fill_(1));
    ema.update();
    assertAllclose(ema.shadow[0]!.dataSync(), [0.1, 9.1], tight);
    ema.store();
    ema.copyTo();
    assertAllclose(p.dataSync(), [0.1, 9.1], tight);
    ema.restore();
    expect(Array.from(p.dataSync())).toEqual([1, 1]);
  });

  it('warmup uses min(decay, (1 + n)/(10 + n))', () => {
    const ema = new EMA([q.zeros([1], { requiresGrad: true })], { decay: 0.999, warmup: true });
    expect(ema.currentDecay()).toBeCloseTo(0.1, 12);
    ema.update();
    expect(ema.currentDecay()).toBeCloseTo(2 / 11, 12);
  });

  it('a model trained with EMA keeps the average of its weights', () => {
    const m = new Sequential(new Linear(2, 1));
    const ema = new EMA(m.parameters(), { decay: 0.5 });
    const opt = new SGD(m.parameters(), { lr: 0.1 });
    m.forward(q.ones([1, 2])).sum().backward();
    opt.step();
    ema.update();
    const sd = ema.stateDict();
    expect(sd.numUpdates).toBe(1);
    const ema2 = new EMA(m.parameters(), { decay: 0.5 });
    ema2.loadStateDict(sd);
    expect(Array.from(ema2.shadow[0]!.dataSync())).toEqual(Array.from(ema.shadow[0]!.dataSync()));
  });
});

describe('trainStep', () => {
  const setup = () => {
    q.manualSeed(5);
    const model = new Sequential(new Linear(64, 96), new Linear(96, 10));
    const opt = new AdamW(model.parameters(), { lr: 1e-2 });
    const x = q.randn([64, 64]);
    const y = q.tensor(Array.from({ length: 64 }, (_, i) => i % 10), { dtype: 'int32' });
    return { model, opt, x, y };
  };
  const step = ({ model, opt, x, y }: ReturnType<typeof setup>) => () => {
    const loss = q.crossEntropy(model.forward(x), y);
    opt.zeroGrad();
    loss.backward();
    opt.step();
    return loss.item();
  };

  it('gives the same losses and parameters as plain steps while recycling the activations', () => {
    const a = setup();
    const b = setup();
    for (let s = 0; s < 4; s++) expect(trainStep(b.model, b.opt, step(b))).toBe(step(a)());
    a.model.parameters().forEach((p, i) => expect([...b.model.parameters()[i]!.dataSync()]).toEqual([...p.dataSync()]));
  });

  it('keeps returned tensors, model gradients and optimizer state; other tensors made inside throw when read', () => {
    const s = setup();
    let hidden: Tensor | null = null;
    const logits = trainStep(s.model, s.opt, () => {
      hidden = s.model.forward(s.x).relu();
      const out = s.model.forward(s.x);
      q.crossEntropy(out, s.y).backward();
      s.opt.step();
      return out;
    });
    expect(logits.shape).toEqual([64, 10]);
    expect(s.model.parameters()[0]!.grad!.shape).toEqual([96, 64]);
    expect(() => hidden!.dataSync()).toThrow(/dataSync: a float32 tensor of shape \[64, 10\] made by '\w+' was used after the trainStep that created it ended/);
    expect(trainStep(s.model, s.opt, step(s))).toBeGreaterThan(0); // optimizer state survived
  });

  it('holds live buffers flat over steps: activations and last step\'s gradients are released', () => {
    const s = setup();
    const counts: number[] = [];
    for (let k = 0; k < 5; k++) {
      trainStep(s.model, s.opt, step(s));
      counts.push(q.memory().buffers);
    }
    expect(new Set(counts).size).toBe(1);
  });

  it('makes await data() of a tensor from an earlier step throw as dataSync() does, instead of returning another tensor\'s values', async () => {
    const s = setup();
    let kept: Tensor | null = null;
    trainStep(s.model, s.opt, () => {
      kept = s.model.forward(s.x);
      q.crossEntropy(kept, s.y).backward();
      s.opt.step();
    });
    // a later step reuses the pooled buffers; reading the old view must not see their values
    trainStep(s.model, s.opt, step(s));
    await expect(kept!.data()).rejects.toThrow(/data: a float32 tensor of shape \[64, 10\] made by '\w+' was used after the trainStep that created it ended.*return it/);
    expect(() => kept!.select(0, 0).select(0, 0).item()).toThrow(/trainStep/);
    expect(() => kept!.toString()).toThrow(/trainStep/);
    expect(() => kept!.add(1)).toThrow(/trainStep/);
  });
});
