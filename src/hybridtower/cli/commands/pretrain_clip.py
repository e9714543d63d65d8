"""``hybridtower pretrain-clip``: train a tiny CLIP from scratch on image-caption pairs (no network needed)."""

from __future__ import annotations

import argparse
import json

HELP = "pretrain a small open_clip model on image-caption pairs (the synthetic benchmark's 'OpenAI CLIP')"
DESCRIPTION = """\
Train an open_clip architecture (default hybridtower-tiny: 64 px, patch 16, width 128, 3 layers)
from random weights with CLIP's contrastive loss on image-caption pairs (the `images` format), or on
video-caption data taking one random frame per video. Writes open_clip's checkpoint format, so
`hybridtower train --pretrained DIR` (or open_clip itself) loads it exactly like OpenAI's weights."""
EPILOG = """\
examples:
  hybridtower synth data/synth
  hybridtower pretrain-clip --data images:data/synth/images.jsonl --output-dir runs/clip
  hybridtower pretrain-clip --data msrvtt:data/synth --split train-9k --epochs 5 --output-dir runs/clip-frames
  hybridtower train --model pig-tiny --data msrvtt:data/synth --pretrained runs/clip --output-dir runs/pig

Output: DIR/open_clip_model.safetensors, DIR/checkpoint.pt ({"state_dict": ...}), metrics.jsonl,
summary.json (with image<->text R@1 on the val split when there is one).
"""


def register(sub) -> None:
    p = sub.add_parser("pretrain-clip", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, metavar="FORMAT:ROOT", help="images:FILE.jsonl or any video dataset")
    p.add_argument("--split", default="train", help="training split (default train)")
    p.add_argument("--output-dir", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--arch", default="hybridtower-tiny", help="open_clip architecture (default hybridtower-tiny)")
    p.add_argument("--init", default=None, help="start from these CLIP weights (tag or file) instead of random")
    p.add_argument("--epochs", type=int, default=None, help="epochs over the pairs (default 10)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps instead of epochs")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default 128)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 5e-4)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--num-workers", type=int, default=None, help="decoding worker processes (default 2)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="any other PretrainConfig key (context_length, weight_decay, warmup_ratio, ...)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ...core.config import apply_overrides, from_dict, to_dict
    from ...train.pretrain_clip import PretrainConfig, pretrain_clip

    values = {"data": args.data, "split": args.split, "arch": args.arch, "init": args.init, "epochs": args.epochs,
              "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
              "num_workers": args.num_workers}
    cfg = from_dict(PretrainConfig, {**to_dict(PretrainConfig()), **{k: v for k, v in values.items() if v is not None}})
    cfg = apply_overrides(cfg, args.overrides)
    summary = pretrain_clip(cfg, args.output_dir, device=args.device, progress=not args.no_progress)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        val = summary.get("val", {})
        extra = f", val t2i R@1 {val['t2i_R@1']:.1f} / i2t R@1 {val['i2t_R@1']:.1f}" if val.get("pairs") else ""
        print(f"pretrained {summary['arch']}: {summary['steps']} steps, loss {summary['final_loss']:.3f}{extra} "
              f"-> {summary['weights']}")
    return 0
