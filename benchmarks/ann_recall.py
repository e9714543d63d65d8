"""Recall@k of the approximate and compressed FAISS indexes against exact fp32 search, with latency and memory.

    python benchmarks/ann_recall.py                        # N = 10k and 50k, D = 512, 500 queries
    python benchmarks/ann_recall.py --sizes 100000 --dim 256 --json out.json
    python benchmarks/ann_recall.py --kinds exact,flat,sqfp16,sq8,sq8-codes --sizes 1000000 --queries 200 --latency

``--data clustered`` (default): L2-normalised vectors around 1000 random centres (angular spread like a
collection of videos from many topics), queries are noisy copies of stored vectors (a caption close to
some videos). ``--data random``: i.i.d. Gaussian vectors and queries, the worst case for any ANN index
(no structure at all: in 512 dimensions the true neighbours are barely closer than the rest).
``--data cliplike``: the statistics of CLIP embeddings that matter to quantisation and ranking: video
vectors in a cone (mean cosine between two videos ~0.36), an anisotropic spectrum (variance of the i-th
principal direction ~ 1/i), 3 outlier dimensions with large values (they stretch an 8-bit range), 1000
topics; text queries from another modality (a different mean direction: the modality gap) whose
scores are tightly packed (top-1 / top-10 / top-100 ~0.56 / 0.51 / 0.46, median 0.19).

Kinds (``--kinds``): ``exact`` (the Searcher's exact search, ``hybridtower.index.exact``, kernel chosen by
timing), the ANN kinds of ``hybridtower.index.ann`` (``flat``, ``ivf``, ``hnsw``, ``sqfp16``, ``sq8``) and
``sq8-codes`` (sq8 without its exact re-scoring). Reports recall@1 / @10 / @100 against exact fp32 search
(fraction of the exact top-k found), build time, queries per second (one query at a time, as the service
issues them, each index searched as the Searcher does: FAISS on one thread or all, whichever its
calibration at open found faster) and memory: the bytes of vectors a query scans in RAM and the anonymous
memory the loaded index takes (``RssAnon`` grown by ``load_ann`` of the saved file and one search, in a
fresh process; sq8's file, fp32 copy included, is memory-mapped, so its memory is file-backed page cache).
``--latency`` adds, measured round-robin over every kind at each N (so machine load hits all alike):
median ms per query for batches of 1, 8 and 64 queries, and each kind's own floor (the bytes it scans
divided by the read bandwidth of ``hybridtower.analysis.bandwidth``, measured in the same run).
Figures go into docs/index.md and docs/efficiency.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _normed(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall(got: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(g[:k]) & set(t[:k])) / k for g, t in zip(got, truth)]))


def cliplike(n: int, dim: int, queries: int, rng, topics: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """See the module doc (``--data cliplike``)."""
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    scale = (1.0 + np.arange(dim)) ** -0.5
    scale /= np.sqrt(np.mean(scale**2))

    def aniso(z):
        return (z * scale) @ basis.T

    mean_v = _normed(rng.standard_normal((1, dim)))[0]
    mean_t = _normed(0.6 * mean_v[None] + _normed(rng.standard_normal((1, dim))))[0]
    outliers = rng.choice(dim, 3, replace=False)
    centres = aniso(rng.standard_normal((topics, dim))) / np.sqrt(dim)
    content = centres[rng.integers(0, topics, n)] + 0.8 * aniso(rng.standard_normal((n, dim))) / np.sqrt(dim)
    v = 0.9 * mean_v + content
    v[:, outliers] += 0.15 * (1 + 0.3 * rng.standard_normal((n, 3)))
    target = rng.integers(0, n, queries)
    t = 1.0 * mean_t + 0.7 * content[target] + 1.6 * aniso(rng.standard_normal((queries, dim))) / np.sqrt(dim)
    t[:, outliers] += 0.15
    return _normed(v), _normed(t)


def make_data(n: int, dim: int, queries: int, data: str, rng) -> tuple[np.ndarray, np.ndarray]:
    if data == "cliplike":
        return cliplike(n, dim, queries, rng)
    if data == "random":
        return _normed(rng.standard_normal((n, dim))), _normed(rng.standard_normal((queries, dim)))
    centres = _normed(rng.standard_normal((1000, dim)))
    x = _normed(centres[rng.integers(0, len(centres), n)] + 0.7 * rng.standard_normal((n, dim)) / np.sqrt(dim))
    q = _normed(x[rng.integers(0, n, queries)] + 0.7 * rng.standard_normal((queries, dim)) / np.sqrt(dim))
    return x, q


def _rss_anon() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def build(kind: str, x: np.ndarray):
    from hybridtower.index.ann import build_ann
    from hybridtower.index.exact import ExactIndex

    if kind == "exact":
        return ExactIndex(x, "auto")
    if kind == "sq8-codes":
        return build_ann(x, "sq8", {"refine": 0})
    return build_ann(x, kind)


def saved_and_loaded(kind: str, index, n: int, folder: Path):
    """(index read back from its file as the Searcher reads it, anonymous bytes the load took, file bytes)."""
    from hybridtower.index.ann import load_ann, resolve_params, save_ann

    ann_kind, params = ("sq8", {"refine": 0}) if kind == "sq8-codes" else (kind, None)
    path = folder / f"{kind}.index"
    save_ann(index, path)
    params = resolve_params(ann_kind, params, n)
    return load_ann(path, ann_kind, params), _anon_bytes_of_load(path, ann_kind, params), path.stat().st_size


_LOAD_PROBE = """
import json, sys
import numpy as np
from hybridtower.index.ann import load_ann, search_ann
def anon():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("RssAnon:"))
path, kind, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
import faiss  # noqa: F401  (its own memory is not the index's)
before = anon()
index = load_ann(path, kind, params)
search_ann(index, np.ones((1, index.d), np.float32), 10)
print(anon() - before)
"""


def _anon_bytes_of_load(path: Path, kind: str, params: dict) -> int | None:
    """Anonymous memory (RssAnon) that loading the file and one search take, in a fresh process (in this
    one the allocator reuses freed memory and the figure would mean nothing)."""
    import subprocess

    try:
        out = subprocess.run([sys.executable, "-c", _LOAD_PROBE, str(path), kind, json.dumps(params)],
                             capture_output=True, text=True, check=True, timeout=600)
        return max(0, int(out.stdout.strip().splitlines()[-1]))
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


def scanned_bytes(kind: str, n: int, dim: int, k: int = 10) -> int:
    """Bytes of stored data one query reads in RAM (codes, or fp32 rows; sq8: + the re-scored fp32 rows)."""
    from hybridtower.index.ann import DEFAULTS, bytes_per_vector

    if kind in ("exact", "flat", "ivf", "hnsw"):
        return n * 4 * dim if kind in ("exact", "flat") else 0  # ivf / hnsw: depends on the walk, not reported
    extra = int(DEFAULTS["sq8"]["refine"] * k * 4 * dim) if kind == "sq8" else 0
    return n * bytes_per_vector("sq8" if kind == "sq8-codes" else kind, dim) + extra


def _per_query_ms(fn, batch: int, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3 / batch)
    return out


def run(n: int, dim: int, queries: int, data: str, seed: int = 0, kinds=("flat", "ivf", "hnsw", "sqfp16", "sq8"),
        latency: bool = False, repeats: int = 7, read_gbps: float | None = None) -> list[dict]:
    from hybridtower.index.ann import build_ann, resolve_params, search_ann

    rng = np.random.default_rng(seed)
    x, q = make_data(n, dim, queries, data, rng)
    _, truth = search_ann(build_ann(x, "flat"), q, 100)
    rows, loaded = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            t0 = time.perf_counter()
            index = build(kind, x)
            build_s = time.perf_counter() - t0
            anon = file_bytes = None
            threads = None
            if kind != "exact":
                from hybridtower.index.ann import ThreadedSearch

                index, anon, file_bytes = saved_and_loaded(kind, index, n, Path(tmp))
                index = ThreadedSearch(index)  # as the Searcher runs it: one FAISS thread or all, by timing
                threads = index.calibrate()["threads"]
            loaded[kind] = index
            kk = min(100, n)
            t0 = time.perf_counter()
            got = np.concatenate([search_ann(index, q[i : i + 1], kk)[1] for i in range(len(q))])
            qps = len(q) / (time.perf_counter() - t0)
            params = {} if kind in ("exact", "sq8-codes") else resolve_params(kind, None, n)
            if kind == "exact":
                params = {"kernel": index.kernel}
            elif kind == "sq8-codes":
                params = {"refine": 0}
            if threads:
                params = {**params, "threads": threads}
            rows.append({
                "kind": kind, "n": n, "dim": dim, "queries": queries, "data": data,
                "params": params, "build_s": round(build_s, 2), "qps": round(qps, 1),
                "recall@1": round(recall(got, truth, 1), 4), "recall@10": round(recall(got, truth, 10), 4),
                "recall@100": round(recall(got, truth, 100), 4),
                "scanned_bytes": scanned_bytes(kind, n, dim), "fp32_bytes": n * dim * 4,
                "anon_bytes_after_load": anon if kind != "exact" else x.nbytes, "file_bytes": file_bytes,
            })
            print(json.dumps(rows[-1]), flush=True)
        if latency:
            for batch in (1, 8, 64):
                qb = np.ascontiguousarray(q[:batch])
                fns = {kind: (lambda ix=ix, qb=qb: search_ann(ix, qb, 10)) for kind, ix in loaded.items()}
                for fn in fns.values():
                    fn()
                samples = {kind: [] for kind in fns}
                reps = repeats if batch == 1 else max(3, repeats // 2)
                for r in range(reps):
                    for kind in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                        samples[kind] += _per_query_ms(fns[kind], batch, 1)
                for row in rows:
                    row[f"ms_per_query_b{batch}"] = round(statistics.median(samples[row["kind"]]), 4)
            for row in rows:
                if read_gbps and row["scanned_bytes"]:
                    row["floor_ms"] = round(row["scanned_bytes"] / (read_gbps * 1e9) * 1e3, 4)
                    row["vs_floor_b1"] = round(row["ms_per_query_b1"] / row["floor_ms"], 3)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,50000", help="comma-separated collection sizes")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--data", choices=["clustered", "random", "cliplike"], default="clustered", help="see the module doc")
    p.add_argument("--kinds", default="flat,ivf,hnsw,sqfp16,sq8",
                   help="comma-separated: exact, flat, ivf, hnsw, sqfp16, sq8, sq8-codes")
    p.add_argument("--latency", action="store_true", help="also time batches of 1, 8, 64 queries round-robin")
    p.add_argument("--repeats", type=int, default=7, help="round-robin rounds of the latency measurement")
    p.add_argument("--threads", type=int, default=None, help="FAISS OpenMP threads (default: all cores)")
    p.add_argument("--json", help="write all rows to this file")
    args = p.parse_args(argv)
    if args.threads:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    read = None
    if args.latency:
        from hybridtower.analysis.bandwidth import measure_copy_bandwidth, measure_read_bandwidth

        read, copy = measure_read_bandwidth(mbytes=1024), measure_copy_bandwidth(mbytes=512)
        print(f"read scan: {read['best_gbps']:.1f} GB/s best (the floors below); copy (read + write): "
              f"{copy['best_gbps']:.1f} GB/s best; load average {os.getloadavg()[0]:.1f}", flush=True)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    rows = []
    for n in (int(float(s)) for s in args.sizes.split(",")):
        rows += run(n, args.dim, args.queries, args.data, kinds=kinds, latency=args.latency, repeats=args.repeats,
                    read_gbps=read and read["best_gbps"])
    print("\n| N | data | index | params | recall@1 | recall@10 | recall@100 | build s | queries/s | scanned MB | RAM MB (anon) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items() if k != "requested") or "-"
        print(f"| {r['n']:,} | {r['data']} | {r['kind']} | {params} | {r['recall@1']:.3f} | {r['recall@10']:.3f} | "
              f"{r['recall@100']:.3f} | {r['build_s']:.1f} | {r['qps']:.0f} | {r['scanned_bytes'] / 1e6:.0f} | "
              f"{(r['anon_bytes_after_load'] or 0) / 1e6:.0f} |")
    if args.latency:
        print("\n| N | index | ms/query, 1 | ms/query, batch 8 | ms/query, batch 64 | own floor ms | 1 / floor |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['n']:,} | {r['kind']} | {r['ms_per_query_b1']:.3f} | {r['ms_per_query_b8']:.3f} | "
                  f"{r['ms_per_query_b64']:.3f} | {r.get('floor_ms', float('nan')):.3f} | {r.get('vs_floor_b1', float('nan')):.2f} |")
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cpu_count": os.cpu_count(), "read_bandwidth": read, "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
