#!/usr/bin/env python3
"""Writes packages/core/test/fixtures/golden-ops.json: for every op case, float64 inputs,
PyTorch's forward output and the input gradients of <out, v> for a fixed random v.

Run with Debian's PyTorch:  /usr/bin/python3 scripts/golden/ops.py
The TypeScript side (packages/core/test/golden.test.ts) maps each case name to the qgrad call.
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
OUT = os.path.join(os.path.dirname(__file__), '..', '..', 'packages', 'core', 'test', 'fixtures', 'golden-ops.json')


def R(*shape):
    return ('randn', list(shape))


def P(*shape):
    """positive inputs in [0.3, 2.3)"""
    return ('pos', list(shape))


def I(low, high, *shape):
    return ('int', list(shape), low, high)


def C(data, dtype='float64', grad=False):
    return ('const', data, dtype, grad)


CASES = []


def case(name, inputs, fn):
    CASES.append((name, inputs, fn))


# ---------------------------------------------------------------- elementwise
case('add_broadcast', [R(2, 3), R(3)], lambda a, b: a + b)
case('add_alpha', [R(2, 3), R(2, 1)], lambda a, b: torch.add(a, b, alpha=0.5))
case('sub_broadcast', [R(4, 1), R(1, 3)], lambda a, b: a - b)
case('mul_broadcast', [R(2, 1, 3), R(4, 1)], lambda a, b: a * b)
case('div_broadcast', [R(2, 3), P(3)], lambda a, b: a / b)
case('pow_tensor', [P(2, 3), R(2, 3)], lambda a, b: a ** b)
case('pow_scalar', [R(2, 3)], lambda a: a ** 3)
case('neg', [R(5)], lambda a: -a)
case('exp', [R(2, 3)], torch.exp)
case('log', [P(2, 3)], torch.log)
case('log1p', [P(2, 3)], torch.log1p)
case('expm1', [R(2, 3)], torch.expm1)
case('sqrt', [P(2, 3)], torch.sqrt)
case('rsqrt', [P(2, 3)], torch.rsqrt)
case('abs', [R(2, 3)], torch.abs)
case('sign', [R(2, 3)], torch.sign)
case('sin', [R(2, 3)], torch.sin)
case('cos', [R(2, 3)], torch.cos)
case('tanh', [R(2, 3)], torch.tanh)
case('sigmoid', [R(2, 3)], torch.sigmoid)
case('relu', [R(3, 4)], torch.relu)
case('leaky_relu', [R(3, 4)], lambda a: F.leaky_relu(a, 0.1))
case('gelu', [R(3, 4)], F.gelu)
case('gelu_tanh', [R(3, 4)], lambda a: F.gelu(a, approximate='tanh'))
case('silu', [R(3, 4)], F.silu)
case('swiglu', [R(3, 4), R(3, 4)], lambda g, u: F.silu(g) * u)
case('softplus', [R(3, 4)], lambda a: F.softplus(a, beta=2))
case('erf', [R(3, 4)], torch.erf)
case('maximum', [R(3, 4), R(4)], torch.maximum)
case('minimum', [R(3, 4), R(3, 1)], torch.minimum)
case('where', [R(3, 4), R(3, 4), R(4)], lambda c, a, b: torch.where(c > 0, a, b))
case('clamp', [R(3, 4)], lambda a: torch.clamp(a, -0.5, 0.7))
case('round', [R(3, 4)], lambda a: torch.round(a * 3))
case('floor', [R(3, 4)], lambda a: torch.floor(a * 3))

# ---------------------------------------------------------------- reductions
case('sum_all', [R(2, 3, 4)], lambda a: a.sum())
case('sum_dims_keepdim', [R(2, 3, 4)], lambda a: a.sum(dim=(0, 2), keepdim=True))
case('mean_dim', [R(2, 3, 4)], lambda a: a.mean(dim=1))
case('var_dim', [R(3, 5)], lambda a: a.var(dim=1))
case('var_correction0', [R(3, 5)], lambda a: a.var(dim=0, correction=0) if hasattr(torch.Tensor, 'var') else None)
case('std_all', [R(3, 5)], lambda a: a.std())
case('amax_dim', [R(3, 5)], lambda a: a.amax(dim=1))
case('amin_dims', [R(2, 3, 4)], lambda a: a.amin(dim=(0, 2), keepdim=True))
case('max_dim_values', [R(3, 5)], lambda a: a.max(dim=1).values)
case('min_dim_values', [R(3, 5)], lambda a: a.min(dim=0, keepdim=True).values)
case('logsumexp', [R(3, 5)], lambda a: torch.logsumexp(a, dim=1))
case('norm_2', [R(3, 5)], lambda a: torch.linalg.vector_norm(a, 2, dim=1))
case('norm_1', [R(3, 5)], lambda a: torch.linalg.vector_norm(a, 1))
case('norm_3_keepdim', [R(3, 5)], lambda a: torch.linalg.vector_norm(a, 3, dim=0, keepdim=True))

# ---------------------------------------------------------------- movement and shape
case('permute', [R(2, 3, 4)], lambda a: a.permute(2, 0, 1) * torch.arange(24.).reshape(4, 2, 3))
case('transpose_reshape', [R(2, 3, 4)], lambda a: a.transpose(0, 2).reshape(4, 6))
case('expand', [R(3, 1)], lambda a: a.expand(2, 3, 4))
case('narrow', [R(4, 5)], lambda a: a.narrow(1, 1, 3))
case('slice_step', [R(4, 7)], lambda a: a[:, 1::2])
case('select', [R(4, 5)], lambda a: a.select(0, 2))
case('cat', [R(2, 3), R(4, 3)], lambda a, b: torch.cat([a, b], 0))
case('stack', [R(2, 3), R(2, 3)], lambda a, b: torch.stack([a, b], 1))
case('split_second', [R(5, 4)], lambda a: torch.split(a, 2, dim=0)[1])
case('chunk_last', [R(3, 7)], lambda a: torch.chunk(a, 3, dim=1)[2])
case('pad', [R(2, 3, 4)], lambda a: F.pad(a, (1, 2, 0, 1)))
case('triu', [R(4, 4)], lambda a: torch.triu(a, 1))
case('tril', [R(3, 5)], lambda a: torch.tril(a, -1))
case('repeat', [R(2, 3)], lambda a: a.repeat(2, 1, 2))
case('repeat_interleave', [R(2, 3)], lambda a: torch.repeat_interleave(a, 2, dim=1))
case('flip', [R(3, 4)], lambda a: torch.flip(a, [0, 1]))
case('roll', [R(3, 4)], lambda a: torch.roll(a, 1, 1))

# ---------------------------------------------------------------- indexing
case('gather', [R(3, 4), C([[0, 3], [1, 1], [2, 0]], 'int32')], lambda a, i: torch.gather(a, 1, i.long()))
case('scatter_add', [R(3, 4), C([[0, 3], [1, 1], [2, 0]], 'int32'), R(3, 2)], lambda a, i, s: torch.scatter_add(a, 1, i.long(), s))
case('index_select', [R(4, 3), C([2, 0, 2], 'int32')], lambda a, i: torch.index_select(a, 0, i.long()))
case('embedding', [C([[1, 3], [0, 1]], 'int32'), R(4, 3)], lambda i, w: F.embedding(i.long(), w))
case('masked_fill', [R(3, 4), R(3, 4)], lambda a, m: a.masked_fill(m > 0, -1.5))

# ---------------------------------------------------------------- linear algebra and convolution
case('matmul_2d', [R(3, 4), R(4, 5)], torch.matmul)
case('matmul_batched_broadcast', [R(2, 1, 3, 4), R(3, 4, 2)], torch.matmul)
case('matmul_1d_2d', [R(4), R(4, 3)], torch.matmul)
case('matmul_2d_1d', [R(3, 4), R(4)], torch.matmul)
case('matmul_1d_1d', [R(4), R(4)], torch.matmul)
case('linear', [R(2, 5), R(3, 5), R(3)], F.linear)
case('outer', [R(3), R(4)], torch.outer)
case('einsum_bij_bjk', [R(2, 3, 4), R(2, 4, 5)], lambda a, b: torch.einsum('bij,bjk->bik', a, b))
case('einsum_ij_kj', [R(3, 4), R(5, 4)], lambda a, b: torch.einsum('ij,kj->ik', a, b))
case('conv2d', [R(2, 3, 6, 6), R(4, 3, 3, 3), R(4)], lambda x, w, b: F.conv2d(x, w, b))
case('conv2d_stride_pad_dil', [R(1, 2, 7, 7), R(3, 2, 3, 3)], lambda x, w: F.conv2d(x, w, stride=2, padding=1, dilation=2))
case('conv2d_groups', [R(2, 4, 5, 5), R(6, 2, 3, 3), R(6)], lambda x, w, b: F.conv2d(x, w, b, padding=1, groups=2))
case('max_pool2d', [R(2, 3, 6, 6)], lambda x: F.max_pool2d(x, 2))
case('max_pool2d_stride_pad', [R(1, 2, 7, 7)], lambda x: F.max_pool2d(x, 3, stride=2, padding=1))
case('avg_pool2d', [R(2, 3, 6, 6)], lambda x: F.avg_pool2d(x, 2))
case('avg_pool2d_pad', [R(1, 2, 5, 5)], lambda x: F.avg_pool2d(x, 3, stride=2, padding=1))
case('upsample_nearest', [R(1, 2, 3, 3)], lambda x: F.interpolate(x, scale_factor=2, mode='nearest'))

# ---------------------------------------------------------------- nn ops and losses
case('softmax', [R(3, 5)], lambda a: torch.softmax(a, 1))
case('softmax_dim0', [R(3, 5)], lambda a: torch.softmax(a, 0))
case('log_softmax', [R(3, 5)], lambda a: torch.log_softmax(a, 1))
case('layer_norm', [R(3, 6), R(6), R(6)], lambda x, w, b: F.layer_norm(x, (6,), w, b))
case('layer_norm_2d', [R(2, 3, 4)], lambda x: F.layer_norm(x, (3, 4)))
case('rms_norm', [R(3, 6), R(6)], lambda x, w: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w)
case('group_norm', [R(2, 6, 3, 3), R(6), R(6)], lambda x, w, b: F.group_norm(x, 3, w, b))
case('cross_entropy', [R(4, 5), C([1, 0, 4, 2], 'int32')], lambda x, t: F.cross_entropy(x, t.long()))
case('cross_entropy_ignore_smooth', [R(4, 5), C([1, -100, 4, 2], 'int32')], lambda x, t: F.cross_entropy(x, t.long(), ignore_index=-100, label_smoothing=0.1))
case('cross_entropy_sum', [R(3, 4, 2), C([[1, 0], [3, 3], [2, 0]], 'int32')], lambda x, t: F.cross_entropy(x, t.long(), reduction='sum'))
case('cross_entropy_probs', [R(3, 4), P(3, 4)], lambda x, p: F.cross_entropy(x, p / p.sum(1, keepdim=True)))
case('nll_loss', [R(4, 5), C([1, 0, 4, 2], 'int32')], lambda x, t: F.nll_loss(x, t.long()))
case('mse_loss', [R(3, 4), R(3, 4)], F.mse_loss)
case('l1_loss', [R(3, 4), R(3, 4)], F.l1_loss)
case('kl_div', [R(3, 4), P(3, 4)], lambda x, t: F.kl_div(F.log_softmax(x, 1), t / t.sum(1, keepdim=True), reduction='batchmean'))
case('bce_with_logits', [R(3, 4), P(3, 4)], lambda x, y: F.binary_cross_entropy_with_logits(x, y / 2.4))

# ---------------------------------------------------------------- the rest of the op library
case('ceil', [R(3, 4)], lambda a: torch.ceil(a * 3))
case('trunc', [R(3, 4)], lambda a: torch.trunc(a * 3))
case('reciprocal', [P(3, 4)], torch.reciprocal)
case('square', [R(3, 4)], torch.square)
case('elu', [R(3, 4)], F.elu)
case('squeeze_unsqueeze_flatten', [R(2, 1, 3)], lambda a: a.squeeze(1).unsqueeze(0).flatten())
case('clone_contiguous', [R(3, 4)], lambda a: a.t().contiguous().clone())
case('unbind_first', [R(3, 4)], lambda a: torch.unbind(a, 1)[0])
case('take', [R(3, 4), C([0, 5, 11, 5], 'int32')], lambda a, i: torch.take(a, i.long()))
case('index_add', [R(4, 3), C([0, 2, 0], 'int32'), R(3, 3)], lambda a, i, s: torch.index_add(a, 0, i.long(), s))
case('mm', [R(3, 4), R(4, 2)], torch.mm)
case('bmm', [R(2, 3, 4), R(2, 4, 5)], torch.bmm)
case('dot', [R(5), R(5)], torch.dot)
case('unfold', [R(1, 2, 5, 5)], lambda x: F.unfold(x, 3, padding=1, stride=2))
case('fold', [R(1, 8, 9)], lambda x: F.fold(x, (4, 4), 2, stride=1))
case('softmin', [R(3, 5)], lambda a: F.softmin(a, 1))
case('huber_loss', [R(3, 4), R(3, 4)], lambda a, b: F.huber_loss(a * 2, b, delta=0.7))
case('smooth_l1_loss', [R(3, 4), R(3, 4)], lambda a, b: F.smooth_l1_loss(a * 2, b, beta=0.5))
case('binary_cross_entropy', [R(3, 4), P(3, 4)], lambda x, y: F.binary_cross_entropy(torch.sigmoid(x), y / 2.4))
case('gelu_of_matmul_chain', [R(2, 3), R(3, 3)], lambda a, w: F.gelu(a @ w).logsumexp(1))


def make(spec, rng):
    kind = spec[0]
    if kind == 'randn':
        return torch.tensor(rng.standard_normal(spec[1]), requires_grad=True)
    if kind == 'pos':
        return torch.tensor(rng.uniform(0.3, 2.3, spec[1]), requires_grad=True)
    if kind == 'int':
        return torch.tensor(rng.integers(spec[2], spec[3], spec[1]), dtype=torch.int32)
    data, dtype, grad = spec[1], spec[2], spec[3]
    t = torch.tensor(data, dtype=torch.int32 if dtype == 'int32' else torch.float64)
    return t.requires_grad_(grad)


def dump(t):
    return {'shape': list(t.shape), 'dtype': 'int32' if t.dtype in (torch.int32, torch.int64) else 'float64',
            'data': [float(v) if t.is_floating_point() else int(v) for v in t.detach().reshape(-1).tolist()]}


def _or_zeros(g, x):
    return torch.zeros_like(x) if g is None else g


def main():
    out = {'torch': torch.__version__, 'cases': []}
    for k, (name, specs, fn) in enumerate(CASES):
        rng = np.random.default_rng(1000 + k)
        xs = [make(s, rng) for s in specs]
        y = fn(*xs)
        v = torch.tensor(rng.standard_normal(list(y.shape)))
        grads = torch.autograd.grad((y * v).sum(), [x for x in xs if x.requires_grad], allow_unused=True)
        it = iter(grads)
        grad_of = lambda x: next(it)
        out['cases'].append({
            'name': name,
            'inputs': [dict(dump(x), grad=x.requires_grad) for x in xs],
            'output': dump(y),
            'v': dump(v)['data'],
            # an input used only through a comparison gets no gradient: PyTorch says None, we say zeros
            'grads': [dump(_or_zeros(grad_of(x), x)) if x.requires_grad else None for x in xs],
        })
    with open(OUT + '.tmp', 'w') as f:
        json.dump(out, f, separators=(',', ':'))
    os.replace(OUT + '.tmp', OUT)
    print(f'wrote {len(out["cases"])} cases to {os.path.relpath(OUT)}')


if __name__ == '__main__':
    main()
