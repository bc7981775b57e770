/**
 * @file How gpu kernels see their operands: a strided view of a device buffer (or of a host array
 * the caller passed, uploaded for the call), the kernel-source text that turns the output thread's
 * flat index into each operand's element offset, and writing a result texture to the output.
 */
import type { KernelArg } from '../backend.js';
import { isContiguous, numel, offsets } from '../layout.js';
import type { TypedArray } from '../names.js';
import { type Device, GpuBuffer, type Texture, deviceTexture, setTexture } from './device.js';

export type GpuArg = KernelArg<GpuBuffer | TypedArray>;

/** A texture made during one call for a later kernel of the same call (row statistics, a butterfly pass). */
export interface Scratch {
  texture: Texture;
  size: number;
}

/** One kernel call's context: its device, and the temporary textures to release afterwards. */
export class Call {
  readonly temps: { t: Texture; n: number }[] = [];
  constructor(readonly device: Device) {}

  /** The texture holding `arg`'s buffer (a host array is uploaded whole, for this call only). */
  texture(arg: GpuArg | Scratch): Texture {
    if ('texture' in arg) return arg.texture;
    if (arg.data instanceof GpuBuffer) return deviceTexture(this.device, arg.data);
    const h = arg.data;
    const t = this.device.upload(h instanceof Float32Array ? h : Float32Array.from(h as ArrayLike<number>));
    this.temps.push({ t, n: h.length });
    return t;
  }

  /**
   * Runs kernel `source` over `n` outputs with `inputs`' textures as its arguments. A number is
   * passed as a float uniform: values that change from call to call (a learning rate, a bias
   * correction) go there rather than into the source, which would compile a kernel per value.
   */
  run(source: string, n: number, inputs: readonly (GpuArg | Scratch | number)[]): Texture {
    const args = inputs.map((a) => (typeof a === 'number' ? a : this.texture(a)));
    // a uniform counts as size 0 in the compiled-kernel key (textures are never empty)
    const sizes = inputs.map((a) => (typeof a === 'number' ? 0 : 'texture' in a ? a.size : a.data instanceof GpuBuffer ? a.data.size : a.data.length));
    return this.device.run(source, n, args, sizes);
  }

  /** Like `run`, for an intermediate result: released when the call is done. */
  scratch(source: string, n: number, inputs: readonly (GpuArg | Scratch | number)[]): Scratch {
    const texture = this.run(source, n, inputs);
    this.temps.push({ t: texture, n });
    return { texture, size: n };
  }

  done(): void {
    for (const { t, n } of this.temps) this.device.release(t, n);
    this.temps.length = 0;
  }
}

/** True when the gpu can write `out`: a host array (any view: written on read-back) or a whole device buffer. */
export function writable(out: GpuArg): boolean {
  if (!(out.data instanceof GpuBuffer)) return true;
  return out.offset === 0 && numel(out.shape) === out.data.size && isContiguous(out.shape, out.strides);
}

/** Hands a result texture of `out`'s elements (row-major) to `out`. */
export function store(call: Call, out: GpuArg, t: Texture): void {
  const n = numel(out.shape);
  if (out.data instanceof GpuBuffer) {
    setTexture(call.device, out.data, t);
    return;
  }
  const values = t.toArray();
  const od = out.data;
  if (isContiguous(out.shape, out.strides)) for (let i = 0; i < n; i++) od[out.offset + i] = values[i]!;
  else {
    const at = offsets(out);
    for (let i = 0; i < n; i++) od[at[i]!] = values[i]!;
  }
  call.device.release(t, n);
}

/**
 * A zero the shader compiler cannot fold: WGSL rejects 1.0 / 0.0 as a constant expression (GLSL
 * evaluated it to ∞), and gpu.js writes `Infinity` as the largest finite float, so ±∞ and NaN are
 * divisions by this zero, done at run time.
 */
const RUNTIME_ZERO = '(this.thread.x * 0.0)';
/** +∞, −∞ and NaN as kernel source (root kernel bodies only: they read `this.thread`). */
export const INF = `(1.0 / ${RUNTIME_ZERO})`;
export const NEG_INF = `(-1.0 / ${RUNTIME_ZERO})`;
export const NAN = `(${RUNTIME_ZERO} / ${RUNTIME_ZERO})`;

/** A float literal for kernel source (gpu.js types `2` as an integer). */
export function lit(v: number): string {
  if (Number.isNaN(v)) return NAN;
  if (v === Infinity) return INF;
  if (v === -Infinity) return NEG_INF;
  const s = String(v);
  return /[.e]/.test(s) ? (s.includes('e') && !s.includes('.') ? s.replace('e', '.0e') : s) : `${s}.0`;
}

/**
 * Source lines that split the float index `index` into coordinates `${prefix}0…` of `shape`
 * (row-major). The +0.5 keeps floor() exact under a GPU division that is off by an ulp or two.
 */
export function coordinates(index: string, shape: readonly number[], prefix: string): string {
  const lines: string[] = [];
  let rest = index;
  for (let d = shape.length - 1; d >= 1; d--) {
    const q = `${prefix}q${d}`;
    lines.push(`const ${q} = Math.floor((${rest} + 0.5) / ${lit(shape[d]!)});`, `const ${prefix}${d} = ${rest} - ${q} * ${lit(shape[d]!)};`);
    rest = q;
  }
  if (shape.length > 0) lines.push(`const ${prefix}0 = ${rest};`);
  return lines.join('\n');
}

/** The element offset expression of a view with `strides` and `offset` at coordinates `${prefix}d`. */
export function offsetOf(strides: readonly number[], offset: number, prefix: string): string {
  const terms = [lit(offset)];
  strides.forEach((s, d) => {
    if (s !== 0) terms.push(`${prefix}${d} * ${lit(s)}`);
  });
  return terms.join(' + ');
}

/** Largest element count a kernel index may reach: float32 holds integers exactly up to 2^24. */
export const MAX_INDEX = 2 ** 24;

/**
 * Loop iterations one thread may run, all its loops together. Mesa's llvmpipe (the software
 * rasteriser under headless-gl and Dawn's OpenGL ES here) stops a shader's loops after 65535
 * iterations without a word, and a long per-thread loop is slow on any GPU: kernels split longer
 * work across threads (reductions) or decline it (the js fallback then runs it).
 */
export const MAX_LOOP = 65535;
