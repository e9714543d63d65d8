"""Decoding workers die with their parent: a SIGKILLed index run leaves no worker behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its new parent to reap it counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _wait_gone(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


CHILD = """
import os, sys, time
from hybridtower.index.workers import die_with_parent
parent = os.getpid()
pid = os.fork()
if pid == 0:
    die_with_parent(0, parent_pid=parent)
    time.sleep(60)
    os._exit(0)
print(pid, flush=True)
time.sleep(60)
"""


def test_helper_kills_the_child_when_its_parent_dies():
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        child = int(proc.stdout.readline())
        time.sleep(0.3)  # the child has set its death signal
        assert _alive(child)
        proc.kill()
        proc.wait()
        assert _wait_gone(child), "the child outlived its SIGKILLed parent"
    finally:
        proc.kill()


def test_blocked_worker_dies_with_a_killed_index_run(tmp_path):
    from hybridtower import hub
    from hybridtower.data.synthetic import SynthConfig, generate

    generate(tmp_path / "synth", SynthConfig(videos=3, images=0, frames=8, sizes=("64x64",), workers=0), progress=False)
    folder = tmp_path / "clips"
    shutil.copytree(tmp_path / "synth" / "videos", folder)
    torch.manual_seed(0)
    ckpt = hub.save_model(hub.create_model("pig-tiny").eval(), tmp_path / "pig.safetensors")
    pause = tmp_path / "paused"
    # the worker blocks in its first decode (a slow file); the test then SIGKILLs the indexing parent
    env = dict(os.environ, HYBRIDTOWER_TEST_PAUSE_AT="decode:1", HYBRIDTOWER_TEST_PAUSE_FILE=str(pause))
    cmd = [sys.executable, "-m", "hybridtower.cli.main", "index", str(folder), "--out", str(tmp_path / "idx"),
           "--checkpoint", str(ckpt), "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not pause.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the worker never reached its decode"
            time.sleep(0.05)
        time.sleep(0.1)
        worker = int(pause.read_text().split(":")[2])
        assert worker != proc.pid and _alive(worker)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _wait_gone(worker), f"decoding worker {worker} outlived its SIGKILLed parent"
    finally:
        proc.kill()
        proc.wait()
