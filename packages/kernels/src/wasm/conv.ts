/**
 * @file wasm im2col / col2im (f32, f64): the kernels behind conv2d, its backward and pooling.
 * Each output row is split in JS-precomputed [padding | in-bounds | padding] ranges so the
 * in-bounds run is a branch-free (SIMD when unit-stride) copy or accumulate. col2im adds in the
 * oracle's order, so its results are bit-identical to js.
 */
import type { KernelArg } from '../backend.js';
import { convOutSize } from '../js/conv.js';
import { numel } from '../layout.js';
import type { Im2colParams, TypedArray } from '../names.js';
import { type Code, type ModuleBuilder, Op, Simd, ValType } from './assembler.js';
import { ARGS, MAX_HEAP_BYTES, span, type Engine } from './runtime.js';

type Arg = KernelArg<TypedArray>;
type Kind = 'f32' | 'f64';

/** i32 words of the argument block, then the pad value as an f64 (8-byte aligned). */
const WORDS = ['out', 'src', 'N', 'C', 'H', 'W', 'kh', 'kw', 'oh', 'ow', 'sh', 'sw', 'ph', 'pw', 'dh', 'dw', 'sn', 's1', 's2', 's3', 'zlo', 'zhi'] as const;
const PAD_WORD = WORDS.length;

const P = ValType.i32;

function emitConv(mb: ModuleBuilder, k: Kind, adjoint: boolean): void {
  const e = k === 'f32' ? 4 : 8;
  const lanes = 16 / e;
  const load = k === 'f32' ? Op.f32_load : Op.f64_load;
  const store = k === 'f32' ? Op.f32_store : Op.f64_store;
  const al = k === 'f32' ? 2 : 3;
  mb.func([P], [], (c) => {
    const arg = 0;
    const w: Record<string, number> = {};
    WORDS.forEach((name, i) => {
      w[name] = c.local(P);
      c.get(arg).mem(Op.i32_load, 2, i * 4).set(w[name]!);
    });
    const pad = c.local(k === 'f32' ? ValType.f32 : ValType.f64);
    c.get(arg).mem(Op.f64_load, 3, PAD_WORD * 4);
    if (k === 'f32') c.op(Op.f32_demote_f64);
    c.set(pad);
    const [n, ch, i, j, y, z, h, zlo, zhi, wb, po, src, dst, step, unit, r] = Array.from({ length: 16 }, () => c.local(P));
    const v = (name: string) => w[name]!;
    const padRun = (from: () => void, to: () => void) => {
      c.for(z, from, to, 1, () => {
        c.get(po).get(pad).mem(store, al);
        c.get(po).i32(e).op(Op.i32_add).set(po);
      });
    };
    // in im2col `po` walks the output; in col2im it is unused and `dst` is recomputed per row
    c.get(v('out')).set(po);
    c.for(n, () => c.i32(0), () => c.get(v('N')), 1, () => {
      c.for(ch, () => c.i32(0), () => c.get(v('C')), 1, () => {
        c.for(i, () => c.i32(0), () => c.get(v('kh')), 1, () => {
          c.for(j, () => c.i32(0), () => c.get(v('kw')), 1, () => {
            c.get(v('zlo')).get(j).i32(4).op(Op.i32_mul).op(Op.i32_add).mem(Op.i32_load, 2).set(zlo);
            c.get(v('zhi')).get(j).i32(4).op(Op.i32_mul).op(Op.i32_add).mem(Op.i32_load, 2).set(zhi);
            c.get(j).get(v('dw')).op(Op.i32_mul).get(v('pw')).op(Op.i32_sub).set(wb);
            if (adjoint) c.get(ch).get(v('kh')).op(Op.i32_mul).get(i).op(Op.i32_add).get(v('kw')).op(Op.i32_mul).get(j).op(Op.i32_add).set(r);
            c.for(y, () => c.i32(0), () => c.get(v('oh')), 1, () => {
              c.get(y).get(v('sh')).op(Op.i32_mul).get(v('ph')).op(Op.i32_sub).get(i).get(v('dh')).op(Op.i32_mul).op(Op.i32_add).set(h);
              c.get(h).i32(0).op(Op.i32_lt_s).get(h).get(v('H')).op(Op.i32_ge_s).op(Op.i32_or).if();
              if (!adjoint) padRun(() => c.i32(0), () => c.get(v('ow')));
              c.op(Op.else);
              if (!adjoint) {
                padRun(() => c.i32(0), () => c.get(zlo));
                // first in-bounds source element and the source step per output element
                c.get(v('src')).get(n).get(v('sn')).op(Op.i32_mul).get(ch).get(v('s1')).op(Op.i32_mul).op(Op.i32_add).get(h).get(v('s2')).op(Op.i32_mul).op(Op.i32_add);
                c.get(zlo).get(v('sw')).op(Op.i32_mul).get(wb).op(Op.i32_add).get(v('s3')).op(Op.i32_mul).op(Op.i32_add).i32(e).op(Op.i32_mul).op(Op.i32_add).set(src);
                c.get(v('sw')).get(v('s3')).op(Op.i32_mul).tee(unit).i32(e).op(Op.i32_mul).set(step);
                c.get(zlo).set(z);
                c.get(unit).i32(1).op(Op.i32_eq).if();
                c.while(() => c.get(z).i32(lanes - 1).op(Op.i32_add).get(zhi).op(Op.i32_lt_s), () => {
                  c.get(po).get(src).simdMem(Simd.v128_load, 0).simdMem(Simd.v128_store, 0);
                  c.get(po).i32(16).op(Op.i32_add).set(po);
                  c.get(src).i32(16).op(Op.i32_add).set(src);
                  c.get(z).i32(lanes).op(Op.i32_add).set(z);
                });
                c.end();
                c.while(() => c.get(z).get(zhi).op(Op.i32_lt_s), () => {
                  c.get(po).get(src).mem(load, al).mem(store, al);
                  c.get(po).i32(e).op(Op.i32_add).set(po);
                  c.get(src).get(step).op(Op.i32_add).set(src);
                  c.get(z).i32(1).op(Op.i32_add).set(z);
                });
                padRun(() => c.get(zhi), () => c.get(v('ow')));
              } else {
                // cols[n, r, y·ow + z] (strides sn, s1, s2) added into out[n, ch, h, z·sw + wb]
                c.get(v('src')).get(n).get(v('sn')).op(Op.i32_mul).get(r).get(v('s1')).op(Op.i32_mul).op(Op.i32_add);
                c.get(y).get(v('ow')).op(Op.i32_mul).get(zlo).op(Op.i32_add).get(v('s2')).op(Op.i32_mul).op(Op.i32_add).i32(e).op(Op.i32_mul).op(Op.i32_add).set(src);
                c.get(v('out')).get(n).get(v('C')).op(Op.i32_mul).get(ch).op(Op.i32_add).get(v('H')).op(Op.i32_mul).get(h).op(Op.i32_add).get(v('W')).op(Op.i32_mul);
                c.get(zlo).get(v('sw')).op(Op.i32_mul).get(wb).op(Op.i32_add).op(Op.i32_add).i32(e).op(Op.i32_mul).op(Op.i32_add).set(dst);
                c.get(v('sw')).i32(e).op(Op.i32_mul).set(step);
                c.get(zlo).set(z);
                c.get(v('sw')).i32(1).op(Op.i32_eq).get(v('s2')).i32(1).op(Op.i32_eq).op(Op.i32_and).if();
                c.while(() => c.get(z).i32(lanes - 1).op(Op.i32_add).get(zhi).op(Op.i32_lt_s), () => {
                  c.get(dst).get(dst).simdMem(Simd.v128_load, 0).get(src).simdMem(Simd.v128_load, 0).simd(k === 'f32' ? Simd.f32x4_add : Simd.f64x2_add).simdMem(Simd.v128_store, 0);
                  c.get(dst).i32(16).op(Op.i32_add).set(dst);
                  c.get(src).i32(16).op(Op.i32_add).set(src);
                  c.get(z).i32(lanes).op(Op.i32_add).set(z);
                });
                c.end();
                c.while(() => c.get(z).get(zhi).op(Op.i32_lt_s), () => {
                  c.get(dst).get(dst).mem(load, al).get(src).mem(load, al).op(k === 'f32' ? Op.f32_add : Op.f64_add).mem(store, al);
                  c.get(dst).get(step).op(Op.i32_add).set(dst);
                  c.get(src).get(v('s2')).i32(e).op(Op.i32_mul).op(Op.i32_add).set(src);
                  c.get(z).i32(1).op(Op.i32_add).set(z);
                });
              }
              c.end();
            });
          });
        });
      });
    });
  }, `${adjoint ? 'col2im' : 'im2col'}_${k}`);
}

export function emitConv2d(mb: ModuleBuilder): void {
  for (const k of ['f32', 'f64'] as const) {
    emitConv(mb, k, false);
    emitConv(mb, k, true);
  }
}

const MIN_ELEMENTS = 2048;

function run(engine: Engine, name: 'im2col' | 'col2im', src: Arg, out: Arg, p: Im2colParams): boolean {
  const d = out.dtype;
  if ((d !== 'float32' && d !== 'float64') || src.dtype !== d) return false;
  const n = numel(out.shape);
  // negative strides (flipped views) go to js
  const s = src.strides.every((st) => st >= 0) ? span(src) : null;
  if (n < MIN_ELEMENTS || !s || (engine.addressOf(src) < 0 && s[1] - s[0] > 4 * numel(src.shape) + 64)) return false;
  const k: Kind = d === 'float32' ? 'f32' : 'f64';
  const e = k === 'f32' ? 4 : 8;
  const img = name === 'im2col' ? src.shape : out.shape;
  const [N, C, H, W] = img as [number, number, number, number];
  const [kh, kw] = p.kernel;
  const [sh, sw] = p.stride;
  const [dh, dw] = p.dilation;
  const [ph, pw] = p.padding;
  const oh = convOutSize(H, kh, sh, ph, dh);
  const ow = convOutSize(W, kw, sw, pw, dw);
  if (oh <= 0 || ow <= 0) return false;
  const srcPtr = engine.scratch;
  const zPtr = srcPtr + Math.ceil(((s[1] - s[0]) * e) / 16) * 16;
  const outPtr = zPtr + Math.ceil((8 * kw) / 16) * 16;
  const total = outPtr - engine.scratch + n * e;
  if (total > MAX_HEAP_BYTES || !engine.reserve(total)) return false;
  const view = k === 'f32' ? engine.f32 : engine.f64;
  // operands in wasm memory are read and written in place (an input overlapping out is staged)
  const direct = engine.addressOf(out);
  const srcIn = engine.inPlace(src, direct >= 0 ? out : undefined);
  const dst = direct >= 0 ? direct : outPtr;
  if (srcIn < 0) engine.stageIn(src.data, s[0], s[1], view, srcPtr);
  if (name === 'col2im') view.fill(0, dst / e, dst / e + n);
  const i32 = engine.i32;
  // output columns z whose input column z·sw + j·dw − pw lies inside [0, W)
  for (let j = 0; j < kw; j++) {
    const wb = j * dw - pw;
    const lo = Math.min(ow, Math.max(0, Math.ceil(-wb / sw)));
    const hi = Math.min(ow, Math.max(lo, Math.ceil((W - wb) / sw)));
    i32[zPtr / 4 + j] = lo;
    i32[zPtr / 4 + kw + j] = hi;
  }
  const a = ARGS / 4;
  const words = [dst, srcIn >= 0 ? srcIn : srcPtr + (src.offset - s[0]) * e, N, C, H, W, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw, ...[...src.strides, 0].slice(0, 4), zPtr, zPtr + 4 * kw];
  words.forEach((v, i) => (i32[a + i] = v));
  engine.f64[(ARGS + PAD_WORD * 4) / 8] = p.padValue;
  engine.call(`${name}_${k}`, ARGS);
  if (direct < 0) engine.stageOut(out, view, outPtr, n);
  return true;
}

export function im2colWasm(engine: Engine, [x]: readonly Arg[], out: Arg, p: Im2colParams): boolean {
  return x!.shape.length === 4 && run(engine, 'im2col', x!, out, p);
}

export function col2imWasm(engine: Engine, [cols]: readonly Arg[], out: Arg, p: Im2colParams): boolean {
  return cols!.shape.length === 3 && run(engine, 'col2im', cols!, out, p);
}
