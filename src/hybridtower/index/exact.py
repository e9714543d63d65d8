"""Exact maximum-inner-product search over vectors held in memory, at the memory-bandwidth floor.

One query must read every stored vector once (``N x D x 4`` bytes), so for galleries larger than the
caches the best exact search runs at the speed the memory delivers those bytes. Which code gets there
depends on N and on the machine, so :class:`ExactIndex` carries several kernels over the *same* array
(no copy) and picks one by timing them on its own data (:meth:`ExactIndex.calibrate`, run by the
Searcher when it opens an index):

- ``torch``: ``torch.mv`` / ``torch.mm`` over a zero-copy view (the BLAS matrix-vector product, all
  threads) + ``torch.topk``.
- ``numpy``: numpy's matmul (its own BLAS) + ``np.argpartition``.
- ``faiss``: ``faiss.knn`` with inner product: FAISS flat search (what ``IndexFlatIP`` runs), on our array
  without copying it (one result more than asked, to detect a tie at the k-th place). It is ~2x slower
  than the BLAS matrix-vector product on large galleries for one query.
- ``faiss1``: the same on one OpenMP thread (set for the calling thread only: FAISS's OpenMP settings are
  per thread). On a machine whose cores are busy with other work a multi-threaded scan of a small gallery
  waits for descheduled threads (10-20 ms instead of 0.05 ms for N = 1k, measured); one thread does not.
- ``blocked``: blocks of ``block_rows`` rows; each block's scores are reduced to its top-k while they are
  still in cache, then the candidates are merged.

With ``"auto"`` (the Searcher's default) the kernel is chosen for one query; a batch of queries always
goes through one BLAS matrix-matrix product (``torch``), which reads the gallery once for the whole
batch. A gallery of at most :data:`SMALL_GALLERY_BYTES` (4 MiB of vectors, e.g. 2048 x 512) is not timed:
every kernel answers one query over it in well under 0.1 ms (measured on the 2-core machine: 11-30 us at
0.1-2 MiB, 0.10-0.13 ms at 4 MiB, spread between the kernels at most 0.04 ms), while calibrating costs
10-50 ms plus the FAISS import (~50 ms): more than a thousand queries could win back. ``numpy`` answers
those (the calibration records ``"skipped"``); the results are the same as any kernel's (all kernels
return the same answer, tests/test_search_exact.py).

Every kernel returns the same answer: scores [Q, k] in descending order and their rows [Q, k]. Exact ties
are ordered by row (lower row first, and lower rows win a tie at the k-th place: FAISS's convention).
Kernels compute the same inner products with different summation orders, so scores may differ in the
last bits (~1e-7) between kernels; two videos whose scores are that close can swap places.
"""

from __future__ import annotations

import math
import time

import numpy as np

KERNELS = ("torch", "numpy", "faiss", "faiss1", "blocked")
AUTO = "auto"
_SCORES_BYTES = 256 * 2**20  # largest [Q, N] score matrix held at once (queries are chunked beyond it)
SMALL_GALLERY_BYTES = 4 * 2**20  # "auto" does not time kernels for galleries up to this size (module doc)
SMALL_GALLERY_KERNEL = "numpy"


def _have_faiss() -> bool:
    """FAISS is importable (the exact kernels do not need it: without it, calibration skips its two)."""
    import importlib.util

    return importlib.util.find_spec("faiss") is not None


def _select(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of candidate (rows, scores): descending score, ties by ascending row."""
    order = np.lexsort((rows, -scores))[:k]
    return rows[order], scores[order]


class ExactIndex:
    """Exact inner-product search over ``vectors`` [N, D] float32 (kept as given: no copy when it is
    C-contiguous float32). Quacks like a FAISS index for :func:`hybridtower.index.ann.search_ann`
    (``search(queries, k)``, ``ntotal``, ``d``)."""

    def __init__(self, vectors: np.ndarray, kernel: str = "torch", block_rows: int = 65536):
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"vectors must be [N, D], got shape {list(x.shape)}")
        self.vectors = x
        self.ntotal, self.d = x.shape
        self.block_rows = int(block_rows)
        self.calibration: dict | None = None
        self._torch = None
        self.kernel = "torch"
        self.auto = False
        self.set_kernel(kernel)

    # ----- kernel choice -----
    def set_kernel(self, kernel: str) -> None:
        self.auto = kernel == AUTO
        if self.auto:
            nbytes = 4 * self.ntotal * self.d
            if 0 < nbytes <= SMALL_GALLERY_BYTES:  # every kernel answers in microseconds: no timing (module doc)
                self.kernel = SMALL_GALLERY_KERNEL
                self.calibration = {"kernel": self.kernel, "n": self.ntotal, "d": self.d, "repeats": 0,
                                    "median_ms": {}, "skipped": f"gallery of {nbytes} bytes <= {SMALL_GALLERY_BYTES}"}
                return
            self.calibrate()
            return
        if kernel not in KERNELS:
            raise ValueError(f"unknown exact-search kernel {kernel!r}; choose from {[AUTO, *KERNELS]}")
        self.kernel = kernel

    def calibrate(self, kernels: tuple[str, ...] = KERNELS, budget_s: float = 0.5, min_repeats: int = 3,
                  max_repeats: int = 30, k: int = 10, seed: int = 0, sample_bytes: int = 256 * 2**20) -> dict:
        """Time each kernel on this index with one random unit query and keep the fastest (median).

        Kernels alternate (a, b, c, c, b, a, ...) so that load drift on a shared machine hits all alike. A
        kernel whose first (warm-up) call is over 2x the fastest one is dropped without more repeats.
        Returns (and keeps in ``self.calibration``) the timings; takes about ``budget_s`` seconds (at most
        twice that after ``min_repeats`` rounds), or ``min_repeats`` searches per kernel on large galleries.
        A gallery over ``sample_bytes`` (256 MiB) is timed on its first ``sample_bytes`` (a view, no copy):
        that is far past the caches already, where the cost per byte no longer depends on N, and it keeps
        opening a 1M-vector index from costing tens of seconds of calibration on a loaded machine.
        """
        kernels = tuple(n for n in kernels if n not in ("faiss", "faiss1") or _have_faiss())
        rows = max(1, sample_bytes // (4 * max(self.d, 1)))
        if self.ntotal > rows:
            part = ExactIndex(self.vectors[:rows], "torch", block_rows=self.block_rows)
            cal = part.calibrate(kernels, budget_s, min_repeats, max_repeats, k, seed, sample_bytes)
            self.kernel = part.kernel
            self.calibration = {**cal, "n": self.ntotal, "timed_on_rows": rows}
            return self.calibration
        if self.ntotal == 0:
            self.kernel = "torch"
            self.calibration = {"kernel": "torch", "n": 0, "median_ms": {}, "repeats": 0}
            return self.calibration
        q = np.random.default_rng(seed).standard_normal((1, self.d)).astype(np.float32)
        q /= np.linalg.norm(q)
        warm = {}
        for name in kernels:
            self.kernel = name
            t0 = time.perf_counter()
            self.search(q, k)  # first call: thread pools start, lazy views are made
            first = time.perf_counter() - t0
            if first < 0.05:  # cheap: time a second call as well
                t0 = time.perf_counter()
                self.search(q, k)
                first = min(first, time.perf_counter() - t0)
            warm[name] = first
        best = min(warm.values())
        live = [n for n in kernels if warm[n] <= 2.0 * best]
        per_round = sum(warm[n] for n in live)
        repeats = int(min(max_repeats, max(min_repeats, math.ceil(budget_s / max(per_round, 1e-9)))))
        samples: dict[str, list[float]] = {n: [] for n in live}
        started = time.perf_counter()
        for r in range(repeats):
            if r >= min_repeats and time.perf_counter() - started > 2 * budget_s:
                break  # calls got slower than the warm-up said (a loaded machine): stop at the time cap
            for name in (live if r % 2 == 0 else live[::-1]):
                self.kernel = name
                t0 = time.perf_counter()
                self.search(q, k)
                samples[name].append(time.perf_counter() - t0)
        med = {n: float(np.median(v)) * 1e3 for n, v in samples.items()}
        self.kernel = min(med, key=med.get)
        self.calibration = {
            "kernel": self.kernel, "n": self.ntotal, "d": self.d, "repeats": len(samples[live[0]]),
            "median_ms": {n: round(v, 4) for n, v in med.items()},
            "dropped_after_warmup_ms": {n: round(warm[n] * 1e3, 4) for n in kernels if n not in live},
        }
        return self.calibration

    # ----- search -----
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [Q, k'], rows [Q, k']) with ``k' = min(k, N)``; see the module doc for order and ties."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.d:
            raise ValueError(f"queries must be [Q, {self.d}], got shape {list(q.shape)}")
        k = max(0, min(int(k), self.ntotal))
        nq = q.shape[0]
        scores = np.empty((nq, k), dtype=np.float32)
        rows = np.empty((nq, k), dtype=np.int64)
        if k == 0 or nq == 0:
            return scores, rows
        step = max(1, _SCORES_BYTES // (4 * self.ntotal))
        # a batch is one matrix-matrix product (compute-efficient, reads the gallery once per batch); the
        # calibrated kernel is the best for one query. A forced kernel is used for both.
        kernel = "torch" if self.auto and nq > 1 else self.kernel
        fn = getattr(self, f"_search_{kernel}")
        for s in range(0, nq, step):
            fn(q[s : s + step], k, scores[s : s + step], rows[s : s + step])
        return scores, rows

    def _t(self):
        if self._torch is None:
            import torch

            self._torch = torch.from_numpy(self.vectors)  # shares memory with the numpy array
        return self._torch

    def _search_torch(self, q, k, out_s, out_r) -> None:
        import torch

        x = self._t()
        with torch.no_grad():
            if q.shape[0] == 1:
                full = torch.mv(x, torch.from_numpy(q[0]))[None, :]
            else:
                full = torch.mm(torch.from_numpy(q), x.t())
            top = torch.topk(full, k, dim=1, sorted=False)
            kth = top.values.min(dim=1, keepdim=True).values
            reach = (full >= kth).sum(dim=1)
        full_np, top_r, top_s = full.numpy(), top.indices.numpy(), top.values.numpy()
        for i in range(full_np.shape[0]):
            if int(reach[i]) == k:  # no tie at the k-th place: topk's rows are the answer
                out_r[i], out_s[i] = _select(top_r[i], top_s[i], k)
            else:
                self._gather(full_np[i : i + 1], kth[i : i + 1].numpy(), k, out_s[i : i + 1], out_r[i : i + 1])

    def _search_numpy(self, q, k, out_s, out_r) -> None:
        full = q @ self.vectors.T if q.shape[0] > 1 else (self.vectors @ q[0])[None, :]
        n = full.shape[1]
        kth = np.partition(full, n - k, axis=1)[:, n - k : n - k + 1]
        self._gather(full, kth, k, out_s, out_r)

    def _search_faiss(self, q, k, out_s, out_r, threads: int | None = None) -> None:
        import faiss

        # One result more than asked: when the (k+1)-th score is below the k-th, no row left out ties
        # with the k-th and FAISS's set is the answer; on an exact tie (e.g. a duplicated video) FAISS's
        # heap may keep either row, so that query is answered by a full scan under the rule above.
        k1 = min(k + 1, self.ntotal)
        before = faiss.omp_get_max_threads()
        if threads:
            faiss.omp_set_num_threads(threads)  # this thread's OpenMP setting only
        try:
            s, r = faiss.knn(q, self.vectors, k1, faiss.METRIC_INNER_PRODUCT)
        finally:
            if threads:
                faiss.omp_set_num_threads(before)
        for i in range(q.shape[0]):
            if k1 > k and s[i, k] >= s[i, k - 1]:
                self._search_numpy(q[i : i + 1], k, out_s[i : i + 1], out_r[i : i + 1])
            else:
                out_r[i], out_s[i] = _select(r[i, :k], s[i, :k], k)

    def _search_faiss1(self, q, k, out_s, out_r) -> None:
        self._search_faiss(q, k, out_s, out_r, threads=1)

    def _search_blocked(self, q, k, out_s, out_r) -> None:
        nq, n, b = q.shape[0], self.ntotal, self.block_rows
        cand_r = [[] for _ in range(nq)]
        cand_s = [[] for _ in range(nq)]
        qt = np.ascontiguousarray(q.T)
        for start in range(0, n, b):
            block = self.vectors[start : start + b] @ qt  # [B, Q], stays in cache
            m = block.shape[0]
            kk = min(k, m)
            kth = np.partition(block, m - kk, axis=0)[m - kk]
            for i in range(nq):
                hit = np.flatnonzero(block[:, i] >= kth[i])
                cand_r[i].append(hit + start)
                cand_s[i].append(block[hit, i])
        for i in range(nq):
            out_r[i], out_s[i] = _select(np.concatenate(cand_r[i]), np.concatenate(cand_s[i]), k)

    @staticmethod
    def _gather(full: np.ndarray, kth: np.ndarray, k: int, out_s, out_r) -> None:
        """Rows whose score reaches the k-th best (all boundary ties included), then the exact order."""
        for i in range(full.shape[0]):
            hit = np.flatnonzero(full[i] >= kth[i, 0])
            out_r[i], out_s[i] = _select(hit, full[i, hit], k)
