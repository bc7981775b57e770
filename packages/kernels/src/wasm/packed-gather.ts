/**
 * @file wasm `packedGather`: rows of a packed low-bit table decoded field by field, with the js
 * kernel's roundings (the level and the zero point, scale or offset combined in the out dtype's
 * own arithmetic, which is what js's double-then-round gives), so the two agree bit for bit.
 * QLoRA decodes every frozen base weight this way each step. The matmul on packed codes is
 * packed.ts.
 */
import type { KernelArg } from '../backend.js';
import { packedGatherOperands } from '../js/packed.js';
import type { KernelParams, TypedArray } from '../names.js';
import { type Code, type ModuleBuilder, Op, ValType } from './assembler.js';
import { stage } from './operands.js';
import { type Engine } from './runtime.js';

type Arg = KernelArg<TypedArray>;

/** How a level l becomes a value: (l − z)·s without or with zero points, or l·s + β. */
const enum Mode { scale, zeroPoint, beta }

/** Below this many decoded elements the operand checks and copies cost more than js saves. */
const MIN_ELEMENTS = 1024;

/**
 * packed_gather_k(out, idx, n, codes, table, scale, zero, rows, D, gs, bits, mode) → 0, or 1 at an
 * index outside [0, rows) (js then reruns the call and throws): for each of the n indices r, the
 * D fields of row r starting at bit r·D·bits of codes (little end first), each looked up in the
 * level table and combined with its group's scale (and zero point or offset).
 */
function emitPackedGather(mb: ModuleBuilder, k: 'f32' | 'f64'): void {
  const P = ValType.i32;
  const F = k === 'f32' ? ValType.f32 : ValType.f64;
  const e = k === 'f32' ? 4 : 8;
  const al = k === 'f32' ? 2 : 3;
  const load = k === 'f32' ? Op.f32_load : Op.f64_load;
  const store = k === 'f32' ? Op.f32_store : Op.f64_store;
  const [mul, sub, add] = k === 'f32' ? [Op.f32_mul, Op.f32_sub, Op.f32_add] : [Op.f64_mul, Op.f64_sub, Op.f64_add];
  mb.func([P, P, P, P, P, P, P, P, P, P, P, P], [P], (c) => {
    const [out, idx, n, codes, table, scale, zero, rows, D, gs, bits, mode] = Array.from({ length: 12 }, (_, i) => i);
    const [row, r, g, G, bit, j, mask, o, sp] = Array.from({ length: 9 }, () => c.local(P));
    const [s, z] = [c.local(F), c.local(F)];
    c.i32(1).get(bits).op(Op.i32_shl).i32(1).op(Op.i32_sub).set(mask);
    c.get(D).get(gs).op(Op.i32_div_u).set(G);
    c.get(out).set(o);
    /** One group's gs fields: the level of each, then `combine` (s and z in locals). */
    const fields = (code: Code, combine: () => void) => {
      code.for(j, () => code.i32(0), () => code.get(gs), 1, () => {
        code.get(o);
        code.get(codes).get(bit).i32(3).op(Op.i32_shr_u).op(Op.i32_add).mem(Op.i32_load8_u, 0);
        code.get(bit).i32(7).op(Op.i32_and).op(Op.i32_shr_u).get(mask).op(Op.i32_and);
        code.i32(e).op(Op.i32_mul).get(table).op(Op.i32_add).mem(load, al);
        combine();
        code.mem(store, al);
        code.get(o).i32(e).op(Op.i32_add).set(o);
        code.get(bit).get(bits).op(Op.i32_add).set(bit);
      });
    };
    c.for(row, () => c.i32(0), () => c.get(n), 1, () => {
      c.get(idx).get(row).i32(4).op(Op.i32_mul).op(Op.i32_add).mem(Op.i32_load, 2).tee(r).get(rows).op(Op.i32_ge_u).if();
      c.i32(1).op(Op.return);
      c.end();
      c.get(r).get(D).op(Op.i32_mul).get(bits).op(Op.i32_mul).set(bit);
      // this row's scales (and zero points): G of them from r·G
      c.get(r).get(G).op(Op.i32_mul).i32(e).op(Op.i32_mul).set(sp);
      c.for(g, () => c.i32(0), () => c.get(G), 1, () => {
        c.get(scale).get(sp).op(Op.i32_add).mem(load, al).set(s);
        c.get(mode).i32(Mode.scale).op(Op.i32_ne).if();
        c.get(zero).get(sp).op(Op.i32_add).mem(load, al).set(z);
        c.end();
        c.get(sp).i32(e).op(Op.i32_add).set(sp);
        c.get(mode).i32(Mode.scale).op(Op.i32_eq).if();
        fields(c, () => c.get(s).op(mul));
        c.op(Op.else);
        c.get(mode).i32(Mode.zeroPoint).op(Op.i32_eq).if();
        fields(c, () => c.get(z).op(sub).get(s).op(mul));
        c.op(Op.else);
        fields(c, () => c.get(s).op(mul).get(z).op(add));
        c.end();
        c.end();
      });
    });
    c.i32(0);
  }, `packed_gather_${k}`);
}

/** Adds `packed_gather_f32` and `packed_gather_f64`. */
export function emitPackedGatherKernels(mb: ModuleBuilder): void {
  emitPackedGather(mb, 'f32');
  emitPackedGather(mb, 'f64');
}

/**
 * packedGather in wasm when the levels, scales and zero points share out's dtype (the js kernel's
 * roundings are then the dtype's own arithmetic); false hands the call to js, which also raises
 * the out-of-range error.
 */
export function packedGatherWasm(engine: Engine, inputs: readonly Arg[], out: Arg, p: KernelParams['packedGather']): boolean {
  const { idx, codes, table, scale, zero, N, D } = packedGatherOperands(inputs, out, p);
  if (N * D < MIN_ELEMENTS || [table, scale, ...(zero ? [zero] : [])].some((t) => t.dtype !== out.dtype)) return false;
  // bit offsets are i32 in the kernel
  if (p.rows * D * p.bits >= 2 ** 31) return false;
  const e = out.dtype === 'float32' ? 4 : 8;
  const ops = [idx, codes, table, scale, ...(zero ? [zero] : [])];
  const direct = engine.addressOf(out);
  const outBytes = direct >= 0 ? 0 : Math.ceil((N * D * e) / 16) * 16;
  const ptrs = stage(engine, engine.scratch + outBytes, ops, ops.map((t) => (t === codes ? 1 : t === idx ? 4 : e)), direct >= 0 ? out : undefined);
  if (ptrs === null) return false;
  const outPtr = direct >= 0 ? direct : engine.scratch;
  const mode = !zero ? Mode.scale : p.offset === 'beta' ? Mode.beta : Mode.zeroPoint;
  const [pi, pc, pt, ps, pz] = ptrs;
  const name = out.dtype === 'float32' ? 'packed_gather_f32' : 'packed_gather_f64';
  if (engine.call(name, outPtr, pi!, N, pc!, pt!, ps!, pz ?? 0, p.rows, D, p.groupSize, p.bits, mode) !== 0) return false;
  if (direct < 0) engine.stageOut(out, out.dtype === 'float32' ? engine.f32 : engine.f64, outPtr, N * D);
  return true;
}
