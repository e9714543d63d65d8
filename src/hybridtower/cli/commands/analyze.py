"""``hybridtower analyze``: the analyses of a trained PIG checkpoint that readers of the paper asked for."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "analyses of a PIG checkpoint: oracle bound, pseudo-query closeness, ITS k sweep, ITS patches"
DESCRIPTION = """\
Each analysis writes NAME.md and NAME.json (and a PNG where a picture says it better) under --out,
and prints the Markdown. All use the evaluation protocol of `hybridtower evaluate`.

  oracle        PIG's fusion queried by the real caption (a Single-Tower upper bound of this
                checkpoint) against PIG's stored vectors, the encoder's video CLS alone, and an
                X-Pool checkpoint if --xpool-checkpoint is given
  pseudo-query  cos(t_p, own captions) vs cos(t_p, other videos' captions) (histogram), t_p used as
                a video vector, and a PCA plot of pseudo-queries and caption features
  its-sweep     retrieval and offline FLOPs/time per video with the ITS top-k overridden at
                inference (k = 0, 4, 8, 16, 32, all): robustness of ONE checkpoint to k
  its-patches   the sampled frames of one video with the ITS-selected patches outlined"""
EPILOG = """\
examples:
  hybridtower analyze oracle --checkpoint runs/pig --data msrvtt:data/synth --out analysis/
  hybridtower analyze oracle --checkpoint runs/pig --xpool-checkpoint runs/xpool --data msrvtt:data/synth --out analysis/
  hybridtower analyze pseudo-query --checkpoint runs/pig --data msrvtt:data/synth --out analysis/
  hybridtower analyze its-sweep --checkpoint runs/pig --data msrvtt:data/synth --ks 0,4,8,16,32,all --out analysis/
  hybridtower analyze its-patches --checkpoint runs/pig --data msrvtt:data/synth --video video7 --out analysis/

Without --split: `test` if the dataset has one, else `test-1ka`, else its only split.
"""


def _common(p, split_help=True) -> None:
    p.add_argument("--checkpoint", required=True, metavar="RUN_DIR", help="a PIG run folder or .safetensors file")
    p.add_argument("--data", required=True, metavar="FORMAT:ROOT", help="dataset, e.g. msrvtt:data/synth")
    p.add_argument("--split", default=None, help="split to analyse (default: test, else test-1ka, else the only one)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for NAME.md / NAME.json / PNGs (created)")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="print the JSON result instead of the Markdown")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _batching(p) -> None:
    p.add_argument("--batch-size", type=int, default=16, help="videos per encoding batch (default 16)")
    p.add_argument("--num-workers", type=int, default=0, help="decoding worker processes (default 0)")
    p.add_argument("--max-videos", type=int, default=None,
                   help="use only the first N videos of the split and their captions (quick looks)")


def register(sub) -> None:
    p = sub.add_parser("analyze", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    asub = p.add_subparsers(dest="analysis", metavar="ANALYSIS")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    o = asub.add_parser("oracle", help="PIG's fusion with the real caption as query: the Single-Tower upper bound",
                        description=DESCRIPTION.splitlines()[3], epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(o)
    _batching(o)
    o.add_argument("--xpool-checkpoint", metavar="RUN_DIR", help="an X-Pool checkpoint to evaluate on the same split")
    o.set_defaults(func=run)

    q = asub.add_parser("pseudo-query", help="how close pseudo-queries are to real caption features",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(q)
    _batching(q)
    q.add_argument("--highlight", type=int, default=8, help="videos drawn with lines to their captions in the PCA plot")
    q.set_defaults(func=run)

    s = asub.add_parser("its-sweep", help="R@1 and offline cost against the ITS top-k (same checkpoint)",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(s)
    _batching(s)
    s.add_argument("--ks", default="0,4,8,16,32,all",
                   help="comma-separated k values; 'all' = every patch, 'max' = the largest k the generator fits "
                        "(default 0,4,8,16,32,all)")
    s.add_argument("--cost-repeats", type=int, default=2, help="timed repetitions of the offline cost per k (default 2; 0 = FLOPs only)")
    s.set_defaults(func=run)

    v = asub.add_parser("its-patches", help="one video's frames with the ITS-selected patches outlined",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(v)
    v.add_argument("--video", default="0", help="video id, or its index in the split (default 0)")
    v.add_argument("--k", type=int, default=None, help="override the ITS top-k (default: the checkpoint's)")
    v.add_argument("--no-heatmap", action="store_true", help="outline the selected patches only, no score heat map")
    v.set_defaults(func=run)


def run(args) -> int:
    from ... import hub
    from ...analysis.common import subset_split
    from ...data import choose_test_split, load_split
    from ...train.distributed import pick_device

    device = pick_device(args.device)
    model = hub.load_model(args.checkpoint, device=device)
    split = load_split(args.data, choose_test_split(args.data, args.split))
    split = subset_split(split, getattr(args, "max_videos", None))
    progress = not args.no_progress
    if args.analysis == "oracle":
        from ...analysis.oracle import oracle_analysis

        xpool = hub.load_model(args.xpool_checkpoint, device=device) if args.xpool_checkpoint else None
        result = oracle_analysis(model, split, args.out, xpool_model=xpool, batch_size=args.batch_size,
                                 num_workers=args.num_workers, progress=progress)
    elif args.analysis == "pseudo-query":
        from ...analysis.pseudo_query import pseudo_query_analysis

        result = pseudo_query_analysis(model, split, args.out, batch_size=args.batch_size,
                                       num_workers=args.num_workers, progress=progress, highlight=args.highlight)
    elif args.analysis == "its-sweep":
        from ...analysis.its_sweep import its_sweep_analysis

        result = its_sweep_analysis(model, split, args.out, ks=args.ks, batch_size=args.batch_size,
                                    num_workers=args.num_workers, progress=progress, cost_repeats=args.cost_repeats)
    else:
        from ...analysis.its_visual import its_patches_analysis

        result = its_patches_analysis(model, split, args.out, video=args.video, k=args.k, heatmap=not args.no_heatmap)
    md = result.pop("markdown")
    if args.json:
        json.dump(result, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(md)
        for name, path in result.get("files", {}).items():
            print(f"{name}: {path}")
    return 0
