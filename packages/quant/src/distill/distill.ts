/**
 * @file `distill(student, teacher, options)`: a frozen float teacher beside a QAT/LoRA student —
 * logit KD mixed with the task loss, MSE on matched intermediate outputs, and Teacher
 * Intervention on matched attention modules — installed by wrapping the matched modules'
 * `forward` (nn has no hooks) and undone by `remove()`. The losses are in kd.ts, TI's modes and
 * the instrumented attention in intervention.ts.
 */
import { mseLoss, noGrad, type Tensor } from '@qgrad/core';
import { LlamaAttention, type KVCache, type Module, type RotaryEmbedding } from '@qgrad/nn';
import { matchesName, type NamePattern } from '../qat/prepare.js';
import { kdLoss, kdMix, type KdLossOptions } from './kd.js';
import { llamaAttentionForward, type AttentionRecord, type TiMode, type TiSchedule } from './intervention.js';

/** MSE between the outputs of the student's and the teacher's modules of the same names. */
export interface FeatureLoss {
  /** Dotted module names (globs or RegExps), e.g. 'model.layers.*' (TernaryBERT's hidden-state loss). */
  match: NamePattern | NamePattern[];
  /** Weight of Σ MSE over the matched modules (default 1). */
  weight?: number;
}

/** Teacher Intervention on attention modules (methods-2.md §12). */
export interface InterventionOptions {
  /**
   * The attention modules, e.g. 'model.layers.*.self_attn'. TI-M and TI-C need nn's
   * LlamaAttention (its probabilities and context are inside its forward); TI-O (the module's
   * output replaced, its input detached) works on any module that maps one tensor to one tensor.
   */
  match: NamePattern | NamePattern[];
  /** The mode per optimizer step (see `tiSchedule`), or one mode for every step. */
  schedule: TiSchedule | TiMode;
  /** Weight of Σ MSE(student scores, teacher scores) over the layers, masked entries 0 (default 1; LlamaAttention only). */
  scoreWeight?: number;
}

/** Options of `distill`. */
export interface DistillOptions {
  /** Softmax temperature τ of the logit KD (default 1). */
  temperature?: number;
  /** Mix (1 − α)·task + α·τ²·KL (default 0.5; 1: KD only, as TernaryBERT and TI train without labels). */
  alpha?: number;
  /** 'kl' (default) or 'mse' (EfficientDM's output regression): see `kdLoss`. */
  kind?: KdLossOptions['kind'];
  /** How a model turns the inputs into logits (default `model.forward(...inputs)`). */
  logits?: (model: Module, inputs: Tensor[]) => Tensor;
  /** MSE terms on intermediate outputs, added to the mixed loss. */
  features?: FeatureLoss[];
  intervene?: InterventionOptions;
}

/** One distillation forward: the total loss, its parts (scalars) and both models' logits. */
export interface DistillResult {
  loss: Tensor;
  logits: Tensor;
  teacherLogits: Tensor;
  /** 'kd', 'task' (when given), 'features' and 'scores' (when configured): each before its weight. */
  parts: Record<string, Tensor>;
  /** The intervention mode this forward ran with. */
  mode: TiMode;
}

type Forward = (...args: unknown[]) => unknown;
interface Wrapped {
  module: Module;
  had: PropertyDescriptor | undefined;
}

/**
 * A teacher attached to a student (what `distill` returns): `loss`/`compute` per batch, `setStep`
 * for the intervention schedule, `remove` to detach.
 * @example
 * const kd = new Distiller(student, teacher, { temperature: 2, alpha: 0.5 });
 * const { loss, parts } = kd.compute(x, y, crossEntropy); // parts.kd, parts.task
 */
export class Distiller {
  readonly #student: Module;
  readonly #teacher: Module;
  readonly #o: DistillOptions;
  #wrapped: Wrapped[] = [];
  #step = 0;
  /** 'teacher' while the teacher runs, 'student' while the student does, null otherwise (wrappers pass through). */
  #phase: 'teacher' | 'student' | null = null;
  /** Per wrapped name: what the teacher's call(s) recorded, consumed in order by the student's. */
  #attn = new Map<string, AttentionRecord[]>();
  #feat = new Map<string, { teacher: Tensor[]; student: Tensor[] }>();
  #mode: TiMode = 'none';

  constructor(student: Module, teacher: Module, o: DistillOptions = {}) {
    if (student === teacher) throw new Error('distill: the teacher must be a separate copy of the model (e.g. built before prepareQAT and loaded with the same state dict)');
    const shared = new Set(teacher.parameters());
    for (const [n, p] of student.namedParameters()) {
      if (shared.has(p)) throw new Error(`distill: student parameter '${n}' is also the teacher's; training would change the teacher. Give the teacher its own copy (new Model(cfg) + loadStateDict(student.stateDict()) before quantizing)`);
    }
    if (o.temperature !== undefined && !(o.temperature > 0)) throw new RangeError(`distill: temperature must be positive, got ${o.temperature}`);
    if (o.alpha !== undefined && !(o.alpha >= 0 && o.alpha <= 1)) throw new RangeError(`distill: alpha must lie in [0, 1], got ${o.alpha}`);
    this.#student = student;
    this.#teacher = teacher;
    this.#o = o;
    teacher.eval();
    teacher.requiresGrad_(false);
    for (const [i, f] of (o.features ?? []).entries()) {
      const names = this.#pairs(f.match, `features[${i}]`);
      for (const name of names) {
        const key = `f${i}:${name}`;
        this.#feat.set(key, { teacher: [], student: [] });
        for (const side of ['teacher', 'student'] as const) this.#wrapFeature(side === 'teacher' ? teacher.getSubmodule(name) : student.getSubmodule(name), key, side);
      }
    }
    if (o.intervene) {
      for (const name of this.#pairs(o.intervene.match, 'intervene')) {
        this.#attn.set(name, []);
        this.#wrapAttention(teacher.getSubmodule(name), name, 'teacher');
        this.#wrapAttention(student.getSubmodule(name), name, 'student');
      }
    }
  }

  /** The names matched in the student that the teacher also has (at least one). */
  #pairs(match: NamePattern | NamePattern[], who: string): string[] {
    const names = [...this.#student.namedModules()].map(([n]) => n).filter((n) => n !== '' && matchesName(n, match));
    if (!names.length) throw new Error(`distill: ${who} matches no module of the student (${JSON.stringify(String(match))})`);
    for (const n of names) {
      try {
        this.#teacher.getSubmodule(n);
      } catch {
        throw new Error(`distill: ${who} matches student module '${n}', which the teacher lacks (teacher and student must share their module names)`);
      }
    }
    return names;
  }

  #install(m: Module, fn: (orig: Forward, args: unknown[]) => unknown): void {
    const had = Object.getOwnPropertyDescriptor(m, 'forward');
    const orig = (m as unknown as { forward: Forward }).forward;
    Object.defineProperty(m, 'forward', { configurable: true, writable: true, value: (...args: unknown[]) => fn(orig, args) });
    this.#wrapped.push({ module: m, had });
  }

  #wrapFeature(m: Module, key: string, side: 'teacher' | 'student'): void {
    this.#install(m, (orig, args) => {
      const y = orig(...args);
      if (this.#phase === side) this.#feat.get(key)![side].push(y as Tensor);
      return y;
    });
  }

  #wrapAttention(m: Module, name: string, side: 'teacher' | 'student'): void {
    const llama = m instanceof LlamaAttention;
    this.#install(m, (orig, args) => {
      if (this.#phase === null) return orig(...args);
      const records = this.#attn.get(name)!;
      if (side === 'teacher') {
        if (!llama) {
          const y = orig(...args) as Tensor;
          records.push({ output: y } as AttentionRecord);
          return y;
        }
        const { y, record } = llamaAttentionForward(m, args[0] as Tensor, args[1] as RotaryEmbedding, args[2] as KVCache | undefined, 'none', null);
        records.push(record);
        return y;
      }
      const mode = this.#mode;
      const t = records.shift();
      if (!t) throw new Error(`distill: the student called '${name}' more often than the teacher did in this forward; teacher and student must run the same modules`);
      if (!llama) {
        if (mode === 'map' || mode === 'context') throw new Error(`distill: intervention '${mode}' replaces a signal inside nn's LlamaAttention; '${name}' is a ${m.constructor.name} (only 'output' applies to other modules)`);
        if (mode === 'none') return orig(...args);
        // TI-O on any module: its own output from a detached input (nothing reaches earlier layers), then the teacher's passed on
        orig(...args.map((a) => (isTensor(a) ? a.detach() : a)));
        return t.output;
      }
      const { y, record } = llamaAttentionForward(m, args[0] as Tensor, args[1] as RotaryEmbedding, args[2] as KVCache | undefined, mode, t);
      this.#scores.push([record.scores, t.scores]);
      return y;
    });
  }
  #scores: [Tensor, Tensor][] = [];

  /** Sets the optimizer step the intervention schedule reads (call it at the start of each step). */
  setStep(step: number): this {
    this.#step = step;
    return this;
  }
  /** The intervention mode of the current step ('none' without `intervene`). */
  get mode(): TiMode {
    const s = this.#o.intervene?.schedule;
    return s === undefined ? 'none' : typeof s === 'function' ? s(this.#step) : s;
  }

  /**
   * Runs the teacher (eval mode, no grad) and the student on `inputs`, with the current step's
   * intervention, and returns the loss and its parts. `taskLoss(studentLogits, target)` is mixed
   * in by α (needed unless α = 1).
   */
  compute(inputs: Tensor | Tensor[], target?: Tensor | null, taskLoss?: (logits: Tensor, target: Tensor) => Tensor): DistillResult {
    const xs = Array.isArray(inputs) ? inputs : [inputs];
    const run = this.#o.logits ?? ((m: Module, a: Tensor[]) => (m as unknown as { forward: (...t: Tensor[]) => Tensor }).forward(...a));
    this.#mode = this.mode;
    this.#clear();
    try {
      this.#teacher.eval();
      this.#phase = 'teacher';
      const teacherLogits = noGrad(() => run(this.#teacher, xs));
      this.#phase = 'student';
      const logits = run(this.#student, xs);
      this.#phase = null;
      for (const [name, left] of this.#attn) if (left.length) throw new Error(`distill: the teacher called '${name}' ${left.length} more time(s) than the student in this forward`);
      const o = this.#o;
      const parts: Record<string, Tensor> = { kd: kdLoss(logits, teacherLogits, { temperature: o.temperature, kind: o.kind }) };
      const alpha = o.alpha ?? 0.5;
      if (taskLoss && target) parts.task = taskLoss(logits, target);
      else if (alpha < 1) throw new Error(`distill: alpha ${alpha} < 1 weighs a task loss; pass a target and taskLoss to loss()/compute(), or set alpha 1`);
      let loss = kdMix(parts.task ?? null, parts.kd!, alpha);
      for (const [i, f] of (o.features ?? []).entries()) {
        let sum: Tensor | null = null;
        for (const [key, { teacher, student }] of this.#feat) {
          if (!key.startsWith(`f${i}:`)) continue;
          if (teacher.length !== student.length) throw new Error(`distill: features[${i}] '${key.slice(key.indexOf(':') + 1)}' ran ${student.length} time(s) in the student, ${teacher.length} in the teacher`);
          for (const [j, s] of student.entries()) sum = sum ? sum.add(mseLoss(s, teacher[j]!)) : mseLoss(s, teacher[j]!);
        }
        if (sum) {
          parts[(o.features!.length > 1 ? `features${i}` : 'features')] = sum;
          loss = loss.add(sum.mul(f.weight ?? 1));
        }
      }
      if (this.#scores.length) {
        let sum = mseLoss(this.#scores[0]![0], this.#scores[0]![1]);
        for (const [s, t] of this.#scores.slice(1)) sum = sum.add(mseLoss(s, t));
        parts.scores = sum;
        loss = loss.add(sum.mul(o.intervene?.scoreWeight ?? 1));
      }
      return { loss, logits, teacherLogits, parts, mode: this.#mode };
    } finally {
      this.#phase = null;
      this.#clear();
    }
  }

  /**
   * The training loss of one batch (see `compute`).
   * @example fit({ model: student, optimizer, steps, loss: ({ index }) => kd.setStep(index).loss(xs[index], ys[index], crossEntropy) });
   */
  loss(inputs: Tensor | Tensor[], target?: Tensor | null, taskLoss?: (logits: Tensor, target: Tensor) => Tensor): Tensor {
    return this.compute(inputs, target, taskLoss).loss;
  }

  /** Restores every wrapped module's forward; the student and teacher are plain models again. */
  remove(): void {
    for (const { module, had } of this.#wrapped.reverse()) {
      if (had) Object.defineProperty(module, 'forward', had);
      else delete (module as unknown as { forward?: unknown }).forward;
    }
    this.#wrapped = [];
    this.#clear();
  }

  #clear(): void {
    for (const r of this.#attn.values()) r.length = 0;
    for (const f of this.#feat.values()) f.teacher.length = f.student.length = 0;
    this.#scores = [];
  }
}

const isTensor = (a: unknown): a is Tensor => typeof a === 'object' && a !== null && typeof (a as Tensor).detach === 'function' && Array.isArray((a as Tensor).shape);

/**
 * Attaches a frozen float `teacher` (a copy of the model taken before `prepareQAT`/`loraQuant`:
 * same module names) to the QAT/LoRA `student`. The teacher is put in eval mode with
 * requiresGrad off and runs under noGrad; only the student's parameters get gradients.
 * - logit KD: (1 − α)·task + α·τ²·KL(softmax(t/τ) ‖ softmax(s/τ)) (PyTorch/Hinton convention);
 * - `features`: + w·Σ MSE(student module output, teacher's) over the matched modules;
 * - `intervene`: Teacher Intervention — per the schedule's mode the teacher's attention
 *   probabilities / context / output replace the student's in its forward, + Σ MSE(scores).
 * @example
 * const teacher = new Llama(cfg); teacher.loadStateDict(model.stateDict()); // before quantizing
 * prepareQAT(model, { rules: [{ match: 'model.layers.**', weight: { grid: 'ternary' } }] });
 * const kd = distill(model, teacher, { alpha: 1, features: [{ match: 'model.layers.*' }],
 *   intervene: { match: 'model.layers.*.self_attn', schedule: tiSchedule('gradual', 60) } });
 * const loss = kd.setStep(i).loss(x, y, crossEntropy); // … after training: kd.remove()
 */
export function distill(student: Module, teacher: Module, options: DistillOptions = {}): Distiller {
  return new Distiller(student, teacher, options);
}
