/**
 * @file gradcheck: analytic gradients (the tape) against float64 central differences, through
 * a random projection of the output so one backward checks every input element.
 */
import { gradOf } from '../autograd.js';
import { randn, tensor, zerosLike } from '../ops/creation.js';
import { cat } from '../ops/shape.js';
import { enableGrad, noGrad } from '../tape.js';
import { Tensor } from '../tensor.js';
import { Generator } from '../random.js';

/** Options of `gradcheck`: finite-difference step, tolerances, non-contiguous inputs, and whether to throw. */
export interface GradcheckOptions {
  /** Finite-difference step (default 1e-6). */
  eps?: number;
  /** Absolute tolerance (default 1e-5). */
  atol?: number;
  /** Relative tolerance (default 1e-3). */
  rtol?: number;
  /** Pass inputs to `fn` as non-contiguous views of their leaves (default false). */
  nonContiguous?: boolean;
  /** Throw a GradcheckError on failure (default true); else return the report. */
  raiseException?: boolean;
  /** Seed of the random output projection. */
  seed?: number;
}

/** `gradcheck`'s verdict: whether it passed, the worst element and a readable message. */
export interface GradcheckReport {
  ok: boolean;
  /** The worst element over all inputs. */
  worst: { input: number; index: number; analytic: number; numeric: number; error: number } | null;
  message: string;
}

/**
 * Thrown by `gradcheck` when an analytic gradient disagrees with finite differences; `report` holds the worst element.
 * @example try { gradcheck(myOp, [x]); } catch (e) { if (e instanceof GradcheckError) console.log(e.report.worst); }
 */
export class GradcheckError extends Error {
  constructor(readonly report: GradcheckReport) {
    super(report.message);
    this.name = 'GradcheckError';
  }
}

/** A non-contiguous view holding `values` (reverse-permuted base, or a stride-2 slice for 1-D). */
function stridedView(leaf: Tensor): Tensor {
  if (leaf.ndim >= 2) {
    const rev = leaf.shape.map((_, i) => leaf.ndim - 1 - i);
    return leaf.permute(rev).contiguous().permute(rev);
  }
  if (leaf.ndim === 1 && leaf.shape[0]! > 0) {
    return leaf.unsqueeze(1).expand(leaf.shape[0]!, 2).contiguous().select(1, 0);
  }
  return leaf;
}

/**
 * Checks the gradients of `fn` at `inputs` (float64 tensors) against central differences.
 * Throws a GradcheckError naming the worst element unless `raiseException: false`.
 * @example gradcheck((x) => x.exp().sum(), [randn([3], { dtype: 'float64' })]);
 */
export function gradcheck(fn: (...xs: Tensor[]) => Tensor, inputs: Tensor[], opts: GradcheckOptions = {}): GradcheckReport {
  const eps = opts.eps ?? 1e-6;
  const atol = opts.atol ?? 1e-5;
  const rtol = opts.rtol ?? 1e-3;
  for (const x of inputs) {
    if (x.dtype !== 'float64') throw new Error(`gradcheck: inputs must be float64 for finite differences to be meaningful, got ${x.dtype} of shape [${x.shape.join(', ')}]`);
  }
  const values = inputs.map((x) => Float64Array.from(x.dataSync()));
  const build = (vals: Float64Array[], grad: boolean) =>
    vals.map((v, i) => {
      const leaf = tensor(v, { shape: [...inputs[i]!.shape], dtype: 'float64', requiresGrad: grad });
      return leaf;
    });
  const apply = (leaves: Tensor[]) => fn(...leaves.map((l) => (opts.nonContiguous ? stridedView(l) : l)));

  // analytic: gradient of <fn(x), v> for a fixed random v
  const leaves = build(values, true);
  const out = apply(leaves);
  const v = randn([...out.shape], { dtype: 'float64', generator: new Generator(opts.seed ?? 1234) });
  const proj = (o: Tensor) => o.mul(v).sum();
  const analytic = gradOf([proj(out)], leaves, { allowUnused: true }).map((g) => (g ? Float64Array.from(g.dataSync()) : Float64Array.from(zerosLike(out).dataSync())));

  let worst: GradcheckReport['worst'] = null;
  let ok = true;
  noGrad(() => {
    values.forEach((val, i) => {
      for (let j = 0; j < val.length; j++) {
        const orig = val[j]!;
        val[j] = orig + eps;
        const fp = proj(apply(build(values, false))).item();
        val[j] = orig - eps;
        const fm = proj(apply(build(values, false))).item();
        val[j] = orig;
        const numeric = (fp - fm) / (2 * eps);
        const a = analytic[i]![j]!;
        const error = Math.abs(a - numeric);
        const bad = !(error <= atol + rtol * Math.abs(numeric));
        if (bad) ok = false;
        if (!worst || error > worst.error || (bad && Number.isNaN(error))) worst = { input: i, index: j, analytic: a, numeric, error };
      }
    });
  });
  const w = worst as GradcheckReport['worst'];
  const message = w
    ? `gradcheck ${ok ? 'passed' : 'failed'}: worst element is input ${w.input} [flat index ${w.index}] of shape [${inputs[w.input]!.shape.join(', ')}]: analytic ${w.analytic}, numeric ${w.numeric}, |diff| ${w.error.toExponential(3)} (atol ${atol}, rtol ${rtol})`
    : 'gradcheck passed: no input elements';
  const report = { ok, worst: w, message };
  if (!ok && (opts.raiseException ?? true)) throw new GradcheckError(report);
  return report;
}

/**
 * Checks second derivatives (double backward): gradcheck of the vector-Jacobian product
 * (x…, g) ↦ ∂⟨fn(x…), g⟩/∂x…, built with `createGraph`, with respect to both the inputs and the
 * cotangent g — like `torch.autograd.gradgradcheck`.
 * @example gradgradcheck((x) => x.tanh(), [randn([3], { dtype: 'float64' })]);
 */
export function gradgradcheck(fn: (...xs: Tensor[]) => Tensor, inputs: Tensor[], opts: GradcheckOptions = {}): GradcheckReport {
  const n = inputs.length;
  const outShape = noGrad(() => fn(...inputs)).shape;
  const g0 = randn([...outShape], { dtype: 'float64', generator: new Generator((opts.seed ?? 1234) + 1) });
  const vjp = (...args: Tensor[]) =>
    enableGrad(() => {
      // analytic pass: the leaves gradcheck made (keep their graph); numeric pass: fresh leaves
      const xs = args.slice(0, n).map((x) => (x.requiresGrad ? x : x.detach().requiresGrad_()));
      const grads = gradOf([fn(...xs)], xs, { gradOutputs: [args[n]!], createGraph: true, allowUnused: true });
      return cat(grads.map((g) => g.reshape(-1)));
    });
  return gradcheck(vjp, [...inputs, g0], { ...opts, nonContiguous: false });
}
