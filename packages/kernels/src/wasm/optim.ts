/**
 * @file wasm Adam/AdamW step for float32 tensors, bit-identical to the js kernel (js/optim.ts): each
 * element is promoted to f64, updated with the same operations in the same order, and rounded to
 * f32 once per stored tensor (m and v are read back rounded, as the js loop re-reads its stores).
 * f64x2 lanes are IEEE per lane, so the vector body and the scalar tail agree with the js loop.
 */
import type { KernelArg } from '../backend.js';
import { isContiguous, numel } from '../layout.js';
import type { AdamStepParams, TypedArray } from '../names.js';
import { type Code, type ModuleBuilder, Op, Simd, ValType } from './assembler.js';
import { ARGS, MAX_HEAP_BYTES, type Engine } from './runtime.js';

type Arg = KernelArg<TypedArray>;

/** Below this many elements the copies in and out cost more than the js loop saves. */
const MIN_ELEMENTS = 2048;

/** Flag bits of the `adam_f32` call (uniform over a call, so their branches predict perfectly). */
const enum Flag { maximize = 1, l2 = 2, decoupled = 4, lerpLow = 8 }

/** Lane-generic arithmetic: f64x2 vectors (2 elements) or f64 scalars. */
interface Lanes {
  add(c: Code): void;
  sub(c: Code): void;
  mul(c: Code): void;
  div(c: Code): void;
  sqrt(c: Code): void;
  neg(c: Code): void;
  /** Pushes the f64 local `s` in this width. */
  scalar(c: Code, s: number): void;
}
const VEC: Lanes = {
  add: (c) => void c.simd(Simd.f64x2_add),
  sub: (c) => void c.simd(Simd.f64x2_sub),
  mul: (c) => void c.simd(Simd.f64x2_mul),
  div: (c) => void c.simd(Simd.f64x2_div),
  sqrt: (c) => void c.simd(Simd.f64x2_sqrt),
  neg: (c) => void c.simd(Simd.f64x2_neg),
  scalar: (c, s) => void c.get(s).simd(Simd.f64x2_splat),
};
const ONE: Lanes = {
  add: (c) => void c.op(Op.f64_add),
  sub: (c) => void c.op(Op.f64_sub),
  mul: (c) => void c.op(Op.f64_mul),
  div: (c) => void c.op(Op.f64_div),
  sqrt: (c) => void c.op(Op.f64_sqrt),
  neg: (c) => void c.op(Op.f64_neg),
  scalar: (c, s) => void c.get(s),
};

/**
 * adam_f32(p, g, m, v, n, flags, beta2, oneMinusBeta2, eps, decay, l2, w, oneMinusW, stepSize,
 * bc2Sqrt): pointers are bytes; p, m and v are updated in place. The js kernel's loop, op by op:
 *   gi = ±g (+ l2·p);  pi = p (· decay);  mi = lerp(m, gi, w);  vi = v·β₂ + ((1 − β₂)·gi)·gi
 *   m ← f32(mi);  v ← f32(vi);  p ← f32(pi − (stepSize·m) / (√v / bc2Sqrt + eps))
 */
export function emitOptim(mb: ModuleBuilder): void {
  const P = ValType.i32;
  const D = ValType.f64;
  const V = ValType.v128;
  const adam = mb.func([P, P, P, P, P, P, D, D, D, D, D, D, D, D, D], [], (c) => {
    const [pp, gp, mp, vp, n, flags, beta2, ob2, eps, decay, l2, w, ow, stepSize, bc2] = Array.from({ length: 15 }, (_, k) => k);
    const i = c.local(P);
    const last = c.local(P);
    const tmp = c.local(V);
    const f = c.local(ValType.f32);
    /** Pushes the byte address of element i of the tensor at `ptr`. */
    const at = (ptr: number) => void c.get(ptr).get(i).i32(2).op(Op.i32_shl).op(Op.i32_add);
    /**
     * One update of width `t`: `load` replaces an address on the stack by its widened values,
     * `store(ptr, x)` writes f32(x) at element i of `ptr` and leaves x holding the rounded value.
     */
    const body = (t: Lanes, load: () => void, store: (ptr: number, x: number) => void, x: { g: number; p: number; m0: number; m: number; v: number }) => {
      const when = (bit: Flag, then: () => void, otherwise?: () => void) => {
        c.get(flags).i32(bit).op(Op.i32_and).if();
        then();
        if (otherwise) {
          c.op(Op.else);
          otherwise();
        }
        c.end();
      };
      at(gp);
      load();
      c.set(x.g);
      when(Flag.maximize, () => {
        c.get(x.g);
        t.neg(c);
        c.set(x.g);
      });
      at(pp);
      load();
      c.set(x.p);
      when(Flag.l2, () => {
        c.get(x.g);
        t.scalar(c, l2);
        c.get(x.p);
        t.mul(c);
        t.add(c);
        c.set(x.g);
      });
      when(Flag.decoupled, () => {
        c.get(x.p);
        t.scalar(c, decay);
        t.mul(c);
        c.set(x.p);
      });
      at(mp);
      load();
      c.set(x.m0);
      // m ← lerp(m, g, w), evaluated as PyTorch's lerp does on either side of w = 0.5
      when(
        Flag.lerpLow,
        () => {
          c.get(x.m0).get(x.g).get(x.m0);
          t.sub(c);
          t.scalar(c, w);
          t.mul(c);
          t.add(c);
          c.set(x.m);
        },
        () => {
          c.get(x.g).get(x.g).get(x.m0);
          t.sub(c);
          t.scalar(c, ow);
          t.mul(c);
          t.sub(c);
          c.set(x.m);
        },
      );
      at(vp);
      load();
      t.scalar(c, beta2);
      t.mul(c);
      t.scalar(c, ob2);
      c.get(x.g);
      t.mul(c);
      c.get(x.g);
      t.mul(c);
      t.add(c);
      c.set(x.v);
      store(mp, x.m);
      store(vp, x.v);
      c.get(x.p);
      t.scalar(c, stepSize);
      c.get(x.m);
      t.mul(c);
      c.get(x.v);
      t.sqrt(c);
      t.scalar(c, bc2);
      t.div(c);
      t.scalar(c, eps);
      t.add(c);
      t.div(c);
      t.sub(c);
      c.set(x.p);
      store(pp, x.p);
    };
    const vecLocals = { g: c.local(V), p: c.local(V), m0: c.local(V), m: c.local(V), v: c.local(V) };
    const oneLocals = { g: c.local(D), p: c.local(D), m0: c.local(D), m: c.local(D), v: c.local(D) };
    c.i32(0).set(i);
    c.get(n).i32(1).op(Op.i32_sub).set(last);
    // two elements a pass: an f32 pair widened to f64x2, narrowed back on store
    c.while(() => c.get(i).get(last).op(Op.i32_lt_s), () => {
      const load = () => void c.simdMem(Simd.v128_load64_zero, 3).simd(Simd.f64x2_promote_low_f32x4);
      const store = (ptr: number, x: number) => {
        at(ptr);
        c.get(x).simd(Simd.f32x4_demote_f64x2_zero).tee(tmp).lane(Simd.i64x2_extract_lane, 0).mem(Op.i64_store, 3);
        c.get(tmp).simd(Simd.f64x2_promote_low_f32x4).set(x);
      };
      body(VEC, load, store, vecLocals);
      c.get(i).i32(2).op(Op.i32_add).set(i);
    });
    c.while(() => c.get(i).get(n).op(Op.i32_lt_s), () => {
      const load = () => void c.mem(Op.f32_load, 2).op(Op.f64_promote_f32);
      const store = (ptr: number, x: number) => {
        c.get(x).op(Op.f32_demote_f64).set(f);
        at(ptr);
        c.get(f).mem(Op.f32_store, 2);
        c.get(f).op(Op.f64_promote_f32).set(x);
      };
      body(ONE, load, store, oneLocals);
      c.get(i).i32(1).op(Op.i32_add).set(i);
    });
  }, 'adam_f32');
  // task export: task t updates elements [t·chunk, min(n, (t + 1)·chunk)) of the call laid out at
  // arg (i32 words, then the f64 scalars at arg + 32); elementwise, so any split gives the same bits
  mb.func([P, P], [], (c) => {
    const [arg, t] = [0, 1];
    const lo = c.local(P);
    const count = c.local(P);
    c.get(t).get(arg).mem(Op.i32_load, 2, 4 * AdamArg.chunk).op(Op.i32_mul).set(lo);
    c.get(arg).mem(Op.i32_load, 2, 4 * AdamArg.n).get(lo).op(Op.i32_sub).set(count);
    c.get(count).get(arg).mem(Op.i32_load, 2, 4 * AdamArg.chunk).get(count).get(arg).mem(Op.i32_load, 2, 4 * AdamArg.chunk).op(Op.i32_lt_s).op(Op.select).set(count);
    for (const w of [AdamArg.p, AdamArg.g, AdamArg.m, AdamArg.v]) c.get(arg).mem(Op.i32_load, 2, 4 * w).get(lo).i32(2).op(Op.i32_shl).op(Op.i32_add);
    c.get(count).get(arg).mem(Op.i32_load, 2, 4 * AdamArg.flags);
    for (let k = 0; k < ADAM_SCALARS; k++) c.get(arg).mem(Op.f64_load, 3, ADAM_F64_AT + 8 * k);
    c.call(adam);
  }, 'adam_f32_task');
}

/** i32 words of a pooled Adam call's argument block; its f64 scalars follow at byte ADAM_F64_AT. */
const enum AdamArg { p, g, m, v, n, flags, chunk }
const ADAM_F64_AT = 32;
const ADAM_SCALARS = 9;
/**
 * Elements from which the update is split over the pool. About half of a call is f64 division and
 * square root, the rest the copies on the calling thread, which get slower when another core
 * last touched the lines. Adam.step on one tensor, 1 vs 2 threads (medians of 350 steps, two
 * runs): 256×784 610–675 → 553–558 µs; 256×256 184–228 → 217–238; 128×256 91–94 → 113–128
 * (npx tsx scripts/bench/kernels.ts).
 */
const PARALLEL_MIN = 1 << 17;

/**
 * In-place Adam/AdamW on contiguous float32 parameter, gradient and state; false (the js kernel
 * runs) for other dtypes, strided tensors and small ones.
 */
export function adamStepWasm(engine: Engine, [, g, m, v]: readonly Arg[], p: Arg, o: AdamStepParams): boolean {
  const ts = [p, g!, m!, v!];
  if (ts.some((t) => t.dtype !== 'float32' || !isContiguous(t.shape, t.strides))) return false;
  const n = numel(p.shape);
  if (n < MIN_ELEMENTS) return false;
  const slot = Math.ceil((n * 4) / 16) * 16;
  if (4 * slot > MAX_HEAP_BYTES || !engine.reserve(4 * slot)) return false;
  // tensors in wasm memory are updated in place; others are staged in (and p, m, v copied back)
  const f32 = engine.f32;
  const resident = ts.map((t) => engine.addressOf(t));
  const ptrs = ts.map((t, j) => {
    if (resident[j]! >= 0) return resident[j]!;
    engine.stageIn(t.data, t.offset, t.offset + n, f32, engine.scratch + j * slot);
    return engine.scratch + j * slot;
  });
  const { lr, beta1, beta2, eps, weightDecay: wd, decoupled, maximize, step } = o;
  const bc1 = 1 - beta1 ** step;
  const w = 1 - beta1;
  const flags = (maximize ? Flag.maximize : 0) | (!decoupled && wd ? Flag.l2 : 0) | (decoupled ? Flag.decoupled : 0) | (w < 0.5 ? Flag.lerpLow : 0);
  // the scalars exactly as the js kernel forms them
  const scalars = [beta2, 1 - beta2, eps, decoupled ? 1 - lr * wd : 1, decoupled ? 0 : wd, w, 1 - w, lr / bc1, Math.sqrt(1 - beta2 ** step)];
  if (engine.threads > 1 && n >= PARALLEL_MIN) {
    // a few tasks per thread, in whole vectors of 4 so only the last has a scalar tail
    const chunk = Math.ceil(n / (4 * engine.threads) / 4) * 4;
    const words = engine.i32;
    [ptrs[0]!, ptrs[1]!, ptrs[2]!, ptrs[3]!, n, flags, chunk].forEach((x, k) => (words[ARGS / 4 + k] = x));
    engine.f64.set(scalars, (ARGS + ADAM_F64_AT) / 8);
    engine.parallel('adam_f32_task', ARGS, Math.ceil(n / chunk), true);
  } else engine.call('adam_f32', ptrs[0]!, ptrs[1]!, ptrs[2]!, ptrs[3]!, n, flags, ...scalars);
  for (const j of [0, 2, 3]) if (resident[j]! < 0) engine.stageOut(ts[j]!, engine.f32, ptrs[j]!, n);
  return true;
}
