"""``hybridtower demo``: offline end to end on a tiny collection (given / shipped / trained checkpoint)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest

from test_service_real import make_checkpoint


def _has_long_videos() -> bool:
    try:
        from hybridtower.data.synthetic.long import write_long_video  # noqa: F401
    except ImportError:
        return False
    return True


LONG = _has_long_videos()  # the demo adds one long synthetic video (a moment result) when it can
WINDOWS = "window" in __import__("hybridtower.index", fromlist=["IndexOptions"]).IndexOptions.__dataclass_fields__


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
                    assert json.load(r)["videos"] == 12 + LONG
                with urllib.request.urlopen(base + "/search?q=a%20red%20circle&k=3", timeout=20) as r:
                    assert len(json.load(r)["hits"]) == 3
                if LONG:  # the long video's caption: its hit names a moment (with windows)
                    caption = json.loads((out / "long.json").read_text())["caption"]
                    q = urllib.parse.urlencode({"q": caption, "k": 13})
                    with urllib.request.urlopen(base + "/search?" + q, timeout=20) as r:
                        hit = next(h for h in json.load(r)["hits"] if h["name"] == "long-demo.mp4")
                    if WINDOWS:
                        assert hit["start"] is not None and 0 < hit["end"] - hit["start"] <= 60, hit
                with urllib.request.urlopen(base + "/", timeout=20) as r:
                    assert b"hybridtower demo" in r.read()
                proc.send_signal(signal.SIGINT)
                break
        rest, _ = proc.communicate(timeout=120)  # interpreter shutdown needs ~2 s of CPU: slow on a loaded machine
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines)
    assert "web page:" in text, text + rest
    assert proc.returncode == 0, text + rest
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert step in text
    n = 12 + LONG
    assert "$ hybridtower synth" in text and f"{n} videos ({n} encoded" in text
    assert len(re.findall(r"^  \"", text, flags=re.M)) == 2  # two example queries
    assert len(re.findall(r"^    [123]\. [+-]\d\.\d{3}  (video\d+|long-demo)\.\w+", text, flags=re.M)) == 6
    summary = json.loads((out / "demo_summary.json").read_text())
    if LONG:  # the moment result: the long video's line with its time range
        assert "moment: \"" in text and "long-demo.mp4" in text
        m = summary["moment"]
        assert m["caption"] and m["event_start"] < m["event_end"] and m["rank"] >= 1
        if WINDOWS:
            assert re.search(r"\) [+-]\d\.\d{3}  long-demo\.mp4  \d+:\d\d-\d+:\d\d  <- ", text), text
    assert summary["videos"] == 12 + LONG and summary["captions"] >= 2 and 0 <= summary["R@1"] <= summary["R@5"] <= 100


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
    assert json.loads((out / "demo_summary.json").read_text())["videos"] == 10 + LONG
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
