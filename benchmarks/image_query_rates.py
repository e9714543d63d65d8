"""How often a still frame of an indexed video finds that video (search by image), and what "more like
this" costs.

    python benchmarks/image_query_rates.py INDEX_DIR [--limit 200] [--frame middle|first]

For each indexed video (whole-file rows; up to ``--limit``), one frame is decoded (the middle one by
default), saved as PNG bytes (lossless, as an upload would arrive) and searched with
:func:`hybridtower.index.image_query.search_image`. Prints one JSON object: the share of videos whose own
file ranks first / in the top 5, the median rank, and median image-query and more-like-this times.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("index_dir")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--frame", choices=("middle", "first"), default="middle")
    args = ap.parse_args(argv)

    from PIL import Image

    from hybridtower.data.video.decode import decode_frames, read_frames
    from hybridtower.index import Searcher
    from hybridtower.index import image_query as iq

    s = Searcher.open(args.index_dir)
    ranks, t_img, t_like = [], [], []
    n = len(s)
    for e in s.entries[: args.limit]:
        if args.frame == "middle":
            frame = read_frames(e.path, 1, "uniform")[0]
        else:
            frame = decode_frames(e.path, [0])[0]
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, "PNG")
        t0 = time.perf_counter()
        res = iq.search_image(s, buf.getvalue(), k=n)
        t_img.append(time.perf_counter() - t0)
        ids = [h.id for h in res.hits]
        ranks.append(ids.index(e.id) + 1 if e.id in ids else n + 1)
        t0 = time.perf_counter()
        iq.similar(s, e.id, k=10)
        t_like.append(time.perf_counter() - t0)
    r = np.array(ranks)
    out = {
        "index_videos": n, "queries": int(r.size), "frame": args.frame,
        "model": s.manifest["model"].get("name"), "kind": s.manifest.get("index_kind"),
        "own_video_R@1": float(np.mean(r == 1)), "own_video_R@5": float(np.mean(r <= 5)),
        "median_rank": float(np.median(r)), "chance_R@1": 1.0 / n,
        "image_query_ms_median": round(1e3 * float(np.median(t_img)), 1),
        "more_like_this_ms_median": round(1e3 * float(np.median(t_like)), 2),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
