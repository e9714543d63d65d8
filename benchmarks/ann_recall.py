"""Recall@k of the approximate FAISS indexes (IVF, HNSW at their default settings) against exact search.

    python benchmarks/ann_recall.py                        # N = 10k and 50k, D = 512, 500 queries
    python benchmarks/ann_recall.py --sizes 100000 --dim 256 --json out.json

``--data clustered`` (default): L2-normalised vectors around 1000 random centres (angular spread like a
collection of videos from many topics), queries are noisy copies of stored vectors (a caption close to
some videos). ``--data random``: i.i.d. Gaussian vectors and queries, the worst case for any ANN index
(no structure at all: in 512 dimensions the true neighbours are barely closer than the rest).
Reports recall@1 / @10 / @100 (fraction of the exact top-k found), build time and queries per second
(single query at a time, as the service issues them). Figures go into docs/index.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def _normed(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall(got: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(g[:k]) & set(t[:k])) / k for g, t in zip(got, truth)]))


def make_data(n: int, dim: int, queries: int, data: str, rng) -> tuple[np.ndarray, np.ndarray]:
    if data == "random":
        return _normed(rng.standard_normal((n, dim))), _normed(rng.standard_normal((queries, dim)))
    centres = _normed(rng.standard_normal((1000, dim)))
    x = _normed(centres[rng.integers(0, len(centres), n)] + 0.7 * rng.standard_normal((n, dim)) / np.sqrt(dim))
    q = _normed(x[rng.integers(0, n, queries)] + 0.7 * rng.standard_normal((queries, dim)) / np.sqrt(dim))
    return x, q


def run(n: int, dim: int, queries: int, data: str, seed: int = 0) -> list[dict]:
    from hybridtower.index.ann import build_ann, resolve_params, search_ann

    rng = np.random.default_rng(seed)
    x, q = make_data(n, dim, queries, data, rng)
    exact = build_ann(x, "flat")
    _, truth = search_ann(exact, q, 100)
    rows = []
    for kind in ("flat", "ivf", "hnsw"):
        t0 = time.perf_counter()
        index = build_ann(x, kind)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = np.concatenate([search_ann(index, q[i : i + 1], 100)[1] for i in range(len(q))])
        qps = len(q) / (time.perf_counter() - t0)
        rows.append({
            "kind": kind, "n": n, "dim": dim, "queries": queries, "data": data,
            "params": resolve_params(kind, None, n), "build_s": round(build_s, 2), "qps": round(qps, 1),
            "recall@1": round(recall(got, truth, 1), 4), "recall@10": round(recall(got, truth, 10), 4),
            "recall@100": round(recall(got, truth, 100), 4),
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,50000", help="comma-separated collection sizes")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--data", choices=["clustered", "random"], default="clustered", help="see the module doc")
    p.add_argument("--threads", type=int, default=None, help="FAISS OpenMP threads (default: all cores)")
    p.add_argument("--json", help="write all rows to this file")
    args = p.parse_args(argv)
    if args.threads:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        rows += run(n, args.dim, args.queries, args.data)
    print("\n| N | data | index | params | recall@1 | recall@10 | recall@100 | build s | queries/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items() if k != "requested") or "-"
        print(f"| {r['n']:,} | {r['data']} | {r['kind']} | {params} | {r['recall@1']:.3f} | {r['recall@10']:.3f} | "
              f"{r['recall@100']:.3f} | {r['build_s']:.1f} | {r['qps']:.0f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cpu_count": os.cpu_count(), "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
