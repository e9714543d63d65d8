"""Moment windows under approximate search (``index --window ... --ann ivf|hnsw|sqfp16|sq8``).

One small real index (a long video stored as many windows, plus short clips, the tiny random PIG model) is
built once; each ANN kind is then built over the same rows. For every kind the searcher must group rows
per video, count ``k`` in videos (also when one video's windows fill the whole ANN candidate list), report
the best window as start/end and the video's other candidate windows as moments with their true scores,
and return what exact search returns wherever the score margin is clear.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from tiny_index import make_videos, save_tiny

from hybridtower.data.synthetic.long import write_long_video
from hybridtower.index import store
from hybridtower.index.builder import IndexOptions, build_index
from hybridtower.index.searcher import Searcher

WINDOW, STRIDE = 4.0, 2.0
# kind, requested params, whether the kind answers exactly (up to the stored vectors' rounding) on this index
KINDS = [
    ("flat", {}, True),
    ("ivf", {"nlist": 4, "nprobe": 4}, True),  # every cell probed: exact
    ("ivf", {"nlist": 4, "nprobe": 1}, False),  # one cell of four: approximate
    ("hnsw", {}, True),  # efSearch 128 > rows: the graph search finds the true neighbours here
    ("sqfp16", {}, True),
    ("sq8", {}, True),  # 8-bit codes, the 2k best re-scored with the fp32 vectors
]
SCORE_TOL = {"sqfp16": 2e-3}  # half-precision vectors: scores are inner products with the rounded vectors
QUERIES = ["a red circle moves left", "a large blue square", "a green triangle bounces", "something happens"]


def _opts(**kw) -> IndexOptions:
    return IndexOptions(progress=False, batch_size=16, window=WINDOW, stride=STRIDE, **kw)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The flat index: an 80 s video (39 windows, most of them the same blank background) + 5 clips."""
    root = tmp_path_factory.mktemp("windows_ann")
    (root / "long").mkdir()
    write_long_video(root / "long" / "long.mp4", 80, 30, 40, seed=3)
    make_videos(root / "short", n=5)
    ckpt = save_tiny(root / "m.safetensors")
    out = root / "flat"
    summary = build_index([root / "long", root / "short" / "videos"], out, ckpt, _opts())
    assert summary.encoded == 6 and not summary.skipped and summary.windows == 39
    return root, out


@pytest.fixture(scope="module")
def indexes(base):
    """kind label -> index folder: the flat index copied, then the ANN structure requested (no re-encode)."""
    root, flat = base
    out = {}
    for kind, params, _ in KINDS:
        label = f"{kind}-{params.get('nprobe', '')}"
        if kind == "flat":
            out[label] = flat
            continue
        folder = root / label
        shutil.copytree(flat, folder)
        summary = build_index([root / "long", root / "short" / "videos"], folder, None,
                              _opts(ann=kind, ann_params=dict(params)))
        assert summary.encoded == 0 and summary.ann == kind
        assert store.read_manifest(folder)["ann"]["file"]
        out[label] = folder
    return out


def _exact(folder: Path):
    """(vectors [R, D], owner [R], starts [R], ends [R], entries) of the stored rows."""
    d = store.load_index(folder)
    return d.vectors, np.asarray(d.owner), np.asarray(d.starts), np.asarray(d.ends), d.entries


def _expected(folder: Path, q: np.ndarray):
    """Exact search by hand: per video (entry id) its max row score and that row's window, best first."""
    vecs, owner, starts, ends, entries = _exact(folder)
    scores = vecs @ q
    best = {}
    for r in np.argsort(-scores, kind="stable"):
        pos = int(owner[r])
        if pos not in best:
            best[pos] = (entries[pos].id, float(scores[r]), float(starts[r]), float(ends[r]))
    return list(best.values()), scores


def _row_score(folder: Path, vid: int, start, end, scores) -> float:
    vecs, owner, starts, ends, entries = _exact(folder)
    pos = [e.id for e in entries].index(vid)
    rows = np.flatnonzero(owner == pos)
    if start is None:
        assert len(rows) == 1 and np.isnan(starts[rows[0]])
        return float(scores[rows[0]])
    match = [r for r in rows if starts[r] == start and ends[r] == end]
    assert len(match) == 1, (vid, start, end)
    return float(scores[match[0]])


def _check_result(folder, res, q, k, kind, exact_kind, n_videos):
    tol = SCORE_TOL.get(kind, 1e-5)
    expected, scores = _expected(folder, q)
    hits = res.hits
    # k counts videos: one hit per video, as many as asked (or as there are)
    assert len(hits) == min(k, n_videos), (kind, k, [h.id for h in hits])
    assert len({h.id for h in hits}) == len(hits)
    assert [h.score for h in hits] == sorted([h.score for h in hits], reverse=True)
    for h in hits:
        # the hit's window is one of its own rows and its score is that row's (true) score
        assert h.score == pytest.approx(_row_score(folder, h.id, h.start, h.end, scores), abs=tol)
        # moments: the video's other windows among the candidates, best first, true scores, no repeats
        ms = [(m["start"], m["end"]) for m in h.moments]
        assert len(set(ms)) == len(ms) and (h.start, h.end) not in ms
        assert [m["score"] for m in h.moments] == sorted([m["score"] for m in h.moments], reverse=True)
        assert all(m["score"] <= h.score + tol for m in h.moments)
        for m in h.moments:
            assert m["end"] > m["start"]
            assert m["score"] == pytest.approx(_row_score(folder, h.id, m["start"], m["end"], scores), abs=tol)
    if not exact_kind:
        return
    # equal to exact search wherever the margin is clear: same ids where a video's score stands apart
    # from its neighbours', same best window where it stands apart from the video's other windows
    margin = 10 * tol
    for i, h in enumerate(hits):
        eid, esc, est, een = expected[i]
        assert h.score == pytest.approx(esc, abs=tol)
        before = expected[i - 1][1] - esc if i else np.inf
        after = esc - expected[i + 1][1] if i + 1 < len(expected) else np.inf
        if min(before, after) > margin:
            assert h.id == eid, (kind, i)
            vecs, owner, starts, ends, entries = _exact(folder)
            pos = [e.id for e in entries].index(eid)
            own = np.sort(scores[owner == pos])[::-1]
            if len(own) == 1:
                assert h.start is None and h.end is None and h.moments == []
            elif own[0] - own[1] > margin:
                assert (h.start, h.end) == (est, een), (kind, i)


@pytest.mark.parametrize("kind,params,exact_kind", KINDS, ids=[f"{k}-{p.get('nprobe', '')}" for k, p, _ in KINDS])
def test_windows_group_per_video_under_each_ann_kind(indexes, kind, params, exact_kind):
    folder = indexes[f"{kind}-{params.get('nprobe', '')}"]
    s = Searcher.open(folder)
    assert s.ann_kind == kind and s.search_path["kind"] == kind
    assert len(s) == 6 and s.num_rows == 5 + 39
    long_id = next(e.id for e in s.entries if e.video_id == "long.mp4")
    texts = s.encode_queries(QUERIES)
    for text, q in zip(QUERIES, texts):
        for k in (1, 3, 6, 10):
            res = s.search(text, k=k, query_vector=q)
            _check_result(folder, res, q, k, kind, exact_kind, 6)
            long_hit = [h for h in res.hits if h.id == long_id]
            if k >= 6:  # every video is in the result: the long one with a window and other moments
                assert len(long_hit) == 1 and long_hit[0].start is not None and long_hit[0].moments


@pytest.mark.parametrize("kind,params,exact_kind", KINDS, ids=[f"{k}-{p.get('nprobe', '')}" for k, p, _ in KINDS])
def test_k_counts_videos_when_one_video_fills_the_candidates(indexes, kind, params, exact_kind):
    """A query equal to a blank window of the long video: its ~30 identical blank windows outrank every
    other video, so the first candidate rows (4k + 16) all belong to one video; the searcher must fetch
    more until it has k videos, whatever the ANN kind (IVF with one probed cell included)."""
    folder = indexes[f"{kind}-{params.get('nprobe', '')}"]
    s = Searcher.open(folder)
    long_id = next(e.id for e in s.entries if e.video_id == "long.mp4")
    q = s.vector(long_id, start=0.0)  # 0-4 s: blank background
    assert q is not None
    expected, scores = _expected(folder, q)
    vecs, owner, starts, ends, entries = _exact(folder)
    long_pos = [e.id for e in entries].index(long_id)
    order = np.argsort(-scores, kind="stable")
    assert (owner[order[: 4 * 2 + 16]] == long_pos).all()  # the premise: k=2's first fetch is one video
    for k in (2, 3, 6):
        res = s.search("blank", k=k, query_vector=q)
        _check_result(folder, res, q, k, kind, exact_kind, 6)
        assert res.hits[0].id == long_id and res.hits[0].score == pytest.approx(1.0, abs=SCORE_TOL.get(kind, 1e-5))
        # the long video's blank windows are its moments, each scoring (about) 1
        assert sum(m["score"] > 0.999 for m in res.hits[0].moments) >= 20
    # search by example too (a different entry point, same candidate rule), with the video excluded
    res = s.search_vector(q, k=3, exclude_id=long_id)
    assert len(res.hits) == 3 and long_id not in {h.id for h in res.hits}
    if exact_kind:
        others = [e for e in expected if e[0] != long_id]
        tol = SCORE_TOL.get(kind, 1e-5)
        for i, h in enumerate(res.hits):
            gaps = [abs(others[i][1] - others[j][1]) for j in (i - 1, i + 1) if 0 <= j < len(others)]
            if min(gaps) > 10 * tol:
                assert h.id == others[i][0], (kind, i)


def test_search_ann_returns_k_rows_when_the_probed_cells_hold_fewer():
    """IVF with one probed cell of many, HNSW with a tiny efSearch: ``search_ann`` still returns k rows, the
    same rows exact search returns when every cell is probed, and leaves the index's own settings alone."""
    import faiss

    from hybridtower.index.ann import ThreadedSearch, build_ann, search_ann

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((8, 16)).astype(np.float32)
    x = (centres[rng.integers(0, 8, 400)] + 0.05 * rng.standard_normal((400, 16))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:3]
    exact = np.argsort(-(q @ x.T), axis=1, kind="stable")
    ivf = build_ann(x, "ivf", {"nlist": 8, "nprobe": 1})
    assert (ivf.search(q, 120)[1] < 0).any()  # the premise: one cell holds fewer than 120 rows
    for index in (ivf, ThreadedSearch(ivf), ThreadedSearch(ivf, threads=1)):
        s, r = search_ann(index, q, 120)
        assert (r >= 0).all() and r.shape == (3, 120)
        for i in range(3):  # every cell probed: the exact top 120 (as sets: ties may swap places)
            assert set(r[i].tolist()) == set(exact[i, :120].tolist())
        assert ivf.nprobe == 1
    hnsw = build_ann(x, "hnsw", {"ef_search": 4})
    assert isinstance(hnsw, faiss.IndexHNSW)
    s, r = search_ann(ThreadedSearch(hnsw), q, 300)
    assert (r >= 0).all() and hnsw.hnsw.efSearch == 4
    s, r = search_ann(build_ann(x, "sq8"), q, 5)  # kinds without a search width: one plain search
    assert r.shape == (3, 5) and (r >= 0).all()
