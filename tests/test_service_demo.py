"""``hybridtower demo``: offline end to end on a tiny collection (given / shipped / trained checkpoint)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

from test_service_real import make_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("demo-ckpt") / "pig.safetensors")


def test_demo_serves_page_then_stops_cleanly(ckpt, tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hybridtower.cli.main", "demo", "--out", str(out), "--checkpoint", str(ckpt),
         "--videos", "12", "--images", "0", "--queries", "2", "-k", "3", "--port", "0", "--no-progress"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"web page: (http://127\.0\.0\.1:\d+)/", line)
            if m:
                base = m.group(1)
                with urllib.request.urlopen(base + "/healthz", timeout=20) as r:
                    assert json.load(r)["videos"] == 12
                with urllib.request.urlopen(base + "/search?q=a%20red%20circle&k=3", timeout=20) as r:
                    assert len(json.load(r)["hits"]) == 3
                with urllib.request.urlopen(base + "/", timeout=20) as r:
                    assert b"hybridtower demo" in r.read()
                proc.send_signal(signal.SIGINT)
                break
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines)
    assert "web page:" in text, text + rest
    assert proc.returncode == 0, text + rest
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert step in text
    assert "$ hybridtower synth" in text and "12 videos (12 encoded" in text
    assert len(re.findall(r"^  \"", text, flags=re.M)) == 2  # two example queries
    assert len(re.findall(r"^    [123]\. [+-]\d\.\d{3}  video\d+\.\w+", text, flags=re.M)) == 6
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["videos"] == 12 and summary["captions"] >= 2 and 0 <= summary["R@1"] <= summary["R@5"] <= 100


def test_demo_shipped_checkpoint_and_reuse(ckpt, tmp_path, monkeypatch, capsys):
    from hybridtower.cli.commands import demo
    from hybridtower.cli.main import main

    meta = tmp_path / "asset.json"
    meta.write_text(json.dumps({"recipe": {"videos": 10, "images": 0, "seed": 3},
                                "commands": ["hybridtower train --model pig-tiny --seed 3 ..."]}))
    monkeypatch.setattr(demo, "asset_paths", lambda: (ckpt, meta))
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--no-serve", "--no-progress", "--queries", "1", "-k", "2"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "the shipped tiny PIG" in text and "--seed 3" in text  # the recipe that made it is shown
    assert "--videos 10" in text and "--seed 3" in text.split("[2/5]")[0]  # its data recipe is used
    assert "hybridtower serve" in text and "web page:" not in text
    assert json.loads((out / "demo_summary.json").read_text())["videos"] == 10
    assert main(argv) == 0  # a second run reuses everything
    text = capsys.readouterr().out
    assert "reusing" in text and "up to date" in text and "$ hybridtower synth" not in text


def test_demo_rejects_busy_port_before_working(tmp_path, capsys):
    from hybridtower.cli.main import main
    from hybridtower.service.server import bind_socket

    busy = bind_socket("127.0.0.1", 0)
    try:
        port = busy.getsockname()[1]
        assert main(["demo", "--out", str(tmp_path / "d"), "--port", str(port)]) == 2
    finally:
        busy.close()
    assert "already in use" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_demo_trains_on_the_spot_with_this_projects_commands(tmp_path, capsys):
    from hybridtower.cli.main import main
    from hybridtower.index import read_manifest

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--retrain", "--videos", "10", "--images", "16", "--pretrain-steps", "1",
                 "--train-steps", "1", "--no-serve", "--no-progress", "--queries", "1"]) == 0
    text = capsys.readouterr().out
    assert "$ hybridtower pretrain-clip" in text and "$ hybridtower train --model pig-tiny" in text
    model = out / "pig-tiny" / "model.safetensors"
    assert model.is_file()
    assert read_manifest(out / "index")["model"]["checkpoint"] == str(model.resolve())
    asset = json.loads((out / "pig-tiny" / "demo-pig-tiny.json").read_text())  # ready to ship as an asset
    assert asset["recipe"]["videos"] == 10 and asset["recipe"]["train_steps"] == 1
    assert [c.split()[1] for c in asset["commands"]] == ["synth", "pretrain-clip", "train"]
    assert all(str(tmp_path) not in c for c in asset["commands"])  # relative, reproducible anywhere
