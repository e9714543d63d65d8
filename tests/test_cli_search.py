"""`hybridtower search`: --image, --like, window times, the weak-match marks and --json's hit schema."""
from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hybridtower.cli.commands.search import format_time, parse_time
from hybridtower.cli.main import main
from hybridtower.index import IndexOptions, Searcher, build_index
from tiny_index import make_videos

DEMO_CKPT = Path(__file__).resolve().parents[1] / "src" / "hybridtower" / "assets" / "demo-pig-tiny.safetensors"
HIT_KEYS = {"id", "video_id", "score", "start", "end", "moments", "weak"}
RESULT_KEYS = {"query", "hits", "took_ms", "truncated", "num_tokens", "notes", "weak_threshold"}


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("clisearch")
    clips = make_videos(root / "synth", n=3, frames=8)
    build_index([root / "synth" / "videos"], root / "idx", DEMO_CKPT,
                IndexOptions(progress=False, batch_size=4, num_workers=0))
    from hybridtower.data.video.decode import read_frames

    buf = io.BytesIO()
    Image.fromarray(read_frames(clips[0], 1, "uniform")[0]).save(buf, "PNG")
    (root / "frame.png").write_bytes(buf.getvalue())
    return {"root": root, "dir": str(root / "idx"), "clips": clips, "image": str(root / "frame.png")}


def _json(capsys, argv) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_text_json_is_the_public_schema_plus_the_local_path(index, capsys):
    out = _json(capsys, ["search", index["dir"], "a red circle", "-k", "2", "--json"])
    assert RESULT_KEYS <= set(out) and len(out["hits"]) == 2
    for h in out["hits"]:
        assert set(h) == HIT_KEYS | {"path"}
        assert Path(h["path"]).name == h["video_id"]
    assert out["query"] == "a red circle" and out["index"]["count"] == 3
    assert "dir" not in out["index"]  # no folder path beyond each hit's own file


def test_image_search(index, capsys):
    out = _json(capsys, ["search", index["dir"], "--image", index["image"], "-k", "3", "--json"])
    assert out["query"] == "" and out["notes"][0].startswith("image query: 64x64 PNG")
    assert len(out["hits"]) == 3 and out["weak_threshold"] is None
    assert not any(h["weak"] for h in out["hits"])
    assert main(["search", index["dir"], "--image", index["image"], "-k", "2"]) == 0
    cap = capsys.readouterr()
    assert "2 of 3 videos in" in cap.out and "note: image query" in cap.err


def test_like_by_id_and_by_relative_path(index, capsys):
    s = Searcher.open(index["dir"])
    e = s.entries[0]
    for ref in (str(e.id), e.video_id):
        out = _json(capsys, ["search", index["dir"], "--like", ref, "-k", "5", "--json"])
        assert [h["id"] for h in out["hits"]] and e.id not in [h["id"] for h in out["hits"]]
        assert len(out["hits"]) == 2  # the other two videos
        assert out["notes"][0].startswith(f"more like this: {e.video_id}")
    assert main(["search", index["dir"], "--like", "no/such.mp4"]) == 2
    assert "no video with id or relative path" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["a ball", "--image", "x.png"], "exactly one of"),
    (["--image", "x.png", "--like", "0"], "exactly one of"),
    ([], "exactly one of"),
    (["a ball", "--start", "10"], "--start goes with --like"),
    (["--like", "0", "--start", "ten"], "--start: expected SECONDS, MM:SS or HH:MM:SS"),
    (["--like", "0", "--start", "12:99"], "got '12:99': minutes and seconds after a ':' go up to 59"),
])
def test_argument_errors(index, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["search", index["dir"], *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_bad_image_files_are_clear_errors_without_folders(index, capsys, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    for name, message in (("missing.png", "image file missing.png does not exist"),
                          ("broken.jpg", "the image cannot be decoded")):
        assert main(["search", index["dir"], "--image", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert message in err and str(tmp_path) not in err


def test_weak_hits_are_marked_and_no_close_match_is_said(index, capsys, monkeypatch):
    opened = Searcher.open

    def open_with_threshold(*a, **kw):
        s = opened(*a, **kw)
        s.manifest = {**s.manifest, "weak_match": {"threshold": 5.0}}
        if hasattr(s, "weak_threshold"):
            s.weak_threshold = 5.0
        return s

    monkeypatch.setattr(Searcher, "open", staticmethod(open_with_threshold))
    assert main(["search", index["dir"], "a dog runs on the beach", "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no close match: the best score") and "+5.0000" in out
    assert out.count("(weak)") == 2
    data = _json(capsys, ["search", index["dir"], "a dog runs on the beach", "-k", "2", "--json"])
    assert data["weak_threshold"] == 5.0 and all(h["weak"] for h in data["hits"])
    # an image query is not judged by the text threshold
    assert main(["search", index["dir"], "--image", index["image"], "-k", "2"]) == 0
    assert "no close match" not in capsys.readouterr().out


def test_window_times_and_moments_are_printed(index, capsys, monkeypatch):
    from hybridtower.index.searcher import Hit

    if not {"start", "end", "moments"} <= {f.name for f in dataclasses.fields(Hit)}:
        pytest.skip("Hit has no window fields yet")
    search = Searcher.search

    def with_windows(self, query, k=10, **kw):
        res = search(self, query, k, **kw)
        res.hits[0] = dataclasses.replace(res.hits[0], start=750.0, end=810.0,
                                          moments=[{"start": 3600.0, "end": 3660.5, "score": 0.25}])
        return res

    monkeypatch.setattr(Searcher, "search", with_windows)
    assert main(["search", index["dir"], "a red circle", "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("12:30-13:30") and lines[1].strip() == "also 1:00:00-1:01:00 +0.2500"
    assert not re.search(r"\d:\d\d-\d", lines[2])  # a whole-file hit: no range


@pytest.mark.parametrize("text, seconds", [("750", 750.0), ("12:30", 750.0), ("1:02:03", 3723.0), ("0.5", 0.5),
                                           ("01:00", 60.0), ("90:00", 5400.0), ("12:30.5", 750.5), ("0:59.9", 59.9),
                                           (".5", 0.5), (" 1:00:00 ", 3600.0)])
def test_parse_time(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["", "-5", "a:b", "1:-30", "1::2", "nan", "inf", "1:2:3:4",
                                  # what float() takes but nobody types as a time; fields past 59 after a ':'
                                  "1_000", "1e3", "0x10", "\u0663", "1 :30", "1.5:00", "12:99", "1:75:00", "0:60",
                                  "9" * 400, "9" * 400 + ":00"])
def test_parse_time_rejects(text):
    with pytest.raises(ValueError, match=r"^expected SECONDS, MM:SS or HH:MM:SS \(e\.g\. 750") as exc:
        parse_time(text)
    assert "\n" not in str(exc.value) and len(str(exc.value)) < 200  # one line, a long input cut


def test_format_time():
    assert [format_time(x) for x in (0, 59.9, 60, 750, 3723, np.float64(7200))] == \
        ["0:00", "0:59", "1:00", "12:30", "1:02:03", "2:00:00"]
