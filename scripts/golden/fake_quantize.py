#!/usr/bin/env python3
"""Writes packages/core/test/fixtures/fake_quantize.json: inputs, outputs and the gradients of
x, scale and zero_point of PyTorch's learnable fake quantization (what qgrad's
`fakeQuantize(..., { estimator: 'lsq' })` must reproduce):
  torch._fake_quantize_learnable_per_tensor_affine(x, scale, zero_point, qmin, qmax, grad_factor)
  torch._fake_quantize_learnable_per_channel_affine(x, scale, zero_point, axis, qmin, qmax, grad_factor)
PyTorch's backward kernels only accept float32, so every case is float32 (values stored exactly).
The upstream gradient is a fixed random tensor v (y.backward(v)).

Run with Debian's PyTorch:  /usr/bin/python3 scripts/golden/fake_quantize.py
"""
import json
import math
import os

import torch

OUT = os.path.join(os.path.dirname(__file__), '..', '..', 'packages', 'core', 'test', 'fixtures', 'fake_quantize.json')
torch.manual_seed(0)


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def run(name, shape, scale, zero_point, qmin, qmax, grad_factor, axis=None, spread=3.0, note=None):
    x = (torch.randn(*shape) * spread).float().requires_grad_()
    s = torch.tensor(scale, dtype=torch.float32).requires_grad_()
    z = torch.tensor(zero_point, dtype=torch.float32).requires_grad_()
    if axis is None:
        y = torch._fake_quantize_learnable_per_tensor_affine(x, s, z, qmin, qmax, grad_factor)
    else:
        y = torch._fake_quantize_learnable_per_channel_affine(x, s, z, axis, qmin, qmax, grad_factor)
    v = torch.randn(*shape).float()
    y.backward(v)
    case = {
        'name': name, 'shape': list(shape), 'axis': axis, 'qmin': qmin, 'qmax': qmax, 'gradFactor': grad_factor,
        'x': flat(x), 'scale': flat(s), 'zeroPoint': flat(z), 'v': flat(v),
        'y': flat(y), 'dx': flat(x.grad), 'dscale': flat(s.grad), 'dzeroPoint': flat(z.grad),
    }
    if note:
        case['note'] = note
    return case


CASES = [
    run('per-tensor uint8, zero point 10.3 rounds to 10', [4, 6], [0.05], [10.3], 0, 255, 1.0),
    run('per-tensor signed 4-bit with LSQ grad factor', [5, 4], [0.3], [0.0], -8, 7, 1 / math.sqrt(20 * 7)),
    run('per-tensor zero point above qmax is clamped', [3, 7], [0.02], [300.0], 0, 255, 0.5, spread=4.0),
    run('per-tensor ternary grid', [2, 9], [0.7], [0.0], -1, 1, 1.0, spread=1.0),
    run('per-tensor zero point 2.5 (forward rounds half-even to 2)', [3, 5], [0.25], [2.5], 0, 15, 1.0,
        note='torch backward uses (int)(z + 0.5) = 3 while the forward uses nearbyint(z) = 2; qgrad uses 2 in both'),
    run('per-channel axis 0', [3, 5], [0.2, 0.05, 0.5], [0.2, 2.7, 5.1], 0, 15, 1.0, axis=0),
    run('per-channel axis 1 of a 3-d tensor', [2, 4, 3], [0.1, 0.3, 0.05, 1.0], [0.0, -1.0, 2.0, 0.0], -8, 7, 1 / math.sqrt(6 * 7), axis=1),
    run('per-channel last axis, 2-bit', [6, 2], [0.4, 0.9], [1.0, 2.0], 0, 3, 1.0, axis=1),
]

with open(OUT, 'w') as f:
    json.dump({'torch': torch.__version__, 'cases': CASES}, f, indent=None, separators=(',', ':'))
print(f'wrote {len(CASES)} cases to {os.path.normpath(OUT)}')
