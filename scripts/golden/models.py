"""PyTorch references for qgrad's model zoo: writes weights, inputs and expected outputs as
.safetensors fixtures under packages/nn/test/fixtures/ (read by packages/nn/test/models/*.test.ts).

The reference modules below are plain torch, written from Hugging Face's modeling_llama.py
(LlamaRMSNorm, LlamaRotaryEmbedding, rotate_half, repeat_kv, LlamaAttention, LlamaMLP) and
timm's VisionTransformer, because transformers is not installed; parameter names are the ones
qgrad's modules use (HF's for Llama), so one state dict drives both sides.

Fixtures:
  llama.safetensors       tiny untied Llama (GQA, theta 500000): weights, `_input.ids`, `_expected.logits`
  vit.safetensors         tiny ViT: weights, `_input.images`, `_expected.logits`
  attention.safetensors   qgrad MultiHeadAttention (GQA, RoPE, causal): weights, `_input.x`, `_expected.y`
  hf-llama-bf16/          HF directory (config.json + model.safetensors, BF16, tied head) + expected.safetensors
  hf-llama-f16/           HF directory (F16, untied head) + expected.safetensors

safetensors is not installed either: files are written with struct + json (little-endian).

Run: /usr/bin/python3 scripts/golden/models.py
"""
import json
import math
import os
import struct

import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
OUT = os.path.join(ROOT, "packages", "nn", "test", "fixtures")


# ---------------------------------------------------------------- safetensors writer
def save_safetensors(path, tensors, dtype=None):
    """tensors: name -> torch tensor; dtype forces 'F16' or 'BF16' for floating tensors."""
    header, chunks, offset = {"__metadata__": {"format": "pt", "producer": "scripts/golden/models.py"}}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        if t.dtype == torch.int32:
            code, raw = "I32", t.numpy().astype("<i4").tobytes()
        elif dtype == "F16":
            code, raw = "F16", t.to(torch.float16).numpy().astype("<f2").tobytes()
        elif dtype == "BF16":
            code, raw = "BF16", t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
        else:
            code, raw = "F32", t.to(torch.float32).numpy().astype("<f4").tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(chunks))
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")


# ---------------------------------------------------------------- Llama (HF modeling_llama.py)
class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


def rope_tables(head_dim, theta, t):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = torch.arange(t, dtype=torch.float32)[:, None] * inv_freq[None, :]  # [T, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [T, D]
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def repeat_kv(x, n_rep):
    b, h, t, d = x.shape
    if n_rep == 1:
        return x
    return x[:, :, None, :, :].expand(b, h, n_rep, t, d).reshape(b, h * n_rep, t, d)


def causal_attention(q, k, v):
    t = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


class LlamaAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        hd = c["hidden_size"] // c["num_attention_heads"]
        self.q_proj = nn.Linear(c["hidden_size"], c["num_attention_heads"] * hd, bias=False)
        self.k_proj = nn.Linear(c["hidden_size"], c["num_key_value_heads"] * hd, bias=False)
        self.v_proj = nn.Linear(c["hidden_size"], c["num_key_value_heads"] * hd, bias=False)
        self.o_proj = nn.Linear(c["num_attention_heads"] * hd, c["hidden_size"], bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        h, hkv = self.c["num_attention_heads"], self.c["num_key_value_heads"]
        hd = self.c["hidden_size"] // h
        q = self.q_proj(x).view(b, t, h, hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, hkv, hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, hkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        y = causal_attention(q, repeat_kv(k, h // hkv), repeat_kv(v, h // hkv))
        return self.o_proj(y.transpose(1, 2).reshape(b, t, h * hd))


class LlamaMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c["hidden_size"], c["intermediate_size"], bias=False)
        self.up_proj = nn.Linear(c["hidden_size"], c["intermediate_size"], bias=False)
        self.down_proj = nn.Linear(c["intermediate_size"], c["hidden_size"], bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = LlamaAttention(c)
        self.mlp = LlamaMLP(c)
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])

    def forward(self, x, cos, sin):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([LlamaDecoderLayer(c) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class LlamaForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = LlamaModel(c)
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        if c["tie_word_embeddings"]:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, ids):
        c = self.c
        cos, sin = rope_tables(c["hidden_size"] // c["num_attention_heads"], c["rope_theta"], ids.shape[1])
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.model.norm(x))


def randomize(module, std):
    """Weights N(0, std²) and norm gains 1 + N(0, 0.1²), so every parameter matters."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 1 and name.endswith("weight") and "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(std * torch.randn_like(p))


def llama_state(model):
    sd = dict(model.state_dict())
    return sd


# ---------------------------------------------------------------- ViT (timm-style, qgrad names)
class Attention(nn.Module):
    """qgrad's MultiHeadAttention: qProj/kProj/vProj/oProj, optional GQA, RoPE and causal mask."""

    def __init__(self, dim, heads, kv_heads=None, bias=True, rope_theta=None, causal=False):
        super().__init__()
        self.h, self.hkv = heads, kv_heads or heads
        self.hd = dim // heads
        self.rope_theta, self.causal = rope_theta, causal
        self.qProj = nn.Linear(dim, dim, bias=bias)
        self.kProj = nn.Linear(dim, self.hkv * self.hd, bias=bias)
        self.vProj = nn.Linear(dim, self.hkv * self.hd, bias=bias)
        self.oProj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x):
        b, t, d = x.shape
        q = self.qProj(x).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.kProj(x).view(b, t, self.hkv, self.hd).transpose(1, 2)
        v = self.vProj(x).view(b, t, self.hkv, self.hd).transpose(1, 2)
        if self.rope_theta is not None:
            cos, sin = rope_tables(self.hd, self.rope_theta, t)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, self.h // self.hkv), repeat_kv(v, self.h // self.hkv)
        if self.causal:
            y = causal_attention(q, k, v)
        else:
            y = (q @ k.transpose(-2, -1) / math.sqrt(self.hd)).softmax(-1) @ v
        return self.oProj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class ViTBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm1 = nn.LayerNorm(c["dim"], eps=1e-6)
        self.attn = Attention(c["dim"], c["numHeads"])
        self.norm2 = nn.LayerNorm(c["dim"], eps=1e-6)
        self.mlp = MLP(c["dim"], c["mlpDim"])

    def forward(self, x):
        h = x + self.attn(self.norm1(x))
        return h + self.mlp(self.norm2(h))


class PatchEmbed(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.proj = nn.Conv2d(c["inChannels"], c["dim"], c["patchSize"], stride=c["patchSize"])


class ViT(nn.Module):
    def __init__(self, c):
        super().__init__()
        n = (c["imageSize"] // c["patchSize"]) ** 2
        self.patch_embed = PatchEmbed(c)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c["dim"]))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, c["dim"]))
        self.blocks = nn.ModuleList([ViTBlock(c) for _ in range(c["depth"])])
        self.norm = nn.LayerNorm(c["dim"], eps=1e-6)
        self.head = nn.Linear(c["dim"], c["numClasses"])

    def forward(self, x):
        p = self.patch_embed.proj(x).flatten(2).transpose(1, 2)  # [N, P, dim]
        h = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), p], 1) + self.pos_embed
        for b in self.blocks:
            h = b(h)
        return self.head(self.norm(h)[:, 0])


# ---------------------------------------------------------------- fixtures
def hf_config(hidden, layers, heads, kv_heads, inter, vocab, theta, tie, eps=1e-5):
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": hidden, "intermediate_size": inter, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "num_hidden_layers": layers, "vocab_size": vocab,
        "rms_norm_eps": eps, "rope_theta": theta, "tie_word_embeddings": tie,
        "max_position_embeddings": 64, "torch_dtype": "float32",
    }


def main():
    torch.manual_seed(0)

    # Llama: untied head, GQA 4/2, a large rope_theta as Llama 3 uses
    c = hf_config(hidden=32, layers=2, heads=4, kv_heads=2, inter=64, vocab=64, theta=500000.0, tie=False)
    llama = LlamaForCausalLM(c)
    randomize(llama, 0.2)
    ids = torch.randint(0, c["vocab_size"], (2, 12), dtype=torch.int32)
    with torch.no_grad():
        logits = llama(ids.long())
    save_safetensors(os.path.join(OUT, "llama.safetensors"), {**llama_state(llama), "_input.ids": ids, "_expected.logits": logits})
    with open(os.path.join(OUT, "llama.config.json"), "w") as f:
        json.dump(c, f, indent=2)

    # ViT on 8×8 single-channel images with 4×4 patches
    vc = {"imageSize": 8, "patchSize": 4, "inChannels": 1, "numClasses": 5, "dim": 16, "depth": 2, "numHeads": 2, "mlpDim": 32}
    vit = ViT(vc)
    randomize(vit, 0.3)
    images = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        vlogits = vit(images)
    save_safetensors(os.path.join(OUT, "vit.safetensors"), {**vit.state_dict(), "_input.images": images, "_expected.logits": vlogits})
    with open(os.path.join(OUT, "vit.config.json"), "w") as f:
        json.dump(vc, f, indent=2)

    # qgrad's MultiHeadAttention with GQA, RoPE and a causal mask, with biases
    attn = Attention(16, 4, kv_heads=2, bias=True, rope_theta=10000.0, causal=True)
    randomize(attn, 0.3)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        y = attn(x)
    save_safetensors(os.path.join(OUT, "attention.safetensors"), {**attn.state_dict(), "_input.x": x, "_expected.y": y})

    # Hugging Face directories: half-precision weights; the reference runs on the rounded weights
    for name, dtype, tie in (("hf-llama-bf16", "BF16", True), ("hf-llama-f16", "F16", False)):
        hc = hf_config(hidden=16, layers=2, heads=2, kv_heads=1, inter=32, vocab=32, theta=10000.0, tie=tie, eps=1e-6)
        m = LlamaForCausalLM(hc)
        randomize(m, 0.3)
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(p.to(torch.bfloat16 if dtype == "BF16" else torch.float16).float())
        sd = llama_state(m)
        if tie:
            del sd["lm_head.weight"]  # HF omits the tied head from the file
        d = os.path.join(OUT, name)
        save_safetensors(os.path.join(d, "model.safetensors"), sd, dtype=dtype)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(hc, f, indent=2)
        ids = torch.randint(0, hc["vocab_size"], (1, 7), dtype=torch.int32)
        with torch.no_grad():
            out = m(ids.long())
        save_safetensors(os.path.join(d, "expected.safetensors"), {"ids": ids, "logits": out})


if __name__ == "__main__":
    main()
