/**
 * @file Module containers: Sequential (chained forward), ModuleList (indexed children) and
 * ModuleDict (named children), registered under '0', '1', … or their keys like PyTorch's.
 */
import type { Tensor } from '@qgrad/core';
import { Module } from './module.js';

/** A module whose forward maps one tensor to one tensor (what Sequential chains). */
export type TensorModule = Module & { forward(x: Tensor): Tensor };

/**
 * Applies its modules in order.
 * @example const mlp = new Sequential(new Linear(2, 8), new ReLU(), new Linear(8, 1));
 */
export class Sequential extends Module {
  #layers: TensorModule[] = [];
  constructor(...layers: TensorModule[]) {
    super();
    for (const l of layers) this.append(l);
  }
  append(layer: TensorModule): this {
    this.registerModule(String(this.#layers.length), layer);
    this.#layers.push(layer);
    return this;
  }
  get length(): number {
    return this.#layers.length;
  }
  /** The layer at `i` (negative counts from the end). */
  at(i: number): TensorModule {
    const j = i < 0 ? i + this.#layers.length : i;
    if (!(j >= 0 && j < this.#layers.length)) throw new RangeError(`Sequential.at: index ${i} is out of range for ${this.#layers.length} layers`);
    return (this as unknown as Record<string, TensorModule>)[String(j)]!; // the field, so reassignment is seen
  }
  *[Symbol.iterator](): Iterator<TensorModule> {
    for (let i = 0; i < this.#layers.length; i++) yield this.at(i);
  }
  forward(x: Tensor): Tensor {
    for (let i = 0; i < this.#layers.length; i++) x = this.at(i).forward(x);
    return x;
  }
}

/**
 * Holds submodules in a list (e.g. transformer blocks), registered as '0', '1', ….
 * @example const blocks = new ModuleList(Array.from({ length: 4 }, () => new Block(cfg)));
 */
export class ModuleList<M extends Module = Module> extends Module {
  #n = 0;
  constructor(modules: Iterable<M> = []) {
    super();
    for (const m of modules) this.append(m);
  }
  append(m: M): this {
    this.registerModule(String(this.#n++), m);
    return this;
  }
  get length(): number {
    return this.#n;
  }
  /** The module at `i` (negative counts from the end). */
  at(i: number): M {
    const j = i < 0 ? i + this.#n : i;
    if (!(j >= 0 && j < this.#n)) throw new RangeError(`ModuleList.at: index ${i} is out of range for ${this.#n} modules`);
    return (this as unknown as Record<string, M>)[String(j)]!;
  }
  *[Symbol.iterator](): Iterator<M> {
    for (let i = 0; i < this.#n; i++) yield this.at(i);
  }
}

/**
 * Holds submodules by name; keys keep insertion order.
 * @example const heads = new ModuleDict({ cls: new Linear(8, 10), box: new Linear(8, 4) });
 */
export class ModuleDict<M extends Module = Module> extends Module {
  #keys: string[] = [];
  constructor(modules: Record<string, M> = {}) {
    super();
    for (const [k, m] of Object.entries(modules)) this.set(k, m);
  }
  set(key: string, m: M): this {
    if (this.#keys.includes(key)) (this as unknown as Record<string, M>)[key] = m;
    else {
      this.registerModule(key, m);
      this.#keys.push(key);
    }
    return this;
  }
  get(key: string): M | undefined {
    return this.#keys.includes(key) ? (this as unknown as Record<string, M>)[key] : undefined;
  }
  has(key: string): boolean {
    return this.#keys.includes(key);
  }
  keys(): string[] {
    return [...this.#keys];
  }
  *entries(): Generator<[string, M]> {
    for (const k of this.#keys) yield [k, this.get(k)!];
  }
  get size(): number {
    return this.#keys.length;
  }
}
