"""torchrun sharding: ranks split the work list by RANK / WORLD_SIZE, write shards, rank 0 merges."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridtower.index import IndexOptions, Searcher, build_index, merge_shards, read_manifest
from hybridtower.index.store import load_index, read_errors

OPTS = dict(progress=False, batch_size=2, num_workers=0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from hybridtower import hub
    from hybridtower.data.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("shards")
    generate(root / "synth", SynthConfig(videos=5, images=0, frames=8, sizes=("64x64",), workers=0), progress=False)
    folder = root / "clips"
    folder.mkdir()
    for v in sorted((root / "synth" / "videos").iterdir()):
        shutil.copy2(v, folder / v.name)
    (folder / "bad.mp4").write_bytes(b"\x00" * 100)  # sorts first: rank 0's
    (folder / "video3_bad.mp4").write_text("not a video")  # 6th in path order: rank 1's
    torch.manual_seed(0)
    ckpt = hub.save_model(hub.create_model("pig-tiny").eval(), root / "pig.safetensors")
    single = root / "single"
    build_index([folder], single, ckpt, IndexOptions(**OPTS))
    return {"root": root, "folder": folder, "ckpt": ckpt, "single": single}


def _same_index(a: Path, b: Path) -> None:
    da, db = load_index(a), load_index(b)
    assert [(e.id, e.path, e.sha256) for e in da.entries] == [(e.id, e.path, e.sha256) for e in db.entries]
    np.testing.assert_allclose(da.vectors, db.vectors, atol=1e-5)
    assert sorted(e["path"] for e in read_errors(a)) == sorted(e["path"] for e in read_errors(b))


def test_two_processes_shard_and_rank0_merges(setup, tmp_path):
    out = tmp_path / "idx"
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
        cmd = [sys.executable, "-m", "hybridtower.cli.main", "index", str(setup["folder"]), "--out", str(out),
               "--checkpoint", str(setup["ckpt"]), "--workers", "0", "--no-progress"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    # each rank has a bad file; rank 1 lists its own but exits 0 (torchrun would kill rank 0 otherwise),
    # rank 0 reports both after merging and exits 3
    assert [p.returncode for p in procs] == [3, 0], outputs
    assert "rank-1-of-2: encoded 2 video(s) into its shard" in outputs[1] and "video3_bad.mp4" in outputs[1]
    assert "bad.mp4" in outputs[0] and "video3_bad.mp4" in outputs[0]
    assert "1 shard(s) merged" not in outputs[0] and "2 shard(s) merged" in outputs[0]
    _same_index(out, setup["single"])
    assert not (out / "shards").exists()  # merged shards are removed
    m = read_manifest(out)
    assert m["complete"] and m["count"] == 5 and m["shard"] is None
    hits = Searcher.open(out).search("a ball", k=5).hits
    assert [h.id for h in hits] == [h.id for h in Searcher.open(setup["single"]).search("a ball", k=5).hits]
    _calibrated_like_single(out, setup["single"])


def _calibrated_like_single(out: Path, single: Path) -> None:
    """The merge calibrated the weak-match threshold once, as the single-process build of the same videos did
    (same vectors up to float rounding, so the same threshold), and search flags hits with it."""
    m, ref = read_manifest(out), read_manifest(single)
    assert isinstance(ref["weak_match"]["threshold"], float)
    assert isinstance(m["weak_match"]["threshold"], float)
    assert m["weak_match"]["threshold"] == pytest.approx(ref["weak_match"]["threshold"], abs=1e-4)
    assert m["weak_match"]["captions"] == ref["weak_match"]["captions"]
    assert Searcher.open(out).weak_threshold == m["weak_match"]["threshold"]


def test_ranks_in_process_and_resume(setup, tmp_path):
    out = tmp_path / "idx"
    s1 = build_index([setup["folder"]], out, setup["ckpt"], IndexOptions(**OPTS), rank=1, world_size=2)
    assert s1.shard == "rank-1-of-2" and s1.encoded == 2 and not (out / "manifest.json").exists()
    assert len(s1.skipped) == 1 and s1.exit_code == 0
    # a rank that is started again after finishing its shard has nothing left to encode
    again = build_index([setup["folder"]], out, setup["ckpt"], IndexOptions(**OPTS), rank=1, world_size=2)
    assert again.encoded == 0
    s0 = build_index([setup["folder"]], out, setup["ckpt"], IndexOptions(**OPTS), rank=0, world_size=2)
    assert s0.merged_shards == 2 and s0.count == 5 and s0.shard is None
    assert sorted(e["path"] for e in s0.skipped) == [str(setup["folder"] / n) for n in ("bad.mp4", "video3_bad.mp4")]
    assert s0.exit_code == 3
    _same_index(out, setup["single"])
    _calibrated_like_single(out, setup["single"])
    # the shards themselves are never calibrated (only the merged index is searched)


def test_merge_command_after_rank0_died(setup, tmp_path):
    """Only rank 1 finished: `index --merge` merges its shard; a plain run then encodes the rest."""
    from hybridtower.cli.main import main

    out = tmp_path / "idx"
    build_index([setup["folder"]], out, setup["ckpt"], IndexOptions(**OPTS), rank=1, world_size=2)
    assert main(["index", "--merge", "--out", str(out), "--no-progress"]) == 3  # rank 1's bad file is reported
    m = read_manifest(out)
    assert m["count"] == 2
    # --merge has no model of its own: it loads the checkpoint the index records and calibrates with it
    assert isinstance(m["weak_match"]["threshold"], float)
    s = build_index([setup["folder"]], out, None, IndexOptions(**OPTS))
    assert (s.unchanged, s.encoded, s.count) == (2, 3, 5)
    # ids follow the order files were committed in, so compare by path; vectors must be the same
    got = {e.path: v for e, v in zip(load_index(out).entries, load_index(out).vectors)}
    ref = {e.path: v for e, v in zip(load_index(setup["single"]).entries, load_index(setup["single"]).vectors)}
    assert set(got) == set(ref)
    for p in ref:
        np.testing.assert_allclose(got[p], ref[p], atol=1e-5)


def test_merge_refuses_a_shard_of_another_model(setup, tmp_path):
    from hybridtower import hub
    from hybridtower.index import IndexMismatchError

    out = tmp_path / "idx"
    build_index([setup["folder"]], out, setup["ckpt"], IndexOptions(**OPTS))
    torch.manual_seed(7)
    other = hub.save_model(hub.create_model("pig-tiny").eval(), tmp_path / "other.safetensors")
    build_index([sorted(setup["folder"].glob("video*"))[0]], tmp_path / "tmpshard", other, IndexOptions(**OPTS))
    (out / "shards").mkdir()
    shutil.copytree(tmp_path / "tmpshard", out / "shards" / "rank-0-of-1")
    with pytest.raises(IndexMismatchError, match="shard rank-0-of-1"):
        merge_shards(out)


def test_merge_without_its_checkpoint_commits_uncalibrated_then_a_run_calibrates(setup, tmp_path, capsys):
    """The recorded checkpoint is gone: the merge still commits (no cue, a note says why); the next
    single-process run with the checkpoint calibrates the index without encoding anything."""
    ckpt = tmp_path / "moved.safetensors"
    shutil.copy2(setup["ckpt"], ckpt)
    out = tmp_path / "idx"
    build_index([setup["folder"]], out, ckpt, IndexOptions(**OPTS), rank=1, world_size=2)
    build_index([setup["folder"]], out, ckpt, IndexOptions(**OPTS), rank=0, world_size=2)  # merges: calibrated
    assert "weak_match" in read_manifest(out)
    build_index([setup["folder"]], out, ckpt, IndexOptions(**OPTS), rank=1, world_size=2)  # a new shard
    ckpt.unlink()
    capsys.readouterr()
    s = merge_shards(out)
    assert s.count == 5 and s.merged_shards == 1
    assert "weak-match calibration skipped after the merge" in capsys.readouterr().err
    assert "weak_match" not in read_manifest(out)
    assert Searcher.open(out, checkpoint=setup["ckpt"]).weak_threshold is None
    again = build_index([setup["folder"]], out, setup["ckpt"], IndexOptions(**OPTS))
    assert again.encoded == 0  # (it commits: the error log now lists both ranks' bad files)
    _calibrated_like_single(out, setup["single"])
