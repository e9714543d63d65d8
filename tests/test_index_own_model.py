"""``save_model_into_index`` (``index --model SPEC``): the index's own checkpoint is written once; a later
run with the same SPEC compares identities without writing anything, another model is refused."""
from __future__ import annotations

import pytest
import torch

from hybridtower import hub
from hybridtower.core.errors import ConfigError
from hybridtower.index import store
from hybridtower.index.builder import save_model_into_index
from hybridtower.index.identity import load_checkpoint, model_identity, same_model


@pytest.mark.parametrize("spec", ["pig-tiny", "xpool-tiny", "pig-m4-tiny", "meanp-tiny"])
def test_in_memory_identity_is_the_saved_files_identity(spec, tmp_path):
    """The premise of comparing without writing: a model's identity equals the one its file loads with."""
    torch.manual_seed(0)
    model = hub.create_model(spec).eval()
    hub.save_model(model, tmp_path / "m.safetensors")
    loaded = load_checkpoint(tmp_path / "m.safetensors")[1]
    mine = model_identity(model, None)
    assert same_model(mine, loaded)
    assert (mine["config_hash"], mine["weights_sha256"]) == (loaded["config_hash"], loaded["weights_sha256"])


def test_same_model_writes_nothing_other_model_refused_overwrite_replaces(tmp_path, monkeypatch):
    out = tmp_path / "idx"
    torch.manual_seed(0)
    target = save_model_into_index(out, "pig-tiny", None)
    assert target == out / store.MODEL_FILE and target.is_file()
    before = (target.read_bytes(), target.stat().st_mtime_ns)

    writes = []
    real_save = hub.save_model
    monkeypatch.setattr(hub, "save_model", lambda *a, **kw: writes.append(a[1]) or real_save(*a, **kw))
    torch.manual_seed(0)  # the same build again: same weights
    assert save_model_into_index(out, "pig-tiny", None) == target
    assert writes == [] and sorted(p.name for p in out.iterdir()) == [store.MODEL_FILE]
    assert (target.read_bytes(), target.stat().st_mtime_ns) == before

    torch.manual_seed(1)  # other weights: refused, the kept checkpoint untouched
    with pytest.raises(ConfigError, match="holds a model other than pig-tiny"):
        save_model_into_index(out, "pig-tiny", None)
    assert writes == [] and target.read_bytes() == before[0]
    with pytest.raises(ConfigError, match="holds a model other than meanp-tiny"):  # another config
        save_model_into_index(out, "meanp-tiny", None)

    torch.manual_seed(1)
    assert save_model_into_index(out, "pig-tiny", None, overwrite=True) == target
    assert writes == [target] and target.read_bytes() != before[0]
    torch.manual_seed(1)
    expected = model_identity(hub.create_model("pig-tiny").eval(), None)
    assert same_model(load_checkpoint(target)[1], expected)
