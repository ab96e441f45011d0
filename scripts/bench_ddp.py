#!/usr/bin/env python3
"""PyTorch references for `starling bench ddp`, started by torchrun on Gloo, each on the model of
scripts/bench_train.py and the same global batches starling reads:

- `--mode ddp`: DistributedDataParallel (25 MB buckets, gradients overlapped with backward), each
  rank its share of a batch. Timed twice: normal steps, then steps under `no_sync()` (no
  all-reduce); the difference of the median step times is the communication the step waits for.
- `--mode fsdp`: FSDP2 (`fully_shard` on every block, then the root), each rank its share.
- `--mode tp`: tensor parallel as torchtitan applies it (`parallelize_module`: Q, K, V, gate, up
  column-wise, O and down row-wise, sequence parallel norms, vocabulary-parallel embedding, head
  and loss (`loss_parallel`), as starling splits them) over all ranks, every rank the whole batch.

Rank 0 prints one JSON object.
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
    ap.add_argument("--mode", choices=["ddp", "fsdp", "tp"], default="ddp")
    a = ap.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    with open(a.config) as f:
        cfg = json.load(f)
    model = Llama(cfg)
    if a.mode == "ddp":
        ddp = DDP(model, bucket_cap_mb=25, gradient_as_bucket_view=True)
    elif a.mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.layers:
            fully_shard(block)
        ddp = fully_shard(model)
    else:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import Replicate, Shard
        from torch.distributed.tensor.parallel import (
            ColwiseParallel,
            PrepareModuleInput,
            RowwiseParallel,
            SequenceParallel,
            parallelize_module,
        )

        mesh = init_device_mesh("cpu", (world,))
        tied = model.lm_head.weight is model.embed_tokens.weight
        parallelize_module(model, mesh, {
            "embed_tokens": RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1)),
            "norm": SequenceParallel(),
            "lm_head": ColwiseParallel(
                input_layouts=Shard(1), output_layouts=Shard(-1), use_local_output=False),
        })
        if tied:
            # Both hold the vocabulary's rows (Shard(0)): one parameter, as in starling.
            model.lm_head.weight = model.embed_tokens.weight
        plan = {
            "input_layernorm": SequenceParallel(),
            "self_attn": PrepareModuleInput(
                input_layouts=(Shard(1), None), desired_input_layouts=(Replicate(), None)),
            "post_attention_layernorm": SequenceParallel(),
            "mlp": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
        }
        plan.update({f"self_attn.{n}": ColwiseParallel() for n in ["q_proj", "k_proj", "v_proj"]})
        plan.update({f"mlp.{n}": ColwiseParallel() for n in ["gate_proj", "up_proj"]})
        plan["self_attn.o_proj"] = RowwiseParallel(output_layouts=Shard(1))
        plan["mlp.down_proj"] = RowwiseParallel(output_layouts=Shard(1))
        for block in model.layers:
            parallelize_module(block, mesh, plan)
        ddp = model
    def adamw(params):
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(
            [g for g in groups if g["params"]], lr=1e-3, betas=(0.9, 0.95), eps=1e-8, fused=True,
        )

    if a.mode == "tp":
        # Split (DTensor) and replicated (plain) parameters do not mix in one foreach op.
        from torch.distributed.tensor import DTensor

        split = [p for p in model.parameters() if isinstance(p, DTensor)]
        replicated = [p for p in model.parameters() if not isinstance(p, DTensor)]
        opts = [adamw(ps) for ps in (split, replicated) if ps]
    else:
        opts = [adamw(list(model.parameters()))]

    def clip(max_norm=1.0):
        if a.mode != "tp":
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm, foreach=True)
            return
        # The global norm: sharded parameters' squares summed over ranks, replicated ones once.
        sharded = [p for p in split if p.placements[0].is_shard()]
        whole = [p.grad.to_local() for p in split if not p.placements[0].is_shard()]
        whole += [p.grad for p in replicated]
        sq = torch.stack([(p.grad.to_local() ** 2).sum() for p in sharded]).sum()
        dist.all_reduce(sq)
        sq = sq + torch.stack([(g ** 2).sum() for g in whole]).sum()
        scale = torch.clamp(max_norm / (sq.sqrt() + 1e-6), max=1.0)
        for p in split:
            p.grad.to_local().mul_(scale)
        for p in replicated:
            p.grad.mul_(scale)
    data = torch.from_numpy(np.fromfile(a.data, dtype="<u4").astype(np.int64))
    row = a.ctx + 1
    # Tensor parallel: every rank reads the whole batch of `--batch` sequences.
    readers, reader = (1, 0) if a.mode == "tp" else (world, rank)
    per = readers * a.batch * row

    def batch(k):
        g = data[k * per:(k + 1) * per].view(readers * a.batch, row)
        w = g[reader * a.batch:(reader + 1) * a.batch]
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()

    def step(k, sync):
        x, y = batch(k)
        t = time.perf_counter()
        if a.mode == "tp":
            from torch.distributed.tensor.parallel import loss_parallel

            with loss_parallel():
                loss = ddp(x, y)
                loss.backward()
            loss = loss.full_tensor() if hasattr(loss, "full_tensor") else loss
        elif sync or a.mode != "ddp":
            loss = ddp(x, y)
            loss.backward()
        else:
            with ddp.no_sync():
                loss = ddp(x, y)
                loss.backward()
        clip()
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=False)
        return time.perf_counter() - t, loss.item()

    # The peak reported is the steps' (as starling's summary), not set-up's.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    n = a.warmup + a.steps
    synced, losses = [], []
    for k in range(n):
        dt, loss = step(k, True)
        losses.append(loss)
        if k >= a.warmup:
            synced.append(dt)
    s = statistics.median(synced)
    share, l = None, None
    if a.mode == "ddp":
        local = []
        for k in range(n, 2 * n):
            dt, _ = step(k, False)
            if k - n >= a.warmup:
                local.append(dt)
        l = statistics.median(local)
        share = max(0.0, (s - l) / s)
    peak_kb = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                peak_kb = int(line.split()[1])
    if rank == 0:
        print(json.dumps({
            "train_tok_s": readers * a.batch * a.ctx / s,
            "step_s": s,
            "no_sync_step_s": l,
            "comm_share": share,
            "first_loss": losses[0],
            "peak_rss_mb": peak_kb / 1024,
            "torch": torch.__version__,
        }))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
