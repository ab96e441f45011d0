#!/usr/bin/env bash
# A GPU machine check in one script (for a lent device machine; see the closing notes of #6):
# data → train `small` on CUDA (bf16) → index → serve --smoke on CUDA → bench serve on CUDA and on the
# machine's CPUs. The machine has its own torch; the binary built here runs there against it.
# Here:  cargo build --release -p starling && mkdir -p .dev && strip -o .dev/starling target/release/starling
#        (with /.dev/ in .git/info/exclude; carry .dev)
# There: bash scripts/device-check.sh [preset]     (preset: small by default; gpt2-124m works too)
set -uo pipefail
source "$(dirname "$0")/device-env.sh"
W=/tmp/w; mkdir -p $W
t=$(date +%s)
synth_tokens $W 4096
echo "=== data $(( $(date +%s) - t ))s"
t=$(date +%s)
$B train --tokens $W/tokens --preset "${1:-small}" --steps 300 --batch 32 --ctx 256 --lr 2e-3 --warmup 30 --eval-every 100 --ckpt-every 150 --device cuda --out $W/run 2>&1 | grep -v "^train " | tail -8
tail -2 $W/run/metrics.jsonl
echo "=== train cuda $(( $(date +%s) - t ))s"
$B index build --corpus $W/c --out $W/idx 2>&1 | tail -1
$B serve --model $W/run --index $W/idx --device cuda --addr 127.0.0.1:0 --smoke 2>&1 | tail -3
echo "=== bench serve cuda"
timeout 240 $B bench serve --model $W/run --index $W/idx --device cuda --clients 1,4,16,64 --rounds 3 2>&1 | tail -12
echo "=== bench serve cpu (16 cores, same machine)"
timeout 150 $B bench serve --model $W/run --index $W/idx --device cpu --clients 1,16 --rounds 2 2>&1 | tail -8
cp $W/run/loss.png $OUT/ 2>/dev/null; cp $W/run/metrics.jsonl $OUT/ 2>/dev/null
echo "=== done"
