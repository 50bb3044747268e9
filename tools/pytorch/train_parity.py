#!/usr/bin/env python3
"""Trains in PyTorch exactly what a Shardwise run trained, and compares the validation losses.

Same initial weights (the run's checkpoints/step-000000, written by `--checkpoint-at-start`), same token files,
same batch order (the sampler's SplitMix64 permutation, reimplemented here), same AdamW (decay on matrices only),
warm-up + cosine schedule, gradient clipping and accumulation, same validation batches. Differences left:
float32 rounding and kernel order, so the curves should agree closely.

    ./shardwise train --preset tiny --steps 300 --run-dir runs/parity --checkpoint-at-start
    /usr/bin/python3 tools/pytorch/train_parity.py runs/parity

Exits 1 when the final validation losses differ by more than --tolerance nats (default 0.03).
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_gpt import gpt_loss  # noqa: E402  (the same GPT-2 forward the golden files use)

MASK64 = (1 << 64) - 1


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def permutation(seed, epoch, n):
    """BatchSampler.permutation: Fisher-Yates driven by SplitMix64, Lemire's multiply-high for the index."""
    p = list(range(n))
    state = mix64((seed & MASK64) ^ mix64((epoch + 0x632BE59BD9B4E019) & MASK64))
    for i in range(n - 1, 0, -1):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        r = mix64(state)
        j = ((r >> 1) * ((i + 1) << 1)) >> 64
        p[i], p[j] = p[j], p[i]
    return p


def read_tokens(path):
    with open(path, "rb") as f:
        header = f.read(128)
        header_bytes, token_bytes = struct.unpack_from("<ii", header, 12)
        count = struct.unpack_from("<q", header, 32)[0]
        f.seek(header_bytes)
        dtype = np.uint16 if token_bytes == 2 else np.uint32
        return np.frombuffer(f.read(count * token_bytes), dtype=dtype).astype(np.int64)


def read_checkpoint(directory):
    """The parameters of a Shardwise checkpoint by name: format 1 (tensors.bin, whole tensors) or format 2
    (shard-RRRRR.bin per rank; each piece covers runs [start, length, count, stride] of global row-major elements)."""
    with open(os.path.join(directory, "manifest.json")) as f:
        manifest = json.load(f)
    params = {}
    if manifest["format"] == "shardwise-checkpoint-1":
        with open(os.path.join(directory, "tensors.bin"), "rb") as f:
            blob = f.read()
        for entry in manifest["tensors"]:
            if entry["name"].startswith("param/"):
                data = np.frombuffer(blob, dtype="<f4", count=entry["bytes"] // 4, offset=entry["offset"])
                params[entry["name"][len("param/"):]] = torch.tensor(data.reshape(entry["shape"]))
        return manifest, params
    whole = {name: np.zeros(int(np.prod(t["shape"])), dtype=np.float32)
             for name, t in manifest["tensors"].items() if name.startswith("param/")}
    for shard in manifest["shards"]:
        with open(os.path.join(directory, shard["file"]), "rb") as f:
            blob = f.read()
        for piece in shard["pieces"]:
            if piece["tensor"] not in whole:
                continue
            data = np.frombuffer(blob, dtype="<f4", count=piece["bytes"] // 4, offset=piece["offset"])
            at = 0
            for start, length, count, stride in piece["runs"]:
                for c in range(count):
                    whole[piece["tensor"]][start + c * stride:start + c * stride + length] = data[at:at + length]
                    at += length
    for name, values in whole.items():
        params[name[len("param/"):]] = torch.tensor(values.reshape(manifest["tensors"][name]["shape"]))
    return manifest, params


class Sampler:
    def __init__(self, tokens, batch, seq, seed):
        self.tokens, self.batch, self.seq, self.seed = tokens, batch, seq, seed
        self.windows = (len(tokens) - 1) // seq
        self.epoch, self.index, self.perm, self.perm_epoch = 0, 0, None, -1

    def next(self):
        rows = []
        for _ in range(self.batch):
            if self.perm_epoch != self.epoch:
                self.perm, self.perm_epoch = permutation(self.seed, self.epoch, self.windows), self.epoch
            start = self.perm[self.index] * self.seq
            rows.append(self.tokens[start:start + self.seq + 1])
            self.index += 1
            if self.index == self.windows:
                self.index, self.epoch = 0, self.epoch + 1
        return torch.tensor(np.stack(rows))


def val_batches(tokens, batch, seq, count):
    windows = (len(tokens) - 1) // seq
    out = []
    for b in range(0, windows, batch):
        rows = [tokens[w * seq:w * seq + seq + 1] for w in range(b, min(b + batch, windows))]
        out.append(torch.tensor(np.stack(rows)))
        if len(out) == count:
            break
    return out


def lr_at(step, c):
    warmup, total = min(c["warmupSteps"], c["steps"]), c["steps"]
    if step < warmup:
        return c["lr"] * (step + 1) / warmup
    if step >= total:
        return c["minLr"]
    progress = (step - warmup) / max(1, total - warmup)
    return c["minLr"] + 0.5 * (1 + math.cos(math.pi * progress)) * (c["lr"] - c["minLr"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--tolerance", type=float, default=0.03)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with open(os.path.join(args.run_dir, "config.yaml")) as f:
        c = yaml.safe_load(f)
    model = c["model"]
    if model["norm"] != "layer-norm" or model["mlp"] != "gelu" or model["residual"] != "pre-ln" or model["topQueryLayer"]:
        sys.exit("train_parity.py covers GPT-2-style runs (layer-norm, gelu, pre-ln)")
    manifest, params = read_checkpoint(os.path.join(args.run_dir, "checkpoints", "step-000000"))
    train = read_tokens(os.path.join(manifest["data"], "train.tokens"))
    val = read_tokens(os.path.join(manifest["data"], "val.tokens"))
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    decay = [v for k, v in leaves.items() if v.dim() == 2 and k not in ("wte", "wpe")]
    rest = [v for k, v in leaves.items() if not (v.dim() == 2 and k not in ("wte", "wpe"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": c["weightDecay"]}, {"params": rest, "weight_decay": 0.0}],
                            lr=c["lr"], betas=(c["beta1"], c["beta2"]), eps=c["eps"])
    sampler = Sampler(train, c["batchSize"], c["seqLen"], c["seed"])
    evals = val_batches(val, c["batchSize"], c["seqLen"], c["evalBatches"])
    ours = {}
    with open(os.path.join(args.run_dir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if "val_loss" in row:
                ours[row["step"]] = row["val_loss"]
    print("step  pytorch val  shardwise val  difference")
    start, last = time.time(), None
    for step in range(c["steps"]):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, c)
        opt.zero_grad(set_to_none=True)
        for _ in range(c["gradAccumulation"]):
            batch = sampler.next()
            loss = gpt_loss(leaves, batch[:, :-1].contiguous(), batch[:, 1:].contiguous(), model["layers"], model["heads"],
                            model["normEps"])
            (loss / c["gradAccumulation"]).backward()
        if c["gradClip"] > 0:
            torch.nn.utils.clip_grad_norm_(list(leaves.values()), c["gradClip"])
        opt.step()
        done = step + 1
        if done == c["steps"] or (c["evalEvery"] > 0 and done % c["evalEvery"] == 0):
            with torch.no_grad():
                losses = [gpt_loss(leaves, b[:, :-1].contiguous(), b[:, 1:].contiguous(), model["layers"], model["heads"],
                                   model["normEps"]).item()
                          for b in evals]
            last = sum(losses) / len(losses)
            theirs = ours.get(done)
            print("%4d  %11.4f  %13s  %s" % (done, last, "%.4f" % theirs if theirs is not None else "-",
                                             "%+.4f" % (theirs - last) if theirs is not None else "-"), flush=True)
    final = ours.get(c["steps"])
    diff = abs(final - last) if final is not None else float("inf")
    print("final validation loss: pytorch %.4f, shardwise %s, |difference| %.4f nats (tolerance %.2f); %.0f s"
          % (last, "%.4f" % final if final is not None else "missing", diff, args.tolerance, time.time() - start))
    sys.exit(0 if diff <= args.tolerance else 1)


if __name__ == "__main__":
    main()
