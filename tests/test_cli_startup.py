"""Start-up: `hybridtower CMD` imports only CMD's module; the command table never drifts from the modules;
hub.load_model builds on the meta device and adopts the checkpoint's tensors (same model as copying them in)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hybridtower
from hybridtower.cli import commands
from hybridtower.cli import main as cli
from hybridtower.core.errors import HybridTowerError


def _registered(module_name: str) -> dict[str, str]:
    """{command: help} of what ``module_name``'s register() adds to a fresh subparsers action."""
    parser = argparse.ArgumentParser(prog="hybridtower")
    sub = parser.add_subparsers(dest="command")
    cli._import(module_name).register(sub)
    return {a.dest: a.help for a in sub._choices_actions}


def test_command_table_matches_the_modules():
    assert sorted(c.module for c in cli.COMMANDS.values()) == cli.discovered_modules()
    assert list(cli.COMMANDS) == sorted(cli.COMMANDS, key=lambda n: cli.COMMANDS[n].module)  # listing order
    for name, command in cli.COMMANDS.items():
        assert _registered(command.module) == {name: command.help}, f"COMMANDS[{name!r}] drifted from its module"


def test_top_level_help_lists_the_same_as_the_full_parser():
    lazy = cli.build_parser(["--help"]).format_help()
    assert lazy == cli.build_parser().format_help()
    assert all(name in lazy for name in cli.COMMANDS)


HEAVY = ("torch", "open_clip", "torchvision", "numpy", "faiss", "av")
PROBE = """
import json, sys
from hybridtower.cli.main import main
try:
    rc = main(sys.argv[1:])
except SystemExit as exc:
    rc = exc.code
print(json.dumps({"rc": rc, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _probe(*argv: str) -> tuple[dict, str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=50, env=env)
    return json.loads(proc.stderr.strip().splitlines()[-1]), proc.stdout


@pytest.mark.parametrize("argv", [["search", "--help"], ["--help"], []])
def test_help_in_a_fresh_process_imports_no_heavy_package(argv):
    report, out = _probe(*argv)
    assert report["rc"] in (0, 2) and "usage: hybridtower" in out
    loaded = set(report["modules"])
    assert not loaded & set(HEAVY), f"`hybridtower {' '.join(argv)}` imported {sorted(loaded & set(HEAVY))}"
    imported = {m.rsplit(".", 1)[1] for m in loaded if m.startswith(commands.__name__ + ".")}
    assert imported == ({"search"} if argv[:1] == ["search"] else set())


def test_every_command_help_still_works(capsys):
    for name in cli.COMMANDS:
        with pytest.raises(SystemExit) as exc:
            cli.main([name, "--help"])
        assert exc.value.code == 0
        assert f"usage: hybridtower {name}" in capsys.readouterr().out


def test_unknown_command_is_refused_with_the_list(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["serch", "idx", "q"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'serch'" in err and "'search'" in err


def test_no_command_prints_help():
    assert cli.main([]) == 2


EXTRA = '''
from hybridtower.core.errors import HybridTowerError


def register(sub):
    p = sub.add_parser("zz-hello", help="a command the table does not know")
    p.add_argument("--fail", choices=["error", "interrupt"])
    p.set_defaults(func=run)


def run(args):
    if args.fail == "error":
        raise HybridTowerError("told to fail")
    if args.fail == "interrupt":
        raise KeyboardInterrupt
    print("hello from zz")
    return 7
'''


@pytest.fixture
def extra_command(tmp_path, monkeypatch):
    """A command module found by discovery (on the package path) but missing from COMMANDS."""
    (tmp_path / "zz_extra.py").write_text(EXTRA)
    monkeypatch.setattr(commands, "__path__", [*commands.__path__, str(tmp_path)])
    yield
    sys.modules.pop(f"{commands.__name__}.zz_extra", None)


def test_a_module_missing_from_the_table_still_works(extra_command, capsys):
    assert "zz_extra" in cli.discovered_modules()
    assert cli.main(["zz-hello"]) == 7
    assert "hello from zz" in capsys.readouterr().out
    help_text = cli.build_parser(["--help"]).format_help()  # fallback: every module registered
    assert "zz-hello" in help_text and "search" in help_text
    with pytest.raises(SystemExit):
        cli.main(["search", "--help"])
    assert "usage: hybridtower search" in capsys.readouterr().out


def test_errors_and_interrupts_keep_their_exit_codes(extra_command, capsys):
    assert cli.main(["zz-hello", "--fail", "error"]) == 2
    assert "error: told to fail" in capsys.readouterr().err
    assert cli.main(["zz-hello", "--fail", "interrupt"]) == 130
    assert "interrupted" in capsys.readouterr().err


# ----- hub.load_model: built on the meta device, the checkpoint's tensors adopted -----

DEMO_CKPT = Path(hybridtower.__file__).parent / "assets" / "demo-pig-tiny.safetensors"


def _same_model(a, b) -> None:
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].device == sb[k].device and torch.equal(sa[k], sb[k]), k
    assert [p.requires_grad for p in a.parameters()] == [p.requires_grad for p in b.parameters()]
    assert a.training is b.training is False
    tokens = a.tokenize(["a red ball bounces", "two squares collide"])
    with torch.no_grad():
        assert torch.equal(a.encode_text(tokens), b.encode_text(tokens))


@pytest.fixture(scope="module")
def copied_model():
    """The demo model loaded the old way: built normally (random init), checkpoint copied in."""
    from hybridtower import checkpoints, hub

    original = checkpoints._empty_model  # load_model looks it up in hybridtower.checkpoints
    checkpoints._empty_model = lambda cfg: None
    try:
        return hub.load_model(DEMO_CKPT)
    finally:
        checkpoints._empty_model = original


def test_load_model_builds_no_weights_and_equals_the_copying_load(monkeypatch, copied_model):
    from hybridtower import checkpoints, hub

    def no_normal_build(*a, **k):
        raise AssertionError("load_model built the model with weights instead of on the meta device")

    monkeypatch.setattr(checkpoints, "create_model", no_normal_build)  # load_model looks it up there
    model = hub.load_model(DEMO_CKPT)  # the file stores float16: adopted tensors are cast to the model's fp32
    assert not hub._meta_tensors(model)
    _same_model(model, copied_model)


@pytest.mark.parametrize("reason", ["tied", "left_on_meta"])
def test_load_model_falls_back_to_copying(monkeypatch, copied_model, reason):
    from hybridtower import checkpoints, hub

    if reason == "tied":
        monkeypatch.setattr(checkpoints, "_shares_tensors", lambda model: True)
    else:
        monkeypatch.setattr(checkpoints, "_meta_tensors", lambda model: ["some.buffer"])
    _same_model(hub.load_model(DEMO_CKPT), copied_model)


def test_create_model_on_meta_has_the_real_shapes_and_counts():
    from hybridtower import hub

    empty, real = hub.create_model("xpool-tiny", device="meta"), hub.create_model("xpool-tiny")
    assert empty.parameter_counts() == real.parameter_counts()
    shapes = {k: (v.shape, v.dtype) for k, v in real.state_dict().items()}
    assert {k: (v.shape, v.dtype) for k, v in empty.state_dict().items()} == shapes
    assert all(t.is_meta for t in empty.state_dict().values())
    with pytest.raises(ValueError, match="no weights"):
        hub.create_model("xpool-tiny", pretrained="openai", device="meta")


# ----- the search path in a fresh process: no open_clip package, torchvision, timm or torch._dynamo -----

SEARCH_HEAVY = ("open_clip", "torchvision", "timm", "torch._dynamo", "sympy")
SEARCH_PROBE = """
import json, sys, traceback
HEAVY = %r
looked_up = []  # (module, where) of every heavy lookup; a mere find_spec that imports nothing also passes here

class Spy:  # records who looks up a heavy module; finds nothing itself
    def find_spec(self, name, path=None, target=None):
        if any(name == h or name.startswith(h + ".") for h in HEAVY):
            frames = [f for f in traceback.extract_stack() if "hybridtower" in f.filename.replace("\\\\", "/")]
            where = frames[-1] if frames else None
            looked_up.append((name, (where.filename.replace("\\\\", "/").split("/hybridtower/")[-1] + ":"
                                     + where.name) if where else "outside hybridtower"))
        return None

sys.meta_path.insert(0, Spy())
from hybridtower.cli.main import main
try:
    rc = main(sys.argv[1:])
except SystemExit as exc:
    rc = exc.code
imported = [(m, at) for m, at in looked_up if m in sys.modules]  # the first heavy module actually imported
first = dict(zip(("module", "at"), imported[0])) if imported else {}
print(json.dumps({"rc": rc, "modules": sorted(sys.modules), "first": first}), file=sys.stderr)
""" % (SEARCH_HEAVY,)


@pytest.fixture(scope="module")
def demo_index(tmp_path_factory):
    from tiny_index import make_videos

    from hybridtower.index import IndexOptions, build_index

    root = tmp_path_factory.mktemp("startup-index")
    make_videos(root / "clips", n=3, seed=3)
    build_index([root / "clips" / "videos"], root / "index", str(DEMO_CKPT),
                IndexOptions(progress=False, batch_size=3, num_workers=0))
    return root / "index"


def test_search_in_a_fresh_process_imports_no_open_clip_torchvision_timm_or_dynamo(demo_index):
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", SEARCH_PROBE, "search", str(demo_index), "a red ball bounces",
                           "-k", "2"], capture_output=True, text=True, timeout=55, env=env)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report["rc"] == 0 and "video" in proc.stdout, proc.stderr[-1500:]  # a real search ran and answered
    loaded = set(report["modules"])
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in SEARCH_HEAVY))
    assert "hybridtower._open_clip_tokenizer" in loaded
    # the model is rebuilt on hybridtower's own CLIP towers (models/clip_backbone.py), on the meta device
    assert not heavy, f"`hybridtower search` imported {heavy[:8]} (first {report['first']})"


def test_search_of_a_small_index_imports_no_builder_and_no_faiss(demo_index):
    """`hybridtower search` over a small flat index: the index package does not import the builder (its
    names are imported on first use), and exact search does not time its kernels, so FAISS is not imported."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", SEARCH_PROBE, "search", str(demo_index), "a red ball bounces",
                           "-k", "2"], capture_output=True, text=True, timeout=55, env=env)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report["rc"] == 0 and "video" in proc.stdout, proc.stderr[-1500:]
    loaded = set(report["modules"])
    assert "hybridtower.index.searcher" in loaded
    unwanted = sorted(m for m in loaded if m in ("hybridtower.index.builder", "hybridtower.index.session",
                                                 "hybridtower.index.encoding", "faiss") or m.startswith("faiss."))
    assert not unwanted, unwanted


def test_index_package_names_still_import():
    import hybridtower.index as index

    from hybridtower.index import build_index, verify_index  # noqa: F401 - the documented imports
    assert set(index.__all__) <= set(dir(index))
    assert all(getattr(index, name) is not None for name in index.__all__)
    with pytest.raises(AttributeError, match="no attribute"):
        index.not_a_name  # noqa: B018
