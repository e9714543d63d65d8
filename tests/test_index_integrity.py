"""A tampered or corrupted index folder: checksums and row checks on open, `index --verify`, repair by an
index run, and one clear IndexFormatError (exit 2, no absolute path) for every corrupt file."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridtower.index import IndexFormatError, IndexOptions, Searcher, build_index, read_manifest, verify_index
from hybridtower.index.store import load_index, manifest_digest

OPTS = dict(progress=False, batch_size=2, num_workers=0)
N = 3  # videos in the test index


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from hybridtower import hub
    from hybridtower.data.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("integrity")
    generate(root / "synth", SynthConfig(videos=N, images=0, frames=8, sizes=("64x64",), workers=0), progress=False)
    folder = root / "clips"
    folder.mkdir()
    for v in sorted((root / "synth" / "videos").iterdir()):
        shutil.copy2(v, folder / v.name)
    torch.manual_seed(0)
    ckpt = hub.save_model(hub.create_model("pig-tiny").eval(), root / "pig.safetensors")
    index = root / "index"
    s = build_index([folder], index, ckpt, IndexOptions(ann="hnsw", **OPTS))
    assert s.count == N and read_manifest(index)["ann"]["file"]
    data = load_index(index)
    reference = {e.path: data.vectors[i] for i, e in enumerate(data.entries)}
    return {"root": root, "folder": folder, "ckpt": ckpt, "index": index, "reference": reference}


def _copy(built, tmp_path: Path) -> Path:
    out = tmp_path / "idx"
    shutil.copytree(built["index"], out)
    return out


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _write_manifest(out: Path, m: dict, digest: bool = True) -> None:
    """Write ``m``; with ``digest`` its digest is made to match (else any old digest is kept as it was)."""
    if digest:
        m["digest"] = manifest_digest(m)
    (out / "manifest.json").write_text(json.dumps(m))


def _legacy(out: Path) -> dict:
    """Make the index look like one written before checksums (no `checksums`, no `digest`)."""
    m = _manifest(out)
    m.pop("checksums", None)
    m.pop("digest", None)
    _write_manifest(out, m, digest=False)
    return m


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def _rewrite_segment(out: Path, change) -> None:
    from safetensors.numpy import load_file, save_file

    seg = out / _manifest(out)["segments"][0]
    arrays = load_file(str(seg))
    change(arrays)
    save_file(arrays, str(seg))


def _seg(out):
    return _manifest(out)["segments"][0]


def _ann(out):
    return _manifest(out)["ann"]["file"]


def _nan_row(out):
    _legacy(out)
    _rewrite_segment(out, lambda a: a["vectors"].__setitem__((2, slice(3, 5)), np.nan))


def _scaled_row(out):
    _legacy(out)
    _rewrite_segment(out, lambda a: a.__setitem__("vectors", a["vectors"] * np.array([[1], [3], [1]], np.float32)))


def _wrong_dim(out):
    _legacy(out)
    _rewrite_segment(out, lambda a: a.__setitem__("vectors", np.ascontiguousarray(a["vectors"][:, :64])))


# name: (damage, damaged file, what the message says, entry ids whose rows are named (None: every row), is FAISS)
DAMAGE = {
    "bit-flip-in-vectors": (lambda o: _flip(o / _seg(o), -7), _seg, "SHA-256", None),
    "truncated-segment": (lambda o: (o / _seg(o)).write_bytes((o / _seg(o)).read_bytes()[:300]), _seg, "bytes", None),
    "empty-segment": (lambda o: (o / _seg(o)).write_bytes(b""), _seg, "0 bytes", None),
    "missing-segment": (lambda o: (o / _seg(o)).unlink(), _seg, "missing", None),
    "segment-is-a-fifo": (lambda o: ((o / _seg(o)).unlink(), os.mkfifo(o / _seg(o))), _seg, "FIFO", None),
    "flipped-faiss": (lambda o: _flip(o / _ann(o), 200), _ann, "SHA-256", []),
    "truncated-faiss": (lambda o: (o / _ann(o)).write_bytes((o / _ann(o)).read_bytes()[:100]), _ann, "bytes", []),
    "missing-faiss": (lambda o: (o / _ann(o)).unlink(), _ann, "missing", []),
    "nan-row-legacy": (_nan_row, _seg, "non-finite", [2]),
    "scaled-row-legacy": (_scaled_row, _seg, "not unit-norm", [1]),
    "wrong-dim-legacy": (_wrong_dim, _seg, "dimension 64", None),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damage_is_detected_named_and_repaired(built, tmp_path, capsys, case):
    from hybridtower.cli.main import main

    damage, file_of, needle, ids = DAMAGE[case]
    out = _copy(built, tmp_path)
    name = file_of(out)
    damage(out)
    # open (search, serve): one IndexFormatError naming the index-relative file, no absolute path
    with pytest.raises(IndexFormatError) as err:
        Searcher.open(out)
    msg = str(err.value)
    assert name in msg and needle in msg and str(tmp_path) not in msg
    # verify: names the file and, for bad rows, the ids (and paths) of those rows
    report = verify_index(out)
    assert not report.ok and [p.file for p in report.problems] == [name]
    if ids is None:
        assert sorted(report.problems[0].ids) == list(range(N))
    else:
        assert report.problems[0].ids == ids
    assert main(["index", "--verify", str(out)]) == 2
    shown = capsys.readouterr().out
    assert "DAMAGED" in shown and name in shown and str(tmp_path) not in shown.split("\n", 1)[1]
    assert main(["index", "--verify", str(out), "--json"]) == 2
    as_json = json.loads(capsys.readouterr().out)
    assert not as_json["ok"] and [p["file"] for p in as_json["problems"]] == [name]
    assert main(["search", str(out), "a ball"]) == 2
    assert name in capsys.readouterr().err
    # an index run repairs it from the videos: never "up to date", ends equal to a clean build
    s = build_index([built["folder"]], out, None, IndexOptions(**OPTS))
    assert not s.up_to_date and s.exit_code == 0 and s.damage
    assert s.repaired == (N if ids is None else len(ids)) and s.encoded == s.repaired
    assert verify_index(out).ok
    data = load_index(out)
    assert len(data.entries) == N
    for i, e in enumerate(data.entries):
        np.testing.assert_allclose(data.vectors[i], built["reference"][e.path], atol=1e-5)
    searcher = Searcher.open(out)
    assert searcher.ann_kind == "hnsw" and len(searcher.search("a ball", k=N).hits) == N
    assert read_manifest(out)["checksums"]  # the repaired index is checksummed again
    s2 = build_index([built["folder"]], out, None, IndexOptions(**OPTS))
    assert s2.up_to_date and s2.encoded == 0


def test_damaged_rows_whose_video_is_gone_are_dropped_and_reported(built, tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    for v in sorted(built["folder"].iterdir())[:2]:
        shutil.copy2(v, folder / v.name)
    out = tmp_path / "idx"
    build_index([folder], out, built["ckpt"], IndexOptions(**OPTS))
    gone = sorted(folder.iterdir())[0]
    gone.unlink()
    _flip(out / _seg(out), -7)
    s = build_index([folder], out, None, IndexOptions(**OPTS))
    assert s.count == 1 and s.repaired == 1 and s.exit_code == 3
    assert [e["path"] for e in s.skipped] == [str(gone)] and "damaged" in s.skipped[0]["error"]
    assert verify_index(out).ok and str(gone) not in {e.path for e in load_index(out).entries}


def test_unrepairable_entries_table_is_refused_then_overwrite_rebuilds(built, tmp_path, capsys):
    from hybridtower.cli.main import main

    out = _copy(built, tmp_path)
    entries = out / _manifest(out)["entries_file"]
    _flip(entries, 10)
    gen = read_manifest(out)["generation"]
    argv = ["index", str(built["folder"]), "--out", str(out), "--workers", "0", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert entries.name in err and "--overwrite" in err and str(tmp_path) not in err
    assert read_manifest(out)["generation"] == gen  # nothing written
    assert main(argv + ["--overwrite", "--checkpoint", str(built["ckpt"])]) == 0
    assert verify_index(out).ok and len(load_index(out).entries) == N


def test_old_manifest_without_checksums_opens_and_gains_them(built, tmp_path):
    out = _copy(built, tmp_path)
    _legacy(out)
    assert len(Searcher.open(out)) == N  # checked by shape and values only
    report = verify_index(out)
    assert report.ok and not report.has_checksums
    from hybridtower.index.verify import format_report

    assert "predates checksums" in format_report(report, "idx")[0]
    s = build_index([built["folder"]], out, None, IndexOptions(**OPTS))
    assert not s.up_to_date and s.encoded == 0  # one commit adds the checksums
    m = read_manifest(out)
    assert set(m["checksums"]) == {m["entries_file"], *m["segments"], m["ann"]["file"]} and m["digest"]
    assert build_index([built["folder"]], out, None, IndexOptions(**OPTS)).up_to_date


def _edit(change, digest: bool = True):
    def apply(out: Path) -> None:
        m = _manifest(out)
        change(m)
        _write_manifest(out, m, digest)
    return apply


def _replace_byte(name_of, needle: bytes):
    def apply(out: Path) -> None:
        path = out / name_of(out)
        data = path.read_bytes()
        assert needle in data
        path.write_bytes(data.replace(needle, b"\xff", 1))
    return apply


def _lock_dir(out: Path) -> None:
    (out / ".lock").unlink(missing_ok=True)
    (out / ".lock").mkdir()


def _entries_name(out):
    return _manifest(out)["entries_file"]


def _legacy_then(fn):
    def apply(out: Path) -> None:
        _legacy(out)
        fn(out)
    return apply


def _drop_sha_field(out: Path) -> None:
    path = out / _entries_name(out)
    lines = path.read_text().splitlines()
    rec = json.loads(lines[0])
    del rec["sha256"]
    path.write_text("\n".join([json.dumps(rec)] + lines[1:]) + "\n")


# name: (corruption, the file the message names, what it says)
CORRUPT = {
    "manifest-not-utf8": (_replace_byte(lambda o: "manifest.json", b"hybridtower-index"), "manifest.json", "not valid UTF-8"),
    "manifest-not-json": (lambda o: (o / "manifest.json").write_text('{"format": '), "manifest.json", "not valid JSON"),
    "manifest-a-list": (lambda o: (o / "manifest.json").write_text("[1, 2]"), "manifest.json", "not a hybridtower index manifest"),
    "wrong-dim": (_edit(lambda m: m.update(dim=64)), "manifest.json", "`dim` is 64"),
    "no-model-key": (_edit(lambda m: m.pop("model")), "manifest.json", "`model`"),
    "segments-null": (_edit(lambda m: m.update(segments=None)), "manifest.json", "`segments`"),
    "generation-not-int": (_edit(lambda m: m.update(generation="2x")), "manifest.json", "`generation`"),
    "entries-file-outside": (_edit(lambda m: m.update(entries_file="../../outside.jsonl")), "manifest.json", "`entries_file`"),
    "ann-not-object": (_edit(lambda m: m.update(ann="hnsw")), "manifest.json", "`ann`"),
    "future-format": (_edit(lambda m: m.update(format_version=99)), "manifest.json", "upgrade"),
    "hand-edited-count": (_edit(lambda m: m.update(count=99), digest=False), "manifest.json", "digest"),
    "lock-is-a-folder": (_lock_dir, ".lock", "not a regular file"),
    "entries-not-utf8": (_replace_byte(_entries_name, b"clips"), "entries-", "the manifest recorded"),
    "entries-not-utf8-legacy": (_legacy_then(_replace_byte(_entries_name, b"clips")), "entries-", "not valid UTF-8"),
    "entries-line-without-field-legacy": (_legacy_then(_drop_sha_field), "entries-", "line 1: an entry has no `sha256`"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_files_give_one_clear_error_and_exit_2(built, tmp_path, capsys, case):
    from hybridtower.cli.main import main

    corrupt, file, needle = CORRUPT[case]
    out = _copy(built, tmp_path)
    corrupt(out)
    commands = {
        "index": ["index", str(built["folder"]), "--out", str(out), "--workers", "0", "--no-progress"],
        "search": ["search", str(out), "a ball"],
        "verify": ["index", "--verify", str(out)],
    }
    for what, argv in commands.items():
        assert main(argv) == 2, what
        captured = capsys.readouterr()
        err = captured.err
        if what == "verify" and not err:  # the manifest was usable: the report (stdout) names the damage
            err = "error: " + captured.out.split("\n", 1)[1].strip()
            assert "DAMAGED" in captured.out and "rebuild with --overwrite" in err
        assert err.startswith("error: index file ") and file in err and needle in err, (what, err)
        assert str(tmp_path) not in err and "Traceback" not in err, (what, err)
        assert "up to date" not in captured.out


def test_overwrite_replaces_a_damaged_manifest_and_a_lock_folder(built, tmp_path):
    from hybridtower.cli.main import main

    out = _copy(built, tmp_path)
    (out / "manifest.json").write_bytes(b"\xff\xfe garbage")
    _lock_dir(out)
    argv = ["index", str(built["folder"]), "--out", str(out), "--workers", "0", "--no-progress",
            "--checkpoint", str(built["ckpt"]), "--overwrite"]
    assert main(argv) == 0
    assert (out / ".lock").is_file() and verify_index(out).ok and len(load_index(out).entries) == N
