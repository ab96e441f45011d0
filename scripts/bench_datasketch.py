"""datasketch MinHashLSH on the texts starling's near-dup stage sees (one JSON string per line).

Same shingling (character 5-grams of the given text), same num_perm and LSH (bands, rows).
Prints one JSON object: throughput and, when --eval, per-post predictions (query before insert).
"""
import json, sys, time, argparse
from datasketch import MinHash, MinHashLSH

ap = argparse.ArgumentParser()
ap.add_argument("texts")
ap.add_argument("--num-perm", type=int, default=128)
ap.add_argument("--threshold", type=float, default=0.8)
ap.add_argument("--bands", type=int, required=True)
ap.add_argument("--rows", type=int, required=True)
ap.add_argument("--k", type=int, default=5)
ap.add_argument("--eval", action="store_true", help="insert every post and report query hits")
a = ap.parse_args()

texts = [json.loads(l) for l in open(a.texts, encoding="utf-8")]
lsh = MinHashLSH(threshold=a.threshold, num_perm=a.num_perm, params=(a.bands, a.rows))
flags = []
t0 = time.perf_counter()
for i, t in enumerate(texts):
    n = len(t)
    sh = {t} if n <= a.k else {t[j:j + a.k] for j in range(n - a.k + 1)}
    m = MinHash(num_perm=a.num_perm)
    m.update_batch([s.encode("utf-8") for s in sh])
    hit = bool(lsh.query(m))
    if a.eval:
        flags.append(hit)
        lsh.insert(i, m)
    elif not hit:
        lsh.insert(i, m)
dt = time.perf_counter() - t0
print(json.dumps({"posts": len(texts), "seconds": dt, "posts_per_s": len(texts) / dt, "flags": flags if a.eval else None}))
