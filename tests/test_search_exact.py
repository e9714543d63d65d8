"""Exact search kernels (index/exact.py): every kernel, and the one the Searcher picks per N by timing,
return FAISS IndexFlatIP's answer; ties follow one documented rule."""

from __future__ import annotations

import numpy as np
import pytest

from hybridtower.index.ann import build_ann, search_ann
from hybridtower.index.exact import KERNELS, SMALL_GALLERY_BYTES, SMALL_GALLERY_KERNEL, ExactIndex


def _same_ranking(x, q, r, s, fr, fs):
    """Same scores to 1e-5 and the same ids, except where two videos' exact scores are within 1e-6 (the
    kernels sum in different orders, so such near-ties may swap; that happens in long rankings only)."""
    np.testing.assert_allclose(s, fs, atol=1e-5)
    exact = q.astype(np.float64) @ x.astype(np.float64).T
    for i in range(len(q)):
        diff = np.flatnonzero(r[i] != fr[i])
        assert sorted(r[i]) == sorted(fr[i]) or len(r[i]) < x.shape[0] and not len(diff)
        assert np.all(np.abs(exact[i, r[i][diff]] - exact[i, fr[i][diff]]) < 1e-6), diff


def _data(n, d=64, q=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, rng.standard_normal((q, d)).astype(np.float32)


@pytest.mark.parametrize("n", [1, 7, 1000, 20_000])
@pytest.mark.parametrize("kernel", [*KERNELS, "auto"])
def test_kernels_give_faiss_flat_results(n, kernel):
    x, q = _data(n, seed=n)
    flat = build_ann(x, "flat")
    index = ExactIndex(x, kernel, block_rows=4096)
    if kernel == "auto":
        cal = index.calibration
        if 4 * n * 64 <= SMALL_GALLERY_BYTES:  # too small for the kernel to matter: not timed
            assert cal["kernel"] == index.kernel == SMALL_GALLERY_KERNEL and cal["skipped"] and not cal["median_ms"]
        else:
            assert cal["kernel"] == index.kernel in KERNELS and index.kernel in cal["median_ms"]
    for k in (1, 10, 100, n + 5):
        fs, fr = search_ann(flat, q, k)
        s, r = search_ann(index, q, k)
        assert r.shape == fr.shape == (3, min(k, n))
        if k <= 100:  # top-k: identical ids
            np.testing.assert_array_equal(r, fr)
            np.testing.assert_allclose(s, fs, atol=1e-5)
        else:  # k > N: the whole collection ranked
            _same_ranking(x, q, r, s, fr, fs)
        s1, r1 = index.search(q[1], k)  # one query given as [D] (matrix-vector, not matrix-matrix)
        _same_ranking(x, q[1:2], r1, s1, fr[1:2], fs[1:2])


def test_many_queries_are_chunked_and_equal():
    x, _ = _data(3000, seed=3)
    q = _data(70, seed=4)[0]
    fs, fr = search_ann(build_ann(x, "flat"), q, 5)
    for kernel in KERNELS:
        index = ExactIndex(x, kernel, block_rows=1000)
        s, r = index.search(q, 5)
        np.testing.assert_array_equal(r, fr)
        np.testing.assert_allclose(s, fs, atol=1e-5)


@pytest.mark.parametrize("kernel", KERNELS)
def test_ties_lower_rows_first(kernel):
    x = np.zeros((40, 8), np.float32)
    x[:, 0] = 1.0
    x[17, 0] = 2.0  # the best
    x[[3, 30], 0] = 1.5  # tied second
    s, r = ExactIndex(x, kernel, block_rows=6).search(np.eye(8, dtype=np.float32)[:1], 6)
    assert r[0].tolist() == [17, 3, 30, 0, 1, 2]  # ties (also at the k-th place) go to the lower row
    assert s[0].tolist() == [2.0, 1.5, 1.5, 1.0, 1.0, 1.0]


def test_empty_and_bad_input():
    e = ExactIndex(np.zeros((0, 16), np.float32), "auto")
    s, r = e.search(np.ones((1, 16), np.float32), 10)
    assert s.shape == r.shape == (1, 0)
    with pytest.raises(ValueError, match="unknown exact-search kernel"):
        ExactIndex(np.ones((2, 4), np.float32), "gpu")
    with pytest.raises(ValueError, match=r"queries must be \[Q, 4\]"):
        ExactIndex(np.ones((2, 4), np.float32)).search(np.ones((1, 5), np.float32), 1)


def test_no_copy_of_the_vectors():
    x, _ = _data(100)
    e = ExactIndex(x, "torch")
    assert e.vectors is x  # the searcher keeps one copy of the gallery
    e.search(x[:1], 3)
    assert np.shares_memory(e._t().numpy(), x)


def test_searcher_exact_path_per_kernel():
    """The Searcher's exact search (chosen by timing, or forced) answers as FAISS flat did."""
    from pathlib import Path

    from hybridtower import hub
    from hybridtower.index import store
    from hybridtower.index.searcher import Searcher

    x, q = _data(9000, d=128, seed=5)  # 4.6 MB: above SMALL_GALLERY_BYTES, so "auto" times the kernels
    assert x.nbytes > SMALL_GALLERY_BYTES
    entries = [store.Entry(i, f"v/{i}.mp4", f"{i}.mp4", 0, 0, "", "seg", i) for i in range(len(x))]
    data = store.IndexData({"dim": 128, "ann": {"kind": "flat"}, "index_kind": "vector", "model": {}}, entries, x, None)
    model = hub.create_model("pig-tiny").eval()
    fs, fr = search_ann(build_ann(x, "flat"), q[:1], 20)
    for kernel in ("auto", "torch", "faiss1", "blocked"):
        s = Searcher(Path("."), data, model, exact_kernel=kernel)
        path = s.search_path
        assert path["kind"] == "flat" and path["kernel"] in KERNELS
        assert (path["calibration"] is not None) == (kernel == "auto")
        assert kernel != "auto" or path["kernel"] in path["calibration"]["median_ms"]
        res = s.search("a red ball", 20, query_vector=q[0])
        assert [h.id for h in res.hits] == fr[0].tolist()
        np.testing.assert_allclose([h.score for h in res.hits], fs[0], atol=1e-5)
        assert s.vector(7) is not None and np.shares_memory(s._vectors, x)


def test_large_gallery_is_calibrated_on_a_sample():
    x, q = _data(5000, d=32, seed=9)
    e = ExactIndex(x, "torch")
    cal = e.calibrate(sample_bytes=1000 * 32 * 4, budget_s=0.02)
    assert cal["timed_on_rows"] == 1000 and cal["n"] == 5000 and e.kernel == cal["kernel"]
    fs, fr = search_ann(build_ann(x, "flat"), q, 10)
    s, r = e.search(q, 10)  # the full gallery is searched, with the kernel chosen on the sample
    np.testing.assert_array_equal(r, fr)


def test_auto_sends_batches_through_the_matrix_product():
    x, q = _data(3000, seed=11)
    e = ExactIndex(x, "auto")
    e.kernel = "faiss1"  # as if calibration had chosen it for one query
    calls = []
    e._search_torch = lambda *a: (calls.append(len(a[0])), ExactIndex._search_torch(e, *a))
    fs, fr = search_ann(build_ann(x, "flat"), q, 10)
    s, r = e.search(q, 10)
    assert calls == [3]
    np.testing.assert_array_equal(r, fr)
    e.search(q[:1], 10)
    assert calls == [3]  # one query: the calibrated kernel


def test_calibration_without_faiss_skips_its_kernels(monkeypatch):
    """A machine without FAISS (e.g. a GPU image) still opens an exact index: the FAISS kernels are skipped."""
    import hybridtower.index.exact as exact

    monkeypatch.setattr(exact, "_have_faiss", lambda: False)
    v = np.random.default_rng(0).standard_normal((20_000, 64)).astype(np.float32)  # above SMALL_GALLERY_BYTES
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    e = exact.ExactIndex(v, "auto")
    assert e.kernel in ("torch", "numpy", "blocked")
    assert not {"faiss", "faiss1"} & set(e.calibration["median_ms"])
    s, r = e.search(v[:2], 3)
    assert list(r[:, 0]) == [0, 1]


def test_small_galleries_are_not_timed(monkeypatch):
    """"auto" over a gallery of at most SMALL_GALLERY_BYTES answers with SMALL_GALLERY_KERNEL without timing
    the kernels (nor importing FAISS for them); one byte row more and it calibrates. Same answer as FAISS."""
    import hybridtower.index.exact as exact

    calls = []
    monkeypatch.setattr(exact, "_have_faiss", lambda: calls.append("faiss?") or True)
    d = 64
    n = SMALL_GALLERY_BYTES // (4 * d)
    x, q = _data(n + 1, d=d, seed=12)
    small = ExactIndex(x[:n], "auto")
    assert calls == [] and small.kernel == SMALL_GALLERY_KERNEL and small.calibration["skipped"]
    assert small.calibration["n"] == n and small.calibration["kernel"] == small.kernel
    fs, fr = search_ann(build_ann(x[:n], "flat"), q, 10)
    s, r = search_ann(small, q[:1], 10)
    np.testing.assert_array_equal(r, fr[:1])
    np.testing.assert_allclose(s, fs[:1], atol=1e-5)
    timed = []
    monkeypatch.setattr(ExactIndex, "calibrate", lambda self, *a, **kw: timed.append(self.ntotal))
    ExactIndex(x, "auto")
    assert timed == [n + 1]
    ExactIndex(x[:0], "auto")  # an empty gallery: calibrate() records it as before
    assert timed == [n + 1, 0]
