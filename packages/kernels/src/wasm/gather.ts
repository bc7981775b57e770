/**
 * @file wasm gather/scatter kernels: gather, scatterAdd, indexSelect and indexAdd (embedding
 * lookups and their backward). Placeholder: every call falls back to js until the kernels land.
 */
import type { KernelArg } from '../backend.js';
import type { KernelParams, TypedArray } from '../names.js';
import type { ModuleBuilder } from './assembler.js';
import type { Engine } from './runtime.js';

type Arg = KernelArg<TypedArray>;

export function emitGather(_mb: ModuleBuilder): void {}

export function gatherWasm(_engine: Engine, _inputs: readonly Arg[], _out: Arg, _params: KernelParams['gather']): boolean {
  return false;
}
export function scatterAddWasm(_engine: Engine, _inputs: readonly Arg[], _out: Arg, _params: KernelParams['scatterAdd']): boolean {
  return false;
}
export function indexSelectWasm(_engine: Engine, _inputs: readonly Arg[], _out: Arg, _params: KernelParams['indexSelect']): boolean {
  return false;
}
export function indexAddWasm(_engine: Engine, _inputs: readonly Arg[], _out: Arg, _params: KernelParams['indexAdd']): boolean {
  return false;
}
