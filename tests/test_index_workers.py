"""Decoding workers die with their parent: a SIGKILLed index run leaves no worker behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
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


# --- the index run's loader and encoder threads (issue 12 section 4) ---


class _PidItems:
    """Items that say which process produced them (a stand-in for decoding)."""

    def __len__(self):
        return 8

    def __getitem__(self, idx):
        time.sleep(0.02)
        return {"video_index": idx, "pid": os.getpid()}


def test_every_worker_decodes_from_the_first_batch():
    """Items are decoded one per task: the first batch of 8 comes from both workers (the DataLoader's own
    batching would hand the whole batch to one worker), in order."""
    from hybridtower.index import IndexOptions
    from hybridtower.index.encoding import _item_loader

    batches = list(_item_loader(_PidItems(), IndexOptions(batch_size=8, num_workers=2, progress=False), list))
    assert [[it["video_index"] for it in b] for b in batches] == [list(range(8))]
    assert len({it["pid"] for it in batches[0]}) == 2 and os.getpid() not in {it["pid"] for it in batches[0]}
    five = list(_item_loader(_PidItems(), IndexOptions(batch_size=5, num_workers=0, progress=False), list))
    assert [[it["video_index"] for it in b] for b in five] == [[0, 1, 2, 3, 4], [5, 6, 7]]


def test_encoder_thread_candidates_and_restore():
    from hybridtower.index.encoding import cpu_cores, encoder_threads, torch_threads

    cores = cpu_cores()
    cpu = torch.device("cpu")
    assert encoder_threads(1, cpu) == sorted({max(1, cores - 1), cores})
    assert encoder_threads(cores + 3, cpu) == sorted({1, cores})  # never below one thread
    assert encoder_threads(0, cpu) is None  # no workers: decoding and encoding alternate, torch's default
    assert encoder_threads(2, torch.device("cuda")) is None
    assert encoder_threads(2, cpu, requested=3) == [3]
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("faster", [1, 4])
def test_thread_tuner_follows_the_measured_time(faster):
    """Start-up batch with the fewest threads (not counted), each candidate tried once (most first), then the
    faster one, the other probed every 16th batch; when the load changes and the probe is faster, the choice
    moves."""
    from hybridtower.index.encoding import ThreadTuner

    tuner = ThreadTuner([4, 1])
    cost = {faster: 1.0, 5 - faster: 2.0}
    used = []
    for _ in range(40):
        t = tuner.next()
        used.append(t)
        tuner.record(t, cost[t] * 16 if len(used) > 1 else 99.0, 16)
    assert used[0] == 1 and used[1:3] == [4, 1]
    assert used[16] == used[32] == 5 - faster  # probes
    assert all(t == faster for i, t in enumerate(used[3:], start=3) if i % 16), used
    cost = {faster: 3.0, 5 - faster: 1.0}  # the machine changed: the other count is faster now
    for _ in range(40):
        t = tuner.next()
        tuner.record(t, cost[t] * 16, 16)
    assert tuner.best() == 5 - faster
    assert ThreadTuner(None).next() is None and ThreadTuner([2]).next() == 2 and ThreadTuner([2, 1]).next() == 1


def test_index_vectors_equal_the_previous_pipeline(tmp_path):
    """The index stores the vectors of the previous pipeline: the DataLoader's own batches of B videos,
    encoded with the attention written out as dense masked softmax (tests/test_video_encoder_sdpa.py),
    whatever the workers / threads / batch size."""
    from torch.utils.data import DataLoader

    from hybridtower.index import IndexOptions, build_index
    from hybridtower.index.encoding import _collate, _index_frames_class
    from hybridtower.index.identity import load_checkpoint
    from hybridtower.index.store import load_index
    from hybridtower.encode import eval_sample_mode, preprocess_for
    from test_video_encoder_sdpa import ReferenceEncoder
    from tiny_index import make_videos, save_tiny

    paths = [str(p) for p in make_videos(tmp_path / "synth", n=7, frames=10)]
    ckpt = save_tiny(tmp_path / "pig.safetensors", "pig-tiny")
    model, _ = load_checkpoint(ckpt)
    enc = model.video_encoder
    ref = ReferenceEncoder(enc.visual, enc.cfg)
    ref.load_state_dict(enc.state_dict())
    model.video_encoder = ref.eval()
    ds = _index_frames_class()(paths, num_frames=model.cfg.video.num_frames, preprocess=preprocess_for(model),
                               sample_mode=eval_sample_mode(model))
    before = {}
    with torch.no_grad():
        for batch in DataLoader(ds, batch_size=3, num_workers=0, collate_fn=_collate):
            vecs = model.encode_video(batch["frames"]).numpy()
            before.update({paths[i]: v for i, v in zip(batch["video_index"].tolist(), vecs)})
    assert len(before) == 7
    runs = {"w2-b3": dict(num_workers=2, batch_size=3), "w0-b16": dict(num_workers=0, batch_size=16),
            "w1-b2": dict(num_workers=1, batch_size=2)}
    got = {}
    for name, kw in runs.items():
        s = build_index([str(tmp_path / "synth" / "videos")], tmp_path / name, ckpt,
                        IndexOptions(progress=False, window=0, **kw))
        assert s.encoded == 7 and not s.skipped
        data = load_index(tmp_path / name)
        got[name] = {e.path: data.vectors[i] for i, e in enumerate(data.entries)}
        assert set(got[name]) == set(before)
        for p in paths:
            assert np.allclose(got[name][p], before[p], atol=1e-5), (name, p, np.abs(got[name][p] - before[p]).max())
    for p in paths:  # whatever the workers and batch size
        assert np.allclose(got["w2-b3"][p], got["w0-b16"][p], atol=1e-6)


# --- index --threads N (IndexOptions.encoder_threads): a run setting, not part of the index's identity ---


def test_threads_option_fixes_the_encoder_threads_and_not_the_index(tmp_path, monkeypatch, capsys):
    import json

    from hybridtower.cli.main import main
    from hybridtower.core.errors import ConfigError
    from hybridtower.index import IndexOptions, build_index
    from hybridtower.index import encoding
    from tiny_index import make_videos, save_tiny

    for bad in (0, -2, True, 1.5, "2"):
        with pytest.raises(ConfigError, match="--threads"):
            IndexOptions(encoder_threads=bad)
    assert IndexOptions().encoder_threads is None

    seen = []

    class SpyTuner(encoding.ThreadTuner):
        def __init__(self, candidates, *a, **kw):
            seen.append(candidates)
            super().__init__(candidates, *a, **kw)

    monkeypatch.setattr(encoding, "ThreadTuner", SpyTuner)
    make_videos(tmp_path / "synth", n=3, frames=8)
    folder = str(tmp_path / "synth" / "videos")
    ckpt = save_tiny(tmp_path / "pig.safetensors", "pig-tiny")
    before = torch.get_num_threads()
    fixed = build_index([folder], tmp_path / "fixed", ckpt,
                        IndexOptions(progress=False, window=0, num_workers=1, encoder_threads=1))
    assert fixed.encoded == 3 and seen == [[1]] and torch.get_num_threads() == before
    tuned = build_index([folder], tmp_path / "tuned", ckpt, IndexOptions(progress=False, window=0, num_workers=1))
    assert tuned.encoded == 3 and seen[1] == encoding.encoder_threads(1, torch.device("cpu"))
    # same identity / manifest whatever the threads: nothing of the setting is recorded
    manifests = [json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("fixed", "tuned")]
    assert manifests[0]["model"] == manifests[1]["model"]

    def keys(node):
        if isinstance(node, dict):
            return set(node) | {k for v in node.values() for k in keys(v)}
        return {k for v in node for k in keys(v)} if isinstance(node, list) else set()

    assert not [k for m in manifests for k in keys(m) if "thread" in k.lower()]
    # an index built with one setting is reused as it is with another: nothing re-encoded
    again = build_index([folder], tmp_path / "fixed", ckpt, IndexOptions(progress=False, num_workers=0, encoder_threads=2))
    assert again.encoded == 0 and again.unchanged == 3 and not again.skipped
    # the command line: --threads N reaches the run; a bad N is refused with a clear message
    seen.clear()
    args = ["index", folder, "--out", str(tmp_path / "cli"), "--checkpoint", str(ckpt), "--workers", "1",
            "--window", "0", "--no-progress", "--json"]
    assert main(args + ["--threads", "1"]) == 0 and seen == [[1]]
    capsys.readouterr()
    assert main(args + ["--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert "--threads must be a whole number >= 1" in err and "Traceback" not in err


def test_thread_tuner_starts_with_every_core_on_an_idle_machine():
    """On an idle machine the start-up batch runs with the most threads (a one-batch run never tries the
    other count: pig-vit-b-32 ran 0.94 instead of 1.59 videos/s with the fewest); under load with the fewest.
    Idleness is the cores busy over a short /proc/stat sample (load average as a fallback)."""
    from hybridtower.index import encoding
    from hybridtower.index.encoding import ThreadTuner, machine_was_idle

    assert ThreadTuner([1, 2], start_with_most=True).next() == 2
    assert ThreadTuner([1, 2], start_with_most=False).next() == 1
    tuner = ThreadTuner([1, 2], start_with_most=True)
    used = []
    for _ in range(4):
        t = tuner.next()
        used.append(t)
        tuner.record(t, 1.0, 1)
    assert used[:3] == [2, 2, 1]  # start-up (not counted), then each count once, most first
    assert machine_was_idle(cores=2, busy=0.3) and machine_was_idle(cores=2, busy=1.0)
    assert not machine_was_idle(cores=2, busy=1.6) and not machine_was_idle(cores=8, busy=6.0)
    busy = encoding._busy_cores(0.05)
    assert busy is None or 0.0 <= busy <= encoding.cpu_cores() + 1e-6
