/**
 * @file checkOp: the one op-test helper (after tinygrad's helper_test_op). For random inputs of
 * the given shapes it runs gradcheck in float64 and checks every other available backend
 * against the js oracle, forward and gradients, in float32; given a PyTorch golden case, it
 * replays that too (`checkGolden`).
 */
import { availableBackends, withBackend } from '../backend.js';
import { gradOf } from '../autograd.js';
import { fromTypedArray } from '../ops/creation.js';
import { Generator } from '../random.js';
import type { Tensor } from '../tensor.js';
import { assertAllclose } from './allclose.js';
import { gradcheck, type GradcheckOptions } from './gradcheck.js';

/** Options of `checkOp`: gradcheck's, plus the input value range. */
export interface CheckOpOptions extends GradcheckOptions {
  /** Input value range (default [-2, 2]); e.g. [0.1, 3] for log or sqrt. */
  range?: [number, number];
  seed?: number;
  /** Skip the gradient checks (ops with no gradient). */
  forwardOnly?: boolean;
  /** float32 tolerance between backends (default rtol 1e-4, atol 1e-5). */
  backendTol?: { rtol: number; atol: number };
  /** Make custom inputs instead of uniform ones (receives float64 uniform inputs). */
  prepare?: (inputs: Tensor[]) => Tensor[];
  /** A PyTorch golden case of this op (see `checkGolden`), replayed as well. */
  golden?: GoldenCase;
}

/** A dumped tensor of a golden case. */
export interface GoldenTensor {
  shape: number[];
  dtype: 'float64' | 'int32';
  data: number[];
}

/**
 * One PyTorch reference evaluation, as scripts/golden/ops.py writes them: the inputs (and which
 * need gradients), the output, a cotangent `v` and the gradients of <output, v> per input.
 */
export interface GoldenCase {
  name: string;
  inputs: (GoldenTensor & { grad: boolean })[];
  output: GoldenTensor;
  v: number[];
  grads: (GoldenTensor | null)[];
}

const loadGolden = (d: GoldenTensor, grad = false): Tensor =>
  d.dtype === 'int32' ? fromTypedArray(Int32Array.from(d.data), d.shape, 'int32') : fromTypedArray(Float64Array.from(d.data), d.shape, 'float64', grad);

/**
 * Replays a PyTorch golden case in float64: `fn` on its inputs must give its output, and the
 * gradients of <output, v> its gradients, within `tol` (default rtol 1e-5, atol 1e-9).
 * @example checkGolden((a, b) => a.add(b), fixture.cases.find((c) => c.name === 'add_broadcast')!);
 */
export function checkGolden(fn: (...xs: Tensor[]) => Tensor, c: GoldenCase, tol = { rtol: 1e-5, atol: 1e-9 }): void {
  const xs = c.inputs.map((d) => loadGolden(d, d.grad));
  const y = fn(...xs);
  if (y.shape.join() !== c.output.shape.join()) throw new Error(`${c.name}: output shape [${y.shape.join(', ')}], PyTorch's is [${c.output.shape.join(', ')}]`);
  assertAllclose(y, c.output.data, tol, `${c.name} forward vs PyTorch`);
  const leaves = xs.filter((_, i) => c.inputs[i]!.grad);
  if (!leaves.length) return;
  const v = fromTypedArray(Float64Array.from(c.v), c.output.shape, 'float64');
  const grads = gradOf([y.mul(v).sum()], leaves, { allowUnused: true });
  let k = 0;
  c.grads.forEach((g, i) => {
    if (!c.inputs[i]!.grad) return;
    const got = grads[k++];
    if (!g) return;
    if (!got) throw new Error(`${c.name}: no gradient for input ${i}, PyTorch has one`);
    assertAllclose(got, g.data, tol, `${c.name} gradient of input ${i} vs PyTorch`);
  });
}

function uniformInputs(shapes: number[][], dtype: 'float32' | 'float64', range: [number, number], seed: number): Tensor[] {
  const g = new Generator(seed);
  return shapes.map((s) => {
    const n = s.reduce((a, b) => a * b, 1);
    const v = new Float64Array(n).map(() => range[0] + (range[1] - range[0]) * g.random());
    return fromTypedArray(dtype === 'float64' ? v : Float32Array.from(v), s, dtype);
  });
}

/**
 * Asserts that `fn` has correct gradients (float64 central differences) and that every
 * available backend agrees with js.
 * @example checkOp((a, b) => a.mul(b).sum(1), [[2, 3], [3]]);
 */
export function checkOp(fn: (...xs: Tensor[]) => Tensor, shapes: number[][], opts: CheckOpOptions = {}): void {
  if (opts.golden) checkGolden(fn, opts.golden);
  const range = opts.range ?? [-2, 2];
  const seed = opts.seed ?? 7;
  const prep = opts.prepare ?? ((x: Tensor[]) => x);
  if (!opts.forwardOnly) gradcheck(fn, prep(uniformInputs(shapes, 'float64', range, seed)), opts);

  const run = (backend: 'js' | 'wasm' | 'gpu') =>
    withBackend(backend, () => {
      const xs = prep(uniformInputs(shapes, 'float32', range, seed)).map((x) => (opts.forwardOnly ? x : x.detach().requiresGrad_()));
      const y = fn(...xs);
      const grads = opts.forwardOnly || !y.requiresGrad ? [] : gradOf([y.mul(y.detach()).sum()], xs, { allowUnused: true });
      return { y: Float64Array.from(y.dataSync()), grads: grads.map((g) => Float64Array.from(g.dataSync())) };
    });
  const others = availableBackends().filter((b) => b !== 'js');
  if (others.length === 0) return;
  const ref = run('js');
  const tol = opts.backendTol ?? { rtol: 1e-4, atol: 1e-5 };
  for (const b of others) {
    const r = run(b);
    assertAllclose(r.y, ref.y, tol, `${b} forward vs js`);
    r.grads.forEach((g, i) => assertAllclose(g, ref.grads[i]!, tol, `${b} gradient of input ${i} vs js`));
  }
}
