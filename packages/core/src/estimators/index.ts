/**
 * @file The estimator registry: the built-in table (ste, clipped-ste, lsq, lsq+, trust,
 * stochastic, relaxed), `defineEstimator` for users' own, and `getEstimator` by name. Every
 * quantizing op that takes `{ estimator }` resolves it here; those ops (fakeQuantize, quantRound …)
 * are quant.ts, beside the estimators.
 * @example
 * defineEstimator('half-ste', { backward: (_st, g) => [g.mul(0.5), null, null] });
 * fakeQuantize(x, 0.1, 0, { qmin: -8, qmax: 7, estimator: 'half-ste' });
 */
import { makeEstimator, type Estimator, type EstimatorSpec } from './estimator.js';
import { lsq, lsqPlus } from './lsq.js';
import { relaxed } from './relaxed.js';
import { clippedSte, ste } from './ste.js';
import { stochastic } from './stochastic.js';
import { trust } from './trust.js';

const BUILTIN_SPECS: Record<string, EstimatorSpec> = {
  ste,
  'clipped-ste': clippedSte,
  lsq,
  'lsq+': lsqPlus,
  trust,
  stochastic,
  relaxed,
};

const builtins = new Map<string, Estimator>(Object.entries(BUILTIN_SPECS).map(([n, s]) => [n, makeEstimator(n, s)]));
const custom = new Map<string, Estimator>();

/**
 * Registers a gradient estimator under `name`, selectable anywhere `{ estimator }` is accepted.
 * `backward(state, g)` returns gradients for [x, scale, zeroPoint] (null for none), written in
 * tensor ops; `forward(state)` optionally replaces round-to-nearest.
 * @example
 * defineEstimator('tanh-ste', { backward: (st, g) => [g.mul(st.x.tanh().square().neg().add(1)), null, null] });
 */
export function defineEstimator(name: string, spec: EstimatorSpec, opts: { replace?: boolean } = {}): Estimator {
  if (!name) throw new Error('defineEstimator: name must be a non-empty string');
  if (builtins.has(name)) throw new Error(`defineEstimator: '${name}' is a built-in estimator and cannot be redefined`);
  if (custom.has(name) && !opts.replace) throw new Error(`defineEstimator: an estimator named '${name}' is already defined (pass { replace: true } to redefine it)`);
  if (typeof spec.backward !== 'function') throw new Error(`defineEstimator: '${name}' needs a backward(state, g) function`);
  const e = makeEstimator(name, spec);
  custom.set(name, e);
  return e;
}

/**
 * The names of every registered estimator, built-ins first.
 * @example listEstimators(); // ['ste', 'clipped-ste', 'lsq', …]
 */
export function listEstimators(): string[] {
  return [...builtins.keys(), ...custom.keys()];
}

/**
 * Looks an estimator up by name; the error lists every registered name.
 * @example getEstimator('lsq').spec.description;
 */
export function getEstimator(name: string | Estimator): Estimator {
  if (typeof name !== 'string') return name;
  const e = builtins.get(name) ?? custom.get(name);
  if (!e) throw new Error(`getEstimator: unknown estimator '${name}'; registered estimators are: ${listEstimators().join(', ')}`);
  return e;
}

/**
 * Removes a user-defined estimator (built-ins stay).
 * @example defineEstimator('mine', { backward: (_st, g) => [g, null, null] });
 * removeEstimator('mine'); // true
 */
export function removeEstimator(name: string): boolean {
  return custom.delete(name);
}

export type { Estimator, EstimatorSpec, EstimatorOptions, EstimatorGrads, QuantState, QuantConfig, GridInfo } from './estimator.js';
export { clipWindow, windowMask, trustMask, trustRadius, fakeQuantizeKernel } from './estimator.js';
export { fakeQuantizeGrad, lsqGradScale } from './lsq.js';
export * from './quant.js';
