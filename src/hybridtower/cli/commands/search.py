"""``hybridtower search INDEX_DIR "query" | --image FILE | --like ID [-k 10] [--json]``: rank the indexed videos
for a text query, an example image, or an indexed video ("more like this")."""

from __future__ import annotations

import argparse
import json
import sys

from ...core.timefmt import format_time, parse_time

# the one-line help is also in cli/main.py's COMMANDS table (tests/test_cli_startup.py compares them)
HELP = "search an index built by `hybridtower index` with a text query, an image or an example video"
DESCRIPTION = """\
Rank the indexed videos for one query, given as exactly one of:
  QUERY          text describing the video you look for;
  --image FILE   an example image (JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF, PPM): videos that look like it;
  --like VIDEO   an indexed video, by id or by its path relative to the indexed folder (as results show
                 it): "more like this", the video itself excluded (--start picks one of its windows).

Text is encoded once and scored against every stored vector (PIG / Two-Tower: one inner product per
row, exact or the IVF/HNSW structure the index was built with; X-Pool: candidates re-ranked with its
fusion). An image is encoded by the index's own video encoder as a still video, preprocessed exactly as
the indexed frames, so it lands in the same space as the rows (docs/search.md says what this means for
PIG, Two-Tower and X-Pool).

Output: rank, score, id, the file and, for a moment inside a long video, its time range (12:30-13:30),
on stdout. A text hit scoring below the index's weak-match threshold (what unrelated text reaches on
this index, measured when it was built) is marked "weak", and when even the best hit is weak a "no close
match" line says so. Notes (a cut query, k capped, ...) go to stderr. --json prints the result in the
hit schema the HTTP API uses (docs/service.md), plus each hit's local "path".
Control characters in file names are shown as escapes, never sent to the terminal raw; --json escapes
everything outside ASCII. The model is the checkpoint recorded in the index unless --checkpoint names
another copy of it (a checkpoint of a different model is refused)."""
EPILOG = """\
examples:
  hybridtower search my_index "a red ball bounces"
  hybridtower search my_index "two squares collide" -k 5 --json
  hybridtower search my_index --image holiday.jpg               # videos that look like this photo
  hybridtower search my_index --like 17                         # more like video 17
  hybridtower search my_index --like trips/beach.mp4 --start 750  # more like its window at 12:30
  hybridtower search xpool_index "a dog runs" --rerank-all      # exact X-Pool ranking over every video
"""


def register(sub) -> None:
    p = sub.add_parser("search", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("index_dir", metavar="INDEX_DIR", help="index folder made by `hybridtower index`")
    p.add_argument("query", metavar="QUERY", nargs="?", default=None,
                   help="text describing the video you look for (or use --image / --like)")
    p.add_argument("--image", metavar="FILE", default=None, help="search by an example image file")
    p.add_argument("--like", metavar="VIDEO", default=None,
                   help="more like this indexed video: its id or its path relative to the indexed folder")
    p.add_argument("--start", metavar="TIME", default=None,
                   help="with --like: the window starting at TIME (SECONDS, MM:SS or HH:MM:SS)")
    p.add_argument("-k", type=int, default=10, help="number of results (1-1000, default 10)")
    p.add_argument("--checkpoint", metavar="CKPT", help="the index's checkpoint, if it moved")
    p.add_argument("--device", default="cpu")
    p.add_argument("--candidates", type=int, default=None,
                   help="X-Pool: videos re-ranked with fusion (default max(100, 10k))")
    p.add_argument("--rerank-all", action="store_true", help="X-Pool: re-rank every video (exact, slower)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (the API's hit schema)")
    p.set_defaults(func=run, _parser=p)


def _span(start, end) -> str:
    if start is None or end is None:
        return ""
    return f"{format_time(start)}-{format_time(end)}"


def _public(result) -> dict:
    """The one hit schema (``SearchResult.to_public_dict``), with each hit's local ``path`` added."""
    out = result.to_public_dict()
    for d, h in zip(out["hits"], result.hits):
        d["path"] = h.path  # the CLI's access field (the service adds URLs instead)
    return out


def run(args) -> int:
    import time

    from ...core.display import printable, printable_path

    given = [x for x in (args.query is not None, args.image is not None, args.like is not None) if x]
    if len(given) != 1:
        args._parser.error("give exactly one of QUERY, --image FILE or --like VIDEO")
    start = None
    if args.start is not None:
        if args.like is None:
            args._parser.error("--start goes with --like")
        try:
            start = parse_time(args.start)
        except ValueError as exc:
            args._parser.error(f"--start: {exc}")

    from ...index import Searcher
    from ...index import image_query

    data = image_query.read_image_file(args.image) if args.image is not None else None  # before the model loads
    t0 = time.perf_counter()
    searcher = Searcher.open(args.index_dir, checkpoint=args.checkpoint, device=args.device,
                             rerank_all=args.rerank_all, candidates=args.candidates)
    load_ms = (time.perf_counter() - t0) * 1e3
    if data is not None:
        result = image_query.search_image(searcher, data, k=args.k)
    elif args.like is not None:
        result = image_query.similar(searcher, image_query.find_video(searcher, args.like), start=start, k=args.k)
    else:
        result = searcher.search(args.query, k=args.k)
    out = _public(result)
    if args.json:
        out["load_ms"] = round(load_ms, 1)
        out["index"] = {"count": len(searcher), "model": searcher.manifest["model"]["name"],
                        "search": searcher.ann_kind, "kind": searcher.manifest.get("index_kind")}
        # ASCII-only JSON: a file name's control characters (ESC, C1 codes) or undecodable bytes can
        # neither reach the terminal raw nor break the encoding; JSON readers get the exact name back
        print(json.dumps(out, indent=2, ensure_ascii=True))
        return 0
    for note in result.notes:
        print(f"note: {printable(note)}", file=sys.stderr)
    hits = out["hits"]
    if not hits:
        print("no results")
    elif hits[0]["weak"]:
        thr = out.get("weak_threshold")
        below = f"below this index's weak-match threshold {thr:+.4f}" if thr is not None else "weak"
        print(f"no close match: the best score {hits[0]['score']:+.4f} is {below} (what unrelated text reaches "
              f"here); these results are probably not what you look for")
    for rank, (d, h) in enumerate(zip(hits, result.hits), 1):
        line = f"{rank:>3}  {d['score']:+.4f}  [{d['id']}]  {printable_path(h.path)}"
        if span := _span(d.get("start"), d.get("end")):
            line += f"  {span}"
        if d["weak"]:
            line += "  (weak)"
        print(line)
        moments = [m for m in d.get("moments") or [] if m.get("start") is not None and m.get("end") is not None]
        if moments:
            also = ", ".join(f"{_span(m['start'], m['end'])} {m['score']:+.4f}" for m in moments[:3])
            more = f" (+{len(moments) - 3} more)" if len(moments) > 3 else ""
            print(f"       also {also}{more}")
    print(f"{len(hits)} of {len(searcher)} videos in {result.took_ms:.1f} ms "
          f"(model and index loaded in {load_ms / 1e3:.1f} s)")
    return 0
