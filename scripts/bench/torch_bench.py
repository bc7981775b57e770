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


if __name__ == '__main__':
    what = sys.argv[1]
    if what == 'dispatch':
        print(json.dumps(dispatch()))
    elif what == 'matmul':
        print(json.dumps(matmul([int(s) for s in sys.argv[2].split(',')])))
    else:
        raise SystemExit(f'unknown section {what}')
