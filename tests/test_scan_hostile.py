"""Hostile entries in an indexed folder: FIFOs, devices, sockets, links to folders, files that change.

Nothing may block or read without bound: every check runs under a timeout, and the index run is a
subprocess that must finish."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from blocking import within

import hybridtower
from hybridtower.core.io import NotRegularFileError, open_regular
from hybridtower.index import scan
from hybridtower.index.scan import FileChangedError, collect_files, file_fingerprint, file_sha256

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")

DEMO_CKPT = Path(hybridtower.__file__).parent / "assets" / "demo-pig-tiny.safetensors"




def _write_clip(path: Path) -> Path:
    from hybridtower.data.synthetic import write_video

    rng = np.random.default_rng(0)
    write_video(rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8), path, "mp4", "libx264", 10)
    return path


@pytest.fixture
def hostile(tmp_path):
    """A folder with two good clips and every kind of entry that is not a regular file."""
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    _write_clip(folder / "good.mp4")
    _write_clip(folder / "sub" / "other.mp4")
    os.mkfifo(folder / "x.mp4")
    os.symlink("/dev/zero", folder / "zero.mp4")
    os.symlink(folder / "good.mp4", folder / "alias.mp4")  # a link to a regular file is a regular file
    os.symlink(folder / "sub", folder / "folder.mp4")  # a link to a folder named like a video
    os.symlink(folder / "nowhere.mp4", folder / "broken.mp4")
    sock = None
    if len(str(folder / "s.mp4")) < 100:  # AF_UNIX path limit
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(folder / "s.mp4"))
    yield folder
    if sock is not None:
        sock.close()


def test_collect_files_skips_non_regular_entries_with_reasons(hostile):
    files, problems = within(10, collect_files, [hostile])
    assert [f.video_id for f in files] == ["alias.mp4", "good.mp4", "sub/other.mp4"]
    reasons = {Path(p["path"]).name: p["error"] for p in problems}
    assert "FIFO" in reasons["x.mp4"] and "not a regular file" in reasons["x.mp4"]
    assert "character device" in reasons["zero.mp4"]
    assert "link to a folder" in reasons["folder.mp4"]
    assert "cannot stat" in reasons["broken.mp4"]
    if (hostile / "s.mp4").exists():
        assert "socket" in reasons["s.mp4"]
    for p in problems:
        assert str(hostile) not in p["error"]  # reasons hold no path; "path" says which entry
    # named explicitly, a FIFO is reported as what it is, not as missing
    files, problems = within(10, collect_files, [hostile / "x.mp4", hostile / "good.mp4"])
    assert [f.video_id for f in files] == ["good.mp4"]
    assert len(problems) == 1 and "FIFO" in problems[0]["error"]


def test_fingerprint_refuses_fifo_and_devices_promptly(hostile):
    for name, kind in (("x.mp4", "FIFO"), ("zero.mp4", "character device"), ("folder.mp4", "folder")):
        with pytest.raises(NotRegularFileError) as err:
            within(5, file_sha256, str(hostile / name))
        assert kind in err.value.strerror and str(hostile) not in str(err.value)
    good = hostile / "good.mp4"
    size, mtime_ns, sha = file_fingerprint(str(good))
    st = os.stat(good)
    assert (size, mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert sha == hashlib.sha256(good.read_bytes()).hexdigest() == file_sha256(str(hostile / "alias.mp4"), chunk=7)
    empty = hostile / "empty.mp4"
    empty.write_bytes(b"")
    assert file_sha256(str(empty)) == hashlib.sha256(b"").hexdigest()


def test_fifo_swapped_in_after_the_stat_is_refused_on_the_open_descriptor(hostile, monkeypatch):
    """The path passed its stat as a regular file, then became a FIFO: the O_NONBLOCK open cannot block
    and the descriptor's own fstat refuses it."""
    regular = os.stat(hostile / "good.mp4")
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: regular if str(p).endswith("x.mp4") else real_stat(p, *a, **k))
    with pytest.raises(NotRegularFileError, match="FIFO"):
        within(5, open_regular, str(hostile / "x.mp4"))
    with pytest.raises(NotRegularFileError, match="FIFO"):
        within(5, file_sha256, str(hostile / "x.mp4"))


class _Mutating:
    """A sha256 stand-in that changes the file being hashed after the first block (grow or shrink)."""

    def __init__(self, path: Path, how: str):
        self.path, self.how, self.h, self.done = path, how, hashlib.sha256(), False

    def __call__(self):
        return self

    def update(self, data):
        self.h.update(data)
        if not self.done:
            self.done = True
            if self.how == "grow":
                with open(self.path, "ab") as fh:
                    fh.write(b"more bytes")
            else:
                os.truncate(self.path, 3)

    def hexdigest(self):
        return self.h.hexdigest()


@pytest.mark.parametrize("how", ["grow", "shrink"])
def test_file_that_changes_while_hashed_is_reported(tmp_path, monkeypatch, how):
    path = tmp_path / "growing.mp4"
    path.write_bytes(os.urandom(64 * 1024))
    monkeypatch.setattr(scan.hashlib, "sha256", _Mutating(path, how))
    with pytest.raises(FileChangedError) as err:
        file_fingerprint(str(path), chunk=4096)
    assert "changed while it was read" in err.value.strerror and isinstance(err.value, OSError)
    again = pickle.loads(pickle.dumps(err.value))  # crosses worker processes intact
    assert type(again) is FileChangedError and again.strerror == err.value.strerror
    nr = pickle.loads(pickle.dumps(NotRegularFileError("a FIFO (named pipe)")))
    assert nr.kind == "a FIFO (named pipe)" and "not a regular file" in nr.strerror


def test_index_run_skips_fifo_and_dev_zero_and_finishes(hostile, tmp_path):
    """`hybridtower index` over the hostile folder (the shipped tiny demo model) ends with the good clips
    indexed and every hostile entry skipped with its reason; a hang fails on the timeout."""
    assert DEMO_CKPT.is_file()
    out = tmp_path / "idx"
    code = "import sys; from hybridtower.cli.main import main; sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "index", str(hostile), "--checkpoint", str(DEMO_CKPT), "--out", str(out),
            "--workers", "0", "--no-progress", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the index run hung on a hostile entry: {(exc.stderr or b'')[-2000:]!r}")
    assert proc.returncode == 3, proc.stderr[-3000:]  # EXIT_SKIPPED: finished, some entries skipped
    summary = json.loads(proc.stdout)
    assert summary["count"] == 3 and summary["encoded"] == 3  # good, sub/other and the alias of good
    skipped = {Path(e["path"]).name: e["error"] for e in summary["skipped"]}
    assert "FIFO" in skipped["x.mp4"] and "character device" in skipped["zero.mp4"]
    assert "link to a folder" in skipped["folder.mp4"]
