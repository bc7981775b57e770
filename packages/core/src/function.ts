/**
 * @file The custom differentiable function API (`defineFunction`), shaped like PyTorch's
 * `torch.autograd.Function`. Every built-in primitive is written with it too.
 */
import { AnomalyError, anomalyChecksForward, type Edge, isAnomalyEnabled, isGradEnabled, Node, userCallSite, withGradMode } from './tape.js';
import { Tensor } from './tensor.js';

/** What `forward` and `backward` see: saved tensors, the needs-grad mask and free-form state. */
export class FunctionCtx<S = Record<string, unknown>> {
  /** One flag per argument: does that input need a gradient? */
  readonly needsInputGrad: boolean[];
  /** Free-form state for backward (shapes, dims, options). */
  state: S = {} as S;
  #saved: Tensor[] = [];
  #nonDiff = new Set<Tensor>();

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
    for (const t of tensors) this.#nonDiff.add(t);
  }

  /** @internal */
  isNonDifferentiable(t: Tensor): boolean {
    return this.#nonDiff.has(t);
  }
}

export interface FunctionSpec<A extends unknown[], R extends Tensor | Tensor[], S> {
  name: string;
  /** Computes the outputs from the arguments; runs with recording off. */
  forward(ctx: FunctionCtx<S>, ...args: A): R;
  /**
   * Gradients of the arguments from gradients of the outputs: one entry per argument (null for
   * non-tensors or inputs that need none). Written in tensor ops, so it is itself differentiable.
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
  const { name } = spec;
  return (...args: A): R => {
    let record = false;
    if (isGradEnabled()) {
      for (const a of args) if (a instanceof Tensor && a.requiresGrad) record = true;
    }
    const needs = record ? args.map((a) => a instanceof Tensor && a.requiresGrad) : args.map(() => false);
    const ctx = new FunctionCtx<S>(needs);
    let out = withGradMode(false, () => spec.forward(ctx, ...args));
    // an output that is an argument object would get its gradFn overwritten: alias it
    if (out instanceof Tensor) {
      if (args.includes(out)) out = out.alias() as R;
    } else out = out.map((o) => (args.includes(o) ? o.alias() : o)) as R;
    const outs: Tensor[] = out instanceof Tensor ? [out] : out;
    if (anomalyChecksForward()) checkForward(name, outs);
    if (!record) return out;

    const edges: (Edge | null)[] = args.map((a, i) =>
      needs[i] ? { node: (a as Tensor).gradFn, index: (a as Tensor).outputIndex, leaf: (a as Tensor).gradFn ? null : (a as Tensor), shape: (a as Tensor).shape, dtype: (a as Tensor).dtype } : null,
    );
    const node = new Node(
      name,
      (grads) => {
        const r = spec.backward(ctx, ...grads);
        return Array.isArray(r) ? r : [r];
      },
      edges,
      outs.map((o) => ({ shape: o.shape, dtype: o.dtype })),
      spec.onceDifferentiable ?? false,
    );
    node.saved = ctx.saved;
    node.savedVersions = ctx.saved.map((t) => t.version);
    if (isAnomalyEnabled()) node.callSite = userCallSite();
    outs.forEach((o, i) => {
      if (ctx.isNonDifferentiable(o) || (o.dtype !== 'float32' && o.dtype !== 'float64')) return;
      o.gradFn = node;
      o.outputIndex = i;
      o.requiresGrad = true;
    });
    return out;
  };
}

function checkForward(name: string, outs: Tensor[]): void {
  for (const o of outs) {
    if ((o.dtype === 'float32' || o.dtype === 'float64') && o.hasNonFinite()) {
      throw new AnomalyError(`forward of '${name}' produced NaN or Inf (output shape [${o.shape.join(', ')}]), called at ${userCallSite()}`);
    }
  }
}
