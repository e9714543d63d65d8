#!/usr/bin/env python
"""Exact search against the memory-bandwidth floor, timed through the Searcher API, side by side.

    python benchmarks/search_bound.py                               # N = 1k, 10k, 100k, 1M; D = 512
    python benchmarks/search_bound.py --sizes 1M --repeats 15 --json search_bound.json

For each gallery size N (random unit vectors, D = 512, fp32: a query must read N x D x 4 bytes) it times,
in one round-robin (a, b, c, ..., c, b, a, ...: drift in machine load hits every entry alike):

- ``read scan``: ``torch.sum`` over the gallery itself: the read-only floor at this N (for N >= 100k the
  gallery is far larger than the caches; below that it partly sits in cache, and so does the search);
- ``Searcher.search_vector`` and ``Searcher.search(text, query_vector=...)``: the path ``hybridtower
  search`` / ``serve`` run, with the exact kernel the Searcher chose when it opened (its calibration is
  printed);
- every exact kernel of ``hybridtower.index.exact`` on the same array (``torch``, ``numpy``, ``faiss``,
  ``blocked``), FAISS ``IndexFlatIP.search`` (the searcher's path before this benchmark existed) and
  ``torch.topk(X @ q)`` (the efficiency benchmark's path).

Before the sizes it measures a read scan and a copy of 1 GiB / 512 MiB arrays
(``hybridtower.analysis.bandwidth``) and prints both. Reported: median and best ms, the ratio of each
median to the read scan's median at the same N, and the load average before and after (the machine may
be shared: ratios measured side by side are the figures to compare, not absolute times).
The Searcher is built in memory over the gallery with a random-weight ``pig-tiny`` text tower (the
query vector is given, so the text model is not run in the timed calls).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def _sizes(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        mult = {"k": 1000, "m": 1_000_000}.get(part[-1:], 1)
        out.append(int(float(part.rstrip("km")) * mult))
    return out


def random_unit(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 65536):
        b = rng.standard_normal((min(65536, n - s), d), dtype=np.float32)
        x[s : s + len(b)] = b / np.linalg.norm(b, axis=1, keepdims=True)
    return x


def make_searcher(vectors: np.ndarray, model, kernel: str = "auto"):
    """A Searcher over ``vectors`` held in memory (what Searcher.open builds from an index folder)."""
    from hybridtower.index import store
    from hybridtower.index.searcher import Searcher

    n, d = vectors.shape
    entries = [store.Entry(i, f"videos/{i}.mp4", f"{i}.mp4", 0, 0, "", "seg", i) for i in range(n)]
    manifest = {"dim": d, "ann": {"kind": "flat"}, "index_kind": "vector", "model": {}}
    return Searcher(Path("."), store.IndexData(manifest, entries, vectors, None), model, exact_kernel=kernel)


def round_robin(fns: dict, repeats: int) -> dict:
    samples = {k: [] for k in fns}
    for f in fns.values():
        f()
    for r in range(repeats):
        for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            t0 = time.perf_counter()
            fns[name]()
            samples[name].append((time.perf_counter() - t0) * 1e3)
    return {k: {"median_ms": statistics.median(v), "min_ms": min(v)} for k, v in samples.items()}


def run_size(n: int, d: int, k: int, repeats: int, model, seed: int = 0) -> dict:
    import faiss
    import torch

    from hybridtower.index.exact import KERNELS, ExactIndex

    x = random_unit(n, d, seed + n)
    q = random_unit(1, d, seed + 1)
    t0 = time.perf_counter()
    searcher = make_searcher(x, model)
    open_s = time.perf_counter() - t0
    path = searcher.search_path
    flat = faiss.IndexFlatIP(d)
    flat.add(x)
    xt, qt = torch.from_numpy(x), torch.from_numpy(q[0])
    kernels = {name: ExactIndex(x, name) for name in KERNELS}  # views of the same array: no copies
    fns = {
        "read scan (floor)": lambda: xt.sum(),
        "Searcher.search_vector": lambda: searcher.search_vector(q[0], k),
        "Searcher.search(query_vector=)": lambda: searcher.search("a red ball bounces", k, query_vector=q[0]),
        **{f"kernel {name}": (lambda e=e: e.search(q, k)) for name, e in kernels.items()},
        "FAISS IndexFlatIP.search": lambda: flat.search(q, k),
        "torch.topk(X @ q)": lambda: torch.topk(xt @ qt, min(k, n)),
    }
    reps = repeats if n >= 100_000 else repeats * 5
    timings = round_robin(fns, reps)
    floor = timings["read scan (floor)"]["median_ms"]
    for t in timings.values():
        t["vs_read_scan"] = t["median_ms"] / floor
    # the chosen path gives FAISS flat's answer
    fs, fr = flat.search(q, min(k, n))
    got = searcher.search_vector(q[0], k)
    same = [h.id for h in got.hits] == list(fr[0]) and np.allclose([h.score for h in got.hits], fs[0], atol=1e-5)
    del flat, searcher, kernels
    return {"n": n, "d": d, "k": k, "bytes": x.nbytes, "repeats": reps, "searcher_open_s": round(open_s, 2),
            "chosen_kernel": path["kernel"], "calibration": path["calibration"], "timings": timings,
            "same_results_as_faiss_flat": bool(same)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=_sizes, default=_sizes("1k,10k,100k,1M"))
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--repeats", type=int, default=9, help="round-robin rounds for N >= 100k (5x that below)")
    p.add_argument("--threads", type=int, default=None, help="torch and FAISS threads (default: as configured)")
    p.add_argument("--json", help="write the report to this file")
    args = p.parse_args(argv)
    import faiss
    import torch

    from hybridtower import hub
    from hybridtower.analysis.bandwidth import measure_copy_bandwidth, measure_read_bandwidth

    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    model = hub.create_model("pig-tiny").eval()
    load_before = os.getloadavg()
    read = measure_read_bandwidth(mbytes=1024, repeats=7)
    copy = measure_copy_bandwidth(mbytes=512, repeats=7)
    print(f"read scan 1 GiB: best {read['best_gbps']:.1f} GB/s, median {read['median_gbps']:.1f} GB/s | "
          f"copy 512 MiB (read+write): best {copy['best_gbps']:.1f} GB/s, median {copy['median_gbps']:.1f} GB/s",
          flush=True)
    rows = []
    for n in args.sizes:
        r = run_size(n, args.dim, args.k, args.repeats, model)
        r["floor_ms_from_read_best"] = r["bytes"] / (read["best_gbps"] * 1e9) * 1e3
        rows.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "timings"}), flush=True)
    load_after = os.getloadavg()
    names = list(rows[0]["timings"])
    print(f"\nmedian ms (ratio to the read scan of the same gallery, same round-robin); k = {args.k}, "
          f"D = {args.dim}, torch threads {torch.get_num_threads()}, load average {load_before[0]:.1f} -> "
          f"{load_after[0]:.1f}\n")
    print("| path | " + " | ".join(f"N = {r['n']:,}" for r in rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for name in names:
        cells = [f"{r['timings'][name]['median_ms']:.3f} ({r['timings'][name]['vs_read_scan']:.2f}x)" for r in rows]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| Searcher's kernel (calibrated at open) | " + " | ".join(r["chosen_kernel"] for r in rows) + " |")
    print("| floor from the 1 GiB read scan (best), ms | "
          + " | ".join(f"{r['floor_ms_from_read_best']:.3f}" for r in rows) + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                                   "torch_threads": torch.get_num_threads(), "faiss": faiss.__version__,
                                   "torch": torch.__version__, "load_before": load_before, "load_after": load_after},
                       "bandwidth": {"read": read, "copy": copy}, "rows": rows}, fh, indent=2)
    return 0 if all(r["same_results_as_faiss_flat"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
