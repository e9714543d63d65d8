"""File names with terminal control sequences are printed escaped by `search` and `data inspect`;
results go to stdout, notes and progress bars to stderr."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import hybridtower
from hybridtower.cli.main import main

DEMO_CKPT = Path(hybridtower.__file__).parent / "assets" / "demo-pig-tiny.safetensors"
EVIL = "evil\x1b[2J\x9b31m.mp4"  # ESC [2J clears the screen; U+009B is the one-character CSI


def _clip(path: Path, seed: int) -> Path:
    from hybridtower.data.synthetic import write_video

    rng = np.random.default_rng(seed)
    write_video(rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8), path, "mp4", "libx264", 10)
    return path


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    from hybridtower.index import IndexOptions, build_index

    root = tmp_path_factory.mktemp("names")
    folder = root / "clips"
    folder.mkdir()
    _clip(folder / "plain.mp4", 0)
    shutil.copy(folder / "plain.mp4", folder / EVIL)
    out = root / "idx"
    summary = build_index([folder], out, DEMO_CKPT, IndexOptions(progress=False, num_workers=0))
    assert summary.count == 2, summary.skipped
    return out


def test_search_prints_control_characters_escaped(index, capsys):
    assert main(["search", str(index), "a red circle", "-k", "5"]) == 0
    cap = capsys.readouterr()
    assert "\x1b" not in cap.out and "\x9b" not in cap.out
    assert "evil\\x1b[2J\\x9b31m.mp4" in cap.out
    assert "2 of 2 videos in" in cap.out and "note:" not in cap.out  # results on stdout
    assert "note: k=5 but the index holds 2" in cap.err  # notes on stderr


def test_search_json_is_ascii_and_keeps_the_exact_name(index, capsys):
    assert main(["search", str(index), "a red circle", "-k", "2", "--json"]) == 0
    out = capsys.readouterr().out
    assert out.isascii() and "\x1b" not in out
    names = {Path(h["path"]).name for h in json.loads(out)["hits"]}
    assert names == {"plain.mp4", EVIL}


def test_data_inspect_escapes_names_and_reasons(tmp_path, capsys):
    folder = tmp_path / "ds"
    (folder / "videos").mkdir(parents=True)
    _clip(folder / "videos" / "ok.mp4", 1)
    (folder / "videos" / EVIL).write_bytes(b"\x1b[2J not a video")
    rows = [{"video": "videos/ok.mp4", "caption": "a clip", "split": "test"},
            {"video": f"videos/{EVIL}", "caption": "a bad clip", "video_id": "bad\x1b]0;title\x07", "split": "test"}]
    (folder / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = f"jsonl:{folder / 'captions.jsonl'}"
    assert main(["data", "inspect", "--data", spec, "--split", "test", "--decode", "--workers", "0", "--no-progress"]) == 1
    cap = capsys.readouterr()
    assert "\x1b" not in cap.out and "\x07" not in cap.out and "\x9b" not in cap.out
    line = next(x for x in cap.out.splitlines() if "UNREADABLE" in x)
    assert "bad\\x1b]0;title\\x07" in line and "evil\\x1b[2J\\x9b31m.mp4" in line and "not a readable video" in line
    assert str(tmp_path) not in line  # named relative to the video folder printed above it
    assert cap.err == ""  # --no-progress (and stderr is no terminal here): no bar
    assert main(["data", "inspect", "--data", spec, "--split", "test", "--decode", "--workers", "0", "--json"]) == 1
    cap = capsys.readouterr()
    report = json.loads(cap.out)
    assert [Path(b["path"]).name for b in report["splits"][0]["unreadable"]] == [EVIL]
    assert cap.err == ""  # stderr is not a terminal: no bar even without --no-progress
