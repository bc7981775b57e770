/**
 * @file `loraLinear`: a LoRA layer's output x·(W0 + s·B·A)ᵀ + b as one product with the merged
 * weight, for adapters that see the layer's own input (no dropout). Against the two-branch form
 * x·W0ᵀ + s·(x·Aᵀ)·Bᵀ it drops, per layer and step, the tokens × out product (x·Aᵀ)·Bᵀ and the sum
 * of the branches in the forward, and in the backward the tokens × in product that takes the
 * adapter's share of dx and the sum of the two shares: passes over the activations that cost a
 * tiny Llama's QLoRA step about as much as skipping the frozen weight's gradient saves. The merged
 * weight costs out × r × in, which is small beside tokens × out × in. `loraLinearPacked` is the
 * same on a packed base: the merged weight is built from the codes in one kernel, so the decoded
 * base is never written out or kept for the backward.
 */
import { add, defineFunction, isGradEnabled, loraGrads, loraMerge, loraMergePacked, matmul, mul, reshape, scalarLike, transpose, type PackedWeight, type Tensor } from '@qgrad/core';

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;
const t2 = (m: Tensor) => transpose(m, 0, 1);

/**
 * The backward of y = x·Wᵀ, W = w0 + s·b·a (wSaved: W as the forward merged it). `need` names x, w0,
 * a and b; `w0` gives the base weight, read only by a backward that builds a graph.
 */
function backwardOf(g: Tensor, x: Tensor, w0: () => Tensor, a: Tensor, b: Tensor, wSaved: Tensor, s: number, need: readonly boolean[]): (Tensor | null)[] {
  if (!isGradEnabled()) {
    // dA = s·(g·B)ᵀ·x and dB = s·gᵀ·(x·Aᵀ) in one kernel that reads g and x once each (block by
    // block of tokens, both in cache for all four skinny products): against the four products
    // and the forward's x·(s·A)ᵀ, two passes over the activations fewer and four kernel calls
    const [da, db] = need[2] || need[3] ? loraGrads(x, g, a, b, s) : [null, null];
    const dx = need[0] ? matmul(g, wSaved) : null;
    const dw0 = need[1] ? matmul(t2(g), x) : null;
    return [dx, dw0, need[2] ? da : null, need[3] ? db : null];
  }
  // building the graph of the backward (double backward): every product in differentiable ops,
  // the merged weight a function of a and b rather than the constant the forward kept
  const st = scalarLike(s, a.dtype, a);
  const as = mul(a, st);
  const w = add(w0(), matmul(b, as));
  const gb = need[2] ? matmul(g, mul(b, st)) : null;
  const db = need[3] ? matmul(t2(g), matmul(x, t2(as))) : null;
  const dx = need[0] ? matmul(g, w) : null;
  const dw0 = need[1] ? matmul(t2(g), x) : null;
  const da = gb ? matmul(t2(gb), x) : null;
  return [dx, dw0, da, db];
}

// x [n, in], w0 [out, in], a [r, in], b [out, r]
const loraLinearFn = defineFunction<[Tensor, Tensor, Tensor, Tensor, number], Tensor, { scale: number }>({
  name: 'loraLinear',
  forward(ctx, x, w0, a, b, s) {
    // w0 + b·(s·a) in one kernel (the fill, mul, matmul and add it stands for: four calls a layer)
    const w = loraMerge(w0, a, b, s);
    ctx.state.scale = s;
    ctx.save(x, w0, a, b, w);
    return matmul(x, t2(w));
  },
  backward(ctx, g) {
    const [x, w0, a, b, wSaved] = ctx.saved as [Tensor, Tensor, Tensor, Tensor, Tensor];
    return [...backwardOf(g, x, () => w0, a, b, wSaved, ctx.state.scale, ctx.needsInputGrad), null];
  },
});

/** A frozen packed base: its packed weight, and its decoded float weight on demand. */
export interface PackedBase {
  /** The base as the packed kernels read it (`QuantizedLinear.packedWeight()`). */
  weight: PackedWeight;
  /** W0 decoded bit for bit as `loraMergePacked` decodes it (only a backward that builds a graph calls it). */
  w0: () => Tensor;
}

// x [n, in], a [r, in], b [out, r]; the base frozen and never an input
const loraLinearPackedFn = defineFunction<[Tensor, Tensor, Tensor, number, PackedBase], Tensor, { scale: number; base: PackedBase }>({
  name: 'loraLinear',
  forward(ctx, x, a, b, s, base) {
    // the base decoded and w0 + b·(s·a) added in one kernel, w0 never written out or kept
    const w = loraMergePacked(base.weight, a, b, s);
    ctx.state.scale = s;
    ctx.state.base = base;
    ctx.save(x, a, b, w);
    return matmul(x, t2(w));
  },
  backward(ctx, g) {
    const [x, a, b, wSaved] = ctx.saved as [Tensor, Tensor, Tensor, Tensor];
    const need = ctx.needsInputGrad;
    const [dx, , da, db] = backwardOf(g, x, ctx.state.base.w0, a, b, wSaved, ctx.state.scale, [need[0]!, false, need[1]!, need[2]!]);
    return [dx, da, db, null, null];
  },
});

/**
 * A LoRA layer's forward without dropout: `x·(w0 + scaling·b·a)ᵀ + bias`, equal to PEFT's
 * `F.linear(x, w0, bias) + scaling·F.linear(F.linear(x, a), b)` up to float rounding, computed with
 * one product over x (see the file comment). Gradients flow to x, a, b, w0 and bias as each
 * requires; the backward is differentiable again.
 * @param x [..., in]
 * @param w0 the base weight [out, in] (QLoRA: dequantized from its codes)
 * @param a PEFT's lora_A [r, in]
 * @param b PEFT's lora_B [out, r]
 * @example
 * const y = loraLinear(x, layer.baseWeight(), layer.loraA, layer.loraB, layer.scaling, layer.baseLayer.bias);
 */
export function loraLinear(x: Tensor, w0: Tensor, a: Tensor, b: Tensor, scaling: number, bias?: Tensor | null): Tensor {
  const [out, inF] = w0.shape as [number, number];
  const r = a.shape[0]!;
  if (w0.ndim !== 2 || a.ndim !== 2 || b.ndim !== 2 || a.shape[1] !== inF || b.shape[0] !== out || b.shape[1] !== r) {
    throw new Error(`loraLinear: weight ${fmt(w0.shape)}, lora_A ${fmt(a.shape)} and lora_B ${fmt(b.shape)} do not fit ([out, in], [r, in], [out, r])`);
  }
  if (x.ndim === 0 || x.shape[x.ndim - 1] !== inF) throw new Error(`loraLinear: input of shape ${fmt(x.shape)} has ${x.shape[x.ndim - 1] ?? 0} features but the weight ${fmt(w0.shape)} expects ${inF}`);
  if (x.dtype !== w0.dtype || a.dtype !== w0.dtype || b.dtype !== w0.dtype) {
    throw new Error(`loraLinear: input ${x.dtype}, weight ${w0.dtype}, lora_A ${a.dtype} and lora_B ${b.dtype} must share one dtype`);
  }
  const y2 = loraLinearFn(x.ndim === 2 ? x : reshape(x, [-1, inF]), w0, a, b, scaling);
  const y = x.ndim === 2 ? y2 : reshape(y2, [...x.shape.slice(0, -1), out]);
  return bias ? add(y, bias) : y;
}

/**
 * `loraLinear` on a frozen packed base (QLoRA's NF4 codes): the same output and gradients, bit for
 * bit those of `loraLinear(x, base.w0(), a, b, scaling, bias)`, with the merged weight built by
 * `loraMergePacked` straight from the codes, so the decoded base is neither written out nor kept
 * for the backward (a backward that builds a graph decodes it again). The base takes no gradient.
 * @param x [..., in]
 * @param base the packed weight [out, in] and its decoded form on demand
 * @param a PEFT's lora_A [r, in]
 * @param b PEFT's lora_B [out, r]
 * @example
 * const y = loraLinearPacked(x, { weight: layer.baseLayer.packedWeight()!, w0: () => layer.baseWeight() }, layer.loraA, layer.loraB, layer.scaling);
 */
export function loraLinearPacked(x: Tensor, base: PackedBase, a: Tensor, b: Tensor, scaling: number, bias?: Tensor | null): Tensor {
  const { outFeatures: out, inFeatures: inF } = base.weight;
  const r = a.shape[0]!;
  if (a.ndim !== 2 || b.ndim !== 2 || a.shape[1] !== inF || b.shape[0] !== out || b.shape[1] !== r) {
    throw new Error(`loraLinearPacked: weight [${out}, ${inF}], lora_A ${fmt(a.shape)} and lora_B ${fmt(b.shape)} do not fit ([out, in], [r, in], [out, r])`);
  }
  if (x.ndim === 0 || x.shape[x.ndim - 1] !== inF) throw new Error(`loraLinearPacked: input of shape ${fmt(x.shape)} has ${x.shape[x.ndim - 1] ?? 0} features but the weight [${out}, ${inF}] expects ${inF}`);
  const dtype = base.weight.scale.dtype;
  if (x.dtype !== dtype || a.dtype !== dtype || b.dtype !== dtype) {
    throw new Error(`loraLinearPacked: input ${x.dtype}, weight ${dtype}, lora_A ${a.dtype} and lora_B ${b.dtype} must share one dtype`);
  }
  const y2 = loraLinearPackedFn(x.ndim === 2 ? x : reshape(x, [-1, inF]), a, b, scaling, base);
  const y = x.ndim === 2 ? y2 : reshape(y2, [...x.shape.slice(0, -1), out]);
  return bias ? add(y, bias) : y;
}
