/**
 * @file Functional autograd: `grad(f)`, `valueAndGrad(f)` and `backward(outputs, grads)` for
 * several roots. Both build on the engine's reverse walk (tape.ts).
 */
import { onesLike } from './ops/creation.js';
import { runBackward, type BackwardOptions } from './tape.js';
import { Tensor } from './tensor.js';

/**
 * Runs backward from several outputs at once (`torch.autograd.backward`).
 * @example backward([loss1, loss2]); // gradients of both accumulate into the leaves
 */
export function backward(outputs: Tensor[], grads?: Tensor[], opts: BackwardOptions = {}): void {
  runBackward(outputs, outputs.map((o, i) => grads?.[i] ?? seed(o)), opts);
}

function seed(o: Tensor): Tensor {
  if (o.numel() !== 1) throw new Error(`grad: output of shape [${o.shape.join(', ')}] is not a scalar; pass gradOutputs of that shape`);
  return onesLike(o);
}

/** Options of `grad()`: backward's, plus output gradients and what an unused input gets. */
export interface GradOptions extends BackwardOptions {
  /** Gradients of the outputs (default: ones for scalar outputs). */
  gradOutputs?: Tensor[];
  /** Return zeros instead of null for inputs the outputs do not depend on. */
  allowUnused?: boolean;
}

/**
 * Gradients of `outputs` with respect to `inputs`, without touching `.grad`
 * (`torch.autograd.grad`). With `createGraph` the result is differentiable again.
 * @example
 * const x = tensor([3], { requiresGrad: true });
 * const [dx] = gradOf([x.pow(2).sum()], [x]); // [6]
 */
export function gradOf(outputs: Tensor[], inputs: Tensor[], opts: GradOptions = {}): Tensor[] {
  for (const t of inputs) if (!t.requiresGrad) throw new Error(`grad: an input of shape [${t.shape.join(', ')}] does not require grad`);
  const r = runBackward(outputs, outputs.map((o, i) => opts.gradOutputs?.[i] ?? seed(o)), opts, inputs);
  return r.map((g, i) => {
    if (g) return g;
    if (opts.allowUnused === false) throw new Error(`grad: input ${i} was not used in the graph of the outputs`);
    return new Tensor(inputs[i]!.storage, inputs[i]!.shape, inputs[i]!.strides, inputs[i]!.offset).mul(0).detach();
  });
}

/**
 * `grad(f)` returns a function computing the gradients of scalar `f` with respect to each of
 * its tensor arguments (jax.grad style). Arguments are treated as leaves.
 * @example const df = grad((x: Tensor) => x.pow(3).sum()); df(tensor([2]))[0].item(); // 12
 */
export function grad<A extends Tensor[]>(f: (...args: A) => Tensor, opts: BackwardOptions = {}): (...args: A) => Tensor[] {
  return (...args: A) => valueAndGrad(f, opts)(...args)[1];
}

/**
 * Like `grad`, but also returns f's value: `[value, grads]`.
 * @example const [loss, [gw]] = valueAndGrad((w: Tensor) => w.mul(w).sum())(w);
 */
export function valueAndGrad<A extends Tensor[]>(f: (...args: A) => Tensor, opts: BackwardOptions = {}): (...args: A) => [Tensor, Tensor[]] {
  return (...args: A) => {
    const leaves = args.map((a) => (a.requiresGrad ? a : a.detach().requiresGrad_())) as A;
    const value = f(...leaves);
    if (value.numel() !== 1) throw new Error(`grad: f must return a scalar, got shape [${value.shape.join(', ')}]`);
    return [value, gradOf([value], leaves, opts)];
  };
}
