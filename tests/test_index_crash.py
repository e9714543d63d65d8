"""Crash safety: a run SIGKILLed at several points leaves a consistent, openable index that resumes to the
same result as an uninterrupted run; Ctrl-C commits what was encoded; two writers never interleave."""

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

from hybridtower.index import IndexLockedError, IndexOptions, Searcher, build_index, read_manifest
from hybridtower.index.store import IndexWriter, load_index, read_errors

OPTS = dict(progress=False, batch_size=2, num_workers=0)


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    from hybridtower import hub
    from hybridtower.data.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("crash")
    generate(root / "synth", SynthConfig(videos=6, images=0, frames=8, sizes=("64x64",), workers=0), progress=False)
    videos = sorted((root / "synth" / "videos").iterdir())
    torch.manual_seed(0)
    ckpt = hub.save_model(hub.create_model("pig-tiny").eval(), root / "pig.safetensors")
    # the reference: one uninterrupted run over the full folder (base files first, then the rest)
    full = root / "full"
    full.mkdir()
    for v in videos:
        shutil.copy2(v, full / v.name)
    (full / "broken.mp4").write_bytes(b"not a video at all")
    assets = {"root": root, "videos": videos, "ckpt": ckpt, "full": full}
    assets["reference"] = _reference(assets, root / "ref")
    return assets


def _state(index_dir: Path) -> dict:
    data = load_index(index_dir)
    return {e.path: (e.id, e.sha256, e.size, e.mtime_ns, data.vectors[i]) for i, e in enumerate(data.entries)}


def _prepare(collection, tmp_path: Path) -> tuple[Path, Path]:
    """An index over the first 2 videos, then the rest of the files appear in the folder."""
    folder = tmp_path / "clips"
    folder.mkdir(parents=True)
    for v in collection["videos"][:2]:
        shutil.copy2(v, folder / v.name)
    out = tmp_path / "idx"
    build_index([folder], out, collection["ckpt"], IndexOptions(**OPTS))
    for v in collection["videos"][2:]:
        shutil.copy2(v, folder / v.name)
    shutil.copy2(collection["full"] / "broken.mp4", folder / "broken.mp4")
    return folder, out


def _reference(collection, tmp_path: Path) -> dict:
    folder, out = _prepare(collection, tmp_path)
    build_index([folder], out, None, IndexOptions(**OPTS))
    return {Path(p).name: v for p, v in _state(out).items()}


SCENARIOS = {
    # name: (pause point, extra CLI args, signal, videos committed when it is killed)
    "segment": ("segment:2", (), signal.SIGKILL, 4),  # 2nd segment on disk, its entries table and manifest not
    "entries": ("entries:1", (), signal.SIGKILL, 2),  # 1st entries table written, the manifest still the old one
    "committed": ("committed:2", (), signal.SIGKILL, 6),  # two commits done (4 new videos), run not finished
    "ann": ("ann:1", ("--ann", "hnsw"), signal.SIGKILL, 6),  # all encoded, FAISS file written, manifest not yet
    "ctrl-c": ("encoded:4", (), signal.SIGINT, 5),  # Ctrl-C with 1 video pending: it is committed, exit 130
}


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
def interrupted(collection):
    """Start every scenario's run at once (separate processes), signal each at its pause point."""
    root = collection["root"] / "runs"
    runs = {}
    for name, (point, extra, sig, _) in SCENARIOS.items():
        folder, out = _prepare(collection, root / name)
        pause = root / name / "paused"
        env = {"HYBRIDTOWER_TEST_PAUSE_AT": point, "HYBRIDTOWER_TEST_PAUSE_FILE": str(pause)}
        argv = ["index", str(folder), "--out", str(out), "--checkpoint", str(collection["ckpt"]), "--workers", "0",
                "--batch-size", "1", "--commit-every", "2", "--no-progress", *extra]
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


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_interrupted_run_leaves_a_consistent_index_that_resumes(collection, interrupted, name):
    point, extra, sig, committed_after_kill = SCENARIOS[name]
    run = interrupted[name]
    folder, out = run["folder"], run["out"]
    reference = collection["reference"]
    assert run["rc"] == (130 if sig == signal.SIGINT else -signal.SIGKILL), run["output"]
    state = _check_consistent(out, reference, low=2)
    assert len(state) == committed_after_kill
    manifest = read_manifest(out)
    assert manifest["generation"] > run["gen_before"] or len(state) == 2
    assert not manifest["complete"] or len(state) == 2  # a run that committed part of its work says so
    if sig == signal.SIGINT:
        assert "interrupted: committing the 1 video(s)" in run["output"]
    # resume: the same command encodes only what is missing and ends where an uninterrupted run ends
    s = build_index([folder], out, None, IndexOptions(ann=extra[1] if extra else None, **OPTS))
    assert s.encoded == 6 - committed_after_kill
    assert s.unchanged == committed_after_kill
    final = {Path(p).name: v for p, v in _state(out).items()}
    assert set(final) == set(reference)
    for vname, (eid, sha, size, mtime, vec) in final.items():
        assert (eid, sha, size, mtime) == reference[vname][:4]
        np.testing.assert_allclose(vec, reference[vname][4], atol=1e-5)
    assert [Path(e["path"]).name for e in read_errors(out)] == ["broken.mp4"]
    m = read_manifest(out)
    assert m["complete"] and m["count"] == 6
    if extra:
        assert m["ann"]["kind"] == "hnsw" and Searcher.open(out).ann_kind == "hnsw"
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
    assert build_index([folder], out, None, IndexOptions(**OPTS)).count == 6
