/**
 * @file wasm fast Walsh–Hadamard transform in independent power-of-two blocks, in place, in the
 * js kernel's order and in the tensor's dtype as it computes (js/hadamard.ts): float64 in f64x2
 * butterflies, float32 in f32x4 ones (the first two stages inside each vector by shuffles, then
 * two stages per pass over the block), blocks split over the thread pool. Each butterfly is the
 * same IEEE operation on the same operands as in js, so results are bit-identical for both dtypes.
 */
import type { KernelArg } from '../backend.js';
import { isContiguous, numel, offsets } from '../layout.js';
import type { FwhtParams, TypedArray } from '../names.js';
import { type Code, type ModuleBuilder, Op, Simd, ValType } from './assembler.js';
import { v128Const } from './packed.js';
import { ARGS, type Engine } from './runtime.js';

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
  emitHadamardF32(mb);
}

/** Words of the float32 task's argument block (i32 at ARGS; norm is an f32). */
const enum H {
  buf, b, blocksPerTask, blocks, norm, scale,
}

const range = (n: number, f: (i: number) => number) => Array.from({ length: n }, (_, i) => f(i));
/** v128 bytes with the sign bit set in the given f32 lanes (xor negates them exactly). */
const signs = (lanes: number[]) => range(16, (i) => (lanes.includes(i >> 2) && (i & 3) === 3 ? 0x80 : 0));

/**
 * Task export `fwht_f32(arg, t)`: blocks [t·blocksPerTask, …) of b floats at buf, in place. b = 2:
 * scalar. b ≥ 4: stages h = 1 and 2 inside each f32x4 (a lane plus its partner, negated by a sign
 * flip where js subtracts: x + (−y) is x − y exactly), then stages h and 2h together per pass
 * (four vectors in, four out: the same sums and differences as two radix-2 passes), a last
 * radix-2 pass when log₂ b is odd, then the norm, while the block is in L1.
 */
function emitHadamardF32(mb: ModuleBuilder): void {
  const P = ValType.i32;
  const V = ValType.v128;
  const F = ValType.f32;
  mb.func([P, P], [], (c: Code) => {
    const [arg, task] = [0, 1];
    const [buf, b, blk, blk1, start, end, hb, i, j, scale] = range(10, () => c.local(P));
    const [norm, fa, fc] = range(3, () => c.local(F));
    const [v0, v1, v2, v3, nv, odd, high] = range(7, () => c.local(V));
    const word = (k: H) => c.get(arg).mem(Op.i32_load, 2, k * 4);
    word(H.buf).set(buf);
    word(H.b).set(b);
    word(H.scale).set(scale);
    c.get(arg).mem(Op.f32_load, 2, H.norm * 4).tee(norm).simd(Simd.f32x4_splat).set(nv);
    v128Const(c, signs([1, 3])).set(odd);
    v128Const(c, signs([2, 3])).set(high);
    c.get(task);
    word(H.blocksPerTask).op(Op.i32_mul).tee(blk);
    word(H.blocksPerTask).op(Op.i32_add).set(blk1);
    word(H.blocks).get(blk1).op(Op.i32_lt_u).if();
    word(H.blocks).set(blk1);
    c.end();
    /** (a, d) → (a + d, a − d) on two vector locals. */
    const butterfly = (a: number, d: number) => {
      c.get(a).get(d).simd(Simd.f32x4_sub);
      c.get(a).get(d).simd(Simd.f32x4_add).set(a);
      c.set(d);
    };
    /** for (p = from; p < to; p += step) with a step in a local. */
    const stepping = (p: number, from: () => void, to: () => void, step: () => void, body: () => void) => {
      from();
      c.set(p);
      c.while(() => {
        c.get(p);
        to();
        c.op(Op.i32_lt_u);
      }, () => {
        body();
        c.get(p);
        step();
        c.op(Op.i32_add).set(p);
      });
    };
    c.while(() => c.get(blk).get(blk1).op(Op.i32_lt_u), () => {
      c.get(buf).get(blk).get(b).op(Op.i32_mul).i32(2).op(Op.i32_shl).op(Op.i32_add).tee(start);
      c.get(b).i32(2).op(Op.i32_shl).op(Op.i32_add).set(end);
      c.get(b).i32(2).op(Op.i32_eq).if();
      {
        c.get(start).mem(Op.f32_load, 2).set(fa);
        c.get(start).mem(Op.f32_load, 2, 4).set(fc);
        c.get(fa).get(fc).op(Op.f32_sub).get(fa).get(fc).op(Op.f32_add).set(fa).set(fc);
        c.get(scale).if();
        c.get(fa).get(norm).op(Op.f32_mul).set(fa);
        c.get(fc).get(norm).op(Op.f32_mul).set(fc);
        c.end();
        c.get(start).get(fa).mem(Op.f32_store, 2);
        c.get(start).get(fc).mem(Op.f32_store, 2, 4);
      }
      c.end();
      c.get(b).i32(4).op(Op.i32_ge_u).if();
      {
        // h = 1: [a, b, c, d] → [a + b, a − b, c + d, c − d]; h = 2 on that: [u0 + u2, u1 + u3, u0 − u2, u1 − u3]
        c.for(i, () => c.get(start), () => c.get(end), 16, () => {
          c.get(i).simdMem(Simd.v128_load, 0).set(v0);
          c.get(v0).get(v0).shuffle32([0, 0, 2, 2]);
          c.get(v0).get(v0).shuffle32([1, 1, 3, 3]).get(odd).simd(Simd.v128_xor).simd(Simd.f32x4_add).set(v0);
          c.get(i);
          c.get(v0).get(v0).shuffle32([0, 1, 0, 1]);
          c.get(v0).get(v0).shuffle32([2, 3, 2, 3]).get(high).simd(Simd.v128_xor).simd(Simd.f32x4_add);
          c.simdMem(Simd.v128_store, 0);
        });
        // stages h and 2h (hb = 4h bytes): x0…x3 at j + k·hb
        c.i32(16).set(hb);
        c.while(() => c.get(hb).i32(2).op(Op.i32_shl).get(b).i32(2).op(Op.i32_shl).op(Op.i32_le_u), () => {
          stepping(i, () => c.get(start), () => c.get(end), () => c.get(hb).i32(2).op(Op.i32_shl), () => {
            stepping(j, () => c.get(i), () => c.get(i).get(hb).op(Op.i32_add), () => c.i32(16), () => {
              const at = (k: number) => {
                c.get(j);
                if (k) c.get(hb).i32(k).op(Op.i32_mul).op(Op.i32_add);
              };
              [v0, v1, v2, v3].forEach((v, k) => {
                at(k);
                c.simdMem(Simd.v128_load, 0).set(v);
              });
              butterfly(v0, v1);
              butterfly(v2, v3);
              butterfly(v0, v2);
              butterfly(v1, v3);
              [v0, v1, v2, v3].forEach((v, k) => {
                at(k);
                c.get(v).simdMem(Simd.v128_store, 0);
              });
            });
          });
          c.get(hb).i32(2).op(Op.i32_shl).set(hb);
        });
        // log₂ b odd: one radix-2 stage left (h = b/2)
        c.get(hb).get(b).i32(2).op(Op.i32_shl).op(Op.i32_lt_u).if();
        stepping(j, () => c.get(start), () => c.get(start).get(hb).op(Op.i32_add), () => c.i32(16), () => {
          c.get(j).simdMem(Simd.v128_load, 0).set(v0);
          c.get(j).get(hb).op(Op.i32_add).simdMem(Simd.v128_load, 0).set(v1);
          butterfly(v0, v1);
          c.get(j).get(v0).simdMem(Simd.v128_store, 0);
          c.get(j).get(hb).op(Op.i32_add).get(v1).simdMem(Simd.v128_store, 0);
        });
        c.end();
        c.get(scale).if();
        c.for(i, () => c.get(start), () => c.get(end), 16, () => {
          c.get(i).get(i).simdMem(Simd.v128_load, 0).get(nv).simd(Simd.f32x4_mul).simdMem(Simd.v128_store, 0);
        });
        c.end();
      }
      c.end();
      c.get(blk).i32(1).op(Op.i32_add).set(blk);
    });
  }, 'fwht_f32');
}

export function fwhtWasm(engine: Engine, [x]: readonly Arg[], out: Arg, { blockSize: b, normalize }: FwhtParams): boolean {
  const n = numel(out.shape);
  if (x!.dtype !== out.dtype || (out.dtype !== 'float32' && out.dtype !== 'float64')) return false;
  if (n < MIN_ELEMENTS || b < 1 || (b & (b - 1)) !== 0 || n % b !== 0) return false;
  if (out.dtype === 'float32') return fwhtF32(engine, x!, out, n, b, normalize);
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

/** Elements from which the blocks are split over the pool (waking it costs tens of µs). */
const PARALLEL_MIN_ELEMENTS = 1 << 15;

/** float32: transformed in out's own memory when it lives in wasm memory (x copied there first), else in scratch. */
function fwhtF32(engine: Engine, x: Arg, out: Arg, n: number, b: number, normalize: boolean): boolean {
  const outAt = engine.addressOf(out);
  const at = outAt >= 0 ? outAt : engine.scratch;
  if (outAt < 0 && !engine.reserve(n * 4)) return false;
  if (isContiguous(x.shape, x.strides)) engine.stageIn(x.data, x.offset, x.offset + n, engine.f32, at);
  else {
    const ix = offsets(x);
    const [view, xd, base] = [engine.f32, x.data, at / 4];
    for (let k = 0; k < n; k++) view[base + k] = xd[ix[k]!]!;
    if (!engine.heap.resident(xd)) engine.stagedIn += n * 4;
  }
  if (b > 1) {
    const blocks = n / b;
    const threaded = engine.threads > 1 && n >= PARALLEL_MIN_ELEMENTS && blocks > 1;
    const perTask = Math.ceil(blocks / (threaded ? Math.min(blocks, engine.threads * 4) : 1));
    const w = ARGS / 4;
    const args = engine.i32;
    args[w + H.buf] = at;
    args[w + H.b] = b;
    args[w + H.blocksPerTask] = perTask;
    args[w + H.blocks] = blocks;
    args[w + H.scale] = normalize ? 1 : 0;
    engine.f32[w + H.norm] = Math.fround(1 / Math.sqrt(b));
    engine.parallel('fwht_f32', ARGS, Math.ceil(blocks / perTask), threaded);
  }
  if (outAt < 0) engine.stageOut(out, engine.f32, at, n);
  return true;
}
