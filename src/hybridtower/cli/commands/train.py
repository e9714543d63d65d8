"""``hybridtower train``: fine-tune PIG or a baseline on a dataset (stage 1 + stage 2), one or many GPUs."""

from __future__ import annotations

import argparse
import json

HELP = "train PIG or a baseline (meanp, clipvip, xpool) on a dataset; torchrun for several GPUs"
DESCRIPTION = """\
Fine-tune a retrieval model. Stage 1 (PIG only, optional): only the pseudo-query generator learns,
with the reconstruction loss toward the real caption's text feature; encoders and fusion frozen.
Stage 2: everything fine-tunes with symmetric InfoNCE over the global batch (+ lambda x reconstruction
for PIG). The defaults are the paper's released recipe (AdamW 3e-6, wd 0.2, betas 0.9/0.98, 1%
warm-up then cosine, clip 1.0, global batch 128); the shipped configs/*.yaml set the rest per
benchmark. model.safetensors in RUN_DIR is the checkpoint to evaluate: best on the validation split
when the dataset has one (never the test split), else the final weights."""


def _epilog() -> str:
    # spelled out here: importing the model package would import torch and slow down `--help`
    return """\
model presets: {pig,meanp,clipvip,xpool}-{vit-b-32,vit-b-16,tiny}  (`hybridtower info PRESET` shows one)
  and PIG-M (opt-in, 4 pseudo-queries per video): pig-m4-vit-b-32, pig-m4-vit-b-16, pig-m4-tiny
  and the ablation PIG without fusion (the pseudo-query is the video vector):
  pig-nofusion-vit-b-32, pig-nofusion-vit-b-16, pig-nofusion-tiny
data formats:  msrvtt, msvd, vatex, didemo, clipvip, jsonl, images  (--data FORMAT:ROOT;
               `hybridtower data formats` describes the files each expects)

examples:
  hybridtower train --model pig-tiny --data msrvtt:data/synth --pretrained runs/clip --output-dir runs/pig
  hybridtower train --config configs/msrvtt-1ka-pig-vit-b-32.yaml --data msrvtt:datasets/msrvtt \\
      --pretrained openai --output-dir runs/msrvtt-pig
  torchrun --nproc_per_node 4 -m hybridtower.cli.main train --config configs/msrvtt-1ka-pig-vit-b-32.yaml \\
      --data msrvtt:datasets/msrvtt --pretrained openai --output-dir runs/msrvtt-pig
  hybridtower train ... --set stage1_epochs=2 --set stage1_data=images:data/synth/images.jsonl
  hybridtower train ... --set model.its.k=8 --set precision=bf16 --set grad_accum=4
  hybridtower train --config runs/pig/config.yaml --output-dir runs/pig --resume

--set KEY=VALUE sets any TrainConfig key (docs/training.md lists them); model.KEY=VALUE reaches the
model config (the keys `hybridtower info PRESET --json` shows). Precedence: --config file < the
named options (--model, --epochs, ...) < --set.
"""


def register(sub) -> None:
    p = sub.add_parser("train", help=HELP, description=DESCRIPTION, epilog=_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", metavar="PRESET", help="model preset, e.g. pig-vit-b-32 (default from the config: pig-tiny)")
    p.add_argument("--data", metavar="FORMAT:ROOT", help="training dataset, e.g. msrvtt:datasets/msrvtt")
    p.add_argument("--pretrained", metavar="CKPT",
                   help="CLIP weights to start from: an open_clip tag (openai; needs the network), a local "
                   "CLIP checkpoint file, or a `hybridtower pretrain-clip` output folder")
    p.add_argument("--config", metavar="FILE", help="a YAML/JSON TrainConfig, e.g. configs/msrvtt-1ka-pig-vit-b-32.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable); model.KEY=VALUE for the model config")
    p.add_argument("--epochs", type=int, help="stage-2 epochs (one epoch = every training video once)")
    p.add_argument("--steps", type=int, help="stage-2 optimizer steps instead of epochs")
    p.add_argument("--batch-size", type=int, help="GLOBAL batch size (over all processes and accumulation steps)")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--output-dir", required=True, metavar="RUN_DIR", help="run folder (created)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR exactly where it stopped")
    p.add_argument("--device", default="auto", help="auto (CUDA if present, per torchrun rank), cpu, cuda, cuda:1")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import logging
    from pathlib import Path

    from ...train import load_train_config, train
    from ...train.distributed import cleanup_distributed

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    config = args.config
    if args.resume and config is None and (Path(args.output_dir) / "config.yaml").is_file() and not (
        args.model or args.data or args.overrides or args.epochs or args.steps or args.batch_size or args.seed is not None
    ):
        config = str(Path(args.output_dir) / "config.yaml")  # `train --output-dir RUN --resume` alone
    cfg = load_train_config(
        config, args.overrides, model=args.model, data=args.data, pretrained=args.pretrained,
        stage2_epochs=args.epochs, stage2_steps=args.steps, batch_size=args.batch_size, seed=args.seed,
    )
    try:
        summary = train(cfg, args.output_dir, resume=args.resume, device=args.device, progress=not args.no_progress)
    finally:
        cleanup_distributed()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"trained {summary['model']} -> {summary['output_dir']}/model.safetensors ({summary['model_file']}), "
              f"{sum(summary['steps'].values())} steps in {summary['seconds']:.0f} s")
    return 0
