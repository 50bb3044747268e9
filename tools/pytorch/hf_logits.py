#!/usr/bin/env python3
"""Logits of a Hugging Face GPT-2 or LLaMA directory (model.safetensors + config.json, as `shardwise ckpt export`
writes), by the config's model_type.

The model is built by Hugging Face names (GPT2LMHeadModel's: transformer.wte, transformer.h.N.attn.c_attn, ...,
Conv1D weights [in, out]; LlamaForCausalLM's: model.embed_tokens, model.layers.N.self_attn.q_proj, ..., nn.Linear
weights [out, in], RoPE in the rotate-half convention, key/value heads repeated for grouped-query attention; the head
tied to the embedding in both) and its weights loaded by those names with strict=True, so a missing, extra or
misshapen tensor fails. It runs in PyTorch (Debian's python3-torch) when installed, else in NumPy with the same
equations; the first line printed names which.

usage: hf_logits.py MODEL_DIR TOKENS B T OUT
  TOKENS: B*T little-endian int32 token ids; OUT: B*T*V little-endian float32 logits.
"""
import json
import math
import os
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    tensors = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        assert e["dtype"] == "F32", (name, e["dtype"])
        begin, end = e["data_offsets"]
        tensors[name] = np.frombuffer(data[begin:end], dtype="<f4").reshape(e["shape"]).copy()
    return tensors


def gpt2_names(layers):
    out = ["transformer.wte.weight", "transformer.wpe.weight"]
    for l in range(layers):
        h = f"transformer.h.{l}."
        for n in ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
                  "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                  "mlp.c_proj.weight", "mlp.c_proj.bias"]:
            out.append(h + n)
    return out + ["transformer.ln_f.weight", "transformer.ln_f.bias"]


def numpy_logits(p, cfg, tokens):
    eps, heads = cfg["layer_norm_epsilon"], cfg["n_head"]

    def ln(x, w, b):
        x = x.astype(np.float64)
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w + b

    def gelu(x):   # gelu_new: the tanh approximation
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

    b, t = tokens.shape
    x = p["transformer.wte.weight"][tokens].astype(np.float64) + p["transformer.wpe.weight"][:t]
    c = x.shape[-1]
    hs = c // heads
    mask = np.tril(np.ones((t, t), dtype=bool))
    for l in range(cfg["n_layer"]):
        h = f"transformer.h.{l}."
        qkv = ln(x, p[h + "ln_1.weight"], p[h + "ln_1.bias"]) @ p[h + "attn.c_attn.weight"] + p[h + "attn.c_attn.bias"]
        q, k, v = np.split(qkv, 3, axis=-1)
        q, k, v = (z.reshape(b, t, heads, hs).transpose(0, 2, 1, 3) for z in (q, k, v))   # (B, NH, T, HS)
        att = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs)                                   # (B, NH, T, T)
        att = np.where(mask, att, -np.inf)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(b, t, c)
        x = x + y @ p[h + "attn.c_proj.weight"] + p[h + "attn.c_proj.bias"]
        m = gelu(ln(x, p[h + "ln_2.weight"], p[h + "ln_2.bias"]) @ p[h + "mlp.c_fc.weight"] + p[h + "mlp.c_fc.bias"])
        x = x + m @ p[h + "mlp.c_proj.weight"] + p[h + "mlp.c_proj.bias"]
    x = ln(x, p["transformer.ln_f.weight"], p["transformer.ln_f.bias"])
    return (x @ p["transformer.wte.weight"].T).astype(np.float32)


def torch_logits(p, cfg, tokens):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Conv1D(nn.Module):   # Hugging Face GPT-2's linear layer: y = x @ W + b, W [in, out]
        def __init__(self, n_in, n_out):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(n_in, n_out))
            self.bias = nn.Parameter(torch.empty(n_out))

        def forward(self, x):
            return x @ self.weight + self.bias

    class Block(nn.Module):
        def __init__(self, c, inner):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(c, eps=cfg["layer_norm_epsilon"]), nn.LayerNorm(c, eps=cfg["layer_norm_epsilon"])
            self.attn = nn.Module()
            self.attn.c_attn, self.attn.c_proj = Conv1D(c, 3 * c), Conv1D(c, c)
            self.mlp = nn.Module()
            self.mlp.c_fc, self.mlp.c_proj = Conv1D(c, inner), Conv1D(inner, c)

    class GPT2(nn.Module):
        def __init__(self):
            super().__init__()
            c = cfg["n_embd"]
            self.transformer = nn.Module()
            self.transformer.wte = nn.Embedding(cfg["vocab_size"], c)
            self.transformer.wpe = nn.Embedding(cfg["n_positions"], c)
            self.transformer.h = nn.ModuleList(Block(c, cfg.get("n_inner") or 4 * c) for _ in range(cfg["n_layer"]))
            self.transformer.ln_f = nn.LayerNorm(c, eps=cfg["layer_norm_epsilon"])

        def forward(self, idx):
            b, t = idx.shape
            heads, tr = cfg["n_head"], self.transformer
            x = tr.wte(idx) + tr.wpe(torch.arange(t))
            c = x.shape[-1]
            for blk in tr.h:
                q, k, v = blk.attn.c_attn(blk.ln_1(x)).split(c, dim=-1)
                q, k, v = (z.view(b, t, heads, c // heads).transpose(1, 2) for z in (q, k, v))   # (B, NH, T, HS)
                att = (q @ k.transpose(-2, -1)) / math.sqrt(c // heads)                            # (B, NH, T, T)
                att = att.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf")).softmax(-1)
                x = x + blk.attn.c_proj((att @ v).transpose(1, 2).reshape(b, t, c))
                x = x + blk.mlp.c_proj(F.gelu(blk.mlp.c_fc(blk.ln_2(x)), approximate="tanh"))
            return tr.ln_f(x) @ tr.wte.weight.T   # head tied to wte

    model = GPT2().double()
    model.load_state_dict({k: torch.from_numpy(v).double() for k, v in p.items()}, strict=True)
    with torch.no_grad():
        return model(torch.from_numpy(tokens.astype(np.int64))).float().numpy()


LLAMA_LAYER = ["input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
               "self_attn.o_proj.weight", "post_attention_layernorm.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
               "mlp.down_proj.weight"]


def llama_names(layers):
    out = ["model.embed_tokens.weight"]
    for l in range(layers):
        out += [f"model.layers.{l}.{n}" for n in LLAMA_LAYER]
    return out + ["model.norm.weight"]


def rope_tables(t, hs, theta, xp):
    """cos and sin (T, HS) of the rotate-half convention: pair (i, i + HS/2) turns by t * theta^(-2i/HS)."""
    inv = theta ** (-(xp.arange(0, hs // 2, dtype=xp.float64) * 2) / hs)
    angles = xp.arange(t, dtype=xp.float64)[:, None] * inv[None, :]
    return xp.concatenate([xp.cos(angles)] * 2, -1), xp.concatenate([xp.sin(angles)] * 2, -1)


def numpy_llama_logits(p, cfg, tokens):
    eps, heads, kv = cfg["rms_norm_eps"], cfg["num_attention_heads"], cfg["num_key_value_heads"]

    def rms(x, w):
        return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * w

    b, t = tokens.shape
    x = p["model.embed_tokens.weight"][tokens].astype(np.float64)
    c = x.shape[-1]
    hs = c // heads
    cos, sin = rope_tables(t, hs, cfg["rope_theta"], np)

    def rotate(z):   # (B, H, T, HS)
        half = hs // 2
        return z * cos + np.concatenate([-z[..., half:], z[..., :half]], -1) * sin

    mask = np.tril(np.ones((t, t), dtype=bool))
    for l in range(cfg["num_hidden_layers"]):
        h = f"model.layers.{l}."
        n1 = rms(x, p[h + "input_layernorm.weight"])
        q = rotate((n1 @ p[h + "self_attn.q_proj.weight"].T).reshape(b, t, heads, hs).transpose(0, 2, 1, 3))
        k = rotate((n1 @ p[h + "self_attn.k_proj.weight"].T).reshape(b, t, kv, hs).transpose(0, 2, 1, 3))
        v = (n1 @ p[h + "self_attn.v_proj.weight"].T).reshape(b, t, kv, hs).transpose(0, 2, 1, 3)
        k, v = np.repeat(k, heads // kv, axis=1), np.repeat(v, heads // kv, axis=1)
        att = np.where(mask, q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs), -np.inf)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        x = x + (att @ v).transpose(0, 2, 1, 3).reshape(b, t, c) @ p[h + "self_attn.o_proj.weight"].T
        n2 = rms(x, p[h + "post_attention_layernorm.weight"])
        g = n2 @ p[h + "mlp.gate_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * (n2 @ p[h + "mlp.up_proj.weight"].T)) @ p[h + "mlp.down_proj.weight"].T
    x = rms(x, p["model.norm.weight"])
    return (x @ p["model.embed_tokens.weight"].T).astype(np.float32)


def torch_llama_logits(p, cfg, tokens):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    eps, heads, kv = cfg["rms_norm_eps"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    c, inner = cfg["hidden_size"], cfg["intermediate_size"]
    hs = c // heads

    class RMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(c))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * self.weight

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.input_layernorm, self.post_attention_layernorm = RMSNorm(), RMSNorm()
            self.self_attn = nn.Module()
            self.self_attn.q_proj = nn.Linear(c, heads * hs, bias=False)
            self.self_attn.k_proj = nn.Linear(c, kv * hs, bias=False)
            self.self_attn.v_proj = nn.Linear(c, kv * hs, bias=False)
            self.self_attn.o_proj = nn.Linear(heads * hs, c, bias=False)
            self.mlp = nn.Module()
            self.mlp.gate_proj, self.mlp.up_proj = nn.Linear(c, inner, bias=False), nn.Linear(c, inner, bias=False)
            self.mlp.down_proj = nn.Linear(inner, c, bias=False)

    class Llama(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = nn.Module()
            self.model.embed_tokens = nn.Embedding(cfg["vocab_size"], c)
            self.model.layers = nn.ModuleList(Layer() for _ in range(cfg["num_hidden_layers"]))
            self.model.norm = RMSNorm()

        def forward(self, idx):
            b, t = idx.shape
            cos, sin = (torch.from_numpy(z) for z in rope_tables(t, hs, cfg["rope_theta"], np))
            half = hs // 2

            def rotate(z):   # (B, H, T, HS)
                return z * cos + torch.cat([-z[..., half:], z[..., :half]], -1) * sin

            x = self.model.embed_tokens(idx)
            mask = torch.ones(t, t, dtype=torch.bool).tril()
            for layer in self.model.layers:
                a = layer.self_attn
                n1 = layer.input_layernorm(x)
                q = rotate(a.q_proj(n1).view(b, t, heads, hs).transpose(1, 2))
                k = rotate(a.k_proj(n1).view(b, t, kv, hs).transpose(1, 2)).repeat_interleave(heads // kv, dim=1)
                v = a.v_proj(n1).view(b, t, kv, hs).transpose(1, 2).repeat_interleave(heads // kv, dim=1)
                att = ((q @ k.transpose(-2, -1)) / math.sqrt(hs)).masked_fill(~mask, float("-inf")).softmax(-1)
                x = x + a.o_proj((att @ v).transpose(1, 2).reshape(b, t, heads * hs))
                n2 = layer.post_attention_layernorm(x)
                x = x + layer.mlp.down_proj(F.silu(layer.mlp.gate_proj(n2)) * layer.mlp.up_proj(n2))
            return self.model.norm(x) @ self.model.embed_tokens.weight.T   # head tied to embed_tokens

    model = Llama().double()
    model.load_state_dict({k: torch.from_numpy(v).double() for k, v in p.items()}, strict=True)
    with torch.no_grad():
        return model(torch.from_numpy(tokens.astype(np.int64))).float().numpy()


def main():
    model_dir, tokens_file, b, t, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    llama = cfg["model_type"] == "llama"
    p = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    layers = cfg["num_hidden_layers" if llama else "n_layer"]
    expected = llama_names(layers) if llama else gpt2_names(layers)
    assert sorted(p) == sorted(expected), f"tensor names differ from {cfg['architectures'][0]}'s: {sorted(set(p) ^ set(expected))}"
    tokens = np.fromfile(tokens_file, dtype="<i4").reshape(b, t)
    try:
        import torch  # noqa: F401
        print(f"engine: pytorch ({cfg['model_type']})", flush=True)
        logits = (torch_llama_logits if llama else torch_logits)(p, cfg, tokens)
    except ImportError:
        print(f"engine: numpy ({cfg['model_type']}; python3-torch is not installed)", flush=True)
        logits = (numpy_llama_logits if llama else numpy_logits)(p, cfg, tokens)
    logits.astype("<f4").tofile(out)


if __name__ == "__main__":
    main()
