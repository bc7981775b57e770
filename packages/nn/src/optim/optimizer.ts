/**
 * @file The Optimizer base (parameter groups with their own options, per-parameter state,
 * zeroGrad, stateDict/loadStateDict for exact resumption) and gradient clipping.
 * Update rules live in sgd.ts, adam.ts and muon.ts.
 */
import { noGrad, scoped, type Tensor } from '@qgrad/core';

/** Per-parameter optimizer state: tensors (moment buffers) and numbers (step counts). */
export type ParamState = Record<string, Tensor | number>;

/** A parameter group: its tensors plus any options overriding the optimizer's defaults. */
export type ParamGroup<O> = O & { params: Tensor[] };
/** A parameter group as an optimizer's constructor takes it: its parameters and any options that differ from the defaults. */
export type ParamGroupSpec<O> = Partial<O> & { params: Tensor[] };

/** An optimizer's state as plain data: parameters are referred to by their position across groups, as in PyTorch. */
export interface OptimizerStateDict<O> {
  state: Record<number, ParamState>;
  paramGroups: (O & { params: number[] })[];
}

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/**
 * Base class of the optimizers. Subclasses implement `update` for one parameter; `step` runs it
 * under noGrad for every parameter that has a gradient, with its group's options.
 * @example
 * class SignSGD extends Optimizer<{ lr: number }> {
 *   protected update(p: Tensor, g: Tensor, _s: ParamState, group: ParamGroup<{ lr: number }>): void { p.sub_(g.sign().mul(group.lr)); }
 * }
 */
export abstract class Optimizer<O extends object> {
  readonly defaults: O;
  paramGroups: ParamGroup<O>[] = [];
  /** State of each parameter, keyed by the tensor. */
  state = new Map<Tensor, ParamState>();

  constructor(params: Tensor[] | ParamGroupSpec<O>[], defaults: O) {
    this.defaults = defaults;
    const groups = (params.length && !isGroup(params[0]) ? [{ params: params as Tensor[] }] : params) as ParamGroupSpec<O>[];
    if (!groups.length) throw new Error(`${this.constructor.name}: got an empty parameter list`);
    for (const g of groups) this.addParamGroup(g);
  }

  /** Adds a group (e.g. layers unfrozen later); options it omits come from the defaults. */
  addParamGroup(group: ParamGroupSpec<O>): void {
    const seen = new Set(this.paramGroups.flatMap((g) => g.params));
    for (const p of group.params) {
      if (seen.has(p)) throw new Error(`${this.constructor.name}: a parameter of shape ${fmt(p.shape)} appears in more than one parameter group`);
      if (!p.isLeaf) throw new Error(`${this.constructor.name}: can only optimize leaf tensors; got a non-leaf of shape ${fmt(p.shape)}`);
      seen.add(p);
    }
    this.paramGroups.push({ ...this.defaults, ...group, params: [...group.params] } as ParamGroup<O>);
  }

  /** Clears the gradients of every parameter (sets them to null). */
  zeroGrad(): void {
    for (const g of this.paramGroups) for (const p of g.params) p.grad = null;
  }

  /** One update of every parameter that has a gradient. */
  step(): void {
    noGrad(() => {
      for (const group of this.paramGroups) {
        for (const p of group.params) {
          if (!p.grad) continue;
          let s = this.state.get(p);
          if (!s) this.state.set(p, (s = {}));
          // the update's temporaries die with it; its state and the parameter are kept
          const st = s;
          scoped(() => this.update(p, p.grad!, st, group), () => keptBy(p, st), 'the optimizer step');
        }
      }
    });
  }

  /**
   * Updates parameter `p` in place from its gradient `g`, reading and writing its state `s`.
   * Buffers it allocates that end up neither in `s` nor in `p`/`p.grad` are recycled when it
   * returns, so it must not keep tensors elsewhere.
   */
  protected abstract update(p: Tensor, g: Tensor, s: ParamState, group: ParamGroup<O>): void;

  /** A snapshot of the options and state (tensors cloned), for checkpoints. */
  stateDict(): OptimizerStateDict<O> {
    const index = new Map<Tensor, number>();
    const paramGroups = this.paramGroups.map((g) => ({ ...g, params: g.params.map((p) => index.set(p, index.size).size - 1) }));
    const state: Record<number, ParamState> = {};
    for (const [p, s] of this.state) {
      const i = index.get(p);
      if (i !== undefined) state[i] = cloneState(s);
    }
    return { state, paramGroups: structuredCloneOptions(paramGroups) };
  }

  /** Restores options and state saved by `stateDict()` into an optimizer over the same parameters. */
  loadStateDict(sd: OptimizerStateDict<O>): void {
    const name = this.constructor.name;
    if (sd.paramGroups.length !== this.paramGroups.length) throw new Error(`${name}.loadStateDict: the checkpoint has ${sd.paramGroups.length} parameter groups, this optimizer ${this.paramGroups.length}`);
    const params = this.paramGroups.flatMap((g) => g.params);
    sd.paramGroups.forEach((g, i) => {
      if (g.params.length !== this.paramGroups[i]!.params.length) {
        throw new Error(`${name}.loadStateDict: group ${i} has ${g.params.length} parameters in the checkpoint but ${this.paramGroups[i]!.params.length} here`);
      }
    });
    for (const [k, s] of Object.entries(sd.state)) {
      const p = params[Number(k)];
      if (!p) throw new Error(`${name}.loadStateDict: state for parameter ${k}, but there are only ${params.length}`);
      for (const [key, v] of Object.entries(s)) {
        if (typeof v !== 'number' && v.shape.join() !== p.shape.join() && v.numel() !== 1) {
          throw new Error(`${name}.loadStateDict: state '${key}' of parameter ${k} has shape ${fmt(v.shape)} but the parameter has ${fmt(p.shape)}`);
        }
      }
    }
    this.paramGroups = sd.paramGroups.map((g, i) => ({ ...structuredCloneOptions([g])[0]!, params: this.paramGroups[i]!.params }) as ParamGroup<O>);
    this.state = new Map();
    for (const [k, s] of Object.entries(sd.state)) {
      const p = params[Number(k)]!;
      const c = cloneState(s);
      for (const [key, v] of Object.entries(c)) if (typeof v !== 'number' && v.dtype !== p.dtype) c[key] = noGrad(() => v.to(p.dtype));
      this.state.set(p, c);
    }
  }
}

function isGroup(x: unknown): boolean {
  return typeof x === 'object' && x !== null && 'params' in x && Array.isArray((x as { params: unknown }).params);
}

function cloneState(s: ParamState): ParamState {
  const out: ParamState = {};
  for (const [k, v] of Object.entries(s)) out[k] = typeof v === 'number' ? v : noGrad(() => v.detach().clone());
  return out;
}

// group options are numbers, booleans and small arrays (betas); copy them so snapshots stay put
function structuredCloneOptions<G extends { params: unknown }>(groups: G[]): G[] {
  return groups.map((g) => {
    const o: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(g)) o[k] = Array.isArray(v) && k !== 'params' ? [...v] : v;
    return o as G;
  });
}

/** `a ← lerp(a, b, w)` in place with PyTorch's formula (exact at both ends). */
export function lerp_(a: Tensor, b: Tensor, w: number): void {
  if (w < 0.5) a.add_(b.sub(a).mul(w));
  else a.copy_(b.sub(b.sub(a).mul(1 - w)));
}

/**
 * Scales gradients in place so their total `normType`-norm is at most `maxNorm`, as
 * `clip_grad_norm_`: coefficient min(1, maxNorm / (total + 1e-6)). Returns the total norm
 * before clipping. Parameters without a gradient are skipped.
 * @example const norm = clipGradNorm(model.parameters(), 1.0);
 */
export function clipGradNorm(params: Iterable<Tensor>, maxNorm: number, opts: { normType?: number; errorIfNonfinite?: boolean } = {}): number {
  const normType = opts.normType ?? 2;
  const grads = [...params].map((p) => p.grad).filter((g): g is Tensor => g !== null);
  if (!grads.length) return 0;
  return noGrad(() => {
    const norms = grads.map((g) => g.norm(normType).item());
    const total = normType === Infinity ? Math.max(...norms) : norms.reduce((a, n) => a + n ** normType, 0) ** (1 / normType);
    if (opts.errorIfNonfinite && !Number.isFinite(total)) {
      throw new Error(`clipGradNorm: the total norm of order ${normType} of the gradients is non-finite (${total}), so they cannot be clipped`);
    }
    const coef = maxNorm / (total + 1e-6);
    if (coef < 1) for (const g of grads) g.mul_(coef);
    return total;
  });
}

/**
 * Clamps every gradient element to [−clipValue, clipValue] in place (`clip_grad_value_`).
 * @example loss.backward(); clipGradValue(model.parameters(), 1); opt.step();
 */
export function clipGradValue(params: Iterable<Tensor>, clipValue: number): void {
  noGrad(() => {
    for (const p of params) if (p.grad) p.grad.copy_(p.grad.clamp(-clipValue, clipValue));
  });
}

/** The tensors an optimizer update may keep: the parameter, its gradient and its state. */
function* keptBy(p: Tensor, s: ParamState): Iterable<Tensor> {
  yield p;
  if (p.grad) yield p.grad;
  yield* stateTensors(s);
}

/** The tensors of one parameter's optimizer state (what recycling must leave alone). @internal */
export function* stateTensors(s: ParamState): Iterable<Tensor> {
  for (const v of Object.values(s)) if (typeof v !== 'number') yield v;
}
