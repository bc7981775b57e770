#!/usr/bin/env python3
"""PyTorch CPU figures for `npm run bench`, printed as one JSON object on stdout.
Usage: /usr/bin/python3 scripts/bench/torch_bench.py dispatch|matmul|mlp|llama [args]
"""
import json
import statistics
import sys
import time

import torch

torch.set_num_threads(2)


def timeit(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def dispatch():
    a = torch.tensor([1., 2, 3, 4])
    b = torch.tensor([5., 6, 7, 8])
    ag = a.clone().requires_grad_()
    n = 20000

    def plain():
        for _ in range(n):
            torch.add(a, b)

    def rec():
        for _ in range(n):
            torch.add(ag, b)

    x = torch.randn(64, 64, requires_grad=True)
    w = torch.randn(64, 64, requires_grad=True)

    def mm():
        for _ in range(100):
            (x @ w).sum().backward()

    return {'add_us': timeit(plain, 5) / n * 1e6, 'add_grad_us': timeit(rec, 5) / n * 1e6, 'matmul64_fwd_bwd_us': timeit(mm, 5) / 100 * 1e6}


def matmul(sizes):
    out = {}
    for n in sizes:
        a = torch.randn(n, n)
        b = torch.randn(n, n)
        reps = max(5, min(50, int(0.4 / max(timeit(lambda: a @ b, 1), 1e-5))))
        s = timeit(lambda: a @ b, reps)
        out[str(n)] = 2 * n ** 3 / s / 1e9
    return out


def mlp(d, n, reps):
    import numpy as np
    x = torch.from_numpy(np.fromfile(f'{d}/x.f32', dtype=np.float32).reshape(n, 784))
    y = torch.from_numpy(np.fromfile(f'{d}/y.i32', dtype=np.int32).astype(np.int64))

    def epoch(quant):
        torch.manual_seed(0)
        layers = [torch.nn.Linear(784, 256), torch.nn.Linear(256, 256), torch.nn.Linear(256, 10)]
        scales = [torch.nn.Parameter(torch.tensor([0.02 if i % 2 else 0.1])) for i in range(6)]
        params = [p for l in layers for p in l.parameters()] + (scales if quant else [])
        opt = torch.optim.Adam(params, lr=1e-3)
        zp = torch.tensor([0], dtype=torch.int32)

        def fq(t, s, lo, hi):
            return torch._fake_quantize_learnable_per_tensor_affine(t, s, zp.float(), lo, hi, 1.0 / (t.numel() * hi) ** 0.5)

        t0 = time.perf_counter()
        for s in range(0, n - 63, 64):
            h = x[s:s + 64]
            for i, l in enumerate(layers):
                w = l.weight
                if quant:
                    h = fq(h, scales[2 * i], 0, 15)
                    w = fq(w, scales[2 * i + 1], -8, 7)
                h = torch.nn.functional.linear(h, w, l.bias)
                if i < 2:
                    h = torch.relu(h)
            loss = torch.nn.functional.cross_entropy(h, y[s:s + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return (time.perf_counter() - t0) * 1000

    epoch(False)  # warm-up
    return {'fp32': statistics.median([epoch(False) for _ in range(reps)]), 'W4A4 LSQ': statistics.median([epoch(True) for _ in range(reps)])}


if __name__ == '__main__':
    what = sys.argv[1]
    if what == 'dispatch':
        print(json.dumps(dispatch()))
    elif what == 'matmul':
        print(json.dumps(matmul([int(s) for s in sys.argv[2].split(',')])))
    elif what == 'mlp':
        print(json.dumps(mlp(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        raise SystemExit(f'unknown section {what}')
