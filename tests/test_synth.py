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


SCENES = dict(kind="scenes", videos=8, images=0, workers=0, formats=("mp4",))


@pytest.fixture(scope="module")
def scenes_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    generate(out, SynthConfig(seed=3, **SCENES), progress=False)
    return out


def test_scenes_kind_each_caption_describes_one_scene(scenes_dir):
    meta = json.loads((scenes_dir / "synth_meta.json").read_text())
    assert meta["config"]["kind"] == "scenes"
    counts = set()
    for v in meta["videos"]:
        scenes = v["clip"]["scenes"]
        counts.add(len(scenes))
        assert 2 <= len(scenes) <= 4 and v["frames"] == 6 * len(scenes)
        assert {c["scene"] for c in v["captions"]} == set(range(len(scenes)))  # every scene is described
        for c in v["captions"]:
            subj = scenes[c["scene"]]["objects"][0]
            assert f"{subj['colour']} " in c["text"] and subj["shape"] in c["text"]  # names its scene's subject
            others = [s["objects"][0] for i, s in enumerate(scenes) if i != c["scene"]]
            mine = {(o["colour"], o["shape"]) for o in scenes[c["scene"]]["objects"]}
            # when no object of the caption's own scene has the other scene's subject's looks, that subject is not named
            for o in others:
                if (o["colour"], o["shape"]) not in mine:
                    assert f"{o['colour']} {o['shape']}" not in c["text"]
        frames = read_all_frames(scenes_dir / v["file"])
        assert frames.shape[0] == v["frames"]
    assert len(counts) >= 2  # the number of scenes varies
    # the cut between scenes is visible: backgrounds of consecutive scenes differ
    v = meta["videos"][0]
    frames = read_all_frames(scenes_dir / v["file"]).astype(int)
    bgs = [tuple(s["background"]) for s in v["clip"]["scenes"]]
    for i, bg in enumerate(bgs):
        corner = frames[6 * i + 3, 0, 0]
        assert np.abs(corner - np.array(bg)).sum() < 30
    rows = [json.loads(ln) for ln in (scenes_dir / "captions.jsonl").read_text().splitlines()]
    assert all("scene" in r for r in rows) and len(rows) == 8 * 5


def test_scenes_kind_is_deterministic_and_leaves_shapes_unchanged(tmp_path, scenes_dir, synth_dir):
    again = tmp_path / "again"
    generate(again, SynthConfig(seed=3, **SCENES), progress=False)
    assert (again / "captions.jsonl").read_text() == (scenes_dir / "captions.jsonl").read_text()
    # the rendered frames are a pure function of (seed, index); the encoders are not always bit-exact
    from hybridtower.data.synthetic.multiscene import render_clip, sample_clip

    clips = [sample_clip(np.random.default_rng([3, 0, 2]), (2, 4), 6, 0.7) for _ in range(2)]
    assert clips[0].to_dict() == clips[1].to_dict()
    assert np.array_equal(render_clip(clips[0], 64, 48), render_clip(clips[1], 64, 48))
    assert (again / "synth_meta.json").read_text() == (scenes_dir / "synth_meta.json").read_text()
    shapes = json.loads((synth_dir / "captions.jsonl").read_text().splitlines()[0])
    assert "scene" not in shapes  # the shapes kind's files keep their fields


def test_cli_synth_scenes(tmp_path, capsys):
    out = tmp_path / "cli-scenes"
    assert main(["synth", str(out), "--kind", "scenes", "--scenes", "3-3", "--videos", "4", "--images", "0",
                 "--frames-per-scene", "4", "--workers", "0", "--no-progress", "--format", "mp4"]) == 0
    meta = json.loads((out / "synth_meta.json").read_text())
    assert all(len(v["clip"]["scenes"]) == 3 and v["frames"] == 12 for v in meta["videos"])
    assert main(["synth", str(tmp_path / "bad"), "--kind", "scenes", "--scenes", "x-y", "--videos", "3"]) == 2
    assert "MIN-MAX" in capsys.readouterr().err


BOLD = dict(videos=8, images=6, workers=0, kind="scenes", scene_style="bold", scenes_min=2, scenes_max=3,
            frames_per_scene=4, formats=("mp4",))


def test_bold_style_every_scene_readable_from_one_frame(tmp_path):
    from hybridtower.data.synthetic.bold import BACKGROUNDS

    out = tmp_path / "bold"
    generate(out, SynthConfig(seed=5, **BOLD), progress=False)
    meta = json.loads((out / "synth_meta.json").read_text())
    assert meta["config"]["scene_style"] == "bold"
    for v in meta["videos"]:
        scenes = v["clip"]["scenes"]
        assert v["clip"]["style"] == "bold" and 2 <= len(scenes) <= 3 and v["frames"] == 4 * len(scenes)
        assert {c["scene"] for c in v["captions"]} == set(range(len(scenes)))
        for a, b in zip(scenes, scenes[1:]):  # consecutive scenes differ in background and main object
            assert a["background"] != b["background"]
            assert (a["objects"][0]["shape"], a["objects"][0]["colour"]) != (b["objects"][0]["shape"], b["objects"][0]["colour"])
        for c in v["captions"]:
            main_obj = scenes[c["scene"]]["objects"][0]
            assert f"{main_obj['colour']} {main_obj['shape']}" in c["text"]  # names its scene's main object
            if c["kind"] in ("full", "main"):
                assert scenes[c["scene"]]["background"] in c["text"]
        frames = read_all_frames(out / v["file"]).astype(int)
        for i, s in enumerate(scenes):  # each scene's frames show its own background (corner pixel), unchanged
            for f in range(4 * i, 4 * i + 4):
                assert np.abs(frames[f, 0, 0] - np.array(BACKGROUNDS[s["background"]])).sum() < 40
    # the still images are bold scenes with the same caption language
    rows = [json.loads(ln) for ln in (out / "images.jsonl").read_text().splitlines()]
    assert any(any(bg in r["caption"] for bg in BACKGROUNDS) for r in rows)
    # deterministic
    again = tmp_path / "again"
    generate(again, SynthConfig(seed=5, **BOLD), progress=False)
    assert (again / "captions.jsonl").read_text() == (out / "captions.jsonl").read_text()
    assert (again / "images.jsonl").read_text() == (out / "images.jsonl").read_text()


def test_scene_style_flag_and_errors(tmp_path):
    out = tmp_path / "cli-bold"
    assert main(["synth", str(out), "--kind", "scenes", "--scene-style", "bold", "--scenes", "2-2", "--videos", "3",
                 "--images", "0", "--frames-per-scene", "3", "--workers", "0", "--no-progress", "--format", "mp4"]) == 0
    meta = json.loads((out / "synth_meta.json").read_text())
    assert all(v["clip"]["style"] == "bold" and len(v["clip"]["scenes"]) == 2 for v in meta["videos"])
    from hybridtower.core.errors import ConfigError

    with pytest.raises(ConfigError):
        SynthConfig(kind="scenes", scene_style="blurry").validate()
