/**
 * @file gpu `packedMatmul` (1/2/4/8-bit fields and base-3 trits: one output per thread) and
 * `packedGather` (one decoded element per thread), each code cut from its byte in the shader. The
 * codes reach the device as the backend holds every dtype, one float texel per byte (0…255, or
 * −128…127 for int8, read as its byte): the shaders read the packed bytes, not a dequantized
 * matrix, though a texel spends 4 bytes on one.
 */
import type { KernelArg } from '../backend.js';
import { base3RowBytes, base3Sections, type Base3Section } from '../js/base3.js';
import { packedGatherOperands, packedOperands } from '../js/packed.js';
import { numel } from '../layout.js';
import type { PackedGatherParams, PackedMatmulParams, TypedArray } from '../names.js';
import { inRange } from './gather.js';
import { type Call, type GpuArg, MAX_INDEX, MAX_LOOP, lit, store, writable } from './operands.js';

/** Source that sets `b` to the byte at index `byteAt` of `codes` as 0…255 (an int8 texel holds its signed value). */
function byteSource(codes: GpuArg, byteAt: string): string {
  return `let b = codes[${lit(codes.offset)} + ${byteAt}];
    ${codes.dtype === 'int8' ? 'if (b < 0.0) { b += 256.0; }' : ''}`;
}

/**
 * Source that sets `field` to field `f` (a float expression) of `bits`-bit fields, bits (f·bits)
 * mod 8 of byte ⌊f·bits/8⌋: byte·2^−shift and its floor are exact in float32 (a power-of-two
 * scale of an integer < 256), so the field is exact.
 */
function fieldSource(codes: GpuArg, bits: number, f: string): string {
  const per = 8 / bits; // fields per byte
  const levels = 2 ** bits;
  // 2^−(pos·bits) for the field's position in its byte, chosen by comparisons (no pow on the gpu)
  const shift = Array.from({ length: per - 1 }, (_, t) => `if (pos > ${lit(t + 0.5)}) { inv = ${lit(2 ** -((t + 1) * bits))}; }`).join('\n    ');
  return `const byteAt = Math.floor((${f}) * ${lit(1 / per)});
    const pos = (${f}) - byteAt * ${lit(per)};
    ${byteSource(codes, 'byteAt')}
    let inv = 1.0;
    ${shift}
    const u = Math.floor(b * inv);
    const field = u - ${lit(levels)} * Math.floor(u * ${lit(1 / levels)});`;
}

/**
 * Source that sets `field` to the trit at column `k` of row `row` of base-3 packing (js/base3.ts),
 * the byte and digit found from the sections of the row's 256-blocks, written into the source
 * (every whole block has the same three; the last, shorter one its own), then js's base3Digit:
 * (byte·3^digit mod 256)·3 / 256, floored, every step an integer below 2^15, exact in float32.
 */
function tritSource(codes: GpuArg, K: number, row: string, k: string): string {
  const whole = Math.floor(K / 256);
  const blockBytes = base3RowBytes(256);
  // sections from block `blocks` on, as branches setting the section's first byte `at` (within its
  // block), the position `q` within the section and the section's bytes `nb`
  const chain = (sections: readonly Base3Section[], blocks: number): string => {
    const set = (s: Base3Section) => `at = ${lit(s.at - blocks * blockBytes)}; q = p - ${lit(s.pos - blocks * 256)}; nb = ${lit(s.bytes)};`;
    const last = sections[sections.length - 1]!;
    if (sections.length === 1) return set(last);
    const tests = sections.slice(0, -1).map((s) => `if (p < ${lit(s.pos - blocks * 256 + s.length)}) { ${set(s)} }`);
    return `${tests.join(' else ')} else { ${set(last)} }`;
  };
  const full = chain(base3Sections(256), 0);
  const tail = base3Sections(K).filter((s) => s.pos >= whole * 256);
  const sections = !tail.length ? full : whole === 0 ? chain(tail, 0) : `if (blk < ${lit(whole - 0.5)}) { ${full} } else { ${chain(tail, whole)} }`;
  const pow3 = [3, 9, 27, 81].map((v, t) => `if (digit > ${lit(t + 0.5)}) { mul = ${lit(v)}; }`).join(' ');
  return `const blk = Math.floor((${k}) * ${lit(1 / 256)});
    const p = (${k}) - blk * 256.0;
    let at = 0.0;
    let q = 0.0;
    let nb = 1.0;
    ${sections}
    const digit = Math.floor((q + 0.5) / nb);
    ${byteSource(codes, `(${row}) * ${lit(base3RowBytes(K))} + blk * ${lit(blockBytes)} + at + q - digit * nb`)}
    let mul = 1.0;
    ${pow3}
    const v = b * mul;
    const m = v - 256.0 * Math.floor(v * ${lit(1 / 256)});
    const field = Math.floor(m * ${lit(3 / 256)});`;
}

/**
 * y[n, o] = Σ_g s[o, g]·Σ_{k∈g} x[n, k]·(L[code(o, k)] − z[o, g]) (+ b[o]) in float32 (gpu.js
 * precision 'single'). The codes are exact (fieldSource, tritSource); only the sums round, in
 * another order than js's float64.
 */
export function packedMatmulGpu(call: Call, inputs: readonly GpuArg[], out: GpuArg, p: PackedMatmulParams): boolean {
  // the same operand errors as js; the data fields are not read here
  const { x, codes, table, scale, zero, bias, K, O, G } = packedOperands(inputs as readonly KernelArg<TypedArray>[], out as KernelArg<TypedArray>, p);
  const n = numel(out.shape);
  const base3 = p.packing === 'base3';
  const lastByte = codes.offset + (base3 ? O * base3RowBytes(K) : Math.ceil((O * K * p.bits) / 8));
  if (n === 0 || n > MAX_INDEX || O * K > MAX_INDEX || lastByte > MAX_INDEX || K > MAX_LOOP || !writable(out)) return false;
  if (![x, table, scale, zero, bias, out].every((a) => !a || a.dtype === 'float32')) return false;
  const gs = p.groupSize;
  const at = (a: GpuArg, index: string) => `${lit(a.offset)} + ${index}`;
  const [sxn, sxk] = [x.strides[0]!, x.strides[1]!];
  const args = ['x', 'codes', 'table', 'scale', ...(zero ? ['zero'] : []), ...(bias ? ['bias'] : [])];
  const source = `function (${args.join(', ')}) {
const i = this.thread.x;
const row = Math.floor((i + 0.5) / ${lit(O)});
const o = i - row * ${lit(O)};
const xr = ${lit(x.offset)} + row * ${lit(sxn)};
let y = 0.0;
for (let g = 0; g < ${G}; g++) {
  const sv = scale[${at(scale, `o * ${lit(G)} + g`)}];
  const zv = ${zero ? `zero[${at(zero, `o * ${lit(G)} + g`)}]` : '0.0'};
  let dot = 0.0;
  for (let j = 0; j < ${gs}; j++) {
    const k = g * ${lit(gs)} + j;
    ${base3 ? tritSource(codes, K, 'o', 'k') : fieldSource(codes, p.bits, `o * ${lit(K)} + k`)}
    dot += x[xr + k * ${lit(sxk)}] * (table[${at(table, 'field')}] - zv);
  }
  y += sv * dot;
}
return y${bias ? ` + bias[${at(bias, 'o')}]` : ''};
}`;
  store(call, out, call.run(source, n, inputs));
  return true;
}

/**
 * out[n, k] = (L[code(idx[n], k)] − z)·s, or L·s + z with offset 'beta', s and z those of row
 * idx[n]'s group of k; one element per thread, no loop. Each step is one float32 operation on
 * float32 values, rounded where js's float32 path rounds it, so the result is js's bit for bit;
 * the one exception a shader compiler may make is L·s + z as a fused multiply-add (GLSL and WGSL
 * allow the contraction), which skips the product's rounding: the gpu cases hold every mode they
 * run to equality. Index values are checked on the host (a shader cannot throw): one out of
 * range hands the call to js, which names it.
 */
export function packedGatherGpu(call: Call, inputs: readonly GpuArg[], out: GpuArg, p: PackedGatherParams): boolean {
  const { idx, codes, table, scale, zero, N, D, G } = packedGatherOperands(inputs as readonly KernelArg<TypedArray>[], out as KernelArg<TypedArray>, p);
  const V = p.rows;
  const n = N * D;
  const lastByte = codes.offset + Math.ceil((V * D * p.bits) / 8);
  if (n === 0 || n > MAX_INDEX || V * D > MAX_INDEX || lastByte > MAX_INDEX || idx.offset + N > MAX_INDEX || !writable(out)) return false;
  if (![table, scale, zero, out].every((a) => !a || a.dtype === 'float32')) return false;
  if (!inRange({ ...idx, shape: [N], strides: [1] }, V)) return false;
  const at = (a: GpuArg, index: string) => `${lit(a.offset)} + ${index}`;
  const perRow = `r * ${lit(G)} + g`;
  const value = !zero ? 'l * sv' : p.offset === 'beta' ? 'l * sv + zv' : '(l - zv) * sv';
  const source = `function (idx, codes, table, scale${zero ? ', zero' : ''}) {
const i = this.thread.x;
const row = Math.floor((i + 0.5) / ${lit(D)});
const k = i - row * ${lit(D)};
const r = idx[${at(idx, 'row')}];
const g = Math.floor((k + 0.5) / ${lit(p.groupSize)});
const sv = scale[${at(scale, perRow)}];
${zero ? `const zv = zero[${at(zero, perRow)}];` : ''}
${fieldSource(codes, p.bits, `r * ${lit(D)} + k`)}
const l = table[${at(table, 'field')}];
return ${value};
}`;
  store(call, out, call.run(source, n, inputs));
  return true;
}
