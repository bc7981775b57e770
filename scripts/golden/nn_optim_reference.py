"""Reference trajectories for packages/nn/test/optim.test.ts: three steps of torch.optim's SGD,
Adam and AdamW, and of Keller Jordan's Muon update (in float64 instead of bfloat16), from fixed
parameters and gradients. Prints JSON; the test inlines these numbers.

Run: /usr/bin/python3 scripts/golden/nn_optim_reference.py   (torch 1.13)
"""
import torch, json
torch.set_default_dtype(torch.float64)
p0 = torch.tensor([[0.5, -1.0, 2.0], [0.1, 0.3, -0.7]])
grads = [torch.tensor([[0.2, -0.4, 1.0], [0.05, -0.3, 0.6]]), torch.tensor([[-0.1, 0.5, 0.3], [0.2, 0.1, -0.2]]), torch.tensor([[0.3, 0.3, -0.9], [-0.4, 0.0, 0.25]])]
out = {}
def run(name, ctor):
    p = p0.clone().requires_grad_()
    opt = ctor([p])
    for g in grads:
        p.grad = g.clone(); opt.step()
    out[name] = p.detach().flatten().tolist()
run('sgd', lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01))
run('nesterov', lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01))
run('adam', lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1))
run('adamAms', lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.9), eps=1e-6, amsgrad=True))
run('adamw', lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1))
# Keller Jordan Muon (fp64 instead of bf16)
def ns(G, steps=5):
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.clone()
    if G.size(-2) > G.size(-1): X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.mT; B = b * A + c * A @ A; X = a * X + B @ X
    if G.size(-2) > G.size(-1): X = X.mT
    return X
for shape_name, P in [('muonWide', p0), ('muonTall', p0.t().contiguous())]:
    p = P.clone(); m = torch.zeros_like(p)
    for g in grads:
        g = g.clone() if shape_name == 'muonWide' else g.t().contiguous()
        m.lerp_(g, 1 - 0.95); u = g.lerp(m, 0.95)
        u = ns(u) * max(1, u.size(-2) / u.size(-1)) ** 0.5
        p.mul_(1 - 0.02 * 0.1); p.add_(u, alpha=-0.02)
    out[shape_name] = p.flatten().tolist()
print(json.dumps(out))
