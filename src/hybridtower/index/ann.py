"""FAISS vector search over the stored vectors: exact inner product, or IVF / HNSW approximations.

- ``flat`` (default): ``IndexFlatIP``, exact maximum inner product (= cosine for our normalised vectors).
- ``ivf``: ``IndexIVFFlat`` with an inner-product coarse quantiser; ``nlist`` cells (default
  ``clamp(4 * sqrt(N), 1, N // 39)``), ``nprobe`` cells visited per query (default 16).
- ``hnsw``: ``IndexHNSWFlat`` (inner product), ``M`` = 32 links, ``efConstruction`` = 80,
  ``efSearch`` = 128 at query time.
- ``sqfp16``: ``IndexScalarQuantizer`` with ``QT_fp16``: every vector stored in half precision (2x less
  memory than fp32), scanned exhaustively (inner product); no training.
- ``sq8``: ``IndexScalarQuantizer`` with ``QT_8bit``: one byte per dimension (4x less memory), each
  dimension's range learnt from the vectors at build time (min/max); scanned exhaustively. Its rounding
  alone loses ~1.4 % of the exact top-10 on clustered vectors (recall@10 0.986), so by default
  (``refine`` = 2) it is wrapped in ``IndexRefineFlat``: the 2k best by the 8-bit codes are re-scored
  exactly with the fp32 vectors, which the same file holds and :func:`load_ann` memory-maps
  (``IO_FLAG_MMAP_IFC``): they stay on disk / in the page cache and only the re-scored rows are read, so
  the memory a search scans is the codes (1 byte per dimension). ``refine`` = 0: codes only.

The compressed kinds change no result ordering rule other than through the rounding of the stored
vectors: scores are the inner products with the decoded vectors.

Recall@k of the approximations against exact search at these defaults, their latency and memory, are
measured by ``benchmarks/ann_recall.py`` (figures in ``docs/index.md`` and ``docs/efficiency.md``). Row ``i`` of a FAISS index is row ``i`` of the
vectors in id order (see ``store.load_index``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError

ANN_KINDS = ("flat", "ivf", "hnsw", "sqfp16", "sq8")
DEFAULTS = {"flat": {}, "ivf": {"nlist": None, "nprobe": 16}, "hnsw": {"M": 32, "ef_construction": 80, "ef_search": 128},
            "sqfp16": {}, "sq8": {"refine": 2}}
SQ_TYPES = {"sqfp16": "QT_fp16", "sq8": "QT_8bit"}  # FAISS ScalarQuantizer types of the compressed kinds


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
    if kind == "sq8":
        refine = float(out["refine"])
        if not (refine == 0 or 1 <= refine <= 100):
            raise ConfigError(f"sq8 refine must be 0 (no exact re-scoring) or a factor from 1 to 100, got {refine}")
        out["refine"] = int(refine) if refine == int(refine) else refine
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
    elif kind in SQ_TYPES:
        qtype = getattr(faiss.ScalarQuantizer, SQ_TYPES[kind])
        index = faiss.IndexScalarQuantizer(d, qtype, faiss.METRIC_INNER_PRODUCT)
        if n:
            index.train(x)  # sq8: each dimension's range; sqfp16: nothing to learn
        if kind == "sq8" and p["refine"]:
            index = faiss.IndexRefineFlat(index)  # exact re-scoring with the fp32 vectors (inner product)
            index.k_factor = float(p["refine"])
    else:
        index = faiss.IndexHNSWFlat(d, int(p["M"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(p["ef_construction"])
        index.hnsw.efSearch = int(p["ef_search"])
    if n:
        index.add(x)
    return index


def bytes_per_vector(kind: str, d: int) -> int:
    """Bytes of one vector a query scans in memory (codes only: HNSW links and IVF lists are extra; sq8's
    fp32 copy for re-scoring is memory-mapped and only the re-scored rows are read)."""
    return {"sqfp16": 2 * d, "sq8": d}.get(kind, 4 * d)


def apply_search_params(index, kind: str, params: dict) -> None:
    """Query-time knobs are not always kept by ``write_index`` (efSearch is not): set them again on load."""
    if kind == "ivf":
        index.nprobe = int(params["nprobe"])
    elif kind == "hnsw":
        index.hnsw.efSearch = int(params["ef_search"])
    elif kind == "sq8" and hasattr(index, "k_factor"):
        index.k_factor = float(params.get("refine") or 1)


def save_ann(index, path: str | Path) -> None:
    from ..core.io import atomic_path

    with atomic_path(path) as tmp:
        _faiss().write_index(index, str(tmp))


def load_ann(path: str | Path, kind: str, params: dict):
    faiss = _faiss()
    # sq8 with re-scoring: map the file instead of reading it, so that its fp32 copy is not loaded
    flags = faiss.IO_FLAG_MMAP_IFC if kind == "sq8" and (params or {}).get("refine") else 0
    index = faiss.read_index(str(path), flags)
    apply_search_params(index, kind, params)
    return index


def search_ann(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores [Q, k], rows [Q, k]); rows of -1 (fewer than k found) are dropped by the caller.

    ``k`` rows come back whenever the index holds them: an IVF index whose ``nprobe`` probed cells hold
    fewer than ``k`` rows (a small cell, or one video's many windows crowding one cell) is searched again
    with 4x the cells until ``k`` are found or every cell was probed, and an HNSW search that finds fewer
    than ``k`` is repeated with 4x ``efSearch`` (up to the number of rows). The wider setting is passed per
    call (FAISS search parameters), never stored on the shared index. So fewer than ``k`` rows means the
    index has no more to give, which the searcher relies on when it fetches candidates until they cover
    ``k`` videos."""
    k = max(1, min(int(k), index.ntotal))
    q = np.ascontiguousarray(queries, dtype=np.float32)
    scores, rows = index.search(q, k)
    if len(rows) and int((rows >= 0).sum(axis=1).min()) < k:  # some query got fewer than k rows
        for params in _wider_searches(index, k):
            scores, rows = index.search(q, k, params=params)
            if int((rows >= 0).sum(axis=1).min()) >= k:
                break
    return scores, rows


def _wider_searches(index, k: int):
    """FAISS search parameters of ever wider IVF / HNSW searches of ``index`` (nothing for other kinds)."""
    faiss = _faiss()
    base = index.index if isinstance(index, ThreadedSearch) else index
    if isinstance(base, faiss.IndexIVF):
        nprobe = int(base.nprobe)
        while nprobe < base.nlist:
            nprobe = min(int(base.nlist), 4 * nprobe)
            yield faiss.SearchParametersIVF(nprobe=nprobe)
    elif isinstance(base, faiss.IndexHNSW):
        ef, most = max(int(base.hnsw.efSearch), k), max(int(base.ntotal), k)
        while ef < most:
            ef = min(most, 4 * ef)
            yield faiss.SearchParametersHNSW(efSearch=ef)


class ThreadedSearch:
    """A loaded FAISS index searched with ``threads`` OpenMP threads (None: as configured).

    FAISS's OpenMP setting is per calling thread, so it is set around each search and restored: other
    threads are not affected. Everything else is passed through to the index (``ntotal``, ``reconstruct``,
    ...). On a machine whose cores are busy with other work, a multi-threaded scan for one query waits for
    descheduled threads (measured: 28 ms instead of 0.3 ms for sqfp16 at N = 5k); one thread does not.
    """

    def __init__(self, index, threads: int | None = None):
        self.index = index
        self.threads = threads
        self.calibration: dict | None = None

    def __getattr__(self, name):
        return getattr(self.__dict__["index"], name)

    def search(self, queries, k, params=None):
        kw = {} if params is None else {"params": params}
        if not self.threads:
            return self.index.search(queries, k, **kw)
        faiss = _faiss()
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self.threads)
        try:
            return self.index.search(queries, k, **kw)
        finally:
            faiss.omp_set_num_threads(before)

    def calibrate(self, budget_s: float = 0.3, min_repeats: int = 3, max_repeats: int = 30, k: int = 10,
                  seed: int = 0) -> dict:
        """Time one random unit query with FAISS's configured threads and with one thread (alternating) and
        keep the faster (median)."""
        import statistics
        import time

        if self.index.ntotal == 0:
            self.calibration = {"threads": None, "median_ms": {}}
            return self.calibration
        q = np.random.default_rng(seed).standard_normal((1, self.index.d)).astype(np.float32)
        q /= np.linalg.norm(q)
        options = {"configured": None, "1": 1}
        samples: dict[str, list[float]] = {name: [] for name in options}
        t0 = time.perf_counter()
        for name, th in options.items():
            self.threads = th
            self.search(q, k)
        per_round = max(time.perf_counter() - t0, 1e-9)
        repeats = int(min(max_repeats, max(min_repeats, math.ceil(budget_s / per_round))))
        started = time.perf_counter()
        for r in range(repeats):
            if r >= min_repeats and time.perf_counter() - started > 2 * budget_s:
                break
            for name in (list(options) if r % 2 == 0 else list(options)[::-1]):
                self.threads = options[name]
                t0 = time.perf_counter()
                self.search(q, k)
                samples[name].append((time.perf_counter() - t0) * 1e3)
        med = {name: statistics.median(v) for name, v in samples.items()}
        best = min(med, key=med.get)
        self.threads = options[best]
        self.calibration = {"threads": best, "repeats": len(samples[best]), "median_ms": {n: round(v, 4) for n, v in med.items()}}
        return self.calibration
