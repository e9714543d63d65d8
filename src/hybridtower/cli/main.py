"""Entry point of the ``hybridtower`` console script.

Subcommands are discovered from ``hybridtower.cli.commands``: every module there defines
``register(subparsers)``, adds one or more parsers and sets ``func(args) -> int`` on them.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridtower",
        description="Text-to-video retrieval with Hybrid-Tower (PIG) and its Two-Tower / Single-Tower baselines.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hybridtower {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HybridTowerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
