/**
 * @file wasm elementwise kernels: unary and binary maps (f32x4 / f64x2 where the op is exact in
 * SIMD), strided copy and `where` (uint8 condition). Broadcasting is by strides: the two innermost
 * (collapsed) dims run in wasm, outer dims in a JS loop over blocks (operands.ts, which also finds
 * each operand in wasm memory). exp and sigmoid run in f32 only (simd-math.ts); other
 * transcendental ops, comparisons and fill stay on js.
 */
import type { KernelArg } from '../backend.js';
import { copy as jsCopy } from '../js/elementwise.js';
import { contiguousStrides, isContiguous, numel } from '../layout.js';
import type { BinaryOp, TypedArray, UnaryOp } from '../names.js';
import { type Code, type ModuleBuilder, Op, Simd, ValType } from './assembler.js';
import { ARGS, ARGS_BYTES, MAX_HEAP_BYTES, span, type Engine } from './runtime.js';
import { type Blocks, blocks, heapView, stage } from './operands.js';
import { expF32x4, scalarViaLanes, sigmoidF32x4, siluF32x4, siluGradF32x4 } from './simd-math.js';

type Arg = KernelArg<TypedArray>;
type Kind = 'f32' | 'f64';

interface LaneOps {
  bytes: number;
  lanes: number;
  load: number;
  store: number;
  splat: number;
}
const T: Record<Kind, LaneOps> = {
  f32: { bytes: 4, lanes: 4, load: Op.f32_load, store: Op.f32_store, splat: Simd.f32x4_splat },
  f64: { bytes: 8, lanes: 2, load: Op.f64_load, store: Op.f64_store, splat: Simd.f64x2_splat },
};

/** Emits one op on the stack's operands, as a vector op (simd) or a scalar op. */
type Emit = (c: Code, k: Kind, simd: boolean) => void;
const pick = (c: Code, k: Kind, simd: boolean, v32: number, v64: number, s32: number, s64: number) => {
  if (simd) c.simd(k === 'f32' ? v32 : v64);
  else c.op(k === 'f32' ? s32 : s64);
};
const zero = (c: Code, k: Kind, simd: boolean) => {
  if (simd) c.i32(0).simd(Simd.i32x4_splat);
  else if (k === 'f32') c.f32(0);
  else c.f64(0);
};
const one = (c: Code, k: Kind, simd: boolean) => {
  if (k === 'f32') c.f32(1);
  else c.f64(1);
  if (simd) c.simd(T[k].splat);
};

const BIN: Partial<Record<BinaryOp, Emit>> = {
  add: (c, k, v) => pick(c, k, v, Simd.f32x4_add, Simd.f64x2_add, Op.f32_add, Op.f64_add),
  sub: (c, k, v) => pick(c, k, v, Simd.f32x4_sub, Simd.f64x2_sub, Op.f32_sub, Op.f64_sub),
  mul: (c, k, v) => pick(c, k, v, Simd.f32x4_mul, Simd.f64x2_mul, Op.f32_mul, Op.f64_mul),
  div: (c, k, v) => pick(c, k, v, Simd.f32x4_div, Simd.f64x2_div, Op.f32_div, Op.f64_div),
  // wasm min/max propagate NaN like the oracle; only the sign of a zero result may differ
  maximum: (c, k, v) => pick(c, k, v, Simd.f32x4_max, Simd.f64x2_max, Op.f32_max, Op.f64_max),
  minimum: (c, k, v) => pick(c, k, v, Simd.f32x4_min, Simd.f64x2_min, Op.f32_min, Op.f64_min),
};

/** f32 approximations (simd-math.ts); in f64 these stay on js, whose Math functions are exact enough. */
const F32_ONLY = new Set<string>(['exp', 'sigmoid', 'silu', 'siluGrad', 'siluBackward', 'siluMul']);

/** Unary ops take their operand from local `x` (some use it twice). */
type UnaryEmit = (c: Code, k: Kind, simd: boolean, x: number) => void;
const un = (v32: number, v64: number, s32: number, s64: number): UnaryEmit => (c, k, v, x) => {
  c.get(x);
  pick(c, k, v, v32, v64, s32, s64);
};
const UN: Partial<Record<UnaryOp | 'identity', UnaryEmit>> = {
  identity: (c, _k, _v, x) => void c.get(x),
  neg: un(Simd.f32x4_neg, Simd.f64x2_neg, Op.f32_neg, Op.f64_neg),
  abs: un(Simd.f32x4_abs, Simd.f64x2_abs, Op.f32_abs, Op.f64_abs),
  sqrt: un(Simd.f32x4_sqrt, Simd.f64x2_sqrt, Op.f32_sqrt, Op.f64_sqrt),
  floor: un(Simd.f32x4_floor, Simd.f64x2_floor, Op.f32_floor, Op.f64_floor),
  ceil: un(Simd.f32x4_ceil, Simd.f64x2_ceil, Op.f32_ceil, Op.f64_ceil),
  trunc: un(Simd.f32x4_trunc, Simd.f64x2_trunc, Op.f32_trunc, Op.f64_trunc),
  roundHalfEven: un(Simd.f32x4_nearest, Simd.f64x2_nearest, Op.f32_nearest, Op.f64_nearest),
  relu: (c, k, v, x) => {
    c.get(x);
    zero(c, k, v);
    BIN.maximum!(c, k, v);
  },
  // 0 where x ≤ 0, else 1 (NaN included): 1.0 with the comparison's lanes cleared
  reluGrad: (c, k, v, x) => {
    if (v) {
      one(c, k, v);
      c.get(x);
      zero(c, k, v);
      pick(c, k, v, Simd.f32x4_le, Simd.f64x2_le, Op.f32_le, Op.f64_le);
      c.simd(Simd.v128_andnot);
    } else {
      zero(c, k, v);
      one(c, k, v);
      c.get(x);
      zero(c, k, v);
      pick(c, k, v, Simd.f32x4_le, Simd.f64x2_le, Op.f32_le, Op.f64_le);
      c.op(Op.select);
    }
  },
  square: (c, k, v, x) => {
    c.get(x).get(x);
    BIN.mul!(c, k, v);
  },
  reciprocal: (c, k, v, x) => {
    one(c, k, v);
    c.get(x);
    BIN.div!(c, k, v);
  },
  exp: (c, _k, v, x) => (v ? expF32x4(c, x) : scalarViaLanes(c, x, expF32x4)),
  sigmoid: (c, _k, v, x) => (v ? sigmoidF32x4(c, x) : scalarViaLanes(c, x, sigmoidF32x4)),
  silu: (c, _k, v, x) => (v ? siluF32x4(c, x) : scalarViaLanes(c, x, siluF32x4)),
  siluGrad: (c, _k, v, x) => (v ? siluGradF32x4(c, x) : scalarViaLanes(c, x, siluGradF32x4)),
  // two roundings in f32 (sqrt, then divide) against one in the oracle: ≤ 1 ulp apart
  rsqrt: (c, k, v, x) => {
    one(c, k, v);
    un(Simd.f32x4_sqrt, Simd.f64x2_sqrt, Op.f32_sqrt, Op.f64_sqrt)(c, k, v, x);
    BIN.div!(c, k, v);
  },
};

/**
 * name(out, n, rows, a, sa, ra, b, sb, rb, mode): rows × n elements; out is contiguous, a and b
 * advance by sa/sb per element and ra/rb per row (element strides). mode: 0 both contiguous,
 * 1 b broadcast, 2 a broadcast, 3 anything else (scalar). Unary ignores b.
 */
function emitMap(mb: ModuleBuilder, k: Kind, name: string, arity: 1 | 2, emit: (c: Code, simd: boolean, a: number, b: number) => void): void {
  const P = ValType.i32;
  const t = T[k];
  const S = k === 'f32' ? ValType.f32 : ValType.f64;
  const fn = mb.func([P, P, P, P, P, P, P, P, P, P], [], (c) => {
    const [out, n, rows, a, sa, ra, b, sb, rb, mode] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    const [row, i, pa, pb, po, vec] = [c.local(P), c.local(P), c.local(P), c.local(P), c.local(P), c.local(P)];
    const va = c.local(ValType.v128);
    const vb = c.local(ValType.v128);
    const xa = c.local(S);
    const xb = c.local(S);
    const e = t.bytes;
    const scalarLoad = (p: number, dst: number) => c.get(p).mem(t.load, e === 4 ? 2 : 3).set(dst);
    const bump = (p: number, stride: number | null) => {
      c.get(p);
      if (stride === null) c.i32(e);
      else c.get(stride).i32(e).op(Op.i32_mul);
      c.op(Op.i32_add).set(p);
    };
    // scalar loop over elements i..n-1 with the given pointer strides (null = contiguous)
    const scalarLoop = (strA: number | null, strB: number | null, bConst: boolean, aConst: boolean) => {
      if (aConst) scalarLoad(pa, xa);
      if (bConst && arity === 2) scalarLoad(pb, xb);
      c.while(() => c.get(i).get(n).op(Op.i32_lt_s), () => {
        if (!aConst) scalarLoad(pa, xa);
        if (!bConst && arity === 2) scalarLoad(pb, xb);
        c.get(po);
        emit(c, false, xa, xb);
        c.mem(t.store, e === 4 ? 2 : 3);
        if (!aConst) bump(pa, strA);
        if (!bConst && arity === 2) bump(pb, strB);
        bump(po, null);
        c.get(i).i32(1).op(Op.i32_add).set(i);
      });
    };
    const simdLoop = (aVec: boolean, bVec: boolean) => {
      if (!aVec) c.get(pa).mem(t.load, 2).simd(t.splat).set(va);
      if (!bVec && arity === 2) c.get(pb).mem(t.load, 2).simd(t.splat).set(vb);
      c.get(n).i32(t.lanes - 1).op(Op.i32_sub).set(vec);
      c.while(() => c.get(i).get(vec).op(Op.i32_lt_s), () => {
        if (aVec) c.get(pa).simdMem(Simd.v128_load, 0).set(va);
        if (bVec && arity === 2) c.get(pb).simdMem(Simd.v128_load, 0).set(vb);
        c.get(po);
        emit(c, true, va, vb);
        c.simdMem(Simd.v128_store, 0);
        if (aVec) c.get(pa).i32(16).op(Op.i32_add).set(pa);
        if (bVec && arity === 2) c.get(pb).i32(16).op(Op.i32_add).set(pb);
        c.get(po).i32(16).op(Op.i32_add).set(po);
        c.get(i).i32(t.lanes).op(Op.i32_add).set(i);
      });
      scalarLoop(null, null, !bVec, !aVec);
    };
    c.get(out).set(po);
    c.for(row, () => c.i32(0), () => c.get(rows), 1, () => {
      c.get(a).get(row).get(ra).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_add).set(pa);
      c.get(b).get(row).get(rb).op(Op.i32_mul).i32(e).op(Op.i32_mul).op(Op.i32_add).set(pb);
      c.i32(0).set(i);
      c.block();
      const mode_ = (m: number, body: () => void) => {
        c.get(mode).i32(m).op(Op.i32_eq).if();
        body();
        c.br(1).end();
      };
      mode_(0, () => simdLoop(true, true));
      if (arity === 2) {
        mode_(1, () => simdLoop(true, false));
        mode_(2, () => simdLoop(false, true));
      }
      scalarLoop(sa, sb, false, false);
      c.end();
    });
  }, name);
  // task export: task t runs the call whose MAP_WORDS arguments are at arg + 4·MAP_WORDS·t
  mb.func([P, P], [], (c) => {
    c.get(0).get(1).i32(4 * MAP_WORDS).op(Op.i32_mul).op(Op.i32_add).set(0);
    for (let w = 0; w < MAP_WORDS; w++) c.get(0).mem(Op.i32_load, 2, 4 * w);
    c.call(fn);
  }, `${name}_task`);
}

/**
 * SIMD opcodes (after 0xfd) only `where` uses, for widening uint8 conditions into lane masks;
 * kept here rather than in assembler.ts's shared table while they have one user.
 */
const WIDEN = {
  v128_load16_splat: 0x08,
  i8x16_eq: 0x23,
  i16x8_extend_low_i8x16_s: 0x87,
  i32x4_extend_low_i16x8_s: 0xa7,
  i64x2_extend_low_i32x4_s: 0xc7,
} as const;

/**
 * where_k(out, n, rows, c, sc, rc, a, sa, ra, b, sb, rb, mode): rows × n elements of
 * out = c ? a : b with a uint8 condition; strides in elements (c's are bytes). mode 0-3: c walks
 * contiguously and a (bit 0 clear) / b (bit 1 clear) do too, else are constant along the row:
 * SIMD selects with lane masks widened from the condition bytes. mode 4: scalar `select`.
 */
function emitWhere(mb: ModuleBuilder, k: Kind): void {
  const P = ValType.i32;
  const t = T[k];
  const align = k === 'f32' ? 2 : 3;
  mb.func([P, P, P, P, P, P, P, P, P, P, P, P, P], [], (c) => {
    const [out, n, rows, cp, sc, rc, a, sa, ra, b, sb, rb, mode] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    const [row, i, pc, pa, pb, po, vec] = [c.local(P), c.local(P), c.local(P), c.local(P), c.local(P), c.local(P), c.local(P)];
    const [va, vb] = [c.local(ValType.v128), c.local(ValType.v128)];
    const bump = (p: number, bytes: () => void) => {
      c.get(p);
      bytes();
      c.op(Op.i32_add).set(p);
    };
    const scalarLoop = () =>
      c.while(() => c.get(i).get(n).op(Op.i32_lt_s), () => {
        c.get(po);
        c.get(pa).mem(t.load, align).get(pb).mem(t.load, align).get(pc).mem(Op.i32_load8_u, 0).op(Op.select);
        c.mem(t.store, align);
        bump(pa, () => c.get(sa).i32(t.bytes).op(Op.i32_mul));
        bump(pb, () => c.get(sb).i32(t.bytes).op(Op.i32_mul));
        bump(pc, () => c.get(sc));
        bump(po, () => c.i32(t.bytes));
        c.get(i).i32(1).op(Op.i32_add).set(i);
      });
    // all-ones lanes where the condition byte is 0: bitselect(b, a, mask) is then c ? a : b
    const conditionMask = () => {
      c.get(pc);
      if (k === 'f32') c.simdMem(Simd.v128_load32_splat, 0);
      else c.simdMem(WIDEN.v128_load16_splat, 0);
      c.i32(0).simd(Simd.i32x4_splat).simd(WIDEN.i8x16_eq).simd(WIDEN.i16x8_extend_low_i8x16_s).simd(WIDEN.i32x4_extend_low_i16x8_s);
      if (k === 'f64') c.simd(WIDEN.i64x2_extend_low_i32x4_s);
    };
    const simdLoop = (aVec: boolean, bVec: boolean) => {
      if (!aVec) c.get(pa).mem(t.load, align).simd(t.splat).set(va);
      if (!bVec) c.get(pb).mem(t.load, align).simd(t.splat).set(vb);
      c.get(n).i32(t.lanes - 1).op(Op.i32_sub).set(vec);
      c.while(() => c.get(i).get(vec).op(Op.i32_lt_s), () => {
        if (aVec) c.get(pa).simdMem(Simd.v128_load, 0).set(va);
        if (bVec) c.get(pb).simdMem(Simd.v128_load, 0).set(vb);
        c.get(po).get(vb).get(va);
        conditionMask();
        c.simd(Simd.v128_bitselect).simdMem(Simd.v128_store, 0);
        if (aVec) bump(pa, () => c.i32(16));
        if (bVec) bump(pb, () => c.i32(16));
        bump(pc, () => c.i32(t.lanes));
        bump(po, () => c.i32(16));
        c.get(i).i32(t.lanes).op(Op.i32_add).set(i);
      });
      scalarLoop();
    };
    c.get(out).set(po);
    c.for(row, () => c.i32(0), () => c.get(rows), 1, () => {
      c.get(cp).get(row).get(rc).op(Op.i32_mul).op(Op.i32_add).set(pc);
      c.get(a).get(row).get(ra).op(Op.i32_mul).i32(t.bytes).op(Op.i32_mul).op(Op.i32_add).set(pa);
      c.get(b).get(row).get(rb).op(Op.i32_mul).i32(t.bytes).op(Op.i32_mul).op(Op.i32_add).set(pb);
      c.i32(0).set(i);
      c.block();
      for (let m = 0; m < 4; m++) {
        c.get(mode).i32(m).op(Op.i32_eq).if();
        simdLoop((m & 1) === 0, (m & 2) === 0);
        c.br(1).end();
      }
      scalarLoop();
      c.end();
    });
  }, `where_${k}`);
}

/** Binary ops that read their operands more than once, from locals a and b. */
const BIN_LOCALS: Partial<Record<BinaryOp, (c: Code, k: Kind, simd: boolean, a: number, b: number) => void>> = {
  // x ≤ 0 ? 0 : g (a = g, b = x), a select so ±∞ and NaN gradients give +0 where inactive
  reluBackward: (c, k, v, g, x) => {
    zero(c, k, v);
    c.get(g);
    c.get(x);
    zero(c, k, v);
    pick(c, k, v, Simd.f32x4_le, Simd.f64x2_le, Op.f32_le, Op.f64_le);
    if (v) c.simd(Simd.v128_bitselect);
    else c.op(Op.select);
  },
  // g·siluGrad(x) (a = g, b = x), f32 only: the same two roundings as the siluGrad map followed by
  // the mul map, in one pass over g and x (the SwiGLU backward's gate gradient)
  siluBackward: (c, _k, v, g, x) => {
    c.get(g);
    if (v) siluGradF32x4(c, x);
    else scalarViaLanes(c, x, siluGradF32x4);
    if (v) c.simd(Simd.f32x4_mul);
    else c.op(Op.f32_mul);
  },
  // silu(a)·b, f32 only: the silu map's value, then the mul map's product (SwiGLU's forward)
  siluMul: (c, _k, v, a, b) => {
    if (v) siluF32x4(c, a);
    else scalarViaLanes(c, a, siluF32x4);
    c.get(b);
    if (v) c.simd(Simd.f32x4_mul);
    else c.op(Op.f32_mul);
  },
};

/** Argument words of a SwiGLU backward call (dgate, dup, g, gate, up, n): byte addresses, then elements. */
const SWIGLU_WORDS = 6;

/**
 * swiglu_bwd_f32(dgate, dup, g, gate, up, n) over n contiguous elements: one sigmoid serves
 * d up = g·(x·σ) and d gate = (g·up)·(σ·(1 + x·(1 − σ))), the same f32 operations in the same
 * order as siluF32x4 / siluGradF32x4 and the mul maps, so the same bits as the three maps. The
 * tail goes through lane 0 of the vector code, as the maps' scalar steps do.
 */
function emitSwigluBackward(mb: ModuleBuilder): void {
  const P = ValType.i32;
  const V = ValType.v128;
  const fn = mb.func([P, P, P, P, P, P], [], (c) => {
    const [dgate, dup, g, gate, up, n] = [0, 1, 2, 3, 4, 5];
    const [i, at] = [c.local(P), c.local(P)];
    const [vg, vx, vu, s] = [c.local(V), c.local(V), c.local(V), c.local(V)];
    const one = () => c.f32(1).simd(Simd.f32x4_splat);
    /** Loads the three operands at byte offset `at` (a vector, or one element splatted), computes and stores both results. */
    const body = (simd: boolean) => {
      const load = (base: number, dst: number) => {
        c.get(base).get(at).op(Op.i32_add);
        c.simdMem(simd ? Simd.v128_load : Simd.v128_load32_splat, simd ? 0 : 2).set(dst);
      };
      load(g, vg);
      load(gate, vx);
      load(up, vu);
      const store = () => {
        if (simd) c.simdMem(Simd.v128_store, 0);
        else c.lane(Simd.f32x4_extract_lane, 0).mem(Op.f32_store, 2);
      };
      sigmoidF32x4(c, vx);
      c.set(s);
      // d up = g·silu(x), silu(x) = x·σ
      c.get(dup).get(at).op(Op.i32_add);
      c.get(vg).get(vx).get(s).simd(Simd.f32x4_mul).simd(Simd.f32x4_mul);
      store();
      // d gate = (g·up)·(σ·(1 + x·(1 − σ)))
      c.get(dgate).get(at).op(Op.i32_add);
      c.get(vg).get(vu).simd(Simd.f32x4_mul);
      c.get(s);
      one();
      c.get(vx);
      one();
      c.get(s).simd(Simd.f32x4_sub).simd(Simd.f32x4_mul).simd(Simd.f32x4_add).simd(Simd.f32x4_mul);
      c.simd(Simd.f32x4_mul);
      store();
    };
    c.i32(0).set(i);
    c.while(() => c.get(i).i32(4).op(Op.i32_add).get(n).op(Op.i32_le_s), () => {
      c.get(i).i32(2).op(Op.i32_shl).set(at);
      body(true);
      c.get(i).i32(4).op(Op.i32_add).set(i);
    });
    c.while(() => c.get(i).get(n).op(Op.i32_lt_s), () => {
      c.get(i).i32(2).op(Op.i32_shl).set(at);
      body(false);
      c.get(i).i32(1).op(Op.i32_add).set(i);
    });
  }, 'swiglu_bwd_f32');
  // task export: task t runs the call whose words are at arg + 4·SWIGLU_WORDS·t
  mb.func([P, P], [], (c) => {
    c.get(0).get(1).i32(4 * SWIGLU_WORDS).op(Op.i32_mul).op(Op.i32_add).set(0);
    for (let w = 0; w < SWIGLU_WORDS; w++) c.get(0).mem(Op.i32_load, 2, 4 * w);
    c.call(fn);
  }, 'swiglu_bwd_f32_task');
}

export function emitElementwise(mb: ModuleBuilder): void {
  emitSwigluBackward(mb);
  for (const k of ['f32', 'f64'] as const) {
    emitWhere(mb, k);
    for (const [op, f] of Object.entries(BIN)) emitMap(mb, k, `binary_${op}_${k}`, 2, (c, v, a, b) => {
      c.get(a).get(b);
      f(c, k, v);
    });
    for (const [op, f] of Object.entries(BIN_LOCALS)) if (k === 'f32' || !F32_ONLY.has(op)) emitMap(mb, k, `binary_${op}_${k}`, 2, (c, v, a, b) => f(c, k, v, a, b));
    for (const [op, f] of Object.entries(UN)) if (k === 'f32' || !F32_ONLY.has(op)) emitMap(mb, k, `unary_${op}_${k}`, 1, (c, v, a) => f(c, k, v, a));
  }
}

/**
 * Below this many elements the call costs more than the js loop saves. With every operand in wasm
 * memory (nothing to copy), mul/sqrt float32 measured a wash at 1024 (js 3.8–6.0 / 2.2–4.1 µs, wasm
 * 3.3–8.6 / 3.1–4.2: ~3 µs of block setup) and a clear win from 2048 (js 6.4–11.7 / 4.2–8.6, wasm
 * 2.7–4.7 / 2.5–3.5), three runs on a loaded machine.
 */
const MIN_ELEMENTS = 2048;
/** Words of one map call's arguments (out, n, rows, a, sa, ra, b, sb, rb, mode). */
const MAP_WORDS = 10;
/** Task records that fit the argument block. */
const MAX_MAP_TASKS = Math.floor(ARGS_BYTES / (4 * MAP_WORDS));
/**
 * Maps of the compute-bound ops (f32 transcendental, sqrt, division) from this many elements run
 * on the pool. Measured on 1M float32 elements, 2 threads vs 1: silu 2.0 → 1.6 ms, while mul got
 * slower (0.8 → 1.1 ms) — cheap ops are bound by the copies in and out on the calling thread, and
 * a worker reading what that thread just wrote pays cross-core cache traffic — so they stay serial
 * unless nothing is copied (PARALLEL_MIN_CHEAP).
 */
const PARALLEL_MIN = 1 << 15;
/**
 * Cheap maps (add, mul, …) whose operands all live in wasm memory (nothing copied on the calling
 * thread) go to the pool from this many elements. float32, 1 vs 2 threads, medians of 300
 * interleaved calls (machine shared): mul 2¹⁵ 23–25 vs 22–37 µs, 2¹⁷ 74–93 vs 66–100, 2¹⁸ 171 vs
 * 196 (add 179 vs 203, maximum 193 vs 148), 2¹⁹ 310 vs 217 (add 359 vs 220), 2²⁰ 539–724 vs 309–509.
 */
const PARALLEL_MIN_CHEAP = 1 << 19;
const COSTLY = new Set(['exp', 'sigmoid', 'silu', 'siluGrad', 'siluBackward', 'siluMul', 'sqrt', 'rsqrt', 'div', 'reciprocal']);

/**
 * Splits map calls into tasks of about `per` elements: by runs of rows, or along a single row
 * (vector-aligned), so each element is computed exactly as in the unsplit call. Null when the
 * calls are too many small blocks to be worth it or the records would not fit.
 */
function splitCalls(calls: number[][], e: number, per: number): number[][] | null {
  const out: number[][] = [];
  for (const call of calls) {
    const [po, n, rows, pa, sa, ra, pb, sb, rb, mode] = call as [number, number, number, number, number, number, number, number, number, number];
    if (rows > 1) {
      const step = Math.max(1, Math.floor(per / n));
      for (let r = 0; r < rows; r += step) out.push([po + r * n * e, n, Math.min(step, rows - r), pa + r * ra * e, sa, ra, pb + r * rb * e, sb, rb, mode]);
    } else {
      const step = Math.max(4, Math.ceil(per / 4) * 4);
      for (let i = 0; i < n; i += step) out.push([po + i * e, Math.min(step, n - i), 1, pa + i * sa * e, sa, ra, pb + i * sb * e, sb, rb, mode]);
    }
    if (out.length > MAX_MAP_TASKS) return null;
  }
  return out.length > 1 ? out : null;
}

/**
 * The argument words of the map call over block `b` of `B` (out, n, rows, a, sa, ra, b, sb, rb,
 * mode; see emitMap). A module-level function rather than a closure in runMap: tsx/esbuild's
 * keepNames re-sets a closure's name on every runMap call, which the profile of a tiny-Llama
 * step showed among its costliest lines of glue.
 */
function mapCall(B: Blocks, b: number, e: number, outPtr: number, pa: number, pb: number, mode: number): number[] {
  const m = B.innerStride.length;
  const s = b * m;
  const st = B.starts;
  return [outPtr + st[s]! * e, B.inner, B.rows, pa + st[s + 1]! * e, B.innerStride[1] ?? 0, B.rowStride[1] ?? 0, pb + (m > 2 ? st[s + 2]! : 0) * e, B.innerStride[2] ?? 0, B.rowStride[2] ?? 0, mode];
}

/**
 * Runs map export `name` of op `op` (which picks whether it may go to the pool: COSTLY), writing
 * the result at heap address `at` and copying it into `out` unless `keep` (then only `out`'s
 * shape is read: the caller goes on with the result in wasm memory).
 */
function runMap(engine: Engine, name: string, op: string, inputs: readonly Arg[], out: Arg, k: Kind, at = engine.scratch, keep = false): boolean {
  const n = numel(out.shape);
  if (n < MIN_ELEMENTS) return false;
  const e = T[k].bytes;
  // (what will be copied: views already in wasm memory are read in place)
  const used = inputs.reduce((s, x) => {
    const [lo, hi] = span(x);
    return s + (engine.addressOf(x) >= 0 ? 0 : hi - lo);
  }, 0);
  // a small view of a large buffer would copy far more than it computes
  if (used > 4 * n * inputs.length) return false;
  // a result for a tensor in wasm memory is written in place; for a foreign array, at `at` and copied out
  const direct = keep ? -1 : engine.addressOf(out);
  const outPtr = direct >= 0 ? direct : at;
  const ptrs = stage(engine, at + Math.ceil((n * e) / 16) * 16, inputs, inputs.map(() => e), direct >= 0 ? out : undefined);
  if (ptrs === null) return false;
  const B = blocks(out.shape, [contiguousStrides(out.shape), ...inputs.map((x) => x.strides)]);
  const [, sA = 0, sB = 0] = B.innerStride;
  const mode = inputs.length === 1 ? (sA === 1 ? 0 : 3) : sA === 1 && sB === 1 ? 0 : sA === 1 && sB === 0 ? 1 : sA === 0 && sB === 1 ? 2 : 3;
  const pb = ptrs[1] ?? 0;
  const inPlace = outPtr === direct && ptrs.every((p, j) => p === engine.addressOf(inputs[j]!));
  const threaded = engine.threads > 1 && (COSTLY.has(op) ? n >= PARALLEL_MIN : inPlace && n >= PARALLEL_MIN_CHEAP);
  const split = threaded ? splitCalls(Array.from({ length: B.count }, (_, b) => mapCall(B, b, e, outPtr, ptrs[0]!, pb, mode)), e, Math.ceil(n / (engine.threads * 4))) : null;
  if (split) {
    const words = engine.i32;
    split.forEach((c, t) => words.set(c, ARGS / 4 + t * MAP_WORDS));
    engine.parallel(`${name}_task`, ARGS, split.length, true);
  } else for (let b = 0; b < B.count; b++) engine.call(name, ...mapCall(B, b, e, outPtr, ptrs[0]!, pb, mode));
  if (!keep && direct < 0) engine.stageOut(out, heapView(engine, out.dtype), outPtr, n);
  return true;
}

function kindOf(args: readonly Arg[], out: Arg): Kind | null {
  const d = out.dtype;
  if (d !== 'float32' && d !== 'float64') return null;
  if (!args.every((x) => x.dtype === d)) return null;
  return d === 'float32' ? 'f32' : 'f64';
}

export function unaryWasm(engine: Engine, inputs: readonly Arg[], out: Arg, params: { op: UnaryOp }): boolean {
  const k = kindOf(inputs, out);
  if (k === null || UN[params.op] === undefined || (k === 'f64' && F32_ONLY.has(params.op))) return false;
  return runMap(engine, `unary_${params.op}_${k}`, params.op, inputs, out, k);
}

export function binaryWasm(engine: Engine, inputs: readonly Arg[], out: Arg, params: { op: BinaryOp }): boolean {
  const k = kindOf(inputs, out);
  return k !== null && (k === 'f32' || !F32_ONLY.has(params.op)) && (BIN[params.op] ?? BIN_LOCALS[params.op]) !== undefined && runMap(engine, `binary_${params.op}_${k}`, params.op, inputs, out, k);
}

/**
 * SwiGLU's backward in one pass for float32 operands; strided or foreign ones are first copied
 * contiguous into scratch (the model's own are read in place). Split over the pool as the
 * compute-bound maps are (PARALLEL_MIN), in runs of whole vectors, so the thread count never
 * changes a result.
 */
export function swigluBackwardWasm(engine: Engine, inputs: readonly Arg[], out: Arg): boolean {
  if (out.dtype !== 'float32' || inputs.some((x) => x.dtype !== 'float32')) return false;
  const n = numel(inputs[0]!.shape);
  if (n < MIN_ELEMENTS) return false;
  const slot = Math.ceil((n * 4) / 16) * 16;
  const direct = engine.addressOf(out);
  if (direct < 0 && (2 * slot > MAX_HEAP_BYTES || !engine.reserve(2 * slot))) return false;
  const outPtr = direct >= 0 ? direct : engine.scratch;
  let at = engine.scratch + (direct >= 0 ? 0 : 2 * slot);
  const ptrs: number[] = [];
  for (const x of inputs) {
    const p = isContiguous(x.shape, x.strides) ? engine.inPlace(x, direct >= 0 ? out : undefined) : -1;
    if (p >= 0) ptrs.push(p);
    else if (stageContiguous(engine, x, at)) {
      ptrs.push(at);
      at += slot;
    } else return false;
  }
  const [pg, px, pu] = ptrs as [number, number, number];
  const tasks = engine.threads > 1 && n >= PARALLEL_MIN ? Math.min(engine.threads * 4, Math.floor(ARGS_BYTES / (4 * SWIGLU_WORDS))) : 1;
  if (tasks > 1) {
    const per = Math.ceil(n / tasks / 4) * 4;
    const words = engine.i32;
    let t = 0;
    for (let i = 0; i < n; i += per, t++) {
      const b = i * 4;
      words.set([outPtr + b, outPtr + n * 4 + b, pg + b, px + b, pu + b, Math.min(per, n - i)], ARGS / 4 + t * SWIGLU_WORDS);
    }
    engine.parallel('swiglu_bwd_f32_task', ARGS, t, true);
  } else engine.call('swiglu_bwd_f32', outPtr, outPtr + n * 4, pg, px, pu, n);
  if (direct < 0) engine.stageOut(out, engine.f32, outPtr, 2 * n);
  return true;
}

/**
 * A contiguous float copy of a strided view (by the wasm strided copy, or js's for small ones);
 * null for other dtypes. For kernels that only take contiguous rows: one copy beats running them on js.
 */
export function contiguousCopy(engine: Engine, x: Arg): Arg | null {
  const k = kindOf([x], x);
  if (k === null) return null;
  const shape = [...x.shape];
  // in wasm memory where tensors live there, so the caller's kernel reads it in place; when the
  // heap is full the caller declines (null) and the op runs on js instead of failing
  let data: TypedArray;
  if (engine.heap.shared) {
    try {
      data = engine.heap.alloc(x.dtype, numel(shape));
    } catch (e) {
      if (e instanceof RangeError) return null;
      throw e;
    }
  } else data = new (k === 'f32' ? Float32Array : Float64Array)(numel(shape));
  const tmp: Arg = { data, dtype: x.dtype, shape, strides: contiguousStrides(shape), offset: 0 };
  // a copy too small (or too sparse) for the wasm map is still worth making for the caller's kernel
  if (!copyWasm(engine, [x], tmp)) jsCopy([x], tmp, {});
  return tmp;
}

/** Gives back a copy `contiguousCopy` made. */
export function releaseCopy(engine: Engine, tmp: Arg): void {
  if (engine.heap.resident(tmp.data) && tmp.data.length > 0) engine.heap.free(tmp.data);
}

/**
 * Writes `x` in contiguous order at heap address `at` (16-byte aligned) for a kernel that reads
 * rows, without a round trip through a JS array: the wasm strided copy, or js's copy straight into
 * wasm memory where the map would not run. False when the heap cannot hold it.
 */
export function stageContiguous(engine: Engine, x: Arg, at: number): boolean {
  const k = kindOf([x], x);
  if (k === null) return false;
  const shape = [...x.shape];
  const e = T[k].bytes;
  const dst: Arg = { data: heapView(engine, x.dtype), dtype: x.dtype, shape, strides: contiguousStrides(shape), offset: at / e };
  if (runMap(engine, `unary_identity_${k}`, 'identity', [x], dst, k, at, true)) return true;
  const end = at + numel(shape) * e;
  if (end - engine.scratch > MAX_HEAP_BYTES || !engine.reserve(end - engine.scratch)) return false;
  jsCopy([x], { ...dst, data: heapView(engine, x.dtype) }, {});
  return true;
}

/** Strided same-dtype copies (transposes, slices); contiguous ones are already a memcpy in js. */
export function copyWasm(engine: Engine, [x]: readonly Arg[], out: Arg): boolean {
  const k = kindOf([x!], out);
  if (k === null) return false;
  return !isContiguous(x!.shape, x!.strides) && runMap(engine, `unary_identity_${k}`, 'identity', [x!], out, k);
}

/** out = c ? a : b for a uint8 condition and float a, b (all broadcast to out by strides). */
export function whereWasm(engine: Engine, [c, a, b]: readonly Arg[], out: Arg): boolean {
  const k = kindOf([a!, b!], out);
  if (k === null || c!.dtype !== 'uint8') return false;
  const n = numel(out.shape);
  if (n < MIN_ELEMENTS) return false;
  const used = [c!, a!, b!].reduce((s, x) => s + (engine.addressOf(x) >= 0 ? 0 : span(x)[1] - span(x)[0]), 0);
  if (used > 4 * n * 3) return false;
  const e = T[k].bytes;
  const direct = engine.addressOf(out);
  const outPtr = direct >= 0 ? direct : engine.scratch;
  const ptrs = stage(engine, engine.scratch + n * e, [c!, a!, b!], [1, e, e], direct >= 0 ? out : undefined);
  if (ptrs === null) return false;
  const [pc, pa, pb] = ptrs as [number, number, number];
  const B = blocks(out.shape, [contiguousStrides(out.shape), c!.strides, a!.strides, b!.strides]);
  const [, sc, sa, sb] = B.innerStride as [number, number, number, number];
  const [, rc, ra, rb] = B.rowStride as [number, number, number, number];
  const vectorizable = sc === 1 && (sa === 0 || sa === 1) && (sb === 0 || sb === 1);
  const mode = vectorizable ? (sa === 1 ? 0 : 1) + (sb === 1 ? 0 : 2) : 4;
  const name = `where_${k}`;
  for (let j = 0; j < B.count; j++) {
    const s = j * 4;
    const st = B.starts;
    engine.call(name, outPtr + st[s]! * e, B.inner, B.rows, pc + st[s + 1]!, sc, rc, pa + st[s + 2]! * e, sa, ra, pb + st[s + 3]! * e, sb, rb, mode);
  }
  if (direct < 0) engine.stageOut(out, heapView(engine, out.dtype), outPtr, n);
  return true;
}
