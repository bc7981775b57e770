/**
 * @file `distill`: gradients reach only the student and the teacher's outputs do not move while
 * the student trains; KD is 0 for an exact copy; feature MSE; Teacher Intervention on a tiny
 * Llama — with every layer intervened, the student's logits equal the teacher's whatever it did
 * to the replaced path (TI-O: all of attention, TI-C: Q/K/V, TI-M: Q/K), TI-M's task path leaves
 * Q/K without gradient, the schedules' boundaries; `remove()` restores the models.
 */
import { describe, expect, it } from 'vitest';
import { crossEntropy, Generator, noGrad, randint, randn, type Tensor } from '@qgrad/core';
import { assertAllclose } from '@qgrad/core/testing';
import { Adam, Linear, Llama, ReLU, Sequential, type LlamaConfig } from '@qgrad/nn';
import { distill, prepareQAT, tiSchedule, type TiMode } from '@qgrad/quant';

const mlp = (seed: number) => {
  const g = new Generator(seed);
  return new Sequential(new Linear(6, 16, { generator: g }), new ReLU(), new Linear(16, 4, { generator: g }));
};
const copyOf = <M extends { stateDict(): Record<string, Tensor>; loadStateDict(s: Record<string, Tensor>): unknown }>(make: () => M, src: M): M => {
  const m = make();
  m.loadStateDict(src.stateDict());
  return m;
};

describe('distill: logit KD around a QAT student', () => {
  it('gives gradients to the student only, and the teacher outputs the same before and after training', () => {
    const student = mlp(0);
    const teacher = copyOf(() => mlp(9), student);
    prepareQAT(student, { default: { weight: { grid: 'int', bits: 2 } } });
    const g = new Generator(1);
    const x = randn([16, 6], { generator: g });
    const y = randint(0, 4, [16], { generator: g });
    const before = noGrad(() => teacher.forward(x)).dataSync().slice();
    const kd = distill(student, teacher, { temperature: 2, alpha: 0.5 });
    const opt = new Adam(student.parameters(), { lr: 1e-2 });
    for (let i = 0; i < 5; i++) {
      opt.zeroGrad();
      teacher.zeroGrad();
      const l = kd.loss(x, y, crossEntropy);
      l.backward();
      for (const p of teacher.parameters()) expect(p.grad).toBeNull();
      expect(student.parameters().some((p) => p.grad !== null && p.grad.abs().sum().item() > 0)).toBe(true);
      opt.step();
    }
    expect(teacher.parameters().every((p) => !p.requiresGrad)).toBe(true);
    expect(teacher.training).toBe(false);
    expect(noGrad(() => teacher.forward(x)).dataSync()).toEqual(before);
    kd.remove();
  });

  it('is 0 for a float student that equals its teacher, positive once the student is quantized, and the parts add up', () => {
    const student = mlp(2);
    const teacher = copyOf(() => mlp(3), student);
    const x = randn([8, 6], { generator: new Generator(4) });
    const y = randint(0, 4, [8], { generator: new Generator(5) });
    const kd = distill(student, teacher, { temperature: 3, alpha: 1 });
    expect(kd.compute(x).parts.kd!.item()).toBe(0);
    kd.remove();
    prepareQAT(student, { default: { weight: { grid: 'ternary' } } });
    const kd2 = distill(student, teacher, { temperature: 3, alpha: 0.25, features: [{ match: '0', weight: 0.5 }] });
    const r = kd2.compute(x, y, crossEntropy);
    expect(r.parts.kd!.item()).toBeGreaterThan(0);
    expect(r.parts.features!.item()).toBeGreaterThan(0);
    expect(r.loss.item()).toBeCloseTo(0.75 * r.parts.task!.item() + 0.25 * r.parts.kd!.item() + 0.5 * r.parts.features!.item(), 5);
    kd2.remove();
  });

  it('remove() restores plain forwards; a teacher sharing the student\'s tensors and unmatched names are errors', () => {
    const student = mlp(6);
    const teacher = copyOf(() => mlp(7), student);
    const x = randn([3, 6], { generator: new Generator(8) });
    const plain = noGrad(() => student.forward(x)).dataSync().slice();
    const kd = distill(student, teacher, { alpha: 1, features: [{ match: '*' }] });
    kd.remove();
    expect(Object.getOwnPropertyDescriptor(student.getSubmodule('0'), 'forward')?.value).toBeTypeOf('function');
    expect(noGrad(() => student.forward(x)).dataSync()).toEqual(plain);
    expect(() => distill(student, student)).toThrow(/separate copy/);
    const alias = new Sequential(student.getSubmodule('0') as Linear, new ReLU(), new Linear(16, 4));
    expect(() => distill(student, alias)).toThrow(/'0.weight' is also the teacher's/);
    expect(() => distill(student, teacher, { features: [{ match: 'nope.*' }] })).toThrow(/matches no module/);
    expect(() => distill(student, teacher, { alpha: 0.5 }).loss(x)).toThrow(/alpha 0.5 < 1 weighs a task loss/);
  });
});

describe('distill: Teacher Intervention on a tiny Llama', () => {
  const cfg: LlamaConfig = { vocabSize: 17, dim: 16, nLayers: 2, nHeads: 4, nKvHeads: 2, hiddenDim: 24, maxSeqLen: 8, normEps: 1e-5, ropeTheta: 10000, tieWordEmbeddings: false };
  const make = (seed: number) => new Llama(cfg, { generator: new Generator(seed), dtype: 'float64' });
  const ids = randint(0, 17, [2, 6], { generator: new Generator(11) });
  const targets = randint(0, 17, [2, 6], { generator: new Generator(12) });
  /** A student that is the teacher with the named attention projections of every layer perturbed. */
  const perturbed = (teacher: Llama, projections: string[]) => {
    const s = make(99);
    s.loadStateDict(teacher.stateDict());
    const g = new Generator(5);
    noGrad(() => {
      for (const [n, p] of s.namedParameters()) if (projections.some((q) => n.endsWith(`self_attn.${q}.weight`))) p.add_(randn(p.shape, { generator: g, dtype: 'float64' }).mul(0.5));
    });
    return s;
  };
  const atEvery = (mode: TiMode) => ({ match: 'model.layers.*.self_attn', schedule: mode });

  it('records the teacher through the instrumented attention without changing its logits', () => {
    const teacher = make(1);
    const plain = noGrad(() => teacher.forward(ids));
    const student = perturbed(teacher, []);
    const kd = distill(student, teacher, { alpha: 1, intervene: atEvery('none') });
    const r = kd.compute(ids);
    assertAllclose(r.teacherLogits.dataSync(), plain.dataSync(), { atol: 1e-12 }, 'teacher logits');
    expect(r.parts.kd!.item()).toBe(0);
    expect(r.parts.scores!.item()).toBe(0);
    kd.remove();
  });

  for (const [mode, projections] of [['output', ['q_proj', 'k_proj', 'v_proj', 'o_proj']], ['context', ['q_proj', 'k_proj', 'v_proj']], ['map', ['q_proj', 'k_proj']]] as const) {
    it(`TI-${mode[0]!.toUpperCase()} at every layer: the student's logits are the teacher's though its ${projections.join('/')} differ`, () => {
      const teacher = make(2);
      const student = perturbed(teacher, [...projections]);
      const off = distill(student, teacher, { alpha: 1, intervene: atEvery('none') });
      const r0 = off.compute(ids);
      expect(r0.parts.kd!.item()).toBeGreaterThan(1e-4);
      off.remove();
      const kd = distill(student, teacher, { alpha: 1, intervene: atEvery(mode) });
      const r = kd.compute(ids);
      assertAllclose(r.logits.dataSync(), r.teacherLogits.dataSync(), { atol: 1e-10 }, `${mode} logits`);
      expect(r.parts.kd!.item()).toBeLessThan(1e-12);
      expect(r.parts.scores!.item()).toBeGreaterThan(0); // the student's own Q/K still differ, and the score loss sees it
      kd.remove();
    });
  }

  it('TI-M: the task/KD path gives Q and K no gradient (only the score loss reaches them); V still learns', () => {
    const teacher = make(3);
    const student = perturbed(teacher, ['q_proj', 'k_proj', 'v_proj']);
    const kd = distill(student, teacher, { alpha: 0.5, intervene: { ...atEvery('map'), scoreWeight: 0 } });
    kd.loss(ids, targets, (l, y) => crossEntropy(l.reshape([-1, 17]), y.reshape([-1]))).backward();
    const grad = (n: string) => [...student.namedParameters()].find(([k]) => k === n)![1].grad;
    for (const i of [0, 1]) {
      for (const q of ['q_proj', 'k_proj']) expect(grad(`model.layers.${i}.self_attn.${q}.weight`)?.abs().sum().item() ?? 0).toBe(0);
      expect(grad(`model.layers.${i}.self_attn.v_proj.weight`)!.abs().sum().item()).toBeGreaterThan(0);
    }
    kd.remove();
    for (const p of student.parameters()) p.grad = null;
    const withScores = distill(student, teacher, { alpha: 1, intervene: atEvery('map') });
    withScores.loss(ids).backward();
    expect(grad('model.layers.0.self_attn.q_proj.weight')!.abs().sum().item()).toBeGreaterThan(0);
    withScores.remove();
  });

  it('TI-O: the student\'s attention output is replaced, and its score loss reaches its own Q/K but not earlier layers (detached input)', () => {
    const teacher = make(4);
    const student = perturbed(teacher, ['q_proj']);
    const kd = distill(student, teacher, { alpha: 1, intervene: { match: 'model.layers.1.self_attn', schedule: 'output' } });
    const grad = (n: string) => [...student.namedParameters()].find(([k]) => k === n)![1].grad?.abs().sum().item() ?? 0;
    kd.compute(ids).parts.scores!.backward();
    expect(grad('model.layers.1.self_attn.q_proj.weight')).toBeGreaterThan(0);
    for (const [n] of student.namedParameters()) if (n.startsWith('model.layers.0.') || n.startsWith('model.embed')) expect(grad(n)).toBe(0);
    for (const p of student.parameters()) p.grad = null;
    // the KD path: layer 1's attention weights get nothing (their output is the teacher's), its MLP does
    kd.compute(ids).parts.kd!.backward();
    for (const q of ['q_proj', 'k_proj', 'v_proj', 'o_proj']) expect(grad(`model.layers.1.self_attn.${q}.weight`)).toBe(0);
    expect(grad('model.layers.1.mlp.up_proj.weight')).toBeGreaterThan(0);
    kd.remove();
  });

  it('the schedules switch at s/6 and s/3 (gradual), in thirds (inverted), and to none after s steps', () => {
    const g = tiSchedule('gradual', 60);
    expect([0, 9, 10, 19, 20, 59, 60, 500].map(g)).toEqual(['output', 'output', 'context', 'context', 'map', 'map', 'none', 'none']);
    const inv = tiSchedule('inverted', 30);
    expect([0, 9, 10, 19, 20, 29, 30].map(inv)).toEqual(['map', 'map', 'context', 'context', 'output', 'output', 'none']);
    const st = tiSchedule('stochastic', 300, 1);
    const modes = Array.from({ length: 300 }, (_, i) => st(i));
    for (const m of ['output', 'context', 'map']) expect(modes.filter((x) => x === m).length).toBeGreaterThan(60);
    expect(st(300)).toBe('none');
    expect(Array.from({ length: 300 }, (_, i) => st(i))).toEqual(modes); // a function of the step: resumes repeat it
    const teacher = make(5);
    const kd = distill(perturbed(teacher, []), teacher, { alpha: 1, intervene: { match: 'model.layers.*.self_attn', schedule: g } });
    expect([kd.setStep(0).mode, kd.setStep(15).mode, kd.setStep(30).mode, kd.setStep(60).mode]).toEqual(['output', 'context', 'map', 'none']);
    expect(kd.setStep(15).compute(ids).mode).toBe('context');
    kd.remove();
  });
});
