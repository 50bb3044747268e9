#!/usr/bin/env python3
"""Writes golden files for Shardwise's PyTorch cross-check (model/src/test/resources/golden/).

A small GPT with Shardwise's parameter names is built in PyTorch from a seed; the file holds its weights
(float32), one batch, and the loss and every parameter gradient computed in float64 from those same
float32 weights. The Java test loads the weights, runs its own forward and backward, and compares.

Run with Debian's python3-torch:  /usr/bin/python3 tools/pytorch/golden_gpt.py
With the argument `bf16` it writes only gpt2-bf16-case.bin: the loss and every gradient of the gpt2 case's weights and
batch (read back from gpt2-small-case.bin, so they are the same bits) under PyTorch's own bf16 mixed precision,
torch.autocast("cpu", dtype=torch.bfloat16) with float32 weights, for the bf16 golden check.
File format (little-endian): b"SWGOLD1\\n", int32 count, then per tensor: int32 name length, UTF-8 name,
int32 dtype (0 = float32, 1 = int32, 2 = float64), int32 rank, int32 dims[rank], raw data.
"""
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "model", "src", "test", "resources", "golden")


def gpt_parameters(vocab, context, layers, hidden, heads, gen, std):
    """Name -> tensor in Shardwise's declaration order (see Gpt.declare)."""
    def normal(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float32) * std

    def around_one(*shape):
        return 1.0 + torch.randn(*shape, generator=gen, dtype=torch.float32) * 0.1

    p = {"wte": normal(vocab, hidden), "wpe": normal(context, hidden)}
    for l in range(layers):
        h = f"h.{l}"
        p[f"{h}.ln1.weight"] = around_one(hidden)
        p[f"{h}.ln1.bias"] = normal(hidden)
        p[f"{h}.attn.qkv.weight"] = normal(3 * hidden, hidden)
        p[f"{h}.attn.qkv.bias"] = normal(3 * hidden)
        p[f"{h}.attn.proj.weight"] = normal(hidden, hidden)
        p[f"{h}.attn.proj.bias"] = normal(hidden)
        p[f"{h}.ln2.weight"] = around_one(hidden)
        p[f"{h}.ln2.bias"] = normal(hidden)
        p[f"{h}.mlp.fc.weight"] = normal(4 * hidden, hidden)
        p[f"{h}.mlp.fc.bias"] = normal(4 * hidden)
        p[f"{h}.mlp.proj.weight"] = normal(hidden, 4 * hidden)
        p[f"{h}.mlp.proj.bias"] = normal(hidden)
    p["ln_f.weight"] = around_one(hidden)
    p["ln_f.bias"] = normal(hidden)
    return p


def gpt_loss(p, tokens, targets, layers, heads, eps=1e-5):
    """GPT-2: pre-LayerNorm blocks, causal attention, tanh-GELU MLP, head tied to wte; mean cross-entropy."""
    b, t = tokens.shape
    x = p["wte"][tokens] + p["wpe"][:t]
    c = x.shape[-1]
    hs = c // heads
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    for l in range(layers):
        h = f"h.{l}"
        n1 = F.layer_norm(x, (c,), p[f"{h}.ln1.weight"], p[f"{h}.ln1.bias"], eps)
        qkv = n1 @ p[f"{h}.attn.qkv.weight"].T + p[f"{h}.attn.qkv.bias"]
        q, k, v = qkv.split(c, dim=-1)
        q = q.view(b, t, heads, hs).transpose(1, 2)          # (B, NH, T, HS)
        k = k.view(b, t, heads, hs).transpose(1, 2)
        v = v.view(b, t, heads, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)     # (B, NH, T, T)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, c)
        x = x + y @ p[f"{h}.attn.proj.weight"].T + p[f"{h}.attn.proj.bias"]
        n2 = F.layer_norm(x, (c,), p[f"{h}.ln2.weight"], p[f"{h}.ln2.bias"], eps)
        m = F.gelu(n2 @ p[f"{h}.mlp.fc.weight"].T + p[f"{h}.mlp.fc.bias"], approximate="tanh")
        x = x + m @ p[f"{h}.mlp.proj.weight"].T + p[f"{h}.mlp.proj.bias"]
    x = F.layer_norm(x, (c,), p["ln_f.weight"], p["ln_f.bias"], eps)
    logits = x @ p["wte"].T
    return F.cross_entropy(logits.view(b * t, -1), targets.view(-1), ignore_index=-1)


def llama_parameters(vocab, layers, hidden, heads, kv_heads, ffn, gen, std):
    """Name -> tensor in Shardwise's declaration order for the LLaMA-style variant (no biases, no wpe)."""
    hs = hidden // heads

    def normal(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float32) * std

    def around_one(*shape):
        return 1.0 + torch.randn(*shape, generator=gen, dtype=torch.float32) * 0.1

    p = {"wte": normal(vocab, hidden)}
    for l in range(layers):
        h = f"h.{l}"
        p[f"{h}.ln1.weight"] = around_one(hidden)
        p[f"{h}.attn.qkv.weight"] = normal((heads + 2 * kv_heads) * hs, hidden)
        p[f"{h}.attn.proj.weight"] = normal(hidden, heads * hs)
        p[f"{h}.ln2.weight"] = around_one(hidden)
        p[f"{h}.mlp.gate.weight"] = normal(ffn, hidden)
        p[f"{h}.mlp.up.weight"] = normal(ffn, hidden)
        p[f"{h}.mlp.down.weight"] = normal(hidden, ffn)
    p["ln_f.weight"] = around_one(hidden)
    return p


def rms_norm(x, weight, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rotate(x, theta=10000.0):
    """RoPE in the rotate_half convention on (B, heads, T, HS): pair (i, i + HS/2) turns by t * theta^(-2i/HS)."""
    t, hs = x.shape[-2], x.shape[-1]
    inv = theta ** (-torch.arange(0, hs // 2, dtype=torch.float64) * 2 / hs)
    angles = torch.arange(t, dtype=torch.float64)[:, None] * inv[None, :]          # (T, HS/2)
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1).to(x.dtype)
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1).to(x.dtype)
    half = hs // 2
    rotated_half = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated_half * sin


def llama_loss(p, tokens, targets, layers, heads, kv_heads, eps=1e-5):
    """LLaMA-style: pre-RMSNorm, RoPE on q and k, grouped-query attention, SwiGLU MLP, tied head."""
    b, t = tokens.shape
    x = p["wte"][tokens]
    c = x.shape[-1]
    hs = c // heads
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    for l in range(layers):
        h = f"h.{l}"
        n1 = rms_norm(x, p[f"{h}.ln1.weight"], eps)
        qkv = n1 @ p[f"{h}.attn.qkv.weight"].T
        q, k, v = qkv.split([heads * hs, kv_heads * hs, kv_heads * hs], dim=-1)
        q = rotate(q.view(b, t, heads, hs).transpose(1, 2))
        k = rotate(k.view(b, t, kv_heads, hs).transpose(1, 2)).repeat_interleave(heads // kv_heads, dim=1)
        v = v.view(b, t, kv_heads, hs).transpose(1, 2).repeat_interleave(heads // kv_heads, dim=1)
        att = ((q @ k.transpose(-2, -1)) / math.sqrt(hs)).masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, heads * hs)
        x = x + y @ p[f"{h}.attn.proj.weight"].T
        n2 = rms_norm(x, p[f"{h}.ln2.weight"], eps)
        m = F.silu(n2 @ p[f"{h}.mlp.gate.weight"].T) * (n2 @ p[f"{h}.mlp.up.weight"].T)
        x = x + m @ p[f"{h}.mlp.down.weight"].T
    x = rms_norm(x, p["ln_f.weight"], eps)
    logits = x @ p["wte"].T
    return F.cross_entropy(logits.view(b * t, -1), targets.view(-1), ignore_index=-1)


def write_golden(path, tensors):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(b"SWGOLD1\n")
        f.write(struct.pack("<i", len(tensors)))
        for name, tensor in tensors.items():
            code = {torch.float32: 0, torch.int32: 1, torch.float64: 2}[tensor.dtype]
            raw = name.encode("utf-8")
            f.write(struct.pack("<i", len(raw)) + raw)
            f.write(struct.pack("<ii", code, tensor.dim()))
            f.write(struct.pack(f"<{tensor.dim()}i", *tensor.shape))
            f.write(tensor.contiguous().numpy().astype(tensor.numpy().dtype.newbyteorder("<")).tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_golden(path):
    """The tensors of a file write_golden wrote, by name."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"SWGOLD1\n", path
    pos = 8
    (count,) = struct.unpack_from("<i", data, pos)
    pos += 4
    out = {}
    for _ in range(count):
        (n,) = struct.unpack_from("<i", data, pos)
        name = data[pos + 4:pos + 4 + n].decode("utf-8")
        pos += 4 + n
        code, rank = struct.unpack_from("<ii", data, pos)
        pos += 8
        shape = struct.unpack_from(f"<{rank}i", data, pos)
        pos += 4 * rank
        dtype, size = {0: (torch.float32, 4), 1: (torch.int32, 4), 2: (torch.float64, 8)}[code]
        numel = math.prod(shape)
        out[name] = torch.frombuffer(bytearray(data[pos:pos + numel * size]), dtype=dtype).reshape(shape)
        pos += numel * size
    return out


def gpt2_bf16_case():
    """The gpt2 case under torch.autocast("cpu", bfloat16): its products in bf16, weights and gradients float32."""
    base = read_golden(os.path.join(OUT_DIR, "gpt2-small-case.bin"))
    vocab, context, layers, hidden, heads = (int(v) for v in base["config"].tolist())
    leaves = {k[len("param."):]: v.clone().requires_grad_(True) for k, v in base.items() if k.startswith("param.")}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = gpt_loss(leaves, base["tokens"].long(), base["targets"].long(), layers, heads)
    loss.float().backward()
    out = {"loss": loss.detach().double().reshape(1)}
    for k, v in leaves.items():
        out["grad." + k] = v.grad.detach().float()
    return out


def gpt2_case():
    vocab, context, layers, hidden, heads, b, t = 67, 16, 2, 32, 4, 2, 12
    gen = torch.Generator().manual_seed(1234)
    params = gpt_parameters(vocab, context, layers, hidden, heads, gen, std=0.1)
    tokens = torch.randint(0, vocab, (b, t), generator=gen, dtype=torch.int64)
    targets = torch.randint(0, vocab, (b, t), generator=gen, dtype=torch.int64)
    targets[1, 5] = -1                                     # an ignored position
    leaves = {k: v.double().requires_grad_(True) for k, v in params.items()}
    loss = gpt_loss(leaves, tokens, targets, layers, heads)
    loss.backward()
    out = {"config": torch.tensor([vocab, context, layers, hidden, heads], dtype=torch.int32),
           "tokens": tokens.int(), "targets": targets.int(),
           "loss": loss.detach().reshape(1)}
    for k, v in params.items():
        out["param." + k] = v
    for k, v in leaves.items():
        out["grad." + k] = v.grad.detach()
    return out


def llama_case():
    vocab, context, layers, hidden, heads, kv_heads, ffn, b, t = 67, 16, 2, 32, 4, 2, 48, 2, 12
    gen = torch.Generator().manual_seed(4321)
    params = llama_parameters(vocab, layers, hidden, heads, kv_heads, ffn, gen, std=0.1)
    tokens = torch.randint(0, vocab, (b, t), generator=gen, dtype=torch.int64)
    targets = torch.randint(0, vocab, (b, t), generator=gen, dtype=torch.int64)
    targets[0, 7] = -1
    leaves = {k: v.double().requires_grad_(True) for k, v in params.items()}
    loss = llama_loss(leaves, tokens, targets, layers, heads, kv_heads)
    loss.backward()
    out = {"config": torch.tensor([vocab, context, layers, hidden, heads, kv_heads, ffn], dtype=torch.int32),
           "tokens": tokens.int(), "targets": targets.int(), "loss": loss.detach().reshape(1)}
    for k, v in params.items():
        out["param." + k] = v
    for k, v in leaves.items():
        out["grad." + k] = v.grad.detach()
    return out


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    cases = [("gpt2-small-case.bin", gpt2_case), ("llama-small-case.bin", llama_case), ("gpt2-bf16-case.bin", gpt2_bf16_case)]
    if sys.argv[1:] == ["bf16"]:
        cases = cases[2:]
    for name, case in cases:
        path = os.path.join(OUT_DIR, name)
        tensors = case()
        write_golden(path, tensors)
        print(f"wrote {os.path.relpath(path)}: loss {tensors['loss'].item():.10f}, {len(tensors)} tensors", file=sys.stderr)


if __name__ == "__main__":
    main()
