/**
 * @file wasm Adam/AdamW step for float32 tensors, bit-identical to the js kernel (js/optim.ts):
 * every operation in float32 as PyTorch's float32 tensor ops, four elements a pass in f32x4 lanes
 * (IEEE per lane, separate multiply and add) and a scalar f32 tail, so any split agrees with the
 * js loop.
 */
import type { KernelArg } from '../backend.js';
import { adamScalars32 } from '../js/optim.js';
import { isContiguous, numel } from '../layout.js';
import type { AdamStepParams, TypedArray } from '../names.js';
import { type Code, type ModuleBuilder, Op, Simd, ValType } from './assembler.js';
import { ARGS, MAX_HEAP_BYTES, type Engine } from './runtime.js';

type Arg = KernelArg<TypedArray>;

/**
 * Below these many elements the js loop is faster: with every operand in wasm memory (training),
 * only the call's overhead; with any staged in, the copies in and out too. js / wasm, 1 thread,
 * CPU time per call (thresholds at 1, medians of 21–31 alternating rounds, both orders):
 * resident 8 elements 0.3 / 0.5 µs, 16 0.5 / 0.5, 32 0.8 / 0.5; staged 32 0.8 / 1.2 µs,
 * 64 1.4 / 1.2, 256 5 / 1.5.
 */
const MIN_RESIDENT = 16;
const MIN_STAGED = 64;

/** Flag bits of the `adam_f32` call (uniform over a call, so their branches predict perfectly). */
const enum Flag { maximize = 1, l2 = 2, decoupled = 4, lerpLow = 8 }

/** Lane-generic float32 arithmetic: f32x4 vectors (4 elements) or f32 scalars. */
interface Lanes {
  add(c: Code): void;
  sub(c: Code): void;
  mul(c: Code): void;
  div(c: Code): void;
  sqrt(c: Code): void;
  neg(c: Code): void;
}
const VEC: Lanes = {
  add: (c) => void c.simd(Simd.f32x4_add),
  sub: (c) => void c.simd(Simd.f32x4_sub),
  mul: (c) => void c.simd(Simd.f32x4_mul),
  div: (c) => void c.simd(Simd.f32x4_div),
  sqrt: (c) => void c.simd(Simd.f32x4_sqrt),
  neg: (c) => void c.simd(Simd.f32x4_neg),
};
const ONE: Lanes = {
  add: (c) => void c.op(Op.f32_add),
  sub: (c) => void c.op(Op.f32_sub),
  mul: (c) => void c.op(Op.f32_mul),
  div: (c) => void c.op(Op.f32_div),
  sqrt: (c) => void c.op(Op.f32_sqrt),
  neg: (c) => void c.op(Op.f32_neg),
};

/** The f32 scalars of a call, in parameter order after the six i32s. */
const enum S { beta2, oneMinusBeta2, eps, decay, l2, w, oneMinusW, stepSize, bc2Sqrt }
const ADAM_SCALARS = 9;

/**
 * adam_f32(p, g, m, v, n, flags, beta2, oneMinusBeta2, eps, decay, l2, w, oneMinusW, stepSize,
 * bc2Sqrt): pointers are bytes; p, m and v are updated in place. The js kernel's float32 loop,
 * op by op, each rounded:
 *   g = ±g (+ l2·p);  p = p (· decay);  m ← lerp(m, g, w);  v ← v·β₂ + ((1 − β₂)·g)·g
 *   p ← p − (stepSize·m) / (√v / bc2Sqrt + eps)
 */
export function emitOptim(mb: ModuleBuilder): void {
  const P = ValType.i32;
  const F = ValType.f32;
  const V = ValType.v128;
  const adam = mb.func([P, P, P, P, P, P, ...Array.from({ length: ADAM_SCALARS }, () => F)], [], (c) => {
    const [pp, gp, mp, vp, n, flags] = [0, 1, 2, 3, 4, 5];
    const scalar = (k: S) => 6 + k;
    const i = c.local(P);
    const last = c.local(P);
    /** Pushes the byte address of element i of the tensor at `ptr`. */
    const at = (ptr: number) => void c.get(ptr).get(i).i32(2).op(Op.i32_shl).op(Op.i32_add);
    /**
     * One update of width `t`: `load`/`store` read and write at the address on the stack,
     * `k(s)` pushes scalar s in this width.
     */
    const body = (t: Lanes, load: () => void, store: () => void, k: (s: S) => void, x: { g: number; p: number; m0: number; m: number; v: number }) => {
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
        k(S.l2);
        c.get(x.p);
        t.mul(c);
        t.add(c);
        c.set(x.g);
      });
      when(Flag.decoupled, () => {
        c.get(x.p);
        k(S.decay);
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
          k(S.w);
          t.mul(c);
          t.add(c);
          c.set(x.m);
        },
        () => {
          c.get(x.g).get(x.g).get(x.m0);
          t.sub(c);
          k(S.oneMinusW);
          t.mul(c);
          t.sub(c);
          c.set(x.m);
        },
      );
      at(vp);
      load();
      k(S.beta2);
      t.mul(c);
      k(S.oneMinusBeta2);
      c.get(x.g);
      t.mul(c);
      c.get(x.g);
      t.mul(c);
      t.add(c);
      c.set(x.v);
      at(mp);
      c.get(x.m);
      store();
      at(vp);
      c.get(x.v);
      store();
      at(pp);
      c.get(x.p);
      k(S.stepSize);
      c.get(x.m);
      t.mul(c);
      c.get(x.v);
      t.sqrt(c);
      k(S.bc2Sqrt);
      t.div(c);
      k(S.eps);
      t.add(c);
      t.div(c);
      t.sub(c);
      store();
    };
    // the scalars splatted once, outside the loop
    const splat = Array.from({ length: ADAM_SCALARS }, (_, s) => {
      const l = c.local(V);
      c.get(scalar(s)).simd(Simd.f32x4_splat).set(l);
      return l;
    });
    const vecLocals = { g: c.local(V), p: c.local(V), m0: c.local(V), m: c.local(V), v: c.local(V) };
    const oneLocals = { g: c.local(F), p: c.local(F), m0: c.local(F), m: c.local(F), v: c.local(F) };
    c.i32(0).set(i);
    c.get(n).i32(3).op(Op.i32_sub).set(last);
    c.while(() => c.get(i).get(last).op(Op.i32_lt_s), () => {
      body(VEC, () => void c.simdMem(Simd.v128_load, 2), () => void c.simdMem(Simd.v128_store, 2), (s) => void c.get(splat[s]!), vecLocals);
      c.get(i).i32(4).op(Op.i32_add).set(i);
    });
    c.while(() => c.get(i).get(n).op(Op.i32_lt_s), () => {
      body(ONE, () => void c.mem(Op.f32_load, 2), () => void c.mem(Op.f32_store, 2), (s) => void c.get(scalar(s)), oneLocals);
      c.get(i).i32(1).op(Op.i32_add).set(i);
    });
  }, 'adam_f32');
  // task export: task t updates elements [t·chunk, min(n, (t + 1)·chunk)) of the call laid out at
  // arg (i32 words, then the f32 scalars at arg + 32); elementwise, so any split gives the same bits
  mb.func([P, P], [], (c) => {
    const [arg, t] = [0, 1];
    const lo = c.local(P);
    const count = c.local(P);
    c.get(t).get(arg).mem(Op.i32_load, 2, 4 * AdamArg.chunk).op(Op.i32_mul).set(lo);
    c.get(arg).mem(Op.i32_load, 2, 4 * AdamArg.n).get(lo).op(Op.i32_sub).set(count);
    c.get(count).get(arg).mem(Op.i32_load, 2, 4 * AdamArg.chunk).get(count).get(arg).mem(Op.i32_load, 2, 4 * AdamArg.chunk).op(Op.i32_lt_s).op(Op.select).set(count);
    for (const w of [AdamArg.p, AdamArg.g, AdamArg.m, AdamArg.v]) c.get(arg).mem(Op.i32_load, 2, 4 * w).get(lo).i32(2).op(Op.i32_shl).op(Op.i32_add);
    c.get(count).get(arg).mem(Op.i32_load, 2, 4 * AdamArg.flags);
    for (let k = 0; k < ADAM_SCALARS; k++) c.get(arg).mem(Op.f32_load, 2, ADAM_F32_AT + 4 * k);
    c.call(adam);
  }, 'adam_f32_task');
}

/** i32 words of a pooled Adam call's argument block; its f32 scalars follow at byte ADAM_F32_AT. */
const enum AdamArg { p, g, m, v, n, flags, chunk }
const ADAM_F32_AT = 32;
/**
 * Elements from which the update is split over the pool. Set for the f64 kernel this one
 * replaced, which spent about half a call in f64 division and square root: Adam.step on one
 * tensor, 1 vs 2 threads (medians of 350 steps, two runs): 256×784 610–675 → 553–558 µs;
 * 256×256 184–228 → 217–238; 128×256 91–94 → 113–128 (npx tsx scripts/bench/kernels.ts).
 * The f32x4 kernel (0.9 ns an element on 1 thread, its two divisions and square root about the
 * whole cost) was timed only under load from other processes, where 2 threads lost at every
 * size (256×784 183 → 217 µs, 2048×128 224 → 257 µs), which says nothing of a quiet machine.
 */
const PARALLEL_MIN = 1 << 17;

/**
 * In-place Adam/AdamW on contiguous float32 parameter, gradient and state; false (the js kernel
 * runs) for other dtypes, strided tensors and tiny ones. Scratch is reserved only for operands
 * outside wasm memory, so a large resident tensor never waits for the scratch block to grow.
 */
export function adamStepWasm(engine: Engine, [, g, m, v]: readonly Arg[], p: Arg, o: AdamStepParams): boolean {
  const ts = [p, g!, m!, v!];
  if (ts.some((t) => t.dtype !== 'float32' || !isContiguous(t.shape, t.strides))) return false;
  const n = numel(p.shape);
  // tensors in wasm memory are updated in place; others are staged in (and p, m, v copied back)
  const resident = ts.map((t) => engine.addressOf(t));
  const staged = resident.filter((a) => a < 0).length;
  if (n < (staged ? MIN_STAGED : MIN_RESIDENT)) return false;
  const slot = Math.ceil((n * 4) / 16) * 16;
  if (staged && (staged * slot > MAX_HEAP_BYTES || !engine.reserve(staged * slot))) return false;
  let next = engine.scratch;
  const ptrs = ts.map((t, j) => {
    if (resident[j]! >= 0) return resident[j]!;
    const at = next;
    next += slot;
    engine.stageIn(t.data, t.offset, t.offset + n, engine.f32, at);
    return at;
  });
  const { weightDecay: wd, decoupled, maximize } = o;
  // the js kernel's float32 scalars, in the export's parameter order
  const scalars = adamScalars32(o);
  const flags = (maximize ? Flag.maximize : 0) | (!decoupled && wd ? Flag.l2 : 0) | (decoupled ? Flag.decoupled : 0) | (scalars[S.w] < 0.5 ? Flag.lerpLow : 0);
  if (engine.threads > 1 && n >= PARALLEL_MIN) {
    // a few tasks per thread, in whole vectors of 4 so only the last has a scalar tail
    const chunk = Math.ceil(n / (4 * engine.threads) / 4) * 4;
    const words = engine.i32;
    [ptrs[0]!, ptrs[1]!, ptrs[2]!, ptrs[3]!, n, flags, chunk].forEach((x, k) => (words[ARGS / 4 + k] = x));
    engine.f32.set(scalars, (ARGS + ADAM_F32_AT) / 4);
    engine.parallel('adam_f32_task', ARGS, Math.ceil(n / chunk), true);
  } else engine.call('adam_f32', ptrs[0]!, ptrs[1]!, ptrs[2]!, ptrs[3]!, n, flags, ...scalars);
  for (const j of [0, 2, 3]) if (resident[j]! < 0) engine.stageOut(ts[j]!, engine.f32, ptrs[j]!, n);
  return true;
}
