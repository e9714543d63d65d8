"""``hybridtower reproduce synthetic``: the frameworks on the synthetic benchmark, equal tuning budget, 5 seeds.

One command, end to end on a CPU: generate the synthetic benchmark (``--kind shapes`` or ``scenes``),
pretrain a tiny CLIP on its image-caption pairs, tune every framework on the same grid on the VALIDATION
split, train each at its chosen point with 5 seeds, evaluate on the test split, and write
``comparison.md`` + ``comparison.json`` with mean ± SD, the premise check and paired differences with
95% intervals. The logic lives in :mod:`hybridtower.experiments.comparison`; finished pieces are reused
when the command is run again on the same folder.
"""

from __future__ import annotations

import argparse

HELP = "reproduce the framework comparison on the synthetic benchmark (CPU, one command)"
EPILOG = """\
examples:
  hybridtower reproduce synthetic --kind scenes-bold --out-dir runs/scenes-bold --threads 1   # the README table
  hybridtower reproduce synthetic --kind scenes-bold --out-dir runs/gpu --scale gpu  # bigger CLIP, one GPU, ~6 min
  hybridtower reproduce synthetic --kind scenes --out-dir runs/scenes        # the first (fine) scenes design
  hybridtower reproduce synthetic --kind shapes --out-dir runs/shapes        # the one-scene benchmark
  hybridtower reproduce synthetic --out-dir runs/quick --quick               # a smoke run (about a minute)
  hybridtower reproduce synthetic --kind scenes --out-dir runs/scenes --variants pig-its-k0,pig-no-recon
  hybridtower reproduce synthetic --kind scenes --out-dir runs/scenes --seeds 0 1 --frameworks pig xpool

Budgets per kind: BUDGETS in hybridtower/experiments/comparison.py (the recipe: RECIPE there; --scale gpu:
SCALES there). Two invocations may share an OUT_DIR (e.g. the main run and a --variants run, one per core):
a cell being trained by one is waited for, then reused, by the other.
Variants (PIG ablations at PIG's chosen grid point; each a row of its own): --list-variants.
Writes OUT_DIR/comparison.{md,json} (all frameworks), ablations.{md,json} (with --variants) or
comparison-partial.{md,json} (a --frameworks subset). Finished cells are reused across invocations
(use a new OUT_DIR after changing the code).
"""


def register(sub) -> None:
    from ...experiments.comparison import BUDGETS, FRAMEWORKS, SCALES

    p = sub.add_parser("reproduce", help=HELP, description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benchmark", choices=["synthetic"], help="what to reproduce (synthetic: the framework comparison)")
    p.add_argument("--out-dir", required=True, help="folder for the data, checkpoints and the report")
    p.add_argument("--kind", choices=sorted(BUDGETS), default="shapes",
                   help="synthetic kind: shapes (one scene per clip), scenes (a caption describes one of 2-4 scenes; "
                   "small subjects, brief events) or scenes-bold (one of 2-3 scenes, each readable from one frame)")
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu",
                   help="cpu (default): the tiny CLIP, sized for a 2-core CPU; gpu: a bigger CLIP (open_clip "
                   "ViT-S-32-alt), 800 pretraining and 300 fine-tuning steps, bf16, 5 seeds x 4 frameworks, sized "
                   "for one run of about 6 minutes on one H100/H200 (an estimate; docs/comparison.md)")
    p.add_argument("--quick", action="store_true", help="a tiny budget (30 clips, 2 seeds, a few steps) to smoke-test")
    p.add_argument("--seeds", type=int, nargs="+", help="training seeds (default 0 1 2 3 4)")
    p.add_argument("--frameworks", nargs="+", choices=list(FRAMEWORKS),
                   help="subset of frameworks (default: all whose preset exists)")
    p.add_argument("--steps", type=int, help="stage-2 steps per run (default: the kind's budget)")
    p.add_argument("--pretrain-steps", type=int, help="pretrain-clip steps (default: the kind's budget)")
    p.add_argument("--videos", type=int, help="synthetic clips (default 1000)")
    p.add_argument("--frames", type=int, help="frames per clip the models see (default: the kind's budget)")
    p.add_argument("--lrs", type=float, nargs="+", help="learning-rate grid (default 1e-4 3e-4)")
    p.add_argument("--mults", type=float, nargs="+", help="new-module LR multiplier grid (default 1 10)")
    p.add_argument("--no-tune", action="store_true", help="skip the grid: every framework at the first grid point")
    p.add_argument("--variants", default="", help="comma-separated PIG ablations to add (see --list-variants)")
    p.add_argument("--list-variants", action="store_true", help="print the variants and exit")
    p.add_argument("--num-workers", type=int, help="decoding workers for training (default 2)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; on a shared machine 1 is "
                   "much faster than oversubscribed threads). Results are deterministic for a given count")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def command_line(args, variants: list[str]) -> str:
    """The command that reproduces this invocation (for the report)."""
    parts = ["hybridtower reproduce synthetic", f"--kind {args.kind}", f"--out-dir {args.out_dir}"]
    if getattr(args, "scale", "cpu") != "cpu":
        parts.append(f"--scale {args.scale}")
    if args.quick:
        parts.append("--quick")
    for flag, value in (("--frameworks", args.frameworks), ("--seeds", args.seeds), ("--lrs", args.lrs),
                        ("--mults", args.mults)):
        if value:
            parts.append(flag + " " + " ".join(str(x) for x in value))
    for flag, value in (("--steps", args.steps), ("--pretrain-steps", args.pretrain_steps), ("--videos", args.videos),
                        ("--frames", args.frames), ("--threads", args.threads)):
        if value is not None:
            parts.append(f"{flag} {value}")
    if args.no_tune:
        parts.append("--no-tune")
    if variants:
        parts.append("--variants " + ",".join(variants))
    return " ".join(parts)


def run(args) -> int:
    import time

    from tqdm.auto import tqdm

    from ...experiments.comparison import VARIANTS, ComparisonOptions, run_comparison

    if args.list_variants:
        for name, (label, _) in VARIANTS.items():
            print(f"{name:<20} {label}")
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    t_start = time.time()

    def log(msg):
        tqdm.write(f"[{time.time() - t_start:6.0f}s] {msg}")

    budget = {"seeds": args.seeds, "steps": args.steps, "pretrain_steps": args.pretrain_steps, "videos": args.videos,
              "frames": args.frames, "lrs": args.lrs, "mults": args.mults}
    opts = ComparisonOptions(out_dir=args.out_dir, kind=args.kind, quick=args.quick, frameworks=args.frameworks,
                             variants=variants, budget=budget, tune=not args.no_tune, num_workers=args.num_workers,
                             scale=args.scale,
                             threads=args.threads,
                             progress=not args.no_progress, command=command_line(args, variants))
    report = run_comparison(opts, log=log)
    print(report["markdown"])
    return 0
