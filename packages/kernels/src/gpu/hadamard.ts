/**
 * @file gpu fast Walsh–Hadamard transform: log₂(blockSize) butterfly passes, one kernel each
 * (the first reads the strided input, the rest the previous pass's texture), the last one scaled.
 * Each pass rounds to float32, as the js oracle's float32 transform does (js/hadamard.ts).
 */
import { collapse, numel } from '../layout.js';
import type { KernelParams } from '../names.js';
import { type Call, type GpuArg, type Scratch, MAX_INDEX, coordinates, lit, offsetOf, store, writable } from './operands.js';

export function fwhtGpu(call: Call, [x]: readonly GpuArg[], out: GpuArg, { blockSize: b, normalize }: KernelParams['fwht']): boolean {
  const n = numel(out.shape);
  const powerOfTwo = Number.isInteger(b) && b >= 1 && (b & (b - 1)) === 0;
  if (x!.dtype !== 'float32' || out.dtype !== 'float32' || !writable(out) || !powerOfTwo || n === 0 || n % b !== 0 || n > MAX_INDEX) return false;
  const { shape, strides } = collapse(out.shape, [x!.strides]);
  // element at flat index k of the first pass's input (the view x)
  const readView = (k: string, prefix: string) => `${coordinates(k, shape, prefix)}\nconst ${prefix}v = x[${offsetOf(strides[0]!, x!.offset, prefix)}];`;
  const scale = normalize ? 1 / Math.sqrt(b) : 1;
  let cur: GpuArg | Scratch = x!;
  if (b === 1) {
    store(call, out, call.run(`function (x) {\nconst i = this.thread.x;\n${readView('i', 'a')}\nreturn av * ${lit(scale)};\n}`, n, [x!]));
    return true;
  }
  for (let h = 1; h < b; h *= 2) {
    const first = h === 1;
    const last = 2 * h === b;
    // (u, w) → (u + w, u − w) for the pair (k, k + h) whose bit h of k is clear: k reads its partner
    const source = `function (x) {
const i = this.thread.x;
const hq = Math.floor((i + 0.5) / ${lit(h)});
const hb = hq - 2.0 * Math.floor((hq + 0.5) / 2.0);
let pj = i + ${lit(h)};
if (hb > 0.5) { pj = i - ${lit(h)}; }
${first ? `${readView('i', 'a')}\n${readView('pj', 'b')}` : 'const av = x[i];\nconst bv = x[pj];'}
let r = av + bv;
if (hb > 0.5) { r = bv - av; }
return r${last && scale !== 1 ? ` * ${lit(scale)}` : ''};
}`;
    if (last) store(call, out, call.run(source, n, [cur]));
    else cur = call.scratch(source, n, [cur]);
  }
  return true;
}
