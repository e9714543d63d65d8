"""``hybridtower search INDEX_DIR "query" [-k 10] [--json]``: rank the indexed videos for a text query."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "search an index built by `hybridtower index` with a text query"
DESCRIPTION = """\
Encode the query once and rank the indexed videos: one inner product per video for PIG / Two-Tower
indexes (exact, or the IVF/HNSW structure the index was built with), candidates + X-Pool fusion
re-ranking for X-Pool indexes. Prints rank, score, id and path, and the time the search took, on
stdout; notes (a cut query, k capped, ...) go to stderr. Control characters in file names are shown
as escapes, never sent to the terminal raw; --json escapes everything outside ASCII.
The model is the checkpoint recorded in the index unless --checkpoint names another copy of it
(a checkpoint of a different model is refused)."""
EPILOG = """\
examples:
  hybridtower search my_index "a red ball bounces"
  hybridtower search my_index "two squares collide" -k 5 --json
  hybridtower search xpool_index "a dog runs" --rerank-all      # exact X-Pool ranking over every video
"""


def register(sub) -> None:
    p = sub.add_parser("search", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("index_dir", metavar="INDEX_DIR", help="index folder made by `hybridtower index`")
    p.add_argument("query", metavar="QUERY", help="text describing the video you look for")
    p.add_argument("-k", type=int, default=10, help="number of results (1-1000, default 10)")
    p.add_argument("--checkpoint", metavar="CKPT", help="the index's checkpoint, if it moved")
    p.add_argument("--device", default="cpu")
    p.add_argument("--candidates", type=int, default=None,
                   help="X-Pool: videos re-ranked with fusion (default max(100, 10k))")
    p.add_argument("--rerank-all", action="store_true", help="X-Pool: re-rank every video (exact, slower)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from ...core.display import printable, printable_path
    from ...index import Searcher

    t0 = time.perf_counter()
    searcher = Searcher.open(args.index_dir, checkpoint=args.checkpoint, device=args.device,
                             rerank_all=args.rerank_all, candidates=args.candidates)
    load_ms = (time.perf_counter() - t0) * 1e3
    result = searcher.search(args.query, k=args.k)
    if args.json:
        out = result.to_dict()
        out["load_ms"] = round(load_ms, 1)
        out["index"] = {"dir": str(args.index_dir), "count": len(searcher), "model": searcher.manifest["model"]["name"],
                        "search": searcher.ann_kind, "kind": searcher.manifest.get("index_kind")}
        # ASCII-only JSON: a file name's control characters (ESC, C1 codes) or undecodable bytes can
        # neither reach the terminal raw nor break the encoding; JSON readers get the exact name back
        print(json.dumps(out, indent=2, ensure_ascii=True))
        return 0
    for note in result.notes:
        print(f"note: {printable(note)}", file=sys.stderr)
    if not result.hits:
        print("no results")
    for rank, h in enumerate(result.hits, 1):
        print(f"{rank:>3}  {h.score:+.4f}  [{h.id}]  {printable_path(h.path)}")
    print(f"{len(result.hits)} of {len(searcher)} videos in {result.took_ms:.1f} ms "
          f"(model and index loaded in {load_ms / 1e3:.1f} s)")
    return 0
