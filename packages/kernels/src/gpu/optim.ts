/**
 * @file gpu Adam/AdamW step: a gpu.js kernel has one output, so the step is three kernels (new
 * expAvg, new expAvgSq, new param), each recomputing the moments from the old values, and all
 * three results replace their buffers only once the three have run. Float32 throughout, as the js
 * kernel on float32 (which rounds each operation; GLSL's division and square root are not
 * correctly rounded, and a shader compiler may fuse a multiply-add). What changes every step (the
 * bias corrections, a scheduled lr) is passed as uniforms, so one compiled kernel serves all steps.
 */
import { isContiguous, numel } from '../layout.js';
import type { KernelParams } from '../names.js';
import { type Call, type GpuArg, MAX_INDEX, coordinates, lit, offsetOf, store, writable } from './operands.js';

export function adamStepGpu(call: Call, inputs: readonly GpuArg[], out: GpuArg, o: KernelParams['adamStep']): boolean {
  const [p, g, m, v] = inputs as [GpuArg, GpuArg, GpuArg, GpuArg];
  const n = numel(out.shape);
  // js throws for non-contiguous parameter or state: leave that error to it
  const whole = (a: GpuArg) => writable(a) && isContiguous(a.shape, a.strides);
  if (![p, g, m, v, out].every((a) => a.dtype === 'float32') || ![p, m, v, out].every(whole) || n === 0 || n > MAX_INDEX) return false;
  const { lr, beta1, beta2, eps, weightDecay: wd, decoupled, maximize, step } = o;
  const w = 1 - beta1;
  // the same steps as js's adamLoop: gradient (maximize, L2), moments (lerp as PyTorch's), param
  const head = `const i = this.thread.x;
${coordinates('i', g.shape, 'c')}
let gi = g[${offsetOf(g.strides, g.offset, 'c')}];
${maximize ? 'gi = -gi;' : ''}
const pi = p[${lit(p.offset)} + i];
${!decoupled && wd ? `gi += ${lit(wd)} * pi;` : ''}
const mo = m[${lit(m.offset)} + i];
const mi = ${w < 0.5 ? `mo + (gi - mo) * ${lit(w)}` : `gi - (gi - mo) * ${lit(1 - w)}`};
const vi = v[${lit(v.offset)} + i] * ${lit(beta2)} + ${lit(1 - beta2)} * gi * gi;`;
  const kernel = (result: string) => `function (p, g, m, v, decay, stepSize, bc2Sqrt) {\n${head}\nreturn ${result};\n}`;
  const pNew = `pi * decay - (stepSize * mi) / (Math.sqrt(vi) / bc2Sqrt + ${lit(eps)})`;
  const uniforms = [decoupled ? 1 - lr * wd : 1, lr / (1 - beta1 ** step), Math.sqrt(1 - beta2 ** step)];
  const [tm, tv, tp] = [kernel('mi'), kernel('vi'), kernel(pNew)].map((source) => call.run(source, n, [p, g, m, v, ...uniforms]));
  store(call, m, tm!);
  store(call, v, tv!);
  store(call, out, tp!);
  return true;
}
