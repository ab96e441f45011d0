#!/usr/bin/env bash
# Training speed on a lent GPU machine (issue 16), one script, under 8 minutes, everything under $OUT:
#  1. `starling bench train --device cuda`: starling vs scripts/bench_train.py eager and torch.compile
#     on the same GPU, bf16 (autocast on the PyTorch side): gpt2-124m 16 x 1024, llama-1b 8 x 1024 —
#     tokens/s, MFU against the GPU's dense bf16 peak, peak memory, last losses;
#  2. the trainer itself (`starling train --device cuda`, no host read inside a step, --log-every 10)
#     on gpt2-124m, CUDA graphs on (the default there) and off: tokens/s and MFU from metrics.jsonl,
#     the largest loss difference between the two over the first 20 steps (item 4 wants <= 1e-5),
#     and step 30 under PyTorch's profiler (--profile-step: kernels per step, host syncs in the
#     step, the GPU's idle share, top kernels);
#  3. scripts/device-ddp.sh: one NCCL rank, plain and ZeRO-1 (the NCCL path's first run);
#  4. `starling bench serve --device cuda` on that gpt2-124m run (issue 20's GPU row, beside the README's
#     CPU table; grounding off). With it the script takes ~10 minutes.
# Here:  cargo build --release -p starling && mkdir -p .dev && strip -o .dev/starling target/release/starling
#        (with /.dev/ in .git/info/exclude; carry .dev)
# There: bash scripts/device-bench.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
{
source "$(dirname "$0")/device-env.sh"
echo "=== bench train --device cuda"
t=$(date +%s)
timeout 330 $B bench train --device cuda --steps 12 --warmup 4 --python python3 --dir /tmp/bench-train 2>&1 | grep -v "^warning"
echo "=== $(( $(date +%s) - t ))s"
W=/tmp/w; mkdir -p $W
synth_tokens $W 8192
echo "=== starling train gpt2-124m 16 x 1024 (the trainer, --log-every 10), CUDA graphs on and off"
t=$(date +%s)
timeout 120 $B train --tokens $W/tokens --preset gpt2-124m --steps 40 --batch 16 --ctx 1024 --warmup 5 \
  --eval-every 1000 --ckpt-every 1000 --device cuda --cuda-graphs on --profile-step 30 --out $W/run124 2>&1 \
  | grep -v "^train " | tail -3
timeout 120 $B train --tokens $W/tokens --preset gpt2-124m --steps 40 --batch 16 --ctx 1024 --warmup 5 \
  --eval-every 1000 --ckpt-every 1000 --device cuda --cuda-graphs off --out $W/run124-eager 2>&1 \
  | grep -v "^train " | tail -3
head -45 $W/run124/profile.md; cp $W/run124/profile.md "$OUT/profile-gpt2-124m.md"
python3 - <<'PY'
import json
runs = {}
for name, d in (("graphs on", "run124"), ("graphs off", "run124-eager")):
    try:
        r = [json.loads(l) for l in open(f"/tmp/w/{d}/metrics.jsonl")]
    except OSError as e:
        print(f"trainer gpt2-124m, {name}: no metrics ({e})"); continue
    runs[name] = r
    tail = r[10:] or r
    tps = sorted(x["tokens_per_s"] for x in tail)[len(tail) // 2]
    mfu = sorted(x["mfu"] for x in tail)[len(tail) // 2]
    print(f"trainer gpt2-124m, {name}: median {tps:,.0f} tokens/s, MFU {100*mfu:.1f}%, loss {r[-1]['loss']:.4f} at step {r[-1]['step']}")
if len(runs) == 2:
    a, b = runs["graphs on"][:20], runs["graphs off"][:20]
    d = max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b))
    print(f"largest loss difference, graphs on vs off, steps 1-20: {d:.2e} ({'ok' if d <= 1e-5 else 'OVER 1e-5'})")
PY
echo "=== $(( $(date +%s) - t ))s"
echo "=== device-ddp.sh"
timeout 120 bash scripts/device-ddp.sh 2>&1 | tail -8
echo "=== bench serve --device cuda, gpt2-124m"
t=$(date +%s)
timeout 150 $B bench serve --model $W/run124 --index /nonexistent --device cuda --clients 1,4,16,64 \
  --rounds 2 2>&1 | tail -12
echo "=== $(( $(date +%s) - t ))s"
} 2>&1 | tee "$OUT/device-bench.txt"
