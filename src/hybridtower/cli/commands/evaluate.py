"""``hybridtower evaluate``: text-to-video and video-to-text retrieval metrics of a checkpoint on a split."""

from __future__ import annotations

import argparse
import json

HELP = "retrieval metrics (R@1/5/10, MdR, MnR; t2v and v2t) of a checkpoint on a dataset split"
DESCRIPTION = """\
Encode every video of the split once (offline side) and every caption once (online side), score
them by the model's own rule (PIG and Two-Tower: text @ video, the search index's vector path;
X-Pool: pairwise fusion) and print t2v and v2t R@1, R@5, R@10, median and mean rank.

Protocol (docs/evaluation.md): rank = 1 + number of other videos (captions) scoring higher than or
equal to the ground truth (pessimistic ties; a constant-score model gets R@1 = 0, and many exact ties
are warned about); frames: linspace(0, n-1, T) for PIG / CLIP-ViP (their release), each segment's
middle frame for meanP / X-Pool (--eval-sampling overrides); every caption is a t2v query over all videos; in v2t each video is represented by
its best caption against the best caption of every other video (CLIP4Clip/X-Pool). Videos that are
missing or cannot be decoded are listed and scored as failures (never silently dropped)."""
EPILOG = """\
--data is FORMAT:ROOT (see `hybridtower data formats`). Without --split: `test` if the dataset has
one, else `test-1ka` (MSR-VTT 1k-A), else its only split.

examples:
  hybridtower evaluate --checkpoint runs/pig --data msrvtt:data/synth --split test-1ka
  hybridtower evaluate --checkpoint runs/pig --data msrvtt:data/synth --split test-3k --json > metrics.json
  hybridtower evaluate --checkpoint runs/xpool/model.safetensors --data jsonl:data/synth/captions.jsonl --split test
  hybridtower evaluate --checkpoint runs/pig --data msvd:datasets/msvd --device cuda --precision bf16 --dsl

Exit status: 0 on success (also when some videos were skipped: they are reported), 2 on a usage,
data or checkpoint error.
"""


def register(sub) -> None:
    p = sub.add_parser("evaluate", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="RUN_DIR",
                   help="a run folder holding model.safetensors, or a .safetensors checkpoint file")
    p.add_argument("--data", required=True, metavar="FORMAT:ROOT",
                   help="dataset, e.g. msrvtt:datasets/msrvtt or jsonl:my/captions.jsonl")
    p.add_argument("--split", default=None, help="split to evaluate (default: test, else test-1ka, else the only split)")
    p.add_argument("--video-root", default=None, help="folder holding the videos (default: the reader's)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    p.add_argument("--output", metavar="FILE", help="also write the JSON result to FILE (atomic)")
    p.add_argument("--dsl", action="store_true",
                   help="also report dual-softmax (DSL) numbers, as a separately labelled extra")
    p.add_argument("--v2t", choices=("group", "caption"), default="group",
                   help="v2t definition: group = best caption vs. other videos' best captions (default, "
                   "CLIP4Clip/X-Pool); caption = best caption's rank among all captions (COCO style)")
    p.add_argument("--eval-sampling", choices=("auto", "middle", "linspace"), default="auto",
                   help="frames read per video: linspace = linspace(0, n-1, T) (PIG/CLIP-ViP release), middle = "
                   "each segment's middle frame (CLIP4Clip/X-Pool); auto (default) = the model config's "
                   "video.eval_sampling (auto there: linspace for pig/clipvip, middle for meanp/xpool)")
    p.add_argument("--batch-size", type=int, default=16, help="videos per encoding batch (default 16)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes for decoding (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="autocast precision on GPU (ignored on CPU; default fp32)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ... import hub
    from ...core.errors import ConfigError
    from ...data import choose_test_split, load_split
    from ...eval import evaluate, format_table, to_jsonable
    from ...train.distributed import pick_device

    if args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    if args.num_workers < 0:
        raise ConfigError("--num-workers must be >= 0")
    try:
        device = pick_device(args.device)
    except RuntimeError as exc:
        raise ConfigError(f"--device {args.device!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device!r}: CUDA is not available on this machine")

    split_name = choose_test_split(args.data, args.split)
    split = load_split(args.data, split_name, video_root=args.video_root)
    model = hub.load_model(args.checkpoint, device=device)
    result = evaluate(model, split, batch_size=args.batch_size, num_workers=args.num_workers,
                      precision=args.precision, dsl=args.dsl, progress=not args.no_progress, v2t_mode=args.v2t,
                      eval_sampling=args.eval_sampling)
    result["data"] = args.data
    result["checkpoint"] = str(args.checkpoint)
    result = to_jsonable(result)
    if args.output:
        from ...core.io import atomic_write_json

        atomic_write_json(args.output, result)
    if args.json:  # rounded for display; --output keeps full precision
        print(json.dumps(rounded(result), indent=2))
    else:
        print(format_table(result))
    return 0


def rounded(obj, digits: int = 4):
    """``obj`` with every float rounded to ``digits`` decimals (27.500000000000004 -> 27.5), for display."""
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj
