"""The Searcher API for batched callers: one batched text encode, search with a precomputed query vector,
and search by example (a stored video's vector)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridtower.index import IndexOptions, QueryError, Searcher, build_index
from tiny_index import make_videos, save_tiny

OPTS = dict(progress=False, batch_size=4, num_workers=0)
QUERIES = ["a red ball bounces", "blue square", "a green circle moves to the left", "赤いボール", "x"]


@pytest.fixture(scope="module")
def searcher(tmp_path_factory):
    root = tmp_path_factory.mktemp("batched")
    make_videos(root / "synth", n=5)
    ckpt = save_tiny(root / "pig.safetensors")
    build_index([root / "synth" / "videos"], root / "idx", ckpt, IndexOptions(**OPTS))
    return Searcher.open(root / "idx")


def test_encode_queries_equals_one_at_a_time(searcher):
    batch = searcher.encode_queries(QUERIES)
    assert batch.dtype == np.float32 and batch.shape == (len(QUERIES), searcher.dim)
    single = np.concatenate([searcher.encode_query(q) for q in QUERIES])
    np.testing.assert_allclose(batch, single, atol=1e-6, rtol=0)
    assert searcher.encode_queries([]).shape == (0, searcher.dim)
    with pytest.raises(QueryError, match="list of texts"):
        searcher.encode_queries("a red ball")


def test_search_with_query_vector_equals_text_path(searcher):
    batch = searcher.encode_queries(QUERIES)
    for q, vec in zip(QUERIES, batch):
        for k in (1, 3, 50):
            text = searcher.search(q, k=k)
            fast = searcher.search(q, k=k, query_vector=vec)
            assert [h.id for h in fast.hits] == [h.id for h in text.hits]
            np.testing.assert_allclose([h.score for h in fast.hits], [h.score for h in text.hits], atol=1e-6)
            assert (fast.query, fast.notes, fast.num_tokens, fast.truncated) == (
                text.query, text.notes, text.num_tokens, text.truncated)
    # [1, D] is accepted as well as [D]; the query is still cleaned and checked
    assert searcher.search(" a\x00red ball ", k=2, query_vector=batch[:1]).query == "a red ball"
    with pytest.raises(QueryError, match="empty"):
        searcher.search("", k=2, query_vector=batch[0])


@pytest.mark.parametrize("bad,message", [
    (np.zeros(3), "shape"), (np.zeros((2, 128)), "shape"), ("abc", "array"),
    (np.full(128, np.nan), "NaN"), ([[1.0] * 128, [2.0] * 128], "shape"),
])
def test_bad_query_vectors(searcher, bad, message):
    if searcher.dim != 128:
        pytest.skip("the tiny model's D changed")
    with pytest.raises(QueryError, match=message):
        searcher.search("ball", k=2, query_vector=bad)
    with pytest.raises(QueryError, match=message):
        searcher.search_vector(bad, k=2)


def test_search_by_example(searcher):
    assert searcher.vector(-1) is None and searcher.vector("0") is None
    for i in range(len(searcher)):
        v = searcher.vector(i)
        assert v.shape == (searcher.dim,)
        res = searcher.search_vector(3.0 * v, k=3)  # scaled: normalised before the search
        assert res.hits[0].id == i and res.hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert res.query == "" and res.num_tokens == 0 and len(res.hits) == 3
    res = searcher.search_vector(searcher.vector(0), k=100)
    assert len(res.hits) == len(searcher) and any("holds 5 video" in n for n in res.notes)
    with pytest.raises(QueryError, match="all zeros"):
        searcher.search_vector(np.zeros(searcher.dim), k=1)
    with pytest.raises(QueryError, match="k must be"):
        searcher.search_vector(searcher.vector(0), k=0)


def test_xpool_index_query_vector_and_example(tmp_path):
    from hybridtower import hub
    from hybridtower.data.synthetic import SynthConfig, generate

    generate(tmp_path / "synth", SynthConfig(videos=4, images=0, frames=8, sizes=("64x64",), workers=0), progress=False)
    torch.manual_seed(1)
    ckpt = hub.save_model(hub.create_model("xpool-tiny").eval(), tmp_path / "xp.safetensors")
    build_index([tmp_path / "synth" / "videos"], tmp_path / "idx", ckpt, IndexOptions(**OPTS))
    s = Searcher.open(tmp_path / "idx", rerank_all=True)
    vecs = s.encode_queries(QUERIES[:3])
    for q, v in zip(QUERIES[:3], vecs):
        text, fast = s.search(q, k=3), s.search(q, k=3, query_vector=v)
        assert [h.id for h in fast.hits] == [h.id for h in text.hits]
        np.testing.assert_allclose([h.score for h in fast.hits], [h.score for h in text.hits], atol=1e-6)
    res = s.search_vector(s.vector(2), k=2)
    assert res.hits[0].id == 2 and any("mean-pooled" in n for n in res.notes)


def test_encode_queries_equals_full_length_text_encode(tmp_path):
    """encode_queries skips the positions after the batch's last EOT; the causal text tower makes that
    exact: equal to encoding the full-length tokens."""
    import torch

    from hybridtower import hub

    model = hub.create_model("pig-tiny")
    model.eval()
    searcher = Searcher.__new__(Searcher)  # only the encode path is exercised
    searcher.model, searcher.device, searcher._lock = model, "cpu", __import__("threading").Lock()
    texts = ["a red circle", "the small white square turns green for a moment at the end of the clip", "x"]
    got = searcher.encode_queries(texts)
    with torch.no_grad():
        full = model.encode_text(model.tokenize(texts)).float().numpy()
    assert model.tokenize(texts).shape[1] > int(model.tokenize(texts).argmax(-1).max()) + 1  # it did cut
    np.testing.assert_allclose(got, full, rtol=0, atol=1e-5)
