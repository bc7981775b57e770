/**
 * @file The Tensor class: storage, shape/strides/offset views, autograd fields, reading values
 * back, printing, and the PyTorch-named methods (each a one-line call into ops/<family>.ts).
 * Ops themselves and their gradients live in ops/; the engine in tape.ts.
 */
import { isContiguous, numel, type Backend, type DType, type TypedArray } from '@qgrad/kernels';
import type { BackendName } from './backend.js';
import { runBackward, setEngineOps, type BackwardOptions, type GradHook, type Node } from './tape.js';
import { defineFunction } from './function.js';
import * as C from './ops/creation.js';
import * as L from './lifetime.js';
import * as E from './ops/elementwise.js';
import * as R from './ops/reduce.js';
import * as M from './ops/movement.js';
import * as Q from './estimators/quant.js';
import * as H from './ops/hadamard.js';
import * as LA from './ops/linalg.js';
import * as S from './ops/shape.js';
import * as I from './ops/indexing.js';
import * as NN from './ops/nn.js';
import * as DEV from './ops/device.js';

/** A buffer on a backend, shared by all views of it; `version` counts in-place writes. */
export interface Storage {
  backend: Backend;
  data: unknown;
  dtype: DType;
  size: number;
  version: number;
  /** The op that allocated it (dispatch.ts `empty`), named by errors. */
  madeBy?: string;
  /**
   * Once the buffer was released (lifetime.ts `release`): the scope that released it ('trainStep',
   * 'the backward pass', 'dispose()' …). Any use then throws.
   */
  released?: false | string;
  /** Marked by `keep`: no scope releases it, only `dispose` or the garbage collector. */
  kept?: boolean;
  /** Backend-owned memory that must be freed (lifetime.ts tracks it), not a garbage-collected array. */
  owned?: boolean;
}

type Scalar = number;
type TensorLike = Tensor | Scalar;
/** Numbers nested in arrays as deep as the tensor has dims, as `tensor()` takes and `toArray()` returns. */
export type NestedArray = number | NestedArray[];

/**
 * An n-dimensional array on a backend, recorded on the autograd tape when it requires grad.
 * @example
 * const x = tensor([[1, 2], [3, 4]], { requiresGrad: true });
 * x.mul(x).sum().backward();
 * x.grad!.toArray(); // [[2, 4], [6, 8]]
 */
export class Tensor {
  readonly storage: Storage;
  readonly shape: number[];
  readonly strides: number[];
  readonly offset: number;
  /** Whether ops on this tensor are recorded for autograd. */
  requiresGrad = false;
  /** Accumulated gradient after `backward()` (leaf tensors). */
  grad: Tensor | null = null;
  /** The tape node that produced this tensor (null for leaves). */
  gradFn: Node | null = null;
  /** Which output of `gradFn` this tensor is. */
  outputIndex = 0;
  /** Gradient hooks of a leaf tensor (non-leaf hooks live on the node). */
  hooks: GradHook[] | undefined;

  constructor(storage: Storage, shape: number[], strides: number[], offset: number) {
    this.storage = storage;
    this.shape = shape;
    this.strides = strides;
    this.offset = offset;
  }

  get dtype(): DType {
    return this.storage.dtype;
  }
  get device(): BackendName {
    return this.storage.backend.name as BackendName;
  }
  get ndim(): number {
    return this.shape.length;
  }
  /** In-place writes to the storage so far (what saved-tensor checks compare). */
  get version(): number {
    return this.storage.version;
  }
  get isLeaf(): boolean {
    return this.gradFn === null;
  }
  numel(): number {
    return numel(this.shape);
  }
  /** Size of one dim (negative counts from the end), or the whole shape. */
  size(): number[];
  size(dim: number): number;
  size(dim?: number): number[] | number {
    if (dim === undefined) return [...this.shape];
    return this.shape[dim < 0 ? dim + this.ndim : dim]!;
  }
  dim(): number {
    return this.ndim;
  }
  isContiguous(): boolean {
    return isContiguous(this.shape, this.strides);
  }

  // ---------------------------------------------------------------- reading back
  /**
   * The values in row-major order, as a new typed array of the tensor's dtype, read without
   * waiting (as TensorFlow.js's `dataSync`): on CPU backends the values are there already; a
   * device backend blocks until its queue is done.
   * @example tensor([[1, 2], [3, 4]]).dataSync(); // Float32Array [1, 2, 3, 4]
   */
  dataSync(): TypedArray {
    if (this.storage.released) throw new Error(L.useAfterRelease(this, 'dataSync'));
    const c = this.isContiguous() ? this : M.contiguousNoGrad(this);
    const all = c.storage.backend.readSync(c.storage.data, c.dtype, c.storage.size);
    return all.slice(c.offset, c.offset + this.numel()) as TypedArray;
  }
  /**
   * The values, once the backend has computed them: the one read that works the same on every
   * backend (a device backend synchronises here and nowhere else).
   * @example const values = await model.forward(x).data();
   */
  async data(): Promise<TypedArray> {
    if (this.storage.released) throw new Error(L.useAfterRelease(this, 'data'));
    const c = this.isContiguous() ? this : M.contiguousNoGrad(this);
    const all = await c.storage.backend.read(c.storage.data, c.dtype, c.storage.size);
    return all.slice(c.offset, c.offset + this.numel()) as TypedArray;
  }
  /** Nested arrays of numbers (a number for 0-d tensors). */
  toArray(): NestedArray {
    const d = this.dataSync();
    const build = (dim: number, off: number): NestedArray => {
      if (dim === this.ndim) return d[off]!;
      const inner = numel(this.shape.slice(dim + 1));
      return Array.from({ length: this.shape[dim]! }, (_, i) => build(dim + 1, off + i * inner));
    };
    return build(0, 0);
  }
  /** The single value of a one-element tensor. */
  item(): number {
    if (this.numel() !== 1) throw new Error(`item: only one-element tensors can be converted to a number, got shape [${this.shape.join(', ')}]`);
    return this.dataSync()[0]!;
  }
  /** True when any element is NaN or ±Inf. */
  hasNonFinite(): boolean {
    const d = this.dataSync();
    for (let i = 0; i < d.length; i++) if (!Number.isFinite(d[i]!)) return true;
    return false;
  }
  toString(): string {
    return C.formatTensor(this);
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }

  // ---------------------------------------------------------------- autograd
  /**
   * Computes gradients of this tensor with respect to the leaves of its graph, accumulating
   * them in `.grad`. A non-scalar tensor needs an explicit `grad` of its own shape. Options may
   * come alone, as PyTorch's keyword arguments do.
   * @example loss.backward({ createGraph: true }); y.backward(ones([3]), { retainGraph: true });
   */
  backward(opts?: BackwardOptions): void;
  backward(grad?: Tensor | null, opts?: BackwardOptions): void;
  backward(gradOrOpts?: Tensor | BackwardOptions | null, maybeOpts?: BackwardOptions): void {
    let grad: Tensor | null | undefined;
    let opts: BackwardOptions;
    if (gradOrOpts instanceof Tensor || gradOrOpts === null || gradOrOpts === undefined) {
      grad = gradOrOpts;
      opts = checkBackwardOptions(maybeOpts ?? {});
    } else {
      if (maybeOpts !== undefined) throw new TypeError('backward: options were given twice; call backward(grad, options) or backward(options)');
      opts = checkBackwardOptions(gradOrOpts);
    }
    if (!this.requiresGrad) throw new Error(`backward: tensor of shape [${this.shape.join(', ')}] does not require grad and has no grad_fn`);
    if (!grad) {
      if (this.numel() !== 1) throw new Error(`backward: grad can be implicitly created only for scalar outputs; this tensor has shape [${this.shape.join(', ')}], pass a gradient of that shape`);
      grad = C.onesLike(this);
    } else if (grad.shape.join() !== this.shape.join()) {
      throw new Error(`backward: gradient of shape [${grad.shape.join(', ')}] does not match the tensor's shape [${this.shape.join(', ')}]`);
    }
    runBackward([this], [grad], opts);
  }
  /** A tensor sharing storage but cut from the graph. */
  detach(): Tensor {
    return new Tensor(this.storage, this.shape, this.strides, this.offset);
  }
  /** A new Tensor object over the same view (used where an op would return its input). */
  alias(): Tensor {
    return new Tensor(this.storage, this.shape, this.strides, this.offset);
  }
  /** Sets `requiresGrad` on a leaf, in place; returns this. */
  requiresGrad_(on = true): this {
    if (!this.isLeaf && !on) throw new Error('requiresGrad_: cannot turn off requiresGrad on a non-leaf tensor; use detach()');
    this.requiresGrad = on;
    return this;
  }
  /**
   * Calls `hook(grad)` when this tensor's gradient is computed; a returned tensor replaces it.
   * @returns a handle whose `remove()` unregisters the hook.
   */
  registerHook(hook: GradHook): { remove(): void } {
    if (!this.requiresGrad) throw new Error("registerHook: cannot register a hook on a tensor that doesn't require grad");
    let list: GradHook[];
    if (this.gradFn) list = this.gradFn.hooks[this.outputIndex] ??= [];
    else list = this.hooks ??= [];
    list.push(hook);
    return { remove: () => void list.splice(list.indexOf(hook) >>> 0, 1) };
  }
  /** Keeps the gradient of a non-leaf tensor in `.grad` after backward. */
  retainGrad(): void {
    if (this.isLeaf) return;
    this.registerHook((g) => {
      this.grad = this.grad ? E.add(this.grad, g) : g;
    });
  }
  /** Sets `.grad` to null. */
  zeroGrad(): void {
    this.grad = null;
  }

  // ---------------------------------------------------------------- in-place (no autograd)
  /** Copies `src` (broadcast) into this tensor, casting; bumps the version. */
  copy_(src: TensorLike): this {
    E.copyInto(this, src);
    return this;
  }
  fill_(value: number): this {
    E.copyInto(this, value);
    return this;
  }
  zero_(): this {
    return this.fill_(0);
  }
  add_(other: TensorLike, alpha = 1): this {
    E.inplaceBinary(this, 'add', other, alpha);
    return this;
  }
  sub_(other: TensorLike, alpha = 1): this {
    E.inplaceBinary(this, 'sub', other, alpha);
    return this;
  }
  mul_(other: TensorLike): this {
    E.inplaceBinary(this, 'mul', other);
    return this;
  }
  div_(other: TensorLike): this {
    E.inplaceBinary(this, 'div', other);
    return this;
  }

  // ---------------------------------------------------------------- creation-like
  /** Casts to a dtype or moves to a backend: `x.to('float64')`, `x.to('js')`. */
  to(target: DType | BackendName): Tensor {
    return DEV.to(this, target, E.cast);
  }
  float(): Tensor {
    return E.cast(this, 'float32');
  }
  double(): Tensor {
    return E.cast(this, 'float64');
  }
  int(): Tensor {
    return E.cast(this, 'int32');
  }
  clone(): Tensor {
    return M.clone(this);
  }
  contiguous(): Tensor {
    return M.contiguous(this);
  }

  // ---------------------------------------------------------------- elementwise (ops/elementwise.ts)
  add(other: TensorLike, alpha?: number): Tensor { return E.add(this, other, alpha); }
  sub(other: TensorLike, alpha?: number): Tensor { return E.sub(this, other, alpha); }
  mul(other: TensorLike): Tensor { return E.mul(this, other); }
  div(other: TensorLike): Tensor { return E.div(this, other); }
  pow(exponent: TensorLike): Tensor { return E.pow(this, exponent); }
  neg(): Tensor { return E.neg(this); }
  exp(): Tensor { return E.exp(this); }
  log(): Tensor { return E.log(this); }
  log1p(): Tensor { return E.log1p(this); }
  expm1(): Tensor { return E.expm1(this); }
  sqrt(): Tensor { return E.sqrt(this); }
  rsqrt(): Tensor { return E.rsqrt(this); }
  abs(): Tensor { return E.abs(this); }
  sign(): Tensor { return E.sign(this); }
  sin(): Tensor { return E.sin(this); }
  cos(): Tensor { return E.cos(this); }
  tanh(): Tensor { return E.tanh(this); }
  sigmoid(): Tensor { return E.sigmoid(this); }
  relu(): Tensor { return E.relu(this); }
  erf(): Tensor { return E.erf(this); }
  reciprocal(): Tensor { return E.reciprocal(this); }
  square(): Tensor { return E.square(this); }
  floor(): Tensor { return E.floor(this); }
  ceil(): Tensor { return E.ceil(this); }
  trunc(): Tensor { return E.trunc(this); }
  round(): Tensor { return E.round(this); }
  maximum(other: TensorLike): Tensor { return E.maximum(this, other); }
  minimum(other: TensorLike): Tensor { return E.minimum(this, other); }
  clamp(min?: number | null, max?: number | null): Tensor { return E.clamp(this, min, max); }
  where(cond: Tensor, other: TensorLike): Tensor { return E.where(cond, this, other); }
  eq(other: TensorLike): Tensor { return E.eq(this, other); }
  ne(other: TensorLike): Tensor { return E.ne(this, other); }
  lt(other: TensorLike): Tensor { return E.lt(this, other); }
  le(other: TensorLike): Tensor { return E.le(this, other); }
  gt(other: TensorLike): Tensor { return E.gt(this, other); }
  ge(other: TensorLike): Tensor { return E.ge(this, other); }
  isfinite(): Tensor { return E.isfinite(this); }
  isnan(): Tensor { return E.isnan(this); }
  logicalNot(): Tensor { return E.logicalNot(this); }
  // @helper-elementwise: more elementwise methods go here

  // ---------------------------------------------------------------- reductions (ops/reduce.ts)
  sum(dim?: number | number[] | null, keepdim?: boolean): Tensor { return R.sum(this, dim, keepdim); }
  mean(dim?: number | number[] | null, keepdim?: boolean): Tensor { return R.mean(this, dim, keepdim); }
  var(dim?: number | number[] | null, opts?: R.VarOptions): Tensor { return R.variance(this, dim, opts); }
  std(dim?: number | number[] | null, opts?: R.VarOptions): Tensor { return R.std(this, dim, opts); }
  amax(dim?: number | number[] | null, keepdim?: boolean): Tensor { return R.amax(this, dim, keepdim); }
  amin(dim?: number | number[] | null, keepdim?: boolean): Tensor { return R.amin(this, dim, keepdim); }
  max(): Tensor;
  max(dim: number, keepdim?: boolean): R.ValuesIndices;
  max(dim?: number, keepdim?: boolean): Tensor | R.ValuesIndices { return dim === undefined ? R.max(this) : R.max(this, dim, keepdim); }
  min(): Tensor;
  min(dim: number, keepdim?: boolean): R.ValuesIndices;
  min(dim?: number, keepdim?: boolean): Tensor | R.ValuesIndices { return dim === undefined ? R.min(this) : R.min(this, dim, keepdim); }
  argmax(dim?: number | null, keepdim?: boolean): Tensor { return R.argmax(this, dim, keepdim); }
  argmin(dim?: number | null, keepdim?: boolean): Tensor { return R.argmin(this, dim, keepdim); }
  logsumexp(dim?: number | number[] | null, keepdim?: boolean): Tensor { return R.logsumexp(this, dim, keepdim); }
  norm(p?: number, dim?: number | number[] | null, keepdim?: boolean): Tensor { return R.norm(this, p, dim, keepdim); }
  // @helper-reduce: more reduction methods go here

  // ---------------------------------------------------------------- movement (ops/movement.ts)
  reshape(...shape: number[] | [number[]]): Tensor { return M.reshape(this, flatShape(shape)); }
  view(...shape: number[] | [number[]]): Tensor { return M.view(this, flatShape(shape)); }
  flatten(startDim = 0, endDim = -1): Tensor { return M.flatten(this, startDim, endDim); }
  permute(...dims: number[] | [number[]]): Tensor { return M.permute(this, flatShape(dims)); }
  transpose(dim0: number, dim1: number): Tensor { return M.transpose(this, dim0, dim1); }
  /** 2-D transpose (0-D and 1-D tensors are returned as they are). */
  t(): Tensor { return M.t(this); }
  get T(): Tensor { return M.permute(this, this.shape.map((_, i) => this.ndim - 1 - i)); }
  expand(...shape: number[] | [number[]]): Tensor { return M.expand(this, flatShape(shape)); }
  expandAs(other: Tensor): Tensor { return M.expand(this, other.shape); }
  squeeze(dim?: number | number[]): Tensor { return M.squeeze(this, dim); }
  unsqueeze(dim: number): Tensor { return M.unsqueeze(this, dim); }
  narrow(dim: number, start: number, length: number): Tensor { return M.narrow(this, dim, start, length); }
  /** Python-style slice along one dim: `x.slice(1, 2, null, 2)` is `x[:, 2::2]`. */
  slice(dim: number, start?: number | null, end?: number | null, step?: number): Tensor { return M.slice(this, dim, start, end, step); }
  select(dim: number, index: number): Tensor { return M.select(this, dim, index); }
  // @helper-movement: more movement methods go here

  // ---------------------------------------------------------------- linalg (ops/linalg.ts)
  // @helper-linalg: methods go here
  matmul(other: Tensor): Tensor { return LA.matmul(this, other); }
  mm(other: Tensor): Tensor { return LA.mm(this, other); }
  bmm(other: Tensor): Tensor { return LA.bmm(this, other); }
  dot(other: Tensor): Tensor { return LA.dot(this, other); }
  outer(other: Tensor): Tensor { return LA.outer(this, other); }

  // ---------------------------------------------------------------- shape ops (ops/shape.ts)
  // @helper-shape: methods go here
  split(splitSizeOrSections: number | number[], dim?: number): Tensor[] { return S.split(this, splitSizeOrSections, dim); }
  chunk(chunks: number, dim?: number): Tensor[] { return S.chunk(this, chunks, dim); }
  unbind(dim?: number): Tensor[] { return S.unbind(this, dim); }
  triu(diagonal?: number): Tensor { return S.triu(this, diagonal); }
  tril(diagonal?: number): Tensor { return S.tril(this, diagonal); }
  repeat(...sizes: number[] | [number[]]): Tensor { return S.repeat(this, flatShape(sizes)); }
  repeatInterleave(repeats: number | number[] | Tensor, dim?: number): Tensor { return S.repeatInterleave(this, repeats, dim); }
  flip(...dims: number[] | [number[]]): Tensor { return S.flip(this, flatShape(dims)); }
  roll(shifts: number | number[], dims?: number | number[]): Tensor { return S.roll(this, shifts, dims); }

  // ---------------------------------------------------------------- indexing (ops/indexing.ts)
  // @helper-indexing: methods go here
  gather(dim: number, index: Tensor): Tensor { return I.gather(this, dim, index); }
  scatterAdd(dim: number, index: Tensor, src: Tensor): Tensor { return I.scatterAdd(this, dim, index, src); }
  indexSelect(dim: number, index: Tensor): Tensor { return I.indexSelect(this, dim, index); }
  indexAdd(dim: number, index: Tensor, src: Tensor, alpha?: number): Tensor { return I.indexAdd(this, dim, index, src, alpha); }
  take(index: Tensor): Tensor { return I.take(this, index); }
  maskedFill(mask: Tensor, value: number | Tensor): Tensor { return I.maskedFill(this, mask, value); }

  // ---------------------------------------------------------------- nn ops (ops/nn.ts, ops/loss.ts)
  // @helper-nn: methods go here
  softmax(dim: number): Tensor { return NN.softmax(this, dim); }
  logSoftmax(dim: number): Tensor { return NN.logSoftmax(this, dim); }

  // ---------------------------------------------------------------- quantization (ops/quant.ts)
  // @helper-quant: methods go here
  fakeQuantize(scale: Tensor | number, zeroPoint: Tensor | number | undefined, opts: Q.FakeQuantizeOptions): Tensor { return Q.fakeQuantize(this, scale, zeroPoint, opts); }
  quantRound(opts?: Q.QuantOptions): Tensor { return Q.quantRound(this, opts); }
  softQuantize(levels: Tensor | number[], temperature: Tensor | number): Tensor { return Q.softQuantize(this, levels, temperature); }
  hadamard(opts?: H.HadamardOptions): Tensor { return H.hadamard(this, opts); }
}

const BACKWARD_OPTIONS = new Set(['createGraph', 'retainGraph']);
function checkBackwardOptions(o: unknown): BackwardOptions {
  if (typeof o !== 'object' || o === null || Array.isArray(o) || ArrayBuffer.isView(o)) {
    throw new TypeError(`backward: expected a gradient Tensor or an options object { createGraph?, retainGraph? }, got ${Array.isArray(o) ? 'an array' : ArrayBuffer.isView(o) ? 'a typed array (wrap it with tensor())' : typeof o}`);
  }
  for (const k of Object.keys(o)) {
    if (!BACKWARD_OPTIONS.has(k)) throw new TypeError(`backward: unknown option '${k}' (known: createGraph, retainGraph)`);
  }
  return o as BackwardOptions;
}

function flatShape(args: number[] | [number[]]): number[] {
  return Array.isArray(args[0]) ? [...(args[0] as number[])] : (args as number[]);
}

setEngineOps({
  add: (a, b) => E.add(a, b),
  sumToShape: (g, shape) => R.sumToShape(g, shape),
  zeros: (shape, dtype) => C.zeros(shape, { dtype }),
  cast: (g, dtype) => E.cast(g, dtype),
  onceGuard: (g, name) => onceGuard(g, name),
  hasNonFinite: (t) => t.hasNonFinite(),
  startRecording: () => L.startRecording(),
  stopRecording: (prev) => L.stopRecording(prev),
  record: (storages) => L.record(storages),
  release: (st) => L.release(st, 'the backward pass'),
  keep: (t) => void L.keep(t),
});

// wraps a gradient so that differentiating it again fails loudly (onceDifferentiable functions)
const onceGuard = (g: Tensor, name: string): Tensor =>
  defineFunction({
    name: `${name}OnceDifferentiable`,
    forward: (_ctx, x: Tensor) => x.alias(),
    backward: () => {
      throw new Error(`${name}: this function is marked onceDifferentiable; its backward cannot be differentiated again (double backward)`);
    },
  })(g);
