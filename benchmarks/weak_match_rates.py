"""Measure the weak-match cue (hybridtower.index.calibration) on an index with known captions.

    python benchmarks/weak_match_rates.py INDEX_DIR CAPTIONS.jsonl [--checkpoint CKPT]

For the demo: ``hybridtower demo --no-serve --out demo`` then
``python benchmarks/weak_match_rates.py demo/index demo/data/captions.jsonl``.

Calibrates the index with :func:`measure_weak_match` (top-1 score of each generic caption over the
index's rows), then reports the share of weak flags (top-1 score below the threshold) for

- the index's own captions (every line of CAPTIONS.jsonl whose video is in the index): these should
  mostly NOT be flagged;
- a held-out list of unrelated queries written here (not in the calibration list): these should be.

Prints one JSON object. Scores are computed from the stored rows directly (no Searcher), the same inner
product search uses for PIG / Two-Tower indexes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# unrelated to a synthetic-shapes library and NOT in calibration.GENERIC_CAPTIONS
HELD_OUT_UNRELATED = (
    "a dog runs on the beach",  # the example (also in the calibration list; reported on its own)
    "a man walks his dog in the park",
    "a woman is cooking soup in a large pot",
    "kids are playing football in the schoolyard",
    "a car drives along a coastal road",
    "a cat jumps onto the kitchen counter",
    "a pianist plays in an empty hall",
    "a family eats dinner together",
    "a plane lands at the airport",
    "a man explains how to change a tire",
    "a girl rides a bicycle down the street",
    "a crowd watches fireworks",
    "two men are fishing from a boat",
    "a reporter interviews a player after the game",
    "a woman is doing yoga on a mat",
    "rain is falling on a window",
    "a bear catches a fish in a river",
    "a person is washing dishes in the sink",
    "a band plays rock music in a club",
    "students are listening to a lecture",
    "a man is chopping wood with an axe",
    "a tour of a modern apartment",
    "a baby laughs at a toy",
    "a hiker reaches the top of a mountain",
    "a barista makes latte art",
    "a race car speeds around a track",
    "an interview with a famous actor",
    "people are ice skating on a frozen lake",
    "a parrot talks to its owner",
    "a woman tries on dresses in a store",
    "a tutorial on drawing a face",
    "a horse pulls a cart through a village",
    "a firefighter sprays water on a burning house",
    "a chef plates a dessert",
    "a boy plays video games on the couch",
    "a deer crosses a snowy road",
    "a wedding couple cuts the cake",
    "a train passes through the countryside",
    "a dentist examines a patient's teeth",
    "a man jogs along the river at sunrise",
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("index_dir")
    ap.add_argument("captions", help="JSONL with 'caption' and 'video' (path relative to the data folder) per line")
    ap.add_argument("--checkpoint", default=None)
    args = ap.parse_args(argv)

    import torch

    from hybridtower.index import store
    from hybridtower.index.calibration import GENERIC_CAPTIONS, measure_weak_match
    from hybridtower.index.identity import load_checkpoint

    data = store.load_index(args.index_dir, with_frames=False)
    if data.manifest.get("index_kind") == "frames+rerank":
        print("X-Pool indexes are scored with fusion; this script covers dot-product indexes", file=sys.stderr)
        return 2
    model, _ = load_checkpoint(args.checkpoint or data.manifest["model"]["checkpoint"])
    rows = torch.from_numpy(np.ascontiguousarray(data.vectors, dtype=np.float32))

    def scores(texts):
        with torch.no_grad():
            out = []
            for s in range(0, len(texts), 256):
                t = model.encode_text(model.tokenize(list(texts[s:s + 256]))).float()
                out.append(t @ rows.T)
            return torch.cat(out).numpy()

    def top1(texts):
        return scores(texts).max(axis=1)

    info = measure_weak_match(top1)
    thr = info["threshold"]

    stems = {Path(e.video_id).stem: i for i, e in enumerate(data.entries)}
    own, own_row = [], []
    for line in Path(args.captions).read_text().splitlines():
        rec = json.loads(line)
        stem = Path(rec.get("video", "")).stem or rec.get("video_id")
        if stem in stems:
            own.append(rec["caption"])
            own_row.append(stems[stem])
    s_own = scores(own)
    top_own = s_own.max(axis=1)
    rank1 = s_own.argmax(axis=1) == np.array(own_row)
    held = [q for q in HELD_OUT_UNRELATED if q not in GENERIC_CAPTIONS]
    top_un = top1(held)
    dog = float(top1(["a dog runs on the beach"])[0])
    out = {
        "index_videos": len(data.entries),
        "model": data.manifest["model"].get("name"),
        "calibration": info,
        "own_captions": {
            "count": len(own),
            "flag_rate": float(np.mean(top_own < thr)),
            "flag_rate_when_own_video_ranks_first": float(np.mean(top_own[rank1] < thr)) if rank1.any() else None,
            "own_video_ranks_first": float(np.mean(rank1)),
            "top1_median": float(np.median(top_own)),
        },
        "unrelated_held_out": {
            "count": len(held),
            "flag_rate": float(np.mean(top_un < thr)),
            "top1_median": float(np.median(top_un)),
            "top1_max": float(np.max(top_un)),
        },
        "a dog runs on the beach": {"top1": dog, "weak": dog < thr},
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
