/**
 * @file wasm elementwise kernels: unary and binary maps (f32x4 / f64x2 where the op is exact in
 * SIMD), and strided copy. Broadcasting is by strides: the two innermost (collapsed) dims run in
 * wasm, outer dims in a JS odometer. exp and sigmoid run in f32 only (simd-math.ts); other
 * transcendental ops, comparisons, where and fill stay on js.
 */
import type { KernelArg } from '../backend.js';
import { isContiguous, numel } from '../js/layout.js';
import type { BinaryOp, TypedArray, UnaryOp } from '../names.js';
import { type Code, type ModuleBuilder, Op, Simd, ValType } from './assembler.js';
import { HEAP, MAX_HEAP_BYTES, span, type Engine } from './runtime.js';
import { expF32x4, scalarViaLanes, sigmoidF32x4 } from './simd-math.js';

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
const F32_ONLY = new Set<string>(['exp', 'sigmoid']);

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
  mb.func([P, P, P, P, P, P, P, P, P, P], [], (c) => {
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
}

export function emitElementwise(mb: ModuleBuilder): void {
  for (const k of ['f32', 'f64'] as const) {
    for (const [op, f] of Object.entries(BIN)) emitMap(mb, k, `binary_${op}_${k}`, 2, (c, v, a, b) => {
      c.get(a).get(b);
      f(c, k, v);
    });
    for (const [op, f] of Object.entries(UN)) if (k === 'f32' || !F32_ONLY.has(op)) emitMap(mb, k, `unary_${op}_${k}`, 1, (c, v, a) => f(c, k, v, a));
  }
}

/** Below this many elements the copies and the call cost more than the js loop saves. */
const MIN_ELEMENTS = 2048;

/** Merges dims that every operand walks contiguously (stride 0 included) and drops size-1 dims. */
function collapse(shape: readonly number[], strides: (readonly number[])[]): { shape: number[]; strides: number[][] } {
  const sh: number[] = [];
  const st: number[][] = strides.map(() => []);
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const last = sh.length - 1;
    if (last >= 0 && strides.every((s, j) => st[j]![last] === s[d]! * shape[d]!)) {
      sh[last]! *= shape[d]!;
      strides.forEach((s, j) => (st[j]![last] = s[d]!));
    } else {
      sh.push(shape[d]!);
      strides.forEach((s, j) => st[j]!.push(s[d]!));
    }
  }
  return { shape: sh, strides: st };
}

/** Runs a generated map over rows; inputs are copied in by span, output copied back. */
function runMap(engine: Engine, name: string, inputs: readonly Arg[], out: Arg, k: Kind): boolean {
  const n = numel(out.shape);
  if (n < MIN_ELEMENTS) return false;
  const e = T[k].bytes;
  const spans = inputs.map(span);
  const used = spans.reduce((s, [lo, hi]) => s + (hi - lo), 0);
  // a small view of a large buffer would copy far more than it computes
  if (used > 4 * n * inputs.length) return false;
  const bytes = (n + used + 16 * inputs.length) * e;
  if (bytes > MAX_HEAP_BYTES || !engine.reserve(bytes)) return false;
  const view = k === 'f32' ? engine.f32 : engine.f64;
  const outPtr = HEAP;
  let p = HEAP + n * e;
  const ptrs: number[] = [];
  inputs.forEach((x, j) => {
    p = Math.ceil(p / 16) * 16;
    const [lo, hi] = spans[j]!;
    view.set(x.data.subarray(lo, hi) as never, p / e);
    ptrs.push(p + (x.offset - lo) * e);
    p += (hi - lo) * e;
  });
  const outStrides = out.shape.map((_, d) => out.shape.slice(d + 1).reduce((a, b) => a * b, 1));
  const { shape, strides } = collapse(out.shape, [outStrides, ...inputs.map((x) => x.strides)]);
  while (shape.length < 2) {
    shape.unshift(1);
    strides.forEach((s) => s.unshift(0));
  }
  const R = shape.length;
  const inner = shape[R - 1]!;
  const rows = shape[R - 2]!;
  const [, sa = [], sb = [0]] = strides;
  const sA = sa[R - 1]!;
  const sB = sb[R - 1] ?? 0;
  const mode = sA === 1 && sB === 1 ? 0 : sA === 1 && sB === 0 ? 1 : sA === 0 && sB === 1 ? 2 : 3;
  const outer = shape.slice(0, R - 2);
  const idx = outer.map(() => 0);
  const pb = ptrs[1] ?? 0;
  for (let o = 0, offA = 0, offB = 0; o < n; o += inner * rows) {
    engine.call(name, outPtr + o * e, inner, rows, ptrs[0]! + offA * e, sA, sa[R - 2]!, pb + offB * e, sB, sb[R - 2] ?? 0, inputs.length === 1 ? (sA === 1 ? 0 : 3) : mode);
    for (let d = outer.length - 1; d >= 0; d--) {
      idx[d]!++;
      offA += sa[d]!;
      offB += sb[d] ?? 0;
      if (idx[d]! < outer[d]!) break;
      offA -= sa[d]! * outer[d]!;
      offB -= (sb[d] ?? 0) * outer[d]!;
      idx[d] = 0;
    }
  }
  out.data.set(view.subarray(outPtr / e, outPtr / e + n) as never, out.offset);
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
  return runMap(engine, `unary_${params.op}_${k}`, inputs, out, k);
}

export function binaryWasm(engine: Engine, inputs: readonly Arg[], out: Arg, params: { op: BinaryOp }): boolean {
  const k = kindOf(inputs, out);
  return k !== null && BIN[params.op] !== undefined && runMap(engine, `binary_${params.op}_${k}`, inputs, out, k);
}

/** Strided same-dtype copies (transposes, slices); contiguous ones are already a memcpy in js. */
export function copyWasm(engine: Engine, [x]: readonly Arg[], out: Arg): boolean {
  const k = kindOf([x!], out);
  if (k === null) return false;
  return !isContiguous(x!.shape, x!.strides) && runMap(engine, `unary_identity_${k}`, [x!], out, k);
}

/** Placeholder: where runs on js until its wasm kernel lands. */
export function whereWasm(_engine: Engine, _inputs: readonly Arg[], _out: Arg): boolean {
  return false;
}

/** Placeholder: fill runs on js until its wasm kernel lands. */
export function fillWasm(_engine: Engine, _inputs: readonly Arg[], _out: Arg, _params: { value: number }): boolean {
  return false;
}
