"""Compressed vectors as ANN kinds: fp16 and 8-bit scalar quantisation (FAISS IndexScalarQuantizer)."""

from __future__ import annotations

import numpy as np
import pytest

from hybridtower.core.errors import ConfigError
from hybridtower.index.ann import ANN_KINDS, build_ann, bytes_per_vector, load_ann, resolve_params, save_ann, search_ann

COMPRESSED = [("sqfp16", None), ("sq8", None), ("sq8", {"refine": 0})]


def _clear_margin(n=400, d=64, q=40, seed=0):
    """Queries close to one stored vector each, far from every other: top-1 is unambiguous."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    target = rng.choice(n, q, replace=False)
    queries = x[target] + 0.05 * rng.standard_normal((q, d)).astype(np.float32) / np.sqrt(d)
    return x, queries.astype(np.float32), target


def test_kinds_are_offered():
    assert {"sqfp16", "sq8"} <= set(ANN_KINDS)
    assert resolve_params("sq8", None, 100) == {"refine": 2}
    assert resolve_params("sq8", {"refine": 0}, 100) == {"refine": 0}
    with pytest.raises(ConfigError, match="refine"):
        resolve_params("sq8", {"refine": 0.5}, 100)
    assert bytes_per_vector("sq8", 512) * 4 == bytes_per_vector("sqfp16", 512) * 2 == bytes_per_vector("flat", 512)


@pytest.mark.parametrize("kind,params", COMPRESSED)
def test_compressed_top1_equals_exact(kind, params, tmp_path):
    x, q, target = _clear_margin()
    _, exact = search_ann(build_ann(x, "flat"), q, 1)
    assert np.array_equal(exact[:, 0], target)
    index = build_ann(x, kind, params)
    scores, rows = search_ann(index, q, 5)
    assert np.array_equal(rows[:, 0], target)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    # saved and loaded (sq8 with re-scoring is memory-mapped) it answers the same
    save_ann(index, tmp_path / f"{kind}.index")
    loaded = load_ann(tmp_path / f"{kind}.index", kind, resolve_params(kind, params, len(x)))
    s2, r2 = search_ann(loaded, q, 5)
    np.testing.assert_array_equal(r2, rows)
    np.testing.assert_allclose(s2, scores, atol=1e-6)


def test_sq8_rescoring_recovers_the_exact_top10():
    """On clustered vectors (the ANN benchmark's kind of data) 8-bit rounding swaps near-ties; the exact
    re-scoring of the 2k best puts them back."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from ann_recall import make_data, recall

    x, q = make_data(5000, 128, 100, "clustered", np.random.default_rng(0))
    _, truth = search_ann(build_ann(x, "flat"), q, 10)
    _, got = search_ann(build_ann(x, "sq8"), q, 10)
    _, codes_only = search_ann(build_ann(x, "sq8", {"refine": 0}), q, 10)
    assert recall(got, truth, 10) >= 0.99
    assert recall(got, truth, 10) >= recall(codes_only, truth, 10)


@pytest.mark.parametrize("kind", ["sqfp16", "sq8"])
def test_index_built_with_compressed_kind(kind, tmp_path):
    import torch

    from hybridtower import hub
    from hybridtower.data.synthetic import SynthConfig, generate
    from hybridtower.index import IndexOptions, Searcher, build_index

    generate(tmp_path / "synth", SynthConfig(videos=4, images=0, frames=8, sizes=("64x64",), workers=0), progress=False)
    torch.manual_seed(0)
    ckpt = hub.save_model(hub.create_model("pig-tiny").eval(), tmp_path / "pig.safetensors")
    build_index([tmp_path / "synth" / "videos"], tmp_path / "idx", ckpt,
                IndexOptions(progress=False, batch_size=4, num_workers=0, ann=kind))
    s = Searcher.open(tmp_path / "idx")
    assert s.ann_kind == kind and s.search_path["kind"] == kind and s.search_path["threads"] in ("configured", "1")
    for i in range(len(s)):  # each stored video finds itself first
        assert s.search_vector(s.vector(i), k=2).hits[0].id == i
    assert len(s.search("a red ball", k=10).hits) == 4


def test_threaded_search_answers_the_same_and_restores_threads():
    import faiss

    from hybridtower.index.ann import ThreadedSearch

    x, q, target = _clear_margin(seed=2)
    index = build_ann(x, "sq8")
    before = faiss.omp_get_max_threads()
    wrapped = ThreadedSearch(index, threads=1)
    s1, r1 = search_ann(wrapped, q, 5)
    assert faiss.omp_get_max_threads() == before
    s0, r0 = search_ann(index, q, 5)
    np.testing.assert_array_equal(r1, r0)
    np.testing.assert_allclose(s1, s0, atol=1e-6)
    cal = wrapped.calibrate(budget_s=0.05)
    assert cal["threads"] in ("configured", "1") and set(cal["median_ms"]) == {"configured", "1"}
    assert wrapped.ntotal == len(x) and wrapped.reconstruct(3).shape == (x.shape[1],)
