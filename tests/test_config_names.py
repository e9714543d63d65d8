"""Shipped configs are reachable by name from anywhere (an installed package has no configs/ folder)."""

from pathlib import Path

import pytest
import yaml

from hybridtower.core.config import load_file, resolve_config_file, shipped_configs
from hybridtower.core.errors import ConfigError

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NAME = "msrvtt-1ka-pig-vit-b-32"


def test_every_repository_config_is_shipped_with_the_package():
    """The package's recipes folder is the repository's configs/ (so the wheel carries every file)."""
    repo = sorted(p.stem for p in REPO_CONFIGS.glob("*.yaml"))
    assert repo and set(repo) <= set(shipped_configs())


@pytest.mark.parametrize("given", [NAME, f"{NAME}.yaml", f"configs/{NAME}.yaml"])
def test_a_shipped_config_loads_by_name_outside_the_repository(tmp_path, monkeypatch, given):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert not Path("configs").exists()
    expected = yaml.safe_load((REPO_CONFIGS / f"{NAME}.yaml").read_text())
    assert load_file(given) == expected


def test_train_config_takes_a_name(tmp_path, monkeypatch):
    from hybridtower.train.config import load_train_config

    monkeypatch.chdir(tmp_path)
    cfg = load_train_config(NAME)
    assert cfg.model == "pig-vit-b-32" and cfg.train_split == "train-9k"


def test_a_real_file_wins_over_the_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / f"{NAME}.yaml").write_text("model: meanp-tiny\n")
    assert load_file(f"{NAME}.yaml") == {"model": "meanp-tiny"}
    assert resolve_config_file(f"{NAME}.yaml") == Path(f"{NAME}.yaml")
    assert load_file(NAME)["model"] == "pig-vit-b-32"  # the bare name is still the shipped one


def test_an_unknown_name_lists_close_and_all_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_file("msrvtt-1ka-pig-vit-b32")
    msg = str(info.value)
    assert "neither a file nor a shipped config" in msg
    assert f"did you mean {NAME}" in msg
    assert "synthetic-pig-tiny" in msg and "vatex-xpool-vit-b-16" in msg  # the full list
    with pytest.raises(ConfigError, match="config file not found: elsewhere/x.yaml"):
        load_file("elsewhere/x.yaml")  # a path in another folder is never replaced by a shipped config
