/**
 * @file wasm fast Walsh–Hadamard transform in independent power-of-two blocks: f64x2 butterflies
 * in place, in the js kernel's order and in double like it (float32 in and out converted by the
 * copies), so results are bit-identical to js for both dtypes.
 */
import type { KernelArg } from '../backend.js';
import { isContiguous, numel, offsets } from '../layout.js';
import type { FwhtParams, TypedArray } from '../names.js';
import { type ModuleBuilder, Op, Simd, ValType } from './assembler.js';
import { type Engine } from './runtime.js';

type Arg = KernelArg<TypedArray>;

/** Below this many elements the copies cost more than the js loop. */
const MIN_ELEMENTS = 1024;

/**
 * fwht_f64(buf, n, b, norm, scale): each block of b doubles at buf gets the stages h = 1, 2, …, b/2
 * ((a, c) → (a + c, a − c)), then (scale ≠ 0) every element is multiplied by norm, as js does.
 */
export function emitHadamard(mb: ModuleBuilder): void {
  const P = ValType.i32;
  mb.func([P, P, P, ValType.f64, P], [], (c) => {
    const [buf, n, b, norm, scale] = [0, 1, 2, 3, 4];
    const [start, h, i, j, pa, pc, end] = [0, 0, 0, 0, 0, 0, 0].map(() => c.local(P)) as number[] as [number, number, number, number, number, number, number];
    const [va, vc] = [c.local(ValType.v128), c.local(ValType.v128)];
    const [sa, sc] = [c.local(ValType.f64), c.local(ValType.f64)];
    const addr = (k: number) => c.get(buf).get(k).i32(3).op(Op.i32_shl).op(Op.i32_add);
    c.for(start, () => c.i32(0), () => c.get(n), 0, () => {
      c.get(start).get(b).op(Op.i32_add).set(end);
      // h = 1: adjacent pairs, scalar
      c.get(b).i32(1).op(Op.i32_gt_s).if();
      c.for(i, () => c.get(start), () => c.get(end), 2, () => {
        addr(i).set(pa);
        c.get(pa).mem(Op.f64_load, 3).set(sa);
        c.get(pa).mem(Op.f64_load, 3, 8).set(sc);
        c.get(pa).get(sa).get(sc).op(Op.f64_add).mem(Op.f64_store, 3);
        c.get(pa).get(sa).get(sc).op(Op.f64_sub).mem(Op.f64_store, 3, 8);
      });
      c.end();
      // h ≥ 2: two butterflies per f64x2
      c.for(h, () => c.i32(2), () => c.get(b), 0, () => {
        c.for(i, () => c.get(start), () => c.get(end), 0, () => {
          c.for(j, () => c.get(i), () => c.get(i).get(h).op(Op.i32_add), 2, () => {
            addr(j).set(pa);
            c.get(pa).get(h).i32(3).op(Op.i32_shl).op(Op.i32_add).set(pc);
            c.get(pa).simdMem(Simd.v128_load, 0).set(va);
            c.get(pc).simdMem(Simd.v128_load, 0).set(vc);
            c.get(pa).get(va).get(vc).simd(Simd.f64x2_add).simdMem(Simd.v128_store, 0);
            c.get(pc).get(va).get(vc).simd(Simd.f64x2_sub).simdMem(Simd.v128_store, 0);
          });
          c.get(i).get(h).i32(1).op(Op.i32_shl).op(Op.i32_add).set(i);
        });
        c.get(h).i32(1).op(Op.i32_shl).set(h);
      });
      c.get(start).get(b).op(Op.i32_add).set(start);
    });
    c.get(scale).if();
    c.get(norm).simd(Simd.f64x2_splat).set(vc);
    c.for(i, () => c.i32(0), () => c.get(n).i32(1).op(Op.i32_sub), 2, () => {
      addr(i).set(pa);
      c.get(pa).get(pa).simdMem(Simd.v128_load, 0).get(vc).simd(Simd.f64x2_mul).simdMem(Simd.v128_store, 0);
    });
    c.get(i).get(n).op(Op.i32_lt_s).if();
    addr(i).set(pa);
    c.get(pa).get(pa).mem(Op.f64_load, 3).get(norm).op(Op.f64_mul).mem(Op.f64_store, 3);
    c.end();
    c.end();
  }, 'fwht_f64');
}

export function fwhtWasm(engine: Engine, [x]: readonly Arg[], out: Arg, { blockSize: b, normalize }: FwhtParams): boolean {
  const n = numel(out.shape);
  if (x!.dtype !== out.dtype || (out.dtype !== 'float32' && out.dtype !== 'float64')) return false;
  if (n < MIN_ELEMENTS || b < 1 || (b & (b - 1)) !== 0 || n % b !== 0) return false;
  if (!engine.reserve(n * 8)) return false;
  const view = engine.f64;
  const at = engine.scratch / 8;
  // computed in f64 scratch whatever the dtype: an operand outside wasm memory counts as staged
  if (isContiguous(x!.shape, x!.strides)) engine.stageIn(x!.data, x!.offset, x!.offset + n, view, engine.scratch);
  else {
    const ix = offsets(x!);
    const xd = x!.data;
    for (let k = 0; k < n; k++) view[at + k] = xd[ix[k]!]!;
  }
  const norm = 1 / Math.sqrt(b);
  // js multiplies by 1 when not normalizing: an identity, so skip that pass
  engine.call('fwht_f64', engine.scratch, n, b, norm, normalize && b > 1 ? 1 : 0);
  engine.stageOut(out, view, engine.scratch, n);
  return true;
}
