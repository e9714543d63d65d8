"""Entry point of the ``hybridtower`` console script.

Subcommands live in ``hybridtower.cli.commands``: every module there defines ``register(subparsers)``,
adds one parser and sets ``func(args) -> int`` on it. Some of those modules import torch, FAISS or the
experiment code at import time, so importing all of them costs seconds. ``main`` therefore reads the
subcommand from argv first and imports ONLY that command's module (``COMMANDS`` maps each command to its
module and one-line help; ``hybridtower --help`` lists the commands from that table without importing any).
A test checks the table against what the modules actually register. A command module that exists but is
missing from the table (a new command) still works: discovery then falls back to importing every module.
``build_parser()`` without argv builds the full parser, as before.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from dataclasses import dataclass

from .. import __version__
from ..core.errors import HybridTowerError
from . import commands

EPILOG = """\
Typical sessions:
  hybridtower demo                                   # offline end-to-end demo on a synthetic collection
  hybridtower info pig-vit-b-32 --json               # a preset's config and parameter counts
  hybridtower synth data/synth                       # make the synthetic benchmark
  hybridtower data inspect --data msrvtt:data/synth  # check a dataset before training
  hybridtower train --model pig-tiny --data msrvtt:data/synth --output-dir runs/pig
  hybridtower evaluate --checkpoint runs/pig --data msrvtt:data/synth
  hybridtower index my_videos/ --checkpoint runs/pig --out my_index
  hybridtower search my_index "a red ball bounces"
  hybridtower serve my_index

Run `hybridtower COMMAND --help` for each command's options.
"""


@dataclass(frozen=True)
class Command:
    module: str  # module name under hybridtower.cli.commands
    help: str  # the one-line help its register() gives the parser (checked by tests/test_cli_startup.py)


# command name -> its module and help, in module-name order (the order `hybridtower --help` lists them)
COMMANDS: dict[str, Command] = {
    "analyze": Command("analyze", "analyses of a PIG checkpoint: oracle bound, pseudo-query closeness, ITS k sweep, "
                                  "ITS patches"),
    "bench": Command("bench", "measure costs: `bench efficiency` times and counts PIG against Two-Tower and X-Pool"),
    "data": Command("data", "inspect datasets (counts, missing and unreadable videos)"),
    "demo": Command("demo", "offline end-to-end demo: synthetic videos, a tiny trained PIG model, an index, queries, "
                            "the web page"),
    "evaluate": Command("evaluate", "retrieval metrics (R@1/5/10, MdR, MnR; t2v and v2t) of a checkpoint on a "
                                    "dataset split"),
    "export": Command("export", "export an index's vectors and paths to Parquet or .npy + JSONL (for FAISS, LanceDB, "
                                "pandas)"),
    "index": Command("index", "index your own videos for text search (incremental, resumable, torchrun-shardable)"),
    "info": Command("info", "show a model preset's or checkpoint's resolved config and parameter counts"),
    "pretrain-clip": Command("pretrain_clip", "pretrain a small open_clip model on image-caption pairs (the synthetic "
                                              "benchmark's 'OpenAI CLIP')"),
    "reproduce": Command("reproduce", "reproduce the framework comparison on the synthetic benchmark (CPU, one "
                                      "command)"),
    "search": Command("search", "search an index built by `hybridtower index` with a text query, an image or an example video"),
    "serve": Command("serve", "serve an index over HTTP: JSON search API, video files, thumbnails and a web page"),
    "synth": Command("synth", "generate the synthetic benchmark (videos + captions + images)"),
    "train": Command("train", "train PIG or a baseline (meanp, clipvip, xpool) on a dataset; torchrun for several "
                              "GPUs"),
}


def discovered_modules() -> list[str]:
    """Names of the command modules present in ``hybridtower.cli.commands`` (a directory listing; imports nothing)."""
    return sorted(info.name for info in pkgutil.iter_modules(commands.__path__))


def _import(module: str):
    return importlib.import_module(f"{commands.__name__}.{module}")


def _top_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(
        prog="hybridtower",
        description="Text-to-video retrieval with Hybrid-Tower (PIG) and its Two-Tower / Single-Tower baselines.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hybridtower {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser, sub


def _requested_command(argv: list[str]) -> str | None:
    """The subcommand argv names: its first token that is not an option (the top-level parser has only
    -h/--help and --version, neither takes a value). None when argv names none."""
    for token in argv:
        if token == "--":
            return None  # unusual; let the full parser deal with it
        if not token.startswith("-"):
            return token
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``hybridtower`` parser. Without ``argv``: every command module imported and registered (the full
    parser). With ``argv``: only the module of the command argv names is imported; the other commands are
    listed (name and help, from ``COMMANDS``) but not importable from this parser. Falls back to the full
    parser when the modules on disk and ``COMMANDS`` disagree (a new or renamed command module)."""
    parser, sub = _top_parser()
    found = discovered_modules()
    if argv is None or {c.module for c in COMMANDS.values()} != set(found):
        for module in found:
            _import(module).register(sub)
        return parser
    wanted = _requested_command(argv)
    for name, command in COMMANDS.items():
        if name == wanted:
            _import(command.module).register(sub)
        else:
            # a stand-in that only lists the command; argv does not select it, so it is never run
            sub.add_parser(name, help=command.help)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except HybridTowerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
