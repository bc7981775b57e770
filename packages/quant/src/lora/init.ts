/**
 * @file LoftQ / LQ-LoRA initialisation (methods.md §6.6): alternate Q = quant(W − M) and
 * M = best rank-r fit of W − deq(Q) the adapter can express, so that deq(Q) + M ≈ W better than
 * deq(quant(W)) alone. 'loftq' runs a fixed number of steps and keeps the pair with the lowest
 * error ‖W − deq(Q) − M‖_F (data-derived scales move with W − M, so later steps can be worse);
 * 'lq-lora' stops as soon as the error would grow, keeping the last better pair. Singular values are split
 * √Σ/√Σ between B and A. Applies to methods whose adapter sits outside the quantizer (qlora,
 * qa-lora, loqt); in l4q and lr-qat W0 and B·A are rounded together, so the split changes nothing.
 */
import { fromTypedArray, noGrad, type Tensor } from '@qgrad/core';
import { frozenBase, type LoraLayer } from './layer.js';
import { LoqtLinear } from './loqt.js';
import { QALoraLinear } from './qa-lora.js';
import { QLoraLinear } from './qlora.js';
import { truncatedSvd } from './svd.js';

/** The adapter initialisations that reduce the quantization error of the base (LoftQ, LQ-LoRA). */
export type LoraInitName = 'loftq' | 'lq-lora';
/** `init:` of loraQuant: a name, or the name with a step count (loftq: exactly that many, default 5; lq-lora: at most, default 20). */
export type LoraInit = LoraInitName | { method: LoraInitName; steps?: number };

/** What a LoftQ/LQ-LoRA initialisation reports: the error ‖W − deq(Q) − BA‖ of each step and of the pair kept. */
export interface LoraInitStats {
  /** ‖W − deq(Q) − M‖_F of every step run (lq-lora: of every accepted one, non-increasing). */
  errors: number[];
  /** The error of the pair kept (the lowest). */
  error: number;
  /** ‖W − deq(quant(W))‖_F: plain quantization without the low-rank part. */
  plainError: number;
}

type Fit = { a: Tensor; b: Tensor; m: Tensor };

/** The adapter factors that best express residual `r` [out, in] under the layer's form, and the [out, in] matrix M they add. */
function fit(layer: QLoraLinear | QALoraLinear | LoqtLinear, r: Tensor): Fit {
  const dtype = layer.dtype;
  const t = (a: Float64Array, shape: number[]) => fromTypedArray(dtype === 'float64' ? a : Float32Array.from(a), shape, dtype);
  const [out, inF] = [layer.outFeatures, layer.inFeatures];
  const L = layer instanceof QALoraLinear ? layer.groupSize : 1;
  const cols = inF / L;
  const target = L > 1 ? r.reshape([out, cols, L]).mean(-1) : r; // QA-LoRA can only add a constant per group: fit the group means
  const { u, s, v, rank } = truncatedSvd(Float64Array.from(target.contiguous().dataSync()), out, cols, layer.rank);
  const R = layer.rank;
  const aArr = new Float64Array(R * cols);
  const bArr = new Float64Array(out * R);
  // scaling·(B·A)/L = U·Σ·Vᵀ (LoQT: α·B·P with P = Vᵀ, orthonormal rows)
  const loqt = layer instanceof LoqtLinear;
  const k = loqt ? 1 / layer.scaling : L / layer.scaling;
  for (let j = 0; j < rank; j++) {
    const sa = loqt ? 1 : Math.sqrt(s[j]! * k);
    const sb = loqt ? s[j]! * k : Math.sqrt(s[j]! * k);
    for (let c = 0; c < cols; c++) aArr[j * cols + c] = v[c * rank + j]! * sa;
    for (let o = 0; o < out; o++) bArr[o * R + j] = u[o * rank + j]! * sb;
  }
  const a = t(aArr, [R, cols]);
  const b = t(bArr, [out, R]);
  const low = b.matmul(a).mul(layer.scaling / L);
  const m = L > 1 ? low.unsqueeze(-1).expand([out, cols, L]).reshape([out, inF]) : low;
  return { a, b, m };
}

/**
 * Initialises `layer`'s base and adapters from its float weight `w` by the alternation; returns
 * the errors. Errors name the layer for methods it does not apply to.
 * @internal plumbing between the quantizer, QAT, LoRA and export code of @qgrad/quant, left off the API site
 */
export function initLowRankQuant(layer: LoraLayer, w: Tensor, init: LoraInit): LoraInitStats {
  const name = typeof init === 'string' ? init : init.method;
  if (name !== 'loftq' && name !== 'lq-lora') throw new Error(`${layer.who}: unknown init ${JSON.stringify(init)}; inits are 'loftq' and 'lq-lora'`);
  if (!(layer instanceof QLoraLinear || layer instanceof QALoraLinear || layer instanceof LoqtLinear)) {
    throw new Error(`${layer.who}: init '${name}' splits W into a quantized part plus the adapter; method '${layer.method}' rounds W0 + B·A together, so the split changes nothing (use it with qlora, qa-lora or loqt)`);
  }
  const steps = (typeof init === 'object' ? init.steps : undefined) ?? (name === 'loftq' ? 5 : 20);
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`${layer.who}: init '${name}' needs steps ≥ 1, got ${steps}`);
  return noGrad(() => {
    const bias = layer.baseLayer.bias;
    const frob = (x: Tensor) => Math.sqrt(x.square().sum().item());
    const plainError = frob(w.sub(frozenBase(w, bias, layer.quant, layer.who).dequantizedWeight()));
    const errors: number[] = [];
    let best = Infinity;
    let m: Tensor | null = null;
    for (let i = 0; i < steps; i++) {
      const base = frozenBase(m ? w.sub(m) : w, bias, layer.quant, layer.who);
      const r = w.sub(base.dequantizedWeight());
      const f = fit(layer, r);
      const e = frob(r.sub(f.m));
      if (name === 'lq-lora' && errors.length && e > errors[errors.length - 1]!) break;
      errors.push(e);
      m = f.m;
      if (e >= best) continue;
      best = e;
      layer.baseLayer = base;
      layer.loraA.copy_(f.a);
      layer.loraB.copy_(f.b);
    }
    return { errors, error: best, plainError };
  });
}
