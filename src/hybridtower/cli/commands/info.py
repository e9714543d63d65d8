"""``hybridtower info MODEL``: a preset's or checkpoint's resolved config and parameter counts per part."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "show a model preset's or checkpoint's resolved config and parameter counts"
EPILOG = """\
MODEL is a preset name ({framework}-{size}: frameworks pig, meanp, clipvip, xpool; sizes vit-b-32,
vit-b-16, tiny) or one of our checkpoints (a .safetensors file or a run folder).

examples:
  hybridtower info pig-vit-b-32 --json
  hybridtower info xpool-tiny --set fusion.num_heads=4
  hybridtower info runs/pig-tiny/model.safetensors
"""


def register(sub) -> None:
    p = sub.add_parser("info", help=HELP, description=HELP, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="preset name or checkpoint path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key of a preset, e.g. its.k=32 (repeatable)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ... import hub
    from ...core.config import to_dict

    if Path(args.model).exists():
        model = hub.load_model(args.model)
        source = str(args.model)
    else:
        # shapes and counts only: an empty model on the meta device (no memory, no random init)
        model = hub.create_model(args.model, pretrained=None, overrides=args.overrides, device="meta")
        source = "preset"
    counts = model.parameter_counts()
    report = {
        "model": model.cfg.name or model.cfg.framework,
        "source": source,
        "framework": model.cfg.framework,
        "query_independent": model.query_independent,
        "embed_dim": model.embed_dim,
        "parameters": counts,
        "preprocess": model.preprocess_config(),
        "config": to_dict(model.cfg),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    m = model.vectors_per_video
    per_video = "one vector per video" if m == 1 else f"{m} vectors per video, scored by their max"
    kind = f"indexable ({per_video})" if model.query_independent else "needs the query (re-rank only)"
    print(f"{report['model']}  [{model.cfg.framework}, {kind}]  embed dim {model.embed_dim}")
    for part, n in counts.items():
        if n:
            print(f"  {part:<14} {n / 1e6:10.2f} M")
    print(f"  frames {model.cfg.video.num_frames}, image {report['preprocess']['image_size']} px, "
          f"text tokens {model.cfg.text_context_length}")
    return 0
