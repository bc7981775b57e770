#!/usr/bin/env python3
"""PyTorch CPU figures for `npm run bench`, printed as one JSON object on stdout.
Usage: /usr/bin/python3 scripts/bench/torch_bench.py dispatch|matmul|mlp|llama [args]
(matmul takes a JSON list of shape specs and an optional time budget per shape in seconds)
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


def matmul(shapes, budget):
    """GFLOP/s per shape spec of scripts/bench/matmul.ts ({name, batch, m, k, n, transposeA?,
    transposeB?}); a transposed operand is a .transpose view of its stored form, which torch
    hands to BLAS as a transpose flag (x @ w.t(); batched, torch.matmul runs bmm)."""
    out = {}
    for s in shapes:
        lead = (s['batch'],) if s['batch'] > 1 else ()
        m, k, n = s['m'], s['k'], s['n']
        a = torch.randn(*lead, k, m).transpose(-1, -2) if s.get('transposeA') else torch.randn(*lead, m, k)
        b = torch.randn(*lead, n, k).transpose(-1, -2) if s.get('transposeB') else torch.randn(*lead, k, n)

        def mm():
            return a @ b

        reps = max(5, min(50, int(budget / max(timeit(mm, 1), 1e-5))))
        out[s['name']] = 2 * s['batch'] * m * k * n / timeit(mm, reps) / 1e9
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

    epoch(False)  # warm-up, both forms, as the qgrad side does
    epoch(True)
    return {'fp32': statistics.median([epoch(False) for _ in range(reps)]), 'W4A4 LSQ': statistics.median([epoch(True) for _ in range(reps)])}


def llama(steps):
    """The tiny Llama of scripts/bench/llama.ts, written in plain torch (HF LlamaForCausalLM layout)."""
    import torch.nn as nn
    import torch.nn.functional as F
    dim, n_layers, n_heads, n_kv, hidden, vocab, seq, batch = 128, 4, 4, 2, 384, 256, 128, 16
    hd = dim // n_heads

    def fq_w(w, s):  # 4-bit per-group(32) LSQ on the weight's input dim
        o, i = w.shape
        g = w.reshape(o * i // 32, 32)
        return torch._fake_quantize_learnable_per_channel_affine(g, s, torch.zeros_like(s), 0, -8, 7, 1.0 / (32 * 7) ** 0.5).reshape(o, i)

    def fq_a(x):  # 8-bit per-token dynamic absmax, straight-through
        s = x.detach().abs().amax(-1, keepdim=True).clamp_min(1e-8) / 127
        return x + ((torch.round(x / s).clamp(-128, 127) * s) - x).detach()

    class QLinear(nn.Linear):
        def __init__(self, i, o, quant):
            super().__init__(i, o, bias=False)
            self.quant = quant
            if quant:
                self.s = nn.Parameter(torch.full((o * i // 32,), 0.01))

        def forward(self, x):
            if not self.quant:
                return F.linear(x, self.weight)
            return F.linear(fq_a(x), fq_w(self.weight, self.s))

    def rope(x):
        t = x.shape[-2]
        inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
        f = torch.outer(torch.arange(t).float(), inv)
        emb = torch.cat([f, f], -1)
        x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
        return x * emb.cos() + torch.cat([-x2, x1], -1) * emb.sin()

    class Block(nn.Module):
        def __init__(self, quant):
            super().__init__()
            self.q, self.k, self.v, self.o = QLinear(dim, dim, quant), QLinear(dim, n_kv * hd, quant), QLinear(dim, n_kv * hd, quant), QLinear(dim, dim, quant)
            self.gate, self.up, self.down = QLinear(dim, hidden, quant), QLinear(dim, hidden, quant), QLinear(hidden, dim, quant)
            self.w1, self.w2 = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.ones(dim))

        def norm(self, x, w):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w

        def forward(self, x):
            b, t, _ = x.shape
            h = self.norm(x, self.w1)
            q = rope(self.q(h).view(b, t, n_heads, hd).transpose(1, 2))
            k = rope(self.k(h).view(b, t, n_kv, hd).transpose(1, 2)).repeat_interleave(n_heads // n_kv, 1)
            v = self.v(h).view(b, t, n_kv, hd).transpose(1, 2).repeat_interleave(n_heads // n_kv, 1)
            att = (q @ k.transpose(-1, -2)) / hd ** 0.5
            att = att.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float('-inf')).softmax(-1)
            a = att @ v
            x = x + self.o(a.transpose(1, 2).reshape(b, t, dim))
            h = self.norm(x, self.w2)
            return x + self.down(F.silu(self.gate(h)) * self.up(h))

    class Model(nn.Module):
        def __init__(self, quant):
            super().__init__()
            self.emb = nn.Embedding(vocab, dim)
            self.blocks = nn.ModuleList([Block(quant) for _ in range(n_layers)])
            self.wn = nn.Parameter(torch.ones(dim))
            self.head = QLinear(dim, vocab, quant)

        def forward(self, idx):
            x = self.emb(idx)
            for b in self.blocks:
                x = b(x)
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.wn
            return self.head(x)

    def stepper(quant):
        torch.manual_seed(0)
        m = Model(quant)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        idx = torch.randint(0, vocab, (batch, seq + 1))
        x, y = idx[:, :-1], idx[:, 1:]

        def step():
            t0 = time.perf_counter()
            loss = F.cross_entropy(m(x).reshape(-1, vocab), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
            return (time.perf_counter() - t0) * 1000
        return step

    # fp32 and QAT steps alternate (one warm-up step each), as the qgrad side runs them
    # (scripts/bench/llama.ts): one after the other, drift on this shared machine skews the ratio
    fp, q = stepper(False), stepper(True)
    fp()
    q()
    tf, tq = [], []
    for _ in range(steps):
        tf.append(fp())
        tq.append(q())
    return {'fp32': statistics.median(tf), 'W4g32 A8/token LSQ': statistics.median(tq),
            'QAT \u2212 fp32 ms (paired)': statistics.median([b - a for a, b in zip(tf, tq)])}


def quant(rows, cols, reps):
    x = torch.randn(rows, cols, requires_grad=True)
    g = torch.randn(rows, cols)
    out = {}
    for label, per_channel in (('per-tensor', False), ('per-channel', True)):
        n = rows if per_channel else 1
        s = torch.full((n,), 0.05, requires_grad=True)
        z = torch.zeros(n, requires_grad=True)
        gf = 1.0 / ((rows * cols / n) * 7) ** 0.5

        def fq():
            if per_channel:
                return torch._fake_quantize_learnable_per_channel_affine(x, s, z, 0, -8, 7, gf)
            return torch._fake_quantize_learnable_per_tensor_affine(x, s, z, -8, 7, gf)

        def fwd():
            with torch.no_grad():
                fq()

        def both():
            torch.autograd.grad(fq(), [x, s, z], g)

        out[f'{label} fwd'] = rows * cols / timeit(fwd, reps) / 1e6
        out[f'{label} fwd+bwd'] = rows * cols / timeit(both, reps) / 1e6
    return out


if __name__ == '__main__':
    what = sys.argv[1]
    if what == 'dispatch':
        print(json.dumps(dispatch()))
    elif what == 'matmul':
        print(json.dumps(matmul(json.loads(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 0.4)))
    elif what == 'quant':
        print(json.dumps(quant(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
    elif what == 'llama':
        print(json.dumps(llama(int(sys.argv[2]))))
    elif what == 'mlp':
        print(json.dumps(mlp(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        raise SystemExit(f'unknown section {what}')
