"""`hybridtower export`: Parquet and .npy + JSONL hold exactly the index's rows and vectors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridtower.cli.main import main
from hybridtower.core.errors import ConfigError
from hybridtower.index import IndexOptions, build_index
from hybridtower.index.export import export_index, format_for, output_files
from hybridtower.index.store import load_index

OPTS = dict(progress=False, batch_size=2, num_workers=0)


@pytest.fixture(scope="module")
def indexes(tmp_path_factory):
    """A meanP and an X-Pool index over two roots (one with a sub-folder) and one file given by itself."""
    from hybridtower import hub
    from hybridtower.data.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("export")
    generate(root / "synth", SynthConfig(videos=4, images=0, frames=8, sizes=("64x64",), seed=3, workers=0), progress=False)
    videos = sorted((root / "synth" / "videos").iterdir())
    a, b = root / "lib" / "a", root / "lib" / "b"
    (a / "sub").mkdir(parents=True)
    b.mkdir(parents=True)
    shutil.copy2(videos[0], a / "one.mp4")
    shutil.copy2(videos[1], a / "sub" / "two.mp4")
    shutil.copy2(videos[2], b / "three.mp4")
    single = root / "lib" / "single.mp4"
    shutil.copy2(videos[3], single)
    out = {}
    for preset in ("meanp-tiny", "xpool-tiny"):
        torch.manual_seed(0)
        ckpt = hub.save_model(hub.create_model(preset).eval(), root / f"{preset}.safetensors")
        build_index([a, b, single], root / f"{preset}-index", checkpoint=ckpt, options=IndexOptions(**OPTS))
        out[preset] = root / f"{preset}-index"
    out["roots"] = {"a": str(a.resolve()), "b": str(b.resolve()), "single": str(single.resolve())}
    return out


def _read_parquet(path: Path):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    dim = table.schema.field("vector").type.list_size
    vectors = table.column("vector").combine_chunks().flatten().to_numpy().reshape(len(table), dim)
    meta = json.loads(table.schema.metadata[b"hybridtower"])
    return table.drop_columns(["vector"]).to_pylist(), vectors, meta


def _read_npy(stem: Path):
    vectors = np.load(stem.with_name(stem.name + ".npy"))
    rows = [json.loads(line) for line in stem.with_name(stem.name + ".jsonl").read_text().splitlines()]
    meta = json.loads(stem.with_name(stem.name + ".meta.json").read_text())
    return rows, vectors, meta


def _check(rows, vectors, meta, index_dir, roots):
    data = load_index(index_dir, with_frames=False)
    assert vectors.dtype == np.float32 and vectors.shape == data.vectors.shape == (4, meta["dim"])
    assert vectors.tobytes() == np.ascontiguousarray(data.vectors).tobytes()  # bit for bit
    assert [r["id"] for r in rows] == [e.id for e in data.entries]
    assert [r["path"] for r in rows] == [e.video_id for e in data.entries]
    for r, e in zip(rows, data.entries):
        assert r["window_start"] is None and r["window_end"] is None
        assert r["root"] in roots.values()
        full = r["root"] if r["root"] == roots["single"] else os.path.join(r["root"], r["path"])
        assert os.path.samefile(full, e.path)
    assert sorted((r["root"], r["path"]) for r in rows) == sorted([
        (roots["a"], "one.mp4"), (roots["a"], "sub/two.mp4"), (roots["b"], "three.mp4"), (roots["single"], "single.mp4")])
    assert meta["count"] == 4 and meta["model"]["framework"] == data.manifest["model"]["framework"]


@pytest.mark.parametrize("preset", ["meanp-tiny", "xpool-tiny"])
def test_both_formats_read_back_exactly(indexes, tmp_path, preset):
    s1 = export_index(indexes[preset], tmp_path / "v.parquet")
    _check(*_read_parquet(tmp_path / "v.parquet"), indexes[preset], indexes["roots"])
    s2 = export_index(indexes[preset], tmp_path / "v.npy")
    assert s2.files == [str(tmp_path / n) for n in ("v.npy", "v.jsonl", "v.meta.json")]
    _check(*_read_npy(tmp_path / "v"), indexes[preset], indexes["roots"])
    if preset == "xpool-tiny":
        assert "first-stage" in s1.vector and s1.notes and "first-stage" in s2.notes[0]
        assert _read_parquet(tmp_path / "v.parquet")[2]["index_kind"] == "frames+rerank"
    else:
        assert s1.notes == [] and "first-stage" not in s1.vector


def test_exported_vectors_search_like_the_index_in_faiss(indexes, tmp_path):
    """docs/export.md's FAISS recipe ranks exactly as `hybridtower search` does."""
    import faiss
    import pyarrow.parquet as pq

    from hybridtower import hub
    from hybridtower.index import Searcher

    export_index(indexes["meanp-tiny"], tmp_path / "videos.parquet")
    table = pq.read_table(tmp_path / "videos.parquet")
    vectors = table.column("vector").combine_chunks().flatten().to_numpy().reshape(len(table), -1)
    ids = table.column("id").to_numpy()
    index = faiss.IndexIDMap(faiss.IndexFlatIP(vectors.shape[1]))
    index.add_with_ids(vectors, ids)
    searcher = Searcher.open(indexes["meanp-tiny"])
    model = hub.load_model(searcher.manifest["model"]["checkpoint"])
    with torch.no_grad():
        q = model.encode_text(model.tokenize(["a red ball bounces"])).numpy()
    scores, found = index.search(q, 4)
    hits = searcher.search("a red ball bounces", k=4).hits
    assert found[0].tolist() == [h.id for h in hits]
    np.testing.assert_allclose(scores[0], [h.score for h in hits], atol=1e-6)


def test_cli_export_and_its_errors(indexes, tmp_path, capsys):
    assert main(["export", str(indexes["xpool-tiny"]), str(tmp_path / "out"), "--format", "npy", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["count"] == 4 and summary["format"] == "npy" and "first-stage" in summary["notes"][0]
    assert (tmp_path / "out.npy").is_file() and (tmp_path / "out.jsonl").is_file()
    # existing files are kept unless --overwrite
    assert main(["export", str(indexes["xpool-tiny"]), str(tmp_path / "out.npy")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(indexes["xpool-tiny"]), str(tmp_path / "out.npy"), "--overwrite"]) == 0
    assert "exported 4 vectors" in capsys.readouterr().out
    # an unknown suffix asks for --format; a folder that is not an index says so
    assert main(["export", str(indexes["meanp-tiny"]), str(tmp_path / "x.csv")]) == 2
    assert "--format parquet|npy" in capsys.readouterr().err
    assert main(["export", str(tmp_path), str(tmp_path / "y.parquet")]) == 2
    assert "not an index" in capsys.readouterr().err


def test_format_rules():
    assert format_for("a.PARQUET") == "parquet" and format_for("a.jsonl") == "npy" and format_for("a", "npy") == "npy"
    with pytest.raises(ConfigError):
        format_for("a.csv")
    assert output_files("d/a.jsonl", "npy") == [Path("d/a.npy"), Path("d/a.jsonl"), Path("d/a.meta.json")]
    assert output_files("d/a.bin", "parquet") == [Path("d/a.bin")]
