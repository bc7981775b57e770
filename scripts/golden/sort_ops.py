"""Golden values for core's ops/sort.ts (sort, topk, cumsum, prod, isclose) and their gradients.

Run with Debian's python3-torch: /usr/bin/python3 scripts/golden/sort_ops.py
Writes packages/core/test/fixtures/sort_ops.json (float64 inputs, no ties, so orders are unique).
"""
import json
import os

import torch

torch.manual_seed(0)
x = torch.tensor([[0.5, -1.25, 2.0, 0.0, 3.5], [1.5, -0.75, -2.5, 4.0, 0.25], [2.25, 1.0, -3.0, 0.75, -0.5]], dtype=torch.float64)
w = torch.tensor([[1.0, 2.0, -1.0, 0.5, 3.0], [-2.0, 1.5, 0.25, 1.0, -0.5], [0.75, -1.0, 2.0, 1.25, 0.5]], dtype=torch.float64)


def grad_of(fn):
    """Gradient of sum(fn(x) * weights) with respect to x: the first numel(fn(x)) weights, row-major."""
    xg = x.clone().requires_grad_(True)
    y = fn(xg)
    (y * w.flatten()[: y.numel()].reshape(y.shape)).sum().backward()
    return xg.grad.tolist()


cases = {}
for name, fn, idx in [
    ("sort_dim1", lambda t: torch.sort(t, dim=1).values, lambda: torch.sort(x, dim=1).indices),
    ("sort_dim0_desc", lambda t: torch.sort(t, dim=0, descending=True).values, lambda: torch.sort(x, dim=0, descending=True).indices),
    ("topk3_dim1", lambda t: torch.topk(t, 3, dim=1).values, lambda: torch.topk(x, 3, dim=1).indices),
    ("topk2_dim0_smallest", lambda t: torch.topk(t, 2, dim=0, largest=False).values, lambda: torch.topk(x, 2, dim=0, largest=False).indices),
    ("cumsum_dim1", lambda t: torch.cumsum(t, dim=1), None),
    ("cumsum_dim0", lambda t: torch.cumsum(t, dim=0), None),
    ("prod_dim1", lambda t: torch.prod(t, dim=1), None),
    ("prod_dim0", lambda t: torch.prod(t, dim=0), None),
]:
    cases[name] = {"value": fn(x).tolist(), "grad": grad_of(fn)}
    if idx is not None:
        cases[name]["indices"] = idx().tolist()

a = torch.tensor([1.0, 2.0, float("inf"), float("nan"), 1e-3, -float("inf")], dtype=torch.float64)
b = torch.tensor([1.0 + 1e-9, 2.1, float("inf"), float("nan"), 1.0000101e-3, float("inf")], dtype=torch.float64)
out = {
    "x": x.tolist(),
    "weights": w.tolist(),
    "cases": cases,
    "isclose": {"a": [str(v) for v in a.tolist()], "b": [str(v) for v in b.tolist()],
                "default": torch.isclose(a, b).tolist(), "equal_nan": torch.isclose(a, b, equal_nan=True).tolist()},
}
path = os.path.join(os.path.dirname(__file__), "../../packages/core/test/fixtures/sort_ops.json")
with open(path, "w") as f:
    json.dump(out, f)
    f.write("\n")
print("wrote", os.path.normpath(path), "torch", torch.__version__)
