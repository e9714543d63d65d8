"""Previews, playback plans, search by image, "more like this", moments/weak fields, paging, /docs, /examples.

Over fake searchers (the HTTP contract) with real video files: an H.264 MP4 plays as it is, an AVI /
MPEG-4 Part 2 file (and MPEG-4 Part 2 inside an .mp4 name: decided by probing, not by extension) gets
an H.264/MP4 preview made with PyAV, cached outside the index and made once.
"""

from __future__ import annotations

import json
import os
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from hybridtower.index import image_query  # noqa: E402
from hybridtower.index.searcher import Hit  # noqa: E402 (the real hit: its to_public_dict is the schema)
from hybridtower.service import create_app  # noqa: E402
from hybridtower.service.previews import PreviewCache, browser_playable, segment_start  # noqa: E402
from service_leaks import leaks  # noqa: E402,F401
from test_service_api import FakeEntry, entry_of  # noqa: E402


def write(path: Path, fmt: str, codec: str, frames: int = 20, size=(48, 64), fps: int = 10, rgb=(200, 40, 40)) -> Path:
    from hybridtower.data.synthetic import write_video

    h, w = size
    clip = np.full((frames, h, w, 3), 30, np.uint8)
    for i in range(frames):
        x = (2 * i) % max(1, w - 16)
        clip[i, 4:20, x:x + 16] = rgb
    write_video(clip, path, fmt, codec, fps)
    return path


@dataclass
class Result:
    query: str
    hits: list
    took_ms: float = 0.5
    truncated: bool = False
    num_tokens: int = 3
    notes: list = field(default_factory=list)
    weak_threshold: float | None = None


class Fake:
    """Ids -> files; every search returns all videos in id order with a fixed score ramp."""

    def __init__(self, files: dict[int, Path], *, starts=None, weak_below=None, threshold=None):
        self.files = files
        self.rows = {i: entry_of(i, p.name, p) for i, p in files.items()}
        self.manifest = {"kind": "vector", "model_name": "fake", "roots": sorted({str(p.parent) for p in files.values()})}
        self.starts = starts or {}
        self.weak_below = weak_below
        self.weak_threshold = threshold
        self.vectors = {i: np.eye(8, dtype=np.float32)[i % 8] for i in files}

    def __len__(self):
        return len(self.files)

    def entry(self, id):
        return self.rows.get(id)

    def _hit(self, i, score):
        st = self.starts.get(i)
        weak = self.weak_below is not None and score < self.weak_below
        return Hit(i, self.files[i].name, str(self.files[i]), score, *(st or (None, None)),
                   moments=[{"start": 0.0, "end": 1.0, "score": score - 0.1}] if st else [], weak=weak)

    def search(self, query, k=10):
        ids = sorted(self.files)[:k]
        return Result(query, [self._hit(i, 0.9 - 0.01 * n) for n, i in enumerate(ids)],
                      weak_threshold=self.weak_threshold)

    def vector(self, id, start=None):
        return self.vectors.get(id)

    def search_vector(self, vector, k=10, *, exclude_id=None):
        scored = sorted(((float(self.vectors[i] @ vector), i) for i in self.files if i != exclude_id), reverse=True)
        return Result("", [self._hit(i, s) for s, i in scored[:k]])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("lib")
    return {
        0: write(root / "native.mp4", "mp4", "libx264"),
        1: write(root / "old.avi", "avi", "mpeg4"),
        2: write(root / "part2.mp4", "mp4", "mpeg4"),  # an .mp4 name browsers still cannot play
        3: write(root / "native.mkv", "matroska", "libx264"),
        4: write(root / "big.avi", "avi", "mpeg4", frames=6, size=(720, 1280)),
    }


def client_for(app, leaks):
    return TestClient(leaks.wrap(app), base_url="http://127.0.0.1")


def test_browser_playable_rules():
    assert browser_playable("mov,mp4,m4a,3gp,3g2,mj2", "h264", "yuv420p", ("aac",))[0]
    assert browser_playable("matroska,webm", "vp9", "yuv420p", ("opus",))[0]
    assert browser_playable("matroska,webm", "h264", "yuv420p", ())[0]  # Chromium plays H.264 in Matroska
    assert not browser_playable("avi", "h264", "yuv420p", ())[0]
    assert not browser_playable("mov,mp4,m4a,3gp,3g2,mj2", "mpeg4", "yuv420p", ())[0]
    assert not browser_playable("mov,mp4,m4a,3gp,3g2,mj2", "h264", "yuv444p", ())[0]
    assert not browser_playable("mov,mp4,m4a,3gp,3g2,mj2", "hevc", "yuv420p", ())[0]
    assert not browser_playable("matroska,webm", "vp9", "yuv420p", ("ac3",))[0]
    assert segment_start(None, 3600, 120) == 0 and segment_start(50, 60, 120) == 0
    assert segment_start(5, 3600, 120) == 0 and segment_start(745, 3600, 120) == 720
    s = segment_start(5437.5, 7200, 120)
    assert s % 30 == 0 and 10 <= 5437.5 - s < 40


def test_playback_plans_and_previews(files, tmp_path, leaks):
    import av

    index_dir = tmp_path / "index"
    index_dir.mkdir()
    cache = tmp_path / "previews"
    app = create_app(Fake(files), thumbnail_dir=tmp_path / "thumbs", preview_dir=cache)
    with client_for(app, leaks) as c:
        plans = {i: c.get(f"/videos/{i}/playback").json() for i in files}
        assert plans[0]["kind"] == "original" and plans[0]["url"] == "/videos/0"
        assert plans[3]["kind"] == "original"  # H.264 in Matroska plays as it is
        for i in (1, 2, 4):  # AVI, and MPEG-4 Part 2 inside an .mp4 name (probed, not guessed from the name)
            assert plans[i]["kind"] == "preview" and plans[i]["url"] == f"/videos/{i}/preview", plans[i]
            assert plans[i]["video_url"] == f"/videos/{i}" and plans[i]["reason"]
        r = c.get("/videos/1/preview")
        assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
        made = list(cache.rglob("*.mp4"))
        assert len(made) == 1 and not list(index_dir.iterdir())  # cached in the preview folder, not the index
        out = tmp_path / "got.mp4"
        out.write_bytes(r.content)
        with av.open(str(out)) as ct:
            vs = ct.streams.video[0]
            assert vs.codec_context.name == "h264" and (vs.width, vs.height) == (64, 48)
            assert sum(1 for _ in ct.decode(vs)) == 20
        assert c.get("/videos/1/preview", headers={"Range": "bytes=0-99"}).status_code == 206  # seekable
        assert app.state.previews.generated == 1  # second answer from the cache
        big = c.get("/videos/4/preview")
        out.write_bytes(big.content)
        with av.open(str(out)) as ct:
            assert ct.streams.video[0].height == 480 and ct.streams.video[0].width == 854  # scaled to <= 480p
        assert c.head("/videos/1/preview").status_code == 200
        assert c.get("/videos/1/preview?from=7").status_code == 400
        assert c.get("/videos/1/playback?start=-3").status_code == 400
        assert c.get("/videos/77/preview").status_code == 404


def test_preview_of_a_long_file_is_a_segment(tmp_path, leaks):
    import av

    (tmp_path / "lib").mkdir()
    path = write(tmp_path / "lib" / "long.avi", "avi", "mpeg4", frames=900, size=(32, 32), fps=10)
    app = create_app(Fake({0: path}, starts={0: (65.0, 70.0)}), thumbnail_dir=tmp_path / "t",
                     preview_dir=tmp_path / "p", preview_max_seconds=60)
    with client_for(app, leaks) as c:
        hit = c.get("/search?q=x").json()["hits"][0]
        assert hit["start"] == 65.0 and hit["playback_url"] == "/videos/0/playback?start=65"
        plan = c.get(hit["playback_url"]).json()
        assert plan["kind"] == "preview" and plan["offset"] == 30.0 and plan["url"] == "/videos/0/preview?from=30"
        r = c.get(plan["url"])
        assert r.status_code == 200
        (tmp_path / "seg.mp4").write_bytes(r.content)
        with av.open(str(tmp_path / "seg.mp4")) as ct:
            n = sum(1 for _ in ct.decode(video=0))
        assert 590 <= n <= 600  # 60 s at 10 fps: bounded length, the moment (65 s) is 35 s into it


def test_undecodable_and_hostile_files(files, tmp_path, leaks):
    lib = tmp_path / "lib"
    lib.mkdir()
    bad = lib / "broken.avi"
    bad.write_bytes(b"RIFF" + b"\0" * 2000)
    swapped = write(lib / "swap.avi", "avi", "mpeg4")
    fake = Fake({0: bad, 1: swapped})
    app = create_app(fake, thumbnail_dir=tmp_path / "t", preview_dir=tmp_path / "p")
    with client_for(app, leaks) as c:
        plan = c.get("/videos/0/playback").json()
        assert plan["kind"] == "none" and plan["url"] is None and "video 0" in plan["reason"]
        r = c.get("/videos/0/preview")
        assert r.status_code == 422 and r.json()["error"] == "preview_failed"
        os.unlink(swapped)
        os.symlink(files[1], swapped)  # a link to another (indexed elsewhere) file: never previewed
        assert c.get("/videos/1/playback").status_code == 404
        assert c.get("/videos/1/preview").status_code == 404
    assert not list((tmp_path / "p").rglob("*.mp4"))


def test_fingerprint_keys_change_with_the_file(files, tmp_path):
    from hybridtower.service.files import open_indexed

    cache = PreviewCache(tmp_path / "p")
    e = entry_of(1, "old.avi", files[1])
    v = open_indexed(1, e, (str(files[1].parent),))
    try:
        a = cache._key(cache.fingerprint(v, types.SimpleNamespace(sha256="aa")), 0.0)
        b = cache._key(cache.fingerprint(v, types.SimpleNamespace(sha256="bb")), 0.0)
        c = cache._key(cache.fingerprint(v, None), 0.0)
        assert len({a, b, c}) == 3 and cache._key(cache.fingerprint(v, None), 30.0) != c
    finally:
        v.close()
    with pytest.raises(ValueError):
        PreviewCache(tmp_path / "q", max_seconds=10)


def test_hit_schema_moments_weak_and_paging(files, tmp_path, leaks):
    fake = Fake(files, starts={1: (12.0, 16.5)}, weak_below=0.875, threshold=0.875)
    app = create_app(fake, thumbnail_dir=tmp_path / "t", preview_dir=tmp_path / "p", default_k=2)
    with client_for(app, leaks) as c:
        body = c.get("/search?q=anything").json()
        assert body["weak_threshold"] == 0.875 and body["no_close_match"] is False
        assert body["offset"] == 0 and body["has_more"] is True and len(body["hits"]) == 2
        h0, h1 = body["hits"]
        public = {"id", "video_id", "score", "start", "end", "moments", "weak"}
        assert public <= set(h0) and "path" not in h0
        assert h0["start"] is None and h0["moments"] == [] and h0["weak"] is False
        assert (h1["start"], h1["end"]) == (12.0, 16.5) and h1["moments"][0]["start"] == 0.0
        assert h1["playback_url"] == "/videos/1/playback?start=12" and h1["similar_url"] == "/similar/1?start=12"
        page2 = c.get("/search?q=anything&k=2&offset=2").json()
        assert [h["rank"] for h in page2["hits"]] == [3, 4] and [h["id"] for h in page2["hits"]] == [2, 3]
        assert [h["weak"] for h in page2["hits"]] == [False, True]
        last = c.get("/search?q=anything&k=2&offset=4").json()
        assert len(last["hits"]) == 1 and last["has_more"] is False
        assert c.get("/search?q=x&offset=-1").json()["error"] == "invalid_offset"
        assert c.get("/search?q=x&offset=999&k=5").status_code == 400
        fake.weak_below = 1.0  # everything weak: the answer says so
        assert c.get("/search?q=dog").json()["no_close_match"] is True


def test_similar_and_image_search(files, tmp_path, leaks, monkeypatch):
    fake = Fake(files)
    app = create_app(fake, thumbnail_dir=tmp_path / "t", preview_dir=tmp_path / "p", max_image_bytes=1000)
    with client_for(app, leaks) as c:
        body = c.get("/similar/2?k=3").json()
        assert [h["id"] for h in body["hits"]][:1] != [2] and 2 not in [h["id"] for h in body["hits"]]
        assert body["source"] == {"id": 2, "start": None} and "more like" in body["query"]
        assert c.get("/similar/2?start=4.5").json()["source"]["start"] == 4.5
        assert c.get("/similar/99").status_code == 404 and c.get("/similar/x").status_code == 404
        assert c.get("/similar/2?start=abc").status_code == 400

        # image search: the HTTP contract around image_query.search_image
        assert c.post("/search/image", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
        assert c.post("/search/image", content=b"", headers={"Content-Type": "image/png"}).json()["error"] == "empty_image"
        big = c.post("/search/image", content=b"\0" * 2000, headers={"Content-Type": "image/png"})
        assert big.status_code == 413
        calls = []

        def search_image(searcher, data, k=10):
            calls.append((searcher, data, k))
            return fake.search("image", k=k)

        monkeypatch.setattr(image_query, "search_image", search_image)
        r = c.post("/search/image?k=2", content=b"PNGDATA", headers={"Content-Type": "image/png"})
        assert r.status_code == 200 and len(r.json()["hits"]) == 2 and calls == [(fake, b"PNGDATA", 2)]


def test_docs_openapi_and_examples(files, tmp_path, leaks):
    lib = files[0].parent
    (lib.parent / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"video_id": "native", "caption": "a red square slides right"},
        {"video_id": "native", "caption": "second caption of the same clip"},
        {"video_id": "old", "caption": "an old avi clip"},
        {"video_id": "not-indexed", "caption": "never shown"},
    ]) + "\n")
    try:
        app = create_app(Fake(files), thumbnail_dir=tmp_path / "t", preview_dir=tmp_path / "p")
        with client_for(app, leaks) as c:
            assert c.get("/examples").json() == {"examples": ["a red square slides right", "an old avi clip"]}
            spec = c.get("/openapi.json").json()
            assert {"/search", "/search/image", "/similar/{vid}", "/videos/{vid}/preview"} <= set(spec["paths"])
            page = c.get("/docs")
            assert page.status_code == 200 and "http" not in page.text.lower().replace("http-equiv", "")
            assert "unsafe-eval" not in page.headers["content-security-policy"]
            js = c.get("/docs/assets/swagger-ui-bundle.js")
            assert js.status_code == 200 and len(js.content) > 100_000 and c.get("/docs/assets/x.js").status_code == 404
            assert "supportedSubmitMethods: []" in c.get("/static/docs.js").text  # read-only
    finally:
        (lib.parent / "captions.jsonl").unlink()
    app = create_app(Fake(files), thumbnail_dir=tmp_path / "t2", preview_dir=tmp_path / "p2")
    with client_for(app, leaks) as c:
        assert c.get("/examples").json() == {"examples": []}  # no captions: no made-up suggestions


def test_head_on_new_routes_and_preview_cache_outside_the_index(files, tmp_path, leaks, capsys):
    from hybridtower.cli.main import main

    app = create_app(Fake(files), thumbnail_dir=tmp_path / "t", preview_dir=tmp_path / "p")
    with client_for(app, leaks) as c:
        for path in ("/examples", "/docs", "/openapi.json", "/videos/0/playback", "/videos/1/preview",
                     "/similar/0", "/static/docs.js"):
            get, head = c.get(path), c.head(path)
            assert get.status_code == head.status_code == 200 and head.content == b"", path
    index = tmp_path / "index"
    index.mkdir()
    assert main(["serve", str(index), "--port", "0", "--preview-cache", str(index / "previews")]) == 2
    assert "--preview-cache must be outside INDEX_DIR" in capsys.readouterr().err
