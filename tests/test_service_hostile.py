"""The service against hostile or unlucky conditions (issue 11): swapped links, tampered entries, files that
change under it, foreign Host headers, odd methods and malformed requests, index updates while serving.

Every answer with status >= 400 that these tests receive is checked for server paths (``no_paths``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from hybridtower.service import ThumbnailCache, ThumbnailError, create_app  # noqa: E402
from hybridtower.service.files import DescriptorFileResponse, NotServable, open_indexed  # noqa: E402
from hybridtower.service.server import BackgroundServer  # noqa: E402
from service_leaks import leaks  # noqa: E402,F401 (fixture)
from test_service_api import COLORS, FakeSearcher, _raw_get, entry_of, write_clip  # noqa: E402


def make_client(app, leaks, host="127.0.0.1") -> TestClient:
    return TestClient(leaks.wrap(app), base_url=f"http://{host}", raise_server_exceptions=False)


@pytest.fixture()
def library(tmp_path):
    """An indexed folder with three clips (ids 0-2), a secret file beside it, and the fake searcher."""
    root = tmp_path / "library" / "vids"
    root.mkdir(parents=True)
    entries = {}
    for i, (name, rgb) in enumerate(COLORS.items()):
        entries[i] = (f"{name}.mp4", write_clip(root / f"{name}.mp4", rgb))
    secret = tmp_path / "library" / "secret.txt"
    secret.write_text("TOP-SECRET " * 10)
    searcher = FakeSearcher(entries, roots=[str(root)])
    return root, secret, searcher


def test_symlink_swap_is_404(library, tmp_path, leaks):
    root, secret, searcher = library
    app = create_app(searcher, thumbnail_dir=tmp_path / "thumbs")
    with make_client(app, leaks) as client:
        assert client.get("/videos/0").status_code == 200
        target = root / "red.mp4"
        target.unlink()
        target.symlink_to(secret)  # the issue's `rm vids/a.webm; ln -s /etc/passwd vids/a.webm`
        for suffix in ("", "/thumbnail"):
            r = client.get(f"/videos/0{suffix}")
            assert r.status_code == 404, r.text
            assert b"TOP-SECRET" not in r.content and "video 0 (red.mp4)" in r.json()["detail"]
        # a link to a file outside the roots with the very size and time the index recorded: still 404
        st = secret.stat()
        searcher.rows[0] = entry_of(0, "red.mp4", target)
        assert (searcher.rows[0].size, searcher.rows[0].mtime_ns) == (st.st_size, st.st_mtime_ns)
        r = client.get("/videos/0")
        assert r.status_code == 404 and "not inside the indexed folders" in r.json()["detail"]
        # a link inside the root to another indexed video: not what was indexed (size/time differ) -> 404
        target.unlink()
        target.symlink_to(root / "green.mp4")
        searcher.rows[0] = entry_of(0, "red.mp4", root / "red-original-gone.mp4")
        searcher.rows[0].size, searcher.rows[0].mtime_ns = 1, 1
        assert client.get("/videos/0").status_code == 404


def test_tampered_entries_table_cannot_name_outside_files(library, tmp_path, leaks):
    root, secret, searcher = library
    app = create_app(searcher, thumbnail_dir=tmp_path / "thumbs")
    with make_client(app, leaks) as client:
        # a row pointing at a file outside the indexed folders, with matching size and time
        searcher.rows[1] = entry_of(1, "green.mp4", secret)
        for path in ("/videos/1", "/videos/1/thumbnail"):
            r = client.get(path)
            assert r.status_code == 404 and b"TOP-SECRET" not in r.content
        # ... or through '..' from inside a root
        searcher.rows[1] = entry_of(1, "green.mp4", root / ".." / "secret.txt")
        assert client.get("/videos/1").status_code == 404
        # no recorded roots: nothing is served
        searcher.manifest = {**searcher.manifest, "roots": []}
        assert client.get("/videos/2").status_code == 404


def test_changed_fifo_and_directory_are_404(library, tmp_path, leaks):
    root, _, searcher = library
    app = create_app(searcher, thumbnail_dir=tmp_path / "thumbs")
    with make_client(app, leaks) as client:
        blue = root / "blue.mp4"
        data = blue.read_bytes()
        blue.write_bytes(data + b"appended")  # changed since indexing
        r = client.get("/videos/2")
        assert r.status_code == 404 and "changed since it was indexed" in r.json()["detail"]
        blue.unlink()
        os.mkfifo(blue)  # would block a plain open() forever
        t0 = time.monotonic()
        assert client.get("/videos/2").status_code == 404
        assert client.get("/videos/2/thumbnail").status_code == 404
        assert time.monotonic() - t0 < 10
        blue.unlink()
        blue.mkdir()
        assert client.get("/videos/2").status_code == 404
        assert client.get("/videos/2/thumbnail").status_code == 404


def test_file_is_served_from_the_checked_descriptor(library):
    """A swap of the name after the check does not change what is sent."""
    root, _, searcher = library
    path = root / "red.mp4"
    original = path.read_bytes()
    opened = open_indexed(0, searcher.entry(0), (str(root.resolve()),))
    response = DescriptorFileResponse(opened, media_type="video/mp4")
    path.unlink()
    path.write_bytes(b"X" * len(original))  # replaced after the check, same size
    scope = {"type": "http", "method": "GET", "headers": [], "asgi": {"version": "3.0"}, "path": "/videos/0"}
    sent = {"status": None, "body": b""}

    async def receive():
        await asyncio.sleep(3600)

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        else:
            sent["body"] += message.get("body", b"")

    asyncio.run(response(scope, receive, send))
    assert sent["status"] == 200 and sent["body"] == original
    assert opened.fd == -1  # closed once sent
    with pytest.raises(NotServable, match="changed since it was indexed"):
        open_indexed(0, searcher.entry(0), (str(root.resolve()),))  # the new file is not what was indexed


class ExplodingSearcher(FakeSearcher):
    def __init__(self, entries, secret_dir: Path, **kw):
        super().__init__(entries, **kw)
        self.secret_dir = secret_dir

    def search(self, query, k=10):
        raise RuntimeError(f"File at path {self.secret_dir}/some/file.mp4 does not exist.")


def test_errors_carry_no_server_paths(library, tmp_path, leaks, caplog):
    root, _, searcher = library
    bad = root / "broken.mp4"
    bad.write_bytes(b"not a video " * 100)
    entries = dict(searcher.entries)
    entries[5] = ("broken.mp4", bad)
    boom = ExplodingSearcher(entries, root, roots=[str(root)])
    app = create_app(boom, thumbnail_dir=tmp_path / "thumbs")
    with make_client(app, leaks) as client, caplog.at_level(logging.ERROR, logger="hybridtower.service"):
        r = client.get("/search", params={"q": "red"})
        assert r.status_code == 500 and r.json() == {
            "error": "internal_error", "detail": "the server failed to answer this request; the details are in its log"}
        assert any("does not exist" in str(rec.exc_info[1]) for rec in caplog.records if rec.exc_info)  # logged
        r = client.get("/videos/5/thumbnail")
        assert r.status_code == 404 and r.json()["detail"].startswith("no thumbnail for video 5 (broken.mp4)")
        (root / "green.mp4").unlink()
        (root / "green.mp4").mkdir()  # unreadable as a file
        for path in ("/videos/1", "/videos/1/thumbnail", "/videos/77", "/videos/abc", "/nothing", "/search?k=x&q=a"):
            assert client.get(path).status_code >= 400
    assert len(leaks.bodies) >= 8


def test_thumbnail_failure_is_not_permanent(library, tmp_path, leaks):
    root, _, searcher = library
    app = create_app(searcher, thumbnail_dir=tmp_path / "thumbs", thumbnail_failure_ttl_s=0)
    red = root / "red.mp4"
    original = red.read_bytes()
    st = red.stat()
    with make_client(app, leaks) as client:
        red.write_bytes(b"\0" * len(original))  # garbage with the indexed size and time: passes the checks
        os.utime(red, ns=(st.st_atime_ns, st.st_mtime_ns))
        r = client.get("/videos/0/thumbnail")
        assert r.status_code == 404 and r.json()["error"] == "thumbnail_unavailable"
        red.write_bytes(original)  # restored
        os.utime(red, ns=(st.st_atime_ns, st.st_mtime_ns))
        r = client.get("/videos/0/thumbnail")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"


def test_thumbnail_failures_expire(library, tmp_path):
    root, _, searcher = library
    now = [0.0]
    cache = ThumbnailCache(tmp_path / "thumbs", failure_ttl_s=30, clock=lambda: now[0])
    red = root / "red.mp4"
    original, st = red.read_bytes(), red.stat()
    roots = (str(root.resolve()),)

    def get():
        opened = open_indexed(0, searcher.entry(0), roots)
        try:
            return cache.get(opened)
        finally:
            opened.close()

    red.write_bytes(b"\0" * len(original))
    os.utime(red, ns=(st.st_atime_ns, st.st_mtime_ns))
    for _ in range(3):
        with pytest.raises(ThumbnailError):
            get()
    assert cache.attempts == 1  # remembered within the TTL: one decode for a burst
    red.write_bytes(original)
    os.utime(red, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ThumbnailError):
        get()  # still inside the TTL
    now[0] = 31.0
    assert get()[:2] == b"\xff\xd8"  # expired: decoded again, a JPEG
    assert cache.attempts == 2 and cache.generated == 1


# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.", ""])
def test_foreign_host_is_400(library, tmp_path, leaks, host):
    root, _, searcher = library
    app = create_app(searcher, thumbnail_dir=tmp_path / "thumbs")
    with make_client(app, leaks) as client:
        for path in ("/search?q=red", "/videos/0", "/healthz", "/"):
            r = client.get(path, headers={"Host": host})
            if host == "localhost.":  # the same name with the root dot: allowed
                assert r.status_code == 200, (path, r.text)
                continue
            assert r.status_code == 400, (host, path, r.status_code)
            assert r.json()["error"] == "invalid_host" and b"TOP-SECRET" not in r.content
        assert searcher.queries == [] or host == "localhost."


def test_allowed_hosts(library, tmp_path, leaks):
    _, _, searcher = library
    app = create_app(searcher, thumbnail_dir=tmp_path / "thumbs")
    with make_client(app, leaks) as client:
        for host in ("localhost", "localhost:8000", "127.0.0.1:1", "[::1]:8000", "LOCALHOST"):
            assert client.get("/healthz", headers={"Host": host}).status_code == 200, host
    app = create_app(searcher, thumbnail_dir=tmp_path / "thumbs", allowed_hosts=["search.lan"])
    with make_client(app, leaks, host="search.lan") as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/healthz", headers={"Host": "127.0.0.1"}).status_code == 400


def test_serve_allow_host_flag(monkeypatch):
    from hybridtower.cli.commands import serve
    from hybridtower.service.middleware import default_hosts

    assert default_hosts("127.0.0.1", ["media.lan", "10.0.0.5", "::2"]) == (
        "localhost", "127.0.0.1", "[::1]", "media.lan", "10.0.0.5", "[::2]")
    assert default_hosts("0.0.0.0") == ("localhost", "127.0.0.1", "[::1]")
    import argparse

    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
    args = parser.parse_args(["serve", "idx", "--allow-host", "a.lan", "--allow-host", "b.lan", "--no-batching",
                              "--batch-window-ms", "3", "--max-batch", "8", "--query-cache", "0"])
    assert args.allow_host == ["a.lan", "b.lan"] and args.no_batching and args.max_batch == 8
    args.allow_host = ["a.lan:80"]
    from hybridtower.core.errors import ConfigError

    with pytest.raises(ConfigError, match="allow-host"):
        serve.run(args)


def test_trailing_slash_redirect_is_relative(library, tmp_path, leaks):
    _, _, searcher = library
    app = create_app(searcher, thumbnail_dir=tmp_path / "thumbs")
    with make_client(app, leaks, host="localhost") as client:
        r = client.get("/search/?q=red&k=2", follow_redirects=False)
        assert r.status_code == 307 and r.headers["location"] == "/search?q=red&k=2"
        r = client.get("/videos/0/", follow_redirects=False)
        assert r.status_code == 307 and r.headers["location"] == "/videos/0"
        assert client.get("/search/?q=red", follow_redirects=True).json()["hits"]
    for raw in (b"//evil.example/", b"/nothing/", b"//search/", b"//evil.example/search/", b"/%2f%2fevil.example/"):
        status, body = _raw_get(app, raw)  # exact bytes: no client-side normalisation of '//'
        assert status == 404, (raw, status, body)


def test_head_wherever_get(library, tmp_path, leaks):
    _, _, searcher = library
    app = create_app(searcher, thumbnail_dir=tmp_path / "thumbs")
    with make_client(app, leaks) as client:
        for path in ("/", "/healthz", "/search?q=red", "/static/app.js", "/static/style.css", "/videos/0",
                     "/videos/0/thumbnail", "/favicon.ico"):
            get = client.get(path)
            head = client.head(path)
            assert head.status_code == get.status_code and get.status_code < 300, (path, head.status_code)
            assert head.content == b""
            if "content-length" in get.headers and path not in ("/healthz", "/search?q=red"):  # bodies with timings
                assert head.headers["content-length"] == get.headers["content-length"], path
        assert client.head("/videos/99").status_code == 404
        assert client.post("/search?q=red").status_code == 405


@pytest.mark.parametrize("q", ["\u200d", "\u200d\u200d \u200d", "\ufe0f", "\u200d\ufe0f\u20e3", "\u3164", "\u0301\u0301",
                               "\u2800 \u115f", "\U000e0041\U000e007f"])
def test_invisible_only_queries_are_400(library, tmp_path, leaks, q):
    _, _, searcher = library
    app = create_app(searcher, thumbnail_dir=tmp_path / "thumbs")
    with make_client(app, leaks) as client:
        r = client.get("/search", params={"q": q})
        assert r.status_code == 400 and r.json()["error"] == "empty_query", (repr(q), r.text)
        family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
        assert client.get("/search", params={"q": family}).status_code == 200  # emoji sequences still search
        assert client.get("/search", params={"q": "e\u0301"}).status_code == 200
    assert all(query == family or query == "e\u0301" for query, _ in searcher.queries)


def test_malformed_chunked_body_is_400_without_traceback(library, tmp_path):
    _, _, searcher = library
    app = create_app(searcher, thumbnail_dir=tmp_path / "thumbs")
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Collect(level=logging.DEBUG)
    with BackgroundServer(app, log_level="warning") as srv:
        loggers = [logging.getLogger(n) for n in ("uvicorn.error", "uvicorn", "hybridtower.service")]
        for lg in loggers:
            lg.addHandler(handler)
        try:
            for path in ("/search?q=red", "/videos/0", "/healthz") * 4:
                with socket.create_connection((srv.host, srv.port), timeout=10) as s:
                    s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                              f"zz\r\nhello\r\n0\r\n\r\n".encode())
                    data = b""
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                assert data.startswith(b"HTTP/1.1 400"), data[:200]
            time.sleep(0.3)  # let the app tasks of those requests finish
            with socket.create_connection((srv.host, srv.port), timeout=10) as s:  # still serving
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                assert s.recv(65536).startswith(b"HTTP/1.1 200")
        finally:
            for lg in loggers:
                lg.removeHandler(handler)
    bad = [r for r in records if r.exc_info or "Exception in ASGI" in r.getMessage()]
    assert not bad, [r.getMessage() for r in bad]


# ----------------------------------------------------------------------------------------------------
# following index updates (real index, real Searcher)
def _clip_set(folder: Path, names: dict[str, tuple]) -> None:
    from test_service_real import write_clip as moving_clip

    folder.mkdir(parents=True, exist_ok=True)
    for name, rgb in names.items():
        moving_clip(folder / f"{name}.mp4", rgb)


def _served_files_match(client, root: Path) -> int:
    body = client.get("/search", params={"q": "a shape moves", "k": 50}).json()
    for hit in body["hits"]:
        r = client.get(f"/videos/{hit['id']}")
        assert r.status_code == 200 and r.content == (root / hit["video_id"]).read_bytes(), hit
    return len(body["hits"])


def test_server_follows_new_generations(tmp_path, leaks):
    from hybridtower.index import IndexOptions, Searcher, build_index, read_manifest
    from test_service_real import make_checkpoint

    vids = tmp_path / "vids"
    _clip_set(vids, {"red": (220, 30, 30), "green": (30, 200, 60)})
    ckpt = make_checkpoint(tmp_path / "pig.safetensors")
    index = tmp_path / "index"
    build_index([vids], index, checkpoint=ckpt, options=IndexOptions(progress=False))
    searcher = Searcher.open(index)
    app = create_app(searcher, thumbnail_dir=tmp_path / "thumbs", reload_interval_s=0, batching=True)
    live = app.state.live
    with make_client(app, leaks) as client:
        assert _served_files_match(client, vids) == 2
        gen0 = client.get("/healthz").json()["index"]["generation"]

        _clip_set(vids, {"blue": (30, 60, 220)})  # an added video
        build_index([vids], index, options=IndexOptions(progress=False))
        client.get("/healthz")  # the next request notices; the load runs in the background
        live.wait_idle(60)
        health = client.get("/healthz").json()
        assert health["videos"] == 3 and health["index"]["generation"] > gen0 and health["status"] == "ok"
        assert _served_files_match(client, vids) == 3

        # --overwrite over another collection: the generation count restarts, ids now name other files
        shutil.rmtree(vids)
        _clip_set(vids, {"yellow": (230, 220, 40), "white": (240, 240, 240), "cyan": (30, 220, 220),
                         "pink": (240, 120, 200)})
        build_index([vids], index, checkpoint=ckpt, options=IndexOptions(progress=False, overwrite=True))
        client.get("/healthz")
        live.wait_idle(60)
        assert client.get("/healthz").json()["videos"] == 4
        assert _served_files_match(client, vids) == 4
        assert live.reloads == 2

        # a generation that cannot be opened: keep serving the old one, say so in /healthz (no paths)
        manifest = read_manifest(index)
        broken = {**manifest, "generation": manifest["generation"] + 1, "entries_file": "entries-999999.jsonl"}
        import json

        (index / "manifest.json.tmp").write_text(json.dumps(broken))
        os.replace(index / "manifest.json.tmp", index / "manifest.json")
        client.get("/healthz")
        live.wait_idle(60)
        health = client.get("/healthz")
        leaks.record(500, "/healthz (degraded)", health.content)  # checked for paths like an error body
        body = health.json()
        assert body["status"] == "degraded" and body["videos"] == 4
        assert "could not be opened" in body["index"]["reload_error"]
        assert _served_files_match(client, vids) == 4
        # the writer repairs it: served again
        (index / "manifest.json.tmp").write_text(json.dumps(manifest))
        os.replace(index / "manifest.json.tmp", index / "manifest.json")
        client.get("/healthz")
        live.wait_idle(60)
        assert client.get("/healthz").json()["status"] == "ok"


def test_reload_is_rate_limited_and_swaps_atomically(tmp_path):
    from hybridtower.service.reload import LiveSearcher

    index = tmp_path / "idx"
    index.mkdir()
    (index / "manifest.json").write_text("{}")
    opened = []

    class S:
        def __init__(self, gen):
            self.manifest = {"generation": gen}

        def __len__(self):
            return 0

    def reopen():
        opened.append(len(opened))
        return S(100 + len(opened))

    now = [0.0]
    live = LiveSearcher(S(1), index, reopen, interval_s=5.0, clock=lambda: now[0])
    old = live.current()
    (index / "manifest.json").write_text('{"changed": 1}')
    assert live.current() is old and opened == []  # not checked before the interval
    now[0] = 5.0
    live.current()
    live.wait_idle(10)
    assert opened == [0] and live.current().manifest["generation"] == 101 and old.manifest["generation"] == 1
    now[0] = 10.0
    live.current()  # unchanged manifest: nothing re-opened
    live.wait_idle(10)
    assert opened == [0]
    np.testing.assert_equal(live.status()["generation"], 101)
