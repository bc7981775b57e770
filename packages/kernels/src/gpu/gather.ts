/**
 * @file gpu gather-style indexing: gather and indexSelect (one output element per thread, reading
 * the indexed element), and scatterAdd and indexAdd written as gathers: gpu.js has no atomics,
 * so each output element scans the index positions that could land on it and adds their sources
 * in index order (the js order, so float32 sums round alike). That scan is index-length work per
 * output element; past MAX_SCAN it declines to js.
 */
import { numel, offsets } from '../layout.js';
import type { KernelParams } from '../names.js';
import { GpuBuffer, hostValues } from './device.js';
import { type Call, type GpuArg, MAX_INDEX, MAX_LOOP, coordinates, lit, offsetOf, store, writable } from './operands.js';

/**
 * Most output elements × scanned index positions one scatter kernel takes. A guess, not a
 * measurement: js does one pass over the index while the scan does output × index work, and a
 * much longer draw call risks a real GPU's watchdog.
 */
const MAX_SCAN = 2 ** 28;

/**
 * True when every index value is in [0, size): checked on the host (the values are read back
 * if only the device has them, a synchronisation) because a shader cannot throw, and an
 * out-of-range index must fail as on js. False hands the call to js, which throws its error.
 */
export function inRange(index: GpuArg, size: number): boolean {
  const values = index.data instanceof GpuBuffer ? hostValues(index.data) : index.data;
  const at = offsets(index);
  for (let p = 0; p < at.length; p++) {
    const v = values[at[p]!]!;
    if (!(v >= 0 && v < size)) return false;
  }
  return true;
}

/** The shared checks: float32 values, an int32 index of rank ≥ 1, a whole output, sizes a float index reaches. */
function ok(values: readonly GpuArg[], index: GpuArg, out: GpuArg, size: number): boolean {
  const n = numel(out.shape);
  return values.every((a) => a.dtype === 'float32') && out.dtype === 'float32' && index.dtype === 'int32' && index.shape.length > 0 && writable(out) && n > 0 && n <= MAX_INDEX && inRange(index, size);
}

/** `strides` with the entry at `dim` zeroed (the kernel adds index × stride[dim] itself). */
const without = (strides: readonly number[], dim: number) => strides.map((s, d) => (d === dim ? 0 : s));

export function gatherGpu(call: Call, [x, index]: readonly GpuArg[], out: GpuArg, { dim }: KernelParams['gather']): boolean {
  // the index may be smaller than x on the other dims (PyTorch allows it), never larger
  if (index!.shape.some((n, d) => d !== dim && n > x!.shape[d]!) || !ok([x!], index!, out, x!.shape[dim]!)) return false;
  const source = `function (x, ix) {
const i = this.thread.x;
${coordinates('i', out.shape, 'c')}
const k = ix[${offsetOf(index!.strides, index!.offset, 'c')}];
return x[${offsetOf(without(x!.strides, dim), x!.offset, 'c')} + k * ${lit(x!.strides[dim]!)}];
}`;
  store(call, out, call.run(source, numel(out.shape), [x!, index!]));
  return true;
}

export function indexSelectGpu(call: Call, [x, index]: readonly GpuArg[], out: GpuArg, { dim }: KernelParams['indexSelect']): boolean {
  if (!ok([x!], index!, out, x!.shape[dim]!)) return false;
  const source = `function (x, ix) {
const i = this.thread.x;
${coordinates('i', out.shape, 'c')}
const k = ix[${lit(index!.offset)} + c${dim} * ${lit(index!.strides[0]!)}];
return x[${offsetOf(without(x!.strides, dim), x!.offset, 'c')} + k * ${lit(x!.strides[dim]!)}];
}`;
  store(call, out, call.run(source, numel(out.shape), [x!, index!]));
  return true;
}

export function scatterAddGpu(call: Call, [base, index, src]: readonly GpuArg[], out: GpuArg, { dim }: KernelParams['scatterAdd']): boolean {
  const L = index!.shape[dim]!;
  if (L > MAX_LOOP || index!.shape.some((n, d) => d !== dim && n > out.shape[d]!) || numel(out.shape) * L > MAX_SCAN || !ok([base!, src!], index!, out, out.shape[dim]!)) return false;
  // out element c receives src[c with dim → j] for every j with index[c with dim → j] = c[dim];
  // elements outside the index's extent on the other dims receive nothing
  const inside = index!.shape.flatMap((n, d) => (d === dim || n === out.shape[d] ? [] : [`c${d} < ${lit(n)}`]));
  const scan = `for (let j = 0; j < ${L}; j++) {
  if (ix[ip + j * ${lit(index!.strides[dim]!)}] == c${dim}) { acc += s[sp + j * ${lit(src!.strides[dim]!)}]; }
}`;
  const source = `function (b, ix, s) {
const i = this.thread.x;
${coordinates('i', out.shape, 'c')}
let acc = b[${offsetOf(base!.strides, base!.offset, 'c')}];
const ip = ${offsetOf(without(index!.strides, dim), index!.offset, 'c')};
const sp = ${offsetOf(without(src!.strides, dim), src!.offset, 'c')};
${inside.length ? `if (${inside.join(' && ')}) {
${scan}
}` : scan}
return acc;
}`;
  store(call, out, call.run(source, numel(out.shape), [base!, index!, src!]));
  return true;
}

export function indexAddGpu(call: Call, [base, index, src]: readonly GpuArg[], out: GpuArg, { dim }: KernelParams['indexAdd']): boolean {
  const L = numel(index!.shape);
  if (L > MAX_LOOP || numel(out.shape) * L > MAX_SCAN || !ok([base!, src!], index!, out, out.shape[dim]!)) return false;
  // out[…, r, …] = base[…, r, …] + Σ over k with index[k] = r of src[…, k, …], k ascending
  const source = `function (b, ix, s) {
const i = this.thread.x;
${coordinates('i', out.shape, 'c')}
let acc = b[${offsetOf(base!.strides, base!.offset, 'c')}];
const sp = ${offsetOf(without(src!.strides, dim), src!.offset, 'c')};
for (let k = 0; k < ${L}; k++) {
  if (ix[${lit(index!.offset)} + k * ${lit(index!.strides[0]!)}] == c${dim}) { acc += s[sp + k * ${lit(src!.strides[dim]!)}]; }
}
return acc;
}`;
  store(call, out, call.run(source, numel(out.shape), [base!, index!, src!]));
  return true;
}
