"""Writes a PEFT-layout LoRA adapter with plain torch (no `peft`, no `safetensors` installed) and
the outputs it gives on an NF4 base, for packages/quant/test/lora/peft.test.ts.

The model is fc1 = Linear(64, 16) -> ReLU -> fc2 = Linear(16, 8). Each Linear's weight is put on
NF4 the way QLoRA's blockwise quantizer does (flatten, blocks of 64, absmax per block, nearest of
the 16 NormalFloat levels), written here in torch from that description; the adapter adds
(lora_alpha / r) * B @ A. Dropout is off (eval), as PEFT's forward at inference.

Fixture directory packages/quant/test/fixtures/lora-peft/:
  base.safetensors            fc1.weight, fc1.bias, fc2.weight, fc2.bias (float, before NF4)
  adapter_model.safetensors   base_model.model.fc{1,2}.lora_A.weight [r, in], .lora_B.weight [out, r]
  adapter_config.json         PEFT's LoraConfig fields (r, lora_alpha, target_modules, ...)
  expected.safetensors        x [5, 64], y [5, 8], and the gradients of sum(y * proj) in x and
                              the adapters (grad.x, grad.fc1.lora_A, ...)

Run: /usr/bin/python3 scripts/golden/lora_peft.py
"""
import json
import os
import struct

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "packages", "quant", "test", "fixtures", "lora-peft")

NF4 = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
], dtype=torch.float32)


def nf4(w, block=64):
    """Blockwise NF4 quantize-dequantize of w (flattened blocks of `block`)."""
    v = w.reshape(-1, block)
    absmax = v.abs().amax(dim=1, keepdim=True)
    u = v / absmax
    idx = (u.unsqueeze(-1) - NF4).abs().argmin(dim=-1)
    return (NF4[idx] * absmax).reshape(w.shape)


def save(path, tensors):
    header = {"__metadata__": {"format": "pt"}}
    data = b""
    for name, t in tensors.items():
        payload = t.detach().contiguous().to(torch.float32).numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


torch.manual_seed(14)
r, alpha = 4, 8
fc1 = torch.nn.Linear(64, 16)
fc2 = torch.nn.Linear(16, 8)
A1, B1 = torch.randn(r, 64) * 0.1, torch.randn(16, r) * 0.1
A2, B2 = torch.randn(r, 16) * 0.1, torch.randn(8, r) * 0.1
x = torch.randn(5, 64)


def lora_linear(x, lin, A, B):
    return F.linear(x, nf4(lin.weight), lin.bias) + (alpha / r) * F.linear(F.linear(x, A), B)


with torch.no_grad():
    y = lora_linear(torch.relu(lora_linear(x, fc1, A1, B1)), fc2, A2, B2)

# gradients of sum(y * proj) in the adapters and the input, as a fine-tune's backward gives them
# (drawn after the tensors above, so those stay what earlier runs wrote)
proj = torch.randn(5, 8)
leaves = [t.clone().requires_grad_(True) for t in (x, A1, B1, A2, B2)]
gx, gA1, gB1, gA2, gB2 = leaves
(lora_linear(torch.relu(lora_linear(gx, fc1, gA1, gB1)), fc2, gA2, gB2) * proj).sum().backward()
grads = {"proj": proj, "grad.x": gx.grad, "grad.fc1.lora_A": gA1.grad, "grad.fc1.lora_B": gB1.grad, "grad.fc2.lora_A": gA2.grad, "grad.fc2.lora_B": gB2.grad}

os.makedirs(OUT, exist_ok=True)
save(os.path.join(OUT, "base.safetensors"), {"fc1.weight": fc1.weight, "fc1.bias": fc1.bias, "fc2.weight": fc2.weight, "fc2.bias": fc2.bias})
save(os.path.join(OUT, "adapter_model.safetensors"), {
    "base_model.model.fc1.lora_A.weight": A1, "base_model.model.fc1.lora_B.weight": B1,
    "base_model.model.fc2.lora_A.weight": A2, "base_model.model.fc2.lora_B.weight": B2,
})
config = {
    "peft_type": "LORA", "r": r, "lora_alpha": alpha, "lora_dropout": 0.0, "target_modules": ["fc1", "fc2"],
    "bias": "none", "fan_in_fan_out": False, "init_lora_weights": True, "task_type": None,
    "base_model_name_or_path": None, "inference_mode": True, "modules_to_save": None,
}
with open(os.path.join(OUT, "adapter_config.json"), "w") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
save(os.path.join(OUT, "expected.safetensors"), {"x": x, "y": y, **grads})
print(f"wrote {OUT}: y[0, :3] = {y[0, :3].tolist()}")
