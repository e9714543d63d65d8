"""``hybridtower export INDEX_DIR OUT [--format parquet|npy]``: the index's vectors for other tools."""

from __future__ import annotations

import argparse
import json

HELP = "export an index's vectors and paths to Parquet or .npy + JSONL (for FAISS, LanceDB, pandas)"
DESCRIPTION = """\
Write one row per indexed video, in id order: id, root (the indexed PATH), path (relative to root),
window_start / window_end (null: whole videos; moment windows are not indexed yet) and the stored vector,
bit for bit. The format follows OUT's suffix (.parquet; .npy or .jsonl for the npy format, which writes
STEM.npy, STEM.jsonl and STEM.meta.json) or --format. Parquet needs pyarrow (pip install 'hybridtower[export]').
X-Pool indexes export their first-stage vectors (the normalised mean of the frame features), not X-Pool's
query-conditioned scores. See docs/export.md for loading the result into FAISS, LanceDB or pandas."""
EPILOG = """\
examples:
  hybridtower export my_index videos.parquet
  hybridtower export my_index videos.npy                # videos.npy + videos.jsonl + videos.meta.json
  hybridtower export my_index out/videos --format npy --overwrite
"""


def register(sub) -> None:
    p = sub.add_parser("export", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("index_dir", metavar="INDEX_DIR", help="index folder made by `hybridtower index`")
    p.add_argument("out", metavar="OUT", help="output file (.parquet, .npy, .jsonl) or stem with --format")
    p.add_argument("--format", choices=("parquet", "npy"), help="output format (default: from OUT's suffix)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ...index.export import export_index

    summary = export_index(args.index_dir, args.out, fmt=args.format, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2, ensure_ascii=False))
        return 0
    for note in summary.notes:
        print(f"note: {note}")
    print(f"exported {summary.count} vectors ({summary.dim}-d, {summary.vector}) to {', '.join(summary.files)}")
    return 0
