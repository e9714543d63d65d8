"""``hybridtower synth OUT_DIR``: generate the synthetic text-video benchmark."""

from __future__ import annotations

import argparse
import json

EPILOG = """\
examples:
  hybridtower synth data/synth                          # defaults: 1000 clips, 3000 images, seed 0
  hybridtower synth data/tiny --videos 24 --images 50   # a tiny set for smoke tests
  hybridtower synth data/scenes --kind scenes           # 2-4 scenes per clip, each caption about one scene
  hybridtower synth data/bold --kind scenes --scene-style bold --scenes 2-3 --frames-per-scene 4
  hybridtower synth data/big --videos 5000 --workers 2 --size 64x64 --size 96x96
  hybridtower data inspect --data msrvtt:data/synth     # then check it like any dataset

Writes the MSRVTT layout (MSRVTT_data.json, MSRVTT_train.9k.csv, MSRVTT_train.7k.csv,
MSRVTT_JSFUSION_test.csv, videos/), the generic captions.jsonl (split train/val/test), an
image-caption set (images/ + images.jsonl) and synth_meta.json. Same seed -> identical output.
See docs/data.md for the design.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate the synthetic benchmark (videos + captions + images)",
        description="Generate a synthetic text-to-video benchmark whose captions need fine-grained evidence: "
        "several objects, motions and short events; real video files in several containers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created)")
    p.add_argument("--kind", choices=["shapes", "scenes"], default="shapes",
                   help="shapes (default): one scene per clip, captions about the whole clip; scenes: clips of "
                   "several scenes, each caption describes ONE scene (as on MSRVTT, a caption covers part of a video)")
    p.add_argument("--scenes", default="2-4", metavar="MIN-MAX", help="scenes kind: scenes per clip (default 2-4)")
    p.add_argument("--scene-style", choices=["fine", "bold"], default="fine",
                   help="scenes kind: fine (default; small subjects, brief events) or bold (every scene readable "
                   "from one frame: large objects on a named background; the still images use the same style)")
    p.add_argument("--frames-per-scene", type=int, default=6, help="scenes kind: rendered frames per scene (default 6)")
    p.add_argument("--videos", type=int, default=1000, help="number of clips (default 1000: 700 train / 100 val / 200 test)")
    p.add_argument("--images", type=int, default=3000, help="number of still images for CLIP pretraining (default 3000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--frames", type=int, default=12, help="shapes kind: rendered frames per clip (default 12)")
    p.add_argument("--fps", type=int, default=10, help="frame rate written (default 10)")
    p.add_argument(
        "--size", action="append", metavar="WxH", dest="sizes",
        help="frame size, repeatable (default 64x64, 96x96, 96x64); even numbers",
    )
    p.add_argument("--captions-per-video", type=int, default=5, help="captions per clip (default 5)")
    p.add_argument("--captions-per-image", type=int, default=2, help="captions per image (default 2)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="fraction of clips held out for validation")
    p.add_argument("--test-fraction", type=float, default=0.2, help="fraction of clips for test")
    p.add_argument(
        "--format", action="append", dest="formats", choices=["mp4", "webm", "avi", "mkv"],
        help="containers to use, repeatable (default all four)",
    )
    p.add_argument("--workers", type=int, default=-1, help="processes (default: up to 4 for larger sets; 0 = in-process)")
    p.add_argument("--overwrite", action="store_true", help="replace videos/ and images/ of a previous run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def _scene_range(text: str) -> tuple[int, int]:
    from ...core.errors import ConfigError

    try:
        lo, _, hi = text.partition("-")
        return int(lo), int(hi or lo)
    except ValueError:
        raise ConfigError(f"--scenes {text!r} must look like MIN-MAX, e.g. 2-4") from None


def run(args) -> int:
    from ...data.synthetic import SynthConfig, generate

    scenes_min, scenes_max = _scene_range(args.scenes)
    cfg = SynthConfig(
        kind=args.kind,
        scenes_min=scenes_min,
        scenes_max=scenes_max,
        frames_per_scene=args.frames_per_scene,
        scene_style=args.scene_style,
        videos=args.videos,
        images=args.images,
        seed=args.seed,
        frames=args.frames,
        fps=args.fps,
        captions_per_video=args.captions_per_video,
        captions_per_image=args.captions_per_image,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        workers=args.workers,
    )
    if args.sizes:
        cfg.sizes = tuple(args.sizes)
    if args.formats:
        cfg.formats = tuple(dict.fromkeys(args.formats))
    summary = generate(args.out_dir, cfg, overwrite=args.overwrite, progress=not args.no_progress)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        v, c = summary["videos"], summary["captions"]
        print(f"wrote {args.out_dir}")
        for s in ("train", "val", "test"):
            print(f"  {s:5s}: {v[s]:6d} videos {c[s]:7d} captions")
        print(f"  images: {sum(summary['images'].values())} ({summary['image_captions']} captions)")
        print("  containers: " + ", ".join(f"{k} {n}" for k, n in summary["containers"].items()))
        print(f"next: hybridtower data inspect --data msrvtt:{args.out_dir}")
    return 0
