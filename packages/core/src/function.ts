/**
 * @file The custom differentiable function API (`defineFunction`), shaped like PyTorch's
 * `torch.autograd.Function`. Every built-in primitive is written with it too.
 */
import { anomalySite } from './anomaly.js';
import { AnomalyError, anomalyChecksForward, type BackwardRule, type Edge, isAnomalyEnabled, isGradEnabled, Node, setGradEnabled } from './tape.js';
import type { DType } from '@qgrad/kernels';
import { Tensor } from './tensor.js';

/**
 * What `forward` and `backward` see: saved tensors, the needs-grad mask and free-form state.
 * @example defineFunction({ name: 'square', forward: (ctx, x: Tensor) => { ctx.save(x); return x.mul(x); },
 *   backward: (ctx, g) => [g.mul(ctx.saved[0]!).mul(2)] });
 */
export class FunctionCtx<S = Record<string, unknown>> {
  /** One flag per argument: does that input need a gradient? */
  readonly needsInputGrad: boolean[];
  /** Free-form state for backward (shapes, dims, options). */
  state: S = {} as S;
  #saved: Tensor[] = [];
  #nonDiff: Set<Tensor> | null = null;

  constructor(needsInputGrad: boolean[]) {
    this.needsInputGrad = needsInputGrad;
  }

  /** Keeps tensors for backward; in-place changes to them afterwards are detected. */
  save(...tensors: Tensor[]): void {
    this.#saved.push(...tensors);
  }

  /** The tensors given to `save`, in order. */
  get saved(): Tensor[] {
    return this.#saved;
  }

  /** Outputs that carry no gradient (indices, masks). */
  markNonDifferentiable(...tensors: Tensor[]): void {
    this.#nonDiff ??= new Set();
    for (const t of tensors) this.#nonDiff.add(t);
  }

  /** @internal */
  isNonDifferentiable(t: Tensor): boolean {
    return this.#nonDiff !== null && this.#nonDiff.has(t);
  }
}

/** What `defineFunction` takes: a name, a forward that computes the outputs, and a backward that maps output gradients to one gradient (or null) per argument. */
export interface FunctionSpec<A extends unknown[], R extends Tensor | Tensor[], S> {
  name: string;
  /** Computes the outputs from the arguments; runs with recording off. */
  forward(ctx: FunctionCtx<S>, ...args: A): R;
  /**
   * Gradients of the arguments from gradients of the outputs: one entry per argument (null for
   * non-tensors or inputs that need none). Written in tensor ops, so it is itself differentiable.
   * Outside `createGraph`, buffers it allocates and does not return are recycled when it returns:
   * keep a copy (`.data`, or `.clone()` in the forward) of anything it must remember.
   */
  backward(ctx: FunctionCtx<S>, ...grads: Tensor[]): (Tensor | null | undefined)[] | Tensor | null;
  /** Double backward through this function is an error (PyTorch's `once_differentiable`). */
  onceDifferentiable?: boolean;
}

/**
 * Defines a differentiable function from a forward and a backward.
 * @example
 * const cube = defineFunction({
 *   name: 'cube',
 *   forward(ctx, x: Tensor) { ctx.save(x); return x.mul(x).mul(x); },
 *   backward(ctx, g) { const [x] = ctx.saved; return [g.mul(x!.mul(x!)).mul(3)]; }, // d/dx x³ = 3x²
 * });
 * const y = cube(tensor([2], { requiresGrad: true }));
 */
export function defineFunction<A extends unknown[], R extends Tensor | Tensor[], S = Record<string, unknown>>(
  spec: FunctionSpec<A, R, S>,
): (...args: A) => R {
  return (...args: A): R => apply(spec, args);
}

/** Ties a spec's backward to the ctx of one application (what the tape node calls). */
class Recorded<S> implements BackwardRule {
  constructor(
    readonly spec: FunctionSpec<unknown[], Tensor | Tensor[], S>,
    readonly ctx: FunctionCtx<S>,
  ) {}
  backward(grads: Tensor[]): (Tensor | null | undefined)[] {
    const r = this.spec.backward(this.ctx, ...grads);
    return Array.isArray(r) ? r : [r];
  }
}

// Written with plain loops and no closures: this runs for every op, and each closure created
// here would cost more than the bookkeeping itself.
function apply<A extends unknown[], R extends Tensor | Tensor[], S>(spec: FunctionSpec<A, R, S>, args: A): R {
  const n = args.length;
  let record = false;
  if (isGradEnabled()) {
    for (let i = 0; i < n; i++) {
      const a = args[i];
      if (a instanceof Tensor && a.requiresGrad) record = true;
    }
  }
  const needs = new Array<boolean>(n);
  for (let i = 0; i < n; i++) {
    const a = args[i];
    needs[i] = record && a instanceof Tensor && a.requiresGrad;
  }
  const ctx = new FunctionCtx<S>(needs);
  const prev = setGradEnabled(false);
  let out: R;
  try {
    out = spec.forward(ctx, ...args);
  } finally {
    setGradEnabled(prev);
  }
  // an output that is an argument object would get its gradFn overwritten: alias it
  let outs: Tensor[];
  if (out instanceof Tensor) {
    if (args.includes(out)) out = out.alias() as R;
    outs = [out as Tensor];
  } else {
    outs = out as Tensor[];
    for (let i = 0; i < outs.length; i++) if (args.includes(outs[i])) outs[i] = outs[i]!.alias();
  }
  if (anomalyChecksForward()) checkForward(spec.name, outs);
  if (!record) return out;

  const edges = new Array<Edge | null>(n);
  for (let i = 0; i < n; i++) {
    const a = args[i] as Tensor;
    edges[i] = needs[i] ? { node: a.gradFn, index: a.outputIndex, leaf: a.gradFn ? null : a, shape: a.shape, dtype: a.dtype } : null;
  }
  const metas = new Array<{ shape: number[]; dtype: DType }>(outs.length);
  for (let i = 0; i < outs.length; i++) metas[i] = { shape: outs[i]!.shape, dtype: outs[i]!.dtype };
  const node = new Node(spec.name, new Recorded(spec as unknown as FunctionSpec<unknown[], Tensor | Tensor[], S>, ctx), edges, metas, spec.onceDifferentiable ?? false);
  const saved = ctx.saved;
  node.saved = saved;
  const versions = new Array<number>(saved.length);
  for (let i = 0; i < saved.length; i++) versions[i] = saved[i]!.version;
  node.savedVersions = versions;
  // the module and user line are known only now, so the backward message is composed here
  if (isAnomalyEnabled()) node.callSite = anomalySite();
  for (let i = 0; i < outs.length; i++) {
    const o = outs[i]!;
    if (ctx.isNonDifferentiable(o) || (o.dtype !== 'float32' && o.dtype !== 'float64')) continue;
    o.gradFn = node;
    o.outputIndex = i;
    o.requiresGrad = true;
  }
  return out;
}

function checkForward(name: string, outs: Tensor[]): void {
  for (const o of outs) {
    if ((o.dtype === 'float32' || o.dtype === 'float64') && o.hasNonFinite()) {
      throw new AnomalyError(`forward of '${name}' produced NaN or Inf (output shape [${o.shape.join(', ')}]) at ${anomalySite()}`);
    }
  }
}
