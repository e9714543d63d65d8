"""Files written through core.io.atomic_path get the umask's usual mode, whatever the writer did."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from hybridtower.core.io import atomic_path, atomic_write_json


@pytest.fixture
def umask():
    old = os.umask(0o022)
    try:
        yield lambda m: os.umask(m)
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _replace_with_private_file(tmp, data: bytes) -> None:
    """What safetensors does: write its own 0600 file and move it over the path it was given."""
    side = tmp.with_name(tmp.name + ".side")
    fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(side, tmp)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_writer_that_replaces_the_file_gets_the_umask_mode(tmp_path, umask, mask, expected):
    umask(mask)
    out = tmp_path / "seg.bin"
    with atomic_path(out) as tmp:
        _replace_with_private_file(tmp, b"payload")
        assert _mode(tmp) == 0o600  # the writer's file, before atomic_path finishes
    assert out.read_bytes() == b"payload" and _mode(out) == expected


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600)])
def test_safetensors_file_gets_the_umask_mode(tmp_path, umask, mask, expected):
    from safetensors.numpy import load_file, save_file

    umask(mask)
    out = tmp_path / "vectors.safetensors"
    with atomic_path(out) as tmp:
        save_file({"x": np.arange(6, dtype=np.float32)}, str(tmp))
    assert _mode(out) == expected
    assert load_file(str(out))["x"].tolist() == list(range(6))
    side = tmp_path / "manifest.json"
    atomic_write_json(side, {"a": 1})
    assert _mode(side) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "vectors.safetensors"]  # no temp left


def test_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "x.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []


def test_umask_is_read_without_changing_it(umask):
    from hybridtower.core.io import file_mode

    umask(0o027)
    assert file_mode() == 0o640
    assert os.umask(0o027) == 0o027  # unchanged by the read
