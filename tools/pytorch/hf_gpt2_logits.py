#!/usr/bin/env python3
"""Logits of a Hugging Face GPT-2 directory (model.safetensors + config.json, as `shardwise ckpt export` writes).

The model is built by Hugging Face names (GPT2LMHeadModel's: transformer.wte, transformer.h.N.attn.c_attn, ...;
Conv1D weights [in, out]; head tied to wte) and its weights loaded by those names with strict=True, so a missing,
extra or misshapen tensor fails. It runs in PyTorch (Debian's python3-torch) when installed, else in NumPy with
the same equations; the first line printed names which.

usage: hf_gpt2_logits.py MODEL_DIR TOKENS B T OUT
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


def names(layers):
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


def main():
    model_dir, tokens_file, b, t, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    p = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    expected = names(cfg["n_layer"])
    assert sorted(p) == sorted(expected), f"tensor names differ from GPT2LMHeadModel's: {sorted(set(p) ^ set(expected))}"
    tokens = np.fromfile(tokens_file, dtype="<i4").reshape(b, t)
    try:
        import torch  # noqa: F401
        print("engine: pytorch", flush=True)
        logits = torch_logits(p, cfg, tokens)
    except ImportError:
        print("engine: numpy (python3-torch is not installed)", flush=True)
        logits = numpy_logits(p, cfg, tokens)
    logits.astype("<f4").tofile(out)


if __name__ == "__main__":
    main()
