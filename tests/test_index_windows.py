"""Moment windows and several rows per video (PIG-M) in the index: layout, search grouping, integrity,
export, and the long-video test (the described event's window ranks first with the shipped demo model)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_index import make_videos, save_tiny, write_ramp_video

from hybridtower.core.errors import ConfigError
from hybridtower.data.synthetic.long import write_long_video
from hybridtower.data.video.windows import check_window, plan_windows, window_indices
from hybridtower.index import store
from hybridtower.index.builder import IndexOptions, build_index
from hybridtower.index.searcher import Searcher
from hybridtower.index.verify import verify_index

DEMO = Path(__file__).resolve().parents[1] / "src" / "hybridtower" / "assets" / "demo-pig-tiny.safetensors"


def _opts(**kw) -> IndexOptions:
    return IndexOptions(progress=False, batch_size=8, **kw)


def _whole_file_index(tmp_path: Path) -> tuple[list[Path], Path]:
    """3 synthetic clips indexed one vector per file (``--window 0``) with a tiny random PIG: (clips, index)."""
    vids = make_videos(tmp_path / "data", n=3)
    out = tmp_path / "idx"
    build_index([vids[0].parent], out, save_tiny(tmp_path / "m.safetensors"), _opts(window=0))
    return vids, out


def test_plan_windows_cover_the_file():
    assert plan_windows(30.0, 30.0, 15.0) is None and plan_windows(100.0, 0.0, 0.0) is None
    spans = plan_windows(100.0, 60.0, 30.0)
    assert spans == [(0.0, 60.0), (30.0, 90.0), (60.0, 100.0)]
    spans = plan_windows(7200.0, 30.0, 15.0)
    assert len(spans) == 479 and spans[-1][1] == 7200.0
    assert all(b - a <= 30.0 for a, b in spans) and all(spans[i + 1][0] - spans[i][0] == 15.0 for i in range(478))
    from hybridtower.data.video.sampling import sample_indices

    # frames 80..99 are shown in [40, 50) s at 2 fps: sampled like a 20-frame video of their own
    assert window_indices(600, 2.0, 40.0, 50.0, 12, "linspace") == [80 + i for i in sample_indices(20, 12, "linspace")]
    assert window_indices(600, 2.0, 295.0, 300.0, 4, "uniform") == [590 + i for i in sample_indices(10, 4, "uniform")]
    assert check_window(30, None) == (30.0, 15.0) and check_window(0, 5) == (0.0, 0.0)
    for bad in ((-1, None), (30, 0), (30, 31), (0.5, None), ("x", None)):
        with pytest.raises(ConfigError):
            check_window(*bad)


def test_short_videos_keep_todays_vectors(tmp_path):
    vids = make_videos(tmp_path / "data", n=4)
    ckpt = save_tiny(tmp_path / "m.safetensors")
    build_index([vids[0].parent], tmp_path / "plain", ckpt, _opts(window=0))
    build_index([vids[0].parent], tmp_path / "win", ckpt, _opts())  # default windows: the clips are < 1 s
    a, b = store.load_index(tmp_path / "plain"), store.load_index(tmp_path / "win")
    assert a.vectors.tobytes() == b.vectors.tobytes() and len(b.vectors) == 4
    ma, mb = store.read_manifest(tmp_path / "plain"), store.read_manifest(tmp_path / "win")
    assert ma["windows"] == {"window": 0.0, "stride": 0.0} and mb["windows"] == {"window": 30.0, "stride": 15.0}
    # same segment bytes: whole-file rows store no window arrays
    assert (tmp_path / "plain" / ma["segments"][0]).read_bytes() == (tmp_path / "win" / mb["segments"][0]).read_bytes()
    hits = Searcher.open(tmp_path / "win").search("a red circle", k=4).hits
    assert len(hits) == 4 and all(h.start is None and h.end is None and h.moments == [] for h in hits)
    with pytest.raises(ConfigError, match="--window 30 --stride 15"):
        build_index([vids[0].parent], tmp_path / "win", None, _opts(window=10))


def _two_event_video(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    return write_long_video(folder / "long.mp4", 60, 10, 20, seed=1, extra_events=[(40, 50)])


def _overlap(a, b, c, d) -> float:
    return max(0.0, min(b, d) - max(a, c))


@pytest.mark.skipif(not DEMO.is_file(), reason="the shipped demo model is not in this checkout")
def test_the_described_window_ranks_first(tmp_path):
    """Two scenes in one 60 s video, blank elsewhere; each caption must put a window that covers at least
    half of ITS OWN scene first, above every window of the other scene (a model that only tells shapes
    from blank, or a random one, fails this)."""
    info = _two_event_video(tmp_path / "v")
    out = tmp_path / "idx"
    summary = build_index([tmp_path / "v"], out, DEMO, _opts(window=10, stride=5))
    assert summary.encoded == 1 and summary.windows == 11 and not summary.skipped
    s = Searcher.open(out)
    assert len(s) == 1 and s.num_rows == 11
    # weak-match calibration ran when the build completed, scoring texts as search does (manifest digest-covered)
    m = store.read_manifest(out)
    assert isinstance(m["weak_match"]["threshold"], float) and s.weak_threshold == m["weak_match"]["threshold"]
    from hybridtower.index.builder import top1_function

    top1 = top1_function(out, s.model, m)(["a dog runs on the beach", info["caption"]])
    assert top1.tolist() == pytest.approx([s.search(t, k=1).hits[0].score for t in ["a dog runs on the beach", info["caption"]]], abs=1e-6)
    events = [(info["caption"], info["event_start"], info["event_end"])]
    events += [(e["caption"], e["event_start"], e["event_end"]) for e in info["extra"]]
    for i, (caption, a, b) in enumerate(events):
        res = s.search(caption, k=3)
        assert len(res.hits) == 1 and "k=3 but the index holds 1 video(s)" in res.notes
        top = res.hits[0]
        assert top.video_id == "long.mp4" and len(top.moments) == 10
        assert _overlap(top.start, top.end, a, b) >= 5.0, (caption, top.start, top.end, a, b)
        other = events[1 - i]
        rivals = [m for m in top.moments if _overlap(m["start"], m["end"], other[1], other[2]) > 0]
        assert rivals and all(m["score"] < top.score for m in rivals)
        pub = res.to_public_dict()["hits"][0]
        assert set(pub) == {"id", "video_id", "score", "start", "end", "moments", "weak"} and pub["start"] == top.start
    # the window's vector, by its start; the whole video's (no start) is the mean of its rows
    top = s.search(events[0][0], k=1).hits[0]
    v = s.vector(top.id, start=top.start)
    assert v is not None and s.vector(top.id, start=33.3) is None
    again = s.search_vector(v, k=1).hits[0]
    assert again.id == top.id and again.start == top.start and again.score == pytest.approx(1.0, abs=1e-5)
    assert s.search_vector(v, k=2, exclude_id=top.id).hits == []
    # integrity, export and a re-run carry the window arrays
    assert verify_index(out).ok
    assert build_index([tmp_path / "v"], out, None, _opts()).up_to_date
    from hybridtower.index.export import export_index

    export_index(out, tmp_path / "x.npy")
    rows = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert len(rows) == 11 and np.load(tmp_path / "x.npy").shape[0] == 11
    assert [(r["window_start"], r["window_end"]) for r in rows] == plan_windows(60.0, 10.0, 5.0)


def test_grouping_damage_and_old_layout(tmp_path):
    """Rows of a hand-made multi-row index: grouping per video, weak flags, bad window times are damage."""
    vids, out = _whole_file_index(tmp_path)
    m = store.read_manifest(out)
    seg = out / m["segments"][0]
    from safetensors.numpy import load, save

    arrays = load(seg.read_bytes())
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((7, arrays["vectors"].shape[1])).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.asarray([0, 0, 0, 1, 2, 2, 2], np.int64)  # video 0: 3 windows, video 1: whole file, video 2: 3
    starts = np.asarray([0, 15, 30, np.nan, 0, 15, 30])
    ends = np.asarray([30, 45, 50, np.nan, 30, 45, 60.0])
    data = save({"ids": ids, "vectors": vecs, "starts": starts, "ends": ends})
    seg.write_bytes(data)
    entries = store.read_entries(out, m)
    for e, (row, rows) in zip(sorted(entries, key=lambda e: e.id), [(0, 3), (3, 1), (4, 3)]):
        e.row, e.rows = row, rows
    name = m["entries_file"]
    (out / name).write_text("".join(e.to_json() + "\n" for e in sorted(entries, key=lambda e: e.id)))
    m["segment_rows"] = {m["segments"][0]: 7}
    m["checksums"] = {n: store.digest_file(out / n) for n in (name, m["segments"][0])}
    m["weak_match"] = {"threshold": 0.5}
    m.pop("digest")
    m["digest"] = store.manifest_digest(m)
    (out / "manifest.json").write_text(json.dumps(m))
    assert verify_index(out).ok
    s = Searcher.open(out)
    assert s.num_rows == 7 and len(s) == 3 and s.weak_threshold == 0.5
    q = vecs[5]
    res = s.search("any text", k=3, query_vector=q)  # the text path (weak flags) with a given query vector
    assert [h.id for h in res.hits][0] == 2 and len({h.id for h in res.hits}) == 3
    top = res.hits[0]
    assert (top.start, top.end) == (15.0, 45.0) and top.score == pytest.approx(1.0, abs=1e-5) and not top.weak
    assert [m_["start"] for m_ in top.moments] == sorted([0.0, 30.0], key=lambda t: -float(vecs[4 + int(t // 15)] @ q))
    scores = vecs @ q
    for h in res.hits:  # each video's score is the max over its rows
        rows = np.flatnonzero(ids == h.id)
        assert h.score == pytest.approx(float(scores[rows].max()), abs=1e-5)
        assert h.weak == (h.score < 0.5)
    assert res.to_public_dict()["weak_threshold"] == 0.5
    by_vector = s.search_vector(q, k=3)  # search by example: same ranking, never flagged (text-calibrated cue)
    assert [h.id for h in by_vector.hits] == [h.id for h in res.hits] and not any(h.weak for h in by_vector.hits)
    assert s.rows_of(0) == [{"start": 0.0, "end": 30.0}, {"start": 15.0, "end": 45.0}, {"start": 30.0, "end": 50.0}]
    one = s.search_vector(q, k=1)
    assert len(one.hits) == 1 and one.hits[0].id == 2
    # a window that ends before it starts is damage, named with its video
    bad = dict(load(seg.read_bytes()))
    bad["ends"] = bad["ends"].copy()
    bad["ends"][1] = 10.0
    seg.write_bytes(save(bad))
    m["checksums"][m["segments"][0]] = store.digest_file(seg)
    m.pop("digest")
    m["digest"] = store.manifest_digest(m)
    (out / "manifest.json").write_text(json.dumps(m))
    report = verify_index(out)
    assert not report.ok and "bad window times" in report.problems[0].message and report.damaged_ids() == {0}


def test_old_index_without_window_keys_opens_and_stays_whole_file(tmp_path):
    vids, out = _whole_file_index(tmp_path)
    m = store.read_manifest(out)
    for key in ("windows", "vectors_per_video"):
        m.pop(key)
    m.pop("digest")
    m["digest"] = store.manifest_digest(m)
    (out / "manifest.json").write_text(json.dumps(m))
    assert len(Searcher.open(out).search("a circle", k=2).hits) == 2
    make_videos(tmp_path / "more", n=3, seed=3)
    build_index([vids[0].parent, tmp_path / "more" / "videos"], out, None, _opts())
    assert store.read_manifest(out)["windows"] == {"window": 0.0, "stride": 0.0}


def test_pig_m_rows_are_grouped_and_scored_max_over_m(tmp_path):
    from hybridtower.data.datasets import VideoFrames
    from hybridtower.encode import eval_sample_mode, preprocess_for
    from hybridtower.index.identity import load_checkpoint

    vids = make_videos(tmp_path / "data", n=3)
    ckpt = save_tiny(tmp_path / "m4.safetensors", preset="pig-m4-tiny")
    out = tmp_path / "idx"
    summary = build_index([vids[0].parent], out, ckpt, _opts())
    assert summary.encoded == 3 and not summary.skipped
    s = Searcher.open(out)
    assert s.num_rows == 12 and len(s) == 3 and s.manifest["vectors_per_video"] == 4
    assert all(len(s.rows_of(i)) == 4 for i in range(3))
    parts = s.rows_of(0)
    assert parts[0]["start"] == 0.0 and all(p["end"] > p["start"] for p in parts)
    model, _ = load_checkpoint(ckpt)
    res = s.search("a large blue square moves left", k=3)
    assert sorted(h.id for h in res.hits) == [0, 1, 2]
    paths = [s.entry(h.id).path for h in res.hits]
    ds = VideoFrames(paths, num_frames=model.cfg.video.num_frames, preprocess=preprocess_for(model),
                     sample_mode=eval_sample_mode(model))
    frames = torch.stack([ds[i]["frames"] for i in range(len(paths))])
    with torch.no_grad():
        text = model.encode_text(model.tokenize(["a large blue square moves left"]))
        direct = model.score(text, model.encode_video(frames))[0].numpy()  # max over the M vectors
    np.testing.assert_allclose([h.score for h in res.hits], direct, atol=1e-5)
    assert verify_index(out).ok


def test_xpool_windows_are_reranked_per_window(tmp_path):
    """X-Pool works per window: each window stores its frame features; a video's score is its best window's
    query-conditioned score (model.score over that window's frames)."""
    (tmp_path / "v").mkdir()
    write_long_video(tmp_path / "v" / "long.mp4", 30, 10, 20, seed=2)
    make_videos(tmp_path / "short", n=3)
    ckpt = save_tiny(tmp_path / "x.safetensors", preset="xpool-tiny")
    out = tmp_path / "idx"
    summary = build_index([tmp_path / "v", tmp_path / "short" / "videos"], out, ckpt, _opts(window=10, stride=5))
    assert summary.encoded == 4 and summary.windows == 5 and not summary.skipped
    s = Searcher.open(out)
    assert s.num_rows == 8 and s.rerank and verify_index(out).ok
    res = s.search("a red circle moves left", k=4)
    assert len({h.id for h in res.hits}) == 4 and sum(h.video_id == "long.mp4" for h in res.hits) == 1
    q = torch.from_numpy(s.encode_query("a red circle moves left"))
    with torch.no_grad():
        rows = s.model.score(q, s._frames)[0].numpy()
    for h in res.hits:
        pos = s._row_of[h.id]
        assert h.score == pytest.approx(float(rows[s._owner == pos].max()), abs=1e-5)
    long_hit = next(h for h in res.hits if h.video_id == "long.mp4")
    assert long_hit.start is not None and len(long_hit.moments) == 4


def _cut_faststart_mp4(path: Path, frames: int = 200, fps: int = 10) -> Path:
    """A ``frames / fps``-second MP4 with its index (moov) first, cut to half its bytes: the header still
    gives every frame (an exact count), the data ends about half way (a partial download)."""
    full = write_ramp_video(path.with_name("full-" + path.name), frames, fps, "mp4",
                            options={"movflags": "faststart"}, gop=fps)
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_a_file_whose_data_ends_early_keeps_the_windows_before(tmp_path, capsys):
    """Before: the first window past the data failed and the whole file was skipped after every window
    before it had been decoded and encoded. Now its windows end there, with a note."""
    from hybridtower.cli.main import main
    from hybridtower.data.video.decode import probe_video

    lib = tmp_path / "lib"
    lib.mkdir()
    cut = _cut_faststart_mp4(lib / "partial.mp4")
    info = probe_video(cut)
    assert info.frames_exact and info.duration == pytest.approx(20.0)
    ckpt = save_tiny(tmp_path / "pig.safetensors", "pig-tiny")
    s = build_index([lib], tmp_path / "idx", ckpt, _opts(window=4, stride=4))
    assert s.encoded == 1 and not s.skipped, s.skipped
    assert 1 <= s.windows < 5 and len(s.shortened) == 1 and s.shortened[0]["path"] == str(cut)
    note = s.shortened[0]["note"]
    assert f"of the 20 s its header gives ({s.windows} of 5 windows)" in note and str(tmp_path) not in note
    rows = Searcher.open(tmp_path / "idx").rows_of(0)
    assert len(rows) == s.windows and rows[0]["start"] == 0.0 and rows[-1]["end"] <= 12.0
    assert verify_index(tmp_path / "idx").ok
    # a file whose first window has no frame is still skipped, with the reason
    bad = tmp_path / "lib2"
    bad.mkdir()
    data = cut.read_bytes()
    (bad / "stub.mp4").write_bytes(data[: data.find(b"mdat") + 4])  # the index, no frame data
    s2 = build_index([bad], tmp_path / "idx2", ckpt, _opts(window=4, stride=4))
    assert s2.encoded == 0 and len(s2.skipped) == 1 and not s2.shortened, (s2.encoded, s2.skipped, s2.shortened)
    # the command line says it
    assert main(["index", str(lib), "--out", str(tmp_path / "cli"), "--checkpoint", str(ckpt), "--window", "4",
                 "--stride", "4", "--workers", "0", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "note: " in err and "partial.mp4" in err and "of the 20 s its header gives" in err
