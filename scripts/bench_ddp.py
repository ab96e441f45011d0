#!/usr/bin/env python3
"""PyTorch DDP reference for `starling bench ddp`: the model of scripts/bench_train.py wrapped in
DistributedDataParallel (Gloo, 25 MB buckets, gradients overlapped with backward), started by
torchrun, each rank reading its share of the same global batches starling reads.

Timed twice: normal steps, then steps under `no_sync()` (no all-reduce); the difference of the
median step times is the communication the step waits for. Rank 0 prints one JSON object.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train import Llama  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="HF config.json of the model")
    ap.add_argument("--data", required=True, help="little-endian u32, (global batch x (ctx+1)) per step")
    ap.add_argument("--batch", type=int, required=True, help="sequences per rank")
    ap.add_argument("--ctx", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    a = ap.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    with open(a.config) as f:
        cfg = json.load(f)
    model = Llama(cfg)
    ddp = DDP(model, bucket_cap_mb=25, gradient_as_bucket_view=True)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3, betas=(0.9, 0.95), eps=1e-8, fused=True,
    )
    data = torch.from_numpy(np.fromfile(a.data, dtype="<u4").astype(np.int64))
    row = a.ctx + 1
    per = world * a.batch * row

    def batch(k):
        g = data[k * per:(k + 1) * per].view(world * a.batch, row)
        w = g[rank * a.batch:(rank + 1) * a.batch]
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()

    def step(k, sync):
        x, y = batch(k)
        t = time.perf_counter()
        if sync:
            loss = ddp(x, y)
            loss.backward()
        else:
            with ddp.no_sync():
                loss = ddp(x, y)
                loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=False)
        return time.perf_counter() - t, loss.item()

    n = a.warmup + a.steps
    synced, losses = [], []
    for k in range(n):
        dt, loss = step(k, True)
        losses.append(loss)
        if k >= a.warmup:
            synced.append(dt)
    local = []
    for k in range(n, 2 * n):
        dt, _ = step(k, False)
        if k - n >= a.warmup:
            local.append(dt)
    s, l = statistics.median(synced), statistics.median(local)
    if rank == 0:
        print(json.dumps({
            "train_tok_s": world * a.batch * a.ctx / s,
            "step_s": s,
            "no_sync_step_s": l,
            "comm_share": max(0.0, (s - l) / s),
            "first_loss": losses[0],
            "torch": torch.__version__,
        }))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
