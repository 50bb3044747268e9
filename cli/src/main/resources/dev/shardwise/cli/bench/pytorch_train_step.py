#!/usr/bin/env python3
"""PyTorch peer for `shardwise bench train`: times training steps of the same GPT that Shardwise trains.

Pre-LayerNorm GPT-2 blocks (learned positions, tanh-GELU MLP of width 4C, tied head), AdamW with weight decay
on matrices only, fp32 (or, with --precision bf16, forward and loss under torch.autocast("cpu", dtype=bfloat16):
oneDNN's bf16 matmuls, fp32 weights, gradients and AdamW), random tokens from a seed. Written the way a PyTorch user tuning CPU speed would: 2-D
activations so every linear is one addmm, the causal mask built once, multi-tensor (foreach) AdamW. Prints three
lines the Java side parses:
    BLAS loaded=<paths of the BLAS libraries mapped into this process, comma-separated> build=<torch's BLAS_INFO> mkldnn=<bool>
    PEER threads=<torch.get_num_threads()> interop=<torch.get_num_interop_threads()> omp_num_threads=<env or unset> onednn=<version from torch.__config__.show()> cpu_capability=<ISA torch dispatches to> precision=<fp32|bf16>
    RESULT tokens_per_s=<float> median_ms=<float> steps=<int> threads=<int> torch=<version>
Debian's torch calls whatever libblas.so.3 the alternatives system points at; with only libblas3 installed that is
the unoptimized reference BLAS, which makes PyTorch several times slower than it can be, so the Java side refuses
to compare against it.
"""
import argparse
import math
import os
import re
import statistics
import time

import torch
import torch.nn.functional as F


def build(layers, hidden, heads, vocab, context, gen):
    def normal(*shape, std=0.02):
        return (torch.randn(*shape, generator=gen) * std).requires_grad_(True)

    def const(value, n):
        return torch.full((n,), float(value)).requires_grad_(True)

    proj_std = 0.02 / math.sqrt(2 * layers)
    p = {"wte": normal(vocab, hidden), "wpe": normal(context, hidden)}
    for l in range(layers):
        p[f"{l}.ln1.w"], p[f"{l}.ln1.b"] = const(1, hidden), const(0, hidden)
        p[f"{l}.qkv.w"], p[f"{l}.qkv.b"] = normal(3 * hidden, hidden), const(0, 3 * hidden)
        p[f"{l}.proj.w"], p[f"{l}.proj.b"] = normal(hidden, hidden, std=proj_std), const(0, hidden)
        p[f"{l}.ln2.w"], p[f"{l}.ln2.b"] = const(1, hidden), const(0, hidden)
        p[f"{l}.fc.w"], p[f"{l}.fc.b"] = normal(4 * hidden, hidden), const(0, 4 * hidden)
        p[f"{l}.fcproj.w"], p[f"{l}.fcproj.b"] = normal(hidden, 4 * hidden, std=proj_std), const(0, hidden)
    p["lnf.w"], p["lnf.b"] = const(1, hidden), const(0, hidden)
    return p


def loss_fn(p, x, y, layers, heads, causal_mask):
    b, t = x.shape
    h = (F.embedding(x, p["wte"]) + p["wpe"][:t]).view(b * t, -1)   # 2-D rows: F.linear is one addmm
    c = h.shape[-1]
    hs = c // heads
    for l in range(layers):
        n = F.layer_norm(h, (c,), p[f"{l}.ln1.w"], p[f"{l}.ln1.b"], 1e-5)
        q, k, v = F.linear(n, p[f"{l}.qkv.w"], p[f"{l}.qkv.b"]).split(c, dim=-1)
        q, k, v = (z.view(b, t, heads, hs).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = (att + causal_mask[:t, :t]).softmax(-1)
        y_att = (att @ v).transpose(1, 2).reshape(b * t, c)
        h = h + F.linear(y_att, p[f"{l}.proj.w"], p[f"{l}.proj.b"])
        n = F.layer_norm(h, (c,), p[f"{l}.ln2.w"], p[f"{l}.ln2.b"], 1e-5)
        m = F.gelu(F.linear(n, p[f"{l}.fc.w"], p[f"{l}.fc.b"]), approximate="tanh")
        h = h + F.linear(m, p[f"{l}.fcproj.w"], p[f"{l}.fcproj.b"])
    h = F.layer_norm(h, (c,), p["lnf.w"], p["lnf.b"], 1e-5)
    return F.cross_entropy(F.linear(h, p["wte"]), y.reshape(-1))


def blas_report():
    """Which BLAS this process really runs (after a matmul loaded it), and what torch was built against."""
    torch.ones(64, 64) @ torch.ones(64, 64)
    loaded = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                name = os.path.basename(path)
                if ("blas" in name or "blis" in name or "libmkl" in name) and path not in loaded:
                    loaded.append(path)
    except OSError:
        pass
    loaded = [os.path.realpath(p) for p in loaded]
    found = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    build = found.group(1) if found else "unknown"
    return "BLAS loaded=%s build=%s mkldnn=%s" % (",".join(dict.fromkeys(loaded)) or "none", build,
                                                  torch.backends.mkldnn.is_available())


def config_report(precision):
    """The peer's thread settings and oneDNN, from torch itself (torch.__config__.show() and the thread queries)."""
    show = torch.__config__.show()
    onednn = re.search(r"(?:MKL-DNN|oneDNN)[^v\n]*v([0-9][0-9.]*)", show)
    capability = re.search(r"CPU capability usage:\s*(\S+)", show)
    return "PEER threads=%d interop=%d omp_num_threads=%s onednn=%s cpu_capability=%s precision=%s" % (
        torch.get_num_threads(), torch.get_num_interop_threads(), os.environ.get("OMP_NUM_THREADS", "unset"),
        onednn.group(1) if onednn else "none", capability.group(1) if capability else "unknown", precision)


def main():
    ap = argparse.ArgumentParser()
    for name, default in [("layers", 4), ("hidden", 256), ("heads", 4), ("vocab", 8192), ("context", 256),
                          ("seq", 256), ("batch", 8), ("steps", 5), ("warmup", 2), ("threads", 2), ("seed", 1)]:
        ap.add_argument("--" + name, type=int, default=default)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(blas_report(), flush=True)
    print(config_report(a.precision), flush=True)
    bf16 = a.precision == "bf16"
    if bf16 and not torch.backends.mkldnn.is_available():
        raise SystemExit("this torch has no oneDNN (mkldnn): bf16 autocast on the CPU would not use bf16 matmuls")
    gen = torch.Generator().manual_seed(a.seed)
    params = build(a.layers, a.hidden, a.heads, a.vocab, a.context, gen)
    decay = [v for k, v in params.items() if v.dim() >= 2 and k not in ("wte", "wpe")]
    rest = [v for k, v in params.items() if not (v.dim() >= 2 and k not in ("wte", "wpe"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8, foreach=True)
    causal_mask = torch.full((a.seq, a.seq), float("-inf")).triu(1)   # built once, added to the scores
    data = torch.randint(0, a.vocab, (a.warmup + a.steps, a.batch, a.seq + 1), generator=gen)
    times = []
    for step in range(a.warmup + a.steps):
        x, y = data[step, :, :-1], data[step, :, 1:]
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(params, x, y, a.layers, a.heads, causal_mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        loss.item()
        if step >= a.warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print("RESULT tokens_per_s=%.3f median_ms=%.3f steps=%d threads=%d torch=%s precision=%s"
          % (a.batch * a.seq / median, median * 1e3, len(times), torch.get_num_threads(), torch.__version__, a.precision))


if __name__ == "__main__":
    main()
