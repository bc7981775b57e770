/**
 * @file `Module`, the base of every layer and model: registered parameters, buffers and child
 * modules, train/eval mode, state dicts and the PyTorch-style printout; plus `Parameter`.
 * Containers (Sequential, ModuleList, ModuleDict) live in containers.ts.
 */
import { isAnomalyEnabled, noGrad, popModulePath, pushModulePath, type DType, type Tensor } from '@qgrad/core';

/**
 * Marks a tensor as a trainable parameter, like `nn.Parameter`: returns a detached leaf sharing
 * its storage with `requiresGrad` set.
 * @example this.weight = this.registerParameter('weight', Parameter(randn([4, 3])));
 */
export function Parameter(data: Tensor, requiresGrad = true): Tensor {
  const p = data.detach();
  p.requiresGrad = requiresGrad;
  return p;
}

/** Options of `loadStateDict`: whether missing or unexpected keys throw. */
export interface LoadStateDictOptions {
  /** Throw on missing or unexpected keys (default true). Shape mismatches always throw. */
  strict?: boolean;
}

/** What a non-strict `loadStateDict` reports: the keys the module has but the dict lacks, and the reverse. */
export interface LoadStateDictResult {
  missingKeys: string[];
  unexpectedKeys: string[];
}

type Slot = Tensor | Module | null | undefined;

/** A tensor an optimizer would train: a leaf that requires grad (what `Parameter(t)` makes). */
function isTrainableLeaf(v: unknown): v is Tensor {
  const t = v as { requiresGrad?: unknown; isLeaf?: unknown; shape?: unknown } | null;
  return typeof t === 'object' && t !== null && t.requiresGrad === true && t.isLeaf === true && Array.isArray(t.shape);
}
const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

// ---------------------------------------------------------------- anomaly-mode module names
// An anomaly error names the module it arose in. A module whose forward is entered outside any
// named one (the model the user called, or a module its caller never registered) names its
// subtree once with namedModules(); modules run inside it look themselves up. A shared module is
// reported under its first name, as namedModules() lists it.
interface Scope {
  names: Map<Module, string>;
  root: string;
}
const scopes: Scope[] = [];

function enterModule(m: Module): void {
  const outer = scopes[scopes.length - 1];
  const path = outer?.names.get(m);
  if (outer !== undefined && path) {
    scopes.push(outer);
    pushModulePath(`'${path}' (${m.constructor.name} in ${outer.root})`);
    return;
  }
  const names = new Map<Module, string>();
  for (const [name, sub] of m.namedModules()) names.set(sub, name);
  scopes.push({ names, root: m.constructor.name });
  pushModulePath(m.constructor.name);
}

function exitModule(): void {
  scopes.pop();
  popModulePath();
}

/**
 * Base class of layers and models.
 *
 * Registration convention (no Proxy): a subclass declares a field and registers it once in its
 * constructor; the registry keeps only the *name* and reads the value from the field, so
 * reassigning `layer.weight = t` or `model.fc = new Linear(…)` later is seen everywhere.
 * - `registerParameter(name, t)`: a trainable tensor (use `Parameter(t)` or any tensor; it is
 *   made a leaf that requires grad); `null` registers an absent optional parameter (`bias`).
 * - `registerBuffer(name, t, persistent = true)`: state that is not trained (running stats,
 *   RoPE tables); persistent buffers go into `stateDict()`.
 * - `registerModule(name, m)`: a child module; its entries appear as `name.<key>`.
 * Each helper assigns `this[name]` and returns the value, so either style reads well:
 * @example
 * class Affine extends Module {
 *   weight: Tensor;
 *   constructor(n: number) {
 *     super();
 *     this.weight = this.registerParameter('weight', ones([n]));
 *   }
 *   forward(x: Tensor): Tensor { return x.mul(this.weight); }
 * }
 */
export abstract class Module {
  /**
   * Wraps this instance's `forward` so that in anomaly mode a NaN or Inf error names the module by
   * its path from the outermost module called, as `namedModules()` and `stateDict()` name it
   * (`'model.layers.2.input_layernorm' (RMSNorm in Llama)`), the outermost one by its class name.
   * With anomaly mode off the wrapper only checks the flag.
   */
  constructor() {
    const forward = (this as unknown as { forward?: unknown }).forward;
    if (typeof forward !== 'function') return;
    // an own property, so `super.forward(…)` in a subclass reaches the unwrapped method and the
    // module is entered once
    Object.defineProperty(this, 'forward', {
      configurable: true,
      writable: true,
      value: (...args: unknown[]): unknown => {
        if (!isAnomalyEnabled()) return forward.apply(this, args);
        enterModule(this);
        try {
          return forward.apply(this, args);
        } finally {
          exitModule();
        }
      },
    });
  }

  /** True in training mode (dropout active); switch with `train()` / `eval()`. */
  training = true;
  #params: string[] = [];
  #buffers: string[] = [];
  #nonPersistent = new Set<string>();
  #modules: string[] = [];

  #get(name: string): Slot {
    return (this as unknown as Record<string, Slot>)[name];
  }
  #set(name: string, value: Slot): void {
    (this as unknown as Record<string, Slot>)[name] = value;
  }
  #claim(kind: string, name: string): void {
    if (!name || name.includes('.')) throw new Error(`${kind}: name '${name}' must be non-empty and contain no '.'`);
    if ([...this.#params, ...this.#buffers, ...this.#modules].includes(name)) throw new Error(`${kind}: '${name}' is already registered on ${this.constructor.name}`);
    if (name in this && !Object.prototype.hasOwnProperty.call(this, name)) throw new Error(`${kind}: '${name}' would shadow a method or property of ${this.constructor.name}`);
  }

  /** Registers `this[name]` as a parameter (made a leaf requiring grad); returns it. */
  registerParameter<T extends Tensor | null>(name: string, t: T): T {
    this.#claim('registerParameter', name);
    const p = (t && (t.isLeaf && t.requiresGrad ? t : Parameter(t))) as T;
    this.#params.push(name);
    this.#set(name, p);
    return p;
  }
  /** Registers `this[name]` as a buffer; non-persistent ones stay out of `stateDict()`. */
  registerBuffer<T extends Tensor | null>(name: string, t: T, persistent = true): T {
    this.#claim('registerBuffer', name);
    this.#buffers.push(name);
    if (!persistent) this.#nonPersistent.add(name);
    this.#set(name, t);
    return t;
  }
  /** Registers `this[name]` as a child module; returns it. */
  registerModule<M extends Module | null>(name: string, m: M): M {
    this.#claim('registerModule', name);
    this.#modules.push(name);
    this.#set(name, m);
    return m;
  }

  // ---------------------------------------------------------------- traversal
  /** Direct children with their names (absent ones skipped). */
  *namedChildren(): Generator<[string, Module]> {
    for (const n of this.#modules) {
      const m = this.#get(n);
      if (m instanceof Module) yield [n, m];
    }
  }
  *children(): Generator<Module> {
    for (const [, m] of this.namedChildren()) yield m;
  }
  /** This module and every descendant, depth first, each once (shared modules deduplicated). */
  *namedModules(prefix = '', seen = new Set<Module>()): Generator<[string, Module]> {
    if (seen.has(this)) return;
    seen.add(this);
    yield [prefix, this];
    for (const [n, m] of this.namedChildren()) yield* m.namedModules(prefix ? `${prefix}.${n}` : n, seen);
  }
  *modules(): Generator<Module> {
    for (const [, m] of this.namedModules()) yield m;
  }
  /**
   * Parameters with dotted names; a tensor shared by two modules is listed once.
   * Throws when a field of this module or a descendant holds a module, an array of modules or a
   * trainable leaf tensor that nothing in the tree registered (PyTorch registers such fields by
   * itself; here they would silently get no training), naming the field and the fix.
   * @example
   * class Net extends Module { fc = new Linear(3, 2); }
   * new Net().parameters(); // Error: field 'fc' of Net holds a Linear that is not registered …
   */
  *namedParameters(prefix = '', recurse = true): Generator<[string, Tensor]> {
    if (recurse) this.#checkRegistered();
    yield* this.#namedTensors(prefix, recurse, (m) => m.#params.map((n) => [n, m.#get(n)]));
  }
  /** The parameters, each once, in registration order (what optimizers take). */
  parameters(recurse = true): Tensor[] {
    return [...this.namedParameters('', recurse)].map(([, p]) => p);
  }
  *namedBuffers(prefix = '', recurse = true): Generator<[string, Tensor]> {
    yield* this.#namedTensors(prefix, recurse, (m) => m.#buffers.map((n) => [n, m.#get(n)]));
  }
  buffers(recurse = true): Tensor[] {
    return [...this.namedBuffers('', recurse)].map(([, b]) => b);
  }
  *#namedTensors(prefix: string, recurse: boolean, own: (m: Module) => [string, Slot][]): Generator<[string, Tensor]> {
    const seen = new Set<Tensor>();
    const mods: Iterable<[string, Module]> = recurse ? this.namedModules(prefix) : [[prefix, this]];
    for (const [mp, m] of mods) {
      for (const [n, t] of own(m)) {
        if (!t || seen.has(t as Tensor)) continue;
        seen.add(t as Tensor);
        yield [mp ? `${mp}.${n}` : n, t as Tensor];
      }
    }
  }
  /**
   * The unregistered-field check of namedParameters(): every module, array of modules or trainable
   * leaf tensor held by a plain field must be registered somewhere in this tree (aliases of
   * registered ones, e.g. a tied weight or a shortcut to a deep layer, are fine). Fields that are
   * deliberately not part of the module (a frozen teacher) belong in `#private` fields.
   */
  #checkRegistered(): void {
    const mods = [...this.namedModules()];
    const known = new Set<unknown>();
    for (const [, m] of mods) {
      known.add(m);
      for (const n of [...m.#params, ...m.#buffers]) known.add(m.#get(n));
    }
    for (const [path, m] of mods) {
      const registered = new Set([...m.#params, ...m.#buffers, ...m.#modules]);
      for (const key of Object.keys(m)) {
        if (registered.has(key)) continue;
        const v = (m as unknown as Record<string, unknown>)[key];
        const field = `'${path ? `${path}.` : ''}${key}' of ${m.constructor.name}`;
        if (v instanceof Module && !known.has(v)) {
          throw new Error(`${this.constructor.name}.parameters(): field ${field} holds a ${v.constructor.name} that is not registered, so its parameters would not be trained or saved; write this.${key} = this.registerModule('${key}', …) in the constructor (or keep it in a #private field if it is not part of the module)`);
        }
        if (Array.isArray(v) && v.some((e) => e instanceof Module && !known.has(e))) {
          throw new Error(`${this.constructor.name}.parameters(): field ${field} is an array of modules that are not registered; hold them in a ModuleList: this.${key} = this.registerModule('${key}', new ModuleList([...]))`);
        }
        if (isTrainableLeaf(v) && !known.has(v)) {
          throw new Error(`${this.constructor.name}.parameters(): field ${field} holds a tensor [${v.shape.join(', ')}] that requires grad but is not registered; write this.${key} = this.registerParameter('${key}', …) (or registerBuffer for state that is not trained)`);
        }
      }
    }
  }

  /** The submodule at a dotted path (`'layers.0.attn'`); '' is this module. */
  getSubmodule(path: string): Module {
    let m: Module = this;
    for (const part of path ? path.split('.') : []) {
      const child = m.#modules.includes(part) ? m.#get(part) : undefined;
      if (!(child instanceof Module)) throw new Error(`getSubmodule: ${m.constructor.name} has no submodule '${part}' (path '${path}')`);
      m = child;
    }
    return m;
  }

  // ---------------------------------------------------------------- modes and grads
  /** Sets training mode on this module and all descendants; returns this. */
  train(mode = true): this {
    for (const m of this.modules()) m.training = mode;
    return this;
  }
  /** Evaluation mode (`train(false)`): dropout off, caches usable. */
  eval(): this {
    return this.train(false);
  }
  /** Clears every parameter's gradient (sets it to null, PyTorch's default). */
  zeroGrad(): void {
    for (const p of this.parameters()) p.grad = null;
  }
  /** Switches gradient tracking of every parameter (freezing with `false`); returns this. */
  requiresGrad_(on = true): this {
    for (const p of this.parameters()) p.requiresGrad = on;
    return this;
  }
  /** Calls `fn` on every submodule (children first) and then on this one; returns this. */
  apply(fn: (m: Module) => void): this {
    for (const c of this.children()) c.apply(fn);
    fn(this);
    return this;
  }
  /** Number of parameter elements (shared tensors counted once). */
  numParameters(onlyTrainable = false): number {
    return this.parameters().reduce((n, p) => n + (onlyTrainable && !p.requiresGrad ? 0 : p.numel()), 0);
  }
  /**
   * Casts floating parameters and buffers to `dtype` (e.g. float64 for gradcheck), replacing them
   * with new leaves that keep their `requiresGrad`; returns this.
   */
  to(dtype: DType): this {
    for (const m of this.modules()) {
      for (const n of [...m.#params, ...m.#buffers]) {
        const t = m.#get(n) as Tensor | null | undefined;
        if (!t || t.dtype === dtype || !(t.dtype === 'float32' || t.dtype === 'float64')) continue;
        const c = noGrad(() => t.to(dtype));
        c.requiresGrad = t.requiresGrad;
        m.#set(n, c);
      }
    }
    return this;
  }
  double(): this {
    return this.to('float64');
  }
  float(): this {
    return this.to('float32');
  }

  // ---------------------------------------------------------------- state dicts
  /**
   * Parameters and persistent buffers by dotted name, as detached tensors sharing storage with
   * the model (like PyTorch). Tied tensors appear under every name that reaches them.
   */
  stateDict(prefix = ''): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    this.#collectState(prefix, out);
    return out;
  }
  #collectState(prefix: string, out: Record<string, Tensor>): void {
    for (const n of this.#params) {
      const p = this.#get(n) as Tensor | null;
      if (p) out[prefix + n] = p.detach();
    }
    for (const n of this.#buffers) {
      const b = this.#get(n) as Tensor | null;
      if (b && !this.#nonPersistent.has(n)) out[prefix + n] = b.detach();
    }
    for (const [n, m] of this.namedChildren()) m.#collectState(`${prefix}${n}.`, out);
  }

  /**
   * Copies tensors from `stateDict` into this model's parameters and buffers, in place and cast to
   * their dtypes. Everything is checked before anything is written: a shape mismatch always
   * throws; missing or unexpected keys throw when `strict` (the default), else are returned.
   * @example model.loadStateDict(loadSafetensors('ckpt.safetensors'));
   */
  loadStateDict(stateDict: Record<string, Tensor>, opts: LoadStateDictOptions = {}): LoadStateDictResult {
    const strict = opts.strict ?? true;
    const own = this.stateDict();
    const missingKeys = Object.keys(own).filter((k) => !(k in stateDict));
    const unexpectedKeys = Object.keys(stateDict).filter((k) => !(k in own));
    const errors: string[] = [];
    for (const [k, t] of Object.entries(own)) {
      const src = stateDict[k];
      if (src && src.shape.join() !== t.shape.join()) errors.push(`size mismatch for ${k}: checkpoint ${fmt(src.shape)}, model ${fmt(t.shape)}`);
    }
    if (strict && missingKeys.length) errors.push(`missing keys: ${missingKeys.join(', ')}`);
    if (strict && unexpectedKeys.length) errors.push(`unexpected keys: ${unexpectedKeys.join(', ')}`);
    if (errors.length) throw new Error(errors.map((e) => `loadStateDict: ${e}`).join('\n') + `\n(loading into ${this.constructor.name})`);
    noGrad(() => {
      for (const [k, t] of Object.entries(own)) if (stateDict[k]) t.copy_(stateDict[k]!);
    });
    return { missingKeys, unexpectedKeys };
  }

  // ---------------------------------------------------------------- printing
  /** The text inside the parentheses of this module's line (override in layers). */
  extraRepr(): string {
    return '';
  }
  /** PyTorch-style tree: `Sequential(\n  (0): Linear(inFeatures=2, outFeatures=3, bias=true)\n)`. */
  toString(): string {
    const lines = [...this.namedChildren()].map(([n, m]) => `(${n}): ${m.toString().replace(/\n/g, '\n  ')}`);
    const extra = this.extraRepr();
    if (!lines.length) return `${this.constructor.name}(${extra})`;
    const body = [...(extra ? extra.split('\n') : []), ...lines].map((l) => `  ${l}`).join('\n');
    return `${this.constructor.name}(\n${body}\n)`;
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }
}
