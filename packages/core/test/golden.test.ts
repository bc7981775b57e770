/**
 * PyTorch golden tests: every case in fixtures/golden-ops.json (written by
 * scripts/golden/ops.py with Debian's python3-torch) is replayed in float64 and its output and
 * input gradients of <out, v> compared within 1e-5 relative.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import * as q from '@qgrad/core';
import type { Tensor } from '@qgrad/core';
import { checkGolden, checkOp, type GoldenCase } from '@qgrad/core/testing';

const fixture = JSON.parse(readFileSync(new URL('./fixtures/golden-ops.json', import.meta.url), 'utf8')) as { torch: string; cases: GoldenCase[] };

type Fn = (...xs: Tensor[]) => Tensor;
const F = q.functional;

/** The qgrad call for each PyTorch case, by name. */
const OPS: Record<string, Fn> = {
  add_broadcast: (a, b) => a.add(b!),
  add_alpha: (a, b) => a.add(b!, 0.5),
  sub_broadcast: (a, b) => a.sub(b!),
  mul_broadcast: (a, b) => a.mul(b!),
  div_broadcast: (a, b) => a.div(b!),
  pow_tensor: (a, b) => a.pow(b!),
  pow_scalar: (a) => a.pow(3),
  neg: (a) => a.neg(),
  exp: (a) => a.exp(),
  log: (a) => a.log(),
  log1p: (a) => a.log1p(),
  expm1: (a) => q.expm1(a),
  sqrt: (a) => a.sqrt(),
  rsqrt: (a) => a.rsqrt(),
  abs: (a) => a.abs(),
  sign: (a) => a.sign(),
  sin: (a) => a.sin(),
  cos: (a) => a.cos(),
  tanh: (a) => a.tanh(),
  sigmoid: (a) => a.sigmoid(),
  relu: (a) => a.relu(),
  leaky_relu: (a) => F.leakyRelu(a, 0.1),
  gelu: (a) => F.gelu(a),
  gelu_tanh: (a) => F.gelu(a, 'tanh'),
  silu: (a) => F.silu(a),
  swiglu: (g, u) => q.swiglu(g, u!),
  softplus: (a) => F.softplus(a, 2),
  erf: (a) => a.erf(),
  maximum: (a, b) => a.maximum(b!),
  minimum: (a, b) => a.minimum(b!),
  where: (c, a, b) => q.where(c!.gt(0), a!, b!),
  clamp: (a) => a.clamp(-0.5, 0.7),
  round: (a) => a.mul(3).round(),
  floor: (a) => a.mul(3).floor(),

  sum_all: (a) => a.sum(),
  sum_dims_keepdim: (a) => a.sum([0, 2], true),
  mean_dim: (a) => a.mean(1),
  var_dim: (a) => a.var(1),
  var_correction0: (a) => a.var(0, { correction: 0 }),
  std_all: (a) => a.std(),
  amax_dim: (a) => a.amax(1),
  amin_dims: (a) => a.amin([0, 2], true),
  max_dim_values: (a) => a.max(1).values,
  min_dim_values: (a) => a.min(0, true).values,
  logsumexp: (a) => a.logsumexp(1),
  norm_2: (a) => a.norm(2, 1),
  norm_1: (a) => a.norm(1),
  norm_3_keepdim: (a) => a.norm(3, 0, true),

  permute: (a) => a.permute(2, 0, 1).mul(q.arange(24, undefined, 1, { dtype: 'float64' }).reshape(4, 2, 3)),
  transpose_reshape: (a) => a.transpose(0, 2).reshape(4, 6),
  expand: (a) => a.expand(2, 3, 4),
  narrow: (a) => a.narrow(1, 1, 3),
  slice_step: (a) => a.slice(1, 1, null, 2),
  select: (a) => a.select(0, 2),
  cat: (a, b) => q.cat([a, b!], 0),
  stack: (a, b) => q.stack([a, b!], 1),
  split_second: (a) => q.split(a, 2, 0)[1]!,
  chunk_last: (a) => q.chunk(a, 3, 1)[2]!,
  pad: (a) => q.pad(a, [1, 2, 0, 1]),
  triu: (a) => q.triu(a, 1),
  tril: (a) => q.tril(a, -1),
  repeat: (a) => q.repeat(a, [2, 1, 2]),
  repeat_interleave: (a) => q.repeatInterleave(a, 2, 1),
  flip: (a) => q.flip(a, [0, 1]),
  roll: (a) => q.roll(a, 1, 1),

  gather: (a, i) => q.gather(a, 1, i!),
  scatter_add: (a, i, s) => q.scatterAdd(a, 1, i!, s!),
  index_select: (a, i) => q.indexSelect(a, 0, i!),
  embedding: (i, w) => q.embedding(i, w!),
  masked_fill: (a, m) => q.maskedFill(a, m!.gt(0), -1.5),

  matmul_2d: (a, b) => q.matmul(a, b!),
  matmul_batched_broadcast: (a, b) => q.matmul(a, b!),
  matmul_1d_2d: (a, b) => q.matmul(a, b!),
  matmul_2d_1d: (a, b) => q.matmul(a, b!),
  matmul_1d_1d: (a, b) => q.matmul(a, b!),
  linear: (x, w, b) => q.linear(x, w!, b),
  outer: (a, b) => q.outer(a, b!),
  einsum_bij_bjk: (a, b) => q.einsum('bij,bjk->bik', a, b!),
  einsum_ij_kj: (a, b) => q.einsum('ij,kj->ik', a, b!),
  conv2d: (x, w, b) => q.conv2d(x, w!, b),
  conv2d_stride_pad_dil: (x, w) => q.conv2d(x, w!, null, { stride: 2, padding: 1, dilation: 2 }),
  conv2d_groups: (x, w, b) => q.conv2d(x, w!, b, { padding: 1, groups: 2 }),
  max_pool2d: (x) => q.maxPool2d(x, 2),
  max_pool2d_stride_pad: (x) => q.maxPool2d(x, 3, { stride: 2, padding: 1 }),
  avg_pool2d: (x) => q.avgPool2d(x, 2),
  avg_pool2d_pad: (x) => q.avgPool2d(x, 3, { stride: 2, padding: 1 }),
  upsample_nearest: (x) => q.interpolate(x, { scaleFactor: 2, mode: 'nearest' }),

  softmax: (a) => q.softmax(a, 1),
  softmax_dim0: (a) => q.softmax(a, 0),
  log_softmax: (a) => q.logSoftmax(a, 1),
  layer_norm: (x, w, b) => q.layerNorm(x, [6], w, b),
  layer_norm_2d: (x) => q.layerNorm(x, [3, 4]),
  rms_norm: (x, w) => q.rmsNorm(x, [6], w, 1e-6),
  group_norm: (x, w, b) => q.groupNorm(x, 3, w, b),
  cross_entropy: (x, t) => q.crossEntropy(x, t!),
  cross_entropy_ignore_smooth: (x, t) => q.crossEntropy(x, t!, { ignoreIndex: -100, labelSmoothing: 0.1 }),
  cross_entropy_sum: (x, t) => q.crossEntropy(x, t!, { reduction: 'sum' }),
  cross_entropy_probs: (x, p) => q.crossEntropy(x, p!.div(p!.sum(1, true))),
  nll_loss: (x, t) => q.nllLoss(x, t!),
  mse_loss: (a, b) => q.mseLoss(a, b!),
  l1_loss: (a, b) => q.l1Loss(a, b!),
  kl_div: (x, t) => q.klDiv(q.logSoftmax(x, 1), t!.div(t!.sum(1, true)), { reduction: 'batchmean' }),
  bce_with_logits: (x, y) => q.binaryCrossEntropyWithLogits(x, y!.div(2.4)),

  ceil: (a) => a.mul(3).ceil(),
  trunc: (a) => a.mul(3).trunc(),
  reciprocal: (a) => a.reciprocal(),
  square: (a) => a.square(),
  elu: (a) => F.elu(a),
  squeeze_unsqueeze_flatten: (a) => a.squeeze(1).unsqueeze(0).flatten(),
  clone_contiguous: (a) => a.t().contiguous().clone(),
  unbind_first: (a) => q.unbind(a, 1)[0]!,
  take: (a, i) => q.take(a, i!),
  index_add: (a, i, s) => q.indexAdd(a, 0, i!, s!),
  mm: (a, b) => q.mm(a, b!),
  bmm: (a, b) => q.bmm(a, b!),
  dot: (a, b) => q.dot(a, b!),
  unfold: (x) => q.unfold(x, 3, { padding: 1, stride: 2 }),
  fold: (x) => q.fold(x, [4, 4], 2, { stride: 1 }),
  softmin: (a) => q.softmin(a, 1),
  huber_loss: (a, b) => q.huberLoss(a.mul(2), b!, { delta: 0.7 }),
  smooth_l1_loss: (a, b) => q.smoothL1Loss(a.mul(2), b!, { beta: 0.5 }),
  binary_cross_entropy: (x, y) => q.binaryCrossEntropy(x.sigmoid(), y!.div(2.4)),
  gelu_of_matmul_chain: (a, w) => F.gelu(a.matmul(w!)).logsumexp(1),
};


describe(`PyTorch ${fixture.torch} golden values (float64, rtol 1e-5)`, () => {
  it('every fixture case has a qgrad op, and every mapped op a fixture', () => {
    expect(fixture.cases.map((c) => c.name).filter((n) => !OPS[n])).toEqual([]);
    expect(Object.keys(OPS).filter((n) => !fixture.cases.some((c) => c.name === n))).toEqual([]);
  });

  it('checkOp replays a golden case given to it, and a wrong op fails it', () => {
    const c = fixture.cases.find((k) => k.name === 'add_broadcast')!;
    expect(() => checkOp((a, b) => a.add(b!), [[2, 3], [3]], { golden: c })).not.toThrow();
    expect(() => checkOp((a, b) => a.add(b!).mul(1.001), [[2, 3], [3]], { golden: c })).toThrow(/add_broadcast forward vs PyTorch/);
    expect(() => checkOp((a, b) => a.add(b!.detach()), [[2, 3], [3]], { golden: c, forwardOnly: true })).toThrow(/add_broadcast gradient of input 1 vs PyTorch: 3 of 3 elements differ/);
  });

  for (const c of fixture.cases) {
    const op = OPS[c.name];
    if (!op) continue;
    it(`${c.name} matches PyTorch forward and input gradients`, () => checkGolden(op, c));
  }
});
