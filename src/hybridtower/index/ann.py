"""FAISS vector search over the stored vectors: exact inner product, or IVF / HNSW approximations.

- ``flat`` (default): ``IndexFlatIP``, exact maximum inner product (= cosine for our normalised vectors).
- ``ivf``: ``IndexIVFFlat`` with an inner-product coarse quantiser; ``nlist`` cells (default
  ``clamp(4 * sqrt(N), 1, N // 39)``), ``nprobe`` cells visited per query (default 16).
- ``hnsw``: ``IndexHNSWFlat`` (inner product), ``M`` = 32 links, ``efConstruction`` = 80,
  ``efSearch`` = 128 at query time.

Recall@k of the approximations against exact search at these defaults is measured by
``benchmarks/ann_recall.py`` (figures in ``docs/index.md``). Row ``i`` of a FAISS index is row ``i`` of the
vectors in id order (see ``store.load_index``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError

ANN_KINDS = ("flat", "ivf", "hnsw")
DEFAULTS = {"flat": {}, "ivf": {"nlist": None, "nprobe": 16}, "hnsw": {"M": 32, "ef_construction": 80, "ef_search": 128}}


def _faiss():
    import faiss

    return faiss


def default_nlist(n: int) -> int:
    return int(max(1, min(int(4 * math.sqrt(max(n, 1))), n // 39 if n >= 39 else 1)))


def resolve_params(kind: str, params: dict | None, n: int) -> dict:
    if kind not in ANN_KINDS:
        raise ConfigError(f"unknown ANN kind {kind!r}; choose from {list(ANN_KINDS)}")
    out = dict(DEFAULTS[kind])
    out.update({k: v for k, v in (params or {}).items() if v is not None and k in out})
    if kind == "ivf":
        out["nlist"] = int(out["nlist"] or default_nlist(n))
        out["nlist"] = max(1, min(out["nlist"], max(n, 1)))
        out["nprobe"] = max(1, min(int(out["nprobe"]), out["nlist"]))
    return out


def build_ann(vectors: np.ndarray, kind: str = "flat", params: dict | None = None, seed: int = 0):
    """A FAISS index over ``vectors`` [N, D] (float32) for maximum inner product search."""
    faiss = _faiss()
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    p = resolve_params(kind, params, n)
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, p["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        if n:
            index.train(x)
        index.nprobe = p["nprobe"]
    else:
        index = faiss.IndexHNSWFlat(d, int(p["M"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(p["ef_construction"])
        index.hnsw.efSearch = int(p["ef_search"])
    if n:
        index.add(x)
    return index


def apply_search_params(index, kind: str, params: dict) -> None:
    """Query-time knobs are not always kept by ``write_index`` (efSearch is not): set them again on load."""
    if kind == "ivf":
        index.nprobe = int(params["nprobe"])
    elif kind == "hnsw":
        index.hnsw.efSearch = int(params["ef_search"])


def save_ann(index, path: str | Path) -> None:
    from ..core.io import atomic_path

    with atomic_path(path) as tmp:
        _faiss().write_index(index, str(tmp))


def load_ann(path: str | Path, kind: str, params: dict):
    index = _faiss().read_index(str(path))
    apply_search_params(index, kind, params)
    return index


def search_ann(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores [Q, k], rows [Q, k]); rows of -1 (fewer than k found) are dropped by the caller."""
    k = max(1, min(int(k), index.ntotal))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
