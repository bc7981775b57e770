/**
 * @file gpu `packedMatmul` (1/2/4/8-bit fields; base-3 trits stay on js): one output per thread,
 * each field cut from its byte in the shader. The codes reach the device as the backend holds
 * every dtype, one float texel per byte (0…255, or −128…127 for int8, read as its byte): the
 * shader reads the packed bytes, not a dequantized matrix, though a texel spends 4 bytes on one.
 */
import type { KernelArg } from '../backend.js';
import { packedOperands } from '../js/packed.js';
import { numel } from '../layout.js';
import type { PackedMatmulParams, TypedArray } from '../names.js';
import { type Call, type GpuArg, MAX_INDEX, MAX_LOOP, lit, store, writable } from './operands.js';

/**
 * y[n, o] = Σ_g s[o, g]·Σ_{k∈g} x[n, k]·(L[field(o, k)] − z[o, g]) (+ b[o]) in float32 (gpu.js
 * precision 'single'). Field i of the [O, K] matrix is bits (i·bits) mod 8 of byte ⌊i·bits/8⌋:
 * byte·2^−shift and its floor are exact in float32 (a power-of-two scale of an integer < 256),
 * so the fields are exact; only the sums round, in another order than js's float64.
 */
export function packedMatmulGpu(call: Call, inputs: readonly GpuArg[], out: GpuArg, p: PackedMatmulParams): boolean {
  // the same operand errors as js; the data fields are not read here
  const { x, codes, table, scale, zero, bias, K, O, G } = packedOperands(inputs as readonly KernelArg<TypedArray>[], out as KernelArg<TypedArray>, p);
  const n = numel(out.shape);
  if (p.packing === 'base3' || n === 0 || n > MAX_INDEX || O * K > MAX_INDEX || K > MAX_LOOP || !writable(out)) return false;
  if (![x, table, scale, zero, bias, out].every((a) => !a || a.dtype === 'float32')) return false;
  const { bits, groupSize: gs } = p;
  const per = 8 / bits; // fields per byte
  const levels = 2 ** bits;
  // 2^−(pos·bits) for the field's position in its byte, chosen by comparisons (no pow on the gpu)
  const shift = Array.from({ length: per - 1 }, (_, t) => `if (pos > ${lit(t + 0.5)}) { inv = ${lit(2 ** -((t + 1) * bits))}; }`).join('\n    ');
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
    const f = o * ${lit(K)} + k;
    const byteAt = Math.floor(f * ${lit(1 / per)});
    const pos = f - byteAt * ${lit(per)};
    let b = codes[${at(codes, 'byteAt')}];
    ${codes.dtype === 'int8' ? 'if (b < 0.0) { b += 256.0; }' : ''}
    let inv = 1.0;
    ${shift}
    const u = Math.floor(b * inv);
    const field = u - ${lit(levels)} * Math.floor(u * ${lit(1 / levels)});
    dot += x[xr + k * ${lit(sxk)}] * (table[${at(table, 'field')}] - zv);
  }
  y += sv * dot;
}
return y${bias ? ` + bias[${at(bias, 'o')}]` : ''};
}`;
  store(call, out, call.run(source, n, inputs));
  return true;
}
