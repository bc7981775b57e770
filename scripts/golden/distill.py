"""Logit-distillation golden fixture: the KD loss as PyTorch writes it (Hinton / the PyTorch KD
tutorial, also TernaryBERT's soft cross entropy at tau = 1 minus the teacher entropy), its
alpha-mix with cross entropy, and the gradient of the mix with respect to the student logits.
Plain torch in float64.

kd  = F.kl_div(F.log_softmax(s / tau, -1), F.softmax(t / tau, -1), reduction='batchmean') * tau**2
mix = (1 - alpha) * F.cross_entropy(s, y) + alpha * kd          (logits flattened to rows [N, C])

Run: python3 scripts/golden/distill.py  (writes packages/quant/test/fixtures/distill.json)
"""
import json
import os

import torch
import torch.nn.functional as F

torch.manual_seed(0)
OUT = os.path.join(os.path.dirname(__file__), '..', '..', 'packages', 'quant', 'test', 'fixtures', 'distill.json')


def case(shape, tau, alpha):
    s = (torch.randn(*shape, dtype=torch.float64) * 2).requires_grad_(True)
    t = torch.randn(*shape, dtype=torch.float64) * 2
    c = shape[-1]
    y = torch.randint(0, c, shape[:-1])
    rows_s, rows_t = s.reshape(-1, c), t.reshape(-1, c)
    kd = F.kl_div(F.log_softmax(rows_s / tau, -1), F.softmax(rows_t / tau, -1), reduction='batchmean') * tau ** 2
    mix = (1 - alpha) * F.cross_entropy(rows_s, y.reshape(-1)) + alpha * kd
    mix.backward()
    return {'shape': list(shape), 'temperature': tau, 'alpha': alpha, 'student': s.detach().flatten().tolist(),
            'teacher': t.flatten().tolist(), 'target': y.flatten().tolist(), 'kd': kd.item(), 'mix': mix.item(),
            'grad': s.grad.flatten().tolist()}


cases = [case((4, 5), 1.0, 0.5), case((3, 7), 4.0, 0.9), case((2, 3, 6), 2.0, 0.3)]
with open(OUT, 'w') as f:
    json.dump({'torch': torch.__version__, 'cases': cases}, f, indent=1)
print('wrote', os.path.normpath(OUT))
