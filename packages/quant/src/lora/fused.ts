/**
 * @file `loraLinear`: a LoRA layer's output x·(W0 + s·B·A)ᵀ + b as one product with the merged
 * weight, for adapters that see the layer's own input (no dropout). Against the two-branch form
 * x·W0ᵀ + s·(x·Aᵀ)·Bᵀ it drops, per layer and step, the tokens × out product (x·Aᵀ)·Bᵀ and the sum
 * of the branches in the forward, and in the backward the tokens × in product that takes the
 * adapter's share of dx and the sum of the two shares: passes over the activations that cost a
 * tiny Llama's QLoRA step about as much as skipping the frozen weight's gradient saves. The merged
 * weight costs out × r × in, which is small beside tokens × out × in.
 */
import { add, defineFunction, isGradEnabled, matmul, mul, reshape, scalarLike, transpose, type Tensor } from '@qgrad/core';

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;
const t2 = (m: Tensor) => transpose(m, 0, 1);

// x [n, in], w0 [out, in], a [r, in], b [out, r]
const loraLinearFn = defineFunction<[Tensor, Tensor, Tensor, Tensor, number], Tensor>({
  name: 'loraLinear',
  forward(ctx, x, w0, a, b, s) {
    // s·A once serves the merged weight and hs = x·(s·A)ᵀ, which is all dB needs: one scalar op
    // here and one (s·B) in the backward, where s on each factor would take three; the two share
    // one 0-d tensor of s
    const st = scalarLike(s, a.dtype, a);
    const as = mul(a, st);
    const w = add(w0, matmul(b, as));
    // computing hs now costs what recomputing it would, and it is small (n × r)
    const hs = ctx.needsInputGrad[3] ? matmul(x, t2(as)) : null;
    ctx.save(x, w0, a, b, w, st, ...(hs ? [hs] : []));
    return matmul(x, t2(w));
  },
  backward(ctx, g) {
    const [x, w0, a, b, wSaved, st, hsSaved] = ctx.saved as [Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | undefined];
    const need = ctx.needsInputGrad;
    // building the graph of the backward (double backward): the merged weight and hs must be
    // functions of a and b, not the constants the forward kept
    const graph = isGradEnabled();
    const as = graph ? mul(a, st) : null;
    const w = as ? add(w0, matmul(b, as)) : wSaved;
    // dA = (g·s·B)ᵀ·x and dB = gᵀ·(x·(s·A)ᵀ). The adapter's products are skinny (r columns or
    // rows) and read g or x in place; in a training step they take about twice their time on an
    // operand already in cache. Orders tried on the tiny Llama (dx before or after the products
    // over g, hs here or in the forward): none measurably faster, ±1.5 % in paired runs whose
    // sign follows which model was built first
    const gb = need[2] ? matmul(g, mul(b, st)) : null;
    const hs = need[3] ? (as || !hsSaved ? matmul(x, t2(as ?? mul(a, st))) : hsSaved) : null;
    const db = hs ? matmul(t2(g), hs) : null;
    const dx = need[0] ? matmul(g, w) : null;
    const dw0 = need[1] ? matmul(t2(g), x) : null;
    const da = gb ? matmul(t2(gb), x) : null;
    return [dx, dw0, da, db, null];
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
