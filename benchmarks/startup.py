#!/usr/bin/env python
"""Start-up wall time of the ``hybridtower`` CLI, each command in a fresh process, optionally side by side
with an older commit of the package.

    python benchmarks/startup.py                                  # this checkout only, 5 repeats
    python benchmarks/startup.py --baseline-rev 7daa6a6 --repeats 7
    python benchmarks/startup.py --baseline-rev HEAD~3 --index my_index --json startup.json

Commands timed (wall time of the whole process, from spawn to exit, as a user sees it):

- ``hybridtower --help``
- ``hybridtower search --help``
- ``hybridtower search INDEX "a red ball bounces"`` (model load + index open + one query)
- ``hybridtower info pig-tiny``

INDEX is ``--index`` or, by default, a small index this script builds first (6 synthetic clips encoded with
the shipped demo model ``src/hybridtower/assets/demo-pig-tiny.safetensors``) in a temporary folder.
``--model PRESET`` builds it instead with a randomly initialised PRESET (torch seed 0; e.g. ``pig-vit-b-32``,
~600 MB of fp32 weights, 4 clips), to see what a real model's size costs a search's start-up.

``--baseline-rev REV`` exports ``src/`` of commit REV (``git archive``; the working tree and the git index
are not touched) into a temporary folder; the baseline runs of every command use the same interpreter with
``PYTHONPATH`` pointing at that copy, the current runs at this checkout's ``src/`` (each side's
``hybridtower.__file__`` is checked before timing). Runs are interleaved: every repeat runs each command
on both sides, the side that goes first alternating, so drift in the load of a shared machine hits both
alike. Reported: median, min and max seconds per command and side, and the ratio of the medians, for the
wall time and for the CPU time (user + system) of the process, which a busy machine distorts less. A run
that exits with an unexpected code is reported as failed (its stderr tail printed), never timed silently.
``--importtime`` adds, per side, the largest import costs of one ``search`` run (``python -X importtime``,
self time summed per top-level package).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
DEMO_CKPT = SRC / "hybridtower" / "assets" / "demo-pig-tiny.safetensors"
ENTRY = "import sys; from hybridtower.cli.main import main; sys.exit(main(sys.argv[1:]))"
QUERY = "a red ball bounces"
# packages the search path should not need (reported by --importtime: imported at all or not)
HEAVY = ("open_clip", "torchvision", "timm", "torch._dynamo", "sympy", "huggingface_hub")


def commands(index: str) -> list[tuple[str, list[str], int]]:
    """(label, argv, expected exit code)."""
    return [
        ("hybridtower --help", ["--help"], 0),
        ("hybridtower search --help", ["search", "--help"], 0),
        ('hybridtower search INDEX "q"', ["search", index, QUERY], 0),
        ("hybridtower info pig-tiny", ["info", "pig-tiny"], 0),
    ]


def export_rev(rev: str, dest: Path) -> Path:
    """``src/`` of commit ``rev`` extracted under ``dest`` (git archive: no worktree, no index change)."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                            capture_output=True, text=True)
    if commit.returncode != 0:
        sys.exit(f"error: --baseline-rev {rev!r} is not a commit of this repository")
    tar_path = dest / "src.tar"
    with open(tar_path, "wb") as fh:
        subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit.stdout.strip(), "src"],
                       stdout=fh, check=True)
    with tarfile.open(tar_path) as tar:
        tar.extractall(dest, filter="data")
    tar_path.unlink()
    return dest / "src"


def side_env(src: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("HF_HUB_OFFLINE", "1")  # no network probe in either side's runs
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # both sides read the same .pyc state run after run
    return env


def check_side(name: str, src: Path, env: dict) -> None:
    out = subprocess.run([sys.executable, "-c", "import hybridtower; print(hybridtower.__file__)"],
                         capture_output=True, text=True, env=env)
    got = Path(out.stdout.strip()).resolve()
    if out.returncode != 0 or src.resolve() not in got.parents:
        sys.exit(f"error: the {name} side imports hybridtower from {got}, not from its own src/")


def warm_bytecode(src: Path, env: dict) -> None:
    """Compile the side's sources once so no timed run pays for compiling them."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)], env={**env, "PYTHONDONTWRITEBYTECODE": ""},
                   capture_output=True)


def build_index(dest: Path, model: str | None = None) -> str:
    from hybridtower.data.synthetic import SynthConfig, generate
    from hybridtower.index import IndexOptions, build_index

    ckpt = str(DEMO_CKPT)
    if model:
        import torch

        from hybridtower import hub

        torch.manual_seed(0)
        dest.mkdir(parents=True, exist_ok=True)
        ckpt = str(hub.save_model(hub.create_model(model).eval(), dest / "model.safetensors"))
    generate(dest / "clips", SynthConfig(videos=4 if model else 6, images=0, frames=8, sizes=("64x64",), seed=7,
                                         workers=0), progress=False)
    build_index([dest / "clips" / "videos"], dest / "index", ckpt,
                IndexOptions(progress=False, batch_size=6, num_workers=0))
    return str(dest / "index")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_run(argv: list[str], env: dict, expect: int) -> tuple[float, float, str | None]:
    """(wall s, CPU s (user + system) of the process, error or None)."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", ENTRY, *argv], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if proc.returncode != expect:
        return wall, cpu, f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}"
    return wall, cpu, None


def import_breakdown(argv: list[str], env: dict, top: int = 10) -> tuple[list[tuple[str, float]], list[str]]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", ENTRY, *argv], env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    per_pkg: collections.Counter = collections.Counter()
    heavy: list[str] = []  # which of HEAVY the run imported at all
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cum, name = (part.strip() for part in line.split(":", 1)[1].split("|"))
        name = name.strip()
        heavy += [h for h in HEAVY if name == h and h not in heavy]
        pkg = name.split(".")[0]
        if pkg == "torch" and name.startswith(("torch._dynamo", "torch.fx", "torch._functorch", "torch._inductor")):
            pkg = "torch (dynamo/fx/functorch)"
        per_pkg[pkg] += int(self_us)
    total = sum(per_pkg.values())
    return [("all imports", total / 1e6)] + [(k, v / 1e6) for k, v in per_pkg.most_common(top)], heavy



def summary(times: list[float]) -> dict:
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3), "n": len(times)}


def print_table(what: str, table: dict, sides: dict) -> None:
    width = max(len(label) for label in table) + 2
    head = "".join(f"{s:>22}" for s in sides) + ("   current/baseline" if "baseline" in sides else "")
    print(f"\n{what}\n{'command':<{width}}{head}")
    for label, per in table.items():
        cells = []
        for s in sides:
            t = per[s]
            cells.append(f"{statistics.median(t):7.2f} s ({min(t):.2f}-{max(t):.2f})".rjust(22) if t else
                         "failed".rjust(22))
        ratio = ""
        if "baseline" in sides and per["baseline"] and per["current"]:
            ratio = f"   {statistics.median(per['current']) / statistics.median(per['baseline']):.2f}"
        print(f"{label:<{width}}{''.join(cells)}{ratio}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-rev", metavar="REV", help="also time the package as of commit REV, interleaved")
    ap.add_argument("--repeats", type=int, default=5, help="fresh processes per command and side (default 5)")
    ap.add_argument("--index", metavar="DIR", help="index for the search command (default: build a 6-clip one)")
    ap.add_argument("--model", metavar="PRESET",
                    help="build the search index with a random-weight PRESET (e.g. pig-vit-b-32), not the demo model")
    ap.add_argument("--only", action="append", default=[], metavar="TEXT",
                    help="time only the commands whose label contains TEXT (repeatable)")
    ap.add_argument("--importtime", action="store_true", help="also show each side's import cost of one search")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")

    with tempfile.TemporaryDirectory(prefix="hybridtower-startup-") as tmp:
        tmp = Path(tmp)
        sides = {"current": SRC}
        if args.baseline_rev:
            (tmp / "baseline").mkdir()
            sides = {"baseline": export_rev(args.baseline_rev, tmp / "baseline"), "current": SRC}
        envs = {name: side_env(src) for name, src in sides.items()}
        for name, src in sides.items():
            check_side(name, src, envs[name])
            warm_bytecode(src, envs[name])
        if args.index and args.model:
            ap.error("--model builds an index: not with --index")
        index = args.index or build_index(tmp / "data", args.model)
        cmds = [c for c in commands(index) if not args.only or any(t in c[0] for t in args.only)]
        load_before = os.getloadavg()
        times: dict = {label: {s: [] for s in sides} for label, _, _ in cmds}
        cpu_times: dict = {label: {s: [] for s in sides} for label, _, _ in cmds}
        failures: dict = {}
        order = list(sides)
        for r in range(args.repeats):
            for label, argv, expect in cmds:
                for name in (order if r % 2 == 0 else order[::-1]):
                    wall, cpu, err = timed_run(argv, envs[name], expect)
                    if err:
                        failures.setdefault((label, name), err)
                    else:
                        times[label][name].append(wall)
                        cpu_times[label][name].append(cpu)
            print(f"repeat {r + 1}/{args.repeats} done", file=sys.stderr)
        load_after = os.getloadavg()
        breakdown = ({name: import_breakdown(["search", index, QUERY], envs[name]) for name in sides}
                     if args.importtime else {})

    result = {"python": platform.python_version(), "cpus": os.cpu_count(), "repeats": args.repeats,
              "baseline_rev": args.baseline_rev, "model": args.model, "load_before": load_before, "load_after": load_after,
              "commands": {label: {s: summary(t) for s, t in per.items() if t} for label, per in times.items()},
              "cpu": {label: {s: summary(t) for s, t in per.items() if t} for label, per in cpu_times.items()},
              "failures": {f"{label} [{s}]": e for (label, s), e in failures.items()}}
    print(f"\nper fresh process, median of {args.repeats} (min-max); load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after, {os.cpu_count()} CPUs")
    for what, table in (("wall time", times), ("CPU time (user + system)", cpu_times)):
        print_table(what, table, sides)
    for (label, s), err in failures.items():
        print(f"FAILED {label} [{s}]: {err}")
    for name, (rows, heavy) in breakdown.items():
        print(f"\nimports of one search run [{name}] (self time summed per package, -X importtime):")
        for pkg, sec in rows:
            print(f"  {sec:6.2f} s  {pkg}")
        print(f"  imported at all: {', '.join(heavy) or 'none'} (of {', '.join(HEAVY)})")
        result.setdefault("import_breakdown", {})[name] = rows
        result.setdefault("heavy_imported", {})[name] = heavy
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
