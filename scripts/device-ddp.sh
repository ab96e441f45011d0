#!/usr/bin/env bash
# The NCCL check of the data-parallel trainer on a lent GPU machine (not yet run: no machine was
# lent when it was written). One rank on NCCL must train like the plain CUDA run: same losses
# within bf16 noise, all-reduce time logged per step; then the same with ZeRO-1.
# Here:  cargo build --release -p starling && mkdir -p .dev && strip -o .dev/starling target/release/starling
#        (with /.dev/ in .git/info/exclude; carry .dev)
# There: bash scripts/device-ddp.sh [preset]     (small by default)
set -uo pipefail
source "$(dirname "$0")/device-env.sh"
python3 -c 'import torch; print("nccl", torch.cuda.nccl.version())'
W=/tmp/w; mkdir -p $W
synth_tokens $W 4096
T="--tokens $W/tokens --preset ${1:-small} --steps 100 --batch 32 --ctx 256 --lr 2e-3 --warmup 10 --eval-every 50 --ckpt-every 50 --device cuda"
for mode in plain nccl nccl-zero1; do
  t=$(date +%s)
  case $mode in
    plain) $B train $T --out $W/$mode 2>&1 | tail -2 ;;
    nccl) $B launch --nproc 1 -- train $T --out $W/$mode 2>&1 | tail -3 ;;
    nccl-zero1) $B launch --nproc 1 -- train $T --shard-optimizer --out $W/$mode 2>&1 | tail -3 ;;
  esac
  echo "=== $mode $(( $(date +%s) - t ))s; last step:"; tail -1 $W/$mode/metrics.jsonl
  ls $W/$mode/ckpt-00000100
done
python3 - <<'PY'
import json
runs = {m: [json.loads(l) for l in open(f"/tmp/w/{m}/metrics.jsonl")] for m in ["plain", "nccl", "nccl-zero1"]}
for m, r in runs.items():
    tps = sorted(x["tokens_per_s"] for x in r[5:])[len(r[5:]) // 2]
    comm = [x.get("comm_s", 0) for x in r[5:]]
    print(f"{m:12s} loss@100 {r[-1]['loss']:.4f}  median tok/s {tps:,.0f}  mean comm {1e3*sum(comm)/len(comm):.2f} ms/step")
PY
echo "=== done"
