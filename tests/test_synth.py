"""The synthetic benchmark: layout, read-back by two readers, determinism, CLI."""

import json

import numpy as np
import pytest

from hybridtower.cli.main import main
from hybridtower.data.annotations import load_split
from hybridtower.data.synthetic import SynthConfig, generate
from hybridtower.data.video import read_all_frames

TINY = dict(videos=12, images=6, workers=0)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate(out, SynthConfig(seed=7, **TINY), progress=False)
    return out


def _pairs(split):
    return sorted((c.video_id, c.text, str(v.path)) for v in split.videos for c in split.captions if c.video_id == v.video_id)


def test_layout_and_splits(synth_dir):
    for name in ["MSRVTT_data.json", "MSRVTT_train.9k.csv", "MSRVTT_train.7k.csv", "MSRVTT_JSFUSION_test.csv", "captions.jsonl", "images.jsonl", "synth_meta.json"]:
        assert (synth_dir / name).is_file(), name
    exts = {p.suffix for p in (synth_dir / "videos").iterdir()}
    assert exts <= {".mp4", ".webm", ".avi", ".mkv"} and len(exts) >= 2
    tr, va, te = (load_split(f"msrvtt:{synth_dir}", s) for s in ("train-9k", "val", "test-3k"))
    ids = [set(v.video_id for v in s.videos) for s in (tr, va, te)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])  # no leakage
    assert len(ids[1]) >= 1 and len(ids[2]) >= 1
    assert sum(map(len, ids)) == 12
    assert not tr.missing and not te.missing
    t1 = load_split(f"msrvtt:{synth_dir}", "test-1ka")
    assert len(t1.captions) == len(te.videos)


@pytest.mark.parametrize("msrvtt_split,jsonl_split", [("train-9k", "train"), ("val", "val"), ("test-3k", "test")])
def test_msrvtt_and_jsonl_readers_agree(synth_dir, msrvtt_split, jsonl_split):
    a = load_split(f"msrvtt:{synth_dir}", msrvtt_split)
    b = load_split(f"jsonl:{synth_dir / 'captions.jsonl'}", jsonl_split)
    assert _pairs(a) == _pairs(b)
    assert [v.video_id for v in a.videos] == [v.video_id for v in b.videos]


def test_captions_name_objects_and_events(synth_dir):
    meta = json.loads((synth_dir / "synth_meta.json").read_text())
    for v in meta["videos"]:
        subj = v["scene"]["objects"][0]
        assert subj["event"] in ("recolour", "vanish", "appear", "disappear")
        assert len(v["captions"]) == 5 and len({c["text"] for c in v["captions"]}) == 5
        for c in v["captions"]:
            assert f"{subj['colour']} " in c["text"] and subj["shape"] in c["text"]
        kinds = {c["kind"] for c in v["captions"]}
        assert "event" in kinds
        if subj["event"] in ("recolour", "vanish"):  # short: a few of the 12 frames
            assert 2 <= subj["event_end"] - subj["event_start"] <= 3
    rows = [json.loads(ln) for ln in (synth_dir / "images.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all((synth_dir / r["image"]).is_file() for r in rows)


def test_short_event_is_visible_only_in_its_frames(synth_dir):
    meta = json.loads((synth_dir / "synth_meta.json").read_text())
    v = next(v for v in meta["videos"] if v["scene"]["objects"][0]["event"] == "recolour" and v["file"].endswith((".mp4", ".mkv", ".avi", ".webm")))
    from hybridtower.data.synthetic.scene import COLOURS

    subj = v["scene"]["objects"][0]
    frames = read_all_frames(synth_dir / v["file"]).astype(int)
    target = np.array(COLOURS[subj["event_colour"]])
    near = (np.abs(frames - target).sum(-1) < 60).sum((1, 2))
    inside = [near[f] for f in range(subj["event_start"], subj["event_end"])]
    assert min(inside) > 8  # the subject shows the event colour in its event frames


def test_same_seed_same_output_different_seed_differs(tmp_path, synth_dir):
    other = tmp_path / "again"
    generate(other, SynthConfig(seed=7, **TINY), progress=False)
    assert (other / "captions.jsonl").read_text() == (synth_dir / "captions.jsonl").read_text()
    for rel in ["videos/video0", "videos/video5"]:
        a = next(synth_dir.glob(rel + ".*"))
        b = next(other.glob(rel + ".*"))
        assert a.name == b.name
        assert np.array_equal(read_all_frames(a), read_all_frames(b))
    third = tmp_path / "seed8"
    generate(third, SynthConfig(seed=8, **TINY), progress=False)
    assert (third / "captions.jsonl").read_text() != (synth_dir / "captions.jsonl").read_text()


def test_worker_processes_give_identical_output(tmp_path, synth_dir):
    out = tmp_path / "mp"
    generate(out, SynthConfig(seed=7, videos=12, images=6, workers=2), progress=False)
    assert (out / "captions.jsonl").read_text() == (synth_dir / "captions.jsonl").read_text()
    assert (out / "images.jsonl").read_text() == (synth_dir / "images.jsonl").read_text()


def test_cli_synth_then_inspect(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["synth", str(out), "--videos", "6", "--images", "4", "--size", "64x48", "--no-progress", "--workers", "0"]) == 0
    assert "train" in capsys.readouterr().out
    assert main(["synth", str(out), "--videos", "6", "--images", "4"]) == 2  # refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["data", "inspect", "--data", f"msrvtt:{out}", "--split", "test-3k", "--decode", "--json", "--workers", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    entry = report["splits"][0]
    assert entry["split"] == "test-3k" and entry["unreadable"] == [] and entry["decoded_ok"] == entry["videos"]
    assert entry["frame_sizes"] == {"64x48": entry["videos"]}


def test_cli_inspect_reports_missing_and_unreadable(tmp_path, capsys):
    out = tmp_path / "broken"
    generate(out, SynthConfig(seed=1, videos=6, images=0, workers=0), progress=False)
    test = load_split(f"msrvtt:{out}", "test-3k")
    test.videos[0].path.unlink()
    tr = load_split(f"msrvtt:{out}", "train-9k")
    tr.videos[0].path.write_bytes(b"garbage" * 10)
    assert main(["data", "inspect", "--data", f"msrvtt:{out}", "--decode", "--workers", "0"]) == 1
    text = capsys.readouterr().out
    assert "MISSING: 1 video files" in text and test.videos[0].video_id in text
    assert f"UNREADABLE {tr.videos[0].video_id}" in text and "not a readable video" in text


def test_bad_size_is_a_clear_error(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "x"), "--videos", "3", "--size", "63x64"]) == 2
    assert "even" in capsys.readouterr().err
