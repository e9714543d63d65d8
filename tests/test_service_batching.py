"""Dynamic batching of query encodes and the query-vector cache (issue 12): same vectors as one-at-a-time
encoding, the batching window is a hard bound on the wait, the cache returns identical vectors and evicts."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from hybridtower.service.batching import BatchWindow, QueryBatcher, VectorCache, _Item


class FakeEncoder:
    """``encode_queries`` -> deterministic vectors from the text; records each call and the clock at it."""

    def __init__(self, clock=time.monotonic, dim: int = 8, fail_on: str | None = None):
        self.calls: list[tuple[list[str], float]] = []
        self.clock = clock
        self.dim = dim
        self.fail_on = fail_on

    def encode_queries(self, texts):
        self.calls.append((list(texts), self.clock()))
        if self.fail_on is not None and self.fail_on in texts:
            raise ValueError("cannot encode this batch")
        return np.stack([self.vector(t) for t in texts])

    def vector(self, text: str) -> np.ndarray:
        rng = np.random.default_rng(sum(map(ord, text)) * 1000 + len(text))
        return rng.standard_normal(self.dim).astype(np.float32)


def test_window_rule_with_a_controlled_clock():
    w = BatchWindow(window_s=0.010, max_batch=3)
    assert w.wait_s(0.0) is None and not w.due(0.0)
    w.add(_Item(None, "a", arrived=100.000))
    w.add(_Item(None, "b", arrived=100.004))
    assert w.deadline() == pytest.approx(100.010)
    assert not w.due(100.0099) and w.wait_s(100.004) == pytest.approx(0.006)
    assert w.due(100.010) and w.wait_s(100.010) == 0.0  # the first item's window is over: send now
    assert [i.text for i in w.take()] == ["a", "b"] and w.wait_s(100.02) is None
    for i, t in enumerate("cdefg"):
        w.add(_Item(None, t, arrived=200.0 + i * 1e-4))
    assert w.due(200.0)  # full: no waiting for the window
    assert [i.text for i in w.take()] == ["c", "d", "e"]
    assert w.deadline() == pytest.approx(200.0003 + 0.010)  # the rest: the window of ITS first item


def test_batcher_never_waits_past_the_window():
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731 - the batcher only sees this clock
    enc = FakeEncoder(clock)
    b = QueryBatcher(window_ms=10_000, max_batch=8, clock=clock)  # a 10 s window on the controlled clock
    try:
        f1 = b.submit(enc, "first")
        now[0] = 4.0
        f2 = b.submit(enc, "second")
        time.sleep(0.2)
        assert not f1.done() and enc.calls == []  # inside the window: still collecting
        now[0] = 10.0  # the first text's window is over
        b.poke()
        v1, v2 = f1.result(timeout=10), f2.result(timeout=10)
        assert enc.calls == [(["first", "second"], 10.0)]  # sent at the deadline of the first, together
        np.testing.assert_array_equal(v1, enc.vector("first"))
        np.testing.assert_array_equal(v2, enc.vector("second"))
        # a full batch goes at once, whatever the window
        futures = [b.submit(enc, f"q{i}") for i in range(8)]
        assert [len(f.result(timeout=10)) for f in futures] == [8] * 8
        assert enc.calls[-1] == ([f"q{i}" for i in range(8)], 10.0)
    finally:
        b.close()


def test_batcher_real_time_bound_and_mapping():
    """Concurrent callers on the real clock: each gets its own text's vector, in fewer encodes than texts,
    and none waits for longer than the window plus generous slack."""
    enc = FakeEncoder()
    b = QueryBatcher(window_ms=20, max_batch=16)
    texts = [f"query number {i}" for i in range(48)]
    waits: list[float] = []
    lock = threading.Lock()

    def one(t):
        t0 = time.monotonic()
        v = b.encode(enc, t, timeout=30)
        with lock:
            waits.append(time.monotonic() - t0)
        return v

    try:
        with ThreadPoolExecutor(48) as pool:
            vectors = list(pool.map(one, texts))
    finally:
        b.close()
    for t, v in zip(texts, vectors):
        np.testing.assert_array_equal(v, enc.vector(t))
    assert sum(len(c[0]) for c in enc.calls) == 48 and len(enc.calls) < 48
    assert max(len(c[0]) for c in enc.calls) <= 16
    assert max(waits) < 20.0  # generous: the window is 20 ms; nothing may wait for a never-coming batch
    assert b.stats()["encoded"] == 48


def test_an_encode_error_fails_only_its_batch():
    enc = FakeEncoder(fail_on="bad")
    other = FakeEncoder()
    now = [0.0]
    b = QueryBatcher(window_ms=1000, max_batch=3, clock=lambda: now[0])
    try:
        fa, fbad, fc = b.submit(enc, "a"), b.submit(enc, "bad"), b.submit(other, "c")  # full: sent at once
        with pytest.raises(ValueError):
            fa.result(timeout=10)
        with pytest.raises(ValueError):
            fbad.result(timeout=10)
        np.testing.assert_array_equal(fc.result(timeout=10), other.vector("c"))  # another searcher: its own call
        assert [c[0] for c in enc.calls] == [["a", "bad"]] and [c[0] for c in other.calls] == [["c"]]
        f = b.submit(enc, "fine")
        now[0] = 2.0
        b.poke()
        np.testing.assert_array_equal(f.result(timeout=10), enc.vector("fine"))
    finally:
        b.close()


def test_cache_returns_identical_vectors_and_evicts():
    c = VectorCache(max_items=2)
    a, b_, d = (np.arange(4, dtype=np.float32) + i for i in range(3))
    c.put(("m", "a"), a)
    c.put(("m", "b"), b_)
    got = c.get(("m", "a"))
    np.testing.assert_array_equal(got, a)
    got[0] = 99  # a caller changing its copy does not change the cache
    np.testing.assert_array_equal(c.get(("m", "a")), a)
    c.put(("m", "d"), d)  # evicts the least recently used: "b" ("a" was just read)
    assert ("m", "b") not in c and ("m", "a") in c and ("m", "d") in c and len(c) == 2
    assert c.get(("m", "b")) is None
    assert c.get(("other-model", "a")) is None  # keys carry the model
    assert c.stats()["hits"] == 2 and c.stats()["misses"] == 2
    with pytest.raises(ValueError):
        VectorCache(0)


# ----------------------------------------------------------------------------------------------------
# with the real Searcher and model (tiny PIG)
@pytest.fixture(scope="module")
def real(tmp_path_factory):
    from test_service_real import shared_real_index

    return shared_real_index(tmp_path_factory)


QUERIES = ["a red square moves right", "green", "ein gelber Kreis über dem Meer 🌞", "blue sky " * 30,
           "white wall", "a", "two shapes collide", "something moves to the left quickly"]


def test_batched_vectors_equal_unbatched_encoding(real):
    _, searcher = real
    singles = {q: searcher.encode_queries([q])[0] for q in QUERIES}
    b = QueryBatcher(window_ms=50, max_batch=len(QUERIES))
    try:
        with ThreadPoolExecutor(len(QUERIES)) as pool:
            batched = list(pool.map(lambda q: b.encode(searcher, q, timeout=60), QUERIES))
    finally:
        b.close()
    assert b.largest > 1  # they were really batched
    for q, v in zip(QUERIES, batched):
        np.testing.assert_allclose(v, singles[q], atol=1e-6, rtol=0)


def test_http_batching_on_off_and_cache_agree(real, tmp_path):
    from fastapi.testclient import TestClient

    from hybridtower.service import create_app

    _, searcher = real
    answers = {}
    for name, kw in {"off": dict(batching=False, query_cache=0), "on": dict(batching=True, query_cache=0),
                     "cache": dict(batching=True, query_cache=16)}.items():
        app = create_app(searcher, thumbnail_dir=tmp_path / "thumbs", **kw)
        with TestClient(app, base_url="http://127.0.0.1") as client, ThreadPoolExecutor(8) as pool:
            bodies = list(pool.map(lambda q: client.get("/search", params={"q": q, "k": 5}).json(), QUERIES * 2))
            health = client.get("/healthz").json()
        answers[name] = bodies
        if name == "off":
            assert health["batching"] is None and health["query_cache"] is None
        else:
            assert health["batching"]["encoded"] >= 1
        if name == "cache":
            assert health["query_cache"]["hits"] >= 1 and health["query_cache"]["size"] <= len(QUERIES)
            assert health["batching"]["encoded"] + health["query_cache"]["hits"] == len(QUERIES) * 2
    for a, b, c in zip(answers["off"], answers["on"], answers["cache"]):
        assert [h["id"] for h in a["hits"]] == [h["id"] for h in b["hits"]] == [h["id"] for h in c["hits"]]
        np.testing.assert_allclose([h["score"] for h in a["hits"]], [h["score"] for h in b["hits"]], atol=2e-6)
        np.testing.assert_allclose([h["score"] for h in a["hits"]], [h["score"] for h in c["hits"]], atol=2e-6)
        assert a["truncated"] == b["truncated"] and a["notes"] == b["notes"] and a["num_tokens"] == b["num_tokens"]


def test_finish_runs_after_the_encode_and_fails_alone():
    enc = FakeEncoder()
    now = [0.0]
    b = QueryBatcher(window_ms=1000, max_batch=2, clock=lambda: now[0])
    try:
        def boom(v):
            raise KeyError("this request only")

        ok = b.submit(enc, "a", finish=lambda v: ("ranked", float(v.sum())))
        bad = b.submit(enc, "b", finish=boom)
        assert ok.result(timeout=10) == ("ranked", pytest.approx(float(enc.vector("a").sum())))
        with pytest.raises(KeyError):
            bad.result(timeout=10)
        assert [c[0] for c in enc.calls] == [["a", "b"]]
    finally:
        b.close()


def test_a_lone_text_does_not_wait_for_the_window():
    """alone=True (nothing else in flight): sent at once on a frozen clock; texts that arrive while it is
    pending still join it; a text with company waits for the window as before."""
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731
    enc = FakeEncoder(clock)
    b = QueryBatcher(window_ms=10_000, max_batch=8, clock=clock)
    try:
        assert b.submit(enc, "lone", alone=True).result(timeout=10) is not None  # the clock never moved
        assert enc.calls == [(["lone"], 0.0)]
        w = BatchWindow(window_s=10.0, max_batch=8)
        w.add(_Item(None, "first", arrived=5.0, alone=True))
        w.add(_Item(None, "joined", arrived=5.0))
        assert w.due(5.0) and [i.text for i in w.take()] == ["first", "joined"]
        w.add(_Item(None, "company", arrived=6.0))
        assert not w.due(6.0) and w.wait_s(6.0) == pytest.approx(10.0)
    finally:
        b.close()


def test_http_single_request_is_not_held_for_the_window(tmp_path):
    """One request at a time never waits for the batching window (here a minute: it would time out)."""
    httpx = pytest.importorskip("httpx")
    from hybridtower.service import create_app
    from hybridtower.service.server import BackgroundServer

    class Searcher:
        manifest = {"kind": "vector", "roots": []}

        def __init__(self):
            self.enc = FakeEncoder()

        def __len__(self):
            return 3

        def entry(self, id):
            return None

        def encode_queries(self, texts):
            return self.enc.encode_queries(texts)

        def search(self, query, k=10, *, query_vector=None):
            from hybridtower.index.searcher import SearchResult

            return SearchResult(query, [], 0.1, False, 3)

    searcher = Searcher()
    app = create_app(searcher, thumbnail_dir=tmp_path / "t", batch_window_ms=60_000, query_cache=0)
    with BackgroundServer(app) as srv, httpx.Client(base_url=srv.url, timeout=20) as c:
        for q in ("one", "two", "three"):
            assert c.get("/search", params={"q": q}).status_code == 200
    assert [texts for texts, _ in searcher.enc.calls] == [["one"], ["two"], ["three"]]
