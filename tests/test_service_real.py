"""The service over the real ``Searcher`` and a real tiny index, in-process and as `hybridtower serve`.

``build_real_index`` is also used by the browser test.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from service_leaks import leaks  # noqa: F401 (fixture: no error body may hold a server path)

CLIPS = {  # name -> (RGB, size HxW)
    "red_square": ((220, 30, 30), (48, 64)),
    "green_field": ((30, 200, 60), (64, 64)),
    "blue_sky": ((30, 60, 220), (48, 64)),
    "yellow_sun": ((230, 220, 40), (64, 48)),
    "white_wall": ((240, 240, 240), (48, 48)),
}


def write_clip(path: Path, rgb, size=(48, 64), frames: int = 10) -> Path:
    """A small moving-square H.264 clip (PyAV, through the synthetic generator's writer)."""
    from hybridtower.data.synthetic import write_video

    h, w = size
    clip = np.full((frames, h, w, 3), 40, np.uint8)
    for i in range(frames):
        x = 2 + 3 * i
        clip[i, 8:24, x:x + 16] = rgb
    write_video(clip, path, "mp4", "libx264", 10)
    return path


def make_checkpoint(path: Path, seed: int = 0) -> Path:
    import torch

    from hybridtower import hub

    torch.manual_seed(seed)
    model = hub.create_model("pig-tiny").eval()
    return hub.save_model(model, path)


def build_real_index(root: Path):
    """Videos + a random pig-tiny checkpoint + ``build_index`` under ``root``; return the opened Searcher."""
    from hybridtower.index import IndexOptions, Searcher, build_index

    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for name, (rgb, size) in CLIPS.items():
        write_clip(videos / f"{name}.mp4", rgb, size)
    ckpt = make_checkpoint(root / "pig-tiny.safetensors")
    summary = build_index([videos], root / "index", checkpoint=ckpt, options=IndexOptions(progress=False))
    assert summary.count == len(CLIPS) and not summary.skipped
    return Searcher.open(root / "index")


_SHARED: dict = {}


def shared_real_index(tmp_path_factory):
    """One real index per test session (this module and the browser test share it): (root, Searcher)."""
    if "index" not in _SHARED:
        root = tmp_path_factory.mktemp("real")
        _SHARED["index"] = (root, build_real_index(root))
    return _SHARED["index"]


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    return shared_real_index(tmp_path_factory)


def test_http_search_matches_searcher(real, tmp_path, leaks):
    from fastapi.testclient import TestClient

    from hybridtower.service import create_app

    root, searcher = real
    app = create_app(searcher, thumbnail_dir=tmp_path / "thumbs")
    with TestClient(leaks.wrap(app), base_url="http://127.0.0.1") as client:
        health = client.get("/healthz").json()
        assert health["videos"] == len(CLIPS) and health["model_framework"] == "pig"
        assert health["index_kind"] == "vectors"
        for query in ("a red square moves right", "green", "ein gelber Kreis über dem Meer 🌞"):
            api = searcher.search(query, k=3)
            body = client.get("/search", params={"q": query, "k": 3}).json()
            assert [h["id"] for h in body["hits"]] == [h.id for h in api.hits]
            assert np.allclose([h["score"] for h in body["hits"]], [h.score for h in api.hits], atol=1e-5)
            assert [h["video_id"] for h in body["hits"]] == [h.video_id for h in api.hits]
        # every hit's file and thumbnail are served by id
        for hit in searcher.search("anything", k=len(CLIPS)).hits:
            r = client.get(f"/videos/{hit.id}")
            assert r.status_code == 200 and r.content == Path(hit.path).read_bytes()
            assert client.get(f"/videos/{hit.id}/thumbnail").headers["content-type"] == "image/jpeg"
        unused = max(h.id for h in searcher.search("x", k=len(CLIPS)).hits) + 1
        assert client.get(f"/videos/{unused}").status_code == 404
        # the real searcher's odd-query answers come through as defined
        long = client.get("/search", params={"q": "red " * 100}).json()
        assert long["truncated"] is True and any("token" in n for n in long["notes"])
        assert client.get("/search", params={"q": "\u200b\u200b"}).status_code == 400
        assert client.get("/search", params={"q": "\x00\x1f"}).status_code == 400


def test_image_search_and_more_like_this_over_the_real_searcher(real, tmp_path, leaks):
    """POST /search/image and /similar/ID through the real image_query (when this installation has it)."""
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from hybridtower.service import create_app

    pytest.importorskip("hybridtower.index.image_query")
    root, searcher = real
    app = create_app(searcher, thumbnail_dir=tmp_path / "thumbs", preview_dir=tmp_path / "previews")
    frame = np.full((48, 64, 3), 40, np.uint8)
    frame[8:24, 10:26] = CLIPS["red_square"][0]
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    with TestClient(leaks.wrap(app), base_url="http://127.0.0.1") as client:
        r = client.post("/search/image?k=3", content=buf.getvalue(), headers={"Content-Type": "image/png"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["hits"]) == 3 and body["weak_threshold"] is None  # text calibration does not apply
        assert {"id", "video_id", "score", "start", "end", "moments", "weak", "playback_url"} <= set(body["hits"][0])
        bad = client.post("/search/image", content=b"not an image at all", headers={"Content-Type": "image/png"})
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_image"
        first = searcher.search("a red square", k=1).hits[0].id
        like = client.get(f"/similar/{first}?k=10").json()
        assert like["hits"] and first not in [h["id"] for h in like["hits"]]
        assert len(like["hits"]) == len(CLIPS) - 1


def _get(port: int, raw_path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.putrequest("GET", raw_path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "hybridtower.cli.main", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_serve_cli_end_to_end(real, tmp_path):
    root, searcher = real
    (root / "secret.txt").write_text("TOP-SECRET")
    proc = _cli("serve", str(root / "index"), "--port", "0", "--no-access-log", "--log-level", "warning")
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, line + proc.stdout.read() if proc.poll() is not None else line
        port = int(m.group(1))
        assert f"serving {len(CLIPS)} videos" in line
        status, body = _get(port, "/search?q=a%20blue%20sky&k=2")
        assert status == 200 and b'"hits"' in body
        # traversal over a real socket, paths sent byte for byte (no client-side normalisation)
        for raw in ("/videos/../secret.txt", "/videos/%2e%2e%2fsecret.txt", "/videos/..%2F..%2Fetc%2Fpasswd",
                    "/videos//etc/passwd", "/videos/%2Fetc%2Fpasswd", "/videos/0/../../secret.txt",
                    "/../../../etc/passwd", "/static/../../secret.txt", "/videos/1%00"):
            status, body = _get(port, raw)
            assert status in (400, 404), (raw, status)
            assert b"TOP-SECRET" not in body and b"root:" not in body
            assert str(root.resolve()).encode() not in body and b"/" + root.resolve().parts[1].encode() + b"/" not in body
        assert _get(port, "/healthz")[0] == 200
        status, body = _get(port, "/search?q=%E2%80%8D")  # a lone zero-width joiner: nothing visible
        assert status == 400 and b"empty_query" in body

    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0


def test_serve_refuses_port_in_use_and_another_model(real, tmp_path, capsys):
    from hybridtower.cli.main import main
    from hybridtower.service.server import bind_socket

    root, _ = real
    busy = bind_socket("127.0.0.1", 0)
    try:
        port = busy.getsockname()[1]
        assert main(["serve", str(root / "index"), "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert f"error: port {port} on 127.0.0.1 is already in use" in err
    finally:
        busy.close()
    other = make_checkpoint(tmp_path / "other.safetensors", seed=1)
    assert main(["serve", str(root / "index"), "--port", "0", "--checkpoint", str(other)]) == 2
    out = capsys.readouterr()
    assert out.err.startswith("error:") and "weights" in out.err, out.err
    assert "serving" not in out.out
    assert main(["serve", str(tmp_path / "no-index"), "--port", "0"]) == 2
    assert capsys.readouterr().err.startswith("error:")
