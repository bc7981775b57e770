/**
 * @file Linear algebra: `matmul` (the one primitive here, over the batched `matmul` kernel) and
 * the composites written from it — mm, bmm, dot, outer, linear and einsum — plus a LoRA layer's
 * merged weight (`loraMerge`, and `loraMergePacked` from a packed base) and its adapter's weight
 * gradients (`loraGrads`), one kernel each. Convolutions live in conv.ts;
 * decompositions (qr, svd …) are not part of qgrad.
 */
import { broadcastShapes, empty, numel, runKernel } from '../dispatch.js';
import { defineFunction } from '../function.js';
import { isGradEnabled } from '../tape.js';
import { Tensor } from '../tensor.js';
import { arange, eye } from './creation.js';
import { packedEmbedding, type PackedWeight } from './quant.js';
import { add, mul } from './elementwise.js';
import { contiguousNoGrad, expandView, permute, reshape, transpose } from './movement.js';
import { sum } from './reduce.js';

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

// a [..., M, K] · b [..., K, N], both at least 2-D, inner dims already checked
const matmulFn = defineFunction({
  name: 'matmul',
  forward(ctx, a: Tensor, b: Tensor) {
    ctx.save(a, b);
    const batch = broadcastShapes('matmul', a.shape.slice(0, -2), b.shape.slice(0, -2));
    const [m, k] = a.shape.slice(-2) as [number, number];
    const n = b.shape[b.ndim - 1]!;
    // broadcast batch dims as stride-0 views: the kernel reads strided views, so nothing is copied
    const av = expandView(a, [...batch, m, k]);
    const bv = expandView(b, [...batch, k, n]);
    return runKernel('matmul', [av, bv], [...batch, m, n], a.dtype, {});
  },
  backward(ctx, g) {
    const [a, b] = ctx.saved as [Tensor, Tensor];
    // d(AB) = dA·B + A·dB, so dA = g·Bᵀ and dB = Aᵀ·g (the engine sums broadcast batch dims). An
    // operand that is a transposed view (a linear layer's Wᵀ, attention's kᵀ) gets its gradient
    // computed as the transpose of the swapped product, (gᵀ·A)ᵀ: the same sums in the same order,
    // but laid out like the operand's storage, so W.grad comes out contiguous and what reads it next
    // (fake-quantize backward, the optimizer) walks it in order instead of by strides
    return [
      ctx.needsInputGrad[0] ? (columnMajor(a) ? transpose(matmul(b, transpose(g, -1, -2)), -1, -2) : matmul(g, transpose(b, -1, -2))) : null,
      ctx.needsInputGrad[1] ? (columnMajor(b) ? transpose(matmul(transpose(g, -1, -2), a), -1, -2) : matmul(transpose(a, -1, -2), g)) : null,
    ];
  },
});

/** Whether the last two dims of `t` are stored column by column (a transposed view of a matrix). */
function columnMajor(t: Tensor): boolean {
  const r = t.ndim;
  return t.strides[r - 2] === 1 && t.strides[r - 1] !== 1 && t.shape[r - 1]! > 1 && t.shape[r - 2]! > 1;
}

/**
 * Matrix product with PyTorch's `torch.matmul` rules: 1-D·1-D is a dot product (0-d result), a
 * 1-D operand is promoted to a matrix by prepending (left) or appending (right) a dim that is
 * removed afterwards, and leading batch dims broadcast.
 * @example matmul(ones([5, 2, 3]), ones([3, 4])).shape; // [5, 2, 4]
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  if (a.ndim === 0 || b.ndim === 0) throw new Error(`matmul: both arguments need at least 1 dimension, got shapes ${fmt(a.shape)} and ${fmt(b.shape)}`);
  if (a.dtype !== b.dtype) throw new Error(`matmul: expected both operands to have the same dtype, got ${a.dtype} (shape ${fmt(a.shape)}) and ${b.dtype} (shape ${fmt(b.shape)})`);
  const k = a.shape[a.ndim - 1]!;
  const kb = b.ndim === 1 ? b.shape[0]! : b.shape[b.ndim - 2]!;
  if (k !== kb) {
    throw new Error(`matmul: shapes ${fmt(a.shape)} and ${fmt(b.shape)} cannot be multiplied (the last dim of the first, ${k}, must equal the ${b.ndim === 1 ? 'only' : 'second-to-last'} dim of the second, ${kb})`);
  }
  const a2 = a.ndim === 1 ? reshape(a, [1, k]) : a; // [K] → [1, K]
  const b2 = b.ndim === 1 ? reshape(b, [k, 1]) : b; // [K] → [K, 1]
  const batchA = a2.shape.slice(0, -2);
  const batchB = b2.shape.slice(0, -2);
  try {
    broadcastShapes('matmul', batchA, batchB);
  } catch {
    throw new Error(`matmul: batch dims ${fmt(batchA)} and ${fmt(batchB)} of shapes ${fmt(a.shape)} and ${fmt(b.shape)} cannot be broadcast together`);
  }
  if (a2.ndim > 2 && b2.ndim === 2) {
    // [..., M, K]·[K, N] is one [(…·M), K]·[K, N] product, as in PyTorch: one big matmul instead of
    // a batch of small ones, and its backward gives dB as a single product over all rows (K = …·M)
    // instead of a batch of products summed afterwards
    const y = reshape(matmulFn(reshape(a2, [-1, k]), b2), [...batchA, a2.shape[a2.ndim - 2]!, b2.shape[1]!]);
    return b.ndim > 1 ? y : reshape(y, y.shape.slice(0, -1));
  }
  const y = matmulFn(a2, b2);
  if (a.ndim > 1 && b.ndim > 1) return y;
  // drop the promoted dims: [..., 1, N] → [..., N], [..., M, 1] → [..., M]
  const shape = y.shape.slice(0, -2);
  if (a.ndim > 1) shape.push(y.shape[y.ndim - 2]!);
  if (b.ndim > 1) shape.push(y.shape[y.ndim - 1]!);
  return reshape(y, shape);
}

/** 2-D matrix product (no broadcasting), as `torch.mm`. @example mm(ones([2, 3]), ones([3, 4])).shape; // [2, 4] */
export function mm(a: Tensor, b: Tensor): Tensor {
  if (a.ndim !== 2 || b.ndim !== 2) throw new Error(`mm: expects two 2-D tensors, got shapes ${fmt(a.shape)} and ${fmt(b.shape)}`);
  return matmul(a, b);
}

/**
 * Batched matrix product of [B, M, K] and [B, K, N] (no broadcasting), as `torch.bmm`.
 * @example bmm(zeros([8, 2, 3]), zeros([8, 3, 4])).shape; // [8, 2, 4]
 */
export function bmm(a: Tensor, b: Tensor): Tensor {
  if (a.ndim !== 3 || b.ndim !== 3) throw new Error(`bmm: expects two 3-D tensors, got shapes ${fmt(a.shape)} and ${fmt(b.shape)}`);
  if (a.shape[0] !== b.shape[0]) throw new Error(`bmm: batch sizes differ: shapes ${fmt(a.shape)} and ${fmt(b.shape)}`);
  return matmul(a, b);
}

/** Dot product of two 1-D tensors of equal length (0-d result). @example dot(tensor([1, 2]), tensor([3, 4])).item(); // 11 */
export function dot(a: Tensor, b: Tensor): Tensor {
  if (a.ndim !== 1 || b.ndim !== 1) throw new Error(`dot: expects two 1-D tensors, got shapes ${fmt(a.shape)} and ${fmt(b.shape)}`);
  if (a.shape[0] !== b.shape[0]) throw new Error(`dot: inconsistent tensor sizes: shapes ${fmt(a.shape)} and ${fmt(b.shape)}`);
  return matmul(a, b);
}

/** Outer product of two 1-D tensors: out[i, j] = a[i]·b[j]. @example outer(tensor([1, 2]), tensor([1, 10])).toArray(); // [[1, 10], [2, 20]] */
export function outer(a: Tensor, b: Tensor): Tensor {
  if (a.ndim !== 1 || b.ndim !== 1) throw new Error(`outer: expects two 1-D tensors, got shapes ${fmt(a.shape)} and ${fmt(b.shape)}`);
  return mul(reshape(a, [-1, 1]), b); // [n, 1] · [m] broadcasts to [n, m]
}

/**
 * A LoRA adapter's weight gradients for y = x·(W + s·B·A)ᵀ given g = dL/dy: dA = s·(g·B)ᵀ·x
 * [r, in] and dB = s·gᵀ·(x·Aᵀ) [out, r], in one `loraBackward` kernel that reads x and g once each
 * (the four separate products read each twice: a tiny Llama's QLoRA step spends about as long in
 * them as in its forward's products). Not differentiable: for backward rules that do not build a
 * graph (an input requiring grad while grad is enabled is an error). On a backend without the
 * kernel (gpu) it runs as those four matmuls.
 * @param x [n, in]
 * @param g [n, out]
 * @param a [r, in]
 * @param b [out, r]
 * @example
 * const [dA, dB] = noGrad(() => loraGrads(x, g, loraA, loraB, 2)); // as matmul(matmul(g, loraB).t(), x).mul(2), matmul(g.t(), matmul(x, loraA.t())).mul(2)
 */
export function loraGrads(x: Tensor, g: Tensor, a: Tensor, b: Tensor, scale: number): [Tensor, Tensor] {
  const [n, inF] = x.shape as [number, number];
  const [r, outF] = [a.shape[0]!, b.shape[0]!];
  if (x.ndim !== 2 || g.ndim !== 2 || a.ndim !== 2 || b.ndim !== 2 || g.shape[0] !== n || a.shape[1] !== inF || g.shape[1] !== outF || b.shape[1] !== r) {
    throw new Error(`loraGrads: x ${fmt(x.shape)}, g ${fmt(g.shape)}, a ${fmt(a.shape)} and b ${fmt(b.shape)} do not fit ([n, in], [n, out], [r, in], [out, r])`);
  }
  if (x.dtype !== g.dtype || a.dtype !== x.dtype || b.dtype !== x.dtype) throw new Error(`loraGrads: x ${x.dtype}, g ${g.dtype}, a ${a.dtype} and b ${b.dtype} must share one dtype`);
  if (isGradEnabled() && [x, g, a, b].some((t) => t.requiresGrad)) throw new Error('loraGrads: has no gradient of its own; call it where grad is disabled (a backward that builds no graph), or compose it from matmul');
  const backend = x.storage.backend;
  if (backend.name !== 'js' && backend.ranOn?.('loraBackward', x.dtype) === 'js') {
    // the js kernel would read device buffers back: four products on the device instead
    return [mul(matmul(transpose(matmul(g, b), 0, 1), x), scale), mul(matmul(transpose(g, 0, 1), matmul(x, transpose(a, 0, 1))), scale)];
  }
  const gradB = empty([outF, r], x.dtype, x, 'loraGrads');
  const gradA = runKernel('loraBackward', [contiguousNoGrad(x), contiguousNoGrad(g), a, b, gradB], [r, inF], x.dtype, { scale });
  return [gradA, gradB];
}

/**
 * A LoRA layer's merged weight w0 + b·(s·a) in one `loraMerge` kernel, rounded as
 * `add(w0, matmul(b, mul(a, s)))` rounds it (the four calls it replaces; a QLoRA step builds one
 * per adapted layer). Not differentiable, as `loraGrads`: for forwards that record their own
 * backward. On a backend without the kernel (gpu) it runs as those ops.
 * @param w0 [out, in]
 * @param a [r, in]
 * @param b [out, r]
 * @example const w = noGrad(() => loraMerge(w0, loraA, loraB, 2)); // w0 + loraB·(2·loraA)
 */
export function loraMerge(w0: Tensor, a: Tensor, b: Tensor, scale: number): Tensor {
  const [outF, inF] = w0.shape as [number, number];
  if (w0.ndim !== 2 || a.ndim !== 2 || b.ndim !== 2 || a.shape[1] !== inF || b.shape[0] !== outF || b.shape[1] !== a.shape[0]) {
    throw new Error(`loraMerge: w0 ${fmt(w0.shape)}, a ${fmt(a.shape)} and b ${fmt(b.shape)} do not fit ([out, in], [r, in], [out, r])`);
  }
  if (a.dtype !== w0.dtype || b.dtype !== w0.dtype) throw new Error(`loraMerge: w0 ${w0.dtype}, a ${a.dtype} and b ${b.dtype} must share one dtype`);
  if (isGradEnabled() && [w0, a, b].some((t) => t.requiresGrad)) throw new Error('loraMerge: has no gradient of its own; call it where grad is disabled, or compose it from matmul');
  const backend = w0.storage.backend;
  if (backend.name !== 'js' && backend.ranOn?.('loraMerge', w0.dtype) === 'js') return add(w0, matmul(b, mul(a, scale)));
  return runKernel('loraMerge', [w0, a, b], [outF, inF], w0.dtype, { scale });
}

/**
 * `loraMerge` on a packed base: W0 + b·(s·a) with W0 every row of `weight` decoded, bit for bit
 * `loraMerge(packedEmbedding(arange(0, outFeatures), weight), a, b, scale)`, in one kernel that never
 * writes W0 out (a QLoRA step builds one per adapted layer from its NF4 codes). Not differentiable,
 * as `loraMerge`. On a backend without the kernel (gpu) it runs as those two ops.
 * @param a [r, inFeatures], in the dtype of the weight's levels and scales
 * @param b [outFeatures, r]
 * @example const w = noGrad(() => loraMergePacked(layer.packedWeight()!, loraA, loraB, 2));
 */
export function loraMergePacked(weight: PackedWeight, a: Tensor, b: Tensor, scale: number): Tensor {
  const { outFeatures: rows, inFeatures: D } = weight;
  if (a.ndim !== 2 || b.ndim !== 2 || a.shape[1] !== D || b.shape[0] !== rows || b.shape[1] !== a.shape[0]) {
    throw new Error(`loraMergePacked: a ${fmt(a.shape)} and b ${fmt(b.shape)} do not fit the packed weight [${rows}, ${D}] ([r, in], [out, r])`);
  }
  const dtype = weight.scale.dtype;
  if (a.dtype !== dtype || b.dtype !== dtype) throw new Error(`loraMergePacked: a ${a.dtype} and b ${b.dtype} must be the packed weight's scale dtype ${dtype}`);
  if (weight.packing === 'base3') throw new Error('loraMergePacked: reads bit fields; base-3 packed weights are not supported');
  if (isGradEnabled() && (a.requiresGrad || b.requiresGrad)) throw new Error('loraMergePacked: has no gradient of its own; call it where grad is disabled, or compose it from matmul');
  const backend = a.storage.backend;
  if (backend.name !== 'js' && backend.ranOn?.('loraMergePacked', dtype) === 'js') {
    return loraMerge(packedEmbedding(arange(0, rows, 1, { dtype: 'int32' }).to(weight.codes.device), weight), a, b, scale);
  }
  const packed = [weight.codes, weight.levels, weight.scale, ...(weight.zeroPoint ? [weight.zeroPoint] : [])].map((t) => t.contiguous());
  return runKernel('loraMergePacked', [a, b, ...packed], [rows, D], dtype, {
    scale, bits: weight.bits, rows, groupSize: weight.groupSize, zeroPoint: weight.zeroPoint !== null, ...(weight.offset === 'beta' && { offset: 'beta' as const }),
  });
}

/**
 * `x·Wᵀ + b` with `weight` of shape [out, in] (or [in]), as `torch.nn.functional.linear`.
 * @example linear(ones([8, 3]), ones([4, 3]), zeros([4])).shape; // [8, 4]
 */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  if (weight.ndim > 2 || weight.ndim === 0) throw new Error(`linear: weight must be 1-D or 2-D [out, in], got shape ${fmt(weight.shape)}`);
  const inF = weight.shape[weight.ndim - 1]!;
  if (x.ndim === 0 || x.shape[x.ndim - 1] !== inF) {
    throw new Error(`linear: input of shape ${fmt(x.shape)} has ${x.shape[x.ndim - 1] ?? 0} features but weight ${fmt(weight.shape)} expects ${inF}`);
  }
  const y = matmul(x, weight.ndim === 2 ? transpose(weight, 0, 1) : weight);
  return bias ? add(y, bias) : y;
}

// ---------------------------------------------------------------- einsum
interface Labeled {
  t: Tensor;
  /** One label per dim: a letter, or `…i` for the i-th ellipsis dim (counted across operands). */
  labels: string[];
}

function parseTerm(term: string, eq: string): { labels: string[]; ellipsisAt: number } {
  const labels: string[] = [];
  let ellipsisAt = -1;
  for (let i = 0; i < term.length; i++) {
    if (term.startsWith('...', i)) {
      if (ellipsisAt >= 0) throw new Error(`einsum: more than one '...' in a term of '${eq}'`);
      ellipsisAt = labels.length;
      i += 2;
    } else if (/[a-zA-Z]/.test(term[i]!)) labels.push(term[i]!);
    else if (term[i] !== ' ') throw new Error(`einsum: invalid subscript '${term[i]}' in '${eq}' (use letters a-z, A-Z and '...')`);
  }
  return { labels, ellipsisAt };
}

/** Takes the diagonal over repeated labels (e.g. 'ii'), by masking with the identity and summing. */
function diagonal(op: Labeled): Labeled {
  let { t, labels } = op;
  for (;;) {
    const j = labels.findIndex((l, k) => labels.indexOf(l) !== k);
    if (j < 0) return { t, labels };
    const i = labels.indexOf(labels[j]!);
    const n = t.shape[i]!;
    if (t.shape[j] !== n) throw new Error(`einsum: label '${labels[i]}' is repeated with sizes ${n} and ${t.shape[j]} in one operand of shape ${fmt(op.t.shape)}`);
    const mask = reshape(eye(n, n, { dtype: t.dtype }), t.shape.map((d, k) => (k === i || k === j ? d : 1)));
    t = sum(mul(t, mask), j);
    labels = labels.filter((_, k) => k !== j);
  }
}

/** Sums the dims whose labels are not in `keep`. */
function sumOut(op: Labeled, keep: Set<string>): Labeled {
  const dims = op.labels.flatMap((l, i) => (keep.has(l) ? [] : [i]));
  if (dims.length === 0) return op;
  return { t: sum(op.t, dims), labels: op.labels.filter((l) => keep.has(l)) };
}

/** Contracts two operands, keeping the labels in `keep` (batch, left-only, right-only). */
function contract(a: Labeled, b: Labeled, keep: Set<string>): Labeled {
  a = sumOut(a, new Set([...keep, ...b.labels]));
  b = sumOut(b, new Set([...keep, ...a.labels]));
  const size = (op: Labeled, l: string) => op.t.shape[op.labels.indexOf(l)]!;
  const shared = a.labels.filter((l) => b.labels.includes(l));
  for (const l of shared) {
    const [x, y] = [size(a, l), size(b, l)];
    if (x !== y && x !== 1 && y !== 1) throw new Error(`einsum: label '${l}' has size ${x} in operand of shape ${fmt(a.t.shape)} and ${y} in operand of shape ${fmt(b.t.shape)}, which do not broadcast`);
    if (x !== y && !keep.has(l)) {
      // a size-1 side is constant along l: sum each side on its own
      a = sumOut(a, new Set(a.labels.filter((m) => m !== l)));
      b = sumOut(b, new Set(b.labels.filter((m) => m !== l)));
    }
  }
  const batch = a.labels.filter((l) => b.labels.includes(l) && keep.has(l));
  const summed = a.labels.filter((l) => b.labels.includes(l) && !keep.has(l));
  const left = a.labels.filter((l) => !b.labels.includes(l));
  const right = b.labels.filter((l) => !a.labels.includes(l));
  const order = (op: Labeled, ls: string[]) => permute(op.t, ls.map((l) => op.labels.indexOf(l)));
  const sizes = (op: Labeled, ls: string[]) => ls.map((l) => size(op, l));
  const batchSize = batch.map((l) => Math.max(size(a, l), size(b, l)));
  const labels = [...batch, ...left, ...right];
  if (summed.length === 0) {
    // no contraction: an elementwise product with broadcasting ([batch, left, 1…] · [batch, 1…, right])
    const ta = reshape(order(a, [...batch, ...left]), [...sizes(a, batch), ...sizes(a, left), ...right.map(() => 1)]);
    const tb = reshape(order(b, [...batch, ...right]), [...sizes(b, batch), ...left.map(() => 1), ...sizes(b, right)]);
    return { t: mul(ta, tb), labels };
  }
  const ta = reshape(order(a, [...batch, ...left, ...summed]), [...sizes(a, batch), numel(sizes(a, left)), numel(sizes(a, summed))]);
  const tb = reshape(order(b, [...batch, ...summed, ...right]), [...sizes(b, batch), numel(sizes(b, summed)), numel(sizes(b, right))]);
  const y = matmul(ta, tb); // [batch, L, R]
  return { t: reshape(y, [...batchSize, ...sizes(a, left), ...sizes(b, right)]), labels };
}

/**
 * Einstein summation, as `torch.einsum`: explicit ('ij,jk->ik') or implicit ('ij,jk') output,
 * '...' ellipsis, repeated labels within an operand (diagonals, 'ii->' is the trace) and any
 * number of operands, contracted left to right. Built from permute/reshape/mul/sum/matmul.
 * @example einsum('bij,bjk->bik', randn([2, 3, 4]), randn([2, 4, 5])).shape; // [2, 3, 5]
 */
export function einsum(equation: string, ...args: Tensor[] | [Tensor[]]): Tensor {
  const operands = (Array.isArray(args[0]) ? args[0] : args) as Tensor[]; // einsum(eq, a, b) or einsum(eq, [a, b])
  const eq = equation.replace(/\s+/g, '');
  const [lhs, rhs] = eq.split('->') as [string, string | undefined];
  const terms = lhs.split(',');
  if (terms.length !== operands.length) throw new Error(`einsum: '${equation}' has ${terms.length} operand terms but ${operands.length} tensors were given`);
  if (operands.length === 0) throw new Error('einsum: needs at least one operand');
  const parsed = terms.map((t) => parseTerm(t, equation));
  const ellDims = parsed.map((p, i) => {
    const extra = operands[i]!.ndim - p.labels.length;
    if (p.ellipsisAt < 0 ? extra !== 0 : extra < 0) {
      throw new Error(`einsum: term '${terms[i]}' of '${equation}' has ${p.labels.length} subscripts but operand ${i} has shape ${fmt(operands[i]!.shape)}`);
    }
    return p.ellipsisAt < 0 ? 0 : extra;
  });
  const nEll = Math.max(0, ...ellDims);
  const ell = (k: number) => Array.from({ length: k }, (_, j) => `…${nEll - k + j}`); // right-aligned
  let ops: Labeled[] = parsed.map((p, i) => {
    const labels = [...p.labels];
    if (p.ellipsisAt >= 0) labels.splice(p.ellipsisAt, 0, ...ell(ellDims[i]!));
    return { t: operands[i]!, labels };
  });
  let out: string[];
  if (rhs === undefined) {
    const all = parsed.flatMap((p) => p.labels);
    const once = [...new Set(all)].filter((l) => all.indexOf(l) === all.lastIndexOf(l)).sort();
    out = [...ell(nEll), ...once];
  } else {
    const p = parseTerm(rhs, equation);
    out = [...p.labels];
    if (p.ellipsisAt >= 0) out.splice(p.ellipsisAt, 0, ...ell(nEll));
    for (const l of out) {
      if (out.indexOf(l) !== out.lastIndexOf(l)) throw new Error(`einsum: output subscript '${l}' appears more than once in '${equation}'`);
      if (!l.startsWith('…') && !parsed.some((q) => q.labels.includes(l))) throw new Error(`einsum: output subscript '${l}' does not appear in the inputs of '${equation}'`);
    }
  }
  ops = ops.map(diagonal);
  let acc = ops[0]!;
  for (let i = 1; i < ops.length; i++) {
    const keep = new Set([...out, ...ops.slice(i + 1).flatMap((o) => o.labels)]);
    acc = contract(acc, ops[i]!, keep);
  }
  acc = sumOut(acc, new Set(out));
  // ellipsis dims an operand lacked, or size-1 broadcasts, are already resolved; order as requested
  return permute(acc.t, out.map((l) => acc.labels.indexOf(l)));
}
