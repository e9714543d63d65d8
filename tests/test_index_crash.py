"""Crash safety: a run SIGKILLed at 20 random points (drawn with a fixed seed from the pause points a traced
run passes: decode, encoded, segment, entries, errors, committed, ann, ...) leaves a consistent, openable
index that resumes to the same result as an uninterrupted run; Ctrl-C commits what was encoded; two
writers never interleave."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridtower.index import IndexLockedError, IndexOptions, Searcher, build_index, read_manifest, verify_index
from hybridtower.index.store import IndexWriter, load_index, read_errors

OPTS = dict(progress=False, batch_size=2, num_workers=0)


N_VIDEOS = 5  # 2 indexed before the interrupted run, 3 new ones (and a broken file) for it


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    from hybridtower import hub
    from hybridtower.data.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("crash")
    generate(root / "synth", SynthConfig(videos=N_VIDEOS, images=0, frames=8, sizes=("64x64",), workers=0), progress=False)
    videos = sorted((root / "synth" / "videos").iterdir())
    torch.manual_seed(0)
    ckpt = hub.save_model(hub.create_model("pig-tiny").eval(), root / "pig.safetensors")
    # one folder every run reads: an index over its first 2 videos, then the rest of the files appear
    folder = root / "clips"
    folder.mkdir()
    for v in videos[:2]:
        shutil.copy2(v, folder / v.name)
    build_index([folder], root / "base", ckpt, IndexOptions(**OPTS))
    for v in videos[2:]:
        shutil.copy2(v, folder / v.name)
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    assets = {"root": root, "videos": videos, "ckpt": ckpt, "folder": folder, "base": root / "base"}
    # the reference: one uninterrupted run from the base index
    _, ref = _prepare(assets, root / "ref")
    build_index([folder], ref, None, IndexOptions(**OPTS))
    assets["reference"] = {Path(p).name: v for p, v in _state(ref).items()}
    return assets


def _state(index_dir: Path) -> dict:
    data = load_index(index_dir)
    return {e.path: (e.id, e.sha256, e.size, e.mtime_ns, data.vectors[i]) for i, e in enumerate(data.entries)}


def _prepare(collection, tmp_path: Path) -> tuple[Path, Path]:
    """(the shared folder, a copy of the base index over its first 2 videos)."""
    out = tmp_path / "idx"
    shutil.copytree(collection["base"], out)
    return collection["folder"], out


ARGV = ["--workers", "0", "--batch-size", "1", "--commit-every", "1", "--no-progress", "--ann", "hnsw"]
KILLS = 20  # random kill points per test run (deterministic: drawn with random.Random(SEED) from a traced run)
SEED = 11


def _trace_points(collection) -> list[str]:
    """Every pause point (POINT:N) the interrupted command passes, from one traced in-process run."""
    from hybridtower.cli.main import main
    from hybridtower.index import faults

    folder, out = _prepare(collection, collection["root"] / "trace")
    trace = collection["root"] / "trace" / "points.txt"
    os.environ["HYBRIDTOWER_TEST_TRACE_FILE"] = str(trace)
    faults.reset()
    try:
        main(["index", str(folder), "--out", str(out), *ARGV])
    finally:
        del os.environ["HYBRIDTOWER_TEST_TRACE_FILE"]
        faults.reset()
    return trace.read_text().split()


@pytest.fixture(scope="module")
def scenarios(collection) -> dict:
    """name: (pause point, signal). KILLS SIGKILL points drawn at random from the traced run, and a Ctrl-C
    with one video encoded since the last commit."""
    import random

    points = _trace_points(collection)
    assert {"segment:1", "entries:1", "errors:1", "committed:1", "ann:1", "decode:1", "encoded:1"} <= set(points)
    assert len(points) >= KILLS, points
    rng = random.Random(SEED)
    kinds = sorted({p.split(":")[0] for p in points})
    chosen = [rng.choice([p for p in points if p.split(":")[0] == k]) for k in kinds]  # every kind of point once
    chosen += rng.sample([p for p in points if p not in chosen], KILLS - len(chosen))  # the rest at random
    out = {f"kill-{i:02d}-{p}": (p, signal.SIGKILL, ARGV) for i, p in enumerate(chosen)}
    # Ctrl-C after the 2nd batch (the broken file, then one video): that video is pending, then committed
    out["ctrl-c"] = ("encoded:2", signal.SIGINT, ARGV[:5] + ["2"] + ARGV[6:])
    return out


def _fork_index(argv: list[str], env: dict, log: Path) -> int:
    """Run ``hybridtower index`` in a forked child process (it inherits the imported modules and the
    loaded model, so it starts in milliseconds instead of seconds); return its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 99
    try:  # child: never return into pytest
        fh = open(log, "w", buffering=1)
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        sys.stdout = sys.stderr = fh
        os.environ.update(env)
        # Ctrl-C must raise KeyboardInterrupt even when this test runs in a background job whose shell set
        # SIGINT to "ignore" (Python then installs no handler of its own, and the child would never stop)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        torch.set_num_threads(1)
        from hybridtower.cli.main import main

        code = main(argv)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os._exit(code)


def _status(waitstatus: int) -> int:
    """Like Popen.returncode: the exit code, or -signal when killed by a signal."""
    return -os.WTERMSIG(waitstatus) if os.WIFSIGNALED(waitstatus) else os.WEXITSTATUS(waitstatus)


@pytest.fixture(scope="module")
def interrupted(collection, scenarios):
    """Start every scenario's run at once (separate processes), signal each at its pause point."""
    root = collection["root"] / "runs"
    runs = {}
    for name, (point, sig, args) in scenarios.items():
        folder, out = _prepare(collection, root / name)
        pause = root / name / "paused"
        env = {"HYBRIDTOWER_TEST_PAUSE_AT": point, "HYBRIDTOWER_TEST_PAUSE_FILE": str(pause)}
        argv = ["index", str(folder), "--out", str(out), "--checkpoint", str(collection["ckpt"]), *args]
        runs[name] = {"folder": folder, "out": out, "pause": pause, "sig": sig, "log": root / name / "log.txt",
                      "gen_before": read_manifest(out)["generation"]}
        runs[name]["pid"] = _fork_index(argv, env, runs[name]["log"])
    deadline = time.monotonic() + 240
    try:
        waiting = set(runs)
        while waiting:
            for name in sorted(waiting):
                r = runs[name]
                if r["pause"].exists():
                    os.kill(r["pid"], r["sig"])
                    waiting.discard(name)
                else:
                    pid, status = os.waitpid(r["pid"], os.WNOHANG)
                    if pid:
                        r["pid"] = None
                        raise AssertionError(f"{name}: the run ended ({_status(status)}) before its pause point: "
                                             f"{r['log'].read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {sorted(waiting)}")
            time.sleep(0.02)
        for r in runs.values():
            r["rc"] = _status(os.waitpid(r["pid"], 0)[1])
            r["pid"] = None
            r["output"] = r["log"].read_text()
    finally:
        for r in runs.values():
            if r.get("pid"):
                os.kill(r["pid"], signal.SIGKILL)
                os.waitpid(r["pid"], 0)
    return runs


def _check_consistent(out: Path, reference: dict, low: int) -> dict:
    """The committed index opens, every entry is backed by its vector, and vectors equal the reference's."""
    searcher = Searcher.open(out)
    state = _state(out)
    assert low <= len(state) <= len(reference) and len(searcher) == len(state)
    for path, (eid, sha, size, mtime, vec) in state.items():
        ref = reference[Path(path).name]
        assert (eid, sha) == (ref[0], ref[1])
        np.testing.assert_allclose(vec, ref[4], atol=1e-5)
    assert searcher.search("a ball", k=3).hits
    return state


@pytest.mark.parametrize("n", list(range(KILLS + 1)))
def test_interrupted_run_leaves_a_consistent_index_that_resumes(collection, scenarios, interrupted, n):
    name = sorted(scenarios)[n]
    point, sig, _ = scenarios[name]
    run = interrupted[name]
    folder, out = run["folder"], run["out"]
    reference = collection["reference"]
    assert run["rc"] == (130 if sig == signal.SIGINT else -signal.SIGKILL), (name, run["output"])
    state = _check_consistent(out, reference, low=2)
    manifest = read_manifest(out)
    assert manifest["generation"] > run["gen_before"] or len(state) == 2
    assert not manifest["complete"] or len(state) in (2, N_VIDEOS)  # a run that committed part of its work says so
    if sig == signal.SIGINT:
        assert "interrupted: committing the 1 video(s)" in run["output"] and len(state) == 3
    # resume: the same command encodes only what is missing and ends where an uninterrupted run ends
    s = build_index([folder], out, None, IndexOptions(ann="hnsw", **OPTS))
    assert s.encoded == N_VIDEOS - len(state) and s.unchanged == len(state), name
    final = {Path(p).name: v for p, v in _state(out).items()}
    assert set(final) == set(reference)
    for vname, (eid, sha, size, mtime, vec) in final.items():
        assert (eid, sha, size, mtime) == reference[vname][:4], name
        np.testing.assert_allclose(vec, reference[vname][4], atol=1e-5)
    assert [Path(e["path"]).name for e in read_errors(out)] == ["broken.mp4"]
    m = read_manifest(out)
    assert m["complete"] and m["count"] == N_VIDEOS and m["ann"]["kind"] == "hnsw" and m["ann"]["file"]
    assert verify_index(out).ok
    # nothing the manifest does not name is left behind (garbage of the killed run is collected)
    named = {m["entries_file"], *m["segments"], "manifest.json", "errors.jsonl", ".lock"}
    if m["ann"].get("file"):
        named.add(m["ann"]["file"])
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == named


def test_second_writer_is_refused(collection, tmp_path):
    folder, out = _prepare(collection, tmp_path)
    with IndexWriter(out):
        with pytest.raises(IndexLockedError, match="another process"):
            build_index([folder], out, None, IndexOptions(**OPTS))
    assert build_index([folder], out, None, IndexOptions(**OPTS)).count == N_VIDEOS
