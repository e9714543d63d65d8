"""Hostile file names (bytes that are not UTF-8, control characters) are indexed, found again and shown
safely; an empty folder is a warning with its own exit status; --ann offers every ann.ANN_KINDS kind."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from hybridtower.index import EXIT_NO_VIDEOS, IndexOptions, Searcher, build_index
from hybridtower.index.store import load_index, read_errors
from tiny_index import make_videos, save_tiny

OPTS = dict(progress=False, batch_size=2, num_workers=0)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("names")
    videos = make_videos(root / "synth", n=3)
    return {"root": root, "videos": videos, "ckpt": save_tiny(root / "pig.safetensors")}


def test_non_utf8_file_name_is_indexed_found_again_and_shown_safely(assets, tmp_path, capsys):
    from hybridtower.cli.main import main

    folder = tmp_path / "d"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/x\xff.mp4"  # a name Linux allows and UTF-8 cannot spell
    shutil.copyfile(assets["videos"][0], raw)
    shutil.copy2(assets["videos"][1], folder / "ok.mp4")
    broken = os.fsencode(folder) + b"/bad\x1b[2J\xfe.mp4"  # control characters and a bad byte, not a video
    with open(broken, "wb") as fh:
        fh.write(b"not a video")
    out = tmp_path / "idx"
    argv = ["index", str(folder), "--out", str(out), "--workers", "0", "--no-progress"]
    assert main(argv + ["--checkpoint", str(assets["ckpt"])]) == 3  # the broken file is skipped, not fatal
    shown = capsys.readouterr()
    for text in (shown.out, shown.err):
        text.encode("utf-8")  # printable: no lone surrogates ...
        assert "\x1b" not in text  # ... and no raw control characters
    assert "2 videos (2 encoded" in shown.out and "bad\\x1b[2J\\xfe.mp4" in shown.out
    # stored losslessly: the entries table is valid UTF-8 JSON with the exact bytes in base64
    entries_file = sorted(out.glob("entries-*.jsonl"))[0]
    records = [json.loads(line) for line in entries_file.read_bytes().decode("utf-8").splitlines()]
    rec = next(r for r in records if "path_b64" in r)
    assert rec["path"].endswith("x\\xff.mp4") and rec["video_id"] == "x\\xff.mp4"
    exact = os.fsdecode(raw)
    data = load_index(out)
    assert exact in {e.path for e in data.entries}
    assert [e["path"] for e in read_errors(out)] == [os.fsdecode(broken)]
    # found again: a rerun encodes nothing; the same content under a new mtime is only touched
    s = build_index([folder], out, None, IndexOptions(**OPTS))
    assert (s.unchanged, s.encoded, s.up_to_date) == (2, 0, True)
    st = os.stat(raw)
    os.utime(raw, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    s = build_index([folder], out, None, IndexOptions(**OPTS))
    assert (s.touched, s.encoded) == (1, 0)
    # search returns the exact path; the service's id -> file lookup opens it
    searcher = Searcher.open(out)
    hit = next(h for h in searcher.search("a ball", k=2).hits if h.path == exact)
    assert hit.video_id == os.fsdecode(b"x\xff.mp4") and searcher.video_path(hit.id).exists()
    # --json output is valid JSON with display-safe paths
    assert main(argv + ["--json"]) == 3
    summary = json.loads(capsys.readouterr().out)
    assert summary["skipped"][0]["path"].endswith("bad\\x1b[2J\\xfe.mp4")


def test_old_entries_files_are_still_read(assets, tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    shutil.copy2(assets["videos"][0], folder / "a.mp4")
    out = tmp_path / "idx"
    build_index([folder], out, assets["ckpt"], IndexOptions(**OPTS))
    from hybridtower.index.store import Entry

    line = sorted(out.glob("entries-*.jsonl"))[0].read_text().splitlines()[0]
    assert "_b64" not in line  # a UTF-8 path keeps the original format
    assert Entry.from_record(json.loads(line)).path == str(folder / "a.mp4")


def test_empty_folder_warns_and_exits_4(assets, tmp_path, capsys):
    from hybridtower.cli.main import main

    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("no videos here")
    argv = ["index", str(folder), "--out", str(tmp_path / "idx"), "--checkpoint", str(assets["ckpt"]),
            "--workers", "0", "--no-progress"]
    assert main(argv) == EXIT_NO_VIDEOS == 4
    err = capsys.readouterr().err
    assert "warning: no video file found under" in err and "mp4" in err
    assert main(argv + ["--json"]) == 4
    captured = capsys.readouterr()
    assert json.loads(captured.out)["found"] == 0 and "warning" in captured.err


def test_ann_choices_come_from_ann_kinds(monkeypatch):
    import argparse

    from hybridtower.cli.commands import index as index_cmd
    from hybridtower.index import ann

    monkeypatch.setattr(ann, "ANN_KINDS", ("flat", "ivf", "hnsw", "sq8"))
    parser = argparse.ArgumentParser()
    index_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["index", "d", "--out", "o", "--ann", "sq8"])
    assert args.ann == "sq8"
