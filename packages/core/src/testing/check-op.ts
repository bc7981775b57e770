/**
 * @file checkOp: the one op-test helper (after tinygrad's helper_test_op). For random inputs of
 * the given shapes it runs gradcheck in float64 and checks every other available backend
 * against the js oracle, forward and gradients, in float32.
 */
import { availableBackends, withBackend } from '../backend.js';
import { gradOf } from '../autograd.js';
import { fromTypedArray } from '../ops/creation.js';
import { Generator } from '../random.js';
import type { Tensor } from '../tensor.js';
import { assertAllclose } from './allclose.js';
import { gradcheck, type GradcheckOptions } from './gradcheck.js';

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
