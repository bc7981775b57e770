/**
 * @file Tensor creation (tensor, zeros, ones, full, arange, linspace, eye, rand, randn, randint
 * and the *Like variants) and PyTorch-style printing. Nothing here is recorded on the tape.
 */
import { ARRAY_TYPES, isFloat, numel, type DType, type TypedArray } from '@qgrad/kernels';
import { currentBackend } from '../backend.js';
import { empty, runKernelInto } from '../dispatch.js';
import { checkDType } from '../dtype.js';
import { defaultGenerator, type Generator } from '../random.js';
import { Tensor, type NestedArray } from '../tensor.js';

/** Options of the creation functions: the dtype (default float32) and whether the new tensor is a leaf that requires grad. */
export interface CreateOptions {
  dtype?: DType;
  requiresGrad?: boolean;
}

/** Creation options of the random functions, plus the generator to draw from (default: the global one, `manualSeed`). */
export interface RandomOptions extends CreateOptions {
  generator?: Generator;
}

function dtypeOfArray(a: TypedArray): DType {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Float64Array) return 'float64';
  if (a instanceof Int32Array) return 'int32';
  if (a instanceof Int8Array) return 'int8';
  return 'uint8';
}

function inferShape(data: NestedArray, path = 'data'): number[] {
  if (!Array.isArray(data)) return [];
  if (data.length === 0) return [0];
  const inner = inferShape(data[0]!, `${path}[0]`);
  for (let i = 1; i < data.length; i++) {
    const s = inferShape(data[i]!, `${path}[${i}]`);
    if (s.join() !== inner.join()) throw new Error(`tensor: ragged nested array: ${path}[${i}] has shape [${s.join(', ')}] but ${path}[0] has [${inner.join(', ')}]`);
  }
  return [data.length, ...inner];
}

/**
 * Throws naming `op` and the whole shape unless every size is a non-negative integer (a NaN,
 * negative or fractional size would otherwise surface as a bare RangeError or a wrong tensor).
 */
function checkShape(op: string, shape: readonly number[]): void {
  if (!Array.isArray(shape)) throw new TypeError(`${op}: shape must be an array of sizes, got ${String(shape)}`);
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i];
    if (!Number.isInteger(d) || d < 0) throw new RangeError(`${op}: invalid shape [${shape.join(', ')}]: size ${d} at dim ${i} is not a non-negative integer`);
  }
}

/** A host typed array for `op`; when JS cannot allocate one that large, says which op and shape asked. */
function hostArray(op: string, dtype: DType, length: number, shape: readonly number[]): TypedArray {
  try {
    return new ARRAY_TYPES[dtype](length);
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    const bytes = length * ARRAY_TYPES[dtype].BYTES_PER_ELEMENT;
    throw new RangeError(`${op}: cannot allocate ${length} ${dtype} elements (${bytes.toExponential(2)} bytes) for shape [${shape.join(', ')}]: ${e.message}`);
  }
}

/** Copies numbers into a typed array of `dtype` (integers truncate toward zero). */
function toTyped(dtype: DType, values: ArrayLike<number>): TypedArray {
  const a = hostArray('tensor', dtype, values.length, [values.length]);
  const float = isFloat(dtype);
  for (let i = 0; i < values.length; i++) a[i] = float ? values[i]! : Math.trunc(values[i]!);
  return a;
}

/**
 * Wraps a typed array as a contiguous tensor on the current backend (copies into it).
 * @example fromTypedArray(new Float32Array([1, 2, 3, 4]), [2, 2], 'float32');
 */
export function fromTypedArray(values: TypedArray, shape: number[], dtype: DType, requiresGrad = false): Tensor {
  checkDType('tensor', dtype);
  checkShape('tensor', shape);
  if (values.length !== numel(shape)) throw new Error(`tensor: ${values.length} values do not fill shape [${shape.join(', ')}] (${numel(shape)} elements)`);
  const t = empty(shape, dtype);
  const typed = values.constructor === ARRAY_TYPES[dtype] ? values : toTyped(dtype, values);
  t.storage.backend.write(t.storage.data, dtype, typed);
  t.requiresGrad = requiresGrad;
  return t;
}

/**
 * Creates a tensor from a number, nested arrays or a typed array.
 * @example tensor([[1, 2], [3, 4]]).shape; // [2, 2]
 * @example tensor(new Float64Array([1, 2, 3, 4]), { shape: [2, 2] }).dtype; // 'float64'
 */
export function tensor(data: NestedArray | TypedArray, opts: CreateOptions & { shape?: number[] } = {}): Tensor {
  let values: TypedArray;
  let shape: number[];
  let dtype = opts.dtype;
  if (dtype !== undefined) checkDType('tensor', dtype);
  if (ArrayBuffer.isView(data)) {
    dtype ??= dtypeOfArray(data);
    values = data;
    shape = opts.shape ?? [data.length];
  } else {
    shape = inferShape(data);
    const flat = Array.isArray(data) ? (data as unknown[]).flat(Infinity as 1) as number[] : [data];
    dtype ??= 'float32';
    values = toTyped(dtype, flat);
    if (opts.shape) shape = opts.shape;
  }
  if (opts.requiresGrad && !isFloat(dtype)) throw new Error(`tensor: only floating-point tensors can require gradients, got ${dtype}`);
  return fromTypedArray(values, shape, dtype, opts.requiresGrad);
}

/**
 * A 0-d tensor of `value` on `like`'s backend.
 * @internal plumbing for @qgrad/nn and @qgrad/quant, left off the API site
 */
export function scalarLike(value: number, dtype: DType, like?: Tensor): Tensor {
  const t = empty([], dtype, like);
  runKernelInto('fill', [], t, { value });
  t.storage.version = 0;
  return t;
}

/**
 * A tensor of `shape` filled with `value`.
 * @example full([2, 3], 0.5);
 */
export function full(shape: number[], value: number, opts: CreateOptions = {}): Tensor {
  return fullNamed('full', shape, value, opts);
}

// zeros and ones report errors under their own names
function fullNamed(op: string, shape: number[], value: number, opts: CreateOptions): Tensor {
  const dtype = opts.dtype ?? 'float32';
  checkDType(op, dtype);
  checkShape(op, shape);
  const t = empty(shape, dtype);
  runKernelInto('fill', [], t, { value });
  t.storage.version = 0;
  t.requiresGrad = opts.requiresGrad ?? false;
  return t;
}

/**
 * A tensor of `shape` filled with 0.
 * @example zeros([2, 3]).toArray(); // [[0, 0, 0], [0, 0, 0]]
 */
export function zeros(shape: number[], opts: CreateOptions = {}): Tensor {
  return fullNamed('zeros', shape, 0, opts);
}
/**
 * A tensor of `shape` filled with 1.
 * @example ones([4]);
 */
export function ones(shape: number[], opts: CreateOptions = {}): Tensor {
  return fullNamed('ones', shape, 1, opts);
}
/**
 * Zeros of `t`'s shape and dtype (or `opts.dtype`).
 * @example const g = zerosLike(w);
 */
export function zerosLike(t: Tensor, opts: CreateOptions = {}): Tensor {
  return fullLike(t, 0, opts);
}
/**
 * Ones of `t`'s shape and dtype (or `opts.dtype`).
 * @example const mask = onesLike(x);
 */
export function onesLike(t: Tensor, opts: CreateOptions = {}): Tensor {
  return fullLike(t, 1, opts);
}
/**
 * `value` in `t`'s shape and dtype (or `opts.dtype`).
 * @example const bias = fullLike(x, 0.1);
 */
export function fullLike(t: Tensor, value: number, opts: CreateOptions = {}): Tensor {
  const dtype = opts.dtype ?? t.dtype;
  checkDType('fullLike', dtype);
  const o = empty([...t.shape], dtype, t);
  runKernelInto('fill', [], o, { value });
  o.storage.version = 0;
  o.requiresGrad = opts.requiresGrad ?? false;
  return o;
}

/**
 * Evenly spaced values in [start, end) by `step`, as PyTorch `arange` (one argument is the end,
 * counting from 0); int32 when start, end and step are integers, else float32.
 * @example arange(0, 5, 2).toArray(); // [0, 2, 4]
 */
export function arange(start: number, end?: number, step = 1, opts: CreateOptions = {}): Tensor {
  if (end === undefined) [start, end] = [0, start];
  if (![start, end, step].every(Number.isFinite)) throw new RangeError(`arange: start, end and step must be finite numbers, got (${start}, ${end}, ${step})`);
  if (step === 0) throw new Error('arange: step must be nonzero');
  const n = Math.max(0, Math.ceil((end - start) / step));
  const allInt = [start, end, step].every(Number.isInteger);
  const dtype = opts.dtype ?? (allInt ? 'int32' : 'float32');
  checkDType('arange', dtype);
  const v = hostArray('arange', dtype, n, [n]);
  for (let i = 0; i < n; i++) v[i] = start + i * step;
  return fromTypedArray(v, [n], dtype, opts.requiresGrad);
}

/**
 * `steps` evenly spaced values from start to end inclusive.
 * @example linspace(0, 1, 5); // [0, 0.25, 0.5, 0.75, 1]
 */
export function linspace(start: number, end: number, steps: number, opts: CreateOptions = {}): Tensor {
  const dtype = opts.dtype ?? 'float32';
  checkDType('linspace', dtype);
  checkShape('linspace', [steps]);
  const v = hostArray('linspace', dtype, steps, [steps]);
  const step = steps > 1 ? (end - start) / (steps - 1) : 0;
  // fill from both ends as PyTorch does, so the last value is exactly `end`
  const half = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) v[i] = i < half ? start + i * step : end - (steps - 1 - i) * step;
  return fromTypedArray(v, [steps], dtype, opts.requiresGrad);
}

/**
 * The n × m identity matrix.
 * @example eye(3); // 3×3 identity
 */
export function eye(n: number, m = n, opts: CreateOptions = {}): Tensor {
  const dtype = opts.dtype ?? 'float32';
  checkDType('eye', dtype);
  checkShape('eye', [n, m]);
  const v = hostArray('eye', dtype, n * m, [n, m]);
  for (let i = 0; i < Math.min(n, m); i++) v[i * m + i] = 1;
  return fromTypedArray(v, [n, m], dtype, opts.requiresGrad);
}

function randomTensor(op: string, shape: number[], opts: RandomOptions, draw: (g: Generator) => number): Tensor {
  const dtype = opts.dtype ?? 'float32';
  checkDType(op, dtype);
  checkShape(op, shape);
  const g = opts.generator ?? defaultGenerator;
  const v = hostArray(op, dtype, numel(shape), shape);
  for (let i = 0; i < v.length; i++) v[i] = draw(g);
  return fromTypedArray(v, shape, dtype, opts.requiresGrad);
}

/**
 * Uniform in [0, 1).
 * @example rand([2, 3], { generator: new Generator(0) });
 */
export function rand(shape: number[], opts: RandomOptions = {}): Tensor {
  return randomTensor('rand', shape, opts, (g) => g.random());
}
/**
 * Standard normal.
 * @example randn([64, 16], { dtype: 'float64' });
 */
export function randn(shape: number[], opts: RandomOptions = {}): Tensor {
  return randomTensor('randn', shape, opts, (g) => g.normal());
}
/**
 * Integers uniform in [low, high), int32 unless a dtype is given.
 * @example randint(0, 10, [32]); // int32 labels in [0, 10)
 */
export function randint(low: number, high: number, shape: number[], opts: RandomOptions = {}): Tensor {
  if (!(high > low)) throw new Error(`randint: high (${high}) must be greater than low (${low})`);
  return randomTensor('randint', shape, { dtype: 'int32', ...opts }, (g) => g.randint(low, high));
}
/**
 * Uniform [0, 1) samples of `t`'s shape and dtype.
 * @example const u = randLike(x, { generator: new Generator(0) });
 */
export function randLike(t: Tensor, opts: RandomOptions = {}): Tensor {
  return rand([...t.shape], { dtype: t.dtype, ...opts });
}
/**
 * Standard normal samples of `t`'s shape and dtype.
 * @example const noise = randnLike(x);
 */
export function randnLike(t: Tensor, opts: RandomOptions = {}): Tensor {
  return randn([...t.shape], { dtype: t.dtype, ...opts });
}
/**
 * Integers uniform in [low, high) of `t`'s shape.
 * @example const labels = randintLike(y, 0, 10);
 */
export function randintLike(t: Tensor, low: number, high: number, opts: RandomOptions = {}): Tensor {
  return randint(low, high, [...t.shape], { dtype: t.dtype, ...opts });
}

// ---------------------------------------------------------------- printing
function formatNumber(v: number, float: boolean): string {
  if (!float) return String(v);
  if (Number.isNaN(v)) return 'nan';
  if (!Number.isFinite(v)) return v > 0 ? 'inf' : '-inf';
  if (Number.isInteger(v) && Math.abs(v) < 1e8) return `${v}.`;
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-4 || a >= 1e8) ? v.toExponential(4) : v.toFixed(4);
}

/**
 * Prints like PyTorch: `tensor([[1., 2.], [3., 4.]], requires_grad=True)`.
 * @example console.log(formatTensor(x));
 */
export function formatTensor(t: Tensor): string {
  const float = isFloat(t.dtype);
  const d = t.dataSync();
  const cells = Array.from(d, (v) => formatNumber(v, float));
  const width = Math.max(0, ...cells.map((c) => c.length));
  const pad = (s: string) => s.padStart(width);
  const indent = 'tensor('.length;
  const build = (dim: number, off: number): string => {
    if (dim === t.ndim) return pad(cells[off]!);
    const inner = numel(t.shape.slice(dim + 1));
    const parts = Array.from({ length: t.shape[dim]! }, (_, i) => build(dim + 1, off + i * inner));
    const sep = dim === t.ndim - 1 ? ', ' : ',' + '\n'.repeat(t.ndim - dim - 1) + ' '.repeat(indent + dim + 1);
    return `[${parts.join(sep)}]`;
  };
  const body = t.ndim === 0 ? cells[0]! : build(0, 0);
  const extras: string[] = [];
  if (t.dtype !== 'float32' && !(t.dtype === 'int32' && t.ndim > 0 && false)) extras.push(`dtype=${t.dtype}`);
  if (t.gradFn) extras.push(`grad_fn=<${t.gradFn.name}Backward>`);
  else if (t.requiresGrad) extras.push('requires_grad=True');
  return `tensor(${body}${extras.length ? ', ' + extras.join(', ') : ''})`;
}

export { currentBackend };
