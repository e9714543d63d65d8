"""`hybridtower index --model clip:ARCH --pretrained WEIGHTS`: a plain CLIP index with no training, its
checkpoint kept (and checksummed) inside the index folder, used by search after the folder moves."""
from __future__ import annotations

import shutil

import pytest
import torch
from tiny_index import make_videos

from hybridtower import hub
from hybridtower.index import store
from hybridtower.index.searcher import Searcher
from hybridtower.index.verify import verify_index

TINY = "hybridtower-tiny"


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    """A random-weight tiny open_clip checkpoint written to disk (open_clip's own layout)."""
    import open_clip

    hub._register_package_archs()
    torch.manual_seed(3)
    clip = open_clip.create_model(TINY, pretrained=None)
    path = tmp_path_factory.mktemp("clip") / "tiny-clip.pt"
    torch.save({"state_dict": clip.state_dict()}, path)
    return path


def test_index_from_a_plain_clip(tmp_path, clip_file, capsys):
    from hybridtower.cli.main import main

    vids = make_videos(tmp_path / "data", n=3)
    out = tmp_path / "idx"
    argv = ["index", str(vids[0].parent), "--out", str(out), "--model", f"clip:{TINY}", "--pretrained", str(clip_file),
            "--workers", "0", "--no-progress"]
    assert main(argv) == 0
    m = store.read_manifest(out)
    assert m["model_file"] == "model.safetensors" and "model.safetensors" in m["checksums"]
    assert m["model"]["framework"] == "meanp" and m["count"] == 3
    assert verify_index(out).ok
    # the same --model again: the same model, nothing to do; another one is refused
    assert main(argv) == 0 and "up to date" in capsys.readouterr().out
    # the folder moves: search still finds its own checkpoint (offline, no --checkpoint)
    moved = tmp_path / "moved"
    shutil.move(str(out), str(moved))
    s = Searcher.open(moved)
    assert len(s.search("a red circle", k=3).hits) == 3
    direct = hub.create_model(f"clip:{TINY}", pretrained=str(clip_file)).eval()
    with torch.no_grad():
        q = direct.encode_text(direct.tokenize(["a red circle"])).numpy()
    assert s.encode_query("a red circle") == pytest.approx(q, abs=1e-5)
    # the kept checkpoint is checked like every other file
    data = bytearray((moved / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (moved / "model.safetensors").write_bytes(bytes(data))
    report = verify_index(moved)
    assert not report.ok and report.problems[0].kind == "model" and "model.safetensors" in report.problems[0].message


def test_model_flags_are_checked(tmp_path, clip_file):
    from hybridtower.cli.main import main

    vids = make_videos(tmp_path / "data", n=3)
    assert main(["index", str(vids[0].parent), "--out", str(tmp_path / "i"), "--pretrained", "openai"]) == 2
    assert main(["index", str(vids[0].parent), "--out", str(tmp_path / "i"), "--model", f"clip:{TINY}",
                 "--checkpoint", str(clip_file)]) == 2
    assert not (tmp_path / "i" / "manifest.json").exists()
