/**
 * @file Sharing of dynamic (stateless) activation quantizations: when layers that read one tensor
 * (q/k/v projections, gate/up) quantize it on the same grid, the first result is handed to the
 * others while it still holds. ActQuantizer (quantizers.ts) is the only user.
 */
import type { Estimator, Tensor } from '@qgrad/core';

/** What two quantizations must agree on to share a result; a snapshot, as trust and temperature may change later. */
export interface SharedGrid {
  /** The quantizer's class (a subclass may quantize differently). */
  kind: Function;
  /** The grid's label ('int8', 'uint4', 'e4m3' …): equal labels are equal grids. */
  grid: string;
  granularity: string;
  /** The scale rule (JSON). */
  rule: string;
  estimator: string | Estimator;
  rounding: string;
  trust: number | undefined;
  temperature: number | undefined;
  training: boolean;
}

interface Entry {
  grid: SharedGrid;
  out: Tensor;
  /** Versions of the input and of the result when it was made: an in-place write to either retires it. */
  version: number;
  outVersion: number;
  /** Whether `out` is on the tape; then a backward that freed its node retires it too. */
  recorded: boolean;
}

/** Results per input tensor; they die with it. */
const memo = new WeakMap<Tensor, Entry[]>();

function sameGrid(a: SharedGrid, b: SharedGrid): boolean {
  return a.kind === b.kind && a.grid === b.grid && a.granularity === b.granularity && a.rule === b.rule && a.estimator === b.estimator
    && a.rounding === b.rounding && a.trust === b.trust && a.temperature === b.temperature && a.training === b.training;
}

/** A result whose buffer was recycled (the end of a `trainStep`, say) is retired like one written in place. */
function live(e: Entry, version: number): boolean {
  return !e.out.storage.released && e.version === version && e.out.version === e.outVersion && !(e.recorded && e.out.gradFn?.rule === null);
}

/**
 * The result an equal-grid quantization of `x` made earlier, or null. It is handed out only while
 * neither `x` nor it was written in place since, and it was made in the same grad mode (`recorded`:
 * on the tape) with its node not yet freed by a backward.
 */
export function sharedLookup(x: Tensor, grid: SharedGrid, recorded: boolean): Tensor | null {
  const list = memo.get(x);
  if (!list) return null;
  const version = x.version;
  for (const e of list) if (e.recorded === recorded && live(e, version) && sameGrid(e.grid, grid)) return e.out;
  return null;
}

/** Remembers `out` as the quantization of `x` on `grid` (called after a miss), dropping retired results: a long-lived input keeps one per grid. */
export function sharedRemember(x: Tensor, grid: SharedGrid, recorded: boolean, out: Tensor): void {
  const version = x.version;
  const list = (memo.get(x) ?? []).filter((e) => live(e, version));
  list.push({ grid, out, version, outVersion: out.version, recorded });
  memo.set(x, list);
}

/** How many results are remembered for `x` (tests). */
export function sharedCount(x: Tensor): number {
  return memo.get(x)?.length ?? 0;
}
