#!/usr/bin/env python3
"""PyTorch reference for `starling bench train`: the same architecture and config as starling's
model, written the way PyTorch is written well (nn.RMSNorm, scaled_dot_product_attention with
causal masking and GQA, fused AdamW with decay/no-decay groups, foreach clipping), run eager or
under torch.compile on the token batches starling wrote, with the same threads.

Prints one JSON object: train and forward tokens/s (median step after warm-up) and losses. With
--profile, two more training steps run under torch.profiler and its op table (most self time first)
goes to stderr: the reference's side of starling-train's `step_profile ... ops`.

With --serve it builds the model, prints {"ready": true, ...} and then answers commands on stdin,
one JSON line each: `train N` / `forward N` run the next N steps and reply their seconds, `quit`
ends. `starling bench train` drives starling and the references this way in alternating rounds,
so a slow minute of the machine falls on every side alike.
"""
import argparse
import contextlib
import json
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Rope(nn.Module):
    def __init__(self, head_dim, ctx, theta):
        super().__init__()
        inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
        freqs = torch.outer(torch.arange(ctx).float(), inv)
        emb = torch.cat([freqs, freqs], dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, x):
        t = x.shape[2]
        x1, x2 = x.chunk(2, dim=-1)
        return x * self.cos[:t] + torch.cat([-x2, x1], dim=-1) * self.sin[:t]


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, self.h, self.kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
        self.hd = d // self.h
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, self.kv * self.hd, bias=False)
        self.v_proj = nn.Linear(d, self.kv * self.hd, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, h, rope):
        b, t, _ = h.shape
        # Heads as -1: under tensor parallelism (bench_ddp.py --mode tp) a rank holds 1/tp of them.
        q = rope(self.q_proj(h).view(b, t, -1, self.hd).transpose(1, 2))
        k = rope(self.k_proj(h).view(b, t, -1, self.hd).transpose(1, 2))
        v = self.v_proj(h).view(b, t, -1, self.hd).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.kv != self.h)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class Mlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, ff = c["hidden_size"], c["intermediate_size"]
        self.gate_proj = nn.Linear(d, ff, bias=False)
        self.up_proj = nn.Linear(d, ff, bias=False)
        self.down_proj = nn.Linear(ff, d, bias=False)

    def forward(self, h):
        return self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class LlamaBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.input_layernorm = nn.RMSNorm(d, eps=c["rms_norm_eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = nn.RMSNorm(d, eps=c["rms_norm_eps"])
        self.mlp = Mlp(c)

    def forward(self, x, rope):
        x = x + self.self_attn(self.input_layernorm(x), rope)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.embed_tokens = nn.Embedding(c["vocab_size"], d)
        self.layers = nn.ModuleList(LlamaBlock(c) for _ in range(c["num_hidden_layers"]))
        self.norm = nn.RMSNorm(d, eps=c["rms_norm_eps"])
        self.lm_head = nn.Linear(d, c["vocab_size"], bias=False)
        if c.get("tie_word_embeddings"):
            self.lm_head.weight = self.embed_tokens.weight
        self.rope = Rope(d // c["num_attention_heads"], c["max_position_embeddings"], c.get("rope_theta", 10000.0))
        for p in self.parameters():
            nn.init.normal_(p, std=0.02) if p.dim() >= 2 else None

    def forward(self, ids, targets):
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, self.rope)
        logits = self.lm_head(self.norm(x))
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(0, 1))


class Gpt2Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, self.h = c["d"], c["heads"]
        self.ln_1 = nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d)
        self.attn_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.c_fc = nn.Linear(d, c["ff"])
        self.mlp_proj = nn.Linear(c["ff"], d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class Gpt2(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wte = nn.Embedding(c["vocab"], c["d"])
        self.wpe = nn.Embedding(c["ctx"], c["d"])
        self.h = nn.ModuleList(Gpt2Block(c) for _ in range(c["layers"]))
        self.ln_f = nn.LayerNorm(c["d"])
        for p in self.parameters():
            nn.init.normal_(p, std=0.02) if p.dim() >= 2 else None

    def forward(self, ids, targets):
        t = ids.shape[1]
        x = self.wte(ids) + self.wpe(torch.arange(t, device=ids.device))
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=["llama", "gpt2"], required=True)
    ap.add_argument("--config", required=True, help="JSON model config")
    ap.add_argument("--data", required=True, help="little-endian u32 tokens, (batch x (ctx+1)) per step")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--ctx", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--mode", choices=["eager", "compile"], default="eager")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--profile", action="store_true", help="op table of two more steps on stderr")
    ap.add_argument("--serve", action="store_true", help="answer `train N` / `forward N` / `quit` on stdin")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    cfg = json.loads(a.config)
    dev = torch.device(a.device)
    model = (Llama(cfg) if a.arch == "llama" else Gpt2(cfg)).to(dev)
    # On CUDA, matrix products in bf16 (autocast) with fp32 weights, as starling's compute kind.
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if a.device == "cuda"
           else contextlib.nullcontext())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=a.lr, betas=(0.9, 0.95), eps=1e-8, fused=True,
    )
    run = torch.compile(model) if a.mode == "compile" else model
    data = torch.from_numpy(np.fromfile(a.data, dtype="<u4").astype(np.int64)).to(dev)
    per = a.batch * (a.ctx + 1)
    total = a.warmup + a.steps

    def batch(k):
        w = data[k * per:(k + 1) * per].view(a.batch, a.ctx + 1)
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()

    def train_step(k):
        x, y = batch(k)
        with amp:
            loss = run(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def forward_step(k):
        x, y = batch(k)
        with torch.no_grad(), amp:
            return run(x, y).item()

    info = {
        "params": sum(p.numel() for p in model.parameters()),
        "device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if a.serve:
        serve(a, total, train_step, forward_step, info)
        return
    times, losses = [], []
    t_warm = time.perf_counter()
    for k in range(total):
        t = time.perf_counter()
        losses.append(train_step(k).item())
        if k >= a.warmup:
            times.append(time.perf_counter() - t)
        elif k == a.warmup - 1:
            warm_s = time.perf_counter() - t_warm
    if a.profile:
        from torch.profiler import ProfilerActivity, profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if a.device == "cuda" else [])
        with profile(activities=acts) as prof:
            for k in range(2):
                loss = train_step(k)
            loss.item()
        key = "self_cuda_time_total" if a.device == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=30), file=sys.stderr)
    fwd = []
    for k in range(total):
        t = time.perf_counter()
        forward_step(k)
        if k >= a.warmup:
            fwd.append(time.perf_counter() - t)
    tokens = a.batch * a.ctx
    print(json.dumps({
        "train_tok_s": tokens / statistics.median(times),
        "forward_tok_s": tokens / statistics.median(fwd),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "warmup_s": warm_s if a.warmup else 0.0,
        "peak_mem": torch.cuda.max_memory_allocated() if a.device == "cuda" else None,
        **info,
    }))


def serve(a, total, train_step, forward_step, info):
    """Answers `train N` / `forward N` / `quit` on stdin, one JSON line per command."""
    print(json.dumps({"ready": True, **info}), flush=True)
    done = {"train": 0, "forward": 0}
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        if len(words) != 2 or words[0] not in done or not words[1].isdigit():
            print(json.dumps({"error": f"unknown command {line.strip()!r}"}), flush=True)
            continue
        what, n = words[0], int(words[1])
        times, loss = [], float("nan")
        for _ in range(n):
            k = done[what] % total
            t = time.perf_counter()
            loss = train_step(k).item() if what == "train" else forward_step(k)
            times.append(time.perf_counter() - t)
            done[what] += 1
        print(json.dumps({
            "times": times,
            "loss": loss,
            "peak_mem": torch.cuda.max_memory_allocated() if a.device == "cuda" else None,
        }), flush=True)


if __name__ == "__main__":
    main()
