/**
 * @file gpu fake quantization onto an integer grid: the forward and the fused backward (planes
 * dx, dscale, dzeroPoint), in float32 as the js oracle computes float32 tensors. Stochastic
 * rounding (a noise input) stays on js.
 */
import { collapse, numel } from '../layout.js';
import type { FakeQuantizeParams, KernelParams } from '../names.js';
import { type Call, type GpuArg, MAX_INDEX, coordinates, lit, offsetOf, store, writable } from './operands.js';

/** Statements setting `q` to R(u) for the rounding mode (half-even keeps ties on even integers). */
function round(p: FakeQuantizeParams, u: string): string {
  if (p.rounding === 'floor') return `let q = Math.floor(${u});`;
  if (p.rounding === 'halfAway') return `const au = Math.abs(${u}); let q = Math.floor(au); if (au - q >= 0.5) { q += 1.0; } if (${u} < 0.0) { q = -q; }`;
  return `const fu = Math.floor(${u}); const du = ${u} - fu; let q = fu; if (du > 0.5) { q = fu + 1.0; } else if (du == 0.5) { if (fu - 2.0 * Math.floor(fu * 0.5) != 0.0) { q = fu + 1.0; } }`;
}

/** Statements giving `q` (the unclamped code) and `zu` (the zero point used) from xv, sv, zv. */
function codeSource(p: FakeQuantizeParams): string {
  const inv = 'const inv = 1.0 / sv;';
  if (p.offset === 'beta') return `${inv}\nconst u = (xv - zv) * inv;\n${round(p, 'u')}\nconst zu = zv;`;
  if (p.offset === 'zeroPoint') return `${inv}\nconst u = xv * inv + zv;\n${round(p, 'u')}\nconst zu = zv;`;
  const zr = `const fz = Math.floor(zv); const dz0 = zv - fz; let zr = fz; if (dz0 > 0.5) { zr = fz + 1.0; } else if (dz0 == 0.5) { if (fz - 2.0 * Math.floor(fz * 0.5) != 0.0) { zr = fz + 1.0; } }
const zu = Math.min(Math.max(zr, ${lit(p.qmin)}), ${lit(p.qmax)});`;
  return `${inv}\n${zr}\nconst u0 = xv * inv;\n${round(p, 'u0')}\nq += zu;`;
}

const decode = (p: FakeQuantizeParams, q: string) => (p.offset === 'beta' ? `(${q} * sv + zu)` : `((${q} - zu) * sv)`);

function ok(inputs: readonly GpuArg[], out: GpuArg, p: FakeQuantizeParams, count: number): boolean {
  return p.rounding !== 'stochastic' && inputs.length === count && inputs.every((a) => a.dtype === 'float32') && out.dtype === 'float32' && writable(out);
}

export function fakeQuantizeGpu(call: Call, inputs: readonly GpuArg[], out: GpuArg, p: KernelParams['fakeQuantize']): boolean {
  const n = numel(out.shape);
  if (!ok(inputs, out, p, 3) || n === 0 || n > MAX_INDEX) return false;
  const { shape, strides } = collapse(out.shape, inputs.map((a) => a.strides));
  const source = `function (x, s, z) {
const i = this.thread.x;
${coordinates('i', shape, 'c')}
const xv = x[${offsetOf(strides[0]!, inputs[0]!.offset, 'c')}];
const sv = s[${offsetOf(strides[1]!, inputs[1]!.offset, 'c')}];
const zv = z[${offsetOf(strides[2]!, inputs[2]!.offset, 'c')}];
${codeSource(p)}
const qc = Math.min(Math.max(q, ${lit(p.qmin)}), ${lit(p.qmax)});
return ${decode(p, 'qc')};
}`;
  store(call, out, call.run(source, n, inputs));
  return true;
}

export function fakeQuantizeBackwardGpu(call: Call, inputs: readonly GpuArg[], out: GpuArg, p: KernelParams['fakeQuantizeBackward']): boolean {
  const total = numel(out.shape);
  if (!ok(inputs, out, p, 4) || total === 0 || total > MAX_INDEX) return false;
  const { shape, strides } = collapse(out.shape.slice(1), inputs.map((a) => a.strides));
  const n = total / 3;
  const gf = lit(p.gradFactor);
  const source = `function (x, s, z, g) {
const plane = Math.floor((this.thread.x + 0.5) / ${lit(n)});
const i = this.thread.x - plane * ${lit(n)};
${coordinates('i', shape, 'c')}
const xv = x[${offsetOf(strides[0]!, inputs[0]!.offset, 'c')}];
const sv = s[${offsetOf(strides[1]!, inputs[1]!.offset, 'c')}];
const zv = z[${offsetOf(strides[2]!, inputs[2]!.offset, 'c')}];
const gv = g[${offsetOf(strides[3]!, inputs[3]!.offset, 'c')}];
${codeSource(p)}
let dx = 0.0;
let ds = 0.0;
let dz = 0.0;
if (q >= ${lit(p.qmin)} && q <= ${lit(p.qmax)}) {
  dx = gv;
  ds = gv * (${decode(p, 'q')} - xv) * inv;
} else {
  let bound = ${lit(p.qmax)};
  if (q < ${lit(p.qmin)}) { bound = ${lit(p.qmin)}; }
  ds = gv * ${p.offset === 'beta' ? 'bound' : '(bound - zu)'};
  dz = ${p.offset === 'beta' ? 'gv' : '-gv * sv'};
}
let r = dx;
if (plane == 1.0) { r = ds * ${gf}; }
if (plane == 2.0) { r = dz * ${gf}; }
return r;
}`;
  store(call, out, call.run(source, total, inputs));
  return true;
}
