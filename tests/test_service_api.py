"""HTTP API of ``hybridtower.service`` over a fake searcher: odd queries, ids, ranges, traversal, thumbnails."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from hybridtower.index.searcher import Hit  # noqa: E402 (the real hit: its to_public_dict is the schema)
from hybridtower.service import EmptyQuery, clean_query, create_app  # noqa: E402
from service_leaks import leaks  # noqa: E402,F401 (fixture: no error body may hold a server path)

COLORS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220)}


def write_clip(path: Path, rgb, frames: int = 10, size=(48, 64)) -> Path:
    """A tiny constant-colour H.264 clip (the thumbnail check reads its colour back)."""
    from hybridtower.data.synthetic import write_video

    h, w = size
    write_video(np.broadcast_to(np.asarray(rgb, np.uint8), (frames, h, w, 3)), path, "mp4", "libx264", 10)
    return path


@dataclass
class FakeEntry:
    id: int
    path: str
    video_id: str
    size: int
    mtime_ns: int


def entry_of(id: int, video_id: str, path: Path) -> FakeEntry:
    """The entries-table row ``hybridtower index`` would write for ``path`` (its size and time now)."""
    try:
        st = path.stat()
        size, mtime = st.st_size, st.st_mtime_ns
    except FileNotFoundError:
        size, mtime = 0, 0
    return FakeEntry(id, str(path), video_id, size, mtime)


@dataclass
class FakeResult:
    query: str
    hits: list
    took_ms: float
    truncated: bool
    num_tokens: int
    notes: list = field(default_factory=list)


class FakeSearcher:
    """Ranks by how many query words occur in the video id; 10 "tokens" of context."""

    context = 10

    def __init__(self, entries: dict[int, tuple[str, Path]], roots=()):
        self.entries = entries
        self.rows = {i: entry_of(i, vid, path) for i, (vid, path) in entries.items()}
        self.queries: list[tuple[str, int]] = []
        roots = list(roots) or sorted({str(path.parent) for _, path in entries.values()})
        self.manifest = {"kind": "vector", "model_name": "fake-model", "roots": roots}

    def __len__(self):
        return len(self.entries)

    def entry(self, id):
        return self.rows.get(id) if isinstance(id, int) else None

    def search(self, query, k=10):
        self.queries.append((query, k))
        if query == "raise-query-error":
            raise EmptyQuery("the searcher refused this query")
        words = query.lower().split()
        scored = [
            Hit(i, vid, str(path), float(sum(w in vid for w in words)) + 0.001 * (10 - i))
            for i, (vid, path) in self.entries.items()
        ]
        scored.sort(key=lambda h: -h.score)
        n_tok = len(words) + 2
        return FakeResult(query, scored[:k], 0.5, n_tok > self.context, n_tok)


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    entries = {}
    for i, (name, rgb) in enumerate(COLORS.items()):
        entries[i] = (f"{name}_clip", write_clip(root / f"{name}_clip.mp4", rgb))
    bad = root / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 50)
    entries[7] = ("broken", bad)
    entries[9] = ("gone", root / "gone.mp4")  # in the index, deleted from disk
    secret = root.parent / "secret.txt"
    secret.write_text("TOP-SECRET")
    return root, entries


@pytest.fixture()
def client(collection, tmp_path, leaks):
    _, entries = collection
    searcher = FakeSearcher(entries)
    app = create_app(searcher, thumbnail_dir=tmp_path / "thumbs", max_k=20, default_k=5)
    wrapped = leaks.wrap(app)
    with TestClient(wrapped, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        c.searcher = searcher
        c.app_ = wrapped
        yield c


def test_healthz_and_page(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["videos"] == 5 and body["model_name"] == "fake-model"
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="search-form"' in page.text and 'id="results"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: works offline
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"] and "fetch(" in js.text
    assert client.get("/static/style.css").status_code == 200
    for bad in ("/static/index.html", "/static/app.py", "/static/..%2fapp.py", "/static/nothing.js"):
        assert client.get(bad).status_code == 404, bad


def test_search_returns_ranked_hits_with_urls(client):
    r = client.get("/search", params={"q": "a green clip", "k": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["query"] == "a green clip" and body["k"] == 3 and len(body["hits"]) == 3
    top = body["hits"][0]
    assert top["video_id"] == "green_clip" and top["name"] == "green_clip.mp4" and top["rank"] == 1
    assert top["video_url"] == f"/videos/{top['id']}" and top["thumbnail_url"] == f"/videos/{top['id']}/thumbnail"
    assert "path" not in top and all("/" not in h["name"] for h in body["hits"])  # no server paths leak
    assert [h["score"] for h in body["hits"]] == sorted((h["score"] for h in body["hits"]), reverse=True)
    assert body["truncated"] is False and body["notes"] == [] and body["total_videos"] == 5
    assert body["took_ms"] >= 0 and body["search_ms"] == 0.5
    assert client.searcher.queries[-1] == ("a green clip", 3)
    assert len(client.get("/search", params={"q": "blue"}).json()["hits"]) == 5  # default_k


@pytest.mark.parametrize("q", [None, "", "   ", "\t\n  \r\n", "\x00\x01\x7f", "\u200b\u200b", "\ufeff \x85"])
def test_empty_queries_are_400(client, q):
    params = {} if q is None else {"q": q}
    r = client.get("/search", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "empty_query" and r.json()["detail"]
    assert client.searcher.queries == []  # never reaches the model


def test_control_characters_removed_with_note(client):
    r = client.get("/search", params={"q": "red\x00 clip\x1b[31m\x7f\ttoday\u0085"})
    assert r.status_code == 200
    body = r.json()
    assert body["query"] == "red clip[31m today"
    assert any("removed 3 control/invisible characters" in n for n in body["notes"])
    assert client.searcher.queries[-1][0] == "red clip[31m today"


def test_non_ascii_query_kept(client):
    q = "ein rotes Auto fährt 東京 🎥 بالعربية"
    r = client.get("/search", params={"q": q})
    assert r.status_code == 200 and r.json()["query"] == q and r.json()["notes"] == []
    # bytes that are not UTF-8 (%ff) are decoded with replacement characters, not a crash
    r = client.get("/search?q=red%ff%fe%20clip")
    assert r.status_code == 200 and r.json()["hits"]


def test_long_queries_truncated_and_said_so(client):
    r = client.get("/search", params={"q": "red " * 20})  # > 10 tokens: the model truncates
    body = r.json()
    assert r.status_code == 200 and body["truncated"] is True and body["num_tokens"] == 22
    assert any("truncated" in n for n in body["notes"])
    r = client.get("/search", params={"q": "x" * 5000})  # > max chars: cut before the model sees it
    body = r.json()
    assert r.status_code == 200 and body["truncated"] is True
    assert len(client.searcher.queries[-1][0]) == 1000 and any("1000 characters" in n for n in body["notes"])


@pytest.mark.parametrize("k,status", [("abc", 400), ("0", 400), ("-3", 400), ("1.5", 400), ("2", 200), (" 2 ", 200), ("", 200)])
def test_k_validation(client, k, status):
    r = client.get("/search", params={"q": "red", "k": k})
    assert r.status_code == status, r.text
    if status == 400:
        assert r.json()["error"] == "invalid_k"
    elif k.strip():
        assert len(r.json()["hits"]) == 2


def test_k_above_max_is_lowered(client):
    body = client.get("/search", params={"q": "red", "k": 10**9}).json()
    assert body["k"] == 20 and any("lowered" in n for n in body["notes"])


def test_searcher_query_error_is_400(client):
    r = client.get("/search", params={"q": "raise-query-error"})
    assert r.status_code == 400 and "refused" in r.json()["detail"]


def test_video_served_with_ranges(client, collection):
    _, entries = collection
    data = entries[1][1].read_bytes()
    r = client.get("/videos/1")
    assert r.status_code == 200 and r.content == data and r.headers["content-type"] == "video/mp4"
    assert r.headers["accept-ranges"] == "bytes" and r.headers["content-disposition"].startswith("inline")
    r = client.get("/videos/1", headers={"Range": "bytes=10-29"})
    assert r.status_code == 206 and r.content == data[10:30]
    assert r.headers["content-range"] == f"bytes 10-29/{len(data)}"
    r = client.get("/videos/1", headers={"Range": f"bytes={len(data) + 5}-"})
    assert r.status_code == 416
    r = client.head("/videos/1")
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(data) and r.content == b""


@pytest.mark.parametrize("vid", ["3", "99999", "abc", "-1", "1e3", "%20%31", "0x1", "１", "9"])
def test_unknown_or_malformed_ids_are_404(client, vid):
    for suffix in ("", "/thumbnail"):
        r = client.get(f"/videos/{vid}{suffix}")
        assert r.status_code == 404, (vid, suffix, r.text)
        assert r.json()["error"] == "not_found"


def _raw_get(app, raw_path: bytes) -> tuple[int, bytes]:
    """Send a request with an exact, un-normalised path straight to the ASGI app."""
    from urllib.parse import unquote_to_bytes

    path_part, _, query = raw_path.partition(b"?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": unquote_to_bytes(path_part).decode("utf-8", "replace"), "raw_path": path_part,
        "query_string": query, "root_path": "", "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 1234), "server": ("testserver", 80),
    }
    out = {"status": None, "body": b""}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg):
        if msg["type"] == "http.response.start":
            out["status"] = msg["status"]
        elif msg["type"] == "http.response.body":
            out["body"] += msg.get("body", b"")

    asyncio.run(app(scope, receive, send))
    return out["status"], out["body"]


TRAVERSALS = [
    b"/videos/../secret.txt",
    b"/videos/../../etc/passwd",
    b"/videos/..%2f..%2fetc%2fpasswd",
    b"/videos/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    b"/videos/%2E%2E%2Fsecret.txt",
    b"/videos/%252e%252e%252fsecret.txt",
    b"/videos//etc/passwd",
    b"/videos/%2Fetc%2Fpasswd",
    b"/videos/1/../../secret.txt",
    b"/videos/1%2f..%2f..%2fsecret.txt",
    b"/videos/1/thumbnail/../../../etc/passwd",
    b"/videos/..\\..\\secret.txt",
    b"/videos/C:%5Cwindows%5Cwin.ini",
    b"/static/../app.py",
    b"/static/%2e%2e%2fapp.py",
    b"/static//etc/passwd",
]


@pytest.mark.parametrize("raw", TRAVERSALS, ids=[t.decode() for t in TRAVERSALS])
def test_path_traversal_is_404(client, raw):
    status, body = _raw_get(client.app_, raw)
    assert status == 404, (raw, status, body[:200])
    assert b"TOP-SECRET" not in body and b"root:" not in body


def test_thumbnail_generated_once_and_cached(client, tmp_path):
    from PIL import Image

    r = client.get("/videos/2/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    img = Image.open(io.BytesIO(r.content))
    assert img.format == "JPEG" and max(img.size) == 256 and img.size == (256, 192)
    px = np.asarray(img.convert("RGB"))[96, 128].astype(int)
    assert np.abs(px - np.array(COLORS["blue"])).max() < 40  # it is the blue clip's frame
    thumbs = client.app_.state.thumbnails
    assert thumbs.generated == 1 and len(list((tmp_path / "thumbs").rglob("*.jpg"))) == 1
    assert client.get("/videos/2/thumbnail").content == r.content
    assert thumbs.generated == 1  # served from the disk cache


def test_undecodable_video_thumbnail_is_404_not_500(client):
    for _ in range(2):
        r = client.get("/videos/7/thumbnail")
        assert r.status_code == 404 and r.json()["error"] == "thumbnail_unavailable"
        assert "video 7 (broken)" in r.json()["detail"]
    assert client.get("/videos/7").status_code == 200  # the file itself is still in the index


def test_indexed_file_gone_is_404(client):
    r = client.get("/videos/9")
    assert r.status_code == 404 and "gone" in r.json()["detail"]


def test_clean_query_rules():
    assert clean_query("  a \t b\n").text == "a b"
    assert clean_query("x" * 20, max_chars=5).text == "xxxxx"
    assert clean_query("x" * 20, max_chars=5).cut
    assert clean_query("caf\u00e9 \ud800ok").text == "café ok"
    assert clean_query("zero\u200bwidth").text == "zerowidth"
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # ZWJ emoji sequence survives
    assert clean_query(f"a {family} walks").text == f"a {family} walks"
    with pytest.raises(EmptyQuery):
        clean_query("\x00\x00")
    with pytest.raises(EmptyQuery):
        clean_query(None)


class WindowedSearcher(FakeSearcher):
    """The real Searcher's "more like this" interface: ``vector(id, start=)`` (None for a start that is no
    window), ``rows_of(id)`` and ``search_vector(v, k, exclude_id=)``. Video 0 is stored as three 10 s
    windows, the others as one whole-file row."""

    def __init__(self, entries, roots=()):
        super().__init__(entries, roots)
        self.windows = {0: [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)]}
        self.vectors = {i: np.eye(16, dtype=np.float32)[i] for i in entries}
        self.vector_calls: list[tuple[int, float | None]] = []

    def rows_of(self, id):
        return [{"start": s, "end": e} for s, e in self.windows.get(id, [(None, None)])]

    def vector(self, id, start=None):
        self.vector_calls.append((id, start))
        if id not in self.vectors:
            return None
        if start is not None and not any(abs(s - start) <= 0.5 for s, _ in self.windows.get(id, [])):
            return None
        return self.vectors[id]

    def search_vector(self, vector, k=10, *, exclude_id=None):
        hits = [Hit(i, vid, str(path), float(self.vectors[i] @ vector) + 0.001 * (10 - i))
                for i, (vid, path) in self.entries.items() if i != exclude_id]
        hits.sort(key=lambda h: -h.score)
        return FakeResult("", hits[:k], 0.3, False, 0)


def test_similar_one_behaviour_through_image_query(collection, tmp_path, leaks):
    """/similar goes through index.image_query.similar only: an unknown id is 404, a start with no window
    is 400 invalid_query (the parameter is wrong, the video exists)."""
    _, entries = collection
    searcher = WindowedSearcher(entries)
    app = leaks.wrap(create_app(searcher, thumbnail_dir=tmp_path / "thumbs", max_k=20, default_k=5))
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        r = c.get("/similar/0?k=3")
        assert r.status_code == 200, r.text
        body = r.json()
        assert 0 not in [h["id"] for h in body["hits"]] and len(body["hits"]) == 3
        assert body["source"] == {"id": 0, "start": None} and any("more like this" in n for n in body["notes"])
        assert c.get("/similar/0?start=10").status_code == 200 and searcher.vector_calls[-1] == (0, 10.0)
        past = c.get("/similar/0?start=95")  # past the video's last window
        assert past.status_code == 400 and past.json()["error"] == "invalid_query"
        assert "video 0 has no stored window" in past.json()["detail"]
        whole = c.get("/similar/1?start=3")  # one whole-file row: no windows at all
        assert whole.status_code == 400 and whole.json()["error"] == "invalid_query"
        assert c.get("/similar/1").status_code == 200
        missing = c.get("/similar/8")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        # start= takes the CLI's time forms (one parser, core.timefmt) and refuses what float() alone would take
        assert c.get("/similar/0?start=0:10").status_code == 200 and searcher.vector_calls[-1] == (0, 10.0)
        for bad in ("1_0", "1e1", "0:99", "inf", "-3", "\u0663"):
            r = c.get("/similar/0", params={"start": bad})
            assert r.status_code == 400 and r.json()["error"] == "invalid_start", bad


def test_unbatched_search_is_first_come_first_served(collection, tmp_path, leaks):
    """--no-batching: searches run one at a time in arrival order (the FifoLock), whatever the thread pool
    does. The first search blocks; the others arrive while it runs, each known to be queued before the next."""
    import threading

    _, entries = collection
    started, release = threading.Event(), threading.Event()

    class Blocking(FakeSearcher):
        def search(self, query, k=10):
            if query == "first":
                started.set()
                release.wait(10)
            return super().search(query, k)

    searcher = Blocking(entries)
    app = create_app(searcher, thumbnail_dir=tmp_path / "thumbs", batching=False)
    lock = None

    async def main():
        nonlocal lock
        import httpx

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            first = asyncio.create_task(c.get("/search", params={"q": "first"}))
            await asyncio.to_thread(started.wait, 10)
            lock = app.state.search_lock
            rest = []
            for i in range(8):
                rest.append(asyncio.create_task(c.get("/search", params={"q": f"query {i}"})))
                while lock.waiting() < i + 1:
                    await asyncio.sleep(0.001)
            release.set()
            answers = await asyncio.gather(first, *rest)
            assert all(a.status_code == 200 for a in answers)

    asyncio.run(main())
    assert [q for q, _ in searcher.queries] == ["first"] + [f"query {i}" for i in range(8)]
    assert not lock.locked()



def test_clean_query_fast_path_equals_the_rules():
    """Printable ASCII skips the per-character rules: it must give exactly what they give."""
    import random

    from hybridtower.service.queries import _clean_any

    rng = random.Random(0)
    alphabet = "ab Z09.,!?-' \t\n\x0b\x1c\x7f\x00~"
    cases = ["", " ", "a", "  a  b  ", "x" * 30, "a" * 10 + " " * 10 + "b", "~!@#$%^&*()"]
    cases += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25))) for _ in range(3000)]
    for raw in cases:
        for max_chars in (5, 12, 1000):
            try:
                fast = clean_query(raw, max_chars=max_chars)
            except EmptyQuery as exc:
                fast = ("empty", str(exc))
            try:
                slow = _clean_any(raw, max_chars)
            except EmptyQuery as exc:
                slow = ("empty", str(exc))
            assert fast == slow, (raw, max_chars)
