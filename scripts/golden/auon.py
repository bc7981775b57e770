"""AuON golden fixture, written from the paper's description (Maity, "AuON: A Linear-time Alternative
to Semi-Orthogonal Momentum Updates", §3.1) and, for the packaged variant, the formulas recorded in
../shared/notes/methods-2.md §6; plain torch in float64, no AuON code imported.

Paper: m <- beta m + (1 - beta) g; u = (1 - beta) g + beta m (Nesterov); X = u / (||u||_F + 1e-7);
r = sqrt(mean cosh^2(X)); U = X / (r + 1e-8); W <- W (1 - lr wd) - lr sqrt(max(1, rows/cols)) U.
Packaged: r = sqrt(mean cosh^2(gamma u / (||u||_F + 1e-7))), update = u / (r + 1e-8), no shape factor.

Run: python3 scripts/golden/auon.py  (writes packages/nn/test/fixtures/auon.json)
"""
import json
import math
import os

import torch

torch.manual_seed(0)
OUT = os.path.join(os.path.dirname(__file__), '..', '..', 'packages', 'nn', 'test', 'fixtures', 'auon.json')


def run(shape, variant, lr, beta, wd, gamma, steps=3):
    w = torch.randn(*shape, dtype=torch.float64)
    grads = [torch.randn(*shape, dtype=torch.float64) for _ in range(steps)]
    w0 = w.clone()
    m = torch.zeros_like(w)
    traj = []
    for g in grads:
        m = beta * m + (1 - beta) * g
        u = (1 - beta) * g + beta * m
        if variant == 'paper':
            x = u / (u.norm() + 1e-7)
            r = torch.sqrt(torch.mean(torch.cosh(x) ** 2))
            upd = x / (r + 1e-8) * math.sqrt(max(1.0, shape[0] / shape[1]))
        else:
            r = torch.sqrt(torch.mean(torch.cosh(gamma * u / (u.norm() + 1e-7)) ** 2))
            upd = u / (r + 1e-8)
        w = w * (1 - lr * wd) - lr * upd
        traj.append(w.flatten().tolist())
    return {'shape': list(shape), 'variant': variant, 'lr': lr, 'momentum': beta, 'weightDecay': wd, 'gamma': gamma,
            'w0': w0.flatten().tolist(), 'grads': [g.flatten().tolist() for g in grads], 'trajectory': traj}


cases = [run((4, 6), 'paper', 0.055, 0.95, 0.0, 1.5), run((6, 4), 'paper', 0.055, 0.95, 0.1, 1.5),
         run((5, 3), 'packaged', 0.08, 0.95, 0.01, 1.5)]
with open(OUT, 'w') as f:
    json.dump({'torch': torch.__version__, 'cases': cases}, f, indent=1)
print('wrote', os.path.normpath(OUT))
